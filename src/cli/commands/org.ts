import { join } from 'node:path';
import type { Command } from 'commander';
import { createOrg, ORG_FILES, type OrgInfo, saveOrg } from '../../identity/org.js';
import { loadScratchSecrets } from '../../identity/org-scratch.js';
import { type CliContext, type JsonFlag, withJson } from '../context.js';
import { inputError } from '../errors.js';

export const DEFAULT_OVERLAY_CIDR = '10.42.0.0/16';

export interface InitOrgOptions {
  dir: string;
  name: string;
  cidr: string;
  pnet?: boolean;
  force?: boolean;
  serviceRange?: string;
  dnsSuffix?: string;
}

export interface InitOrgResult {
  dir: string;
  org: OrgInfo;
  pnetKey: string | null;
}

/** Creates the org's CA key pair (and optionally a private-network key) in `dir`. */
export async function initOrg(options: InitOrgOptions): Promise<InitOrgResult> {
  let org: ReturnType<typeof createOrg>;
  try {
    org = createOrg({
      name: options.name,
      overlayCidr: options.cidr,
      privateNetwork: options.pnet === true,
      ...(options.serviceRange !== undefined ? { serviceRange: options.serviceRange } : {}),
      ...(options.dnsSuffix !== undefined ? { dnsSuffix: options.dnsSuffix } : {}),
    });
  } catch (err) {
    throw inputError((err as Error).message);
  }
  await saveOrg(options.dir, org, { overwrite: options.force === true });
  // Scratch key generation 1 (kept with --force: scratch written under it must stay readable).
  await loadScratchSecrets(options.dir, { create: true });
  return {
    dir: options.dir,
    org: org.info,
    pnetKey: org.pnetKey ? join(options.dir, ORG_FILES.pnetKey) : null,
  };
}

export function registerOrgCommands(program: Command, ctx: CliContext): void {
  const org = program.command('org').description('manage the organisation (its CA)');
  withJson(
    org
      .command('init')
      .description('create an org: CA key pair, overlay CIDR, optional private-network key')
      .requiredOption('--dir <orgdir>', 'directory for org.json and ca.key (keep it off the fleet)')
      .requiredOption('--name <org>', 'org name: lowercase letters, digits, "-"')
      .option('--cidr <cidr>', 'overlay network of the org', DEFAULT_OVERLAY_CIDR)
      .option(
        '--service-range <cidr>',
        'block of the overlay CIDR for service addresses, no node gets one in it (default: its upper half)',
      )
      .option('--dns-suffix <suffix>', 'service names are <workload>.<org>.<suffix>', 'silo')
      .option('--pnet', 'also create a libp2p private-network key (swarm.key)')
      .option('--force', 'overwrite an existing org in --dir (orphans every enrolled node)'),
  ).action(
    async (
      flags: {
        dir: string;
        name: string;
        cidr: string;
        serviceRange?: string;
        dnsSuffix: string;
        pnet?: boolean;
        force?: boolean;
      } & JsonFlag,
    ) => {
      // The default suffix is not written down: bundles of orgs with the defaults stay what older agents accept.
      const { dnsSuffix, ...rest } = flags;
      const result = await initOrg({ ...rest, ...(dnsSuffix !== 'silo' ? { dnsSuffix } : {}) });
      ctx.print(flags, result, () =>
        [
          `created org "${result.org.name}" in ${result.dir}`,
          `  overlay CIDR   ${result.org.overlayCidr}`,
          `  services       ${result.org.serviceRange ?? 'upper half of the overlay CIDR'}, names *.${result.org.name}.${result.org.dnsSuffix ?? 'silo'}`,
          `  CA public key  ${result.org.caPublicKey}`,
          ...(result.pnetKey
            ? [`  pnet key       ${result.pnetKey} (copy it into every node's identity dir)`]
            : []),
          `keep ${join(result.dir, ORG_FILES.caKey)} secret: it enrolls nodes and signs images`,
        ].join('\n'),
      );
    },
  );
}
