import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RunningRegistry } from '../../sim/harness/running-registry.js';
import { SimRunner } from '../../sim/harness/sim-runner.js';
import { serviceDirs } from '../../src/reconciler/scratch.js';
import type { WorkloadSpec } from '../../src/state/schemas.js';
import { silentLogger } from '../../src/util/logger.js';
import { runnerContract } from './runner-contract.js';

const DIGEST = `sha256:${'0'.repeat(64)}`;

/** The simulator's runner, held to the same contract as the real one. */
runnerContract('SimRunner (simulator)', async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'silo-simrunner-'));
  const registry = new RunningRegistry();
  const runner = new SimRunner({ node: 'n1', dataDir, registry, logger: silentLogger() });
  const spec = (name: string, revision: number): WorkloadSpec => ({
    name,
    tier: 'test',
    image: 'toolbox',
    imageDigest: DIGEST,
    imageSignature: 'AAAA',
    command: 'bin/forever.sh',
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
    revision,
  });
  return {
    runner,
    spec,
    stateDir: (name) => serviceDirs(dataDir, name).state,
    crash: (name) => {
      if (!runner.crashProcess(name)) throw new Error(`${name} has no process to kill`);
    },
    processAlive: (name) => registry.workloadsOn('n1').includes(name),
    close: async () => {
      await runner.stopAll({ reason: 'contract over' });
      await rm(dataDir, { recursive: true, force: true });
    },
  };
});
