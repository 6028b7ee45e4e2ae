import type { Logger } from 'pino';
import type * as Y from 'yjs';
import type { ClusterState } from './cluster-state.js';
import { WorkloadSpecSchema } from './schemas.js';
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
 * document keeps one of the two specs (Y.Map last-writer-wins, which may even
 * keep the lower revision of two). A holder that already started the losing
 * content would run it for good: placement restarts a service only for a
 * higher revision. So every node that sees a remote change replace a spec by
 * other content at the same or a lower revision, or lower its revision, puts
 * the kept content again above both. All of them write the same content, so the conflict settles;
 * the holder restarts once, on the kept content.
 */
export class SpecRevisionGuard {
  private readonly options: SpecRevisionGuardOptions;
  private readonly logger: Logger;
  private unobserve: (() => void) | null = null;

  constructor(options: SpecRevisionGuardOptions) {
    this.options = options;
    this.logger = options.logger.child({ component: 'spec-revision-guard' });
  }

  start(): void {
    if (this.unobserve !== null) return;
    const specs = this.options.state.doc('workloads').getMap<unknown>('specs');
    const observer = (event: Y.YMapEvent<unknown>, transaction: Y.Transaction): void => {
      // Our own puts raise the revision already.
      if (transaction.local) return;
      for (const [key, change] of event.changes.keys) {
        if (change.action !== 'update') continue;
        const before = WorkloadSpecSchema.safeParse(change.oldValue);
        const after = WorkloadSpecSchema.safeParse(specs.get(key));
        if (!before.success || !after.success) continue;
        const sameOrLower = after.data.revision <= before.data.revision;
        const changed = !sameContent(withoutRevision(before.data), withoutRevision(after.data));
        // A fall matters even with equal content: a holder that ran other content under a
        // revision between the two would see no higher revision, and never restart.
        if (sameOrLower && (changed || after.data.revision < before.data.revision)) {
          // After the transaction that brought it: a write inside an observer would nest.
          queueMicrotask(() => this.lift(key, after.data.revision, before.data.revision));
        }
      }
    };
    specs.observe(observer);
    this.unobserve = () => specs.unobserve(observer);
  }

  stop(): void {
    this.unobserve?.();
    this.unobserve = null;
  }

  private lift(name: string, keptRevision: number, overwrittenRevision: number): void {
    if (this.unobserve === null) return;
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
