/**
 * One server per database file: an operating-system lock on `<db>.lock`,
 * held for the server's lifetime. The OS releases it when the process ends
 * however it ends (even `kill -9`), so a stale lock never blocks a restart.
 * The file also records the owner's pid and address, for the message a
 * second server prints. The file is never deleted: deleting it while another
 * process waits to lock it would let two servers each lock a different file.
 *
 * @module
 */

/**
 * Another live server owns the database (one server per database file).
 *
 * @example
 * ```ts
 * import { DatabaseLockedError, serve } from "@netsqlite/netsqlite/server";
 * const dir = await Deno.makeTempDir();
 * await using first = await serve({ database: `${dir}/a.db`, path: `${dir}/a.sock` });
 * try {
 *   await serve({ database: `${dir}/a.db`, path: `${dir}/b.sock` });
 *   throw new Error("expected DatabaseLockedError");
 * } catch (err) {
 *   if (!(err instanceof DatabaseLockedError) || err.code !== "DATABASE_LOCKED") throw err;
 * }
 * ```
 */
export class DatabaseLockedError extends Error {
  /** Stable code: `DATABASE_LOCKED`. */
  readonly code = "DATABASE_LOCKED";
  /**
   * Creates the error.
   *
   * @param message What went wrong.
   */
  constructor(message: string) {
    super(message);
    this.name = "DatabaseLockedError";
  }
}

/** The lock file path for `database`. */
export function lockPath(database: string): string {
  return `${database}.lock`;
}

/** A held database lock. */
export class DatabaseLock {
  readonly #file: Deno.FsFile;
  /** The lock file. */
  readonly path: string;
  #released = false;

  private constructor(file: Deno.FsFile, path: string) {
    this.#file = file;
    this.path = path;
  }

  /**
   * Takes the lock of `database` without waiting.
   *
   * @param database The database file.
   * @param address Where this server will listen, for the message of a second server.
   * @throws {DatabaseLockedError} `another server owns <db> (pid N, socket S)`.
   */
  static acquire(database: string, address: string): DatabaseLock {
    const path = lockPath(database);
    const file = Deno.openSync(path, { read: true, write: true, create: true, mode: 0o600 });
    let locked: boolean;
    try {
      locked = file.tryLockSync(true);
    } catch (err) {
      file.close();
      throw err;
    }
    if (!locked) {
      file.close();
      const owner = readOwner(path);
      throw new DatabaseLockedError(
        `another server owns ${database} (pid ${owner.pid}, socket ${owner.socket})`,
      );
    }
    const lock = new DatabaseLock(file, path);
    lock.record(address);
    return lock;
  }

  /** Records this process and `address` in the lock file. */
  record(address: string): void {
    const text = new TextEncoder().encode(JSON.stringify({ pid: Deno.pid, socket: address }));
    this.#file.truncateSync(0);
    this.#file.seekSync(0, Deno.SeekMode.Start);
    for (let off = 0; off < text.length;) off += this.#file.writeSync(text.subarray(off));
  }

  /** Releases the lock (the file stays). Idempotent. */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    try {
      this.#file.truncateSync(0);
    } catch {
      // Best effort: the content is only informative.
    }
    this.#file.close();
  }
}

/** The pid and address recorded in a lock file (`unknown` while being written). */
export function readOwner(path: string): { pid: string; socket: string } {
  try {
    const o = JSON.parse(Deno.readTextFileSync(path)) as { pid?: unknown; socket?: unknown };
    return { pid: String(o.pid ?? "unknown"), socket: String(o.socket ?? "unknown") };
  } catch {
    return { pid: "unknown", socket: "unknown" };
  }
}
