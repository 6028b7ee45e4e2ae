import { DOC_NAMES, type DocName } from '../state/names.js';
import { isPlainRecord, isSafeNonNegativeInt, packMessage, unpackMessage } from './codec.js';
import { MAX_NODE_ID_LENGTH } from './envelope.js';

export const HEARTBEAT_VERSION = 1;
/** Heartbeats are small (three 16-hex-digit digests and a few numbers); anything larger is hostile. */
export const MAX_HEARTBEAT_BYTES = 4096;
const MAX_DIGEST_LENGTH = 128;
/** At most this many listen addresses per heartbeat, each at most MAX_ADDR_LENGTH characters. */
export const MAX_HEARTBEAT_ADDRS = 8;
const MAX_ADDR_LENGTH = 256;

/** docs/protocol.md, "Liveness heartbeats". */
export interface Heartbeat {
  v: typeof HEARTBEAT_VERSION;
  org: string;
  nodeId: string;
  /** Start time of the sending process (ms since the epoch); grows across restarts. */
  incarnation: number;
  /** Counts heartbeats within one incarnation, from 0. */
  seq: number;
  /** ClusterState.digest per document. */
  digests: Record<DocName, string>;
  /** Sender's wall clock (ms since the epoch); informational only, never used for timeouts. */
  sentAt: number;
  /**
   * The sender's listen multiaddrs, so that peers learn where to (re)dial
   * it. Optional on the wire (absent = none).
   */
  addrs: string[];
}

export type HeartbeatRejection = 'malformed' | 'wrong-version' | 'wrong-org' | 'oversize';

export type DecodedHeartbeat =
  | { ok: true; heartbeat: Heartbeat }
  | { ok: false; reason: HeartbeatRejection; detail: string };

export function encodeHeartbeat(heartbeat: Omit<Heartbeat, 'v'>): Uint8Array {
  return packMessage({ v: HEARTBEAT_VERSION, ...heartbeat });
}

function reject(reason: HeartbeatRejection, detail: string): DecodedHeartbeat {
  return { ok: false, reason, detail };
}

/** Decodes and checks a heartbeat; never throws. */
export function decodeHeartbeat(bytes: Uint8Array, expectOrg: string): DecodedHeartbeat {
  if (!(bytes instanceof Uint8Array)) return reject('malformed', 'not bytes');
  if (bytes.byteLength > MAX_HEARTBEAT_BYTES) return reject('oversize', `${bytes.byteLength} bytes`);
  let value: unknown;
  try {
    value = unpackMessage(bytes);
  } catch (err) {
    return reject('malformed', `not msgpack: ${(err as Error).message}`);
  }
  if (!isPlainRecord(value)) return reject('malformed', 'not a msgpack map');
  const { v, org, nodeId, incarnation, seq, digests, sentAt, addrs } = value;
  if (v !== HEARTBEAT_VERSION) return reject('wrong-version', `v=${String(v)}`);
  if (typeof org !== 'string') return reject('malformed', 'org is not a string');
  if (org !== expectOrg) return reject('wrong-org', `org "${org.slice(0, 64)}"`);
  if (typeof nodeId !== 'string' || nodeId.length === 0 || nodeId.length > MAX_NODE_ID_LENGTH) {
    return reject('malformed', 'nodeId is not a node id');
  }
  if (!isSafeNonNegativeInt(incarnation))
    return reject('malformed', 'incarnation is not a non-negative integer');
  if (!isSafeNonNegativeInt(seq)) return reject('malformed', 'seq is not a non-negative integer');
  if (typeof sentAt !== 'number' || !Number.isFinite(sentAt))
    return reject('malformed', 'sentAt is not a number');
  if (!isPlainRecord(digests)) return reject('malformed', 'digests is not a map');
  const checked = {} as Record<DocName, string>;
  for (const doc of DOC_NAMES) {
    const digest = digests[doc];
    if (typeof digest !== 'string' || digest.length > MAX_DIGEST_LENGTH) {
      return reject('malformed', `digest of ${doc} is missing or not a string`);
    }
    checked[doc] = digest;
  }
  const checkedAddrs = addrs === undefined ? [] : addrs;
  if (
    !Array.isArray(checkedAddrs) ||
    checkedAddrs.length > MAX_HEARTBEAT_ADDRS ||
    !checkedAddrs.every((a) => typeof a === 'string' && a.length > 0 && a.length <= MAX_ADDR_LENGTH)
  ) {
    return reject('malformed', 'addrs is not a short list of multiaddr strings');
  }
  return {
    ok: true,
    heartbeat: {
      v: HEARTBEAT_VERSION,
      org,
      nodeId,
      incarnation,
      seq,
      digests: checked,
      sentAt,
      addrs: checkedAddrs as string[],
    },
  };
}
