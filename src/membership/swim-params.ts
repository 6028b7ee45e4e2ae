/**
 * SWIM's tunables with their defaults and the checks that keep a core's
 * arithmetic sound (a probe timeout shorter than the period, whole counts,
 * message sizes the wire format accepts).
 */

import { SiloError } from '../util/silo-error.js';

export interface SwimParams {
  /** One probe per period (scaled by the local health multiplier). */
  probeIntervalMs: number;
  /** Direct ping's wait before the indirect probes (scaled likewise). */
  probeTimeoutMs: number;
  /** Members asked to probe indirectly after a missed direct ack. */
  indirectChecks: number;
  /** An update is piggybacked retransmitMult · ⌈log10(n + 1)⌉ times. */
  retransmitMult: number;
  /** Shortest suspicion: suspicionMult · max(1, log10 n) probe intervals. */
  suspicionMult: number;
  /** Longest suspicion (no confirmations): this many times the shortest. */
  suspicionMaxMult: number;
  /** Independent suspicions that bring the timeout down to the shortest (Lifeguard's K). */
  expectedConfirmations: number;
  /** Local health multiplier ceiling (Lifeguard's S): timeouts stretch up to this factor. */
  awarenessMax: number;
  /** Updates per probe message (ping, ping-req, ack, nack) at most. */
  maxPiggyback: number;
  /** While updates wait to be sent, a gossip message goes to `gossipNodes` members this often. */
  gossipIntervalMs: number;
  /** Members each gossip round goes to (0: dissemination rides on probes only). */
  gossipNodes: number;
  /** Updates per gossip message at most. */
  maxGossipUpdates: number;
  /** Every this many periods, ping one dead member (with its obituary), so one that lives refutes it. */
  reconnectEvery: number;
}

export const DEFAULT_SWIM_PARAMS: Readonly<SwimParams> = Object.freeze({
  probeIntervalMs: 1000,
  probeTimeoutMs: 500,
  indirectChecks: 3,
  retransmitMult: 4,
  suspicionMult: 4,
  suspicionMaxMult: 6,
  expectedConfirmations: 3,
  awarenessMax: 8,
  maxPiggyback: 8,
  gossipIntervalMs: 200,
  gossipNodes: 1,
  maxGossipUpdates: 32,
  reconnectEvery: 10,
});

/** No message carries more updates (the wire format refuses more: swim-frames.ts). */
export const MAX_UPDATES_PER_MESSAGE = 64;

export class SwimParamsError extends SiloError<'invalid_input'> {
  constructor(message: string, options?: ErrorOptions) {
    super('invalid_input', message, options);
  }
}

export function validateSwimParams(params: SwimParams): SwimParams {
  const positive = [
    'probeIntervalMs',
    'probeTimeoutMs',
    'retransmitMult',
    'suspicionMult',
    'maxPiggyback',
    'gossipIntervalMs',
    'maxGossipUpdates',
  ];
  for (const key of positive) {
    const value = params[key as keyof SwimParams];
    if (!(Number.isFinite(value) && value > 0)) throw new SwimParamsError(`${key} must be > 0, got ${value}`);
  }
  if (params.probeTimeoutMs >= params.probeIntervalMs)
    throw new SwimParamsError(
      `probeTimeoutMs (${params.probeTimeoutMs}) must be shorter than probeIntervalMs (${params.probeIntervalMs}): the indirect probes need the rest of the period`,
    );
  if (!(params.suspicionMaxMult >= 1)) throw new SwimParamsError('suspicionMaxMult must be >= 1');
  for (const key of ['maxPiggyback', 'maxGossipUpdates'] as const) {
    if (params[key] > MAX_UPDATES_PER_MESSAGE)
      throw new SwimParamsError(`${key} must be at most ${MAX_UPDATES_PER_MESSAGE}, got ${params[key]}`);
  }
  const counts = [
    'indirectChecks',
    'gossipNodes',
    'expectedConfirmations',
    'reconnectEvery',
    'awarenessMax',
  ] as const;
  for (const key of counts) {
    const least = key === 'indirectChecks' || key === 'gossipNodes' ? 0 : 1;
    if (!(Number.isInteger(params[key]) && params[key] >= least))
      throw new SwimParamsError(`${key} must be a whole number >= ${least}`);
  }
  return params;
}
