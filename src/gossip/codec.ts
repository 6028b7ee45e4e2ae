import { Packr, Unpackr } from 'msgpackr';
import { DOC_NAMES, type DocName } from '../state/names.js';

/**
 * msgpack as docs/protocol.md defines it: plain maps, arrays, strings,
 * numbers and bin; no msgpackr records or structured clones. Decoding
 * refuses records too, so a peer cannot plant record definitions that
 * would change how later messages decode. 64-bit integers decode as
 * numbers (msgpackr itself writes large integers as float64; other
 * encoders may use uint64, which must not turn into a BigInt).
 */
const packr = new Packr({ useRecords: false });
const unpackr = new Unpackr({ useRecords: false, int64AsType: 'number' });

export function packMessage(value: unknown): Uint8Array {
  return packr.pack(value);
}

/** Decodes exactly one msgpack value spanning all of `bytes`; throws on anything else. */
export function unpackMessage(bytes: Uint8Array): unknown {
  return unpackr.unpack(bytes);
}

/** A plain object (msgpack map) rather than an array, bytes, Date or extension value. */
export function isPlainRecord(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== 'object') return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

export function isUint32(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= 0xffffffff;
}

/** A non-negative integer that a double holds exactly. */
export function isSafeNonNegativeInt(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/** A document digest on the wire is a short string (cluster-state.ts makes 16 hex digits); longer is hostile. */
export const MAX_DIGEST_LENGTH = 128;

/**
 * The `{enrollment, workloads, observed}` digest map that heartbeats and
 * SWIM probes carry (docs/protocol.md): every document's digest, each a
 * string of at most MAX_DIGEST_LENGTH. Returns the checked map or why not.
 */
export function decodeDocDigests(value: unknown): Record<DocName, string> | string {
  if (!isPlainRecord(value)) return 'digests is not a map';
  const checked = {} as Record<DocName, string>;
  for (const doc of DOC_NAMES) {
    const digest = value[doc];
    if (typeof digest !== 'string' || digest.length > MAX_DIGEST_LENGTH) {
      return `digest of ${doc} is missing or not a string`;
    }
    checked[doc] = digest;
  }
  return checked;
}
