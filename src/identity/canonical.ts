import { SiloError } from '../util/silo-error.js';
/**
 * Canonical encoding of JSON values for signing (docs/protocol.md,
 * "Enrollment records, certificates and revocations").
 *
 * A signature must cover exactly one byte string per value, whoever encodes
 * it, so the signer and every verifier (in any language) must produce the
 * same bytes. The encoding is RFC 8785 (JSON Canonicalization Scheme) applied
 * to a restricted value set:
 * - object keys sorted by UTF-16 code units, no whitespace, UTF-8 output;
 * - strings escaped as ECMAScript `JSON.stringify` does;
 * - numbers formatted as ECMAScript `Number.prototype.toString` (JSON.stringify);
 * - only plain JSON values: anything JSON would silently drop or distort
 *   (undefined, NaN, Infinity, functions, symbols, bigint, Dates, Maps, typed
 *   arrays, class instances, sparse arrays, lone surrogates, cycles) is
 *   rejected with the path of the offending value, instead of being signed as
 *   something the verifier will never see.
 */

export class CanonicalEncodingError extends SiloError<'invalid_record'> {
  constructor(
    readonly path: string,
    problem: string,
  ) {
    super('invalid_record', `cannot canonically encode ${path}: ${problem}`);
  }
}

/** Depth bound: signed records are shallow; deep nesting is a bug or an attack. */
const MAX_DEPTH = 64;

// In a `u` regex a surrogate class matches only unpaired surrogates: paired
// ones form a single code point outside the range.
const LONE_SURROGATE = /[\uD800-\uDFFF]/u;

const utf8 = new TextEncoder();

/** The canonical JSON text of `value` (throws CanonicalEncodingError). */
export function canonicalJson(value: unknown): string {
  return encode(value, '$', 0, new Set());
}

/** The canonical UTF-8 bytes of `value`: what is signed and verified. */
export function canonicalBytes(value: unknown): Uint8Array {
  return utf8.encode(canonicalJson(value));
}

function encode(value: unknown, path: string, depth: number, ancestors: Set<object>): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'boolean':
      return value ? 'true' : 'false';
    case 'number':
      if (!Number.isFinite(value)) throw new CanonicalEncodingError(path, `non-finite number ${value}`);
      // JSON.stringify(-0) is "0": the sign of zero is not representable, which is fine.
      return JSON.stringify(value);
    case 'string':
      if (LONE_SURROGATE.test(value)) {
        throw new CanonicalEncodingError(path, 'string contains a lone UTF-16 surrogate (not valid UTF-8)');
      }
      return JSON.stringify(value);
    case 'object':
      break;
    default:
      throw new CanonicalEncodingError(path, `${typeof value} is not a JSON value`);
  }
  if (depth >= MAX_DEPTH) throw new CanonicalEncodingError(path, `nested deeper than ${MAX_DEPTH} levels`);
  if (ancestors.has(value)) throw new CanonicalEncodingError(path, 'cyclic reference');
  ancestors.add(value);
  try {
    if (Array.isArray(value)) return encodeArray(value, path, depth, ancestors);
    return encodeObject(value, path, depth, ancestors);
  } finally {
    ancestors.delete(value);
  }
}

function encodeArray(value: unknown[], path: string, depth: number, ancestors: Set<object>): string {
  if (Object.getPrototypeOf(value) !== Array.prototype) {
    throw new CanonicalEncodingError(path, 'array subclass is not a plain JSON array');
  }
  const parts: string[] = [];
  for (let i = 0; i < value.length; i++) {
    if (!Object.hasOwn(value, i)) throw new CanonicalEncodingError(`${path}[${i}]`, 'sparse array hole');
    parts.push(encode(value[i], `${path}[${i}]`, depth + 1, ancestors));
  }
  return `[${parts.join(',')}]`;
}

function encodeObject(value: object, path: string, depth: number, ancestors: Set<object>): string {
  const proto: unknown = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) {
    const kind = (value as { constructor?: { name?: string } }).constructor?.name ?? 'object';
    throw new CanonicalEncodingError(path, `${kind} is not a plain JSON object`);
  }
  if (Object.getOwnPropertySymbols(value).length > 0) {
    throw new CanonicalEncodingError(path, 'object has symbol keys');
  }
  const record = value as Record<string, unknown>;
  // Default sort compares UTF-16 code units, exactly what RFC 8785 prescribes.
  const keys = Object.keys(record).sort();
  const parts: string[] = [];
  for (const key of keys) {
    const childPath = `${path}.${key}`;
    const descriptor = Object.getOwnPropertyDescriptor(record, key);
    if (descriptor?.get !== undefined || descriptor?.set !== undefined) {
      throw new CanonicalEncodingError(childPath, 'accessor property');
    }
    if (LONE_SURROGATE.test(key)) {
      throw new CanonicalEncodingError(childPath, 'key contains a lone UTF-16 surrogate (not valid UTF-8)');
    }
    parts.push(`${JSON.stringify(key)}:${encode(record[key], childPath, depth + 1, ancestors)}`);
  }
  return `{${parts.join(',')}}`;
}
