// A Node.js service that churns native memory without leaking it: a working set of
// Buffers of 1-192 KiB (about 64 MiB), of which `replaceEntry()` replaces a few at
// random every ~10 ms. Live native memory stays level; the replaced Buffers are freed
// when V8 collects them. Before `ready` it replaces the working set several times
// over, so that the garbage V8 lets pile up before it collects, and what the allocator
// keeps, have reached their level when the profiler attaches.
//
// Usage: node buffer_churn.js DURATION_SECONDS BARRIER_FILE|-
// Same protocol as the C programs (see README.md): prints `ready <pid>`, waits for the
// barrier file (exit 2 after 60 s), prints `started`, churns for DURATION_SECONDS, then
// prints `live_bytes <N>` (bytes of the working set) and exits 0.
'use strict';

const fs = require('fs');

const BARRIER_TIMEOUT_MS = 60000;
const WORKING_SET_BYTES = 64 * 1024 * 1024;
const REPLACED_PER_TICK = 4;
// Replacements before `ready`: the warm-up.
const WARM_UP_REPLACEMENTS = 6000;

let seed = 7;
function random() {
  seed = (seed * 1103515245 + 12345) % 2147483648;
  return seed / 2147483648;
}

function bufferBytes() {
  return 1024 + Math.floor(random() * 191 * 1024);
}

const entries = [];
let live = 0;

function replaceEntry() {
  const i = Math.floor(random() * entries.length);
  live -= entries[i].length;
  const buf = Buffer.alloc(bufferBytes());
  buf.writeUInt32LE(i, 0);
  entries[i] = buf;
  live += buf.length;
}

function main() {
  const duration = Number(process.argv[2]);
  const barrier = process.argv[3];
  if (process.argv.length !== 4 || !(duration >= 0)) {
    process.stderr.write('usage: node buffer_churn.js DURATION_SECONDS BARRIER_FILE|-\n');
    process.exit(2);
  }
  while (live < WORKING_SET_BYTES) {
    const buf = Buffer.alloc(bufferBytes());
    entries.push(buf);
    live += buf.length;
  }
  for (let k = 0; k < WARM_UP_REPLACEMENTS; k++) {
    replaceEntry();
  }
  process.stdout.write(`ready ${process.pid}\n`);
  const deadline = Date.now() + BARRIER_TIMEOUT_MS;
  const waitForBarrier = () => {
    if (barrier === '-' || fs.existsSync(barrier)) {
      process.stdout.write('started\n');
      run(duration);
    } else if (Date.now() > deadline) {
      process.stderr.write(`buffer_churn.js: barrier file ${barrier} did not appear\n`);
      process.exit(2);
    } else {
      setTimeout(waitForBarrier, 10);
    }
  };
  waitForBarrier();
}

function run(duration) {
  const end = Date.now() + duration * 1000;
  const tick = () => {
    if (Date.now() >= end) {
      process.stdout.write(`live_bytes ${live}\n`);
      return;
    }
    for (let k = 0; k < REPLACED_PER_TICK; k++) {
      replaceEntry();
    }
    setTimeout(tick, 10);
  };
  setImmediate(tick);
}

main();
