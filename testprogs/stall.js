// A Node.js stall for the V8 frame-naming test: after the barrier, the main thread
// blocks in `waitForSlot()` on Atomics.wait (a futex nobody wakes) until the end,
// called from an anonymous arrow function.
//
// Usage: node stall.js DURATION_SECONDS BARRIER_FILE|-
// Same protocol as the C programs (see README.md): prints `ready <pid>`, waits for the
// barrier file (exit 2 after 60 s), prints `started` and `waiting 1`, blocks for
// DURATION_SECONDS, then prints `timed_out 1` and exits 0.
'use strict';

const fs = require('fs');

const BARRIER_TIMEOUT_MS = 60000;

function waitForSlot(slots, seconds) {
  // Nobody ever notifies: the wait ends by its timeout.
  return Atomics.wait(slots, 0, 0, seconds * 1000);
}

function main() {
  const duration = Number(process.argv[2]);
  const barrier = process.argv[3];
  if (process.argv.length !== 4 || !(duration >= 0)) {
    process.stderr.write('usage: node stall.js DURATION_SECONDS BARRIER_FILE|-\n');
    process.exit(2);
  }
  process.stdout.write(`ready ${process.pid}\n`);
  const deadline = Date.now() + BARRIER_TIMEOUT_MS;
  const waitForBarrier = () => {
    if (barrier === '-' || fs.existsSync(barrier)) {
      process.stdout.write('started\nwaiting 1\n');
      const slots = new Int32Array(new SharedArrayBuffer(4));
      // Through an anonymous function, which the snapshot must name `(anonymous)`.
      const result = ((s) => waitForSlot(s, duration))(slots);
      process.stdout.write(`timed_out ${result === 'timed-out' ? 1 : 0}\n`);
    } else if (Date.now() > deadline) {
      process.stderr.write(`stall.js: barrier file ${barrier} did not appear\n`);
      process.exit(2);
    } else {
      setTimeout(waitForBarrier, 10);
    }
  };
  waitForBarrier();
}

main();
