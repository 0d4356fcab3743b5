'use strict';

// PM2's ecosystem file as the CLI's input: `rcluster ecosystem.config.js`
// runs the app it describes, its keys read as the CLI options that mean the
// same (flags given on the command line win). A file of several apps needs
// `--only <name>`: one rcluster runs one app.

const fs = require('fs');
const path = require('path');

/**
 * Whether the CLI's argument names a configuration file rather than an app:
 * PM2's rule, a `.json` file or a `*.config.js` (`.cjs`, `.mjs`) one.
 */
function isConfigFile(name) {
  return /\.json$/i.test(name) || /\.config\.[cm]?js$/i.test(name);
}

const text = (v) => String(v);
/** PM2 takes node arguments and app arguments as an array or one string of words. */
const words = (v) => (Array.isArray(v) ? v.map(String) : String(v).split(/\s+/).filter(Boolean));

// PM2 key -> [CLI option, its value(s) as the command line would give them
// (undefined: nothing to set)].
const KEYS = {
  instances: ['workers', text],
  autorestart: ['restart', (v) => (v === false || v === 'false' ? 'never' : undefined)],
  min_uptime: ['min-uptime', text],
  max_restarts: ['max-restarts', text],
  restart_delay: ['restart-delay', text],
  exp_backoff_restart_delay: ['backoff-initial', text],
  max_memory_restart: ['max-memory', text],
  wait_ready: ['readiness', (v) => (v === true || v === 'true' ? 'message' : undefined)],
  listen_timeout: ['ready-timeout', text],
  kill_timeout: ['kill-timeout', text],
  stop_exit_codes: ['stop-exit-codes', (v) => [].concat(v).join(',')],
  node_args: ['node-arg', words],
  interpreter_args: ['node-arg', words],
  env: ['env', (v) => {
    if (typeof v !== 'object' || Array.isArray(v)) throw new Error('must be an object of variables');
    return Object.entries(v).map(([k, x]) => `${k}=${x}`);
  }],
  out_file: ['output', text],
  output: ['output', text],
  error_file: ['error', text],
  error: ['error', text],
};
// Keys read above or with nothing to do here: the cluster mode (rcluster's
// only one) and PM2's own log formatting.
const SILENT = new Set(['name', 'script', 'args', 'cwd', 'exec_mode', 'merge_logs', 'combine_logs', 'time',
  'log_date_format']);

function readConfig(file) {
  if (/\.json$/i.test(file)) return JSON.parse(fs.readFileSync(file, 'utf8'));
  const m = require(file);
  // An ES module (require(esm)) or one compiled to CommonJS: its default export.
  if (m && (m[Symbol.toStringTag] === 'Module' || m.__esModule) && m.default !== undefined) return m.default;
  return m;
}

/** The apps of a configuration: `{ apps: [...] }`, `{ apps: {...} }`, `[...]` or one app. */
function appsOf(config) {
  if (Array.isArray(config)) return config;
  if (config && typeof config === 'object') {
    if (Array.isArray(config.apps)) return config.apps;
    if (config.apps && typeof config.apps === 'object') return [config.apps];
    if (config.script !== undefined) return [config];
  }
  return [];
}

/**
 * Reads `file` (absolute) and picks its app (`only`: by name). Returns
 * { app, args, options: [[option, value(s), label]], ignored: [keys] };
 * throws an Error whose message the CLI shows as a usage error.
 */
function load(file, only) {
  const base = path.basename(file);
  let config;
  try {
    config = readConfig(file);
  } catch (err) {
    throw new Error(`cannot read the ecosystem file '${base}': ${err.message.split('\n')[0]}`);
  }
  const apps = appsOf(config).filter((a) => a && typeof a === 'object');
  if (apps.length === 0) throw new Error(`${base} describes no app (expected { apps: [{ script, ... }] })`);
  let app = apps[0];
  if (only !== undefined) {
    app = apps.find((a) => a.name === only);
    if (!app) throw new Error(`${base} has no app named '${only}' (apps: ${apps.map((a) => a.name).join(', ')})`);
  } else if (apps.length > 1) {
    throw new Error(`${base} describes ${apps.length} apps (${apps.map((a) => a.name).join(', ')}); ` +
      'rcluster runs one: pick it with --only <name>');
  }
  if (typeof app.script !== 'string' || app.script === '') throw new Error(`${base}: the app has no script`);

  // Relative paths are the file's, wherever rcluster is started from.
  const dir = path.dirname(file);
  const cwd = typeof app.cwd === 'string' ? path.resolve(dir, app.cwd) : undefined;
  const at = (p) => path.resolve(cwd || dir, p);
  const options = [];
  if (cwd !== undefined) options.push(['cwd', cwd, `${base}: cwd`]);
  if (typeof app.name === 'string' && app.name !== '') options.push(['name', app.name, `${base}: name`]);
  const ignored = [];
  for (const [key, value] of Object.entries(app)) {
    if (SILENT.has(key)) continue;
    const map = KEYS[key];
    if (map === undefined) {
      ignored.push(key);
      continue;
    }
    let v;
    try {
      v = value === undefined || value === null ? undefined : map[1](value);
    } catch (err) {
      throw new Error(`${base}: ${key}: ${err.message}`);
    }
    if (v === undefined) continue;
    if (map[0] === 'output' || map[0] === 'error') v = at(v);
    options.push([map[0], v, `${base}: ${key}`]);
  }
  if (app.exec_mode !== undefined && !/^cluster(_mode)?$/.test(String(app.exec_mode))) {
    ignored.push(`exec_mode '${app.exec_mode}' (rcluster runs cluster mode)`);
  }
  return {
    app: at(app.script),
    args: app.args === undefined || app.args === null ? [] : words(app.args),
    options,
    ignored,
  };
}

module.exports = { isConfigFile, load };
