// Loads the test-only build of the addon (test-build/index.node: the crate's fault hooks,
// `armFault`, `shiftClock`; built by `node scripts/build.js --fault-injection`, which `npm
// test` runs first as its `pretest`) in place of index.node, for this process: index.js's
// `require('./index.node')` then finds it in require's cache. Call it before anything
// requires the package. The installed addon, index.node, has no such hooks.
'use strict';

const fs = require('node:fs');
const Module = require('node:module');
const path = require('node:path');

const PACKAGE_DIR = path.resolve(__dirname, '..');
const BUILT = path.join(PACKAGE_DIR, 'test-build', 'index.node');

function useFaultAddon() {
  if (!fs.existsSync(BUILT)) {
    throw new Error(
      `${BUILT} is missing: run the tests with \`npm test\` (its pretest builds it), or ` +
        '`node scripts/build.js --fault-injection` first',
    );
  }
  const target = path.join(PACKAGE_DIR, 'index.node');
  if (require.cache[target] && require.cache[target].exports.armFault) return require.cache[target].exports;
  if (require.cache[target]) throw new Error('the package was loaded before useFaultAddon()');
  const addon = require(BUILT);
  const mod = new Module(target, module);
  mod.filename = target;
  mod.paths = [];
  mod.loaded = true;
  mod.exports = addon;
  require.cache[target] = mod;
  return addon;
}

module.exports = { useFaultAddon };
