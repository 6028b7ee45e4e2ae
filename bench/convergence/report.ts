/**
 * The convergence benchmark's outputs: `convergence.json` (everything),
 * `convergence.md` (the table) and `convergence.svg` (write→all-applied
 * CDF per N and system, drawn by hand: no charting dependency).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ConvergenceReport, SizeRun, SystemRun } from './run-convergence.js';

export interface WrittenReport {
  json: string;
  markdown: string;
  svg: string;
}

export async function writeConvergenceReport(report: ConvergenceReport, dir: string): Promise<WrittenReport> {
  await mkdir(dir, { recursive: true });
  const files = {
    json: join(dir, 'convergence.json'),
    markdown: join(dir, 'convergence.md'),
    svg: join(dir, 'convergence.svg'),
  };
  await writeFile(files.json, `${JSON.stringify(report, null, 2)}\n`);
  await writeFile(files.markdown, convergenceMarkdown(report));
  await writeFile(files.svg, convergenceSvg(report));
  return files;
}

const fmt = (x: number | null | undefined, unit = ''): string =>
  x === null || x === undefined || Number.isNaN(x) ? '–' : `${x}${unit}`;

export function convergenceMarkdown(report: ConvergenceReport): string {
  const m = report.machine;
  const o = report.options;
  const lines: string[] = [];
  lines.push(
    `Machine: ${m.cpus} cores (${m.cpuModel}), ${m.memoryGiB} GiB, Node ${m.node}, load average ${m.loadavg1m} at the start. ` +
      `One process, simulated network: ${o.latencyMs} ms link latency + up to ${o.jitterMs} ms jitter, ` +
      `${o.writes} writes per system and size, one every ${o.gapMs} ms from random nodes; push-pull every ${o.pushPullIntervalMs} ms.`,
  );
  lines.push('');
  lines.push(
    '| N | system | write→all p50 / p99 / max (ms) | lower bound p50 / p99 (ms) | timeouts | bytes/write | amplification | dup/agent/write | heal-to-equal (ms) | loop p99 (ms) | CPU |',
  );
  lines.push('|---:|---|---|---|---:|---:|---:|---:|---|---:|---:|');
  for (const size of report.sizes) {
    for (const run of size.systems) lines.push(row(size, run));
  }
  lines.push('');
  lines.push(
    '| N | connections (mean degree) | meshless at start / episodes | sustained rate, p99 < 1 s | start-up | heap / RSS per agent |',
  );
  lines.push('|---:|---|---|---|---:|---:|');
  for (const size of report.sizes) {
    const rate = size.sustained?.maxRatePerS;
    const steps = size.sustained?.steps ?? [];
    const topPassed = steps.length > 0 && rate === steps.at(-1)?.ratePerS;
    const tried = size.sustained?.steps.map((s) => `${s.ratePerS}/s→${fmt(s.p99Ms)}`).join(', ') ?? '';
    lines.push(
      `| ${size.nodes} | ${size.connections} (${size.degree}) | ${size.meshlessAtStart} / ${size.meshlessEvents} | ${rate === null || rate === undefined ? 'below the lowest rate' : `${topPassed ? '≥ ' : ''}${rate}/s`} (${tried}) | ${(size.startupMs / 1000).toFixed(1)} s | ${size.heapPerAgentMb} / ${size.memoryPerAgentMb} MB |`,
    );
  }
  return `${lines.join('\n')}\n`;
}

function row(size: SizeRun, run: SystemRun): string {
  const w = run.writes;
  const heal =
    run.heal === null
      ? 'not measured'
      : run.heal.healToEqualMs === null
        ? `not within ${run.heal.deadlineMs / 1000} s`
        : `${run.heal.healToEqualMs} (${run.heal.writesPerSide}/side)`;
  return `| ${size.nodes} | ${run.system} | ${fmt(w.latencyMs.p50)} / ${fmt(w.latencyMs.p99)} / ${fmt(w.latencyMs.max)} | ${fmt(w.lowerBoundMs.p50)} / ${fmt(w.lowerBoundMs.p99)} | ${w.timeouts} | ${w.bytesPerWrite === null ? `– (gross ${w.grossBytesPerWrite})` : w.bytesPerWrite} | ${w.amplification === null ? '–' : `${w.amplification}×`} | ${w.duplicatesPerAgentPerWrite} | ${heal} | ${Math.round(w.load.loopP99Ms)} | ${Math.round(w.load.cpuPct)}% |`;
}

// ---- SVG ---------------------------------------------------------------------------------------------------

const WIDTH = 760;
const HEIGHT = 440;
const PAD = { left: 60, right: 170, top: 30, bottom: 50 };
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#17becf'];
const DASH: Record<string, string> = { silo: '', floodsub: '6 4', 'push-pull': '2 3' };

/** Write→all-applied CDF: x logarithmic (ms), y the fraction of writes; colour = N, dash = system. */
export function convergenceSvg(report: ConvergenceReport): string {
  const series: { label: string; color: string; dash: string; values: number[] }[] = [];
  report.sizes.forEach((size, i) => {
    for (const run of size.systems) {
      if (run.writes.samples.length === 0) continue;
      series.push({
        label: `N=${size.nodes} ${run.system}`,
        color: COLORS[i % COLORS.length] as string,
        dash: DASH[run.system] ?? '',
        values: [...run.writes.samples].sort((a, b) => a - b),
      });
    }
  });
  const all = series.flatMap((s) => s.values).filter((v) => v > 0);
  const minX = Math.max(0.1, 10 ** Math.floor(Math.log10(Math.min(...all, 1))));
  const maxX = 10 ** Math.ceil(Math.log10(Math.max(...all, 10)));
  const plotW = WIDTH - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const x = (v: number) =>
    PAD.left +
    ((Math.log10(Math.max(v, minX)) - Math.log10(minX)) / (Math.log10(maxX) - Math.log10(minX))) * plotW;
  const y = (f: number) => PAD.top + (1 - f) * plotH;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" font-family="sans-serif" font-size="11">`,
  );
  out.push(`<title>silo convergence: write to all-applied CDF</title>`);
  out.push(`<rect width="${WIDTH}" height="${HEIGHT}" fill="white"/>`);
  // Grid and axes.
  for (let e = Math.log10(minX); e <= Math.log10(maxX) + 1e-9; e++) {
    const v = 10 ** e;
    const gx = x(v).toFixed(1);
    out.push(`<line x1="${gx}" y1="${PAD.top}" x2="${gx}" y2="${PAD.top + plotH}" stroke="#ddd"/>`);
    out.push(
      `<text x="${gx}" y="${PAD.top + plotH + 16}" text-anchor="middle">${v >= 1000 ? `${v / 1000} s` : `${v} ms`}</text>`,
    );
  }
  for (const f of [0, 0.25, 0.5, 0.75, 0.99, 1]) {
    const gy = y(f).toFixed(1);
    out.push(
      `<line x1="${PAD.left}" y1="${gy}" x2="${PAD.left + plotW}" y2="${gy}" stroke="${f === 0.99 ? '#bbb' : '#eee'}"/>`,
    );
    out.push(
      `<text x="${PAD.left - 6}" y="${gy}" text-anchor="end" dominant-baseline="middle">${f === 0.99 ? 'p99' : f}</text>`,
    );
  }
  out.push(
    `<rect x="${PAD.left}" y="${PAD.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#333"/>`,
  );
  out.push(
    `<text x="${PAD.left + plotW / 2}" y="${HEIGHT - 12}" text-anchor="middle">write → applied on every node (log scale)</text>`,
  );
  out.push(
    `<text x="14" y="${PAD.top + plotH / 2}" transform="rotate(-90 14 ${PAD.top + plotH / 2})" text-anchor="middle">fraction of writes</text>`,
  );
  // Curves: a step function through the sorted samples.
  for (const s of series) {
    const n = s.values.length;
    const points = s.values.map((v, i) => `${x(v).toFixed(1)},${y((i + 1) / n).toFixed(1)}`);
    const start = `${x(s.values[0] as number).toFixed(1)},${y(0).toFixed(1)}`;
    out.push(
      `<polyline fill="none" stroke="${s.color}" stroke-width="1.6"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''} points="${start} ${points.join(' ')}"/>`,
    );
  }
  // Legend.
  series.forEach((s, i) => {
    const ly = PAD.top + 8 + i * 16;
    const lx = PAD.left + plotW + 12;
    out.push(
      `<line x1="${lx}" y1="${ly}" x2="${lx + 24}" y2="${ly}" stroke="${s.color}" stroke-width="2"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`,
    );
    out.push(`<text x="${lx + 30}" y="${ly}" dominant-baseline="middle">${escapeXml(s.label)}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}
