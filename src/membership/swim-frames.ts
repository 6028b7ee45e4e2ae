import {
  decodeDocDigests,
  isPlainRecord,
  isSafeNonNegativeInt,
  packMessage,
  unpackMessage,
} from '../gossip/codec.js';
import type { DocName } from '../state/names.js';
import { NODE_ID_PATTERN } from '../state/schemas.js';
import type { MemberState, MemberUpdate, SwimMessage } from './swim-messages.js';
import { MAX_UPDATES_PER_MESSAGE } from './swim-params.js';

/**
 * The wire form of SwimCore's messages (docs/membership.md, "Wire format";
 * docs/protocol.md). One msgpack map per message:
 *
 *   {v: 1, k: "ping" | "ping-req" | "ack" | "nack" | "gossip", s: seq, t?: target, u: [update, ...], d?: digests}
 *   update = [node, state (0 alive, 1 suspect, 2 dead), incarnation, from?]
 *   digests = {enrollment, workloads, observed}: the sender's document digests, on pings and acks only
 *
 * The digests are not SWIM's: they let every probe double as an
 * anti-entropy check (docs/protocol.md, "Anti-entropy"), so that no node
 * has to broadcast its digests to all others.
 *
 * Updates are arrays, not maps: they are most of every message, and a map
 * would repeat four key names in each. Who sent a message is not in it: the
 * transport knows the sender from the authenticated connection.
 *
 * decodeSwimFrame never throws: a peer's bytes are either a message or a
 * reason, counted by the transport and dropped.
 */
export const SWIM_FRAME_VERSION = 1;
/** The most SwimParams lets anyone send (maxPiggyback, maxGossipUpdates); anything longer is hostile. */
export const MAX_SWIM_UPDATES = MAX_UPDATES_PER_MESSAGE;
/**
 * 64 updates of at most ~140 bytes (two 63-character node ids and an
 * incarnation) is under 9 KiB; 16 KiB leaves room. Anything larger is hostile.
 */
export const MAX_SWIM_FRAME_BYTES = 16 * 1024;

const STATE_CODES: Record<MemberState, number> = { alive: 0, suspect: 1, dead: 2 };
const STATES: readonly MemberState[] = ['alive', 'suspect', 'dead'];

export type SwimFrameRejection = 'oversize' | 'malformed' | 'wrong-version';

export type DecodedSwimFrame =
  | { ok: true; message: SwimMessage; digests?: Record<DocName, string> }
  | { ok: false; reason: SwimFrameRejection; detail: string };

/** The message kinds that may carry the sender's digests: the two of a direct probe. */
export function carriesDigests(kind: SwimMessage['kind']): boolean {
  return kind === 'ping' || kind === 'ack';
}

export function encodeSwimFrame(message: SwimMessage, digests?: Record<DocName, string>): Uint8Array {
  const frame: Record<string, unknown> = {
    v: SWIM_FRAME_VERSION,
    k: message.kind,
    s: message.seq,
    u: message.updates.map((u) =>
      u.from === undefined
        ? [u.node, STATE_CODES[u.state], u.incarnation]
        : [u.node, STATE_CODES[u.state], u.incarnation, u.from],
    ),
  };
  if (message.kind === 'ping-req') frame.t = message.target;
  if (digests !== undefined && carriesDigests(message.kind)) frame.d = digests;
  return packMessage(frame);
}

function reject(reason: SwimFrameRejection, detail: string): DecodedSwimFrame {
  return { ok: false, reason, detail };
}

function isNodeId(value: unknown): value is string {
  return typeof value === 'string' && NODE_ID_PATTERN.test(value);
}

function decodeUpdate(value: unknown, at: number): MemberUpdate | string {
  if (!Array.isArray(value) || value.length < 3 || value.length > 4)
    return `update ${at} is not [node, state, incarnation, from?]`;
  const [node, code, incarnation, from] = value as unknown[];
  if (!isNodeId(node)) return `update ${at}: node is not a node id`;
  if (code !== 0 && code !== 1 && code !== 2) return `update ${at}: state ${String(code)} is not 0, 1 or 2`;
  if (!isSafeNonNegativeInt(incarnation)) return `update ${at}: incarnation is not a non-negative integer`;
  const state = STATES[code] as MemberState;
  if (value.length === 4) {
    if (!isNodeId(from)) return `update ${at}: from is not a node id`;
    if (state !== 'suspect') return `update ${at}: only a suspicion names who suspects`;
    return { node, state, incarnation, from };
  }
  return { node, state, incarnation };
}

export function decodeSwimFrame(bytes: Uint8Array): DecodedSwimFrame {
  if (!(bytes instanceof Uint8Array)) return reject('malformed', 'not bytes');
  if (bytes.byteLength > MAX_SWIM_FRAME_BYTES) return reject('oversize', `${bytes.byteLength} bytes`);
  let value: unknown;
  try {
    value = unpackMessage(bytes);
  } catch (err) {
    return reject('malformed', `not msgpack: ${(err as Error).message}`);
  }
  if (!isPlainRecord(value)) return reject('malformed', 'not a msgpack map');
  const { v, k, s, t, u, d } = value;
  if (v !== SWIM_FRAME_VERSION) return reject('wrong-version', `v=${String(v)}`);
  if (k !== 'ping' && k !== 'ping-req' && k !== 'ack' && k !== 'nack' && k !== 'gossip')
    return reject('malformed', `k=${JSON.stringify(k)?.slice(0, 32)} is not a message kind`);
  if (!isSafeNonNegativeInt(s)) return reject('malformed', 's (seq) is not a non-negative integer');
  if (!Array.isArray(u)) return reject('malformed', 'u (updates) is not an array');
  if (u.length > MAX_SWIM_UPDATES)
    return reject('malformed', `${u.length} updates (at most ${MAX_SWIM_UPDATES})`);
  const updates: MemberUpdate[] = [];
  for (const [at, raw] of u.entries()) {
    const update = decodeUpdate(raw, at);
    if (typeof update === 'string') return reject('malformed', update);
    updates.push(update);
  }
  let digests: Record<DocName, string> | undefined;
  if (d !== undefined) {
    if (!carriesDigests(k)) return reject('malformed', `d (digests) on a ${k}`);
    const checked = decodeDocDigests(d);
    if (typeof checked === 'string') return reject('malformed', `d: ${checked}`);
    digests = checked;
  }
  const extra = digests === undefined ? {} : { digests };
  if (k === 'ping-req') {
    if (!isNodeId(t)) return reject('malformed', 't (target) is not a node id');
    return { ok: true, message: { kind: k, seq: s, target: t, updates } };
  }
  if (t !== undefined) return reject('malformed', `t (target) on a ${k}`);
  return { ok: true, message: { kind: k, seq: s, updates }, ...extra };
}
