import type { SnapshotRef, WorkloadSpec } from '../../state/schemas.js';
import { collectClaims, holdRank, pickHolder } from './holders.js';
import { type MovePlan, planMoves } from './moves.js';
import { place } from './placement.js';
import { checkTiming, mayTakeOver, type OwnershipTiming } from './quorum.js';
import { compareAsc } from './rendezvous.js';
import type {
  Claim,
  Holder,
  HolderRef,
  LeaseView,
  LivenessView,
  ObservedDoc,
  PlacementNode,
  PlacementResult,
} from './types.js';
import { livenessOf, ownershipClass } from './types.js';

/** Everything one node knows when it decides what to do (docs/placement.md). */
export interface LocalView {
  /**
   * This node's clock, in ms. The same clock must stamp this node's own
   * `since` values and feed the FenceTracker and failure detector: claim ages
   * and lease coverage compare them.
   */
  now: number;
  specs: readonly WorkloadSpec[];
  /** Verified, active (unrevoked) enrolled nodes, draining ones included. */
  nodes: readonly PlacementNode[];
  /** Must list this node as alive. */
  liveness: LivenessView;
  /** ObservedView.listAll(). */
  observed: ObservedDoc;
  /**
   * Exclusive workload → this node's witness lease at `now` (docs/placement.md,
   * "Witness leases"). A workload missing here has no lease.
   */
  leases: ReadonlyMap<string, LeaseView>;
  /** A witness configuration is known: without one this node claims nothing exclusive. */
  witnessConfigured: boolean;
  /** nodeId → local time of its last heartbeat (failure detector lastSeenAt). */
  lastHeard: ReadonlyMap<string, number>;
  /**
   * When this agent began listening to heartbeats (local clock). A node it
   * never heard counts as silent since then, and it claims nothing until it
   * has listened for dead_after: before that its liveness view is not a view.
   */
  listeningSince: number;
  timing: OwnershipTiming;
  /** services.max_parallel: planned moves in flight at once, cluster-wide. */
  maxParallel: number;
}

/** Where a starting workload's STATE_DIRECTORY comes from. */
export type Restore =
  /** Volatile: nothing follows the workload between nodes. */
  | { from: 'none' }
  /** This node's own STATE_DIRECTORY as it is (a fresh workload, or this node held it last). */
  | { from: 'local' }
  /** Planned move: fetch this snapshot from the node that released it, verify the digest, restore. */
  | { from: 'snapshot'; nodeId: string; snapshot: SnapshotRef }
  /** Unplanned takeover: the dead holder's last checkpoint; writes made after it are lost. */
  | { from: 'checkpoint'; nodeId: string; snapshot: SnapshotRef }
  /** Unplanned takeover with no checkpoint known: starts empty; the dead holder's state is lost. */
  | { from: 'empty'; lostStateOf: string };

export type LocalAction =
  /**
   * Write the claim (phase `pulling`), then fetch and verify the image and,
   * per `restore`, fetch, verify and unpack the state into STATE_DIRECTORY.
   */
  | { kind: 'claim'; workload: string; revision: number; restore: Restore; takeoverFrom: string | null }
  /**
   * The claim has settled unchallenged: once the pull begun by `claim` has
   * finished, run the process (phase `starting`, then `running`).
   */
  | { kind: 'start'; workload: string; revision: number }
  /** The spec changed: stop and start again in place (the state directory stays). */
  | { kind: 'restart'; workload: string; fromRevision: number; toRevision: number }
  /** Planned move away: stop, snapshot STATE_DIRECTORY if persistent, write `released {snapshot}`. */
  | { kind: 'stop-and-release'; workload: string; to: string; snapshot: boolean; reason: string }
  /** This node is the target of a planned move; the holder has not released yet. Start nothing. */
  | { kind: 'wait-for-snapshot'; workload: string; from: string; reason: string }
  /**
   * Lease lost: stop now (even mid-start); if persistent snapshot locally and
   * write `released {snapshot}` with reason "fenced", else write `released`.
   */
  | { kind: 'fence-stop'; workload: string; snapshot: boolean; reason: string }
  /** Another claim won: stop whatever runs (nothing for a pull), drop the claim, keep no state. */
  | { kind: 'yield'; workload: string; winner: string | null; reason: string }
  /** The spec is gone: stop and remove this node's entry. */
  | { kind: 'stop-and-forget'; workload: string; reason: string }
  /** Remove this node's leftover entry (nothing runs; nobody needs its snapshot any more). */
  | { kind: 'forget'; workload: string; reason: string }
  /** This node is involved but must not act yet. */
  | { kind: 'wait'; workload: string; reason: string; retryAt: number | null };

export interface ViewEvaluation {
  claims: ReadonlyMap<string, readonly Claim[]>;
  holders: ReadonlyMap<string, Holder>;
  placement: PlacementResult;
  moves: MovePlan;
}

/** The intermediate results decideLocalActions works from (for status output and tests). */
export function evaluateView(nodeId: string, view: LocalView): ViewEvaluation {
  const claims = collectClaims(view.observed, { liveness: view.liveness, selfId: nodeId });
  const holders = new Map<string, Holder>();
  for (const [workload, list] of claims) {
    const best = pickHolder(list);
    if (best) holders.set(workload, { ...best, claims: list });
  }
  const holderRefs = new Map<string, HolderRef>();
  for (const [workload, holder] of holders) {
    const fenced = holder.phase === 'released' && (holder.reason ?? '').startsWith('fenced');
    holderRefs.set(workload, { nodeId: holder.nodeId, phase: holder.phase, since: holder.since, fenced });
  }
  const placement = place({
    specs: view.specs,
    nodes: view.nodes,
    liveness: view.liveness,
    holders: holderRefs,
  });
  const moves = planMoves({ claims, placement, maxParallel: view.maxParallel });
  return { claims, holders, placement, moves };
}

const ACTIVE = new Set(['pulling', 'starting', 'running']);
/** Phases in which a node's STATE_DIRECTORY holds the workload's live state. */
const HAD_STATE = new Set(['starting', 'running', 'stopping', 'failed']);

/**
 * What THIS node should do now, one entry per workload it is involved in
 * (workloads it has nothing to do with get none). Pure: the reconcile loop
 * executes the actions, writes the resulting statuses and calls it again.
 * The rules and why they are safe: docs/placement.md.
 */
export function decideLocalActions(nodeId: string, view: LocalView): LocalAction[] {
  checkView(nodeId, view);
  const { claims, holders, placement, moves } = evaluateView(nodeId, view);
  const specs = new Map(view.specs.map((spec) => [spec.name, spec]));
  const mine = view.observed.get(nodeId);
  const names = new Set<string>([...specs.keys(), ...(mine?.keys() ?? [])]);
  const actions: LocalAction[] = [];
  for (const workload of [...names].sort(compareAsc)) {
    const context: WorkloadContext = {
      nodeId,
      view,
      workload,
      spec: specs.get(workload),
      claims: claims.get(workload) ?? [],
      holder: holders.get(workload),
      my: (claims.get(workload) ?? []).find((claim) => claim.nodeId === nodeId),
      placement,
      moves,
    };
    const action = decideOne(context);
    if (action) actions.push(action);
  }
  return actions;
}

interface WorkloadContext {
  nodeId: string;
  view: LocalView;
  workload: string;
  spec: WorkloadSpec | undefined;
  claims: readonly Claim[];
  holder: Claim | undefined;
  my: Claim | undefined;
  placement: PlacementResult;
  moves: MovePlan;
}

function leaseOf(view: LocalView, workload: string): LeaseView {
  return view.leases.get(workload) ?? { mayRun: false, why: 'no lease asked for yet' };
}

function decideOne(ctx: WorkloadContext): LocalAction | undefined {
  const { workload, spec, my, holder, nodeId, view } = ctx;

  if (!spec) {
    if (!my) return undefined;
    if (ACTIVE.has(my.phase)) return { kind: 'stop-and-forget', workload, reason: 'workload spec removed' };
    if (my.phase === 'stopping') return undefined;
    return { kind: 'forget', workload, reason: 'workload spec removed' };
  }
  const exclusive = ownershipClass(spec) === 'exclusive';
  const persistent = spec.scratchClass === 'persistent';

  // A. The lease: an exclusive workload runs only while a quorum of
  // witnesses grants this node its lease (rule O2). A pull goes on without
  // one: it runs nothing, and the lease may still come.
  const lease = leaseOf(view, workload);
  if (exclusive && my && (my.phase === 'starting' || my.phase === 'running') && !lease.mayRun) {
    return { kind: 'fence-stop', workload, snapshot: persistent, reason: `lease lost: ${lease.why}` };
  }

  // B. Another live node's claim beats ours: let go. Not while we may run an
  // exclusive workload: the lease proves nobody else can, so the other
  // entry is a claim that will not get the lease, or a stale record. Except
  // a pull of ours that a newer pull beats: neither runs anything, and the
  // holder would wait for ever for the lease our claim keeps renewing
  // (holders rank the newer pull first, placement sticks to it, and we, not
  // being its holder, would never start): letting go hands the lease on.
  const pullBeatsPull = my?.phase === 'pulling' && holder?.phase === 'pulling';
  if (
    my &&
    ACTIVE.has(my.phase) &&
    holder &&
    holder.nodeId !== nodeId &&
    !holder.stale &&
    !(exclusive && lease.mayRun && !pullBeatsPull)
  ) {
    const duplicate = holdRank(my.phase, my.snapshot) === 3 && holdRank(holder.phase, holder.snapshot) === 3;
    const reason = duplicate
      ? exclusive
        ? `duplicate: also ${holder.phase} on ${holder.nodeId} (exclusive workload: safety violation)`
        : `duplicate: also ${holder.phase} on ${holder.nodeId} (partition healed)`
      : `${holder.nodeId}'s claim wins (${holder.phase})`;
    return { kind: 'yield', workload, winner: holder.nodeId, reason };
  }

  const assignment = ctx.placement.assignments.get(workload);
  const target = assignment && 'node' in assignment ? assignment.node : null;

  // C. This node holds it.
  if (holder && holder.nodeId === nodeId && my)
    return decideAsHolder(ctx, spec, my, target, exclusive, persistent);

  // D. This node is the target and does not hold it.
  if (target === nodeId) return decideAsTarget(ctx, spec, exclusive, persistent);

  // E. Leftovers: an old entry of ours that nobody needs any more.
  if (my && !ACTIVE.has(my.phase) && my.phase !== 'stopping') {
    const settled = ctx.claims.find(
      (claim) =>
        claim.nodeId !== nodeId && !claim.stale && (claim.phase === 'running' || claim.phase === 'failed'),
    );
    if (settled) return { kind: 'forget', workload, reason: `${settled.phase} on ${settled.nodeId}` };
    if (holdRank(my.phase, my.snapshot) === 0)
      return { kind: 'forget', workload, reason: 'not holding, not the target' };
  }
  return undefined;
}

function decideAsHolder(
  ctx: WorkloadContext,
  spec: WorkloadSpec,
  my: Claim,
  target: string | null,
  exclusive: boolean,
  persistent: boolean,
): LocalAction | undefined {
  const { workload, view, nodeId } = ctx;
  if (target === null) {
    // Placement found no place (the holder drains or lost eligibility and no
    // other node fits): a running process keeps running rather than stop with
    // nowhere to go, but nothing is started here.
    if (my.phase === 'pulling') {
      return { kind: 'yield', workload, winner: null, reason: 'no placement: claim dropped' };
    }
    if (my.phase === 'released' || my.phase === 'failed') {
      return { kind: 'wait', workload, reason: 'no node can take it', retryAt: null };
    }
    if ((my.phase === 'running' || my.phase === 'starting') && spec.revision > my.revision) {
      return { kind: 'restart', workload, fromRevision: my.revision, toRevision: spec.revision };
    }
    return undefined;
  }
  if (target !== nodeId) {
    if (my.phase === 'pulling')
      return { kind: 'yield', workload, winner: null, reason: `placement moved it to ${target}` };
    if (my.phase === 'stopping' || my.phase === 'released') return undefined;
    const move = ctx.moves.moves.find((m) => m.workload === workload);
    if (move && move.state === 'queued') {
      return {
        kind: 'wait',
        workload,
        reason: `move to ${target} queued (${ctx.moves.inFlight} in flight)`,
        retryAt: null,
      };
    }
    return {
      kind: 'stop-and-release',
      workload,
      to: target,
      snapshot: persistent,
      reason: move?.reason ?? 'placement changed',
    };
  }
  switch (my.phase) {
    case 'pulling': {
      if (exclusive) {
        // O1: start only under a lease a quorum of witnesses granted.
        const lease = leaseOf(view, workload);
        if (!lease.mayRun)
          return {
            kind: 'wait',
            workload,
            reason: `waiting for a witness lease: ${lease.why}`,
            retryAt: null,
          };
        return { kind: 'start', workload, revision: spec.revision };
      }
      // Relaxed workloads have no lease: a short settle lets a competing claim show up first.
      const settleAt = my.since + view.timing.claimSettleMs;
      if (view.now < settleAt) return { kind: 'wait', workload, reason: 'claim settling', retryAt: settleAt };
      return { kind: 'start', workload, revision: spec.revision };
    }
    case 'starting':
    case 'running':
      if (spec.revision > my.revision) {
        return { kind: 'restart', workload, fromRevision: my.revision, toRevision: spec.revision };
      }
      return undefined;
    case 'stopping':
      return undefined;
    case 'failed':
      // A crash-looped workload stays failed (and here) until its spec changes.
      if (spec.revision <= my.revision) return undefined;
      return claimIfLeased(ctx, spec, exclusive, { from: persistent ? 'local' : 'none' }, null);
    case 'released': {
      // O4: a holder that fenced itself may be cut off from the witnesses
      // while everyone still hears it (a one-way cut). Its claim would keep
      // the workload here; it waits dead_after first, so that a node that can
      // reach the witnesses takes it over (placement ranks it last meanwhile).
      if (exclusive && (my.reason ?? '').startsWith('fenced')) {
        const retryAt = my.since + view.timing.deadAfterMs;
        if (view.now < retryAt)
          return {
            kind: 'wait',
            workload,
            reason: 'fenced here: leaving it to others for dead_after',
            retryAt,
          };
      }
      // Our own snapshot (we fenced, or a move was called off): start again here.
      return claimIfLeased(ctx, spec, exclusive, { from: persistent ? 'local' : 'none' }, null);
    }
    case 'pending':
      return undefined;
  }
  return undefined;
}

function decideAsTarget(
  ctx: WorkloadContext,
  spec: WorkloadSpec,
  exclusive: boolean,
  persistent: boolean,
): LocalAction | undefined {
  const { workload, holder, view, nodeId } = ctx;
  if (holder && !holder.stale) {
    // Planned move: start only from a released snapshot, never beside a live holder.
    if (holder.phase === 'released') {
      return claimIfLeased(ctx, spec, exclusive, restoreFor(ctx, persistent), null);
    }
    const reason = `${holder.nodeId} is ${holder.phase}; waiting for it to stop and release`;
    if (persistent) return { kind: 'wait-for-snapshot', workload, from: holder.nodeId, reason };
    return { kind: 'wait', workload, reason, retryAt: null };
  }
  if (holder?.stale) {
    if (holder.phase === 'released') {
      // It let go before it died: nothing of it runs, no takeover rules apply.
      return claimIfLeased(ctx, spec, exclusive, restoreFor(ctx, persistent), null);
    }
    // A holder that is no longer an active enrolled node (revoked) is gone
    // for the cluster at once: it is refused everywhere, so it cannot renew
    // its lease, and waiting for its silence would only add dead_after. The
    // witnesses still decide when the lease is free.
    const enrolled = view.nodes.some((node) => node.nodeId === holder.nodeId);
    if (!enrolled) {
      return claimIfLeased(ctx, spec, exclusive, restoreFor(ctx, persistent), holder.nodeId);
    }
    const lastHeard = view.lastHeard.get(holder.nodeId);
    // Silence for dead_after only decides who TRIES: for an exclusive
    // workload the witnesses grant the lease only once the old holder's has
    // expired (or it released it), whatever this view says (rule O3).
    const decision = mayTakeOver({
      now: view.now,
      ownership: 'relaxed',
      holderLastHeardAt: lastHeard ?? view.listeningSince,
      deadAfterMs: view.timing.deadAfterMs,
      quorumVisible: true,
      holderAttestedDeadSince: null,
      extraWaitMs: 0,
      claimSettleMs: view.timing.claimSettleMs,
    });
    if (!decision.allowed) {
      return {
        kind: 'wait',
        workload,
        reason: `takeover from ${holder.nodeId}: ${decision.reason}`,
        retryAt: decision.retryAt,
      };
    }
    return claimIfLeased(ctx, spec, exclusive, restoreFor(ctx, persistent), holder.nodeId);
  }
  // Nobody holds it. A persistent workload released without a snapshot would
  // start empty: refuse and say so rather than lose its state silently.
  const bare = ctx.claims.find(
    (claim) =>
      claim.nodeId !== nodeId && !claim.stale && claim.phase === 'released' && claim.snapshot === null,
  );
  if (persistent && bare) {
    return {
      kind: 'wait',
      workload,
      reason: `${bare.nodeId} released it without a snapshot; refusing to start with empty state`,
      retryAt: null,
    };
  }
  return claimIfLeased(ctx, spec, exclusive, restoreFor(ctx, persistent), null);
}

function claimIfLeased(
  ctx: WorkloadContext,
  spec: WorkloadSpec,
  exclusive: boolean,
  restore: Restore,
  takeoverFrom: string | null,
): LocalAction {
  const warmAt = ctx.view.listeningSince + ctx.view.timing.deadAfterMs;
  if (ctx.view.now < warmAt) {
    return { kind: 'wait', workload: ctx.workload, reason: 'liveness view warming up', retryAt: warmAt };
  }
  if (exclusive && !ctx.view.witnessConfigured) {
    return {
      kind: 'wait',
      workload: ctx.workload,
      reason: 'no witness configuration known (silo witnesses): exclusive workloads are not claimed',
      retryAt: null,
    };
  }
  return { kind: 'claim', workload: ctx.workload, revision: spec.revision, restore, takeoverFrom };
}

/**
 * Where the state of a workload this node claims comes from: the best
 * released snapshot (claims are ordered best first, so a newer release wins
 * over a leftover from an older move); else, after an unplanned takeover,
 * the dead holder's last checkpoint, if any; else this node's own directory.
 */
function restoreFor(ctx: WorkloadContext, persistent: boolean): Restore {
  if (!persistent) return { from: 'none' };
  const released = ctx.claims.find((claim) => claim.phase === 'released' && claim.snapshot !== null);
  if (released?.snapshot) {
    if (released.nodeId === ctx.nodeId) return { from: 'local' };
    return { from: 'snapshot', nodeId: released.nodeId, snapshot: released.snapshot };
  }
  // The dead node that ran it (or crash-looped it): its state is on its disk.
  const dead = ctx.claims.find(
    (claim) => claim.nodeId !== ctx.nodeId && claim.stale && HAD_STATE.has(claim.phase),
  );
  if (dead?.snapshot) return { from: 'checkpoint', nodeId: dead.nodeId, snapshot: dead.snapshot };
  if (dead) return { from: 'empty', lostStateOf: dead.nodeId };
  return { from: 'local' };
}

function checkView(nodeId: string, view: LocalView): void {
  if (typeof nodeId !== 'string' || nodeId.length === 0)
    throw new TypeError('decideLocalActions: nodeId must be a non-empty string');
  for (const key of ['now', 'listeningSince'] as const) {
    if (typeof view[key] !== 'number' || !Number.isFinite(view[key])) {
      throw new RangeError(`decideLocalActions: view.${key} must be a finite number`);
    }
  }
  if (view.listeningSince > view.now)
    throw new RangeError('decideLocalActions: view.listeningSince is after view.now');
  checkTiming(view.timing);
  if (livenessOf(view.liveness, nodeId) !== 'alive') {
    throw new RangeError(`decideLocalActions: the view must list this node (${nodeId}) as alive`);
  }
  if (!(view.lastHeard instanceof Map) || !(view.leases instanceof Map)) {
    throw new TypeError('decideLocalActions: view.lastHeard and view.leases must be Maps');
  }
}
