import { ago, el } from './dom.js';
import type { NodeRow, Snapshot, WorkloadRow } from './types.js';

/** Replaces a table body's rows (a refresh redraws the whole table: a few dozen rows at most). */
function fill(table: HTMLTableElement, rows: HTMLTableRowElement[]): void {
  const body = table.tBodies[0] ?? table.createTBody();
  body.replaceChildren(...rows);
}

function cell(text: string, className = ''): HTMLTableCellElement {
  return el('td', className === '' ? {} : { class: className }, text);
}

export function renderNodes(table: HTMLTableElement, nodes: NodeRow[]): void {
  fill(
    table,
    nodes.map((n) =>
      el(
        'tr',
        { 'data-node': n.nodeId, class: n.self ? 'self' : '' },
        cell(n.self ? `${n.nodeId} (this agent)` : n.nodeId, 'node-id'),
        cell(n.liveness, `liveness ${n.liveness}`),
        cell(n.swim === null ? '–' : `${n.swim.state} #${n.swim.incarnation}`, n.swim?.state ?? 'unknown'),
        cell(ago(n.lastSeenAgoMs)),
        cell(String(n.capacity.cpus)),
        cell(`${n.capacity.memoryMb} MB`),
        cell(n.role),
        cell(n.draining ? `draining (${n.drain?.by ?? '?'})` : '–', n.draining ? 'draining' : ''),
        cell(n.revoked === null ? '–' : `revoked ${n.revoked.reason}`.trim(), n.revoked ? 'revoked' : ''),
        cell(n.overlayIp),
      ),
    ),
  );
}

export function renderWorkloads(table: HTMLTableElement, workloads: WorkloadRow[], nodes: NodeRow[]): void {
  const ipOf = new Map(nodes.map((n) => [n.nodeId, n.overlayIp]));
  if (workloads.length === 0) {
    fill(table, [el('tr', {}, el('td', { colspan: '7', class: 'unknown' }, 'no workloads'))]);
    return;
  }
  fill(
    table,
    workloads.map((w) =>
      el(
        'tr',
        { 'data-workload': w.name, 'data-holder': w.holder ?? '', 'data-phase': w.phase },
        cell(w.name, 'name'),
        cell(w.holder ?? '–', 'holder'),
        cell(w.phase, `phase ${w.phase}`),
        cell(w.epoch === null ? '–' : String(w.epoch), 'epoch'),
        cell(String(w.restarts)),
        cell(w.reason ?? '', 'reason'),
        // Services listen on their holder's overlay address (docs/services.md).
        cell(w.holder === null ? '–' : (ipOf.get(w.holder) ?? '?'), 'address'),
      ),
    ),
  );
}

/**
 * Per node and document: does its latest digest equal this agent's? Peers'
 * digests come from their heartbeats and SWIM probes (/v1/nodes), the
 * verdict and "heard" age from /v1/status convergence.
 */
export function renderConvergence(table: HTMLTableElement, summary: HTMLElement, snap: Snapshot): void {
  const ours = snap.status.digests;
  const docs = Object.keys(ours).sort();
  const estimate = snap.status.convergence;
  const heard = new Map((estimate?.peers ?? []).map((p) => [p.nodeId, p]));
  const behind = (estimate?.peers ?? []).filter((p) => !p.inSync);
  const lag = estimate?.lagMs ?? 0;
  summary.textContent =
    estimate === null
      ? 'no convergence estimate on this agent'
      : behind.length === 0
        ? 'every node heard from recently holds this agent’s documents'
        : `${behind.map((p) => `${p.nodeId} (${p.differing.join(', ')})`).join(', ')} not yet equal` +
          (lag >= 1000 ? ` for ${Math.round(lag / 100) / 10} s` : '');
  // A difference of a moment is gossip at work; one that lasts is worth a look.
  summary.className = behind.length === 0 ? 'in-sync' : lag < 5000 ? 'pending' : 'differs';
  const head = table.tHead ?? table.createTHead();
  head.replaceChildren(
    el('tr', {}, el('th', {}, 'node'), ...docs.map((d) => el('th', {}, d)), el('th', {}, 'heard')),
  );
  fill(
    table,
    snap.nodes.map((n) => {
      const peer = heard.get(n.nodeId);
      return el(
        'tr',
        { 'data-convergence': n.nodeId },
        cell(n.nodeId),
        ...docs.map((doc) => {
          const theirs = n.digests?.[doc as keyof typeof ours];
          if (theirs === undefined) return cell('?', 'unknown');
          return theirs === ours[doc as keyof typeof ours]
            ? cell('✓ same', 'in-sync')
            : cell('✗ differs', 'differs');
        }),
        cell(n.self ? 'self' : peer === undefined ? 'not recently' : ago(peer.heardAgoMs)),
      );
    }),
  );
}
