/**
 * What a run prints: a timeline on stdout (one line per step, workload
 * start/stop and check, each stamped with the time since the scenario
 * began) and a progress indicator on stderr (one rewritten line in a
 * terminal, a line every few seconds otherwise).
 */

export type Writer = (text: string) => void;

export class Timeline {
  private progressShown = false;

  constructor(
    private readonly t0: () => number,
    private readonly out: Writer,
    private readonly err: Writer,
    private readonly tty: boolean,
  ) {}

  /** "+12.345s" for a harness time (performance.now). */
  stamp(at: number = performance.now()): string {
    const s = (at - this.t0()) / 1000;
    return `${s >= 0 ? '+' : '-'}${Math.abs(s).toFixed(3)}s`;
  }

  line(text: string, at?: number): void {
    this.clearProgress();
    this.out(`[${this.stamp(at).padStart(9)}] ${text}\n`);
  }

  /** A plain line (headers, the summary). */
  raw(text: string): void {
    this.clearProgress();
    this.out(`${text}\n`);
  }

  progress(text: string): void {
    if (this.tty) {
      this.err(`\r\x1b[K${text}`);
      this.progressShown = true;
    } else {
      this.err(`progress ${text}\n`);
    }
  }

  clearProgress(): void {
    if (this.tty && this.progressShown) {
      this.err('\r\x1b[K');
      this.progressShown = false;
    }
  }
}
