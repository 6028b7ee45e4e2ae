import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { COMMAND_MODULE_OF, main } from '../../src/cli/main.js';

/** What `silo <args>` prints on stdout, and its exit code and stderr. */
async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(['node', 'silo', ...args], {
    out: (t) => {
      out += t;
    },
    err: (t) => {
      err += t;
    },
    isTTY: false,
  });
  return { code, out, err };
}

const dir = mkdtempSync(join(tmpdir(), 'silo-completion-'));
after(() => rmSync(dir, { recursive: true, force: true }));

describe('silo completion', () => {
  let script = '';

  /** The completions bash offers for the words typed (the last one being completed). */
  function complete(words: string[], cwd = dir): string[] {
    const quoted = words.map((w) => `'${w}'`).join(' ');
    const res = spawnSync(
      'bash',
      [
        '-c',
        `${script}\nCOMP_WORDS=(${quoted}); COMP_CWORD=${words.length - 1}; _silo_complete; printf '%s\\n' "\${COMPREPLY[@]}"`,
      ],
      { cwd, encoding: 'utf8' },
    );
    assert.equal(res.status, 0, res.stderr);
    return res.stdout
      .split('\n')
      .filter((line) => line !== '')
      .sort();
  }

  test('bash: a script bash accepts, covering every command', async () => {
    const res = await run(['completion', 'bash']);
    assert.equal(res.code, 0, res.err);
    script = res.out;
    const syntax = spawnSync('bash', ['-n'], { input: script, encoding: 'utf8' });
    assert.equal(syntax.status, 0, syntax.stderr);
    assert.deepEqual(complete(['silo', '']), [...Object.keys(COMMAND_MODULE_OF)].sort());
  });

  test('bash: subcommands, then options after "-", then files where arguments go', () => {
    assert.deepEqual(complete(['silo', 'c']), ['ca', 'completion']);
    assert.deepEqual(complete(['silo', 'ca', '']), ['revoke', 'sign', 'witnesses']);
    assert.deepEqual(complete(['silo', 'ca', 'witnesses', 's']), ['set', 'show', 'submit']);
    assert.deepEqual(complete(['silo', 'apply', '--im']), ['--image']);
    assert.deepEqual(complete(['silo', '--json', 'nodes', '--s']), ['--socket']);
    writeFileSync(join(dir, 'web.toml'), 'name = "web"\n');
    assert.deepEqual(complete(['silo', 'apply', 'we']), ['web.toml']);
    assert.deepEqual(
      complete(['silo', 'nosuch', '--']),
      ['--help', '--version'],
      'an unknown word is skipped',
    );
  });

  test('zsh: the bash function through bashcompinit', async () => {
    const res = await run(['completion', 'zsh']);
    assert.equal(res.code, 0, res.err);
    assert.match(res.out, /^autoload -U \+X bashcompinit && bashcompinit$/m);
    assert.match(res.out, /^complete -F _silo_complete silo$/m);
  });

  test('an unknown shell is a usage error naming the ones there are', async () => {
    const res = await run(['completion', 'fish']);
    assert.equal(res.code, 2);
    assert.match(res.err, /expected one of bash, zsh/);
  });
});
