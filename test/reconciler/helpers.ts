import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Registry } from 'prom-client';
import {
  type Ed25519KeyPair,
  generateEd25519KeyPair,
  publicKeyToBase64,
} from '../../src/identity/ed25519.js';
import { signImageDigest } from '../../src/identity/image-signing.js';
import type { EncryptedScratch } from '../../src/reconciler/encrypted-scratch.js';
import { buildImage } from '../../src/reconciler/image.js';
import { ImageStore } from '../../src/reconciler/image-store.js';
import type { SandboxPreference } from '../../src/reconciler/sandbox.js';
import type {
  QuotaOptions,
  ServiceNetworkAccess,
  ServiceRuntime,
  ServiceStatus,
} from '../../src/reconciler/service-runtime.js';
import { ServiceRuntime as Runtime } from '../../src/reconciler/service-runtime.js';
import type { SupervisorTuning } from '../../src/reconciler/supervisor.js';
import type { WorkloadSpec } from '../../src/state/schemas.js';
import { silentLogger } from '../../src/util/logger.js';

export const TOOLBOX_DIR = fileURLToPath(new URL('../fixtures/services/toolbox', import.meta.url));

/** Fast supervision for tests: behaviour, not wall-clock, is asserted. */
export const FAST_TUNING: Partial<SupervisorTuning> = {
  backoffBaseMs: 50,
  backoffCapMs: 400,
  resetAfterMs: 60_000,
  crashLoopDeaths: 50,
  crashLoopWindowMs: 60_000,
};

export interface Harness {
  dataDir: string;
  ca: Ed25519KeyPair;
  caPublicKey: string;
  store: ImageStore;
  runtime: ServiceRuntime;
  registry: Registry;
  digest: string;
  signature: string;
  spec(overrides: Partial<WorkloadSpec> & Pick<WorkloadSpec, 'name' | 'command'>): WorkloadSpec;
  serviceDir(name: string, sub?: string): string;
}

export interface HarnessOptions {
  sandbox?: SandboxPreference;
  tuning?: Partial<SupervisorTuning>;
  quota?: Partial<QuotaOptions>;
  limitsEnabled?: boolean;
  encryptedScratch?: EncryptedScratch;
  serviceNetwork?: ServiceNetworkAccess;
}

interface TestContextLike {
  after(fn: () => Promise<void> | void): void;
}

/** A data dir, a CA, an image store holding the signed toolbox image, and a runtime; all cleaned up after `t`. */
export async function makeHarness(t: TestContextLike, options: HarnessOptions = {}): Promise<Harness> {
  const dataDir = await mkdtemp(join(tmpdir(), 'silo-runtime-'));
  const ca = generateEd25519KeyPair();
  const registry = new Registry();
  const logger = silentLogger();
  const store = new ImageStore({ dataDir, caPublicKey: ca.publicKey, logger, registry });
  const tarFile = join(dataDir, 'toolbox.tar');
  const built = await buildImage(TOOLBOX_DIR, tarFile);
  await store.importFile(tarFile);
  const signature = signImageDigest(ca.privateKey, built.digest);
  const runtime = new Runtime({
    dataDir,
    imageStore: store,
    logger,
    registry,
    sandbox: options.sandbox ?? 'none',
    tuning: { ...FAST_TUNING, ...options.tuning },
    quota: options.quota ?? {},
    limits: { enabled: options.limitsEnabled ?? false },
    ...(options.encryptedScratch === undefined ? {} : { encryptedScratch: options.encryptedScratch }),
    ...(options.serviceNetwork ? { serviceNetwork: options.serviceNetwork } : {}),
  });
  t.after(async () => {
    await runtime.stopAll('test over');
    // maxRetries: a service stopped a moment ago may still have its log writer closing files.
    await rm(dataDir, { recursive: true, force: true, maxRetries: 5 });
  });
  return {
    dataDir,
    ca,
    caPublicKey: publicKeyToBase64(ca.publicKey),
    store,
    runtime,
    registry,
    digest: built.digest,
    signature,
    spec: (overrides) => ({
      tier: 'test',
      image: 'toolbox',
      imageDigest: built.digest,
      imageSignature: signature,
      args: [],
      env: {},
      scratchMb: 64,
      scratchClass: 'persistent',
      network: 'host',
      cpus: 1,
      memoryMb: 256,
      restart: 'always',
      stopSignal: 'SIGTERM',
      stopTimeoutMs: 5000,
      startTimeoutMs: 20_000,
      constraints: {},
      onPartition: 'stop',
      revision: 1,
      ...overrides,
    }),
    serviceDir: (name, sub) => join(dataDir, 'services', name, ...(sub === undefined ? [] : [sub])),
  };
}

/** Poll a service's status until `predicate` holds; the error shows the last status. */
export async function waitForStatus(
  runtime: ServiceRuntime,
  name: string,
  predicate: (status: ServiceStatus) => boolean,
  what: string,
  timeoutMs = 30_000,
): Promise<ServiceStatus> {
  const deadline = Date.now() + timeoutMs;
  let last: ServiceStatus | null = null;
  while (Date.now() < deadline) {
    last = runtime.status(name);
    if (last !== null && predicate(last)) return last;
    await sleep(20);
  }
  throw new Error(`timed out waiting for ${name}: ${what}; last status ${JSON.stringify(last)}`);
}

/** Poll until a file exists (and satisfies `predicate`); returns its text. */
export async function waitForFile(
  path: string,
  predicate: (text: string) => boolean = () => true,
  timeoutMs = 30_000,
): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let last: string | null = null;
  while (Date.now() < deadline) {
    last = await readFile(path, 'utf8').catch(() => null);
    if (last !== null && predicate(last)) return last;
    await sleep(20);
  }
  throw new Error(`timed out waiting for ${path}; last content ${JSON.stringify(last)}`);
}

export async function readLines(path: string): Promise<string[]> {
  const text = await readFile(path, 'utf8').catch(() => '');
  return text.split('\n').filter((line) => line.length > 0);
}

/** Root + bwrap tests: skip with a reason elsewhere, but never silently on CI. */
export function sandboxSkipReason(haveBwrap: boolean): string | false {
  const reason =
    process.getuid?.() !== 0
      ? 'needs root (bubblewrap sandbox)'
      : !haveBwrap
        ? 'needs bubblewrap (apt-get install bubblewrap)'
        : false;
  if (reason !== false && process.env['CI'] === 'true') {
    throw new Error(`sandbox test cannot run on CI: ${reason}`);
  }
  return reason;
}
