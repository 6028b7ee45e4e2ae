import type { FastifyInstance } from 'fastify';
import { checkEnrollmentRecord, checkRevocation } from '../../identity/ca.js';
import { isHostInCidr, parseIpv4, parseOverlayCidr } from '../../identity/ipv4-cidr.js';
import { scratchSecretProblem } from '../../identity/scratch-secret-signing.js';
import type { SignedScratchSecret } from '../../state/schemas.js';
import type { RouteContext } from './context.js';
import { ApiError, badRequest, conflict, notFound } from './errors.js';
import { DrainBodySchema, NodeIdParams, parseInput } from './validate.js';
import { nodeRows, ownershipHealth } from './views.js';

/** Status, nodes, drain flags, enrollment records and revocations, metrics. */
export function registerClusterRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const { agent } = ctx;

  app.get('/v1/status', async () => ({
    ...agent.status(),
    // Remote address per libp2p connection: shows which network gossip really runs over (overlay or not).
    connections: agent.gossip.connectionInfo(),
    now: Date.now(),
    convergence: ctx.peerDigests?.estimate() ?? null,
    ownership: ownershipHealth(agent),
    // Numbers only, never keys: whether a new generation reached this node (docs/operations.md).
    scratchKeys: ctx.scratchKeyGenerations ? { generations: ctx.scratchKeyGenerations() } : null,
  }));

  app.get('/v1/nodes', async () => ({ nodes: nodeRows(agent, ctx.peerDigests) }));

  const requireEnrolled = (id: string): void => {
    if (!agent.enrollment.list().some((record) => record.nodeId === id)) {
      throw notFound(`unknown node "${id}": no valid enrollment record`);
    }
  };

  for (const [action, draining] of [
    ['drain', true],
    ['undrain', false],
  ] as const) {
    app.post(`/v1/nodes/:id/${action}`, async (request) => {
      const { id } = parseInput(NodeIdParams, request.params, 'node id');
      const body = parseInput(DrainBodySchema, request.body, `${action} request`);
      requireEnrolled(id);
      const flag = agent.enrollment.setDraining(id, {
        draining,
        at: Date.now(),
        by: body.by ?? `api@${agent.nodeId}`,
      });
      return { nodeId: id, ...flag };
    });
  }

  app.post('/v1/enrollments', async (request, reply) => {
    const caPublicKey = requireCa(ctx);
    const checked = checkEnrollmentRecord(caPublicKey, request.body);
    if (!checked.ok)
      throw badRequest(`enrollment record refused (${checked.failure.reason}): ${checked.failure.message}`);
    const record = checked.value;
    if (ctx.overlayCidr && !isHostInCidr(parseOverlayCidr(ctx.overlayCidr), parseIpv4(record.overlayIp))) {
      throw badRequest(
        `overlay IP ${record.overlayIp} is not a host address of the org's ${ctx.overlayCidr}`,
      );
    }
    for (const other of agent.trust?.active().active ?? agent.enrollment.list()) {
      if (other.nodeId === record.nodeId) continue;
      const clash =
        other.overlayIp === record.overlayIp
          ? `overlay IP ${record.overlayIp}`
          : other.peerId === record.peerId
            ? `peer id ${record.peerId}`
            : other.wgPublicKey === record.wgPublicKey
              ? 'WireGuard key'
              : null;
      if (clash) throw conflict(`${clash} is already held by enrolled node "${other.nodeId}"`);
    }
    const before = agent.enrollment.get(record.nodeId);
    const changed = JSON.stringify(before) !== JSON.stringify(record);
    if (changed) agent.enrollment.put(record);
    reply.status(before ? 200 : 201);
    return { record, changed };
  });

  app.post('/v1/revocations', async (request, reply) => {
    const caPublicKey = requireCa(ctx);
    const checked = checkRevocation(caPublicKey, request.body);
    if (!checked.ok)
      throw badRequest(`revocation refused (${checked.failure.reason}): ${checked.failure.message}`);
    const revocation = checked.value;
    requireEnrolled(revocation.nodeId);
    const before = agent.enrollment.revocation(revocation.nodeId);
    if (before && before.revokedAt >= revocation.revokedAt) {
      // An equal or later revocation is already in place: keep it (the later one revokes more).
      return { revocation: before, changed: false };
    }
    agent.enrollment.revoke(revocation);
    reply.status(201);
    return { revocation, changed: true };
  });

  // CA-signed scratch secrets sealed to nodes (docs/protocol.md, "Scratch key envelopes"), written into the
  // enrollment document: what `silo ca revoke` hands the remaining nodes after starting a new generation.
  app.post('/v1/scratch-keys', async (request, reply) => {
    const caPublicKey = requireCa(ctx);
    const body = request.body as { keys?: unknown } | null;
    const keys = body?.keys;
    if (
      typeof body !== 'object' ||
      body === null ||
      !Array.isArray(keys) ||
      keys.length === 0 ||
      keys.length > 4096
    )
      throw badRequest('expected {"keys": [<signed scratch key envelope>, …]} with 1 to 4096 envelopes');
    const envelopes: SignedScratchSecret[] = [];
    for (const [i, value] of keys.entries()) {
      const problem = scratchSecretProblem(caPublicKey, value);
      if (problem !== null) throw badRequest(`keys[${i}] refused: ${problem}`);
      // Not required to be enrolled here yet: a node the CA signed without --socket gets it when it joins.
      envelopes.push(value as SignedScratchSecret);
    }
    agent.enrollment.putScratchKeys(envelopes);
    reply.status(201);
    return { written: envelopes.map((e) => ({ nodeId: e.nodeId, generation: e.generation })) };
  });

  app.get('/v1/metrics', async (_request, reply) => {
    reply.type(agent.registry.contentType);
    return agent.registry.metrics();
  });
}

function requireCa(ctx: RouteContext): string {
  if (!ctx.caPublicKey) {
    throw new ApiError(
      'internal',
      'this agent runs without an org CA key (no enrollment bundle); cannot verify',
    );
  }
  return ctx.caPublicKey;
}
