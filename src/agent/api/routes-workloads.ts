import type { FastifyInstance } from 'fastify';
import { verifyImageDigest } from '../../identity/image-signing.js';
import { ownershipClass } from '../../reconciler/placement/types.js';
import type { RouteContext } from './context.js';
import { badRequest, notFound } from './errors.js';
import { parseInput, WorkloadNameParams, WorkloadSpecInputSchema } from './validate.js';
import { workloadRow, workloadRows } from './views.js';

/** The workloads document: list, read, put (revision bumped by the view), delete. */
export function registerWorkloadRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const { agent } = ctx;

  app.get('/v1/workloads', async () => ({ workloads: workloadRows(agent) }));

  app.get('/v1/workloads/:name', async (request) => {
    const { name } = parseInput(WorkloadNameParams, request.params, 'workload name');
    const spec = agent.workloads.get(name);
    if (!spec) throw notFound(`unknown workload "${name}"`);
    return workloadRows(agent).find((row) => row.name === spec.name) ?? workloadRow(spec, new Map());
  });

  app.put('/v1/workloads/:name', async (request, reply) => {
    const { name } = parseInput(WorkloadNameParams, request.params, 'workload name');
    const body = request.body;
    const withName =
      body !== null && typeof body === 'object' && !Array.isArray(body) && !('name' in body)
        ? { ...body, name }
        : body;
    const input = parseInput(WorkloadSpecInputSchema, withName, 'workload spec');
    if (input.name !== name) {
      throw badRequest(`spec name "${input.name}" does not match the workload "${name}" in the URL`);
    }
    // The witnesses refuse a lease longer than their bound (rule W6); say so
    // here rather than let the workload wait for a lease it never gets.
    if (ownershipClass(input) === 'exclusive' && input.stopTimeoutMs > ctx.maxStopTimeoutMs) {
      throw badRequest(
        `stopTimeoutMs ${input.stopTimeoutMs} is longer than this cluster allows an exclusive workload (services.max_stop_timeout = ${ctx.maxStopTimeoutMs / 1000} s): lower stop_timeout, or raise services.max_stop_timeout on every node (a witness restart then waits longer; docs/placement.md, rule W6)`,
      );
    }
    if (ctx.caPublicKey) {
      const failure = verifyImageDigest(ctx.caPublicKey, input.imageDigest, input.imageSignature);
      if (failure !== null) {
        throw badRequest(
          `imageSignature is not the org CA's signature over ${input.imageDigest} (${failure}); sign it with \`silo image sign\``,
        );
      }
    }
    const before = agent.workloads.get(name);
    const { revision: _ignored, ...content } = input;
    const spec = agent.workloads.put(content);
    reply.status(before ? 200 : 201);
    return { spec, changed: before?.revision !== spec.revision };
  });

  app.delete('/v1/workloads/:name', async (request) => {
    const { name } = parseInput(WorkloadNameParams, request.params, 'workload name');
    if (!agent.workloads.delete(name)) throw notFound(`unknown workload "${name}"`);
    return { deleted: name };
  });
}
