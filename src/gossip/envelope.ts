import { crc32 } from 'node:zlib';
import { type EpochInfo, GENESIS_EPOCH } from '../state/epochs/epoch.js';
import { type DocName, isDocName } from '../state/names.js';
import { isPlainRecord, isUint32, packMessage, unpackMessage } from './codec.js';
import { decodeWireEpoch, encodeWireEpoch, type WireEpoch } from './wire-epoch.js';

/** The only envelope version this code speaks. */
export const ENVELOPE_VERSION = 1;

/** Longest `from` (node id) accepted, in UTF-16 code units. */
export const MAX_NODE_ID_LENGTH = 256;

/**
 * Room for the envelope's fields around the update. Envelopes larger than
 * `maxUpdateBytes + ENVELOPE_OVERHEAD_BYTES` are rejected before decoding.
 */
export const ENVELOPE_OVERHEAD_BYTES = 1024;

/** One document update as it travels on a document topic (docs/protocol.md, "Gossip envelope"). */
export interface Envelope {
  v: typeof ENVELOPE_VERSION;
  org: string;
  doc: DocName;
  /** The publishing node's id (its enrollment id, not its libp2p peer id). */
  from: string;
  /** A Yjs update (v1 encoding), possibly several merged. */
  update: Uint8Array;
  /** CRC-32 (IEEE, as zlib) of `update`. */
  crc: number;
  /** The epoch of the document the update belongs to (docs/epochs.md); absent on the wire: genesis. */
  epoch: EpochInfo;
}

export const ENVELOPE_REJECTIONS = [
  'malformed',
  'wrong-version',
  'wrong-org',
  'wrong-doc',
  'oversize',
  'bad-checksum',
] as const;
export type EnvelopeRejection = (typeof ENVELOPE_REJECTIONS)[number];

export type DecodedEnvelope =
  | { ok: true; envelope: Envelope }
  | { ok: false; reason: EnvelopeRejection; detail: string };

export interface EnvelopeExpectations {
  org: string;
  /** The document of the topic the envelope arrived on. */
  doc: DocName;
  /** Largest envelope accepted, in bytes. */
  maxBytes: number;
}

export function encodeEnvelope(fields: {
  org: string;
  doc: DocName;
  from: string;
  update: Uint8Array;
  epoch?: EpochInfo;
}): Uint8Array {
  const envelope: Omit<Envelope, 'epoch'> & { e?: WireEpoch } = {
    v: ENVELOPE_VERSION,
    org: fields.org,
    doc: fields.doc,
    from: fields.from,
    update: fields.update,
    crc: crc32(fields.update),
  };
  // The genesis epoch goes without the field: what agents before epochs send and read.
  if (fields.epoch !== undefined && fields.epoch.number > 0) envelope.e = encodeWireEpoch(fields.epoch);
  return packMessage(envelope);
}

function reject(reason: EnvelopeRejection, detail: string): DecodedEnvelope {
  return { ok: false, reason, detail };
}

/**
 * Decodes and checks an envelope received from the network. Never throws:
 * every defect maps to one rejection reason, checked in the order the
 * protocol lists them (size, shape, version, org, doc, checksum).
 */
export function decodeEnvelope(bytes: Uint8Array, expect: EnvelopeExpectations): DecodedEnvelope {
  if (!(bytes instanceof Uint8Array)) return reject('malformed', 'not bytes');
  if (bytes.byteLength > expect.maxBytes) {
    return reject('oversize', `${bytes.byteLength} bytes, limit ${expect.maxBytes}`);
  }
  let value: unknown;
  try {
    value = unpackMessage(bytes);
  } catch (err) {
    return reject('malformed', `not msgpack: ${(err as Error).message}`);
  }
  if (!isPlainRecord(value)) return reject('malformed', 'not a msgpack map');
  const { v, org, doc, from, update, crc, e } = value;
  if (v !== ENVELOPE_VERSION) return reject('wrong-version', `v=${String(v)}`);
  if (typeof org !== 'string') return reject('malformed', 'org is not a string');
  if (org !== expect.org) return reject('wrong-org', `org "${org.slice(0, 64)}"`);
  if (typeof doc !== 'string') return reject('malformed', 'doc is not a string');
  if (doc !== expect.doc || !isDocName(doc))
    return reject('wrong-doc', `doc "${doc.slice(0, 64)}" on the ${expect.doc} topic`);
  if (typeof from !== 'string' || from.length === 0 || from.length > MAX_NODE_ID_LENGTH) {
    return reject('malformed', 'from is not a node id');
  }
  if (!(update instanceof Uint8Array) || update.byteLength === 0)
    return reject('malformed', 'update is not bytes');
  if (!isUint32(crc)) return reject('malformed', 'crc is not a uint32');
  const actual = crc32(update);
  if (actual !== crc) return reject('bad-checksum', `crc ${crc} != ${actual}`);
  const epoch = e === undefined ? GENESIS_EPOCH : decodeWireEpoch(e);
  if (epoch === null) return reject('malformed', 'e is not [number, id]');
  return { ok: true, envelope: { v: ENVELOPE_VERSION, org, doc, from, update, crc, epoch } };
}
