import type { Command } from 'commander';
import type { WitnessesView } from '../../agent/api/views.js';
import { signWitnessConfig } from '../../identity/ca.js';
import { loadOrg, readWitnessConfigs, saveWitnessConfig } from '../../identity/org.js';
import { orgWitnessVerifier } from '../../identity/org-signing.js';
import { isClient } from '../../identity/role.js';
import { changeProblem, MAX_WITNESSES, quorumSize } from '../../ownership/witness-config.js';
import {
  NodeIdSchema,
  type Revocation,
  type SignedEnrollment,
  type WitnessConfigRecord,
} from '../../state/schemas.js';
import type { ApiClient, ConnectionFlags } from '../api-client.js';
import { type CliContext, type JsonFlag, withConnection, withJson } from '../context.js';
import { CliError, EXIT, inputError } from '../errors.js';
import { table } from '../format.js';

/**
 * The witness configuration from the command line (docs/cli.md, "Witnesses"):
 * `silo witnesses` asks a running agent which configuration is in force and
 * how its witnesses are doing; `silo ca witnesses set|show|submit` keep the
 * org's CA-signed history (`<orgdir>/witnesses/v<N>.json`) and hand a new
 * version to the cluster.
 */

/** The org's CA-signed records, read from the org directory (src/cli/commands/ca.ts supplies it). */
export interface OrgNodes {
  issued: ReadonlyMap<string, SignedEnrollment>;
  revoked: ReadonlyMap<string, Revocation>;
}
export type OrgNodesReader = (orgDir: string) => Promise<OrgNodes>;

/** Signature check of the org's witness files against its CA key (src/identity/org-signing.ts). */
export { orgWitnessVerifier };

export interface WitnessSubmitResponse {
  config: { version: number; witnesses: string[]; issuedAt: number };
  changed: boolean;
}

/** POST /v1/witnesses: the agent verifies the signature and that it is the next permitted version. */
export function submitWitnessConfig(
  client: ApiClient,
  record: WitnessConfigRecord,
): Promise<WitnessSubmitResponse> {
  return client.request<WitnessSubmitResponse>('POST', '/v1/witnesses', { json: record, timeoutMs: 30_000 });
}

/** Why `nodeId` cannot be a witness of the org, or null when it is an issued, unrevoked node. */
function enrollmentProblem(nodeId: string, nodes: OrgNodes): string | null {
  const record = nodes.issued.get(nodeId);
  if (record === undefined)
    return `node "${nodeId}" is not an enrolled node of the org (the CA never signed it: \`silo ca sign\` first)`;
  const revocation = nodes.revoked.get(nodeId);
  if (revocation !== undefined && revocation.revokedAt >= record.issuedAt)
    return `node "${nodeId}" is not an enrolled node of the org (revoked at ${new Date(revocation.revokedAt).toISOString()})`;
  if (isClient(record))
    return `node "${nodeId}" is enrolled as a client: clients are never witnesses (docs/security.md, "Clients")`;
  return null;
}

export interface SetWitnessesOptions {
  orgDir: string;
  /** The complete new witness set. */
  nodeIds: string[];
  readOrgNodes: OrgNodesReader;
  /** Milliseconds since the epoch; defaults to now. */
  issuedAt?: number;
}

export interface SetWitnessesResult {
  previous: WitnessConfigRecord | null;
  config: WitnessConfigRecord;
  added: string[];
  removed: string[];
  /** Where the org keeps it. */
  path: string;
}

/**
 * Signs the next witness configuration naming exactly `nodeIds` and keeps it
 * in the org directory. Refused (CliError, exit code 3, every problem named)
 * when a node id is malformed, listed twice or not an issued, unrevoked node
 * of the org, when there are more than MAX_WITNESSES, or when the change from
 * the org's current version is not a single addition or removal.
 */
export async function setWitnesses(options: SetWitnessesOptions): Promise<SetWitnessesResult> {
  const org = await loadOrg(options.orgDir);
  const history = await readWitnessConfigs(options.orgDir, orgWitnessVerifier(org.info.caPublicKey));
  const current = history.at(-1) ?? null;
  const problems: string[] = [];
  const bad = options.nodeIds.filter((id) => !NodeIdSchema.safeParse(id).success);
  for (const id of bad)
    problems.push(`"${id}" is not a node id (lowercase letters, digits and "-", 1-63 chars)`);
  const sorted = [...options.nodeIds].sort();
  const twice = [...new Set(sorted.filter((id, i) => i > 0 && sorted[i - 1] === id))];
  for (const id of twice) problems.push(`witness "${id}" is listed twice`);
  if (options.nodeIds.length > MAX_WITNESSES)
    problems.push(
      `a witness configuration names at most ${MAX_WITNESSES} witnesses, ${options.nodeIds.length} given`,
    );
  const nodes = await options.readOrgNodes(options.orgDir);
  for (const id of options.nodeIds) {
    if (bad.includes(id)) continue;
    const problem = enrollmentProblem(id, nodes);
    if (problem !== null && !problems.includes(problem)) problems.push(problem);
  }
  const witnesses = [...new Set(sorted)];
  const next = {
    version: (current?.version ?? 0) + 1,
    witnesses,
    issuedAt: options.issuedAt ?? Date.now(),
  };
  if (current !== null && JSON.stringify(current.witnesses) === JSON.stringify(witnesses)) {
    problems.push(`v${current.version} names exactly these witnesses already: nothing to change`);
  } else {
    const change = changeProblem(current, next);
    if (change !== null) problems.push(change);
  }
  if (problems.length > 0) {
    const inForce = current === null ? 'none' : `v${current.version}: ${current.witnesses.join(', ')}`;
    throw inputError(
      `witness change refused: ${problems.join('; ')} (the org's current configuration: ${inForce})`,
    );
  }
  const config = signWitnessConfig(org.caPrivateKey, next);
  const path = await saveWitnessConfig(options.orgDir, config);
  const before = new Set(current?.witnesses ?? []);
  return {
    previous: current,
    config,
    added: config.witnesses.filter((id) => !before.has(id)),
    removed: (current?.witnesses ?? []).filter((id) => !config.witnesses.includes(id)),
    path,
  };
}

function quorumText(witnesses: readonly string[]): string {
  return `${quorumSize({ version: 1, witnesses })} of ${witnesses.length}`;
}

/** The procedure between two changes (docs/cli.md, "Witnesses"). */
const NEXT_STEP =
  'check that `silo witnesses` on every witness shows this version with every witness alive, then wait one lease length';

export function renderWitnesses(view: WitnessesView): string {
  if (view.config === null)
    return 'no witness configuration in force (`silo ca sign` names the first witnesses as nodes are enrolled)';
  const { config } = view;
  return [
    `version   ${config.version} (issued ${new Date(config.issuedAt).toISOString()})`,
    `quorum    ${quorumText(config.witnesses)}`,
    '',
    table(
      ['WITNESS', 'ENROLLED', 'LIVENESS'],
      view.witnesses.map((w) => [
        w.liveness === 'self' ? `${w.nodeId}*` : w.nodeId,
        w.enrolled ? 'yes' : 'no',
        w.liveness,
      ]),
    ),
  ].join('\n');
}

function renderHistory(history: WitnessConfigRecord[]): string {
  const current = history.at(-1);
  if (current === undefined)
    return 'the org has no witness configuration yet (`silo ca sign` names the first witnesses)';
  return [
    `version    ${current.version} (issued ${new Date(current.issuedAt).toISOString()})`,
    `witnesses  ${current.witnesses.join(', ')}`,
    `quorum     ${quorumText(current.witnesses)}`,
    '',
    table(
      ['VERSION', 'ISSUED', 'WITNESSES'],
      [...history]
        .reverse()
        .map((r) => [`v${r.version}`, new Date(r.issuedAt).toISOString(), r.witnesses.join(', ')]),
    ),
  ].join('\n');
}

function summary(record: WitnessConfigRecord): { version: number; witnesses: string[]; issuedAt: number } {
  return { version: record.version, witnesses: [...record.witnesses], issuedAt: record.issuedAt };
}

type ViewFlags = JsonFlag & ConnectionFlags;

interface SetFlags extends JsonFlag, ConnectionFlags {
  org: string;
}

interface ShowFlags extends JsonFlag {
  org: string;
}

const connected = (flags: ConnectionFlags): boolean => flags.socket !== undefined || flags.url !== undefined;

/** `silo witnesses` and `silo ca witnesses set|show|submit`. */
export function registerWitnessCommands(
  program: Command,
  ca: Command,
  ctx: CliContext,
  readOrgNodes: OrgNodesReader,
): void {
  withConnection(
    withJson(
      program
        .command('witnesses')
        .description('the witness configuration in force: version, witnesses with liveness, quorum size'),
    ),
  ).action(async (flags: ViewFlags) => {
    const view = await (await ctx.client(flags)).get<WitnessesView>('/v1/witnesses');
    const quorum = view.config === null ? null : quorumSize(view.config);
    ctx.print(flags, { ...view, quorum }, () => renderWitnesses(view));
  });

  const witnesses = ca
    .command('witnesses')
    .description("the org's witness configuration: which nodes grant workload leases");

  withConnection(
    withJson(
      witnesses
        .command('set')
        .description(
          'sign the next witness configuration: the complete new set, one witness added or removed',
        )
        .argument('<nodeId...>', 'every witness of the new configuration')
        .requiredOption('--org <orgdir>', 'org directory (org.json, ca.key)'),
    ),
  )
    .addHelpText(
      'after',
      `\nOne witness is added or removed per version (replace one in two steps), at most ${MAX_WITNESSES},\neach an enrolled, unrevoked node of the org (never a client). With --socket or --url the new version is\nhanded to that running agent, which gossips it. Before the next change, check that\n\`silo witnesses\` on every witness shows the new version with every witness alive,\nthen wait one lease length.`,
    )
    .action(async (nodeIds: string[], flags: SetFlags) => {
      const result = await setWitnesses({ orgDir: flags.org, nodeIds, readOrgNodes });
      const { config } = result;
      let submitted = false;
      if (connected(flags)) {
        const client = await ctx.client(flags);
        try {
          await submitWitnessConfig(client, config);
        } catch (err) {
          if (!(err instanceof CliError)) throw err;
          throw new CliError(
            `witness configuration v${config.version} is signed and kept in ${result.path}, but the agent refused it: ${err.message}`,
            err.exitCode,
          );
        }
        submitted = true;
      }
      ctx.print(
        flags,
        {
          ...summary(config),
          added: result.added,
          removed: result.removed,
          quorum: quorumSize(config),
          file: result.path,
          submitted,
        },
        () =>
          [
            `witness configuration v${config.version}: ${config.witnesses.join(', ')} (${[
              ...result.added.map((id) => `added ${id}`),
              ...result.removed.map((id) => `removed ${id}`),
            ].join(', ')}); quorum ${quorumText(config.witnesses)}`,
            `kept in ${result.path}`,
            submitted
              ? 'submitted to the running cluster'
              : 'not submitted: hand it to a running agent with `silo ca witnesses submit --org <orgdir> --socket <path>`',
            `Before the next change, ${NEXT_STEP}.`,
          ].join('\n'),
      );
    });

  withJson(
    witnesses
      .command('show')
      .description("the org's current witness configuration and its history (no agent needed)")
      .requiredOption('--org <orgdir>', 'org directory (org.json, ca.key)'),
  ).action(async (flags: ShowFlags) => {
    const org = await loadOrg(flags.org);
    const history = await readWitnessConfigs(flags.org, orgWitnessVerifier(org.info.caPublicKey));
    const current = history.at(-1) ?? null;
    ctx.print(
      flags,
      {
        config: current === null ? null : summary(current),
        quorum: current === null ? null : quorumSize(current),
        history: history.map(summary),
      },
      () => renderHistory(history),
    );
  });

  withConnection(
    withJson(
      witnesses
        .command('submit')
        .description(
          "hand the running cluster the org's next witness configuration version it lacks (one version per call)",
        )
        .requiredOption('--org <orgdir>', 'org directory (org.json, ca.key)'),
    ),
  ).action(async (flags: SetFlags) => {
    const org = await loadOrg(flags.org);
    const history = await readWitnessConfigs(flags.org, orgWitnessVerifier(org.info.caPublicKey));
    const current = history.at(-1);
    if (current === undefined) throw inputError(`${flags.org}: the org has no witness configuration yet`);
    const client = await ctx.client(flags);
    const view = await client.get<WitnessesView>('/v1/witnesses');
    const agentVersion = view.config?.version ?? 0;
    if (agentVersion > current.version) {
      throw new CliError(
        `the agent has witness configuration v${agentVersion}, newer than this org's v${current.version}: is ${flags.org} the org that signed it?`,
        EXIT.failure,
      );
    }
    if (agentVersion === current.version) {
      ctx.print(
        flags,
        { ...summary(current), submitted: false, orgVersion: current.version },
        () => `the cluster has the org's current witness configuration, v${current.version}`,
      );
      return;
    }
    const next = history.find((r) => r.version === agentVersion + 1);
    if (next === undefined)
      throw inputError(
        `${flags.org}: the org keeps no witness configuration v${agentVersion + 1} (the agent has ${agentVersion === 0 ? 'none' : `v${agentVersion}`})`,
      );
    await submitWitnessConfig(client, next);
    ctx.print(flags, { ...summary(next), submitted: true, orgVersion: current.version }, () =>
      [
        `submitted witness configuration v${next.version}: ${next.witnesses.join(', ')}`,
        ...(next.version < current.version
          ? [`the org is at v${current.version}: ${NEXT_STEP}, then submit again`]
          : []),
      ].join('\n'),
    );
  });
}
