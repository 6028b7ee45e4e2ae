import type { IncomingMessage } from 'node:http';
import { type Command, InvalidArgumentError } from 'commander';
import type { CliContext } from '../context.js';
import { withConnection, withJson } from '../context.js';
import { CliError, EXIT } from '../errors.js';
import { type ServerEvent, SseReader } from '../sse.js';

interface EventsFlags {
  json?: boolean;
  count?: number;
  socket?: string;
  url?: string;
  tokenFile?: string;
}

function eventCount(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < 1)
    throw new InvalidArgumentError('expected a whole number of events, at least 1');
  return n;
}

/** `silo events`: the agent's event stream (GET /v1/events), a line per event. */
export function registerEventsCommand(program: Command, ctx: CliContext): void {
  withConnection(
    withJson(
      program
        .command('events')
        .description("what this agent sees happen: document updates and members' liveness, as it happens")
        .option('-n, --count <n>', 'stop after this many events (the first, hello, included)', eventCount),
    ),
  ).action(async (flags: EventsFlags) => {
    const client = await ctx.client(flags);
    const res = await client.open('/v1/events');
    const ended = await printEvents(ctx, res, flags);
    if (ended === 'closed')
      throw new CliError('event stream ended: the agent closed it (stopping?)', EXIT.unreachable);
  });
}

/** Prints events until Ctrl-C, `--count`, or the stream's end (returned as "closed"). */
function printEvents(ctx: CliContext, res: IncomingMessage, flags: EventsFlags): Promise<'done' | 'closed'> {
  return new Promise((resolve) => {
    const reader = new SseReader();
    let printed = 0;
    let finished = false;
    const finish = (how: 'done' | 'closed'): void => {
      if (finished) return;
      finished = true;
      process.off('SIGINT', stop);
      res.destroy();
      resolve(how);
    };
    const stop = (): void => finish('done');
    process.once('SIGINT', stop);
    res.on('data', (chunk: Buffer) => {
      for (const event of reader.push(chunk.toString('utf8'))) {
        if (finished) return;
        ctx.io.out(`${flags.json ? JSON.stringify(asJsonLine(event)) : describeEvent(event)}\n`);
        if (flags.count !== undefined && ++printed >= flags.count) finish('done');
      }
    });
    res.on('end', () => finish('closed'));
    res.on('error', () => finish('closed'));
  });
}

function asJsonLine(event: ServerEvent): Record<string, unknown> {
  const data = event.data !== null && typeof event.data === 'object' ? event.data : { value: event.raw };
  return { event: event.event, ...data };
}

/** One human line: local time, the event, what it says. */
export function describeEvent(event: ServerEvent): string {
  const d = (event.data ?? {}) as Record<string, unknown>;
  const at = typeof d.at === 'number' ? new Date(d.at) : new Date();
  const time = at.toISOString().slice(11, 23);
  const text = (value: unknown) => (typeof value === 'string' ? value : JSON.stringify(value));
  switch (event.event) {
    case 'hello': {
      const digests = Object.entries((d.digests ?? {}) as Record<string, unknown>)
        .map(([doc, digest]) => `${doc}=${text(digest)}`)
        .join(' ');
      return `${time} hello     ${text(d.nodeId)} (${digests})`;
    }
    case 'state':
      return `${time} state     ${text(d.doc)} now ${text(d.digest)} (${text(d.origin)})`;
    case 'liveness': {
      const was = d.previous === undefined || d.previous === null ? 'new' : `was ${text(d.previous)}`;
      const rejoined = d.rejoined === true ? ', restarted' : '';
      return `${time} liveness  ${text(d.nodeId)} ${text(d.state)} (${was}${rejoined})`;
    }
    default:
      return `${time} ${event.event.padEnd(9)} ${event.raw ?? JSON.stringify(event.data)}`;
  }
}
