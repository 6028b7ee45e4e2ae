import * as Y from 'yjs';

/**
 * A large diff cut into several self-contained Yjs updates, so that neither
 * the side encoding it nor the side applying it holds the event loop for the
 * whole document (docs/protocol.md, "Anti-entropy sync", slices). No I/O.
 *
 * Each slice is a valid update (V1 encoding, as `Y.encodeStateAsUpdate`) that
 * carries, per client, a run of consecutive structs. A struct goes out only
 * after every struct it refers to (its left and right origin, the item of its
 * parent type) that the receiver lacks, in the same slice or an earlier one:
 * the receiver integrates every slice at once and never parks structs as
 * pending (Yjs re-merges its pending structs with each later update, which
 * is quadratic). The last slice is `Y.encodeStateAsUpdate(doc, sent)`: what
 * changed since the first slice plus the whole delete set (and the
 * document's own pending structs), as the unsliced diff carries them.
 *
 * The generator may be resumed after the document changed (the caller yields
 * to the event loop between slices): every position is kept as a clock, never
 * as an index into the store, so splits and merges of structs do not matter.
 * Applying every slice, in order, gives what applying
 * `Y.encodeStateAsUpdate(doc, remoteSv)` would have given, plus anything
 * written meanwhile.
 */
export interface SliceLimits {
  /** A slice ends once its structs encode to at least this many bytes. */
  bytes: number;
  /** ... or once it holds this many structs; a diff with no more structs than this goes whole. */
  structs: number;
}

/** Rounds of slicing what was written meanwhile before the rest goes in the last slice. */
const MAX_ROUNDS = 3;

export const DEFAULT_SLICE_LIMITS: SliceLimits = { bytes: 256 * 1024, structs: 2000 };

export interface DiffSlice {
  update: Uint8Array;
  /** True for the last slice of the diff. */
  last: boolean;
}

type Struct = Y.Item | Y.GC;

/** The fields of lib0's Encoder that `encoding.length` reads. */
interface Lib0Encoder {
  cpos: number;
  bufs: Uint8Array[];
}

function encodedLength(encoder: Y.UpdateEncoderV1): number {
  const rest = encoder.restEncoder as unknown as Lib0Encoder;
  let length = rest.cpos;
  for (const buf of rest.bufs) length += buf.byteLength;
  return length;
}

function varUintBytes(out: number[], value: number): void {
  let rest = value;
  while (rest > 0x7f) {
    out.push(0x80 | (rest % 0x80));
    rest = Math.floor(rest / 0x80);
  }
  out.push(rest);
}

/** One client's run of structs within a slice. */
interface Run {
  client: number;
  clock: number;
  count: number;
  encoder: Y.UpdateEncoderV1;
}

/** A slice in V1 update format: the runs, then an empty delete set. */
function assemble(runs: Run[]): Uint8Array {
  const bodies = runs.map((run) => run.encoder.toUint8Array());
  const head: number[] = [];
  varUintBytes(head, runs.length);
  const heads = runs.map((run) => {
    const bytes: number[] = [];
    varUintBytes(bytes, run.count);
    varUintBytes(bytes, run.client);
    varUintBytes(bytes, run.clock);
    return bytes;
  });
  let total = head.length + 1;
  for (let i = 0; i < runs.length; i++)
    total += (heads[i] as number[]).length + (bodies[i] as Uint8Array).byteLength;
  const out = new Uint8Array(total);
  out.set(head, 0);
  let at = head.length;
  for (let i = 0; i < runs.length; i++) {
    out.set(heads[i] as number[], at);
    at += (heads[i] as number[]).length;
    out.set(bodies[i] as Uint8Array, at);
    at += (bodies[i] as Uint8Array).byteLength;
  }
  out[at] = 0; // no deletes
  return out;
}

/** Ids a struct refers to that must be integrated before it. */
function dependencies(struct: Struct): Y.ID[] {
  if (!(struct instanceof Y.Item)) return [];
  const deps: Y.ID[] = [];
  if (struct.origin) deps.push(struct.origin);
  if (struct.rightOrigin) deps.push(struct.rightOrigin);
  const parent = struct.parent;
  if (parent instanceof Y.ID) deps.push(parent);
  else if (parent?._item) deps.push(parent._item.id);
  return deps;
}

/**
 * The diff of `doc` against `remoteSv` as one or more slices. One slice, equal
 * to `Y.encodeStateAsUpdate(doc, remoteSv)`, when the diff holds at most
 * `limits.structs` structs.
 */
export function* diffSlices(
  doc: Y.Doc,
  remoteSv: Uint8Array,
  limits: SliceLimits = DEFAULT_SLICE_LIMITS,
): Generator<DiffSlice, void, void> {
  const remote = Y.decodeStateVector(remoteSv);
  const store = doc.store;
  /** Per client, the clock below which the receiver has (or was sent) everything. */
  const sent = new Map<number, number>(remote);
  /** Per client, where the diff taken now ends. */
  const end = new Map<number, number>();
  /** Takes the ends from the store as it is now; returns how many structs lie between `sent` and them. */
  const measure = (): number => {
    let total = 0;
    end.clear();
    for (const [client, structs] of store.clients) {
      const first = structs[0];
      const last = structs[structs.length - 1];
      if (!first || !last) continue;
      const from = Math.max(sent.get(client) ?? 0, first.id.clock);
      const to = last.id.clock + last.length;
      if (from >= to) continue;
      sent.set(client, from);
      end.set(client, to);
      total += structs.length - Y.findIndexSS(structs, from);
    }
    return total;
  };
  if (measure() <= limits.structs) {
    yield { update: Y.encodeStateAsUpdate(doc, remoteSv), last: true };
    return;
  }
  // What was written while the slices went out is sliced too, for a few rounds (a document
  // written to faster than it is sliced would never end); the rest goes in the last slice.
  for (let round = 0; round < MAX_ROUNDS && (round === 0 || measure() > limits.structs); round++) {
    yield* slicesUpToEnd();
  }
  // The structs are done; the delete set and whatever arrived meanwhile go in a last slice.
  yield { update: Y.encodeStateAsUpdate(doc, Y.encodeStateVector(sent)), last: true };

  /** Slices of every struct from `sent` to `end`. */
  function* slicesUpToEnd(): Generator<DiffSlice, void, void> {
    const clients = [...end.keys()];
    let next = 0;
    while (next < clients.length) {
      const runs = new Map<number, Run>();
      let bytes = 0;
      let count = 0;
      /** Adds the struct holding `sent(client)` to the slice; false when the store has none. */
      const take = (client: number): boolean => {
        const structs = store.clients.get(client);
        const clock = sent.get(client) ?? 0;
        const last = structs?.[structs.length - 1];
        if (!structs || !last || clock >= last.id.clock + last.length) return false;
        const struct = structs[Y.findIndexSS(structs, clock)] as Struct;
        let run = runs.get(client);
        if (!run) {
          run = { client, clock, count: 0, encoder: new Y.UpdateEncoderV1() };
          runs.set(client, run);
        }
        const before = encodedLength(run.encoder);
        struct.write(run.encoder, clock - struct.id.clock);
        bytes += encodedLength(run.encoder) - before;
        run.count++;
        count++;
        sent.set(client, struct.id.clock + struct.length);
        return true;
      };
      /** Adds `client`'s next struct after whatever it depends on that the receiver lacks. */
      const takeWithDependencies = (client: number): void => {
        const stack: Array<{ client: number; until: number }> = [
          { client, until: (sent.get(client) ?? 0) + 1 },
        ];
        const onStack = new Set<number>([client]);
        while (stack.length > 0) {
          const top = stack[stack.length - 1] as { client: number; until: number };
          if ((sent.get(top.client) ?? 0) >= top.until) {
            stack.pop();
            onStack.delete(top.client);
            continue;
          }
          const structs = store.clients.get(top.client);
          const clock = sent.get(top.client) ?? 0;
          const struct =
            structs && clock < Y.getState(store, top.client)
              ? structs[Y.findIndexSS(structs, clock)]
              : undefined;
          let blocked: Y.ID | undefined;
          if (struct) {
            for (const dep of dependencies(struct as Struct)) {
              if (dep.client === top.client || onStack.has(dep.client)) continue;
              if (dep.clock >= (sent.get(dep.client) ?? 0) && dep.clock < Y.getState(store, dep.client)) {
                blocked = dep;
                break;
              }
            }
          }
          if (blocked) {
            stack.push({ client: blocked.client, until: blocked.clock + 1 });
            onStack.add(blocked.client);
          } else if (!take(top.client)) {
            // Nothing more of it in the store (cannot happen in a consistent store): give up on it.
            stack.pop();
            onStack.delete(top.client);
          }
        }
      };
      while (next < clients.length && bytes < limits.bytes && count < limits.structs) {
        const client = clients[next] as number;
        if ((sent.get(client) ?? 0) >= (end.get(client) ?? 0)) {
          next++;
          continue;
        }
        const before = sent.get(client);
        takeWithDependencies(client);
        // The store holds less than its state said (cannot happen in a consistent store): skip the client.
        if (sent.get(client) === before) next++;
      }
      // Each run holds consecutive structs of its client (`take` keeps them so); clients in any order.
      if (runs.size > 0) yield { update: assemble([...runs.values()]), last: false };
    }
  }
}
