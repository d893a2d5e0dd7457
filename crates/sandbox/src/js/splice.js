// The built-in `splice` module: the Integration class with its router, request context and
// connectors, plus the console and timers. The web APIs (fetch, Headers, Response, URL, ...)
// live in web.js, and console formatting, connectors, starting tasks and the background
// runners in lazy.js; each is loaded the first time a context needs it.
// Everything that leaves the runtime goes through `host`, a table of native functions the
// sandbox installs before this module runs. Compiled to bytecode once per process and
// evaluated once per context.

const host = globalThis.__splice_host;
delete globalThis.__splice_host;

const defineGlobal = (name, value) =>
  Object.defineProperty(globalThis, name, {
    value,
    writable: true,
    configurable: true,
    enumerable: false,
  });

// ---------------------------------------------------------------------------------------------
// Errors

/** An error reported by the host (network, token, ...); `code` is machine-readable. */
export class HostError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "HostError";
    this.code = code;
  }
}

const hostError = (e) =>
  e instanceof Error ? e : new HostError(String(e?.code ?? "host_error"), String(e?.message ?? e));

/** Thrown by `ctx.throw(status, message)`; becomes an error response. */
export class HttpError extends Error {
  constructor(status, message, code) {
    if (!Number.isInteger(status) || status < 400 || status > 599) {
      throw new RangeError(`ctx.throw needs an error status (400-599), not ${String(status)}`);
    }
    super(message ?? `request failed with status ${status}`);
    this.name = "HttpError";
    this.status = status;
    this.code = code ?? defaultErrorCode(status);
  }
}

function defaultErrorCode(status) {
  const codes = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    422: "unprocessable_entity",
    429: "too_many_requests",
  };
  return codes[status] ?? (status >= 500 ? "internal_error" : "error");
}

// ---------------------------------------------------------------------------------------------
// console

const LOG_LEVELS = { log: 0, info: 0, debug: 0, trace: 0, warn: 1, error: 2 };
const console = {};
for (const [method, level] of Object.entries(LOG_LEVELS)) {
  console[method] = (...args) => {
    if (host.canLog()) host.log(level, lazy().formatArgs(args));
  };
}
console.assert = (condition, ...args) => {
  if (!condition) console.error("Assertion failed", ...args);
};
defineGlobal("console", console);

// ---------------------------------------------------------------------------------------------
// Shared helpers (also handed to the web module)

const toUint8Array = (data) => {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return null;
};

function decodeComponent(s) {
  const plus = s.replace(/\+/g, " ");
  try {
    return decodeURIComponent(plus);
  } catch {
    return plus;
  }
}

function parsePairs(query) {
  const pairs = [];
  for (const part of query.split("&")) {
    if (part === "") continue;
    const eq = part.indexOf("=");
    const name = eq < 0 ? part : part.slice(0, eq);
    const value = eq < 0 ? "" : part.slice(eq + 1);
    pairs.push([decodeComponent(name), decodeComponent(value)]);
  }
  return pairs;
}

/**
 * Sets an own, enumerable property whatever its name: a key the client chose, such as
 * `__proto__` or `constructor`, is data, never the object's prototype or an inherited value.
 */
function setOwn(object, name, value) {
  Object.defineProperty(object, name, { value, writable: true, enumerable: true, configurable: true });
}

/** Parses a query string into an object; repeated keys become arrays. */
function parseQuery(query) {
  const out = {};
  for (const [name, value] of parsePairs(query)) {
    const prev = Object.hasOwn(out, name) ? out[name] : undefined;
    if (prev === undefined) setOwn(out, name, value);
    else if (Array.isArray(prev)) prev.push(value);
    else setOwn(out, name, [prev, value]);
  }
  return out;
}

const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;

function headerName(name) {
  const n = String(name).toLowerCase();
  if (!HEADER_NAME.test(n)) throw new TypeError(`invalid header name: ${name}`);
  return n;
}

function headerValue(value) {
  const v = String(value).trim();
  if (/[\r\n\0]/.test(v)) throw new TypeError("header values must not contain CR, LF or NUL");
  return v;
}

// ---------------------------------------------------------------------------------------------
// Web APIs, loaded on first use (see web.js)

let webApis = null;

function web() {
  if (webApis === null) {
    const shared = { hostError, toUint8Array, decodeComponent, parsePairs, headerName, headerValue };
    webApis = host.loadPart("web")(host, shared);
  }
  return webApis;
}

const WEB_GLOBALS = [
  "fetch", "Headers", "Response", "URL", "URLSearchParams", "TextEncoder", "TextDecoder", "atob", "btoa",
];

for (const name of WEB_GLOBALS) {
  Object.defineProperty(globalThis, name, {
    configurable: true,
    enumerable: false,
    get() {
      const value = web()[name];
      defineGlobal(name, value);
      return value;
    },
    set(value) {
      defineGlobal(name, value);
    },
  });
}

// ---------------------------------------------------------------------------------------------
// Timers. They run only while an invocation is in flight: when the handler settles, timers it
// did not wait for are dropped.

const timers = new Map();
let timerSeq = 0;

function schedule(id, callback, ms, args, repeat) {
  host.sleep(Math.max(0, Number(ms) || 0)).then(() => {
    const timer = timers.get(id);
    if (timer === undefined) return;
    if (repeat) schedule(id, callback, ms, args, true);
    else timers.delete(id);
    try {
      callback(...args);
    } catch (e) {
      console.error("Uncaught exception in timer:", e);
    }
  });
}

function startTimer(callback, ms, args, repeat) {
  if (typeof callback !== "function") throw new TypeError("timer callback must be a function");
  const id = ++timerSeq;
  timers.set(id, true);
  schedule(id, callback, ms, args, repeat);
  return id;
}

defineGlobal("setTimeout", (callback, ms, ...args) => startTimer(callback, ms, args, false));
defineGlobal("setInterval", (callback, ms, ...args) => startTimer(callback, ms, args, true));
defineGlobal("clearTimeout", (id) => void timers.delete(id));
defineGlobal("clearInterval", (id) => void timers.delete(id));

// ---------------------------------------------------------------------------------------------
// Router

const ROUTE = Symbol("route");

/** The path without one trailing slash; the empty path is `/`. */
function trimPath(path) {
  if (path.length > 1 && path.endsWith("/")) return path.slice(0, -1);
  return path === "" ? "/" : path;
}

function splitPath(path) {
  const trimmed = trimPath(path);
  return trimmed === "/" ? [] : trimmed.slice(1).split("/");
}

function compilePattern(path) {
  const segments = splitPath(path);
  return segments.map((segment, i) => {
    if (segment === "*") {
      if (i !== segments.length - 1) throw new TypeError(`'*' must be the last segment: ${path}`);
      return { rest: true };
    }
    if (segment.startsWith(":")) {
      const name = segment.slice(1);
      if (!/^[A-Za-z_$][\w$]*$/.test(name)) throw new TypeError(`invalid parameter name in ${path}`);
      return { param: name };
    }
    return { literal: segment };
  });
}

function decodeSegment(segment) {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

function matchPattern(pattern, segments) {
  const params = {};
  for (let i = 0; i < pattern.length; i++) {
    const part = pattern[i];
    if (part.rest) {
      params["*"] = segments.slice(i).map(decodeSegment).join("/");
      return params;
    }
    if (i >= segments.length) return null;
    if (part.param !== undefined) {
      if (segments[i] === "") return null;
      setOwn(params, part.param, decodeSegment(segments[i]));
    } else if (part.literal !== segments[i]) {
      return null;
    }
  }
  return pattern.length === segments.length ? params : null;
}

/** Maps method and path patterns (`/tenants/:tenant/me`) to handlers. */
export class Router {
  #routes = [];

  get(path, handler) {
    return this.#add("GET", path, handler);
  }

  post(path, handler) {
    return this.#add("POST", path, handler);
  }

  put(path, handler) {
    return this.#add("PUT", path, handler);
  }

  patch(path, handler) {
    return this.#add("PATCH", path, handler);
  }

  delete(path, handler) {
    return this.#add("DELETE", path, handler);
  }

  all(path, handler) {
    return this.#add("*", path, handler);
  }

  // A literal path matches by string comparison and is never split; only patterns with
  // parameters compile, here, to report bad names.
  #add(method, path, handler) {
    if (typeof path !== "string" || !path.startsWith("/")) {
      throw new TypeError(`route path must be a string starting with '/': ${String(path)}`);
    }
    if (typeof handler !== "function") throw new TypeError(`handler for ${path} must be a function`);
    const dynamic = path.includes(":") || path.includes("*");
    this.#routes.push({
      method,
      literal: dynamic ? null : trimPath(path),
      pattern: dynamic ? compilePattern(path) : null,
      handler,
    });
    return this;
  }

  /** The handler for a request, `{ allow }` when only the method is wrong, or null. */
  [ROUTE](method, path) {
    const target = trimPath(path);
    const routes = this.#routes;
    let segments = null;
    let allow = null;
    for (let i = 0; i < routes.length; i++) {
      const route = routes[i];
      let params;
      if (route.literal !== null) {
        if (route.literal !== target) continue;
        params = {};
      } else {
        segments ??= splitPath(path);
        params = matchPattern(route.pattern, segments);
        if (params === null) continue;
      }
      if (route.method === "*" || route.method === method || (method === "HEAD" && route.method === "GET")) {
        return { handler: route.handler, params };
      }
      (allow ??= new Set()).add(route.method);
    }
    return allow === null ? null : { allow: [...allow] };
  }
}

// ---------------------------------------------------------------------------------------------
// Request context

const FINISH = Symbol("finish");

/** Request headers (`[name, value, name, value, ...]`) as an object; repeats are joined. */
function headerObject(flat) {
  const out = {};
  for (let i = 0; i + 1 < flat.length; i += 2) {
    const name = flat[i];
    const value = flat[i + 1];
    setOwn(out, name, Object.hasOwn(out, name) ? `${out[name]}, ${value}` : value);
  }
  return out;
}

/** The request side of `ctx`, parsed lazily. */
class ContextRequest {
  #raw;
  #query;
  #headers;
  #body;
  #parsed = false;

  constructor(raw) {
    this.#raw = raw;
  }

  get method() {
    return this.#raw.method;
  }

  get path() {
    return this.#raw.path;
  }

  get querystring() {
    return this.#raw.query;
  }

  get query() {
    return (this.#query ??= parseQuery(this.#raw.query));
  }

  get headers() {
    return (this.#headers ??= headerObject(this.#raw.headers));
  }

  get type() {
    return (this.headers["content-type"] ?? "").split(";")[0].trim().toLowerCase();
  }

  get rawBody() {
    return this.#raw.body;
  }

  get body() {
    if (!this.#parsed) {
      this.#body = this.#parseBody();
      this.#parsed = true;
    }
    return this.#body;
  }

  get(name) {
    return this.headers[String(name).toLowerCase()];
  }

  #parseBody() {
    const raw = this.#raw.body;
    const type = this.type;
    if (type === "application/json" || type.endsWith("+json")) {
      if (raw.trim() === "") return undefined;
      try {
        return JSON.parse(raw);
      } catch {
        throw new HttpError(400, "request body is not valid JSON", "malformed_json");
      }
    }
    if (type === "application/x-www-form-urlencoded") return parseQuery(raw);
    return raw;
  }
}

/** The Koa-like `ctx` a handler receives. */
class Context {
  #raw;
  #request = null;
  #status;
  #body;
  #headers = null;

  constructor(raw, params) {
    this.#raw = raw;
    this.method = raw.method;
    this.path = raw.path;
    this.params = params;
    this.state = {};
  }

  get request() {
    return (this.#request ??= new ContextRequest(this.#raw));
  }

  set request(value) {
    this.#request = value;
  }

  get query() {
    return this.request.query;
  }

  get querystring() {
    return this.request.querystring;
  }

  get headers() {
    return this.request.headers;
  }

  get status() {
    return this.#status ?? (this.#body === undefined || this.#body === null ? 204 : 200);
  }

  set status(code) {
    if (!Number.isInteger(code) || code < 100 || code > 599) {
      throw new TypeError(`invalid status code: ${code}`);
    }
    this.#status = code;
  }

  get body() {
    return this.#body;
  }

  set body(value) {
    this.#body = value;
  }

  get(name) {
    return this.request.get(name);
  }

  /** Sets a response header; `set({ name: value })` sets several. */
  set(name, value) {
    if (typeof name === "object" && name !== null) {
      for (const key of Object.keys(name)) this.set(key, name[key]);
      return;
    }
    this.remove(name);
    for (const v of Array.isArray(value) ? value : [value]) this.append(name, v);
  }

  append(name, value) {
    (this.#headers ??= []).push([headerName(name), headerValue(value)]);
  }

  remove(name) {
    const n = headerName(name);
    if (this.#headers !== null) this.#headers = this.#headers.filter(([k]) => k !== n);
  }

  throw(status, message, code) {
    throw new HttpError(status, message, code);
  }

  [FINISH]() {
    const headers = this.#headers ?? [];
    let body = this.#body;
    let type = TEXT;
    if (typeof body !== "string") [body, type] = responseBody(body);
    if (type !== null && !hasHeader(headers, "content-type")) headers.push(["content-type", type]);
    return { status: this.status, headers, body };
  }
}

const TEXT = "text/plain; charset=utf-8";

function hasHeader(pairs, name) {
  for (let i = 0; i < pairs.length; i++) {
    if (pairs[i][0] === name) return true;
  }
  return false;
}

function responseBody(body) {
  if (body === undefined || body === null) return [undefined, null];
  if (typeof body === "string") return [body, TEXT];
  const bytes = toUint8Array(body);
  if (bytes !== null) return [bytes, "application/octet-stream"];
  return [JSON.stringify(body), "application/json"];
}

function errorResponse(status, code, message, headers = []) {
  return {
    status,
    headers: [["content-type", "application/json"], ...headers],
    body: JSON.stringify({ error: { code, message } }),
  };
}

// ---------------------------------------------------------------------------------------------
// The rarely used part (see lazy.js), loaded on first use

let lazyApis = null;

function lazy() {
  if (lazyApis === null) {
    const shared = { hostError, web, Context, ROUTE, errorResponse };
    lazyApis = host.loadPart("lazy")(host, shared);
  }
  return lazyApis;
}

// ---------------------------------------------------------------------------------------------
// Integration

/** Background task handlers, by name: `integration.task.on("import", async (ctx) => …)`. */
class Tasks {
  #handlers = new Map();

  on(name, handler) {
    if (typeof name !== "string" || name === "") throw new TypeError("task name must be a non-empty string");
    if (typeof handler !== "function") throw new TypeError("task handler must be a function");
    this.#handlers.set(name, handler);
    return this;
  }

  [ROUTE](name) {
    return this.#handlers.get(name) ?? null;
  }
}

/**
 * Background task handlers, and starting tasks from code:
 * `await integration.task.start("import", { page: 1 }, { delayMs: 60000, idempotencyKey })`
 * queues a run of this integration's `import` handler and resolves to `{ id }`.
 */
class TaskQueue extends Tasks {
  async start(name, payload = null, options = {}) {
    return lazy().startTask(name, payload, options);
  }
}

/**
 * Provider event handlers: `integration.event.on("slack:message", handler)`. A pattern is
 * `<connector name>:<event type>`, where the type may end in `*` (`"github:issues.*"`, or
 * `"slack:*"`); the most specific match wins.
 */
class Events {
  #handlers = [];
  #unmatched = [];

  on(pattern, handler) {
    this.#handlers.push(checkEventHandler(pattern, handler));
    return this;
  }

  /**
   * Handlers for events that matched no install (no install's identity carries the event's
   * provider account): `integration.event.unmatched("slack:*", handler)`; `ctx.install` is null.
   */
  unmatched(pattern, handler) {
    this.#unmatched.push(checkEventHandler(pattern, handler));
    return this;
  }

  [ROUTE](name, unmatched = false) {
    let best = null;
    let bestLength = -1;
    for (const [pattern, handler] of unmatched ? this.#unmatched : this.#handlers) {
      const exact = pattern === name;
      const prefix = pattern.endsWith("*") && name.startsWith(pattern.slice(0, -1));
      const length = exact ? Infinity : pattern.length;
      if ((exact || prefix) && length > bestLength) {
        best = handler;
        bestLength = length;
      }
    }
    return best;
  }
}

function checkEventHandler(pattern, handler) {
  if (typeof pattern !== "string" || !pattern.includes(":")) {
    throw new TypeError("event pattern must look like \"<connector>:<event type>\"");
  }
  if (typeof handler !== "function") throw new TypeError("event handler must be a function");
  return [pattern, handler];
}

/** Schedule handlers, by the schedule's name declared at deploy: `integration.cron.on(…)`. */
class Crons extends Tasks {}

/** The default export of `integration.js`: routes, tasks, and access to connectors. */
export class Integration {
  constructor() {
    this.router = new Router();
    this.task = new TaskQueue();
    this.event = new Events();
    this.cron = new Crons();
    this.tenant = Object.freeze({
      connector: (ctx, name, tenantId) => lazy().openConnector(ctx, name, "tenant", tenantId),
    });
    this.install = Object.freeze({
      connector: (ctx, name, installId) => lazy().openConnector(ctx, name, "install", installId),
    });
  }
}

/**
 * Runs one request through an integration's router (or a background handler); called by the
 * sandbox. A handler that finishes synchronously gets its response back synchronously, with
 * no promise in between; one that returns a promise gets a promise of the response.
 */
function dispatch(integration, kind, method, path, query, headers, body) {
  // Timers left by earlier invocations can never fire: their host operations were dropped.
  timers.clear();
  const raw = { kind, method, path, query, headers, body };
  if (raw.kind === "task") return lazy().runTask(integration, raw);
  if (raw.kind === "event") return lazy().runEvent(integration, raw);
  if (raw.kind === "cron") return lazy().runCron(integration, raw);

  const found = integration.router[ROUTE](raw.method, raw.path);
  if (found === null) {
    return errorResponse(404, "route_not_found", `no route matches ${raw.path}`);
  }
  if (found.allow !== undefined) {
    const allow = found.allow.join(", ");
    const message = `${raw.method} is not allowed on ${raw.path}`;
    return errorResponse(405, "method_not_allowed", message, [["allow", allow]]);
  }

  const ctx = new Context(raw, found.params);
  let pending;
  try {
    pending = found.handler(ctx);
  } catch (e) {
    return thrownResponse(e);
  }
  if (pending !== null && typeof pending === "object" && typeof pending.then === "function") {
    return finishLater(ctx, pending);
  }
  return ctx[FINISH]();
}

async function finishLater(ctx, pending) {
  try {
    await pending;
  } catch (e) {
    return thrownResponse(e);
  }
  return ctx[FINISH]();
}

/** `ctx.throw` answers with its status; anything else fails the invocation. */
function thrownResponse(e) {
  if (e instanceof HttpError) return errorResponse(e.status, e.code, e.message);
  throw e;
}

/** Why a default export cannot serve requests, or null when it can. */
function validate(value) {
  if (value instanceof Integration) {
    return value.router instanceof Router ? null : "the integration's router was replaced";
  }
  return "integration.js must `export default` an instance of Integration from 'splice'";
}

host.dispatch = dispatch;
host.validate = validate;
