import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import type { EnrollmentBundle } from '../../identity/bundle.js';
import { issueEnrollment, signRevocation } from '../../identity/ca.js';
import { fileExists, PUBLIC_FILE_MODE, writeFileAtomic } from '../../identity/key-files.js';
import { loadOrg, ORG_FILES } from '../../identity/org.js';
import { type Revocation, type SignedEnrollment, SignedEnrollmentSchema } from '../../state/schemas.js';
import type { ConnectionFlags } from '../api-client.js';
import { type CliContext, type JsonFlag, withConnection, withJson } from '../context.js';
import { inputError } from '../errors.js';
import { collect } from './node.js';

/** Every record the CA signed, by node id (`<orgdir>/issued/<nodeId>.json`): the CA's memory of allocated IPs. */
export const ISSUED_DIR = 'issued';
export const REVOKED_DIR = 'revoked';

export interface SignRequestOptions {
  orgDir: string;
  requestFile: string;
  out: string;
  seeds: string[];
  overlayIp?: string;
}

export interface SignRequestResult {
  bundle: EnrollmentBundle;
  out: string;
  /** The org has a private-network key that the node needs next to its bundle. */
  pnetKey: string | null;
}

/** Signs an enrollment request into a bundle; the overlay IP is the node's previous one or the lowest free one. */
export async function signRequest(options: SignRequestOptions): Promise<SignRequestResult> {
  const org = await loadOrg(options.orgDir);
  let request: unknown;
  try {
    request = JSON.parse(await readFile(options.requestFile, 'utf8'));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw inputError(
      `${options.requestFile}: ${code ? `cannot read (${code})` : `not JSON (${(err as Error).message})`}`,
    );
  }
  const issued = await issuedRecords(options.orgDir);
  const nodeId = (request as { nodeId?: unknown } | null)?.nodeId;
  const previous = typeof nodeId === 'string' ? issued.get(nodeId) : undefined;
  // Re-signing a node keeps its address; every other issued address (revoked ones too) stays taken.
  const allocatedIps = [...issued.values()].filter((r) => r !== previous).map((r) => r.overlayIp);
  let bundle: EnrollmentBundle;
  try {
    bundle = issueEnrollment(org, request, {
      allocatedIps,
      overlayIp: options.overlayIp ?? previous?.overlayIp,
      seedPeers: options.seeds,
      seedRecords: seedRecordsOf(options.seeds, issued),
    });
  } catch (err) {
    throw inputError(`${options.requestFile}: ${(err as Error).message}`);
  }
  await writeFileAtomic(
    join(options.orgDir, ISSUED_DIR, `${bundle.record.nodeId}.json`),
    `${JSON.stringify(bundle.record, null, 2)}\n`,
    PUBLIC_FILE_MODE,
  );
  await writeFileAtomic(options.out, `${JSON.stringify(bundle, null, 2)}\n`, PUBLIC_FILE_MODE);
  const pnetPath = join(options.orgDir, ORG_FILES.pnetKey);
  return { bundle, out: options.out, pnetKey: (await fileExists(pnetPath)) ? pnetPath : null };
}

/** The issued records of the nodes the seed multiaddrs point at (by their /p2p/ peer id). */
function seedRecordsOf(seeds: string[], issued: Map<string, SignedEnrollment>): SignedEnrollment[] {
  const peerIds = new Set(
    seeds.map((seed) => /\/p2p\/([^/]+)/.exec(seed)?.[1]).filter((id) => id !== undefined),
  );
  return [...issued.values()].filter((record) => peerIds.has(record.peerId));
}

async function issuedRecords(orgDir: string): Promise<Map<string, SignedEnrollment>> {
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

interface SignFlags extends JsonFlag, ConnectionFlags {
  org: string;
  output: string;
  seed: string[];
  overlayIp?: string;
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
        .option('--overlay-ip <ip>', 'a specific overlay IP instead of the lowest free one'),
    ),
  )
    .addHelpText(
      'after',
      '\nWith --socket or --url the signed record is also registered with that running agent,\nso the cluster admits the new node before it first connects.',
    )
    .action(async (requestFile: string, flags: SignFlags) => {
      const result = await signRequest({
        orgDir: flags.org,
        requestFile,
        out: flags.output,
        seeds: flags.seed,
        overlayIp: flags.overlayIp,
      });
      let registered = false;
      if (flags.socket !== undefined || flags.url !== undefined) {
        const client = await ctx.client(flags);
        await client.request('POST', '/v1/enrollments', { json: result.bundle.record, timeoutMs: 30_000 });
        registered = true;
      }
      const { record } = result.bundle;
      ctx.print(
        flags,
        {
          nodeId: record.nodeId,
          peerId: record.peerId,
          overlayIp: record.overlayIp,
          bundle: result.out,
          registered,
          pnetKey: result.pnetKey,
        },
        () =>
          [
            `enrolled node "${record.nodeId}" with overlay IP ${record.overlayIp}`,
            // The proof binds the request to this key; the operator binds the key to the machine.
            `peer id: ${record.peerId} (the request was signed by its key; compare it with \`silo node init\`'s output on the node)`,
            `bundle: ${result.out} (install it as <identity dir>/enrollment.json)`,
            ...(registered ? ['registered with the running cluster'] : []),
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
}
