// A bounded loopback load generator for http_server.js and grpc_server.js.
//
// Usage: node load.js http|grpc PORT CONCURRENCY TOTAL SECONDS
// Keeps CONCURRENCY order requests in flight against 127.0.0.1:PORT until TOTAL were
// sent, and stops by itself after SECONDS whatever is still unanswered (requests of a
// hung server never are). Prints `sent_all <N>` once all of TOTAL are sent, a progress
// line `tick <elapsed_ms> <sent> <answered>` every 250 ms, and at the end `answered <N>`,
// `failed <N>`, `elapsed_ms <N>`, then exits 0.
'use strict';

const http = require('http');

const TICK_MS = 250;

function usage() {
  process.stderr.write('usage: node load.js http|grpc PORT CONCURRENCY TOTAL SECONDS\n');
  process.exit(2);
}

/** One request function per protocol: `send(n, done)` calls `done(ok)` once answered. */
function httpSender(port, concurrency) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  return (n, done) => {
    const body = JSON.stringify({ item: `item-${n}`, quantity: 1 + (n % 5), userId: n % 100 });
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/orders',
        agent,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        res.resume();
        res.on('end', () => done(res.statusCode === 200));
      },
    );
    req.on('error', () => done(false));
    req.end(body);
  };
}

function grpcSender(port) {
  const grpc = require('@grpc/grpc-js');
  const { loadOrdersService } = require('./orders_proto');
  const Orders = loadOrdersService();
  const client = new Orders(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  return (n, done) => {
    client.createOrder({ item: `item-${n}`, quantity: 1 + (n % 5), userId: n % 100 }, (error) =>
      done(!error),
    );
  };
}

function main() {
  const [protocol, portArg, concurrencyArg, totalArg, secondsArg] = process.argv.slice(2);
  const port = Number(portArg);
  const concurrency = Number(concurrencyArg);
  const total = Number(totalArg);
  const seconds = Number(secondsArg);
  if (process.argv.length !== 7 || !(port > 0) || !(concurrency >= 1) || !(total >= 1) || !(seconds > 0)) {
    usage();
  }
  let send;
  if (protocol === 'http') send = httpSender(port, concurrency);
  else if (protocol === 'grpc') send = grpcSender(port);
  else usage();

  const began = Date.now();
  let sent = 0;
  let answered = 0;
  let failed = 0;
  let inFlight = 0;
  const finish = () => {
    process.stdout.write(`answered ${answered}\n`);
    process.stdout.write(`failed ${failed}\n`);
    process.stdout.write(`elapsed_ms ${Date.now() - began}\n`);
    process.exit(0);
  };
  const fill = () => {
    const before = sent;
    while (inFlight < concurrency && sent < total) {
      sent++;
      inFlight++;
      send(sent, (ok) => {
        inFlight--;
        if (ok) answered++;
        else failed++;
        if (answered + failed === total) finish();
        else setImmediate(fill);
      });
    }
    if (sent !== before && sent === total) process.stdout.write(`sent_all ${sent}\n`);
  };
  setInterval(() => process.stdout.write(`tick ${Date.now() - began} ${sent} ${answered}\n`), TICK_MS);
  setTimeout(finish, seconds * 1000);
  fill();
}

main();
