import type * as Y from 'yjs';
import type { NodeAgent } from '../../src/agent/node-agent.js';
import { liveValues } from '../../src/state/epochs/records.js';
import { encodeRecord, parseSlotKey, readSlots, slotKey } from '../../src/state/epochs/slot-codec.js';
import { Origin } from '../../src/state/names.js';
import { type AckedWrite, WRITES_MAP } from './sim-cluster-options.js';

export type AppliedListener = (node: string, key: string, at: number) => void;

/**
 * The harness's own test writes (the durability checker's ground truth):
 * each is a slotted record in the workloads document's `sim-writes` map
 * (docs/sim.md), acknowledged once durable on the node that wrote it, and
 * watched for on every agent as it arrives.
 */
export class HarnessWrites {
  private readonly acked: AckedWrite[] = [];
  private readonly listeners = new Set<AppliedListener>();
  private readonly detachers = new Map<string, () => void>();
  private seq = 0;

  /** One acknowledged write through `agent` (node `name`), durable there when this returns. */
  write(agent: NodeAgent, name: string): AckedWrite {
    const seq = ++this.seq;
    const key = `${name}/${seq}`;
    const value = { by: name, seq, at: Date.now() };
    let bytes = 0;
    // The update's own size (what replication carries), captured as the transaction commits.
    const off = agent.state.onChange((_doc, update, origin) => {
      if (origin === Origin.local) bytes += update.byteLength;
    });
    try {
      // A slotted record (docs/epochs.md), so that epoch switches carry it like any record.
      agent.state.transactLocal('workloads', (doc: Y.Doc) =>
        doc
          .getMap(WRITES_MAP)
          .set(
            slotKey(key, agent.state.nodeId),
            encodeRecord({ stamp: agent.state.clock.next(Date.now()), value }),
          ),
      );
    } finally {
      off();
    }
    const write: AckedWrite = { key, node: name, at: performance.now(), bytes };
    this.acked.push(write);
    return write;
  }

  ackedWrites(): readonly AckedWrite[] {
    return this.acked;
  }

  /** Keys of the harness's writes present on `agent`. */
  keysOn(agent: NodeAgent): Set<string> {
    return new Set(liveValues(readSlots(agent.state.doc('workloads').getMap(WRITES_MAP)).slots).keys());
  }

  /** Every later arrival of a harness write on any attached agent (local writes included); returns unsubscribe. */
  onApplied(listener: AppliedListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Reports the writes arriving on `agent` (node `name`) until `detach(name)`. */
  attach(agent: NodeAgent, name: string): void {
    // Through the state, not the Y.Map: an epoch switch replaces the document (then every key
    // present is reported; listeners keep the first arrival of each).
    const off = agent.state.onTransaction('workloads', 'after', (tr) => {
      if (this.listeners.size === 0) return;
      const at = performance.now();
      const map = agent.state.doc('workloads').getMap(WRITES_MAP);
      const keys =
        tr === null
          ? [...liveValues(readSlots(map).slots).keys()]
          : [...([...tr.changed].find(([type]) => (type as unknown) === map)?.[1] ?? [])]
              .filter((slot): slot is string => slot !== null)
              .map((slot) => parseSlotKey(slot)?.key ?? slot);
      for (const key of keys) for (const listener of this.listeners) listener(name, key, at);
    });
    this.detachers.set(name, off);
  }

  detach(name: string): void {
    this.detachers.get(name)?.();
    this.detachers.delete(name);
  }
}
