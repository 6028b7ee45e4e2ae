import { request as httpRequest } from 'node:http';
import { hostname } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import type { Command } from 'commander';
import { stringify as toToml } from 'smol-toml';
import type { EnrollmentBundle } from '../../identity/bundle.js';
import { parseEnrollmentBundle } from '../../identity/bundle.js';
import { verifyEnrollmentBundle } from '../../identity/ca.js';
import {
  caFingerprint,
  type JoinToken,
  JoinTokenError,
  joinKeyOf,
  joinRequestMac,
  openFromProvisioner,
  parseJoinToken,
} from '../../identity/join-token.js';
import { fileExists, PUBLIC_FILE_MODE, writeFileAtomic } from '../../identity/key-files.js';
import { NODE_FILES } from '../../identity/node-identity.js';
import { ORG_FILES, parsePnetKey } from '../../identity/org.js';
import { parseWireguardEndpoint } from '../../overlay/endpoints.js';
import { NodeIdSchema } from '../../state/schemas.js';
import { type CliContext, type JsonFlag, withJson } from '../context.js';
import { CliError, EXIT, type ExitCode, inputError } from '../errors.js';
import {
  checkNodeOffer,
  collect,
  type InitNodeOptions,
  initNode,
  type NodeOfferFlags,
  REQUEST_FILE,
  withNodeOfferOptions,
} from './node.js';

/** How the CLI answers each provisioner refusal (docs/cli.md, "Exit codes"). */
const EXIT_OF_CODE: Record<string, ExitCode> = {
  invalid_token: EXIT.unauthorized,
  token_expired: EXIT.unauthorized,
  token_used_up: EXIT.unauthorized,
  token_revoked: EXIT.unauthorized,
  bad_request: EXIT.input,
  conflict: EXIT.input,
};

const JOIN_TIMEOUT_MS = 30_000;

/** What `node init` takes (the keys and the request are made the same way), plus the token. */
export interface JoinOptions extends Omit<InitNodeOptions, 'out'> {
  token: string;
  /** Where to write agent.toml (default <dir>/../agent.toml). */
  config?: string;
  /** node.data_dir of the written config (default the parent of `dir`). */
  dataDir?: string;
  /** gossip.listen of the written config (default the request's libp2p endpoints). */
  listen: string[];
  /** overlay.interface: writes overlay.mode = "wireguard". */
  overlayInterface?: string;
}

export interface JoinResult {
  nodeId: string;
  peerId: string;
  overlayIp: string;
  org: string;
  bundle: string;
  swarmKey: string | null;
  config: string;
  /** False when an agent.toml existed and was kept. */
  configWritten: boolean;
  command: string;
}

/** `silo join`: keys and request (as `silo node init`), the provisioner's bundle, checked, and an agent.toml. */
export async function joinOrg(options: JoinOptions): Promise<JoinResult> {
  let token: JoinToken;
  try {
    token = parseJoinToken(options.token);
  } catch (err) {
    if (err instanceof JoinTokenError) throw inputError(err.message);
    throw err;
  }
  if (!NodeIdSchema.safeParse(options.id).success)
    throw inputError(
      `"${options.id}" is not a node id (lowercase letters, digits, "-"): pass --id <node id>`,
    );
  const init = await initNode({
    dir: options.dir,
    id: options.id,
    endpoints: options.endpoints,
    cpus: options.cpus,
    memoryMb: options.memoryMb,
    scratchMb: options.scratchMb,
    labels: options.labels,
    out: join(options.dir, REQUEST_FILE),
  });
  const joinKey = joinKeyOf(token.id, token.s);
  const answer = await callProvisioner(token, {
    v: 1,
    tokenId: token.id,
    request: init.request,
    mac: joinRequestMac(joinKey, token.id, init.request),
  });
  const opened = openFromProvisioner(joinKey, token.id, init.peerId, (answer as { sealed?: unknown }).sealed);
  if (opened === null) {
    throw new CliError(
      `the provisioner at ${token.at} answered with a bundle not sealed under this token's key: it does not know the token's secret; nothing was written`,
      EXIT.unauthorized,
    );
  }
  const { bundle, swarmKey } = checkPayload(opened, token, init);
  const bundlePath = join(options.dir, NODE_FILES.enrollment);
  let swarmKeyPath: string | null = null;
  if (swarmKey !== undefined) {
    swarmKeyPath = join(options.dir, ORG_FILES.pnetKey);
    await writeFileAtomic(swarmKeyPath, swarmKey);
  }
  await writeFileAtomic(bundlePath, `${JSON.stringify(bundle, null, 2)}\n`, PUBLIC_FILE_MODE);
  const identityDir = resolve(options.dir);
  const config = resolve(options.config ?? join(dirname(identityDir), 'agent.toml'));
  const configWritten = !(await fileExists(config));
  if (configWritten) await writeFileAtomic(config, agentToml(options, bundle, identityDir), PUBLIC_FILE_MODE);
  return {
    nodeId: bundle.record.nodeId,
    peerId: bundle.record.peerId,
    overlayIp: bundle.record.overlayIp,
    org: bundle.org,
    bundle: bundlePath,
    swarmKey: swarmKeyPath,
    config,
    configWritten,
    command: `silo agent --config ${config}`,
  };
}

async function callProvisioner(token: JoinToken, body: unknown): Promise<unknown> {
  const url = `http://${token.at}/v1/join`;
  let response: { status: number; text: string };
  try {
    response = await postJson(url, JSON.stringify(body));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new CliError(
      `cannot reach the provisioner at ${token.at} (${code}): is the agent with [provisioner] running there, and its port open to this machine?`,
      EXIT.unreachable,
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(response.text);
  } catch {
    throw new CliError(
      `${url} answered ${response.status} without JSON: is that a silo provisioner?`,
      EXIT.failure,
    );
  }
  if (response.status < 200 || response.status >= 300) {
    const error = (parsed as { error?: { code?: unknown; message?: unknown } } | null)?.error;
    const code = typeof error?.code === 'string' ? error.code : 'unknown';
    const message = typeof error?.message === 'string' ? error.message : `HTTP ${response.status}`;
    throw new CliError(`join refused: ${message}`, EXIT_OF_CODE[code] ?? EXIT.failure);
  }
  return parsed;
}

/** One POST with node:http (fetch refuses some ports outright and hides the socket error's code). */
function postJson(url: string, body: string): Promise<{ status: number; text: string }> {
  return new Promise((resolvePost, reject) => {
    const req = httpRequest(
      url,
      {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        timeout: JOIN_TIMEOUT_MS,
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          text += chunk;
        });
        res.on('end', () => resolvePost({ status: res.statusCode ?? 0, text }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * What makes the bundle trustworthy: the CA pinned by the token (its
 * fingerprint), the record's signature under that CA, the org named in the
 * token, and the record being this machine's keys.
 */
function checkPayload(
  opened: string,
  token: JoinToken,
  init: { nodeId: string; peerId: string; wgPublicKey: string },
): { bundle: EnrollmentBundle; swarmKey?: string } {
  const refuse = (why: string): CliError =>
    new CliError(`the provisioner's bundle is refused: ${why}; nothing was written`, EXIT.unauthorized);
  let payload: { bundle?: unknown; swarmKey?: unknown };
  let bundle: EnrollmentBundle;
  try {
    payload = JSON.parse(opened) as typeof payload;
    bundle = parseEnrollmentBundle(payload.bundle);
  } catch (err) {
    throw refuse((err as Error).message);
  }
  const fingerprint = caFingerprint(bundle.caPublicKey);
  if (fingerprint !== token.ca) throw refuse(`it is signed by CA ${fingerprint}, the token pins ${token.ca}`);
  const failure = verifyEnrollmentBundle(bundle, { org: token.org });
  if (failure !== null) throw refuse(`${failure.reason}: ${failure.message}`);
  const { record } = bundle;
  if (
    record.nodeId !== init.nodeId ||
    record.peerId !== init.peerId ||
    record.wgPublicKey !== init.wgPublicKey
  )
    throw refuse("its record is not this node's id and keys");
  let swarmKey: string | undefined;
  if (payload.swarmKey !== undefined) {
    if (typeof payload.swarmKey !== 'string') throw refuse('swarmKey is not text');
    try {
      parsePnetKey(Buffer.from(payload.swarmKey, 'utf8'));
    } catch (err) {
      throw refuse(`swarmKey: ${(err as Error).message}`);
    }
    swarmKey = payload.swarmKey;
  }
  return { bundle, ...(swarmKey !== undefined ? { swarmKey } : {}) };
}

/** The agent.toml of a joined node: what config/agent.toml documents, only the keys that differ from the defaults. */
function agentToml(options: JoinOptions, bundle: EnrollmentBundle, identityDir: string): string {
  const libp2p = options.endpoints.filter((e) => e.startsWith('/'));
  const listen = options.listen.length > 0 ? options.listen : libp2p;
  const wgPort = options.endpoints
    .map((e) => (e.startsWith('wg://') ? parseWireguardEndpoint(e)?.port : undefined))
    .find((p) => p !== undefined);
  const config: Record<string, unknown> = {
    org: bundle.org,
    node: {
      id: bundle.record.nodeId,
      data_dir: resolve(options.dataDir ?? dirname(identityDir)),
      identity_dir: identityDir,
    },
    ...(listen.length > 0 ? { gossip: { listen } } : {}),
    ...(options.overlayInterface !== undefined
      ? {
          overlay: {
            mode: 'wireguard',
            interface: options.overlayInterface,
            ...(wgPort !== undefined ? { listen_port: wgPort } : {}),
          },
        }
      : {}),
  };
  return `# Written by \`silo join\` (node "${bundle.record.nodeId}", org "${bundle.org}", overlay IP ${bundle.record.overlayIp}).\n# Every other option keeps its default: see config/agent.toml.\n${toToml(config)}\n`;
}

/** The default node id: this host's name, when it is a valid node id (lowercase, first label). */
function defaultNodeId(): string {
  return hostname().split('.')[0]!.toLowerCase();
}

interface JoinFlags extends JsonFlag, NodeOfferFlags {
  dir: string;
  id?: string;
  config?: string;
  dataDir?: string;
  listen: string[];
  overlayInterface?: string;
  start?: boolean;
}

export function registerJoinCommand(program: Command, ctx: CliContext): void {
  withJson(
    withNodeOfferOptions(
      program
        .command('join')
        .description('enroll this machine with a join token: keys, bundle from the provisioner, agent.toml')
        .argument('<token>', 'the token `silo token create` printed (silo1.…)')
        .requiredOption('--dir <identitydir>', 'identity directory to create (keys, enrollment.json)')
        .option('--id <nodeId>', 'node id, unique in the org (default: the first label of this host name)'),
      'placement label; repeatable (the token may add more)',
    )
      .option(
        '--config <file>',
        'where to write agent.toml (default: next to the identity dir; kept if it exists)',
      )
      .option('--data-dir <dir>', "the agent's node.data_dir (default: the identity dir's parent)")
      .option(
        '--listen <multiaddr>',
        'gossip.listen of agent.toml; repeatable (default: the --endpoint multiaddrs)',
        collect,
        [],
      )
      .option(
        '--overlay-interface <name>',
        'run the WireGuard overlay on this interface (overlay.mode = "wireguard")',
      )
      .option('--start', 'then run the agent in the foreground, as `silo agent --config <agent.toml>` does'),
  ).action(async (tokenText: string, flags: JoinFlags) => {
    checkNodeOffer(flags);
    const result = await joinOrg({
      token: tokenText,
      dir: flags.dir,
      id: flags.id ?? defaultNodeId(),
      endpoints: flags.endpoint,
      cpus: flags.cpus,
      memoryMb: flags.memoryMb,
      scratchMb: flags.scratchMb,
      labels: flags.label,
      config: flags.config,
      dataDir: flags.dataDir,
      listen: flags.listen,
      overlayInterface: flags.overlayInterface,
    });
    ctx.print(flags, result, () =>
      [
        `joined org "${result.org}" as node "${result.nodeId}" with overlay IP ${result.overlayIp}`,
        `  peer id  ${result.peerId}`,
        `  bundle   ${result.bundle}${result.swarmKey ? ` (and ${result.swarmKey})` : ''}`,
        `  config   ${result.config}${result.configWritten ? '' : ' (exists: kept as it is)'}`,
        flags.start === true ? `starting: ${result.command}` : `start it: ${result.command}`,
      ].join('\n'),
    );
    if (flags.start === true) {
      const { runAgentForeground } = await import('./agent.js');
      await runAgentForeground(result.config, ctx.env);
    }
  });
}
