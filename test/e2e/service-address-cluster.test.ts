import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import type { WorkloadRow } from '../../src/agent/api/views.js';
import { CommandError } from '../../src/overlay/exec.js';
import { ServiceNetns } from '../../src/overlay/service-netns.js';
import { runtimeInstanceId } from '../../src/reconciler/service-runtime.js';
import { silentLogger } from '../../src/util/logger.js';
import { tempDir, waitFor } from '../cli/helpers.js';
import { requireOrSkip } from '../overlay/tools.js';
import { addNode, type ClusterNode, Lab, nodeRows, runner, seedOf, siloJson } from './netns-lab.js';

/**
 * Issue 14 end to end (docs/services.md, "Service addresses"): three `silo
 * agent` processes in network namespaces over WireGuard, a TCP service with
 * `network = "overlay"` and `ports`, sandboxed by bubblewrap in its own
 * namespace. A client in another node's namespace resolves
 * `echo.<org>.<suffix>` (the org's own suffix and service range) through its own agent's DNS server and connects, every
 * 50 ms, throughout. The holder is drained: the same name and address answer
 * from the new holder. Then the new holder crashes (its agent and service
 * SIGKILLed): the same again. The test asserts correctness only, with
 * generous timeouts; it prints the window in which the client's attempts
 * failed (first failure → first success) and how long the move itself took,
 * for docs/benchmarks.md.
 *
 * Needs root, iproute2, nsenter, wireguard-tools, wireguard-go, bubblewrap
 * and nftables. Skips with a reason otherwise; fails under CI=true.
 */

const ORG = 'svc';
const OVERLAY_CIDR = '10.231.40.0/24';
/** The org's own service range and DNS suffix (silo org init --service-range / --dns-suffix). */
const SERVICE_RANGE = '10.231.40.192/26';
const DNS_SUFFIX = 'corp.example';
const PORT = 7000;
const NAME = 'echo';

/** Answers every connection with a token made at start: a new token means a new process. */
const SERVICE = `#!/bin/sh
exec node -e "
const token = require('node:crypto').randomBytes(6).toString('hex');
require('node:net').createServer((s) => s.end(token)).listen(${PORT}, '0.0.0.0', () => {
  try { require('node:fs').writeSync(3, 'ready\\\\n'); } catch {}
});"
`;

const MANIFEST = `name = "${NAME}"
image = "./image.tar"
command = "bin/echo.sh"
scratch_mb = 1
scratch_class = "volatile"
network = "overlay"
ports = [${PORT}]
cpus = 0.1
memory_mb = 64
restart = "always"
notification_fd = 3
stop_timeout = 3
start_timeout = 20
`;

interface Attempt {
  /** Start and end of the attempt (ms since the epoch). */
  t0: number;
  t1: number;
  ok: boolean;
  addr?: string;
  reply?: string;
  err?: string;
}

/** Resolves the name with the given DNS server and asks the service, every 50 ms, one JSON line per attempt. */
const CLIENT = `
const dns = require('node:dns');
const net = require('node:net');
const [server, name, port] = process.argv.slice(1);
const resolver = new dns.promises.Resolver({ timeout: 500, tries: 1 });
resolver.setServers([server]);
const ask = (host) => new Promise((resolve, reject) => {
  const s = net.connect({ host, port: Number(port) });
  let got = '';
  s.setTimeout(500, () => { s.destroy(); reject(new Error('timeout')); });
  s.on('data', (d) => { got += d; });
  s.on('end', () => (got === '' ? reject(new Error('empty reply')) : resolve(got)));
  s.on('error', reject);
});
(async () => {
  for (;;) {
    const t0 = Date.now();
    let line;
    try {
      const [addr] = await resolver.resolve4(name);
      const reply = await ask(addr);
      line = { t0, t1: Date.now(), ok: true, addr, reply };
    } catch (err) {
      line = { t0, t1: Date.now(), ok: false, err: err.code || err.message };
    }
    process.stdout.write(JSON.stringify(line) + '\\n');
    const wait = 50 - (Date.now() - t0);
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
})();
`;

/** The client process in a node's namespace and what it saw so far. */
class Prober {
  readonly attempts: Attempt[] = [];
  readonly child: ChildProcess;

  constructor(ns: string, dnsServer: string, name: string) {
    this.child = spawn(
      'nsenter',
      [`--net=/run/netns/${ns}`, '--', process.execPath, '-e', CLIENT, dnsServer, name, String(PORT)],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let rest = '';
    this.child.stdout?.on('data', (chunk: Buffer) => {
      const lines = (rest + chunk.toString()).split('\n');
      rest = lines.pop() ?? '';
      for (const line of lines) if (line !== '') this.attempts.push(JSON.parse(line) as Attempt);
    });
  }

  /** The last successful attempt after `since`, or null. */
  lastSuccess(since: number): Attempt | null {
    return this.attempts.findLast((a) => a.ok && a.t0 >= since) ?? null;
  }

  /** First failure → end of the first success after it, among attempts started after `since`; 0 when none failed. */
  window(since: number): { ms: number; failed: number; errors: string[] } {
    const after = this.attempts.filter((a) => a.t0 >= since);
    const first = after.findIndex((a) => !a.ok);
    if (first === -1) return { ms: 0, failed: 0, errors: [] };
    const recovered = after.findIndex((a, i) => i > first && a.ok);
    assert.notEqual(recovered, -1, 'the client recovered');
    const failures = after.filter((a) => !a.ok);
    return {
      ms: after[recovered]!.t1 - after[first]!.t0,
      failed: failures.length,
      errors: [...new Set(failures.map((a) => a.err ?? '?'))],
    };
  }
}

async function echoRow(node: ClusterNode): Promise<WorkloadRow | null> {
  const { workloads } = await node.agent.client.request<{ workloads: WorkloadRow[] }>(
    'GET',
    '/v1/workloads',
    { timeoutMs: 10_000 },
  );
  return workloads.find((w) => w.name === NAME) ?? null;
}

/** Waits until `via` sees the service running elsewhere than `not`; returns the row. */
async function runningOn(via: ClusterNode, not: string | null): Promise<WorkloadRow> {
  let last: WorkloadRow | null = null;
  return waitFor(
    `${NAME} running${not === null ? '' : ` elsewhere than ${not}`}`,
    async () => {
      last = await echoRow(via);
      return last?.phase === 'running' && last.holder !== null && last.holder !== not ? last : null;
    },
    120_000,
  ).catch((err: Error) => {
    throw new Error(`${err.message}; last row ${JSON.stringify(last)}`);
  });
}

function serviceNetnsOf(node: ClusterNode): ServiceNetns {
  return new ServiceNetns({
    runner,
    logger: silentLogger(),
    instanceId: runtimeInstanceId(join(node.dir, 'data')),
    hostNetns: node.ns,
  });
}

/** SIGKILL for the processes of the service's supervise record (the sandbox outlives a SIGKILLed agent). */
async function killService(node: ClusterNode): Promise<void> {
  const file = join(node.dir, 'data', 'services', NAME, 'supervise', 'pid');
  const record = JSON.parse(await readFile(file, 'utf8')) as { pid: number; childPid: number | null };
  for (const pid of [record.childPid, record.pid]) {
    if (pid === null) continue;
    try {
      process.kill(pid, 'SIGKILL');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  }
}

test('a service keeps its name and address across a drain and a holder crash', {
  timeout: 600_000,
}, async (t: TestContext) => {
  if (
    !(await requireOrSkip(t, {
      root: true,
      tools: ['ip', 'wg', 'wireguard-go', 'nsenter', 'bwrap', 'nft', 'sysctl'],
    }))
  )
    return;
  const { dir } = await tempDir('silo-e2e-svc-');
  const lab = new Lab(dir, 's', ORG);
  const probers: Prober[] = [];
  t.after(async () => {
    for (const prober of probers) prober.child.kill('SIGKILL');
    try {
      await lab.cleanUp(t);
    } finally {
      // A crashed holder leaves its service namespace: named, so it outlives the node's namespace.
      for (const node of lab.nodes) {
        const { netns } = serviceNetnsOf(node).names(NAME);
        await runner.run(['ip', 'netns', 'delete', netns]).catch((err: unknown) => {
          if (!(err instanceof CommandError)) throw err;
        });
      }
    }
  });
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
  const nodes = await step('org and three enrolled agents with the sandbox', async () => {
    await lab.createHub();
    await siloJson([
      'org',
      'init',
      '--dir',
      orgDir,
      '--name',
      ORG,
      '--cidr',
      OVERLAY_CIDR,
      '--service-range',
      SERVICE_RANGE,
      '--dns-suffix',
      DNS_SUFFIX,
    ]);
    const services = { sandbox: 'bubblewrap' };
    const first = await addNode({ lab, id: 'node-1', index: 1, orgDir, seeds: [], services });
    const others: ClusterNode[] = [];
    for (const index of [2, 3]) {
      others.push(
        await addNode({
          lab,
          id: `node-${index}`,
          index,
          orgDir,
          seeds: [seedOf(first)],
          registerWith: first.socket,
          services,
        }),
      );
    }
    for (const node of [first, ...others]) {
      await waitFor(
        `${node.id} to see two live peers`,
        async () => (await nodeRows(node)).filter((r) => !r.self && r.liveness === 'alive').length === 2,
        90_000,
      );
    }
    return [first, ...others];
  });
  const byId = (id: string | null): ClusterNode => {
    const node = nodes.find((n) => n.id === id);
    assert.ok(node, `node ${String(id)}`);
    return node;
  };

  const placed = await step('the service runs with its address', async () => {
    const imageDir = join(dir, 'image');
    await mkdir(join(imageDir, 'bin'), { recursive: true });
    await writeFile(join(imageDir, 'bin', 'echo.sh'), SERVICE);
    await chmod(join(imageDir, 'bin', 'echo.sh'), 0o755);
    const manifest = join(dir, `${NAME}.toml`);
    await writeFile(manifest, MANIFEST);
    await siloJson(['apply', manifest, '--image', imageDir, '--org', orgDir, '--socket', nodes[0]!.socket]);
    const row = await runningOn(nodes[0]!, null);
    assert.ok(row.address, 'an address');
    assert.equal(row.dnsName, `${NAME}.${ORG}.${DNS_SUFFIX}`);
    const last = Number(row.address?.split('.')[3]);
    assert.ok(last >= 192 && last <= 254, `${row.address} is in the org's service range ${SERVICE_RANGE}`);
    return row;
  });
  const address = placed.address!;
  const name = placed.dnsName!;

  // The client runs on a node that the drain does not touch, and asks its own agent's DNS.
  const first = byId(placed.holder);
  const clientNode = nodes.find((n) => n !== first)!;
  const prober = new Prober(clientNode.ns, clientNode.overlayIp, name);
  probers.push(prober);

  const before = await step('a client on another node connects by name', async () => {
    const ok = await waitFor('an answer by name', async () => prober.lastSuccess(0), 60_000);
    assert.equal(ok.addr, address, 'the name resolves to the service address');
    return ok.reply!;
  });

  const drained = await step(
    'drain the holder: the same name and address answer from the new one',
    async () => {
      const at = Date.now();
      await siloJson(['drain', first.id, '--socket', clientNode.socket]);
      const row = await runningOn(clientNode, first.id);
      assert.equal(row.address, address, 'the address follows the service');
      const answer = await waitFor(
        'an answer from the new process',
        async () => {
          const last = prober.lastSuccess(at);
          return last !== null && last.reply !== before ? last : null;
        },
        60_000,
      );
      assert.equal(answer.addr, address);
      assert.equal(
        (await echoRow(clientNode))?.holder,
        row.holder,
        'the answer came while the new holder held it',
      );
      // The old holder keeps nothing that answers for the address.
      await assert.rejects(
        runner.run(['ip', 'netns', 'exec', serviceNetnsOf(first).names(NAME).netns, 'true']),
        "the drained node's service namespace is gone",
      );
      const moveMs = (row.statuses[row.holder!]?.since ?? Number.NaN) - at;
      return { at, row, reply: answer.reply!, moveMs };
    },
  );
  const drainWindow = prober.window(drained.at);
  t.diagnostic(
    `drain: client window ${drainWindow.ms} ms (${drainWindow.failed} failed attempts: ${drainWindow.errors.join(', ')}); drain → running on ${drained.row.holder}: ${drained.moveMs} ms`,
  );

  await step('crash the holder: the same name and address answer from a survivor', async () => {
    const victim = byId(drained.row.holder);
    const survivors = nodes.filter((n) => n !== victim);
    // The client must survive the crash: it moves to a survivor if it ran on the victim.
    let crashProber = prober;
    let via = clientNode;
    if (victim === clientNode) {
      via = survivors[0]!;
      crashProber = new Prober(via.ns, via.overlayIp, name);
      probers.push(crashProber);
      await waitFor('the second client answered', async () => crashProber.lastSuccess(0), 60_000);
    }
    const at = Date.now();
    victim.agent.child.kill('SIGKILL');
    await killService(victim);
    await victim.agent.exited;
    const row = await runningOn(via, victim.id);
    assert.equal(row.address, address, 'the address follows the service');
    const answer = await waitFor(
      'an answer from the new process',
      async () => {
        const last = crashProber.lastSuccess(at);
        return last !== null && last.reply !== drained.reply ? last : null;
      },
      120_000,
    );
    assert.equal(answer.addr, address);
    const window = crashProber.window(at);
    const moveMs = (row.statuses[row.holder!]?.since ?? Number.NaN) - at;
    t.diagnostic(
      `crash: client window ${window.ms} ms (${window.failed} failed attempts: ${window.errors.join(', ')}); kill → running on ${row.holder}: ${moveMs} ms`,
    );
  });
});
