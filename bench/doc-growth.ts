/**
 * `npm run bench -- doc-growth` (docs/benchmarks.md, "Document growth"): what a
 * long-running cluster's documents cost after many changes, against the same
 * final content written once.
 *
 * - observed: one node writes `updates` status changes over `workloads`
 *   workloads into a store on disk (lmdb, `nosync`: the bench measures sizes,
 *   not fsync); a replica applies every update it published. Reported: the
 *   encoded document on both, the log's bytes (snapshot + tail) and data.mdb on
 *   disk, and the time to reopen the store and restore the document.
 * - workloads: `specUpdates` spec rewrites over the same workloads into a store
 *   on disk, once without epochs (Yjs history per overwrite) and once with the
 *   epoch starter looking once per round of rewrites (docs/epochs.md); reported: the
 *   document, the log, data.mdb, the restart and a newcomer's catch-up.
 */
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import * as Y from 'yjs';
import { ClusterState } from '../src/state/cluster-state.js';
import { EpochStarter } from '../src/state/epoch-starter.js';
import { LmdbUpdateLog } from '../src/state/lmdb-log.js';
import { ObservedView } from '../src/state/observed-view.js';
import type { ObservedStatus, Phase } from '../src/state/schemas.js';
import { WorkloadsView } from '../src/state/workloads-view.js';
import { silentLogger } from '../src/util/logger.js';
import { writeReport } from './lib/report.js';

export interface DocGrowthOptions {
  updates: number;
  workloads: number;
  specUpdates: number;
  log: (line: string) => void;
}

export interface DocGrowthReport {
  at: string;
  updates: number;
  workloads: number;
  observed: {
    /** The same final statuses written once, encoded, bytes. */
    liveBytes: number;
    writerDocBytes: number;
    replicaDocBytes: number;
    /** Snapshot + tail payload bytes in the writer's log. */
    logBytes: number;
    /** data.mdb on disk (lmdb never shrinks its file: the high-water mark). */
    dataMdbBytes: number;
    writeMs: number;
    restartMs: number;
    /** (writerDocBytes − liveBytes) / updates. */
    historyBytesPerUpdate: number;
  };
  workloadsDoc: {
    specUpdates: number;
    liveBytes: number;
    docBytes: number;
    historyBytesPerUpdate: number;
    withoutEpochs: WorkloadsPass;
    withEpochs: WorkloadsPass;
  };
}

/** One run of spec rewrites on a store (docs/benchmarks.md, "Document growth"). */
export interface WorkloadsPass {
  docBytes: number;
  logBytes: number;
  dataMdbBytes: number;
  /** Epochs the starter started (looking once per round of rewrites, at least every 1,000). */
  epochs: number;
  writeMs: number;
  /** Reopening the store and reading every spec. */
  restartMs: number;
  /** Validating and applying the whole document on an empty node (a newcomer's sync, without the network). */
  catchUpMs: number;
}

const PHASES: Phase[] = ['pulling', 'starting', 'running', 'stopping', 'released'];

function status(i: number): ObservedStatus {
  return {
    phase: PHASES[i % PHASES.length] as Phase,
    since: 1_700_000_000_000 + i,
    revision: 1 + Math.floor(i / 1000),
    restarts: i % 7,
    lastExit: null,
    reason: i % 3 === 0 ? `checkpoint ${i}` : null,
    sandbox: 'none',
    scratchUsedMb: null,
    snapshot: null,
  };
}

const encodedBytes = (state: ClusterState, doc: 'observed' | 'workloads') =>
  Y.encodeStateAsUpdate(state.doc(doc)).byteLength;

function view(state: ClusterState, nodeId = 'n1'): ObservedView {
  return new ObservedView({ state, logger: silentLogger(), registry: new Registry(), nodeId });
}

function openLog(path: string): LmdbUpdateLog {
  return new LmdbUpdateLog({ path, logger: silentLogger(), registry: new Registry(), durability: 'nosync' });
}

async function observedGrowth(options: DocGrowthOptions): Promise<DocGrowthReport['observed']> {
  const dir = await mkdtemp(join(tmpdir(), 'silo-doc-growth-'));
  try {
    const store = join(dir, 'store');
    const log = openLog(store);
    const writer = new ClusterState({ logger: silentLogger(), log });
    const replica = new ClusterState({ logger: silentLogger() });
    writer.onChange((doc, update) => {
      if (doc === 'observed') replica.applyRemote('observed', update);
    });
    const observed = view(writer);
    const final = new Map<string, ObservedStatus>();
    const started = performance.now();
    for (let i = 0; i < options.updates; i++) {
      const name = `w${i % options.workloads}`;
      const s = status(i);
      observed.setStatus('n1', name, s);
      final.set(name, s);
      if (i > 0 && i % 100_000 === 0) options.log(`  ${i} status updates`);
    }
    const writeMs = performance.now() - started;
    const writerDocBytes = encodedBytes(writer, 'observed');
    const replicaDocBytes = encodedBytes(replica, 'observed');
    const logBytes = log.snapshotBytes('observed') + log.tailBytes('observed');
    await writer.close();
    await replica.close();
    const dataMdbBytes = (await stat(join(store, 'data.mdb'))).size;

    const reopenStarted = performance.now();
    const reopened = new ClusterState({ logger: silentLogger(), log: openLog(store) });
    const restored = view(reopened, 'n2').listForNode('n1').size;
    const restartMs = performance.now() - reopenStarted;
    await reopened.close();
    if (restored !== final.size) throw new Error(`restart restored ${restored} statuses, not ${final.size}`);

    const fresh = new ClusterState({ logger: silentLogger() });
    const freshView = view(fresh);
    for (const [name, s] of final) freshView.setStatus('n1', name, s);
    const liveBytes = encodedBytes(fresh, 'observed');
    await fresh.close();
    return {
      liveBytes,
      writerDocBytes,
      replicaDocBytes,
      logBytes,
      dataMdbBytes,
      writeMs: Math.round(writeMs),
      restartMs: Math.round(restartMs),
      historyBytesPerUpdate: round((writerDocBytes - liveBytes) / options.updates),
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** One pass of spec rewrites into a store on disk, with or without the epoch starter. */
async function workloadsPass(
  options: DocGrowthOptions,
  rewrites: number,
  epochs: boolean,
): Promise<WorkloadsPass> {
  const dir = await mkdtemp(join(tmpdir(), 'silo-doc-growth-w-'));
  try {
    const store = join(dir, 'store');
    const log = openLog(store);
    const state = new ClusterState({ logger: silentLogger(), nodeId: 'n1', log });
    const registry = new Registry();
    const workloads = new WorkloadsView({ state, logger: silentLogger(), registry });
    const starter = new EpochStarter({
      state,
      logger: silentLogger(),
      registry,
      intervalMs: 0,
      isStarter: () => true,
    });
    starter.start();
    let started = 0;
    const lookEvery = Math.max(1000, options.workloads);
    const writeStarted = performance.now();
    for (let i = 0; i < rewrites; i++) {
      const name = `w${i % options.workloads}`;
      workloads.put({ ...baseSpec, ...specOf(name, i) });
      // What the agent's once-a-minute look does, here once per round of rewrites (at least 1,000).
      if (epochs && (i + 1) % lookEvery === 0) started += starter.check().length;
      if (i > 0 && i % 100_000 === 0) options.log(`  ${i} spec rewrites${epochs ? ' (epochs)' : ''}`);
    }
    const writeMs = performance.now() - writeStarted;
    starter.stop();
    const docBytes = encodedBytes(state, 'workloads');
    const full = Y.encodeStateAsUpdate(state.doc('workloads'));
    const logBytes = log.snapshotBytes('workloads') + log.tailBytes('workloads');
    await state.close();

    const reopenStarted = performance.now();
    const reopened = new ClusterState({ logger: silentLogger(), nodeId: 'n2', log: openLog(store) });
    const restored = new WorkloadsView({
      state: reopened,
      logger: silentLogger(),
      registry: new Registry(),
    }).list().length;
    const restartMs = performance.now() - reopenStarted;
    await reopened.close();
    if (restored !== Math.min(options.workloads, rewrites))
      throw new Error(`restart restored ${restored} specs, not ${Math.min(options.workloads, rewrites)}`);

    // A newcomer's catch-up, without the network: validating and applying the whole document.
    const catchUpStarted = performance.now();
    const newcomer = new ClusterState({ logger: silentLogger(), nodeId: 'n3' });
    newcomer.applyRemote('workloads', full, undefined, Number.POSITIVE_INFINITY);
    const catchUpMs = performance.now() - catchUpStarted;
    await newcomer.close();
    const dataMdbBytes = (await stat(join(store, 'data.mdb'))).size;
    return {
      docBytes,
      logBytes,
      dataMdbBytes,
      epochs: started,
      writeMs: Math.round(writeMs),
      restartMs: Math.round(restartMs),
      catchUpMs: Math.round(catchUpMs),
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const specOf = (name: string, i: number) => ({
  name,
  image: 'example:1',
  imageDigest: `sha256:${'a'.repeat(64)}`,
  imageSignature: 'c2ln',
  command: '/bin/app',
  args: [`--generation=${i}`],
});

async function workloadsGrowth(options: DocGrowthOptions): Promise<DocGrowthReport['workloadsDoc']> {
  const live = await workloadsPass(options, options.workloads, false);
  const withoutEpochs = await workloadsPass(options, options.specUpdates, false);
  const withEpochs = await workloadsPass(options, options.specUpdates, true);
  return {
    specUpdates: options.specUpdates,
    liveBytes: live.docBytes,
    docBytes: withoutEpochs.docBytes,
    historyBytesPerUpdate: round((withoutEpochs.docBytes - live.docBytes) / options.specUpdates),
    withoutEpochs,
    withEpochs,
  };
}

/** The rest of a valid spec (WorkloadSpecSchema's required fields). */
const baseSpec = {
  tier: 'service' as const,
  env: {},
  scratchMb: 64,
  scratchClass: 'volatile' as const,
  network: 'overlay' as const,
  cpus: 0.1,
  memoryMb: 64,
  restart: 'always' as const,
  stopSignal: 'SIGTERM',
  stopTimeoutMs: 10_000,
  startTimeoutMs: 30_000,
  constraints: {},
  onPartition: 'stop' as const,
  revision: 1,
};

export async function runDocGrowth(options: DocGrowthOptions): Promise<DocGrowthReport> {
  options.log(`doc-growth: ${options.updates} status updates over ${options.workloads} workloads`);
  const observed = await observedGrowth(options);
  options.log(`doc-growth: ${options.specUpdates} spec rewrites`);
  const workloadsDoc = await workloadsGrowth(options);
  return {
    at: new Date().toISOString(),
    updates: options.updates,
    workloads: options.workloads,
    observed,
    workloadsDoc,
  };
}

export function docGrowthMarkdown(report: DocGrowthReport): string {
  const o = report.observed;
  const w = report.workloadsDoc;
  const kb = (n: number) => `${(n / 1024).toFixed(1)} KB`;
  return [
    `| document | changes | live content | writer | replica | log (snapshot + tail) | data.mdb | history/change | write | restart |`,
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    `| observed | ${report.updates} status | ${kb(o.liveBytes)} | ${kb(o.writerDocBytes)} | ${kb(o.replicaDocBytes)} | ${kb(o.logBytes)} | ${kb(o.dataMdbBytes)} | ${o.historyBytesPerUpdate} B | ${(o.writeMs / 1000).toFixed(1)} s | ${o.restartMs} ms |`,
    `| workloads, no epochs | ${w.specUpdates} spec | ${kb(w.liveBytes)} | ${kb(w.docBytes)} | – | ${kb(w.withoutEpochs.logBytes)} | ${kb(w.withoutEpochs.dataMdbBytes)} | ${w.historyBytesPerUpdate} B | ${(w.withoutEpochs.writeMs / 1000).toFixed(1)} s | ${w.withoutEpochs.restartMs} ms |`,
    `| workloads, epochs (${w.withEpochs.epochs} started) | ${w.specUpdates} spec | ${kb(w.liveBytes)} | ${kb(w.withEpochs.docBytes)} | – | ${kb(w.withEpochs.logBytes)} | ${kb(w.withEpochs.dataMdbBytes)} | – | ${(w.withEpochs.writeMs / 1000).toFixed(1)} s | ${w.withEpochs.restartMs} ms |`,
    '',
    `Catch-up of a newcomer (validate + apply the whole workloads document, no network): ${w.withoutEpochs.catchUpMs} ms without epochs, ${w.withEpochs.catchUpMs} ms with.`,
    '',
  ].join('\n');
}

export async function writeDocGrowthReport(dir: string, report: DocGrowthReport): Promise<void> {
  await writeReport(dir, 'doc-growth', report, docGrowthMarkdown(report));
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}
