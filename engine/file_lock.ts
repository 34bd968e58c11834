/**
 * Whether another process (a program writing the database file directly:
 * the sqlite3 shell, a migration tool) holds the write lock of a WAL
 * database, for the message of a write that waited for the writer while its
 * holder waited for that lock (`writer_queue.ts`).
 *
 * SQLite takes a WAL database's write lock as a POSIX `fcntl` lock on byte
 * 120 of its `-shm` file (`WAL_WRITE_LOCK`; SQLite's `os_unix.c`). Linux
 * lists every such lock in `/proc/locks`, with its process: read there, when
 * this process may read it (`--allow-read`). Elsewhere it cannot be told.
 *
 * @module
 */

/** The byte of the `-shm` file SQLite locks to write a WAL database. */
const WAL_WRITE_LOCK_BYTE = 120n;

/** How long an answer is reused, in ms: many waiters may expire at once. */
const REUSE_MS = 50;

let last: { shm: string; at: number; answer: boolean | null } | null = null;

/**
 * True when a process other than this one holds the write lock of the WAL
 * database whose `-shm` file is `shm`; false when none does; `null` when it
 * cannot be told (not Linux, `/proc/locks` not readable, no `-shm` file).
 *
 * @example
 * ```ts
 * import { walWriteLockElsewhere } from "./file_lock.ts";
 * if (walWriteLockElsewhere("/nonexistent.db-shm") === true) throw new Error("no file, no lock");
 * ```
 */
export function walWriteLockElsewhere(shm: string): boolean | null {
  const now = performance.now();
  if (last !== null && last.shm === shm && now - last.at < REUSE_MS) return last.answer;
  const answer = probe(shm);
  last = { shm, at: now, answer };
  return answer;
}

function probe(shm: string): boolean | null {
  if (Deno.build.os !== "linux") return null;
  let info: Deno.FileInfo;
  let text: string;
  try {
    info = Deno.statSync(shm);
    if (Deno.permissions.querySync({ name: "read", path: "/proc/locks" }).state !== "granted") {
      return null;
    }
    text = Deno.readTextFileSync("/proc/locks");
  } catch {
    return null;
  }
  if (info.ino === null || info.dev === null) return null;
  // glibc's major()/minor() of st_dev; /proc/locks prints them in hex, then the inode.
  const dev = BigInt(info.dev);
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  const ino = BigInt(info.ino);
  for (const line of text.split("\n")) {
    // `1: POSIX  ADVISORY  WRITE 4242 fe:00:2253515 120 120`; waiters (`1: -> POSIX ...`) hold nothing.
    const m =
      /^\d+: (?:POSIX|OFDLCK)\s+\S+\s+WRITE\s+(-?\d+)\s+([0-9a-f]+):([0-9a-f]+):(\d+)\s+(\d+)\s+(\d+|EOF)/
        .exec(line);
    if (m === null || BigInt(m[4]) !== ino) continue;
    if (BigInt(`0x${m[2]}`) !== major || BigInt(`0x${m[3]}`) !== minor) continue;
    const start = BigInt(m[5]);
    const end = m[6] === "EOF" ? null : BigInt(m[6]);
    if (start > WAL_WRITE_LOCK_BYTE || (end !== null && end < WAL_WRITE_LOCK_BYTE)) continue;
    // (An open file description's lock, OFDLCK, has no process: -1. Not SQLite's, but not ours.)
    if (Number(m[1]) !== Deno.pid) return true;
  }
  return false;
}
