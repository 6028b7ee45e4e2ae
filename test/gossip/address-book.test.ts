import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { PeerAddressBook } from '../../src/gossip/index.js';
import { readSpec, startNode, stopAll, type TestNode, waitFor, writeSpec } from './helpers.js';

/** An address book the test fills: what an agent derives from its enrolled records' endpoints. */
class TestBook implements PeerAddressBook {
  readonly listeners = new Set<() => void>();
  rows: { peerId: string; addrs: string[] }[] = [];
  entries() {
    return this.rows;
  }
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
  add(peerId: string, addrs: string[]): void {
    this.rows = [...this.rows, { peerId, addrs }];
    for (const listener of this.listeners) listener();
  }
}

/** A node's listen address without its `/p2p/<id>` suffix, as enrollment records carry it. */
const bare = (node: TestNode) => node.gossip.multiaddrs()[0]!.replace(/\/p2p\/[^/]+$/, '');

describe('peer address book', () => {
  test('a peer known only from the book can be dialed by peer id, at start and after a change', async (t) => {
    const nodes: TestNode[] = [];
    t.after(() => stopAll(nodes));
    // b and c know nobody and nobody knows them: no bootstrap, no heartbeat can reach a.
    const b = await startNode('node-b');
    const c = await startNode('node-c');
    nodes.push(b, c);
    writeSpec(b, 'from-b', 1);
    writeSpec(c, 'from-c', 2);
    const book = new TestBook();
    book.add(b.gossip.peerId, [bare(b)]);
    const a = await startNode('node-a', { addressBook: book });
    nodes.push(a);
    // What a lease batch or a sync does: dial by peer id alone.
    const first = await a.gossip.syncWith(b.gossip.peerId);
    assert.equal(first, 'ok');
    assert.equal(readSpec(a, 'from-b'), 1);
    const before = await a.gossip.syncWith(c.gossip.peerId);
    assert.equal(before, 'error', 'c is in no book yet: nowhere to dial');
    // A record arriving later (the change listener), with its own /p2p suffix this time.
    book.add(c.gossip.peerId, [c.gossip.multiaddrs()[0]!]);
    await waitFor('a sync with c', async () => (await a.gossip.syncWith(c.gossip.peerId)) === 'ok');
    assert.equal(readSpec(a, 'from-c'), 2);
    assert.equal(book.listeners.size, 1);
  });

  test("a record's address is taken only for its own peer; garbage is skipped", async (t) => {
    const nodes: TestNode[] = [];
    t.after(() => stopAll(nodes));
    const a = await startNode('node-a');
    const b = await startNode('node-b');
    const c = await startNode('node-c');
    nodes.push(a, b, c);
    // b's entry pointing at c's address (with c's id): refused, nothing learned.
    assert.equal(a.gossip.learnAddresses(b.gossip.peerId, [c.gossip.multiaddrs()[0]!]), false);
    assert.equal(
      a.gossip.learnAddresses(b.gossip.peerId, ['not a multiaddr', '', `/p2p/${b.gossip.peerId}`]),
      false,
    );
    assert.equal(a.gossip.learnAddresses(b.gossip.peerId, [bare(b)]), true);
    assert.equal(a.gossip.learnAddresses(b.gossip.peerId, [bare(b)]), false, 'known already');
    await waitFor('a dialed b', () => a.gossip.peers().includes(b.gossip.peerId));
    assert.equal(a.gossip.peers().includes(c.gossip.peerId), false, 'never dialed c for b');
  });
});
