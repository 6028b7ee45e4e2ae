import type { IncomingMessage } from 'node:http';
import { type Command, InvalidArgumentError } from 'commander';
import type { ApiClient, ConnectionFlags } from '../api-client.js';
import { type CliContext, type JsonFlag, withConnection, withJson } from '../context.js';
import { CliError, EXIT, type ExitCode } from '../errors.js';

/** The control API's bound on `lines` (and `/silo/logs/1`'s). */
const MAX_LINES = 100_000;
/** The trailer a followed log ends with (src/agent/api/routes-logs.ts): "ok" or "<code>: <message>". */
const LOG_END_TRAILER = 'x-silo-log-end';

interface LogsFlags extends JsonFlag, ConnectionFlags {
  follow?: boolean;
  lines: number;
  tail?: number;
  node?: string;
}

function lineCount(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n > MAX_LINES)
    throw new InvalidArgumentError(`expected a whole number of lines from 0 to ${MAX_LINES}`);
  return n;
}

export function registerLogsCommand(program: Command, ctx: CliContext): void {
  withConnection(
    withJson(
      program
        .command('logs')
        .description("a service's stdout/stderr (LOGS_DIRECTORY/current) from the node that holds it")
        .argument('<workload>', 'workload name')
        .option('-f, --follow', 'keep printing what the service writes (Ctrl-C stops)')
        .option('-n, --lines <n>', 'lines from the end to show first', lineCount, 100)
        .option('--tail <n>', 'same as --lines', lineCount)
        .option('--node <id>', "read this node's log instead of the holder's"),
    ),
  ).action(async (workload: string, flags: LogsFlags) => {
    if (flags.follow && flags.json) throw new CliError('--json cannot be combined with --follow', EXIT.usage);
    const lines = flags.tail ?? flags.lines;
    const client = await ctx.client(flags);
    const node = flags.node !== undefined ? `&node=${encodeURIComponent(flags.node)}` : '';
    const path = `/v1/logs/${encodeURIComponent(workload)}?lines=${lines}${node}`;
    if (!flags.follow) {
      const text = await client.request<string>('GET', path, { timeoutMs: 60_000 });
      if (flags.json)
        ctx.print(
          flags,
          { workload, lines: text === '' ? [] : text.replace(/\n$/, '').split('\n') },
          () => '',
        );
      else ctx.io.out(text);
      return;
    }
    // A workload that moves (drain, takeover) ends the stream with "moved: ...": follow it to its new holder.
    let moved = false;
    for (;;) {
      const res = moved
        ? await openAfterMove(client, `${path}&follow=1`)
        : await client.open(`${path}&follow=1`);
      const ended = await followOnce(ctx, res);
      if (ended === null || ended === 'ok') return;
      if (!ended.startsWith('moved:') || flags.node !== undefined) throw endError(ended);
      ctx.io.err(`silo: ${ended.slice('moved:'.length).trim()}; following it there\n`);
      moved = true;
    }
  });
}

/** How long a follow waits for the new holder's log to appear after a move. */
const MOVE_LOG_WAIT_MS = 30_000;

/**
 * The new holder reports `running` as its process starts; its log file may
 * appear a moment later (404 until then), so a follow across a move retries
 * "not found" for a while before it gives up.
 */
async function openAfterMove(client: ApiClient, path: string): Promise<IncomingMessage> {
  const giveUpAt = Date.now() + MOVE_LOG_WAIT_MS;
  for (;;) {
    try {
      return await client.open(path);
    } catch (err) {
      if (!(err instanceof CliError) || err.exitCode !== EXIT.notFound || Date.now() >= giveUpAt) throw err;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
}

/** Prints one followed stream until it ends; returns its end trailer, or null when Ctrl-C ended it. */
function followOnce(ctx: CliContext, res: IncomingMessage): Promise<string | null> {
  return new Promise<string | null>((resolve) => {
    const finish = (end: string | null): void => {
      process.off('SIGINT', stop);
      resolve(end);
    };
    // Ctrl-C: closing the response tells the agent (and through it the holder) to stop.
    const stop = (): void => {
      res.destroy();
      finish(null);
    };
    process.once('SIGINT', stop);
    res.on('data', (chunk: Buffer) => ctx.io.out(chunk.toString('utf8')));
    res.on('end', () =>
      finish(String(res.trailers[LOG_END_TRAILER] ?? 'closed: the agent ended the stream')),
    );
    res.on('error', () => finish('unreachable: the connection to the agent broke'));
  });
}

/** A followed stream that ended by itself: the agent stopped, or the holder went away or hit a limit. */
function endError(end: string): CliError {
  const colon = end.indexOf(':');
  const code = colon > 0 ? end.slice(0, colon) : end;
  const message = colon > 0 ? end.slice(colon + 1).trim() : end;
  const exit: ExitCode = code === 'unreachable' ? EXIT.unreachable : EXIT.failure;
  return new CliError(`log stream ended: ${message}`, exit);
}
