import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { appendFileSync, mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as lp from 'it-length-prefixed';
import { readServiceLog } from '../../src/agent/log-files.js';
import { packMessage, unpackMessage } from '../../src/gossip/codec.js';
import { LOGS_PROTOCOL, LogFetchError, type LogStream } from '../../src/gossip/log-exchange.js';
import { metricValue, startNode, stopAll, type TestNode, waitFor } from './helpers.js';

/**
 * `/silo/logs/1` between two real libp2p nodes over loopback TCP: the server
 * reads real log files (the agent's reader over a temp data directory).
 */

async function collect(stream: LogStream): Promise<string> {
  let text = '';
  for await (const chunk of stream.chunks) text += Buffer.from(chunk).toString('utf8');
  return text;
}

/** Reads from a followed stream until `text` has arrived (all of it, in order). */
async function readUntil(iterator: AsyncIterator<Uint8Array>, expected: string): Promise<string> {
  let text = '';
  while (!text.includes(expected)) {
    const next = await iterator.next();
    if (next.done) throw new Error(`stream ended after ${JSON.stringify(text)}`);
    text += Buffer.from(next.value).toString('utf8');
  }
  return text;
}

async function rejectsWith(promise: Promise<unknown>, code: string, pattern?: RegExp): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof LogFetchError, String(err));
    assert.equal(err.wireCode, code, err.message);
    if (pattern) assert.match(err.message, pattern);
    return true;
  });
}

describe('log exchange (/silo/logs/1)', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'silo-logx-'));
  const logDir = (name: string) => join(dataDir, 'services', name, 'logs');
  const denied = new Set<string>();
  let server: TestNode;
  let client: TestNode;
  let stranger: TestNode;
  let nodes: TestNode[] = [];

  before(async () => {
    server = await startNode('server', {
      logs: {
        read: (request, signal) => readServiceLog(dataDir, request, signal, 50),
        isPeerAllowed: (peerId) => !denied.has(peerId),
        limits: {
          requestTimeoutMs: 1000,
          keepaliveMs: 200,
          maxStreamsPerPeer: 2,
          maxStreamBytes: 200_000,
          maxChunkBytes: 16 * 1024,
        },
      },
    });
    nodes.push(server);
    const bootstrap = [server.gossip.multiaddrs()[0]!];
    client = await startNode('client', { bootstrap, logs: { limits: { idleTimeoutMs: 5000 } } });
    nodes.push(client);
    stranger = await startNode('stranger', { bootstrap });
    nodes.push(stranger);
    denied.add(stranger.gossip.peerId);
    await waitFor('connected', () => server.gossip.peers().length === 2);
    mkdirSync(logDir('web'), { recursive: true });
    writeFileSync(join(logDir('web'), 'current'), 'a\nb\nc\n');
  });
  after(async () => {
    await stopAll(nodes);
    nodes = [];
    rmSync(dataDir, { recursive: true, force: true });
  });

  test('the tail of a log on another node', async () => {
    const peer = server.gossip.peerId;
    const two = await client.gossip.logs.open(peer, { workload: 'web', lines: 2, follow: false });
    assert.equal(await collect(two), 'b\nc\n');
    const all = await client.gossip.logs.open(peer, { workload: 'web', lines: 100, follow: false });
    assert.equal(await collect(all), 'a\nb\nc\n');
    const none = await client.gossip.logs.open(peer, { workload: 'web', lines: 0, follow: false });
    assert.equal(await collect(none), '');
    assert.ok((await metricValue(server, 'silo_log_streams_total', { direction: 'in', result: 'ok' })) >= 3);
  });

  test('follow streams appended lines until the client closes; the server lets go', async () => {
    const stream = await client.gossip.logs.open(server.gossip.peerId, {
      workload: 'web',
      lines: 1,
      follow: true,
    });
    const iterator = stream.chunks[Symbol.asyncIterator]();
    assert.equal(await readUntil(iterator, 'c\n'), 'c\n');
    appendFileSync(join(logDir('web'), 'current'), 'd\n');
    assert.equal(await readUntil(iterator, 'd\n'), 'd\n');
    // Quiet for several keepalives: pings keep it open and carry no data.
    await new Promise((resolve) => setTimeout(resolve, 700));
    appendFileSync(join(logDir('web'), 'current'), 'e\n');
    assert.equal(await readUntil(iterator, 'e\n'), 'e\n');
    stream.close();
    assert.equal((await iterator.next()).done, true, 'a closed stream ends quietly');
    await waitFor(
      'the server stops serving',
      async () => (await metricValue(server, 'silo_log_streams_serving')) === 0,
    );
  });

  test('an aborted signal ends a follow the same way (the API client went away)', async () => {
    const controller = new AbortController();
    const stream = await client.gossip.logs.open(
      server.gossip.peerId,
      { workload: 'web', lines: 1, follow: true },
      controller.signal,
    );
    const iterator = stream.chunks[Symbol.asyncIterator]();
    await readUntil(iterator, '\n');
    await waitFor('serving', async () => (await metricValue(server, 'silo_log_streams_serving')) === 1);
    controller.abort();
    assert.equal((await iterator.next()).done, true);
    await waitFor(
      'the server stops serving',
      async () => (await metricValue(server, 'silo_log_streams_serving')) === 0,
    );
  });

  test('rotation is followed: a new file is read from its start', async () => {
    const stream = await client.gossip.logs.open(server.gossip.peerId, {
      workload: 'web',
      lines: 0,
      follow: true,
    });
    const iterator = stream.chunks[Symbol.asyncIterator]();
    const first = iterator.next();
    // Rotated: current renamed away, a new current started.
    const current = join(logDir('web'), 'current');
    renameSync(current, `${current}.1`);
    writeFileSync(current, 'fresh\n');
    const next = await first;
    assert.equal(next.done, false);
    let text = Buffer.from(next.value!).toString('utf8');
    if (!text.includes('fresh\n')) text += await readUntil(iterator, 'fresh\n');
    assert.equal(text, 'fresh\n');
    stream.close();
    await iterator.next();
    await waitFor(
      'the server stops serving',
      async () => (await metricValue(server, 'silo_log_streams_serving')) === 0,
    );
  });

  test('unknown workloads, refused peers, busy servers and bad requests get typed errors', async () => {
    const peer = server.gossip.peerId;
    await rejectsWith(
      client.gossip.logs.open(peer, { workload: 'ghost', lines: 1, follow: false }),
      'not-found',
      /no log of "ghost"/,
    );
    await rejectsWith(
      stranger.gossip.logs.open(peer, { workload: 'web', lines: 1, follow: false }),
      'refused',
      /not an enrolled node/,
    );
    await rejectsWith(
      client.gossip.logs.open(peer, { workload: '../etc', lines: 1, follow: false }),
      'malformed',
    );
    await rejectsWith(
      client.gossip.logs.open(peer, { workload: 'web', lines: -1, follow: false }),
      'malformed',
    );
    await rejectsWith(
      client.gossip.logs.open(peer, { workload: 'web', lines: 100_001, follow: false }),
      'malformed',
    );
    // Per-peer stream limit (2 in this server's limits).
    const open = [
      await client.gossip.logs.open(peer, { workload: 'web', lines: 0, follow: true }),
      await client.gossip.logs.open(peer, { workload: 'web', lines: 0, follow: true }),
    ];
    await rejectsWith(client.gossip.logs.open(peer, { workload: 'web', lines: 0, follow: true }), 'busy');
    for (const stream of open) {
      stream.close();
      // Start (and so finish) the generator: closing ends it at once.
      await stream.chunks[Symbol.asyncIterator]().next();
    }
    await waitFor(
      'the server stops serving',
      async () => (await metricValue(server, 'silo_log_streams_serving')) === 0,
    );
  });

  test('a stream larger than the server allows ends with code "limit"', async () => {
    mkdirSync(logDir('chatty'), { recursive: true });
    const line = `${'x'.repeat(99)}\n`;
    writeFileSync(join(logDir('chatty'), 'current'), line.repeat(3000)); // 300 KB > 200 KB limit
    const stream = await client.gossip.logs.open(server.gossip.peerId, {
      workload: 'chatty',
      lines: 100_000,
      follow: false,
    });
    let received = 0;
    await rejectsWith(
      (async () => {
        for await (const chunk of stream.chunks) received += chunk.byteLength;
      })(),
      'limit',
    );
    assert.ok(received > 0 && received <= 200_000, `received ${received}`);
  });

  describe('malformed requests are refused without harming the server', () => {
    async function raw(frames: Uint8Array[], holdOpenMs = 0): Promise<unknown[]> {
      const stream = await client.gossip.node.dialProtocol(server.gossip.node.peerId, LOGS_PROTOCOL);
      void stream
        .sink(
          (async function* () {
            yield* frames;
            if (holdOpenMs > 0) await new Promise((resolve) => setTimeout(resolve, holdOpenMs));
          })(),
        )
        .catch(() => undefined);
      const out: unknown[] = [];
      try {
        const bytes = (async function* () {
          for await (const chunk of stream.source) yield chunk.subarray();
        })();
        for await (const f of lp.decode(bytes)) out.push(unpackMessage(f.subarray()));
      } catch {
        // A reset after the answer is fine; the answer is what is checked.
      }
      return out;
    }
    const single = (value: unknown) => lp.encode.single(packMessage(value)).subarray();

    for (const [what, frames] of [
      ['not msgpack', [lp.encode.single(new Uint8Array([0xc1, 0xff, 0x00])).subarray()]],
      ['not a map', [single([1, 2, 3])]],
      ['wrong version', [single({ v: 2, workload: 'web', lines: 1, follow: false })]],
      ['lines as a string', [single({ v: 1, workload: 'web', lines: '5', follow: false })]],
      ['a path as workload', [single({ v: 1, workload: '../../etc/passwd', lines: 1, follow: false })]],
      ['an unknown field', [single({ v: 1, workload: 'web', lines: 1, follow: false, path: '/etc' })]],
      ['an oversize frame', [lp.encode.single(new Uint8Array(64 * 1024)).subarray()]],
      ['nothing at all', []],
    ] as const) {
      test(what, async () => {
        const answer = await raw([...frames]);
        assert.equal(answer.length, 1, JSON.stringify(answer));
        assert.deepEqual(
          { ok: (answer[0] as { ok: unknown }).ok, code: (answer[0] as { code: unknown }).code },
          { ok: false, code: 'malformed' },
        );
      });
    }

    test('a request that never comes times out', async () => {
      const answer = await raw([], 3000);
      assert.equal((answer[0] as { code: unknown }).code, 'timeout');
    });

    test('the server still serves afterwards', async () => {
      const stream = await client.gossip.logs.open(server.gossip.peerId, {
        workload: 'web',
        lines: 1,
        follow: false,
      });
      assert.match(await collect(stream), /\n$/);
      assert.ok(
        (await metricValue(server, 'silo_log_streams_total', { direction: 'in', result: 'malformed' })) >= 7,
      );
    });
  });

  test('a peer that answers garbage is a "malformed" error, not a crash', async () => {
    // The stranger answers the logs protocol with a frame that is not msgpack.
    await stranger.gossip.logs.stop();
    await stranger.gossip.node.handle(LOGS_PROTOCOL, ({ stream }) => {
      void stream.sink([lp.encode.single(new Uint8Array([0xc1])).subarray()]);
    });
    await rejectsWith(
      client.gossip.logs.open(stranger.gossip.peerId, { workload: 'web', lines: 1, follow: false }),
      'malformed',
    );
    await stranger.gossip.node.unhandle(LOGS_PROTOCOL);
    await rejectsWith(
      client.gossip.logs.open(stranger.gossip.peerId, { workload: 'web', lines: 1, follow: false }),
      'unreachable',
    );
  });
});
