import { open, stat } from 'node:fs/promises';
import type { ServerResponse } from 'node:http';
import { join } from 'node:path';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Liveness } from '../../gossip/index.js';
import { serviceDirs } from '../../reconciler/scratch.js';
import { Origin } from '../../state/names.js';
import type { RouteContext } from './context.js';
import { notFound } from './errors.js';
import { LogsQuerySchema, parseInput, WorkloadParams } from './validate.js';

const KEEPALIVE_MS = 15_000;
const FOLLOW_POLL_MS = 300;
/** A tail reads at most this much of the end of the log file. */
const TAIL_WINDOW_BYTES = 1024 * 1024;

/** GET /v1/events (server-sent events) and GET /v1/logs/:workload (tail, optionally followed). */
export function registerStreamRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const { agent } = ctx;

  app.get('/v1/events', (request, reply) => {
    const res = openStream(request, reply, ctx, 'text/event-stream');
    const send = (event: string, data: unknown): void => {
      res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    };
    send('hello', { nodeId: agent.nodeId, digests: agent.state.digestsAll(), at: Date.now() });
    const offs: Array<() => void> = [];
    offs.push(
      agent.state.onChange((doc, _update, origin) => {
        send('state', { doc, digest: agent.state.digest(doc), origin: originName(origin), at: Date.now() });
      }),
    );
    for (const state of ['alive', 'suspect', 'dead'] as const satisfies readonly Liveness[]) {
      offs.push(
        agent.gossip.detector.on(state, (event) => {
          send('liveness', { ...event, state, at: Date.now() });
        }),
      );
    }
    // A comment line now and then keeps proxies and idle timeouts from closing a quiet stream.
    const keepalive = setInterval(() => res.write(': keep-alive\n\n'), KEEPALIVE_MS);
    res.on('close', () => {
      clearInterval(keepalive);
      for (const off of offs) off();
    });
  });

  app.get('/v1/logs/:workload', async (request, reply) => {
    const { workload } = parseInput(WorkloadParams, request.params, 'workload name');
    const query = parseInput(LogsQuerySchema, request.query, 'logs query');
    const file = join(serviceDirs(ctx.dataDir, workload).logs, 'current');
    const info = await stat(file).catch(() => null);
    if (!info?.isFile()) {
      const spec = agent.workloads.get(workload);
      if (!spec) throw notFound(`unknown workload "${workload}"`);
      const holders = [...agent.observed.listAll()]
        .filter(([, statuses]) => statuses.has(workload))
        .map(([nodeId]) => nodeId)
        .filter((nodeId) => nodeId !== agent.nodeId);
      const where = holders.length > 0 ? `; ask ${holders.join(' or ')}` : '';
      throw notFound(`no log of "${workload}" on node ${agent.nodeId}${where}`);
    }
    const { text, end } = await tail(file, query.lines);
    if (!query.follow) {
      reply.type('text/plain; charset=utf-8');
      return text;
    }
    const res = openStream(request, reply, ctx, 'text/plain; charset=utf-8');
    res.write(text);
    follow(file, end, info.ino, res);
  });
}

/** Hijacks the reply for a long-lived response that the API ends on close. */
function openStream(
  request: FastifyRequest,
  reply: FastifyReply,
  ctx: RouteContext,
  contentType: string,
): ServerResponse {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    'content-type': contentType,
    'cache-control': 'no-cache',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  ctx.streams.add(res);
  res.on('close', () => ctx.streams.delete(res));
  request.raw.on('close', () => res.end());
  return res;
}

function originName(origin: unknown): string {
  for (const [name, value] of Object.entries(Origin)) if (value === origin) return name;
  return 'other';
}

/** The last `lines` lines of `file` (from its last TAIL_WINDOW_BYTES) and the offset read up to. */
async function tail(file: string, lines: number): Promise<{ text: string; end: number }> {
  const handle = await open(file, 'r');
  try {
    const { size } = await handle.stat();
    const start = Math.max(0, size - TAIL_WINDOW_BYTES);
    const buffer = Buffer.alloc(size - start);
    await handle.read(buffer, 0, buffer.length, start);
    if (lines === 0) return { text: '', end: size };
    const all = buffer.toString('utf8').split('\n');
    // A trailing newline leaves an empty last element; it is not a line.
    const complete = all[all.length - 1] === '' ? all.slice(0, -1) : all;
    const kept = complete.slice(-lines);
    return { text: kept.length > 0 ? `${kept.join('\n')}\n` : '', end: size };
  } finally {
    await handle.close();
  }
}

/**
 * Streams what is appended to `file` after `offset`. Rotation renames
 * `current` and starts a new one: a new inode or a shrunk file means start
 * again from the beginning of the new file.
 */
function follow(file: string, offset: number, inode: number, res: ServerResponse): void {
  let position = offset;
  let ino = inode;
  let busy = false;
  const timer = setInterval(async () => {
    if (busy || res.writableEnded) return;
    busy = true;
    try {
      const info = await stat(file).catch(() => null);
      if (!info) return;
      if (info.ino !== ino || info.size < position) {
        ino = info.ino;
        position = 0;
      }
      if (info.size <= position) return;
      const handle = await open(file, 'r');
      try {
        const buffer = Buffer.alloc(Math.min(info.size - position, TAIL_WINDOW_BYTES));
        const { bytesRead } = await handle.read(buffer, 0, buffer.length, position);
        position += bytesRead;
        if (!res.writableEnded) res.write(buffer.subarray(0, bytesRead));
      } finally {
        await handle.close();
      }
    } finally {
      busy = false;
    }
  }, FOLLOW_POLL_MS);
  res.on('close', () => clearInterval(timer));
}
