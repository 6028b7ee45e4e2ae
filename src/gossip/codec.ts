import { Packr, Unpackr } from 'msgpackr';

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
