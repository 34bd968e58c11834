/**
 * What the engine checks of its database file: that SQLite can write it (at
 * start: {@link ReadOnlyFileError}), and that the path still names the file
 * the server opened ({@link DatabaseFile}). A file
 * removed or renamed while SQLite holds it open goes unnoticed by SQLite in
 * WAL mode (no `SQLITE_READONLY_DBMOVED` there): writes would go on into the
 * unlinked file, lost when the server exits, or into the renamed one, while
 * a restart serves a new empty database at the path. The engine asks
 * {@link DatabaseFile.check} before a write begins and after every commit,
 * before the write is acknowledged (one `stat` of the path: about 1 to 2 µs).
 *
 * @module
 */

import { ErrorCode, SqliteError } from "../protocol/errors.ts";

/** Watches that a database path keeps naming the file opened at start. */
export class DatabaseFile {
  readonly #path: string;
  readonly #dev: number;
  readonly #ino: number | null;
  /** How the path lost the file, once noticed; it stays lost. */
  #lost: string | null = null;

  /**
   * Records which file `path` names now (device and inode). Where the
   * platform gives no inode (Windows), {@link check} never finds a change.
   *
   * @param path The database path, as the engine opened it.
   * @throws {Deno.errors.NotFound} when there is no file at `path`.
   */
  constructor(path: string) {
    this.#path = path;
    const info = Deno.statSync(path);
    this.#dev = info.dev;
    this.#ino = info.ino;
  }

  /** True once {@link check} found the path no longer names the file opened. */
  get lost(): boolean {
    return this.#lost !== null;
  }

  /**
   * How the path lost the file opened at start (`"removed or renamed"`,
   * `"replaced by another file"`), or `null` while it still names it. Once
   * lost, always lost (the file does not come back to the server).
   */
  check(): string | null {
    if (this.#lost !== null || this.#ino === null) return this.#lost;
    let info: Deno.FileInfo;
    try {
      info = Deno.statSync(this.#path);
    } catch (err) {
      // Anything but "not there" (a directory made unreadable, say) tells nothing.
      if (!(err instanceof Deno.errors.NotFound)) return null;
      return this.#lost = "removed or renamed";
    }
    if (info.dev === this.#dev && info.ino === this.#ino) return null;
    return this.#lost = "replaced by another file";
  }

  /**
   * The error of a write refused (or answered) after the path lost the file.
   *
   * @param afterRun The write ran before it was noticed (its commit went into the lost file).
   */
  error(afterRun: boolean): SqliteError {
    const what = `Database file "${this.#path}" was ${this.#lost ?? "moved"} while the server ` +
      "was serving it";
    const detail = afterRun
      ? "noticed after this request ran: whatever it wrote went into that file, which the path " +
        "no longer names, not into the database at the path"
      : "nothing was written";
    return new SqliteError(
      ErrorCode.DatabaseMoved,
      `${what} (${detail}); the server refuses writes from now on (reads go on): ` +
        "restart it, after putting the file back if that is the database to serve",
    );
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
