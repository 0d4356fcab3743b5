'use strict';

// `npm install` hook of rcluster.
//
// 1. A prebuilt binary that loads (`rcluster.<abi>.node` at the package root,
//    or the optional package `rcluster-<abi>`) means there is nothing to do.
// 2. Otherwise build from source with cargo and put the result where the
//    loader (binding.js) looks first: `<root>/rcluster.<abi>.node`.
//
// RCLUSTER_BUILD_FROM_SOURCE=1 (or `npm install --build-from-source`) skips
// step 1. An unsupported platform is not an install error: requiring
// rcluster there throws an error that names the platform.

const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { abi, supported, binaryFile, packageName } = require('./platform');

const root = path.resolve(__dirname, '..');
const BUILD_TIMEOUT_MS = 15 * 60 * 1000;

function log(msg) {
  console.log(`rcluster: ${msg}`);
}

function fail(msg) {
  console.error(`rcluster: ${msg}`);
  return 1;
}

function truthy(v) {
  return v === '1' || v === 'true';
}

function forceSource() {
  return (
    truthy(process.env.RCLUSTER_BUILD_FROM_SOURCE) ||
    truthy(process.env.npm_config_build_from_source)
  );
}

// Returns the path of the first candidate that loads, or null. A candidate
// that exists but does not load is reported and skipped.
function findPrebuilt(name) {
  const candidates = [];
  if (process.env.NAPI_RS_NATIVE_LIBRARY_PATH) {
    candidates.push(process.env.NAPI_RS_NATIVE_LIBRARY_PATH);
  }
  const local = path.join(root, binaryFile(name));
  if (fs.existsSync(local)) candidates.push(local);
  try {
    candidates.push(require.resolve(packageName(name), { paths: [root] }));
  } catch {
    // optional package not installed
  }
  for (const file of candidates) {
    try {
      require(file);
      return file;
    } catch (err) {
      log(`${file} is present but does not load (${err.message.split('\n')[0]})`);
    }
  }
  return null;
}

function hasCargo() {
  const r = spawnSync('cargo', ['--version'], { encoding: 'utf8', timeout: 30000 });
  if (r.error || r.status !== 0) return null;
  return r.stdout.trim();
}

// Where cargo puts its output (honours CARGO_TARGET_DIR and .cargo/config).
function targetDir() {
  const r = spawnSync('cargo', ['metadata', '--format-version', '1', '--no-deps'], {
    cwd: root,
    encoding: 'utf8',
    timeout: 60000,
    maxBuffer: 64 * 1024 * 1024,
  });
  if (!r.error && r.status === 0) {
    try {
      return JSON.parse(r.stdout).target_directory;
    } catch {
      // fall through
    }
  }
  return process.env.CARGO_TARGET_DIR
    ? path.resolve(root, process.env.CARGO_TARGET_DIR)
    : path.join(root, 'target');
}

function buildFromSource(name) {
  const cargo = hasCargo();
  if (!cargo) {
    return fail(
      `no prebuilt binary fits this platform (${name}), so rcluster has to be built from source,\n` +
        'and that needs Rust: `cargo` was not found on PATH.\n' +
        'Install Rust from https://rustup.rs and run `npm install` again.'
    );
  }
  log(`building from source with ${cargo} (release build, takes a minute or so)`);
  const build = spawnSync('cargo', ['build', '--release', '--lib'], {
    cwd: root,
    stdio: 'inherit',
    timeout: BUILD_TIMEOUT_MS,
  });
  if (build.error) return fail(`cargo build failed to run: ${build.error.message}`);
  if (build.signal) return fail(`cargo build was stopped by ${build.signal}`);
  if (build.status !== 0) return fail(`cargo build failed (exit code ${build.status})`);

  const lib = process.platform === 'darwin' ? 'librcluster.dylib' : 'librcluster.so';
  let dir = targetDir();
  if (process.env.CARGO_BUILD_TARGET) dir = path.join(dir, process.env.CARGO_BUILD_TARGET);
  const built = path.join(dir, 'release', lib);
  if (!fs.existsSync(built)) return fail(`cargo build succeeded but ${built} is missing`);

  // Copy then rename: replacing the file in place would corrupt a copy that
  // a running process has mapped.
  const dest = path.join(root, binaryFile(name));
  const tmp = `${dest}.${process.pid}.tmp`;
  try {
    fs.copyFileSync(built, tmp);
    fs.renameSync(tmp, dest);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    return fail(`could not copy ${built} to ${dest}: ${err.message}`);
  }
  log(`built ${dest}`);
  // A binary we just built for this very machine that does not load is a bug
  // in rcluster, not in the user's setup: say so, but leave the failure to
  // require('rcluster'), which reports it with the loader's full cause chain.
  try {
    require(dest);
  } catch (err) {
    console.warn(`rcluster: warning: ${dest} does not load: ${err.message.split('\n')[0]}`);
  }
  return 0;
}

function main() {
  const name = abi();
  if (!name) {
    log(
      `${process.platform}-${process.arch} is not supported (supported: ${supported.join(', ')}); ` +
        'nothing to build. require("rcluster") will throw on this platform.'
    );
    return 0;
  }
  if (forceSource()) {
    log('RCLUSTER_BUILD_FROM_SOURCE is set: building from source');
  } else {
    const found = findPrebuilt(name);
    if (found) {
      log(`using prebuilt binary ${path.relative(root, found) || found}`);
      return 0;
    }
    log(`no prebuilt binary for ${name}`);
  }
  return buildFromSource(name);
}

process.exitCode = main();
