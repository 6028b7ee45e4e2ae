import { MemberIndex, SwimCore, type SwimMessage, type SwimParams } from '../src/membership/swim-core.js';
import { encodeSwimFrame } from '../src/membership/swim-frames.js';
import { writeReport } from './lib/report.js';
import { type Distribution, distribution, round } from './lib/stats.js';

/**
 * `npm run bench -- swim-model` (docs/benchmarks.md, "Membership at scale"):
 * real SwimCores (src/membership/swim-core.ts) exchange real frames
 * (swim-frames.ts, for their sizes) through a discrete-event network with
 * latency, jitter and loss. Time is simulated, so the figures are the
 * protocol's, not this machine's event loop: what it costs one node per
 * second, how long until a crash is known everywhere, and how many live
 * members are wrongly suspected or declared dead.
 *
 * Bytes are SWIM frame payloads; the transport adds its own framing per
 * message (length prefix, yamux and Noise: about 40 bytes), stated apart.
 */
export interface SwimModelOptions {
  nodes: number[];
  /** Simulated seconds before the crashes (start-up, first passes). */
  warmupS: number;
  /** Simulated seconds after the crashes. */
  afterS: number;
  crashes: number;
  latencyMs: number;
  jitterMs: number;
  /** One run per node count per loss rate (percent of messages dropped). */
  losses: number[];
  seed: number;
  params?: Partial<SwimParams>;
  log: (line: string) => void;
}

export interface SwimModelRow {
  nodes: number;
  lossPct: number;
  /** Per live node per simulated second, in the steady state before the crashes. */
  messagesPerNodeS: number;
  bytesPerNodeS: number;
  /** The busiest node's messages per second (sent + received): is the load even? */
  maxMessagesPerNodeS: number;
  /** From a crash to the first live node declaring it dead, and to every live node doing so (ms). */
  firstDeadMs: Distribution;
  allDeadMs: Distribution;
  /** Crashed nodes not declared dead by every live node by the end. */
  undetected: number;
  /** Live nodes someone suspected (refuted) / declared dead, over the whole run. */
  falseSuspicions: number;
  falseDeaths: number;
  wallMs: number;
}

export interface SwimModelReport {
  options: Omit<SwimModelOptions, 'log'>;
  transportOverheadBytesPerMessage: number;
  rows: SwimModelRow[];
}

const TRANSPORT_OVERHEAD_BYTES = 40;

function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A min-heap of events by time (ties in insertion order, so runs repeat exactly). */
class EventQueue<T> {
  private readonly heap: { at: number; n: number; item: T }[] = [];
  private count = 0;

  push(at: number, item: T): void {
    const heap = this.heap;
    heap.push({ at, n: this.count++, item });
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.less(i, parent)) break;
      [heap[i], heap[parent]] = [heap[parent] as (typeof heap)[0], heap[i] as (typeof heap)[0]];
      i = parent;
    }
  }

  pop(): { at: number; item: T } | undefined {
    const heap = this.heap;
    const top = heap[0];
    const last = heap.pop();
    if (top === undefined || last === undefined) return undefined;
    if (heap.length > 0) {
      heap[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < heap.length && this.less(l, m)) m = l;
        if (r < heap.length && this.less(r, m)) m = r;
        if (m === i) break;
        [heap[i], heap[m]] = [heap[m] as (typeof heap)[0], heap[i] as (typeof heap)[0]];
        i = m;
      }
    }
    return top;
  }

  private less(a: number, b: number): boolean {
    const x = this.heap[a] as { at: number; n: number };
    const y = this.heap[b] as { at: number; n: number };
    return x.at < y.at || (x.at === y.at && x.n < y.n);
  }
}

type Event =
  | { kind: 'wake'; node: number }
  | { kind: 'deliver'; from: number; to: number; message: SwimMessage };

function runOne(n: number, lossPct: number, options: SwimModelOptions): SwimModelRow {
  const started = performance.now();
  const random = prng(options.seed * 1_000_003 + n);
  const names = Array.from({ length: n }, (_, i) => `n${i + 1}`);
  const index = new MemberIndex();
  for (const name of names) index.indexOf(name);
  const cores: (SwimCore | null)[] = names.map(
    (selfId, i) =>
      new SwimCore({
        selfId,
        index,
        random: prng(options.seed + 7919 * (i + 1)),
        params: options.params ?? {},
      }),
  );
  for (const core of cores) core?.setMembers(names);
  const queue = new EventQueue<Event>();
  /** The wake each node has queued (a later-queued earlier wake supersedes it). */
  const wakeAt = new Float64Array(n).fill(Number.POSITIVE_INFINITY);
  // Nodes start at random phases within the first period, as real agents would.
  for (let i = 0; i < n; i++) {
    wakeAt[i] = Math.floor(random() * 1000);
    queue.push(wakeAt[i] as number, { kind: 'wake', node: i });
  }

  const crashAt = options.warmupS * 1000;
  const endAt = crashAt + options.afterS * 1000;
  const crashed = new Set<number>();
  const victims: number[] = [];
  while (victims.length < Math.min(options.crashes, n - 1)) {
    const v = Math.floor(random() * n);
    if (!victims.includes(v)) victims.push(v);
  }
  const firstDead = new Map<number, number>();
  const deadBy = new Map<number, Set<number>>(victims.map((v) => [v, new Set<number>()]));
  const allDead = new Map<number, number>();
  const suspectedLive = new Set<string>();
  const deadLive = new Set<string>();
  const sent = new Uint32Array(n);
  const handled = new Uint32Array(n);
  let steadyMessages = 0;
  let steadyBytes = 0;
  const steadyFrom = Math.min(crashAt, 5000);

  const drain = (i: number, now: number) => {
    const core = cores[i] as SwimCore;
    const { send, events } = core.takeOutput();
    for (const event of events) {
      if (event.kind !== 'member') continue;
      const about = index.find(event.node) as number;
      if (event.state === 'dead' && deadBy.has(about) && crashed.has(about)) {
        const by = deadBy.get(about) as Set<number>;
        by.add(i);
        if (!firstDead.has(about)) firstDead.set(about, now - crashAt);
        if (!allDead.has(about) && by.size >= n - crashed.size) allDead.set(about, now - crashAt);
      } else if (!crashed.has(about)) {
        if (event.state === 'suspect') suspectedLive.add(event.node);
        if (event.state === 'dead') deadLive.add(event.node);
      }
    }
    for (const out of send) {
      const to = index.find(out.to) as number;
      sent[i] = (sent[i] as number) + 1;
      if (now >= steadyFrom && now < crashAt) {
        steadyMessages++;
        steadyBytes += encodeSwimFrame(out.message).byteLength;
      }
      if (random() * 100 < lossPct) continue;
      const delay = options.latencyMs + Math.floor(random() * (options.jitterMs + 1));
      queue.push(now + delay, { kind: 'deliver', from: i, to, message: out.message });
    }
    const next = Math.max(core.nextWakeAt(), now + 1);
    if (next < (wakeAt[i] as number)) {
      wakeAt[i] = next;
      queue.push(next, { kind: 'wake', node: i });
    }
  };

  let crashedYet = false;
  for (;;) {
    const event = queue.pop();
    if (event === undefined || event.at > endAt) break;
    const now = event.at;
    if (!crashedYet && now >= crashAt) {
      crashedYet = true;
      for (const v of victims) {
        crashed.add(v);
        cores[v] = null;
      }
    }
    const { item } = event;
    if (item.kind === 'wake') {
      if (wakeAt[item.node] !== now) continue; // superseded
      wakeAt[item.node] = Number.POSITIVE_INFINITY;
      const core = cores[item.node];
      if (!core) continue;
      core.tick(now);
      drain(item.node, now);
    } else {
      const core = cores[item.to];
      if (!core) continue;
      handled[item.to] = (handled[item.to] as number) + 1;
      core.receive(now, names[item.from] as string, item.message);
      drain(item.to, now);
    }
  }

  const steadyS = (crashAt - steadyFrom) / 1000;
  let maxPerNode = 0;
  for (let i = 0; i < n; i++)
    if (!crashed.has(i)) maxPerNode = Math.max(maxPerNode, (sent[i] as number) + (handled[i] as number));
  const liveNodes = n;
  return {
    nodes: n,
    lossPct,
    messagesPerNodeS: round(steadyMessages / liveNodes / steadyS, 2),
    bytesPerNodeS: round(steadyBytes / liveNodes / steadyS, 0),
    maxMessagesPerNodeS: round(maxPerNode / ((endAt - 0) / 1000), 2),
    firstDeadMs: distribution([...firstDead.values()]),
    allDeadMs: distribution([...allDead.values()]),
    undetected: victims.length - allDead.size,
    falseSuspicions: suspectedLive.size,
    falseDeaths: deadLive.size,
    wallMs: Math.round(performance.now() - started),
  };
}

export function runSwimModel(options: SwimModelOptions): SwimModelReport {
  const rows: SwimModelRow[] = [];
  for (const lossPct of options.losses)
    for (const n of options.nodes) {
      options.log(`swim-model: ${n} nodes, ${lossPct}% loss`);
      const row = runOne(n, lossPct, options);
      options.log(
        `  ${row.messagesPerNodeS} msg/s and ${row.bytesPerNodeS} B/s per node; all live nodes knew of a crash after p50 ${row.allDeadMs.p50} ms, max ${row.allDeadMs.max} ms; false suspicions ${row.falseSuspicions}, false deaths ${row.falseDeaths} (${row.wallMs} ms wall)`,
      );
      rows.push(row);
    }
  const { log: _log, ...rest } = options;
  return { options: rest, transportOverheadBytesPerMessage: TRANSPORT_OVERHEAD_BYTES, rows };
}

export function swimModelMarkdown(report: SwimModelReport): string {
  const o = report.options;
  const s = (ms: number | null) => (ms === null ? '–' : `${(ms / 1000).toFixed(1)} s`);
  const lines = [
    `# SWIM membership model (${o.crashes} crashes after ${o.warmupS} s, watched for ${o.afterS} s; ${o.latencyMs}-${o.latencyMs + o.jitterMs} ms links; seed ${o.seed})`,
    '',
    "Simulated time: the figures are the protocol's, not this machine's. Bytes are SWIM frame payloads; add about",
    `${report.transportOverheadBytesPerMessage} bytes of transport framing per message.`,
    `Parameters changed from the defaults: ${JSON.stringify(o.params ?? {})}.`,
    '',
    '| nodes | loss | msg/s per node | bytes/s per node | busiest node msg/s | crash → first dead (p50 / max) | crash → dead everywhere (p50 / max) | undetected | live nodes suspected | live nodes declared dead |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of report.rows)
    lines.push(
      `| ${r.nodes} | ${r.lossPct}% | ${r.messagesPerNodeS} | ${r.bytesPerNodeS} | ${r.maxMessagesPerNodeS} | ${s(r.firstDeadMs.p50)} / ${s(r.firstDeadMs.max)} | ${s(r.allDeadMs.p50)} / ${s(r.allDeadMs.max)} | ${r.undetected} | ${r.falseSuspicions} | ${r.falseDeaths} |`,
    );
  return `${lines.join('\n')}\n`;
}

export function writeSwimModelReport(
  report: SwimModelReport,
  dir: string,
): Promise<{ json: string; markdown: string }> {
  return writeReport(dir, 'swim-model', report, swimModelMarkdown(report));
}
