// The seed's cluster example (/hello, from strong-cluster-express-store's README) as a
// benchmark server, with the store chosen by STORE:
//   cluster  this package (shared memory)
//   seed     strong-cluster-express-store, the seed itself (node's cluster IPC to the primary)
//   redis    connect-redis over a redis-server at REDIS_URL
//   memory   express-session's MemoryStore, one per worker: sessions not shared, the floor
// The app is the seed's, adapted to express 4 alike for every store (cookie-parser and
// express-session as modules; `res.status(200).json(msg)` for express 3's `res.json(200,
// msg)`). WORKERS workers (default 2); the primary prints `listening on
// http://127.0.0.1:<port>` once all of them listen on PORT (default 0: a free port).
'use strict';

const cluster = require('node:cluster');
const express = require('express');
const cookieParser = require('cookie-parser');
const session = require('express-session');

const STORE = process.env.STORE || 'cluster';
const WORKERS = Number(process.env.WORKERS || 2);

function makeStore() {
  switch (STORE) {
    case 'cluster':
      return new (require('..')(session))();
    case 'seed':
      return new (require('strong-cluster-express-store')(session))();
    case 'redis': {
      const RedisStore = require('connect-redis').default;
      const client = require('redis').createClient({ url: process.env.REDIS_URL });
      client.connect().catch((e) => {
        console.error(e);
        process.exit(1);
      });
      return new RedisStore({ client });
    }
    case 'memory':
      return new session.MemoryStore();
    default:
      throw new Error(`unknown STORE ${STORE}`);
  }
}

if (cluster.isPrimary) {
  if (STORE === 'cluster') require('..').setup();
  if (STORE === 'seed') require('strong-cluster-express-store').setup();
  let listening = 0;
  cluster.on('listening', (worker, address) => {
    if (++listening === WORKERS) console.log(`listening on http://127.0.0.1:${address.port}`);
  });
  cluster.on('exit', (worker, code, signal) => {
    if (code || signal) console.error(`worker ${worker.id} ended: ${code || signal}`);
  });
  for (let i = 0; i < WORKERS; i++) cluster.fork();
} else {
  const app = express();
  app.use(cookieParser());
  app.use(session({ store: makeStore(), secret: 'super-cool', resave: true, saveUninitialized: true }));
  app.get('/hello', function (req, res) {
    var msg;
    if (req.session.visited) msg = { msg: 'Hello again from worker ' + cluster.worker.id };
    else msg = { msg: 'Hello from worker ' + cluster.worker.id };
    req.session.visited = '1';
    res.status(200).json(msg);
  });
  app.listen(Number(process.env.PORT || 0), '127.0.0.1');
}
