import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NodeAgent } from '../../src/agent/node-agent.js';
import { nextBootstrapWitnessConfig } from '../../src/cli/commands/ca.js';
import type { EnrollmentBundle } from '../../src/identity/bundle.js';
import { issueEnrollment } from '../../src/identity/ca.js';
import {
  createNodeIdentity,
  enrollmentRequest,
  type NodeIdentity,
  x25519WgKeys,
} from '../../src/identity/node-identity.js';
import { createOrg, type Org } from '../../src/identity/org.js';
import type { EnrollmentRole } from '../../src/state/schemas.js';
import { silentLogger } from '../../src/util/logger.js';

export const ORG_NAME = 'acme';

import { FAST_GOSSIP } from '../helpers/fast-timings.js';

export { FAST_GOSSIP };

export interface EnrolledNode {
  nodeId: string;
  identity: NodeIdentity;
  bundle: EnrollmentBundle;
  dataDir: string;
}

/** An org with a CA, and helpers that enroll and start agents on loopback with durable stores. */
export class EnrolledCluster {
  readonly org: Org = createOrg({ name: ORG_NAME, overlayCidr: '10.77.0.0/24' });
  readonly root = mkdtempSync(join(tmpdir(), 'silo-agent-'));
  readonly agents = new Map<string, NodeAgent>();
  private readonly allocated: string[] = [];
  /** As `silo ca sign` does: the first three nodes become witnesses, one version each. */
  private witnessConfig: ReturnType<typeof nextBootstrapWitnessConfig> = null;

  /** `role` "client" as `silo ca sign --role client` does: no witness, never placed. */
  async enroll(nodeId: string, seedPeers: string[] = [], role?: EnrollmentRole): Promise<EnrolledNode> {
    const identity = await createNodeIdentity(nodeId, { wgKeys: x25519WgKeys });
    const request = enrollmentRequest(identity, {
      endpoints: [],
      capacity: { cpus: 2, memoryMb: 2048, scratchMb: 4096 },
      labels: {},
    });
    const issued = issueEnrollment(this.org, request, {
      allocatedIps: this.allocated,
      seedPeers,
      ...(role ? { role } : {}),
    });
    if (role !== 'client')
      this.witnessConfig = nextBootstrapWitnessConfig(this.org.caPrivateKey, this.witnessConfig, nodeId);
    const bundle = this.witnessConfig === null ? issued : { ...issued, witnessConfig: this.witnessConfig };
    this.allocated.push(bundle.record.overlayIp);
    return { nodeId, identity, bundle, dataDir: join(this.root, nodeId) };
  }

  async start(node: EnrolledNode, bootstrap: string[] = []): Promise<NodeAgent> {
    const agent = await NodeAgent.create({
      org: ORG_NAME,
      nodeId: node.nodeId,
      dataDir: node.dataDir,
      logger: silentLogger(),
      trust: { bundle: node.bundle },
      gossip: { ...FAST_GOSSIP, privateKey: node.identity.libp2pPrivateKey, bootstrap },
    });
    await agent.start();
    this.agents.set(node.nodeId, agent);
    return agent;
  }

  async stop(nodeId: string): Promise<void> {
    const agent = this.agents.get(nodeId);
    this.agents.delete(nodeId);
    await agent?.stop();
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.agents.keys()].map((id) => this.stop(id)));
    rmSync(this.root, { recursive: true, force: true });
  }
}

export { waitFor } from '../helpers/wait.js';
