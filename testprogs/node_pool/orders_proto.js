// `orders.Orders` of orders.proto, loaded at run time with @grpc/proto-loader (no
// generated code), for grpc_server.js and load.js.
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

function loadOrdersService() {
  const definition = protoLoader.loadSync(path.join(__dirname, 'orders.proto'), {
    keepCase: false,
    longs: String,
    defaults: true,
  });
  return grpc.loadPackageDefinition(definition).orders.Orders;
}

module.exports = { loadOrdersService };
