// The run protocol shared by http_server.js and grpc_server.js (as the C test programs,
// see ../README.md): `node SERVER DURATION_SECONDS BARRIER_FILE|-` prints `ready <pid>`,
// waits for the barrier file (exit 2 after 60 s), prints `started`, connects the pool,
// starts its listeners and prints `port <port>` (the order service) and `admin_port
// <port>`, serves for DURATION_SECONDS and then prints `inflight <N>`, `answered <N>`,
// `failed <N>` and exits 0, hung requests or not.
//
// The admin listener is a plain HTTP handler that never touches the database, so it
// keeps answering during the hang: `GET /health` answers `ok`, `GET /inflight` the
// server's own count of order requests taken and not answered, as JSON
// `{"inflight":N,"answered":N,"failed":N}`.
'use strict';

const fs = require('fs');
const http = require('http');

const BARRIER_TIMEOUT_MS = 60000;

/** Parses argv, waits for the barrier, then runs `serve(counts)`, which resolves to the
 * order service's port once it listens. */
function run(script, counts, serve) {
  const duration = Number(process.argv[2]);
  const barrier = process.argv[3];
  if (process.argv.length !== 4 || !(duration >= 0)) {
    process.stderr.write(`usage: node ${script} DURATION_SECONDS BARRIER_FILE|-\n`);
    process.exit(2);
  }
  process.stdout.write(`ready ${process.pid}\n`);
  const deadline = Date.now() + BARRIER_TIMEOUT_MS;
  const waitForBarrier = () => {
    if (barrier === '-' || fs.existsSync(barrier)) {
      process.stdout.write('started\n');
      start(counts, serve, duration);
    } else if (Date.now() > deadline) {
      process.stderr.write(`barrier file ${barrier} did not appear\n`);
      process.exit(2);
    } else {
      setTimeout(waitForBarrier, 1);
    }
  };
  waitForBarrier();
}

function start(counts, serve, duration) {
  const stopAt = setTimeout(() => {
    process.stdout.write(`inflight ${counts.inflight}\n`);
    process.stdout.write(`answered ${counts.answered}\n`);
    process.stdout.write(`failed ${counts.failed}\n`);
    process.exit(0);
  }, duration * 1000);
  serve(counts).then(
    (port) => {
      process.stdout.write(`port ${port}\n`);
      const admin = http.createServer((req, res) => answerAdmin(counts, req, res));
      admin.listen(0, '127.0.0.1', () => {
        process.stdout.write(`admin_port ${admin.address().port}\n`);
      });
    },
    (error) => {
      clearTimeout(stopAt);
      process.stderr.write(`cannot serve: ${error.stack || error}\n`);
      process.exit(1);
    },
  );
}

/** The health check and the in-flight count: no database, no await. */
function answerAdmin(counts, req, res) {
  if (req.method === 'GET' && req.url === '/health') {
    res.end('ok\n');
  } else if (req.method === 'GET' && req.url === '/inflight') {
    res.setHeader('content-type', 'application/json');
    res.end(`${JSON.stringify(counts)}\n`);
  } else {
    res.statusCode = 404;
    res.end();
  }
}

module.exports = { run, answerAdmin };
