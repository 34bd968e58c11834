/**
 * What the engine checks of its database's files: that SQLite can write the
 * database (at start: {@link ReadOnlyFileError}), and that the paths still
 * name the files the server has open ({@link DatabaseFile}): the database,
 * its WAL (`-wal`) and its WAL index (`-shm`).
 *
 * SQLite notices none of them going while it holds them open in WAL mode
 * (no `SQLITE_READONLY_DBMOVED` there):
 *
 * - the database file removed or renamed: writes go on into the unlinked
 *   file, lost when the server exits, or into the renamed one, while a
 *   restart serves a new empty database at the path;
 * - the `-wal` file removed: commits go on into the unlinked WAL, which only
 *   a checkpoint copies into the database (none happens after `kill -9`: the
 *   commits are lost, with every earlier one not yet checkpointed), while a
 *   connection opened since (the server's own or another program's) creates
 *   a new, empty `-wal` that the index does not describe;
 * - the `-shm` file removed: the next program to open the database builds a
 *   new index from the WAL, and it and the server then each append to the
 *   WAL by an index the other does not see, over each other's commits;
 * - the database file truncated to 0 bytes in place (same inode): what the
 *   file held is gone, the commits in the WAL are not, but any connection
 *   that opens a 0-byte database deletes its `-wal` file (SQLite takes the
 *   WAL of an empty database for a leftover), the server's own next
 *   connection included, and so does the next start after `kill -9`.
 *
 * So the engine asks {@link DatabaseFile.check} before a write begins and
 * after every commit, before the write is acknowledged, and before it opens
 * a connection to the database afresh (a cursor, a background read,
 * maintenance): one `stat` of each path (through libc where FFI is
 * permitted on Linux, about 0.6 µs each; else `Deno.statSync`, about 1.9
 * µs), compared with the device and inode seen at start, and the database
 * file's size with 0 (never 0 while the server runs: switching to WAL wrote
 * its first page, and a checkpoint never shrinks it below one page). SQLite
 * itself never removes or replaces these files while the server's
 * connections are open and the database file has pages: it deletes the
 * `-wal` and `-shm` files when the last connection to the database (of any
 * process) closes, which cannot happen while the writer holds its shared
 * lock, and the `-wal` file when a connection opens a 0-byte database file
 * (which the check refuses to open); a checkpoint (even `TRUNCATE`) or
 * `journal_size_limit` truncates the `-wal` in place. The `-wal` and `-shm`
 * files appear at the first transaction in WAL mode, which the engine runs
 * before it looks.
 *
 * @module
 */

import { ErrorCode, SqliteError } from "../protocol/errors.ts";
import { openLibc as openLibcFile } from "./binding/_libc.ts";
import { realPath } from "../transport/_real_path.ts";

/**
 * The real path of `database`: symbolic links resolved, of the file when it
 * exists, else of its directory joined with its name (a link to a file not
 * yet created followed by hand). The same function as the default socket's
 * (`realPath` of `transport/_real_path.ts`), so every name of a file that
 * reaches one lock also reaches one default socket.
 *
 * @throws {SqliteError} `SQLITE_CANTOPEN` when the directory does not exist.
 */
export function realDatabasePath(database: string): string {
  return realPath(database, (dir, cause) => {
    throw new SqliteError(
      "SQLITE_CANTOPEN",
      `Cannot open database "${database}": the directory "${dir}" does not exist; create it first`,
      14,
      { cause },
    );
  });
}

/**
 * The database file as SQLite names it, and so where it keeps the `-wal`
 * and `-shm` files: SQLite resolves a symbolic link and puts them beside the
 * file the link names (`PRAGMA database_list` shows that path), so for a
 * link this is the link's {@link realDatabasePath}; for any other path it is
 * `database` as given (its `-wal` and `-shm` paths name the files SQLite
 * uses, and messages keep the name the user gave).
 *
 * @param database The database path, as given.
 */
export function sqliteDatabasePath(database: string): string {
  if (database === ":memory:" || database === "") return database;
  try {
    return Deno.lstatSync(database).isSymlink ? realDatabasePath(database) : database;
  } catch {
    // Not there, or a link into a missing directory: SQLite's open fails, or creates `database`.
    return database;
  }
}

/**
 * The paths of the database's `-wal` and `-shm` files, where SQLite keeps
 * them (beside {@link sqliteDatabasePath}). Every such path of the server
 * is built here.
 *
 * @param database The database path, as given.
 */
export function walPaths(database: string): { readonly wal: string; readonly shm: string } {
  const base = sqliteDatabasePath(database);
  return { wal: `${base}-wal`, shm: `${base}-shm` };
}

/** Which of the database's files went. */
export type FileKind = "database" | "wal" | "shm";

/** How each file is named in messages. */
const LABEL: Readonly<Record<FileKind, string>> = {
  database: "Database file",
  wal: "WAL file",
  shm: "WAL-index file",
};

/** What the server does and advises once each file went (after "refuses writes from now on"). */
const ADVICE: Readonly<Record<FileKind, string>> = {
  database: "restart it, after putting the file back if that is the database to serve",
  wal: "stop it with SIGTERM (its shutdown checkpoints the WAL it still holds into the " +
    "database; kill -9 would lose what is not checkpointed yet) and restart it",
  shm: "restart it (its shutdown leaves the WAL as it is, without a checkpoint, for the next " +
    "start to read); if another program wrote the database meanwhile, check it (PRAGMA " +
    "integrity_check) after the restart",
};

/** What the log line advises, and what the server does about it. */
const LOG_ADVICE: Readonly<Record<FileKind, string>> = {
  database: "restart the server",
  wal: "stop the server with SIGTERM, not kill -9: its shutdown checkpoints the WAL it still " +
    "holds into the database; then restart it",
  shm: "restart the server: its shutdown leaves the WAL as it is (no checkpoint) for the next " +
    "start to read",
};

/**
 * What the server advises once the database file was truncated to 0 bytes
 * (in place of {@link ADVICE}, {@link LOG_ADVICE}, {@link AFTER_RUN}).
 */
const TRUNCATED = {
  advice: "stop it with SIGTERM and restart it (the server checkpoints the WAL it holds into " +
    "the file as soon as it notices, and again at shutdown: what the WAL holds is kept, what " +
    "the file alone held is lost; kill -9 before that checkpoint would lose the WAL too, as " +
    "the next start would delete it), then check the database (PRAGMA integrity_check)",
  logAdvice: "the server checkpoints the WAL it holds into the file now (what the file alone " +
    "held is lost); stop the server with SIGTERM, whose shutdown checkpoints whatever is left, " +
    "restart it and check the database (PRAGMA integrity_check)",
  afterRun: "its commit went into the WAL, which the server checkpoints into the truncated file",
} as const;

/** What a write answered after it ran learns of where its commit went. */
const AFTER_RUN: Readonly<Record<FileKind, string>> = {
  database: "whatever it wrote went into that file, which the path no longer names, not into " +
    "the database at the path",
  wal: "its commit went into that WAL file, which the server still holds and checkpoints into " +
    "the database (the log says how far)",
  shm: "its commit went into the WAL by the server's old index, which a program that opened " +
    "the database since does not see",
};

/** One file the server holds open, and the device and inode its path named at start. */
interface Watched {
  readonly kind: FileKind;
  readonly path: string;
  /** The path, NUL-terminated, for libc. */
  readonly cPath: Uint8Array;
  /**
   * Device and inode, as numbers whichever way they were read (libc's
   * 64-bit words are converted as Deno converts its own: the two must
   * compare equal once {@link DatabaseFile.close} leaves Deno's `stat`);
   * `null` while the file was not there (the first one seen is taken).
   */
  dev: number | null;
  ino: number | null;
}

/**
 * How a path lost its file: it names no file, or another one, or (the
 * database file) its file was truncated to 0 bytes in place.
 */
type How = "removed or renamed" | "replaced by another file" | "truncated to 0 bytes";

const LIBC_SYMBOLS = {
  // int stat(const char *path, struct stat *buf); exported by glibc since 2.33, and musl
  stat: { parameters: ["buffer", "buffer"], result: "i32", optional: true },
} as const;

type Libc = Deno.DynamicLibrary<typeof LIBC_SYMBOLS>;

/**
 * `st_size` as a 64-bit word of `struct stat`: at byte 48 on Linux x86_64
 * (after `st_dev`, `st_ino`, `st_nlink`, `st_mode`, `st_uid`, `st_gid`,
 * padding, `st_rdev`) and on aarch64 (`st_dev`, `st_ino`, `st_mode`,
 * `st_nlink`, `st_uid`, `st_gid`, `st_rdev`, padding).
 */
const SIZE_WORD = 6;

/**
 * libc, for `stat` without the cost of `Deno.statSync` (which builds a whole
 * `FileInfo` with its dates): Linux on x86_64 and aarch64 only, where
 * `struct stat` starts with `st_dev` and `st_ino` as 64-bit words.
 */
function openLibc(): Libc | null {
  if (Deno.build.os !== "linux") return null;
  if (Deno.build.arch !== "x86_64" && Deno.build.arch !== "aarch64") return null;
  return openLibcFile(LIBC_SYMBOLS, (lib) => lib.symbols.stat !== null);
}

/** Watches that the database's paths keep naming the files opened at start. */
export class DatabaseFile {
  readonly #path: string;
  readonly #files: Watched[];
  #libc: Libc | null;
  /** `struct stat` (144 bytes on x86_64, 128 on aarch64), read as 64-bit words. */
  readonly #stat = new BigUint64Array(32);
  readonly #statBytes = new Uint8Array(this.#stat.buffer);
  /** Which file went and how, once noticed; it stays lost. */
  #lost: { file: Watched; how: How } | null = null;
  /** Set once {@link othersOpened} found a new file at the lost path. */
  #reopened = false;
  /**
   * Whether the database file has been seen with pages (more than 0 bytes):
   * from then on, 0 bytes is a truncation.
   */
  #hadPages = false;

  /**
   * Records which files the database path and its `-wal` and `-shm` paths
   * (beside the file SQLite opened: {@link walPaths}) name now (device and
   * inode). Where the platform gives no inode
   * (Windows), {@link check} never finds a change. Call {@link close} when
   * done.
   *
   * @param path The database path, as the engine opened it.
   * @throws {Deno.errors.NotFound} when there is no file at `path`.
   */
  constructor(path: string) {
    this.#path = path;
    this.#libc = openLibc();
    const encoder = new TextEncoder();
    const { wal, shm } = walPaths(path);
    const paths = { database: path, wal, shm };
    this.#files = (["database", "wal", "shm"] as const).map((kind) => {
      const p = paths[kind];
      return { kind, path: p, cPath: encoder.encode(`${p}\0`), dev: null, ino: null };
    });
    const db = this.#files[0];
    // When libc finds no file, Deno's stat says why (and throws NotFound).
    if (this.#libc !== null && !this.#stat1(db)) this.close();
    if (this.#libc === null) {
      const info = Deno.statSync(path);
      if (info.ino === null) {
        // No inodes: nothing to compare (the check then finds nothing).
        this.#files.length = 0;
        return;
      }
      db.dev = info.dev;
      db.ino = info.ino;
      this.#hadPages = info.size > 0;
    } else {
      this.#hadPages = this.#stat[SIZE_WORD] > 0n;
    }
    for (const f of this.#files.slice(1)) this.#stat1(f);
  }

  /**
   * True while {@link check} asks libc's `stat` (about 0.6 µs a path);
   * false where it asks `Deno.statSync` (about 1.9 µs): no FFI on libc, or
   * not Linux on x86_64 or aarch64.
   */
  get viaLibc(): boolean {
    return this.#libc !== null;
  }

  /** True once {@link check} found a path no longer names the file opened. */
  get lost(): boolean {
    return this.#lost !== null;
  }

  /** Which file went (once {@link check} found it), else `null`. */
  get lostKind(): FileKind | null {
    return this.#lost?.file.kind ?? null;
  }

  /**
   * True once {@link check} found the database file truncated to 0 bytes in
   * place: the WAL the server holds is still at its path, and is to be
   * checkpointed into the file before anything opens the database afresh.
   */
  get truncated(): boolean {
    return this.#lost?.how === "truncated to 0 bytes";
  }

  /**
   * What went, as the log says it (`WAL file "app.db-wal" was removed or
   * renamed`), or `null` while every path still names its file. Once lost,
   * always lost (the file does not come back to the server).
   *
   * @param walOnly Look at the `-wal` path alone (one `stat`).
   */
  check(walOnly = false): string | null {
    if (this.#lost === null) {
      const files = this.#files;
      const end = walOnly ? Math.min(2, files.length) : files.length;
      for (let i = walOnly ? 1 : 0; i < end; i++) {
        const f = files[i];
        const how = this.#moved(f);
        if (how !== null) {
          this.#lost = { file: f, how };
          break;
        }
      }
      if (this.#lost === null) return null;
    }
    const { file, how } = this.#lost;
    return `${file.kind === "database" ? "database file" : LABEL[file.kind]} "${file.path}" ` +
      `was ${how}`;
  }

  /**
   * The server log's line once {@link check} found a file gone (logged
   * once, at `error`), else `null`.
   */
  logLine(): string | null {
    const what = this.check();
    if (what === null) return null;
    const advice = this.truncated ? TRUNCATED.logAdvice : LOG_ADVICE[this.#lost!.file.kind];
    return `${what} while the server was serving it: writes are refused from now on (reads go ` +
      `on); ${advice} (a write that noticed it was answered DATABASE_MOVED)`;
  }

  /**
   * The error of a write refused (or answered) after a path lost its file.
   *
   * @param afterRun The write ran before it was noticed (its commit went into the lost file).
   */
  error(afterRun: boolean): SqliteError {
    const kind = this.#lost?.file.kind ?? "database";
    const truncated = this.truncated;
    const detail = afterRun
      ? `noticed after this request ran: ${truncated ? TRUNCATED.afterRun : AFTER_RUN[kind]}`
      : "nothing was written";
    return new SqliteError(
      ErrorCode.DatabaseMoved,
      `${this.#what()} (${detail}); the server refuses writes from now on (reads go on): ` +
        (truncated ? TRUNCATED.advice : ADVICE[kind]),
    );
  }

  /**
   * True once the lost `-wal` or `-shm` path names a file again: a
   * connection opened the database since (SQLite created it anew), most
   * likely another program's, which may write by it. The server's
   * connections then no longer see the database as it is: with the `-wal`
   * gone they read pages by an index that program rewrites from a WAL they
   * do not have; with the `-shm` gone they miss its commits, and read
   * frames it may write over. `false` for the database file (the server
   * reads the file it opened), and while nothing is lost. Sticky.
   */
  othersOpened(): boolean {
    const lost = this.#lost;
    if (lost === null || lost.file.kind === "database") return false;
    if (this.#reopened) return true;
    if (lost.how === "removed or renamed") {
      try {
        Deno.statSync(lost.file.path);
      } catch {
        return false;
      }
    }
    return this.#reopened = true;
  }

  /**
   * The error of a read refused after a path lost its file: it needed a
   * connection of its own (a cursor, a read moved to the background, an
   * integrity check or a backup), which would not see the files the
   * server's connections see (no file, another one, or a new empty WAL), or
   * (the database file truncated to 0 bytes) would delete the WAL as it
   * opens; or {@link othersOpened}, and every read is refused.
   */
  readError(): SqliteError {
    const kind = this.#lost?.file.kind ?? "database";
    if (this.truncated) {
      return new SqliteError(
        ErrorCode.DatabaseMoved,
        `${this.#what()}; this read needs a connection of its own, and a connection that ` +
          "opens a 0-byte database file deletes its WAL (with every write the WAL holds), so " +
          `it is refused (reads on the connections open before go on): ${TRUNCATED.advice}`,
      );
    }
    const why = this.#reopened
      ? `; a new ${LABEL[kind]} is at its path (another program opened the database since, or ` +
        "the file was replaced), " +
        "so the server's connections no longer see the database as it is: the server refuses " +
        "reads too"
      : "; this read needs a connection of its own, which would not see what the server's " +
        "connections see, so it is refused (reads on the connections open before go on)";
    return new SqliteError(ErrorCode.DatabaseMoved, `${this.#what()}${why}: ${ADVICE[kind]}`);
  }

  /** Unloads libc. Idempotent; {@link check} then uses `Deno.statSync`. */
  close(): void {
    this.#libc?.close();
    this.#libc = null;
  }

  #what(): string {
    const lost = this.#lost;
    if (lost === null) {
      return `Database file "${this.#path}" was moved while the server was serving it`;
    }
    const of = lost.file.kind === "database" ? "" : ` of "${this.#path}"`;
    return `${LABEL[lost.file.kind]} "${lost.file.path}"${of} was ${lost.how} while the server ` +
      "was serving it";
  }

  /** How the path of `f` lost its file, or `null` (also when a `stat` tells nothing). */
  #moved(f: Watched): How | null {
    if (f.ino === null) {
      // Not there at start: the first file to appear is the one SQLite opens.
      this.#stat1(f);
      return null;
    }
    const libc = this.#libc;
    if (libc !== null) {
      if (libc.symbols.stat!(f.cPath, this.#statBytes) === 0) {
        if (Number(this.#stat[0]) !== f.dev || Number(this.#stat[1]) !== f.ino) {
          return "replaced by another file";
        }
        return f.kind === "database" ? this.#emptied(this.#stat[SIZE_WORD] === 0n) : null;
      }
      // Why, from Deno (a failure is rare: only when something is wrong).
      try {
        Deno.statSync(f.path);
        return null; // there again: the next check tells
      } catch (err) {
        return err instanceof Deno.errors.NotFound ? "removed or renamed" : null;
      }
    }
    let info: Deno.FileInfo;
    try {
      info = Deno.statSync(f.path);
    } catch (err) {
      // Anything but "not there" (a directory made unreadable, say) tells nothing.
      return err instanceof Deno.errors.NotFound ? "removed or renamed" : null;
    }
    if (info.dev !== f.dev || info.ino !== f.ino) return "replaced by another file";
    return f.kind === "database" ? this.#emptied(info.size === 0) : null;
  }

  /**
   * `truncated to 0 bytes` when the database file (the one opened) is empty
   * now although it had pages (or, seen empty from the start, while its WAL
   * holds frames), else `null`.
   */
  #emptied(empty: boolean): How | null {
    if (!empty) {
      this.#hadPages = true;
      return null;
    }
    if (!this.#hadPages) {
      try {
        if (Deno.statSync(this.#files[1].path).size === 0) return null;
      } catch {
        return null;
      }
    }
    return "truncated to 0 bytes";
  }

  /** Records the device and inode `f`'s path names now; false when there is no file (or no answer). */
  #stat1(f: Watched): boolean {
    const libc = this.#libc;
    if (libc !== null) {
      if (libc.symbols.stat!(f.cPath, this.#statBytes) !== 0) return false;
      f.dev = Number(this.#stat[0]);
      f.ino = Number(this.#stat[1]);
      return true;
    }
    try {
      const info = Deno.statSync(f.path);
      f.dev = info.dev;
      f.ino = info.ino;
      return true;
    } catch {
      return false;
    }
  }
}

/**
 * SQLite opened the database file read-only although the server is to write
 * it: the file is not writable by this user (SQLite falls back to reading
 * it without a word, and every write would fail). SQLite's own error
 * (`SQLITE_READONLY`, "attempt to write a readonly database") as `cause`.
 * SQLite read it in WAL mode meanwhile, so `--readonly` can serve it.
 */
export class ReadOnlyFileError extends SqliteError {
  /**
   * Wraps SQLite's error of a write to the file.
   *
   * @param err SQLite's error (`SQLITE_READONLY`).
   */
  constructor(err: SqliteError) {
    super(err.code, err.message, err.sqliteCode, { cause: err });
    this.name = "SqliteError";
  }
}
