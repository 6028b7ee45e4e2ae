import '../../src/util/polyfill.js';
import { Registry } from 'prom-client';
import { ImageStore } from '../../src/reconciler/image-store.js';
import type { SandboxPreference } from '../../src/reconciler/sandbox.js';
import { ServiceRuntime } from '../../src/reconciler/service-runtime.js';
import type { WorkloadSpec } from '../../src/state/schemas.js';
import { silentLogger } from '../../src/util/logger.js';

/**
 * A stand-in agent for orphan tests: starts one service with a ServiceRuntime,
 * prints its status as one JSON line once it runs, then idles until killed.
 * argv[2]: JSON {dataDir, caPublicKey, spec, sandbox}.
 */

interface ChildConfig {
  dataDir: string;
  caPublicKey: string;
  spec: WorkloadSpec;
  sandbox: SandboxPreference;
}

const config = JSON.parse(process.argv[2] ?? '{}') as ChildConfig;
const logger = silentLogger();
const registry = new Registry();
const imageStore = new ImageStore({
  dataDir: config.dataDir,
  caPublicKey: config.caPublicKey,
  logger,
  registry,
});
const runtime = new ServiceRuntime({
  dataDir: config.dataDir,
  imageStore,
  logger,
  registry,
  sandbox: config.sandbox,
  limits: { enabled: false },
});
await runtime.ensureRunning(config.spec);
const timer = setInterval(() => {
  const status = runtime.status(config.spec.name);
  if (status?.phase === 'running' && status.pid !== null) {
    process.stdout.write(`${JSON.stringify(status)}\n`);
    clearInterval(timer);
  }
}, 20);
setInterval(() => undefined, 60_000);
