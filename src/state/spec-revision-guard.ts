import type { Logger } from 'pino';
import type * as Y from 'yjs';
import type { ClusterState } from './cluster-state.js';
import { SLOT_SEPARATOR } from './epochs/slot-codec.js';
import type { WorkloadSpec } from './schemas.js';
import { sameContent, type WorkloadsView, withoutRevision } from './workloads-view.js';

export interface SpecRevisionGuardOptions {
  state: ClusterState;
  workloads: WorkloadsView;
  logger: Logger;
}

/**
 * Keeps a workload's revision rising whenever its content changes.
 *
 * Two nodes applying one workload concurrently both pick revision n+1 and the
 * document keeps one of the two specs (the newer stamp, docs/epochs.md, which
 * may even be the lower revision of two). A holder that already started the losing
 * content would run it for good: placement restarts a service only for a
 * higher revision. So every node that sees a remote change replace a spec by
 * other content at the same or a lower revision, or lower its revision, puts
 * the kept content again above both. All of them write the same content, so the conflict settles;
 * the holder restarts once, on the kept content.
 */
export class SpecRevisionGuard {
  private readonly options: SpecRevisionGuardOptions;
  private readonly logger: Logger;
  private unsubscribe: (() => void) | null = null;
  /** The spec of every workload as this guard last saw it. */
  private seen = new Map<string, WorkloadSpec>();

  constructor(options: SpecRevisionGuardOptions) {
    this.options = options;
    this.logger = options.logger.child({ component: 'spec-revision-guard' });
  }

  start(): void {
    if (this.unsubscribe !== null) return;
    const { state, workloads } = this.options;
    this.seen = new Map(workloads.list().map((spec) => [spec.name, spec]));
    this.unsubscribe = state.onTransaction('workloads', 'after', (tr) => {
      // After an epoch switch anything may have changed: every name is looked at.
      const names = tr === null ? this.allNames() : changedNames(tr, state.doc('workloads').getMap('specs'));
      if (names.size === 0) return;
      // Our own puts raise the revision already; they only move what was seen.
      const remote = tr === null || !tr.local;
      for (const name of names) {
        const before = this.seen.get(name);
        const after = workloads.get(name);
        if (after === undefined) this.seen.delete(name);
        else this.seen.set(name, after);
        if (!remote || before === undefined || after === undefined) continue;
        const sameOrLower = after.revision <= before.revision;
        const changed = !sameContent(withoutRevision(before), withoutRevision(after));
        // A fall matters even with equal content: a holder that ran other content under a
        // revision between the two would see no higher revision, and never restart.
        if (sameOrLower && (changed || after.revision < before.revision)) {
          // After the transaction that brought it: a write inside an observer would nest.
          queueMicrotask(() => this.lift(name, after.revision, before.revision));
        }
      }
    });
  }

  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = null;
  }

  private allNames(): Set<string> {
    return new Set([...this.seen.keys(), ...this.options.workloads.list().map((spec) => spec.name)]);
  }

  private lift(name: string, keptRevision: number, overwrittenRevision: number): void {
    if (this.unsubscribe === null) return;
    const current = this.options.workloads.get(name);
    // Changed again meanwhile: that change is judged on its own.
    if (current === undefined || current.revision !== keptRevision) return;
    const lifted = this.options.workloads.put(withoutRevision(current), { above: overwrittenRevision });
    this.logger.warn(
      { workload: name, kept: keptRevision, overwritten: overwrittenRevision, revision: lifted.revision },
      'concurrent writes of one workload: the kept spec is put again above both revisions',
    );
  }
}

/** The workload names whose slots `tr` changed in `specs`. */
function changedNames(tr: Y.Transaction, specs: Y.Map<unknown>): Set<string> {
  const names = new Set<string>();
  // Transaction.changed is keyed by the changed type; Yjs types its key with a wider event type.
  const changed = [...tr.changed].find(([type]) => (type as unknown) === specs)?.[1];
  for (const slot of changed ?? []) {
    if (slot === null) continue;
    const at = slot.indexOf(SLOT_SEPARATOR);
    names.add(at < 0 ? slot : slot.slice(0, at));
  }
  return names;
}
