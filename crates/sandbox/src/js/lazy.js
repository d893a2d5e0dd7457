// The rarely used part of the `splice` module: console formatting, connectors, starting tasks
// and the runners of tasks, provider events and schedules. The core module evaluates this one
// the first time a context needs any of it, so a context that only serves routes does not pay
// for reading and evaluating it. Must not import anything: it is evaluated directly from
// bytecode, without module resolution.

let host;
let hostError;
let web;
let Context;
let ROUTE;
let errorResponse;

/** Connects this module to the core's native table and helpers; returns what the core calls. */
export function bind(native, shared) {
  host = native;
  ({ hostError, web, Context, ROUTE, errorResponse } = shared);
  return { formatArgs, openConnector, startTask, runTask, runEvent, runCron };
}

// ---------------------------------------------------------------------------------------------
// console

function formatError(e) {
  let head;
  try {
    head = `${e.name ?? "Error"}: ${e.message ?? ""}`;
  } catch {
    head = "Error";
  }
  const stack = typeof e.stack === "string" ? e.stack.trimEnd() : "";
  return stack ? `${head}\n${stack}` : head;
}

function describeFunction(f) {
  return `[Function: ${f.name || "(anonymous)"}]`;
}

function inspect(value) {
  const seen = new WeakSet();
  try {
    const text = JSON.stringify(value, function (key, v) {
      switch (typeof v) {
        case "bigint":
          return `${v}n`;
        case "function":
          return describeFunction(v);
        case "symbol":
          return v.toString();
        case "undefined":
          return key === "" ? "undefined" : v;
        case "object":
          if (v === null) return v;
          if (v instanceof Error) return formatError(v);
          if (seen.has(v)) return "[Circular]";
          seen.add(v);
          if (v instanceof Map) return { Map: [...v.entries()] };
          if (v instanceof Set) return { Set: [...v.values()] };
          return v;
        default:
          return v;
      }
    });
    return text ?? String(value);
  } catch {
    return Object.prototype.toString.call(value);
  }
}

function formatValue(v) {
  switch (typeof v) {
    case "string":
      return v;
    case "function":
      return describeFunction(v);
    case "symbol":
      return v.toString();
    case "bigint":
      return `${v}n`;
    case "object":
      if (v === null) return "null";
      if (v instanceof Error) return formatError(v);
      return inspect(v);
    default:
      return String(v);
  }
}

function formatArgs(args) {
  if (typeof args[0] !== "string" || !args[0].includes("%")) return args.map(formatValue).join(" ");

  let i = 1;
  const head = args[0].replace(/%[sdifjoO%]/g, (spec) => {
    if (spec === "%%") return "%";
    if (i >= args.length) return spec;
    const arg = args[i++];
    switch (spec) {
      case "%d":
      case "%i":
        return String(parseInt(arg, 10));
      case "%f":
        return String(Number(arg));
      case "%s":
        return typeof arg === "string" ? arg : formatValue(arg);
      default:
        return inspect(arg);
    }
  });
  return [head, ...args.slice(i).map(formatValue)].join(" ");
}

// ---------------------------------------------------------------------------------------------
// Connectors

function requireId(value, what) {
  if (typeof value !== "string" || value === "") throw new TypeError(`${what} must be a non-empty string`);
}

/** A connector bound to one identity; `fetch` carries its credentials. */
class Connector {
  #name;
  #scope;
  #id;

  constructor(name, scope, id) {
    this.#name = name;
    this.#scope = scope;
    this.#id = id;
  }

  get name() {
    return this.#name;
  }

  async token(options = {}) {
    try {
      return await host.token(this.#name, this.#scope, this.#id, options.forceRefresh === true);
    } catch (e) {
      throw hostError(e);
    }
  }

  /**
   * `fetch` with this identity's credentials. Relative URLs resolve against the connector's
   * API base URL; on a 401 the host refreshes the token and retries once.
   */
  fetch(input, init = {}) {
    return web().send(input, init, { name: this.#name, scope: this.#scope, id: this.#id });
  }
}

async function openConnector(ctx, name, scope, id) {
  if (!(ctx instanceof Context)) {
    throw new TypeError("connector() takes the handler's ctx as its first argument");
  }
  requireId(name, "connector name");
  requireId(id, scope === "tenant" ? "tenant id" : "install id");
  return new Connector(name, scope, id);
}

// ---------------------------------------------------------------------------------------------
// Tasks

const TASK_OPTIONS = ["delayMs", "idempotencyKey", "maxAttempts"];

/** `integration.task.start(name, payload, options)`: queues a run, resolves to `{ id }`. */
async function startTask(name, payload, options) {
  if (typeof name !== "string" || name === "") throw new TypeError("task name must be a non-empty string");
  const json = JSON.stringify(payload === undefined ? null : payload);
  if (json === undefined) throw new TypeError("task payload must be JSON");
  if (options === null || typeof options !== "object") throw new TypeError("task options must be an object");
  const delay = options.delayMs ?? 0;
  if (typeof delay !== "number" || !(delay >= 0)) throw new TypeError("delayMs must be a number ≥ 0");
  const unknown = Object.keys(options).find((k) => !TASK_OPTIONS.includes(k));
  if (unknown !== undefined) throw new TypeError(`unknown task option ${unknown}; use ${TASK_OPTIONS.join(", ")}`);
  const key = options.idempotencyKey;
  if (key !== undefined && (typeof key !== "string" || key === "" || key.length > 256)) {
    throw new TypeError("idempotencyKey must be a string of 1-256 characters");
  }
  const attempts = options.maxAttempts;
  if (attempts !== undefined && !(Number.isInteger(attempts) && attempts >= 1 && attempts <= 10)) {
    throw new TypeError("maxAttempts must be an integer from 1 to 10");
  }
  try {
    return { id: await host.startTask(name, json, delay, key, attempts) };
  } catch (e) {
    throw hostError(e);
  }
}

// ---------------------------------------------------------------------------------------------
// Background runs

/**
 * The queue job a background run belongs to: `{ id, attempt }`. A run repeated after a crash
 * has the same id and a higher attempt, so its effects can be made idempotent by the id.
 */
function jobOf(ctx) {
  return Object.freeze({
    id: ctx.request.get("x-splice-job") ?? null,
    attempt: Number(ctx.request.get("x-splice-attempt") ?? 1),
  });
}

/** Runs a task handler with `ctx.payload`; its return value is the task's result. */
async function runTask(integration, raw) {
  const handler = integration.task[ROUTE](raw.path);
  if (handler === null) {
    return errorResponse(404, "task_not_found", `no task handler named ${raw.path}`);
  }
  const ctx = new Context(raw, {});
  ctx.job = jobOf(ctx);
  ctx.task = raw.path;
  ctx.payload = raw.body === "" ? null : JSON.parse(raw.body);
  const result = await handler(ctx);
  const body = JSON.stringify(result === undefined ? null : result);
  return { status: 200, headers: [["content-type", "application/json"]], body };
}

/**
 * Runs the handler matching a provider event, with `ctx.event` and `ctx.install` — or, for an
 * event no install matched, the matching `unmatched` handler with `ctx.install` null.
 */
async function runEvent(integration, raw) {
  const ctx = new Context(raw, {});
  ctx.job = jobOf(ctx);
  const unmatched = ctx.request.get("x-splice-unmatched") === "1";
  const handler = integration.event[ROUTE](raw.path, unmatched);
  if (handler === null) {
    return errorResponse(404, "event_not_handled", `no event handler matches ${raw.path}`);
  }
  const split = raw.path.indexOf(":");
  ctx.connector = raw.path.slice(0, split);
  ctx.type = raw.path.slice(split + 1);
  ctx.event = raw.body === "" ? null : JSON.parse(raw.body);
  ctx.install = ctx.request.get("x-splice-install") ?? null;
  await handler(ctx);
  return { status: 204, headers: [], body: undefined };
}

/** Runs the handler of a schedule firing, with `ctx.schedule`, `ctx.slot` and `ctx.install`. */
async function runCron(integration, raw) {
  const handler = integration.cron[ROUTE](raw.path);
  if (handler === null) {
    return errorResponse(404, "schedule_not_handled", `no cron handler named ${raw.path}`);
  }
  const ctx = new Context(raw, {});
  ctx.job = jobOf(ctx);
  ctx.schedule = raw.path;
  ctx.slot = raw.body === "" ? null : JSON.parse(raw.body).slot;
  ctx.install = ctx.request.get("x-splice-install") ?? null;
  await handler(ctx);
  return { status: 204, headers: [], body: undefined };
}
