/**
 * The messages of the witness lease protocol (docs/protocol.md, "Witness
 * leases"). Plain data: the wire codec (gossip/lease-exchange.ts) validates
 * them with the zod schemas of wire.ts; the protocol cores take and return them.
 */

/** What a claimant asks of one witness about one workload. */
export interface LeaseRequest {
  /** `hold`: grant (or renew) a lease with this ballot; `release`: the holder stopped, let it go. */
  op: 'hold' | 'release';
  workload: string;
  /** The claimant's node id (the transport checks it is the sender). */
  node: string;
  /**
   * Random per claimant process: a restarted agent is another claimant.
   * Renewals and releases must match the incarnation that acquired, so a
   * late message of a previous life never renews or frees a new one's lease.
   */
  incarnation: number;
  /** Fencing token: a new holder needs a ballot above every ballot the witness has granted. */
  ballot: number;
  /** The witness configuration version the claimant counts its quorum in. */
  configVersion: number;
  /** The claimant's lease length on its own clock; the witness holds it longer by the drift bound. */
  durationMs: number;
  /** Claimant's round counter: a reply names the request it answers. */
  round: number;
}

export type RefusalReason =
  /** Another node holds an unexpired lease. */
  | 'held'
  /** The ballot is not above the highest this witness granted (or the lease was released). */
  | 'stale-ballot'
  /** The request and the witness count in different configuration versions. */
  | 'config-mismatch'
  /** This node is not a witness of its configuration (or has none). */
  | 'not-a-witness'
  /** Malformed or out-of-bounds request. */
  | 'invalid'
  /** The lease asked for is longer than this witness's bound on lease lengths (services.max_stop_timeout). */
  | 'too-long'
  /**
   * The witness started on an existing store less than one maximal hold ago:
   * its store may be an older copy (a backup, a VM snapshot) that forgot
   * grants made since, so it grants nothing until every lease it could have
   * granted before has ended (docs/placement.md, rule W6).
   */
  | 'quiet';

export interface LeaseReply {
  workload: string;
  /** The witness's node id. */
  witness: string;
  round: number;
  granted: boolean;
  refusal: RefusalReason | null;
  /** The highest ballot this witness has granted for the workload (0: none). */
  ballot: number;
  /** Who holds the witness's record for the workload (null: nobody, or released). */
  holder: string | null;
  /** The witness's configuration version (0: none). */
  configVersion: number;
  /** How long the current holder's lease has left on the witness's clock (for status output). */
  remainingMs: number | null;
}

/**
 * Longest lease any witness grants (a witness's own bound, from its
 * configuration, is at most this): a bound on how long a vanished claimant
 * can block a workload.
 */
export const MAX_LEASE_MS = 10 * 60_000;

/** Every refusal reason, for wire schemas. */
export const REFUSAL_REASONS = [
  'held',
  'stale-ballot',
  'config-mismatch',
  'not-a-witness',
  'invalid',
  'too-long',
  'quiet',
] as const satisfies readonly RefusalReason[];
