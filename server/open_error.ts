/**
 * The error of a database that will not open, naming the file and what to do
 * about it: permissions, a directory, a file that is not SQLite, and the
 * trap of a WAL database in a directory the server cannot write, which even
 * `--readonly` cannot serve (SQLite creates `-wal` and `-shm` beside it to
 * read it).
 *
 * @module
 */

import { SqliteError } from "../protocol/errors.ts";
import { ReadOnlyFileError, walPaths } from "../engine/database_file.ts";

/**
 * Why a WAL database cannot be served from a read-only directory, and the
 * ways out; appended to open errors of WAL databases.
 */
export const WAL_HINT = "it is in WAL mode, and SQLite reads a WAL database only where it can " +
  "create the -wal and -shm files beside it (or they exist already), even with --readonly; to " +
  "serve it read-only from a read-only directory, switch it out of WAL once with a writer " +
  "(sqlite3 FILE 'PRAGMA journal_mode=DELETE')";

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
    if (got < header.length) return false;
    const magic = new TextDecoder().decode(header.subarray(0, 15));
    return magic === "SQLite format 3" && header[18] === 2 && header[19] === 2;
  } catch {
    return false;
  } finally {
    file?.close();
  }
}

/**
 * `err` of opening `database`, naming the file and what to do about it
 * (same class and `code`; the original as `cause`). Errors other than
 * {@link SqliteError} come back unchanged.
 *
 * @param err What opening the database threw.
 * @param database The database path as given.
 * @param readonly Whether it was opened read-only (`--readonly`).
 */
export function openError(err: unknown, database: string, readonly: boolean): unknown {
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
