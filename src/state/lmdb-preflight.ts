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
 * files here, with an error that names the path.
 */

/** LMDB (mdb.master3, as vendored by lmdb-js) meta page layout on a 64-bit host. */
const PAGE_HEADER_BYTES = 24;
const META_FLAGS_OFFSET = 18;
const P_META = 0x08;
const MAGIC_OFFSET = PAGE_HEADER_BYTES;
const VERSION_OFFSET = PAGE_HEADER_BYTES + 4;
/** mm_psize aliases mm_dbs[FREE_DBI].md_pad, after magic, version, address and mapsize. */
const PAGE_SIZE_OFFSET = PAGE_HEADER_BYTES + 24;
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
    return null;
  } finally {
    closeSync(fd);
  }
}
