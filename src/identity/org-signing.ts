import type { KeyObject } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { changeProblem, DEFAULT_WITNESS_COUNT } from '../ownership/witness-config.js';
import {
  type EnrollmentRole,
  type Revocation,
  RevocationSchema,
  type SignedEnrollment,
  SignedEnrollmentSchema,
  type SignedScratchSecret,
  type WitnessConfigRecord,
} from '../state/schemas.js';
import { InputError } from '../util/input-error.js';
import type { EnrollmentBundle } from './bundle.js';
import { issueEnrollment, signRevocation, signWitnessConfig, verifyWitnessConfigRecord } from './ca.js';
import { fileExists, PUBLIC_FILE_MODE, writeFileAtomic } from './key-files.js';
import {
  currentWitnessConfig,
  loadOrg,
  ORG_FILES,
  saveWitnessConfig,
  type WitnessConfigVerifier,
} from './org.js';
import { generationAfter, loadScratchSecrets, sealScratchSecretsFor } from './org-scratch.js';
import { isClient } from './role.js';

/**
 * The CA's side of enrollment on the org dir, shared by `silo ca sign`
 * (src/cli/commands/ca.ts) and the join provisioner (src/agent/provisioner.ts):
 * one place decides what gets signed and what the org dir remembers of it.
 */

/** Every record the CA signed, by node id (`<orgdir>/issued/<nodeId>.json`): the CA's memory of allocated IPs. */
export const ISSUED_DIR = 'issued';
export const REVOKED_DIR = 'revoked';

/** A request or org dir the CA cannot sign from (exit code 3 in the CLI, 400 from the provisioner). */
export class OrgSigningError extends InputError {
  constructor(message: string) {
    super(message);
    this.name = 'OrgSigningError';
  }
}

/** Checks a witness configuration file of the org dir against the org's CA. */
export function orgWitnessVerifier(caPublicKey: string): WitnessConfigVerifier {
  return (record) => {
    const failure = verifyWitnessConfigRecord(caPublicKey, record);
    return failure === null ? null : `${failure.reason}: ${failure.message}`;
  };
}

export interface SignEnrollmentOptions {
  orgDir: string;
  /** The parsed request (what `silo node init` wrote). */
  request: unknown;
  /** Where the request came from, for messages (a file name, "join request"). */
  source: string;
  seeds: string[];
  overlayIp?: string;
  /**
   * The node id is enrolled with another key: revoke that key and enroll
   * this one (a documented re-key). Without it such a request is refused.
   */
  rekey?: boolean;
  /**
   * What the identity is for (docs/protocol.md, "Enrollment roles"; default
   * node). The CA decides it, not the request: a `client` is never placed,
   * never a witness, never counted for ownership.
   */
  role?: EnrollmentRole;
  /** Labels the CA adds to the request's (a join token's); the CA's value wins on the same key. */
  labels?: Record<string, string>;
}

export interface SignEnrollmentResult {
  bundle: EnrollmentBundle;
  /** The org has a private-network key that the node needs next to its bundle. */
  pnetKey: string | null;
  /** The witness configuration in force after this signing (also in the bundle); null when the org has none. */
  witnessConfig: WitnessConfigRecord | null;
  /** This signing issued `witnessConfig` (it added the node as a witness). */
  witnessesChanged: boolean;
  /** With `rekey`: the revocation of the node's previous key (submit it before the new record). */
  revocation: Revocation | null;
  /** With a revocation: the generation after it, sealed to every remaining node (submit after the revocation). */
  scratchRotation: ScratchRotation | null;
}

/**
 * A request for a node id the org has enrolled with another key, without
 * --rekey: refused (`silo ca sign` exits 3; the join provisioner answers 409).
 */
export class EnrollmentConflictError extends InputError {
  constructor(message: string) {
    super(message);
    this.name = 'EnrollmentConflictError';
  }
}

/**
 * The CA's side of enrollment, shared by `silo ca sign` and the join
 * provisioner (src/agent/provisioner.ts): checks the request (proof of
 * possession, an id enrolled with another key), signs it into a bundle (the
 * overlay IP is the node's previous one or the lowest free one), and records
 * what it signed in the org dir (issued/, witnesses/, revoked/).
 */
export async function signEnrollment(options: SignEnrollmentOptions): Promise<SignEnrollmentResult> {
  const org = await loadOrg(options.orgDir);
  const request = options.request;
  const issued = await issuedRecords(options.orgDir);
  const nodeId = (request as { nodeId?: unknown } | null)?.nodeId;
  const previous = typeof nodeId === 'string' ? issued.get(nodeId) : undefined;
  // Re-signing a node keeps its address; every other issued address (revoked ones too) stays taken.
  const allocatedIps = [...issued.values()].filter((r) => r !== previous).map((r) => r.overlayIp);
  const newPeerId = (request as { peerId?: unknown } | null)?.peerId;
  let revocation: Revocation | null = null;
  let issuedAt = Date.now();
  if (previous !== undefined && typeof newPeerId === 'string' && newPeerId !== previous.peerId) {
    // Another key for an enrolled node id: signing it would silently take
    // over the live node's identity (its address, its workloads).
    const revoked = (await revokedRecords(options.orgDir)).get(previous.nodeId);
    const oldKeyRevoked = revoked !== undefined && revoked.revokedAt >= previous.issuedAt;
    if (!oldKeyRevoked && options.rekey !== true) {
      throw new EnrollmentConflictError(
        `node "${previous.nodeId}" is enrolled with another key (peer id ${previous.peerId}); signing this request would replace a live node's identity. Revoke the old key first (silo ca revoke ${previous.nodeId}), or pass --rekey to revoke it and enroll this key in one step`,
      );
    }
    if (!oldKeyRevoked) {
      revocation = signRevocation(org.caPrivateKey, {
        nodeId: previous.nodeId,
        revokedAt: issuedAt,
        reason: `re-keyed: replaced by peer ${newPeerId}`,
      });
    }
    // The new record must be issued after the revocation, or it is revoked too.
    issuedAt = Math.max(issuedAt, (revocation ?? revoked)?.revokedAt ?? 0) + 1;
  }
  let bundle: EnrollmentBundle;
  try {
    bundle = issueEnrollment(org, request, {
      allocatedIps,
      overlayIp: options.overlayIp ?? previous?.overlayIp,
      seedPeers: options.seeds,
      seedRecords: seedRecordsOf(options.seeds, issued),
      issuedAt,
      ...(options.role ? { role: options.role } : {}),
      ...(options.labels ? { labels: options.labels } : {}),
    });
  } catch (err) {
    throw new OrgSigningError(`${options.source}: ${(err as Error).message}`);
  }
  const current = await currentWitnessConfig(options.orgDir, orgWitnessVerifier(org.info.caPublicKey));
  // A client never becomes a witness: it grants no leases (docs/security.md, "Clients").
  const witnessConfig = isClient(bundle.record)
    ? current
    : nextBootstrapWitnessConfig(org.caPrivateKey, current, bundle.record.nodeId);
  const witnessesChanged = witnessConfig !== current;
  if (witnessConfig !== null) bundle = { ...bundle, witnessConfig };
  // A node gets every scratch secret generation (old ones open scratch written before a rotation); a
  // client runs no workloads and gets none (docs/security.md, "Encrypted scratch").
  if (!isClient(bundle.record)) {
    // A re-key revokes the old key: a new generation first, so the old key never held it.
    if (revocation !== null) await generationAfter(options.orgDir, revocation.revokedAt);
    const secrets = await loadScratchSecrets(options.orgDir, { create: true });
    bundle = { ...bundle, scratchKeys: sealScratchSecretsFor(org.caPrivateKey, secrets, bundle.record) };
  }
  await writeFileAtomic(
    join(options.orgDir, ISSUED_DIR, `${bundle.record.nodeId}.json`),
    `${JSON.stringify(bundle.record, null, 2)}\n`,
    PUBLIC_FILE_MODE,
  );
  if (witnessesChanged && witnessConfig !== null) await saveWitnessConfig(options.orgDir, witnessConfig);
  if (revocation !== null) {
    await writeFileAtomic(
      join(options.orgDir, REVOKED_DIR, `${revocation.nodeId}.json`),
      `${JSON.stringify(revocation, null, 2)}\n`,
      PUBLIC_FILE_MODE,
    );
  }
  const pnetPath = join(options.orgDir, ORG_FILES.pnetKey);
  const scratchRotation =
    revocation === null ? null : await scratchKeysAfterRevocation(options.orgDir, revocation);
  return {
    scratchRotation,
    bundle,
    pnetKey: (await fileExists(pnetPath)) ? pnetPath : null,
    witnessConfig,
    witnessesChanged,
    revocation,
  };
}

export interface ScratchRotation {
  /** The generation the remaining nodes now get. */
  generation: number;
  /** This call made it (false: a run before already had, after this revocation). */
  rotated: boolean;
  /** The generation sealed to each remaining node, CA-signed: for `POST /v1/scratch-keys`. */
  keys: SignedScratchSecret[];
}

/**
 * After `revocation` (docs/operations.md, "Scratch key generations"): a
 * scratch secret generation newer than it, sealed to every node the org
 * still trusts (issued, not a client, not revoked since its issue). The
 * revoked node never holds it, so it cannot read scratch created or
 * re-created from then on.
 */
export async function scratchKeysAfterRevocation(
  orgDir: string,
  revocation: Revocation,
): Promise<ScratchRotation> {
  const org = await loadOrg(orgDir);
  const { generation, secrets, rotated } = await generationAfter(orgDir, revocation.revokedAt);
  const revoked = await revokedRecords(orgDir);
  revoked.set(revocation.nodeId, revocation);
  const remaining = [...(await issuedRecords(orgDir)).values()].filter((record) => {
    if (isClient(record)) return false;
    const r = revoked.get(record.nodeId);
    return r === undefined || r.revokedAt < record.issuedAt;
  });
  const keys = remaining.flatMap((record) =>
    sealScratchSecretsFor(org.caPrivateKey, secrets, record, [generation]),
  );
  return { generation, rotated, keys };
}

/**
 * While the org has fewer than DEFAULT_WITNESS_COUNT witnesses, each newly
 * signed node becomes one: the next version adds it (one node per version,
 * so every step is a permitted single change; the first node is version 1).
 * Returns `current` itself when nothing changes.
 */
export function nextBootstrapWitnessConfig(
  caPrivateKey: KeyObject,
  current: WitnessConfigRecord | null,
  nodeId: string,
): WitnessConfigRecord | null {
  if (current !== null && current.witnesses.length >= DEFAULT_WITNESS_COUNT) return current;
  if (current?.witnesses.includes(nodeId)) return current;
  const next = {
    version: (current?.version ?? 0) + 1,
    witnesses: [...(current?.witnesses ?? []), nodeId].sort(),
    issuedAt: Date.now(),
  };
  const problem = changeProblem(current, next);
  if (problem !== null) throw new Error(`cannot add ${nodeId} as a witness: ${problem}`);
  return signWitnessConfig(caPrivateKey, next);
}

/** The issued records of the nodes the seed multiaddrs point at (by their /p2p/ peer id). */
function seedRecordsOf(seeds: string[], issued: Map<string, SignedEnrollment>): SignedEnrollment[] {
  const peerIds = new Set(
    seeds.map((seed) => /\/p2p\/([^/]+)/.exec(seed)?.[1]).filter((id) => id !== undefined),
  );
  return [...issued.values()].filter((record) => peerIds.has(record.peerId));
}

/** Every record the CA signed (`<orgdir>/issued/`), by node id. */
export async function issuedRecords(orgDir: string): Promise<Map<string, SignedEnrollment>> {
  const dir = join(orgDir, ISSUED_DIR);
  const names = await readdir(dir).catch(() => [] as string[]);
  const out = new Map<string, SignedEnrollment>();
  for (const name of names.filter((n) => n.endsWith('.json')).sort()) {
    try {
      const record = SignedEnrollmentSchema.parse(JSON.parse(await readFile(join(dir, name), 'utf8')));
      out.set(record.nodeId, record);
    } catch (err) {
      throw new OrgSigningError(
        `${join(dir, name)}: not a signed enrollment record (${(err as Error).message.split('\n')[0]})`,
      );
    }
  }
  return out;
}

/** Every revocation the CA signed (`<orgdir>/revoked/`), by node id. */
export async function revokedRecords(orgDir: string): Promise<Map<string, Revocation>> {
  const dir = join(orgDir, REVOKED_DIR);
  const names = await readdir(dir).catch(() => [] as string[]);
  const out = new Map<string, Revocation>();
  for (const name of names.filter((n) => n.endsWith('.json')).sort()) {
    try {
      const revocation = RevocationSchema.parse(JSON.parse(await readFile(join(dir, name), 'utf8')));
      out.set(revocation.nodeId, revocation);
    } catch (err) {
      throw new OrgSigningError(
        `${join(dir, name)}: not a revocation (${(err as Error).message.split('\n')[0]})`,
      );
    }
  }
  return out;
}
