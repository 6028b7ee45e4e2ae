import { crc32 } from 'node:zlib';
import type { DocName } from './names.js';

/**
 * Byte layouts of the lmdb store's keys and values (docs/protocol.md,
 * "Durable storage (lmdb)"). Kept apart from the store so the format can be
 * read and tested without lmdb.
 *
 * Frame (every snapshot and tail value), big-endian:
 *   u32 crc32 of bytes 4..end | u32 payload length | u64 seq | payload
 * The checksum covers length and seq too, so a flipped header bit is caught
 * as well as a flipped payload bit.
 */
export const FRAME_HEADER_BYTES = 16;
const MAX_PAYLOAD_BYTES = 0xffff_ffff;

export type DecodedFrame = { ok: true; seq: number; payload: Uint8Array } | { ok: false; reason: string };

export function encodeFrame(seq: number, payload: Uint8Array): Uint8Array {
  if (!Number.isSafeInteger(seq) || seq < 0)
    throw new RangeError(`frame seq ${seq} is not a non-negative safe integer`);
  if (payload.byteLength > MAX_PAYLOAD_BYTES)
    throw new RangeError(`frame payload of ${payload.byteLength} bytes`);
  const frame = new Uint8Array(FRAME_HEADER_BYTES + payload.byteLength);
  const view = new DataView(frame.buffer);
  view.setUint32(4, payload.byteLength);
  view.setBigUint64(8, BigInt(seq));
  frame.set(payload, FRAME_HEADER_BYTES);
  view.setUint32(0, crc32(frame.subarray(4)));
  return frame;
}

/** Verifies a frame; the returned payload is a copy, safe to keep after lmdb reuses its buffers. */
export function decodeFrame(bytes: Uint8Array): DecodedFrame {
  if (bytes.byteLength < FRAME_HEADER_BYTES) {
    return { ok: false, reason: `frame of ${bytes.byteLength} bytes is shorter than its header` };
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const stored = view.getUint32(0);
  const actual = crc32(bytes.subarray(4));
  if (stored !== actual)
    return { ok: false, reason: `checksum mismatch (stored ${hex(stored)}, computed ${hex(actual)})` };
  const length = view.getUint32(4);
  if (length !== bytes.byteLength - FRAME_HEADER_BYTES) {
    return {
      ok: false,
      reason: `length field ${length} != ${bytes.byteLength - FRAME_HEADER_BYTES} payload bytes`,
    };
  }
  const seq = view.getBigUint64(8);
  if (seq > BigInt(Number.MAX_SAFE_INTEGER)) return { ok: false, reason: `seq ${seq} out of range` };
  return { ok: true, seq: Number(seq), payload: new Uint8Array(bytes.subarray(FRAME_HEADER_BYTES)) };
}

const encoder = new TextEncoder();
// Not fatal: a reason cut at 64 KiB may end inside a character.
const decoder = new TextDecoder();

/** Key of the snapshot of `doc` in db `snapshots`: the document name in UTF-8. */
export function snapshotKey(doc: DocName): Uint8Array {
  return encoder.encode(doc);
}

/** Key of tail entry `seq` of `doc` in db `tail`: UTF-8 name, 0x00, u64 seq. Sorts by doc, then seq. */
export function tailKey(doc: DocName, seq: number): Uint8Array {
  const name = encoder.encode(doc);
  const key = new Uint8Array(name.byteLength + 9);
  key.set(name, 0);
  new DataView(key.buffer).setBigUint64(name.byteLength + 1, BigInt(seq));
  return key;
}

/** The seq of a tail key of `doc`, or null if the key is not one (wrong length or prefix). */
export function parseTailSeq(doc: DocName, key: Uint8Array): number | null {
  const name = encoder.encode(doc);
  if (key.byteLength !== name.byteLength + 9 || key[name.byteLength] !== 0) return null;
  for (let i = 0; i < name.byteLength; i++) if (key[i] !== name[i]) return null;
  const seq = new DataView(key.buffer, key.byteOffset, key.byteLength).getBigUint64(name.byteLength + 1);
  return seq > BigInt(Number.MAX_SAFE_INTEGER) ? null : Number(seq);
}

/** [start, end) covering every key that starts with `doc` 0x00 (and nothing of another document). */
export function docRange(doc: DocName): { start: Uint8Array; end: Uint8Array } {
  const name = encoder.encode(doc);
  const start = new Uint8Array(name.byteLength + 1);
  start.set(name, 0);
  const end = new Uint8Array(start);
  end[name.byteLength] = 1;
  return { start, end };
}

export type QuarantineKind = 'snapshot' | 'tail';

/**
 * Key in db `quarantine`: UTF-8 doc name, 0x00, kind byte ('s' snapshot,
 * 't' tail), u64 seq from the original key (0 for a snapshot), u64
 * quarantine time in ms since the epoch.
 */
export function quarantineKey(doc: DocName, kind: QuarantineKind, seq: number, at: number): Uint8Array {
  const name = encoder.encode(doc);
  const key = new Uint8Array(name.byteLength + 18);
  key.set(name, 0);
  key[name.byteLength + 1] = kind === 'snapshot' ? 0x73 : 0x74;
  const view = new DataView(key.buffer);
  view.setBigUint64(name.byteLength + 2, BigInt(seq));
  view.setBigUint64(name.byteLength + 10, BigInt(at));
  return key;
}

/** Value in db `quarantine`: u16 reason length, UTF-8 reason, the original bytes unchanged. */
export function encodeQuarantined(reason: string, original: Uint8Array): Uint8Array {
  const text = encoder.encode(reason).subarray(0, 0xffff);
  const value = new Uint8Array(2 + text.byteLength + original.byteLength);
  new DataView(value.buffer).setUint16(0, text.byteLength);
  value.set(text, 2);
  value.set(original, 2 + text.byteLength);
  return value;
}

export function decodeQuarantined(value: Uint8Array): { reason: string; original: Uint8Array } {
  const length = new DataView(value.buffer, value.byteOffset, value.byteLength).getUint16(0);
  return {
    reason: decoder.decode(value.subarray(2, 2 + length)),
    original: new Uint8Array(value.subarray(2 + length)),
  };
}

function hex(n: number): string {
  return n.toString(16).padStart(8, '0');
}
