// A tiny OAuth 2.0 provider for the token benchmark: it consents at once, so a session needs
// no browser. `/auth` redirects straight back with a code, `/token` issues long-lived tokens,
// `/me` answers a fixed subject.
//
// Usage: node fake-idp.js PORT

import { createServer } from 'node:http';

const port = Number(process.argv[2] ?? 9004);
let issued = 0;

function send(res, status, body, headers = {}) {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

createServer((req, res) => {
  const url = new URL(req.url, `http://127.0.0.1:${port}`);
  if (url.pathname === '/auth') {
    const back = new URL(url.searchParams.get('redirect_uri'));
    back.searchParams.set('code', `code-${Date.now()}`);
    back.searchParams.set('state', url.searchParams.get('state') ?? '');
    res.writeHead(302, { location: back.toString() });
    res.end();
  } else if (url.pathname === '/token') {
    req.resume();
    req.on('end', () => {
      issued += 1;
      send(res, 200, {
        access_token: `bench-access-${issued}`,
        refresh_token: `bench-refresh-${issued}`,
        token_type: 'Bearer',
        expires_in: 86400,
        scope: 'openid',
      });
    });
  } else if (url.pathname === '/me') {
    send(res, 200, { sub: 'bench-user' });
  } else if (url.pathname === '/done') {
    send(res, 200, { done: true });
  } else {
    send(res, 404, { error: 'not_found' });
  }
}).listen(port, '127.0.0.1', () => console.error(`fake idp listening on ${port}`));
