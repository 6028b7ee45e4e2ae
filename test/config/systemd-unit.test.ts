import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { main } from '../../src/cli/main.js';
import { loadAgentConfig } from '../../src/config/load.js';

const UNIT = fileURLToPath(new URL('../../config/examples/systemd/silo-agent.service', import.meta.url));

/** `Key=value` lines of a unit file, by key (a key may repeat). */
function unitEntries(text: string): Map<string, string[]> {
  const entries = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const match = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (!match) continue;
    const [, key, value] = match as unknown as [string, string, string];
    entries.set(key, [...(entries.get(key) ?? []), value]);
  }
  return entries;
}

describe('the example systemd unit (config/examples/systemd)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'silo-unit-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const unit = unitEntries(readFileSync(UNIT, 'utf8'));

  test('ExecStart is a silo command this CLI knows, with a --config it reads', async () => {
    const [execStart] = unit.get('ExecStart') ?? [];
    assert.ok(execStart, 'ExecStart is set');
    const [binary, ...args] = execStart.split(/\s+/);
    assert.match(binary ?? '', /\/silo$/);
    assert.deepEqual(args.slice(0, 2), ['agent', '--config']);
    // The same command line, pointed at a file that does not exist: the CLI accepts the command and
    // flag and fails on the file (exit 3, naming it), not on usage (exit 2).
    const missing = join(dir, 'absent.toml');
    const errors: string[] = [];
    const code = await main(
      ['node', 'silo', ...args.slice(0, 2), missing],
      { out: () => undefined, err: (text) => errors.push(text), isTTY: false },
      {},
    );
    assert.equal(code, 3, errors.join(''));
    assert.match(errors.join(''), /absent\.toml/);
  });

  test('every Environment= setting is a valid SILO_ override', () => {
    const config = join(dir, 'agent.toml');
    writeFileSync(config, 'org = "acme"\n[node]\nid = "node-1"\n');
    const env: Record<string, string> = {};
    for (const value of unit.get('Environment') ?? []) {
      const [name, ...rest] = value.split('=');
      assert.match(name ?? '', /^SILO_[A-Z_]+$/);
      env[name as string] = rest.join('=');
    }
    assert.ok(Object.keys(env).length > 0);
    assert.equal(loadAgentConfig(config, env).log.pretty, 'never');
  });

  test('a configuration error is not restarted in a loop', () => {
    assert.deepEqual(unit.get('RestartPreventExitStatus'), ['3']);
    assert.deepEqual(unit.get('KillSignal'), ['SIGTERM']);
  });
});
