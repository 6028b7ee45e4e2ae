import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { signImageDigest } from '../../src/identity/image-signing.js';
import { buildImage } from '../../src/reconciler/image.js';
import { loadManifest, manifestToSpec } from '../../src/reconciler/manifest.js';
import { makeHarness, waitForFile, waitForStatus } from './helpers.js';

const EXAMPLE = fileURLToPath(new URL('../../config/examples/counter/', import.meta.url));

function haveBwrap(): boolean {
  try {
    execFileSync('bwrap', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe('config/examples/counter', () => {
  // The example declares network = "none", which needs the sandbox's network namespace
  // to mean anything; it runs without the sandbox too.
  for (const sandbox of ['none', 'bubblewrap'] as const) {
    const skip =
      sandbox === 'bubblewrap' && (process.getuid?.() !== 0 || !haveBwrap()) ? 'needs root + bwrap' : false;
    test(`builds, signs, runs and keeps counting across a restart (sandbox ${sandbox})`, {
      skip,
    }, async (t) => {
      const h = await makeHarness(t, { sandbox });
      const { manifest } = await loadManifest(join(EXAMPLE, 'manifest.toml'));
      const built = await buildImage(join(EXAMPLE, 'image'), join(h.dataDir, 'counter.tar'));
      await h.store.importFile(join(h.dataDir, 'counter.tar'));
      const draft = manifestToSpec(
        { ...manifest, env: { COUNTER_INTERVAL: '0.05' } },
        { imageDigest: built.digest, imageSignature: signImageDigest(h.ca.privateKey, built.digest) },
      );
      await h.runtime.ensureRunning({ ...draft, revision: 1 });
      const running = await waitForStatus(h.runtime, 'counter', (s) => s.phase === 'running', 'running');
      assert.equal(running.sandbox, sandbox);
      const countFile = join(h.serviceDir('counter', 'state'), 'count');
      await waitForFile(countFile, (text) => Number(text) >= 3);
      const stopped = await h.runtime.stop('counter');
      assert.equal(stopped?.lastExit?.code, 0);
      const atStop = Number(await readFile(countFile, 'utf8'));
      const log = await readFile(join(h.serviceDir('counter', 'logs'), 'current'), 'utf8');
      assert.match(log, new RegExp(`counter: stopping at ${atStop}\\n$`));
      // It picks up where it stopped.
      await h.runtime.ensureRunning({ ...draft, revision: 2 });
      await waitForFile(countFile, (text) => Number(text) >= atStop + 2);
      assert.match(
        await readFile(join(h.serviceDir('counter', 'logs'), 'current'), 'utf8'),
        new RegExp(`counter: starting at ${atStop}\\n`),
      );
    });
  }
});
