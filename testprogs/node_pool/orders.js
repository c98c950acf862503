// The order logic shared by http_server.js and grpc_server.js, with the incident's bug.
//
// A TypeORM DataSource over node-postgres with a pool of 10. `placeOrder` opens a
// transaction (one pooled connection, held until it commits) and, inside it,
// `loadUserWithAudit` asks for a user row. With NODE_POOL_MODE=double_acquire (the
// default) that query goes to the DataSource, that is to the same pool, for a second
// connection: with 10 or more orders at once, every connection is held by a transaction
// that waits for another, and every request waits forever on a promise. With
// NODE_POOL_MODE=healthy it runs on the transaction's own connection (the healthy twin).
//
// The database comes from the standard libpq variables PGHOST, PGPORT, PGUSER,
// PGPASSWORD and PGDATABASE.
'use strict';

require('reflect-metadata');
const { DataSource } = require('typeorm');

const POOL_SIZE = 10;

/** `double_acquire` (the bug) or `healthy`, from NODE_POOL_MODE. */
function poolMode() {
  const mode = process.env.NODE_POOL_MODE || 'double_acquire';
  if (mode !== 'double_acquire' && mode !== 'healthy') {
    process.stderr.write(`NODE_POOL_MODE must be double_acquire or healthy, not ${mode}\n`);
    process.exit(2);
  }
  return mode;
}

/** Connects the pool and creates the orders table if it is missing. */
async function openDataSource() {
  const dataSource = new DataSource({
    type: 'postgres',
    host: process.env.PGHOST || '127.0.0.1',
    port: Number(process.env.PGPORT || 5432),
    username: process.env.PGUSER || 'postgres',
    password: process.env.PGPASSWORD,
    database: process.env.PGDATABASE || 'postgres',
    poolSize: POOL_SIZE,
    synchronize: false,
    logging: false,
  });
  await dataSource.initialize();
  try {
    await dataSource.query(
      'CREATE TABLE IF NOT EXISTS orders (id bigserial PRIMARY KEY, item text NOT NULL, ' +
        'quantity integer NOT NULL, user_id integer NOT NULL, created_at timestamptz DEFAULT now())',
    );
  } catch (error) {
    // Two servers creating the table at once: one of them loses the race on pg_type.
    if (error.code !== '23505') throw error;
  }
  return dataSource;
}

/** Looks the user up, on `queryable`: the DataSource (a second pooled connection) or
 * the transaction's EntityManager (its own connection). */
async function loadUserWithAudit(queryable, userId) {
  const rows = await queryable.query('SELECT $1::integer AS user_id, now() AS seen_at', [userId]);
  return rows[0];
}

/** Stores one order in a transaction; returns its id. */
async function placeOrder(dataSource, mode, order) {
  return dataSource.transaction(async function insertOrder(manager) {
    const rows = await manager.query(
      'INSERT INTO orders (item, quantity, user_id) VALUES ($1, $2, $3) RETURNING id',
      [order.item, order.quantity, order.userId],
    );
    await loadUserWithAudit(mode === 'double_acquire' ? dataSource : manager, order.userId);
    return String(rows[0].id);
  });
}

/** Counts the order requests a server has taken and not answered yet; the handlers
 * call `begin` on entry and `end` once they answered (no async wrapper, so the census
 * sees the handler itself as the outermost suspended function). */
class InFlight {
  constructor() {
    this.inflight = 0;
    this.answered = 0;
    this.failed = 0;
  }

  begin() {
    this.inflight++;
  }

  end(ok) {
    this.inflight--;
    if (ok) this.answered++;
    else this.failed++;
  }

  toJSON() {
    return { inflight: this.inflight, answered: this.answered, failed: this.failed };
  }
}

module.exports = { POOL_SIZE, poolMode, openDataSource, placeOrder, InFlight };
