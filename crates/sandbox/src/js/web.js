// The lazily loaded part of the `splice` prelude: fetch, Headers, Response, URL,
// URLSearchParams, TextEncoder/TextDecoder and atob/btoa. The core module installs these names
// as global getters and evaluates this module the first time integration code touches one, so
// a fresh context that never uses them does not pay for them. Must not import anything: it is
// evaluated directly from bytecode, without module resolution.

let host;
let hostError;
let toUint8Array;
let decodeComponent;
let parsePairs;
let headerName;
let headerValue;

/** Connects this module to the core's native table and helpers; returns the web globals. */
export function bind(native, shared) {
  host = native;
  ({ hostError, toUint8Array, decodeComponent, parsePairs, headerName, headerValue } = shared);
  return { TextEncoder, TextDecoder, btoa, atob, URLSearchParams, URL, Headers, Response, fetch, send };
}

// ---------------------------------------------------------------------------------------------
// Text and base64

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

// ---------------------------------------------------------------------------------------------
// URLSearchParams and URL

function encodeComponent(s) {
  return encodeURIComponent(s)
    .replace(/%20/g, "+")
    .replace(/[!'()~]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase());
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

// ---------------------------------------------------------------------------------------------
// Headers, Response, fetch

const headerLists = Symbol("lists");

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


/** WHATWG-style fetch over the host's HTTP client. */
function fetch(input, init = {}) {
  return send(input, init, undefined);
}

/**
 * Sends a request through the host. With `connector` (`{ name, scope, id }`, from
 * `connector.fetch`) the host adds that identity's credentials, resolves a relative URL
 * against the connector's API base URL, and refreshes and retries once on a 401.
 */
async function send(input, init, connector) {
  const url = String(input instanceof URL ? input.href : (input?.url ?? input));
  const method = String(init.method ?? input?.method ?? "GET").toUpperCase();
  const headers = new Headers(init.headers ?? input?.headers);
  const [body, type] = encodeBody(init.body);
  if (type !== null && !headers.has("content-type")) headers.set("content-type", type);

  let answer;
  try {
    answer = await host.fetch({ method, url, headers: headerPairs(headers), body, connector });
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
