/**
 * Event-loop delay and CPU of the simulator process, reported beside every
 * timing the simulator prints: all agents share one event loop (docs/sim.md,
 * "One event loop"), so a slow convergence can be a busy process rather than
 * a slow protocol. A figure printed without these is easy to misread.
 */
import { type IntervalHistogram, monitorEventLoopDelay } from 'node:perf_hooks';

/** The histogram's sampling interval; it adds itself to every sample and is subtracted. */
const RESOLUTION_MS = 10;

export interface LoadSample {
  /** Event-loop delay beyond the sampling interval, ms. */
  loopP50Ms: number;
  loopP99Ms: number;
  loopMaxMs: number;
  /** CPU time of this process (user + system) over wall time, in percent of one core. */
  cpuPct: number;
  /** Wall time the sample covers, ms. */
  wallMs: number;
  rssMb: number;
  heapUsedMb: number;
}

export class LoadMonitor {
  private readonly window: IntervalHistogram;
  private readonly total: IntervalHistogram;
  private windowStart = { wall: 0, cpu: 0 };
  private totalStart = { wall: 0, cpu: 0 };

  constructor() {
    this.window = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
    this.total = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
  }

  start(): void {
    this.window.enable();
    this.total.enable();
    this.windowStart = mark();
    this.totalStart = mark();
  }

  stop(): void {
    this.window.disable();
    this.total.disable();
  }

  /** The load since the previous `lap()` (or start), then a new window begins. */
  lap(): LoadSample {
    const sample = summarize(this.window, this.windowStart);
    this.window.reset();
    this.windowStart = mark();
    return sample;
  }

  /** The load since `start()`. */
  overall(): LoadSample {
    return summarize(this.total, this.totalStart);
  }
}

function mark(): { wall: number; cpu: number } {
  const cpu = process.cpuUsage();
  return { wall: performance.now(), cpu: (cpu.user + cpu.system) / 1000 };
}

function summarize(histogram: IntervalHistogram, since: { wall: number; cpu: number }): LoadSample {
  const now = mark();
  const wallMs = Math.max(1, now.wall - since.wall);
  const memory = process.memoryUsage();
  const delay = (ns: number) => (Number.isFinite(ns) ? round(Math.max(0, ns / 1e6 - RESOLUTION_MS)) : 0);
  const empty = histogram.count === 0;
  return {
    loopP50Ms: empty ? 0 : delay(histogram.percentile(50)),
    loopP99Ms: empty ? 0 : delay(histogram.percentile(99)),
    loopMaxMs: empty ? 0 : delay(histogram.max),
    cpuPct: round(((now.cpu - since.cpu) / wallMs) * 100),
    wallMs: round(wallMs),
    rssMb: round(memory.rss / 1024 / 1024),
    heapUsedMb: round(memory.heapUsed / 1024 / 1024),
  };
}

function round(x: number): number {
  return Math.round(x * 10) / 10;
}

/** "loop p99 12 ms, cpu 87%": how busy the process was, for a timeline line. */
export function describeLoad(sample: LoadSample): string {
  return `loop p99 ${Math.round(sample.loopP99Ms)} ms, max ${Math.round(sample.loopMaxMs)} ms, cpu ${Math.round(sample.cpuPct)}%`;
}
