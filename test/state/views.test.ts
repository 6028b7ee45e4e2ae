import { encodeRecord, slotKey } from '../../src/state/epochs/slot-codec.js';
import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Registry } from 'prom-client';
import * as Y from 'yjs';
import { ClusterState } from '../../src/state/cluster-state.js';
import { EnrollmentView } from '../../src/state/enrollment-view.js';
import { Origin } from '../../src/state/names.js';
import { ObservedView } from '../../src/state/observed-view.js';
import { type InvalidRecord, InvalidRecordError } from '../../src/state/record-check.js';
import type { SignedEnrollment } from '../../src/state/schemas.js';
import { WorkloadsView } from '../../src/state/workloads-view.js';
import { drainFlag, enrollmentRecord, observedStatus, workloadSpec } from '../fixtures/state-records.js';
import { metricValue, quietLogger } from '../fixtures/state-store.js';

function setup(extra: { verify?: (r: SignedEnrollment) => string | null } = {}) {
  const state = new ClusterState({ logger: quietLogger });
  const registry = new Registry();
  const invalid: InvalidRecord[] = [];
  const options = { state, logger: quietLogger, registry, onInvalid: (r: InvalidRecord) => invalid.push(r) };
  return {
    state,
    registry,
    invalid,
    enrollment: new EnrollmentView({ ...options, ...extra }),
    workloads: new WorkloadsView(options),
    observed: new ObservedView({ ...options, nodeId: 'node-a' }),
  };
}

/**
 * Writes raw values into a document the way a misbehaving peer would: in its
 * own Y.Doc, delivered as a remote update.
 */
function fromPeer(
  state: ClusterState,
  doc: 'enrollment' | 'workloads' | 'observed',
  write: (d: Y.Doc) => void,
) {
  const peer = new Y.Doc();
  Y.applyUpdate(peer, state.encodeDiff(doc));
  const sv = Y.encodeStateVector(peer);
  peer.transact(() => write(peer));
  state.applyRemote(doc, Y.encodeStateAsUpdate(peer, sv), Origin.remote);
}

const invalidTotal = (registry: Registry, labels: Record<string, string> = {}) =>
  metricValue(registry, 'silo_state_invalid_records_total', labels);

describe('EnrollmentView', () => {
  test('put, get, list, revoke, drain', () => {
    const { enrollment } = setup();
    enrollment.put(enrollmentRecord('node-b', 2));
    enrollment.put(enrollmentRecord('node-a', 1));
    assert.deepEqual(
      enrollment.list().map((r) => r.nodeId),
      ['node-a', 'node-b'],
    );
    assert.equal(enrollment.get('node-a')?.overlayIp, '10.0.0.2');
    assert.equal(enrollment.get('node-z'), undefined);
    assert.equal(enrollment.isRevoked('node-b'), false);
    enrollment.revoke({ nodeId: 'node-b', revokedAt: 5, reason: 'lost', cert: 'c2ln' });
    assert.equal(enrollment.isRevoked('node-b'), true);
    assert.deepEqual(
      enrollment.revocations().map((r) => r.nodeId),
      ['node-b'],
    );
    enrollment.setDraining('node-a', drainFlag(7));
    enrollment.setDraining('node-b', drainFlag(8, false));
    assert.equal(enrollment.isDraining('node-a'), true);
    assert.equal(enrollment.isDraining('node-b'), false);
    assert.deepEqual([...enrollment.drainFlags().keys()], ['node-a', 'node-b']);
  });

  test('returned records are copies: mutating them does not touch the document', () => {
    const { enrollment } = setup();
    enrollment.put(enrollmentRecord('node-a'));
    const record = enrollment.get('node-a');
    assert.ok(record);
    record.labels.zone = 'mutated';
    assert.equal(enrollment.get('node-a')?.labels.zone, 'a');
  });

  test('list and revocations follow every change (local, remote, inside a transaction) and are frozen', () => {
    const { state, enrollment } = setup();
    enrollment.put(enrollmentRecord('node-a'));
    const first = enrollment.list();
    // Shared with every caller until the next change, so frozen all the way down.
    assert.throws(() => {
      (first[0]!.labels as Record<string, string>).zone = 'mutated';
    }, TypeError);
    assert.throws(() => (first as unknown[]).pop(), TypeError);
    assert.equal(enrollment.list()[0]?.labels.zone, 'a');

    fromPeer(state, 'enrollment', (d) => d.getMap('nodes').set('node-b', enrollmentRecord('node-b', 2)));
    assert.deepEqual(
      enrollment.list().map((r) => r.nodeId),
      ['node-a', 'node-b'],
    );

    // An observer called after the transaction reads the new records, not the cached ones.
    const seenByObserver: string[][] = [];
    const off = enrollment.onChange(() => seenByObserver.push(enrollment.revocations().map((r) => r.nodeId)));
    enrollment.revoke({ nodeId: 'node-b', revokedAt: 5, reason: 'lost', cert: 'c2ln' });
    off();
    assert.deepEqual(seenByObserver, [['node-b']]);
    assert.equal(enrollment.isRevoked('node-b'), true);

    // Reads inside a transaction see its own writes.
    const inside = state.transactLocal('enrollment', () => {
      const before = enrollment.list().map((r) => r.nodeId);
      enrollment.put(enrollmentRecord('node-c', 3));
      return [before, enrollment.list().map((r) => r.nodeId)];
    });
    assert.deepEqual(inside, [
      ['node-a', 'node-b'],
      ['node-a', 'node-b', 'node-c'],
    ]);
    assert.deepEqual(
      enrollment.list().map((r) => r.nodeId),
      ['node-a', 'node-b', 'node-c'],
    );
  });

  test('writers reject invalid records with a clear error and write nothing', () => {
    const { enrollment, state } = setup();
    const before = state.digest('enrollment');
    assert.throws(
      () => enrollment.put({ ...enrollmentRecord('node-a'), wgPublicKey: 'short' }),
      (err: unknown) =>
        err instanceof InvalidRecordError &&
        /enrollment\/nodes record "node-a": wgPublicKey/.test(err.message),
    );
    assert.throws(
      () =>
        enrollment.put({ ...enrollmentRecord('node-a'), capacity: { cpus: -1, memoryMb: 1, scratchMb: 0 } }),
      /capacity\.cpus/,
    );
    assert.throws(() => enrollment.put(null as unknown as SignedEnrollment), InvalidRecordError);
    assert.throws(() => enrollment.setDraining('Not A Node', drainFlag(1)), /draining record "Not A Node"/);
    assert.throws(
      () => enrollment.revoke({ nodeId: 'node-a', revokedAt: -1, reason: '', cert: 'c2ln' }),
      /revokedAt/,
    );
    assert.equal(state.digest('enrollment'), before);
  });

  test('garbage from a peer is skipped, counted once per value, and never thrown', async () => {
    const { enrollment, state, registry, invalid } = setup();
    enrollment.put(enrollmentRecord('node-a'));
    fromPeer(state, 'enrollment', (d) => {
      const nodes = d.getMap('nodes');
      nodes.set('node-n', 42);
      nodes.set('node-m', new Y.Map());
      nodes.set('node-o', enrollmentRecord('node-other'));
      nodes.set('node-p', { ...enrollmentRecord('node-p'), overlayIp: '999.1.1.1' });
      nodes.set('node-q', null);
      d.getMap('revocations').set('node-a', 'revoked!');
      d.getMap('draining').set('BAD KEY', drainFlag(1));
      d.getMap('draining').set('node-a', { draining: 'yes' });
    });
    for (let i = 0; i < 3; i++) {
      assert.deepEqual(
        enrollment.list().map((r) => r.nodeId),
        ['node-a'],
      );
      assert.equal(enrollment.isRevoked('node-a'), false);
      assert.deepEqual([...enrollment.drainFlags().keys()], []);
      assert.equal(enrollment.isDraining('node-a'), false);
      assert.equal(enrollment.get('node-m'), undefined);
    }
    assert.equal(await invalidTotal(registry, { doc: 'enrollment', map: 'nodes' }), 5);
    assert.equal(await invalidTotal(registry, { doc: 'enrollment', map: 'revocations' }), 1);
    assert.equal(await invalidTotal(registry, { doc: 'enrollment', map: 'draining' }), 2);
    assert.equal(invalid.length, 8);
    const byKey = new Map(invalid.map((r) => [r.key, r.reason]));
    assert.match(byKey.get('node-m') ?? '', /nested Yjs type/);
    assert.match(byKey.get('node-o') ?? '', /another node's key/);
    assert.match(byKey.get('node-p') ?? '', /overlayIp/);
    assert.match(byKey.get('BAD KEY') ?? '', /bad key/);
    // A new bad value under a reported key is reported again.
    fromPeer(state, 'enrollment', (d) => d.getMap('nodes').set('node-n', 'still bad'));
    enrollment.list();
    assert.equal(await invalidTotal(registry, { doc: 'enrollment', map: 'nodes' }), 6);
  });

  test('the verify hook filters records and reports rejects once', async () => {
    const { enrollment, registry, invalid } = setup({
      verify: (r) => (r.cert === 'Z29vZA==' ? null : 'bad CA signature'),
    });
    enrollment.put({ ...enrollmentRecord('node-a'), cert: 'Z29vZA==' });
    enrollment.put({ ...enrollmentRecord('node-b'), cert: 'YmFk' });
    for (let i = 0; i < 3; i++) {
      assert.deepEqual(
        enrollment.list().map((r) => r.nodeId),
        ['node-a'],
      );
      assert.equal(enrollment.get('node-b'), undefined);
    }
    assert.equal(await metricValue(registry, 'silo_state_unverified_records_total', { map: 'nodes' }), 1);
    assert.equal(await invalidTotal(registry), 0);
    assert.deepEqual(invalid, [
      { doc: 'enrollment', map: 'nodes', key: 'node-b', reason: 'bad CA signature', kind: 'unverified' },
    ]);
  });

  test('a later unsigned record, garbage or deletion from a peer does not hide a signed one', () => {
    const good = 'Z29vZA==';
    const { enrollment, state } = setup({ verify: (r) => (r.cert === good ? null : 'bad CA signature') });
    enrollment.put({ ...enrollmentRecord('node-a'), cert: good });
    enrollment.put({ ...enrollmentRecord('node-b'), cert: good });
    enrollment.revoke({ nodeId: 'node-c', revokedAt: 5, reason: 'lost', cert: 'c2ln' });
    // A peer's own slots, stamped a minute ahead of every record here.
    const ahead = (d: Y.Doc, map: string, key: string, record: { v: unknown } | { d: true }) =>
      d.getMap(map).set(slotKey(key, 'node-p'), { s: [Date.now() + 60_000, 0, 'node-p'], ...record });
    fromPeer(state, 'enrollment', (d) => {
      ahead(d, 'nodes', 'node-a', {
        v: { ...enrollmentRecord('node-a'), labels: { evil: 'yes' }, cert: 'YmFk' },
      });
      ahead(d, 'nodes', 'node-b', { d: true });
      ahead(d, 'revocations', 'node-c', { d: true });
      ahead(d, 'nodes', 'node-d', { v: 42 });
    });
    assert.equal(enrollment.get('node-a')?.cert, good);
    assert.equal(enrollment.get('node-a')?.labels.evil, undefined);
    assert.deepEqual(
      enrollment.list().map((r) => r.nodeId),
      ['node-a', 'node-b'],
    );
    // computeActiveNodes reads the raw winners: they are the signed records too.
    assert.deepEqual(
      enrollment.rawEntries('nodes').map(([key, value]) => [key, (value as SignedEnrollment).cert]),
      [
        ['node-a', good],
        ['node-b', good],
      ],
    );
    // Without a verify hook (the simulator) the revocation still stands: a deletion never wins a signed map.
    assert.equal(enrollment.isRevoked('node-c'), true);
    // A newer signed record does win, from any slot.
    fromPeer(state, 'enrollment', (d) =>
      ahead(d, 'nodes', 'node-b', {
        v: { ...enrollmentRecord('node-b'), labels: { zone: 'z' }, cert: good },
      }),
    );
    assert.equal(enrollment.get('node-b')?.labels.zone, 'z');
  });

  test('epochs keep the signed record: garbage with a later stamp is neither carried into nor kept out by an epoch', () => {
    const good = 'Z29vZA==';
    const verify = (r: SignedEnrollment) => (r.cert === good ? null : 'bad CA signature');
    const garbage = (d: Y.Doc) =>
      d.getMap('nodes').set(slotKey('node-a', 'node-p'), {
        s: [Date.now() + 60_000, 0, 'node-p'],
        v: { ...enrollmentRecord('node-a'), cert: 'YmFk' },
      });
    // Started here: the new epoch holds the signed record, not the later garbage.
    const here = setup({ verify });
    here.enrollment.put({ ...enrollmentRecord('node-a'), cert: good });
    fromPeer(here.state, 'enrollment', garbage);
    here.state.startEpoch('enrollment');
    assert.equal(here.enrollment.get('node-a')?.cert, good);
    // Started by a node that keeps garbage (no views, so no rule): adopting it carries the signed record over.
    const careless = new ClusterState({ logger: quietLogger, nodeId: 'node-q' });
    careless.applyRemote('enrollment', here.state.encodeDiff('enrollment'));
    fromPeer(careless, 'enrollment', (d) => {
      d.getMap('nodes').delete(slotKey('node-a', 'local'));
      garbage(d);
    });
    const epoch = careless.startEpoch('enrollment');
    const other = setup({ verify });
    other.enrollment.put({ ...enrollmentRecord('node-a'), cert: good });
    other.state.adoptEpoch('enrollment', epoch, careless.encodeDiff('enrollment'));
    assert.deepEqual(other.state.epoch('enrollment'), epoch);
    assert.equal(other.enrollment.get('node-a')?.cert, good);
  });

  test('each stored record is verified once, however often it is chosen and read; a new one again', () => {
    const good = 'Z29vZA==';
    const checked: string[] = [];
    const { enrollment, state } = setup({
      verify: (r) => {
        checked.push(`${r.nodeId} ${r.cert}`);
        return r.cert === good ? null : 'bad CA signature';
      },
    });
    enrollment.put({ ...enrollmentRecord('node-a'), cert: good });
    enrollment.put({ ...enrollmentRecord('node-b'), cert: 'YmFk' });
    for (let i = 0; i < 5; i++) {
      assert.equal(enrollment.get('node-a')?.cert, good);
      assert.equal(enrollment.get('node-b'), undefined);
      assert.deepEqual(
        enrollment.list().map((r) => r.nodeId),
        ['node-a'],
      );
      // Other transactions drop the view's list cache; the verdicts stay.
      enrollment.setDraining('node-a', drainFlag(i, i % 2 === 0));
    }
    assert.deepEqual(checked.sort(), [`node-a ${good}`, 'node-b YmFk']);
    // A rewrite is another stored value: verified (and accepted) anew.
    enrollment.put({ ...enrollmentRecord('node-b'), cert: good });
    assert.equal(enrollment.get('node-b')?.cert, good);
    assert.deepEqual(checked.sort(), [`node-a ${good}`, 'node-b YmFk', `node-b ${good}`]);
    // So is the same record as delivered by a peer (a different object).
    fromPeer(state, 'enrollment', (d) =>
      d.getMap('nodes').set(slotKey('node-a', 'node-p'), {
        s: [Date.now() + 60_000, 0, 'node-p'],
        v: { ...enrollmentRecord('node-a'), labels: { zone: 'z' }, cert: good },
      }),
    );
    assert.equal(enrollment.get('node-a')?.labels.zone, 'z');
    assert.equal(checked.filter((c) => c === `node-a ${good}`).length, 2);
  });

  test('a throwing verifier counts as a rejection, not a crash', () => {
    const { enrollment, invalid } = setup({
      verify: () => {
        throw new Error('boom');
      },
    });
    enrollment.put(enrollmentRecord('node-a'));
    assert.deepEqual(enrollment.list(), []);
    assert.match(invalid[0]?.reason ?? '', /verifier threw: boom/);
  });
});

describe('WorkloadsView', () => {
  test('a record stamped far ahead of this clock is kept, counted once and still outranked by a rewrite', async () => {
    const { workloads, state, registry } = setup();
    const ahead = (minutes: number, spec: ReturnType<typeof workloadSpec>) =>
      fromPeer(state, 'workloads', (d) =>
        d.getMap('specs').set(slotKey(spec.name, 'node-p'), {
          s: [Date.now() + minutes * 60_000, 0, 'node-p'],
          v: { ...spec, revision: 1 },
        }),
      );
    const future = () => metricValue(registry, 'silo_state_future_stamps_total', { map: 'specs' });
    ahead(1, workloadSpec('near'));
    assert.equal(workloads.get('near')?.name, 'near');
    assert.equal(await future(), 0, 'a minute ahead is ordinary skew');
    ahead(60 * 24, workloadSpec('far', { cpus: 2 }));
    for (let i = 0; i < 3; i++) assert.equal(workloads.get('far')?.cpus, 2);
    workloads.put(workloadSpec('other'));
    assert.equal(await future(), 1, 'counted once, however often the map is read');
    // Our rewrite observes the far stamp first, so it wins (our clock is dragged along, not ignored).
    workloads.put(workloadSpec('far', { cpus: 3 }));
    assert.equal(workloads.get('far')?.cpus, 3);
  });

  test('put bumps the revision on change only; get, list, delete', () => {
    const { workloads } = setup();
    assert.equal(workloads.put(workloadSpec('web')).revision, 1);
    assert.equal(workloads.put(workloadSpec('web', { revision: 99 })).revision, 1, 'unchanged spec: no bump');
    assert.equal(workloads.put(workloadSpec('web', { cpus: 2 })).revision, 2);
    assert.equal(workloads.put(workloadSpec('web', { cpus: 3 })).revision, 3);
    workloads.put(workloadSpec('db'));
    assert.deepEqual(
      workloads.list().map((s) => [s.name, s.revision]),
      [
        ['db', 1],
        ['web', 3],
      ],
    );
    assert.equal(workloads.get('web')?.cpus, 3);
    assert.equal(workloads.delete('web'), true);
    assert.equal(workloads.delete('web'), false);
    assert.equal(workloads.get('web'), undefined);
  });

  test('writers reject invalid specs with a clear error', () => {
    const { workloads } = setup();
    assert.throws(
      () => workloads.put(workloadSpec('web', { imageDigest: 'md5:abc' })),
      (err: unknown) =>
        err instanceof InvalidRecordError && /workloads\/specs record "web": imageDigest/.test(err.message),
    );
    assert.throws(() => workloads.put(workloadSpec('Web Server')), /name: workload name/);
    assert.throws(() => workloads.put(workloadSpec('web', { env: { 'BAD-NAME': 'x' } })), /env/);
    assert.throws(() => workloads.delete('../etc'), InvalidRecordError);
    assert.deepEqual(workloads.list(), []);
  });

  test('garbage from a peer is skipped and counted; a valid put over it starts at revision 1', async () => {
    const { workloads, state, registry } = setup();
    workloads.put(workloadSpec('ok'));
    fromPeer(state, 'workloads', (d) => {
      const specs = d.getMap('specs');
      specs.set('num', 7);
      specs.set('arr', [1, 2, 3]);
      specs.set('nested', new Y.Map([['name', 'nested']]));
      specs.set('wrong', { ...workloadSpec('right'), revision: 1 });
      specs.set('bytes', new Uint8Array([1, 2]));
      specs.set('norev', workloadSpec('norev'));
    });
    assert.deepEqual(
      workloads.list().map((s) => s.name),
      ['ok'],
    );
    assert.equal(await invalidTotal(registry, { doc: 'workloads', map: 'specs' }), 6);
    assert.equal(workloads.put(workloadSpec('num')).revision, 1);
    assert.deepEqual(
      workloads.list().map((s) => s.name),
      ['num', 'ok'],
    );
  });
});

describe('ObservedView', () => {
  test('a node writes its own statuses as one report; reads cover every node', () => {
    const { observed, state } = setup();
    observed.setStatus('node-a', 'web', observedStatus(1));
    observed.setStatus('node-a', 'db', observedStatus(2, { phase: 'starting' }));
    const report = state.doc('observed').getMap('reports').get('node-a') as { statuses: object };
    assert.ok(!(report instanceof Y.AbstractType), 'a report is one plain value');
    assert.deepEqual(Object.keys(report.statuses), ['db', 'web']);
    // Another node's entry, as replicated from it.
    const other = new ObservedView({
      state,
      logger: quietLogger,
      registry: new Registry(),
      nodeId: 'node-b',
    });
    other.setStatus('node-b', 'web', observedStatus(3, { phase: 'released' }));
    assert.equal(observed.get('node-a', 'db')?.phase, 'starting');
    assert.deepEqual([...observed.listForNode('node-a').keys()], ['db', 'web']);
    assert.deepEqual(
      [...observed.listAll()].map(([node, statuses]) => [node, [...statuses.keys()]]),
      [
        ['node-a', ['db', 'web']],
        ['node-b', ['web']],
      ],
    );
    // Readers get copies: changing one does not change the document.
    const copy = observed.get('node-a', 'db');
    assert.ok(copy);
    copy.phase = 'failed';
    assert.equal(observed.get('node-a', 'db')?.phase, 'starting');
    assert.equal(observed.remove('node-a', 'db'), true);
    assert.equal(observed.remove('node-a', 'db'), false);
    assert.equal(observed.get('node-a', 'db'), undefined);
    assert.equal(observed.get('node-a', 'web')?.since, 1, 'the other status is kept');
    assert.equal(observed.get('node-a', 'toString'), undefined, 'no inherited keys');
  });

  test('writing or removing for another node, and invalid statuses, throw clear errors', () => {
    const { observed, state } = setup();
    assert.throws(
      () => observed.setStatus('node-b', 'web', observedStatus(1)),
      /may not set a status for node "node-b"/,
    );
    assert.throws(() => observed.remove('node-b', 'web'), /may not remove a status/);
    assert.throws(
      () => observed.setStatus('node-a', 'web', observedStatus(1, { phase: 'exploded' as 'running' })),
      (err: unknown) => err instanceof InvalidRecordError && /node-a\/web.*phase/.test(err.message),
    );
    assert.throws(() => observed.setStatus('node-a', 'Bad Name', observedStatus(1)), /workload name/);
    assert.equal(state.doc('observed').getMap('reports').size, 0, 'nothing was written');
    assert.throws(
      () =>
        new ObservedView({
          state: new ClusterState({ logger: quietLogger }),
          logger: quietLogger,
          registry: new Registry(),
          nodeId: 'Node A',
        }),
      InvalidRecordError,
    );
  });

  test('garbage from peers is skipped and counted; a garbage own entry is replaced on write', async () => {
    const { observed, state, registry } = setup();
    observed.setStatus('node-a', 'web', observedStatus(1));
    fromPeer(state, 'observed', (d) => {
      const reports = d.getMap('reports');
      reports.set('node-x', 5);
      reports.set('node-y', { web: observedStatus(1) });
      reports.set('node-w', new Y.Map());
      reports.set('node-z', {
        statuses: {
          web: observedStatus(2),
          db: { phase: 'running' },
          BAD: observedStatus(2),
          nested: [1, 2],
        },
        images: 'all of them',
      });
      reports.set('NOT A NODE', { statuses: { web: observedStatus(2) } });
    });
    for (let i = 0; i < 2; i++) {
      assert.deepEqual(
        [...observed.listAll()].map(([node, statuses]) => [node, [...statuses.keys()]]),
        [
          ['node-a', ['web']],
          ['node-z', ['web']],
        ],
      );
      assert.deepEqual([...observed.listForNode('node-x').keys()], []);
      assert.equal(observed.get('node-y', 'web'), undefined);
      assert.equal(observed.imagesOf('node-z'), undefined);
    }
    // node-x, node-y, node-w, three statuses of node-z, its images, the bad node id.
    assert.equal(await invalidTotal(registry, { doc: 'observed', map: 'reports' }), 8);

    // A peer overwrote this node's own report with garbage: the next write replaces it.
    fromPeer(state, 'observed', (d) => d.getMap('reports').set('node-a', 'garbage'));
    assert.deepEqual([...observed.listForNode('node-a').keys()], []);
    observed.setStatus('node-a', 'db', observedStatus(9));
    assert.deepEqual([...observed.listForNode('node-a').keys()], ['db']);
    // A peer replaced it with a valid report of its own making: it is what the document says.
    fromPeer(state, 'observed', (d) =>
      d.getMap('reports').set('node-a', { statuses: { x: observedStatus(4) }, images: null }),
    );
    observed.setStatus('node-a', 'y', observedStatus(5));
    assert.deepEqual([...observed.listForNode('node-a').keys()], ['x', 'y']);
  });

  test('images held: own entry only, unchanged sets write nothing, garbage from peers is skipped', async () => {
    const { observed, state, registry } = setup();
    const digest = (c: string) => `sha256:${c.repeat(64)}`;
    assert.equal(observed.setImagesHeld('node-a', [digest('b'), digest('a'), digest('b')], 1000), true);
    assert.deepEqual(observed.imagesOf('node-a'), { digests: [digest('a'), digest('b')], at: 1000 });
    // The same set in another order is no change: nothing written, the old time kept.
    assert.equal(observed.setImagesHeld('node-a', [digest('a'), digest('b')], 2000), false);
    assert.equal(observed.imagesOf('node-a')?.at, 1000);
    // Statuses and images share the report; writing one keeps the other.
    observed.setStatus('node-a', 'web', observedStatus(1));
    assert.equal(observed.imagesOf('node-a')?.at, 1000);
    assert.throws(
      () => observed.setImagesHeld('node-b', [digest('a')], 1),
      /may not record held images for node "node-b"/,
    );
    assert.throws(
      () => observed.setImagesHeld('node-a', ['sha256:nothex'], 1),
      (err: unknown) =>
        err instanceof InvalidRecordError &&
        /observed\/reports record "node-a\/images": digests/.test(err.message),
    );
    fromPeer(state, 'observed', (d) => {
      const reports = d.getMap('reports');
      reports.set('node-c', { statuses: {}, images: { digests: [digest('a')], at: 5 } });
      reports.set('node-d', { statuses: {}, images: { digests: 'all of them', at: 5 } });
      reports.set('node-e', { statuses: {}, images: { digests: [digest('a'), 'rm -rf /'], at: 5 } });
      reports.set('NOT A NODE', { statuses: {}, images: { digests: [digest('a')], at: 5 } });
      reports.set('node-f', { statuses: {}, images: new Y.Map() });
    });
    assert.deepEqual(observed.holdersOf(digest('a')), ['node-a', 'node-c']);
    assert.deepEqual(observed.holdersOf(digest('b')), ['node-a']);
    assert.deepEqual(observed.holdersOf(digest('c')), []);
    assert.ok((await invalidTotal(registry, { doc: 'observed', map: 'reports' })) >= 4);
  });

  test('peers: own entry only, sorted, unchanged sets write nothing, kept by other writes, garbage skipped', async () => {
    const { observed, state, registry } = setup();
    assert.equal(observed.peersOf('node-a'), undefined);
    const updates: number[] = [];
    state.doc('observed').on('update', () => updates.push(1));
    assert.equal(observed.setPeers('node-a', ['node-c', 'node-b', 'node-c'], 1000), true);
    assert.deepEqual(observed.peersOf('node-a'), { nodes: ['node-b', 'node-c'], at: 1000 });
    // The same set in another order is no change: nothing written, the old time kept.
    assert.equal(observed.setPeers('node-a', ['node-b', 'node-c'], 2000), false);
    assert.equal(updates.length, 1);
    assert.equal(observed.peersOf('node-a')?.at, 1000);
    // Statuses, images and peers share the report; writing one keeps the others.
    observed.setStatus('node-a', 'web', observedStatus(1));
    observed.setImagesHeld('node-a', [`sha256:${'a'.repeat(64)}`], 3000);
    assert.deepEqual(observed.peersOf('node-a')?.nodes, ['node-b', 'node-c']);
    assert.equal(observed.setPeers('node-a', [], 4000), true);
    assert.deepEqual(observed.peersOf('node-a'), { nodes: [], at: 4000 });
    assert.deepEqual([...observed.listForNode('node-a').keys()], ['web']);
    assert.throws(() => observed.setPeers('node-b', ['node-a'], 1), /may not record peers for node "node-b"/);
    assert.throws(
      () => observed.setPeers('node-a', ['Not A Node'], 1),
      (err: unknown) =>
        err instanceof InvalidRecordError && /observed\/reports record "node-a\/peers"/.test(err.message),
    );
    const invalidBefore = await invalidTotal(registry, { doc: 'observed', map: 'reports' });
    fromPeer(state, 'observed', (d) => {
      const reports = d.getMap('reports');
      reports.set('node-c', { statuses: {}, images: null, peers: { nodes: ['node-a'], at: 5 } });
      reports.set('node-d', { statuses: {}, images: null, peers: { nodes: ['node-b', 'node-a'], at: 5 } });
      reports.set('node-e', { statuses: {}, images: null, peers: 'everyone' });
      // An older agent's report: no peers at all, and still readable.
      reports.set('node-f', { statuses: { web: observedStatus(2) }, images: null });
    });
    assert.deepEqual(observed.peersOf('node-c'), { nodes: ['node-a'], at: 5 });
    assert.equal(observed.peersOf('node-d'), undefined, 'unsorted');
    assert.equal(observed.peersOf('node-e'), undefined);
    assert.equal(observed.peersOf('node-f'), undefined);
    assert.deepEqual([...observed.listForNode('node-f').keys()], ['web']);
    // node-d and node-e, counted once each however often they are read.
    assert.equal((await invalidTotal(registry, { doc: 'observed', map: 'reports' })) - invalidBefore, 2);
  });

  test('entries of agents before reports are read, and a node drops its own on its first report', () => {
    const { observed, state } = setup();
    const digest = `sha256:${'d'.repeat(64)}`;
    fromPeer(state, 'observed', (d) => {
      for (const node of ['node-a', 'node-b']) {
        const inner = new Y.Map<unknown>();
        d.getMap('nodes').set(node, inner);
        inner.set('web', observedStatus(node === 'node-a' ? 1 : 2));
        d.getMap('images').set(node, { digests: [digest], at: 7 });
      }
    });
    assert.deepEqual(
      [...observed.listAll()].map(([node, statuses]) => [node, [...statuses.keys()]]),
      [
        ['node-a', ['web']],
        ['node-b', ['web']],
      ],
    );
    assert.equal(observed.get('node-b', 'web')?.since, 2);
    assert.deepEqual(observed.holdersOf(digest), ['node-a', 'node-b']);

    observed.setStatus('node-a', 'db', observedStatus(3));
    const doc = state.doc('observed');
    assert.equal(doc.getMap('nodes').has('node-a'), false, 'own legacy statuses deleted');
    assert.equal(doc.getMap('images').has('node-a'), false, 'own legacy images deleted');
    assert.deepEqual([...observed.listForNode('node-a').keys()], ['db', 'web'], 'carried into the report');
    assert.equal(observed.imagesOf('node-a')?.at, 7);
    assert.equal(observed.get('node-b', 'web')?.since, 2, "another node's legacy entry is untouched");
  });

  test('the document stays the size of the live reports however many statuses change', () => {
    // Y.Map keeps a tombstone per overwritten entry: a map of statuses grew by
    // about 10 bytes per status change. A report rewritten whole by its only
    // writer leaves one merged run (docs/protocol.md, "observed").
    const { observed, state } = setup();
    const replica = new ClusterState({ logger: quietLogger });
    const updates: Uint8Array[] = [];
    state.onChange((doc, update) => {
      if (doc === 'observed') updates.push(update);
    });
    const digest = `sha256:${'e'.repeat(64)}`;
    const COUNT = 3000;
    for (let i = 0; i < COUNT; i++) {
      observed.setStatus('node-a', `w${i % 20}`, observedStatus(i, { restarts: i % 7 }));
      if (i % 2500 === 0) observed.setImagesHeld('node-a', [digest], i);
      if (i % 100 === 0) observed.remove('node-a', `w${(i / 100) % 20}`);
    }
    // The replica gets every update, neighbours swapped (a gap filled late), and a duplicate.
    for (let i = 0; i + 1 < updates.length; i += 2) {
      replica.applyRemote('observed', updates[i + 1] as Uint8Array);
      replica.applyRemote('observed', updates[i] as Uint8Array);
    }
    if (updates.length % 2 === 1) replica.applyRemote('observed', updates.at(-1) as Uint8Array);
    replica.applyRemote('observed', updates[7] as Uint8Array);

    const fresh = new ClusterState({ logger: quietLogger });
    const freshView = new ObservedView({
      state: fresh,
      logger: quietLogger,
      registry: new Registry(),
      nodeId: 'node-a',
    });
    for (const [name, status] of observed.listForNode('node-a')) freshView.setStatus('node-a', name, status);
    freshView.setImagesHeld('node-a', [digest], observed.imagesOf('node-a')?.at ?? 0);
    const size = (s: ClusterState) => Y.encodeStateAsUpdate(s.doc('observed')).byteLength;
    const live = size(fresh);
    for (const [who, s] of [
      ['writer', state],
      ['replica', replica],
    ] as const) {
      assert.ok(size(s) <= 2 * live + 512, `${who}: ${size(s)} bytes against ${live} for the live content`);
    }
    const replicaView = new ObservedView({
      state: replica,
      logger: quietLogger,
      registry: new Registry(),
      nodeId: 'node-r',
    });
    assert.deepEqual(replicaView.listAll(), observed.listAll());
  });

  test('a batch of status writes is one update', () => {
    const { observed, state } = setup();
    let updates = 0;
    state.onChange((doc) => {
      if (doc === 'observed') updates++;
    });
    observed.batch(() => {
      for (let i = 0; i < 10; i++) observed.setStatus('node-a', `w${i}`, observedStatus(i));
      observed.remove('node-a', 'w3');
    });
    assert.equal(updates, 1);
    assert.equal(observed.listForNode('node-a').size, 9);
  });
});

describe('onChange', () => {
  test('fires once per transaction that touches the view, deep and remote changes included', () => {
    const { state, workloads, observed, enrollment } = setup();
    const seen = { workloads: [] as unknown[], observed: [] as unknown[], enrollment: [] as unknown[] };
    const offW = workloads.onChange((origin) => seen.workloads.push(origin));
    observed.onChange((origin) => seen.observed.push(origin));
    enrollment.onChange((origin) => seen.enrollment.push(origin));

    workloads.put(workloadSpec('web'));
    observed.setStatus('node-a', 'web', observedStatus(1));
    observed.setStatus('node-a', 'web', observedStatus(2));
    state.transactLocal('enrollment', (d) => {
      d.getMap('nodes').set('node-a', 1);
      d.getMap('draining').set('node-a', 2);
    });
    state.transactLocal('workloads', (d) => d.getMap('unrelated').set('x', 1));
    // A peer deletes it: a tombstone in the peer's own slot (docs/epochs.md).
    fromPeer(state, 'workloads', (d) =>
      d
        .getMap('specs')
        .set(
          slotKey('web', 'node-p'),
          encodeRecord({ stamp: { at: Date.now() + 60_000, seq: 0, writer: 'node-p' }, deleted: true }),
        ),
    );

    assert.deepEqual(seen.workloads, [Origin.local, Origin.remote]);
    assert.equal(workloads.get('web'), undefined, 'the newer tombstone hides the spec');
    assert.deepEqual(seen.observed, [Origin.local, Origin.local]);
    assert.deepEqual(seen.enrollment, [Origin.local]);
    offW();
    workloads.put(workloadSpec('db'));
    assert.equal(seen.workloads.length, 2);
  });

  test('a throwing listener does not fail the write', () => {
    const { workloads } = setup();
    workloads.onChange(() => {
      throw new Error('listener bug');
    });
    assert.equal(workloads.put(workloadSpec('web')).revision, 1);
    assert.equal(workloads.get('web')?.revision, 1);
  });
});
