import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, type TestContext, test } from 'node:test';
import { isMountpoint } from '../../src/reconciler/gocryptfs.js';
import { type ClusterNode, silo, startEnrolledAgents, tempDir, waitFor } from '../cli/helpers.js';
import { filesContaining } from '../helpers/files.js';
import { requireOrSkip } from '../overlay/tools.js';

/**
 * Encrypted scratch with keys provisioned by the CA (docs/security.md,
 * "Encrypted scratch"), end to end on real `silo agent` processes enrolled
 * with `silo ca sign` and no hand-written key file: a persistent service
 * makes up a marker and writes it into its STATE; the marker is never in
 * plaintext in any file under any node's data directory; after a drain the
 * service reads it back on its new node. Then `silo ca revoke` starts a
 * new generation that the remaining agents receive through the enrollment
 * document: new scratch is created under it.
 */

// The marker is made by the service itself: passed in through the spec, it would sit in the documents.
const SERVICE = `#!/bin/sh
set -eu
cd "$STATE_DIRECTORY"
runs=$(cat runs 2>/dev/null || echo 0)
runs=$((runs + 1))
printf '%s\\n' "$runs" > runs
if [ -f marker ]; then cp marker readback; else
  printf 'silo-marker-%s\\n' "$(od -An -N16 -tx1 /dev/urandom | tr -d ' \\n')" > marker.tmp
  mv marker.tmp marker
fi
{ echo ready >&3; } 2>/dev/null || true
trap 'exit 0' TERM INT
while :; do sleep 1 & wait $! || true; done
`;

const MANIFEST = (name: string) => `name = "${name}"
tier = "org-container"
image = "./image.tar"
command = "bin/service.sh"
scratch_mb = 16
scratch_class = "persistent"
network = "none"
cpus = 0.1
memory_mb = 32
restart = "always"
notification_fd = 3
stop_signal = "SIGTERM"
stop_timeout = 3
start_timeout = 20
`;

interface WorkloadRow {
  name: string;
  phase: string;
  holder: string | null;
  reason: string | null;
}

const requirements = { root: true, tools: ['gocryptfs', 'fusermount3'] };

describe('encrypted scratch on a cluster of real agents, keys from the CA', { timeout: 600_000 }, () => {
  let remove: (() => Promise<void>) | undefined;
  let nodes: ClusterNode[] = [];
  after(async () => {
    for (const node of nodes) await node.agent?.stop();
    await remove?.();
  });

  test('the marker rests as ciphertext everywhere and survives a drain; a revoke rotates the keys', async (t: TestContext) => {
    if (!(await requireOrSkip(t, requirements))) return;
    const made = await tempDir('silo-encx-');
    remove = made.remove;
    const cluster = await startEnrolledAgents({
      dir: made.dir,
      org: 'encx',
      cidr: '10.93.0.0/24',
      ids: ['n1', 'n2', 'n3'],
      nodeInitArgs: () => ['--cpus', '2', '--memory-mb', '512', '--scratch-mb', '512'],
      config: () => ({
        services: { sandbox: 'none', checkpoint_interval: '1s', replicas: 2 },
        storage: { durability: 'nosync' },
      }),
    });
    nodes = cluster.nodes;
    const { orgDir } = cluster;
    let sock = nodes[0]!.socket;
    // No hand-written key file: every node's keys came in its bundle.
    for (const node of nodes) {
      const bundle = JSON.parse(await readFile(join(node.identityDir, 'enrollment.json'), 'utf8')) as {
        scratchKeys?: { generation: number }[];
      };
      assert.deepEqual(
        bundle.scratchKeys?.map((k) => k.generation),
        [1],
        `${node.id}'s bundle`,
      );
    }

    const imageDir = join(made.dir, 'image');
    await mkdir(join(imageDir, 'bin'), { recursive: true });
    await writeFile(join(imageDir, 'bin', 'service.sh'), SERVICE);
    await chmod(join(imageDir, 'bin', 'service.sh'), 0o755);
    const apply = async (name: string): Promise<void> => {
      const manifest = join(made.dir, `${name}.toml`);
      await writeFile(manifest, MANIFEST(name));
      const res = await silo(['apply', manifest, '--image', imageDir, '--org', orgDir, '--socket', sock]);
      assert.equal(res.code, 0, res.stderr);
    };
    const rows = async (): Promise<WorkloadRow[]> => {
      const res = await silo(['workloads', '--json', '--socket', sock]);
      assert.equal(res.code, 0, res.stderr);
      return (JSON.parse(res.stdout) as { workloads: WorkloadRow[] }).workloads;
    };
    const runningOn = async (name: string, not?: string): Promise<ClusterNode> => {
      let last: WorkloadRow | undefined;
      const holder = await waitFor(
        `${name} running${not ? ` elsewhere than ${not}` : ''}`,
        async () => {
          last = (await rows()).find((w) => w.name === name);
          return last?.phase === 'running' && last.holder !== null && last.holder !== not
            ? last.holder
            : null;
        },
        120_000,
      ).catch((err: Error) => {
        throw new Error(`${err.message}; last row ${JSON.stringify(last)}`);
      });
      return nodes.find((n) => n.id === holder)!;
    };
    const stateFile = (node: ClusterNode, name: string, file: string) =>
      join(node.dir, 'services', name, 'state', file);

    await apply('vault');
    const first = await runningOn('vault');
    assert.ok(await isMountpoint(join(first.dir, 'services', 'vault', 'state')), 'STATE is a mount');
    const marker = await waitFor('the service wrote its marker', async () =>
      (await readFile(stateFile(first, 'vault', 'marker'), 'utf8').catch(() => '')).trim(),
    );
    assert.match(marker, /^silo-marker-[0-9a-f]{32}$/);
    const generation = await readFile(
      join(first.dir, 'services', 'vault', 'state.enc', 'silo.generation'),
      'utf8',
    );
    assert.equal(generation.trim(), '1');

    const drained = await silo(['drain', first.id, '--socket', sock]);
    assert.equal(drained.code, 0, drained.stderr);
    const second = await runningOn('vault', first.id);
    const readback = await waitFor('the service read the marker back on its new node', async () =>
      (await readFile(stateFile(second, 'vault', 'readback'), 'utf8').catch(() => '')).trim(),
    );
    assert.equal(readback, marker);

    // Revoke the drained node (through another node's API: a revoked node stops writing): the
    // others get generation 2 through the enrollment document, and new scratch is created under it.
    const remaining = nodes.filter((n) => n.id !== first.id);
    const api = remaining[0]!.socket;
    const revoked = await silo(['ca', 'revoke', '--org', orgDir, first.id, '--json', '--socket', api]);
    assert.equal(revoked.code, 0, revoked.stderr);
    const rotation = (JSON.parse(revoked.stdout) as { scratchKeys: { generation: number; nodes: string[] } })
      .scratchKeys;
    assert.equal(rotation.generation, 2);
    assert.deepEqual(rotation.nodes.sort(), remaining.map((n) => n.id).sort());
    const generations = async (node: ClusterNode): Promise<number[]> => {
      const res = await silo(['status', '--json', '--socket', node.socket]);
      return (
        (JSON.parse(res.stdout) as { scratchKeys: { generations: number[] } | null }).scratchKeys
          ?.generations ?? []
      );
    };
    for (const node of remaining)
      await waitFor(`${node.id} received generation 2`, async () => (await generations(node)).includes(2));
    assert.deepEqual(await generations(first), [1], 'the revoked node never gets generation 2');
    sock = api;
    await apply('fresh');
    const freshHolder = await runningOn('fresh');
    const freshGeneration = await readFile(
      join(freshHolder.dir, 'services', 'fresh', 'state.enc', 'silo.generation'),
      'utf8',
    );
    assert.equal(freshGeneration.trim(), '2', 'new scratch is created under the new generation');
    // Data written under generation 1 stays readable: vault restarts on its node with the old key.
    const vaultGeneration = await readFile(
      join(second.dir, 'services', 'vault', 'state.enc', 'silo.generation'),
      'utf8',
    );
    assert.equal(vaultGeneration.trim(), '1');

    // Everything stopped (STATE unmounted): the marker is nowhere in any node's files, ciphertext only.
    for (const node of nodes) assert.equal(await node.agent?.stop(), 0, `${node.id} stopped cleanly`);
    const needle = Buffer.from(marker);
    for (const node of nodes) {
      assert.equal(await isMountpoint(join(node.dir, 'services', 'vault', 'state')), false);
      assert.deepEqual(await filesContaining(node.dir, needle), [], `${node.id}'s data directory`);
    }
    // The ciphertext is there: the holder and the checkpoint replicas keep state.enc.
    const holders = [];
    for (const node of nodes) {
      const conf = await readFile(
        join(node.dir, 'services', 'vault', 'state.enc', 'gocryptfs.conf'),
        'utf8',
      ).catch(() => null);
      if (conf !== null) holders.push(node.id);
    }
    assert.ok(holders.includes(second.id), `state.enc on ${second.id} (found on ${holders.join(', ')})`);
  });
});
