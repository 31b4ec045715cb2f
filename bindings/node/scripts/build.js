#!/usr/bin/env node
// The package's `install` script: builds the addon from this repository with cargo (release
// profile) and copies it to index.node beside package.json. Nothing is downloaded but the
// crates that Cargo.lock names, from the crate registry. CARGO_TARGET_DIR and the other cargo
// variables apply as usual.
//
// `node scripts/build.js --fault-injection` builds the test-only variant instead, with the
// crate's fault hooks (cargo feature `fault-injection`), into test-build/index.node: the
// package's tests of a worker killed inside a shard lock load it (`npm test` builds it
// first, as its `pretest`). The installed addon, index.node, never has the hooks.
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const packageDir = path.resolve(__dirname, '..');
const crate = 'cluster-session-store-node';
const libName = 'cluster_session_store_node';

function fail(message) {
  console.error(`cluster-session-store: ${message}`);
  process.exit(1);
}

if (process.platform !== 'linux') {
  fail(`Linux only (robust futexes, /dev/shm); this is ${process.platform}`);
}

const faultInjection = process.argv.includes('--fault-injection');
const unknown = process.argv.slice(2).filter((a) => a !== '--fault-injection');
if (unknown.length) fail(`unknown argument ${unknown[0]}; the one option is --fault-injection`);

const cargo = process.env.CARGO || 'cargo';
const build = spawnSync(
  cargo,
  [
    'build',
    '--release',
    '-p',
    crate,
    ...(faultInjection ? ['--features', 'fault-injection'] : []),
    '--message-format=json-render-diagnostics',
  ],
  {
    cwd: packageDir,
    stdio: ['ignore', 'pipe', 'inherit'],
    encoding: 'utf8',
    maxBuffer: 256 << 20,
  },
);
if (build.error && build.error.code === 'ENOENT') {
  fail(`${cargo} not found: building the addon needs Rust 1.89 or later (rustup installs it)`);
}
if (build.error) fail(`could not run ${cargo}: ${build.error.message}`);
if (build.status !== 0) fail(`cargo build failed (exit ${build.status}); see above`);

// The cdylib's path, from cargo's own report of what it built.
let built = null;
for (const line of build.stdout.split('\n')) {
  if (!line.startsWith('{')) continue;
  const msg = JSON.parse(line);
  if (msg.reason === 'compiler-artifact' && msg.target && msg.target.name === libName) {
    built = msg.filenames.find((f) => f.endsWith('.so')) || built;
  }
}
if (!built) fail(`cargo built no ${libName} library`);

// Copied under a temporary name and renamed, so a process loading index.node never sees it
// half written.
const dest = faultInjection ? path.join(packageDir, 'test-build', 'index.node') : path.join(packageDir, 'index.node');
fs.mkdirSync(path.dirname(dest), { recursive: true });
const tmp = `${dest}.${process.pid}.tmp`;
fs.copyFileSync(built, tmp);
fs.renameSync(tmp, dest);
console.error(`cluster-session-store: built ${path.relative(packageDir, dest)} from ${built}`);
