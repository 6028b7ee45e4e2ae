import type { ServerResponse } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Liveness } from '../../gossip/index.js';
import { Origin } from '../../state/names.js';
import type { RouteContext } from './context.js';

const KEEPALIVE_MS = 15_000;

/** GET /v1/events (server-sent events); the long-lived response helper the logs route uses too. */
export function registerStreamRoutes(app: FastifyInstance, ctx: RouteContext): void {
  const { agent } = ctx;

  app.get('/v1/events', (request, reply) => {
    const res = openStream(request, reply, ctx, 'text/event-stream');
    const send = (event: string, data: unknown): void => {
      res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    };
    send('hello', { nodeId: agent.nodeId, digests: agent.state.digestsAll(), at: Date.now() });
    const offs: Array<() => void> = [];
    offs.push(
      agent.state.onChange((doc, _update, origin) => {
        send('state', { doc, digest: agent.state.digest(doc), origin: originName(origin), at: Date.now() });
      }),
    );
    for (const state of ['alive', 'suspect', 'dead'] as const satisfies readonly Liveness[]) {
      offs.push(
        agent.gossip.detector.on(state, (event) => {
          send('liveness', { ...event, state, at: Date.now() });
        }),
      );
    }
    // A comment line now and then keeps proxies and idle timeouts from closing a quiet stream.
    const keepalive = setInterval(() => res.write(': keep-alive\n\n'), KEEPALIVE_MS);
    res.on('close', () => {
      clearInterval(keepalive);
      for (const off of offs) off();
    });
  });
}

/** Hijacks the reply for a long-lived response that the API ends on close. */
export function openStream(
  request: FastifyRequest,
  reply: FastifyReply,
  ctx: RouteContext,
  contentType: string,
  headers: Record<string, string> = {},
): ServerResponse {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    'content-type': contentType,
    'cache-control': 'no-cache',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
    ...headers,
  });
  ctx.streams.add(res);
  res.on('close', () => ctx.streams.delete(res));
  request.raw.on('close', () => res.end());
  return res;
}

function originName(origin: unknown): string {
  for (const [name, value] of Object.entries(Origin)) if (value === origin) return name;
  return 'other';
}
