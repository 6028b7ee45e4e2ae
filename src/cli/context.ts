import { type Command, Option } from 'commander';
import { ApiClient, type ConnectionFlags, connectionFrom } from './api-client.js';

/** Where the CLI writes; tests hand in their own. */
export interface CliIo {
  out(text: string): void;
  err(text: string): void;
  /** stdout is a terminal (tables may be redrawn, progress is shown on stderr). */
  isTTY: boolean;
}

const epipeHandled = new WeakSet<NodeJS.WriteStream>();

export function processIo(): CliIo {
  // A reader that went away (`silo ... | head`) ends the output, not the
  // process with a stack trace: stop quietly, as other Unix tools do.
  for (const stream of [process.stdout, process.stderr]) {
    if (epipeHandled.has(stream)) continue;
    epipeHandled.add(stream);
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
      throw err;
    });
  }
  return {
    out: (text) => process.stdout.write(text),
    err: (text) => process.stderr.write(text),
    isTTY: process.stdout.isTTY === true,
  };
}

/** What every command gets: its output streams, the environment, and where to leave its exit code. */
export class CliContext {
  exitCode = 0;

  constructor(
    readonly io: CliIo,
    readonly env: NodeJS.ProcessEnv,
  ) {}

  /** Prints `json` (one document) with --json, else the human text. */
  print(options: { json?: boolean }, json: unknown, human: () => string): void {
    if (options.json) this.io.out(`${JSON.stringify(json, null, 2)}\n`);
    else {
      const text = human();
      if (text.length > 0) this.io.out(text.endsWith('\n') ? text : `${text}\n`);
    }
  }

  /** A note for the operator: stderr, so stdout stays machine-readable. */
  note(text: string): void {
    this.io.err(`${text}\n`);
  }

  async client(flags: ConnectionFlags): Promise<ApiClient> {
    return new ApiClient(await connectionFrom(flags, this.env));
  }
}

export interface JsonFlag {
  json?: boolean;
}

export function withJson(command: Command): Command {
  return command.option('--json', 'print one JSON document on stdout instead of text');
}

/** --socket / --url / --token-file for commands that talk to an agent. */
export function withConnection(command: Command): Command {
  return command
    .option(
      '--socket <path>',
      'control API socket of the agent (default: $SILO_SOCKET or /var/lib/silo/silo.sock)',
    )
    .addOption(
      new Option('--url <url>', 'control API over loopback TCP, e.g. http://127.0.0.1:7947').conflicts(
        'socket',
      ),
    )
    .option('--token-file <file>', 'bearer token for --url');
}
