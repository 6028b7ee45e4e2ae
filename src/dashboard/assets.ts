import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { packageRoot } from '../util/package-root.js';

/**
 * The dashboard's static files (docs/api.md, "Dashboard"), held in memory.
 *
 * The front end is TypeScript (src/dashboard/web/, type-checked with the rest
 * of the code base) and browsers run JavaScript, so it is bundled once with
 * esbuild when the agent starts. esbuild is already what runs silo itself
 * (through tsx), so this adds no build step, no generated file to keep in
 * step with its source, and nothing fetched at runtime: the page works
 * offline and loads nothing but these three files.
 */
export interface DashboardAssets {
  html: string;
  css: string;
  js: string;
}

export async function loadDashboardAssets(): Promise<DashboardAssets> {
  // From the package root, not this module: the agent may run from the CLI
  // bundle (docs/cli.md, "Start-up"), and the page's sources stay in src/.
  const web = join(packageRoot(), 'src', 'dashboard', 'web');
  // Loaded only when the dashboard is on: no agent pays for esbuild otherwise.
  const { build } = await import('esbuild');
  const [html, css, bundled] = await Promise.all([
    readFile(join(web, 'index.html'), 'utf8'),
    readFile(join(web, 'style.css'), 'utf8'),
    build({
      entryPoints: [join(web, 'main.ts')],
      bundle: true,
      write: false,
      format: 'esm',
      target: 'es2022',
      platform: 'browser',
      // Readable in the browser's developer tools; the bundle is small either way.
      minify: false,
      legalComments: 'none',
      logLevel: 'silent',
    }),
  ]);
  const js = bundled.outputFiles[0]?.text;
  if (js === undefined) throw new Error('dashboard bundle: esbuild produced no output');
  return { html, css, js };
}

/**
 * Only the dashboard's own files, no inline script or style, nothing from
 * elsewhere; data calls go to this same origin (the JSON API).
 */
export const DASHBOARD_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self'",
  "img-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');
