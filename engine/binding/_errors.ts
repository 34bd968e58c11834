/**
 * Errors both bindings raise alike, and the row size estimate behind
 * `RESULT_TOO_LARGE`.
 *
 * @module
 */

import { ErrorCode, SqliteError } from "../../protocol/errors.ts";
import type { SqlValue } from "./binding.ts";

/** "2 parameters", "1 parameter", "no parameters". */
function parameters(count: number): string {
  return count === 0 ? "no parameters" : `${count} parameter${count === 1 ? "" : "s"}`;
}

/** "1 was given", "3 were given". */
function given(n: number): string {
  return `${n} ${n === 1 ? "was" : "were"} given`;
}

/** The error for more positional values than the statement has parameters. */
export function tooManyValues(n: number, count: number): SqliteError {
  return new SqliteError(
    ErrorCode.InvalidParam,
    `Too many parameter values: the statement has ${parameters(count)}, ${given(n)}`,
  );
}

/** The error for fewer positional values than the statement has parameters. */
export function missingValues(n: number, count: number): SqliteError {
  return new SqliteError(
    ErrorCode.InvalidParam,
    `Missing parameter values: the statement has ${parameters(count)}, ${given(n)}`,
  );
}

/** The error for a named parameter the parameters object gives no value. */
export function missingName(name: string): SqliteError {
  return new SqliteError(
    ErrorCode.InvalidParam,
    name[0] === "?"
      ? `Missing value for parameter "${name}": the parameters object has no "${name}"`
      : `Missing value for parameter "${name}": the parameters object has no "${
        name.slice(1)
      }" (or "${name}")`,
  );
}

/** The error for a named value the statement has no parameter for. */
export function unknownName(key: string): SqliteError {
  return new SqliteError(
    ErrorCode.InvalidParam,
    `Cannot bind parameter "${key}": the statement has no parameter of that name`,
  );
}

/** The error for a buffered result above its byte limit. */
export function resultTooLarge(maxBytes: number): SqliteError {
  return new SqliteError(
    ErrorCode.ResultTooLarge,
    `Result exceeds maxResultBytes ${maxBytes} (--max-result-bytes): ` +
      "use iterate() to stream large results",
  );
}

/** Approximate encoded size of a row (as the engine counts it). */
export function rowBytes(row: readonly SqlValue[]): number {
  let n = 1;
  for (let i = 0; i < row.length; i++) {
    const v = row[i];
    n += typeof v === "string" ? v.length + 5 : v instanceof Uint8Array ? v.length + 5 : 9;
  }
  return n;
}

/** SQLite's extended result code `SQLITE_BUSY_SNAPSHOT`. */
const BUSY_SNAPSHOT = 517;

/**
 * SQLite's message `message` for a failure with the extended result code
 * `code`, with what to do where SQLite's own text would mislead:
 * `SQLITE_BUSY_SNAPSHOT` says "database is locked", though waiting or
 * retrying the statement cannot help (the transaction read a snapshot that
 * another connection's commit made stale), only retrying the whole
 * transaction.
 */
export function sqliteMessage(code: number, message: string): string {
  if (code !== BUSY_SNAPSHOT) return message;
  return `${message} (SQLITE_BUSY_SNAPSHOT: another connection to the database file committed ` +
    "since this transaction began reading, so retrying the statement cannot help; retry the " +
    'whole transaction, or begin it with behavior: "immediate")';
}

/**
 * SQLite's message `message` for a plain `SQLITE_BUSY` after the server
 * waited its busy timeout (`busyMs`) for a file lock: SQLite's "database is
 * locked" says nothing of who holds it or how long the server waited.
 */
export function lockedMessage(message: string, busyMs: number): string {
  return `${message} (another process holds a lock on the database file: the server waited ` +
    `its busy timeout, ${busyMs} ms (--busy-timeout), for it to be released)`;
}

/**
 * Share of the busy timeout a step that failed with `SQLITE_BUSY` must have
 * taken to count as having waited it: SQLite's busy handler sleeps the whole
 * timeout, while a lock met where SQLite does not wait fails in a
 * millisecond or two.
 */
const WAITED_SHARE = 0.9;

/**
 * SQLite's message `message` for a plain `SQLITE_BUSY` of a step that took
 * `elapsedMs` with a busy timeout of `busyMs`, `inTransaction` telling
 * whether the connection's transaction was open: {@link lockedMessage}
 * when the step waited the busy timeout. Otherwise SQLite returned at once
 * without waiting, as it does where waiting cannot help: a transaction that
 * has read meets another process's write lock at its first write (its read
 * lock would keep that process from committing while it waited for the
 * write lock: a deadlock), so only ending the transaction helps.
 */
export function busyMessage(
  message: string,
  busyMs: number,
  elapsedMs: number,
  inTransaction: boolean,
): string {
  if (elapsedMs >= busyMs * WAITED_SHARE) return lockedMessage(message, busyMs);
  if (inTransaction) {
    return `${message} (another process holds the write lock on the database file, and a ` +
      "transaction that has read cannot wait for it, as that could deadlock: SQLite failed at " +
      "once, without waiting; roll back and retry the transaction, or begin it with " +
      'behavior: "immediate")';
  }
  return `${message} (another process holds a lock on the database file; SQLite failed at ` +
    "once, without waiting for it: retry)";
}

/** Marks the error of a call refused because its connection steps in the background. */
const BUSY = Symbol("busy in background");

/**
 * The error for a main-thread call on a connection while a statement steps
 * in the background on it (the connection has no mutex: one thread at a time).
 * It is transient: the same call succeeds once the step returns.
 */
export function busyInBackground(what: "connection" | "statement"): SqliteError {
  const err = new SqliteError(
    "SQLITE_MISUSE",
    what === "connection"
      ? "Cannot use connection: a statement is stepping in the background on it"
      : "Cannot use statement: a statement is stepping in the background on its connection",
    21,
  );
  Object.defineProperty(err, BUSY, { value: true });
  return err;
}

/** True for the error of {@link busyInBackground}. */
export function isBusyInBackground(err: unknown): boolean {
  return err instanceof SqliteError && (err as unknown as Record<symbol, unknown>)[BUSY] === true;
}

/**
 * What a failed open adds when the process ran out of file descriptors
 * (`errno`: EMFILE, its own limit, or ENFILE, the system's), else `""`.
 */
export function descriptorsHint(errno: number | null): string {
  if (errno === EMFILE) {
    return " (out of file descriptors: the server reached its open-file limit, ulimit -n)";
  }
  if (errno === ENFILE) return " (out of file descriptors: the system's file table is full)";
  return "";
}

/** `errno` values (the same on Linux and macOS). */
const ENFILE = 23;
const EMFILE = 24;

/**
 * The `errno` of opening `path` now, for a failed open whose own cause is
 * unknown (node:sqlite does not tell it): EMFILE or ENFILE when descriptors
 * ran out, else `null`.
 */
export function openErrno(path: string): number | null {
  try {
    Deno.openSync(path).close();
  } catch (err) {
    const m = /\(os error (\d+)\)/.exec(String((err as Error)?.message));
    if (m !== null) return Number(m[1]);
  }
  return null;
}

/**
 * The message of `INVALID_UTF8` for column `name`: how to read its bytes.
 * A plain name is most often a table's column: `CAST("name" AS BLOB)`. Any
 * other name is a table's column with another name (`"first name"`) or,
 * unless aliased, an expression's own text (SQLite names such a column so):
 * the message gives both forms, as the column's origin is not known here.
 */
export function invalidUtf8Message(name: string): string {
  const quoted = `"${name.replaceAll('"', '""')}"`;
  const cast = /^[A-Za-z_][A-Za-z0-9_]*$/.test(name)
    ? `read its bytes with CAST(${quoted} AS BLOB) (or hex())`
    : `read its bytes with CAST(col AS BLOB) (or hex(col)), col being the table's column ${quoted} ` +
      `or the expression ${name} that the column selects`;
  return `Cannot read column "${name}": its TEXT value is not valid UTF-8 and would come back ` +
    `changed; ${cast}`;
}
