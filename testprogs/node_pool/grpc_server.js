// A gRPC order service (@grpc/grpc-js, orders.proto loaded at run time) with the pool
// bug of orders.js (NODE_POOL_MODE, PG* variables): `orders.Orders/CreateOrder` stores
// an order and answers its id. Run protocol and admin listener: lifecycle.js.
'use strict';

const grpc = require('@grpc/grpc-js');
const { loadOrdersService } = require('./orders_proto');
const { poolMode, openDataSource, placeOrder, InFlight } = require('./orders');
const { run } = require('./lifecycle');

/** The handler of `CreateOrder`: the outermost async function of a request. */
async function createOrder(dataSource, mode, counts, call, callback) {
  counts.begin();
  let ok = false;
  try {
    const orderId = await placeOrder(dataSource, mode, {
      item: call.request.item,
      quantity: call.request.quantity,
      userId: call.request.userId,
    });
    callback(null, { orderId });
    ok = true;
  } catch (error) {
    callback({ code: grpc.status.INTERNAL, details: error.message });
  } finally {
    counts.end(ok);
  }
}

async function serve(counts) {
  const mode = poolMode();
  const dataSource = await openDataSource();
  const server = new grpc.Server();
  server.addService(loadOrdersService().service, {
    createOrder: (call, callback) => {
      createOrder(dataSource, mode, counts, call, callback);
    },
  });
  return new Promise((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, port) => {
      if (error) reject(error);
      else resolve(port);
    });
  });
}

run('grpc_server.js', new InFlight(), serve);
