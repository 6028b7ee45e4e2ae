import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Libp2p } from '@libp2p/interface';
import type { Multiaddr } from '@multiformats/multiaddr';
import { waitFor } from '../helpers/wait.js';

/**
 * What silo relies on from a libp2p transport (src/gossip/node.ts builds
 * agents on TCP, tests on @libp2p/memory, the simulator on SimTransport):
 * connections reach the right peer and carry streams both ways in order,
 * a hang-up is seen at both ends, and a dial that cannot succeed fails
 * instead of hanging. Exercised through real libp2p nodes (noise, yamux),
 * as the agents use them. Run against each transport
 * (transport-contract.test.ts); each test builds its own world.
 */
export interface TransportWorld {
  /** A started libp2p node listening on this transport. */
  node(name: string): Promise<Libp2p>;
  /** An address of this transport nobody listens on. */
  deadAddress(): Promise<Multiaddr>;
  /** Stops every node and frees what the world holds. */
  close(): Promise<void>;
}

export type TransportWorldFactory = () => TransportWorld;

const ECHO = '/silo-test/echo/1.0.0';
/** Generous: the simulator and a loaded machine are slow, never this slow. */
const WAIT_MS = 20_000;

function addressOf(node: Libp2p): Multiaddr {
  const [address] = node.getMultiaddrs();
  assert.ok(address, 'a listening node has an address');
  return address;
}

async function withWorld(factory: TransportWorldFactory, body: (world: TransportWorld) => Promise<void>) {
  const world = factory();
  try {
    await body(world);
  } finally {
    await world.close();
  }
}

/** A dial connects both ends to the right peer. */
export async function checkConnect(factory: TransportWorldFactory): Promise<void> {
  await withWorld(factory, async (world) => {
    const a = await world.node('a');
    const b = await world.node('b');
    const connection = await a.dial(addressOf(b));
    assert.equal(connection.remotePeer.toString(), b.peerId.toString());
    assert.equal(connection.status, 'open');
    await waitFor('b to see the inbound connection', () => b.getConnections(a.peerId).length === 1, WAIT_MS);
    assert.equal(b.getConnections(a.peerId)[0]?.remotePeer.toString(), a.peerId.toString());
  });
}

/** A stream carries 256 KiB in 1 KiB chunks to the far end and back, in order, byte for byte. */
export async function checkStreamEcho(factory: TransportWorldFactory): Promise<void> {
  await withWorld(factory, async (world) => {
    const a = await world.node('a');
    const b = await world.node('b');
    await b.handle(ECHO, ({ stream }) => {
      void stream.sink(stream.source).catch(() => undefined);
    });
    const chunks = Array.from({ length: 256 }, (_, i) =>
      Uint8Array.from({ length: 1024 }, (_, j) => (i * 31 + j) % 251),
    );
    const stream = await a.dialProtocol(addressOf(b), ECHO);
    const [, received] = await Promise.all([
      stream.sink(
        (async function* () {
          yield* chunks;
        })(),
      ),
      (async () => {
        const parts: Uint8Array[] = [];
        for await (const part of stream.source) parts.push(part.subarray());
        return Buffer.concat(parts);
      })(),
    ]);
    assert.equal(received.byteLength, 256 * 1024);
    assert.ok(received.equals(Buffer.concat(chunks)), 'the echo equals what was sent');
  });
}

/** A hang-up closes the connection at both ends. */
export async function checkHangUp(factory: TransportWorldFactory): Promise<void> {
  await withWorld(factory, async (world) => {
    const a = await world.node('a');
    const b = await world.node('b');
    let bSawDisconnect = false;
    b.addEventListener('peer:disconnect', (event) => {
      if (event.detail.toString() === a.peerId.toString()) bSawDisconnect = true;
    });
    await a.dial(addressOf(b));
    await waitFor('b to see the connection', () => b.getConnections(a.peerId).length === 1, WAIT_MS);
    await a.hangUp(b.peerId);
    assert.equal(a.getConnections(b.peerId).length, 0);
    await waitFor(
      'b to see the hang-up',
      () => bSawDisconnect && b.getConnections(a.peerId).length === 0,
      WAIT_MS,
    );
  });
}

/** Dialing an address nobody listens on, or a node that stopped, fails; it does not hang. */
export async function checkDeadDials(factory: TransportWorldFactory): Promise<void> {
  await withWorld(factory, async (world) => {
    const a = await world.node('a');
    const b = await world.node('b');
    const bAddress = addressOf(b);
    await assert.rejects(a.dial(await world.deadAddress(), { signal: AbortSignal.timeout(WAIT_MS) }));
    await b.stop();
    await assert.rejects(a.dial(bAddress, { signal: AbortSignal.timeout(WAIT_MS) }));
    assert.equal(a.getConnections().length, 0);
  });
}

/** An aborted dial rejects and leaves no connection behind. */
export async function checkAbortedDial(factory: TransportWorldFactory): Promise<void> {
  await withWorld(factory, async (world) => {
    const a = await world.node('a');
    const b = await world.node('b');
    await assert.rejects(a.dial(addressOf(b), { signal: AbortSignal.abort() }));
    // Nothing half-open: a later dial works and is the only connection.
    await a.dial(addressOf(b));
    await waitFor('one connection each way', () => a.getConnections(b.peerId).length === 1, WAIT_MS);
  });
}

/**
 * A dial aborted as libp2p hands it to the transport (its
 * `transport-manager:selected-transport` progress event, after libp2p's own
 * last look at the signal) rejects, and leaves nothing half-open at either
 * end. Either the transport or the upgrader it hands the raw connection to
 * (which takes the same signal) may be the one that rejects: a SimTransport
 * that ignores the signal still passes, because the upgrader aborts the
 * handshake and closes the raw connection. What silo relies on is the pair.
 */
export async function checkAbortAtTransport(factory: TransportWorldFactory): Promise<void> {
  await withWorld(factory, async (world) => {
    const a = await world.node('a');
    const b = await world.node('b');
    const controller = new AbortController();
    let reached = false;
    const dial = a.dial(addressOf(b), {
      signal: controller.signal,
      onProgress: (event: { type: string }) => {
        if (event.type !== 'transport-manager:selected-transport') return;
        reached = true;
        controller.abort(new Error('aborted by the test'));
      },
    } as Parameters<Libp2p['dial']>[1]);
    await assert.rejects(dial);
    assert.ok(reached, 'the dial reached the transport before it was aborted');
    assert.equal(a.getConnections(b.peerId).length, 0, 'no connection at the dialer');
    // A later dial works and is the only connection, at both ends (a half-open inbound from the
    // aborted dial would show as a second one at b until it timed out).
    await a.dial(addressOf(b));
    await waitFor('one connection each way', () => b.getConnections(a.peerId).length >= 1, WAIT_MS);
    assert.equal(a.getConnections(b.peerId).length, 1);
    assert.equal(b.getConnections(a.peerId).length, 1);
  });
}

export function transportContract(name: string, factory: TransportWorldFactory): void {
  describe(`transport contract: ${name}`, { timeout: 120_000 }, () => {
    test('a dial connects both ends to the right peer', () => checkConnect(factory));
    test('a stream carries 256 KiB both ways, in order', () => checkStreamEcho(factory));
    test('a hang-up closes the connection at both ends', () => checkHangUp(factory));
    test('dials to nobody, or to a stopped node, fail instead of hanging', () => checkDeadDials(factory));
    test('an aborted dial rejects and leaves nothing half-open', () => checkAbortedDial(factory));
    test('a dial aborted as it reaches the transport rejects and leaves nothing half-open', () =>
      checkAbortAtTransport(factory));
  });
}
