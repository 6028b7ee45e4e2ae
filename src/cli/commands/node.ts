import { availableParallelism, totalmem } from 'node:os';
import { join } from 'node:path';
import { type Command, InvalidArgumentError } from 'commander';
import type { EnrollmentRequest } from '../../identity/bundle.js';
import { fileExists, PUBLIC_FILE_MODE, writeFileAtomic } from '../../identity/key-files.js';
import {
  createNodeIdentity,
  enrollmentRequest,
  loadNodeIdentity,
  NODE_FILES,
  type NodeIdentity,
  saveNodeIdentity,
  x25519WgKeys,
} from '../../identity/node-identity.js';
import { EnrollmentRecordSchema } from '../../state/schemas.js';
import { type CliContext, type JsonFlag, withJson } from '../context.js';
import { inputError } from '../errors.js';

export const REQUEST_FILE = 'request.json';

export interface InitNodeOptions {
  dir: string;
  id: string;
  endpoints: string[];
  cpus: number;
  memoryMb: number;
  scratchMb: number;
  labels: Record<string, string>;
  /** Where to write the request; default <dir>/request.json. */
  out?: string;
}

export interface InitNodeResult {
  dir: string;
  nodeId: string;
  peerId: string;
  wgPublicKey: string;
  /** False when an identity already existed and was kept. */
  created: boolean;
  requestFile: string;
  request: EnrollmentRequest;
}

/**
 * Makes the node's keys (once: an existing identity is kept, its keys are its
 * enrollment) and writes the enrollment request for the org CA.
 */
export async function initNode(options: InitNodeOptions): Promise<InitNodeResult> {
  let identity: NodeIdentity;
  let created = false;
  if (await fileExists(join(options.dir, NODE_FILES.info))) {
    identity = await loadNodeIdentity(options.dir, { wgKeys: x25519WgKeys });
    if (identity.nodeId !== options.id) {
      throw inputError(
        `${options.dir} already holds the identity of node "${identity.nodeId}", not "${options.id}"`,
      );
    }
  } else {
    try {
      identity = await createNodeIdentity(options.id, { wgKeys: x25519WgKeys });
    } catch (err) {
      throw inputError((err as Error).message);
    }
    await saveNodeIdentity(options.dir, identity);
    created = true;
  }
  let request: EnrollmentRequest;
  try {
    request = enrollmentRequest(identity, {
      endpoints: options.endpoints,
      capacity: { cpus: options.cpus, memoryMb: options.memoryMb, scratchMb: options.scratchMb },
      labels: options.labels,
    });
  } catch (err) {
    throw inputError((err as Error).message);
  }
  const requestFile = options.out ?? join(options.dir, REQUEST_FILE);
  await writeFileAtomic(requestFile, `${JSON.stringify(request, null, 2)}\n`, PUBLIC_FILE_MODE);
  return {
    dir: options.dir,
    nodeId: identity.nodeId,
    peerId: identity.peerId,
    wgPublicKey: identity.wgPublicKey,
    created,
    requestFile,
    request,
  };
}

export function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

export function positiveNumber(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('expected a positive number');
  return n;
}

export function nonNegativeInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('expected a non-negative integer');
  return n;
}

const LabelsSchema = EnrollmentRecordSchema.shape.labels;

/** `--label key=value` (repeatable): checked against the record's label bounds at once. */
export function labelOption(value: string, previous: Record<string, string>): Record<string, string> {
  const eq = value.indexOf('=');
  if (eq <= 0) throw new InvalidArgumentError(`expected key=value, got "${value}"`);
  const next = { ...previous, [value.slice(0, eq)]: value.slice(eq + 1) };
  if (!LabelsSchema.safeParse(next).success)
    throw new InvalidArgumentError(`label "${value}": keys are 1-63 characters, values at most 253`);
  return next;
}

/** What a node offers the org, as `node init` and `silo join` take it. */
export interface NodeOfferFlags {
  endpoint: string[];
  cpus: number;
  memoryMb: number;
  scratchMb: number;
  label: Record<string, string>;
}

/** Adds the options of NodeOfferFlags to `command` (`labelHelp`: what --label says). */
export function withNodeOfferOptions(command: Command, labelHelp = 'placement label; repeatable'): Command {
  return command
    .option('--endpoint <endpoint>', 'wg://host:port or a libp2p multiaddr; repeatable', collect, [])
    .option('--cpus <n>', 'CPUs offered to services', positiveNumber, availableParallelism())
    .option(
      '--memory-mb <n>',
      'memory offered to services, MiB',
      positiveNumber,
      Math.floor(totalmem() / 2 ** 20),
    )
    .option('--scratch-mb <n>', 'scratch space offered to services, MiB', nonNegativeInt, 10_240)
    .option('--label <key=value>', labelHelp, labelOption, {});
}

/** Checks what commander's parsers cannot say alone. */
export function checkNodeOffer(flags: NodeOfferFlags): void {
  if (!Number.isInteger(flags.memoryMb)) throw inputError('--memory-mb must be an integer');
}

interface NodeInitFlags extends JsonFlag, NodeOfferFlags {
  dir: string;
  id: string;
  output?: string;
}

export function registerNodeCommands(program: Command, ctx: CliContext): void {
  const node = program.command('node').description("manage this node's identity");
  withJson(
    withNodeOfferOptions(
      node
        .command('init')
        .description('create the node identity (libp2p and WireGuard keys) and its enrollment request')
        .requiredOption(
          '--dir <identitydir>',
          'identity directory (the agent reads <data_dir>/identity by default)',
        )
        .requiredOption('--id <nodeId>', 'node id, unique in the org'),
    ).option('-o, --output <file>', `where to write the request (default <dir>/${REQUEST_FILE})`),
  ).action(async (flags: NodeInitFlags) => {
    checkNodeOffer(flags);
    const result = await initNode({
      dir: flags.dir,
      id: flags.id,
      endpoints: flags.endpoint,
      cpus: flags.cpus,
      memoryMb: flags.memoryMb,
      scratchMb: flags.scratchMb,
      labels: flags.label,
      out: flags.output,
    });
    ctx.print(flags, result, () =>
      [
        `${result.created ? 'created' : 'kept existing'} identity of node "${result.nodeId}" in ${result.dir}`,
        `  peer id        ${result.peerId}`,
        `  WireGuard key  ${result.wgPublicKey}`,
        `enrollment request: ${result.requestFile}`,
        `next: silo ca sign --org <orgdir> ${result.requestFile} -o ${join(result.dir, NODE_FILES.enrollment)}`,
      ].join('\n'),
    );
  });
}
