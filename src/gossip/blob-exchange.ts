import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Stream } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import * as lp from 'it-length-prefixed';
import type { Logger } from 'pino';
import type { Counter, Registry } from 'prom-client';
import { counterIn } from '../util/metrics.js';
import { SiloError, type SiloErrorCode } from '../util/silo-error.js';
import { isPlainRecord, packMessage, unpackMessage } from './codec.js';
import type { GossipNode } from './node.js';
import { asBytes } from './single-frame.js';

/**
 * Content-addressed file transfer between peers, used for images
 * (`/silo/image/1`) and STATE_DIRECTORY snapshots (`/silo/scratch/1`).
 * docs/protocol.md, "Blob exchange", is the normative description:
 *
 *   client → server  lp(msgpack {v: 1, digest: "sha256:<hex>"})
 *   server → client  lp(msgpack {v: 1, ok: true, size}) then lp(raw chunk)* totalling `size`
 *                 or lp(msgpack {v: 1, ok: false, code, message})
 *
 * The client writes to `<dest>.partial`, checks length and sha256 against the
 * requested digest, fsyncs, and only then renames into place: a file at
 * `dest` is always complete and verified.
 */

export const DIGEST_PATTERN = /^sha256:[0-9a-f]{64}$/;
const CHUNK_BYTES = 64 * 1024;
const HEADER_MAX_BYTES = 4096;

export type BlobErrorCode = 'not-found' | 'too-large' | 'digest-mismatch' | 'malformed' | 'timeout' | 'error';

/** What each wire code means to the rest of silo (src/util/silo-error.ts). */
const BLOB_ERROR_CODES: Record<BlobErrorCode, SiloErrorCode> = {
  'not-found': 'not_found',
  'too-large': 'too_large',
  'digest-mismatch': 'digest_mismatch',
  malformed: 'malformed',
  timeout: 'timeout',
  error: 'internal',
};

/** `wireCode` is the code as the protocol spells it (docs/protocol.md); `code` silo's own. */
export class BlobFetchError extends SiloError {
  constructor(
    readonly wireCode: BlobErrorCode,
    message: string,
  ) {
    super(BLOB_ERROR_CODES[wireCode], message);
  }
}

/** What a server offers for a digest: its size and a way to read it, or null when it has none. */
export type BlobSource = (
  digest: string,
) => Promise<{ size: number; read: () => AsyncIterable<Uint8Array> } | null>;

/** A BlobSource over files: `pathOf` maps a digest to a local file (or null). */
export function fileBlobSource(pathOf: (digest: string) => string | null): BlobSource {
  return async (digest) => {
    const path = pathOf(digest);
    if (path === null) return null;
    try {
      const info = await stat(path);
      if (!info.isFile()) return null;
      return { size: info.size, read: () => createReadStream(path, { highWaterMark: CHUNK_BYTES }) };
    } catch {
      return null;
    }
  };
}

export interface BlobExchangeOptions {
  node: GossipNode;
  protocol: string;
  source: BlobSource;
  logger: Logger;
  registry: Registry;
  /** Largest blob this node accepts, bytes. */
  maxBytes?: number;
  timeoutMs?: number;
}

const metricsByRegistry = new WeakMap<
  Registry,
  { transfers: Counter<'protocol' | 'direction' | 'result'>; bytes: Counter<'protocol' | 'direction'> }
>();

function metricsFor(registry: Registry) {
  let metrics = metricsByRegistry.get(registry);
  if (!metrics) {
    metrics = {
      transfers: counterIn(registry, {
        name: 'silo_blob_transfers_total',
        help: 'Blob (image, snapshot) transfers by protocol, direction and result',
        labelNames: ['protocol', 'direction', 'result'],
      }),
      bytes: counterIn(registry, {
        name: 'silo_blob_bytes_total',
        help: 'Blob payload bytes by protocol and direction',
        labelNames: ['protocol', 'direction'],
      }),
    };
    metricsByRegistry.set(registry, metrics);
  }
  return metrics;
}

export class BlobExchange {
  private readonly node: GossipNode;
  private readonly protocol: string;
  private readonly source: BlobSource;
  private readonly logger: Logger;
  private readonly maxBytes: number;
  private readonly timeoutMs: number;
  private readonly metrics: ReturnType<typeof metricsFor>;

  constructor(options: BlobExchangeOptions) {
    this.node = options.node;
    this.protocol = options.protocol;
    this.source = options.source;
    this.logger = options.logger.child({ component: 'blob', protocol: options.protocol });
    this.maxBytes = options.maxBytes ?? 4 * 1024 * 1024 * 1024;
    this.timeoutMs = options.timeoutMs ?? 300_000;
    this.metrics = metricsFor(options.registry);
  }

  async start(): Promise<void> {
    await this.node.handle(this.protocol, ({ stream }) => {
      this.serve(stream).catch((err: unknown) => {
        this.logger.warn({ err }, 'serving a blob failed');
        stream.abort(err instanceof Error ? err : new Error(String(err)));
      });
    });
  }

  async stop(): Promise<void> {
    await this.node.unhandle(this.protocol).catch(() => undefined);
  }

  /** Fetches `digest` from `peerId` into `dest` (verified); returns the size. */
  async fetch(peerId: string, digest: string, dest: string): Promise<number> {
    if (!DIGEST_PATTERN.test(digest)) throw new BlobFetchError('malformed', `not a digest: ${digest}`);
    const signal = AbortSignal.timeout(this.timeoutMs);
    const partial = `${dest}.partial`;
    let stream: Stream | undefined;
    try {
      stream = await this.node.dialProtocol(peerIdFromString(peerId), this.protocol, { signal });
      await stream.sink([lp.encode.single(packMessage({ v: 1, digest })).subarray()]);
      const frames = lp.decode(asBytes(stream.source), {
        maxDataLength: Math.max(CHUNK_BYTES, HEADER_MAX_BYTES),
      });
      const iterator = frames[Symbol.asyncIterator]();
      const first = await iterator.next();
      if (first.done) throw new BlobFetchError('malformed', 'peer closed the stream without a header');
      const size = this.parseHeader(first.value.subarray(), digest);
      await mkdir(dirname(dest), { recursive: true });
      const file = await open(partial, 'w', 0o600);
      const hash = createHash('sha256');
      let received = 0;
      try {
        while (received < size) {
          if (signal.aborted) throw new BlobFetchError('timeout', `fetching ${digest} timed out`);
          const next = await iterator.next();
          if (next.done)
            throw new BlobFetchError('malformed', `stream ended after ${received} of ${size} bytes`);
          const chunk = next.value.subarray();
          received += chunk.byteLength;
          if (received > size)
            throw new BlobFetchError('malformed', `peer sent more than the announced ${size} bytes`);
          hash.update(chunk);
          await file.write(chunk);
        }
        await file.sync();
      } finally {
        await file.close();
      }
      const actual = `sha256:${hash.digest('hex')}`;
      if (actual !== digest)
        throw new BlobFetchError('digest-mismatch', `peer sent ${actual}, requested ${digest}`);
      await rename(partial, dest);
      this.metrics.transfers.inc({ protocol: this.protocol, direction: 'in', result: 'ok' });
      this.metrics.bytes.inc({ protocol: this.protocol, direction: 'in' }, size);
      await stream.close().catch(() => undefined);
      return size;
    } catch (err) {
      await rm(partial, { force: true });
      stream?.abort(err instanceof Error ? err : new Error(String(err)));
      const failure =
        err instanceof BlobFetchError
          ? err
          : signal.aborted
            ? new BlobFetchError('timeout', `fetching ${digest} from ${peerId} timed out`)
            : new BlobFetchError(
                'error',
                `fetching ${digest} from ${peerId} failed: ${(err as Error).message}`,
              );
      this.metrics.transfers.inc({ protocol: this.protocol, direction: 'in', result: failure.wireCode });
      throw failure;
    }
  }

  private parseHeader(bytes: Uint8Array, digest: string): number {
    let header: unknown;
    try {
      header = unpackMessage(bytes);
    } catch {
      throw new BlobFetchError('malformed', 'undecodable header');
    }
    if (!isPlainRecord(header) || header.v !== 1)
      throw new BlobFetchError('malformed', 'header is not a v1 header');
    if (header.ok !== true) {
      const code = header.code === 'not-found' ? 'not-found' : 'error';
      throw new BlobFetchError(code, `peer has no ${digest}: ${String(header.message ?? header.code)}`);
    }
    const size = header.size;
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
      throw new BlobFetchError('malformed', 'header size is not a non-negative integer');
    }
    if (size > this.maxBytes)
      throw new BlobFetchError('too-large', `${digest} is ${size} bytes, limit ${this.maxBytes}`);
    return size;
  }

  private async serve(stream: Stream): Promise<void> {
    const frames = lp.decode(asBytes(stream.source), { maxDataLength: HEADER_MAX_BYTES });
    const first = await frames[Symbol.asyncIterator]().next();
    let request: unknown;
    try {
      request = first.done ? undefined : unpackMessage(first.value.subarray());
    } catch {
      request = undefined;
    }
    const digest = isPlainRecord(request) && request.v === 1 ? request.digest : undefined;
    const reply = (header: Record<string, unknown>) =>
      lp.encode.single(packMessage({ v: 1, ...header })).subarray();
    if (typeof digest !== 'string' || !DIGEST_PATTERN.test(digest)) {
      await stream.sink([reply({ ok: false, code: 'malformed', message: 'request needs {v: 1, digest}' })]);
      this.metrics.transfers.inc({ protocol: this.protocol, direction: 'out', result: 'malformed' });
      return;
    }
    const blob = await this.source(digest);
    if (!blob) {
      await stream.sink([reply({ ok: false, code: 'not-found', message: `no ${digest} here` })]);
      this.metrics.transfers.inc({ protocol: this.protocol, direction: 'out', result: 'not-found' });
      return;
    }
    const { protocol, metrics } = this;
    async function* body(): AsyncGenerator<Uint8Array> {
      yield reply({ ok: true, size: blob!.size });
      for await (const chunk of blob!.read()) {
        for (let offset = 0; offset < chunk.byteLength; offset += CHUNK_BYTES) {
          const part = chunk.subarray(offset, offset + CHUNK_BYTES);
          metrics.bytes.inc({ protocol, direction: 'out' }, part.byteLength);
          yield lp.encode.single(part).subarray();
        }
      }
    }
    await stream.sink(body());
    this.metrics.transfers.inc({ protocol: this.protocol, direction: 'out', result: 'ok' });
  }
}
