import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  imageName,
  isImagePath,
  loadManifest,
  ManifestError,
  manifestToSpec,
  parseManifest,
  suggestField,
} from '../../src/reconciler/manifest.js';
import { WorkloadSpecSchema } from '../../src/state/schemas.js';

const MINIMAL = `name = "counter"\nimage = "./counter.tar"\ncommand = "bin/counter.sh"\n`;

function problems(text: string, file = 'manifest.toml'): string[] {
  try {
    parseManifest(text, file);
  } catch (err) {
    assert.ok(err instanceof ManifestError, `a ManifestError, got ${err}`);
    return err.message.split('\n');
  }
  assert.fail('expected the manifest to be rejected');
}

describe('service manifests', () => {
  test('defaults for everything but name, image and command', () => {
    const manifest = parseManifest(MINIMAL);
    assert.deepEqual(manifest, {
      name: 'counter',
      tier: 'org-container',
      image: './counter.tar',
      command: 'bin/counter.sh',
      args: [],
      env: {},
      scratch_mb: 256,
      scratch_class: 'persistent',
      network: 'overlay',
      cpus: 1,
      memory_mb: 256,
      restart: 'always',
      stop_signal: 'SIGTERM',
      stop_timeout: 10,
      start_timeout: 30,
      constraints: {},
      on_partition: 'stop',
    });
    // Volatile workloads may keep running in a minority partition by default.
    assert.equal(parseManifest(`${MINIMAL}scratch_class = "volatile"\n`).on_partition, 'keep');
  });

  test('every field, turned into a WorkloadSpec', () => {
    const manifest = parseManifest(`
name = "web"
tier = "org-container"
image = "org:web:1.0"
command = "/bin/web"
args = ["--port", "8080"]
scratch_mb = 1024
scratch_class = "volatile"
network = "host"
cpus = 0.5
memory_mb = 512
restart = "on-failure"
notification_fd = 3
encrypted = false
stop_signal = "INT"
stop_timeout = 2.5
start_timeout = 60
generator = "bin/gen"
on_partition = "stop"

[env]
GREETING = "hi"

[constraints]
zone = "eu-1"
`);
    const digest = `sha256:${'a'.repeat(64)}`;
    const spec = manifestToSpec(manifest, { imageDigest: digest, imageSignature: 'c2lnbmF0dXJl' });
    assert.deepEqual(spec, {
      name: 'web',
      tier: 'org-container',
      image: 'org:web:1.0',
      imageDigest: digest,
      imageSignature: 'c2lnbmF0dXJl',
      command: '/bin/web',
      args: ['--port', '8080'],
      env: { GREETING: 'hi' },
      scratchMb: 1024,
      scratchClass: 'volatile',
      network: 'host',
      cpus: 0.5,
      memoryMb: 512,
      restart: 'on-failure',
      notificationFd: 3,
      encrypted: false,
      stopSignal: 'SIGINT',
      stopTimeoutMs: 2500,
      startTimeoutMs: 60_000,
      generator: 'bin/gen',
      constraints: { zone: 'eu-1' },
      onPartition: 'stop',
    });
    // With a revision it is a valid document record.
    assert.ok(WorkloadSpecSchema.safeParse({ ...spec, revision: 1 }).success);
  });

  test('encrypted: only the opt-out reaches the spec; anything but a boolean is refused', () => {
    const base = 'name = "db"\nimage = "org:db:1"\ncommand = "/bin/db"\n';
    const att = { imageDigest: `sha256:${'a'.repeat(64)}`, imageSignature: 'c2lnbmF0dXJl' };
    assert.equal(manifestToSpec(parseManifest(base), att).encrypted, undefined);
    assert.equal(manifestToSpec(parseManifest(`${base}encrypted = true\n`), att).encrypted, undefined);
    assert.equal(manifestToSpec(parseManifest(`${base}encrypted = false\n`), att).encrypted, false);
    assert.deepEqual(problems(`${base}encrypted = "no"\n`), [
      'manifest.toml: encrypted: expected true or false, got "no"',
    ]);
  });

  test('errors name the file, the field and the problem', () => {
    assert.deepEqual(problems(`${MINIMAL}scratch_mb = "lots"\n`, 'svc/manifest.toml'), [
      'svc/manifest.toml: scratch_mb: expected a positive integer up to 1073741824, got "lots"',
    ]);
    assert.deepEqual(
      problems(
        [
          'name = "Bad Name"',
          'image = 3',
          'command = "x"',
          'cpus = -1',
          'memory_mb = 1.5',
          'restart = "sometimes"',
          'network = "wifi"',
          'notification_fd = 1',
          'stop_signal = "SIGKILL"',
          'stop_timeout = 0',
          'args = ["a", 2]',
          'env = { "bad-name" = "v", RUNTIME_DIRECTORY = "/x" }',
          'constraints = { zone = 1 }',
        ].join('\n'),
      ),
      [
        'manifest.toml: name: expected a name of 1-63 lowercase letters, digits, "-" or "_", starting with a letter or digit, got "Bad Name"',
        'manifest.toml: image: expected an image tar path or an image name (1-253 characters), got 3',
        'manifest.toml: args[1]: expected a string, got 2',
        'manifest.toml: env.bad-name: invalid variable name "bad-name" (letters, digits and "_", not starting with a digit)',
        'manifest.toml: network: expected "overlay", "host" or "none", got "wifi"',
        'manifest.toml: cpus: expected a positive number up to 4096, got -1',
        'manifest.toml: memory_mb: expected a positive integer up to 67108864, got 1.5',
        'manifest.toml: restart: expected "always", "on-failure" or "never", got "sometimes"',
        'manifest.toml: notification_fd: expected an integer file descriptor from 3 to 255, got 1',
        'manifest.toml: stop_signal: expected a catchable signal name such as "SIGTERM" or "SIGINT", got "SIGKILL"',
        'manifest.toml: stop_timeout: expected a positive number of seconds, got 0',
        'manifest.toml: constraints.zone: expected a string, got 1',
      ],
    );
    assert.deepEqual(problems(`${MINIMAL}env = { STATE_DIRECTORY = "/elsewhere" }\n`), [
      'manifest.toml: env.STATE_DIRECTORY: reserved: silo sets this variable to the service directory',
    ]);
    assert.deepEqual(problems('command = "x"\n'), [
      'manifest.toml: name: required field is missing (expected a name of 1-63 lowercase letters, digits, "-" or "_", starting with a letter or digit)',
      'manifest.toml: image: required field is missing (expected an image tar path or an image name (1-253 characters))',
    ]);
    assert.deepEqual(problems(`${MINIMAL}tier = 2024-01-01\n`), [
      'manifest.toml: tier: expected a non-empty string of at most 63 characters, got a date (2024-01-01)',
    ]);
  });

  test('ports: distinct port numbers, sorted into the spec; bad ones named', () => {
    const manifest = parseManifest(`${MINIMAL}ports = [8080, 53]\n`);
    const spec = manifestToSpec(manifest, {
      imageDigest: `sha256:${'a'.repeat(64)}`,
      imageSignature: 'c2ln',
    });
    assert.deepEqual(spec.ports, [53, 8080]);
    assert.equal(WorkloadSpecSchema.safeParse({ ...spec, revision: 1 }).success, true);
    assert.equal(
      manifestToSpec(parseManifest(MINIMAL), {
        imageDigest: `sha256:${'a'.repeat(64)}`,
        imageSignature: 'c2ln',
      }).ports,
      undefined,
    );
    for (const bad of ['[0]', '[65536]', '[80, 80]', '["http"]', '8080']) {
      const [problem] = problems(`${MINIMAL}ports = ${bad}\n`);
      assert.match(
        problem ?? '',
        /^manifest\.toml: ports(\.\d+)?: expected an array of at most 64 distinct port numbers from 1 to 65535/,
        bad,
      );
    }
  });

  test('unknown keys are rejected with a suggestion', () => {
    assert.deepEqual(
      problems(`${MINIMAL}scratch_md = 5\nscratchClass = "volatile"\nStopTimeout = 3\nfoo = 1\n`),
      [
        'manifest.toml: scratch_md: unknown field (did you mean "scratch_mb"?)',
        'manifest.toml: scratchClass: unknown field (did you mean "scratch_class"?)',
        'manifest.toml: StopTimeout: unknown field (did you mean "stop_timeout"?)',
        'manifest.toml: foo: unknown field (known fields: name, tier, image, command, args, env, scratch_mb, scratch_class, network, ports, cpus, memory_mb, restart, notification_fd, encrypted, stop_signal, stop_timeout, start_timeout, restore_wait, generator, constraints, on_partition)',
      ],
    );
    assert.equal(suggestField('restrat'), 'restart');
    assert.equal(suggestField('completely-different'), null);
  });

  test('TOML syntax errors carry line and column', () => {
    assert.deepEqual(problems('name = "x"\nimage = \ncommand = "y"\n', 'bad.toml'), [
      'bad.toml:2:9: TOML syntax error: invalid value',
    ]);
    assert.match(problems('name = "x"\nname = "y"\n')[0] ?? '', /^manifest\.toml:2:\d+: TOML syntax error: /);
  });

  test('loadManifest resolves a relative image path against the manifest and names unreadable files', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'silo-manifest-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    await writeFile(join(dir, 'manifest.toml'), MINIMAL);
    const loaded = await loadManifest(join(dir, 'manifest.toml'));
    assert.equal(loaded.imagePath, join(dir, 'counter.tar'));
    assert.equal(imageName(loaded.manifest.image), 'counter');
    assert.equal(isImagePath('org:web:1.0'), false);
    await assert.rejects(loadManifest(join(dir, 'missing.toml')), /missing\.toml: cannot read: ENOENT/);
  });

  test('the example counter manifest is valid', async () => {
    const file = fileURLToPath(new URL('../../config/examples/counter/manifest.toml', import.meta.url));
    const loaded = await loadManifest(file);
    assert.equal(loaded.manifest.name, 'counter');
    assert.ok(loaded.imagePath?.endsWith('counter.tar'));
  });
});
