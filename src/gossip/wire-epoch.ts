import type { EpochInfo } from '../state/epochs/epoch.js';

/** An epoch on the wire (envelopes, sync frames; docs/protocol.md): `[number, id]`. */
export type WireEpoch = [number, string];

/** Longest epoch id accepted (ids are 16 hex digits). */
const MAX_EPOCH_ID_LENGTH = 64;

export function encodeWireEpoch(epoch: EpochInfo): WireEpoch {
  return [epoch.number, epoch.id];
}

/** The epoch `value` names, or null when it is not `[number, id]`. Never throws. */
export function decodeWireEpoch(value: unknown): EpochInfo | null {
  if (!Array.isArray(value) || value.length !== 2) return null;
  const [number, id] = value as unknown[];
  if (typeof number !== 'number' || !Number.isSafeInteger(number) || number < 0) return null;
  if (typeof id !== 'string' || id.length > MAX_EPOCH_ID_LENGTH) return null;
  if ((number === 0) !== (id === '')) return null;
  return { number, id };
}
