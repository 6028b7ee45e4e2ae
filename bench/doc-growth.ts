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
 * - workloads: `specUpdates` spec rewrites over the same workloads, in memory:
 *   a document that still keeps Yjs history per overwrite (not compacted yet).
 */
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import * as Y from 'yjs';
import { ClusterState } from '../src/state/cluster-state.js';
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
  };
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

async function workloadsGrowth(options: DocGrowthOptions): Promise<DocGrowthReport['workloadsDoc']> {
  const spec = (name: string, i: number) => ({
    name,
    image: 'example:1',
    imageDigest: `sha256:${'a'.repeat(64)}`,
    imageSignature: 'c2ln',
    command: '/bin/app',
    args: [`--generation=${i}`],
  });
  const write = async (rewrites: number) => {
    const state = new ClusterState({ logger: silentLogger() });
    const workloads = new WorkloadsView({ state, logger: silentLogger(), registry: new Registry() });
    for (let i = 0; i < rewrites; i++) {
      const name = `w${i % options.workloads}`;
      workloads.put({ ...baseSpec, ...spec(name, i) });
    }
    const bytes = encodedBytes(state, 'workloads');
    await state.close();
    return bytes;
  };
  const docBytes = await write(options.specUpdates);
  const liveBytes = await write(options.workloads);
  return {
    specUpdates: options.specUpdates,
    liveBytes,
    docBytes,
    historyBytesPerUpdate: round((docBytes - liveBytes) / options.specUpdates),
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
    `| workloads | ${w.specUpdates} spec | ${kb(w.liveBytes)} | ${kb(w.docBytes)} | – | – | – | ${w.historyBytesPerUpdate} B | – | – |`,
    '',
  ].join('\n');
}

export async function writeDocGrowthReport(dir: string, report: DocGrowthReport): Promise<void> {
  await writeReport(dir, 'doc-growth', report, docGrowthMarkdown(report));
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}
