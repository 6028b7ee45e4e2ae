/**
 * Document growth: the observed document after many status updates (what
 * the reconcile loop writes on every phase change and checkpoint), against
 * a fresh document holding only the final statuses. Y.Map keeps one
 * garbage-collected tombstone per overwrite, so the history costs a few
 * bytes per update, forever (until a document reset).
 */
import { Registry } from 'prom-client';
import * as Y from 'yjs';
import { ClusterState } from '../../src/state/cluster-state.js';
import { ObservedView } from '../../src/state/observed-view.js';
import type { ObservedStatus, Phase } from '../../src/state/schemas.js';
import { silentLogger } from '../../src/util/logger.js';
import { round } from '../lib/stats.js';

export interface DocGrowth {
  updates: number;
  workloads: number;
  /** Encoded size of the whole observed document after the updates, bytes. */
  docBytes: number;
  /** Encoded size of a document holding only the final statuses, bytes. */
  freshBytes: number;
  /** (docBytes − freshBytes) / updates. */
  historyBytesPerUpdate: number;
  ms: number;
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

function observed(state: ClusterState): ObservedView {
  return new ObservedView({ state, logger: silentLogger(), registry: new Registry(), nodeId: 'n1' });
}

export async function measureDocGrowth(updates: number, workloads = 20): Promise<DocGrowth> {
  const started = performance.now();
  const state = new ClusterState({ logger: silentLogger() });
  const view = observed(state);
  const final = new Map<string, ObservedStatus>();
  for (let i = 0; i < updates; i++) {
    const name = `w${i % workloads}`;
    const s = status(i);
    view.setStatus('n1', name, s);
    final.set(name, s);
  }
  const docBytes = Y.encodeStateAsUpdate(state.doc('observed')).byteLength;
  const ms = performance.now() - started;
  const fresh = new ClusterState({ logger: silentLogger() });
  const freshView = observed(fresh);
  for (const [name, s] of final) freshView.setStatus('n1', name, s);
  const freshBytes = Y.encodeStateAsUpdate(fresh.doc('observed')).byteLength;
  await state.close();
  await fresh.close();
  return {
    updates,
    workloads,
    docBytes,
    freshBytes,
    historyBytesPerUpdate: round((docBytes - freshBytes) / updates, 2),
    ms: Math.round(ms),
  };
}
