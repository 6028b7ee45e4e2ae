import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  hkdfSync,
  randomBytes,
  timingSafeEqual,
} from 'node:crypto';
import { z } from 'zod';
import { ORG_NAME_PATTERN } from '../state/schemas.js';
import { SiloError } from '../util/silo-error.js';
import { decodeBase64Strict } from './base64.js';
import { canonicalBytes } from './canonical.js';

/**
 * Join tokens (docs/protocol.md, "Join tokens and `POST /v1/join`"): what
 * `silo token create` prints and `silo join` consumes. Pure functions only:
 * the token string, the key the org dir keeps instead of the secret, the
 * request MAC and the bundle encryption.
 *
 * Token string: `silo1.` + base64url (no padding) of the JSON object
 *   {"v":1,"org":<org name>,"ca":"sha256:<hex of SHA-256 of the raw 32-byte CA public key>",
 *    "at":"<provisioner host:port>","id":"<16 hex>","s":"<base64url of 32 random bytes>"}
 *
 * Keys: joinKey = HKDF-SHA256(ikm = secret, salt = id, info = "silo/join/v1 key", 32 bytes). The org
 * dir keeps only joinKey (a one-way function of the secret: the token string cannot be rebuilt from it).
 * From it: macKey (info "silo/join/v1 mac") for HMAC-SHA256 of the join request and bundleKey
 * (info "silo/join/v1 bundle") for AES-256-GCM of the answer. The secret itself never crosses the wire.
 */

export const TOKEN_PREFIX = 'silo1.';
export const TOKEN_ID_PATTERN = /^[0-9a-f]{16}$/;

const Base64Url = /^[A-Za-z0-9_-]+$/;

export const JoinTokenSchema = z.strictObject({
  v: z.literal(1),
  org: z.string().regex(ORG_NAME_PATTERN, 'org name'),
  ca: z.string().regex(/^sha256:[0-9a-f]{64}$/, 'CA fingerprint: "sha256:" and 64 hex digits'),
  at: z.string().min(3).max(255),
  id: z.string().regex(TOKEN_ID_PATTERN, 'token id: 16 hex digits'),
  s: z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'secret: 43 chars of base64url (32 bytes)'),
});
export type JoinToken = z.infer<typeof JoinTokenSchema>;

export class JoinTokenError extends SiloError<'invalid_token'> {
  constructor(message: string) {
    super('invalid_token', message);
  }
}

/** "sha256:<hex>" of the raw Ed25519 key behind a base64 CA public key (as in org.json and bundles). */
export function caFingerprint(caPublicKeyBase64: string): string {
  const raw = decodeBase64Strict(caPublicKeyBase64, 'CA public key');
  return `sha256:${createHash('sha256').update(raw).digest('hex')}`;
}

export function newTokenId(): string {
  return randomBytes(8).toString('hex');
}

export function newTokenSecret(): string {
  return randomBytes(32).toString('base64url');
}

export function formatJoinToken(token: JoinToken): string {
  const parsed = JoinTokenSchema.parse(token);
  // Fixed key order: the same token always prints the same string.
  const { v, org, ca, at, id, s } = parsed;
  return `${TOKEN_PREFIX}${Buffer.from(JSON.stringify({ v, org, ca, at, id, s }), 'utf8').toString('base64url')}`;
}

/** Parses a token string; every failure says what is wrong without echoing the secret. */
export function parseJoinToken(text: string): JoinToken {
  const trimmed = text.trim();
  if (!trimmed.startsWith(TOKEN_PREFIX))
    throw new JoinTokenError(`not a silo join token (expected "${TOKEN_PREFIX}…")`);
  const body = trimmed.slice(TOKEN_PREFIX.length);
  if (!Base64Url.test(body))
    throw new JoinTokenError('not a silo join token (not base64url after the prefix)');
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(body, 'base64url').toString('utf8'));
  } catch {
    throw new JoinTokenError('not a silo join token (truncated or garbage)');
  }
  const result = JoinTokenSchema.safeParse(value);
  if (!result.success) {
    const fields = [...new Set(result.error.issues.map((issue) => issue.path.join('.') || 'token'))];
    throw new JoinTokenError(`not a valid silo join token (bad ${fields.join(', ')})`);
  }
  return result.data;
}

function hkdf(ikm: Uint8Array, salt: string, info: string): Buffer {
  return Buffer.from(hkdfSync('sha256', ikm, Buffer.from(salt, 'utf8'), Buffer.from(info, 'utf8'), 32));
}

/** What the org dir keeps for a token: a one-way function of the secret, salted with the token id. */
export function joinKeyOf(tokenId: string, secret: string): Buffer {
  const raw = Buffer.from(secret, 'base64url');
  if (raw.length !== 32) throw new JoinTokenError('token secret: expected 32 bytes');
  return hkdf(raw, tokenId, 'silo/join/v1 key');
}

const macKeyOf = (joinKey: Uint8Array): Buffer => hkdf(joinKey, '', 'silo/join/v1 mac');
const bundleKeyOf = (joinKey: Uint8Array): Buffer => hkdf(joinKey, '', 'silo/join/v1 bundle');

/** The bytes the joiner's MAC covers: a domain tag, then the canonical JSON of token id and request. */
export function joinMacPayload(tokenId: string, request: unknown): Uint8Array {
  return Buffer.concat([Buffer.from('silo/join/v1 request\n', 'utf8'), canonicalBytes({ tokenId, request })]);
}

/** base64url HMAC-SHA256 of the join request under the token's MAC key. */
export function joinRequestMac(joinKey: Uint8Array, tokenId: string, request: unknown): string {
  return createHmac('sha256', macKeyOf(joinKey)).update(joinMacPayload(tokenId, request)).digest('base64url');
}

/** Constant-time check of a presented MAC (any length or garbage is simply false). */
export function verifyJoinRequestMac(
  joinKey: Uint8Array,
  tokenId: string,
  request: unknown,
  mac: string,
): boolean {
  let expected: Buffer;
  try {
    expected = createHmac('sha256', macKeyOf(joinKey)).update(joinMacPayload(tokenId, request)).digest();
  } catch {
    return false; // not canonically encodable: not what any joiner MACed
  }
  const presented = Buffer.from(mac, 'base64url');
  // timingSafeEqual needs equal lengths; compare digests of both so the length leaks nothing either.
  const a = createHash('sha256').update(expected).digest();
  const b = createHash('sha256').update(presented).digest();
  return timingSafeEqual(a, b);
}

export interface SealedBox {
  alg: 'A256GCM';
  iv: string;
  ct: string;
  tag: string;
}

const SealedBoxSchema = z.strictObject({
  alg: z.literal('A256GCM'),
  iv: z.string().regex(/^[A-Za-z0-9_-]{16}$/),
  ct: z.string().regex(/^[A-Za-z0-9_-]*$/),
  tag: z.string().regex(/^[A-Za-z0-9_-]{22}$/),
});

/** The AAD binds an answer to its token and to the node that asked, so it cannot be replayed to another. */
function aadOf(tokenId: string, peerId: string): Buffer {
  return Buffer.from(`silo/join/v1 bundle\n${tokenId}\n${peerId}`, 'utf8');
}

/** AES-256-GCM of `plaintext` under the token's bundle key, random 96-bit IV. */
export function sealForJoiner(
  joinKey: Uint8Array,
  tokenId: string,
  peerId: string,
  plaintext: string,
): SealedBox {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', bundleKeyOf(joinKey), iv);
  cipher.setAAD(aadOf(tokenId, peerId));
  const ct = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  return {
    alg: 'A256GCM',
    iv: iv.toString('base64url'),
    ct: ct.toString('base64url'),
    tag: cipher.getAuthTag().toString('base64url'),
  };
}

/** Decrypts a sealed answer; null when it was not sealed under this token's key for this node. */
export function openFromProvisioner(
  joinKey: Uint8Array,
  tokenId: string,
  peerId: string,
  box: unknown,
): string | null {
  const parsed = SealedBoxSchema.safeParse(box);
  if (!parsed.success) return null;
  try {
    const decipher = createDecipheriv(
      'aes-256-gcm',
      bundleKeyOf(joinKey),
      Buffer.from(parsed.data.iv, 'base64url'),
    );
    decipher.setAAD(aadOf(tokenId, peerId));
    decipher.setAuthTag(Buffer.from(parsed.data.tag, 'base64url'));
    return Buffer.concat([
      decipher.update(Buffer.from(parsed.data.ct, 'base64url')),
      decipher.final(),
    ]).toString('utf8');
  } catch {
    return null;
  }
}

/** "host:port" with a port 1-65535 (IPv6 in brackets); null when it is not one. */
export function parseHostPort(text: string): { host: string; port: number } | null {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(text);
  const host = match?.[1] ?? match?.[2];
  const port = Number(match?.[3]);
  if (!match || host === undefined || !(port >= 1 && port <= 65535)) return null;
  return { host, port };
}
