import type * as Y from 'yjs';
import type { ClusterState } from './cluster-state.js';
import { byKey, onMapsChange, RecordChecker, type ViewOptions } from './record-check.js';
import { WorkloadNameSchema, type WorkloadSpec, WorkloadSpecSchema } from './schemas.js';

/** A spec as a writer supplies it: the view assigns the revision. */
export type WorkloadSpecInput = Omit<WorkloadSpec, 'revision'> & { revision?: number };

/** Schema of a writer's input: any revision given is ignored. */
const WorkloadSpecInputSchema = WorkloadSpecSchema.omit({ revision: true });

/**
 * Typed access to the workloads document (docs/protocol.md, "Documents"):
 * `specs` (workload name → WorkloadSpec, a plain object).
 */
export class WorkloadsView {
  private readonly state: ClusterState;
  private readonly check: RecordChecker;
  private readonly options: ViewOptions;

  constructor(options: ViewOptions) {
    this.options = options;
    this.state = options.state;
    this.check = new RecordChecker('workloads', options);
  }

  private get specs(): Y.Map<unknown> {
    return this.state.doc('workloads').getMap('specs');
  }

  /**
   * Writes `spec` with revision = the current valid spec's revision + 1 (1
   * when there is none); durable on return. Putting a spec equal to the
   * current one (revision aside) writes nothing and returns the current one,
   * so re-applying a manifest does not restart the service.
   * Two nodes putting concurrently may pick the same revision; the document
   * keeps one of the two specs (Y.Map last-writer-wins) with that revision,
   * and SpecRevisionGuard lifts it above both.
   *
   * `above`: the revision must exceed this too, and the spec is written even
   * when its content equals the current one.
   */
  put(spec: WorkloadSpecInput, options: { above?: number } = {}): WorkloadSpec {
    const key = typeof spec?.name === 'string' ? spec.name : '?';
    const content = this.check.require('specs', key, spec, WorkloadSpecInputSchema);
    return this.state.transactLocal('workloads', () => {
      const current = this.read(content.name, this.specs.get(content.name));
      const above = options.above ?? 0;
      if (current && current.revision > above && sameContent(withoutRevision(current), content))
        return current;
      const next: WorkloadSpec = { ...content, revision: Math.max(current?.revision ?? 0, above) + 1 };
      this.specs.set(content.name, next);
      return next;
    });
  }

  get(name: string): WorkloadSpec | undefined {
    return this.read(name, this.specs.get(name));
  }

  /** Every valid spec, sorted by name. */
  list(): WorkloadSpec[] {
    const out: WorkloadSpec[] = [];
    for (const [key, value] of [...this.specs.entries()].sort(byKey)) {
      const spec = this.read(key, value);
      if (spec) out.push(spec);
    }
    return out;
  }

  /** Removes the spec (valid or not); true if there was one. Durable on return. */
  delete(name: string): boolean {
    this.check.require('specs', String(name), name, WorkloadNameSchema);
    if (!this.specs.has(name)) return false;
    this.state.transactLocal('workloads', () => this.specs.delete(name));
    return true;
  }

  onChange(listener: (origin: unknown) => void): () => void {
    return onMapsChange(this.state.doc('workloads'), [this.specs], this.options.logger, listener);
  }

  private read(key: string, value: unknown): WorkloadSpec | undefined {
    if (value === undefined) return undefined;
    return this.check.parse('specs', key, value, WorkloadSpecSchema, (spec) =>
      spec.name === key ? null : `spec named ${JSON.stringify(spec.name)} stored under another name`,
    );
  }
}

export function withoutRevision(spec: WorkloadSpec): Omit<WorkloadSpec, 'revision'> {
  const { revision: _revision, ...rest } = spec;
  return rest;
}

/** Structural equality of two schema-parsed values (plain JSON data), key order ignored. */
export function sameContent(a: unknown, b: unknown): boolean {
  return canonical(a) === canonical(b);
}

function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v !== null && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(
          Object.entries(v as Record<string, unknown>).sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0)),
        )
      : v,
  );
}
