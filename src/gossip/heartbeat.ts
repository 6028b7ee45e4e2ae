import type { DocName } from '../state/names.js';
import {
  decodeDocDigests,
  isPlainRecord,
  isSafeNonNegativeInt,
  packMessage,
  unpackMessage,
} from './codec.js';
import { MAX_NODE_ID_LENGTH } from './envelope.js';

export const HEARTBEAT_VERSION = 1;
/**
 * Without acks a heartbeat is a few hundred bytes. `acks` and `dead` add
 * one entry per other node, at most 80 bytes each (a 63-character node id,
 * the schema's longest, plus [incarnation, seq] as float64 and uint32), so
 * MAX_HEARTBEAT_ENTRIES of them need about 80 KiB; 96 KiB leaves room for
 * the addresses and digests. Anything larger is hostile. (The 4 KiB of
 * version 1 fitted only about 150 nodes: docs/placement.md.)
 */
export const MAX_HEARTBEAT_BYTES = 96 * 1024;
/** At most this many `acks` plus `dead` entries per heartbeat (one per other node: 1024-node clusters). */
export const MAX_HEARTBEAT_ENTRIES = 1024;
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
  /**
   * nodeId → [incarnation, seq] of the newest heartbeat the sender received
   * from that node, for the nodes it heard within dead_after and has not
   * declared dead (docs/placement.md L1). Optional on the wire (absent = empty).
   */
  acks: ReadonlyMap<string, HeartbeatAck>;
  /**
   * nodeId → incarnation the sender declared dead (placement A1): it will
   * never acknowledge that incarnation again. Incarnation 0 means "I have
   * heard no incarnation of it since I started, for at least dead_after".
   * Optional on the wire (absent = empty).
   */
  dead: ReadonlyMap<string, number>;
}

export type HeartbeatAck = readonly [incarnation: number, seq: number];

/** What a sender fills in; acks and dead may be left out (= empty). */
export type HeartbeatFields = Omit<Heartbeat, 'v' | 'acks' | 'dead'> & {
  acks?: ReadonlyMap<string, HeartbeatAck>;
  dead?: ReadonlyMap<string, number>;
};

export type HeartbeatRejection = 'malformed' | 'wrong-version' | 'wrong-org' | 'oversize';

export type DecodedHeartbeat =
  | { ok: true; heartbeat: Heartbeat }
  | { ok: false; reason: HeartbeatRejection; detail: string };

export function encodeHeartbeat(heartbeat: HeartbeatFields): Uint8Array {
  const { acks, dead, ...rest } = heartbeat;
  // Empty maps are left out, so a heartbeat without them is what version 1 senders wrote.
  const wire: Record<string, unknown> = { v: HEARTBEAT_VERSION, ...rest };
  if (acks !== undefined && acks.size > 0) {
    wire.acks = Object.fromEntries([...acks].map(([nodeId, [inc, seq]]) => [nodeId, [inc, seq]]));
  }
  if (dead !== undefined && dead.size > 0) wire.dead = Object.fromEntries(dead);
  return packMessage(wire);
}

function isNodeIdKey(key: string): boolean {
  return key.length > 0 && key.length <= MAX_NODE_ID_LENGTH;
}

/**
 * Checks one of the optional node-keyed maps (`acks`, `dead`): absent is
 * empty; `parse` turns an entry's value into its typed form or null. A
 * string is the rejection detail.
 */
function checkNodeMap<T>(
  field: string,
  value: unknown,
  parse: (entry: unknown) => T | null,
  badEntry: (shortNodeId: string) => string,
): Map<string, T> | string {
  const out = new Map<string, T>();
  if (value === undefined) return out;
  if (!isPlainRecord(value)) return `${field} is not a map`;
  const entries = Object.entries(value);
  if (entries.length > MAX_HEARTBEAT_ENTRIES)
    return `${field} has ${entries.length} entries (max ${MAX_HEARTBEAT_ENTRIES})`;
  for (const [nodeId, entry] of entries) {
    if (!isNodeIdKey(nodeId)) return `${field} has a key that is not a node id`;
    const parsed = parse(entry);
    if (parsed === null) return badEntry(nodeId.slice(0, 64));
    out.set(nodeId, parsed);
  }
  return out;
}

function parseAck(entry: unknown): HeartbeatAck | null {
  return Array.isArray(entry) &&
    entry.length === 2 &&
    isSafeNonNegativeInt(entry[0]) &&
    isSafeNonNegativeInt(entry[1])
    ? [entry[0], entry[1]]
    : null;
}

function parseIncarnation(entry: unknown): number | null {
  return isSafeNonNegativeInt(entry) ? entry : null;
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
  const { v, org, nodeId, incarnation, seq, digests, sentAt, addrs, acks, dead } = value;
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
  const checked = decodeDocDigests(digests);
  if (typeof checked === 'string') return reject('malformed', checked);
  const checkedAddrs = addrs === undefined ? [] : addrs;
  if (
    !Array.isArray(checkedAddrs) ||
    checkedAddrs.length > MAX_HEARTBEAT_ADDRS ||
    !checkedAddrs.every((a) => typeof a === 'string' && a.length > 0 && a.length <= MAX_ADDR_LENGTH)
  ) {
    return reject('malformed', 'addrs is not a short list of multiaddr strings');
  }
  const checkedAcks = checkNodeMap(
    'acks',
    acks,
    parseAck,
    (id) => `ack of "${id}" is not [incarnation, seq] (non-negative integers)`,
  );
  if (typeof checkedAcks === 'string') return reject('malformed', checkedAcks);
  const checkedDead = checkNodeMap(
    'dead',
    dead,
    parseIncarnation,
    (id) => `dead incarnation of "${id}" is not a non-negative integer`,
  );
  if (typeof checkedDead === 'string') return reject('malformed', checkedDead);
  if (checkedAcks.size + checkedDead.size > MAX_HEARTBEAT_ENTRIES) {
    return reject('malformed', `acks and dead have more than ${MAX_HEARTBEAT_ENTRIES} entries together`);
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
      acks: checkedAcks,
      dead: checkedDead,
    },
  };
}
