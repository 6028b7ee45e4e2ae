/**
 * Progress of long steps on stderr, only for a person watching (stdout is a
 * terminal): an animated spinner when stderr is a terminal too, plain lines
 * otherwise. Scripts and --json runs see nothing of it.
 */
export class Progress {
  private static readonly FRAMES = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
  private timer: NodeJS.Timeout | null = null;
  private frame = 0;
  private text = '';
  private readonly animate: boolean;

  constructor(
    private readonly enabled: boolean,
    private readonly write: (text: string) => void = (text) => process.stderr.write(text),
    animate: boolean = process.stderr.isTTY === true,
  ) {
    this.animate = enabled && animate;
  }

  /** Starts a step; the previous one, if any, is finished as done. */
  step(text: string): void {
    if (!this.enabled) return;
    if (this.timer !== null || this.text !== '') this.done();
    this.text = text;
    if (!this.animate) {
      this.write(`${text} ...\n`);
      return;
    }
    this.render();
    this.timer = setInterval(() => this.render(), 80);
    this.timer.unref();
  }

  /** Updates the current step's text (e.g. "waiting for convergence: 2/3 nodes"). */
  update(text: string): void {
    if (!this.enabled || !this.animate) return;
    this.text = text;
  }

  done(suffix = 'done'): void {
    this.finish(`✔ ${this.text}${suffix === 'done' ? '' : ` (${suffix})`}`);
  }

  fail(reason: string): void {
    this.finish(`✖ ${this.text}: ${reason}`);
  }

  private finish(line: string): void {
    if (!this.enabled) return;
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    if (this.animate && this.text !== '') this.write(`\r\x1b[2K${line}\n`);
    this.text = '';
  }

  private render(): void {
    const frame = Progress.FRAMES[this.frame++ % Progress.FRAMES.length];
    this.write(`\r\x1b[2K${frame} ${this.text}`);
  }
}
