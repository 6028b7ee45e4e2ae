import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import type { NodeRow, WorkloadRow } from '../../src/agent/api/views.js';
import type { ApiClient } from '../../src/cli/api-client.js';
import { tempDir, waitFor } from '../cli/helpers.js';
import { requireOrSkip } from '../overlay/tools.js';
import {
  addNode,
  type ClusterNode,
  GOSSIP_PORT,
  ip,
  Lab,
  nodeRows,
  prepareNode,
  type Status,
  seedOf,
  siloJson,
  spawnAgent,
  status,
  UNDERLAY,
  WG_PORT,
  wgDump,
} from './netns-lab.js';

/**
 * Issue 4 end to end: three `silo agent` processes, each in its own network
 * namespace, joined by veth pairs to a bridge in a fourth ("hub") namespace
 * (underlay 10.231.30.0/24, only inside namespaces this test makes). Every
 * agent brings up its own WireGuard interface (overlay 10.231.40.0/24) and
 * gossips only over it. Enrollment runs exactly as an operator would do it:
 * `silo org init`, `silo node init --endpoint wg://...`, `silo ca sign`
 * (node 1 without seeds; nodes 2 and 3 with node 1 as seed and registered
 * with node 1 through `--socket`), `silo ca revoke`.
 *
 * An intruder with a self-made org of the same name (different CA), that
 * knows every node's overlay multiaddr and has underlay routes to the overlay
 * IPs (Linux accepts packets for any local address on any interface, so its
 * TCP connections do reach the agents' libp2p listeners): only the
 * enrollment gate stands in its way, and the test checks that it holds.
 *
 * A second test: an overlay agent whose gossip cannot listen exits with an
 * error and takes its WireGuard interface and wireguard-go down with it.
 *
 * Needs root, iproute2, wireguard-tools and wireguard-go (the kernel's
 * WireGuard is used when present). Skips with a reason otherwise; fails
 * under CI=true.
 */

const OVERLAY_CIDR = '10.231.40.0/24';
const OVERLAY_NET = /^\/ip4\/10\.231\.40\.\d{1,3}\/tcp\/\d+/;
const ORG = 'e2e';
const INTRUDER_INDEX = 9;
const INTRUDER_OVERLAY_IP = '10.231.40.99';
/** An image no node has: the specs are replicated data here (a reconciler can only report the image missing). */
const IMAGE_DIGEST = `sha256:${createHash('sha256').update('silo e2e image').digest('hex')}`;

async function workload(client: ApiClient, name: string): Promise<WorkloadRow | null> {
  const { workloads } = await client.request<{ workloads: WorkloadRow[] }>('GET', '/v1/workloads', {
    timeoutMs: 10_000,
  });
  return workloads.find((w) => w.name === name) ?? null;
}

/** `silo_connections_denied_total{stage}` of one agent. */
async function deniedAt(node: ClusterNode, stage: string): Promise<number> {
  const text = await node.agent.client.request<string>('GET', '/v1/metrics', { timeoutMs: 10_000 });
  const line = text.split('\n').find((l) => l.startsWith(`silo_connections_denied_total{stage="${stage}"}`));
  return line === undefined ? 0 : Number(line.split(' ').at(-1));
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function manifest(name: string): string {
  return [
    `name = "${name}"`,
    'image = "e2e-image"',
    'command = "bin/e2e"',
    'scratch_mb = 1',
    'network = "none"',
    'cpus = 0.1',
    'memory_mb = 16',
    '',
  ].join('\n');
}

async function applyWorkload(lab: Lab, name: string, orgDir: string, socket: string): Promise<void> {
  const file = join(lab.dir, `${name}.toml`);
  await writeFile(file, manifest(name));
  await siloJson(['apply', file, '--org', orgDir, '--digest', IMAGE_DIGEST, '--socket', socket]);
}

/** Every connection of `node` runs to the overlay IP that `peers` enrolled for the connection's peer id. */
function assertOverlayOnly(node: ClusterNode, s: Status, peers: ClusterNode[]): void {
  for (const connection of s.connections) {
    assert.match(
      connection.remoteAddr,
      OVERLAY_NET,
      `${node.id}: connection not on the overlay: ${JSON.stringify(connection)}`,
    );
    const peer = peers.find((p) => p.peerId === connection.peerId);
    assert.ok(peer, `${node.id}: connected to unknown peer ${connection.peerId}`);
    assert.ok(
      connection.remoteAddr.startsWith(`/ip4/${peer.overlayIp}/tcp/`),
      `${node.id}: ${peer.id}'s connection comes from ${connection.remoteAddr}, not its overlay IP ${peer.overlayIp}`,
    );
  }
}

test('three agents in network namespaces gossip only over their WireGuard overlay; revocation and an intruder', {
  timeout: 480_000,
}, async (t) => {
  if (!(await requireOrSkip(t, { root: true, tools: ['ip', 'wg', 'wireguard-go'] }))) return;
  const { dir } = await tempDir('silo-e2e-');
  const lab = new Lab(dir, 'a', ORG);
  t.after(() => lab.cleanUp(t));
  const began = Date.now();
  const step = async <T>(name: string, action: () => Promise<T>): Promise<T> => {
    const start = Date.now();
    try {
      const value = await action();
      t.diagnostic(`${name}: ${Date.now() - start} ms`);
      return value;
    } catch (err) {
      lab.dumpLogs(t);
      throw new Error(`step "${name}" failed: ${(err as Error).message}`, { cause: err });
    }
  };

  const orgDir = join(dir, 'org');
  const [n1, n2, n3] = await step('org and three enrolled agents', async () => {
    await lab.createHub();
    await siloJson(['org', 'init', '--dir', orgDir, '--name', ORG, '--cidr', OVERLAY_CIDR]);
    const first = await addNode({ lab, id: 'node-1', index: 1, orgDir, seeds: [] });
    const seed = seedOf(first);
    const own = await status(first);
    assert.deepEqual(own.addrs, [seed], 'libp2p listens on the overlay address only');
    const second = await addNode({
      lab,
      id: 'node-2',
      index: 2,
      orgDir,
      seeds: [seed],
      registerWith: first.socket,
    });
    const third = await addNode({
      lab,
      id: 'node-3',
      index: 3,
      orgDir,
      seeds: [seed],
      registerWith: first.socket,
    });
    return [first, second, third] as const;
  });
  const members = [n1, n2, n3];

  await step('full mesh: every agent connected to and hearing the other two', async () => {
    for (const node of members) {
      await waitFor(
        `${node.id} to be connected to two peers that are alive`,
        async () => {
          const s = await status(node);
          const rows = await nodeRows(node);
          const alive = rows.filter((r) => !r.self && r.liveness === 'alive').map((r) => r.nodeId);
          return s.peers === 2 && alive.length === 2;
        },
        90_000,
      );
    }
  });

  await step('gossip runs only over the overlay', async () => {
    for (const node of members) {
      const s = await status(node);
      assert.equal(s.connections.length >= 2, true, `${node.id} has connections`);
      assertOverlayOnly(node, s, members);
      assert.deepEqual(s.addrs, [seedOf(node)], `${node.id} listens on its overlay address only`);
    }
  });

  await step('wg show lists the other two as peers in every namespace', async () => {
    for (const node of members) {
      const others = members.filter((m) => m !== node);
      const dump = await wgDump(node);
      assert.equal(dump.interface.publicKey, node.wgPublicKey);
      assert.equal(dump.interface.listenPort, WG_PORT);
      const peers = [...dump.peers].sort((a, b) => a.publicKey.localeCompare(b.publicKey));
      const expected = [...others].sort((a, b) => a.wgPublicKey.localeCompare(b.wgPublicKey));
      assert.deepEqual(
        peers.map((p) => ({ key: p.publicKey, allowedIps: p.allowedIps, endpoint: p.endpoint })),
        expected.map((o) => ({
          key: o.wgPublicKey,
          allowedIps: [`${o.overlayIp}/32`],
          endpoint: `${UNDERLAY(o.index)}:${WG_PORT}`,
        })),
        `${node.id}'s WireGuard peers`,
      );
      for (const peer of peers)
        assert.ok(peer.latestHandshake > 0, `${node.id} has shaken hands with ${peer.publicKey}`);
    }
    // Userspace WireGuard (a tun device) must show up in the process scan the cleanup relies on.
    const running = await lab.leftoverWireguardGo();
    for (const node of members) {
      const link = (await ip(['-d', 'link', 'show', 'dev', node.wgInterface], node.ns)).stdout;
      const userspace = /\btun\b/.test(link);
      t.diagnostic(`${node.id}: ${userspace ? 'wireguard-go' : 'kernel WireGuard'}`);
      if (userspace) {
        assert.ok(
          running.some((line) => line.endsWith(` ${node.wgInterface}`)),
          `wireguard-go of ${node.wgInterface} found in ${JSON.stringify(running)}`,
        );
      }
    }
  });

  await step('a write on node 1 reaches nodes 2 and 3', async () => {
    await applyWorkload(lab, 'hello', orgDir, n1.socket);
    for (const node of [n2, n3]) {
      const row = await waitFor(`"hello" on ${node.id}`, () => workload(node.agent.client, 'hello'), 30_000);
      assert.equal(row.spec.imageDigest, IMAGE_DIGEST);
    }
  });

  await step(
    'an unenrolled intruder that knows every address can neither connect nor inject a write',
    async () => {
      const rogueOrg = join(dir, 'rogue-org');
      // Same org name and CIDR, its own CA: everything looks right but the signature.
      await siloJson(['org', 'init', '--dir', rogueOrg, '--name', ORG, '--cidr', OVERLAY_CIDR]);
      // Its SYNs come from its underlay address: the overlay-source check refuses them
      // before noise even runs (stage inbound-address); the enrollment gate would be next.
      const refusals = async (m: ClusterNode) =>
        (await deniedAt(m, 'inbound-address')) + (await deniedAt(m, 'inbound-encrypted'));
      const deniedBefore = await Promise.all(members.map(refusals));
      const intruder = await addNode({
        lab,
        id: 'intruder',
        index: INTRUDER_INDEX,
        orgDir: rogueOrg,
        // Signed by its own CA, so its own gate lets it dial every enrolled node.
        seeds: members.map(seedOf),
        overlay: false,
        overlayIp: INTRUDER_OVERLAY_IP,
        // Every overlay IP routed over the underlay: its SYNs reach the agents' listeners directly.
        routes: members.map((m) => ({ to: `${m.overlayIp}/32`, via: UNDERLAY(m.index) })),
      });

      // Watch both sides while it tries. The enrolled agents must never hold a connection to it.
      // Its own libp2p may show one for a moment: noise carries the muxer choice, so the dialer
      // counts a connection as open when the handshake ends, before the gate on the far side
      // closes it. Those are counted and reported; that nothing flows through them is checked below.
      let watching = true;
      const sightings: string[] = [];
      let transientOnIntruder = 0;
      const watcher = (async () => {
        while (watching) {
          if ((await status(intruder)).connections.length > 0) transientOnIntruder++;
          for (const m of members) {
            const s = await status(m);
            if (s.connections.some((c) => c.peerId === intruder.peerId))
              sightings.push(`${m.id} holds a connection to it`);
          }
          await sleep(100);
        }
      })();
      try {
        // Proof that its dials reach libp2p: each agent's gate refused it.
        for (const [i, m] of members.entries()) {
          await waitFor(
            `${m.id}'s gate to refuse the intruder`,
            async () => (await refusals(m)) > deniedBefore[i]!,
            30_000,
          );
        }
        // It writes a workload through its own API (signed by its own CA, so its agent accepts it) ...
        await applyWorkload(lab, 'intruder-write', rogueOrg, intruder.socket);
        assert.ok(
          await workload(intruder.agent.client, 'intruder-write'),
          'the intruder holds its own write',
        );
        // ... while a legitimate write after it spreads (a barrier), and a few heartbeats and syncs pass.
        await applyWorkload(lab, 'barrier', orgDir, n1.socket);
        for (const m of [n2, n3])
          await waitFor(`"barrier" on ${m.id}`, () => workload(m.agent.client, 'barrier'), 30_000);
        await sleep(3000);
      } finally {
        watching = false;
        await watcher;
      }
      assert.deepEqual(sightings, [], 'no enrolled agent ever held a connection to the intruder');
      t.diagnostic(`intruder: ${transientOnIntruder} samples showed a connection closing under it`);
      // Nothing flowed to it either: no record, no workload, no heartbeat of the org reached it.
      const intruderNodes = await intruder.agent.client.request<{ nodes: NodeRow[] }>('GET', '/v1/nodes');
      assert.deepEqual(
        intruderNodes.nodes.map((r) => r.nodeId),
        ['intruder'],
      );
      for (const name of ['hello', 'barrier']) {
        assert.equal(
          await workload(intruder.agent.client, name),
          null,
          `"${name}" did not reach the intruder`,
        );
      }
      assert.deepEqual((await status(intruder)).members, []);
      for (const m of members) {
        assert.equal(
          await workload(m.agent.client, 'intruder-write'),
          null,
          `the intruder's write is not on ${m.id}`,
        );
        const rows = await nodeRows(m);
        assert.ok(!rows.some((r) => r.nodeId === 'intruder'), `${m.id} does not list the intruder`);
        assertOverlayOnly(m, await status(m), members);
      }
    },
  );

  await step('revoking node 3 removes it from WireGuard and closes its connections', async () => {
    await siloJson(['ca', 'revoke', '--org', orgDir, 'node-3', '--reason', 'e2e', '--socket', n1.socket]);
    for (const node of [n1, n2]) {
      await waitFor(
        `${node.id} to drop node 3 (WireGuard peer and connections)`,
        async () => {
          const dump = await wgDump(node);
          const s = await status(node);
          return (
            !dump.peers.some((p) => p.publicKey === n3.wgPublicKey) &&
            !s.connections.some((c) => c.peerId === n3.peerId)
          );
        },
        30_000,
      );
      const rows = await nodeRows(node);
      assert.ok(rows.find((r) => r.nodeId === 'node-3')?.revoked, `${node.id} shows node 3 revoked`);
    }
    await waitFor(
      'node 3 to have no connection left',
      async () => (await status(n3)).connections.length === 0,
      30_000,
    );
    // Node 3 was told (the revocation handed over before the close, or gossiped first).
    await waitFor(
      'node 3 to know it was revoked',
      async () => (await status(n3)).revoked?.reason === 'e2e',
      30_000,
    );
    // The survivors still form the overlay.
    const dump1 = await wgDump(n1);
    assert.deepEqual(
      dump1.peers.map((p) => p.publicKey),
      [n2.wgPublicKey],
    );
    assert.deepEqual(
      (await wgDump(n2)).peers.map((p) => p.publicKey),
      [n1.wgPublicKey],
    );
  });

  await step('after the revocation, writes reach node 2 but no longer node 3', async () => {
    await applyWorkload(lab, 'after-revoke', orgDir, n1.socket);
    await waitFor('"after-revoke" on node-2', () => workload(n2.agent.client, 'after-revoke'), 30_000);
    await sleep(3000);
    assert.equal(
      await workload(n3.agent.client, 'after-revoke'),
      null,
      'the revoked node 3 gets no new writes',
    );
    for (const node of [n1, n2]) {
      const s = await status(node);
      assert.equal(s.peers, 1, `${node.id} is connected to the other survivor only`);
      assertOverlayOnly(node, s, [n1, n2]);
    }
  });

  t.diagnostic(`total ${Date.now() - began} ms`);
});

test('an overlay agent that cannot start gossip exits with an error and takes its WireGuard interface down', {
  timeout: 180_000,
}, async (t) => {
  if (!(await requireOrSkip(t, { root: true, tools: ['ip', 'wg', 'wireguard-go'] }))) return;
  const { dir } = await tempDir('silo-e2e-');
  const lab = new Lab(dir, 'b', ORG);
  t.after(() => lab.cleanUp(t));
  await lab.createHub();
  const orgDir = join(dir, 'org');
  await siloJson(['org', 'init', '--dir', orgDir, '--name', ORG, '--cidr', OVERLAY_CIDR]);
  const node = await prepareNode({ lab, id: 'node-1', index: 1, orgDir, seeds: [] });

  // Something else holds the gossip port on every address of the namespace.
  const blocker = spawn(
    'ip',
    [
      'netns',
      'exec',
      node.ns,
      process.execPath,
      '-e',
      `require('node:net').createServer().listen(${GOSSIP_PORT}, '0.0.0.0', () => console.log('listening'))`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  lab.processes.push(blocker);
  await new Promise<void>((resolve, reject) => {
    blocker.stdout?.on('data', (chunk: Buffer) => {
      if (chunk.toString().includes('listening')) resolve();
    });
    blocker.once('exit', (code) => reject(new Error(`the port blocker exited with ${code}`)));
  });

  const agent = spawnAgent(node.ns, node.configFile, node.socket);
  lab.agents.push(agent);
  lab.nodes.push({ ...node, agent });
  const timedOut = Symbol('timed out');
  let timer: NodeJS.Timeout | undefined;
  const outcome = await Promise.race([
    agent.exited,
    new Promise<typeof timedOut>((resolve) => {
      timer = setTimeout(() => resolve(timedOut), 60_000);
    }),
  ]);
  clearTimeout(timer);
  if (outcome === timedOut) lab.dumpLogs(t);
  assert.notEqual(outcome, timedOut, 'the agent exits instead of hanging with its overlay up');
  assert.notEqual(agent.exitCode(), 0);
  assert.match(agent.log(), /EADDRINUSE/);
  assert.deepEqual(await lab.leftoverWireguardGo(), [], 'no wireguard-go left running');
  await assert.rejects(
    ip(['link', 'show', 'dev', node.wgInterface], node.ns),
    'the WireGuard interface is gone',
  );
});
