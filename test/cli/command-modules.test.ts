import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Command } from 'commander';
import { CliContext } from '../../src/cli/context.js';
import { EXAMPLES } from '../../src/cli/help.js';
import { buildProgram, COMMAND_MODULE_OF, main, registrarsFor } from '../../src/cli/main.js';

const quietIo = { out: () => undefined, err: () => undefined, isTTY: false };

describe('command modules load on demand', () => {
  test('every top-level command is mapped to the one module that registers it', async () => {
    const all = buildProgram(new CliContext(quietIo, {}), false, await registrarsFor([]));
    const names = all.commands.map((command) => command.name()).sort();
    assert.deepEqual(names, Object.keys(COMMAND_MODULE_OF).sort());
    for (const name of names) {
      const only = buildProgram(new CliContext(quietIo, {}), false, await registrarsFor([name, '--json']));
      assert.ok(
        only.commands.some((command) => command.name() === name),
        `loading only ${COMMAND_MODULE_OF[name]} registers "${name}"`,
      );
      assert.ok(only.commands.length < names.length, `"${name}" loads one module, not all`);
    }
  });

  test('no command, an option first, or an unknown command load them all', async () => {
    const count = (await registrarsFor([])).length;
    assert.ok(count > 5);
    assert.equal((await registrarsFor(['--help'])).length, count);
    assert.equal((await registrarsFor(['nods'])).length, count);
    for (const inherited of ['constructor', '__proto__', 'toString']) {
      assert.equal((await registrarsFor([inherited])).length, count, inherited);
      const errors: string[] = [];
      const code = await main(['node', 'silo', inherited], { ...quietIo, err: (t) => errors.push(t) }, {});
      assert.equal(code, 2, `silo ${inherited}: ${errors.join('')}`);
      assert.match(errors.join(''), /unknown command/);
    }
    assert.equal((await registrarsFor(['--json', 'nodes'])).length, 1);
  });

  test('--version alone loads no command module and still prints the version', async () => {
    assert.equal((await registrarsFor(['--version'])).length, 0);
    assert.equal((await registrarsFor(['-V'])).length, 0);
    // After a command it is that command's (unknown) option: the command's module loads.
    assert.equal((await registrarsFor(['nodes', '--version'])).length, 1);
    for (const flag of ['--version', '-V']) {
      let out = '';
      const code = await main(['node', 'silo', flag], { ...quietIo, out: (t) => (out += t) }, {});
      assert.equal(code, 0);
      assert.equal(out, '0.1.0\n');
    }
  });

  test('--help marks required options and ends with examples of real commands', async () => {
    const program = buildProgram(new CliContext(quietIo, {}), false, await registrarsFor([]));
    const find = (path: string) =>
      path
        .split(' ')
        .reduce<Command | undefined>((at, name) => at?.commands.find((c) => c.name() === name), program);
    for (const [path, examples] of Object.entries(EXAMPLES)) {
      assert.ok(find(path), `"${path}" is a command`);
      for (const example of examples) assert.match(example, new RegExp(`(^|\\s)silo ${path}( |$)`), example);
    }
    const help = find('org init')?.helpInformation() ?? '';
    assert.match(help, /--name <org> +org name: lowercase letters, digits, "-" \(required\)/);
    assert.doesNotMatch(help, /--cidr.*\(required\)/);
    let out = '';
    const code = await main(
      ['node', 'silo', 'org', 'init', '--help'],
      { ...quietIo, out: (t) => (out += t) },
      {},
    );
    assert.equal(code, 0);
    assert.match(out, /Examples:\n {2}silo org init --dir/);
  });
});
