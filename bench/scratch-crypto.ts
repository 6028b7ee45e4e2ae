/**
 * What encrypted scratch costs (docs/benchmarks.md, "Encrypted scratch"):
 * STATE write and read throughput through a plain directory and through a
 * gocryptfs mount, same disk, same process, same code:
 *
 *   node --import tsx bench/scratch-crypto.ts [--dir <dir on the data disk>] [--mb 100] [--files 10000] [--runs 3]
 *
 * Sequential: one file of --mb MiB written in 1 MiB writes then fsynced, then
 * read back in 1 MiB reads. Small files: --files files of 4 KiB written
 * (one open/write/close each, then one sync), then read back. Reads follow
 * the writes at once, so they come from the page cache (and, through
 * gocryptfs, still pay FUSE and decryption). Needs root and FUSE.
 */

import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { cleanStaleMounts, initCipherDir, mountCipherDir, unmount } from '../src/reconciler/gocryptfs.js';
import { deriveScratchKey, newScratchSecret, scratchPassword } from '../src/reconciler/scratch-keys.js';

const { values } = parseArgs({
  options: {
    dir: { type: 'string', default: tmpdir() },
    mb: { type: 'string', default: '100' },
    files: { type: 'string', default: '10000' },
    runs: { type: 'string', default: '3' },
  },
});
const mb = Number(values.mb);
const files = Number(values.files);
const runs = Number(values.runs);
for (const [name, n] of [
  ['--mb', mb],
  ['--files', files],
  ['--runs', runs],
] as const) {
  if (!Number.isInteger(n) || n < 1) {
    process.stderr.write(`${name} must be a positive integer\n`);
    process.exit(2);
  }
}

const seconds = (start: bigint): number => Number(process.hrtime.bigint() - start) / 1e9;

interface Figures {
  seqWriteMBs: number;
  seqReadMBs: number;
  smallWritePerS: number;
  smallReadPerS: number;
}

async function measure(dir: string): Promise<Figures> {
  const chunk = Buffer.alloc(1024 * 1024, 0x5a);
  const big = join(dir, 'big');
  let start = process.hrtime.bigint();
  const handle = await open(big, 'w');
  for (let i = 0; i < mb; i++) await handle.write(chunk);
  await handle.sync();
  await handle.close();
  const seqWriteMBs = mb / seconds(start);
  start = process.hrtime.bigint();
  const reader = await open(big, 'r');
  const into = Buffer.alloc(1024 * 1024);
  let read = 0;
  for (;;) {
    const { bytesRead } = await reader.read(into, 0, into.length, null);
    if (bytesRead === 0) break;
    read += bytesRead;
  }
  await reader.close();
  const seqReadMBs = read / 1048576 / seconds(start);
  await rm(big);

  const small = join(dir, 'small');
  await mkdir(small);
  const body = Buffer.alloc(4096, 0x33);
  start = process.hrtime.bigint();
  for (let i = 0; i < files; i++) await writeFile(join(small, `f${i}`), body);
  execFileSync('sync');
  const smallWritePerS = files / seconds(start);
  start = process.hrtime.bigint();
  for (let i = 0; i < files; i++) await readFile(join(small, `f${i}`));
  const smallReadPerS = files / seconds(start);
  await rm(small, { recursive: true });
  return { seqWriteMBs, seqReadMBs, smallWritePerS, smallReadPerS };
}

function median(list: number[]): number {
  const sorted = [...list].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

async function main(): Promise<void> {
  const root = await mkdtemp(join(values.dir, 'silo-bench-scratch-'));
  const plain = join(root, 'plain');
  const cipher = join(root, 'state.enc');
  const mounted = join(root, 'state');
  await Promise.all([mkdir(plain), mkdir(cipher), mkdir(mounted)]);
  const password = scratchPassword(deriveScratchKey(newScratchSecret(), 'bench', 1));
  try {
    await initCipherDir(cipher, password);
    await mountCipherDir(cipher, mounted, password, {
      allowOther: false,
      logFile: join(root, 'gocryptfs.log'),
    });
    const results: Record<'plain' | 'gocryptfs', Figures[]> = { plain: [], gocryptfs: [] };
    for (let run = 0; run < runs; run++) {
      results.plain.push(await measure(plain));
      results.gocryptfs.push(await measure(mounted));
      process.stderr.write(`run ${run + 1}/${runs} done\n`);
    }
    const row = (name: 'plain' | 'gocryptfs'): string => {
      const list = results[name];
      const m = (key: keyof Figures): string => median(list.map((f) => f[key])).toFixed(0);
      return `| ${name} | ${m('seqWriteMBs')} | ${m('seqReadMBs')} | ${m('smallWritePerS')} | ${m('smallReadPerS')} |`;
    };
    process.stdout.write(
      [
        `${mb} MiB sequential, ${files} files of 4 KiB; median of ${runs} runs`,
        '',
        '| STATE | seq write MB/s | seq read MB/s | small files written/s | small files read/s |',
        '|---|---:|---:|---:|---:|',
        row('plain'),
        row('gocryptfs'),
        '',
      ].join('\n'),
    );
  } finally {
    await unmount(mounted).catch(() => {});
    await cleanStaleMounts(root).catch(() => {});
    await rm(root, { recursive: true, force: true });
  }
}

await main();
