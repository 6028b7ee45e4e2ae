import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { multiaddr } from '@multiformats/multiaddr';
import * as lp from 'it-length-prefixed';
import { pack, unpack } from 'msgpackr';
import * as Y from 'yjs';
import { generateNodeKey, SYNC_PROTOCOL } from '../../src/gossip/index.js';
import { createGossipNode, type GossipNode } from '../../src/gossip/node.js';
import { diffSlices } from '../../src/state/diff-slices.js';
import { DOC_NAMES, type DocName } from '../../src/state/names.js';
import {
  digestsEqual,
  metricValue,
  readSpec,
  startNode,
  stopNode,
  type TestNode,
  waitFor,
  writeSpec,
} from './helpers.js';

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

interface Step2 {
  doc: DocName;
  update: Uint8Array;
  more?: true;
  next?: true;
}

/**
 * One session as a stock client: step 1 for every document (with `slices` when asked), the
 * server's step 1 answered by `answer` (frames to send, in order, with `pause` between them),
 * and every step 2 frame the server sent, until three complete step 2 arrived.
 */
async function rawSession(
  client: GossipNode,
  server: TestNode,
  options: {
    slices: boolean;
    answer?: (doc: DocName, sv: Uint8Array) => Record<string, unknown>[];
    between?: (sent: number) => void;
  },
): Promise<Step2[]> {
  const stream = await openSync(client, server);
  const outbox: Uint8Array[] = DOC_NAMES.map((doc) =>
    pack(options.slices ? { t: 1, doc, sv: emptySv(), slices: true } : { t: 1, doc, sv: emptySv() }),
  );
  let wake: (() => void) | undefined;
  let done = false;
  let sentFrames = 0;
  const writing = stream.sink(
    (async function* () {
      while (true) {
        const next = outbox.shift();
        if (next) {
          yield lp.encode.single(next).subarray();
          options.between?.(++sentFrames);
          await new Promise((resolve) => setTimeout(resolve, 5));
          continue;
        }
        if (done) return;
        await new Promise<void>((r) => {
          wake = r;
        });
      }
    })(),
  );
  const received: Step2[] = [];
  let step1 = 0;
  let complete = 0;
  try {
    for await (const frame of lp.decode(
      (async function* () {
        for await (const c of stream.source) yield c.subarray();
      })(),
    )) {
      const msg = unpack(frame.subarray()) as { t: number; doc: DocName; sv: Uint8Array } & Step2;
      if (msg.t === 1) {
        step1++;
        const answer = options.answer?.(msg.doc, msg.sv) ?? [
          { t: 2, doc: msg.doc, update: Y.encodeStateAsUpdate(new Y.Doc()) },
        ];
        outbox.push(...answer.map((f) => pack(f)));
        if (step1 === 3) done = true;
        wake?.();
      } else if (msg.t === 2) {
        received.push(msg);
        if (msg.more !== true && msg.next !== true) complete++;
      }
      if (step1 === 3 && complete === 3) break;
    }
    await writing;
    await stream.close();
  } catch {
    // The server aborts the stream on a protocol error.
    await writing.catch(() => undefined);
  }
  return received;
}

const emptySv = () => Y.encodeStateVector(new Y.Doc());

/** Overwrites and deletes as well as new keys: about 100 bytes a spec. */
function writeMany(node: TestNode, n: number): void {
  for (let k = 0; k < n; k++) writeSpec(node, `spec-${k}`, { k, pad: 'p'.repeat(80) });
  for (let k = 0; k < n; k += 7) writeSpec(node, `spec-${k}`, { k, again: true });
  node.state.transactLocal('workloads', (doc) => {
    for (let k = 3; k < n; k += 11) doc.getMap('specs').delete(`spec-${k}`);
  });
}

function sameDoc(a: Y.Doc, b: Y.Doc): void {
  assert.deepEqual(Y.encodeStateVector(a), Y.encodeStateVector(b));
  assert.ok(Y.equalSnapshots(Y.snapshot(a), Y.snapshot(b)), 'same state vector and delete set');
  assert.deepEqual(a.getMap('specs').toJSON(), b.getMap('specs').toJSON());
}

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
        'step 2 "next" not true',
        [framed({ t: 2, doc: 'workloads', update: goodUpdate, next: 1 })],
        'malformed',
      ],
      [
        'step 2 with both "more" and "next"',
        [framed({ t: 2, doc: 'workloads', update: goodUpdate, more: true, next: true })],
        'malformed',
      ],
      [
        'an epoch for the observed document, which has none',
        [framed({ t: 1, doc: 'observed', sv: emptySv, e: [1, 'ab'] })],
        'malformed',
      ],
      [
        'step 2 with an epoch that is not [number, id]',
        [framed({ t: 2, doc: 'workloads', update: goodUpdate, e: [1] })],
        'malformed',
      ],
      [
        'step 1 "slices" not true',
        [framed({ t: 1, doc: 'workloads', sv: emptySv, slices: 'yes' })],
        'malformed',
      ],
      [
        'step 2 slices past the sync limit',
        Array.from({ length: 5 }, () =>
          // All zeros: an empty Yjs update (no structs, no deletes), valid on its own.
          framed({ t: 2, doc: 'workloads', update: new Uint8Array(MAX_UPDATE_BYTES - 64), next: true }),
        ),
        'oversize',
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

  test('a large diff goes in slices to a peer that announces them, whole to one that does not', async (t) => {
    const server = await startNode('server', { syncSliceLimits: { bytes: 4096, structs: 40 } });
    const client = await rawClient();
    t.after(async () => {
      await client.stop();
      await stopNode(server);
    });
    writeMany(server, 300);
    const serverDoc = server.state.doc('workloads');

    const sliced = (await rawSession(client, server, { slices: true })).filter((f) => f.doc === 'workloads');
    assert.ok(sliced.length > 3, `${sliced.length} step 2 frames`);
    assert.ok(sliced.slice(0, -1).every((f) => f.next === true && f.more === undefined));
    assert.equal(sliced.at(-1)?.next, undefined);
    const fromSlices = new Y.Doc();
    for (const f of sliced) {
      Y.applyUpdate(fromSlices, f.update);
      assert.equal(fromSlices.store.pendingStructs, null, 'each slice integrates at once');
    }
    sameDoc(fromSlices, serverDoc);

    // A peer of an older silo announces nothing: one update, as before.
    const whole = (await rawSession(client, server, { slices: false })).filter((f) => f.doc === 'workloads');
    assert.equal(whole.length, 1);
    assert.deepEqual(new Uint8Array(whole[0]!.update), Y.encodeStateAsUpdate(serverDoc));
    await waitFor('both sessions counted ok', async () => (await sessions(server, 'ok')) === 2);
  });

  test('a newcomer catches up a large document in slices, deletes included', async (t) => {
    const limits = { syncSliceLimits: { bytes: 2048, structs: 25 } };
    const big = await startNode('big', limits);
    t.after(() => stopNode(big));
    writeMany(big, 400);
    const newcomer = await startNode('newcomer', { ...limits, bootstrap: [big.gossip.multiaddrs()[0]!] });
    t.after(() => stopNode(newcomer));
    // Writes on both sides while the slices travel.
    for (let k = 0; k < 20; k++) {
      writeSpec(big, `during-${k}`, k);
      writeSpec(newcomer, `newcomer-${k}`, k);
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    await waitFor('equal digests', () => digestsEqual([big, newcomer]), 60_000);
    sameDoc(newcomer.state.doc('workloads'), big.state.doc('workloads'));
    for (const node of [big, newcomer]) {
      for (const result of ['malformed', 'invalid-update', 'oversize']) {
        assert.equal(await metricValue(node, 'silo_sync_sessions_total', { result }), 0, result);
      }
    }
  });

  test('slices received are applied one by one; a bad slice aborts with the good ones kept', async (t) => {
    const server = await startNode('server');
    const client = await rawClient();
    t.after(async () => {
      await client.stop();
      await stopNode(server);
    });
    const source = new Y.Doc();
    for (let k = 0; k < 300; k++) source.getMap('specs').set(`c-${k}`, { k, pad: 'q'.repeat(60) });
    for (let k = 0; k < 300; k += 5) source.getMap('specs').delete(`c-${k}`);
    const slices = [...diffSlices(source, emptySv(), { bytes: 2048, structs: 30 })];
    assert.ok(slices.length > 3);
    const step2 = (doc: DocName, update: Uint8Array, next: boolean) =>
      next ? { t: 2, doc, update, next: true } : { t: 2, doc, update };
    const empty = Y.encodeStateAsUpdate(new Y.Doc());

    // Good slices, with a local write landing between two of them.
    await rawSession(client, server, {
      slices: true,
      answer: (doc) =>
        doc === 'workloads' ? slices.map((s) => step2(doc, s.update, !s.last)) : [step2(doc, empty, false)],
      between: (sent) => {
        if (sent === 6) writeSpec(server, 'between', 1);
      },
    });
    await waitFor('the sliced session counted ok', async () => (await sessions(server, 'ok')) === 1);
    const expected = new Y.Doc();
    Y.applyUpdate(expected, Y.encodeStateAsUpdate(source));
    expected.getMap('specs').set('between', 1);
    assert.deepEqual(
      server.state.doc('workloads').getMap('specs').toJSON(),
      expected.getMap('specs').toJSON(),
    );
    assert.ok(
      Y.snapshotContainsUpdate(Y.snapshot(server.state.doc('workloads')), Y.encodeStateAsUpdate(source)),
    );

    // Another source: its first slice is good, the second truncated.
    const other = new Y.Doc();
    for (let k = 0; k < 200; k++) other.getMap('specs').set(`o-${k}`, { k, pad: 'r'.repeat(60) });
    const [first, second] = [...diffSlices(other, emptySv(), { bytes: 2048, structs: 30 })];
    const before = Y.encodeStateAsUpdate(server.state.doc('workloads'));
    await rawSession(client, server, {
      slices: true,
      answer: (doc) =>
        doc === 'workloads'
          ? [
              step2(doc, first!.update, true),
              step2(doc, second!.update.subarray(0, second!.update.length - 3), true),
            ]
          : [step2(doc, empty, false)],
    });
    await waitFor('the bad slice counted', async () => (await sessions(server, 'invalid-update')) === 1);
    const reference = new Y.Doc();
    Y.applyUpdate(reference, before);
    Y.applyUpdate(reference, first!.update);
    sameDoc(server.state.doc('workloads'), reference);
  });
});
