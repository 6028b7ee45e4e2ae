import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseEnrollmentBundle } from '../../src/identity/bundle.js';
import { allocateOverlayIp, issueEnrollment } from '../../src/identity/ca.js';
import { parseIpv4 } from '../../src/identity/ipv4-cidr.js';
import { createOrg } from '../../src/identity/org.js';
import { serviceZone } from '../../src/overlay/service-dns.js';
import { serviceRangeFromCidr } from '../../src/state/service-addresses.js';
import { makeRequest } from './helpers.js';

/** `silo org init --service-range / --dns-suffix` (docs/services.md, "Service addresses"). */
describe('an org-configured service range and DNS suffix', () => {
  test('a service range is a smaller block inside the overlay CIDR, clipped to its host addresses', () => {
    assert.deepEqual(serviceRangeFromCidr('10.88.1.0/24', '10.88.0.0/16'), {
      first: parseIpv4('10.88.1.0'),
      last: parseIpv4('10.88.1.255'),
    });
    // At the top of the overlay: its broadcast address is no service address.
    assert.deepEqual(serviceRangeFromCidr('10.88.255.0/24', '10.88.0.0/16'), {
      first: parseIpv4('10.88.255.0'),
      last: parseIpv4('10.88.255.254'),
    });
    for (const [bad, why] of [
      ['10.89.0.0/24', /must be a smaller block inside the overlay CIDR 10\.88\.0\.0\/16/],
      ['10.88.0.0/16', /must be a smaller block inside/],
      ['10.0.0.0/8', /must be a smaller block inside/],
      ['10.88.1.7/24', /host bits set \(did you mean 10\.88\.1\.0\/24\?\)/],
      ['nonsense', /service range: CIDR "nonsense" is not of the form a\.b\.c\.d\/prefix/],
    ] as const) {
      assert.throws(() => serviceRangeFromCidr(bad, '10.88.0.0/16'), why, bad);
    }
  });

  test('org init refuses a bad range or suffix with the reason, and records good ones', () => {
    assert.throws(
      () => createOrg({ name: 'acme', overlayCidr: '10.88.0.0/16', serviceRange: '10.1.0.0/24' }),
      /serviceRange: service range 10\.1\.0\.0\/24 must be a smaller block inside the overlay CIDR/,
    );
    for (const suffix of ['Silo', '-x', 'a..b', 'a b', 'x.', '']) {
      assert.throws(
        () => createOrg({ name: 'acme', overlayCidr: '10.88.0.0/16', dnsSuffix: suffix }),
        /DNS suffix: dot-separated labels/,
        suffix,
      );
    }
    const org = createOrg({
      name: 'acme',
      overlayCidr: '10.88.0.0/16',
      serviceRange: '10.88.200.0/22',
      dnsSuffix: 'internal.example',
    });
    assert.equal(org.info.serviceRange, '10.88.200.0/22');
    assert.equal(org.info.dnsSuffix, 'internal.example');
    assert.equal(serviceZone('acme', org.info.dnsSuffix), 'acme.internal.example');
    assert.equal(serviceZone('acme'), 'acme.silo');
  });

  test('no node gets an address in a configured range; its bundle carries the range and the suffix', async () => {
    const reserved = { ...serviceRangeFromCidr('10.88.0.4/30', '10.88.0.0/24'), text: '10.88.0.4/30' };
    const taken = ['10.88.0.1', '10.88.0.2', '10.88.0.3'];
    assert.equal(allocateOverlayIp('10.88.0.0/24', taken, undefined, reserved), '10.88.0.8');
    assert.throws(
      () => allocateOverlayIp('10.88.0.0/24', [], '10.88.0.5', reserved),
      /10\.88\.0\.5 is in the org's service range 10\.88\.0\.4\/30/,
    );
    const org = createOrg({
      name: 'acme',
      overlayCidr: '10.88.0.0/24',
      serviceRange: '10.88.0.0/25',
      dnsSuffix: 'corp',
    });
    const bundle = parseEnrollmentBundle(
      issueEnrollment(org, await makeRequest('node-a'), { allocatedIps: [] }),
    );
    assert.equal(bundle.record.overlayIp, '10.88.0.128', 'the first address after the service range');
    assert.equal(bundle.serviceRange, '10.88.0.0/25');
    assert.equal(bundle.dnsSuffix, 'corp');
    // An org with the defaults writes neither field: its bundles stay what older agents accept.
    const plain = issueEnrollment(
      createOrg({ name: 'acme', overlayCidr: '10.88.0.0/24' }),
      await makeRequest('node-b'),
      {
        allocatedIps: [],
      },
    );
    assert.equal('serviceRange' in plain, false);
    assert.equal('dnsSuffix' in plain, false);
  });
});
