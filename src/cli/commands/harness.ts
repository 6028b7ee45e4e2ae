import { spawn } from 'node:child_process';
import { join } from 'node:path';
import type { Command } from 'commander';
import { packageRoot } from '../../util/package-root.js';
import type { CliContext } from '../context.js';

/**
 * `silo sim` and `silo bench` run the simulator and the benchmarks
 * (sim/run.ts, bench/run.ts) in a child node process, so their heavy imports
 * and their event-loop load stay out of the CLI process; arguments and the
 * exit code pass through unchanged (docs/sim.md, docs/benchmarks.md).
 */
export function registerHarnessCommands(program: Command, ctx: CliContext): void {
  for (const [name, script, description] of [
    ['sim', 'sim/run.ts', 'run a simulation scenario (sim/scenarios/*.toml); same as `npm run sim --`'],
    ['bench', 'bench/run.ts', 'run a benchmark (convergence, takeover); same as `npm run bench --`'],
  ] as const) {
    program
      .command(name)
      .description(description)
      .allowUnknownOption(true)
      .helpOption(false)
      .argument('[args...]', 'passed through')
      .action(async (args: string[]) => {
        ctx.exitCode = await runScript(join(packageRoot(), script), args);
      });
  }
}

function runScript(script: string, args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', script, ...args], {
      stdio: 'inherit',
      // sim/ and bench/ ship beside src/ and run from the package root.
      cwd: packageRoot(),
    });
    child.once('error', reject);
    child.once('exit', (code, signal) => resolve(code ?? (signal ? 1 : 0)));
  });
}
