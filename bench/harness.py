#!/usr/bin/env python3
"""Splice's benchmark suite: starts Splice and its baselines on loopback, loads them with wrk,
takes medians of several runs, and writes the table into docs/performance.md.

Run it through `bench/run`, which builds the release binaries first. Environment:
  BENCH_RUNS      runs per wrk measure (default 3); the table shows their medians
  BENCH_DURATION  seconds per wrk run (default 5)
  BENCH_COLD_N    integrations deployed for the cold-start and density measures (default 1000)
  BENCH_PG        0 skips the PostgreSQL measures (default: run them when scripts/postgres works)
  BENCH_PG_URL    URL of a PostgreSQL role that may create databases (default: scripts/postgres)
  BENCH_QUEUE_N   no-op tasks queued for the queue throughput measure (default 2000)
  BENCH_ONLY      comma list of measures to run: http, cold, start, token, queue, runaway, pg
"""

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "release")
SPLICE = os.environ.get("BENCH_SPLICE", os.path.join(BIN, "splice"))
DOC = os.path.join(ROOT, "docs", "performance.md")
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
DURATION = int(os.environ.get("BENCH_DURATION", "5"))
COLD_N = int(os.environ.get("BENCH_COLD_N", "1000"))
QUEUE_N = int(os.environ.get("BENCH_QUEUE_N", "2000"))
QUEUE_CONNECTIONS = 8
WANT_PG = os.environ.get("BENCH_PG", "1") != "0"

KEY = "sk_bench_" + secrets.token_hex(12)
MASTER_KEY = base64.b64encode(secrets.token_bytes(32)).decode()
CPU_BUDGET_MS = 50

TRIVIAL = """import { Integration } from "splice";
const integration = new Integration();
integration.router.get("/ok", (ctx) => { ctx.body = "ok"; });
export default integration;
"""

TOKEN = """import { Integration } from "splice";
const integration = new Integration();
integration.router.get("/ok", (ctx) => { ctx.body = "ok"; });
integration.router.get("/token", async (ctx) => {
  const idp = await integration.tenant.connector(ctx, "idp", "acme");
  const token = await idp.token();
  ctx.body = token.length > 0 ? "ok" : "empty";
});
integration.router.get("/token100", async (ctx) => {
  const idp = await integration.tenant.connector(ctx, "idp", "acme");
  for (let i = 0; i < 100; i++) await idp.token();
  ctx.body = "ok";
});
integration.router.get("/timed", async (ctx) => {
  // Each lookup timed on its own, in microseconds.
  const idp = await integration.tenant.connector(ctx, "idp", "acme");
  const took = [];
  for (let i = 0; i < 1000; i++) {
    const start = performance.now();
    await idp.token();
    took.push((performance.now() - start) * 1000);
  }
  ctx.body = took;
});
export default integration;
"""

NOOP = """import { Integration } from "splice";
const integration = new Integration();
integration.task.on("noop", async () => null);
export default integration;
"""

# A connector that takes webhooks signed with the generic HMAC scheme; the event has no `id`,
# so no delivery id: every request is a new job.
WEBHOOK_SECRET = "whsec-bench-" + secrets.token_hex(16)
WEBHOOK_SCHEME = {"scheme": "hmac", "header": "X-Signature", "algorithm": "sha256",
                  "encoding": "hex", "prefix": "sha256="}
WEBHOOK_BODY = json.dumps({"type": "bench.ping", "data": {"n": 1, "text": "hello"}})

RUNAWAY = """import { Integration } from "splice";
const integration = new Integration();
integration.router.get("/spin", (ctx) => { while (true) {} });
export default integration;
"""

children = []
commands = []
rows = []


# ---------------------------------------------------------------------------------------------
# Processes and HTTP


def log(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(argv, env=None, log_name=None):
    out = open(os.path.join(WORK, log_name or "child.log"), "ab")
    proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    children.append(proc)
    return proc


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc in children:
        children.remove(proc)


def http(method, url, body=None, key=KEY, follow=True):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
            return response.status, (json.loads(text) if text.startswith(("{", "[")) else text)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait_http(url, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def splice_env(port, data_dir, database_url=None, log_level="warn"):
    env = dict(os.environ)
    env.update(
        SPLICE_LISTEN=f"127.0.0.1:{port}",
        SPLICE_DATA_DIR=data_dir,
        SPLICE_ADMIN_KEY=KEY,
        SPLICE_MASTER_KEY=MASTER_KEY,
        SPLICE_PUBLIC_URL=f"http://127.0.0.1:{port}",
        SPLICE_LOG=log_level,
    )
    if database_url:
        env["SPLICE_DATABASE_URL"] = database_url
    return env


def start_splice(name, database_url=None):
    port = free_port()
    data_dir = os.path.join(WORK, name)
    os.makedirs(data_dir, exist_ok=True)
    proc = spawn([SPLICE, "serve"],
                 splice_env(port, data_dir, database_url), f"{name}.log")
    wait_http(f"http://127.0.0.1:{port}/health")
    return proc, port


def deploy(port, integration, source, **extra):
    status, body = http("PUT", f"http://127.0.0.1:{port}/v1/integrations/{integration}",
                        {"files": {"integration.js": source}, **extra})
    if status not in (200, 201):
        raise RuntimeError(f"deploy {integration}: {status} {body}")


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def probe_plan(port, lines):
    """Sends `METHOD PATH [@FILE]` lines sequentially; returns [(status, micros)]."""
    argv = [os.path.join(BIN, "bench-probe"), "plan", f"127.0.0.1:{port}", KEY]
    out = subprocess.run(argv, input="\n".join(lines) + "\n", capture_output=True, text=True,
                         check=True).stdout
    return [tuple(int(x) for x in line.split()) for line in out.splitlines()]


def probe_fan(port, lines, connections=QUEUE_CONNECTIONS):
    """Sends `METHOD PATH [@FILE]` lines over several connections at once; returns
    [(status, micros, body)] in input order, the body parsed when it is JSON."""
    argv = [os.path.join(BIN, "bench-probe"), "fan", f"127.0.0.1:{port}", str(connections), KEY]
    out = subprocess.run(argv, input="\n".join(lines) + "\n", capture_output=True, text=True,
                         check=True).stdout
    results = []
    for line in out.splitlines():
        status, micros, body = (line.split(" ", 2) + [""])[:3]
        try:
            body = json.loads(body)
        except ValueError:
            pass
        results.append((int(status), int(micros), body))
    return results


def ms_since_epoch(stamp):
    """An RFC 3339 time of a job view (`…T12:00:00.123Z`) in milliseconds."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000


# ---------------------------------------------------------------------------------------------
# wrk and statistics

UNITS = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def wrk(url, connections, key=None, record=True, script=None):
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{DURATION}s", "--latency", url]
    if key:
        argv[1:1] = ["-H", f"Authorization: Bearer {key}"]
    if script:
        argv[1:1] = ["-s", script]
    if record:
        shown = " ".join(a if "Bearer" not in a else "'Authorization: Bearer $KEY'" for a in argv)
        shown = shown.replace(WORK + "/", "")
        shown = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:$PORT", shown)
        if shown not in commands:
            commands.append(shown)
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    pct = {}
    for p, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        pct[p] = float(value) * UNITS[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"wrk {url}: {errors.group(1)} non-2xx responses")
    socket_errors = re.search(r"Socket errors: (.*)", out)
    if socket_errors:
        log(f"wrk {url} -c{connections}: socket errors: {socket_errors.group(1)}")
    return {"rps": rps, "p50": pct["50"], "p99": pct["99"]}


def note(line):
    """Adds a line to the commands shown under the table, once."""
    if line not in commands:
        commands.append(line)


def median_of(results):
    return {k: statistics.median(r[k] for r in results) for k in results[0]}


def percentile(values, p):
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, int(round(p / 100 * len(ordered) + 0.5)) - 1))
    return ordered[index]


def us(value):
    if value is None:
        return "—"
    return f"{value / 1000:.2f} ms" if value >= 10_000 else f"{value:.0f} µs"


def signed(value):
    return ("+" if value >= 0 else "−") + us(abs(value))


def row(measure, value, baseline, target, met):
    verdict = {True: "met", False: "**missed**", None: "—"}[met]
    rows.append((measure, value, baseline, target, verdict))
    log(f"{measure}: {value} | {baseline} | target {target} -> {verdict}")


# ---------------------------------------------------------------------------------------------
# Measures


def measure_throughput_and_latency():
    axum_port, node_port = free_port(), free_port()
    axum = spawn([os.path.join(BIN, "bench-axum"), f"127.0.0.1:{axum_port}"], log_name="axum.log")
    node = spawn(["node", os.path.join(BENCH, "node", "router.js"), str(node_port)],
                 log_name="node.log")
    splice, port = start_splice("splice-main")
    deploy(port, "bench", TRIVIAL)
    deploy(port, "strict", TRIVIAL, isolation="invocation")
    wait_http(f"http://127.0.0.1:{axum_port}/health")
    wait_http(f"http://127.0.0.1:{node_port}/v1/integrations/bench/api/ok")

    targets = {
        "axum": (f"http://127.0.0.1:{axum_port}/v1/integrations/bench/api/ok", None),
        "node": (f"http://127.0.0.1:{node_port}/v1/integrations/bench/api/ok", None),
        "splice": (f"http://127.0.0.1:{port}/v1/integrations/bench/api/ok", KEY),
        "strict": (f"http://127.0.0.1:{port}/v1/integrations/strict/api/ok", KEY),
    }
    # Warm every server (JIT, connection pools, warm runtimes) before measuring.
    for url, key in targets.values():
        subprocess.run(["wrk", "-t1", "-c64", "-d1s", *(["-H", f"Authorization: Bearer {key}"]
                                                        if key else []), url],
                       capture_output=True, check=True)

    many, one = {k: [] for k in targets}, {k: [] for k in targets}
    for run in range(RUNS):
        log(f"throughput and latency, run {run + 1}/{RUNS}")
        for name, (url, key) in targets.items():
            if name != "strict":
                many[name].append(wrk(url, 64, key))
            one[name].append(wrk(url, 1, key))
    many = {k: median_of(v) for k, v in many.items() if v}
    one = {k: median_of(v) for k, v in one.items()}

    s, a, n = many["splice"], many["axum"], many["node"]
    row("1. trivial route, 64 connections: req/s",
        f"{s['rps']:,.0f} req/s (p50 {us(s['p50'])}, p99 {us(s['p99'])})",
        f"axum {a['rps']:,.0f} (p50 {us(a['p50'])}, p99 {us(a['p99'])}); "
        f"Node {n['rps']:,.0f} (p50 {us(n['p50'])}, p99 {us(n['p99'])})", "—", None)
    row("1a. ÷ bare axum", f"{s['rps'] / a['rps']:.2f}", "", "≥ 0.5 (stretch 0.7)",
        s["rps"] / a["rps"] >= 0.5)
    row("1b. ÷ Node.js http, same router", f"{s['rps'] / n['rps']:.2f}", "",
        "≥ 1.0 (stretch 1.3)", s["rps"] / n["rps"] >= 1.0)

    s1, a1, n1 = one["splice"], one["axum"], one["node"]
    added50, added99 = s1["p50"] - a1["p50"], s1["p99"] - a1["p99"]
    row("2. added latency over bare axum, 1 connection",
        f"p50 {signed(added50)}, p99 {signed(added99)} (Splice p50 {us(s1['p50'])}, p99 {us(s1['p99'])})",
        f"axum p50 {us(a1['p50'])}, p99 {us(a1['p99'])}; Node p50 {us(n1['p50'])}, "
        f"p99 {us(n1['p99'])}", "p50 ≤ 30 µs, p99 ≤ 150 µs", added50 <= 30 and added99 <= 150)
    st = one["strict"]
    row("3c. strict isolation (`isolation: invocation`), added per call, 1 connection",
        f"p50 {signed(st['p50'] - s1['p50'])} (p50 {us(st['p50'])}, p99 {us(st['p99'])})",
        "warm route on the same server", "p50 ≤ 150 µs", st["p50"] - s1["p50"] <= 150)

    for proc in (axum, node, splice):
        stop(proc)
    return s1


def measure_cold_start_and_density():
    splice, port = start_splice("splice-density")
    time.sleep(1)
    idle = rss_kb(splice.pid)

    body = os.path.join(WORK, "trivial.json")
    with open(body, "w") as f:
        json.dump({"files": {"integration.js": TRIVIAL}}, f)
    deploys = probe_plan(port, [f"PUT /v1/integrations/d{i} @{body}" for i in range(COLD_N)])
    if any(status not in (200, 201) for status, _ in deploys):
        raise RuntimeError("a deploy failed")
    deployed = rss_kb(splice.pid)

    # First call of each: none is resident, so each builds a runtime from bytecode.
    cold = probe_plan(port, [f"GET /v1/integrations/d{i}/api/ok" for i in range(COLD_N)])
    if any(status != 200 for status, _ in cold):
        raise RuntimeError("a cold call failed")
    time.sleep(1)
    resident = rss_kb(splice.pid)
    warm = probe_plan(port, [f"GET /v1/integrations/d{i % 50}/api/ok" for i in range(COLD_N)])

    cold_us = [t for _, t in cold]
    warm_us = [t for _, t in warm]
    c50, c99 = percentile(cold_us, 50), percentile(cold_us, 99)
    w50 = percentile(warm_us, 50)
    row(f"3a. cold start: first call of each of {COLD_N} deployed, non-resident integrations",
        f"p50 {us(c50)}, p99 {us(c99)} end to end (p50 {signed(c50 - w50)} over a warm call)",
        f"warm call, same client: p50 {us(w50)}, p99 {us(percentile(warm_us, 99))}",
        "p50 ≤ 300 µs, p99 ≤ 3 ms", c50 <= 300 and c99 <= 3000)

    deploy_to_first = []
    for i in range(30):
        pair = probe_plan(port, [f"PUT /v1/integrations/f{i} @{body}",
                                 f"GET /v1/integrations/f{i}/api/ok"])
        deploy_to_first.append(sum(t for _, t in pair))
    row("3b. deploy to first response (PUT, then first call), 30 integrations",
        f"p50 {us(percentile(deploy_to_first, 50))}, p99 {us(percentile(deploy_to_first, 99))}",
        f"deploy alone: p50 {us(percentile([t for _, t in deploys], 50))}", "—", None)

    per_runtime = (resident - deployed) / COLD_N
    row("4b. idle RSS (started, nothing deployed)", f"{idle / 1024:.1f} MB", "", "≤ 25 MB",
        idle / 1024 <= 25)
    row(f"4c. RSS per resident integration ({COLD_N} deployed, each called once)",
        f"{per_runtime:.0f} KB ({deployed / 1024:.1f} MB deployed → {resident / 1024:.1f} MB "
        f"resident)", "", "≤ 1 MB", per_runtime <= 1024)
    stop(splice)

    # The same integrations after a restart: programs are read from the database on first use.
    splice, port = start_splice("splice-density")
    cold = probe_plan(port, [f"GET /v1/integrations/d{i}/api/ok" for i in range(COLD_N)])
    cold_us = [t for status, t in cold if status == 200]
    row("3d. cold start after a restart (program read from SQLite too)",
        f"p50 {us(percentile(cold_us, 50))}, p99 {us(percentile(cold_us, 99))}",
        f"{len(cold_us)}/{COLD_N} answered 200", "—", None)
    stop(splice)


def measure_start_to_ready():
    data_dir = os.path.join(WORK, "splice-start")
    os.makedirs(data_dir, exist_ok=True)
    times, startup_ms = [], []
    for i in range(15):
        port = free_port()
        env = splice_env(port, data_dir, log_level="info")
        env["NO_COLOR"] = "1"
        out = subprocess.run([os.path.join(BIN, "bench-probe"), "start", f"127.0.0.1:{port}",
                              "--", SPLICE, "serve"],
                             env=env, capture_output=True, text=True, check=True)
        if i == 0:
            first = int(out.stdout.strip())
            continue
        times.append(int(out.stdout.strip()))
        found = re.search(r"startup_ms\W*=\W*(\d+)", re.sub(r"\x1b\[[0-9;]*m", "", out.stderr))
        if found:
            startup_ms.append(int(found.group(1)))
    logged = f"; logged startup_ms median {statistics.median(startup_ms):.0f}" if startup_ms else ""
    row("4a. process start to ready (spawn → first 200 on /health), 14 runs",
        f"p50 {us(percentile(times, 50))}, max {us(max(times))}",
        f"first start (creates the database): {us(first)}{logged}", "≤ 50 ms",
        percentile(times, 50) <= 50_000)


def connect_identity(port, idp_port):
    """Creates the `idp` connector and walks one connect session for tenant acme."""
    base = f"http://127.0.0.1:{port}"
    idp = f"http://127.0.0.1:{idp_port}"
    status, body = http("POST", f"{base}/v1/connectors", {
        "id": "idp", "type": "oauth2",
        "config": {"authorization_url": f"{idp}/auth", "token_url": f"{idp}/token",
                   "client_id": "bench", "client_secret": "bench-secret",
                   "scopes": ["openid"], "pkce": True, "userinfo_url": f"{idp}/me"}})
    if status != 201:
        raise RuntimeError(f"create connector: {status} {body}")
    deploy(port, "tok", TOKEN, connectors={"idp": "idp"})
    status, session = http("POST", f"{base}/v1/integrations/tok/sessions",
                           {"tenant": "acme", "redirect_url": f"{idp}/done"})
    if status != 201:
        raise RuntimeError(f"create session: {status} {session}")
    # The fake provider consents at once: following the redirects walks the whole flow.
    status, done = http("GET", session["url"], key=None)
    if status != 200 or not isinstance(done, dict) or not done.get("done"):
        raise RuntimeError(f"connect flow ended with {status} {done}")
    status, install = http("POST", f"{base}/v1/sessions/{session['id']}/commit")
    if status != 201:
        raise RuntimeError(f"commit: {status} {install}")


def measure_token(warm_route):
    idp_port = free_port()
    idp = spawn(["node", os.path.join(BENCH, "node", "fake-idp.js"), str(idp_port)],
                log_name="idp.log")
    wait_http(f"http://127.0.0.1:{idp_port}/done")
    splice, port = start_splice("splice-token")
    connect_identity(port, idp_port)

    base = f"http://127.0.0.1:{port}/v1/integrations/tok/api"
    for path in ("/ok", "/token", "/token100"):
        subprocess.run(["wrk", "-t1", "-c1", "-d1s", "-H", f"Authorization: Bearer {KEY}",
                        base + path], capture_output=True, check=True)
    ok, token, many = [], [], []
    for _ in range(RUNS):
        ok.append(wrk(base + "/ok", 1, KEY))
        token.append(wrk(base + "/token", 1, KEY))
        many.append(wrk(base + "/token100", 1, KEY))
    ok, token, many = median_of(ok), median_of(token), median_of(many)
    d50, d99 = token["p50"] - ok["p50"], token["p99"] - ok["p99"]
    mean = (many["p50"] - ok["p50"]) / 100
    lookups = []
    for _ in range(RUNS):
        request = urllib.request.Request(base + "/timed", headers={"Authorization": f"Bearer {KEY}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            lookups.extend(json.loads(response.read()))
    lookups.sort()
    l50, l99 = percentile(lookups, 50), percentile(lookups, 99)
    row("5. cached token through the connector SDK (`.token()`), each lookup timed in code",
        f"p50 {l50:.1f} µs, p99 {l99:.1f} µs over {len(lookups)} lookups",
        f"whole route, 1 connection: `connector(...)` + `.token()` adds p50 {signed(d50)}, "
        f"p99 {signed(d99)} (route p50 {us(token['p50'])} vs `ok` route {us(ok['p50'])}); "
        f"mean of 100 in one call {mean:.0f} µs", "p99 ≤ 20 µs", l99 <= 20)
    stop(splice)
    stop(idp)


def measure_runaway():
    splice, port = start_splice("splice-runaway")
    deploy(port, "spin", RUNAWAY, limits={"cpu_ms": CPU_BUDGET_MS})
    results = probe_plan(port, ["GET /v1/integrations/spin/api/spin"] * 20)
    statuses = {status for status, _ in results}
    late = [t - CPU_BUDGET_MS * 1000 for _, t in results]
    row(f"7. runaway `while(true){{}}` with `cpu_ms: {CPU_BUDGET_MS}`: stopped after budget, "
        "20 calls", f"p50 {signed(percentile(late, 50))}, max {signed(max(late))} late",
        f"status {sorted(statuses)}", "≤ 10 ms late",
        percentile(late, 50) <= 10_000 and statuses == {500})
    stop(splice)


def queue_round(port, body_file, n):
    """Queues n no-op tasks at once, waits for them, and reads them back."""
    path = "/v1/integrations/noop/tasks/noop"
    started = probe_fan(port, [f"POST {path} @{body_file}"] * n)
    refused = [(status, body) for status, _, body in started if status != 202]
    if refused:
        raise RuntimeError(f"{len(refused)} of {n} enqueues failed, first {refused[0]}")
    ids = [body["id"] for _, _, body in started]

    deadline = time.time() + 60 + n / 50
    while time.time() < deadline:
        pending = [http("GET", f"http://127.0.0.1:{port}/v1/jobs?integration=noop&status={s}"
                               "&limit=1")[1]["items"] for s in ("queued", "running")]
        if not any(pending):
            break
        time.sleep(0.05)
    jobs = [body for _, _, body in probe_fan(port, [f"GET /v1/tasks/{i}" for i in ids])]
    statuses = {}
    for job in jobs:
        status = job.get("status") if isinstance(job, dict) else str(job)[:80]
        statuses[status] = statuses.get(status, 0) + 1
    done = [job for job in jobs if isinstance(job, dict) and job.get("status") == "succeeded"]
    if not done:
        raise RuntimeError(f"no queued task succeeded: {statuses}")

    created = [ms_since_epoch(job["created_at"]) for job in done]
    waits = [ms_since_epoch(job["started_at"]) - at for job, at in zip(done, created)]
    span_ms = max(ms_since_epoch(job["finished_at"]) for job in done) - min(created)
    return {
        "jobs_per_s": len(done) / max(span_ms, 1) * 1000,
        "enqueue_per_s": n / max(max(created) - min(created), 1) * 1000,
        "p50": percentile(waits, 50) * 1000,
        "p99": percentile(waits, 99) * 1000,
        "succeeded": len(done),
        "other": sum(count for status, count in statuses.items() if status != "succeeded"),
    }, statuses


def idle_waits(port, count=30):
    """Enqueue→start of tasks queued one at a time on an idle queue, in microseconds."""
    base = f"http://127.0.0.1:{port}"
    waits = []
    for _ in range(count):
        status, job = http("POST", f"{base}/v1/integrations/noop/tasks/noop", {"payload": {}})
        if status != 202:
            raise RuntimeError(f"enqueue: {status} {job}")
        deadline = time.time() + 10
        while job["status"] in ("queued", "running") and time.time() < deadline:
            time.sleep(0.005)
            job = http("GET", f"{base}/v1/tasks/{job['id']}")[1]
        if job["status"] == "succeeded":
            waits.append((ms_since_epoch(job["started_at"]) -
                          ms_since_epoch(job["created_at"])) * 1000)
    return waits


def measure_queue_jobs(port):
    deploy(port, "noop", NOOP)
    body_file = os.path.join(WORK, "task.json")
    with open(body_file, "w") as f:
        json.dump({"payload": {}}, f)
    # A first round warms the runtime and the store; only later rounds count.
    queue_round(port, body_file, min(QUEUE_N, 200))
    note(f"# 6a, 6b: {QUEUE_N} lines 'POST /v1/integrations/noop/tasks/noop @task.json' "
         f"(task.json: {{\"payload\": {{}}}}), then a GET /v1/tasks/ID per job")
    note(f"bench-probe fan 127.0.0.1:$PORT {QUEUE_CONNECTIONS} $KEY < lines")
    results, statuses = [], {}
    for run in range(RUNS):
        log(f"queue throughput, run {run + 1}/{RUNS}")
        result, seen = queue_round(port, body_file, QUEUE_N)
        results.append(result)
        for status, n in seen.items():
            statuses[status] = statuses.get(status, 0) + n
    if set(statuses) != {"succeeded"}:
        log(f"queue: jobs not succeeded: {statuses}")
    jobs = median_of(results)
    idle = idle_waits(port)
    jobs["idle_p50"] = percentile(idle, 50) if idle else None
    return jobs, statuses


def webhook_script():
    signature = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), WEBHOOK_BODY.encode(),
                                     hashlib.sha256).hexdigest()
    script = os.path.join(WORK, "webhook.lua")
    with open(script, "w") as f:
        f.write('wrk.method = "POST"\n'
                f"wrk.body = {json.dumps(WEBHOOK_BODY)}\n"
                'wrk.headers["Content-Type"] = "application/json"\n'
                f'wrk.headers["X-Signature"] = "{signature}"\n')
    return script, signature


def measure_webhook_intake(port):
    status, body = http("POST", f"http://127.0.0.1:{port}/v1/connectors", {
        "id": "hooks", "provider": "api_key",
        "config": {"settings": {"base_url": "http://127.0.0.1:9"},
                   "webhook": {"provider": "generic", "secret": WEBHOOK_SECRET,
                               "scheme": WEBHOOK_SCHEME}}})
    if status != 201:
        raise RuntimeError(f"create webhook connector: {status} {body}")
    url = f"http://127.0.0.1:{port}/v1/connectors/hooks/webhook"
    script, signature = webhook_script()
    request = urllib.request.Request(url, data=WEBHOOK_BODY.encode(), method="POST", headers={
        "Content-Type": "application/json", "X-Signature": signature})
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.loads(response.read())
    if answer != {"ok": True, "duplicate": False}:
        raise RuntimeError(f"webhook answered {answer}")

    subprocess.run(["wrk", "-t1", "-c16", "-d1s", "-s", script, url], capture_output=True,
                   check=True)
    note("# 6c, 6d: webhook.lua sets wrk.method = \"POST\", a fixed JSON body without an id, and "
         "X-Signature: sha256=<hex HMAC-SHA256 of the body>")
    at16, at64 = [], []
    for run in range(RUNS):
        log(f"webhook intake, run {run + 1}/{RUNS}")
        at16.append(wrk(url, 16, script=script))
        at64.append(wrk(url, 64, script=script))
    return median_of(at16), median_of(at64)


def queue_figures(name, database_url=None):
    """The queue and webhook intake figures of one fresh Splice node."""
    splice, port = start_splice(name, database_url)
    jobs, statuses = measure_queue_jobs(port)
    at16, at64 = measure_webhook_intake(port)
    stop(splice)
    return jobs, statuses, at16, at64


def queue_row(label, database, jobs, statuses, targeted):
    note = "" if targeted else " (the target is for PostgreSQL)"
    failed = "" if set(statuses) == {"succeeded"} else f"; not succeeded: {statuses}"
    row(f"{label}. no-op JS jobs through the queue ({database}), {QUEUE_N} tasks queued at once",
        f"{jobs['jobs_per_s']:,.0f} jobs/s; enqueue→start p50 {us(jobs['p50'])}, "
        f"p99 {us(jobs['p99'])}",
        f"queued over {QUEUE_CONNECTIONS} connections at {jobs['enqueue_per_s']:,.0f}/s; "
        f"{jobs['succeeded']:.0f}/{QUEUE_N} succeeded{failed}; one task at a time on an idle "
        f"queue: enqueue→start p50 {us(jobs['idle_p50'])}",
        "≥ 3,000 jobs/s, p50 ≤ 5 ms" + note,
        (jobs["jobs_per_s"] >= 3000 and jobs["p50"] <= 5000 and not failed) if targeted else None)


def intake_row(label, database, at16, at64, targeted):
    note = "" if targeted else " (the target is for PostgreSQL)"
    row(f"{label}. webhook intake, generic HMAC, each stored as a job ({database}), "
        "16 connections",
        f"{at16['rps']:,.0f} req/s (p50 {us(at16['p50'])}, p99 {us(at16['p99'])})",
        f"64 connections: {at64['rps']:,.0f} req/s (p50 {us(at64['p50'])}, "
        f"p99 {us(at64['p99'])})", "≥ 5,000/s, p99 ≤ 20 ms" + note,
        (at16["rps"] >= 5000 and at16["p99"] <= 20_000) if targeted else None)


def measure_queue():
    sqlite = queue_figures("splice-queue")
    admin_url, url = postgres_database("_queue")
    postgres = None
    if url is not None:
        try:
            postgres = queue_figures("splice-queue-pg", url)
        finally:
            drop_database(admin_url, url)

    missing = ("not available: scripts/postgres failed", "", "—", None)
    queue_row("6a", "SQLite", *sqlite[:2], False)
    if postgres:
        queue_row("6b", "PostgreSQL", *postgres[:2], True)
    else:
        row("6b. no-op JS jobs through the queue (PostgreSQL)", *missing)
    intake_row("6c", "SQLite", *sqlite[2:], False)
    if postgres:
        intake_row("6d", "PostgreSQL", *postgres[2:], True)
    else:
        row("6d. webhook intake (PostgreSQL)", *missing)


def postgres_database(purpose=""):
    """A fresh database for this run, or None when PostgreSQL is not available here."""
    if not WANT_PG or shutil.which("psql") is None:
        return None, None
    # scripts/postgres also drops databases left by earlier test runs; BENCH_PG_URL (a role
    # that may create databases) avoids that while tests run on the same server.
    admin_url = os.environ.get("BENCH_PG_URL")
    if not admin_url:
        out = subprocess.run([os.path.join(ROOT, "scripts", "postgres")], capture_output=True,
                             text=True)
        if out.returncode != 0:
            log(f"scripts/postgres exited {out.returncode}; skipping PostgreSQL")
            return None, None
        admin_url = out.stdout.strip().splitlines()[-1]
    name = f"splice_bench_{os.getpid()}{purpose}"
    subprocess.run(["psql", admin_url, "-qAtX", "-c", f"CREATE DATABASE {name}"], check=True,
                   capture_output=True)
    return admin_url, admin_url.rsplit("/", 1)[0] + "/" + name


def drop_database(admin_url, url):
    name = url.rsplit("/", 1)[1]
    subprocess.run(["psql", admin_url, "-qAtX", "-c", f"DROP DATABASE IF EXISTS {name}"],
                   capture_output=True)


def measure_postgres(sqlite_one):
    admin_url, url = postgres_database()
    if url is None:
        row("PostgreSQL comparison", "not available: scripts/postgres failed", "", "—", None)
        return
    try:
        a, a_port = start_splice("splice-pg-a", url)
        deploy(a_port, "bench", TRIVIAL)
        route = "/v1/integrations/bench/api/ok"
        subprocess.run(["wrk", "-t1", "-c1", "-d1s", "-H", f"Authorization: Bearer {KEY}",
                        f"http://127.0.0.1:{a_port}{route}"], capture_output=True, check=True)
        one = median_of([wrk(f"http://127.0.0.1:{a_port}{route}", 1, KEY) for _ in range(RUNS)])
        row("P1. trivial route, 1 connection: PostgreSQL vs SQLite",
            f"PostgreSQL p50 {us(one['p50'])}, p99 {us(one['p99'])}",
            f"SQLite p50 {us(sqlite_one['p50'])}, p99 {us(sqlite_one['p99'])}", "—", None)

        b, b_port = start_splice("splice-pg-b", url)
        urls = [f"http://127.0.0.1:{p}{route}" for p in (a_port, b_port)]
        pair = {0: [], 1: []}
        for _ in range(RUNS):
            procs = [subprocess.Popen(["wrk", "-t1", "-c1", f"-d{DURATION}s", "--latency", "-H",
                                       f"Authorization: Bearer {KEY}", u],
                                      stdout=subprocess.PIPE, text=True) for u in urls]
            for i, proc in enumerate(procs):
                out = proc.communicate()[0]
                pct = dict((p, float(v) * UNITS[u]) for p, v, u in
                           re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M))
                rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
                pair[i].append({"rps": rps, "p50": pct["50"], "p99": pct["99"]})
        pa, pb = median_of(pair[0]), median_of(pair[1])
        row("P2. two nodes on one PostgreSQL, both called at once (1 connection each)",
            f"node A p50 {us(pa['p50'])}, p99 {us(pa['p99'])}; node B p50 {us(pb['p50'])}, "
            f"p99 {us(pb['p99'])}", f"{pa['rps'] + pb['rps']:,.0f} req/s together", "—", None)

        joins = []
        for i in range(5):
            port = free_port()
            env = splice_env(port, os.path.join(WORK, f"splice-pg-join{i}"), url)
            os.makedirs(env["SPLICE_DATA_DIR"], exist_ok=True)
            out = subprocess.run([os.path.join(BIN, "bench-probe"), "start", f"127.0.0.1:{port}",
                                  route, KEY, "--", SPLICE, "serve"],
                                 env=env, capture_output=True, text=True, check=True)
            joins.append(int(out.stdout.strip()))
        row("P3. node joining an existing cluster: spawn → first 200 from an integration",
            f"p50 {us(percentile(joins, 50))}, max {us(max(joins))} (5 runs)", "", "—", None)
        stop(a)
        stop(b)
    finally:
        drop_database(admin_url, url)


# ---------------------------------------------------------------------------------------------
# Report


def machine():
    model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as meminfo:
        total = int(meminfo.readline().split()[1])

    def version(argv):
        try:
            out = subprocess.run(argv, capture_output=True, text=True)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "unknown"

    return {
        "cpus": os.cpu_count(),
        "model": model,
        "memory": f"{total / 1024 / 1024:.1f} GiB",
        "kernel": os.uname().release,
        "rustc": version(["rustc", "--version"]),
        "node": version(["node", "--version"]),
        "wrk": version(["wrk", "-v"]),
    }


def splice_build():
    if "BENCH_SPLICE" in os.environ:
        return f"`{SPLICE}` (BENCH_SPLICE)"
    out = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                         capture_output=True, text=True)
    return f"release build of commit `{out.stdout.strip() or 'unknown'}`"


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def report(started_at, load_before, load_after):
    m = machine()
    lines = [
        BEGIN,
        "## Latest run",
        "",
        f"- Date: {started_at:%Y-%m-%d %H:%M} UTC; generated by `bench/run`.",
        f"- Machine: {m['cpus']} CPUs ({m['model']}), {m['memory']} RAM, Linux {m['kernel']}.",
        f"- Load average (1, 5, 15 min): {load_before} before, {load_after} after.",
        f"- Splice: {splice_build()}.",
        f"- Tools: {m['rustc']}; Node.js {m['node']}; {m['wrk']}.",
        f"- Medians of {RUNS} runs of {DURATION} s for each wrk measure; everything on loopback.",
        "",
        "| measure | Splice | baseline | target | |",
        "|---|---|---|---|---|",
    ]
    for measure, value, baseline, target, verdict in rows:
        lines.append(f"| {measure} | {value} | {baseline} | {target} | {verdict} |")
    lines += ["", "Commands (`$KEY` is the admin key of the run):", "", "```sh"]
    lines += commands
    lines += ["```", END]
    generated = "\n".join(lines)

    try:
        with open(DOC) as f:
            text = f.read()
    except FileNotFoundError:
        text = f"# Performance\n\n{BEGIN}\n{END}\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + generated + rest.split(END, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + generated + "\n"
    with open(DOC, "w") as f:
        f.write(text)
    print(generated.replace(BEGIN + "\n", "").replace("\n" + END, ""))


def main():
    started_at = datetime.now(timezone.utc)
    load_before = loadavg()
    only = set(os.environ.get("BENCH_ONLY", "").split(",")) - {""}

    def wanted(name):
        return not only or name in only

    sqlite_one = None
    if wanted("http"):
        sqlite_one = measure_throughput_and_latency()
    if wanted("cold"):
        measure_cold_start_and_density()
    if wanted("start"):
        measure_start_to_ready()
    if wanted("token"):
        measure_token(sqlite_one)
    if wanted("queue"):
        measure_queue()
    if wanted("runaway"):
        measure_runaway()
    if wanted("pg") and sqlite_one is not None:
        measure_postgres(sqlite_one)
    report(started_at, load_before, loadavg())


if __name__ == "__main__":
    WORK = tempfile.mkdtemp(prefix="splice-bench-")
    try:
        main()
    finally:
        for child in list(children):
            stop(child)
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(WORK, ignore_errors=True)
        else:
            log(f"kept {WORK}")
