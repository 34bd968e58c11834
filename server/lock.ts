/**
 * One server per database file: an operating-system lock (`flock` on Linux)
 * on `<real path of the db>.lock`, held for the server's lifetime. The path
 * is the database's real path (symbolic links resolved), so two names of one
 * file share one lock; on Linux the server also holds an `flock` on the
 * database file itself, which catches hard links (Linux keeps `flock` apart
 * from SQLite's `fcntl` locks; macOS and Windows do not, so there the lock
 * file alone decides). The OS releases both when the process ends however it
 * ends (even `kill -9`), so a stale lock never blocks a restart. The lock
 * file also records the owner's pid and address, for the message a second
 * server prints. A running server never deletes it; a start that fails
 * deletes the lock file it created while still holding its lock, and
 * {@link DatabaseLock.acquire} retries when the file it locked is no longer
 * the one at the path, so two servers never hold locks on different files.
 *
 * The lock file is writable by whoever may write the database file (its
 * owner always; its group and others when the database's mode lets them
 * write), much as SQLite gives its `-wal` and `-shm` the database's mode:
 * users who share a database share its lock. A lock file
 * another user left that this user may not write is judged through a
 * read-only descriptor (or `/proc/locks`): held, it is the usual "another
 * server owns"; not held, the message says whose file it is and what to do.
 *
 * @module
 */

import { resolve } from "node:path";
import { realDatabasePath } from "../engine/database_file.ts";

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

/** A database file a server of this process serves, by its `fileKey`. */
interface Served {
  /** Its real path, as that server reached it. */
  readonly real: string;
  /** That server's address, as recorded in its lock file. */
  readonly socket: string;
}

/**
 * The database files the servers of this process serve, by device and
 * inode. A second `serve()` of one of them (by any name: a hard link has no
 * lock file in common with the first, and the `flock` on the file itself
 * would be taken) is refused from here, before it opens anything of the
 * file: POSIX drops every `fcntl` lock a process holds on a file when the
 * process closes *any* descriptor of it, so a second start that opened the
 * database and closed it again on failing dropped the first server's SQLite
 * locks (another program could then switch the database out of WAL under
 * it, deleting its `-wal` and `-shm`).
 */
const served = new Map<string, Served>();

/** `dev:ino` of the file at `path` (symbolic links followed), or `null` (none there, no inodes). */
function fileKey(path: string): string | null {
  try {
    const info = Deno.statSync(path);
    return info.ino === null ? null : `${info.dev}:${info.ino}`;
  } catch {
    return null;
  }
}

/**
 * Refuses `database` when a server of this process serves its file.
 *
 * @param database The database file, as given.
 * @param real Its real path.
 * @throws {DatabaseLockedError} naming the other server's address (and, for a hard link, the
 *   name it serves the file by).
 */
function refuseServedHere(database: string, real: string): void {
  const key = fileKey(database);
  const first = key === null ? undefined : served.get(key);
  if (first === undefined) return;
  const hardLink = first.real === real ? "" : "; through another name of the same file, a hard " +
    `link: this process serves it as ${first.real}`;
  throw new DatabaseLockedError(
    `another server owns ${database} (${alias(database, real)}pid ${Deno.pid}, socket ` +
      `${first.socket}${hardLink})${missingSocket(first.socket)}`,
  );
}

/** The lock file path for `database`: `<real path>.lock`. */
export function lockPath(database: string): string {
  return `${realDatabasePath(database)}.lock`;
}

/** A held database lock. */
export class DatabaseLock {
  readonly #file: Deno.FsFile;
  /** Whether this process created the lock file (a failed start deletes it again). */
  readonly #created: boolean;
  /** The database file itself, `flock`ed (Linux), or `null`. */
  #dbFile: Deno.FsFile | null = null;
  /** This server's entry in `served`, once {@link lockDatabaseFile} made it. */
  #servedKey: string | null = null;
  /** Where this server listens, as recorded. */
  readonly #address: string;
  /** The lock file. */
  readonly path: string;
  /** The database's real path. */
  readonly database: string;
  #released = false;
  /** Why the owner record could not be written (a full disk), or `null`. */
  warning: string | null = null;

  private constructor(
    file: Deno.FsFile,
    path: string,
    database: string,
    created: boolean,
    address: string,
  ) {
    this.#file = file;
    this.path = path;
    this.database = database;
    this.#created = created;
    this.#address = address;
  }

  /**
   * Takes the lock of `database` without waiting.
   *
   * @param database The database file, as given.
   * @param address Where this server will listen, for the message of a second server.
   * @throws {DatabaseLockedError} `another server owns <db> (pid N, socket S)`; also when a
   *   server of this process serves the file by another name (a hard link), refused before
   *   anything of it is opened.
   *   Also when the lock file is another user's, this user may not write it, and a server
   *   holds it.
   * @throws {LockFileAccessError} when the lock file is another user's, this user may not
   *   write it, and no server is known to hold it.
   * @throws {SqliteError} `SQLITE_CANTOPEN` when the database's directory does not exist.
   * @throws {Deno.errors.PermissionDenied} when the lock file is absent and the directory
   *   does not let this user create it.
   * @throws {Error} the system's error of writing the lock file (a full disk), naming it; the
   *   lock file is removed again when this call created it.
   */
  static acquire(database: string, address: string): DatabaseLock {
    const real = realDatabasePath(database);
    refuseServedHere(database, real);
    const path = `${real}.lock`;
    for (let attempt = 0;; attempt++) {
      const opened = openLockFile(database, real, path);
      if (opened === null) continue; // created by another start meanwhile: open that one
      const { file, created } = opened;
      let locked: boolean;
      try {
        // An empty lock file: its owner is between taking it and writing its pid, or released
        // it a moment ago while a child process being spawned still held a copy of its descriptor.
        locked = tryLockSoon(file, TRANSIENT_MS, () => readOwner(path).pid === "unknown");
      } catch (err) {
        file.close();
        throw err;
      }
      if (!locked) {
        file.close();
        const owner = readOwner(path);
        throw new DatabaseLockedError(
          `another server owns ${database} (${alias(database, real)}pid ${owner.pid}, ` +
            `socket ${owner.socket})${missingSocket(owner.socket)}`,
        );
      }
      // A start that failed may have deleted the file between our open and our lock:
      // then we locked a file nobody else will, and must lock the one at the path.
      if (!sameFile(file, path) && attempt < 10) {
        file.close();
        continue;
      }
      const lock = new DatabaseLock(file, path, real, created, address);
      try {
        lock.record(address);
      } catch (err) {
        if (isNoSpace(err)) {
          // A full disk: the lock is held all the same (the record only informs a second server).
          lock.warning = `cannot write the lock file "${path}" (${(err as Error).message}): ` +
            "holding its lock without recording this server's pid and socket in it";
          return lock;
        }
        lock.release(true);
        throw recordError(err, database, path);
      }
      return lock;
    }
  }

  /**
   * Also locks the database file itself (`flock`, Linux only), which a
   * second server reaching it through a hard link finds taken, and records
   * it as served by this process (a second `serve()` here of the same file
   * is refused before opening it: {@link acquire}). Call it when the file
   * exists, and release the lock only after SQLite closed the file: closing
   * any descriptor of a file drops the process's `fcntl` locks on it. Also
   * makes the lock file writable by whoever may write the database (see the
   * module's doc).
   *
   * @throws {DatabaseLockedError} when another server holds the file.
   */
  lockDatabaseFile(database: string): void {
    if (this.#servedKey !== null) return;
    // Never open (and so close) a file this process serves.
    refuseServedHere(database, this.database);
    if (Deno.build.os === "linux" && this.#dbFile === null) {
      const file = Deno.openSync(this.database, { read: true });
      this.#dbFile = file; // kept open even when taken: closed by release()
      if (!tryLockSoon(file, TRANSIENT_MS, () => true)) {
        // Or its lock file was deleted (this start made a new one, and locked it).
        let holder: string | null | undefined;
        try {
          holder = flockHolder(file.statSync());
        } catch {
          holder = undefined;
        }
        const pid = typeof holder === "string" && holder !== "unknown"
          ? ` (pid ${holder} ` +
            "holds the database file's lock)"
          : "";
        throw new DatabaseLockedError(
          `another server owns ${database} (${alias(database, this.database)}through another ` +
            "name of the same file, a hard link; its pid and socket are in the .lock beside " +
            `that name; or its lock file "${this.path}" was deleted while it runs${pid}: ` +
            "restart that server to make it again)",
        );
      }
    }
    const key = fileKey(this.database);
    if (key !== null) {
      served.set(key, { real: this.database, socket: this.#address });
      this.#servedKey = key;
    }
    this.#shareLikeDatabase();
  }

  /**
   * Makes the lock file readable and writable by whoever may write the
   * database file, much as SQLite gives its `-wal` and `-shm` files the
   * database's mode: a user who may write the database may then take its
   * lock too, also after another user's server made the file (it was
   * `0600`, and every later start by another user failed). The owner keeps
   * read and write; the group and others get read and write when the
   * database lets them write, else nothing (a `0644` database keeps a
   * `0600` lock file: those who may only read it need no lock, and could
   * hold it to keep every server out); the group follows the database's
   * when this user may give it; a lock file root made gets the database's
   * owner, as SQLite's files do. A file left as it was (not this user's to
   * change) is no error: the next start by another user says what to do.
   */
  #shareLikeDatabase(): void {
    if (Deno.build.os === "windows") return;
    let db: Deno.FileInfo, lock: Deno.FileInfo;
    try {
      db = Deno.statSync(this.database);
      lock = this.#file.statSync();
    } catch {
      return;
    }
    if (db.mode === null || lock.mode === null) return;
    const rootMade = this.#created && lock.uid === 0 && db.uid !== null && db.uid !== 0;
    const uid = rootMade ? db.uid : null;
    if (uid !== null || (db.gid !== null && db.gid !== lock.gid)) {
      try {
        Deno.chownSync(this.path, uid, db.gid);
      } catch {
        // Not a group of this user: the group stays this user's.
      }
    }
    const mode = 0o600 | (db.mode & 0o020 ? 0o060 : 0) | (db.mode & 0o002 ? 0o006 : 0);
    try {
      if ((lock.mode & 0o777) !== mode) Deno.chmodSync(this.path, mode);
    } catch {
      // Another user's file: left as it is.
    }
  }

  /** Records this process and `address` in the lock file. */
  record(address: string): void {
    const text = new TextEncoder().encode(JSON.stringify({ pid: Deno.pid, socket: address }));
    this.#file.truncateSync(0);
    this.#file.seekSync(0, Deno.SeekMode.Start);
    for (let off = 0; off < text.length;) off += this.#file.writeSync(text.subarray(off));
  }

  /**
   * Releases the lock (the file stays). Idempotent.
   *
   * @param discard Delete the lock file when this process created it (a start that failed).
   */
  release(discard = false): void {
    if (this.#released) return;
    this.#released = true;
    try {
      if (discard && this.#created) Deno.removeSync(this.path); // while still locked
      else this.#file.truncateSync(0);
    } catch {
      // Best effort: the content is only informative.
    }
    this.#file.close();
    this.#dbFile?.close();
    if (this.#servedKey !== null) served.delete(this.#servedKey);
  }
}

/**
 * How long a start waits for a lock that may be held only for a moment
 * (ms): when a process spawns a child, the child holds a copy of every
 * descriptor between its fork and its exec, `flock`s included, so a lock
 * released just before stays taken that long (milliseconds, more under load).
 */
const TRANSIENT_MS = 1000;

/** One wait between attempts (ms). */
const RETRY_MS = 5;

/**
 * `file.tryLockSync(true)`, tried again for up to `ms` while `transient()`
 * says the holder may let go soon. Waits synchronously: only a start that
 * meets such a lock ever waits.
 */
function tryLockSoon(file: Deno.FsFile, ms: number, transient: () => boolean): boolean {
  const end = performance.now() + ms;
  const pause = new Int32Array(new SharedArrayBuffer(4));
  while (!file.tryLockSync(true)) {
    if (performance.now() >= end || !transient()) return false;
    Atomics.wait(pause, 0, 0, RETRY_MS);
  }
  return true;
}

/**
 * The lock file exists, this user may not write it (another user's server
 * made it), and no server is known to hold it.
 */
export class LockFileAccessError extends Deno.errors.PermissionDenied {
  /** The lock file. */
  readonly path: string;
  /** Why it cannot be used: `it belongs to uid N and group G, mode 0600, and ...`. */
  readonly reason: string;
  /**
   * Creates the error.
   *
   * @param message The whole message, naming the database and what to do.
   * @param path The lock file.
   * @param reason Why it cannot be used, for the warning of a read-only server.
   * @param options Error options (`cause`).
   */
  constructor(message: string, path: string, reason: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "PermissionDenied";
    this.path = path;
    this.reason = reason;
  }
}

/**
 * Opens the lock file for reading and writing, creating it when absent
 * (`0600`, until {@link DatabaseLock.lockDatabaseFile} opens it to those who
 * may write the database); `null` when another start created it between the
 * two tries. An existing file is opened without `O_CREAT`: Linux refuses that
 * flag on another user's file in a sticky directory (`fs.protected_regular`),
 * however writable the file.
 *
 * @throws {DatabaseLockedError} when the file is another user's, this user may
 *   not write it, and a server holds it.
 * @throws {LockFileAccessError} when it is another user's, this user may not
 *   write it, and no server is known to hold it.
 * @throws the system's error otherwise (`PermissionDenied` when the directory
 *   does not let this user create the file).
 */
function openLockFile(
  database: string,
  real: string,
  path: string,
): { file: Deno.FsFile; created: boolean } | null {
  try {
    return { file: Deno.openSync(path, { read: true, write: true }), created: false };
  } catch (err) {
    if (err instanceof Deno.errors.PermissionDenied) throw unwritable(database, real, path, err);
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  try {
    const file = Deno.openSync(path, { read: true, write: true, createNew: true, mode: 0o600 });
    return { file, created: true };
  } catch (err) {
    if (err instanceof Deno.errors.AlreadyExists) return null;
    throw err;
  }
}

/**
 * The error of a lock file this user may not write: whether a server holds
 * it is found by locking it through a read-only descriptor (`flock` needs
 * no more), or, when this user may not read it either, from `/proc/locks`
 * (Linux, where it may be read: `--allow-all`), else from the `flock` on the
 * database file itself. Held: the usual {@link DatabaseLockedError}, with its owner's pid
 * and socket (the socket when the file can be read). Not held, or not known:
 * a {@link LockFileAccessError} naming the file's owner and mode, and what to
 * do; never "make the directory writable" (the directory may well be).
 */
function unwritable(database: string, real: string, path: string, cause: Error): Error {
  let info: Deno.FileInfo | null = null;
  try {
    info = Deno.statSync(path);
  } catch {
    // Gone meanwhile: described as far as known.
  }
  let reader: Deno.FsFile | null = null;
  try {
    reader = Deno.openSync(path, { read: true });
  } catch {
    // Not readable either.
  }
  let held: boolean | null;
  let holder = "unknown";
  let socket = "unknown";
  if (reader !== null) {
    try {
      held = !tryLockSoon(reader, TRANSIENT_MS, () => readOwner(path).pid === "unknown");
    } finally {
      reader.close(); // drops the lock if taken
    }
    if (held) ({ pid: holder, socket } = readOwner(path));
  } else {
    const pid = flockHolder(info);
    held = pid === undefined ? databaseFileLocked(real) : pid !== null;
    if (pid !== undefined && pid !== null) holder = pid;
  }
  if (held === true) {
    const where = reader !== null
      ? `socket ${socket}`
      : `socket unknown: this user may not read its lock file "${path}"`;
    return new DatabaseLockedError(
      `another server owns ${database} (${alias(database, real)}pid ${holder}, ${where})`,
    );
  }
  let me: number | null = null;
  try {
    // Without --allow-sys=uid (never prompted for): this user goes unnamed.
    if (Deno.permissions.querySync({ name: "sys", kind: "uid" }).state === "granted") {
      me = Deno.uid();
    }
  } catch {
    // As above.
  }
  const bits = info === null || info.mode === null
    ? null
    : (info.mode & 0o777).toString(8).padStart(4, "0");
  const whose = info === null || info.uid === null || bits === null
    ? "this user may not write it"
    : info.uid === me
    ? `its mode, ${bits}, does not let even its owner, this user, write it`
    : `it belongs to uid ${info.uid} and group ${info.gid}, mode ${bits}, and this user` +
      `${me === null ? "" : `, uid ${me},`} may not write it`;
  const state = held === false
    ? "no server holds it"
    : "this user may not read it either, so whether a server holds it cannot be told";
  const remove = held === false
    ? "remove it (the next start makes it again, writable by those who may write the database)"
    : "if no server runs (its owner can tell), remove it";
  const fix = info !== null && info.uid === me
    ? `make it writable (chmod u+w "${path}")`
    : `have its owner make it ${held === false ? "" : "readable and "}writable for its group ` +
      `(chmod g+${held === false ? "" : "r"}w "${path}")`;
  const reason = `${whose}; ${state}`;
  return new LockFileAccessError(
    `Cannot serve "${database}": its lock file "${path}" cannot be used: ${reason}: ${remove}, ` +
      `or ${fix}`,
    path,
    reason,
    { cause },
  );
}

/**
 * Whether a server holds the `flock` on the database file itself (Linux:
 * {@link DatabaseLock.lockDatabaseFile}), tried through a read-only
 * descriptor, or `null` when that cannot be told (not Linux, no such file,
 * not readable). A server holds it from just after it listens until it
 * stops.
 */
function databaseFileLocked(real: string): boolean | null {
  if (Deno.build.os !== "linux") return null;
  let file: Deno.FsFile;
  try {
    file = Deno.openSync(real, { read: true });
  } catch {
    return null;
  }
  try {
    return !tryLockSoon(file, TRANSIENT_MS, () => true);
  } catch {
    return null;
  } finally {
    file.close(); // drops the lock if taken
  }
}

/**
 * The pid of the process holding an `flock` on the file `info` describes,
 * from `/proc/locks`: `null` when none does, `undefined` when that cannot
 * be told (not Linux, not readable).
 */
function flockHolder(info: Deno.FileInfo | null): string | null | undefined {
  if (Deno.build.os !== "linux" || info === null || info.ino === null || info.dev === null) {
    return undefined;
  }
  let text: string;
  try {
    if (Deno.permissions.querySync({ name: "read", path: "/proc/locks" }).state !== "granted") {
      return undefined;
    }
    text = Deno.readTextFileSync("/proc/locks");
  } catch {
    return undefined;
  }
  // glibc's major()/minor() of st_dev; /proc/locks prints them in hex, then the inode.
  const dev = BigInt(info.dev);
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  for (const line of text.split("\n")) {
    // `1: FLOCK  ADVISORY  WRITE 4242 fe:00:2253515 0 EOF`; waiters (`1: -> FLOCK ...`) hold nothing.
    const m = /^\d+: FLOCK\s+\S+\s+\S+\s+(-?\d+)\s+([0-9a-f]+):([0-9a-f]+):(\d+)\s/.exec(line);
    if (
      m !== null && BigInt(`0x${m[2]}`) === major && BigInt(`0x${m[3]}`) === minor &&
      BigInt(m[4]) === BigInt(info.ino)
    ) {
      return Number(m[1]) > 0 ? m[1] : "unknown";
    }
  }
  return null;
}

/**
 * `err` of writing the lock file, naming it (same class; `code` kept, the
 * original as `cause`): the system's message alone (`No space left on device
 * (os error 28)`) names no file.
 */
function recordError(err: unknown, database: string, path: string): unknown {
  if (!(err instanceof Error)) return err;
  const Class = err.constructor as new (message: string, options?: ErrorOptions) => Error;
  const named = new Class(
    `Cannot serve "${database}": cannot write its lock file "${path}": ${err.message}`,
    { cause: err },
  );
  const code = (err as { code?: unknown }).code;
  if (code !== undefined) Object.assign(named, { code });
  return named;
}

/** True for `ENOSPC` (no space left on the device). */
export function isNoSpace(err: unknown): boolean {
  return err instanceof Error &&
    ((err as { code?: unknown }).code === "ENOSPC" || /\(os error 28\)/.test(err.message));
}

function sameFile(file: Deno.FsFile, path: string): boolean {
  try {
    const a = file.statSync();
    const b = Deno.statSync(path);
    return a.dev === b.dev && a.ino === b.ino;
  } catch {
    return false;
  }
}

/**
 * `which is <real path>; ` when `database` reaches its file through a
 * symbolic link (of the file or of any directory above it), else nothing:
 * when its real path differs from the path as given, made absolute and
 * normalised (`..` and `.` resolved, as the system would not across a link).
 */
function alias(database: string, real: string): string {
  return real === resolve(database) ? "" : `which is ${real}; `;
}

/**
 * What a second server's message adds when the owner's Unix socket file is
 * not there: the owner is starting (it takes the lock before it listens),
 * or someone deleted it, and the owner makes it again within a second
 * (transport/unix_socket_listener.ts; a server of an older version only at
 * a restart). Nothing when it is there, or for TCP. After the parenthesis,
 * which clients read (client/autostart.ts).
 */
function missingSocket(socket: string): string {
  if (!socket.startsWith("unix:")) return "";
  try {
    Deno.lstatSync(socket.slice("unix:".length));
    return "";
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) return "";
  }
  return "; its socket file is not there: that server is starting, or the file was deleted while " +
    "it runs (it makes it again within a second; a server of an older version needs a restart)";
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
