import {
  accessSync,
  closeSync,
  constants,
  fstatSync,
  openSync,
  readdirSync,
  readSync,
  statSync,
} from 'node:fs';
import { endianness } from 'node:os';
import { join } from 'node:path';

/**
 * Checks a store directory before lmdb-js opens it.
 *
 * lmdb-js 3.5.6 frees its per-environment state twice when LMDB's
 * mdb_env_open fails after taking the lock file (src/env.cpp: openEnv
 * deletes the ExtendedEnv, then closeEnv deletes it again), so a data.mdb
 * that is not an LMDB file, has the wrong data version or is cut short
 * kills the whole process with SIGSEGV instead of throwing. We refuse such
 * files here, with an error that names the path. A data.mdb shorter than
 * the pages its newest meta page says are in use (truncated by a full disk,
 * a bad copy) would be mapped and then kill the process with SIGBUS on the
 * first read past its end: refused too.
 */

/** LMDB (mdb.master3, as vendored by lmdb-js) meta page layout on a 64-bit host. */
const PAGE_HEADER_BYTES = 24;
const META_FLAGS_OFFSET = 18;
const P_META = 0x08;
const MAGIC_OFFSET = PAGE_HEADER_BYTES;
const VERSION_OFFSET = PAGE_HEADER_BYTES + 4;
/** mm_psize aliases mm_dbs[FREE_DBI].md_pad, after magic, version, address and mapsize. */
const PAGE_SIZE_OFFSET = PAGE_HEADER_BYTES + 24;
/** After mm_dbs[2] (48 bytes each): mm_last_pg (the last page in use), then mm_txnid. */
const LAST_PAGE_OFFSET = PAGE_HEADER_BYTES + 120;
const TXNID_OFFSET = PAGE_HEADER_BYTES + 128;
const MDB_MAGIC = 0xbeefc0de;
const MDB_DATA_VERSION = 2;

/** Returns a reason the path cannot be opened as a store, or null if lmdb may open (or create) it. */
export function storePathProblem(path: string): string | null {
  let isDirectory: boolean;
  try {
    isDirectory = statSync(path).isDirectory();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    return (err as Error).message;
  }
  if (!isDirectory) return 'it is a file, not a store directory (with data.mdb)';
  const entries = readdirSync(path);
  // lmdb would otherwise create data.mdb in any directory it is pointed at.
  if (entries.length > 0 && !entries.includes('data.mdb')) {
    return 'the directory is not empty and holds no data.mdb: not an lmdb store';
  }
  for (const name of ['.', 'data.mdb', 'lock.mdb']) {
    if (name !== '.' && !entries.includes(name)) continue;
    try {
      accessSync(join(path, name), constants.R_OK | constants.W_OK);
    } catch (err) {
      return `${name === '.' ? 'the directory' : name} is not readable and writable (${(err as Error).message})`;
    }
  }
  return entries.includes('data.mdb') ? dataFileProblem(join(path, 'data.mdb')) : null;
}

function dataFileProblem(file: string): string | null {
  const fd = openSync(file, 'r');
  try {
    const size = fstatSync(fd).size;
    // An empty data.mdb is what LMDB itself leaves when creation was interrupted: it initialises it.
    if (size === 0) return null;
    const header = Buffer.alloc(PAGE_SIZE_OFFSET + 4);
    if (readSync(fd, header, 0, header.byteLength, 0) < header.byteLength) {
      return `data.mdb is ${size} bytes, too short for an lmdb file`;
    }
    const little = endianness() === 'LE';
    const u16 = (offset: number) => (little ? header.readUInt16LE(offset) : header.readUInt16BE(offset));
    const u32 = (offset: number) => (little ? header.readUInt32LE(offset) : header.readUInt32BE(offset));
    if ((u16(META_FLAGS_OFFSET) & P_META) === 0 || u32(MAGIC_OFFSET) !== MDB_MAGIC) {
      return 'data.mdb is not an lmdb file (no lmdb meta page at its start)';
    }
    const version = u32(VERSION_OFFSET) & 0xffff;
    if (version !== MDB_DATA_VERSION) {
      return `data.mdb has lmdb data format ${version}; this build of lmdb reads format ${MDB_DATA_VERSION}`;
    }
    const pageSize = u32(PAGE_SIZE_OFFSET);
    if (pageSize < 256 || pageSize > 0x10000 || (pageSize & (pageSize - 1)) !== 0) {
      return `data.mdb declares an invalid page size ${pageSize}`;
    }
    if (size < 2 * pageSize) return `data.mdb is cut short (${size} bytes, less than its two meta pages)`;
    const lastPage = newestLastPage(fd, pageSize, little);
    if (lastPage !== null && size < (lastPage + 1) * pageSize) {
      return `data.mdb is cut short: ${size} bytes, but its pages in use end at ${(lastPage + 1) * pageSize} bytes (truncated or partly copied; restore it from a backup, or remove the store directory to resync from peers)`;
    }
    return null;
  } finally {
    closeSync(fd);
  }
}

/** mm_last_pg of the meta page with the higher transaction id (the one lmdb opens with); null if unreadable. */
function newestLastPage(fd: number, pageSize: number, little: boolean): number | null {
  let best: { txnid: bigint; lastPage: bigint } | null = null;
  for (const page of [0, 1]) {
    const meta = Buffer.alloc(TXNID_OFFSET + 8);
    if (readSync(fd, meta, 0, meta.byteLength, page * pageSize) < meta.byteLength) return null;
    const u32 = little ? meta.readUInt32LE(MAGIC_OFFSET) : meta.readUInt32BE(MAGIC_OFFSET);
    if (u32 !== MDB_MAGIC) continue;
    const u64 = (offset: number) => (little ? meta.readBigUInt64LE(offset) : meta.readBigUInt64BE(offset));
    const candidate = { txnid: u64(TXNID_OFFSET), lastPage: u64(LAST_PAGE_OFFSET) };
    if (best === null || candidate.txnid > best.txnid) best = candidate;
  }
  if (best === null || best.lastPage > BigInt(Number.MAX_SAFE_INTEGER)) return null;
  return Number(best.lastPage);
}
