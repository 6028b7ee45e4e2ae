import type { ClusterState } from './cluster-state.js';
import { byKey, onMapsChange, RecordChecker, type ViewOptions } from './record-check.js';
import {
  AddressClaimValueSchema,
  WorkloadNameSchema,
  type WorkloadSpec,
  WorkloadSpecSchema,
} from './schemas.js';
import {
  type AddressClaim,
  type AddressRepair,
  claimKey,
  parseClaimKey,
  planAddressRepair,
  proposeAddress,
  resolveServiceAddresses,
  type ServiceRange,
  ServiceRangeExhaustedError,
} from './service-addresses.js';
import { SlottedMap } from './slotted-map.js';

/** A spec as a writer supplies it: the view assigns the revision. */
export type WorkloadSpecInput = Omit<WorkloadSpec, 'revision'> & { revision?: number };

/** Schema of a writer's input: any revision given is ignored. */
const WorkloadSpecInputSchema = WorkloadSpecSchema.omit({ revision: true });

export interface WorkloadsViewOptions extends ViewOptions {
  /**
   * Where overlay workloads' service addresses come from (docs/services.md,
   * "Service addresses"). Absent: `put` claims no address (a view without
   * an org, e.g. in tests of other parts).
   */
  serviceRange?: ServiceRange;
  /** Clock for the `at` of address claims (default Date.now). */
  now?: () => number;
}

/**
 * Typed access to the workloads document (docs/protocol.md, "Documents"):
 * `specs` (workload name → WorkloadSpec, a plain object) and `addresses`
 * (service address claims, `<address>/<workload>` → `{at}`), each a map of
 * slotted last-writer-wins records (SlottedMap, docs/epochs.md).
 */
export class WorkloadsView {
  private readonly state: ClusterState;
  private readonly check: RecordChecker;
  private readonly options: WorkloadsViewOptions;
  private readonly now: () => number;
  private readonly specs: SlottedMap;
  private readonly claims: SlottedMap;

  constructor(options: WorkloadsViewOptions) {
    this.options = options;
    this.state = options.state;
    this.check = new RecordChecker('workloads', options);
    this.now = options.now ?? Date.now;
    this.specs = new SlottedMap(this.state, 'workloads', 'specs', this.check);
    this.claims = new SlottedMap(this.state, 'workloads', 'addresses', this.check);
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
   *
   * An overlay workload without a service address gets a claim for one in
   * the same transaction, so the spec never replicates without it; a full
   * range throws ServiceRangeExhaustedError and writes nothing.
   */
  put(spec: WorkloadSpecInput, options: { above?: number } = {}): WorkloadSpec {
    const key = typeof spec?.name === 'string' ? spec.name : '?';
    const content = this.check.require('specs', key, spec, WorkloadSpecInputSchema);
    const claim = this.claimFor(content);
    return this.state.transactLocal('workloads', () => {
      if (claim !== null) this.claims.set(claimKey(claim.address, claim.workload), { at: claim.at });
      const current = this.read(content.name, this.specs.get(content.name));
      const above = options.above ?? 0;
      if (current && current.revision > above && sameContent(withoutRevision(current), content))
        return current;
      const next: WorkloadSpec = { ...content, revision: Math.max(current?.revision ?? 0, above) + 1 };
      this.specs.set(content.name, next);
      return next;
    });
  }

  /** The claim `put` writes for `spec`: none unless it is an overlay workload without an address. */
  private claimFor(spec: Omit<WorkloadSpec, 'revision'>): AddressClaim | null {
    const range = this.options.serviceRange;
    if (range === undefined || spec.network !== 'overlay') return null;
    const assigned = this.resolve(new Set([...this.overlayWorkloads(), spec.name]));
    if (assigned.has(spec.name)) return null;
    const address = proposeAddress(spec.name, new Set(assigned.values()), range);
    if (address === null) throw new ServiceRangeExhaustedError(spec.name, range);
    return { address, workload: spec.name, at: this.now() };
  }

  /**
   * Every overlay workload's service address (workload name → address), as
   * resolved from the claims (src/state/service-addresses.ts): the same on
   * every node holding the same document. Empty without a service range.
   */
  serviceAddresses(): Map<string, string> {
    return this.resolve(this.overlayWorkloads());
  }

  /**
   * Writes what `planAddressRepair` says (claims for overlay workloads that
   * lost theirs or never had one, removal of the claims that do not win);
   * returns the plan. Every node calls it after each change of the
   * document: the plan is deterministic, so concurrent repairs write the
   * same keys.
   */
  repairAddresses(): AddressRepair {
    const range = this.options.serviceRange;
    if (range === undefined) return { claim: [], remove: [], exhausted: [] };
    const plan = planAddressRepair(this.listClaims(), this.overlayWorkloads(), range, this.now());
    if (plan.claim.length + plan.remove.length > 0) {
      this.state.transactLocal('workloads', () => {
        for (const key of plan.remove) this.claims.delete(key);
        for (const claim of plan.claim)
          this.claims.set(claimKey(claim.address, claim.workload), { at: claim.at });
      });
    }
    return plan;
  }

  private resolve(workloads: ReadonlySet<string>): Map<string, string> {
    const range = this.options.serviceRange;
    if (range === undefined) return new Map();
    return resolveServiceAddresses(this.listClaims(), workloads, range);
  }

  private overlayWorkloads(): Set<string> {
    return new Set(
      this.list()
        .filter((spec) => spec.network === 'overlay')
        .map((spec) => spec.name),
    );
  }

  /** Every well-formed claim (bad keys and values are reported and skipped, like any record). */
  private listClaims(): (AddressClaim & { key: string })[] {
    const out: (AddressClaim & { key: string })[] = [];
    for (const [key, value] of [...this.claims.entries()].sort(byKey)) {
      const parts = parseClaimKey(key);
      if (parts === null) {
        this.check.report('addresses', key, value, 'bad key: expected <address>/<workload>', 'invalid');
        continue;
      }
      if (!this.check.key('addresses', key, value, WorkloadNameSchema, parts.workload)) continue;
      const claim = this.check.parse('addresses', key, value, AddressClaimValueSchema);
      if (claim) out.push({ key, ...parts, at: claim.at });
    }
    return out;
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

  /**
   * Removes the spec (valid or not) and releases its service address
   * claims in the same transaction; true if there was a spec. Durable on return.
   */
  delete(name: string): boolean {
    this.check.require('specs', String(name), name, WorkloadNameSchema);
    if (!this.specs.has(name)) return false;
    this.state.transactLocal('workloads', () => {
      this.specs.delete(name);
      for (const key of [...this.claims.keys()]) {
        if (parseClaimKey(key)?.workload === name) this.claims.delete(key);
      }
    });
    return true;
  }

  onChange(listener: (origin: unknown) => void): () => void {
    return onMapsChange(this.state, 'workloads', ['specs', 'addresses'], this.options.logger, listener);
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
