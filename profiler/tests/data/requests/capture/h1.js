const http = require('http');
const server = http.createServer((req, res) => {
  let body = '';
  req.on('data', (d) => (body += d));
  req.on('end', () => {
    if (req.url.startsWith('/stream')) { res.write('part one;'); setTimeout(() => res.end('part two'), 20); return; }
    res.setHeader('Set-Cookie', 'session=s3cr3t');
    res.end(JSON.stringify({ ok: true, echo: body.length }));
  });
});
server.listen(55600, '127.0.0.1', async () => {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const call = (method, path, body) => new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port: 55601, method, path, agent,
      headers: { Authorization: 'Bearer s3cr3t', 'Content-Type': 'application/json' } }, (res) => {
      res.resume(); res.on('end', resolve);
    });
    req.on('error', (e) => { console.error(method, path, e.code); resolve(); });
    if (body) req.write(body);
    req.end();
  });
  await call('GET', '/orders/42?token=secret');
  await call('POST', '/orders', JSON.stringify({ card: '4111-secret', qty: 1 }));
  await call('GET', '/stream/updates');
  await call('HEAD', '/orders/42');
  await call('DELETE', '/orders/42');
  agent.destroy(); server.close();
});
