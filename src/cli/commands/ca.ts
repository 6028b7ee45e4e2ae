import type { KeyObject } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type Command, InvalidArgumentError } from 'commander';
import type { EnrollmentBundle } from '../../identity/bundle.js';
import { issueEnrollment, signRevocation, signWitnessConfig } from '../../identity/ca.js';
import { fileExists, PUBLIC_FILE_MODE, writeFileAtomic } from '../../identity/key-files.js';
import { currentWitnessConfig, loadOrg, ORG_FILES, saveWitnessConfig } from '../../identity/org.js';
import { ENROLLMENT_ROLES, isClient, parseRole, roleOf } from '../../identity/role.js';
import { changeProblem, DEFAULT_WITNESS_COUNT } from '../../ownership/witness-config.js';
import {
  type EnrollmentRole,
  type Revocation,
  RevocationSchema,
  type SignedEnrollment,
  SignedEnrollmentSchema,
  type WitnessConfigRecord,
} from '../../state/schemas.js';
import type { ConnectionFlags } from '../api-client.js';
import { type CliContext, type JsonFlag, withConnection, withJson } from '../context.js';
import { CliError, EXIT, inputError } from '../errors.js';
import { collect } from './node.js';
import { orgWitnessVerifier, registerWitnessCommands, submitWitnessConfig } from './witnesses.js';

/** Every record the CA signed, by node id (`<orgdir>/issued/<nodeId>.json`): the CA's memory of allocated IPs. */
export const ISSUED_DIR = 'issued';
export const REVOKED_DIR = 'revoked';

export interface SignRequestOptions {
  orgDir: string;
  requestFile: string;
  out: string;
  seeds: string[];
  overlayIp?: string;
  /**
   * The node id is enrolled with another key: revoke that key and enroll
   * this one (a documented re-key). Without it such a request is refused.
   */
  rekey?: boolean;
  /**
   * What the identity is for (docs/protocol.md, "Enrollment roles"; default
   * node). The CA decides it, not the request: a `client` is never placed,
   * never a witness, never counted for ownership.
   */
  role?: EnrollmentRole;
}

export interface SignRequestResult {
  bundle: EnrollmentBundle;
  out: string;
  /** The org has a private-network key that the node needs next to its bundle. */
  pnetKey: string | null;
  /** The witness configuration in force after this signing (also in the bundle); null when the org has none. */
  witnessConfig: WitnessConfigRecord | null;
  /** This signing issued `witnessConfig` (it added the node as a witness). */
  witnessesChanged: boolean;
  /** With `rekey`: the revocation of the node's previous key (submit it before the new record). */
  revocation: Revocation | null;
}

/** Signs an enrollment request file into a bundle file (`silo ca sign`); see `signEnrollment`. */
export async function signRequest(options: SignRequestOptions): Promise<SignRequestResult> {
  let request: unknown;
  try {
    request = JSON.parse(await readFile(options.requestFile, 'utf8'));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw inputError(
      `${options.requestFile}: ${code ? `cannot read (${code})` : `not JSON (${(err as Error).message})`}`,
    );
  }
  const signed = await signEnrollment({ ...options, request, source: options.requestFile });
  await writeFileAtomic(options.out, `${JSON.stringify(signed.bundle, null, 2)}\n`, PUBLIC_FILE_MODE);
  return { ...signed, out: options.out };
}

/**
 * A request for a node id the org has enrolled with another key, without
 * --rekey: refused (exit code 3), and the provisioner answers 409 with it.
 */
export class EnrollmentConflictError extends CliError {
  constructor(message: string) {
    super(message, EXIT.input);
    this.name = 'EnrollmentConflictError';
  }
}

export interface SignEnrollmentOptions extends Omit<SignRequestOptions, 'requestFile' | 'out'> {
  /** The parsed request (what `silo node init` wrote). */
  request: unknown;
  /** Where the request came from, for messages (a file name, "join request"). */
  source: string;
  /** Labels the CA adds to the request's (a join token's); the CA's value wins on the same key. */
  labels?: Record<string, string>;
}

/**
 * The CA's side of enrollment, shared by `silo ca sign` and the join
 * provisioner (src/agent/provisioner.ts): checks the request (proof of
 * possession, an id enrolled with another key), signs it into a bundle (the
 * overlay IP is the node's previous one or the lowest free one), and records
 * what it signed in the org dir (issued/, witnesses/, revoked/).
 */
export async function signEnrollment(
  options: SignEnrollmentOptions,
): Promise<Omit<SignRequestResult, 'out'>> {
  const org = await loadOrg(options.orgDir);
  const request = options.request;
  const issued = await issuedRecords(options.orgDir);
  const nodeId = (request as { nodeId?: unknown } | null)?.nodeId;
  const previous = typeof nodeId === 'string' ? issued.get(nodeId) : undefined;
  // Re-signing a node keeps its address; every other issued address (revoked ones too) stays taken.
  const allocatedIps = [...issued.values()].filter((r) => r !== previous).map((r) => r.overlayIp);
  const newPeerId = (request as { peerId?: unknown } | null)?.peerId;
  let revocation: Revocation | null = null;
  let issuedAt = Date.now();
  if (previous !== undefined && typeof newPeerId === 'string' && newPeerId !== previous.peerId) {
    // Another key for an enrolled node id: signing it would silently take
    // over the live node's identity (its address, its workloads).
    const revoked = (await revokedRecords(options.orgDir)).get(previous.nodeId);
    const oldKeyRevoked = revoked !== undefined && revoked.revokedAt >= previous.issuedAt;
    if (!oldKeyRevoked && options.rekey !== true) {
      throw new EnrollmentConflictError(
        `node "${previous.nodeId}" is enrolled with another key (peer id ${previous.peerId}); signing this request would replace a live node's identity. Revoke the old key first (silo ca revoke ${previous.nodeId}), or pass --rekey to revoke it and enroll this key in one step`,
      );
    }
    if (!oldKeyRevoked) {
      revocation = signRevocation(org.caPrivateKey, {
        nodeId: previous.nodeId,
        revokedAt: issuedAt,
        reason: `re-keyed: replaced by peer ${newPeerId}`,
      });
    }
    // The new record must be issued after the revocation, or it is revoked too.
    issuedAt = Math.max(issuedAt, (revocation ?? revoked)?.revokedAt ?? 0) + 1;
  }
  let bundle: EnrollmentBundle;
  try {
    bundle = issueEnrollment(org, request, {
      allocatedIps,
      overlayIp: options.overlayIp ?? previous?.overlayIp,
      seedPeers: options.seeds,
      seedRecords: seedRecordsOf(options.seeds, issued),
      issuedAt,
      ...(options.role ? { role: options.role } : {}),
      ...(options.labels ? { labels: options.labels } : {}),
    });
  } catch (err) {
    throw inputError(`${options.source}: ${(err as Error).message}`);
  }
  const current = await currentWitnessConfig(options.orgDir, orgWitnessVerifier(org.info.caPublicKey));
  // A client never becomes a witness: it grants no leases (docs/security.md, "Clients").
  const witnessConfig = isClient(bundle.record)
    ? current
    : nextBootstrapWitnessConfig(org.caPrivateKey, current, bundle.record.nodeId);
  const witnessesChanged = witnessConfig !== current;
  if (witnessConfig !== null) bundle = { ...bundle, witnessConfig };
  await writeFileAtomic(
    join(options.orgDir, ISSUED_DIR, `${bundle.record.nodeId}.json`),
    `${JSON.stringify(bundle.record, null, 2)}\n`,
    PUBLIC_FILE_MODE,
  );
  if (witnessesChanged && witnessConfig !== null) await saveWitnessConfig(options.orgDir, witnessConfig);
  if (revocation !== null) {
    await writeFileAtomic(
      join(options.orgDir, REVOKED_DIR, `${revocation.nodeId}.json`),
      `${JSON.stringify(revocation, null, 2)}\n`,
      PUBLIC_FILE_MODE,
    );
  }
  const pnetPath = join(options.orgDir, ORG_FILES.pnetKey);
  return {
    bundle,
    pnetKey: (await fileExists(pnetPath)) ? pnetPath : null,
    witnessConfig,
    witnessesChanged,
    revocation,
  };
}

/**
 * While the org has fewer than DEFAULT_WITNESS_COUNT witnesses, each newly
 * signed node becomes one: the next version adds it (one node per version,
 * so every step is a permitted single change; the first node is version 1).
 * Returns `current` itself when nothing changes.
 */
export function nextBootstrapWitnessConfig(
  caPrivateKey: KeyObject,
  current: WitnessConfigRecord | null,
  nodeId: string,
): WitnessConfigRecord | null {
  if (current !== null && current.witnesses.length >= DEFAULT_WITNESS_COUNT) return current;
  if (current?.witnesses.includes(nodeId)) return current;
  const next = {
    version: (current?.version ?? 0) + 1,
    witnesses: [...(current?.witnesses ?? []), nodeId].sort(),
    issuedAt: Date.now(),
  };
  const problem = changeProblem(current, next);
  if (problem !== null) throw new Error(`cannot add ${nodeId} as a witness: ${problem}`);
  return signWitnessConfig(caPrivateKey, next);
}

/** The issued records of the nodes the seed multiaddrs point at (by their /p2p/ peer id). */
function seedRecordsOf(seeds: string[], issued: Map<string, SignedEnrollment>): SignedEnrollment[] {
  const peerIds = new Set(
    seeds.map((seed) => /\/p2p\/([^/]+)/.exec(seed)?.[1]).filter((id) => id !== undefined),
  );
  return [...issued.values()].filter((record) => peerIds.has(record.peerId));
}

/** Every record the CA signed (`<orgdir>/issued/`), by node id. */
export async function issuedRecords(orgDir: string): Promise<Map<string, SignedEnrollment>> {
  const dir = join(orgDir, ISSUED_DIR);
  const names = await readdir(dir).catch(() => [] as string[]);
  const out = new Map<string, SignedEnrollment>();
  for (const name of names.filter((n) => n.endsWith('.json')).sort()) {
    try {
      const record = SignedEnrollmentSchema.parse(JSON.parse(await readFile(join(dir, name), 'utf8')));
      out.set(record.nodeId, record);
    } catch (err) {
      throw inputError(
        `${join(dir, name)}: not a signed enrollment record (${(err as Error).message.split('\n')[0]})`,
      );
    }
  }
  return out;
}

/** Every revocation the CA signed (`<orgdir>/revoked/`), by node id. */
export async function revokedRecords(orgDir: string): Promise<Map<string, Revocation>> {
  const dir = join(orgDir, REVOKED_DIR);
  const names = await readdir(dir).catch(() => [] as string[]);
  const out = new Map<string, Revocation>();
  for (const name of names.filter((n) => n.endsWith('.json')).sort()) {
    try {
      const revocation = RevocationSchema.parse(JSON.parse(await readFile(join(dir, name), 'utf8')));
      out.set(revocation.nodeId, revocation);
    } catch (err) {
      throw inputError(`${join(dir, name)}: not a revocation (${(err as Error).message.split('\n')[0]})`);
    }
  }
  return out;
}

interface SignFlags extends JsonFlag, ConnectionFlags {
  org: string;
  output: string;
  seed: string[];
  overlayIp?: string;
  rekey?: boolean;
  role: EnrollmentRole;
}

/** `--role`: a known role, or a usage error naming the ones there are. */
function roleOption(value: string): EnrollmentRole {
  const role = parseRole(value);
  if (role === null)
    throw new InvalidArgumentError(`unknown role "${value}": expected ${ENROLLMENT_ROLES.join(' or ')}`);
  return role;
}

interface RevokeFlags extends JsonFlag, ConnectionFlags {
  org: string;
  reason: string;
}

export function registerCaCommands(program: Command, ctx: CliContext): void {
  const ca = program.command('ca').description("the org CA's operations (run where the org dir is)");
  withConnection(
    withJson(
      ca
        .command('sign')
        .description('sign an enrollment request into the bundle the node starts with')
        .argument('<request.json>', 'the request written by `silo node init`')
        .requiredOption('--org <orgdir>', 'org directory (org.json, ca.key)')
        .requiredOption(
          '-o, --output <bundle.json>',
          'where to write the bundle (the node reads <identity dir>/enrollment.json)',
        )
        .option(
          '--seed <multiaddr>',
          'a peer the node dials first (with /p2p/<peer id>); repeatable',
          collect,
          [],
        )
        .option('--overlay-ip <ip>', 'a specific overlay IP instead of the lowest free one')
        .option(
          '--rekey',
          'the node id is enrolled with another key: revoke that key and enroll this one (refused without it)',
        )
        .option(
          '--role <role>',
          'node (runs workloads, counts for quorums) or client (a tool: syncs and writes, never placed nor counted)',
          roleOption,
          'node',
        ),
    ),
  )
    .addHelpText(
      'after',
      `\nWith --socket or --url the signed record is also registered with that running agent,\nso the cluster admits the new node before it first connects.\nWhile the org has fewer than ${DEFAULT_WITNESS_COUNT} witnesses, the node also becomes one (a new witness\nconfiguration version, in the bundle and, with --socket, submitted too).`,
    )
    .action(async (requestFile: string, flags: SignFlags) => {
      const result = await signRequest({
        orgDir: flags.org,
        requestFile,
        out: flags.output,
        seeds: flags.seed,
        overlayIp: flags.overlayIp,
        rekey: flags.rekey === true,
        role: flags.role,
      });
      let registered = false;
      const { record } = result.bundle;
      const witnesses = result.witnessConfig;
      if (flags.socket !== undefined || flags.url !== undefined) {
        const client = await ctx.client(flags);
        // A re-key: the old key's revocation first, so no moment admits both keys.
        if (result.revocation !== null)
          await client.request('POST', '/v1/revocations', { json: result.revocation, timeoutMs: 30_000 });
        await client.request('POST', '/v1/enrollments', { json: result.bundle.record, timeoutMs: 30_000 });
        registered = true;
        if (result.witnessesChanged && witnesses !== null) {
          try {
            await submitWitnessConfig(client, witnesses);
          } catch (err) {
            if (!(err instanceof CliError)) throw err;
            throw new CliError(
              `node "${record.nodeId}" was registered, but the agent refused witness configuration v${witnesses.version}: ${err.message} (it is kept in the org directory; \`silo ca witnesses submit\` hands it over)`,
              err.exitCode,
            );
          }
        }
      }
      const witnessesJson =
        witnesses === null
          ? null
          : {
              version: witnesses.version,
              witnesses: witnesses.witnesses,
              changed: result.witnessesChanged,
              submitted: registered && result.witnessesChanged,
            };
      ctx.print(
        flags,
        {
          nodeId: record.nodeId,
          role: roleOf(record),
          peerId: record.peerId,
          overlayIp: record.overlayIp,
          bundle: result.out,
          registered,
          pnetKey: result.pnetKey,
          witnesses: witnessesJson,
          rekeyed: result.revocation !== null,
        },
        () =>
          [
            ...(result.revocation !== null
              ? [`re-key: revoked the previous key of "${record.nodeId}" (${result.revocation.reason})`]
              : []),
            isClient(record)
              ? `enrolled client "${record.nodeId}" with overlay IP ${record.overlayIp} (never placed, never counted for ownership)`
              : `enrolled node "${record.nodeId}" with overlay IP ${record.overlayIp}`,
            // The proof binds the request to this key; the operator binds the key to the machine.
            `peer id: ${record.peerId} (the request was signed by its key; compare it with \`silo node init\`'s output on the node)`,
            `bundle: ${result.out} (install it as <identity dir>/enrollment.json)`,
            ...(registered ? ['registered with the running cluster'] : []),
            ...(witnesses === null
              ? []
              : [
                  `witnesses (v${witnesses.version}): ${witnesses.witnesses.join(', ')}${
                    result.witnessesChanged
                      ? ` (added "${record.nodeId}"${registered ? ', submitted to the running cluster' : ''})`
                      : ''
                  }`,
                ]),
            ...(result.pnetKey
              ? [`the org is a private network: also copy ${result.pnetKey} into the identity dir`]
              : []),
          ].join('\n'),
      );
    });

  withConnection(
    withJson(
      ca
        .command('revoke')
        .description('revoke a node: sign a revocation and hand it to a running agent, which gossips it')
        .argument('<nodeId>', 'the node to revoke')
        .requiredOption('--org <orgdir>', 'org directory (org.json, ca.key)')
        .option('--reason <text>', 'why (kept in the revocation record)', ''),
    ),
  ).action(async (nodeId: string, flags: RevokeFlags) => {
    const org = await loadOrg(flags.org);
    let revocation: Revocation;
    try {
      revocation = signRevocation(org.caPrivateKey, { nodeId, revokedAt: Date.now(), reason: flags.reason });
    } catch (err) {
      throw inputError((err as Error).message);
    }
    const client = await ctx.client(flags);
    const result = await client.request<{ revocation: Revocation; changed: boolean }>(
      'POST',
      '/v1/revocations',
      {
        json: revocation,
        timeoutMs: 30_000,
      },
    );
    await writeFileAtomic(
      join(flags.org, REVOKED_DIR, `${nodeId}.json`),
      `${JSON.stringify(result.revocation, null, 2)}\n`,
      PUBLIC_FILE_MODE,
    );
    ctx.print(flags, result, () =>
      result.changed
        ? `revoked node "${nodeId}"`
        : `node "${nodeId}" was already revoked (kept the earlier revocation)`,
    );
  });

  registerWitnessCommands(program, ca, ctx, async (orgDir) => ({
    issued: await issuedRecords(orgDir),
    revoked: await revokedRecords(orgDir),
  }));
}
