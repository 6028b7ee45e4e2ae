import { stat } from 'node:fs/promises';
import type { ServerResponse } from 'node:http';
import type { FastifyInstance } from 'fastify';
import { LogFetchError, type LogRequest } from '../../gossip/index.js';
import type { ObservedStatus } from '../../state/schemas.js';
import { SiloError } from '../../util/silo-error.js';
import { readServiceLog, serviceLogFile } from '../log-files.js';
import type { NodeAgent } from '../node-agent.js';
import type { RouteContext } from './context.js';
import { ApiError, notFound } from './errors.js';
import { openStream } from './routes-streams.js';
import { LogsQuerySchema, parseInput, WorkloadParams } from './validate.js';

/**
 * GET /v1/logs/:workload: the service's log from the node that holds it.
 * This node's own files are read directly; another node's come over
 * `/silo/logs/1` (src/gossip/log-exchange.ts). A followed stream that ends
 * for any reason but the client leaving says why in the `x-silo-log-end`
 * trailer.
 */

/** Phases in which a node holds a workload (as in views.ts), best first. */
const HOLDING = ['running', 'starting', 'pulling', 'stopping'] as const;
export const LOG_END_TRAILER = 'x-silo-log-end';

type Source = { kind: 'local'; nodeId: string } | { kind: 'remote'; nodeId: string; peerId: string };

export function registerLogRoutes(app: FastifyInstance, ctx: RouteContext): void {
  app.get('/v1/logs/:workload', async (request, reply) => {
    const { workload } = parseInput(WorkloadParams, request.params, 'workload name');
    const query = parseInput(LogsQuerySchema, request.query, 'logs query');
    const logRequest: LogRequest = { workload, lines: query.lines, follow: query.follow };
    const source = await chooseSource(ctx, workload, query.node);
    const controller = new AbortController();
    const chunks = await openLog(ctx, source, logRequest, controller.signal);
    reply.header('x-silo-log-node', source.nodeId);
    if (!query.follow) {
      const parts: Buffer[] = [];
      try {
        for await (const chunk of chunks) parts.push(Buffer.from(chunk));
      } catch (err) {
        throw apiErrorOf(err, source, workload);
      }
      reply.type('text/plain; charset=utf-8');
      return Buffer.concat(parts);
    }
    const res = openStream(request, reply, ctx, 'text/plain; charset=utf-8', {
      trailer: LOG_END_TRAILER,
      'x-silo-log-node': source.nodeId,
    });
    // Following the holder (no --node): when the workload moves, the old node's file gets no more lines,
    // so the stream ends saying where it went, and the CLI follows it there.
    const unwatch =
      query.node === undefined
        ? watchMove(ctx.agent, workload, source.nodeId, (end) => controller.abort(new LogStreamEnd(end)))
        : () => undefined;
    res.on('close', () => {
      unwatch();
      controller.abort();
    });
    void pump(chunks, res, controller.signal, (err) => apiErrorOf(err, source, workload)).finally(unwatch);
  });
}

/** Why a followed stream was ended by this agent (the trailer's value), not by the client leaving. */
class LogStreamEnd extends SiloError<'stream_ended'> {
  constructor(message: string, options?: ErrorOptions) {
    super('stream_ended', message, options);
  }
}

/**
 * Calls `end` once `from` no longer holds `workload` and another node runs it
 * (`moved: <workload> moved from <from> to <to>`), or once the workload is
 * deleted (`deleted: ...`). A holder that stopped with nobody holding yet
 * (a takeover in progress) is waited for. A log followed without a spec
 * (what a deleted service left on disk) is not ended as "deleted" by the
 * first unrelated change of the documents: only a spec that existed when the
 * follow began can be deleted.
 */
function watchMove(
  agent: NodeAgent,
  workload: string,
  from: string,
  end: (reason: string) => void,
): () => void {
  const hadSpec = agent.workloads.get(workload) !== undefined;
  const check = (): void => {
    if (!agent.workloads.get(workload)) {
      if (!hadSpec) return;
      stop();
      end(`deleted: "${workload}" was deleted`);
      return;
    }
    const statuses = agent.observed.listAll();
    const own = statuses.get(from)?.get(workload);
    if (own !== undefined && (HOLDING as readonly string[]).includes(own.phase)) return;
    const next = [...statuses]
      // Running, not merely pulling or starting: its log file exists by then, so the follow can open it.
      .filter(([nodeId, byName]) => nodeId !== from && byName.get(workload)?.phase === 'running')
      .map(([nodeId]) => nodeId)[0];
    if (next === undefined) return;
    stop();
    end(`moved: "${workload}" moved from ${from} to ${next}`);
  };
  const offObserved = agent.observed.onChange(check);
  const offWorkloads = agent.workloads.onChange(check);
  const stop = (): void => {
    offObserved();
    offWorkloads();
  };
  return stop;
}

/** Copies `chunks` into the response until either ends; the trailer says how the log stream ended. */
async function pump(
  chunks: AsyncIterable<Uint8Array>,
  res: ServerResponse,
  signal: AbortSignal,
  toApiError: (err: unknown) => Error,
): Promise<void> {
  let end = 'ok';
  try {
    for await (const chunk of chunks) {
      if (signal.aborted || res.writableEnded) break;
      if (!res.write(chunk)) await waitDrain(res, signal);
    }
  } catch (err) {
    const apiError = toApiError(err);
    end = `${apiError instanceof ApiError ? apiError.code : 'internal'}: ${apiError.message}`;
  }
  if (signal.reason instanceof LogStreamEnd) end = signal.reason.message;
  else if (res.writableEnded || signal.aborted) return;
  if (res.writableEnded) return;
  res.addTrailers({ [LOG_END_TRAILER]: end.replace(/[\r\n]+/g, ' ') });
  res.end();
}

function waitDrain(res: ServerResponse, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('drain', done);
      res.off('close', done);
      signal.removeEventListener('abort', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
    signal.addEventListener('abort', done, { once: true });
  });
}

async function openLog(
  ctx: RouteContext,
  source: Source,
  request: LogRequest,
  signal: AbortSignal,
): Promise<AsyncIterable<Uint8Array>> {
  const { agent } = ctx;
  if (source.kind === 'local') {
    const chunks = await readServiceLog(ctx.dataDir, request, signal);
    if (chunks === null) throw notFound(`no log of "${request.workload}" on node ${agent.nodeId}`);
    return chunks;
  }
  try {
    return (await agent.gossip.logs.open(source.peerId, request, signal)).chunks;
  } catch (err) {
    throw apiErrorOf(err, source, request.workload);
  }
}

function apiErrorOf(err: unknown, source: Source, workload: string): Error {
  if (!(err instanceof LogFetchError)) return err instanceof Error ? err : new Error(String(err));
  const where = `node ${source.nodeId}`;
  switch (err.code) {
    case 'not_found':
      return new ApiError('not_found', `no log of "${workload}" on ${where}`);
    case 'busy':
      return new ApiError('busy', `${where} serves too many log streams; try again later`);
    case 'limit':
      return new ApiError('busy', `${where} ended the log stream: ${err.message}`);
    default:
      return new ApiError(
        'unreachable',
        `cannot read the log from ${where} (${err.wireCode}): ${err.message}`,
      );
  }
}

/**
 * Which node's log to read: `--node` when given; else the holder per the
 * observed document; else this node when it has the log file; else the node
 * that reported on the workload last (a stopped or failed service).
 */
async function chooseSource(ctx: RouteContext, workload: string, node: string | undefined): Promise<Source> {
  const { agent } = ctx;
  if (node !== undefined) {
    if (node === agent.nodeId) return { kind: 'local', nodeId: node };
    return remote(agent, node, `unknown node "${node}"`);
  }
  const reports = [...agent.observed.listAll()]
    .map(([nodeId, byName]) => ({ nodeId, status: byName.get(workload) }))
    .filter((r): r is { nodeId: string; status: ObservedStatus } => r.status !== undefined);
  const holders = reports
    .filter((r) => (HOLDING as readonly string[]).includes(r.status.phase))
    .sort((a, b) => rank(a.status) - rank(b.status) || b.status.since - a.status.since);
  const holder = holders[0];
  if (holder) {
    if (holder.nodeId === agent.nodeId) return { kind: 'local', nodeId: holder.nodeId };
    return remote(agent, holder.nodeId, `holder ${holder.nodeId} of "${workload}" is not enrolled`);
  }
  const local = await stat(serviceLogFile(ctx.dataDir, workload)).catch(() => null);
  if (local?.isFile()) return { kind: 'local', nodeId: agent.nodeId };
  const latest = reports
    .filter((r) => r.nodeId !== agent.nodeId)
    .sort((a, b) => b.status.since - a.status.since)[0];
  if (latest) return remote(agent, latest.nodeId, `node ${latest.nodeId} is not enrolled`);
  if (!agent.workloads.get(workload)) throw notFound(`unknown workload "${workload}"`);
  throw new ApiError(
    'not_held',
    `"${workload}" is not running on any node and no node reported on it yet (no log to show)`,
  );
}

function rank(status: ObservedStatus): number {
  return (HOLDING as readonly string[]).indexOf(status.phase);
}

function remote(agent: NodeAgent, nodeId: string, unknown: string): Source {
  const record = agent.enrollment.get(nodeId);
  const peerId = record?.peerId ?? agent.gossip.peerIdOfNode(nodeId);
  if (peerId === undefined) throw notFound(unknown);
  return { kind: 'remote', nodeId, peerId };
}
