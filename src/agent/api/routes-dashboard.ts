import type { FastifyInstance, FastifyReply } from 'fastify';
import { DASHBOARD_CSP, type DashboardAssets } from '../../dashboard/assets.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** A route the bearer-token hook lets through (control-api.ts): only static files that hold no data. */
    public?: boolean;
  }
}

/** Route config of the dashboard's static files. */
export const PUBLIC_ROUTE = { public: true } as const;

/**
 * GET /dashboard/ and its two assets, on the TCP listener when api.dashboard
 * is on (docs/api.md, "Dashboard"). They hold no data, so they need no token;
 * the page then calls the JSON API with the token the user enters.
 */
export function registerDashboardRoutes(app: FastifyInstance, assets: DashboardAssets): void {
  const send = (reply: FastifyReply, type: string, body: string): FastifyReply =>
    reply
      .header('content-security-policy', DASHBOARD_CSP)
      .header('x-content-type-options', 'nosniff')
      .header('referrer-policy', 'no-referrer')
      .header('cache-control', 'no-cache')
      .type(type)
      .send(body);
  // Relative asset URLs in the page need the trailing slash.
  app.get('/dashboard', { config: PUBLIC_ROUTE }, (_request, reply) => reply.redirect('/dashboard/', 302));
  app.get('/dashboard/', { config: PUBLIC_ROUTE }, (_request, reply) =>
    send(reply, 'text/html; charset=utf-8', assets.html),
  );
  app.get('/dashboard/app.js', { config: PUBLIC_ROUTE }, (_request, reply) =>
    send(reply, 'text/javascript; charset=utf-8', assets.js),
  );
  app.get('/dashboard/style.css', { config: PUBLIC_ROUTE }, (_request, reply) =>
    send(reply, 'text/css; charset=utf-8', assets.css),
  );
}
