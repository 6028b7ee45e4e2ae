import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Browser, Page } from 'puppeteer-core';
import type { WorkloadRow } from '../../src/agent/api/views.js';
import { requireOrSkip } from '../overlay/tools.js';
import { type ClusterNode, silo, startEnrolledAgents, tempDir, waitFor } from './helpers.js';

/**
 * The web dashboard (docs/api.md, "Dashboard") on a 3-node cluster of real
 * `silo agent` processes: n1 serves it (api.tcp + token + dashboard), n2 has
 * the TCP API without it, n3 neither. Without a browser: what is served and
 * what needs the token. With Debian's chromium driven by puppeteer-core:
 * the page shows the nodes and the workload's holder, and after a drain the
 * workload on its new node. Screenshots go to a temporary artifact directory
 * and, when SILO_SCREENSHOT_DIR is set, there too (docs/dashboard.png).
 */

const TOKEN = 'dashboard-test-token-0123456789';

/**
 * SILO_CHROMIUM, else Debian's `chromium` found on PATH (puppeteer-core never
 * downloads one); the bare name when there is none, which requireOrSkip reports.
 */
function chromiumPath(): string {
  const fromEnv = process.env.SILO_CHROMIUM;
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir !== '' && existsSync(join(dir, 'chromium'))) return join(dir, 'chromium');
  }
  return 'chromium';
}

interface Answer {
  status: number;
  headers: Headers;
  text: string;
}

describe('web dashboard', { timeout: 300_000 }, () => {
  let dir: string;
  let remove: () => Promise<void>;
  let orgDir: string;
  const nodes: ClusterNode[] = [];
  let ports: number[] = [];
  const sock = (i = 0): string[] => ['--socket', nodes[i]!.socket];
  const base = (i: number): string => `http://127.0.0.1:${ports[i]}`;

  async function get(url: string, token?: string): Promise<Answer> {
    const res = await fetch(url, {
      redirect: 'manual',
      headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
    });
    return { status: res.status, headers: res.headers, text: await res.text() };
  }

  async function workload(name: string): Promise<WorkloadRow> {
    const res = await silo(['workloads', name, '--json', ...sock(0)]);
    return JSON.parse(res.stdout) as WorkloadRow;
  }

  before(async () => {
    ({ dir, remove } = await tempDir('silo-dash-'));
    await writeFile(join(dir, 'token'), `${TOKEN}\n`, { mode: 0o600 });
    const cluster = await startEnrolledAgents({
      dir,
      org: 'dash',
      cidr: '10.63.0.0/24',
      ids: ['n1', 'n2', 'n3'],
      nodeInitArgs: () => ['--cpus', '1', '--memory-mb', '256', '--scratch-mb', '256'],
      extraPorts: 2,
      config: (i, extra): Record<string, Record<string, unknown>> => ({
        services: { sandbox: 'none' },
        storage: { durability: 'nosync' },
        ...(i < 2
          ? {
              api: {
                tcp: `127.0.0.1:${extra[i]}`,
                token_file: join(dir, 'token'),
                ...(i === 0 ? { dashboard: true } : {}),
              },
            }
          : {}),
      }),
    });
    orgDir = cluster.orgDir;
    ports = cluster.extraPorts;
    nodes.push(...cluster.nodes);

    // A service that just stays up; any node may run it.
    const svc = join(dir, 'svc');
    await mkdir(join(svc, 'image', 'bin'), { recursive: true });
    await writeFile(join(svc, 'image', 'bin', 'idle'), '#!/bin/sh\nwhile true; do sleep 1; done\n', {
      mode: 0o755,
    });
    await writeFile(
      join(svc, 'manifest.toml'),
      ['name = "web"', 'image = "./image"', 'command = "/bin/idle"', 'scratch_class = "volatile"', ''].join(
        '\n',
      ),
    );
    const applied = await silo(['apply', join(svc, 'manifest.toml'), '--org', orgDir, ...sock(0)]);
    assert.equal(applied.code, 0, applied.stderr);
    await waitFor(
      'web running somewhere, as n1 sees it',
      async () => {
        const row = await workload('web');
        return row.holder !== null && row.phase === 'running';
      },
      120_000,
    );
  });

  after(async () => {
    for (const node of nodes) await node.agent?.stop();
    await remove?.();
  });

  test('off by default: no /dashboard/ on a TCP listener without api.dashboard', async () => {
    assert.equal((await get(`${base(1)}/dashboard/`, TOKEN)).status, 404);
    // Without the token even the 404 is not told.
    assert.equal((await get(`${base(1)}/dashboard/`)).status, 401);
  });

  test('static files need no token and carry a strict CSP; data routes still need the token', async () => {
    const page = await get(`${base(0)}/dashboard/`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /^text\/html/);
    const csp = page.headers.get('content-security-policy') ?? '';
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self'(;|$)/);
    assert.match(csp, /connect-src 'self'/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|https?:/);
    assert.equal(page.headers.get('x-content-type-options'), 'nosniff');
    // No inline script or style in the page: everything comes from the two assets.
    assert.doesNotMatch(page.text, /<script>|<style|\sstyle="|\son[a-z]+="/);
    assert.match(page.text, /<script type="module" src="app.js"><\/script>/);
    const js = await get(`${base(0)}/dashboard/app.js`);
    assert.equal(js.status, 200);
    assert.match(js.headers.get('content-type') ?? '', /^text\/javascript/);
    assert.equal(js.headers.get('content-security-policy'), csp);
    // Bundled: no import of another file, nothing from another origin.
    assert.doesNotMatch(js.text, /^\s*import\s/m);
    assert.doesNotMatch(js.text, /https?:\/\/(?!www\.w3\.org\/2000\/svg)/);
    const css = await get(`${base(0)}/dashboard/style.css`);
    assert.equal(css.status, 200);
    assert.match(css.headers.get('content-type') ?? '', /^text\/css/);
    const bare = await get(`${base(0)}/dashboard`);
    assert.equal(bare.status, 302);
    assert.equal(bare.headers.get('location'), '/dashboard/');
    for (const path of ['/v1/status', '/v1/nodes', '/v1/workloads', '/v1/events', '/dashboard/nope']) {
      assert.equal((await get(`${base(0)}${path}`)).status, 401, path);
      assert.equal((await get(`${base(0)}${path}`, 'wrong-token-0123456789')).status, 401, path);
    }
    assert.equal((await get(`${base(0)}/v1/nodes`, TOKEN)).status, 200);
  });

  test('in chromium: nodes and holder on the page, a drain moves the workload there too', async (t) => {
    const chromium = chromiumPath();
    if (!(await requireOrSkip(t, { tools: [chromium] }))) return;
    const artifacts = await mkdtemp(join(tmpdir(), 'silo-dashboard-shots-'));
    t.diagnostic(`screenshots in ${artifacts}`);
    const { default: puppeteer } = await import('puppeteer-core');
    const browser: Browser = await puppeteer.launch({
      executablePath: chromium,
      headless: true,
      // CI runs as root, where chromium's sandbox cannot start.
      args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
    });
    try {
      const page: Page = await browser.newPage();
      const problems: string[] = [];
      page.on('console', (message) => {
        // The wrong token below is refused on purpose: the browser logs each of those 401s as an error.
        const expected = /status of 401 \(Unauthorized\)/.test(message.text());
        if (message.type() === 'error' && !expected) problems.push(`console: ${message.text()}`);
      });
      page.on('pageerror', (err) => problems.push(`page error: ${String(err)}`));
      // A laptop screen.
      await page.setViewport({ width: 1440, height: 900 });
      await page.goto(`${base(0)}/dashboard/`, { waitUntil: 'load' });

      // A wrong token is refused on the page itself, then the right one opens the board.
      await page.waitForSelector('#token', { visible: true });
      await page.type('#token', 'wrong-token-0123456789');
      await page.click('#login button[type=submit]');
      await page.waitForFunction(() => document.getElementById('login-error')?.textContent !== '', {
        timeout: 10_000,
      });
      await page.type('#token', TOKEN);
      await page.click('#login button[type=submit]');
      await page.waitForSelector('#login', { hidden: true, timeout: 10_000 });
      assert.equal(await page.$eval('#board', (main) => (main as HTMLElement).hidden), false);
      for (const id of ['n1', 'n2', 'n3']) {
        await page.waitForSelector(`#nodes tr[data-node="${id}"]`, { timeout: 20_000 });
      }
      const before = await workload('web');
      assert.ok(before.holder !== null);
      await page.waitForSelector(`#workloads tr[data-workload="web"][data-holder="${before.holder}"]`, {
        timeout: 20_000,
      });
      const row = await page.$eval('#workloads tr[data-workload="web"]', (tr) =>
        [...tr.querySelectorAll('td')].map((td) => td.textContent ?? ''),
      );
      assert.equal(row[0], 'web');
      assert.equal(row[1], before.holder);
      assert.equal(row[2], 'running');
      const liveness = await page.$$eval('#nodes td.liveness', (tds) => tds.map((td) => td.textContent));
      await waitFor('every node alive on the page', async () => {
        const now = await page.$$eval('#nodes td.liveness', (tds) => tds.map((td) => td.textContent));
        return now.length === 3 && now.every((s) => s === 'alive') ? now : null;
      });
      assert.equal(liveness.length, 3);
      // The connection graph, the convergence table and the event stream are there too.
      await page.waitForSelector('#graph svg circle[data-graph-node="n1"]');
      // The cluster's graph, not only n1's connections: n2 and n3 record theirs in the observed document.
      await page.waitForSelector('#graph svg line[data-edge="n1--n2"].own', { timeout: 30_000 });
      await page.waitForSelector('#graph svg line[data-edge="n2--n3"].reported', { timeout: 30_000 });
      // And visible: the n2--n3 edge does not run through n1's circle (as it did with n1 in the centre).
      // Only attribute reads in the page: tsx names inner functions with a helper the page does not have.
      const [x1, y1, x2, y2, px, py, r] = (await page.$eval('#graph svg', (root) => [
        ...['x1', 'y1', 'x2', 'y2'].map((a) =>
          Number(root.querySelector('line[data-edge="n2--n3"]')?.getAttribute(a)),
        ),
        ...['cx', 'cy', 'r'].map((a) =>
          Number(root.querySelector('circle[data-graph-node="n1"]')?.getAttribute(a)),
        ),
      ])) as number[];
      const [dx, dy] = [x2! - x1!, y2! - y1!];
      const along = Math.max(0, Math.min(1, ((px! - x1!) * dx + (py! - y1!) * dy) / (dx * dx + dy * dy)));
      const clearance = Math.hypot(px! - (x1! + along * dx), py! - (y1! + along * dy)) - r!;
      assert.ok(clearance > 0, `the n2--n3 edge clears n1's circle by ${clearance}`);
      await page.waitForSelector('#convergence tr[data-convergence="n2"]');
      await page.waitForSelector('#events li[data-event="hello"]');
      await page.screenshot({ path: join(artifacts, 'dashboard.png') });
      // The token is kept for the tab: a reload opens the board without asking again.
      await page.reload({ waitUntil: 'load' });
      await page.waitForSelector('#nodes tr[data-node="n3"]', { timeout: 20_000 });
      assert.equal(await page.$eval('#login', (form) => (form as HTMLElement).hidden), true);

      // Drain the holder with the CLI; the page shows the workload on another node.
      const drained = await silo(['drain', before.holder, ...sock(0)]);
      assert.equal(drained.code, 0, drained.stderr);
      await page.waitForSelector(`#nodes tr[data-node="${before.holder}"] td.draining`, { timeout: 20_000 });
      const handle = await page.waitForFunction(
        (from: string) => {
          const tr = document.querySelector<HTMLElement>('#workloads tr[data-workload="web"]');
          const holder = tr?.dataset.holder ?? '';
          return holder !== '' && holder !== from && tr?.dataset.phase === 'running' ? holder : false;
        },
        { timeout: 150_000, polling: 250 },
        before.holder,
      );
      const moved = (await handle.jsonValue()) as string;
      assert.notEqual(moved, before.holder);
      assert.equal((await workload('web')).holder, moved, 'the page agrees with the API');
      // The page saw the move happen.
      await page.waitForSelector(
        `#moves li[data-move="web"][data-kind="move"][data-from="${before.holder}"][data-to="${moved}"]`,
        {
          timeout: 10_000,
        },
      );
      await page.waitForSelector('#events li[data-event="state"]');
      await page.screenshot({ path: join(artifacts, 'dashboard-moved.png') });
      await page.screenshot({ path: join(artifacts, 'dashboard-moved-full.png'), fullPage: true });
      assert.deepEqual(problems, [], 'no console errors (a CSP violation would be one)');

      const out = process.env.SILO_SCREENSHOT_DIR;
      if (out !== undefined && out !== '') {
        await mkdir(out, { recursive: true });
        await copyFile(join(artifacts, 'dashboard-moved-full.png'), join(out, 'dashboard.png'));
        t.diagnostic(`copied the screenshot to ${join(out, 'dashboard.png')}`);
      }
    } finally {
      await browser.close();
    }
  });
});
