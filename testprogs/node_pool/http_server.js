// An HTTP order service with the pool bug of orders.js (NODE_POOL_MODE, PG* variables).
// `POST /orders` with a JSON body `{"item":…, "quantity":N, "userId":N}` stores an
// order and answers `{"orderId":"…"}`; `GET /health` answers `ok` on this port too,
// without the database. Run protocol and admin listener: lifecycle.js.
'use strict';

const http = require('http');
const { poolMode, openDataSource, placeOrder, InFlight } = require('./orders');
const { run } = require('./lifecycle');

/** The request handler of `POST /orders`: the outermost async function of a request. */
async function handleOrder(dataSource, mode, counts, req, res) {
  counts.begin();
  let ok = false;
  try {
    const order = JSON.parse(await readBody(req));
    const orderId = await placeOrder(dataSource, mode, {
      item: String(order.item),
      quantity: Number(order.quantity) | 0,
      userId: Number(order.userId) | 0,
    });
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ orderId }));
    ok = true;
  } catch (error) {
    res.statusCode = 500;
    res.end(`${error.message}\n`);
  } finally {
    counts.end(ok);
  }
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

async function serve(counts) {
  const mode = poolMode();
  const dataSource = await openDataSource();
  const server = http.createServer((req, res) => {
    if (req.method === 'POST' && req.url === '/orders') {
      handleOrder(dataSource, mode, counts, req, res);
    } else if (req.method === 'GET' && req.url === '/health') {
      res.end('ok\n');
    } else {
      res.statusCode = 404;
      res.end();
    }
  });
  // Keep-alive connections of a load generator may wait longer than the defaults.
  server.requestTimeout = 0;
  server.headersTimeout = 0;
  server.keepAliveTimeout = 60000;
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server.address().port;
}

run('http_server.js', new InFlight(), serve);
