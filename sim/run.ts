/**
 * `npm run sim -- <scenario.toml> [--log-file <path>] [--log-level <level>] [--no-progress] [--keep <dir>]`
 *
 * Runs one scenario (docs/sim.md, "Running"): a timeline on stdout, a
 * progress line on stderr, and as the last line of stdout a one-line JSON
 * summary. Exit 0 only when every expected invariant held; 1 when one
 * failed or the run broke; 2 for a bad scenario file or bad arguments.
 */
import '../src/util/polyfill.js';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { loadScenario, ScenarioError } from './scenario/load.js';
import { runScenario, StepError } from './scenario/run-scenario.js';

const USAGE =
  'usage: npm run sim -- <scenario.toml> [--log-file <path>] [--log-level <level>] [--no-progress] [--keep <dir>] [--seed <seed>]';
const LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

async function main(): Promise<number> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse();
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (positionals.length !== 1) {
    process.stderr.write(`expected exactly one scenario file, got ${positionals.length}\n${USAGE}\n`);
    return 2;
  }
  const level = values['log-level'] ?? 'info';
  if (!LEVELS.includes(level)) {
    process.stderr.write(`--log-level must be one of ${LEVELS.join(', ')}\n`);
    return 2;
  }
  let scenario: Awaited<ReturnType<typeof loadScenario>>;
  try {
    scenario = await loadScenario(positionals[0] as string);
  } catch (err) {
    if (err instanceof ScenarioError) {
      process.stderr.write(`${err.message}\n`);
      return 2;
    }
    throw err;
  }
  if (values.seed !== undefined) {
    // Another run of the same scenario: every random choice follows the seed.
    scenario = { ...scenario, seed: /^-?\d+$/.test(values.seed) ? Number(values.seed) : values.seed };
  }
  const logFile = values['log-file'];
  // Agents log to a file only when asked: thousands of lines a second would drown the timeline.
  const logger =
    logFile === undefined
      ? pino({ level: 'silent' })
      : pino({ level }, pino.destination({ dest: logFile, sync: false, mkdir: true }));
  let summary: Awaited<ReturnType<typeof runScenario>>;
  try {
    summary = await runScenario(scenario, {
      logger,
      progress: values['no-progress'] !== true,
      ...(values.keep !== undefined ? { root: values.keep } : {}),
    });
  } catch (err) {
    if (!(err instanceof StepError)) throw err;
    process.stderr.write(`sim: ${scenario.name}: ${err.message}\n`);
    process.stdout.write(`${JSON.stringify({ scenario: scenario.name, ok: false, error: err.message })}\n`);
    return 1;
  }
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  logger.flush?.();
  return summary.ok ? 0 : 1;
}

function parse() {
  return parseArgs({
    allowPositionals: true,
    options: {
      'log-file': { type: 'string' },
      'log-level': { type: 'string' },
      'no-progress': { type: 'boolean' },
      keep: { type: 'string' },
      seed: { type: 'string' },
    },
  });
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`sim failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
