import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

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

const WEB = new URL('./web/', import.meta.url);

export async function loadDashboardAssets(): Promise<DashboardAssets> {
  const [html, css, bundled] = await Promise.all([
    readFile(new URL('index.html', WEB), 'utf8'),
    readFile(new URL('style.css', WEB), 'utf8'),
    build({
      entryPoints: [fileURLToPath(new URL('main.ts', WEB))],
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
