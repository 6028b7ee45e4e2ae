import { Command, CommanderError } from 'commander';
import { registerAgentCommand } from './commands/agent.js';
import { registerApplyCommands } from './commands/apply.js';
import { registerCaCommands } from './commands/ca.js';
import { registerDemoCommand } from './commands/demo.js';
import { registerDrainCommands } from './commands/drain.js';
import { registerHarnessCommands } from './commands/harness.js';
import { registerImageCommands } from './commands/image.js';
import { registerLogsCommand } from './commands/logs.js';
import { registerNodeCommands } from './commands/node.js';
import { registerOrgCommands } from './commands/org.js';
import { registerQueryCommands } from './commands/query.js';
import { CliContext, type CliIo, processIo } from './context.js';
import { EXIT, exitCodeOf, messageOf } from './errors.js';

/**
 * With --json an error is one JSON document on stderr, `{"error": {"message", "exitCode"}}`, so that a
 * script that asked for JSON can parse failures too (docs/cli.md). Arguments after `--` are not options.
 */
function wantsJson(argv: readonly string[]): boolean {
  const end = argv.indexOf('--');
  return (end < 0 ? argv : argv.slice(0, end)).includes('--json');
}

function errorLine(json: boolean, message: string, exitCode: number): string {
  return json ? `${JSON.stringify({ error: { message, exitCode } })}\n` : `silo: ${message}\n`;
}

export function buildProgram(ctx: CliContext, json = false): Command {
  const program = new Command('silo');
  program
    .description('silo: cluster state, enrollment and services of a self-managing fleet')
    .version('0.1.0')
    // Settings are inherited by every subcommand created after this point.
    .exitOverride()
    .configureOutput({
      writeOut: (text) => ctx.io.out(text),
      writeErr: (text) => ctx.io.err(text),
      outputError: (text, write) => {
        const message = text.replace(/^error: /, '');
        write(json ? errorLine(true, message.trim(), EXIT.usage) : `silo: ${message}`);
      },
    })
    .showHelpAfterError(json ? false : '(add --help for usage)')
    .showSuggestionAfterError(true);
  registerOrgCommands(program, ctx);
  registerNodeCommands(program, ctx);
  registerCaCommands(program, ctx);
  registerAgentCommand(program, ctx);
  registerApplyCommands(program, ctx);
  registerQueryCommands(program, ctx);
  registerDrainCommands(program, ctx);
  registerLogsCommand(program, ctx);
  registerImageCommands(program, ctx);
  registerDemoCommand(program, ctx);
  registerHarnessCommands(program, ctx);
  // Commands with subcommands (org, node, ca, image) print their help and exit 2 when called bare.
  return program;
}

/**
 * Runs the `silo` command line (argv as in process.argv) and returns the
 * exit code (docs/cli.md): 0 ok, 1 failure, 2 usage, 3 config/input,
 * 4 agent unreachable, 5 not found, 6 unauthorized.
 */
export async function main(
  argv: string[],
  io: CliIo = processIo(),
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  const ctx = new CliContext(io, env);
  const json = wantsJson(argv.slice(2));
  const program = buildProgram(ctx, json);
  try {
    await program.parseAsync(argv);
    return ctx.exitCode;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander already printed its message (through outputError) or the help;
      // --help and --version exit 0, everything else it raises is a usage error.
      return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
    }
    const exitCode = exitCodeOf(err);
    io.err(errorLine(json, messageOf(err), exitCode));
    if (env.SILO_DEBUG === '1' && err instanceof Error && err.stack) io.err(`${err.stack}\n`);
    return exitCode;
  }
}
