import { mkdir, readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { Registry } from 'prom-client';
import type { AgentConfig } from '../config/schema.js';
import type { EnrollmentBundle } from '../identity/bundle.js';
import { verifyEnrollmentBundle } from '../identity/ca.js';
import { parseOverlayCidr } from '../identity/ipv4-cidr.js';
import { parseHostPort } from '../identity/join-token.js';
import { fileExists, KeyFileError } from '../identity/key-files.js';
import {
  loadEnrollmentBundle,
  loadNodeIdentity,
  NODE_FILES,
  type NodeIdentity,
  wgPrivateKeyPath,
  x25519WgKeys,
} from '../identity/node-identity.js';
import { loadOrg, ORG_FILES, parsePnetKey } from '../identity/org.js';
import { isClient } from '../identity/role.js';
import { OverlayManager } from '../overlay/overlay-manager.js';
import { EncryptedScratch } from '../reconciler/encrypted-scratch.js';
import { ImageStore } from '../reconciler/image-store.js';
import { loadScratchKeyring, SCRATCH_KEYS_FILE } from '../reconciler/scratch-key-file.js';
import { ScratchKeyring } from '../reconciler/scratch-keys.js';
import { createLogger } from '../util/logger.js';
import { ControlApi } from './control-api.js';
import { heartbeatSchedule } from './heartbeat-schedule.js';
import { NodeAgent } from './node-agent.js';
import { PeerDigests } from './peer-digests.js';
import type { Provisioner } from './provisioner.js';
import { ScratchKeyIntake } from './scratch-key-intake.js';
import { AgentSetupError } from './setup-error.js';

export { AgentSetupError } from './setup-error.js';

export interface RunningAgent {
  agent: NodeAgent;
  api: ControlApi;
  /** The join provisioner, when `[provisioner] org_dir` is set. */
  provisioner: Provisioner | null;
  config: AgentConfig;
  logger: Logger;
  /** Closes the API, stops the agent and closes its store. Idempotent. */
  stop(): Promise<void>;
}

export interface StartAgentOptions {
  /** Defaults to a logger built from `config.log`. */
  logger?: Logger;
}

export function identityDirOf(config: AgentConfig): string {
  return config.node.identity_dir ?? join(config.node.data_dir, 'identity');
}

export function socketPathOf(config: AgentConfig): string {
  return config.api.socket ?? join(config.node.data_dir, 'silo.sock');
}

/** Builds one agent from its config (identity and bundle from the identity dir), starts it and its control API. */
export async function startAgent(
  config: AgentConfig,
  options: StartAgentOptions = {},
): Promise<RunningAgent> {
  const logger = options.logger ?? createLogger({ level: config.log.level, pretty: config.log.pretty });
  const identityDir = identityDirOf(config);
  const identity = await loadIdentity(identityDir, config);
  const bundle = await loadBundle(identityDir, config, identity);
  const psk = await loadPnetKey(identityDir);
  const tcp = await loadTcpListener(config);
  // Checked before anything starts: a wrong org dir is a setup error, not a half-started agent.
  const provisionerSetup = await checkProvisioner(config, bundle);
  const dataDir = config.node.data_dir;
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const registry = new Registry();
  const overlay =
    config.overlay.mode === 'wireguard'
      ? overlayManagerFor(config, bundle, identityDir, logger, registry)
      : undefined;

  // A client record (docs/security.md, "Clients") runs as a tool's agent:
  // gossip, sync and the control API, no reconciler (nothing is ever placed
  // here, no witness) and no SWIM (not a member).
  const client = isClient(bundle.record);
  // Org scratch secrets (docs/security.md, "Encrypted scratch"): opened into memory here, from the bundle
  // (and an operator's scratch-keys.json); later generations arrive through the enrollment document.
  const scratch = client ? null : await openScratchKeys(identityDir, config, identity, bundle, logger);
  if (client)
    logger.info(
      { node: config.node.id },
      'enrolled as a client: syncing and serving the API only (no workloads, no witness, no SWIM)',
    );
  const agent = await NodeAgent.create({
    org: config.org,
    nodeId: config.node.id,
    dataDir,
    durability: config.storage.durability,
    compactEvery: config.storage.compact_every,
    maxUpdateBytes: config.gossip.max_update_bytes,
    maxSyncUpdateBytes: config.gossip.max_sync_update_bytes,
    logger,
    registry,
    trust: { bundle },
    overlay,
    // Runs the workloads placement gives this node (src/reconciler/reconcile-loop.ts).
    ...(client
      ? {}
      : {
          reconciler: {
            sandbox: config.services.sandbox,
            timing: { fenceAfterMs: config.services.fence_after },
            maxStopTimeoutMs: config.services.max_stop_timeout,
            leaseKind: config.services.lease,
            checkpointIntervalMs: config.services.checkpoint_interval,
            replicas: config.services.replicas,
            maxParallel: config.services.max_parallel,
            // Always there: a node without keys refuses encrypted workloads with the reason rather than
            // running them on plain STATE.
            ...(scratch === null
              ? {}
              : {
                  encryptedScratch: new EncryptedScratch({
                    keys: scratch.keyring,
                    allowOther: process.getuid?.() === 0,
                  }),
                }),
          },
        }),
    membership: {
      swim: config.membership.swim && !client,
      vouch: config.services.lease === 'swim',
      params: {
        probeIntervalMs: config.membership.probe_interval,
        probeTimeoutMs: config.membership.probe_timeout,
      },
    },
    gossip: {
      privateKey: identity.libp2pPrivateKey,
      transport: config.gossip.transport,
      listen: overlay ? overlayListenAddrs(config, bundle) : config.gossip.listen,
      bootstrap: [...new Set([...config.gossip.bootstrap, ...bundle.seedPeers])],
      psk,
      batchMs: config.gossip.batch,
      // Under SWIM liveness heartbeats only introduce a node and its addresses, spread by the cluster's size.
      ...heartbeatSchedule(config.services.lease, {
        heartbeatMs: config.gossip.heartbeat,
        swimIntervalMs: config.membership.heartbeat_interval,
      }),
      suspectAfterMs: config.gossip.suspect_after,
      deadAfterMs: config.gossip.dead_after,
      syncIntervalMs: config.gossip.sync_interval,
      syncGraceMs: config.gossip.sync_grace,
      // libp2p_* metrics in /v1/metrics (one libp2p node per `silo agent` process).
      libp2pMetrics: true,
    },
  });
  const peerDigests = new PeerDigests({
    state: agent.state,
    gossip: agent.gossip,
    // A peer's digests are as fresh as its last heartbeat or probe: under SWIM liveness heartbeats come every
    // heartbeat_interval or more (spread by the cluster's size), probes to a given peer about as rarely.
    staleAfterMs:
      config.services.lease === 'swim'
        ? () => agent.gossip.heartbeatIntervalMs() + config.gossip.suspect_after
        : config.gossip.suspect_after,
  });
  let api: ControlApi | null = null;
  let provisioner: Provisioner | null = null;
  try {
    scratch?.intake.start(agent.enrollment);
    await agent.start();
    peerDigests.start();
    api = await ControlApi.start({
      agent,
      logger,
      socketPath: socketPathOf(config),
      tcp,
      dashboard: config.api.dashboard,
      dataDir,
      caPublicKey: bundle.caPublicKey,
      overlayCidr: bundle.overlayCidr,
      // The reconciler's store, so that an uploaded image is recorded as held here at once (image-holders.ts).
      images:
        agent.reconciler?.images ??
        new ImageStore({ dataDir, caPublicKey: bundle.caPublicKey, logger, registry: agent.registry }),
      peerDigests,
      ...(scratch === null ? {} : { scratchKeyGenerations: () => scratch.keyring.generations() }),
      maxStopTimeoutMs: config.services.max_stop_timeout,
    });
    if (provisionerSetup !== null)
      provisioner = await startProvisioner(provisionerSetup, config, agent, api, logger);
  } catch (err) {
    await api?.close().catch(() => undefined);
    peerDigests.stop();
    await agent.stop().catch(() => undefined);
    scratch?.close();
    throw err;
  }
  const startedApi = api;
  const startedProvisioner = provisioner;
  let stopping: Promise<void> | null = null;
  return {
    agent,
    api: startedApi,
    provisioner: startedProvisioner,
    config,
    logger,
    stop() {
      stopping ??= (async () => {
        await startedProvisioner?.close();
        await startedApi.close();
        peerDigests.stop();
        await agent.stop();
        // The services are stopped and their STATE unmounted: the secrets are no longer needed.
        scratch?.close();
      })();
      return stopping;
    },
  };
}

interface ScratchKeys {
  keyring: ScratchKeyring;
  intake: ScratchKeyIntake;
  close(): void;
}

async function openScratchKeys(
  identityDir: string,
  config: AgentConfig,
  identity: NodeIdentity,
  bundle: EnrollmentBundle,
  logger: Logger,
): Promise<ScratchKeys> {
  const self = { nodeId: config.node.id, privateKey: identity.wgPrivateKey };
  let keyring: ScratchKeyring;
  try {
    keyring = (await loadScratchKeyring(join(identityDir, SCRATCH_KEYS_FILE), self)) ?? new ScratchKeyring();
  } catch (err) {
    throw new AgentSetupError((err as Error).message);
  }
  const intake = new ScratchKeyIntake({
    keyring,
    self: { nodeId: config.node.id, wgPrivateKey: identity.wgPrivateKey },
    caPublicKey: bundle.caPublicKey,
    logger: logger.child({ component: 'scratch-keys' }),
  });
  try {
    intake.addBundle(bundle.scratchKeys ?? []);
  } catch (err) {
    throw new AgentSetupError((err as Error).message);
  }
  if (keyring.current() === null)
    logger.warn(
      'no scratch key: workloads with encrypted scratch (persistent, unless encrypted = false) will not start here until the CA hands this node one (docs/operations.md, "Scratch key generations")',
    );
  return {
    keyring,
    intake,
    close: () => {
      intake.stop();
      keyring.clear();
    },
  };
}

interface ProvisionerSetup {
  orgDir: string;
  host: string;
  port: number;
}

/**
 * `[provisioner]`: the join listener (src/agent/provisioner.ts). Its org dir
 * must be this agent's org: a provisioner signing for another CA would hand
 * out bundles its own cluster refuses.
 */
async function checkProvisioner(
  config: AgentConfig,
  bundle: EnrollmentBundle,
): Promise<ProvisionerSetup | null> {
  const orgDir = config.provisioner.org_dir;
  if (orgDir === undefined) return null;
  let org: Awaited<ReturnType<typeof loadOrg>>;
  try {
    org = await loadOrg(orgDir);
  } catch (err) {
    throw new AgentSetupError(`provisioner.org_dir: ${(err as Error).message}`);
  }
  if (org.info.caPublicKey !== bundle.caPublicKey || org.info.name !== config.org) {
    throw new AgentSetupError(
      `provisioner.org_dir = "${orgDir}" is the org "${org.info.name}" with CA ${org.info.caPublicKey}; this agent is enrolled in "${bundle.org}" with CA ${bundle.caPublicKey}`,
    );
  }
  const listen = parseHostPort(config.provisioner.listen);
  if (listen === null)
    throw new AgentSetupError(`provisioner.listen = "${config.provisioner.listen}": expected "host:port"`);
  return { orgDir, ...listen };
}

async function startProvisioner(
  setup: ProvisionerSetup,
  config: AgentConfig,
  agent: NodeAgent,
  api: ControlApi,
  logger: Logger,
): Promise<Provisioner> {
  const { orgDir } = setup;
  const { JoinError, Provisioner } = await import('./provisioner.js');
  try {
    return await Provisioner.start({
      orgDir,
      host: setup.host,
      port: setup.port,
      seeds: () =>
        config.provisioner.seeds.length > 0
          ? config.provisioner.seeds
          : seedAddresses(agent.gossip.multiaddrs()),
      logger,
      // What `silo ca sign --socket` does: the record first, then a witness configuration it grew.
      register: async (signed) => {
        const record = await api.inject('POST', '/v1/enrollments', signed.bundle.record);
        if (record.status >= 300) {
          const code =
            record.status === 409 ? 'conflict' : record.status === 400 ? 'bad_request' : 'internal';
          throw new JoinError(code, `the cluster refused the signed record: ${apiMessage(record.body)}`);
        }
        if (signed.witnessesChanged && signed.witnessConfig !== null) {
          const witnesses = await api.inject('POST', '/v1/witnesses', signed.witnessConfig);
          if (witnesses.status >= 300)
            logger.warn(
              { version: signed.witnessConfig.version, reason: apiMessage(witnesses.body) },
              'provisioner: the agent refused the new witness configuration (kept in the org dir; `silo ca witnesses submit` hands it over)',
            );
        }
      },
    });
  } catch (err) {
    throw new AgentSetupError(
      `provisioner.listen = "${config.provisioner.listen}": ${(err as Error).message}`,
    );
  }
}

/** This agent's addresses as seeds: loopback ones only when there is nothing else (a joiner on another host cannot use them). */
function seedAddresses(addrs: string[]): string[] {
  const outside = addrs.filter((addr) => !/^\/ip4\/127\.|^\/ip6\/::1\//.test(addr));
  return outside.length > 0 ? outside : addrs;
}

function apiMessage(body: unknown): string {
  const message = (body as { error?: { message?: unknown } } | null)?.error?.message;
  return typeof message === 'string' ? message : JSON.stringify(body);
}

async function loadIdentity(dir: string, config: AgentConfig): Promise<NodeIdentity> {
  if (!(await fileExists(join(dir, NODE_FILES.info)))) {
    throw new AgentSetupError(
      `no node identity in ${dir} (${NODE_FILES.info} is missing): create it with ` +
        `\`silo node init --dir ${dir} --id ${config.node.id}\``,
    );
  }
  let identity: NodeIdentity;
  try {
    identity = await loadNodeIdentity(dir, { wgKeys: x25519WgKeys });
  } catch (err) {
    if (err instanceof KeyFileError) throw new AgentSetupError(`node identity: ${err.message}`);
    throw err;
  }
  if (identity.nodeId !== config.node.id) {
    throw new AgentSetupError(
      `${join(dir, NODE_FILES.info)} is the identity of node "${identity.nodeId}", the config says node.id = "${config.node.id}"`,
    );
  }
  return identity;
}

async function loadBundle(
  dir: string,
  config: AgentConfig,
  identity: NodeIdentity,
): Promise<EnrollmentBundle> {
  const path = join(dir, NODE_FILES.enrollment);
  let bundle: EnrollmentBundle | null;
  try {
    bundle = await loadEnrollmentBundle(dir);
  } catch (err) {
    if (err instanceof KeyFileError) throw new AgentSetupError(`enrollment bundle: ${err.message}`);
    throw err;
  }
  if (bundle === null) {
    throw new AgentSetupError(
      `node "${config.node.id}" is not enrolled: ${path} is missing. Have the org CA sign the request ` +
        `(\`silo ca sign --org <orgdir> ${join(dir, 'request.json')} -o ${path}\`)`,
    );
  }
  const failure = verifyEnrollmentBundle(bundle, { org: config.org });
  if (failure !== null)
    throw new AgentSetupError(`${path}: bundle refused (${failure.reason}): ${failure.message}`);
  const problems: string[] = [];
  if (bundle.record.nodeId !== identity.nodeId) problems.push(`it enrolls node "${bundle.record.nodeId}"`);
  if (bundle.record.peerId !== identity.peerId)
    problems.push(`its peer id ${bundle.record.peerId} is not this node's key`);
  if (bundle.record.wgPublicKey !== identity.wgPublicKey)
    problems.push("its WireGuard key is not this node's key");
  if (problems.length > 0) {
    throw new AgentSetupError(`${path} does not belong to the identity in ${dir}: ${problems.join('; ')}`);
  }
  return bundle;
}

/** The org's libp2p private-network key, when the operator copied it next to the bundle. */
async function loadPnetKey(dir: string): Promise<Uint8Array | undefined> {
  const path = join(dir, ORG_FILES.pnetKey);
  if (!(await fileExists(path))) return undefined;
  const bytes = new Uint8Array(await readFile(path));
  try {
    parsePnetKey(bytes);
  } catch (err) {
    throw new AgentSetupError(`${path}: ${(err as Error).message}`);
  }
  return bytes;
}

const LOOPBACK_HOSTS = new Set(['127.0.0.1', '::1', 'localhost']);

/** `api.tcp` ("127.0.0.1:7947") and its token; only loopback: the API can change the whole org's state. */
async function loadTcpListener(
  config: AgentConfig,
): Promise<{ host: string; port: number; token: string } | undefined> {
  const spec = config.api.tcp;
  if (spec === undefined || spec === '') return undefined;
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(spec);
  const host = match?.[1] ?? match?.[2];
  const port = Number(match?.[3]);
  if (!match || host === undefined || !(port >= 0 && port <= 65535)) {
    throw new AgentSetupError(`api.tcp = "${spec}": expected "127.0.0.1:<port>"`);
  }
  const loopback = LOOPBACK_HOSTS.has(host) || (isIP(host) === 4 && host.startsWith('127.'));
  if (!loopback) throw new AgentSetupError(`api.tcp = "${spec}": only loopback addresses are allowed`);
  const tokenFile = config.api.token_file;
  if (!tokenFile) throw new AgentSetupError('api.token_file is required when api.tcp is set');
  let token: string;
  try {
    token = (await readFile(tokenFile, 'utf8')).trim();
  } catch (err) {
    throw new AgentSetupError(
      `api.token_file ${tokenFile}: cannot read (${(err as NodeJS.ErrnoException).code})`,
    );
  }
  if (token.length < 16)
    throw new AgentSetupError(`api.token_file ${tokenFile}: token shorter than 16 characters`);
  return { host: host === 'localhost' ? '127.0.0.1' : host, port, token };
}

/**
 * overlay.mode = "wireguard": silo brings up its own WireGuard interface with
 * the bundle's overlay IP, and libp2p listens only there, so gossip never
 * leaves the overlay.
 */
function overlayManagerFor(
  config: AgentConfig,
  bundle: EnrollmentBundle,
  identityDir: string,
  logger: Logger,
  registry: Registry,
): OverlayManager {
  const interfaceName = config.overlay.interface;
  if (!interfaceName) throw new AgentSetupError('overlay.mode = "wireguard" needs overlay.interface');
  return new OverlayManager({
    interfaceName,
    listenPort: config.overlay.listen_port,
    privateKeyFile: wgPrivateKeyPath(identityDir),
    overlayIp: bundle.record.overlayIp,
    overlayPrefix: parseOverlayCidr(bundle.overlayCidr).prefix,
    logger: logger.child({ component: 'overlay' }),
    registry,
  });
}

/** The TCP ports of gossip.listen, bound to the overlay IP instead of the configured host. */
function overlayListenAddrs(config: AgentConfig, bundle: EnrollmentBundle): string[] {
  const ports = config.gossip.listen
    .map((addr) => /\/tcp\/(\d+)/.exec(addr)?.[1])
    .filter((port): port is string => port !== undefined);
  return [...new Set(ports.length > 0 ? ports : ['7946'])].map(
    (port) => `/ip4/${bundle.record.overlayIp}/tcp/${port}`,
  );
}
