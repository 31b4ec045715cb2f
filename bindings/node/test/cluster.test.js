// A real cluster: a primary started as a child process forks two workers, and the test talks
// HTTP to them with a new connection per request, so the primary's round robin spreads the
// requests over both. The seed's own test cases (a session shared between workers; a
// destroyed session gone in the others), its /hello, expiry from the cookie's maxAge seen by
// every worker, the error a worker gets at once when the primary called no setup(), and the
// primary removing its segment when it ends (and the next setup() removing the segment of a
// primary that was SIGKILLed, never one whose primary still holds its lock).
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const { spawn, spawnSync } = require('node:child_process');
const readline = require('node:readline');
const path = require('node:path');
const session = require('express-session');

const { ENV_NAME, Client, request, startPrimary, until, within } = require('./helpers');

const APP = path.join(__dirname, 'fixtures', 'app.js');
const segmentPath = (name) => `/dev/shm/cluster-session-store.${name}`;

/** Starts the fixture's primary; stopped when the test ends, pass or fail. */
async function cluster(t, env = {}) {
  const primary = startPrimary(APP, env);
  t.after(() => primary.stop());
  const listening = await primary.waitFor((e) => e.event === 'listening');
  return { primary, port: listening.port, store: listening.store };
}

/** Sends `options` until each of the two workers has answered, checking every answer. */
async function fromBothWorkers(client, options, check) {
  const seen = new Set();
  for (let i = 0; i < 40 && seen.size < 2; i++) {
    const res = await client.send(options);
    assert.equal(res.status, 200, res.body);
    check(res.json);
    seen.add(res.json.worker);
  }
  assert.equal(seen.size, 2, 'both workers answered');
}

test('the seed: shares sessions between workers', async (t) => {
  const { port } = await cluster(t);
  const client = new Client(port);
  await client.send({ method: 'POST', body: { cmd: 'set', key: 'a-key', value: 'a-value' } });
  await fromBothWorkers(client, { method: 'POST', body: { cmd: 'get', key: 'a-key' } }, (json) =>
    assert.equal(json.value, 'a-value'),
  );
});

test('the seed: destroys a session shared between workers', async (t) => {
  const { port } = await cluster(t);
  const client = new Client(port);
  await client.send({ method: 'POST', body: { cmd: 'set', key: 'a-key', value: 'a-value' } });
  await fromBothWorkers(client, { method: 'POST', body: { cmd: 'get', key: 'a-key' } }, (json) =>
    assert.equal(json.value, 'a-value'),
  );
  const destroyedBy = (await client.send({ method: 'POST', body: { cmd: 'del', key: 'a-key' } })).json.worker;
  await fromBothWorkers(client, { method: 'POST', body: { cmd: 'get', key: 'a-key' } }, (json) =>
    assert.equal(json.value, undefined, `destroyed by worker ${destroyedBy}, still seen by worker ${json.worker}`),
  );
});

test("the seed's /hello: one session, answered by every worker", async (t) => {
  const { port } = await cluster(t);
  const client = new Client(port);
  const first = await client.send({ path: '/hello' });
  assert.match(first.json.msg, /^Hello from worker \d+$/);
  const workers = new Set();
  for (let i = 0; i < 40 && workers.size < 2; i++) {
    const res = await client.send({ path: '/hello' });
    const m = /^Hello again from worker (\d+)$/.exec(res.json.msg);
    assert.ok(m, res.body);
    workers.add(m[1]);
  }
  assert.equal(workers.size, 2);
});

test("sessions expire with the cookie's maxAge, in every worker", async (t) => {
  const { port, store } = await cluster(t, { MAX_AGE: '600' });
  const client = new Client(port);
  const created = Date.now();
  assert.equal((await client.send({ path: '/count' })).json.n, 1);
  // This process attaches to the primary's segment by name too, and watches the session
  // without touching it (a request would roll its expiry forward).
  process.env[ENV_NAME] = store;
  const ClusterStore = require('..')(session);
  const watcher = new ClusterStore();
  assert.equal((await watcher.get(client.sid)).n, 1);
  await until(async () => (await watcher.get(client.sid)) === undefined, { timeoutMs: 10000, what: 'the session to expire' });
  assert.ok(Date.now() - created >= 500, 'expired before its maxAge');
  // Every worker now sees no session for the old cookie.
  const seen = new Set();
  for (let i = 0; i < 40 && seen.size < 2; i++) {
    const res = await request(port, { path: '/peek', cookie: client.cookie });
    assert.equal(res.status, 200, res.body);
    assert.equal(res.json.n, undefined, `worker ${res.json.worker} still has the session`);
    seen.add(res.json.worker);
  }
  assert.equal(seen.size, 2);
  assert.equal(watcher.checkIntegrity().ok, true);
});

test('without setup() in the primary, a worker gets a clear error at once', async (t) => {
  const primary = startPrimary(APP, { NO_SETUP: '1' });
  t.after(() => primary.stop());
  const started = Date.now();
  const error = await primary.waitFor((e) => e.event === 'error', 10000);
  assert.equal(error.code, 'ERR_CLUSTER_STORE_NOT_SET_UP');
  assert.match(error.message, /setup\(\).*cluster primary before cluster\.fork\(\)/);
  assert.ok(Date.now() - started < 10000);
});

test('the primary removes its segment at a normal exit', () => {
  const env = { ...process.env };
  delete env[ENV_NAME];
  const out = spawnSync(process.execPath, ['-e', "require('.').setup(); console.log(process.env.CLUSTER_SESSION_STORE)"], {
    cwd: path.join(__dirname, '..'),
    env,
    encoding: 'utf8',
    timeout: 10000,
  });
  assert.equal(out.status, 0, out.stderr);
  const name = out.stdout.trim();
  assert.match(name, /^node-\d+-[0-9a-f]{8}$/);
  assert.equal(fs.existsSync(segmentPath(name)), false);
});

test('the primary removes its segment when it ends of SIGTERM or SIGINT', async (t) => {
  for (const signal of ['SIGTERM', 'SIGINT']) {
    const primary = startPrimary(APP);
    t.after(() => primary.stop());
    const { store } = await primary.waitFor((e) => e.event === 'listening');
    assert.ok(fs.existsSync(segmentPath(store)));
    primary.child.kill(signal);
    const end = await primary.exited;
    assert.equal(end.signal, signal, 'the primary still ends of the signal');
    assert.equal(fs.existsSync(segmentPath(store)), false, `segment left after ${signal}`);
  }
});

test("a SIGKILLed primary's segment is removed by the next setup()", async (t) => {
  const primary = startPrimary(APP);
  t.after(() => primary.stop());
  const { store } = await primary.waitFor((e) => e.event === 'listening');
  primary.child.kill('SIGKILL');
  await primary.exited;
  assert.ok(fs.existsSync(segmentPath(store)), 'SIGKILL leaves the segment');
  const env = { ...process.env };
  delete env[ENV_NAME];
  const out = spawnSync(process.execPath, ['-e', "require('.').setup()"], {
    cwd: path.join(__dirname, '..'),
    env,
    encoding: 'utf8',
    timeout: 10000,
  });
  assert.equal(out.status, 0, out.stderr);
  assert.equal(fs.existsSync(segmentPath(store)), false, 'the next setup() removed it');
});

/**
 * Starts `node -e script` in the package folder (no store variable), with stdin a pipe that
 * keeps it running until closed. Returns { child, line() (the next stdout line, within
 * 10 s), end() (closes stdin and waits, SIGKILL after 5 s) }; ended when the test does.
 */
function holder(t, script) {
  const env = { ...process.env };
  delete env[ENV_NAME];
  const child = spawn(process.execPath, ['-e', script], { cwd: path.join(__dirname, '..'), env, stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const lines = [];
  const waiting = [];
  readline.createInterface({ input: child.stdout }).on('line', (l) => (waiting.length ? waiting.shift()(l) : lines.push(l)));
  const end = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.stdin.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    return exited;
  };
  t.after(end);
  const line = () =>
    lines.length
      ? Promise.resolve(lines.shift())
      : new Promise((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error('no line from the child within 10 s')), 10000);
          waiting.push((l) => (clearTimeout(timer), resolve(l)));
        });
  return { child, exited, line, end };
}

/** Runs setup() in a new process, as the next primary would, and lets it exit. */
function setupInNewProcess() {
  const env = { ...process.env };
  delete env[ENV_NAME];
  const out = spawnSync(process.execPath, ['-e', "require('.').setup()"], { cwd: path.join(__dirname, '..'), env, encoding: 'utf8', timeout: 10000 });
  assert.equal(out.status, 0, out.stderr);
}

test("setup() removes a left segment only when no live primary holds its lock, whatever its pid", async (t) => {
  // A pid no process can have (above the kernel's largest pid_max, 2^22): a primary in
  // another pid namespace, or on a system without /proc, looks like this.
  const invisible = 4194304 + 1000;
  const live = holder(t, "require('.').setup(); console.log(process.env.CLUSTER_SESSION_STORE); process.stdin.resume()");
  const liveName = await live.line();
  // The live primary's segment under a second name with the invisible pid: the same file,
  // locked by a process this test can see only as a lock.
  const alias = segmentPath(`node-${invisible}-0123abcd`);
  const unlocked = segmentPath(`node-${invisible}-4567ef00`);
  t.after(() => {
    for (const f of [alias, unlocked]) fs.rmSync(f, { force: true });
  });
  fs.linkSync(segmentPath(liveName), alias);
  fs.writeFileSync(unlocked, '', { mode: 0o600 });

  setupInNewProcess();
  assert.ok(fs.existsSync(alias), 'a segment whose primary holds its lock stays');
  assert.ok(fs.existsSync(segmentPath(liveName)));
  assert.equal(fs.existsSync(unlocked), false, 'an unlocked one of a pid not running goes');

  // The primary exits (removing its own name); the alias is now left over.
  assert.deepEqual(await live.end(), { code: 0, signal: null });
  assert.equal(fs.existsSync(segmentPath(liveName)), false);
  assert.ok(fs.existsSync(alias));
  setupInNewProcess();
  assert.equal(fs.existsSync(alias), false, 'removed once its primary is gone');
});

test('SIGTERM with a listener of the application: the segment goes at once, the application decides the rest', async (t) => {
  const app = holder(
    t,
    "process.on('SIGTERM', () => console.log('SIGTERM handled')); require('.').setup(); " +
      'console.log(process.env.CLUSTER_SESSION_STORE); process.stdin.resume()',
  );
  const name = await app.line();
  assert.ok(fs.existsSync(segmentPath(name)));
  app.child.kill('SIGTERM');
  assert.equal(await app.line(), 'SIGTERM handled');
  assert.equal(fs.existsSync(segmentPath(name)), false, 'removed on SIGTERM');
  assert.equal(app.child.exitCode, null, 'the application still runs: its listener did not exit');
  assert.deepEqual(await app.end(), { code: 0, signal: null });
});

test('SIGTERM with a listener that ends the process only when it is the last (as signal-exit does)', async (t) => {
  // Registered before setup(): it still finds the package's listener gone, and re-raises.
  const app = holder(
    t,
    "const sig = 'SIGTERM'; const mine = () => { if (process.listenerCount(sig) === 1) { " +
      'process.removeListener(sig, mine); process.kill(process.pid, sig); } }; ' +
      "process.on(sig, mine); require('.').setup(); console.log(process.env.CLUSTER_SESSION_STORE); process.stdin.resume()",
  );
  const name = await app.line();
  app.child.kill('SIGTERM');
  assert.deepEqual(await within(app.exited, 10000, 'the process to end of SIGTERM'), { code: null, signal: 'SIGTERM' });
  assert.equal(fs.existsSync(segmentPath(name)), false);
});
