// A worker SIGKILLed while it holds a shard lock, at chosen points of a write: the test-only
// build of the addon (test-build/, with the crate's fault hooks; see fault-addon.js) stops
// the worker there, inside the lock, and says so; the test kills it. One shard, so every
// session shares that lock. Each time: the lock is really held (a write from elsewhere
// times out), the primary's repair is counted once the worker's exit is reported, every
// other request completes well within the lock timeout (a lock left held would make them
// wait it out), the session being written keeps its previous value, the replacement
// serves, and the integrity check passes.
'use strict';

const { useFaultAddon } = require('./fault-addon');

useFaultAddon();

const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const session = require('express-session');

const { ENV_NAME, Client, request, startPrimary, until } = require('./helpers');

const APP = path.join(__dirname, 'fixtures', 'app.js');
/** The crate's fault points tried, by number: each stops a write before it is published. */
const POINTS = [
  [1, 'right after taking the lock'],
  [2, 'halfway through copying the new value'],
  [3, 'with the new record complete, not yet published'],
];
const LOCK_TIMEOUT_MS = 3000;
/** Longest a request may take once the holder is dead: well under LOCK_TIMEOUT_MS. */
const MAX_LATENCY_MS = 2000;
const CLIENTS = 4;

test('a worker SIGKILLed while it holds a shard lock blocks no one and loses nothing', async (t) => {
  const primary = startPrimary(APP, { FAULT_ADDON: '1', RESPAWN: '1', SHARDS: '1', LOCK_TIMEOUT: String(LOCK_TIMEOUT_MS) });
  t.after(() => primary.stop());
  const { port, store } = await primary.waitFor((e) => e.event === 'listening');
  process.env[ENV_NAME] = store;
  const ClusterStore = require('..')(session);
  const watcher = new ClusterStore();

  const clients = [];
  for (let i = 0; i < CLIENTS; i++) {
    const client = new Client(port);
    assert.equal((await client.send({ path: '/count' })).json.n, 1);
    clients.push(client);
  }
  const counts = clients.map(() => 1);
  /** Two workers listening that have not exited. */
  const twoUp = () => {
    const exited = new Set(primary.events.filter((e) => e.event === 'exit').map((e) => e.pid));
    return primary.events.filter((e) => e.event === 'up' && !exited.has(e.pid)).length === 2;
  };

  for (const [round, [point, where]] of POINTS.entries()) {
    await until(twoUp, { timeoutMs: 20000, what: `two workers up before round ${round}` });
    const recoveries = watcher.stats().recoveries;

    // A write of client 0's session stops at `point`, inside the lock.
    const parkedRequest = request(port, { path: `/park?point=${point}&round=${round}`, cookie: clients[0].cookie, timeoutMs: 30000 }).then(
      (res) => ({ res }),
      (error) => ({ error }),
    );
    const parked = await primary.waitFor((e) => e.event === 'parked' && e.round === String(round));
    if (round === 0) {
      // The lock is held by a live process: a write from here waits the lock timeout out.
      const started = Date.now();
      await assert.rejects(watcher.set('probe', { a: 1 }), { code: 'ERR_CLUSTER_STORE_LOCK_TIMEOUT' });
      assert.ok(Date.now() - started >= LOCK_TIMEOUT_MS - 100, 'the probe waited for the lock');
    }

    process.kill(parked.pid, 'SIGKILL');
    const exit = await primary.waitFor((e) => e.event === 'exit' && e.pid === parked.pid);
    assert.equal(exit.signal, 'SIGKILL');
    const { error } = await parkedRequest;
    assert.ok(error, 'the parked request got no answer');
    // The primary's 'exit' listener (setup()'s) runs before the fixture's reports the exit:
    // the shard is repaired by then, once.
    assert.equal(watcher.stats().recoveries, recoveries + 1, `repairs after the kill ${where}`);

    // Every client is served promptly, by a live worker; client 0's session kept the value
    // it had before the write that was stopped.
    for (const [i, client] of clients.entries()) {
      const sent = Date.now();
      const res = await client.send({ path: '/count', timeoutMs: MAX_LATENCY_MS });
      assert.equal(res.status, 200, res.body);
      assert.notEqual(res.json.pid, parked.pid);
      assert.equal(res.json.n, counts[i] + 1, `client ${i}'s count after the kill ${where}`);
      assert.ok(Date.now() - sent < MAX_LATENCY_MS);
      counts[i] = res.json.n;
    }
    const report = watcher.checkIntegrity();
    assert.equal(report.ok, true, report.problems.join('\n'));
    t.diagnostic(`killed worker ${parked.pid} ${where}: repaired, others served`);
  }
  // The replacements attached and serve the same sessions.
  await until(twoUp, { timeoutMs: 20000, what: 'two workers up at the end' });
  assert.deepEqual(
    clients.map((c) => c.sid).map((sid, i) => [sid, counts[i]]),
    await Promise.all(clients.map(async (c) => [c.sid, (await watcher.get(c.sid)).n])),
  );
});
