// An HTTP server with a connection pool to a loopback peer, hung as in the incident
// (no npm packages: the pool and its "database" are plain TCP, the hang is in promises).
//
// Usage: POOL_PEER=PORT [POOL_SIZE=4] [POOL_MODE=hung|healthy] node pool_hang.js DURATION BARRIER|-
// Same protocol as the C programs (see README.md): prints `ready <pid>`, waits for the
// barrier file, opens POOL_SIZE connections to 127.0.0.1:POOL_PEER, listens on a loopback
// port (`port <port>`), serves for DURATION seconds, then prints `answered <N>`.
//
// `POST /orders` takes a connection (`handleOrder`), sends it a query, waits for the
// peer's reply and works 100 ms. `hung`: it then asks the pool for a second connection
// (`loadUserWithAudit`) before giving the first back, so once POOL_SIZE requests hold
// one each, every request waits forever on a promise and the event loop sleeps in
// epoll_wait (prints `exhausted 1` once every connection is held by a request waiting
// for another). `healthy`: the same queries on the one connection.
// `GET /health` always answers `ok`.
'use strict';

const fs = require('fs');
const http = require('http');
const net = require('net');

const BARRIER_TIMEOUT_MS = 60000;

class Pool {
  constructor(conns) {
    this.free = conns;
    this.waiters = [];
  }
  acquire() {
    if (this.free.length > 0) return Promise.resolve(this.free.pop());
    return new Promise((resolve) => this.waiters.push(resolve));
  }
  release(conn) {
    const waiter = this.waiters.shift();
    if (waiter) waiter(conn);
    else this.free.push(conn);
  }
}

const mode = process.env.POOL_MODE || 'hung';
const poolSize = Number(process.env.POOL_SIZE || 4);
// Work between the first query and the next: long enough for a burst of requests to
// overlap, short enough for the healthy pool to serve 40 requests/s.
const WORK_MS = 100;
let pool;

function query(conn, text) {
  return new Promise((resolve) => {
    conn.once('data', () => resolve());
    conn.write(`${text}\n`);
  });
}

let holdingAndWaiting = 0;

async function loadUserWithAudit() {
  holdingAndWaiting++;
  if (holdingAndWaiting === poolSize && pool.free.length === 0) process.stdout.write('exhausted 1\n');
  const second = await pool.acquire();
  holdingAndWaiting--;
  try {
    await query(second, 'audit');
  } finally {
    pool.release(second);
  }
}

async function handleOrder() {
  const conn = await pool.acquire();
  try {
    await query(conn, 'begin');
    await new Promise((resolve) => setTimeout(resolve, WORK_MS));
    if (mode === 'hung') await loadUserWithAudit();
    else await query(conn, 'audit');
    await query(conn, 'commit');
  } finally {
    pool.release(conn);
  }
}

function connectAll(port, size) {
  const conns = [];
  for (let i = 0; i < size; i++) {
    conns.push(new Promise((resolve, reject) => {
      const c = net.connect(port, '127.0.0.1', () => resolve(c));
      c.on('error', reject);
    }));
  }
  return Promise.all(conns);
}

async function serve(duration) {
  pool = new Pool(await connectAll(Number(process.env.POOL_PEER), poolSize));
  let answered = 0;
  const server = http.createServer((req, res) => {
    if (req.url === '/health') {
      answered++;
      res.end('ok\n');
      return;
    }
    req.resume();
    req.on('end', () => {
      handleOrder().then(() => {
        answered++;
        res.end('created\n');
      });
    });
  });
  server.listen(0, '127.0.0.1', () => {
    process.stdout.write(`port ${server.address().port}\n`);
  });
  setTimeout(() => {
    process.stdout.write(`answered ${answered}\n`);
    process.exit(0);
  }, duration * 1000);
}

function main() {
  const duration = Number(process.argv[2]);
  const barrier = process.argv[3];
  if (process.argv.length !== 4 || !(duration >= 0) || !process.env.POOL_PEER) {
    process.stderr.write('usage: POOL_PEER=PORT node pool_hang.js DURATION_SECONDS BARRIER_FILE|-\n');
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

main();
