import { createPublicKey, type KeyObject, randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { ORG_NAME_PATTERN, type WitnessConfigRecord, WitnessConfigRecordSchema } from '../state/schemas.js';
import { serviceRangeFromCidr } from '../state/service-addresses.js';
import {
  generateEd25519KeyPair,
  privateKeyFromText,
  privateKeyToPem,
  publicKeyFromBase64,
  publicKeyToBase64,
} from './ed25519.js';
import { parseOverlayCidr } from './ipv4-cidr.js';
import { formatIssues } from './issues.js';
import {
  fileExists,
  KeyFileError,
  PUBLIC_FILE_MODE,
  readJsonFile,
  readKeyFile,
  readKeyText,
  writeFileAtomic,
} from './key-files.js';

/**
 * An organisation: its name (part of every gossip topic), its overlay CIDR,
 * its CA key pair and, optionally, a libp2p private-network key.
 *
 * Org directory layout (docs/protocol.md, "Enrollment records, certificates
 * and revocations"):
 *   org.json   {v: 1, name, overlayCidr, caPublicKey}   public, 0644
 *   ca.key     CA private key, PKCS#8 PEM               0600
 *   swarm.key  libp2p pnet key (optional)               0600
 *   witnesses/v<N>.json  every CA-signed witness configuration, by version (public, 0644)
 * (`silo ca sign` also keeps issued/<nodeId>.json and revoked/<nodeId>.json, src/cli/commands/ca.ts.)
 */

export { ORG_NAME_PATTERN };
export const OrgNameSchema = z
  .string()
  .regex(ORG_NAME_PATTERN, 'org name: lowercase letters, digits and "-", 1-63 chars');

const Base64PublicKey = z.string().regex(/^[A-Za-z0-9+/]{43}=$/, 'Ed25519 public key: 44 chars of base64');
export const OverlayCidrSchema = z.string().superRefine((value, ctx) => {
  try {
    parseOverlayCidr(value);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
  }
});

/** The DNS suffix of service names, `<workload>.<org>.<suffix>` (docs/services.md): one or more DNS labels. */
export const DnsSuffixSchema = z
  .string()
  .max(200)
  .regex(
    /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/,
    'DNS suffix: dot-separated labels of lowercase letters, digits and "-" (e.g. "silo" or "internal.example")',
  );

/** The public part of an org: what every node learns from its enrollment bundle. */
export const OrgInfoSchema = z
  .strictObject({
    v: z.literal(1),
    name: OrgNameSchema,
    overlayCidr: OverlayCidrSchema,
    /** `silo org init --service-range`: where service addresses come from; absent = the upper half. */
    serviceRange: z.string().optional(),
    /** `silo org init --dns-suffix`; absent = "silo". */
    dnsSuffix: DnsSuffixSchema.optional(),
    caPublicKey: Base64PublicKey,
  })
  .superRefine((info, ctx) => {
    if (info.serviceRange === undefined) return;
    try {
      serviceRangeFromCidr(info.serviceRange, info.overlayCidr);
    } catch (err) {
      ctx.addIssue({ code: 'custom', path: ['serviceRange'], message: (err as Error).message });
    }
  });
export type OrgInfo = z.infer<typeof OrgInfoSchema>;

export interface Org {
  info: OrgInfo;
  caPrivateKey: KeyObject;
  /** Contents of swarm.key (libp2p pnet key file), passed as-is to @libp2p/pnet's `preSharedKey({psk})`. */
  pnetKey?: Uint8Array;
}

export const ORG_FILES = {
  info: 'org.json',
  caKey: 'ca.key',
  pnetKey: 'swarm.key',
  /** Directory of the witness configuration history, `v<version>.json` each. */
  witnesses: 'witnesses',
} as const;

export interface CreateOrgOptions {
  name: string;
  overlayCidr: string;
  /** Also generate a libp2p private-network key: only nodes holding it can even start a libp2p handshake. */
  privateNetwork?: boolean;
  /** A CIDR block inside `overlayCidr` for service addresses; nodes never get an address in it. */
  serviceRange?: string;
  /** Service names end in `.<org>.<dnsSuffix>` (default "silo"). */
  dnsSuffix?: string;
}

export function createOrg(options: CreateOrgOptions): Org {
  const { privateKey, publicKey } = generateEd25519KeyPair();
  const info = parseOrgInfo({
    v: 1,
    name: options.name,
    overlayCidr: options.overlayCidr,
    ...(options.serviceRange !== undefined ? { serviceRange: options.serviceRange } : {}),
    ...(options.dnsSuffix !== undefined ? { dnsSuffix: options.dnsSuffix } : {}),
    caPublicKey: publicKeyToBase64(publicKey),
  });
  const org: Org = { info, caPrivateKey: privateKey };
  if (options.privateNetwork === true) org.pnetKey = generatePnetKey();
  return org;
}

export function parseOrgInfo(value: unknown): OrgInfo {
  const result = OrgInfoSchema.safeParse(value);
  if (!result.success) throw new Error(`invalid org info: ${formatIssues(result.error.issues)}`);
  return result.data;
}

export async function saveOrg(dir: string, org: Org, options: { overwrite?: boolean } = {}): Promise<void> {
  const caKeyPath = join(dir, ORG_FILES.caKey);
  // Overwriting a CA key orphans every enrolled node: make it an explicit choice.
  if (options.overwrite !== true && (await fileExists(caKeyPath))) {
    throw new KeyFileError(caKeyPath, 'an org CA key already exists here; refusing to overwrite it');
  }
  assertKeyMatches(org.caPrivateKey, org.info.caPublicKey, caKeyPath);
  await writeFileAtomic(caKeyPath, privateKeyToPem(org.caPrivateKey));
  if (org.pnetKey !== undefined) {
    parsePnetKey(org.pnetKey);
    await writeFileAtomic(join(dir, ORG_FILES.pnetKey), org.pnetKey);
  }
  // org.json last: a directory with org.json is a complete org.
  await writeFileAtomic(
    join(dir, ORG_FILES.info),
    `${JSON.stringify(org.info, null, 2)}\n`,
    PUBLIC_FILE_MODE,
  );
}

export async function loadOrg(dir: string): Promise<Org> {
  const infoPath = join(dir, ORG_FILES.info);
  let info: OrgInfo;
  try {
    info = parseOrgInfo(await readJsonFile(infoPath, 'org info'));
  } catch (err) {
    if (err instanceof KeyFileError) throw err;
    throw new KeyFileError(infoPath, (err as Error).message);
  }
  const caKeyPath = join(dir, ORG_FILES.caKey);
  const caText = await readKeyText(caKeyPath, 'org CA private key');
  let caPrivateKey: KeyObject;
  try {
    caPrivateKey = privateKeyFromText(caText);
  } catch (err) {
    throw new KeyFileError(caKeyPath, `org CA private key is unusable: ${(err as Error).message}`);
  }
  assertKeyMatches(caPrivateKey, info.caPublicKey, caKeyPath);
  const org: Org = { info, caPrivateKey };
  const pnetPath = join(dir, ORG_FILES.pnetKey);
  if (await fileExists(pnetPath)) {
    const pnetKey = await readKeyFile(pnetPath, 'libp2p private-network key');
    try {
      parsePnetKey(pnetKey);
    } catch (err) {
      throw new KeyFileError(pnetPath, (err as Error).message);
    }
    org.pnetKey = new Uint8Array(pnetKey);
  }
  return org;
}

// The CA's own files: exactly the signed fields plus `cert`.
const StrictWitnessConfigRecordSchema = z.strictObject(WitnessConfigRecordSchema.shape);
const WITNESS_FILE = /^v([1-9][0-9]*)\.json$/;

/** Where the org keeps witness configuration `version`: `<orgdir>/witnesses/v<version>.json`. */
export function witnessConfigPath(dir: string, version: number): string {
  return join(dir, ORG_FILES.witnesses, `v${version}.json`);
}

/**
 * Signature check of a witness configuration file (`checkWitnessConfigRecord`
 * of src/identity/ca.ts bound to the org's CA key: ca.ts imports this module,
 * so it is passed in rather than imported). Null when valid, else why not.
 */
export type WitnessConfigVerifier = (record: WitnessConfigRecord) => string | null;

/**
 * Every witness configuration the org's CA signed, by ascending version
 * (`<orgdir>/witnesses/v<N>.json`; none when the directory does not exist).
 * A malformed file, one whose name is not its version, or one `verify`
 * rejects fails with the path in the message: these are the CA's own records.
 */
export async function readWitnessConfigs(
  dir: string,
  verify?: WitnessConfigVerifier,
): Promise<WitnessConfigRecord[]> {
  const witnessDir = join(dir, ORG_FILES.witnesses);
  let names: string[];
  try {
    names = await readdir(witnessDir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return [];
    throw new KeyFileError(witnessDir, `cannot read the witness configurations (${code})`);
  }
  const out: WitnessConfigRecord[] = [];
  for (const name of names) {
    const match = WITNESS_FILE.exec(name);
    if (!match) continue;
    const path = join(witnessDir, name);
    const result = StrictWitnessConfigRecordSchema.safeParse(
      await readJsonFile(path, 'witness configuration'),
    );
    if (!result.success)
      throw new KeyFileError(path, `not a witness configuration: ${formatIssues(result.error.issues)}`);
    const record = result.data;
    if (`${record.version}` !== match[1])
      throw new KeyFileError(path, `holds witness configuration version ${record.version}`);
    const problem = verify?.(record) ?? null;
    if (problem !== null) throw new KeyFileError(path, `witness configuration refused: ${problem}`);
    out.push(record);
  }
  return out.sort((a, b) => a.version - b.version);
}

/** The org's current witness configuration (the highest version), or null when it has none yet. */
export async function currentWitnessConfig(
  dir: string,
  verify?: WitnessConfigVerifier,
): Promise<WitnessConfigRecord | null> {
  const all = await readWitnessConfigs(dir, verify);
  return all.at(-1) ?? null;
}

/**
 * Keeps a signed witness configuration in the org's history. A version is
 * written once: another record under an existing version is refused (two
 * signings racing would otherwise leave the org with two different
 * configurations of one version).
 */
export async function saveWitnessConfig(dir: string, record: WitnessConfigRecord): Promise<string> {
  const path = witnessConfigPath(dir, record.version);
  const text = `${JSON.stringify(record, null, 2)}\n`;
  let existing: string | null = null;
  try {
    existing = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (existing !== null && existing !== text)
    throw new KeyFileError(path, `witness configuration version ${record.version} exists already`);
  if (existing === null) await writeFileAtomic(path, text, PUBLIC_FILE_MODE);
  return path;
}

function assertKeyMatches(privateKey: KeyObject, caPublicKey: string, path: string): void {
  const expected = publicKeyFromBase64(caPublicKey, 'caPublicKey');
  const actual = createPublicKey(privateKey);
  if (publicKeyToBase64(actual) !== publicKeyToBase64(expected)) {
    throw new KeyFileError(path, 'org CA private key does not match caPublicKey in org.json');
  }
}

// libp2p private-network key file, version 1 (the format @libp2p/pnet and go-libp2p read).
const PNET_HEADER = '/key/swarm/psk/1.0.0/\n/base16/\n';
const PNET_FILE = /^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n([0-9a-f]{64})\n?$/;

export function generatePnetKey(): Uint8Array {
  return new TextEncoder().encode(`${PNET_HEADER}${randomBytes(32).toString('hex')}\n`);
}

/** Validate a pnet key file; returns the 32 raw key bytes. */
export function parsePnetKey(file: Uint8Array): Uint8Array {
  const text = Buffer.from(file).toString('utf8');
  const match = PNET_FILE.exec(text);
  if (!match) {
    throw new Error(
      'not a libp2p private-network key (expected "/key/swarm/psk/1.0.0/", "/base16/" and 64 lowercase hex digits on three lines)',
    );
  }
  return new Uint8Array(Buffer.from(match[1]!, 'hex'));
}
