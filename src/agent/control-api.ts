import { createHash, timingSafeEqual } from 'node:crypto';
import { chmod, rm } from 'node:fs/promises';
import type { ServerResponse } from 'node:http';
import Fastify, { type FastifyError, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { type DashboardAssets, loadDashboardAssets } from '../dashboard/assets.js';
import { DEFAULT_MAX_STOP_TIMEOUT_MS } from '../ownership/lease-bounds.js';
import type { ImageStore } from '../reconciler/image-store.js';
import { SiloError } from '../util/silo-error.js';
import type { RouteContext } from './api/context.js';
import { ApiError, apiErrorOf, badRequest, codeForStatus, errorBody } from './api/errors.js';
import { registerClusterRoutes } from './api/routes-cluster.js';
import { registerDashboardRoutes } from './api/routes-dashboard.js';
import { registerImageRoutes } from './api/routes-images.js';
import { registerLogRoutes } from './api/routes-logs.js';
import { registerStreamRoutes } from './api/routes-streams.js';
import { registerWitnessRoutes } from './api/routes-witnesses.js';
import { registerWorkloadRoutes } from './api/routes-workloads.js';
import { prepareSocketPath } from './api/unix-socket.js';
import type { NodeAgent } from './node-agent.js';
import type { PeerDigests } from './peer-digests.js';

export const DEFAULT_MAX_IMAGE_BYTES = 2 * 1024 * 1024 * 1024;

export interface ControlApiOptions {
  agent: NodeAgent;
  logger: Logger;
  /** Unix socket of the API (created 0600; only the agent's user can connect). */
  socketPath: string;
  /** Optional loopback TCP listener; every request must carry `Authorization: Bearer <token>`. */
  tcp?: { host: string; port: number; token: string };
  /** Serve the web dashboard under /dashboard/ on the TCP listener (api.dashboard; needs `tcp`). */
  dashboard?: boolean;
  dataDir: string;
  caPublicKey?: string;
  overlayCidr?: string;
  images?: ImageStore;
  peerDigests?: PeerDigests;
  /** The scratch key generations this node holds; absent on clients. */
  scratchKeyGenerations?: () => number[];
  maxImageBytes?: number;
  /** services.max_stop_timeout: an exclusive workload with a longer stop_timeout is refused at apply. */
  maxStopTimeoutMs?: number;
}

/**
 * The agent's local control API (docs/api.md): HTTP + JSON over a unix
 * socket, and optionally over loopback TCP with a bearer token. The socket
 * is trusted by file mode alone, like docker's or containerd's.
 */
export class ControlApi {
  readonly socketPath: string;
  /** The TCP address actually bound (port 0 in the options picks a free one). */
  tcpAddress: { host: string; port: number } | null = null;
  private readonly apps: FastifyInstance[];
  private readonly streams: Set<ServerResponse>;
  private readonly logger: Logger;

  private constructor(
    private readonly options: ControlApiOptions,
    ctx: RouteContext,
    dashboard: DashboardAssets | null,
  ) {
    this.socketPath = options.socketPath;
    // Both listeners share the context's set of open streams, so close() ends them all.
    this.streams = ctx.streams;
    this.logger = options.logger.child({ component: 'api' });
    this.apps = [buildApp(ctx, this.logger, null, null)];
    if (options.tcp) this.apps.push(buildApp(ctx, this.logger, options.tcp.token, dashboard));
  }

  static async start(options: ControlApiOptions): Promise<ControlApi> {
    const streams = new Set<ServerResponse>();
    const ctx: RouteContext = {
      agent: options.agent,
      dataDir: options.dataDir,
      caPublicKey: options.caPublicKey,
      overlayCidr: options.overlayCidr,
      images: options.images,
      peerDigests: options.peerDigests,
      ...(options.scratchKeyGenerations ? { scratchKeyGenerations: options.scratchKeyGenerations } : {}),
      maxImageBytes: options.maxImageBytes ?? DEFAULT_MAX_IMAGE_BYTES,
      maxStopTimeoutMs: options.maxStopTimeoutMs ?? DEFAULT_MAX_STOP_TIMEOUT_MS,
      streams,
    };
    if (options.dashboard && !options.tcp) {
      // The config schema refuses this too; a caller of this class must not get a silent no-op.
      throw new Error('the dashboard needs the TCP listener (api.tcp)');
    }
    // Bundled before listening: a broken front end fails the start, not the first page view.
    const dashboard = options.dashboard ? await loadDashboardAssets() : null;
    const api = new ControlApi(options, ctx, dashboard);
    try {
      await api.listen();
    } catch (err) {
      await api.close();
      throw err;
    }
    return api;
  }

  private async listen(): Promise<void> {
    const [unixApp, tcpApp] = this.apps;
    await prepareSocketPath(this.socketPath);
    await unixApp!.listen({ path: this.socketPath });
    // Before anything else can matter: only the agent's user may use the socket.
    await chmod(this.socketPath, 0o600);
    if (tcpApp && this.options.tcp) {
      await tcpApp.listen({ host: this.options.tcp.host, port: this.options.tcp.port });
      const address = tcpApp.server.address();
      const port = typeof address === 'object' && address !== null ? address.port : this.options.tcp.port;
      this.tcpAddress = { host: this.options.tcp.host, port };
    }
    this.logger.info({ socket: this.socketPath, tcp: this.tcpAddress }, 'control API listening');
    if (this.options.dashboard && this.tcpAddress) {
      this.logger.info(
        { url: `http://${this.tcpAddress.host}:${this.tcpAddress.port}/dashboard/` },
        'dashboard served (the page asks for the api.token_file token)',
      );
    }
  }

  /**
   * Runs one request through the API's own routes, in process (as if it came
   * on the unix socket): the join provisioner registers what it signed this
   * way, with exactly the checks `silo ca sign --socket` meets.
   */
  async inject(method: 'POST', url: string, json: unknown): Promise<{ status: number; body: unknown }> {
    const response = await this.apps[0]!.inject({
      method,
      url,
      payload: JSON.stringify(json),
      headers: { 'content-type': 'application/json' },
    });
    return { status: response.statusCode, body: response.json() as unknown };
  }

  /** Ends open streams, stops accepting, removes the socket file. */
  async close(): Promise<void> {
    for (const res of this.streams) res.end();
    this.streams.clear();
    await Promise.all(this.apps.map((app) => app.close().catch(() => undefined)));
    await rm(this.socketPath, { force: true });
  }
}

function buildApp(
  ctx: RouteContext,
  logger: Logger,
  token: string | null,
  dashboard: DashboardAssets | null,
): FastifyInstance {
  const app = Fastify({
    // Requests are logged at debug by the hook below; fastify's own info-level lines would flood the agent log.
    logger: false,
    forceCloseConnections: true,
    // Long path parameters reach our validation (400 with the documented
    // shape) instead of fastify's own 414 (node's header limit still caps URLs).
    maxParamLength: 16 * 1024,
  });
  if (token !== null) {
    const expected = digestOf(token);
    app.addHook('onRequest', async (request, reply) => {
      // The dashboard's static files hold no data (routes-dashboard.ts); everything else needs the token.
      if (request.routeOptions.config?.public === true) return;
      const header = request.headers.authorization ?? '';
      const match = /^Bearer (.+)$/.exec(header);
      // Compare fixed-length digests: timing reveals neither the token nor its length.
      if (!match || !timingSafeEqual(digestOf(match[1]!), expected)) {
        reply.header('www-authenticate', 'Bearer realm="silo"');
        reply.status(401).send(errorBody('unauthorized', 'missing or wrong bearer token'));
        return reply;
      }
    });
  }
  // A revoked node reaches nobody: a write it took would be acknowledged and
  // then never leave it (docs/security.md, "Revocation"). Reads still work.
  app.addHook('preHandler', async (request) => {
    if (request.method === 'GET' || request.method === 'HEAD') return;
    const revoked = ctx.agent.revocationOfSelf();
    if (revoked === null) return;
    throw new ApiError(
      'revoked',
      `this node was revoked by the org CA at ${new Date(revoked.revokedAt).toISOString()}` +
        `${revoked.reason.length > 0 ? ` (${revoked.reason})` : ''}: it takes no writes; use another node`,
    );
  });
  app.addHook('onResponse', async (request, reply) => {
    logger.debug({ method: request.method, url: request.url, status: reply.statusCode }, 'api request');
  });
  app.setErrorHandler((err: FastifyError | Error, request, reply) => {
    if (err instanceof SiloError) {
      const apiError = apiErrorOf(err);
      if (apiError.code !== 'internal') {
        return reply.status(apiError.status).send(errorBody(apiError.code, apiError.message));
      }
    }
    const status = (err as FastifyError).statusCode;
    if (typeof status === 'number' && status >= 400 && status < 500) {
      return reply.status(status).send(errorBody(codeForStatus(status), err.message));
    }
    logger.error({ err, method: request.method, url: request.url }, 'api request failed');
    return reply.status(500).send(errorBody('internal', `internal error: ${err.message}`));
  });
  // JSON bodies: plain JSON.parse (own properties only, so no prototype is
  // touched), and a `__proto__` key is refused by name rather than with
  // fastify's "not valid JSON".
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => {
    try {
      const value: unknown = JSON.parse(body as string, (key, v: unknown) => {
        if (key === '__proto__') throw new ApiError('bad_request', 'JSON key "__proto__" is refused');
        return v;
      });
      done(null, value);
    } catch (err) {
      done(err instanceof ApiError ? err : badRequest(`body is not valid JSON: ${(err as Error).message}`));
    }
  });
  app.setNotFoundHandler((request, reply) => {
    reply
      .status(404)
      .send(errorBody('not_found', `no such route: ${request.method} ${request.url.split('?')[0]}`));
  });
  registerClusterRoutes(app, ctx);
  registerWorkloadRoutes(app, ctx);
  registerStreamRoutes(app, ctx);
  registerLogRoutes(app, ctx);
  registerImageRoutes(app, ctx);
  registerWitnessRoutes(app, ctx);
  if (dashboard !== null) registerDashboardRoutes(app, dashboard);
  return app;
}

function digestOf(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}
