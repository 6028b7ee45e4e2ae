/**
 * Durations in config files are written the way operators write them
 * ("500ms", "1s", "10s", "2m", "1h"); a bare number is milliseconds.
 */
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const DURATION_PATTERN = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/;

export function parseDuration(value: unknown): number {
  if (typeof value === 'number' && Number.isFinite(value) && value >= 0) return value;
  if (typeof value === 'string') {
    const match = DURATION_PATTERN.exec(value.trim());
    if (match) return Math.round(Number(match[1]) * (UNIT_MS[match[2] as string] as number));
  }
  throw new Error(`expected a duration like "500ms", "1s" or "2m", got ${JSON.stringify(value)}`);
}
