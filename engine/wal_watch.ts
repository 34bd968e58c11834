/**
 * Notices commits to a WAL-mode database by any process, cheaply: every
 * commit rewrites the WAL-index header at the start of the `-shm` file
 * (its change counter, last frame, checksums and salts; SQLite's file
 * format §4.5), which every process maps from the same page cache.
 *
 * Where FFI is permitted on libc (Linux, macOS; `--allow-ffi`, or scoped to
 * libc's file) the first page of the `-shm` file is mapped into memory with
 * libc's `mmap`, and a check copies 48 bytes of it with libc's `memcpy`
 * (about 0.02–0.04 µs: no system call at all). The address stays a number:
 * Deno's pointer views would read the memory directly but need
 * `--allow-ffi` for every library, which an `--allow-ffi` scoped to libc
 * does not give. Otherwise the header is read with a seek and a read
 * through Deno's file API (measured in a busy server at ≈3.5 µs a check,
 * most of it the seek op) — against ≈1.3 µs for `PRAGMA data_version`,
 * which opens a read transaction.
 *
 * The mapping stays valid while the server runs: SQLite truncates and
 * rebuilds the `-shm` file only when no connection has the database open,
 * and the server keeps its connections open. It tells by SQLite's `fcntl`
 * lock on the file (the "DMS" byte), and POSIX drops *every* `fcntl` lock a
 * process holds on a file when the process closes *any* descriptor of it:
 * so the descriptor the header was mapped or read through stays open until
 * {@link WalWatch.close}, which the engine calls only after SQLite closed
 * the database. (Closing it at once let the next process to open the file
 * find no holder, rebuild the `-shm` file under the server's mappings, and
 * crash the server with SIGBUS.)
 *
 * The engine reads the header before renewing its read snapshot, so a
 * snapshot is never older than the header it recorded: a commit that
 * completed before a read arrives is always seen by that read.
 *
 * @module
 */

import { openLibc as openLibcFile } from "./binding/_libc.ts";
import { walPaths } from "./database_file.ts";

const HEADER_BYTES = 48;
/** {@link HEADER_BYTES} for `memcpy`. */
const COPY_BYTES = 48n;
/** Index of `mxFrame` (u32 at byte 16, native order) in the header as 32-bit words. */
const MX_FRAME = 4;
const PAGE = 4096;
const PROT_READ = 1;
const MAP_SHARED = 1;

/** `MAP_FAILED`, `(void *) -1`, as the address `mmap` returns. */
const MAP_FAILED = 0xffffffffffffffffn;

// Addresses are `usize` (a bigint), not `pointer`: see the module notes.
const LIBC_SYMBOLS = {
  open: { parameters: ["buffer", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  // void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset)
  mmap: { parameters: ["usize", "usize", "i32", "i32", "i32", "i64"], result: "usize" },
  // int munmap(void *addr, size_t length)
  munmap: { parameters: ["usize", "usize"], result: "i32" },
  // void *memcpy(void *dest, const void *src, size_t n); bigint arguments keep it a fast call
  memcpy: { parameters: ["buffer", "usize", "usize"], result: "void" },
} as const;

type Libc = Deno.DynamicLibrary<typeof LIBC_SYMBOLS>;

/** libc (Linux, macOS; whole or scoped `--allow-ffi`), or `null`. */
function openLibc(): Libc | null {
  const os = Deno.build.os;
  if (os !== "linux" && os !== "darwin") return null;
  return openLibcFile(LIBC_SYMBOLS);
}

/** Watches one database's WAL-index header. */
export class WalWatch {
  readonly #path: string;
  #file: Deno.FsFile | null = null;
  #libc: Libc | null | undefined = undefined;
  /** Where the header is mapped (an address), `0n` while it is not. */
  #map = 0n;
  /** The descriptor `#map` was made through: open until {@link close} (see the module doc). */
  #fd = -1;
  /** The header as last copied or read. */
  readonly #buffer = new Uint8Array(HEADER_BYTES);
  readonly #header = new Uint32Array(this.#buffer.buffer);
  readonly #seen = new Uint32Array(HEADER_BYTES / 4);
  /** Whether the last check read a header (see {@link readable}). */
  #readable = false;

  /**
   * @param database The database file, as the engine opened it (its `-shm`
   *   file is watched, where SQLite keeps it: beside the file a symbolic
   *   link names).
   */
  constructor(database: string) {
    this.#path = walPaths(database).shm;
  }

  /**
   * True when the header differs from the one recorded by the last call
   * that returned true (or when it cannot be read: then every call is a
   * change, which is safe). The header read now becomes the recorded one.
   */
  changed(): boolean {
    return this.changedSince(this.#seen);
  }

  /**
   * {@link changed} against a header recorded elsewhere: true when the header
   * differs from `seen` (or cannot be read), and `seen` then becomes the
   * header read now. `seen` comes from {@link mark}.
   */
  changedSince(seen: Uint32Array): boolean {
    const now = this.#map !== 0n ? this.#copy() : this.#read();
    this.#readable = now !== null;
    if (now === null) return true;
    for (let i = 0; i < seen.length; i++) {
      if (now[i] !== seen[i]) {
        seen.set(now);
        return true;
      }
    }
    return false;
  }

  /**
   * True when the last {@link changed} or {@link changedSince} read a header:
   * false when there is none to read (a database not in WAL mode has no
   * `-shm` file), and every check then says "changed".
   */
  get readable(): boolean {
    return this.#readable;
  }

  /** A record of the header for {@link changedSince} (zeros until its first call). */
  mark(): Uint32Array {
    return new Uint32Array(HEADER_BYTES / 4);
  }

  /**
   * Frames in the WAL now (`mxFrame` of the header), read from the mapped
   * header; `null` where it is not mapped (a read would cost a system call).
   */
  frames(): number | null {
    if (this.#map === 0n && this.#libc === undefined) this.#read();
    return this.#map === 0n ? null : this.#copy()[MX_FRAME];
  }

  /**
   * How a check reads the header, for the start-up log: `mapped` (a copy of
   * memory), else read from the file and why. Tries to map it first.
   */
  describe(): string {
    if (this.frames() !== null) return "mapped";
    return "read from the file at every check (" +
      (this.#libc === null ? "no FFI on libc" : "not mapped: the -shm file is under a page") + ")";
  }

  /**
   * Unmaps and closes. Idempotent. Call it only after SQLite closed the
   * database: it drops this process's `fcntl` locks on the `-shm` file.
   */
  close(): void {
    this.#file?.close();
    this.#file = null;
    if (this.#map !== 0n) this.#libc?.symbols.munmap(this.#map, BigInt(PAGE));
    this.#map = 0n;
    if (this.#fd >= 0) this.#libc?.symbols.close(this.#fd);
    this.#fd = -1;
    this.#libc?.close();
    this.#libc = null;
  }

  /** Maps the header if possible, else reads it once; `null` when it cannot be had. */
  #read(): Uint32Array | null {
    if (this.#libc === undefined) this.#libc = openLibc();
    if (this.#libc !== null && this.#mapHeader(this.#libc)) return this.#copy();
    const file = this.#file ?? this.#open();
    if (file === null) return null;
    try {
      file.seekSync(0, Deno.SeekMode.Start);
      if (file.readSync(this.#buffer) !== HEADER_BYTES) return null;
    } catch {
      return null;
    }
    return this.#header;
  }

  /** The mapped header now (call only while mapped). */
  #copy(): Uint32Array {
    this.#libc!.symbols.memcpy(this.#buffer, this.#map, COPY_BYTES);
    return this.#header;
  }

  #mapHeader(libc: Libc): boolean {
    // Mapping past the end of the file would fault on access: SQLite grows
    // it in 32 KiB steps once the WAL is in use.
    try {
      if (Deno.statSync(this.#path).size < PAGE) return false;
    } catch {
      return false;
    }
    // One descriptor, kept: were mapping fail, closing it would drop the locks too.
    const fd = this.#fd >= 0 ? this.#fd : libc.symbols.open(
      new TextEncoder().encode(`${this.#path}\0`),
      0,
    );
    if (fd < 0) return false;
    const map = BigInt(libc.symbols.mmap(0n, BigInt(PAGE), PROT_READ, MAP_SHARED, fd, 0n));
    // The descriptor stays open while the mapping is used (see the module doc).
    this.#fd = fd;
    if (map === 0n || map === MAP_FAILED) return false;
    this.#map = map;
    return true;
  }

  #open(): Deno.FsFile | null {
    try {
      this.#file = Deno.openSync(this.#path, { read: true });
    } catch {
      this.#file = null;
    }
    return this.#file;
  }
}
