import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { type Command, InvalidArgumentError } from 'commander';
import { loadManifest } from '../../reconciler/manifest.js';
import { packageRoot } from '../../util/package-root.js';
import { type CliContext, type JsonFlag, withJson } from '../context.js';
import { type ClusterSnapshot, DemoCluster } from '../demo/cluster.js';
import { renderSnapshot, summarize } from '../demo/live-view.js';
import { EXIT, messageOf } from '../errors.js';
import { Progress } from '../progress.js';
import { applyManifest } from './apply.js';

const exampleManifest = (): string => join(packageRoot(), 'config', 'examples', 'counter', 'manifest.toml');
const CONVERGE_TIMEOUT_MS = 60_000;
/** At the end of a timed run: how long the digests may take to meet once more before the run counts as failed. */
const FINAL_SETTLE_MS = 10_000;
const REFRESH_MS = 1000;

interface DemoFlags extends JsonFlag {
  nodes: number;
  durationS?: number;
  dir?: string;
}

function nodeCount(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 16)
    throw new InvalidArgumentError('expected an integer from 1 to 16');
  return n;
}

function seconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a positive number of seconds');
  return n;
}

export function registerDemoCommand(program: Command, ctx: CliContext): void {
  withJson(
    program
      .command('demo')
      .description('a local cluster on 127.0.0.1 (agents as separate processes) with a live status view')
      .option('--nodes <n>', 'how many agents', nodeCount, 3)
      .option('--duration-s <seconds>', 'stop by itself after this long (default: until Ctrl-C)', seconds)
      .option('--dir <dir>', 'keep the cluster in this directory (kept afterwards) instead of a temp dir'),
  )
    .addHelpText(
      'after',
      '\nWith --json nothing is drawn; the last line on stdout is a JSON summary:\n  {"nodes": N, "alive": n, "converged": bool, "workloads": {name: phase}}',
    )
    .action(async (flags: DemoFlags) => {
      ctx.exitCode = await runDemo(ctx, flags);
    });
}

async function runDemo(ctx: CliContext, flags: DemoFlags): Promise<number> {
  const progress = new Progress(ctx.io.isTTY, (text) => ctx.io.err(text));
  const ownDir = flags.dir === undefined;
  const dir = ownDir ? await mkdtemp(join(tmpdir(), 'silo-demo-')) : resolve(flags.dir!);
  if (!ownDir) await mkdir(dir, { recursive: true });

  // Ctrl-C (or SIGTERM) at any point ends the demo; cleanup runs either way.
  let stopRequested = false;
  let wake: () => void = () => {};
  const onSignal = (): void => {
    stopRequested = true;
    wake();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const pause = (ms: number): Promise<void> =>
    new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });

  let cluster: DemoCluster | null = null;
  let last: ClusterSnapshot | null = null;
  let failure: string | null = null;
  try {
    progress.step(`creating org and ${flags.nodes} node identities in ${dir}`);
    cluster = await DemoCluster.create({ dir, nodes: flags.nodes });
    await cluster.start((text) => progress.step(text));
    progress.step('waiting for all nodes to be alive and converged');
    const converged = await cluster.waitConverged(CONVERGE_TIMEOUT_MS, (snapshot) => {
      last = snapshot;
      progress.update(
        `waiting for all nodes to be alive and converged: ${snapshot.alive}/${flags.nodes} alive`,
      );
      if (stopRequested) throw new Error('interrupted');
    });
    if (converged) progress.done();
    else progress.fail(`not converged after ${CONVERGE_TIMEOUT_MS / 1000}s (logs: ${dir}/node-*/agent.log)`);

    if (!stopRequested) await applyExample(ctx, cluster, progress, flags);
    const reach = howToReach(cluster);
    // On stderr too, so that --json (and a redrawn screen) keeps it somewhere readable.
    if (reach !== null) ctx.note(reach);

    const until =
      flags.durationS === undefined ? Number.POSITIVE_INFINITY : Date.now() + flags.durationS * 1000;
    let previous = '';
    const header = (): string =>
      `silo demo: org "${cluster?.org}", ${flags.nodes} nodes in ${dir}   (${flags.durationS === undefined ? 'Ctrl-C stops' : `stops after ${flags.durationS}s`})` +
      (reach === null ? '' : `\n${reach}`);
    while (!stopRequested && Date.now() < until) {
      last = await cluster.snapshot();
      if (!flags.json) {
        const view = renderSnapshot(last, header());
        if (ctx.io.isTTY) ctx.io.out(`\x1b[H\x1b[2J${view}\n`);
        else if (view !== previous) ctx.io.out(`${view}\n\n`);
        previous = view;
      }
      await pause(Math.min(REFRESH_MS, Math.max(0, until - Date.now())));
    }
    // After Ctrl-C the terminal has signalled the agents too: the last view before it is the one to report.
    // Otherwise report the cluster once it has converged (or after FINAL_SETTLE_MS): one sample can
    // catch a status write still on its way between nodes, which is not a failure to converge.
    if (!stopRequested) {
      await cluster.waitConverged(FINAL_SETTLE_MS, (snapshot) => {
        last = snapshot;
      });
    }
  } catch (err) {
    if (!stopRequested) {
      failure = messageOf(err);
      progress.fail(failure);
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (cluster !== null) {
      progress.step('stopping agents');
      await cluster.stop();
      progress.done();
    }
    if (ownDir) await rm(dir, { recursive: true, force: true });
    else ctx.note(`cluster files kept in ${dir}`);
  }

  const summary =
    last === null ? { nodes: flags.nodes, alive: 0, converged: false, workloads: {} } : summarize(last);
  if (flags.json) ctx.io.out(`${JSON.stringify(summary)}\n`);
  if (failure !== null) {
    ctx.io.err(`silo: demo failed: ${failure}\n`);
    return EXIT.failure;
  }
  // Ctrl-C is the normal way to end the demo; a timed run must end healthy.
  if (stopRequested) return EXIT.ok;
  return summary.converged && summary.alive === summary.nodes ? EXIT.ok : EXIT.failure;
}

/**
 * How to point the CLI at the demo's first agent: its control socket, and
 * the command as it works from a checkout (bare `silo` is on PATH only after
 * `npm link`; README "CLI").
 */
function howToReach(cluster: DemoCluster): string | null {
  const first = cluster.nodes[0];
  if (!first) return null;
  return `try: SILO_SOCKET=${first.socketPath} node ${join(packageRoot(), 'bin', 'silo.js')} status   (or nodes, workloads, top, events; each node-N has its silo.sock)`;
}

async function applyExample(
  ctx: CliContext,
  cluster: DemoCluster,
  progress: Progress,
  flags: DemoFlags,
): Promise<void> {
  const first = cluster.nodes[0];
  if (!first) return;
  if (!existsSync(exampleManifest())) {
    if (!flags.json) ctx.note(`no example service at ${exampleManifest()}; skipping it`);
    return;
  }
  progress.step('applying the example service (config/examples/counter)');
  try {
    const { imagePath } = await loadManifest(exampleManifest());
    // The example ships its image as a tree; build it when the tar the manifest names was not built yet.
    const tree = join(dirname(exampleManifest()), 'image');
    const image = imagePath !== null && !existsSync(imagePath) && existsSync(tree) ? tree : undefined;
    // The example keeps its count in persistent STATE, encrypted by default (docs/security.md). Where this
    // machine cannot mount it (no gocryptfs or FUSE, e.g. an unprivileged container), the demo runs it on
    // plain STATE and says so, instead of showing a service that never starts.
    const { encryptedScratchProblem } = await import('../../reconciler/gocryptfs.js');
    const problem = await encryptedScratchProblem();
    if (problem !== null && !flags.json)
      ctx.note(`encrypted scratch unavailable here (${problem}): the example runs on plain STATE`);
    const result = await applyManifest(first.client, {
      manifestFile: exampleManifest(),
      orgDir: cluster.orgDir,
      image,
      plainState: problem !== null,
    });
    progress.done(`revision ${result.revision}`);
  } catch (err) {
    progress.fail(messageOf(err));
    if (!flags.json && !ctx.io.isTTY) ctx.note(`example service not applied: ${messageOf(err)}`);
  }
}
