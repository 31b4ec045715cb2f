// Store calls alone, through express-session's Store API (callbacks), in WORKERS cluster
// workers at once: sequential set, then sequential get, of SESSIONS sessions per worker
// (each a small express-session session: its cookie and one field), for DURATION_MS each,
// on this package (shared memory), on the seed (strong-cluster-express-store: every call a
// round trip over node's cluster IPC to the primary) and, with REDIS_URL, on connect-redis.
// ROUNDS rounds, the stores' order rotated each round; prints each store's median calls/s
// and its ratio to the seed's.
//
//   node bench/store.js    # WORKERS=2 SESSIONS=100 DURATION_MS=1000 ROUNDS=3 [REDIS_URL=redis://127.0.0.1:PORT]
'use strict';

const cluster = require('node:cluster');
const session = require('express-session');

const WORKERS = Number(process.env.WORKERS || 2);
const SESSIONS = Number(process.env.SESSIONS || 100);
const DURATION_MS = Number(process.env.DURATION_MS || 1000);
const ROUNDS = Number(process.env.ROUNDS || 3);
const STORES = ['cluster', 'seed', ...(process.env.REDIS_URL ? ['redis'] : [])];
const NAMES = { cluster: 'this package', seed: 'seed (cluster IPC)', redis: 'connect-redis' };

if (cluster.isPrimary) {
  require('..').setup();
  require('strong-cluster-express-store').setup();
  const workers = Array.from({ length: WORKERS }, () => cluster.fork());
  const results = {};
  const ask = (msg) =>
    Promise.all(
      workers.map(
        (w) =>
          new Promise((resolve) => {
            const on = (m) => {
              if (m && m.type === 'BENCH_DONE') {
                w.off('message', on);
                resolve(m.ops);
              }
            };
            w.on('message', on);
            w.send({ type: 'BENCH', ...msg });
          }),
      ),
    );
  (async () => {
    await Promise.all(workers.map((w) => new Promise((resolve) => w.once('online', resolve))));
    for (let round = 0; round < ROUNDS; round++) {
      for (let i = 0; i < STORES.length; i++) {
        const store = STORES[(i + round) % STORES.length];
        for (const op of ['set', 'get']) {
          const ops = await ask({ store, op });
          const perSec = (ops.reduce((a, b) => a + b, 0) * 1000) / DURATION_MS;
          (results[`${store} ${op}`] ||= []).push(perSec);
          console.error(`round ${round + 1}: ${store} ${op} ${Math.round(perSec)} calls/s`);
        }
      }
    }
    const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    console.log(`\nStore calls, ${WORKERS} workers at once, ${SESSIONS} sessions each, ${ROUNDS} rounds of ${DURATION_MS} ms (medians)\n`);
    console.log('| store | set calls/s | get calls/s | set vs seed | get vs seed |');
    console.log('|---|---|---|---|---|');
    for (const store of STORES) {
      const set = median(results[`${store} set`]);
      const get = median(results[`${store} get`]);
      const ratio = (v, op) => `${(v / median(results[`seed ${op}`])).toFixed(1)}×`;
      console.log(`| ${NAMES[store]} | ${Math.round(set).toLocaleString('en')} | ${Math.round(get).toLocaleString('en')} | ${ratio(set, 'set')} | ${ratio(get, 'get')} |`);
    }
    for (const w of workers) w.kill();
  })();
} else {
  const stores = {
    cluster: new (require('..')(session))(),
    seed: new (require('strong-cluster-express-store')(session))(),
  };
  if (process.env.REDIS_URL) {
    const client = require('redis').createClient({ url: process.env.REDIS_URL });
    client.connect();
    stores.redis = new (require('connect-redis').default)({ client });
  }
  const sids = Array.from({ length: SESSIONS }, (_, i) => `bench-${cluster.worker.id}-${i}-${'x'.repeat(16)}`);
  const sess = { cookie: { originalMaxAge: null, expires: null, httpOnly: true, path: '/' }, visited: '1' };

  process.on('message', (msg) => {
    if (!msg || msg.type !== 'BENCH') return;
    const store = stores[msg.store];
    const deadline = Date.now() + DURATION_MS;
    let ops = 0;
    const next = (err) => {
      if (err) throw err;
      // Checking the clock every 64 calls keeps it out of the measured cost.
      if ((ops & 63) === 0 && Date.now() >= deadline) return process.send({ type: 'BENCH_DONE', ops });
      const sid = sids[ops % SESSIONS];
      ops += 1;
      if (msg.op === 'set') store.set(sid, sess, next);
      else store.get(sid, next);
    };
    next();
  });
}
