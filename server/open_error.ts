/**
 * The error of a database that will not open, naming the file and what to do
 * about it: permissions, a directory, a file that is not SQLite, and the
 * trap of a WAL database in a directory the server cannot write, which even
 * `--readonly` cannot serve (SQLite creates `-wal` and `-shm` beside it to
 * read it), a full disk, and another program holding a lock on the file
 * for longer than `--busy-timeout`.
 *
 * @module
 */

import { SqliteError } from "../protocol/errors.ts";
import { dirname } from "node:path";
import { ReadOnlyFileError, sqliteDatabasePath, walPaths } from "../engine/database_file.ts";
import { SQLITE_FULL, SQLITE_IOERR_SHMSIZE, SQLITE_IOERR_WRITE } from "../engine/_result_codes.ts";

/**
 * Why a WAL database cannot be served from a read-only directory, and the
 * ways out; appended to open errors of WAL databases.
 */
export const WAL_HINT = "it is in WAL mode, and SQLite reads a WAL database only where it can " +
  "create the -wal and -shm files beside it (or they exist already), even with --readonly; to " +
  "serve it read-only from a read-only directory, switch it out of WAL once with a writer " +
  "(sqlite3 FILE 'PRAGMA journal_mode=DELETE')";

/**
 * The file format version bytes (18 and 19) of the SQLite database at
 * `path`: 2 for WAL mode, 1 for a rollback journal; `null` when it is not an
 * SQLite database or cannot be read.
 */
function formatVersion(path: string): number | null {
  let file: Deno.FsFile | null = null;
  try {
    file = Deno.openSync(path, { read: true });
    const header = new Uint8Array(20);
    let got = 0;
    while (got < header.length) {
      const n = file.readSync(header.subarray(got));
      if (n === null || n === 0) break;
      got += n;
    }
    if (got < header.length) return null;
    const magic = new TextDecoder().decode(header.subarray(0, 15));
    return magic === "SQLite format 3" && header[18] === header[19] ? header[18] : null;
  } catch {
    return null;
  } finally {
    file?.close();
  }
}

/**
 * True when `path` is an SQLite database in WAL mode: its header's file format
 * version bytes (18 and 19) are 2. False when it is not, or cannot be read.
 *
 * @example
 * ```ts
 * import { isWalDatabase } from "./open_error.ts";
 * if (isWalDatabase("/nonexistent.db")) throw new Error("a missing file is not WAL");
 * ```
 */
export function isWalDatabase(path: string): boolean {
  return formatVersion(path) === 2;
}

/**
 * The error of a database file in rollback-journal mode with a `-wal` file
 * holding frames beside it, or `null`. SQLite never leaves that itself (it
 * writes version 2 into the header before a WAL exists, and deletes the WAL
 * before it writes 1), but a file replaced while a WAL of the database it
 * replaced stayed does: a backup (netsqlite's copies are in rollback-journal
 * mode) restored after the server was killed. SQLite opens any `-wal` it
 * finds and would apply that WAL's pages to the restored file, mixing the
 * two without a word.
 *
 * @param database The database path, as given.
 */
export function staleWalError(database: string): Error | null {
  if (formatVersion(database) !== 1) return null;
  const { wal, shm } = walPaths(database);
  let bytes: number;
  try {
    bytes = Deno.statSync(wal).size;
  } catch {
    return null;
  }
  // The WAL header alone (32 bytes) holds no page.
  if (bytes <= 32) return null;
  return new Error(
    `Cannot open database "${database}": it is in rollback-journal mode (as netsqlite's ` +
      `backups are), yet a WAL file "${wal}" of ${bytes} bytes is beside it: the file was ` +
      "replaced (a backup restored?) while the WAL of the database before it stayed (a server " +
      "killed, or whose last checkpoint failed), and SQLite would apply that WAL's pages to " +
      `it, mixing the two; if you restored the file, remove "${wal}" and "${shm}" and start ` +
      "again; to keep what that WAL holds instead, put the previous database file back",
  );
}

/**
 * `err` of opening `database`, naming the file and what to do about it
 * (same class and `code`; the original as `cause`). Errors other than
 * {@link SqliteError} come back unchanged.
 *
 * @param err What opening the database threw.
 * @param database The database path as given.
 * @param readonly Whether it was opened read-only (`--readonly`).
 * @param busyTimeout How long opening waited for another process's lock
 *   (`--busy-timeout`), in ms; named in the hint of `SQLITE_BUSY`.
 */
export function openError(
  err: unknown,
  database: string,
  readonly: boolean,
  busyTimeout?: number,
): unknown {
  if (!(err instanceof SqliteError)) return err;
  const code = err.code;
  const denied = code.startsWith("SQLITE_READONLY") || code.startsWith("SQLITE_CANTOPEN") ||
    code.startsWith("SQLITE_PERM");
  let hint = "";
  const stuck = readonly ? [] : unwritableWalFiles(database);
  if (denied && stuck.length > 0 && !(err instanceof ReadOnlyFileError)) {
    // The database file may be writable: SQLite cannot write these beside it.
    hint = `: ${describeStuck(stuck)}`;
  } else if (err instanceof ReadOnlyFileError) {
    // SQLite read it (in WAL mode too): only writing is refused.
    hint = readonly ? "" : ": the file is not writable by this user: make it writable, or " +
      "serve it read-only with --readonly";
    if (stuck.length > 0) hint += `; also, ${describeStuck(stuck)}`;
  } else if (code.startsWith("SQLITE_CANTOPEN") && isDirectory(database)) {
    hint = ": it is a directory; give the path of a file in it";
  } else if (denied && isWalDatabase(database)) {
    hint = readonly
      ? `: ${WAL_HINT}, or make the directory writable by this user`
      : `: make the file and its directory writable by this user (${WAL_HINT})`;
  } else if (code.startsWith("SQLITE_READONLY") && !readonly) {
    hint = ": make the file and its directory writable by this user, or serve it with --readonly";
  } else if (isFullOrWriteError(err)) {
    hint = `: the device holding "${dirname(sqliteDatabasePath(database))}" is full or not ` +
      "writable: make room there and start again";
  } else if (code.startsWith("SQLITE_BUSY")) {
    hint = `: ${lockedHint(busyTimeout)}`;
  } else if (code.startsWith("SQLITE_NOTADB")) {
    hint = ": it is not an SQLite database (or it is encrypted); check the path";
  } else if (code.startsWith("SQLITE_CANTOPEN") || code.startsWith("SQLITE_PERM")) {
    hint = readonly
      ? ": check that the file exists and this user may read it"
      : ": check that its directory exists and this user may create files there";
  }
  // The bindings' own message already names the file.
  const what = err.message.startsWith("Cannot open database")
    ? err.message
    : `Cannot open database "${database}": ${err.message}`;
  return new SqliteError(code, `${what}${hint}`, err.sqliteCode, { cause: err });
}

/**
 * Why a database is locked at open (`SQLITE_BUSY`): another program (the
 * sqlite3 shell, a migration tool, a backup) holds a lock on the file, in
 * a transaction, and did not let go within the busy timeout.
 */
function lockedHint(busyTimeout: number | undefined): string {
  const waited = busyTimeout === undefined
    ? "the server waited its busy timeout (--busy-timeout) for it"
    : `the server waited --busy-timeout ${busyTimeout} ms for it`;
  return "another process holds a lock on the database file (a program that has it open " +
    `in a transaction, such as the sqlite3 shell or a migration tool); ${waited}: end that ` +
    "transaction or close that program and start again, or raise --busy-timeout";
}

/**
 * True for what a full (or failing) device gives at open: `SQLITE_FULL`,
 * or `SQLITE_IOERR_SHMSIZE` / `SQLITE_IOERR_WRITE` (whose message is only
 * `disk I/O error`).
 */
function isFullOrWriteError(err: SqliteError): boolean {
  const code = err.sqliteCode ?? 0;
  return (code & 0xff) === SQLITE_FULL || code === SQLITE_IOERR_SHMSIZE ||
    code === SQLITE_IOERR_WRITE;
}

/**
 * The database's `-wal` and `-shm` files that exist but this user cannot
 * open for writing (left by a program run as another user, or created by a
 * start on a read-only database file, with its mode): SQLite cannot write
 * the database through them, whatever the database file's own mode.
 */
export function unwritableWalFiles(database: string): string[] {
  if (database === ":memory:" || database === "") return [];
  const { wal, shm } = walPaths(database);
  return [wal, shm].filter((path) => {
    try {
      // Opening for writing changes nothing (no create, no truncate).
      Deno.openSync(path, { write: true }).close();
      return false;
    } catch (err) {
      return err instanceof Deno.errors.PermissionDenied;
    }
  });
}

function describeStuck(paths: string[]): string {
  const one = paths.length === 1;
  return `${paths.map((p) => `"${p}"`).join(" and ")} beside it ${one ? "is" : "are"} not ` +
    "writable by this user, and SQLite writes the database through them: make " +
    `${one ? "it" : "them"} writable by this user (chown or chmod) and start again`;
}

/** Which of the database's `-wal` and `-shm` files exist, before an open that may fail. */
export interface WalFilesBefore {
  wal: boolean;
  shm: boolean;
}

/** Which of `database`'s `-wal` and `-shm` files exist now (where SQLite keeps them). */
export function walFilesBefore(database: string): WalFilesBefore {
  const { wal, shm } = walPaths(database);
  return { wal: exists(wal), shm: exists(shm) };
}

/**
 * After a failed open (SQLite closed): removes the `-wal` and `-shm` files
 * that open created (absent before, there now), so that they do not stand in
 * the next start's way (SQLite gives them the database file's mode: read-only
 * ones block a start once the database is made writable). Only while the WAL
 * is empty: one with content holds another program's commits, and its
 * `-shm` is in use. Returns the paths removed.
 */
export function removeWalFilesCreated(database: string, before: WalFilesBefore): string[] {
  if (database === ":memory:" || database === "") return [];
  const { wal, shm } = walPaths(database);
  try {
    if (Deno.statSync(wal).size > 0) return [];
  } catch {
    // No WAL: nothing to lose.
  }
  const removed: string[] = [];
  for (const [path, existed] of [[wal, before.wal], [shm, before.shm]] as const) {
    if (existed) continue;
    try {
      Deno.removeSync(path);
      removed.push(path);
    } catch {
      // Not there (or not ours to remove).
    }
  }
  return removed;
}

/**
 * After a failed first start (the database file did not exist before it;
 * SQLite closed, and {@link removeWalFilesCreated} ran): removes the file
 * that start created, so that the next start (once there is room) does not
 * find a file it did not make, while it holds nothing: empty (SQLite wrote
 * nothing), or one page, SQLite's header and an empty schema (turning WAL
 * on wrote it). Kept when it holds anything else, or when a `-wal` or
 * `-journal` file is beside it (which may hold what is not in the file).
 *
 * @param database The database path, as given (a symbolic link: the file it names).
 * @returns the path removed, or `null`.
 */
export function removeDatabaseCreated(database: string): string | null {
  if (database === ":memory:" || database === "") return null;
  const path = sqliteDatabasePath(database);
  if (exists(`${path}-journal`) || exists(walPaths(database).wal)) return null;
  try {
    const info = Deno.statSync(path);
    if (!info.isFile || info.size > 65536) return null;
    if (info.size > 0 && !isEmptySchemaPage(Deno.readFileSync(path))) return null;
    Deno.removeSync(path);
    return path;
  } catch {
    return null; // not there, or not ours to read or remove
  }
}

/** True when `file` is exactly one SQLite page: the header and a schema with no rows. */
function isEmptySchemaPage(file: Uint8Array): boolean {
  const magic = new TextDecoder().decode(file.subarray(0, 16));
  if (file.length < 108 || magic !== "SQLite format 3\0") return false;
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  const pageSize = view.getUint16(16) === 1 ? 65536 : view.getUint16(16);
  // One page, in the header's count too; page 1 a table leaf (0x0d) with no cells.
  return file.length === pageSize && view.getUint32(28) <= 1 && file[100] === 0x0d &&
    view.getUint16(103) === 0;
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

function isDirectory(path: string): boolean {
  try {
    return Deno.statSync(path).isDirectory;
  } catch {
    return false;
  }
}

/**
 * The start-up error of a database file this user may not read (its mode or
 * owner): naming the file, its owner and mode, and what is missing, where
 * the system's error (`Permission denied (os error 13): open '...'`) says
 * neither; `null` when the file can be read (or is absent: created later).
 *
 * @param database The database path, as given.
 * @param readonly Whether it is served read-only (`--readonly`): then reading is all it needs.
 */
export function accessError(database: string, readonly: boolean): Error | null {
  if (database === ":memory:" || database === "") return null;
  try {
    Deno.openSync(database, { read: true }).close();
    return null;
  } catch (err) {
    if (!(err instanceof Deno.errors.PermissionDenied)) return null;
    let info: Deno.FileInfo | null = null;
    try {
      info = Deno.statSync(database);
    } catch {
      // A directory above it may not be searched: described as far as known.
    }
    const bits = info?.mode == null ? null : (info.mode & 0o777).toString(8).padStart(4, "0");
    const whose = info === null || info.uid === null || bits === null
      ? ""
      : ` (owner uid ${info.uid}, group ${info.gid}, mode ${bits})`;
    const need = readonly ? "read" : "read and write";
    return new Deno.errors.PermissionDenied(
      `Cannot serve "${database}": this user may not read the database file${whose}: ` +
        `the server needs to ${need} it: make it ${
          readonly ? "readable" : "readable and writable"
        } ` +
        "by this user (chmod or chown), or run the server as its owner",
      { cause: err },
    );
  }
}
