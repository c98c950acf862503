// A Node.js leak for the JIT-frame test: `rememberRequest()` keeps a 256 KiB Buffer per
// call in a global array, so node maps fresh memory (glibc serves allocations this
// large with mmap) from a JIT-compiled JS function.
//
// Usage: node --perf-basic-prof leak.js DURATION_SECONDS BARRIER_FILE|-
// Same protocol as the C programs (see README.md): prints `ready <pid>`, waits for the
// barrier file (exit 2 after 60 s), prints `started`, leaks for DURATION_SECONDS, then
// prints `retained_bytes <N>` and exits 0.
'use strict';

const fs = require('fs');

const BARRIER_TIMEOUT_MS = 60000;
const CHUNK = 256 * 1024;
// Bounds the leak (400 × 256 KiB = 100 MiB), like the C programs.
const MAX_RETAINED = 400;

const requests = [];

function rememberRequest(i) {
  const buf = Buffer.alloc(CHUNK);
  buf.writeUInt32LE(i, 0);
  requests.push(buf);
  return buf.length;
}

function main() {
  const duration = Number(process.argv[2]);
  const barrier = process.argv[3];
  if (process.argv.length !== 4 || !(duration >= 0)) {
    process.stderr.write('usage: node leak.js DURATION_SECONDS BARRIER_FILE|-\n');
    process.exit(2);
  }
  process.stdout.write(`ready ${process.pid}\n`);
  const deadline = Date.now() + BARRIER_TIMEOUT_MS;
  const waitForBarrier = () => {
    if (barrier === '-' || fs.existsSync(barrier)) {
      process.stdout.write('started\n');
      run(duration);
    } else if (Date.now() > deadline) {
      process.stderr.write(`leak.js: barrier file ${barrier} did not appear\n`);
      process.exit(2);
    } else {
      setTimeout(waitForBarrier, 10);
    }
  };
  waitForBarrier();
}

function run(duration) {
  const end = Date.now() + duration * 1000;
  let retained = 0;
  let i = 0;
  const tick = () => {
    if (Date.now() >= end) {
      process.stdout.write(`retained_bytes ${retained}\n`);
      return;
    }
    // A few calls per turn of the event loop, then yield to it.
    for (let k = 0; k < 4 && requests.length < MAX_RETAINED; k++) {
      retained += rememberRequest(i++);
    }
    setTimeout(tick, 10);
  };
  setImmediate(tick);
}

main();
