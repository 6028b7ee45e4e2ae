import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type RunningAgent, startAgent } from '../../src/agent/run-agent.js';
import { signRequest } from '../../src/cli/commands/ca.js';
import { initNode } from '../../src/cli/commands/node.js';
import { initOrg } from '../../src/cli/commands/org.js';
import { freeLoopbackPorts } from '../../src/cli/demo/free-port.js';
import { parseAgentConfig } from '../../src/config/load.js';
import { silentLogger } from '../../src/util/logger.js';
import { silo, tempDir } from '../cli/helpers.js';
import { waitFor } from './loop-cluster.js';

const COUNTER = fileURLToPath(new URL('../../config/examples/counter', import.meta.url));

/**
 * `silo apply` end to end on one `silo agent` (the runner the CLI's `agent`
 * command uses): manifest → image built, signed, uploaded → spec written →
 * the agent's reconcile loop runs it.
 */
describe('silo apply runs the service', { timeout: 120_000 }, () => {
  let dir: string;
  let remove: () => Promise<void>;
  let running: RunningAgent | undefined;
  let orgDir: string;
  let dataDir: string;
  let socket: string;

  before(async () => {
    ({ dir, remove } = await tempDir('silo-apply-'));
    orgDir = join(dir, 'org');
    await initOrg({ dir: orgDir, name: 'applytest', cidr: '10.51.0.0/24' });
    const [gossipPort] = await freeLoopbackPorts(1);
    dataDir = join(dir, 'n1');
    const identityDir = join(dataDir, 'identity');
    const init = await initNode({
      dir: identityDir,
      id: 'n1',
      endpoints: [`/ip4/127.0.0.1/tcp/${gossipPort}`],
      cpus: 1,
      memoryMb: 256,
      scratchMb: 100,
      labels: {},
    });
    await signRequest({
      orgDir,
      requestFile: init.requestFile,
      out: join(identityDir, 'enrollment.json'),
      seeds: [],
    });
    const config = parseAgentConfig(
      {
        org: 'applytest',
        node: { id: 'n1', data_dir: dataDir },
        gossip: {
          listen: [`/ip4/127.0.0.1/tcp/${gossipPort}`],
          heartbeat: 200,
          suspect_after: 600,
          dead_after: 1500,
        },
        services: { sandbox: 'none', fence_after: 1000, checkpoint_interval: 500 },
        storage: { durability: 'nosync' },
      },
      'test',
    );
    running = await startAgent(config, { logger: silentLogger() });
    socket = join(dataDir, 'silo.sock');
  });

  after(async () => {
    await running?.stop();
    await remove?.();
  });

  test('apply → the counter runs on the node and counts in its STATE_DIRECTORY', async () => {
    const applied = await silo([
      'apply',
      join(COUNTER, 'manifest.toml'),
      '--image',
      join(COUNTER, 'image'),
      '--org',
      orgDir,
      '--socket',
      socket,
    ]);
    assert.equal(applied.code, 0, applied.stderr);
    const agent = running!.agent;
    await waitFor(
      'counter running',
      () => agent.observed.get('n1', 'counter')?.phase === 'running',
      30_000,
    ).catch((err: Error) => {
      const loop = agent.reconciler?.loop?.status();
      throw new Error(
        `${err.message}: ${JSON.stringify({ observed: agent.observed.get('n1', 'counter'), loop })}`,
      );
    });
    const countFile = join(dataDir, 'services', 'counter', 'state', 'count');
    await waitFor(
      'it counts',
      async () => Number((await readFile(countFile, 'utf8').catch(() => '0')).trim()) >= 2,
    );
    assert.equal(agent.observed.get('n1', 'counter')?.sandbox, 'none');

    const deleted = await silo(['delete', 'counter', '--socket', socket]);
    assert.equal(deleted.code, 0, deleted.stderr);
    await waitFor('stopped and forgotten', () => agent.observed.get('n1', 'counter') === undefined);
  });
});
