import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { multiaddr } from '@multiformats/multiaddr';
import * as lp from 'it-length-prefixed';
import { pack, unpack } from 'msgpackr';
import * as Y from 'yjs';
import { generateNodeKey, SYNC_PROTOCOL } from '../../src/gossip/index.js';
import { createGossipNode, type GossipNode } from '../../src/gossip/node.js';
import { DOC_NAMES } from '../../src/state/names.js';
import { metricValue, readSpec, startNode, stopNode, type TestNode, waitFor, writeSpec } from './helpers.js';

const MAX_UPDATE_BYTES = 64 * 1024;

async function rawClient(): Promise<GossipNode> {
  return createGossipNode({
    transport: 'tcp',
    listen: ['/ip4/127.0.0.1/tcp/0'],
    privateKey: await generateNodeKey(),
  });
}

async function openSync(client: GossipNode, server: TestNode) {
  return client.dialProtocol(multiaddr(server.gossip.multiaddrs()[0]!), SYNC_PROTOCOL);
}

/** Sends `chunks` as they are (already framed), then reads until the server ends or aborts the stream. */
async function sendRaw(client: GossipNode, server: TestNode, chunks: Uint8Array[]): Promise<void> {
  const stream = await openSync(client, server);
  const writing = stream.sink(
    (async function* () {
      for (const chunk of chunks) yield chunk;
    })(),
  );
  try {
    for await (const _ of stream.source) {
      // The server's own step 1 frames; ignored.
    }
  } catch {
    // The server aborts the stream on a protocol error.
  }
  await writing.catch(() => undefined);
}

const framed = (value: unknown) => lp.encode.single(pack(value)).subarray();

async function sessions(server: TestNode, result: string): Promise<number> {
  return metricValue(server, 'silo_sync_sessions_total', { direction: 'inbound', result });
}

describe('/silo/sync/1', () => {
  test('a stock yjs + msgpackr + libp2p client can sync by following docs/protocol.md', async (t) => {
    const server = await startNode('server');
    const client = await rawClient();
    t.after(async () => {
      await client.stop();
      await stopNode(server);
    });
    writeSpec(server, 'from-server', 1);
    const clientDocs = Object.fromEntries(DOC_NAMES.map((d) => [d, new Y.Doc()]));
    clientDocs.workloads!.getMap('specs').set('from-client', 2);

    const stream = await openSync(client, server);
    const outbox: Uint8Array[] = DOC_NAMES.map((doc) =>
      pack({ t: 1, doc, sv: Y.encodeStateVector(clientDocs[doc]!) }),
    );
    let wake: (() => void) | undefined;
    let done = false;
    const writing = stream.sink(
      (async function* () {
        while (true) {
          const next = outbox.shift();
          if (next) {
            yield lp.encode.single(next).subarray();
            continue;
          }
          if (done) return;
          await new Promise<void>((r) => {
            wake = r;
          });
        }
      })(),
    );
    let step1 = 0;
    let step2 = 0;
    for await (const frame of lp.decode(
      (async function* () {
        for await (const c of stream.source) yield c.subarray();
      })(),
    )) {
      const msg = unpack(frame.subarray()) as {
        t: number;
        doc: string;
        sv?: Uint8Array;
        update?: Uint8Array;
      };
      if (msg.t === 1) {
        step1++;
        outbox.push(
          pack({ t: 2, doc: msg.doc, update: Y.encodeStateAsUpdate(clientDocs[msg.doc]!, msg.sv) }),
        );
        if (step1 === 3) done = true;
        wake?.();
      } else if (msg.t === 2) {
        step2++;
        Y.applyUpdate(clientDocs[msg.doc]!, msg.update!);
      }
      if (step1 === 3 && step2 === 3) break;
    }
    await writing;
    await stream.close();
    assert.equal(clientDocs.workloads!.getMap('specs').get('from-server'), 1);
    await waitFor('the server to apply the client update', () => readSpec(server, 'from-client') === 2);
    await waitFor('the session counted ok', async () => (await sessions(server, 'ok')) === 1);
  });

  test('a document larger than one frame syncs in parts; more than the sync limit is refused', async (t) => {
    // 64 KiB frames; the sync limit 4 frames' worth.
    const limits = { maxUpdateBytes: MAX_UPDATE_BYTES, maxSyncUpdateBytes: 4 * MAX_UPDATE_BYTES };
    const big = await startNode('big', limits);
    t.after(() => stopNode(big));
    // About 150 KiB of specs: more than two frames.
    for (let k = 0; k < 30; k++) writeSpec(big, `blob-${k}`, `${k}:${'x'.repeat(5000)}`);
    const newcomer = await startNode('newcomer', { ...limits, bootstrap: [big.gossip.multiaddrs()[0]!] });
    t.after(() => stopNode(newcomer));
    await waitFor(
      'the newcomer holds the whole document',
      () => readSpec(newcomer, 'blob-29') === `29:${'x'.repeat(5000)}`,
    );
    assert.equal(newcomer.state.digest('workloads'), big.state.digest('workloads'));
    assert.equal(await metricValue(newcomer, 'silo_sync_sessions_total', { result: 'oversize' }), 0);

    // Past the sync limit: the session ends oversize on the sender, and nothing half-applied.
    for (let k = 30; k < 60; k++) writeSpec(big, `blob-${k}`, `${k}:${'y'.repeat(5000)}`);
    const tooFar = await startNode('too-far', { ...limits, bootstrap: [big.gossip.multiaddrs()[0]!] });
    t.after(() => stopNode(tooFar));
    await waitFor(
      'the sender refused the oversize diff',
      async () => (await metricValue(big, 'silo_sync_sessions_total', { result: 'oversize' })) >= 1,
    );
    assert.equal(readSpec(tooFar, 'blob-0'), undefined);
  });

  test('the deadline is for silence, not for the whole session: a slow but moving peer completes', async (t) => {
    const server = await startNode('server', { syncTimeoutMs: 600 });
    const client = await rawClient();
    t.after(async () => {
      await client.stop();
      await stopNode(server);
    });
    const emptySv = Y.encodeStateVector(new Y.Doc());
    const empty = Y.encodeStateAsUpdate(new Y.Doc());
    const frames = [
      ...DOC_NAMES.map((doc) => pack({ t: 1, doc, sv: emptySv })),
      ...DOC_NAMES.map((doc) => pack({ t: 2, doc, update: empty })),
    ];
    // Six frames 300 ms apart: 1.8 s in all, three times the deadline, never 600 ms of silence.
    const stream = await openSync(client, server);
    const writing = stream.sink(
      lp.encode(
        (async function* () {
          for (const frame of frames) {
            await new Promise((resolve) => setTimeout(resolve, 300));
            yield frame;
          }
        })(),
      ),
    );
    for await (const _ of stream.source) {
      // The server's frames.
    }
    await writing;
    await waitFor('the slow session completed', async () => (await sessions(server, 'ok')) === 1);
    assert.equal(await sessions(server, 'timeout'), 0);

    // Silence longer than the deadline still ends a session.
    const stalled = await openSync(client, server);
    void stalled
      .sink(
        (async function* () {
          yield lp.encode.single(frames[0]!).subarray();
          await new Promise((resolve) => setTimeout(resolve, 1500));
        })(),
      )
      .catch(() => undefined);
    await waitFor('the silent session timed out', async () => (await sessions(server, 'timeout')) === 1);
  });

  test('malformed frames abort the session, are counted and never touch the documents', async (t) => {
    const server = await startNode('server', {
      maxUpdateBytes: MAX_UPDATE_BYTES,
      maxSyncUpdateBytes: 4 * MAX_UPDATE_BYTES,
    });
    const client = await rawClient();
    t.after(async () => {
      await client.stop();
      await stopNode(server);
    });
    writeSpec(server, 'x', 1);
    const before = server.state.digestsAll();
    const emptySv = Y.encodeStateVector(new Y.Doc());
    const good = new Y.Doc();
    good.getMap('specs').set('evil', 1);
    const goodUpdate = Y.encodeStateAsUpdate(good);

    const cases: [string, Uint8Array[], string][] = [
      ['not msgpack', [lp.encode.single(Uint8Array.from([0xc1, 0x00])).subarray()], 'malformed'],
      ['unknown frame type', [framed({ t: 7, doc: 'workloads' })], 'malformed'],
      [
        'duplicate step 1',
        [framed({ t: 1, doc: 'workloads', sv: emptySv }), framed({ t: 1, doc: 'workloads', sv: emptySv })],
        'malformed',
      ],
      [
        'truncated Yjs update',
        [framed({ t: 2, doc: 'workloads', update: goodUpdate.subarray(0, goodUpdate.length - 2) })],
        'invalid-update',
      ],
      // A length prefix announcing a 10 MB frame: refused before it is read.
      ['oversize frame', [Uint8Array.from([0x80, 0xad, 0xe2, 0x04]), new Uint8Array(64)], 'oversize'],
      ['session cut short', [framed({ t: 1, doc: 'workloads', sv: emptySv })], 'malformed'],
      [
        'step 2 "more" not true',
        [framed({ t: 2, doc: 'workloads', update: goodUpdate, more: 1 })],
        'malformed',
      ],
      [
        'step 2 parts past the sync limit',
        Array.from({ length: 5 }, () =>
          framed({ t: 2, doc: 'workloads', update: new Uint8Array(MAX_UPDATE_BYTES - 64), more: true }),
        ),
        'oversize',
      ],
      [
        'step 2 parts that do not join into an update',
        [
          framed({ t: 2, doc: 'workloads', update: goodUpdate.subarray(0, 3), more: true }),
          framed({ t: 2, doc: 'workloads', update: Uint8Array.from([0xff, 0xff, 0xff]) }),
        ],
        'invalid-update',
      ],
    ];
    for (const [name, chunks, result] of cases) {
      const expected = cases
        .slice(0, cases.findIndex((c) => c[0] === name) + 1)
        .filter((c) => c[2] === result).length;
      await sendRaw(client, server, chunks);
      await waitFor(`${name} counted as ${result}`, async () => (await sessions(server, result)) >= expected);
    }
    assert.deepEqual(server.state.digestsAll(), before);
    assert.equal(readSpec(server, 'evil'), undefined);
    assert.equal(await sessions(server, 'ok'), 0);
  });
});
