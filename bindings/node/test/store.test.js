// express-session's store semantics in one process: the process sets the store up (as a
// cluster primary would) and uses it through `new ClusterStore()`. get, set, destroy, touch,
// all, length, clear, expiry from the cookie, exact round trips of what express-session
// stores, and every error passed to the callback as an Error with a code.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const { spawnSync } = require('node:child_process');
const session = require('express-session');

const pkg = require('..');
const ClusterStore = pkg(session);

ClusterStore.setup({ memorySize: 4 << 20, shards: 4, maxValueSize: 16 << 10, ttl: 3600, sweepInterval: 50 });
const store = new ClusterStore();

/** A session as express-session makes it: a Session with a Cookie, through the store's createSession. */
function expressSession(data, cookie = {}) {
  const req = { sessionID: 'x', sessionStore: store };
  const sess = store.createSession(req, { cookie: { originalMaxAge: null, path: '/', httpOnly: true, ...cookie } });
  Object.assign(sess, data);
  return sess;
}

function call(method, ...args) {
  return new Promise((resolve, reject) => {
    store[method](...args, (err, value) => (err ? reject(err) : resolve(value)));
  });
}

test.beforeEach(() => call('clear'));

test('set then get returns the session; get of an unknown id gives undefined', async () => {
  await call('set', 'sid-1', { cookie: { path: '/' }, user: 'ada' });
  assert.deepEqual(await call('get', 'sid-1'), { cookie: { path: '/' }, user: 'ada' });
  assert.equal(await call('get', 'unknown'), undefined);
});

test('callbacks run on a later tick, once, with null for no error', async () => {
  let ran = 0;
  let sync = true;
  await new Promise((resolve) => {
    store.set('sid-tick', { a: 1 }, (err) => {
      assert.equal(err, null);
      assert.equal(sync, false);
      ran += 1;
      resolve();
    });
    sync = false;
  });
  assert.equal(ran, 1);
});

test('without a callback each method returns a Promise', async () => {
  await store.set('sid-p', { a: 1 });
  assert.deepEqual(await store.get('sid-p'), { a: 1 });
  assert.equal(await store.length(), 1);
  await store.destroy('sid-p');
  assert.equal(await store.get('sid-p'), undefined);
  await assert.rejects(store.get(42), { code: 'ERR_CLUSTER_STORE_INVALID_SID' });
});

test('destroy removes the session; destroying a missing one is not an error', async () => {
  await call('set', 'sid-2', { a: 1 });
  await call('destroy', 'sid-2');
  assert.equal(await call('get', 'sid-2'), undefined);
  await call('destroy', 'sid-2');
});

test('all, length and clear', async () => {
  await call('set', 'a', { n: 1 });
  await call('set', 'b', { n: 2 });
  assert.equal(await call('length'), 2);
  assert.deepEqual(await call('all'), { a: { n: 1 }, b: { n: 2 } });
  await call('clear');
  assert.equal(await call('length'), 0);
  assert.deepEqual(await call('all'), {});
});

test("what express-session stores round-trips exactly: Session and Cookie, nested JSON, text", async () => {
  const sess = expressSession(
    {
      user: { id: 7, name: 'Zoë ✓ 日本', roles: ['admin', 'dev'], prefs: { dark: true, ratio: 0.1 + 0.2 } },
      cart: [{ sku: 'A-1', qty: 2, price: 19.99 }, null, [], {}],
      big: Number.MAX_SAFE_INTEGER,
      tiny: 5e-324,
      neg: -0.000001,
      text: 'quote " backslash \\ newline \n tab \t nul \u0000 lone \ud800 emoji 😀',
      empty: '',
      flags: [true, false],
    },
    { originalMaxAge: 60000, expires: new Date(Date.now() + 60000), secure: false, sameSite: 'lax', domain: 'example.test' },
  );
  await call('set', 'sid-rt', sess);
  const loaded = await call('get', 'sid-rt');
  // What a JSON store can hold: the session as JSON.stringify writes it, read back whole.
  assert.deepEqual(loaded, JSON.parse(JSON.stringify(sess)));
  assert.equal(JSON.stringify(loaded), JSON.stringify(sess));
  // express-session makes a working session of it again.
  const req = { sessionID: 'sid-rt', sessionStore: store };
  const again = store.createSession(req, loaded);
  assert.equal(again.cookie.originalMaxAge, 60000);
  assert.equal(again.cookie.expires.getTime(), sess.cookie.expires.getTime());
  assert.equal(again.cookie.sameSite, 'lax');
  assert.deepEqual(again.user, sess.user);
  assert.equal(again.text, sess.text);
});

test('expiry follows the cookie: expires in the past removes, a near one expires everywhere', async () => {
  await call('set', 'sid-past', expressSession({ a: 1 }, { originalMaxAge: 1000, expires: new Date(Date.now() - 1000) }));
  assert.equal(await call('get', 'sid-past'), undefined);

  // On the wall clock (clock.test.js tests expiry on a shifted one): a margin of 2 s between
  // the set and the first get.
  const shortLived = expressSession({ a: 1 }, { originalMaxAge: 2000, expires: new Date(Date.now() + 2000) });
  const start = Date.now();
  await call('set', 'sid-short', shortLived);
  assert.deepEqual((await call('get', 'sid-short')).a, 1);
  await waitUntilGone('sid-short', 15000);
  assert.ok(Date.now() - start >= 1950, 'expired early');
  assert.equal(await call('length'), 0);
});

test('a session whose cookie has no expiry lives for the ttl option', async () => {
  await call('set', 'sid-ttl', expressSession({ a: 1 }));
  // ttl is 3600 s: still there (the default expiry is not "now").
  assert.deepEqual((await call('get', 'sid-ttl')).a, 1);
  assert.equal(await call('length'), 1);
});

test('touch keeps the data; a touch to the past ends the session; touching a missing one is fine', async () => {
  // That touch moves the expiry is tested against a shifted clock, in clock.test.js.
  const sess = expressSession({ a: 1 }, { originalMaxAge: 600000, expires: new Date(Date.now() + 600000) });
  await call('set', 'sid-touch', sess);
  sess.a = 2;
  sess.cookie.expires = new Date(Date.now() + 1200000);
  await call('touch', 'sid-touch', sess);
  assert.deepEqual((await call('get', 'sid-touch')).a, 1);
  // A touch to the past ends it.
  sess.cookie.expires = new Date(Date.now() - 1);
  await call('touch', 'sid-touch', sess);
  assert.equal(await call('get', 'sid-touch'), undefined);
  await call('touch', 'never-set', sess);
});

test('errors go to the callback as Errors with a code, and leave the store unchanged', async () => {
  await call('set', 'sid-keep', { v: 'old' });

  const circular = { a: 1 };
  circular.self = circular;
  await assert.rejects(call('set', 'sid-keep', circular), (e) => e instanceof Error && e.code === 'ERR_CLUSTER_STORE_SERIALIZE');
  await assert.rejects(call('set', 'sid-keep', { n: 10n }), { code: 'ERR_CLUSTER_STORE_SERIALIZE' });
  await assert.rejects(call('set', 'sid-keep', 'a string'), { code: 'ERR_CLUSTER_STORE_SERIALIZE' });

  const huge = { blob: 'x'.repeat(64 << 10) };
  await assert.rejects(call('set', 'sid-keep', huge), (e) => {
    assert.equal(e.code, 'ERR_CLUSTER_STORE_VALUE_TOO_LARGE');
    assert.match(e.message, /maxValueSize/);
    return true;
  });
  await assert.rejects(call('set', 'x'.repeat(300), { a: 1 }), { code: 'ERR_CLUSTER_STORE_INVALID_SID' });
  await assert.rejects(call('set', '', { a: 1 }), { code: 'ERR_CLUSTER_STORE_INVALID_SID' });
  await assert.rejects(call('get', undefined), { code: 'ERR_CLUSTER_STORE_INVALID_SID' });
  await assert.rejects(call('destroy', null), { code: 'ERR_CLUSTER_STORE_INVALID_SID' });

  assert.deepEqual(await call('get', 'sid-keep'), { v: 'old' });
  assert.equal(store.checkIntegrity().ok, true);
});

test('text that is not JSON is an error with a code, from get and all', async () => {
  // Written past the package, straight through the addon's handle.
  store._store.set('sid-not-json', '{not json', undefined);
  await assert.rejects(call('get', 'sid-not-json'), (e) => {
    assert.equal(e.code, 'ERR_CLUSTER_STORE_CORRUPT_JSON');
    assert.match(e.message, /sid-not-json.*not JSON/);
    assert.ok(e.cause instanceof SyntaxError);
    return true;
  });
  await assert.rejects(call('all'), { code: 'ERR_CLUSTER_STORE_CORRUPT_JSON' });
  await call('destroy', 'sid-not-json');
  assert.deepEqual(await call('all'), {});
});

test('a failing call without a callback raises no unhandled rejection (req.session.destroy())', () => {
  // In a child process with node's default: an unhandled rejection would end it (exit 1).
  // express-session's req.session.destroy() with no callback calls store.destroy(sid,
  // undefined) and drops what it returns; a sid over 256 bytes makes it fail.
  const script = `
    const session = require('express-session');
    const ClusterStore = require('.')(session);
    ClusterStore.setup({ memorySize: 1 << 20, shards: 1 });
    const store = new ClusterStore();
    const req = { sessionID: 'x'.repeat(300), sessionStore: store };
    store.createSession(req, { cookie: { path: '/' } }).destroy();
    store.destroy(42);
    store.set('x'.repeat(300), { a: 1 });
    store.get(null);
    // Unhandled rejections are reported once the microtasks run out: by the next turn.
    setImmediate(() => setImmediate(() => console.log('still running')));
  `;
  const env = { ...process.env };
  delete env[pkg.ENV_NAME];
  const out = spawnSync(process.execPath, ['--unhandled-rejections=throw', '-e', script], {
    cwd: __dirname + '/..',
    env,
    encoding: 'utf8',
    timeout: 10000,
  });
  assert.equal(out.status, 0, out.stderr);
  assert.equal(out.stdout.trim(), 'still running');
  assert.equal(out.stderr, '');
});

test('a callback that throws is called once: its error is its own, never passed back to it', () => {
  // In a child process, whose uncaught exception is the point.
  const script = `
    const session = require('express-session');
    const ClusterStore = require('.')(session);
    ClusterStore.setup({ memorySize: 1 << 20, shards: 1 });
    const store = new ClusterStore();
    let calls = 0;
    process.on('uncaughtException', (e) => { console.log(JSON.stringify({ calls, message: e.message })); process.exit(0); });
    store.get('sid', () => { calls += 1; throw new Error('from the callback'); });
  `;
  const env = { ...process.env };
  delete env[pkg.ENV_NAME];
  const out = spawnSync(process.execPath, ['-e', script], { cwd: __dirname + '/..', env, encoding: 'utf8', timeout: 10000 });
  assert.equal(out.status, 0, out.stderr);
  assert.deepEqual(JSON.parse(out.stdout), { calls: 1, message: 'from the callback' });
});

test('setup: bad options are TypeErrors or range errors with a code; a second setup with options throws', () => {
  assert.throws(() => ClusterStore.setup({ shards: 4 }), { code: 'ERR_CLUSTER_STORE_ALREADY_SET_UP' });
  ClusterStore.setup(); // no options: nothing to do
  pkg.setup();
  assert.throws(() => pkg.setup({ nope: 1 }), { code: 'ERR_CLUSTER_STORE_INVALID_OPTION', message: /unknown option "nope"/ });
  assert.throws(() => pkg.setup({ shards: '4' }), { code: 'ERR_CLUSTER_STORE_INVALID_OPTION', message: /must be a number/ });
  assert.throws(() => pkg.setup(5), { code: 'ERR_CLUSTER_STORE_INVALID_OPTION' });
});

test('stats count the operations; checkIntegrity walks the segment', async () => {
  await call('set', 's', { a: 1 });
  await call('get', 's');
  const stats = store.stats();
  assert.ok(stats.sets >= 1 && stats.hits >= 1, JSON.stringify(stats));
  const report = store.checkIntegrity();
  assert.equal(report.ok, true, report.problems.join('\n'));
  assert.equal(report.shardsChecked, 4);
});

test('the segment is named after this primary, mode 0600, and removed by shutdown()', async () => {
  const name = process.env[pkg.ENV_NAME];
  assert.match(name, new RegExp(`^node-${process.pid}-[0-9a-f]{8}$`));
  const path = `/dev/shm/cluster-session-store.${name}`;
  assert.equal(fs.statSync(path).mode & 0o777, 0o600);
  // Last: the store is gone for new attaches, the handle already open still works.
  assert.equal(pkg.shutdown(), true);
  assert.equal(fs.existsSync(path), false);
  assert.equal(pkg.shutdown(), false);
  assert.throws(() => require('../index.node').Store.attach(name), { code: 'ERR_CLUSTER_STORE_ATTACH' });
  await call('set', 'sid-after', { a: 1 });
  assert.deepEqual(await call('get', 'sid-after'), { a: 1 });
  assert.equal(store.checkIntegrity().ok, true);
});

function waitUntilGone(sid, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const poll = () =>
      store.get(sid, (err, sess) => {
        if (err) return reject(err);
        if (sess === undefined) return resolve();
        if (Date.now() > deadline) return reject(new Error(`${sid} still there after ${timeoutMs} ms`));
        setTimeout(poll, 20);
      });
    poll();
  });
}
