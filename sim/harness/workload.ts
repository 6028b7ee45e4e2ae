import type { WorkloadSpecInput } from '../../src/state/workloads-view.js';
import { SIM_IMAGE_COMMAND, type SimImage } from './sim-image.js';

/** What a scenario says about a workload; everything else is a fixed simulated default. */
export interface SimWorkloadDraft {
  name: string;
  scratchClass: 'persistent' | 'volatile';
  onPartition: 'stop' | 'keep';
  cpus: number;
  memoryMb: number;
  scratchMb: number;
  stopTimeoutMs: number;
  constraints: Record<string, string>;
  /** Spec `restoreWaitMs` (absent: the agent's default). */
  restoreWaitMs?: number;
}

export const DEFAULT_WORKLOAD: Omit<SimWorkloadDraft, 'name'> = {
  scratchClass: 'persistent',
  onPartition: 'stop',
  cpus: 0.25,
  memoryMb: 128,
  scratchMb: 16,
  stopTimeoutMs: 1000,
  constraints: {},
};

/** The full spec the harness writes into the workloads document for a draft. */
export function simWorkloadSpec(image: SimImage, draft: SimWorkloadDraft): WorkloadSpecInput {
  return {
    name: draft.name,
    tier: 'sim',
    image: 'sim/service',
    imageDigest: image.digest,
    imageSignature: image.signature,
    command: SIM_IMAGE_COMMAND,
    args: [],
    env: {},
    scratchMb: draft.scratchMb,
    scratchClass: draft.scratchClass,
    network: 'none',
    cpus: draft.cpus,
    memoryMb: draft.memoryMb,
    restart: 'always',
    stopSignal: 'SIGTERM',
    stopTimeoutMs: draft.stopTimeoutMs,
    startTimeoutMs: 10_000,
    constraints: draft.constraints,
    onPartition: draft.onPartition,
    ...(draft.restoreWaitMs !== undefined ? { restoreWaitMs: draft.restoreWaitMs } : {}),
  };
}
