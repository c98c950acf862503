const http2 = require('http2');
const frame = (s) => { const b = Buffer.alloc(5 + s.length); b.writeUInt32BE(s.length, 1); b.write(s, 5); return b; };
const server = http2.createServer();
server.on('stream', (stream, headers) => {
  const path = headers[':path'];
  stream.on('error', () => {});
  stream.on('data', () => {});
  stream.on('end', () => {
    if (path.endsWith('/Fail')) { stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR); return; }
    setTimeout(() => {
      if (stream.destroyed) return;
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0', 'grpc-message': 'ok' }));
      stream.end(frame('order-id=secret-42'));
    }, path.endsWith('/Slow') ? 300 : 10);
  });
});
server.on('error', () => {});
server.listen(55700, '127.0.0.1', async () => {
  const client = http2.connect('http://127.0.0.1:55701');
  const call = (method, cancel) => new Promise((resolve) => {
    const req = client.request({ ':method': 'POST', ':path': `/orders.OrderService/${method}`,
      'content-type': 'application/grpc', te: 'trailers', authorization: 'Bearer s3cr3t' });
    req.on('response', () => {}); req.on('data', () => {}); req.on('error', () => resolve());
    req.on('close', resolve);
    req.end(frame('card=4111-secret'));
    if (cancel) setTimeout(() => req.close(http2.constants.NGHTTP2_CANCEL), 50);
  });
  await Promise.all([call('PlaceOrder'), call('GetOrder'), call('Slow', true), call('Fail')]);
  await call('PlaceOrder');
  client.close(); server.close();
});
