// An idle Node.js HTTP server: it listens on a loopback port and answers every request
// ("GET /health" included) with "ok", but nothing asks it for anything else.
//
// Usage: node idle_server.js DURATION_SECONDS BARRIER_FILE|-
// Same protocol as the C programs (see README.md): prints `ready <pid>`, waits for the
// barrier file (exit 2 after 60 s), prints `started` and `port <port>`, serves for
// DURATION_SECONDS, then prints `answered <N>` and exits 0.
'use strict';

const fs = require('fs');
const http = require('http');

const BARRIER_TIMEOUT_MS = 60000;

function main() {
  const duration = Number(process.argv[2]);
  const barrier = process.argv[3];
  if (process.argv.length !== 4 || !(duration >= 0)) {
    process.stderr.write('usage: node idle_server.js DURATION_SECONDS BARRIER_FILE|-\n');
    process.exit(2);
  }
  process.stdout.write(`ready ${process.pid}\n`);
  const deadline = Date.now() + BARRIER_TIMEOUT_MS;
  const waitForBarrier = () => {
    if (barrier === '-' || fs.existsSync(barrier)) {
      process.stdout.write('started\n');
      serve(duration);
    } else if (Date.now() > deadline) {
      process.stderr.write(`barrier file ${barrier} did not appear\n`);
      process.exit(2);
    } else {
      setTimeout(waitForBarrier, 1);
    }
  };
  waitForBarrier();
}

function serve(duration) {
  let answered = 0;
  const server = http.createServer((req, res) => {
    answered++;
    res.end('ok\n');
  });
  server.listen(0, '127.0.0.1', () => {
    process.stdout.write(`port ${server.address().port}\n`);
  });
  setTimeout(() => {
    server.close();
    process.stdout.write(`answered ${answered}\n`);
    process.exit(0);
  }, duration * 1000);
}

main();
