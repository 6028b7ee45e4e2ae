import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { describe, it } from 'node:test';
import { ApiError, apiErrorOf } from '../../src/agent/api/errors.js';
import { CliError, EXIT, exitCodeOf } from '../../src/cli/errors.js';
import { BlobFetchError } from '../../src/gossip/blob-exchange.js';
import { LogFetchError } from '../../src/gossip/log-exchange.js';
import { SyncProtocolError } from '../../src/gossip/sync-frames.js';
import { ImageRefusedError } from '../../src/reconciler/image-fetch.js';
import { InvalidUpdateError } from '../../src/state/cluster-state.js';
import { ServiceRangeExhaustedError } from '../../src/state/service-addresses.js';
import { InputError } from '../../src/util/input-error.js';
import { codeOf, SiloError } from '../../src/util/silo-error.js';

const SRC = join(import.meta.dirname, '..', '..', 'src');

async function sourceFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await sourceFiles(path)));
    else if (entry.name.endsWith('.ts')) out.push(path);
  }
  return out;
}

describe('SiloError', () => {
  it('every error class in src/ derives from SiloError (the browser bundle aside)', async () => {
    const offenders: string[] = [];
    for (const file of await sourceFiles(SRC)) {
      const rel = relative(SRC, file);
      // The dashboard's page runs in a browser, with its own tiny error for a 401.
      if (rel.startsWith(join('dashboard', 'web'))) continue;
      const text = await readFile(file, 'utf8');
      for (const match of text.matchAll(/class (\w+) extends Error\b/g)) {
        if (match[1] !== 'SiloError') offenders.push(`${rel}: ${match[1]}`);
      }
    }
    assert.deepEqual(offenders, []);
  });

  it('keeps the subclass name and a typed code', () => {
    const err = new ImageRefusedError('unsigned');
    assert.ok(err instanceof SiloError);
    assert.equal(err.name, 'ImageRefusedError');
    assert.equal(err.code, 'image_refused');
    assert.equal(codeOf(err), 'image_refused');
    assert.equal(codeOf(new Error('plain')), 'internal');
    assert.equal(codeOf('not an error'), 'internal');
  });

  it('wire codes keep their protocol spelling; the code is silo-wide snake_case', () => {
    const blob = new BlobFetchError('not-found', 'x');
    assert.equal(blob.wireCode, 'not-found');
    assert.equal(blob.code, 'not_found');
    assert.equal(new BlobFetchError('digest-mismatch', 'x').code, 'digest_mismatch');
    assert.equal(new LogFetchError('error', 'x').code, 'internal');
    assert.equal(new SyncProtocolError('invalid-update', 'x').code, 'invalid_update');
    assert.equal(new SyncProtocolError('oversize', 'x').kind, 'oversize');
  });

  it('the API answers by code, not by message text', () => {
    const cases: [SiloError, number, string][] = [
      [new InputError('bad'), 400, 'bad_request'],
      [new InvalidUpdateError('workloads', 'garbage'), 400, 'bad_request'],
      [new SiloError('digest_mismatch', 'anything at all'), 400, 'bad_request'],
      [new SiloError('too_large', 'anything at all'), 413, 'too_large'],
      [new ServiceRangeExhaustedError('web', { first: 1, last: 2 }), 409, 'conflict'],
      [new LogFetchError('busy', 'x'), 503, 'busy'],
      [new SiloError('command_failed', 'wg failed'), 500, 'internal'],
    ];
    for (const [err, status, code] of cases) {
      const api = apiErrorOf(err);
      assert.equal(api.status, status, `${err.name} ${err.code}`);
      assert.equal(api.code, code, `${err.name} ${err.code}`);
      assert.equal(api.message, err.message);
    }
    const own = new ApiError('not_held', 'nobody');
    assert.equal(apiErrorOf(own), own);
  });

  it('the CLI turns codes into its documented exit codes', () => {
    assert.equal(exitCodeOf(new InputError('bad flag')), EXIT.input);
    assert.equal(exitCodeOf(new CliError('gone', EXIT.notFound)), EXIT.notFound);
    assert.equal(new CliError('gone', EXIT.notFound).code, 'not_found');
    assert.equal(exitCodeOf(new SiloError('revoked', 'revoked')), EXIT.revoked);
    assert.equal(exitCodeOf(new SiloError('unreachable', 'down')), EXIT.unreachable);
    assert.equal(exitCodeOf(new SiloError('command_failed', 'wg')), EXIT.failure);
    assert.equal(exitCodeOf(new Error('plain')), EXIT.failure);
  });
});
