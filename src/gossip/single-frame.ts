import type { Stream } from '@libp2p/interface';
import * as lp from 'it-length-prefixed';
import { unpackMessage } from './codec.js';

/** A libp2p stream's chunks (Uint8ArrayList or Uint8Array) as plain byte arrays. */
export async function* asBytes(
  source: AsyncIterable<{ subarray(): Uint8Array }>,
): AsyncGenerator<Uint8Array> {
  for await (const chunk of source) yield chunk.subarray();
}

/**
 * The one length-prefixed msgpack frame the other side sends, read to the
 * end of its write side: a stream whose remote end is left unread never
 * closes, and libp2p's per-connection stream limit then refuses every later
 * one. Fails (with `fail(reason)`) on a second frame, on no frame, on a frame
 * over `maxBytes`, and when `signal` aborts.
 */
export async function readOnlyFrame(
  stream: Stream,
  signal: AbortSignal,
  maxBytes: number,
  fail: (reason: string) => Error,
): Promise<unknown> {
  const read = (async () => {
    let frame: Uint8Array | undefined;
    for await (const chunk of lp.decode(asBytes(stream.source), { maxDataLength: maxBytes })) {
      if (frame !== undefined) throw fail('more than one frame on the stream');
      frame = chunk.subarray();
    }
    if (frame === undefined) throw fail('stream ended without a frame');
    return unpackMessage(frame);
  })();
  const aborted = new Promise<never>((_, reject) => {
    const timedOut = () => reject(fail('timed out'));
    if (signal.aborted) timedOut();
    signal.addEventListener('abort', timedOut, { once: true });
  });
  read.catch(() => undefined);
  aborted.catch(() => undefined);
  return Promise.race([read, aborted]);
}
