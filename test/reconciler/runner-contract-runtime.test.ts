import { RuntimeRunner } from '../../src/reconciler/service-runner.js';
import { makeHarness } from './helpers.js';
import { runnerContract } from './runner-contract.js';

/** The real runner: processes from the signed toolbox image, unsandboxed (the sandbox has its own tests). */
runnerContract('RuntimeRunner (real processes)', async (t) => {
  const h = await makeHarness(t);
  return {
    runner: new RuntimeRunner(h.runtime),
    spec: (name, revision) => h.spec({ name, command: 'bin/forever.sh', args: [name], revision }),
    stateDir: (name) => h.serviceDir(name, 'state'),
    crash: (name) => {
      const pid = h.runtime.status(name)?.pid ?? null;
      if (pid === null) throw new Error(`${name} has no process to kill`);
      process.kill(pid, 'SIGKILL');
    },
    processAlive: (name) => {
      const pid = h.runtime.status(name)?.pid ?? null;
      if (pid === null) return false;
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    },
    close: () => h.runtime.stopAll('contract over'),
  };
});
