import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type Command, InvalidArgumentError } from 'commander';
import { signRevocation } from '../../identity/ca.js';
import { PUBLIC_FILE_MODE, writeFileAtomic } from '../../identity/key-files.js';
import { loadOrg } from '../../identity/org.js';
import {
  issuedRecords,
  REVOKED_DIR,
  revokedRecords,
  type ScratchRotation,
  type SignEnrollmentOptions,
  type SignEnrollmentResult,
  scratchKeysAfterRevocation,
  signEnrollment,
} from '../../identity/org-signing.js';
import { ENROLLMENT_ROLES, isClient, parseRole, roleOf } from '../../identity/role.js';
import { DEFAULT_WITNESS_COUNT } from '../../ownership/witness-config.js';
import type { EnrollmentRole, Revocation } from '../../state/schemas.js';
import type { ApiClient, ConnectionFlags } from '../api-client.js';
import { type CliContext, type JsonFlag, withConnection, withJson } from '../context.js';
import { CliError, inputError } from '../errors.js';
import { collect } from './node.js';
import { registerWitnessCommands, submitWitnessConfig } from './witnesses.js';

// Where the CA's side of signing lives now; re-exported for the callers that import it from here.
export {
  EnrollmentConflictError,
  ISSUED_DIR,
  issuedRecords,
  nextBootstrapWitnessConfig,
  REVOKED_DIR,
  revokedRecords,
  signEnrollment,
} from '../../identity/org-signing.js';

/** `silo ca sign`: the request file and where the bundle goes, and what `signEnrollment` takes. */
export interface SignRequestOptions extends Omit<SignEnrollmentOptions, 'request' | 'source'> {
  requestFile: string;
  out: string;
}

export interface SignRequestResult extends SignEnrollmentResult {
  out: string;
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

/** Hands a generation's envelopes to the agent, which writes them into the enrollment document. */
async function submitScratchKeys(client: ApiClient, rotation: ScratchRotation): Promise<void> {
  await client.request('POST', '/v1/scratch-keys', { json: { keys: rotation.keys }, timeoutMs: 30_000 });
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
        if (result.scratchRotation !== null && result.scratchRotation.keys.length > 0)
          await submitScratchKeys(client, result.scratchRotation);
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
    // A new scratch key generation the revoked node never holds, to every remaining node through the
    // enrollment document (docs/operations.md, "Scratch key generations"). Idempotent: a retry re-sends it.
    const rotation = await scratchKeysAfterRevocation(flags.org, result.revocation);
    if (rotation.keys.length > 0) await submitScratchKeys(client, rotation);
    const scratchKeys = {
      generation: rotation.generation,
      rotated: rotation.rotated,
      nodes: rotation.keys.map((k) => k.nodeId),
    };
    ctx.print(flags, { ...result, scratchKeys }, () =>
      [
        result.changed
          ? `revoked node "${nodeId}"`
          : `node "${nodeId}" was already revoked (kept the earlier revocation)`,
        `scratch key generation ${rotation.generation}${rotation.rotated ? ' (new)' : ''} sent to ${rotation.keys.length} node${rotation.keys.length === 1 ? '' : 's'}`,
      ].join('\n'),
    );
  });

  registerWitnessCommands(program, ca, ctx, async (orgDir) => ({
    issued: await issuedRecords(orgDir),
    revoked: await revokedRecords(orgDir),
  }));
}
