import { readFile } from 'node:fs/promises';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply } from 'fastify';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { EnrollmentBundle } from '../identity/bundle.js';
import {
  joinKeyOf,
  newTokenSecret,
  sealForJoiner,
  TOKEN_ID_PATTERN,
  verifyJoinRequestMac,
} from '../identity/join-token.js';
import {
  EnrollmentConflictError,
  type SignEnrollmentOptions,
  type SignEnrollmentResult,
  signEnrollment,
} from '../identity/org-signing.js';
import { loadToken, type StoredToken, saveToken, tokenState } from '../identity/token-store.js';
import type { WitnessConfigRecord } from '../state/schemas.js';
import { InputError } from '../util/input-error.js';
import { SiloError } from '../util/silo-error.js';

/**
 * The join provisioner (docs/protocol.md, "Join tokens and `POST /v1/join`"):
 * a small HTTP listener, separate from the control API (which needs the
 * operator's token), served by an agent that holds the org dir. It turns a
 * join request authenticated by a join token into a CA-signed bundle, exactly
 * as `silo ca sign --socket` would, and answers with the bundle sealed under
 * a key only the token's holder can derive.
 */

export type JoinErrorCode =
  | 'bad_request'
  | 'invalid_token'
  | 'token_expired'
  | 'token_used_up'
  | 'token_revoked'
  | 'not_found'
  | 'conflict'
  | 'rate_limited'
  | 'internal';

const STATUS: Record<JoinErrorCode, number> = {
  bad_request: 400,
  invalid_token: 401,
  token_expired: 403,
  token_used_up: 403,
  token_revoked: 403,
  not_found: 404,
  conflict: 409,
  rate_limited: 429,
  internal: 500,
};

export class JoinError extends SiloError<JoinErrorCode> {
  readonly status: number;
  constructor(code: JoinErrorCode, message: string) {
    super(code, message);
    this.status = STATUS[code];
  }
}

export const JoinBodySchema = z.strictObject({
  v: z.literal(1),
  tokenId: z.string().max(64),
  /** The enrollment request `silo node init` makes (proof of possession included); checked by the CA code. */
  request: z.unknown(),
  /** base64url HMAC-SHA256 (join-token.ts, `joinRequestMac`). */
  mac: z.string().max(128),
});

/** What the sealed answer decrypts to. */
export interface JoinPayload {
  bundle: EnrollmentBundle;
  /** The org's libp2p private-network key file (swarm.key), when the org has one. */
  swarmKey?: string;
}

export interface SignedJoin {
  bundle: EnrollmentBundle;
  witnessConfig: WitnessConfigRecord | null;
  witnessesChanged: boolean;
}

export interface ProvisionerOptions {
  orgDir: string;
  host: string;
  port: number;
  /** Seed peers handed to joiners (multiaddrs with /p2p/), read at each join: the agent's addresses can change. */
  seeds: () => string[];
  /**
   * Registers the signed record (and a new witness configuration) with the
   * running cluster, as `silo ca sign --socket` does; refusals throw.
   */
  register?: (signed: SignedJoin) => Promise<void>;
  logger: Logger;
  now?: () => number;
  /** Refusals one address may cause per minute before it is answered 429 (default 10). */
  maxFailuresPerMinute?: number;
}

// A join key no token has: an unknown token id costs the same MAC computation as a known one.
const DUMMY_JOIN_KEY = joinKeyOf('0000000000000000', newTokenSecret());

export class Provisioner {
  address: { host: string; port: number } | null = null;
  private readonly app: FastifyInstance;
  private readonly logger: Logger;
  /** Joins run one at a time: a token's uses and the CA's IP allocation are read-modify-write of files. */
  private queue: Promise<unknown> = Promise.resolve();
  private readonly failures = new Map<string, number[]>();

  private constructor(private readonly options: ProvisionerOptions) {
    this.logger = options.logger.child({ component: 'provisioner' });
    this.app = Fastify({ logger: false, forceCloseConnections: true, bodyLimit: 64 * 1024 });
    this.app.setErrorHandler((err: FastifyError | Error, _request, reply) => {
      if (err instanceof JoinError) return send(reply, err);
      const status = (err as FastifyError).statusCode;
      if (typeof status === 'number' && status >= 400 && status < 500)
        return send(reply, new JoinError('bad_request', err.message));
      this.logger.error({ err }, 'join failed');
      return send(reply, new JoinError('internal', `internal error: ${err.message}`));
    });
    this.app.setNotFoundHandler((request, reply) =>
      send(
        reply,
        new JoinError(
          'not_found',
          `${request.method} ${request.url}: the provisioner serves only POST /v1/join`,
        ),
      ),
    );
    this.app.post('/v1/join', async (request, reply) => {
      const remote = request.ip;
      this.checkRate(remote);
      const body = JoinBodySchema.safeParse(request.body);
      if (!body.success)
        throw new JoinError('bad_request', 'not a join request ({v: 1, tokenId, request, mac})');
      try {
        const answer = await this.serialized(() =>
          this.join(body.data.tokenId, body.data.request, body.data.mac),
        );
        reply.status(201);
        return answer;
      } catch (err) {
        if (err instanceof JoinError && err.status !== 500) {
          // The token id is no secret (it names the token in `silo token list`); the MAC and request stay out.
          this.logger.warn(
            { remote, tokenId: body.data.tokenId.slice(0, 16), code: err.code },
            `join refused: ${err.message}`,
          );
          if (err.status === 401 || err.status === 403) this.noteFailure(remote);
        }
        throw err;
      }
    });
  }

  static async start(options: ProvisionerOptions): Promise<Provisioner> {
    const provisioner = new Provisioner(options);
    await provisioner.app.listen({ host: options.host, port: options.port });
    const address = provisioner.app.server.address();
    const port = typeof address === 'object' && address !== null ? address.port : options.port;
    provisioner.address = { host: options.host, port };
    provisioner.logger.info({ host: options.host, port }, 'join provisioner listening');
    return provisioner;
  }

  async close(): Promise<void> {
    await this.app.close().catch(() => undefined);
  }

  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private now(): number {
    return this.options.now?.() ?? Date.now();
  }

  /** Guessing tokens costs time: an address with too many refusals in the last minute is answered 429. */
  private checkRate(remote: string): void {
    const limit = this.options.maxFailuresPerMinute ?? 10;
    const recent = (this.failures.get(remote) ?? []).filter((at) => at > this.now() - 60_000);
    // Only addresses with recent refusals are kept: the map stays as small as the guessing is.
    if (recent.length === 0) this.failures.delete(remote);
    else this.failures.set(remote, recent);
    if (recent.length >= limit)
      throw new JoinError(
        'rate_limited',
        'too many refused join requests from this address; try again in a minute',
      );
  }

  private noteFailure(remote: string): void {
    const list = this.failures.get(remote) ?? [];
    list.push(this.now());
    this.failures.set(remote, list);
    if (this.failures.size > 10_000) this.failures.clear();
  }

  private async join(tokenId: string, request: unknown, mac: string): Promise<unknown> {
    const { orgDir } = this.options;
    const token = TOKEN_ID_PATTERN.test(tokenId) ? await loadToken(orgDir, tokenId) : null;
    const joinKey = token === null ? DUMMY_JOIN_KEY : Buffer.from(token.joinKey, 'base64url');
    // An unknown token and a wrong secret get the same answer: a prober learns nothing about which ids exist.
    if (!verifyJoinRequestMac(joinKey, tokenId, request, mac) || token === null)
      throw new JoinError('invalid_token', 'join token not accepted (unknown token, or not its secret)');
    const now = this.now();
    switch (tokenState(token, now)) {
      case 'revoked':
        throw new JoinError('token_revoked', `join token ${token.id} was revoked`);
      case 'used-up':
        throw new JoinError(
          'token_used_up',
          `join token ${token.id} is used up (${token.uses} use${token.uses === 1 ? '' : 's'})`,
        );
      case 'expired':
        throw new JoinError(
          'token_expired',
          `join token ${token.id} expired at ${new Date(token.expiresAt).toISOString()}`,
        );
      case 'active':
        break;
    }
    // The use is spent before anything is signed, so a crash can lose a use but never grant an extra one.
    await saveToken(orgDir, { ...token, usesLeft: token.usesLeft - 1 });
    let signed: SignEnrollmentResult;
    try {
      signed = await signEnrollment(this.signOptions(token, request));
      await this.options.register?.(signed);
    } catch (err) {
      await this.refund(token.id);
      if (err instanceof JoinError) throw err;
      if (err instanceof EnrollmentConflictError) throw new JoinError('conflict', err.message);
      if (err instanceof InputError) throw new JoinError('bad_request', (err as Error).message);
      throw err;
    }
    const after = await loadToken(orgDir, token.id);
    if (after !== null)
      await saveToken(orgDir, { ...after, joined: [...after.joined, signed.bundle.record.nodeId] });
    const payload: JoinPayload = {
      bundle: signed.bundle,
      ...(signed.pnetKey !== null ? { swarmKey: await readFile(signed.pnetKey, 'utf8') } : {}),
    };
    this.logger.info(
      { tokenId: token.id, node: signed.bundle.record.nodeId, overlayIp: signed.bundle.record.overlayIp },
      'node joined with a token',
    );
    return {
      v: 1,
      nodeId: signed.bundle.record.nodeId,
      sealed: sealForJoiner(joinKey, token.id, signed.bundle.record.peerId, JSON.stringify(payload)),
    };
  }

  private signOptions(token: StoredToken, request: unknown): SignEnrollmentOptions {
    return {
      orgDir: this.options.orgDir,
      request,
      source: 'join request',
      seeds: this.options.seeds(),
      labels: token.labels,
      // A token never re-keys a live node: that stays an explicit `silo ca sign --rekey`.
      rekey: false,
      role: 'node',
    };
  }

  private async refund(id: string): Promise<void> {
    const current = await loadToken(this.options.orgDir, id).catch(() => null);
    if (current !== null)
      await saveToken(this.options.orgDir, { ...current, usesLeft: current.usesLeft + 1 });
  }
}

function send(reply: FastifyReply, err: JoinError): FastifyReply {
  return reply.status(err.status).send({ error: { code: err.code, message: err.message } });
}
