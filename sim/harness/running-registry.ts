/**
 * The simulator's global view of what runs where, at every instant.
 *
 * Every SimRunner (one per simulated node) reports each simulated process's
 * birth and end here. No agent can see this view: agents only see the
 * observed document, which lags and may be wrong (that is what the safety
 * checker exists to catch). The times are the harness's real clock
 * (performance.now), never a node's skewed clock, so events of different
 * nodes can be ordered.
 */

/** How a simulated process ended. */
export type EndKind =
  /** The runner stopped it (SIGTERM, exit): the loop asked for it. */
  | 'stop'
  /** The node died under it (crash): no snapshot, no status written. */
  | 'kill'
  /** The process died on its own (the node lives on); its runner starts it again on the same node. */
  | 'exit';

export interface RunStart {
  kind: 'start';
  at: number;
  node: string;
  workload: string;
  revision: number;
  /** Exclusive workloads (persistent, or volatile with on_partition = "stop") must never run twice. */
  exclusive: boolean;
  persistent: boolean;
  /** Digest of STATE_DIRECTORY's content when the process began (before it wrote anything). */
  stateDigest: string;
  /** The simulated process's own write counter in STATE_DIRECTORY at its start (how much state it got). */
  counter: number;
  /** Process id unique in the simulation, to pair a start with its end. */
  pid: number;
}

export interface RunEnd {
  kind: EndKind;
  at: number;
  node: string;
  workload: string;
  pid: number;
  /** Digest of STATE_DIRECTORY's content when the process was gone (null for a kill: nobody looked). */
  stateDigest: string | null;
  /** The process's write counter when it ended (for a kill: what died with the node). */
  counter: number;
  /** Why the runner stopped it (the reconcile loop's reason, e.g. "moving to n3: ..."); null for a kill. */
  reason: string | null;
}

export type RunEvent = RunStart | RunEnd;

export interface LiveProcess {
  node: string;
  pid: number;
  since: number;
  revision: number;
  exclusive: boolean;
  /** False while the process is still starting up. */
  ready: boolean;
}

export type RunListener = (event: RunEvent) => void;

export class RunningRegistry {
  private readonly live = new Map<string, Map<string, LiveProcess>>();
  private readonly history: RunEvent[] = [];
  private readonly listeners = new Set<RunListener>();
  private nextPid = 1;

  constructor(private readonly now: () => number = () => performance.now()) {}

  /** Records the birth of a process; returns its pid. Throws if `node` already runs `workload`. */
  started(input: Omit<RunStart, 'kind' | 'at' | 'pid'>): number {
    const onNode = this.processesOf(input.workload);
    if (onNode.has(input.node)) {
      // One runner never runs two copies of one workload on one node; a second copy is a runner bug.
      throw new Error(`registry: ${input.node} already runs ${input.workload}`);
    }
    const event: RunStart = { ...input, kind: 'start', at: this.now(), pid: this.nextPid++ };
    onNode.set(input.node, {
      node: input.node,
      pid: event.pid,
      since: event.at,
      revision: input.revision,
      exclusive: input.exclusive,
      ready: false,
    });
    this.emit(event);
    return event.pid;
  }

  /** The process finished starting (phase running). */
  ready(node: string, workload: string, pid: number): void {
    const entry = this.live.get(workload)?.get(node);
    if (entry?.pid === pid) entry.ready = true;
  }

  ended(input: Omit<RunEnd, 'at'>): void {
    const onNode = this.live.get(input.workload);
    const entry = onNode?.get(input.node);
    if (entry === undefined || entry.pid !== input.pid) return;
    onNode?.delete(input.node);
    if (onNode?.size === 0) this.live.delete(input.workload);
    this.emit({ ...input, at: this.now() });
  }

  /** Nodes running `workload` right now (starting or running). */
  runningOn(workload: string): LiveProcess[] {
    return [...(this.live.get(workload)?.values() ?? [])];
  }

  /** workload → processes, for every workload with at least one process. */
  snapshot(): Map<string, LiveProcess[]> {
    const out = new Map<string, LiveProcess[]>();
    for (const [workload, nodes] of this.live) out.set(workload, [...nodes.values()]);
    return out;
  }

  /** Workloads `node` runs right now. */
  workloadsOn(node: string): string[] {
    const out: string[] = [];
    for (const [workload, nodes] of this.live) if (nodes.has(node)) out.push(workload);
    return out.sort();
  }

  events(): readonly RunEvent[] {
    return this.history;
  }

  /** Every later event; returns the unsubscribe function. */
  subscribe(listener: RunListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private processesOf(workload: string): Map<string, LiveProcess> {
    let onNode = this.live.get(workload);
    if (onNode === undefined) {
      onNode = new Map();
      this.live.set(workload, onNode);
    }
    return onNode;
  }

  private emit(event: RunEvent): void {
    this.history.push(event);
    for (const listener of this.listeners) listener(event);
  }
}
