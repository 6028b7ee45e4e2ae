import type { Logger } from 'pino';
import type { WorkloadSpec } from '../state/schemas.js';
import type { LoopMetrics } from './loop-metrics.js';
import type { LocalAction, LocalView } from './placement/index.js';
import type { Slot } from './slot.js';
import type { SlotActions } from './slot-actions.js';

/**
 * What each of placement's local actions does to a slot: the mapping from
 * `decideLocalActions`'s vocabulary to SlotActions (reconcile-loop.ts
 * dispatches; this says what the dispatched task runs).
 */

/** Actions that must not wait behind a pull: they abort it. */
export const URGENT_ACTIONS: ReadonlySet<string> = new Set(['fence-stop', 'yield', 'stop-and-forget']);

export interface ActionExecutionOptions {
  actions: SlotActions;
  metrics: LoopMetrics;
  logger: Logger;
}

export function executeAction(
  options: ActionExecutionOptions,
  slot: Slot,
  action: LocalAction,
  spec: WorkloadSpec | undefined,
  view: LocalView,
  signal: AbortSignal,
): Promise<void> {
  const { actions } = options;
  switch (action.kind) {
    case 'claim':
      return actions.claim(slot, requireSpec(spec, action), action.restore, action.takeoverFrom, signal);
    case 'start':
      return actions.startClaimed(slot, requireSpec(spec, action), view, signal);
    case 'restart':
      return actions.restart(slot, requireSpec(spec, action), action.fromRevision, signal);
    case 'stop-and-release':
      slot.release = { reason: `moving to ${action.to}: ${action.reason}`, snapshot: action.snapshot };
      return actions.release(slot);
    case 'fence-stop':
      options.metrics.leaseFences.inc();
      options.logger.warn({ workload: slot.name, reason: action.reason }, 'witness lease lost: fencing');
      slot.release = { reason: `fenced: ${action.reason}`, snapshot: action.snapshot };
      return actions.release(slot);
    case 'yield':
      return actions.letGo(slot, action.reason);
    case 'stop-and-forget':
    case 'forget':
      return actions.letGo(slot, action.reason);
    case 'wait':
    case 'wait-for-snapshot':
      return Promise.resolve();
  }
}

function requireSpec(spec: WorkloadSpec | undefined, action: LocalAction): WorkloadSpec {
  if (spec === undefined) throw new Error(`${action.kind} of ${action.workload}: the spec is gone`);
  return spec;
}
