import type { FastifyInstance } from 'fastify';
import { checkWitnessConfigRecord } from '../../identity/ca.js';
import { changeProblem } from '../../ownership/witness-config.js';
import type { WitnessConfigRecord } from '../../state/schemas.js';
import type { RouteContext } from './context.js';
import { ApiError, badRequest, conflict } from './errors.js';
import { witnessesView } from './views.js';

/**
 * The witness configuration (docs/placement.md, "Witnesses"): which nodes
 * grant workload leases. Read it with liveness; hand a new CA-signed version
 * to the cluster (what `silo ca witnesses set --socket` does).
 */
export function registerWitnessRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const { agent } = ctx;

  app.get('/v1/witnesses', async () => witnessesView(agent));

  app.post('/v1/witnesses', async (request, reply) => {
    if (!ctx.caPublicKey) {
      throw new ApiError(
        'internal',
        'this agent runs without an org CA key (no enrollment bundle); cannot verify',
      );
    }
    const checked = checkWitnessConfigRecord(ctx.caPublicKey, request.body);
    if (!checked.ok) {
      const { reason, message } = checked.failure;
      throw badRequest(
        reason === 'schema'
          ? `invalid witness configuration: ${message}`
          : `witness configuration refused (${reason}): ${message}`,
      );
    }
    const record = checked.value;
    const current = agent.enrollment.witnessConfig();
    if (current !== null && record.version === current.version) {
      // The version in force again: nothing to do when it is the same record (a retried submission).
      if (sameConfig(current, record)) return { config: summary(current), changed: false };
      throw conflict(
        `witness configuration v${record.version} is in force already with other content (${current.witnesses.join(', ')}); sign the next version, v${current.version + 1}`,
      );
    }
    const problem = changeProblem(current, record);
    if (problem !== null) {
      throw conflict(
        `witness configuration v${record.version} refused: ${problem} (in force: ${
          current === null ? 'none' : `v${current.version}: ${current.witnesses.join(', ')}`
        })`,
      );
    }
    agent.enrollment.putWitnessConfig(record);
    reply.status(201);
    return { config: summary(record), changed: true };
  });
}

function summary(record: WitnessConfigRecord): { version: number; witnesses: string[]; issuedAt: number } {
  return { version: record.version, witnesses: [...record.witnesses], issuedAt: record.issuedAt };
}

function sameConfig(a: WitnessConfigRecord, b: WitnessConfigRecord): boolean {
  return (
    a.issuedAt === b.issuedAt &&
    a.cert === b.cert &&
    JSON.stringify([...a.witnesses].sort()) === JSON.stringify([...b.witnesses].sort())
  );
}
