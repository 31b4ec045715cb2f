// The seed's examples (examples/), run as they are: the cluster /hello and the express 4
// configuration with `require('cluster-session-store').setup()` in the primary. Each is
// started on a free port and driven over HTTP until both workers have answered for one
// session. `require('cluster-session-store')` in them resolves to this package itself (its
// package.json has `exports`, so the package can require itself by name).
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const os = require('node:os');
const path = require('node:path');

const { PACKAGE_DIR, Client, freePort, startPrimary, until } = require('./helpers');

const WORKERS = Math.min(2, os.cpus().length);

async function start(t, example) {
  const port = await freePort();
  const primary = startPrimary(path.join(PACKAGE_DIR, 'examples', example), { PORT: String(port) });
  t.after(() => primary.stop());
  const client = new Client(port);
  const first = await until(() => client.send({ path: '/hello', timeoutMs: 2000 }).catch(() => null), {
    timeoutMs: 20000,
    intervalMs: 50,
    what: `${example} to answer\n${primary.output()}`,
  });
  assert.equal(first.status, 200, first.body);
  return { client, first: first.json };
}

test("the seed's cluster example: /hello from every worker, one session", async (t) => {
  const { client, first } = await start(t, 'cluster-hello.js');
  assert.match(first.msg, /^Hello from worker \d+$/);
  // Until every worker has answered (the later ones may still be starting), within a bound.
  const workers = new Set();
  const deadline = Date.now() + 20000;
  while (workers.size < WORKERS) {
    assert.ok(Date.now() < deadline, `answers from ${WORKERS} workers: only ${[...workers]}`);
    const res = await client.send({ path: '/hello' });
    const m = /^Hello again from worker (\d+)$/.exec(res.json.msg);
    assert.ok(m, res.body);
    workers.add(m[1]);
  }
});

test("the seed's express 4 configuration, set up with require('...').setup()", async (t) => {
  const { client, first } = await start(t, 'express4.js');
  assert.equal(first.visits, 1);
  // Until every worker has answered (the later ones may still be starting), within a bound.
  const workers = new Set();
  const deadline = Date.now() + 20000;
  for (let visits = 2; workers.size < WORKERS; visits++) {
    assert.ok(Date.now() < deadline, `answers from ${WORKERS} workers: only ${[...workers]}`);
    const res = await client.send({ path: '/hello' });
    assert.equal(res.json.visits, visits);
    workers.add(res.json.worker);
  }
});
