import type { Connection, Stream } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import * as lp from 'it-length-prefixed';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { counterIn, gaugeIn } from '../util/metrics.js';
import { sleep } from '../util/sleep.js';
import { isPlainRecord, unpackMessage } from './codec.js';
import {
  frame,
  LOGS_PROTOCOL,
  type LogErrorCode,
  LogFetchError,
  type LogReader,
  type LogRequest,
  parseLogRequest,
  remoteError,
} from './log-frames.js';
import type { GossipNode } from './node.js';

// The frames and errors live in log-frames.ts; the exchange's users import them from here.
export {
  LOGS_PROTOCOL,
  type LogErrorCode,
  LogFetchError,
  type LogReader,
  type LogRequest,
  MAX_LOG_LINES,
  parseLogRequest,
} from './log-frames.js';

/**
 * `/silo/logs/1`: a node reads a service's log on the node that holds it
 * (`silo logs` against any agent). docs/protocol.md, "Log exchange", is the
 * normative description:
 *
 *   client → server  lp(msgpack {v: 1, workload, lines, follow})   then the client closes its write side
 *   server → client  lp(msgpack {v: 1, ok: true})
 *                    lp(msgpack {v: 1, data: bin})* and, while following, lp(msgpack {v: 1, ping: true})
 *                    lp(msgpack {v: 1, end: true}) or lp(msgpack {v: 1, end: true, code, message})
 *                 or lp(msgpack {v: 1, ok: false, code, message})
 *
 * Every frame is bounded, the request must arrive in time, a stream is paced
 * to a byte rate and capped in total, and a node serves a bounded number of
 * streams (per peer and overall). The log files themselves are read through
 * a `LogReader` the agent hands in, so nothing here knows where they live.
 */

export interface LogLimits {
  /** Largest request frame, bytes. */
  maxRequestBytes: number;
  /** Payload bytes per data frame. */
  maxChunkBytes: number;
  /** Pace of one stream, bytes per second (the tail and what follows alike). */
  bytesPerSecond: number;
  /** Payload bytes one stream may carry; a follow that reaches it ends with code `limit`. */
  maxStreamBytes: number;
  /** Streams served at once, overall and per peer; more are refused with `busy`. */
  maxStreams: number;
  maxStreamsPerPeer: number;
  /** How long the server waits for the request, and the client for the answer's header. */
  requestTimeoutMs: number;
  /** A following server sends a ping after this much silence. */
  keepaliveMs: number;
  /** A client gives up after this much silence (no data, no ping), and a server on a client that stops reading. */
  idleTimeoutMs: number;
}

export const DEFAULT_LOG_LIMITS: LogLimits = {
  maxRequestBytes: 1024,
  maxChunkBytes: 64 * 1024,
  bytesPerSecond: 1024 * 1024,
  maxStreamBytes: 256 * 1024 * 1024,
  maxStreams: 16,
  maxStreamsPerPeer: 4,
  requestTimeoutMs: 10_000,
  keepaliveMs: 10_000,
  idleTimeoutMs: 30_000,
};

export interface LogExchangeOptions {
  node: GossipNode;
  logger: Logger;
  registry: Registry;
  /** Serves this node's logs; without it every request is answered `not-found`. */
  read?: LogReader;
  /** Only these peers may read logs (the agent: active enrolled nodes). Default: every connected peer. */
  isPeerAllowed?: (peerId: string) => boolean;
  limits?: Partial<LogLimits>;
}

/** An open log stream from a peer: its payload bytes, and a way to stop early. */
export interface LogStream {
  chunks: AsyncIterable<Uint8Array>;
  /** Ends the stream now (the server notices and stops reading). */
  close(): void;
}

type Result = 'ok' | LogErrorCode;

/** The exchange's metrics (get-or-create on the registry: several exchanges may share one). */
function metricsFor(registry: Registry) {
  return {
    requests: counterIn(registry, {
      name: 'silo_log_streams_total',
      help: 'Log streams (/silo/logs/1) by direction (in: served, out: fetched) and how they ended',
      labelNames: ['direction', 'result'],
    }),
    bytes: counterIn(registry, {
      name: 'silo_log_bytes_total',
      help: 'Log payload bytes over /silo/logs/1 by direction',
      labelNames: ['direction'],
    }),
    open: gaugeIn(registry, {
      name: 'silo_log_streams_serving',
      help: 'Log streams this node is serving right now',
    }),
  };
}

async function* asBytes(source: AsyncIterable<{ subarray(): Uint8Array }>): AsyncGenerator<Uint8Array> {
  for await (const chunk of source) yield chunk.subarray();
}

const TICK = Symbol('tick');

/** `promise`, or TICK when `ms` pass first (the promise keeps running). */
async function within<T>(promise: Promise<T>, ms: number, signal: AbortSignal): Promise<T | typeof TICK> {
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  const tick = new Promise<typeof TICK>((resolve) => {
    onAbort = () => resolve(TICK);
    timer = setTimeout(onAbort, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([promise, tick]);
  } finally {
    clearTimeout(timer);
    // Called once per frame on a long follow: listeners must not pile up on the signal.
    if (onAbort) signal.removeEventListener('abort', onAbort);
  }
}

export class LogExchange {
  private readonly node: GossipNode;
  private readonly logger: Logger;
  private readonly read: LogReader;
  private readonly isPeerAllowed: (peerId: string) => boolean;
  private readonly limits: LogLimits;
  private readonly metrics: ReturnType<typeof metricsFor>;
  /** Served streams, so that stop() ends them and the limits can count them. */
  private readonly serving = new Map<Stream, { peer: string; controller: AbortController }>();
  private started = false;

  constructor(options: LogExchangeOptions) {
    this.node = options.node;
    this.logger = options.logger.child({ component: 'logs' });
    this.read = options.read ?? (async () => null);
    this.isPeerAllowed = options.isPeerAllowed ?? (() => true);
    this.limits = { ...DEFAULT_LOG_LIMITS, ...options.limits };
    this.metrics = metricsFor(options.registry);
  }

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    await this.node.handle(
      LOGS_PROTOCOL,
      ({ stream, connection }) => {
        this.serve(stream, connection).catch((err: unknown) => {
          this.logger.debug({ err }, 'serving a log stream failed');
          stream.abort(err instanceof Error ? err : new Error(String(err)));
        });
      },
      // Our own limit answers `busy`; libp2p's per-connection one would just reset the stream.
      { maxInboundStreams: this.limits.maxStreamsPerPeer + 1 },
    );
  }

  async stop(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    await this.node.unhandle(LOGS_PROTOCOL).catch(() => undefined);
    for (const [stream, { controller }] of this.serving) {
      controller.abort();
      stream.abort(new Error('node stopping'));
    }
    this.serving.clear();
    this.metrics.open.set(0);
  }

  /**
   * Opens `request` on `peerId`. Resolves once the peer accepted it (so a
   * caller can still answer with an error), rejects with a LogFetchError.
   * `signal` ends the stream whenever it aborts.
   */
  async open(peerId: string, request: LogRequest, signal?: AbortSignal): Promise<LogStream> {
    const problem = parseLogRequest({ v: 1, ...request });
    if (typeof problem === 'string') throw new LogFetchError('malformed', `bad log request: ${problem}`);
    const { limits, metrics } = this;
    const cancel = new AbortController();
    const onAbort = (): void => cancel.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    if (signal?.aborted) cancel.abort();
    let stream: Stream;
    try {
      stream = await this.node.dialProtocol(peerIdFromString(peerId), LOGS_PROTOCOL, {
        signal: AbortSignal.any([cancel.signal, AbortSignal.timeout(limits.requestTimeoutMs)]),
      });
    } catch (err) {
      signal?.removeEventListener('abort', onAbort);
      metrics.requests.inc({ direction: 'out', result: 'unreachable' });
      throw new LogFetchError(
        'unreachable',
        `cannot open ${LOGS_PROTOCOL} to ${peerId}: ${(err as Error).message}`,
      );
    }
    /** Ends our write side (the request generator below returns). */
    const writeDone = new AbortController();
    const abort = (reason: string): void => {
      writeDone.abort();
      stream.abort(new Error(reason));
    };
    cancel.signal.addEventListener('abort', () => abort('closed by the client'), { once: true });
    const finish = (result: Result): void => {
      writeDone.abort();
      signal?.removeEventListener('abort', onAbort);
      metrics.requests.inc({ direction: 'out', result });
    };
    const frames = lp
      .decode(asBytes(stream.source), { maxDataLength: limits.maxChunkBytes + 256 })
      [Symbol.asyncIterator]();
    /** The next frame decoded, or undefined at the end of the stream; a LogFetchError on silence or garbage. */
    const next = async (timeoutMs: number, what: string): Promise<Record<string, unknown> | undefined> => {
      let result: IteratorResult<{ subarray(): Uint8Array }> | typeof TICK;
      try {
        result = await within(frames.next(), timeoutMs, cancel.signal);
      } catch (err) {
        if (cancel.signal.aborted) return undefined;
        throw new LogFetchError('unreachable', `log stream from ${peerId} broke: ${(err as Error).message}`);
      }
      if (result === TICK) {
        if (cancel.signal.aborted) return undefined;
        abort('timed out');
        throw new LogFetchError('timeout', `${peerId} sent nothing for ${timeoutMs} ms (${what})`);
      }
      if (result.done) return undefined;
      let message: unknown;
      try {
        message = unpackMessage(result.value.subarray());
      } catch {
        message = undefined;
      }
      if (!isPlainRecord(message) || message.v !== 1) {
        abort('malformed frame');
        throw new LogFetchError('malformed', `${peerId} sent an undecodable log frame`);
      }
      return message;
    };

    try {
      // The write side stays open until the client is done: its end (FIN) is
      // how the server learns that a follower went away, even when a reset
      // is lost or not noticed.
      const requestFrame = frame({ ...request });
      const closed = writeDone.signal;
      stream
        .sink(
          (async function* () {
            yield requestFrame;
            if (!closed.aborted)
              await new Promise((resolve) => closed.addEventListener('abort', resolve, { once: true }));
          })(),
        )
        .catch(() => undefined);
      const header = await next(limits.requestTimeoutMs, 'waiting for the answer');
      if (header === undefined) {
        if (cancel.signal.aborted) throw new LogFetchError('error', 'cancelled');
        throw new LogFetchError('unreachable', `${peerId} closed the log stream without an answer`);
      }
      if (header.ok !== true) throw remoteError(header, peerId);
    } catch (err) {
      abort('request failed');
      const failure =
        err instanceof LogFetchError
          ? err
          : new LogFetchError('unreachable', `log request to ${peerId} failed: ${(err as Error).message}`);
      finish(failure.wireCode);
      throw failure;
    }

    async function* chunks(): AsyncGenerator<Uint8Array> {
      let result: Result = 'ok';
      try {
        for (;;) {
          const message = await next(limits.idleTimeoutMs, 'idle');
          if (message === undefined) {
            if (cancel.signal.aborted) return;
            throw new LogFetchError('unreachable', `${peerId} ended the log stream early`);
          }
          if (message.ping === true) continue;
          if (message.end === true) {
            if (message.code !== undefined) throw remoteError(message, peerId);
            writeDone.abort();
            await stream.close().catch(() => undefined);
            return;
          }
          if (!(message.data instanceof Uint8Array)) {
            abort('malformed frame');
            throw new LogFetchError('malformed', `${peerId} sent a log frame without data`);
          }
          metrics.bytes.inc({ direction: 'in' }, message.data.byteLength);
          yield message.data;
        }
      } catch (err) {
        result = err instanceof LogFetchError ? err.wireCode : 'error';
        throw err;
      } finally {
        // A consumer that stops early (break, return) or fails ends the stream, so the server stops reading.
        if (stream.status === 'open') abort('closed by the client');
        finish(result);
      }
    }
    return { chunks: chunks(), close: () => cancel.abort() };
  }

  private async serve(stream: Stream, connection: Connection): Promise<void> {
    const { limits, metrics } = this;
    const peer = connection.remotePeer.toString();
    const refuse = async (code: LogErrorCode, message: string): Promise<void> => {
      metrics.requests.inc({ direction: 'in', result: code });
      this.logger.debug({ peer, code, message }, 'log request refused');
      // Bounded: a peer that does not read the refusal must not hold the stream open.
      const sent = stream.sink([frame({ ok: false, code, message })]);
      const outcome = await within(
        sent,
        limits.requestTimeoutMs,
        AbortSignal.timeout(limits.requestTimeoutMs),
      );
      if (outcome === TICK) stream.abort(new Error('refusal not read'));
    };
    if (!this.isPeerAllowed(peer)) return refuse('refused', 'not an enrolled node');
    const perPeer = [...this.serving.values()].filter((s) => s.peer === peer).length;
    if (this.serving.size >= limits.maxStreams || perPeer >= limits.maxStreamsPerPeer)
      return refuse('busy', 'too many log streams; try again later');

    const controller = new AbortController();
    this.serving.set(stream, { peer, controller });
    metrics.open.set(this.serving.size);
    try {
      const frames = lp
        .decode(asBytes(stream.source), { maxDataLength: limits.maxRequestBytes })
        [Symbol.asyncIterator]();
      let request: LogRequest | string;
      try {
        const first = await within(frames.next(), limits.requestTimeoutMs, controller.signal);
        if (first === TICK) return await refuse('timeout', `no request within ${limits.requestTimeoutMs} ms`);
        request = first.done ? 'no request' : parseLogRequest(unpackMessage(first.value.subarray()));
      } catch (err) {
        // An oversize length prefix or undecodable msgpack.
        request = `undecodable request (${(err as Error).message})`;
      }
      if (typeof request === 'string') return await refuse('malformed', request);
      // Whatever else the client sends is ignored. The client keeps its write
      // side open while it wants the answer, so its end (FIN) or a reset
      // means it went away, which ends the stream on our side too.
      void (async () => {
        try {
          while (!(await frames.next()).done) {
            /* drain */
          }
        } catch {
          // reset: same as the end
        }
        controller.abort();
      })();
      const source = await this.read(request, controller.signal);
      if (source === null) return await refuse('not-found', `no log of "${request.workload}" here`);
      let lastPull = Date.now();
      // A client that went away (reset) is noticed here within a second rather than at the next
      // keepalive; one that stops reading stalls our writes and loses its stream after the idle timeout.
      const watchdog = setInterval(
        () => {
          if (stream.status !== 'open') controller.abort();
          else if (Date.now() - lastPull > limits.idleTimeoutMs) {
            controller.abort();
            stream.abort(new Error('client stopped reading'));
          }
        },
        Math.min(limits.idleTimeoutMs, 1000),
      );
      const counted = { result: 'ok' as Result };
      try {
        const sending = stream.sink(
          this.body(source, request, controller.signal, counted, () => {
            lastPull = Date.now();
          }),
        );
        // After a reset, the sink may never pull our generator again and so
        // never settle: stop waiting for it once the client is known gone.
        const gone = new Promise<void>((resolve) =>
          controller.signal.addEventListener('abort', () => resolve(), { once: true }),
        );
        sending.catch(() => undefined);
        await Promise.race([sending, gone]);
        if (controller.signal.aborted && stream.status === 'open')
          stream.abort(new Error('client went away'));
      } catch (err) {
        if (!controller.signal.aborted) throw err;
        counted.result = 'unreachable';
      } finally {
        clearInterval(watchdog);
      }
      metrics.requests.inc({
        direction: 'in',
        result: controller.signal.aborted ? 'unreachable' : counted.result,
      });
    } finally {
      controller.abort();
      this.serving.delete(stream);
      metrics.open.set(this.serving.size);
    }
  }

  /** The answer's frames: header, paced and capped data with pings in between, end. */
  private async *body(
    source: AsyncIterable<Uint8Array>,
    request: LogRequest,
    signal: AbortSignal,
    counted: { result: Result },
    pulled: () => void,
  ): AsyncGenerator<Uint8Array> {
    const { limits, metrics } = this;
    const iterator = source[Symbol.asyncIterator]();
    let sent = 0;
    // Pacing: each payload byte books 1/rate seconds; a burst of one second is free.
    let bookedUntil = Date.now();
    try {
      pulled();
      yield frame({ ok: true });
      pulled();
      let pending = iterator.next();
      for (;;) {
        const result = await within(pending, limits.keepaliveMs, signal);
        if (signal.aborted) return;
        if (result === TICK) {
          if (request.follow) {
            yield frame({ ping: true });
            pulled();
          }
          continue;
        }
        if (result.done) break;
        const chunk = result.value;
        for (let offset = 0; offset < chunk.byteLength; offset += limits.maxChunkBytes) {
          const part = chunk.subarray(offset, offset + limits.maxChunkBytes);
          if (sent + part.byteLength > limits.maxStreamBytes) {
            counted.result = 'limit';
            yield frame({
              end: true,
              code: 'limit',
              message: `log stream limit of ${limits.maxStreamBytes} bytes reached`,
            });
            return;
          }
          const now = Date.now();
          bookedUntil = Math.max(bookedUntil, now) + (part.byteLength / limits.bytesPerSecond) * 1000;
          if (bookedUntil - now > 1000) await sleep(bookedUntil - now - 1000, signal);
          if (signal.aborted) return;
          sent += part.byteLength;
          metrics.bytes.inc({ direction: 'out' }, part.byteLength);
          yield frame({ data: part });
          pulled();
        }
        pending = iterator.next();
      }
      yield frame({ end: true });
    } finally {
      // The reader stops on the aborted signal; not awaited, its pending read may still be polling.
      if (!signal.aborted) void iterator.return?.()?.catch(() => undefined);
    }
  }
}
