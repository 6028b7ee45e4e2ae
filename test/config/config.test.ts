import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { parseDuration } from '../../src/config/duration.js';
import { ConfigError, envOverrides, loadAgentConfig } from '../../src/config/load.js';

const dir = mkdtempSync(join(tmpdir(), 'silo-config-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function writeConfig(name: string, text: string): string {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}

function expectConfigError(fn: () => unknown, ...fragments: string[]): ConfigError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    for (const fragment of fragments)
      assert.match(err.message, new RegExp(fragment.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
    return err;
  }
  assert.fail('expected a ConfigError');
}

describe('agent config', () => {
  test('the shipped config/agent.toml is valid and matches the built-in defaults', () => {
    const shipped = loadAgentConfig('config/agent.toml', {});
    const minimal = loadAgentConfig(
      writeConfig('minimal.toml', 'org = "example"\n[node]\nid = "node-1"\n'),
      {},
    );
    assert.deepEqual(shipped, minimal);
    assert.equal(shipped.gossip.dead_after, 10_000);
    assert.equal(shipped.gossip.heartbeat, 1000);
    assert.equal(shipped.services.fence_after, 6000);
    assert.equal(shipped.services.lease, 'swim');
  });

  test('api.dashboard is off by default and needs api.tcp', () => {
    const unset = writeConfig('dash-unset.toml', 'org = "o"\n[node]\nid = "n"\n');
    assert.equal(loadAgentConfig(unset, {}).api.dashboard, false);
    const on = writeConfig(
      'dash-on.toml',
      'org = "o"\n[node]\nid = "n"\n[api]\ntcp = "127.0.0.1:7947"\ntoken_file = "/t"\ndashboard = true\n',
    );
    assert.equal(loadAgentConfig(on, {}).api.dashboard, true);
    const alone = writeConfig('dash-alone.toml', 'org = "o"\n[node]\nid = "n"\n[api]\ndashboard = true\n');
    expectConfigError(() => loadAgentConfig(alone, {}), 'api.dashboard', 'needs api.tcp');
    expectConfigError(() => loadAgentConfig(unset, { SILO_API_DASHBOARD: 'true' }), 'api.dashboard');
  });

  test('[provisioner] is off by default and validates its listen address', () => {
    const unset = loadAgentConfig(writeConfig('prov-unset.toml', 'org = "o"\n[node]\nid = "n"\n'), {});
    assert.equal(unset.provisioner.org_dir, undefined);
    assert.equal(unset.provisioner.listen, '0.0.0.0:7948');
    const on = writeConfig(
      'prov-on.toml',
      'org = "o"\n[node]\nid = "n"\n[provisioner]\norg_dir = "/etc/silo/org"\nlisten = "127.0.0.1:7000"\n',
    );
    assert.deepEqual(loadAgentConfig(on, {}).provisioner, {
      org_dir: '/etc/silo/org',
      listen: '127.0.0.1:7000',
      seeds: [],
    });
    const bad = writeConfig('prov-bad.toml', 'org = "o"\n[node]\nid = "n"\n[provisioner]\nlisten = "7948"\n');
    expectConfigError(() => loadAgentConfig(bad, {}), 'provisioner.listen');
    const typo = writeConfig('prov-typo.toml', 'org = "o"\n[node]\nid = "n"\n[provisioner]\norgdir = "x"\n');
    expectConfigError(() => loadAgentConfig(typo, {}), 'provisioner');
  });

  test('services.lease picks the lease source and rejects unknown ones', () => {
    const ok = writeConfig(
      'lease.toml',
      'org = "o"\n[node]\nid = "n"\n[services]\nlease = "local-detector"\n',
    );
    assert.equal(loadAgentConfig(ok, {}).services.lease, 'local-detector');
    const bad = writeConfig('lease-bad.toml', 'org = "o"\n[node]\nid = "n"\n[services]\nlease = "vibes"\n');
    expectConfigError(() => loadAgentConfig(bad, {}), 'services.lease');
    // Unset: SWIM when SWIM membership runs (the default), acked heartbeats when it is turned off.
    const unset = writeConfig('lease-unset.toml', 'org = "o"\n[node]\nid = "n"\n');
    assert.equal(loadAgentConfig(unset, {}).services.lease, 'swim');
    const noSwim = writeConfig(
      'lease-no-swim.toml',
      'org = "o"\n[node]\nid = "n"\n[membership]\nswim = false\n',
    );
    assert.equal(loadAgentConfig(noSwim, {}).services.lease, 'acked-heartbeats');
  });

  test('environment overrides win over the file and are validated', () => {
    const file = writeConfig('env.toml', 'org = "example"\n[node]\nid = "node-1"\n');
    const config = loadAgentConfig(file, {
      SILO_GOSSIP_DEAD_AFTER: '20s',
      SILO_LOG_LEVEL: 'debug',
      SILO_ORG: 'other',
    });
    assert.equal(config.gossip.dead_after, 20_000);
    assert.equal(config.log.level, 'debug');
    assert.equal(config.org, 'other');
    expectConfigError(
      () => loadAgentConfig(file, { SILO_GOSSIP_HEARTBEAT: 'often' }),
      file,
      'gossip.heartbeat',
      'duration',
    );
  });

  test('variables outside the config namespace are ignored', () => {
    assert.deepEqual(envOverrides({ SILO_CONFIG: '/x', PATH: '/bin', SILO_NOSUCH_KEY: '1' }), {});
  });

  test('errors name the file, the key and the problem', () => {
    const file = writeConfig(
      'bad.toml',
      'org = "Bad Org"\n[node]\nid = "node-1"\nbogus = 1\n[gossip]\nheartbeat = "5s"\n',
    );
    const err = expectConfigError(
      () => loadAgentConfig(file, {}),
      file,
      'org:',
      'node: unknown key(s) "bogus"',
    );
    assert.ok(
      err.problems.some((p) => p.startsWith('gossip.heartbeat: must be less than gossip.suspect_after')),
    );
  });

  test('timing rules: fence_after < dead_after, suspect_after < dead_after', () => {
    const file = writeConfig(
      'timing.toml',
      'org = "o"\n[node]\nid = "n"\n[gossip]\ndead_after = "5s"\n[services]\nfence_after = "5s"\n',
    );
    expectConfigError(
      () => loadAgentConfig(file, {}),
      'services.fence_after: must be less than gossip.dead_after',
    );
  });

  test('services.max_stop_timeout: 30 s by default, at least 1 s, and with fence_after within the 10 min lease cap', () => {
    const base = 'org = "o"\n[node]\nid = "n"\n';
    assert.equal(loadAgentConfig(writeConfig('s0.toml', base), {}).services.max_stop_timeout, 30_000);
    expectConfigError(
      () => loadAgentConfig(writeConfig('s1.toml', `${base}[services]\nmax_stop_timeout = "500ms"\n`), {}),
      'services.max_stop_timeout: must be at least 1s',
    );
    expectConfigError(
      () => loadAgentConfig(writeConfig('s2.toml', `${base}[services]\nmax_stop_timeout = "10m"\n`), {}),
      'services.max_stop_timeout: with fence_after it makes leases longer than 10 minutes',
    );
  });

  test('membership: SWIM on by default; probe_timeout must be below probe_interval; the environment can turn it off', () => {
    const base = 'org = "o"\n[node]\nid = "n"\n';
    const defaults = loadAgentConfig(writeConfig('m0.toml', base), {});
    assert.deepEqual(defaults.membership, {
      swim: true,
      probe_interval: 1000,
      probe_timeout: 500,
      heartbeat_interval: 10_000,
    });
    expectConfigError(
      () =>
        loadAgentConfig(
          writeConfig(
            'm6.toml',
            `${base}[gossip]\nheartbeat = "2s"\n[membership]\nheartbeat_interval = "1s"\n`,
          ),
          {},
        ),
      'membership.heartbeat_interval: must be at least gossip.heartbeat',
    );
    const off = loadAgentConfig(writeConfig('m1.toml', base), { SILO_MEMBERSHIP_SWIM: 'false' });
    assert.equal(off.membership.swim, false);
    expectConfigError(
      () => loadAgentConfig(writeConfig('m2.toml', `${base}[membership]\nprobe_timeout = "1s"\n`), {}),
      'membership.probe_timeout: must be less than membership.probe_interval',
    );
    expectConfigError(
      () => loadAgentConfig(writeConfig('m3.toml', `${base}[membership]\nswim = "yes"\n`), {}),
      'membership.swim',
    );
    const swimLease = loadAgentConfig(writeConfig('m4.toml', `${base}[services]\nlease = "swim"\n`), {});
    assert.equal(swimLease.services.lease, 'swim');
    expectConfigError(
      () =>
        loadAgentConfig(
          writeConfig('m5.toml', `${base}[services]\nlease = "swim"\n[membership]\nswim = false\n`),
          {},
        ),
      'services.lease: "swim" reads SWIM membership: set membership.swim = true',
    );
  });

  test('a misspelt key or section gets a "did you mean"; a TOML error gives its line and column', () => {
    const typo = writeConfig(
      'typo.toml',
      'org = "o"\n[node]\nid = "n"\n[gosip]\nheartbeat = "1s"\n[gossip]\ndead_aftr = "20s"\n[membership]\nprobe-interval = "2s"\nzzz = 1\n',
    );
    const err = expectConfigError(
      () => loadAgentConfig(typo, {}),
      '(top level): unknown key(s) "gosip" (did you mean "gossip"?)',
      'gossip: unknown key(s) "dead_aftr" (did you mean "dead_after"?)',
    );
    // Nothing close: no guess.
    assert.ok(
      err.problems.includes(
        'membership: unknown key(s) "probe-interval" (did you mean "probe_interval"?), "zzz"',
      ),
      err.problems.join('\n'),
    );
    const broken = writeConfig('broken-line.toml', 'org = "o"\n[node]\nid = "n"\nlabels = [1,\n');
    const syntax = expectConfigError(() => loadAgentConfig(broken, {}), broken);
    assert.match(syntax.message, /TOML syntax error at line \d+, column \d+: /);
  });

  test('a bad value or unknown key from the environment is blamed on the variable, not the file', () => {
    const file = writeConfig('env.toml', 'org = "o"\n[node]\nid = "n"\n');
    expectConfigError(
      () => loadAgentConfig(file, { SILO_GOSSIP_DEAD_AFTER: 'soon', SILO_GOSSIP_DEAD_AFTR: '5s' }),
      'gossip.dead_after: ',
      '(set by $SILO_GOSSIP_DEAD_AFTER)',
      'gossip: unknown key(s) "dead_aftr" (did you mean "dead_after"?) (set by $SILO_GOSSIP_DEAD_AFTR)',
    );
    const fromFile = expectConfigError(
      () =>
        loadAgentConfig(
          writeConfig('env2.toml', 'org = "o"\n[node]\nid = "n"\n[gossip]\ndead_after = "soon"\n'),
          {},
        ),
      'gossip.dead_after: ',
    );
    assert.doesNotMatch(fromFile.message, /set by/);
  });

  test('missing file, TOML syntax error and missing required keys', () => {
    expectConfigError(
      () => loadAgentConfig(join(dir, 'nope.toml'), {}),
      'nope.toml',
      'cannot read file (ENOENT)',
    );
    const broken = writeConfig('broken.toml', 'org = "x\n');
    expectConfigError(() => loadAgentConfig(broken, {}), broken, 'TOML syntax error');
    const empty = writeConfig('empty.toml', '');
    expectConfigError(() => loadAgentConfig(empty, {}), 'org:', 'node:');
  });

  test('api.tcp requires a token file; wireguard mode requires an interface', () => {
    const file = writeConfig(
      'api.toml',
      'org = "o"\n[node]\nid = "n"\n[api]\ntcp = "127.0.0.1:7947"\n[overlay]\nmode = "wireguard"\n',
    );
    expectConfigError(
      () => loadAgentConfig(file, {}),
      'api.token_file: required',
      'overlay.interface: required',
    );
  });

  test('durations', () => {
    assert.equal(parseDuration('500ms'), 500);
    assert.equal(parseDuration('1.5s'), 1500);
    assert.equal(parseDuration('2m'), 120_000);
    assert.equal(parseDuration(250), 250);
    assert.throws(() => parseDuration('-1s'), /expected a duration/);
    assert.throws(() => parseDuration('10 parsecs'), /expected a duration/);
    assert.throws(() => parseDuration(-5), /expected a duration/);
  });
});
