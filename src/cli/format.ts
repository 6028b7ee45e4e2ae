/** Text layout helpers for the human output of the CLI. */

/** Columns padded to their widest cell; the last column is not padded. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((header, i) =>
    Math.max(header.length, ...rows.map((row) => (row[i] ?? '').length)),
  );
  const line = (cells: string[]): string =>
    cells
      .map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

/** "3s ago", "2m ago"; "-" for null. */
export function ago(ms: number | null): string {
  if (ms === null) return '-';
  if (ms < 1000) return 'now';
  const s = Math.round(ms / 1000);
  if (s < 120) return `${s}s ago`;
  const m = Math.round(s / 60);
  if (m < 120) return `${m}m ago`;
  return `${Math.round(m / 60)}h ago`;
}

export function duration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 120_000) return `${(ms / 1000).toFixed(1)}s`;
  return `${Math.round(ms / 60_000)}m`;
}

/** The first 12 hex digits of a sha256 digest, enough to tell images apart at a glance. */
export function shortDigest(digest: string): string {
  return digest.replace(/^sha256:/, '').slice(0, 12);
}

/** Document digests as "e:1a2b w:3c4d o:5e6f" (first 4 hex digits each). */
export function shortDigests(digests: Record<string, string> | null): string {
  if (digests === null) return '-';
  return Object.entries(digests)
    .map(([doc, digest]) => `${doc[0]}:${digest.slice(0, 4)}`)
    .join(' ');
}
