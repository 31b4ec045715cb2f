// Expiry against the store's clock, moved by the test rather than waited for: the test-only
// build of the addon (see fault-addon.js) shifts the clock of this process, so margins are
// minutes and a stalled machine cannot make a session expire early or late.
'use strict';

const { useFaultAddon } = require('./fault-addon');

const addon = useFaultAddon();

const test = require('node:test');
const assert = require('node:assert/strict');
const session = require('express-session');

const pkg = require('..');

const ClusterStore = pkg(session);
ClusterStore.setup({ memorySize: 1 << 20, shards: 1, ttl: 3600 });
const store = new ClusterStore();
const MINUTE = 60000;

/** A session whose cookie expires `ms` from now, as express-session makes it. */
function expiringIn(ms, data) {
  const req = { sessionID: 'x', sessionStore: store };
  const sess = store.createSession(req, { cookie: { originalMaxAge: ms, expires: new Date(Date.now() + ms), path: '/' } });
  return Object.assign(sess, data);
}

test('touch moves the expiry from the cookie and keeps the data', async (t) => {
  t.after(() => addon.resetClock());
  await store.set('touched', expiringIn(10 * MINUTE, { a: 1 }));
  await store.set('untouched', expiringIn(10 * MINUTE, { a: 1 }));
  // The touch carries other data: the stored data stays as it was.
  await store.touch('touched', expiringIn(30 * MINUTE, { a: 2 }));

  addon.shiftClock(20 * MINUTE); // past the first expiry, before the touched one
  assert.equal(await store.get('untouched'), undefined, 'expires at its cookie');
  assert.equal((await store.get('touched')).a, 1, 'lives on to its new expiry, data unchanged');

  addon.shiftClock(20 * MINUTE); // past the touched expiry too
  assert.equal(await store.get('touched'), undefined);
  assert.equal(await store.length(), 0);
});

test('a session whose cookie has no expiry lives for the ttl option, and no longer', async (t) => {
  t.after(() => addon.resetClock());
  await store.set('no-expiry', { cookie: { path: '/' }, a: 1 });
  addon.shiftClock(59 * MINUTE);
  assert.equal((await store.get('no-expiry')).a, 1);
  addon.shiftClock(2 * MINUTE); // ttl is an hour
  assert.equal(await store.get('no-expiry'), undefined);
});
