// The Node.js baseline: `http` running the same router and handler logic Splice runs in its
// sandbox, in plain JavaScript. Requests to /v1/integrations/:id/api/* go through a small
// router with `:param` matching to a handler that sets `ctx.body = "ok"`.
//
// Usage: node router.js PORT

import { createServer } from 'node:http';

const PREFIX = /^\/v1\/integrations\/([a-z0-9][a-z0-9-]*)\/api(\/.*)?$/;

function splitPath(path) {
  return path.split('/').filter((segment) => segment !== '');
}

function compilePattern(path) {
  return splitPath(path).map((segment) =>
    segment.startsWith(':') ? { param: segment.slice(1) } : { literal: segment });
}

function matchPattern(pattern, segments) {
  if (pattern.length !== segments.length) return null;
  const params = {};
  for (let i = 0; i < pattern.length; i++) {
    const part = pattern[i];
    if (part.param !== undefined) params[part.param] = decodeURIComponent(segments[i]);
    else if (part.literal !== segments[i]) return null;
  }
  return params;
}

function trimPath(path) {
  if (path.length > 1 && path.endsWith('/')) return path.slice(0, -1);
  return path === '' ? '/' : path;
}

// Like Splice's router, a literal path matches by string comparison and is never split.
class Router {
  #routes = [];

  get(path, handler) {
    const literal = path.includes(':') ? null : trimPath(path);
    this.#routes.push({ method: 'GET', literal, pattern: compilePattern(path), handler });
    return this;
  }

  route(method, path) {
    const target = trimPath(path);
    let segments = null;
    for (const route of this.#routes) {
      let params;
      if (route.literal !== null) {
        params = route.literal === target ? {} : null;
      } else {
        segments ??= splitPath(target);
        params = matchPattern(route.pattern, segments);
      }
      if (params !== null && route.method === method) return { handler: route.handler, params };
    }
    return null;
  }
}

const router = new Router();
router.get('/tenants/:tenant/me', (ctx) => { ctx.body = { tenant: ctx.params.tenant }; });
router.get('/ok', (ctx) => { ctx.body = 'ok'; });

async function handle(req, res) {
  const [pathname, query = ''] = req.url.split('?', 2);
  const prefix = PREFIX.exec(pathname);
  const found = prefix && router.route(req.method, prefix[2] ?? '/');
  if (!found) {
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end('{"error":{"code":"not_found"}}');
    return;
  }
  const ctx = { method: req.method, path: prefix[2], query, params: found.params, status: 200,
    headers: {}, body: undefined };
  await found.handler(ctx);
  const text = typeof ctx.body === 'string' ? ctx.body : JSON.stringify(ctx.body ?? null);
  const type = typeof ctx.body === 'string' ? 'text/plain; charset=utf-8' : 'application/json';
  res.writeHead(ctx.status, {
    'content-type': type, 'content-length': Buffer.byteLength(text), ...ctx.headers,
  });
  res.end(text);
}

const port = Number(process.argv[2] ?? 9002);
createServer((req, res) => {
  handle(req, res).catch(() => {
    res.writeHead(500);
    res.end();
  });
}).listen(port, '127.0.0.1', () => console.error(`node baseline listening on ${port}`));
