// What the tests share: starting a cluster primary as a child process and reading its
// events, HTTP requests with one new connection each (keep-alive would pin a client to one
// worker), a cookie jar of one cookie, and bounded polling. Every wait has a deadline.
//
// stop() ends what startPrimary() started: the primary, this process's child, is sent
// SIGTERM (SIGKILL after a grace period) and reaped here. Its workers are its children, not
// this process's: they end when it does (their IPC channel closes) and its reaping of them,
// or init's once it is gone, is not ours to do. stop() waits for each worker's pid to be
// gone, SIGKILLs any left after the grace period, and waits (bounded) again, failing if one
// is still there.
'use strict';

const { spawn } = require('node:child_process');
const http = require('node:http');
const net = require('node:net');
const readline = require('node:readline');
const path = require('node:path');

const PACKAGE_DIR = path.resolve(__dirname, '..');
const ENV_NAME = 'CLUSTER_SESSION_STORE';

/** Polls `check` (sync or async) until it returns a truthy value, or fails after `timeoutMs`. */
async function until(check, { timeoutMs = 10000, intervalMs = 20, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** A port free on 127.0.0.1 now (for programs that take a port rather than report one). */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/**
 * Starts `script` (a cluster primary) under node with `env` added (and the store variable
 * removed, so only the primary's own setup() counts). Its stdout lines that are JSON are
 * events. Returns { child, events, output(), waitFor(pred), stop() }.
 */
function startPrimary(script, env = {}) {
  const childEnv = { ...process.env, ...env };
  delete childEnv[ENV_NAME];
  const child = spawn(process.execPath, [script], {
    cwd: PACKAGE_DIR,
    env: childEnv,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const events = [];
  const lines = [];
  const waiters = new Set();
  const onLine = (line) => {
    lines.push(line);
    if (!line.startsWith('{')) return;
    try {
      events.push(JSON.parse(line));
    } catch {
      return;
    }
    for (const waiter of waiters) waiter();
  };
  readline.createInterface({ input: child.stdout }).on('line', onLine);
  readline.createInterface({ input: child.stderr }).on('line', (line) => lines.push(`stderr: ${line}`));
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const workerPids = () => events.filter((e) => e.event === 'worker').map((e) => e.pid);

  return {
    child,
    events,
    exited,
    output: () => lines.join('\n'),
    /** The first event matching `pred`, waiting up to `timeoutMs` for it. */
    waitFor(pred, timeoutMs = 20000) {
      const found = events.find(pred);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`timed out after ${timeoutMs} ms waiting for an event; output:\n${lines.join('\n')}`));
        }, timeoutMs);
        const check = () => {
          const event = events.find(pred);
          if (!event) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve(event);
        };
        waiters.add(check);
        exited.then(() => {
          if (!waiters.has(check)) return;
          clearTimeout(timer);
          waiters.delete(check);
          reject(new Error(`the primary exited before the event; output:\n${lines.join('\n')}`));
        });
      });
    },
    /** Ends the primary (SIGTERM, then SIGKILL after `graceMs`) and any worker left. */
    async stop(graceMs = 5000) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      }
      // Workers end when their primary does (the IPC channel closes); any that has not
      // within the deadline is killed, and waited for.
      for (const pid of workerPids()) {
        const gone = () => !alive(pid);
        const ended = await until(gone, { timeoutMs: graceMs, what: `worker ${pid} to end` }).catch(() => false);
        if (ended) continue;
        try {
          process.kill(pid, 'SIGKILL');
        } catch {}
        await until(gone, { timeoutMs: graceMs, what: `worker ${pid} to be gone after SIGKILL` });
      }
      return exited;
    },
  };
}

/** Whether `pid` is a process (a zombie not yet reaped counts). */
function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** `promise`, or a rejection once `timeoutMs` have passed without it settling. */
function within(promise, timeoutMs, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** One HTTP request on a new connection; resolves { status, body, json, cookie }. */
function request(port, { method = 'GET', path: urlPath = '/', cookie, body, timeoutMs = 5000 } = {}) {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const headers = { Connection: 'close' };
    if (cookie) headers.Cookie = cookie;
    if (payload !== undefined) {
      headers['Content-Type'] = 'application/json';
      headers['Content-Length'] = Buffer.byteLength(payload);
    }
    const req = http.request({ host: '127.0.0.1', port, method, path: urlPath, headers, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json;
        try {
          json = JSON.parse(text);
        } catch {}
        const setCookie = (res.headers['set-cookie'] || []).map((c) => c.split(';')[0]);
        resolve({ status: res.statusCode, body: text, json, cookie: setCookie[0] });
      });
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(payload);
  });
}

/** A client with one cookie: the session's. */
class Client {
  constructor(port) {
    this.port = port;
    this.cookie = undefined;
  }
  async send(options) {
    const res = await request(this.port, { ...options, cookie: this.cookie });
    if (res.cookie) this.cookie = res.cookie;
    return res;
  }
  /** The session id in the cookie (express-session signs it as `s:<sid>.<signature>`). */
  get sid() {
    if (!this.cookie) return undefined;
    const value = decodeURIComponent(this.cookie.slice(this.cookie.indexOf('=') + 1));
    return value.slice(2, value.lastIndexOf('.'));
  }
}

module.exports = { ENV_NAME, PACKAGE_DIR, Client, alive, freePort, request, startPrimary, until, within };
