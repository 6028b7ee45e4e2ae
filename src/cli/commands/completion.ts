import { type Command, InvalidArgumentError } from 'commander';
import { COMPLETION_SHELLS, type CompletionShell, completionScript } from '../completion.js';
import type { CliContext } from '../context.js';

function shellName(value: string): CompletionShell {
  if (!(COMPLETION_SHELLS as readonly string[]).includes(value))
    throw new InvalidArgumentError(`expected one of ${COMPLETION_SHELLS.join(', ')}`);
  return value as CompletionShell;
}

/**
 * `silo completion <shell>`: prints a completion script for the whole
 * command tree. `build` returns the full program (every command module
 * loaded), which the lazy loading of main.ts leaves out of this one.
 */
export function registerCompletionCommand(
  program: Command,
  ctx: CliContext,
  build: () => Promise<Command>,
): void {
  program
    .command('completion')
    .description('print a shell completion script (source <(silo completion bash))')
    .argument('<shell>', COMPLETION_SHELLS.join(' or '), shellName)
    .action(async (shell: CompletionShell) => {
      ctx.io.out(completionScript(shell, await build()));
    });
}
