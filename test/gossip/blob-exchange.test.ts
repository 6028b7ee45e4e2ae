import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Registry } from 'prom-client';
import {
  BlobExchange,
  BlobFetchError,
  type BlobSource,
  fileBlobSource,
} from '../../src/gossip/blob-exchange.js';
import { silentLogger, startCluster, stopAll, type TestNode, waitFor } from './helpers.js';

const PROTOCOL = '/silo/test-blob/1';

function digestOf(bytes: Uint8Array): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

describe('blob exchange', () => {
  const dir = mkdtempSync(join(tmpdir(), 'silo-blob-'));
  const payload = new Uint8Array(300_000).map((_, i) => (i * 7) % 251);
  const digest = digestOf(payload);
  const lie = digestOf(new TextEncoder().encode('something else'));
  let nodes: TestNode[] = [];
  let client: BlobExchange;

  before(async () => {
    writeFileSync(join(dir, 'blob'), payload);
    nodes = await startCluster(2);
    await waitFor('connected', () => nodes[0]!.gossip.peers().length === 1);
    const files = fileBlobSource((d) => (d === digest ? join(dir, 'blob') : null));
    // The server answers the "lie" digest with other content, as a faulty peer would.
    const source: BlobSource = async (d) => files(d === lie ? digest : d);
    const server = new BlobExchange({
      node: nodes[0]!.gossip.node,
      protocol: PROTOCOL,
      source,
      logger: silentLogger,
      registry: new Registry(),
    });
    await server.start();
    client = new BlobExchange({
      node: nodes[1]!.gossip.node,
      protocol: PROTOCOL,
      source: async () => null,
      logger: silentLogger,
      registry: new Registry(),
      maxBytes: 1_000_000,
    });
  });
  after(async () => {
    await stopAll(nodes);
    rmSync(dir, { recursive: true, force: true });
  });

  test('fetches a blob by digest, verified, into place', async () => {
    const dest = join(dir, 'out', 'fetched');
    const size = await client.fetch(nodes[0]!.gossip.peerId, digest, dest);
    assert.equal(size, payload.byteLength);
    assert.deepEqual(new Uint8Array(readFileSync(dest)), payload);
    assert.equal(existsSync(`${dest}.partial`), false);
  });

  test('content that does not match the digest is refused and nothing is left behind', async () => {
    const dest = join(dir, 'out', 'lied');
    await assert.rejects(client.fetch(nodes[0]!.gossip.peerId, lie, dest), (err: unknown) => {
      assert.ok(err instanceof BlobFetchError);
      assert.equal(err.wireCode, 'digest-mismatch');
      return true;
    });
    assert.equal(existsSync(dest), false);
    assert.equal(existsSync(`${dest}.partial`), false);
  });

  test('unknown digest, malformed digest and over-limit blobs get typed errors', async () => {
    const peer = nodes[0]!.gossip.peerId;
    await assert.rejects(client.fetch(peer, `sha256:${'0'.repeat(64)}`, join(dir, 'x')), {
      wireCode: 'not-found',
    });
    await assert.rejects(client.fetch(peer, 'md5:abc', join(dir, 'x')), { wireCode: 'malformed' });
    const small = new BlobExchange({
      node: nodes[1]!.gossip.node,
      protocol: PROTOCOL,
      source: async () => null,
      logger: silentLogger,
      registry: new Registry(),
      maxBytes: 1000,
    });
    await assert.rejects(small.fetch(peer, digest, join(dir, 'y')), { wireCode: 'too-large' });
    assert.equal(existsSync(join(dir, 'y')), false);
  });
});
