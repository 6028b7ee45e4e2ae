import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, type TestContext, test } from 'node:test';
import { Registry } from 'prom-client';
import { issueEnrollment, signRevocation } from '../../src/identity/ca.js';
import { computeActiveNodes } from '../../src/identity/enrollment-verifier.js';
import {
  createNodeIdentity,
  enrollmentRequest,
  saveNodeIdentity,
  wgPrivateKeyPath,
} from '../../src/identity/node-identity.js';
import { createOrg } from '../../src/identity/org.js';
import { CommandError, ExecaRunner, spawnDaemon } from '../../src/overlay/exec.js';
import { OverlayManager, type OverlayNode } from '../../src/overlay/overlay-manager.js';
import { ServiceNetns } from '../../src/overlay/service-netns.js';
import { Wg } from '../../src/overlay/wg.js';
import type { SignedEnrollment } from '../../src/state/schemas.js';
import { silentLogger } from '../../src/util/logger.js';
import { tempDir } from '../identity/helpers.js';
import { requireOrSkip } from './tools.js';

/**
 * Two network namespaces joined by a veth pair (underlay 10.231.1.0/24, only
 * inside the namespaces), one OverlayManager in each (overlay 10.231.2.0/24),
 * enrolled through the real CA and verifier. Needs root, iproute2,
 * wireguard-tools, ping and wireguard-go (the kernel WireGuard is used instead
 * when present).
 */

const runner = new ExecaRunner();
const wg = new Wg({ runner });
const OVERLAY_CIDR = '10.231.2.0/24';
const PORT = 51820;

interface Node {
  ns: string;
  underlayIp: string;
  manager: OverlayManager;
  registry: Registry;
  record: SignedEnrollment;
}

async function wgSetCalls(node: Node): Promise<number> {
  const metric = node.registry.getSingleMetric('silo_overlay_wg_set_calls_total');
  const values = (await metric?.get())?.values ?? [];
  return values.find((v) => v.labels.interface === node.manager.interfaceName)?.value ?? 0;
}

async function ping(ns: string, ip: string, attempts: number): Promise<boolean> {
  for (let i = 0; i < attempts; i++) {
    try {
      await runner.run(['ping', '-c', '1', '-W', '1', ip], { netns: ns });
      return true;
    } catch (err) {
      if (!(err instanceof CommandError)) throw err;
    }
  }
  return false;
}

/** Ping with a given source address (the far end answers only if it accepts that source). */
async function pingFrom(ns: string, source: string, ip: string, attempts: number): Promise<boolean> {
  for (let i = 0; i < attempts; i++) {
    try {
      await runner.run(['ping', '-c', '1', '-W', '1', '-I', source, ip], { netns: ns });
      return true;
    } catch (err) {
      if (!(err instanceof CommandError)) throw err;
    }
  }
  return false;
}

/** A TCP server on 0.0.0.0:`port` that answers every connection with `tag`. */
function echoServer(tag: string, port = 7000): string {
  return `require('node:net').createServer((s) => s.end(${JSON.stringify(tag)})).listen(${port}, '0.0.0.0')`;
}

/**
 * Connects to `host`:`port` from namespace `ns` (from `localAddress` if given) and returns what the
 * server says (retrying while it fails), null when it never answers; a name is resolved with the DNS
 * server `nameserver`.
 */
async function tcpAsk(
  ns: string,
  host: string,
  attempts: number,
  nameserver?: string,
  port = 7000,
  localAddress?: string,
): Promise<string | null> {
  const lookup =
    nameserver === undefined
      ? ''
      : `lookup: (name, opts, cb) => { const r = new (require('node:dns').Resolver)(); r.setServers([${JSON.stringify(nameserver)}]);
  r.resolve4(name, (err, a) => (err ? cb(err) : opts.all ? cb(null, [{ address: a[0], family: 4 }]) : cb(null, a[0], 4))); },`;
  const local = localAddress === undefined ? '' : `localAddress: ${JSON.stringify(localAddress)},`;
  const client = `const s = require('node:net').connect({ host: ${JSON.stringify(host)}, port: ${port}, timeout: 1000, ${local} ${lookup} });
let got = ''; s.on('data', (d) => { got += d; }); s.on('end', () => { process.stdout.write(got); process.exit(0); });
s.on('timeout', () => process.exit(2)); s.on('error', () => process.exit(1));`;
  for (let i = 0; i < attempts; i++) {
    try {
      return (await runner.run(['node', '-e', client], { netns: ns })).stdout;
    } catch (err) {
      if (!(err instanceof CommandError)) throw err;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
  return null;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Both test nodes as the verified active set (no revocations). */
function activeOf(a: Node, b: Node, org: ReturnType<typeof createOrg>): SignedEnrollment[] {
  return computeActiveNodes({
    caPublicKey: org.info.caPublicKey,
    records: [
      [a.record.nodeId, a.record],
      [b.record.nodeId, b.record],
    ],
    revocations: [],
  }).active;
}

async function setUp(t: TestContext): Promise<{ a: Node; b: Node; org: ReturnType<typeof createOrg> }> {
  const suffix = randomBytes(3).toString('hex');
  const cleanups: (() => Promise<unknown>)[] = [];
  // Runs even when the test fails half-way: managers first (stops wireguard-go), then namespaces.
  t.after(async () => {
    for (const cleanup of cleanups.reverse()) {
      await cleanup().catch((err: unknown) => t.diagnostic(`cleanup: ${(err as Error).message}`));
    }
  });

  const nsA = `silo-t${suffix}-a`;
  const nsB = `silo-t${suffix}-b`;
  for (const ns of [nsA, nsB]) {
    await runner.run(['ip', 'netns', 'add', ns]);
    cleanups.push(() => runner.run(['ip', 'netns', 'delete', ns]));
    await runner.run(['ip', 'link', 'set', 'lo', 'up'], { netns: ns });
  }
  await runner.run([
    'ip',
    'link',
    'add',
    'veth-a',
    'netns',
    nsA,
    'type',
    'veth',
    'peer',
    'name',
    'veth-b',
    'netns',
    nsB,
  ]);
  await runner.run(['ip', 'address', 'add', '10.231.1.1/24', 'dev', 'veth-a'], { netns: nsA });
  await runner.run(['ip', 'address', 'add', '10.231.1.2/24', 'dev', 'veth-b'], { netns: nsB });
  await runner.run(['ip', 'link', 'set', 'veth-a', 'up'], { netns: nsA });
  await runner.run(['ip', 'link', 'set', 'veth-b', 'up'], { netns: nsB });

  const org = createOrg({ name: 'nstest', overlayCidr: OVERLAY_CIDR });
  const allocated: string[] = [];
  const make = async (name: 'a' | 'b', ns: string, underlayIp: string): Promise<Node> => {
    const dir = await tempDir(t, 'silo-overlay-');
    const identity = await createNodeIdentity(`node-${name}`, { wgKeys: wg });
    await saveNodeIdentity(dir, identity);
    const request = enrollmentRequest(identity, {
      endpoints: [`wg://${underlayIp}:${PORT}`],
      capacity: { cpus: 1, memoryMb: 256, scratchMb: 0 },
    });
    const { record } = issueEnrollment(org, request, { allocatedIps: allocated });
    allocated.push(record.overlayIp);
    const registry = new Registry();
    const manager = new OverlayManager({
      // Unique across namespaces: wireguard-go's UAPI sockets are not namespaced.
      interfaceName: `swg${suffix}${name}`,
      listenPort: PORT,
      privateKeyFile: wgPrivateKeyPath(dir),
      overlayIp: record.overlayIp,
      overlayPrefix: 24,
      netns: ns,
      logger: silentLogger(),
      registry,
    });
    cleanups.push(async () => {
      const pid = manager.userspacePid;
      await manager.down();
      // Belt and braces: never leave our wireguard-go behind.
      if (pid !== undefined && processAlive(pid)) process.kill(pid, 'SIGKILL');
    });
    return { ns, underlayIp, manager, registry, record };
  };
  const a = await make('a', nsA, '10.231.1.1');
  const b = await make('b', nsB, '10.231.1.2');
  return { a, b, org };
}

describe('overlay manager in network namespaces', () => {
  test('peers two nodes, pings across the overlay, syncs idempotently and removes a revoked peer', async (t) => {
    if (!(await requireOrSkip(t, { root: true, tools: ['ip', 'wg', 'wireguard-go', 'ping'] }))) return;
    const { a, b, org } = await setUp(t);

    await a.manager.up();
    await b.manager.up();
    t.diagnostic(`WireGuard implementation: ${a.manager.implementation}`);
    assert.ok(a.manager.implementation !== null);
    assert.equal(a.manager.publicKey, a.record.wgPublicKey);

    const records: [string, SignedEnrollment][] = [
      [a.record.nodeId, a.record],
      [b.record.nodeId, b.record],
    ];
    const view = computeActiveNodes({
      caPublicKey: org.info.caPublicKey,
      records,
      revocations: [],
      overlayCidr: OVERLAY_CIDR,
    });
    assert.equal(view.active.length, 2);

    const firstA = await a.manager.sync(view.active);
    const firstB = await b.manager.sync(view.active);
    assert.deepEqual(firstA.added, [b.record.wgPublicKey]);
    assert.deepEqual(firstB.added, [a.record.wgPublicKey]);
    assert.deepEqual([...firstA.removed, ...firstA.updated, ...firstA.failed], []);

    assert.ok(await ping(a.ns, b.record.overlayIp, 20), 'a reaches b over the overlay');
    assert.ok(await ping(b.ns, a.record.overlayIp, 5), 'b reaches a over the overlay');

    const dumpA = await wg.showDump(a.manager.interfaceName, a.ns);
    assert.equal(dumpA.interface.listenPort, PORT);
    assert.equal(dumpA.peers.length, 1);
    const peerB = dumpA.peers[0]!;
    assert.equal(peerB.publicKey, b.record.wgPublicKey);
    assert.equal(peerB.endpoint, `${b.underlayIp}:${PORT}`);
    assert.deepEqual(peerB.allowedIps, [`${b.record.overlayIp}/32`]);
    assert.equal(peerB.persistentKeepalive, 25);
    assert.ok(peerB.latestHandshake > 0, 'a handshake happened');

    // Idempotent: the same nodes again run no `wg set` at all.
    const callsBefore = await wgSetCalls(a);
    const again = await a.manager.sync(view.active);
    assert.deepEqual(again, { added: [], updated: [], removed: [], failed: [], skipped: [] });
    assert.equal(await wgSetCalls(a), callsBefore);

    // A changed endpoint is an update; changing it back is another; then quiet again.
    const moved: OverlayNode[] = view.active.map((r) =>
      r.nodeId === b.record.nodeId ? { ...r, endpoints: [`wg://${b.underlayIp}:${PORT + 1}`] } : r,
    );
    assert.deepEqual((await a.manager.sync(moved)).updated, [b.record.wgPublicKey]);
    assert.equal(
      (await wg.showDump(a.manager.interfaceName, a.ns)).peers[0]?.endpoint,
      `${b.underlayIp}:${PORT + 1}`,
    );
    assert.deepEqual((await a.manager.sync(view.active)).updated, [b.record.wgPublicKey]);
    const calls = await wgSetCalls(a);
    await a.manager.sync(view.active);
    assert.equal(await wgSetCalls(a), calls);

    // Revoke b: the verifier drops it, the manager removes the peer, traffic stops.
    const revocation = signRevocation(org.caPrivateKey, {
      nodeId: b.record.nodeId,
      revokedAt: Date.now(),
      reason: 'test',
    });
    const afterRevocation = computeActiveNodes({
      caPublicKey: org.info.caPublicKey,
      records,
      revocations: [[b.record.nodeId, revocation]],
      overlayCidr: OVERLAY_CIDR,
    });
    assert.deepEqual(
      afterRevocation.active.map((r) => r.nodeId),
      [a.record.nodeId],
    );
    const removal = await a.manager.sync(afterRevocation.active);
    assert.deepEqual(removal.removed, [b.record.wgPublicKey]);
    assert.deepEqual((await wg.showDump(a.manager.interfaceName, a.ns)).peers, []);
    assert.equal(await ping(a.ns, b.record.overlayIp, 1), false, 'b is unreachable once removed');

    // down() removes the interface and stops wireguard-go.
    const pid = a.manager.userspacePid;
    await a.manager.down();
    await assert.rejects(wg.showDump(a.manager.interfaceName, a.ns), CommandError);
    if (pid !== undefined) {
      assert.equal(processAlive(pid), false, 'wireguard-go has exited');
      assert.equal(existsSync(`/var/run/wireguard/${a.manager.interfaceName}.sock`), false);
    }
    await a.manager.down(); // idempotent
  });

  test('routes a service address to its holder only, and takes it away from a former holder', async (t) => {
    if (!(await requireOrSkip(t, { root: true, tools: ['ip', 'wg', 'wireguard-go', 'ping'] }))) return;
    const { a, b, org } = await setUp(t);
    await a.manager.up();
    await b.manager.up();
    const nodes = activeOf(a, b, org);
    // b holds the service address (here on its loopback, as the service's namespace would).
    const service = '10.231.2.200';
    await runner.run(['ip', 'address', 'add', `${service}/32`, 'dev', 'lo'], { netns: b.ns });
    const holding = nodes.map((r) =>
      r.nodeId === b.record.nodeId ? { ...r, serviceIps: [`${service}/32`] } : r,
    );
    assert.deepEqual((await a.manager.sync(holding)).added, [b.record.wgPublicKey]);
    await b.manager.sync(nodes);
    const peer = (await wg.showDump(a.manager.interfaceName, a.ns)).peers[0]!;
    assert.deepEqual([...peer.allowedIps].sort(), [`${b.record.overlayIp}/32`, `${service}/32`].sort());
    assert.ok(await ping(a.ns, service, 20), 'a reaches the service address at its holder');
    assert.ok(
      await pingFrom(b.ns, service, a.record.overlayIp, 5),
      'the holder can send as the service address',
    );
    // The address moves away from b (to a node not in this test): a's entry for b loses it.
    assert.deepEqual((await a.manager.sync(nodes)).updated, [b.record.wgPublicKey]);
    assert.deepEqual((await wg.showDump(a.manager.interfaceName, a.ns)).peers[0]?.allowedIps, [
      `${b.record.overlayIp}/32`,
    ]);
    assert.equal(await ping(a.ns, service, 2), false, 'the former holder receives nothing for the address');
    assert.equal(
      await pingFrom(b.ns, service, a.record.overlayIp, 2),
      false,
      'packets from the former holder with the address as source are dropped',
    );
    assert.ok(await ping(a.ns, b.record.overlayIp, 5), 'b itself is still reachable');
  });

  test("a service's own namespace answers at its address across the overlay, and follows a move", async (t) => {
    if (!(await requireOrSkip(t, { root: true, tools: ['ip', 'wg', 'wireguard-go', 'ping', 'sysctl'] })))
      return;
    const { a, b, org } = await setUp(t);
    await a.manager.up();
    await b.manager.up();
    const nodes = activeOf(a, b, org);
    const service = '10.231.2.201';
    const netnsOf = (node: Node) =>
      new ServiceNetns({
        runner,
        // The host end goes into the node's namespace (the test process runs outside it).
        hostNetns: node.ns,
        logger: silentLogger(),
        instanceId: `t-${node.ns}`,
      });
    const onA = netnsOf(a);
    const onB = netnsOf(b);
    const servers: ReturnType<typeof spawnDaemon>[] = [];
    t.after(async () => {
      for (const server of servers) server.kill('SIGKILL');
      await onA.teardown('web').catch(() => undefined);
      await onB.teardown('web').catch(() => undefined);
    });
    const serve = (netns: ServiceNetns, tag: string) => {
      // Binds 0.0.0.0 like an unmodified service; answers with the node it runs on.
      const server = spawnDaemon(['node', '-e', echoServer(tag)], { netns: netns.names('web').netns });
      servers.push(server);
      return server;
    };

    // b holds the address: its namespace, and a's peer entry for b carries the /32.
    await onB.setup('web', service);
    const first = serve(onB, 'b');
    await a.manager.sync(
      nodes.map((r) => (r.nodeId === b.record.nodeId ? { ...r, serviceIps: [`${service}/32`] } : r)),
    );
    await b.manager.sync(nodes);
    assert.equal(
      await tcpAsk(a.ns, service, 20),
      'b',
      'a client on a reaches the service on b by its address',
    );
    assert.equal(await tcpAsk(b.ns, service, 5), 'b', 'and so does a client on the holder itself');

    // Move to a: b stops it and removes the namespace, a starts it; the routes follow.
    first.kill('SIGKILL');
    await onB.teardown('web');
    await onA.setup('web', service);
    serve(onA, 'a');
    await a.manager.sync(nodes);
    await b.manager.sync(
      nodes.map((r) => (r.nodeId === a.record.nodeId ? { ...r, serviceIps: [`${service}/32`] } : r)),
    );
    assert.equal(await tcpAsk(b.ns, service, 20), 'a', 'the same address answers from the new holder');
    // By name: a's service DNS (on its overlay IP) answers web.nstest.silo; a client on b resolves it
    // over the overlay and connects.
    const dnsScript = join(await tempDir(t, 'silo-dns-'), 'dns.mts');
    await writeFile(
      dnsScript,
      `import { ServiceDnsServer } from ${JSON.stringify(join(process.cwd(), 'src/overlay/dns-server.ts'))};
import { silentLogger } from ${JSON.stringify(join(process.cwd(), 'src/util/logger.ts'))};
await new ServiceDnsServer({ host: ${JSON.stringify(a.record.overlayIp)}, port: 53, zone: 'nstest.silo',
  lookup: (n) => (n === 'web' ? ${JSON.stringify(service)} : undefined), logger: silentLogger() }).start();`,
    );
    servers.push(spawnDaemon(['node', '--import', 'tsx', dnsScript], { netns: a.ns }));
    assert.equal(
      await tcpAsk(b.ns, 'web.nstest.silo', 20, a.record.overlayIp),
      'a',
      'a client on b connects by name through a DNS server on another node',
    );
    assert.equal(await tcpAsk(a.ns, service, 5), 'a');
    assert.equal(await ping(b.ns, service, 1), true);
    await assert.rejects(
      runner.run(['ip', 'netns', 'exec', onB.names('web').netns, 'true']),
      'the old holder no longer has the namespace',
    );
  });

  test('conn_auth: members reach declared ports over the overlay; other ports and the underlay do not', async (t) => {
    if (
      !(await requireOrSkip(t, { root: true, tools: ['ip', 'wg', 'wireguard-go', 'ping', 'sysctl', 'nft'] }))
    )
      return;
    const { a, b, org } = await setUp(t);
    await a.manager.up();
    await b.manager.up();
    const nodes = activeOf(a, b, org);
    const service = '10.231.2.202';
    const onB = new ServiceNetns({
      runner,
      hostNetns: b.ns,
      logger: silentLogger(),
      instanceId: `t-${b.ns}`,
      filter: { allowedSources: OVERLAY_CIDR, overlayInterface: b.manager.interfaceName },
    });
    const servers: ReturnType<typeof spawnDaemon>[] = [];
    t.after(async () => {
      for (const server of servers) server.kill('SIGKILL');
      await onB.teardown('web').catch(() => undefined);
    });
    await onB.setup('web', service, [7000]);
    const netns = onB.names('web').netns;
    servers.push(spawnDaemon(['node', '-e', echoServer('open', 7000)], { netns }));
    servers.push(spawnDaemon(['node', '-e', echoServer('closed', 7001)], { netns }));
    await a.manager.sync(
      nodes.map((r) => (r.nodeId === b.record.nodeId ? { ...r, serviceIps: [`${service}/32`] } : r)),
    );
    await b.manager.sync(nodes);
    assert.equal(
      await tcpAsk(a.ns, service, 20),
      'open',
      'a member reaches a declared port over the overlay',
    );
    assert.equal(await tcpAsk(b.ns, service, 5), 'open', 'and so does the holder itself');
    assert.equal(
      await tcpAsk(a.ns, service, 2, undefined, 7001),
      null,
      'a port not in `ports` is unreachable',
    );
    // The underlay: a sends to the service address straight over the veth between the namespaces, even with
    // a forged org source address (its own overlay IP); b forwards to the service only what came over WireGuard.
    await runner.run(['ip', 'route', 'add', `${service}/32`, 'via', b.underlayIp, 'dev', 'veth-a'], {
      netns: a.ns,
    });
    assert.equal(await tcpAsk(a.ns, service, 2), null, 'a process on the underlay cannot reach the service');
    assert.equal(
      await tcpAsk(a.ns, service, 2, undefined, 7000, a.record.overlayIp),
      null,
      'not even with a member address as its source',
    );
    await runner.run(['ip', 'route', 'delete', `${service}/32`], { netns: a.ns });
    assert.equal(await tcpAsk(a.ns, service, 10), 'open', 'over the overlay it still works');
  });

  test('recreates the interface when wireguard-go dies or the interface is deleted', async (t) => {
    if (!(await requireOrSkip(t, { root: true, tools: ['ip', 'wg', 'wireguard-go', 'ping'] }))) return;
    const { a, b, org } = await setUp(t);
    await a.manager.up();
    await b.manager.up();
    const pid = a.manager.userspacePid;
    if (pid === undefined) {
      t.skip('kernel WireGuard in use: no wireguard-go to kill');
      return;
    }
    const nodes = activeOf(a, b, org);
    await a.manager.sync(nodes);
    await b.manager.sync(nodes);
    assert.ok(await ping(a.ns, b.record.overlayIp, 20));

    process.kill(pid, 'SIGKILL');
    const exits = async () =>
      (await a.registry.getSingleMetric('silo_overlay_userspace_exits_total')?.get())?.values[0]?.value ?? 0;
    for (let i = 0; i < 100 && (await exits()) === 0; i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal(await exits(), 1);

    const result = await a.manager.sync(nodes);
    assert.deepEqual(result.added, [b.record.wgPublicKey], 'the peer is re-added on the new interface');
    assert.notEqual(a.manager.userspacePid, pid);
    assert.ok(await ping(a.ns, b.record.overlayIp, 20), 'the overlay works again');

    // The interface deleted behind the manager's back is recreated by the next sync too.
    await runner.run(['ip', 'link', 'delete', 'dev', a.manager.interfaceName], { netns: a.ns });
    const afterDelete = await a.manager.sync(nodes);
    assert.deepEqual(afterDelete.added, [b.record.wgPublicKey]);
    assert.ok(await ping(a.ns, b.record.overlayIp, 20), 'the overlay works after the interface was deleted');
  });
});
