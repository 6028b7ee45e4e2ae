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
 * files here, with an error that names the path. A data.mdb cut short (a
 * full disk, a bad copy) would be mapped and then kill the process with
 * SIGBUS on the first read of a page past its end: refused too. LMDB itself
 * leaves the file shorter than its meta page's last page when the final
 * pages were freed before they were ever written (mdb.c, mm_last_pg), so a
 * file shorter than that is walked: every page a tree reaches (branch,
 * leaf, overflow, named sub-databases, the free list) must lie inside it.
 */

/** LMDB (mdb.master3, as vendored by lmdb-js) meta page layout on a 64-bit host. */
const PAGE_HEADER_BYTES = 24;
const META_FLAGS_OFFSET = 18;
const P_META = 0x08;
const MAGIC_OFFSET = PAGE_HEADER_BYTES;
const VERSION_OFFSET = PAGE_HEADER_BYTES + 4;
/** mm_psize aliases mm_dbs[FREE_DBI].md_pad, after magic, version, address and mapsize. */
const PAGE_SIZE_OFFSET = PAGE_HEADER_BYTES + 24;
/** mm_dbs[2] (MDB_db, 48 bytes each: the free list, then the main database) after magic, version, address, mapsize. */
const META_DBS_OFFSET = PAGE_HEADER_BYTES + 24;
const MDB_DB_BYTES = 48;
/** md_root, the last field of MDB_db. */
const DB_ROOT_OFFSET = 40;
/** After mm_dbs[2]: mm_last_pg (the last page in use), then mm_txnid. */
const LAST_PAGE_OFFSET = PAGE_HEADER_BYTES + 120;
const TXNID_OFFSET = PAGE_HEADER_BYTES + 128;
/** Page header: mh_p (pgno), mh_txnid, mh_pad, mh_flags, then mp_lower/mp_upper or the overflow page count. */
const PAGE_FLAGS_OFFSET = 18;
const PAGE_LOWER_OFFSET = 20;
const OVERFLOW_PAGES_OFFSET = 20;
const P_BRANCH = 0x01;
const P_LEAF = 0x02;
const P_LEAF2 = 0x20;
/** Node header: mn_lo, mn_hi (data size or the low bits of a child pgno), mn_flags, mn_ksize. */
const NODE_HEADER_BYTES = 8;
const F_BIGDATA = 0x01;
const F_SUBDATA = 0x02;
const P_INVALID = 0xffffffffffffffffn;
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
    const meta = newestMeta(fd, pageSize, little);
    if (meta === null || size >= (meta.lastPage + 1) * pageSize) return null;
    const outside = pageOutside(new PageReader(fd, pageSize, size, little), meta.roots);
    if (outside === null) return null;
    return `data.mdb is cut short: ${size} bytes, but its pages in use end at ${(meta.lastPage + 1) * pageSize} bytes and it needs page ${outside} (truncated or partly copied; restore it from a backup, or remove the store directory to resync from peers)`;
  } finally {
    closeSync(fd);
  }
}

interface Meta {
  lastPage: number;
  /** Roots of the free list and the main database (P_INVALID when empty). */
  roots: bigint[];
}

/** The meta page with the higher transaction id (the one lmdb opens with); null if unreadable. */
function newestMeta(fd: number, pageSize: number, little: boolean): Meta | null {
  let best: { txnid: bigint; lastPage: bigint; roots: bigint[] } | null = null;
  for (const page of [0, 1]) {
    const meta = Buffer.alloc(TXNID_OFFSET + 8);
    if (readSync(fd, meta, 0, meta.byteLength, page * pageSize) < meta.byteLength) return null;
    const u32 = little ? meta.readUInt32LE(MAGIC_OFFSET) : meta.readUInt32BE(MAGIC_OFFSET);
    if (u32 !== MDB_MAGIC) continue;
    const u64 = (offset: number) => (little ? meta.readBigUInt64LE(offset) : meta.readBigUInt64BE(offset));
    const roots = [0, 1].map((db) => u64(META_DBS_OFFSET + db * MDB_DB_BYTES + DB_ROOT_OFFSET));
    const candidate = { txnid: u64(TXNID_OFFSET), lastPage: u64(LAST_PAGE_OFFSET), roots };
    if (best === null || candidate.txnid > best.txnid) best = candidate;
  }
  if (best === null || best.lastPage > BigInt(Number.MAX_SAFE_INTEGER)) return null;
  return { lastPage: Number(best.lastPage), roots: best.roots };
}

/** Reads whole pages of data.mdb by number; a page past the end of the file reads as null. */
class PageReader {
  readonly pageCount: number;

  constructor(
    private readonly fd: number,
    readonly pageSize: number,
    fileSize: number,
    readonly little: boolean,
  ) {
    this.pageCount = Math.floor(fileSize / pageSize);
  }

  read(pgno: bigint): Buffer | null {
    if (pgno >= BigInt(this.pageCount)) return null;
    const page = Buffer.alloc(this.pageSize);
    readSync(this.fd, page, 0, this.pageSize, Number(pgno) * this.pageSize);
    return page;
  }
}

/**
 * Walks every tree from the given roots the way lmdb's cursors would reach
 * it and returns the first page number that lies past the end of the file
 * (or a page so damaged that its nodes point outside it), or null if every
 * reachable page is inside the file. Each page is read once.
 */
function pageOutside(reader: PageReader, roots: bigint[]): bigint | null {
  const { little, pageSize } = reader;
  const u16 = (b: Buffer, o: number) => (little ? b.readUInt16LE(o) : b.readUInt16BE(o));
  const u32 = (b: Buffer, o: number) => (little ? b.readUInt32LE(o) : b.readUInt32BE(o));
  const u64 = (b: Buffer, o: number) => (little ? b.readBigUInt64LE(o) : b.readBigUInt64BE(o));
  const pending = roots.filter((root) => root !== P_INVALID);
  const seen = new Set<bigint>();
  while (pending.length > 0) {
    const pgno = pending.pop() as bigint;
    if (seen.has(pgno)) continue;
    seen.add(pgno);
    const page = reader.read(pgno);
    if (page === null) return pgno;
    const flags = u16(page, PAGE_FLAGS_OFFSET);
    if ((flags & (P_BRANCH | P_LEAF)) === 0 || (flags & P_LEAF2) !== 0) continue;
    const keys = u16(page, PAGE_LOWER_OFFSET) >> 1;
    if (PAGE_HEADER_BYTES + 2 * keys > pageSize) return pgno;
    for (let i = 0; i < keys; i++) {
      const at = PAGE_HEADER_BYTES + u16(page, PAGE_HEADER_BYTES + 2 * i);
      if (at + NODE_HEADER_BYTES > pageSize) return pgno;
      const lo = BigInt(u16(page, at));
      const hi = BigInt(u16(page, at + 2));
      const nodeFlags = u16(page, at + 4);
      if ((flags & P_BRANCH) !== 0) {
        pending.push(lo | (hi << 16n) | (BigInt(nodeFlags) << 32n));
        continue;
      }
      const data = at + NODE_HEADER_BYTES + u16(page, at + 6);
      if ((nodeFlags & F_BIGDATA) !== 0) {
        if (data + 8 > pageSize) return pgno;
        const first = u64(page, data);
        const head = reader.read(first);
        if (head === null) return first;
        const last = first + BigInt(u32(head, OVERFLOW_PAGES_OFFSET)) - 1n;
        if (last >= BigInt(reader.pageCount)) return last;
      } else if ((nodeFlags & F_SUBDATA) !== 0) {
        // A named database (or a large duplicate set) has a tree of its own. A small duplicate set
        // (F_DUPDATA alone) lives inside this page and reaches no other.
        if (data + MDB_DB_BYTES > pageSize) return pgno;
        const root = u64(page, data + DB_ROOT_OFFSET);
        if (root !== P_INVALID) pending.push(root);
      }
    }
  }
  return null;
}
