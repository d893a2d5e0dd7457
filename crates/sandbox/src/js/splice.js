// The built-in `splice` module: the Integration class with its router and connectors, and the
// web APIs integration code may use (fetch, Headers, Response, console, timers, URL,
// URLSearchParams, TextEncoder/TextDecoder, atob/btoa). Everything that leaves the runtime goes
// through `host`, a table of native functions the sandbox installs before this module runs.
// Compiled to bytecode once per process and evaluated once per context.

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

const LOG_LEVELS = { log: 0, info: 0, debug: 0, trace: 0, warn: 1, error: 2 };
const console = {};
for (const [method, level] of Object.entries(LOG_LEVELS)) {
  console[method] = (...args) => {
    if (host.canLog()) host.log(level, formatArgs(args));
  };
}
console.assert = (condition, ...args) => {
  if (!condition) console.error("Assertion failed", ...args);
};
defineGlobal("console", console);

// ---------------------------------------------------------------------------------------------
// Bytes and text

const toUint8Array = (data) => {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return null;
};

class TextEncoder {
  get encoding() {
    return "utf-8";
  }

  encode(input = "") {
    return host.utf8Encode(String(input));
  }
}

class TextDecoder {
  #fatal;
  #ignoreBOM;

  constructor(label = "utf-8", options = {}) {
    const name = String(label).trim().toLowerCase();
    if (name !== "utf-8" && name !== "utf8" && name !== "unicode-1-1-utf-8") {
      throw new RangeError(`unsupported encoding: ${label}`);
    }
    this.#fatal = Boolean(options.fatal);
    this.#ignoreBOM = Boolean(options.ignoreBOM);
  }

  get encoding() {
    return "utf-8";
  }

  get fatal() {
    return this.#fatal;
  }

  get ignoreBOM() {
    return this.#ignoreBOM;
  }

  decode(input) {
    if (input === undefined) return "";
    const bytes = toUint8Array(input);
    if (bytes === null) throw new TypeError("TextDecoder.decode expects an ArrayBuffer or a view");
    return host.utf8Decode(bytes, this.#fatal, !this.#ignoreBOM);
  }
}

defineGlobal("TextEncoder", TextEncoder);
defineGlobal("TextDecoder", TextDecoder);

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

function btoa(input) {
  const s = String(input);
  let out = "";
  for (let i = 0; i < s.length; i += 3) {
    const a = s.charCodeAt(i);
    const b = s.charCodeAt(i + 1);
    const c = s.charCodeAt(i + 2);
    if (a > 255 || b > 255 || c > 255) {
      throw new DOMException("btoa: the string contains characters outside Latin1", "InvalidCharacterError");
    }
    const n = (a << 16) | ((b || 0) << 8) | (c || 0);
    out += B64[n >> 18] + B64[(n >> 12) & 63];
    out += i + 1 < s.length ? B64[(n >> 6) & 63] : "=";
    out += i + 2 < s.length ? B64[n & 63] : "=";
  }
  return out;
}

function atob(input) {
  let s = String(input).replace(/[\t\n\f\r ]/g, "");
  if (s.length % 4 === 0) s = s.replace(/==?$/, "");
  if (s.length % 4 === 1 || /[^A-Za-z0-9+/]/.test(s)) {
    throw new DOMException("atob: the string is not valid base64", "InvalidCharacterError");
  }
  let out = "";
  let bits = 0;
  let acc = 0;
  for (const ch of s) {
    acc = (acc << 6) | B64.indexOf(ch);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += String.fromCharCode((acc >> bits) & 255);
    }
  }
  return out;
}

defineGlobal("btoa", btoa);
defineGlobal("atob", atob);

// ---------------------------------------------------------------------------------------------
// URLSearchParams and URL

function decodeComponent(s) {
  const plus = s.replace(/\+/g, " ");
  try {
    return decodeURIComponent(plus);
  } catch {
    return plus;
  }
}

function encodeComponent(s) {
  return encodeURIComponent(s)
    .replace(/%20/g, "+")
    .replace(/[!'()~]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase());
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

/** Parses a query string into an object; repeated keys become arrays. */
function parseQuery(query) {
  const out = {};
  for (const [name, value] of parsePairs(query)) {
    const prev = out[name];
    if (prev === undefined) out[name] = value;
    else if (Array.isArray(prev)) prev.push(value);
    else out[name] = [prev, value];
  }
  return out;
}

const searchParamsUpdate = Symbol("update");

class URLSearchParams {
  #list = [];
  [searchParamsUpdate] = null;

  constructor(init = "") {
    if (init instanceof URLSearchParams) {
      this.#list = [...init];
    } else if (typeof init === "object" && init !== null) {
      const entries = typeof init[Symbol.iterator] === "function" ? init : Object.entries(init);
      for (const pair of entries) {
        const items = [...pair];
        if (items.length !== 2) throw new TypeError("URLSearchParams pairs must have two items");
        this.#list.push([String(items[0]), String(items[1])]);
      }
    } else {
      const s = String(init);
      this.#list = parsePairs(s.startsWith("?") ? s.slice(1) : s);
    }
  }

  #changed() {
    this[searchParamsUpdate]?.(this.toString());
  }

  get size() {
    return this.#list.length;
  }

  append(name, value) {
    this.#list.push([String(name), String(value)]);
    this.#changed();
  }

  delete(name, value) {
    const n = String(name);
    this.#list = this.#list.filter(([k, v]) => k !== n || (value !== undefined && v !== String(value)));
    this.#changed();
  }

  get(name) {
    const n = String(name);
    return this.#list.find(([k]) => k === n)?.[1] ?? null;
  }

  getAll(name) {
    const n = String(name);
    return this.#list.filter(([k]) => k === n).map(([, v]) => v);
  }

  has(name, value) {
    const n = String(name);
    return this.#list.some(([k, v]) => k === n && (value === undefined || v === String(value)));
  }

  set(name, value) {
    const n = String(name);
    const at = this.#list.findIndex(([k]) => k === n);
    if (at < 0) {
      this.#list.push([n, String(value)]);
    } else {
      this.#list[at] = [n, String(value)];
      this.#list = this.#list.filter(([k], i) => k !== n || i <= at);
    }
    this.#changed();
  }

  sort() {
    this.#list.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    this.#changed();
  }

  forEach(callback, thisArg) {
    for (const [k, v] of this.#list) callback.call(thisArg, v, k, this);
  }

  *entries() {
    yield* this.#list.map(([k, v]) => [k, v]);
  }

  *keys() {
    for (const [k] of this.#list) yield k;
  }

  *values() {
    for (const [, v] of this.#list) yield v;
  }

  [Symbol.iterator]() {
    return this.entries();
  }

  toString() {
    return this.#list.map(([k, v]) => `${encodeComponent(k)}=${encodeComponent(v)}`).join("&");
  }

  get [Symbol.toStringTag]() {
    return "URLSearchParams";
  }
}

const DEFAULT_PORTS = { "http:": "80", "https:": "443", "ws:": "80", "wss:": "443", "ftp:": "21" };
const URL_PATTERN = /^([a-zA-Z][a-zA-Z0-9+.-]*):(\/\/([^/?#]*))?([^?#]*)(\?[^#]*)?(#.*)?$/;
const AUTHORITY_PATTERN = /^(?:([^:@]*)(?::([^@]*))?@)?(\[[^\]]*\]|[^:]*)(?::(\d*))?$/;

function normalizePath(path) {
  const out = [];
  const segments = path.split("/");
  for (let i = 0; i < segments.length; i++) {
    const seg = segments[i];
    const last = i === segments.length - 1;
    if (seg === "." || seg === "%2e") {
      if (last) out.push("");
    } else if (seg === ".." || seg.toLowerCase() === "%2e%2e") {
      if (out.length > 1) out.pop();
      if (last) out.push("");
    } else {
      out.push(seg);
    }
  }
  const joined = out.join("/");
  return joined.startsWith("/") ? joined : `/${joined}`;
}

const encodeUnsafe = (s, pattern) =>
  s.replace(pattern, (c) => {
    try {
      return encodeURIComponent(c);
    } catch {
      return "%EF%BF%BD";
    }
  });

class URL {
  #protocol = "";
  #username = "";
  #password = "";
  #hostname = "";
  #port = "";
  #pathname = "";
  #search = "";
  #hash = "";
  #searchParams = null;

  constructor(url, base) {
    const input = String(url instanceof URL ? url.href : url).trim();
    const m = URL_PATTERN.exec(input);
    if (m) {
      this.#parse(m);
    } else if (base !== undefined) {
      const b = base instanceof URL ? base : new URL(base);
      this.#resolve(input, b);
    } else {
      throw new TypeError(`Invalid URL: ${input}`);
    }
  }

  static canParse(url, base) {
    try {
      new URL(url, base);
      return true;
    } catch {
      return false;
    }
  }

  #parse(m) {
    this.#protocol = m[1].toLowerCase() + ":";
    if (m[2] !== undefined) {
      const a = AUTHORITY_PATTERN.exec(m[3]);
      if (!a) throw new TypeError(`Invalid URL: ${m[0]}`);
      this.#username = a[1] ?? "";
      this.#password = a[2] ?? "";
      this.#hostname = a[3].toLowerCase();
      this.port = a[4] ?? "";
      if (this.#hostname === "" && this.#isSpecial()) throw new TypeError(`Invalid URL: ${m[0]}`);
    } else if (this.#isSpecial()) {
      throw new TypeError(`Invalid URL: ${m[0]}`);
    }
    this.pathname = m[4];
    this.search = m[5] ?? "";
    this.hash = m[6] ?? "";
  }

  #resolve(input, base) {
    this.#protocol = base.protocol;
    this.#username = base.username;
    this.#password = base.password;
    this.#hostname = base.hostname;
    this.#port = base.port;
    if (input.startsWith("//")) {
      const m = URL_PATTERN.exec(base.protocol + input);
      if (!m) throw new TypeError(`Invalid URL: ${input}`);
      this.#parse(m);
      return;
    }
    const hashAt = input.indexOf("#");
    const beforeHash = hashAt < 0 ? input : input.slice(0, hashAt);
    const hash = hashAt < 0 ? "" : input.slice(hashAt);
    const queryAt = beforeHash.indexOf("?");
    const path = queryAt < 0 ? beforeHash : beforeHash.slice(0, queryAt);
    const search = queryAt < 0 ? null : beforeHash.slice(queryAt);

    if (path === "") {
      this.#pathname = base.pathname;
      this.search = search ?? base.search;
    } else {
      const dir = path.startsWith("/") ? "" : base.pathname.slice(0, base.pathname.lastIndexOf("/") + 1);
      this.pathname = dir + path;
      this.search = search ?? "";
    }
    this.hash = hash;
  }

  #isSpecial() {
    return this.#protocol in DEFAULT_PORTS || this.#protocol === "file:";
  }

  get protocol() {
    return this.#protocol;
  }

  get username() {
    return this.#username;
  }

  set username(v) {
    this.#username = encodeUnsafe(String(v), /[^A-Za-z0-9\-._~!$&'()*+,;=%]/g);
  }

  get password() {
    return this.#password;
  }

  set password(v) {
    this.#password = encodeUnsafe(String(v), /[^A-Za-z0-9\-._~!$&'()*+,;=%]/g);
  }

  get hostname() {
    return this.#hostname;
  }

  set hostname(v) {
    this.#hostname = String(v).toLowerCase();
  }

  get port() {
    return this.#port;
  }

  set port(v) {
    const port = String(v);
    if (port !== "" && !/^\d+$/.test(port)) throw new TypeError(`Invalid port: ${port}`);
    this.#port = port === DEFAULT_PORTS[this.#protocol] ? "" : port;
  }

  get host() {
    return this.#port ? `${this.#hostname}:${this.#port}` : this.#hostname;
  }

  get origin() {
    return this.#isSpecial() && this.#protocol !== "file:" ? `${this.#protocol}//${this.host}` : "null";
  }

  get pathname() {
    return this.#pathname;
  }

  set pathname(v) {
    const raw = encodeUnsafe(String(v), /[^\x21-\x7e]|["<>`{}^|\\]/gu);
    this.#pathname = this.#isSpecial() || raw.startsWith("/") ? normalizePath(raw) : raw;
  }

  get search() {
    return this.#search.length > 1 ? this.#search : "";
  }

  set search(v) {
    const s = String(v);
    const body = s.startsWith("?") ? s.slice(1) : s;
    this.#search = body === "" ? "" : "?" + encodeUnsafe(body, /[^\x21-\x7e]|["<>`]/gu);
    if (this.#searchParams) {
      const params = new URLSearchParams(this.#search);
      params[searchParamsUpdate] = this.#searchParams[searchParamsUpdate];
      this.#searchParams = params;
    }
  }

  get searchParams() {
    if (this.#searchParams === null) {
      this.#searchParams = new URLSearchParams(this.#search);
      this.#searchParams[searchParamsUpdate] = (query) => {
        this.#search = query === "" ? "" : `?${query}`;
      };
    }
    return this.#searchParams;
  }

  get hash() {
    return this.#hash.length > 1 ? this.#hash : "";
  }

  set hash(v) {
    const s = String(v);
    const body = s.startsWith("#") ? s.slice(1) : s;
    this.#hash = body === "" ? "" : "#" + encodeUnsafe(body, /[^\x21-\x7e]|["<>`]/gu);
  }

  get href() {
    const auth = this.#username || this.#password
      ? `${this.#username}${this.#password ? `:${this.#password}` : ""}@`
      : "";
    const authority = this.#hostname || this.#isSpecial() ? `//${auth}${this.host}` : "";
    return `${this.#protocol}${authority}${this.#pathname}${this.search}${this.hash}`;
  }

  toString() {
    return this.href;
  }

  toJSON() {
    return this.href;
  }

  get [Symbol.toStringTag]() {
    return "URL";
  }
}

defineGlobal("URLSearchParams", URLSearchParams);
defineGlobal("URL", URL);

// ---------------------------------------------------------------------------------------------
// Headers, Response, fetch

const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;
const headerLists = Symbol("lists");

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

class Headers {
  #map = new Map();

  constructor(init) {
    if (init === undefined || init === null) return;
    if (init instanceof Headers) {
      for (const [name, values] of init[headerLists]()) this.#map.set(name, [...values]);
    } else if (typeof init === "object" && typeof init[Symbol.iterator] === "function") {
      for (const pair of init) {
        const items = [...pair];
        if (items.length !== 2) throw new TypeError("header pairs must have exactly two items");
        this.append(items[0], items[1]);
      }
    } else if (typeof init === "object") {
      for (const name of Object.keys(init)) this.append(name, init[name]);
    } else {
      throw new TypeError("Headers expects an object, an array of pairs or Headers");
    }
  }

  [headerLists]() {
    return this.#map.entries();
  }

  append(name, value) {
    const n = headerName(name);
    const v = headerValue(value);
    const list = this.#map.get(n);
    if (list) list.push(v);
    else this.#map.set(n, [v]);
  }

  set(name, value) {
    this.#map.set(headerName(name), [headerValue(value)]);
  }

  get(name) {
    const list = this.#map.get(headerName(name));
    return list ? list.join(", ") : null;
  }

  getSetCookie() {
    return [...(this.#map.get("set-cookie") ?? [])];
  }

  has(name) {
    return this.#map.has(headerName(name));
  }

  delete(name) {
    this.#map.delete(headerName(name));
  }

  forEach(callback, thisArg) {
    for (const [name, value] of this.entries()) callback.call(thisArg, value, name, this);
  }

  *entries() {
    for (const name of [...this.#map.keys()].sort()) yield [name, this.#map.get(name).join(", ")];
  }

  *keys() {
    for (const [name] of this.entries()) yield name;
  }

  *values() {
    for (const [, value] of this.entries()) yield value;
  }

  [Symbol.iterator]() {
    return this.entries();
  }

  toJSON() {
    return Object.fromEntries(this.entries());
  }

  get [Symbol.toStringTag]() {
    return "Headers";
  }
}

/** Every header value as its own pair, the form the host takes. */
function headerPairs(headers) {
  const pairs = [];
  for (const [name, values] of headers[headerLists]()) {
    for (const value of values) pairs.push([name, value]);
  }
  return pairs;
}

/** Normalises a body to a string or bytes, with the content type it implies. */
function encodeBody(body) {
  if (body === undefined || body === null) return [undefined, null];
  if (typeof body === "string") return [body, "text/plain;charset=UTF-8"];
  if (body instanceof URLSearchParams) {
    return [body.toString(), "application/x-www-form-urlencoded;charset=UTF-8"];
  }
  const bytes = toUint8Array(body);
  if (bytes !== null) return [bytes, null];
  return [JSON.stringify(body), "application/json"];
}

class Response {
  #body;

  constructor(body = null, init = {}) {
    const [encoded, type] = encodeBody(body);
    this.#body = encoded ?? "";
    this.status = init.status ?? 200;
    this.statusText = init.statusText ?? "";
    this.headers = new Headers(init.headers);
    this.url = init.url ?? "";
    this.redirected = false;
    this.type = "default";
    if (type !== null && !this.headers.has("content-type")) this.headers.set("content-type", type);
  }

  static json(data, init = {}) {
    const headers = new Headers(init.headers);
    if (!headers.has("content-type")) headers.set("content-type", "application/json");
    return new Response(JSON.stringify(data), { ...init, headers });
  }

  get ok() {
    return this.status >= 200 && this.status < 300;
  }

  get bodyUsed() {
    return false;
  }

  async text() {
    return typeof this.#body === "string" ? this.#body : host.utf8Decode(this.#body, false, true);
  }

  async json() {
    return JSON.parse(await this.text());
  }

  async bytes() {
    return typeof this.#body === "string" ? host.utf8Encode(this.#body) : this.#body.slice();
  }

  async arrayBuffer() {
    return (await this.bytes()).buffer;
  }

  clone() {
    return new Response(this.#body, this);
  }

  get [Symbol.toStringTag]() {
    return "Response";
  }
}

defineGlobal("Headers", Headers);
defineGlobal("Response", Response);

/** WHATWG-style fetch over the host's HTTP client. */
async function fetch(input, init = {}) {
  const url = String(input instanceof URL ? input.href : (input?.url ?? input));
  const method = String(init.method ?? input?.method ?? "GET").toUpperCase();
  const headers = new Headers(init.headers ?? input?.headers);
  const [body, type] = encodeBody(init.body);
  if (type !== null && !headers.has("content-type")) headers.set("content-type", type);

  let answer;
  try {
    answer = await host.fetch({ method, url, headers: headerPairs(headers), body });
  } catch (e) {
    throw hostError(e);
  }

  const response = new Response(answer.body, {
    status: answer.status,
    statusText: answer.statusText,
    headers: answer.headers,
  });
  response.url = answer.url || url;
  return response;
}

defineGlobal("fetch", fetch);

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

function splitPath(path) {
  const trimmed = path.length > 1 && path.endsWith("/") ? path.slice(0, -1) : path;
  return trimmed === "/" || trimmed === "" ? [] : trimmed.slice(1).split("/");
}

function compilePattern(path) {
  if (typeof path !== "string" || !path.startsWith("/")) {
    throw new TypeError(`route path must be a string starting with '/': ${String(path)}`);
  }
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
      params[part.param] = decodeSegment(segments[i]);
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

  #add(method, path, handler) {
    if (typeof handler !== "function") throw new TypeError(`handler for ${path} must be a function`);
    this.#routes.push({ method, pattern: compilePattern(path), handler });
    return this;
  }

  /** The handler for a request, `{ allow }` when only the method is wrong, or null. */
  [ROUTE](method, path) {
    const segments = splitPath(path);
    const allow = new Set();
    for (const route of this.#routes) {
      const params = matchPattern(route.pattern, segments);
      if (params === null) continue;
      if (route.method === "*" || route.method === method) return { handler: route.handler, params };
      if (method === "HEAD" && route.method === "GET") return { handler: route.handler, params };
      allow.add(route.method);
    }
    return allow.size > 0 ? { allow: [...allow] } : null;
  }
}

// ---------------------------------------------------------------------------------------------
// Request context

const FINISH = Symbol("finish");

function headerObject(pairs) {
  const out = {};
  for (const [name, value] of pairs) {
    out[name] = name in out ? `${out[name]}, ${value}` : value;
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
        throw new HttpError(400, "request body is not valid JSON", "invalid_json");
      }
    }
    if (type === "application/x-www-form-urlencoded") return parseQuery(raw);
    return raw;
  }
}

/** The Koa-like `ctx` a handler receives. */
class Context {
  #status;
  #body;
  #headers = new Headers();

  constructor(raw, params) {
    this.request = new ContextRequest(raw);
    this.method = raw.method;
    this.path = raw.path;
    this.params = params;
    this.state = {};
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
    if (Array.isArray(value)) {
      this.#headers.delete(name);
      for (const v of value) this.#headers.append(name, v);
    } else {
      this.#headers.set(name, value);
    }
  }

  append(name, value) {
    this.#headers.append(name, value);
  }

  remove(name) {
    this.#headers.delete(name);
  }

  throw(status, message, code) {
    throw new HttpError(status, message, code);
  }

  [FINISH]() {
    const [body, type] = responseBody(this.#body);
    if (type !== null && !this.#headers.has("content-type")) this.#headers.set("content-type", type);
    return { status: this.status, headers: headerPairs(this.#headers), body };
  }
}

function responseBody(body) {
  if (body === undefined || body === null) return [undefined, null];
  if (typeof body === "string") return [body, "text/plain; charset=utf-8"];
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
// Connectors

function requireId(value, what) {
  if (typeof value !== "string" || value === "") throw new TypeError(`${what} must be a non-empty string`);
}

function withBearer(init, token) {
  const headers = new Headers(init.headers);
  headers.set("authorization", `Bearer ${token}`);
  return { ...init, headers };
}

/** A connector bound to one identity; `fetch` adds its access token. */
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

  /** `fetch` with `Authorization: Bearer`; on 401 it refreshes the token and retries once. */
  async fetch(input, init = {}) {
    const first = await fetch(input, withBearer(init, await this.token()));
    if (first.status !== 401) return first;
    const token = await this.token({ forceRefresh: true });
    return fetch(input, withBearer(init, token));
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
// Integration

/** The default export of `integration.js`: routes plus access to connectors. */
export class Integration {
  constructor() {
    this.router = new Router();
    this.tenant = Object.freeze({
      connector: (ctx, name, tenantId) => openConnector(ctx, name, "tenant", tenantId),
    });
    this.install = Object.freeze({
      connector: (ctx, name, installId) => openConnector(ctx, name, "install", installId),
    });
  }
}

/** Runs one request through an integration's router; called by the sandbox. */
async function dispatch(integration, raw) {
  // Timers left by earlier invocations can never fire: their host operations were dropped.
  timers.clear();

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
  try {
    await found.handler(ctx);
  } catch (e) {
    if (e instanceof HttpError) return errorResponse(e.status, e.code, e.message);
    throw e;
  }
  return ctx[FINISH]();
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
