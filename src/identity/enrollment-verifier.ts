import type {
  Revocation,
  SignedEnrollment,
  SignedScratchSecret,
  WitnessConfigRecord,
} from '../state/schemas.js';
import {
  checkEnrollmentRecord,
  checkRevocation,
  checkWitnessConfigRecord,
  type VerificationReason,
} from './ca.js';
import { type PublicKeyInput, toPublicKeyObject } from './ed25519.js';
import { isHostInCidr, parseIpv4, parseOverlayCidr } from './ipv4-cidr.js';
import { isClient, ownershipMembers } from './role.js';
import { scratchSecretProblem } from './scratch-secret-signing.js';

/**
 * Which enrolled nodes are ACTIVE, computed from the enrollment document's
 * maps (docs/protocol.md, "Enrollment records, certificates and
 * revocations"). Pure: the same inputs give the same answer on every node,
 * which is what lets placement, the overlay and the connection gater agree
 * without talking to each other.
 *
 * A record is active when, in this order:
 * 1. it is well formed and its map key equals its nodeId,
 * 2. its cert is a valid signature of the org CA (and its IP lies in the
 *    overlay CIDR, when one is given),
 * 3. no valid revocation for its nodeId has revokedAt >= its issuedAt (so a
 *    node may be re-enrolled under the same id after a revocation),
 * 4. no record that ranks before it, among those passing 1-3, holds the same
 *    overlay IP, peer id or WireGuard key. Rank: earliest issuedAt, then
 *    nodeId (code-unit order), so every node keeps the same one of a
 *    conflicting pair whatever order it saw them in.
 */

export type RejectionReason =
  | VerificationReason
  | 'key-mismatch'
  | 'revoked'
  | 'duplicate-overlay-ip'
  | 'duplicate-peer-id'
  | 'duplicate-wg-key';

export interface Rejection {
  /** The map key the entry was stored under. */
  key: string;
  reason: RejectionReason;
  message: string;
}

export interface EnrollmentView {
  /** Active records, sorted by nodeId. */
  active: SignedEnrollment[];
  /**
   * The active records that count for ownership (role `node`), sorted by
   * nodeId: what placement, quorums, SWIM and heartbeats count (role.ts).
   */
  members: SignedEnrollment[];
  /** Node ids of the active `client` records: admitted, never counted. */
  clientIds: ReadonlySet<string>;
  byNodeId: ReadonlyMap<string, SignedEnrollment>;
  byPeerId: ReadonlyMap<string, SignedEnrollment>;
  /** Valid revocations by nodeId. */
  revocations: ReadonlyMap<string, Revocation>;
  /** Records that are not active, and why; sorted by key. */
  rejectedRecords: Rejection[];
  /** Revocation entries that were ignored (malformed, bad signature, key mismatch); sorted by key. */
  rejectedRevocations: Rejection[];
}

export interface EnrollmentInput {
  caPublicKey: PublicKeyInput;
  /** Entries of the enrollment document's `nodes` map (e.g. `yMap.entries()`, `Object.entries(json)`). */
  records: Iterable<readonly [string, unknown]>;
  /** Entries of its `revocations` map. */
  revocations: Iterable<readonly [string, unknown]>;
  /** When given, records whose overlay IP is not a host address of it are rejected. */
  overlayCidr?: string;
}

export function computeActiveNodes(input: EnrollmentInput): EnrollmentView {
  const caKey = toPublicKeyObject(input.caPublicKey, 'CA public key');
  const cidr = input.overlayCidr === undefined ? undefined : parseOverlayCidr(input.overlayCidr);
  const rejectedRecords: Rejection[] = [];
  const rejectedRevocations: Rejection[] = [];

  const revocations = new Map<string, Revocation>();
  for (const [key, value] of input.revocations) {
    const checked = checkRevocation(caKey, value);
    if (!checked.ok) {
      rejectedRevocations.push({ key, ...checked.failure });
    } else if (checked.value.nodeId !== key) {
      rejectedRevocations.push({
        key,
        reason: 'key-mismatch',
        message: `revocation of ${checked.value.nodeId} is stored under key "${key}"`,
      });
    } else {
      revocations.set(key, checked.value);
    }
  }

  const candidates: SignedEnrollment[] = [];
  for (const [key, value] of input.records) {
    const checked = checkEnrollmentRecord(caKey, value);
    if (!checked.ok) {
      rejectedRecords.push({ key, ...checked.failure });
      continue;
    }
    const record = checked.value;
    if (record.nodeId !== key) {
      rejectedRecords.push({
        key,
        reason: 'key-mismatch',
        message: `record of ${record.nodeId} is stored under key "${key}"`,
      });
      continue;
    }
    if (cidr !== undefined && !isHostInCidr(cidr, parseIpv4(record.overlayIp))) {
      rejectedRecords.push({
        key,
        reason: 'outside-cidr',
        message: `overlay IP ${record.overlayIp} is not a host address of ${input.overlayCidr}`,
      });
      continue;
    }
    const revocation = revocations.get(key);
    if (revocation !== undefined && revocation.revokedAt >= record.issuedAt) {
      rejectedRecords.push({
        key,
        reason: 'revoked',
        message: `revoked at ${revocation.revokedAt}${revocation.reason.length > 0 ? `: ${revocation.reason}` : ''}`,
      });
      continue;
    }
    candidates.push(record);
  }

  candidates.sort(byRank);
  const ipHolder = new Map<string, string>();
  const peerHolder = new Map<string, string>();
  const wgHolder = new Map<string, string>();
  const active: SignedEnrollment[] = [];
  for (const record of candidates) {
    const conflict =
      claimConflict(ipHolder, record.overlayIp, 'duplicate-overlay-ip', `overlay IP ${record.overlayIp}`) ??
      claimConflict(peerHolder, record.peerId, 'duplicate-peer-id', `peer id ${record.peerId}`) ??
      claimConflict(wgHolder, record.wgPublicKey, 'duplicate-wg-key', `WireGuard key ${record.wgPublicKey}`);
    if (conflict !== null) {
      rejectedRecords.push({ key: record.nodeId, ...conflict });
      continue;
    }
    ipHolder.set(record.overlayIp, record.nodeId);
    peerHolder.set(record.peerId, record.nodeId);
    wgHolder.set(record.wgPublicKey, record.nodeId);
    active.push(record);
  }

  active.sort((a, b) => compareStrings(a.nodeId, b.nodeId));
  rejectedRecords.sort((a, b) => compareStrings(a.key, b.key));
  rejectedRevocations.sort((a, b) => compareStrings(a.key, b.key));
  return {
    active,
    members: ownershipMembers(active),
    clientIds: new Set(active.filter(isClient).map((record) => record.nodeId)),
    byNodeId: new Map(active.map((record) => [record.nodeId, record])),
    byPeerId: new Map(active.map((record) => [record.peerId, record])),
    revocations,
    rejectedRecords,
    rejectedRevocations,
  };
}

function claimConflict(
  holders: Map<string, string>,
  value: string,
  reason: RejectionReason,
  what: string,
): { reason: RejectionReason; message: string } | null {
  const holder = holders.get(value);
  if (holder === undefined) return null;
  return {
    reason,
    message: `${what} is already held by ${holder}, which ranks first (earlier issuedAt, then nodeId)`,
  };
}

function byRank(a: SignedEnrollment, b: SignedEnrollment): number {
  return a.issuedAt - b.issuedAt || compareStrings(a.nodeId, b.nodeId);
}

function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Signature checks in the shape EnrollmentView's `verify`/`verifyRevocation`/
 * `verifyWitnessConfig` hooks take (src/state/enrollment-view.ts): null when
 * the CA signed it, else the reason. The CA key is parsed once, here.
 */
export function signatureHooks(caPublicKey: PublicKeyInput): {
  verify: (record: SignedEnrollment) => string | null;
  verifyRevocation: (revocation: Revocation) => string | null;
  verifyWitnessConfig: (record: WitnessConfigRecord) => string | null;
  verifyScratchKey: (envelope: SignedScratchSecret) => string | null;
} {
  const caKey = toPublicKeyObject(caPublicKey, 'CA public key');
  return {
    verify: (record) => {
      const checked = checkEnrollmentRecord(caKey, record);
      return checked.ok ? null : `${checked.failure.reason}: ${checked.failure.message}`;
    },
    verifyRevocation: (revocation) => {
      const checked = checkRevocation(caKey, revocation);
      return checked.ok ? null : `${checked.failure.reason}: ${checked.failure.message}`;
    },
    verifyWitnessConfig: (record) => {
      const checked = checkWitnessConfigRecord(caKey, record);
      return checked.ok ? null : `${checked.failure.reason}: ${checked.failure.message}`;
    },
    verifyScratchKey: (envelope) => scratchSecretProblem(caKey, envelope),
  };
}
