import { Command, CommanderError, Help } from 'commander';
import { CliContext, type CliIo, processIo } from './context.js';
import { EXIT, exitCodeOf, messageOf } from './errors.js';
import { addExamples, optionDescription } from './help.js';

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

type Registrar = (program: Command, ctx: CliContext) => void;

/**
 * The command modules, loaded on demand: a command that only talks to the
 * agent's API (`silo nodes`) need not load the CA, the image builder, the
 * demo or the agent itself. In the order `silo --help` lists them.
 */
const COMMAND_MODULES = {
  org: async () => (await import('./commands/org.js')).registerOrgCommands,
  node: async () => (await import('./commands/node.js')).registerNodeCommands,
  ca: async () => (await import('./commands/ca.js')).registerCaCommands,
  token: async () => (await import('./commands/token.js')).registerTokenCommands,
  join: async () => (await import('./commands/join.js')).registerJoinCommand,
  agent: async () => (await import('./commands/agent.js')).registerAgentCommand,
  apply: async () => (await import('./commands/apply.js')).registerApplyCommands,
  query: async () => (await import('./commands/query.js')).registerQueryCommands,
  drain: async () => (await import('./commands/drain.js')).registerDrainCommands,
  logs: async () => (await import('./commands/logs.js')).registerLogsCommand,
  events: async () => (await import('./commands/events.js')).registerEventsCommand,
  image: async () => (await import('./commands/image.js')).registerImageCommands,
  demo: async () => (await import('./commands/demo.js')).registerDemoCommand,
  harness: async () => (await import('./commands/harness.js')).registerHarnessCommands,
  completion: async (): Promise<Registrar> => {
    const { registerCompletionCommand } = await import('./commands/completion.js');
    // The script covers every command: build the full program (every module) when it is asked for.
    return (program, ctx) =>
      registerCompletionCommand(program, ctx, async () => buildProgram(ctx, false, await registrarsFor([])));
  },
} satisfies Record<string, () => Promise<Registrar>>;

type CommandModule = keyof typeof COMMAND_MODULES;

/** Top-level command → the module that registers it (test/cli checks that every command is here). */
export const COMMAND_MODULE_OF: Readonly<Record<string, CommandModule>> = {
  org: 'org',
  node: 'node',
  ca: 'ca',
  witnesses: 'ca',
  token: 'token',
  join: 'join',
  agent: 'agent',
  apply: 'apply',
  delete: 'apply',
  status: 'query',
  top: 'query',
  nodes: 'query',
  workloads: 'query',
  drain: 'drain',
  undrain: 'drain',
  logs: 'logs',
  events: 'events',
  image: 'image',
  demo: 'demo',
  sim: 'harness',
  bench: 'harness',
  completion: 'completion',
};

/**
 * The registrars a command line needs: only the named command's module,
 * or every module when no known command is named (help, a typo, which
 * needs them all for its "did you mean").
 */
export async function registrarsFor(args: readonly string[]): Promise<Registrar[]> {
  const first = args.find((arg) => !arg.startsWith('-'));
  // `silo --version` prints one line: no command module (each pulls in zod, libp2p's crypto, ...;
  // docs/cli.md "Start-up" has the figures). With a command, `--version` is that command's unknown option.
  if (first === undefined && args.some((arg) => arg === '--version' || arg === '-V')) return [];
  // Own keys only: `silo constructor` is an unknown command, not Object.prototype's.
  const only =
    first !== undefined && Object.hasOwn(COMMAND_MODULE_OF, first) ? COMMAND_MODULE_OF[first] : undefined;
  const modules = only === undefined ? (Object.keys(COMMAND_MODULES) as CommandModule[]) : [only];
  return Promise.all(modules.map((name) => COMMAND_MODULES[name]()));
}

export function buildProgram(ctx: CliContext, json: boolean, registrars: readonly Registrar[]): Command {
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
    .showSuggestionAfterError(true)
    .configureHelp({ optionDescription: (option) => optionDescription(new Help(), option) });
  for (const register of registrars) register(program, ctx);
  addExamples(program);
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
  const program = buildProgram(ctx, json, await registrarsFor(argv.slice(2)));
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
