import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CliContext } from '../../src/cli/context.js';
import { buildProgram, COMMAND_MODULE_OF, registrarsFor } from '../../src/cli/main.js';

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
    assert.equal((await registrarsFor(['--json', 'nodes'])).length, 1);
  });
});
