import * as Y from 'yjs';
import { type EpochInfo, GENESIS_EPOCH } from '../state/epochs/epoch.js';
import { type DocName, isDocName } from '../state/names.js';
import { SiloError, type SiloErrorCode } from '../util/silo-error.js';
import { isPlainRecord, packMessage, unpackMessage } from './codec.js';
import { decodeWireEpoch, encodeWireEpoch, type WireEpoch } from './wire-epoch.js';

/**
 * Frames of `/silo/sync/1` (docs/protocol.md, "Anti-entropy sync"). Each
 * frame is one msgpack map, sent length-prefixed (unsigned varint).
 */
export const FrameType = {
  /**
   * y-protocols sync step 1: "here is my state vector for `doc`". `slices: true`: "I apply a
   * step 2 sent as several updates" (a sender that knows slices may then send them).
   */
  step1: 1,
  /**
   * y-protocols sync step 2: "here is everything you lack in `doc`". An update larger than
   * one frame may carry is sent as consecutive parts, all but the last with `more: true`.
   * To a peer that announced `slices`, a large diff may go as several complete updates (each
   * perhaps in parts): the last frame of every update but the last carries `next: true`.
   */
  step2: 2,
  /** The responder already runs a session with the initiator and declines this one. */
  busy: 3,
} as const;

/**
 * `e`: the sender's epoch of `doc` (docs/epochs.md), `[number, id]`; absent: the genesis epoch (what
 * agents before epochs send). A step 2 answering a step 1 of an earlier epoch holds the whole
 * document; one answering a later epoch holds nothing the peer can use.
 */
export type SyncFrame =
  | { t: typeof FrameType.step1; doc: DocName; sv: Uint8Array; slices?: true; e?: WireEpoch }
  | { t: typeof FrameType.step2; doc: DocName; update: Uint8Array; more?: true; next?: true; e?: WireEpoch }
  | { t: typeof FrameType.busy };

/** The epoch a step frame names. */
export function frameEpoch(frame: { e?: WireEpoch }): EpochInfo {
  return frame.e === undefined ? GENESIS_EPOCH : { number: frame.e[0], id: frame.e[1] };
}

/** A frame that breaks the protocol; the session is aborted and nothing of the frame is applied. */
const SYNC_ERROR_CODES = {
  malformed: 'malformed',
  'invalid-update': 'invalid_update',
  oversize: 'too_large',
} as const satisfies Record<string, SiloErrorCode>;

/** `kind` is the metric's result label (docs/protocol.md); `code` silo's own. */
export class SyncProtocolError extends SiloError {
  constructor(
    readonly kind: keyof typeof SYNC_ERROR_CODES,
    detail: string,
  ) {
    super(SYNC_ERROR_CODES[kind], detail);
  }
}

export function encodeFrame(frame: SyncFrame): Uint8Array {
  return packMessage(frame);
}

export function decodeFrame(bytes: Uint8Array): SyncFrame {
  let value: unknown;
  try {
    value = unpackMessage(bytes);
  } catch (err) {
    throw new SyncProtocolError('malformed', `frame is not msgpack: ${(err as Error).message}`);
  }
  if (!isPlainRecord(value)) throw new SyncProtocolError('malformed', 'frame is not a msgpack map');
  const { t, doc } = value;
  if (t === FrameType.busy) return { t };
  let e: WireEpoch | undefined;
  if (value.e !== undefined) {
    const epoch = decodeWireEpoch(value.e);
    if (epoch === null) throw new SyncProtocolError('malformed', 'e is not [number, id]');
    e = encodeWireEpoch(epoch);
  }
  const withEpoch = <F extends SyncFrame>(frame: F): F => (e === undefined ? frame : { ...frame, e });
  if (t !== FrameType.step1 && t !== FrameType.step2) {
    throw new SyncProtocolError('malformed', `unknown frame type ${String(t)}`);
  }
  if (!isDocName(doc))
    throw new SyncProtocolError('malformed', `unknown document ${String(doc).slice(0, 64)}`);
  if (t === FrameType.step1) {
    const { sv, slices } = value;
    if (!(sv instanceof Uint8Array)) throw new SyncProtocolError('malformed', 'step1 sv is not bytes');
    if (slices !== undefined && slices !== true) {
      throw new SyncProtocolError('malformed', 'step1 slices is not true');
    }
    try {
      // Decoded here so that a garbage state vector is a protocol error,
      // not an exception inside encodeDiff.
      Y.decodeStateVector(sv);
    } catch (err) {
      throw new SyncProtocolError('malformed', `step1 sv does not decode: ${(err as Error).message}`);
    }
    return withEpoch(slices === true ? { t, doc, sv, slices } : { t, doc, sv });
  }
  const { update, more, next } = value;
  if (!(update instanceof Uint8Array) || update.byteLength === 0) {
    throw new SyncProtocolError('malformed', 'step2 update is not bytes');
  }
  if (more !== undefined && more !== true) throw new SyncProtocolError('malformed', 'step2 more is not true');
  if (next !== undefined && next !== true) throw new SyncProtocolError('malformed', 'step2 next is not true');
  if (more === true && next === true)
    throw new SyncProtocolError('malformed', 'step2 with both more and next');
  if (more === true) return withEpoch({ t, doc, update, more });
  return withEpoch(next === true ? { t, doc, update, next } : { t, doc, update });
}
