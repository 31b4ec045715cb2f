// cluster-session-store for Node: an express-session store for Node's `cluster`, in shared
// memory. The API is strong-cluster-express-store's:
//
//   const ClusterStore = require('cluster-session-store')(session); // session: express-session
//   ClusterStore.setup(options);   // in the cluster primary, before cluster.fork()
//   app.use(session({ store: new ClusterStore(), secret: '...' })); // in each worker
//
// setup() creates a named shared-memory segment (mode 0600) and puts its name in
// process.env, which cluster.fork() hands to every worker; `new ClusterStore()` attaches to
// it by that name. Each store operation is a synchronous call into the addon (well under a
// microsecond of memory work); its callback runs on the next tick, as with any store.
'use strict';

const cluster = require('node:cluster');
const crypto = require('node:crypto');

/** The variable through which the primary's setup() tells its workers the segment's name. */
const ENV_NAME = 'CLUSTER_SESSION_STORE';

let addon;
try {
  addon = require('./index.node');
} catch (e) {
  const err = new Error(
    `cluster-session-store: the native addon (index.node) could not be loaded: ${e.message}. ` +
      'Run `npm install` in the package folder (it builds the addon with cargo).',
  );
  err.code = 'ERR_CLUSTER_STORE_ADDON';
  err.cause = e;
  throw err;
}

function codedError(code, message, Type = Error) {
  const err = new Type(message);
  err.code = code;
  return err;
}

// ---------------------------------------------------------------------------------------
// The primary: setup()

/** setup()'s options, with the type each must have. */
const OPTION_TYPES = {
  memorySize: 'number',
  shards: 'number',
  maxValueSize: 'number',
  ttl: 'number',
  lockTimeout: 'number',
  eviction: 'string',
  sweepInterval: 'number',
};

function checkOptions(options) {
  if (options === undefined || options === null) return {};
  if (typeof options !== 'object' || Array.isArray(options)) {
    throw codedError(
      'ERR_CLUSTER_STORE_INVALID_OPTION',
      `setup() takes an options object, not ${typeof options}`,
      TypeError,
    );
  }
  const checked = {};
  for (const [key, value] of Object.entries(options)) {
    const type = OPTION_TYPES[key];
    if (!type) {
      throw codedError(
        'ERR_CLUSTER_STORE_INVALID_OPTION',
        `unknown option ${JSON.stringify(key)} of setup(); known: ${Object.keys(OPTION_TYPES).join(', ')}`,
        TypeError,
      );
    }
    if (value === undefined) continue;
    if (typeof value !== type) {
      throw codedError(
        'ERR_CLUSTER_STORE_INVALID_OPTION',
        `option ${key} of setup() must be a ${type}, not ${typeof value}`,
        TypeError,
      );
    }
    checked[key] = value;
  }
  return checked;
}

/** The primary's store, once set up: its segment's name. */
let primaryName = null;
/** The signals on which the primary removes its segment before it ends (see onSignal). */
const SIGNALS = ['SIGINT', 'SIGTERM'];
const signalHandlers = {};

/**
 * Creates the store in the cluster primary: call it before cluster.fork(). Options (all
 * optional): memorySize (bytes, default 64 MiB), shards (a power of two, default 64),
 * maxValueSize (bytes of JSON per session, default 64 KiB), ttl (seconds, for sessions whose
 * cookie has no expiry, default 86400), lockTimeout (ms, default 5000), eviction ('lru' or
 * 'refuse'), sweepInterval (ms, default 1000).
 *
 * In a cluster worker it does nothing, as the seed's did: the primary set the store up.
 * Called again in the primary with no options it does nothing; with options it throws.
 */
function setup(options) {
  if (cluster.isWorker) return;
  const checked = checkOptions(options);
  if (primaryName !== null) {
    if (options === undefined) return;
    throw codedError(
      'ERR_CLUSTER_STORE_ALREADY_SET_UP',
      'setup() was already called in this process: call it once, with its options, in the ' +
        'cluster primary before cluster.fork()',
    );
  }
  // One segment per primary: its pid, and a random part so a reused pid never meets an old one.
  const name = `node-${process.pid}-${crypto.randomBytes(4).toString('hex')}`;
  addon.setup(name, checked);
  primaryName = name;
  process.env[ENV_NAME] = name;

  // A worker that died holding a shard lock: repair the shard now, not at the next request.
  cluster.on('exit', onWorkerExit);
  // The segment goes at a normal exit or process.exit() ('exit'), and on SIGINT or SIGTERM
  // (onSignal). Any other end leaves it: SIGKILL, SIGHUP, SIGQUIT and the other signals that
  // end a process by default, a crash of native code, an abort. The next setup() of this
  // user (in any primary) removes it then, as no live primary holds its lock (src/stale.rs).
  process.on('exit', shutdown);
  for (const signal of SIGNALS) {
    signalHandlers[signal] = () => onSignal(signal);
    // First in line, so that a listener after it that ends the process only when no other
    // listener is left (as signal-exit does) finds this one gone.
    process.prependListener(signal, signalHandlers[signal]);
  }
}

function onWorkerExit(worker) {
  if (worker && worker.process && worker.process.pid) addon.workerExited(worker.process.pid);
}

// SIGINT or SIGTERM: the segment is removed at once, whoever else listens (shutdown() also
// removes these listeners). Then, if this was the only listener, this process would have
// ended of the signal without it: it re-raises the signal, to end as it would have (its
// exit status says so). With other listeners, what happens next is theirs: an application
// that keeps running goes on without a segment (its workers serve on; new ones cannot
// attach), and one that exits, exits.
function onSignal(signal) {
  const alone = process.listenerCount(signal) === 1;
  shutdown();
  if (alone) process.kill(process.pid, signal);
}

/**
 * Removes the primary's store now (setup() arranges it at exit): its segment is unlinked and
 * its sweeps stop. Workers already attached keep serving from their mapping; new workers can
 * no longer attach. Returns whether there was a store.
 */
function shutdown() {
  if (primaryName === null) return false;
  primaryName = null;
  cluster.removeListener('exit', onWorkerExit);
  process.removeListener('exit', shutdown);
  for (const [signal, handler] of Object.entries(signalHandlers)) {
    process.removeListener(signal, handler);
    delete signalHandlers[signal];
  }
  return addon.shutdown();
}

// ---------------------------------------------------------------------------------------
// Every process: the store

/** The handle of this process, attached on first use. */
let attached = null;

function attach() {
  const name = process.env[ENV_NAME];
  if (!name) {
    throw codedError(
      'ERR_CLUSTER_STORE_NOT_SET_UP',
      'no cluster session store: call require(\'cluster-session-store\').setup() (or ' +
        'ClusterStore.setup()) in the cluster primary before cluster.fork(); the workers ' +
        `find the store through the ${ENV_NAME} environment variable that setup() sets`,
    );
  }
  if (attached === null || attached.name !== name) attached = addon.Store.attach(name);
  return attached;
}

/** The unix-ms instant at which a session expires, or undefined for the default ttl. */
function expiresOf(sess) {
  const cookie = sess && sess.cookie;
  if (!cookie) return undefined;
  if (cookie.expires) {
    const at = new Date(cookie.expires).getTime();
    if (Number.isFinite(at)) return at;
  }
  if (typeof cookie.maxAge === 'number' && Number.isFinite(cookie.maxAge)) {
    return Date.now() + cookie.maxAge;
  }
  return undefined;
}

function checkSid(sid) {
  if (typeof sid !== 'string') {
    throw codedError(
      'ERR_CLUSTER_STORE_INVALID_SID',
      `the session id must be a string, not ${sid === null ? 'null' : typeof sid}`,
      TypeError,
    );
  }
}

function toJson(sid, sess) {
  let json;
  try {
    json = JSON.stringify(sess);
  } catch (e) {
    const err = codedError(
      'ERR_CLUSTER_STORE_SERIALIZE',
      `session ${JSON.stringify(sid)} cannot be stored: JSON.stringify failed (${e.message}); ` +
        'keep only JSON values in req.session (no cycles, no BigInt)',
    );
    err.cause = e;
    throw err;
  }
  if (typeof json !== 'string' || json[0] !== '{') {
    throw codedError(
      'ERR_CLUSTER_STORE_SERIALIZE',
      `session ${JSON.stringify(sid)} cannot be stored: a session is an object, not ${typeof sess}`,
      TypeError,
    );
  }
  return json;
}

// Runs `op` now and hands its result or error to `cb` on the next tick, or, with no
// callback, returns a Promise of it. The callback is called once, outside any try: what it
// throws is its own. A rejected Promise is marked handled: express-session calls some
// methods with no callback (req.session.destroy() without one calls store.destroy(sid,
// undefined)) and drops what they return, and an unhandled rejection would end the process
// (Node 15 and later). A caller that awaits the Promise still gets the rejection.
function run(cb, op) {
  let result;
  let error = null;
  try {
    result = op();
  } catch (e) {
    error = e;
  }
  if (typeof cb === 'function') {
    if (error) process.nextTick(cb, error);
    else process.nextTick(cb, null, result);
    return undefined;
  }
  if (!error) return Promise.resolve(result);
  const rejected = Promise.reject(error);
  rejected.catch(() => {});
  return rejected;
}

/** The session stored as `json`; text that is not JSON is an error with a code. */
function fromJson(sid, json) {
  try {
    return JSON.parse(json);
  } catch (e) {
    const err = codedError(
      'ERR_CLUSTER_STORE_CORRUPT_JSON',
      `session ${JSON.stringify(sid)} holds text that is not JSON (${e.message}): something ` +
        'other than this package wrote it; destroy it',
    );
    err.cause = e;
    throw err;
  }
}

/**
 * Returns the store class for this express-session module:
 * `const ClusterStore = require('cluster-session-store')(require('express-session'))`.
 */
function withSession(session) {
  const Store = session && session.Store;
  if (typeof Store !== 'function') {
    throw codedError(
      'ERR_CLUSTER_STORE_NO_SESSION',
      'cluster-session-store takes the express-session module: ' +
        "require('cluster-session-store')(require('express-session'))",
      TypeError,
    );
  }

  /**
   * express-session's Store over the shared segment. Sessions are stored as JSON and expire
   * at their cookie's `expires` (from `maxAge`), or after setup()'s `ttl` if it has none.
   */
  class ClusterStore extends Store {
    /** Attaches to the primary's store; throws at once if the primary called no setup(). */
    constructor(options) {
      super(options);
      this._store = attach();
    }

    /** The session, or `undefined` if it is absent or expired. */
    get(sid, cb) {
      return run(cb, () => {
        checkSid(sid);
        const json = this._store.get(sid);
        return json === null ? undefined : fromJson(sid, json);
      });
    }

    /** Stores the session (upsert), to expire with its cookie. */
    set(sid, sess, cb) {
      return run(cb, () => {
        checkSid(sid);
        this._store.set(sid, toJson(sid, sess), expiresOf(sess));
      });
    }

    /** Removes the session; a missing one is not an error. */
    destroy(sid, cb) {
      return run(cb, () => {
        checkSid(sid);
        this._store.destroy(sid);
      });
    }

    /** Resets a live session's expiry from its cookie, its data unchanged. */
    touch(sid, sess, cb) {
      return run(cb, () => {
        checkSid(sid);
        this._store.touch(sid, expiresOf(sess));
      });
    }

    /** Every live session, as an object keyed by session id (as express-session's MemoryStore). */
    all(cb) {
      return run(cb, () => {
        const sessions = {};
        for (const { id, json } of this._store.all()) sessions[id] = fromJson(id, json);
        return sessions;
      });
    }

    /** The number of live sessions. */
    length(cb) {
      return run(cb, () => this._store.length());
    }

    /** Removes every session. */
    clear(cb) {
      return run(cb, () => {
        this._store.clear();
      });
    }

    /** Walks the whole segment: `{ ok, shardsChecked, records, problems }`. Synchronous. */
    checkIntegrity() {
      return this._store.checkIntegrity();
    }

    /** The store's counters (records, hits, misses, sets, evictions, ...). Synchronous. */
    stats() {
      return this._store.stats();
    }

    /** Whether the primary that set the store up still runs. Synchronous. */
    primaryAlive() {
      return this._store.primaryAlive();
    }
  }

  ClusterStore.setup = setup;
  ClusterStore.shutdown = shutdown;
  return ClusterStore;
}

module.exports = withSession;
module.exports.setup = setup;
module.exports.shutdown = shutdown;
module.exports.ENV_NAME = ENV_NAME;
