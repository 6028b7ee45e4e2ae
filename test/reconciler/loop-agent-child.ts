import '../../src/util/polyfill.js';
import { readFileSync } from 'node:fs';
import { NodeAgent } from '../../src/agent/node-agent.js';
import { nodeKeyFromBytes } from '../../src/gossip/keys.js';
import type { EnrollmentBundle } from '../../src/identity/bundle.js';
import type { SwimParams } from '../../src/membership/swim-core.js';
import type { ReconcilerOptions } from '../../src/reconciler/reconciler.js';
import { silentLogger } from '../../src/util/logger.js';

/**
 * One enrolled agent with the reconciler in a process of its own, for tests
 * that crash an agent for real (SIGKILL: its services outlive it, nothing is
 * released) and restart it on the same data directory.
 * argv[2]: a JSON file {org, nodeId, dataDir, bundle, privateKey (base64
 * protobuf), bootstrap, gossip, reconciler, membership?}. Prints {"addrs": [...]} once
 * started; SIGTERM stops it gracefully.
 */

interface ChildConfig {
  org: string;
  nodeId: string;
  dataDir: string;
  bundle: EnrollmentBundle;
  privateKey: string;
  bootstrap: string[];
  gossip: Record<string, number | boolean>;
  reconciler: ReconcilerOptions;
  membership?: { swim: boolean; params?: Partial<SwimParams> };
}

const config = JSON.parse(readFileSync(process.argv[2] ?? '', 'utf8')) as ChildConfig;
const agent = await NodeAgent.create({
  org: config.org,
  nodeId: config.nodeId,
  dataDir: config.dataDir,
  logger: silentLogger(),
  trust: { bundle: config.bundle },
  gossip: {
    ...config.gossip,
    privateKey: nodeKeyFromBytes(Buffer.from(config.privateKey, 'base64')),
    bootstrap: config.bootstrap,
  },
  reconciler: config.reconciler,
  ...(config.membership ? { membership: config.membership } : {}),
});
await agent.start();
process.stdout.write(`${JSON.stringify({ addrs: agent.gossip.multiaddrs() })}\n`);

let stopping = false;
process.on('SIGTERM', () => {
  if (stopping) return;
  stopping = true;
  agent
    .stop()
    .then(() => process.exit(0))
    .catch(() => process.exit(1));
});
setInterval(() => undefined, 60_000);
