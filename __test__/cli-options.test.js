'use strict';

// The CLI's command line: --help documents every option with its default,
// bad options are a clear error with exit code 2, and parsing rules
// (app arguments, aliases, units).

const test = require('node:test');
const assert = require('node:assert');
const { spawnSync } = require('child_process');
const path = require('path');
const { ROOT, FIXTURES } = require('./helpers');
const { BIN } = require('./cli-lib');
const cli = require('../lib/cli');

function runSync(args) {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 10000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('--help lists every option with its default, exit 0', () => {
  const r = runSync(['--help']);
  assert.strictEqual(r.code, 0, r.stderr);
  assert.match(r.stdout, /^Usage: rcluster \[options\] <app\.js\|app\.mjs> \[app arguments\.\.\.\]/);
  const options = cli.OPTIONS.filter((o) => !o.section);
  assert.ok(options.length >= 25);
  for (const o of options) {
    // The option's line and the description's continuation lines.
    const lines = r.stdout.split('\n');
    const at = lines.findIndex((l) => l.trimStart().startsWith(o.short ? `-${o.short}, --${o.name}` : `--${o.name}`));
    assert.ok(at >= 0, `--${o.name} is in --help`);
    let end = at + 1;
    while (end < lines.length && /^ {10,}\S/.test(lines[end])) end++;
    const line = lines.slice(at, end).map((l) => l.trim()).join(' ');
    if (o.def && o.def !== '-') assert.ok(line.includes(`(default: ${o.def})`), `--${o.name} shows its default: ${line}`);
  }
  for (const name of ['workers', 'policy', 'restart', 'max-restarts', 'backoff-initial', 'readiness', 'ready-timeout',
    'shutdown-timeout', 'drain-timeout', 'max-memory', 'max-connections', 'heartbeat-interval', 'env', 'node-arg', 'log-dir']) {
    assert.ok(options.some((o) => o.name === name), name);
  }
  assert.match(r.stdout, /SIGHUP/);
  assert.match(r.stdout, /SIGUSR2/);
  assert.match(r.stdout, /rcluster\/register/);
  assert.strictEqual(runSync(['-h']).stdout, r.stdout);
});

test('bad command lines: a clear message on stderr and exit code 2', () => {
  const app = path.join(FIXTURES, 'cli-app.js');
  const cases = [
    [['--frobnicate', app], /rcluster: unknown option '--frobnicate'/],
    [['-Z', app], /rcluster: unknown option '-Z'/],
    [['--workers', 'abc', app], /rcluster: --workers must be an integer from 1 to 1024, got 'abc'/],
    [['-w', '1025', app], /--workers must be an integer from 1 to 1024, got '1025'/],
    [['-w', '1.5', app], /--workers must be an integer/],
    [[], /rcluster: missing the app to run/],
    [['-w', '2'], /rcluster: missing the app to run/],
    [['no-such-app.js'], /rcluster: cannot find the app 'no-such-app\.js'/],
    [['start', app], /cannot find the app 'start' \(.*\) \(rcluster has no 'start' command: rcluster \[options\] app\.js\)/],
    [['reload'], /rcluster has no 'reload' command: rcluster \[options\] app\.js; signals reload, stop and report status/],
    [['--policy', 'random', app], /--policy must be one of rr, none, reuseport, least, hash, got 'random'/],
    [['--restart', 'sometimes', app], /--restart must be one of always, on-failure, never/],
    [['--min-uptime', '5 parsecs', app], /--min-uptime must be a duration/],
    [['--max-memory', '12Q', app], /--max-memory must be a size/],
    [['--env', 'NOVALUE', app], /--env must be KEY=VALUE, got 'NOVALUE'/],
    [['-e', 'out.log', app], /--env must be KEY=VALUE, got 'out\.log' \(PM2's -e <file> is --error <file> here\)/],
    [['--log-dir', '/tmp/x', '--output', '/tmp/y', app], /--log-dir cannot be combined with --output or --error/],
    [['--workers'], /option '-w, --workers <value>' argument missing/],
    [[path.join(FIXTURES, 'ecosystem', 'apps.json')], /rcluster: apps\.json describes 3 apps/],
    [['--only', 'badenv', path.join(FIXTURES, 'ecosystem', 'more.json')], /rcluster: more\.json: env: must be an object of variables/],
    [['--only', 'nocwd', path.join(FIXTURES, 'ecosystem', 'more.json')], /rcluster: more\.json: cwd: no such directory/],
  ];
  for (const [args, re] of cases) {
    const r = runSync(args);
    assert.strictEqual(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re, args.join(' '));
    assert.match(r.stderr, /Run 'rcluster --help' for the options\./);
    assert.strictEqual(r.stdout, '');
  }
});

test('parsing: options end at the app, units, aliases, last one wins', () => {
  const app = path.join(FIXTURES, 'cli-app.js');
  let r = cli.parse(['-i', '3', '--min-uptime=2s', '--max-memory', '512M', '-e', 'A=1', '-e', 'B=x=y', app, '-w', '9', '--help']);
  assert.strictEqual(r.values.workers, 3, '-i is --workers');
  assert.strictEqual(r.values['min-uptime'], 2000);
  assert.strictEqual(r.values['max-memory'], 512 * 1024 * 1024);
  assert.deepStrictEqual(r.values.env, [['A', '1'], ['B', 'x=y']]);
  assert.strictEqual(r.app, app);
  assert.deepStrictEqual(r.appArgs, ['-w', '9', '--help'], 'everything after the app is the app\'s');
  r = cli.parse(['-w', '2', '-w', '4', '--', app, 'x']);
  assert.strictEqual(r.values.workers, 4);
  assert.deepStrictEqual(r.appArgs, ['x']);
  r = cli.parse(['--workers', 'max', '--drain-timeout', '1.5m', '--backoff-factor', '1.5', '--node-arg=--trace-warnings', '--node-arg=--no-deprecation', app]);
  const cpus = require('os').availableParallelism();
  assert.strictEqual(r.values.workers, cpus);
  assert.strictEqual(r.values['drain-timeout'], 90000);
  assert.strictEqual(r.values['backoff-factor'], 1.5);
  assert.deepStrictEqual(r.values['node-arg'], ['--trace-warnings', '--no-deprecation']);
  // PM2's -i: 0 is one per CPU too, -N that many fewer (at least one), as a
  // separate value or joined.
  assert.strictEqual(cli.parse(['-i', '0', app]).values.workers, cpus);
  r = cli.parse(['-i', '-1', app, '-1']);
  assert.strictEqual(r.values.workers, Math.max(1, cpus - 1));
  assert.deepStrictEqual(r.appArgs, ['-1']);
  assert.strictEqual(cli.parse(['--instances', '-64', app]).values.workers, 1);
  assert.strictEqual(cli.parse(['--workers=-1', app]).values.workers, Math.max(1, cpus - 1));
  // PM2's flag names for ours.
  r = cli.parse(['--max-memory-restart', '512M', '--listen-timeout=3s', '--exp-backoff-restart-delay', '250', app]);
  assert.strictEqual(r.values['max-memory'], 512 * 1024 * 1024);
  assert.strictEqual(r.values['ready-timeout'], 3000);
  assert.strictEqual(r.values['backoff-initial'], 250);
  // A node argument may follow --node-arg as a separate word; PM2's
  // --node-args / --interpreter-args is one string of them.
  r = cli.parse(['--node-arg', '--inspect=0', '--node-args', '--max-old-space-size=512  --trace-warnings',
    '--interpreter-args=--no-deprecation', app, '--node-arg', 'x']);
  assert.deepStrictEqual(r.values['node-arg'], ['--inspect=0', '--max-old-space-size=512', '--trace-warnings', '--no-deprecation']);
  assert.deepStrictEqual(r.appArgs, ['--node-arg', 'x']);
  // PM2's switches set ours, unless ours is given too.
  r = cli.parse(['--wait-ready', '--no-autorestart', app]);
  assert.strictEqual(r.values.readiness, 'message');
  assert.strictEqual(r.values.restart, 'never');
  r = cli.parse(['--readiness', 'listening', '--wait-ready', '--no-autorestart', '--restart=on-failure', app]);
  assert.strictEqual(r.values.readiness, 'listening');
  assert.strictEqual(r.values.restart, 'on-failure');
  assert.strictEqual(cli.parse([app]).values.readiness, undefined);
  r = cli.parse([path.join(FIXTURES, 'cli-app')]);
  assert.strictEqual(r.app, app, 'resolved the way `node cli-app` would');
});

test('a PM2 ecosystem file: its app, its keys as options, the command line winning', () => {
  const dir = path.join(FIXTURES, 'ecosystem');
  const eco = path.join(dir, 'ecosystem.config.js');
  let r = cli.parse([eco]);
  assert.strictEqual(r.app, path.join(FIXTURES, 'cli-app.js'), 'relative to its cwd, relative to the file');
  assert.deepStrictEqual(r.appArgs, ['one', '--two']);
  assert.deepStrictEqual({ ...r.values }, {
    cwd: FIXTURES, name: 'api', workers: 2, 'min-uptime': 2000, 'max-restarts': 5, 'backoff-initial': 250, 'max-memory': 512 * 1024 * 1024,
    'ready-timeout': 9000, 'kill-timeout': 2000, 'stop-exit-codes': [3],
    'node-arg': ['--max-old-space-size=100', '--no-deprecation'],
    env: [['EXTRA', 'from-ecosystem'], ['NUMBER', '7']],
  });
  assert.deepStrictEqual(r.warnings, ['ecosystem.config.js: ignored (no equivalent here): watch, cron_restart']);
  // The command line wins; arguments after the file replace its args.
  r = cli.parse(['-i', '3', '--node-arg=--trace-warnings', '--max-restarts', '1', eco, 'x']);
  assert.strictEqual(r.values.workers, 3);
  assert.strictEqual(r.values['max-restarts'], 1);
  assert.deepStrictEqual(r.values['node-arg'], ['--trace-warnings']);
  assert.strictEqual(r.values['min-uptime'], 2000);
  assert.deepStrictEqual(r.appArgs, ['x']);
  // Several apps: --only picks one. Its relative paths are its cwd's, and
  // the cwd is the file's.
  const json = path.join(dir, 'apps.json');
  assert.throws(() => cli.parse([json]),
    /apps\.json describes 3 apps \(web, bad, fork\); rcluster runs one: pick it with --only <name>/);
  r = cli.parse(['--only', 'web', json]);
  assert.strictEqual(r.app, path.join(FIXTURES, 'cli-app.js'));
  assert.strictEqual(r.values.cwd, FIXTURES);
  assert.strictEqual(r.values.workers, require('os').availableParallelism());
  assert.strictEqual(r.values.restart, 'never');
  assert.strictEqual(r.values.readiness, 'message');
  assert.deepStrictEqual(r.values['node-arg'], ['--trace-warnings']);
  assert.strictEqual(r.values.output, path.join(FIXTURES, 'logs', 'web.out.log'));
  assert.strictEqual(r.values.error, path.join(FIXTURES, 'logs', 'web.err.log'));
  assert.deepStrictEqual(r.warnings, []);
  r = cli.parse(['--only', 'web', '--log-dir', dir, json]);
  assert.strictEqual(r.values.output, undefined, '--log-dir replaces the file\'s log files');
  assert.strictEqual(r.values['log-dir'], dir);
  assert.throws(() => cli.parse(['--only', 'bad', json]), /apps\.json: instances must be an integer from 1 to 1024, got 'lots'/);
  assert.throws(() => cli.parse(['--only', 'nope', json]), /apps\.json has no app named 'nope' \(apps: web, bad, fork\)/);
  assert.deepStrictEqual(cli.parse(['--only', 'fork', json]).warnings,
    ["apps.json: ignored (no equivalent here): exec_mode 'fork' (rcluster runs cluster mode)"]);
  assert.throws(() => cli.parse(['--only', 'web', path.join(FIXTURES, 'cli-app.js')]), /--only picks an app of an ecosystem file/);
  // --cwd and --stop-exit-codes on the command line.
  r = cli.parse(['--cwd', dir, '--stop-exit-codes', '0, 3,143', path.join(FIXTURES, 'cli-app.js')]);
  assert.strictEqual(r.values.cwd, dir);
  assert.deepStrictEqual(r.values['stop-exit-codes'], [0, 3, 143]);
  assert.throws(() => cli.parse(['--cwd', path.join(dir, 'nope'), eco]), /--cwd: no such directory/);
  assert.throws(() => cli.parse(['--stop-exit-codes', '1,x', eco]), /--stop-exit-codes must be exit codes \(0-255\) separated by commas, got '1,x'/);
});

test('--version', () => {
  const r = runSync(['--version']);
  assert.strictEqual(r.code, 0);
  assert.match(r.stdout, /^rcluster \d+\.\d+\.\d+/);
});
