import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Libp2p, Stream } from '@libp2p/interface';
import { multiaddr } from '@multiformats/multiaddr';
import { ChunkQueue } from '../../sim/net/chunk-queue.js';
import { SimNetwork } from '../../sim/net/sim-network.js';
import { type PingServices, startPingNode, stopAll, waitFor } from './sim-nodes.js';

const PROTOCOL = '/silo-test/lines/1.0.0';

/** Dials `to` from `from` by its sim address. */
function dial(net: SimNetwork, from: Libp2p, toName: string, to: Libp2p, force = false) {
  return from.dial(multiaddr(`${net.address(toName)}/p2p/${to.peerId}`), { force });
}

/**
 * Registers a handler on `node` that records each chunk it reads (with the
 * time) and echoes it back, and returns what it has received so far.
 */
async function recordAndEcho(node: Libp2p): Promise<Array<{ text: string; at: number }>> {
  const received: Array<{ text: string; at: number }> = [];
  await node.handle(PROTOCOL, ({ stream }) => {
    const echo = new ChunkQueue();
    void stream.sink(echo.read()).catch(() => {});
    void (async () => {
      try {
        for await (const chunk of stream.source) {
          const bytes = chunk.subarray();
          received.push({ text: new TextDecoder().decode(bytes), at: performance.now() });
          echo.push(bytes);
        }
      } catch {
        // reset by the network: the test looks at what arrived
      }
      echo.end();
    })();
  });
  return received;
}

/** A writer on an open stream (push text, it goes out) plus the text read back from it. */
function openWriter(stream: Stream) {
  const out = new ChunkQueue();
  const echoed: string[] = [];
  void stream.sink(out.read()).catch(() => {});
  void (async () => {
    try {
      for await (const chunk of stream.source) echoed.push(new TextDecoder().decode(chunk.subarray()));
    } catch {
      // reset by the network
    }
  })();
  return { write: (text: string) => out.push(new TextEncoder().encode(text)), echoed };
}

/**
 * Barrier for absence proofs: a probe node on a link of the same latency,
 * written to from `from` after the thing that must not arrive. Sim delays
 * are timers, which fire in order of their due time, so once the probe
 * arrived anything deliverable sent before it would have arrived too.
 */
async function probeFrom(net: SimNetwork, nodes: Libp2p[], from: Libp2p) {
  const probe = await startPingNode(net, 'probe');
  nodes.push(probe);
  const received = await recordAndEcho(probe);
  const writer = openWriter(await (await dial(net, from, 'probe', probe)).newStream(PROTOCOL));
  return async (label: string) => {
    writer.write(label);
    await waitFor(() => received.some((r) => r.text.includes(label)), `probe ${label}`);
  };
}

describe('SimNetwork with real libp2p nodes', () => {
  test('two nodes connect; RTT on an open stream is about 2 x latency, libp2p ping about 2 RTT', async (t) => {
    const latency = 40;
    const net = new SimNetwork({ seed: 1, defaultLatencyMs: latency });
    const nodes: Array<Libp2p<PingServices>> = [];
    t.after(async () => {
      await stopAll(nodes);
      net.close();
    });
    const a = await startPingNode(net, 'a');
    nodes.push(a);
    const b = await startPingNode(net, 'b');
    nodes.push(b);
    await recordAndEcho(b);

    const connection = await dial(net, a, 'b', b);
    assert.equal(connection.remotePeer.toString(), b.peerId.toString());
    assert.equal(connection.remoteAddr.toString(), `/memory/b/p2p/${b.peerId}`);
    await waitFor(() => b.getConnections(a.peerId).length === 1, 'b to see the inbound connection');
    // The inbound end's remote address is per connection and not dialable, like TCP's ephemeral port.
    assert.match(b.getConnections(a.peerId)[0]?.remoteAddr.toString() ?? '', /^\/memory\/a:\d+\/p2p\//);

    const stream = await connection.newStream(PROTOCOL);
    const writer = openWriter(stream);
    const rtts: number[] = [];
    for (let i = 0; i < 5; i++) {
      const start = performance.now();
      writer.write(`ping-${i}`);
      await waitFor(() => writer.echoed.join('').includes(`ping-${i}`), `echo ${i}`);
      rtts.push(performance.now() - start);
    }
    // Generous bounds: never faster than the propagation delay, never wildly slower.
    t.diagnostic(`latency ${latency} ms: stream RTTs ${rtts.map((r) => r.toFixed(1)).join(', ')} ms`);
    for (const rtt of rtts)
      assert.ok(rtt >= 2 * latency - 2 && rtt < 2 * latency + 400, `stream RTT ${rtt} ms`);

    // The ping service opens a new stream per ping and negotiates its protocol first: two round trips.
    const pingMs = await a.services.ping.ping(b.peerId);
    t.diagnostic(`libp2p ping ${pingMs} ms`);
    assert.ok(pingMs >= 4 * latency - 2 && pingMs < 4 * latency + 500, `ping ${pingMs} ms`);

    const stats = net.stats();
    const ab = stats.links.find((l) => l.from === 'a' && l.to === 'b');
    const ba = stats.links.find((l) => l.from === 'b' && l.to === 'a');
    assert.ok(ab !== undefined && ab.bytes > 0 && ab.chunks > 0);
    assert.ok(ba !== undefined && ba.bytes > 0 && ba.chunks > 0);
    assert.equal(stats.totalBytes, ab.bytes + ba.bytes);
    assert.equal(stats.connections.opened, 1);
    assert.equal(stats.connections.open, 1);
  });

  test('a burst of 50 writes arrives about one latency later, not 50 latencies later', async (t) => {
    const latency = 100;
    const net = new SimNetwork({ seed: 2, defaultLatencyMs: latency });
    const nodes: Array<Libp2p<PingServices>> = [];
    t.after(async () => {
      await stopAll(nodes);
      net.close();
    });
    const a = await startPingNode(net, 'a');
    nodes.push(a);
    const b = await startPingNode(net, 'b');
    nodes.push(b);
    const received = await recordAndEcho(b);
    const stream = await (await dial(net, a, 'b', b)).newStream(PROTOCOL);
    const writer = openWriter(stream);
    writer.write('warm-up');
    await waitFor(() => received.length > 0, 'warm-up');

    const before = net.stats().links.find((l) => l.from === 'a' && l.to === 'b')?.chunks ?? 0;
    const start = performance.now();
    for (let i = 0; i < 50; i++) writer.write(`m${i};`);
    await waitFor(
      () =>
        received
          .map((r) => r.text)
          .join('')
          .includes('m49;'),
      'the whole burst',
    );
    const elapsed = (received.at(-1)?.at ?? 0) - start;
    const chunks = (net.stats().links.find((l) => l.from === 'a' && l.to === 'b')?.chunks ?? 0) - before;
    t.diagnostic(`burst: ${chunks} chunks, last arrived ${elapsed.toFixed(1)} ms after the first write`);
    assert.ok(chunks >= 10, `the burst should cross the link as many chunks, got ${chunks}`);
    assert.ok(elapsed >= latency - 2, `arrived before the latency: ${elapsed} ms`);
    // The per-chunk model (@libp2p/memory's latency) would need chunks × 100 ms.
    assert.ok(elapsed < 5 * latency, `burst of ${chunks} chunks took ${elapsed} ms`);
    const text = received.map((r) => r.text).join('');
    assert.equal(text, `warm-up${Array.from({ length: 50 }, (_, i) => `m${i};`).join('')}`);
  });

  test('two nodes dialing each other at once keep both connections', async (t) => {
    const net = new SimNetwork({ seed: 12, defaultLatencyMs: 10 });
    const nodes: Array<Libp2p<PingServices>> = [];
    t.after(async () => {
      await stopAll(nodes);
      net.close();
    });
    const a = await startPingNode(net, 'a');
    nodes.push(a);
    const b = await startPingNode(net, 'b');
    nodes.push(b);
    await recordAndEcho(b);
    await Promise.all([dial(net, a, 'b', b), dial(net, b, 'a', a)]);
    await waitFor(
      () => a.getConnections(b.peerId).length === 2 && b.getConnections(a.peerId).length === 2,
      'both connections on both sides',
    );
    // libp2p aborts a new connection whose remote address equals an existing one's ("Duplicate multiaddr
    // connection"), which under load killed crossing dials; the inbound end must look different.
    const [first, second] = a.getConnections(b.peerId);
    assert.notEqual(first?.remoteAddr.toString(), second?.remoteAddr.toString());
    // Barrier: a round trip on each connection, so both are upgraded and carry streams.
    for (const connection of [first, second]) {
      const writer = openWriter(await connection!.newStream(PROTOCOL));
      writer.write('both-live');
      await waitFor(() => writer.echoed.includes('both-live'), 'an echo on each connection');
    }
    assert.equal(net.stats().connections.open, 2, 'libp2p must not abort either as a duplicate');
  });

  test('partition closes connections across it and refuses dials; heal allows them again', async (t) => {
    const net = new SimNetwork({ seed: 3, defaultLatencyMs: 5 });
    const nodes: Array<Libp2p<PingServices>> = [];
    t.after(async () => {
      await stopAll(nodes);
      net.close();
    });
    const [a, b, c] = await Promise.all(['a', 'b', 'c'].map((name) => startPingNode(net, name)));
    assert.ok(a && b && c);
    nodes.push(a, b, c);
    await dial(net, a, 'b', b);
    await dial(net, a, 'c', c);
    await dial(net, b, 'c', c);
    assert.equal(net.stats().connections.open, 3);

    net.partition([['a'], ['b', 'c']]);
    await waitFor(
      () => a.getConnections().length === 0 && b.getConnections(a.peerId).length === 0,
      'connections to a to close',
    );
    assert.equal(b.getConnections(c.peerId).length, 1, 'b-c is inside one group and stays');
    assert.equal(net.stats().connections.destroyedByNetwork, 2);
    await assert.rejects(dial(net, a, 'b', b), /path is cut/);
    await assert.rejects(dial(net, c, 'a', a), /path is cut/);
    assert.equal(net.stats().connections.dialsRefused, 2);

    net.heal();
    await dial(net, a, 'b', b);
    await dial(net, c, 'a', a);
    await waitFor(() => a.getConnections().length === 2, 'a to see both connections');
    assert.ok((await a.services.ping.ping(b.peerId)) >= 0);
  });

  test("partition in 'stall' mode keeps connections but holds their bytes until heal", async (t) => {
    const net = new SimNetwork({ seed: 4, defaultLatencyMs: 5 });
    const nodes: Array<Libp2p<PingServices>> = [];
    t.after(async () => {
      await stopAll(nodes);
      net.close();
    });
    const a = await startPingNode(net, 'a');
    nodes.push(a);
    const b = await startPingNode(net, 'b');
    nodes.push(b);
    const received = await recordAndEcho(b);
    const writer = openWriter(await (await dial(net, a, 'b', b)).newStream(PROTOCOL));
    const probe = await probeFrom(net, nodes, a);

    net.partition([['a', 'probe'], ['b']], { mode: 'stall' });
    writer.write('during-partition');
    await probe('after-the-write');
    assert.equal(received.length, 0);
    assert.equal(a.getConnections(b.peerId).length, 1, 'the connection stalls, it does not close');
    assert.deepEqual(
      net
        .liveConnections()
        .find((c) => c.listener === 'b')
        ?.held.sort(),
      ['a->b', 'b->a'],
    );
    assert.equal(net.shortestPathLatencyMs('a').has('b'), false);

    net.heal();
    await waitFor(() => received.length === 1, 'held bytes after heal');
    assert.equal(received[0]?.text, 'during-partition');
    await waitFor(() => writer.echoed.includes('during-partition'), 'the echo');
  });

  test('one-way cut: a -> b is held, b -> a flows, dials fail both ways; heal delivers what was held', async (t) => {
    const net = new SimNetwork({ seed: 5, defaultLatencyMs: 5 });
    const nodes: Array<Libp2p<PingServices>> = [];
    t.after(async () => {
      await stopAll(nodes);
      net.close();
    });
    const a = await startPingNode(net, 'a');
    nodes.push(a);
    const b = await startPingNode(net, 'b');
    nodes.push(b);
    const atA = await recordAndEcho(a);
    const atB = await recordAndEcho(b);
    const probe = await probeFrom(net, nodes, a);
    const connection = await dial(net, a, 'b', b);
    const aToB = openWriter(await connection.newStream(PROTOCOL));
    await waitFor(() => b.getConnections(a.peerId).length === 1, 'b to see the connection');
    const bToA = openWriter(await b.getConnections(a.peerId)[0]!.newStream(PROTOCOL));
    aToB.write('hello-b');
    await waitFor(() => atB.length === 1, 'the first message');

    net.cut('a', 'b');
    assert.equal(net.isCut('a', 'b'), true);
    assert.equal(net.isCut('b', 'a'), false);
    aToB.write('held');
    bToA.write('flows');
    await waitFor(() => atA.length === 1, 'b -> a to keep flowing');
    assert.equal(atA[0]?.text, 'flows');
    await probe('after-held');
    assert.equal(atB.length, 1, 'a -> b must be held');
    assert.equal(bToA.echoed.length, 0, "a's echo back to b crosses the cut too");
    assert.equal(a.getConnections(b.peerId).length, 1, 'the connection stalls, it does not close');
    // force: libp2p would otherwise hand back the existing (stalled) connection.
    await assert.rejects(dial(net, b, 'a', a, true), /path is cut/);
    await assert.rejects(dial(net, a, 'b', b, true), /path is cut/);

    net.heal();
    await waitFor(() => atB.length === 2 && bToA.echoed.includes('flows'), 'held bytes after heal');
    assert.equal(atB[1]?.text, 'held');
  });

  test('one-way cut with abortAfterMs closes the connection once the cut has lasted that long', async (t) => {
    const net = new SimNetwork({ seed: 6, defaultLatencyMs: 5 });
    const nodes: Array<Libp2p<PingServices>> = [];
    t.after(async () => {
      await stopAll(nodes);
      net.close();
    });
    const a = await startPingNode(net, 'a');
    nodes.push(a);
    const b = await startPingNode(net, 'b');
    nodes.push(b);
    await dial(net, a, 'b', b);
    net.cut('a', 'b', { abortAfterMs: 100 });
    await waitFor(
      () => a.getConnections().length === 0 && b.getConnections().length === 0,
      'the cut connection to be aborted',
    );
    assert.equal(net.stats().connections.destroyedByNetwork, 1);
  });

  test('crash aborts all of a node’s connections at once and refuses dials until recover', async (t) => {
    const net = new SimNetwork({ seed: 7, defaultLatencyMs: 5 });
    const nodes: Array<Libp2p<PingServices>> = [];
    t.after(async () => {
      await stopAll(nodes);
      net.close();
    });
    const [a, b, c] = await Promise.all(['a', 'b', 'c'].map((name) => startPingNode(net, name)));
    assert.ok(a && b && c);
    nodes.push(a, b, c);
    await dial(net, a, 'b', b);
    await dial(net, c, 'b', b);
    await dial(net, a, 'c', c);

    net.crash('b');
    assert.equal(net.isCrashed('b'), true);
    assert.equal(net.liveConnections().length, 1, 'only a-c is left, synchronously');
    await waitFor(
      () => a.getConnections(b.peerId).length === 0 && c.getConnections(b.peerId).length === 0,
      'a and c to lose b',
    );
    await waitFor(() => b.getConnections().length === 0, 'b to lose everything');
    assert.equal(a.getConnections(c.peerId).length, 1);
    await assert.rejects(dial(net, a, 'b', b), /b is crashed/);
    await assert.rejects(dial(net, b, 'c', c), /b is crashed/);

    net.recover('b');
    await dial(net, a, 'b', b);
    await waitFor(() => b.getConnections().length === 1, 'b to accept the new connection');
  });

  test('a stopped node refuses dials; a restarted node can listen on its name again', async (t) => {
    const net = new SimNetwork({ seed: 8 });
    const nodes: Array<Libp2p<PingServices>> = [];
    t.after(async () => {
      await stopAll(nodes);
      net.close();
    });
    const a = await startPingNode(net, 'a');
    nodes.push(a);
    const b = await startPingNode(net, 'b');
    nodes.push(b);
    await dial(net, a, 'b', b);
    await b.stop();
    await waitFor(() => a.getConnections().length === 0, 'a to notice b stopped');
    await assert.rejects(dial(net, a, 'b', b), /nothing listens on \/memory\/b/);
    const b2 = await startPingNode(net, 'b');
    nodes.push(b2);
    await dial(net, a, 'b', b2);
    assert.equal(a.getConnections(b2.peerId).length, 1);
  });

  test('shortestPathLatencyMs follows live, uncut connections', async (t) => {
    const net = new SimNetwork({ seed: 9, defaultLatencyMs: 1 });
    const nodes: Array<Libp2p<PingServices>> = [];
    t.after(async () => {
      await stopAll(nodes);
      net.close();
    });
    const [a, b, c, d] = await Promise.all(['a', 'b', 'c', 'd'].map((name) => startPingNode(net, name)));
    assert.ok(a && b && c && d);
    nodes.push(a, b, c, d);
    net.setLink('a', 'b', { latencyMs: 10 });
    net.setLink('b', 'c', { latencyMs: 30 });
    net.setLink('a', 'c', { latencyMs: 100 });
    await dial(net, a, 'b', b);
    await dial(net, c, 'b', b);
    await dial(net, a, 'c', c);
    const paths = net.shortestPathLatencyMs('a');
    assert.deepEqual(Object.fromEntries(paths), { a: 0, b: 10, c: 40 });
    assert.equal(paths.has('d'), false, 'd has no connection');
    net.cut('b', 'c');
    assert.equal(net.shortestPathLatencyMs('a').get('c'), 100);
    assert.equal(net.shortestPathLatencyMs('c').get('a'), 40, 'c -> b -> a is not cut');
  });

  test('bad input gets clear errors', async (t) => {
    const net = new SimNetwork({ seed: 10 });
    const nodes: Array<Libp2p<PingServices>> = [];
    t.after(async () => {
      await stopAll(nodes);
      net.close();
    });
    assert.throws(() => net.addNode('has/slash'), /must match/);
    assert.throws(() => net.addNode(''), /must match/);
    net.addNode('x');
    assert.throws(() => net.addNode('x'), /already exists/);
    assert.throws(() => net.transport('nope'), /unknown sim node "nope"/);
    assert.throws(() => net.setLink('x', 'nope', { latencyMs: 1 }), /unknown sim node/);
    assert.throws(() => net.setLink('x', 'x', { latencyMs: -5 }), /latencyMs/);
    net.addNode('y');
    assert.throws(() => net.partition([['x']]), /nodes in no group: y/);
    assert.throws(() => net.partition([['x', 'y'], ['y']]), /more than one group/);
    assert.throws(() => net.partition([['x', 'y', 'z']]), /unknown sim node "z"/);
    assert.throws(() => net.cut('x', 'x'), /same node/);
    assert.throws(() => net.cut('x', 'y', { abortAfterMs: -1 }), /abortAfterMs/);

    const a = await startPingNode(net, 'a');
    nodes.push(a);
    await assert.rejects(a.dial(multiaddr('/memory/ghost')), /no node named ghost|No transport|refused/);
    await assert.rejects(a.dial(multiaddr('/memory/y')), /nothing listens on \/memory\/y/);
    // A transport may only listen on its own node's address.
    net.addNode('b');
    await assert.rejects(
      import('libp2p').then(({ createLibp2p }) =>
        createLibp2p({ addresses: { listen: ['/memory/a'] }, transports: [net.transport('b')] }),
      ),
      /can only listen on \/memory\/b|already in use/,
    );
  });
});
