import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { appendFile, lstat, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { prepareSocketPath, SocketPathError } from '../../src/agent/api/unix-socket.js';
import { type RunningAgent, startAgent } from '../../src/agent/run-agent.js';
import { signRequest } from '../../src/cli/commands/ca.js';
import { initNode } from '../../src/cli/commands/node.js';
import { initOrg } from '../../src/cli/commands/org.js';
import { freeLoopbackPorts } from '../../src/cli/demo/free-port.js';
import { parseAgentConfig } from '../../src/config/load.js';
import { issueEnrollment, signRevocation } from '../../src/identity/ca.js';
import { signImageDigest } from '../../src/identity/image-signing.js';
import { loadOrg } from '../../src/identity/org.js';
import { buildImage } from '../../src/reconciler/image.js';
import { silentLogger } from '../../src/util/logger.js';
import { tempDir } from './helpers.js';

interface Raw {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
  json: () => { error?: { code: string; message: string } } & Record<string, unknown>;
}

function raw(
  target: { socketPath: string } | { port: number },
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const payload =
      body === undefined ? undefined : Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body));
    const h: Record<string, string> = { ...headers };
    if (payload && !h['content-type']) h['content-type'] = 'application/json';
    const req = httpRequest(
      { ...('port' in target ? { host: '127.0.0.1', port: target.port } : target), method, path, headers: h },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString();
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json: () => JSON.parse(text) });
        });
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

const TOKEN = 'test-token-0123456789abcdef';

describe('control API', () => {
  let dir: string;
  let remove: () => Promise<void>;
  let running: RunningAgent;
  let socket: { socketPath: string };
  let tcpPort: number;
  let orgDir: string;
  let dataDir: string;

  before(async () => {
    ({ dir, remove } = await tempDir('silo-api-'));
    orgDir = join(dir, 'org');
    await initOrg({ dir: orgDir, name: 'apitest', cidr: '10.50.0.0/24' });
    const [gossipPort, apiPort] = await freeLoopbackPorts(2);
    dataDir = join(dir, 'n1');
    const identityDir = join(dataDir, 'identity');
    const init = await initNode({
      dir: identityDir,
      id: 'n1',
      endpoints: [`/ip4/127.0.0.1/tcp/${gossipPort}`],
      cpus: 1,
      memoryMb: 256,
      scratchMb: 100,
      labels: {},
    });
    await signRequest({
      orgDir,
      requestFile: init.requestFile,
      out: join(identityDir, 'enrollment.json'),
      seeds: [],
    });
    await writeFile(join(dir, 'token'), `${TOKEN}\n`, { mode: 0o600 });
    const config = parseAgentConfig(
      {
        org: 'apitest',
        node: { id: 'n1', data_dir: dataDir },
        gossip: { listen: [`/ip4/127.0.0.1/tcp/${gossipPort}`] },
        api: { tcp: `127.0.0.1:${apiPort}`, token_file: join(dir, 'token') },
        storage: { durability: 'nosync' },
      },
      'test',
    );
    running = await startAgent(config, { logger: silentLogger() });
    socket = { socketPath: join(dataDir, 'silo.sock') };
    tcpPort = running.api.tcpAddress?.port ?? 0;
  });

  after(async () => {
    await running?.stop();
    await remove?.();
  });

  test('the socket is 0600; status answers with convergence', async () => {
    const info = await lstat(socket.socketPath);
    assert.ok(info.isSocket());
    assert.equal(info.mode & 0o777, 0o600);
    const res = await raw(socket, 'GET', '/v1/status');
    assert.equal(res.status, 200);
    const body = res.json();
    assert.equal(body.nodeId, 'n1');
    assert.equal(body.org, 'apitest');
    assert.ok(body.convergence && typeof body.convergence === 'object');
  });

  test('errors are JSON {error: {code, message}} with the right status', async () => {
    const unknownRoute = await raw(socket, 'GET', '/v1/nope');
    assert.equal(unknownRoute.status, 404);
    assert.equal(unknownRoute.json().error?.code, 'not_found');

    const badJson = await raw(socket, 'PUT', '/v1/workloads/x', Buffer.from('{not json'), {
      'content-type': 'application/json',
    });
    assert.equal(badJson.status, 400);
    assert.equal(badJson.json().error?.code, 'bad_request');

    const badName = await raw(socket, 'GET', '/v1/workloads/Bad%20Name');
    assert.equal(badName.status, 400);
    assert.match(badName.json().error?.message ?? '', /workload name/);

    const unknown = await raw(socket, 'GET', '/v1/workloads/ghost');
    assert.equal(unknown.status, 404);
    assert.equal(unknown.json().error?.message, 'unknown workload "ghost"');

    const unknownNode = await raw(socket, 'POST', '/v1/nodes/ghost/drain', {});
    assert.equal(unknownNode.status, 404);

    // Outside testing found fastify's own shapes and codes at these edges.
    const huge = await raw(socket, 'PUT', '/v1/workloads/x', Buffer.alloc(20 * 1024 * 1024, 0x20), {
      'content-type': 'application/json',
    });
    assert.equal(huge.status, 413);
    assert.equal(huge.json().error?.code, 'too_large');
    const longName = await raw(socket, 'GET', `/v1/workloads/${'a'.repeat(5000)}`);
    assert.equal(longName.status, 400);
    assert.equal(longName.json().error?.code, 'bad_request');
    assert.match(longName.json().error?.message ?? '', /workload name/);
    const proto = await raw(socket, 'PUT', '/v1/workloads/x', Buffer.from('{"__proto__": {"x": 1}}'), {
      'content-type': 'application/json',
    });
    assert.equal(proto.status, 400);
    assert.equal(proto.json().error?.code, 'bad_request');
    assert.match(proto.json().error?.message ?? '', /__proto__/);
  });

  test('PUT/GET/DELETE a workload: validated, revision bumped, signature checked', async () => {
    const org = await loadOrg(orgDir);
    const digest = `sha256:${'ab'.repeat(32)}`;
    const spec = {
      tier: 'org-container',
      image: 'demo',
      imageDigest: digest,
      imageSignature: signImageDigest(org.caPrivateKey, digest),
      command: '/bin/demo',
      args: [],
      env: {},
      scratchMb: 10,
      scratchClass: 'volatile',
      network: 'none',
      cpus: 0.5,
      memoryMb: 64,
      restart: 'always',
      stopSignal: 'SIGTERM',
      stopTimeoutMs: 1000,
      startTimeoutMs: 1000,
      constraints: {},
      onPartition: 'keep',
    };
    const before = (await raw(socket, 'GET', '/v1/status')).json().digests;

    for (const [field, value] of [
      ['cpus', 1e308],
      ['memoryMb', 2 ** 52],
      ['scratchMb', 2 ** 52],
    ] as const) {
      const absurd = await raw(socket, 'PUT', '/v1/workloads/web', { ...spec, [field]: value });
      assert.equal(absurd.status, 400, field);
      assert.match(absurd.json().error?.message ?? '', new RegExp(field), field);
    }
    // An exclusive workload whose stop_timeout the witnesses' lease bound cannot cover (rule W6).
    const slowStop = await raw(socket, 'PUT', '/v1/workloads/web', {
      ...spec,
      scratchClass: 'persistent',
      stopTimeoutMs: 31_000,
    });
    assert.equal(slowStop.status, 400);
    assert.match(
      slowStop.json().error?.message ?? '',
      /stopTimeoutMs 31000 is longer than this cluster allows an exclusive workload \(services\.max_stop_timeout = 30 s\)/,
    );
    const typo = await raw(socket, 'PUT', '/v1/workloads/web', { ...spec, cpu: 1 });
    assert.equal(typo.status, 400);
    assert.match(typo.json().error?.message ?? '', /Unrecognized key: "cpu"/);
    const mismatch = await raw(socket, 'PUT', '/v1/workloads/web', { ...spec, name: 'other' });
    assert.equal(mismatch.status, 400);
    assert.match(mismatch.json().error?.message ?? '', /does not match/);
    const unsigned = await raw(socket, 'PUT', '/v1/workloads/web', {
      ...spec,
      imageSignature: `${'A'.repeat(86)}==`,
    });
    assert.equal(unsigned.status, 400);
    assert.match(unsigned.json().error?.message ?? '', /not the org CA's signature/);
    assert.deepEqual(
      (await raw(socket, 'GET', '/v1/status')).json().digests,
      before,
      'refused input changes nothing',
    );

    const created = await raw(socket, 'PUT', '/v1/workloads/web', spec);
    assert.equal(created.status, 201);
    assert.equal((created.json().spec as { revision: number }).revision, 1);
    const same = await raw(socket, 'PUT', '/v1/workloads/web', spec);
    assert.equal(same.status, 200);
    assert.equal(same.json().changed, false);
    const changed = await raw(socket, 'PUT', '/v1/workloads/web', { ...spec, cpus: 1 });
    assert.equal((changed.json().spec as { revision: number }).revision, 2);

    const list = (await raw(socket, 'GET', '/v1/workloads')).json().workloads as Array<
      Record<string, unknown>
    >;
    assert.deepEqual(
      list.map((w) => [w.name, w.phase, w.holder]),
      [['web', 'pending', null]],
    );
    assert.equal((await raw(socket, 'DELETE', '/v1/workloads/web')).status, 200);
    assert.equal((await raw(socket, 'DELETE', '/v1/workloads/web')).status, 404);
  });

  test('TCP listener requires the bearer token (401 JSON otherwise)', async () => {
    const none = await raw({ port: tcpPort }, 'GET', '/v1/status');
    assert.equal(none.status, 401);
    assert.equal(none.json().error?.code, 'unauthorized');
    assert.match(String(none.headers['www-authenticate']), /Bearer/);
    const wrong = await raw({ port: tcpPort }, 'GET', '/v1/status', undefined, {
      authorization: 'Bearer nope',
    });
    assert.equal(wrong.status, 401);
    const right = await raw({ port: tcpPort }, 'GET', '/v1/status', undefined, {
      authorization: `Bearer ${TOKEN}`,
    });
    assert.equal(right.status, 200);
  });

  test('drain and undrain set the flag; nodes lists it', async () => {
    const drained = await raw(socket, 'POST', '/v1/nodes/n1/drain', { by: 'test' });
    assert.equal(drained.status, 200);
    assert.equal(drained.json().draining, true);
    const badBody = await raw(socket, 'POST', '/v1/nodes/n1/drain', { who: 'x' });
    assert.equal(badBody.status, 400);
    let nodes = (await raw(socket, 'GET', '/v1/nodes')).json().nodes as Array<Record<string, unknown>>;
    assert.equal(nodes[0]?.draining, true);
    assert.equal(nodes[0]?.liveness, 'alive');
    assert.equal(nodes[0]?.self, true);
    await raw(socket, 'POST', '/v1/nodes/n1/undrain', {});
    nodes = (await raw(socket, 'GET', '/v1/nodes')).json().nodes as Array<Record<string, unknown>>;
    assert.equal(nodes[0]?.draining, false);
  });

  test('enrollment records: CA signature verified, clashes refused (409), valid ones added', async () => {
    const org = await loadOrg(orgDir);
    const self = running.agent.enrollment.get('n1');
    assert.ok(self);
    const n2 = await initNode({
      dir: join(dir, 'n2'),
      id: 'n2',
      endpoints: [],
      cpus: 1,
      memoryMb: 256,
      scratchMb: 0,
      labels: {},
    });
    const clash = issueEnrollment(org, n2.request, { allocatedIps: [], overlayIp: self.overlayIp }).record;
    const conflict = await raw(socket, 'POST', '/v1/enrollments', clash);
    assert.equal(conflict.status, 409);
    assert.match(conflict.json().error?.message ?? '', /already held by enrolled node "n1"/);

    const good = issueEnrollment(org, n2.request, { allocatedIps: [self.overlayIp] }).record;
    const forged = await raw(socket, 'POST', '/v1/enrollments', { ...good, labels: { forged: 'yes' } });
    assert.equal(forged.status, 400);
    assert.match(forged.json().error?.message ?? '', /bad-signature/);
    const added = await raw(socket, 'POST', '/v1/enrollments', good);
    assert.equal(added.status, 201);
    const nodes = (await raw(socket, 'GET', '/v1/nodes')).json().nodes as Array<Record<string, unknown>>;
    assert.deepEqual(
      nodes.map((n) => [n.nodeId, n.liveness]),
      [
        ['n1', 'alive'],
        ['n2', 'unknown'],
      ],
    );

    // Revocation: signature checked, unknown node 404, then revoked.
    const revocation = signRevocation(org.caPrivateKey, {
      nodeId: 'n2',
      revokedAt: Date.now(),
      reason: 'test',
    });
    const forgedRevocation = await raw(socket, 'POST', '/v1/revocations', { ...revocation, reason: 'other' });
    assert.equal(forgedRevocation.status, 400);
    const ghost = signRevocation(org.caPrivateKey, { nodeId: 'ghost', revokedAt: Date.now(), reason: '' });
    assert.equal((await raw(socket, 'POST', '/v1/revocations', ghost)).status, 404);
    assert.equal((await raw(socket, 'POST', '/v1/revocations', revocation)).status, 201);
    const after = (await raw(socket, 'GET', '/v1/nodes')).json().nodes as Array<Record<string, unknown>>;
    assert.deepEqual(after.find((n) => n.nodeId === 'n2')?.revoked, {
      revokedAt: revocation.revokedAt,
      reason: 'test',
    });
  });

  test('image upload: signature required, digest recomputed, stored', async () => {
    const org = await loadOrg(orgDir);
    const src = join(dir, 'img');
    await mkdir(join(src, 'bin'), { recursive: true });
    await writeFile(join(src, 'bin', 'app'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
    const tarFile = join(dir, 'img.tar');
    const { digest } = await buildImage(src, tarFile);
    const bytes = await readFile(tarFile);
    const signature = signImageDigest(org.caPrivateKey, digest);
    const tar = { 'content-type': 'application/x-tar' };

    assert.equal((await raw(socket, 'GET', `/v1/images/${digest}`)).status, 404);
    const unsigned = await raw(socket, 'PUT', `/v1/images/${digest}`, bytes, tar);
    assert.equal(unsigned.status, 400);
    assert.match(unsigned.json().error?.message ?? '', /x-silo-image-signature/);
    const otherDigest = `sha256:${'cd'.repeat(32)}`;
    const mismatch = await raw(socket, 'PUT', `/v1/images/${otherDigest}`, bytes, {
      ...tar,
      'x-silo-image-signature': signImageDigest(org.caPrivateKey, otherDigest),
    });
    assert.equal(mismatch.status, 400);
    assert.match(mismatch.json().error?.message ?? '', /digest mismatch/);
    assert.equal(
      (await raw(socket, 'GET', `/v1/images/${otherDigest}`)).status,
      404,
      'a mismatched upload is not kept',
    );

    const stored = await raw(socket, 'PUT', `/v1/images/${digest}`, bytes, {
      ...tar,
      'x-silo-image-signature': signature,
    });
    assert.equal(stored.status, 201);
    const got = await raw(socket, 'GET', `/v1/images/${digest}`);
    assert.deepEqual(got.json(), { digest, size: bytes.length });
    assert.equal((await stat(join(dataDir, 'images', 'sha256', digest.slice(7)))).size, bytes.length);
  });

  test('logs: tail of LOGS_DIRECTORY/current, follow streams appended lines', async () => {
    assert.equal((await raw(socket, 'GET', '/v1/logs/svc')).status, 404);
    const logs = join(dataDir, 'services', 'svc', 'logs');
    await mkdir(logs, { recursive: true });
    await writeFile(join(logs, 'current'), 'one\ntwo\nthree\n');
    const tail = await raw(socket, 'GET', '/v1/logs/svc?lines=2');
    assert.equal(tail.status, 200);
    assert.equal(tail.text, 'two\nthree\n');
    assert.equal((await raw(socket, 'GET', '/v1/logs/svc?lines=-1')).status, 400);

    const received = await new Promise<string>((resolve, reject) => {
      const req = httpRequest({ ...socket, path: '/v1/logs/svc?lines=1&follow=1' }, (res) => {
        let text = '';
        res.on('data', (chunk: Buffer) => {
          text += chunk.toString();
          if (text === 'three\n') void appendFile(join(logs, 'current'), 'four\n');
          if (text.includes('four\n')) {
            req.destroy();
            resolve(text);
          }
        });
      });
      req.on('error', reject);
      req.end();
    });
    assert.equal(received, 'three\nfour\n');
  });

  test('events: an SSE stream with one event per document change', async () => {
    const events = await new Promise<string[]>((resolve, reject) => {
      const seen: string[] = [];
      const req = httpRequest({ ...socket, path: '/v1/events' }, (res) => {
        assert.equal(res.headers['content-type'], 'text/event-stream');
        let buffer = '';
        res.on('data', (chunk: Buffer) => {
          buffer += chunk.toString();
          let end = buffer.indexOf('\n\n');
          while (end >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            seen.push(block);
            if (block.startsWith('event: hello')) void raw(socket, 'POST', '/v1/nodes/n1/drain', {});
            if (block.startsWith('event: state')) {
              req.destroy();
              resolve(seen);
            }
            end = buffer.indexOf('\n\n');
          }
        });
      });
      req.on('error', reject);
      req.end();
    });
    const state = events.find((e) => e.startsWith('event: state'));
    assert.ok(state);
    const data = JSON.parse(state.split('\ndata: ')[1] ?? '{}') as {
      doc: string;
      digest: string;
      origin: string;
    };
    assert.equal(data.doc, 'enrollment');
    assert.equal(data.origin, 'local');
    assert.equal(data.digest, running.agent.state.digest('enrollment'));
  });

  test('metrics: prometheus text of the agent registry', async () => {
    const res = await raw(socket, 'GET', '/v1/metrics');
    assert.equal(res.status, 200);
    assert.match(String(res.headers['content-type']), /^text\/plain/);
    assert.match(res.text, /silo_state_log_appends_total/);
  });
});

describe('control API socket file', () => {
  test('a stale socket is replaced, a live one or a non-socket is not', async (t) => {
    const { dir, remove } = await tempDir('silo-sock-');
    t.after(remove);
    const path = join(dir, 'api.sock');
    // A process that dies with SIGKILL leaves its socket file behind.
    const child = spawn(process.execPath, [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(path)}, () => console.log('up'))`,
    ]);
    await new Promise((resolve) => child.stdout.once('data', resolve));
    await assert.rejects(prepareSocketPath(path), (err: Error) => {
      assert.ok(err instanceof SocketPathError);
      assert.match(err.message, /another process is listening/);
      return true;
    });
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));
    assert.ok((await lstat(path)).isSocket(), 'stale socket left behind');
    await prepareSocketPath(path);
    await assert.rejects(lstat(path), /ENOENT/);

    await writeFile(path, 'not a socket');
    await assert.rejects(prepareSocketPath(path), /is not a socket; refusing to replace it/);

    await assert.rejects(prepareSocketPath(join(dir, 'x'.repeat(120))), /longer than 107 bytes/);
  });

  test('freeLoopbackPorts gives distinct bindable ports', async () => {
    const ports = await freeLoopbackPorts(3);
    assert.equal(new Set(ports).size, 3);
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(ports[0], '127.0.0.1', resolve));
    await new Promise((resolve) => server.close(resolve));
  });
});
