import type { KeyObject } from 'node:crypto';
import { z } from 'zod';
import { peerIdKeyType } from '../gossip/keys.js';
import { parseWireguardEndpoint } from '../overlay/endpoints.js';
import { WG_KEY_PATTERN } from '../overlay/wg.js';
import { checkWitnessConfig } from '../ownership/witness-config.js';
import {
  type EnrollmentRecord,
  EnrollmentRecordSchema,
  type EnrollmentRole,
  type Revocation,
  type RevocationBody,
  RevocationBodySchema,
  RevocationSchema,
  type SignedEnrollment,
  SignedEnrollmentSchema,
  type WitnessConfigBody,
  WitnessConfigBodySchema,
  type WitnessConfigRecord,
  WitnessConfigRecordSchema,
} from '../state/schemas.js';
import { serviceRangeFromCidr } from '../state/service-addresses.js';
import { SiloError } from '../util/silo-error.js';
import {
  type EnrollmentBundle,
  EnrollmentBundleSchema,
  EnrollmentFormatError,
  MultiaddrStringSchema,
  parseEnrollmentRequest,
} from './bundle.js';
import { canonicalBytes } from './canonical.js';
import {
  type PublicKeyInput,
  publicKeyToBase64,
  signBytes,
  toPublicKeyObject,
  verifyBytes,
} from './ed25519.js';
import { formatIpv4, type Ipv4Cidr, isHostInCidr, parseIpv4, parseOverlayCidr } from './ipv4-cidr.js';
import { formatIssues } from './issues.js';
import type { Org } from './org.js';
import { verifyRequestProof } from './request-proof.js';

/**
 * The org CA: turns enrollment requests into signed records, allocates
 * overlay IPs, signs revocations; and the matching verification functions
 * every node runs. What is signed is the canonical encoding (canonical.ts) of
 * a small envelope whose `kind` separates the signature domains, so a
 * signature made for one purpose can never be replayed as another:
 *   record:     {"kind":"silo-enrollment","record":<record without cert>}
 *   revocation: {"kind":"silo-revocation","revocation":<revocation without cert>}
 *   witnesses:  {"kind":"silo-witness-config","config":<configuration without cert, witnesses sorted>}
 *   image:      {"kind":"silo-image","digest":"sha256:<hex>"}   (image-signing.ts)
 */

export type VerificationReason = 'schema' | 'bad-signature' | 'wrong-ca' | 'wrong-org' | 'outside-cidr';

export interface VerificationFailure {
  reason: VerificationReason;
  message: string;
}

// Stored records must carry exactly the signed fields plus `cert`: an unknown
// field would be unsigned data a careless reader might trust.
const StrictSignedEnrollmentSchema = z.strictObject(SignedEnrollmentSchema.shape);
const StrictRevocationSchema = z.strictObject(RevocationSchema.shape);
const StrictWitnessConfigRecordSchema = z.strictObject(WitnessConfigRecordSchema.shape);

/**
 * `role` enters the signed record only when the record has one: a record
 * without it (every record signed before roles existed, and every `node`
 * record `silo ca sign` issues) signs and verifies byte for byte as before,
 * and adding, changing or removing a role breaks the signature
 * (docs/protocol.md, "Enrollment roles").
 */
export function enrollmentSigningPayload(record: EnrollmentRecord): Uint8Array {
  const { nodeId, peerId, wgPublicKey, overlayIp, endpoints, capacity, labels, issuedAt, role } = record;
  return canonicalBytes({
    kind: 'silo-enrollment',
    record: {
      nodeId,
      peerId,
      wgPublicKey,
      overlayIp,
      endpoints,
      capacity,
      labels,
      issuedAt,
      ...(role === undefined ? {} : { role }),
    },
  });
}

export function revocationSigningPayload(body: RevocationBody): Uint8Array {
  const { nodeId, revokedAt, reason } = body;
  return canonicalBytes({ kind: 'silo-revocation', revocation: { nodeId, revokedAt, reason } });
}

/**
 * The witness list is signed sorted: a configuration is a set, so the same
 * set in another order carries the same signature.
 */
export function witnessConfigSigningPayload(body: WitnessConfigBody): Uint8Array {
  const { version, witnesses, issuedAt } = body;
  return canonicalBytes({
    kind: 'silo-witness-config',
    config: { version, witnesses: [...witnesses].sort(), issuedAt },
  });
}

/** Sign a complete record (validated first: the CA never signs something readers would reject). */
export function signEnrollmentRecord(caPrivateKey: KeyObject, record: EnrollmentRecord): SignedEnrollment {
  const parsed = EnrollmentRecordSchema.safeParse(record);
  if (!parsed.success)
    throw new EnrollmentFormatError('enrollment record', formatIssues(parsed.error.issues));
  return { ...parsed.data, cert: signBytes(caPrivateKey, enrollmentSigningPayload(parsed.data)) };
}

export type Checked<T> = { ok: true; value: T } | { ok: false; failure: VerificationFailure };

/** Schema-check and signature-check a stored record; on success returns the parsed record. */
export function checkEnrollmentRecord(
  caPublicKey: PublicKeyInput,
  value: unknown,
): Checked<SignedEnrollment> {
  const parsed = StrictSignedEnrollmentSchema.safeParse(value);
  if (!parsed.success)
    return { ok: false, failure: { reason: 'schema', message: formatIssues(parsed.error.issues) } };
  const key = toPublicKeyObject(caPublicKey, 'CA public key');
  if (!verifyBytes(key, enrollmentSigningPayload(parsed.data), parsed.data.cert)) {
    const message = `record of ${parsed.data.nodeId}: cert is not a valid CA signature`;
    return { ok: false, failure: { reason: 'bad-signature', message } };
  }
  return { ok: true, value: parsed.data };
}

/** null when `value` is a well-formed record signed by `caPublicKey`; otherwise why not. */
export function verifyEnrollmentRecord(
  caPublicKey: PublicKeyInput,
  value: unknown,
): VerificationFailure | null {
  const checked = checkEnrollmentRecord(caPublicKey, value);
  return checked.ok ? null : checked.failure;
}

export interface BundleExpectations {
  /** The CA the node trusts (e.g. from org.json or a previous bundle). */
  caPublicKey?: PublicKeyInput;
  org?: string;
}

/** Verify a bundle on its own terms (record signed by the bundle's CA, IP inside the CIDR) and against expectations. */
export function verifyEnrollmentBundle(
  value: unknown,
  expected: BundleExpectations = {},
): VerificationFailure | null {
  const parsed = EnrollmentBundleSchema.safeParse(value);
  if (!parsed.success) return { reason: 'schema', message: formatIssues(parsed.error.issues) };
  const bundle = parsed.data;
  if (expected.caPublicKey !== undefined) {
    const trusted = publicKeyToBase64(toPublicKeyObject(expected.caPublicKey, 'expected CA public key'));
    if (trusted !== bundle.caPublicKey) {
      return { reason: 'wrong-ca', message: `bundle is from CA ${bundle.caPublicKey}, expected ${trusted}` };
    }
  }
  if (expected.org !== undefined && expected.org !== bundle.org) {
    return { reason: 'wrong-org', message: `bundle is for org "${bundle.org}", expected "${expected.org}"` };
  }
  const failure = verifyEnrollmentRecord(bundle.caPublicKey, bundle.record);
  if (failure !== null) return failure;
  if (bundle.witnessConfig !== undefined) {
    const witnessFailure = verifyWitnessConfigRecord(bundle.caPublicKey, bundle.witnessConfig);
    if (witnessFailure !== null) return witnessFailure;
  }
  if (!isHostInCidr(parseOverlayCidr(bundle.overlayCidr), parseIpv4(bundle.record.overlayIp))) {
    return {
      reason: 'outside-cidr',
      message: `overlay IP ${bundle.record.overlayIp} is not a host address of ${bundle.overlayCidr}`,
    };
  }
  return null;
}

export class OverlayIpExhaustedError extends SiloError<'exhausted'> {
  constructor(cidr: string) {
    super('exhausted', `no free overlay IP left in ${cidr}`);
  }
}

/**
 * An overlay IP for a new node: `requested` if given (must be a free host
 * address of the CIDR), else the lowest free host address. Usable addresses
 * are network+1 .. broadcast-1: the overlay is a full mesh of peers with no
 * gateway, so nothing else is reserved. `allocated` should include the IPs of
 * revoked nodes too, so an address is never reused while stale peers may
 * still route it to the old node. Entries that are not IPv4 are ignored.
 */
export function allocateOverlayIp(
  overlayCidr: string,
  allocated: Iterable<string>,
  requested?: string,
  /** Addresses no node may get: the org's configured service range (docs/services.md). */
  reserved?: { first: number; last: number; text: string },
): string {
  const cidr = parseOverlayCidr(overlayCidr);
  const taken = new Set<number>();
  for (const ip of allocated) {
    try {
      taken.add(parseIpv4(ip));
    } catch {
      // Not an address: cannot collide with one.
    }
  }
  if (requested !== undefined) {
    const address = parseIpv4(requested);
    if (!isHostInCidr(cidr, address))
      throw new Error(`overlay IP ${requested} is not a host address of ${overlayCidr}`);
    if (taken.has(address)) throw new Error(`overlay IP ${requested} is already allocated`);
    if (reserved !== undefined && address >= reserved.first && address <= reserved.last)
      throw new Error(`overlay IP ${requested} is in the org's service range ${reserved.text}`);
    return requested;
  }
  return formatIpv4(lowestFree(cidr, taken, overlayCidr, reserved));
}

function lowestFree(
  cidr: Ipv4Cidr,
  taken: Set<number>,
  text: string,
  reserved: { first: number; last: number } | undefined,
): number {
  for (let address = cidr.firstHost; address <= cidr.lastHost; address++) {
    if (reserved !== undefined && address >= reserved.first && address <= reserved.last) {
      address = reserved.last;
      continue;
    }
    if (!taken.has(address)) return address;
  }
  throw new OverlayIpExhaustedError(text);
}

export interface IssueOptions {
  /** Overlay IPs already handed out (all records in the enrollment document, revoked ones included). */
  allocatedIps: Iterable<string>;
  /** A specific overlay IP instead of the lowest free one. */
  overlayIp?: string;
  /** Milliseconds since the epoch; defaults to now. */
  issuedAt?: number;
  /** libp2p multiaddrs (with /p2p/<peerId>) of nodes the new node should dial first. */
  seedPeers?: string[];
  /** Signed records of the seed nodes (see EnrollmentBundle.seedRecords). */
  seedRecords?: SignedEnrollment[];
  /**
   * The CA decides what the identity is for, not the request. `node` (the
   * default) is recorded as no field at all, so node records stay exactly
   * what agents without roles accept.
   */
  role?: EnrollmentRole;
  /**
   * Labels the CA adds to the request's (a join token's, docs/protocol.md);
   * on the same key the CA's value wins: the operator decided it.
   */
  labels?: Record<string, string>;
}

/** Sign an enrollment request into the bundle handed back to the node. */
export function issueEnrollment(org: Org, request: unknown, options: IssueOptions): EnrollmentBundle {
  const req = parseEnrollmentRequest(request);
  checkPeerId(req.peerId);
  if (!WG_KEY_PATTERN.test(req.wgPublicKey)) {
    throw new EnrollmentFormatError('enrollment request', 'wgPublicKey is not a WireGuard public key');
  }
  for (const entry of req.endpoints) checkEndpoint(entry);
  if (!verifyRequestProof(req)) {
    throw new EnrollmentFormatError(
      'enrollment request',
      `proof does not verify under the key of peerId "${req.peerId}": the request was changed after \`silo node init\` signed it, or signed with another key`,
    );
  }
  const seedPeers = options.seedPeers ?? [];
  for (const peer of seedPeers) {
    const result = MultiaddrStringSchema.safeParse(peer);
    if (!result.success) throw new Error(`seed peer "${peer}": ${formatIssues(result.error.issues)}`);
  }
  const reserved =
    org.info.serviceRange === undefined
      ? undefined
      : { ...serviceRangeFromCidr(org.info.serviceRange, org.info.overlayCidr), text: org.info.serviceRange };
  const overlayIp = allocateOverlayIp(
    org.info.overlayCidr,
    options.allocatedIps,
    options.overlayIp,
    reserved,
  );
  const record = signEnrollmentRecord(org.caPrivateKey, {
    ...req,
    labels: { ...req.labels, ...options.labels },
    overlayIp,
    issuedAt: options.issuedAt ?? Date.now(),
    ...(options.role === 'client' ? { role: 'client' as const } : {}),
  });
  return {
    v: 1,
    org: org.info.name,
    overlayCidr: org.info.overlayCidr,
    // Only when the org set them: a bundle for an org with the defaults stays what older agents accept.
    ...(org.info.serviceRange !== undefined ? { serviceRange: org.info.serviceRange } : {}),
    ...(org.info.dnsSuffix !== undefined ? { dnsSuffix: org.info.dnsSuffix } : {}),
    caPublicKey: org.info.caPublicKey,
    seedPeers,
    seedRecords: options.seedRecords ?? [],
    record,
  };
}

function checkPeerId(peerId: string): void {
  let type: string;
  try {
    type = peerIdKeyType(peerId);
  } catch (err) {
    throw new EnrollmentFormatError('enrollment request', `peerId "${peerId}": ${(err as Error).message}`);
  }
  if (type !== 'Ed25519') {
    throw new EnrollmentFormatError('enrollment request', `peerId "${peerId}" is ${type}, expected Ed25519`);
  }
}

function checkEndpoint(entry: string): void {
  if (entry.startsWith('wg://')) {
    if (parseWireguardEndpoint(entry) === null) {
      throw new EnrollmentFormatError('enrollment request', `endpoint "${entry}" is not wg://host:port`);
    }
    return;
  }
  const result = MultiaddrStringSchema.safeParse(entry);
  if (!result.success) {
    throw new EnrollmentFormatError(
      'enrollment request',
      `endpoint "${entry}" is neither wg://host:port nor a multiaddr`,
    );
  }
}

/** Sign a revocation of `nodeId`: records issued at or before `revokedAt` stop being trusted. */
export function signRevocation(caPrivateKey: KeyObject, body: RevocationBody): Revocation {
  const parsed = RevocationBodySchema.safeParse(body);
  if (!parsed.success) throw new EnrollmentFormatError('revocation', formatIssues(parsed.error.issues));
  return { ...parsed.data, cert: signBytes(caPrivateKey, revocationSigningPayload(parsed.data)) };
}

/** Schema-check and signature-check a stored revocation; on success returns the parsed revocation. */
export function checkRevocation(caPublicKey: PublicKeyInput, value: unknown): Checked<Revocation> {
  const parsed = StrictRevocationSchema.safeParse(value);
  if (!parsed.success)
    return { ok: false, failure: { reason: 'schema', message: formatIssues(parsed.error.issues) } };
  const key = toPublicKeyObject(caPublicKey, 'CA public key');
  if (!verifyBytes(key, revocationSigningPayload(parsed.data), parsed.data.cert)) {
    const message = `revocation of ${parsed.data.nodeId}: cert is not a valid CA signature`;
    return { ok: false, failure: { reason: 'bad-signature', message } };
  }
  return { ok: true, value: parsed.data };
}

export function verifyRevocation(caPublicKey: PublicKeyInput, value: unknown): VerificationFailure | null {
  const checked = checkRevocation(caPublicKey, value);
  return checked.ok ? null : checked.failure;
}

/**
 * Sign a witness configuration (docs/cli.md, `silo ca witnesses set`). The
 * body is validated first (1 to MAX_WITNESSES distinct node ids, version >= 1)
 * and the signed record carries its witnesses sorted. Whether it is a
 * permitted change from the current version is the caller's check
 * (`changeProblem`, src/ownership/witness-config.ts).
 */
export function signWitnessConfig(caPrivateKey: KeyObject, body: WitnessConfigBody): WitnessConfigRecord {
  const parsed = WitnessConfigBodySchema.safeParse(body);
  if (!parsed.success)
    throw new EnrollmentFormatError('witness configuration', formatIssues(parsed.error.issues));
  let witnesses: readonly string[];
  try {
    ({ witnesses } = checkWitnessConfig(parsed.data));
  } catch (err) {
    throw new EnrollmentFormatError('witness configuration', (err as Error).message);
  }
  const config = { version: parsed.data.version, witnesses: [...witnesses], issuedAt: parsed.data.issuedAt };
  return { ...config, cert: signBytes(caPrivateKey, witnessConfigSigningPayload(config)) };
}

/**
 * Schema-check (strict: no unsigned extra field; distinct witnesses) and
 * signature-check a witness configuration record; on success returns it with
 * its witnesses sorted.
 */
export function checkWitnessConfigRecord(
  caPublicKey: PublicKeyInput,
  value: unknown,
): Checked<WitnessConfigRecord> {
  const parsed = StrictWitnessConfigRecordSchema.safeParse(value);
  if (!parsed.success)
    return { ok: false, failure: { reason: 'schema', message: formatIssues(parsed.error.issues) } };
  const record = parsed.data;
  const witnesses = [...record.witnesses].sort();
  const duplicate = witnesses.find((id, i) => i > 0 && witnesses[i - 1] === id);
  if (duplicate !== undefined) {
    const message = `witness configuration v${record.version}: witness ${duplicate} is listed twice`;
    return { ok: false, failure: { reason: 'schema', message } };
  }
  const key = toPublicKeyObject(caPublicKey, 'CA public key');
  if (!verifyBytes(key, witnessConfigSigningPayload(record), record.cert)) {
    const message = `witness configuration v${record.version}: cert is not a valid CA signature`;
    return { ok: false, failure: { reason: 'bad-signature', message } };
  }
  return { ok: true, value: { ...record, witnesses } };
}

export function verifyWitnessConfigRecord(
  caPublicKey: PublicKeyInput,
  value: unknown,
): VerificationFailure | null {
  const checked = checkWitnessConfigRecord(caPublicKey, value);
  return checked.ok ? null : checked.failure;
}
