import { type Command, InvalidArgumentError } from 'commander';
import type { NodeRow, OwnershipHealth, WorkloadRow } from '../../agent/api/views.js';
import type { AgentStatus } from '../../agent/node-agent.js';
import type { ConvergenceEstimate } from '../../agent/peer-digests.js';
import type { ConnectionFlags } from '../api-client.js';
import { type CliContext, type JsonFlag, withConnection, withJson } from '../context.js';
import { ago, duration, shortDigest, shortDigests, table } from '../format.js';

export type StatusResponse = AgentStatus & {
  now: number;
  convergence: ConvergenceEstimate | null;
  /** Absent from agents older than this CLI. */
  ownership?: OwnershipHealth;
};

type Flags = JsonFlag & ConnectionFlags;

/** Whether this agent's documents agree with its peers', in words (`silo status`, `silo top`). */
function convergenceText(c: ConvergenceEstimate | null): string {
  if (c === null) return 'unknown';
  return c.converged ? 'converged' : `differs from peers for ${duration(c.lagMs)}`;
}

export function renderStatus(status: StatusResponse): string {
  const convergence = convergenceText(status.convergence);
  const lines = [
    `node         ${status.nodeId} (org ${status.org})`,
    ...(status.revoked
      ? [
          `REVOKED      at ${new Date(status.revoked.revokedAt).toISOString()}${
            status.revoked.reason.length > 0 ? ` (${status.revoked.reason})` : ''
          }: this node belongs to no org now; it takes no writes and no member talks to it`,
        ]
      : []),
    `peer id      ${status.peerId}`,
    `up since     ${status.startedAt === null ? '-' : new Date(status.startedAt).toISOString()}`,
    `listening    ${status.addrs.join(' ') || '-'}`,
    `connections  ${status.peers}`,
    `digests      ${Object.entries(status.digests)
      .map(([doc, d]) => `${doc}=${d}`)
      .join(' ')}`,
    `convergence  ${convergence}`,
    ...ownershipLines(status.ownership),
  ];
  if (status.members.length > 0) {
    lines.push(
      '',
      table(
        ['MEMBER', 'LIVENESS', 'LAST HEARD', 'IN SYNC'],
        status.members.map((m) => {
          const peer = status.convergence?.peers.find((p) => p.nodeId === m.nodeId);
          return [
            m.nodeId,
            m.state,
            ago(status.now - m.lastSeenAt),
            peer === undefined ? '-' : peer.inSync ? 'yes' : `no (${peer.differing.join(',')})`,
          ];
        }),
      ),
    );
  }
  return lines.join('\n');
}

/**
 * Whether exclusive workloads can start and renew here: converged documents say nothing about that (two of three
 * witnesses down leaves the documents converged and every exclusive workload fenced).
 */
function ownershipLines(ownership: OwnershipHealth | undefined): string[] {
  if (ownership === undefined) return [];
  const lines: string[] = [];
  if (ownership.liveness !== null) lines.push(`liveness     ${ownership.liveness}`);
  const w = ownership.witnesses;
  lines.push(
    w === null
      ? 'witnesses    none configured: exclusive workloads cannot start'
      : `witnesses    v${w.version}: ${w.alive} of ${w.total} alive, quorum ${w.quorum}: ${
          w.hasQuorum ? 'ok' : 'NO QUORUM, exclusive workloads cannot start or renew their leases'
        }`,
  );
  const quietMs = ownership.witnessQuietMs ?? 0;
  if (quietMs > 0) {
    lines.push(
      `witness      quiet ${Math.ceil(quietMs / 1000)} s more: restarted on an existing store, it grants no lease until every lease it may have granted before has ended`,
    );
  }
  const l = ownership.leases;
  if (l !== null && l.wanted > 0) {
    lines.push(
      `leases       ${l.held} of ${l.wanted} held${l.notHeld.length > 0 ? `; not held: ${l.notHeld.join(', ')}` : ''}`,
    );
  }
  return lines;
}

export function renderNodes(nodes: NodeRow[]): string {
  if (nodes.length === 0) return 'no enrolled nodes';
  // SWIM's view (docs/membership.md) beside the heartbeat detector's, when the agent runs it.
  const swim = nodes.some((n) => n.swim !== null && n.swim !== undefined);
  const header = [
    'NODE',
    'LIVENESS',
    'OVERLAY IP',
    'CPUS',
    'MEM MB',
    'DRAINING',
    'REVOKED',
    'LAST HEARD',
    'DIGESTS',
  ];
  if (swim) header.splice(2, 0, 'SWIM');
  // Only a cluster with clients (docs/security.md, "Clients") gets the column; agents before roles send none.
  const roles = nodes.some((n) => n.role === 'client');
  if (roles) header.splice(1, 0, 'ROLE');
  return table(
    header,
    nodes.map((n) => [
      n.self ? `${n.nodeId}*` : n.nodeId,
      ...(roles ? [n.role ?? 'node'] : []),
      n.liveness,
      ...(swim ? [n.swim ? n.swim.state : '-'] : []),
      n.overlayIp,
      String(n.capacity.cpus),
      String(n.capacity.memoryMb),
      n.draining ? 'yes' : 'no',
      n.revoked ? 'yes' : 'no',
      ago(n.lastSeenAgoMs),
      shortDigests(n.digests),
    ]),
  );
}

export function renderWorkloads(workloads: WorkloadRow[]): string {
  if (workloads.length === 0) return 'no workloads';
  return table(
    ['NAME', 'REV', 'PHASE', 'HOLDER', 'EPOCH', 'ADDRESS', 'RESTARTS', 'IMAGE', 'REASON'],
    workloads.map((w) => [
      w.name,
      String(w.spec.revision),
      w.phase,
      w.holder ?? '-',
      w.epoch === null ? '-' : String(w.epoch),
      w.address ?? '-',
      String(w.restarts),
      `${w.spec.image}@${shortDigest(w.spec.imageDigest)}`,
      w.reason ?? '',
    ]),
  );
}

function renderWorkload(w: WorkloadRow): string {
  const s = w.spec;
  const lines = [
    `name        ${w.name} (revision ${s.revision})`,
    `phase       ${w.phase}${w.holder ? ` on ${w.holder}` : ''}${w.reason ? ` (${w.reason})` : ''}`,
    // Older agents send no placement.
    ...(w.placement ? [`placement   ${w.placement}`] : []),
    ...(w.address ? [`address     ${w.address} (${w.dnsName ?? '-'})`] : []),
    `image       ${s.image} ${s.imageDigest}`,
    `command     ${[s.command, ...s.args].join(' ')}`,
    `resources   ${s.cpus} cpu, ${s.memoryMb} MiB, scratch ${s.scratchMb} MiB ${s.scratchClass}`,
    `restart     ${s.restart}, restarts ${w.restarts}`,
  ];
  if (w.epoch !== null) lines.push(`epoch       ${w.epoch} (the holder's lease ballot)`);
  if (w.lease !== null) {
    const l = w.lease;
    lines.push(
      `lease here  ballot ${l.ballot}, ${l.mayRun ? 'held' : 'NOT held'}: granted by ${l.grantedBy.join(', ') || 'none'} (${l.quorum} of configuration v${l.configVersion} needed)`,
    );
    for (const missing of l.missing) lines.push(`            missing ${missing}`);
  }
  const statuses = Object.entries(w.statuses);
  if (statuses.length > 0) {
    lines.push(
      '',
      table(
        ['NODE', 'PHASE', 'REV', 'RESTARTS', 'SINCE', 'SANDBOX'],
        statuses.map(([nodeId, st]) => [
          nodeId,
          st.phase,
          String(st.revision),
          String(st.restarts),
          new Date(st.since).toISOString(),
          st.sandbox ?? '-',
        ]),
      ),
    );
  }
  return lines.join('\n');
}

/** One frame of `silo top`: this agent's status head, then every node and every workload as it sees them. */
export function renderTop(status: StatusResponse, nodes: NodeRow[], workloads: WorkloadRow[]): string {
  const convergence = convergenceText(status.convergence);
  return [
    `silo top: ${status.nodeId} (org ${status.org}) at ${new Date(status.now).toISOString().slice(11, 19)}, ${status.peers} connections, documents ${convergence}`,
    ...ownershipLines(status.ownership),
    '',
    renderNodes(nodes),
    '',
    renderWorkloads(workloads),
  ].join('\n');
}

interface TopFlags extends ConnectionFlags {
  interval: number;
  once?: boolean;
}

function refreshSeconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0.2 || n > 3600)
    throw new InvalidArgumentError('expected seconds between 0.2 and 3600');
  return n;
}

export function registerQueryCommands(program: Command, ctx: CliContext): void {
  withConnection(
    withJson(program.command('status').description("this agent's status and convergence")),
  ).action(async (flags: Flags) => {
    const status = await (await ctx.client(flags)).get<StatusResponse>('/v1/status');
    ctx.print(flags, status, () => renderStatus(status));
  });

  withConnection(
    withJson(program.command('nodes').description('enrolled nodes with liveness, drain and revocation')),
  ).action(async (flags: Flags) => {
    const { nodes } = await (await ctx.client(flags)).get<{ nodes: NodeRow[] }>('/v1/nodes');
    ctx.print(flags, { nodes }, () => renderNodes(nodes));
  });

  withConnection(
    withJson(
      program
        .command('workloads')
        .description('services with their holder and phase (one service in detail with a name)')
        .argument('[name]', 'show this workload in detail'),
    ),
  ).action(async (name: string | undefined, flags: Flags) => {
    const client = await ctx.client(flags);
    if (name !== undefined) {
      const row = await client.get<WorkloadRow>(`/v1/workloads/${encodeURIComponent(name)}`);
      ctx.print(flags, row, () => renderWorkload(row));
      return;
    }
    const { workloads } = await client.get<{ workloads: WorkloadRow[] }>('/v1/workloads');
    ctx.print(flags, { workloads }, () => renderWorkloads(workloads));
  });
  registerTop(program, ctx);
}

/** `silo top`: renderTop every --interval seconds until Ctrl-C (or once). */
function registerTop(program: Command, ctx: CliContext): void {
  withConnection(
    program
      .command('top')
      .description(
        'a live view of the cluster as this agent sees it: nodes, workloads, ownership (Ctrl-C stops)',
      )
      .option('--interval <seconds>', 'refresh period', refreshSeconds, 1)
      .option('--once', 'print one frame and exit'),
  ).action(async (flags: TopFlags) => {
    const client = await ctx.client(flags);
    const frame = async (): Promise<string> => {
      const [status, { nodes }, { workloads }] = await Promise.all([
        client.get<StatusResponse>('/v1/status'),
        client.get<{ nodes: NodeRow[] }>('/v1/nodes'),
        client.get<{ workloads: WorkloadRow[] }>('/v1/workloads'),
      ]);
      return renderTop(status, nodes, workloads);
    };
    if (flags.once) {
      ctx.io.out(`${await frame()}\n`);
      return;
    }
    // Until Ctrl-C: on a terminal each frame replaces the last; piped, frames follow each other.
    let stopped = false;
    const stop = (): void => {
      stopped = true;
    };
    process.once('SIGINT', stop);
    try {
      while (!stopped) {
        let text: string;
        try {
          text = await frame();
        } catch (err) {
          // Like top, keep trying: the agent may be restarting.
          text = `silo top: ${(err as Error).message}; retrying every ${flags.interval} s`;
        }
        ctx.io.out(ctx.io.isTTY ? `\x1b[H\x1b[2J${text}\n` : `${text}\n\n`);
        const wake = Date.now() + flags.interval * 1000;
        while (!stopped && Date.now() < wake) await new Promise((resolve) => setTimeout(resolve, 100));
      }
    } finally {
      process.off('SIGINT', stop);
    }
  });
}
