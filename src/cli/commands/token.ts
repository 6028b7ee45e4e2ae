import { type Command, InvalidArgumentError } from 'commander';
import { parseDuration } from '../../config/duration.js';
import {
  caFingerprint,
  formatJoinToken,
  joinKeyOf,
  newTokenId,
  newTokenSecret,
  parseHostPort,
} from '../../identity/join-token.js';
import { loadOrg } from '../../identity/org.js';
import {
  listTokens,
  loadToken,
  type StoredToken,
  saveToken,
  tokenState,
} from '../../identity/token-store.js';
import { type CliContext, type JsonFlag, withJson } from '../context.js';
import { CliError, EXIT } from '../errors.js';
import { table } from '../format.js';
import { labelOption } from './node.js';

/** The longest a token may live: a join token is for enrolling a machine now, not a standing credential. */
const MAX_TTL_MS = 30 * 24 * 3_600_000;

function ttlOption(value: string): number {
  let ms: number;
  try {
    ms = parseDuration(value);
  } catch {
    throw new InvalidArgumentError(`expected a duration like "30m", "1h" or "24h", got "${value}"`);
  }
  if (!(ms >= 1000 && ms <= MAX_TTL_MS))
    throw new InvalidArgumentError('expected a duration from 1s to 720h');
  return ms;
}

function usesOption(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isInteger(n) || n < 1 || n > 10_000)
    throw new InvalidArgumentError('expected a whole number from 1 to 10000');
  return n;
}

function provisionerOption(value: string): string {
  if (parseHostPort(value) === null)
    throw new InvalidArgumentError(`expected host:port of an agent's [provisioner] listen, got "${value}"`);
  return value;
}

interface CreateFlags extends JsonFlag {
  org: string;
  ttl: number;
  uses: number;
  label: Record<string, string>;
  provisioner: string;
}

/** One row of `silo token list` (no key material). */
function listed(token: StoredToken, now: number) {
  return {
    id: token.id,
    state: tokenState(token, now),
    createdAt: new Date(token.createdAt).toISOString(),
    expiresAt: new Date(token.expiresAt).toISOString(),
    uses: token.uses,
    usesLeft: token.usesLeft,
    labels: token.labels,
    provisioner: token.provisioner,
    joined: token.joined,
    ...(token.revokedAt !== undefined ? { revokedAt: new Date(token.revokedAt).toISOString() } : {}),
  };
}

export function registerTokenCommands(program: Command, ctx: CliContext): void {
  const token = program
    .command('token')
    .description('join tokens: let a machine enroll itself with `silo join` (run where the org dir is)');
  withJson(
    token
      .command('create')
      .description('create a join token; prints it once (the org dir keeps only a key derived from it)')
      .requiredOption('--org <orgdir>', 'org directory (org.json, ca.key)')
      .requiredOption(
        '--provisioner <host:port>',
        "where joiners reach an agent's join provisioner ([provisioner] listen)",
        provisionerOption,
      )
      .option('--ttl <duration>', 'how long the token is valid (1s to 720h)', ttlOption, 3_600_000)
      .option('--uses <n>', 'how many nodes may join with it', usesOption, 1)
      .option(
        '--label <key=value>',
        'placement label every node joining with it gets; repeatable',
        labelOption,
        {},
      ),
  ).action(async (flags: CreateFlags) => {
    const org = await loadOrg(flags.org);
    const id = newTokenId();
    const secret = newTokenSecret();
    const now = Date.now();
    const stored: StoredToken = {
      v: 1,
      id,
      joinKey: joinKeyOf(id, secret).toString('base64url'),
      provisioner: flags.provisioner,
      createdAt: now,
      expiresAt: now + flags.ttl,
      uses: flags.uses,
      usesLeft: flags.uses,
      labels: flags.label,
      revoked: false,
      joined: [],
    };
    await saveToken(flags.org, stored);
    const text = formatJoinToken({
      v: 1,
      org: org.info.name,
      ca: caFingerprint(org.info.caPublicKey),
      at: flags.provisioner,
      id,
      s: secret,
    });
    ctx.print(flags, { token: text, ...listed(stored, now) }, () =>
      [
        text,
        '',
        `token ${id}: ${flags.uses} use${flags.uses === 1 ? '' : 's'}, expires ${new Date(stored.expiresAt).toISOString()}` +
          (Object.keys(flags.label).length > 0
            ? `, labels ${Object.entries(flags.label)
                .map(([k, v]) => `${k}=${v}`)
                .join(',')}`
            : ''),
        `on the new machine: silo join '<token>' --dir /var/lib/silo/identity --id <node id>`,
        'the token is shown once and lets whoever holds it enroll a node until it expires, is used up or revoked',
      ].join('\n'),
    );
  });

  withJson(
    token
      .command('list')
      .description("the org's join tokens: state, uses left, expiry, labels (never a secret)")
      .requiredOption('--org <orgdir>', 'org directory'),
  ).action(async (flags: { org: string } & JsonFlag) => {
    const now = Date.now();
    const tokens = (await listTokens(flags.org)).map((t) => listed(t, now));
    ctx.print(flags, { tokens }, () =>
      tokens.length === 0
        ? 'no join tokens'
        : table(
            ['ID', 'STATE', 'USES LEFT', 'EXPIRES', 'LABELS', 'JOINED'],
            tokens.map((t) => [
              t.id,
              t.state,
              `${t.usesLeft}/${t.uses}`,
              t.expiresAt,
              Object.entries(t.labels)
                .map(([k, v]) => `${k}=${v}`)
                .join(',') || '-',
              t.joined.join(',') || '-',
            ]),
          ),
    );
  });

  withJson(
    token
      .command('revoke')
      .description('revoke a join token: the provisioner refuses it from now on (nodes that joined stay)')
      .argument('<id>', 'the token id (`silo token list`)')
      .requiredOption('--org <orgdir>', 'org directory'),
  ).action(async (id: string, flags: { org: string } & JsonFlag) => {
    const stored = await loadToken(flags.org, id);
    if (stored === null) throw new CliError(`no join token "${id}" in ${flags.org}`, EXIT.notFound);
    const changed = !stored.revoked;
    const revoked = changed ? { ...stored, revoked: true, revokedAt: Date.now() } : stored;
    if (changed) await saveToken(flags.org, revoked);
    ctx.print(flags, { ...listed(revoked, Date.now()), changed }, () =>
      changed ? `revoked join token ${id}` : `join token ${id} was already revoked`,
    );
  });
}
