import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseLogRequest } from '../../src/gossip/log-exchange.js';
import { assertOrgName } from '../../src/gossip/topics.js';
import { ORG_NAME_PATTERN as identityOrgPattern } from '../../src/identity/org.js';
import { NodeIdSchema, ORG_NAME_PATTERN, WorkloadNameSchema } from '../../src/state/schemas.js';

// One pattern per kind of name, used by every reader and writer (outside
// testing: `interop_probe` ran, but `silo logs` refused it from another node).
test('a workload name the documents accept is accepted by the log exchange, and the other way round', () => {
  for (const name of ['interop_probe', 'a', 'db-1', 'x'.repeat(63)]) {
    assert.equal(WorkloadNameSchema.safeParse(name).success, true, name);
    assert.deepEqual(parseLogRequest({ v: 1, workload: name, lines: 1, follow: false }), {
      workload: name,
      lines: 1,
      follow: false,
    });
  }
  for (const name of ['_a', 'A', 'a.b', 'x'.repeat(64), '']) {
    assert.equal(WorkloadNameSchema.safeParse(name).success, false, name);
    assert.equal(typeof parseLogRequest({ v: 1, workload: name, lines: 1, follow: false }), 'string', name);
  }
});

test('an org name means the same to topics, the org directory and agent.toml', () => {
  assert.equal(identityOrgPattern, ORG_NAME_PATTERN);
  for (const name of ['acme', 'org-2']) {
    assert.doesNotThrow(() => assertOrgName(name));
    assert.equal(ORG_NAME_PATTERN.test(name), true);
  }
  for (const name of ['a.b', 'a_b', 'A', '-a']) {
    assert.throws(() => assertOrgName(name), /invalid org name/, name);
    assert.equal(ORG_NAME_PATTERN.test(name), false, name);
  }
  assert.equal(NodeIdSchema.safeParse('node_1').success, false);
});
