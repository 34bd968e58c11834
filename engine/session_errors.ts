/**
 * The errors an engine session raises about the session itself (not about
 * SQL), shared by the single-file engine and cluster mode so clients see
 * the same codes and words from both.
 *
 * @module
 */

import {
  SQLITE_IOERR,
  SQLITE_IOERR_READ,
  SQLITE_IOERR_SHORT_READ,
  SQLITE_IOERR_WRITE,
  SQLITE_NOMEM,
} from "./_result_codes.ts";
import { AbortError, ErrorCode, SqliteError } from "../protocol/errors.ts";
import type { LeaseEnd } from "./writer_queue.ts";

/** A statement handle that is not (or no longer) prepared on this connection. */
export function unknownHandle(handle: number): SqliteError {
  return new SqliteError(
    ErrorCode.UnknownStatement,
    `Unknown statement handle ${handle}: it was finalized or never prepared on this connection`,
  );
}

/** A cursor that is finished, closed, or was never opened on this connection. */
export function unknownCursor(id: number): SqliteError {
  return new SqliteError(
    ErrorCode.UnknownStatement,
    `Unknown cursor ${id}: it is finished, was closed, or never opened on this connection`,
  );
}

/**
 * A cursor opened inside a transaction, closed when the transaction ended (as
 * in PostgreSQL). `ended`: why the server ended it (its lease, a cancel
 * after a write), which the message gives instead of the advice for a
 * cursor left unread at the client's own COMMIT.
 */
export function cursorTxEnded(id: number, ended?: SqliteError): SqliteError {
  if (ended !== undefined) {
    return new SqliteError(
      ErrorCode.CursorClosed,
      `Cursor ${id} was closed when its transaction ended, rolled back by the server: ${ended.message}`,
      undefined,
      { cause: ended },
    );
  }
  return new SqliteError(
    ErrorCode.CursorClosed,
    `Cursor ${id} was closed when its transaction ended (COMMIT, ROLLBACK, or rolled back by ` +
      "the server): a cursor opened inside a transaction lasts until the transaction ends; " +
      "read it to the end before COMMIT, or open it outside the transaction",
  );
}

/**
 * A cursor on the writer closed because another statement of its
 * transaction was stopped (its deadline, a cancel): SQLite's interrupt stops
 * every statement running on the connection, the cursor's too, and stays
 * pending until none runs.
 */
export function cursorInterrupted(id: number, cause: Error): SqliteError {
  const what = cause instanceof SqliteError ? cause.code : cause.name;
  return new SqliteError(
    ErrorCode.CursorClosed,
    `Cursor ${id} was closed: another statement of its transaction was stopped (${what}), and ` +
      "the interrupt that stops it stops every statement on the connection; the transaction " +
      "is still open: open the cursor again to read on",
  );
}

/** The transaction was rolled back after its idle lease (`--tx-idle-timeout`). */
export function txTimeout(ms: number): SqliteError {
  return new SqliteError(
    ErrorCode.TxTimeout,
    `Transaction was rolled back after ${ms} ms idle (--tx-idle-timeout); ` +
      "send ROLLBACK to end it (transaction() does so itself), then retry " +
      "the whole transaction",
  );
}

/** The transaction was rolled back once it had lasted `--tx-timeout`, however busy. */
export function txTooLong(ms: number): SqliteError {
  return new SqliteError(
    ErrorCode.TxTimeout,
    `Transaction was rolled back after lasting ${ms} ms (--tx-timeout); ` +
      "send ROLLBACK to end it (transaction() does so itself), then retry " +
      "the whole transaction, shorter",
  );
}

/** The error of a transaction whose lease ended (`why`), given the two limits in ms. */
export function leaseExpired(why: LeaseEnd, idleMs: number, maxAgeMs: number): SqliteError {
  return why === "age" ? txTooLong(maxAgeMs) : txTimeout(idleMs);
}

/**
 * `err` of a statement inside a transaction that SQLite ended around it (a
 * write stopped or cancelled, `ON CONFLICT ROLLBACK`, `RAISE(ROLLBACK)`, an
 * I/O error), saying so; it keeps `err`'s code. `by`: who ended it (the
 * server, for a write past its deadline that a binding unable to interrupt
 * ran to its end). The session then refuses requests until ROLLBACK, with
 * {@link txAborted}.
 */
export function txRolledBack(err: unknown, by: "SQLite" | "the server" = "SQLite"): SqliteError {
  const e = err instanceof SqliteError ? err : null;
  const message = err instanceof Error ? err.message : String(err);
  return new SqliteError(
    codeOf(err),
    `${message}; ${by} rolled back the transaction it was in: end it with ROLLBACK ` +
      "(transaction() does so itself), then retry the whole transaction",
    e?.sqliteCode,
    { cause: err },
  );
}

/**
 * The reply of a request cancelled after it had written inside the open
 * transaction (`reason`: that cancel): the server ended the transaction,
 * as when such a write is interrupted; it keeps `reason`'s code
 * (`ABORTED`). The session then refuses requests until ROLLBACK, with
 * {@link txAborted}.
 */
export function cancelledAfterWrite(reason: AbortError): AbortError {
  return new AbortError(
    `${reason.message}; the server rolled back the transaction it was in: end it with ROLLBACK ` +
      "(transaction() does so itself), then retry the whole transaction",
    { cause: reason },
  );
}

/**
 * The error of every request after {@link txRolledBack} until the client
 * ends the transaction (PostgreSQL's "current transaction is aborted"):
 * `TX_ABORTED`, naming the error that ended it, so that code branching on
 * that error's code (retrying on `SQLITE_CONSTRAINT_UNIQUE`, say) does not
 * take statements that did not run for it.
 */
export function txAborted(first: unknown): SqliteError {
  const message = first instanceof Error ? first.message : String(first);
  return new SqliteError(
    ErrorCode.TxAborted,
    "Transaction was rolled back by an earlier statement's error, so this request did not run " +
      "(none will until the transaction is ended): end it with ROLLBACK (transaction() does so " +
      `itself), then retry the whole transaction; the earlier error: ${codeOf(first)}: ${message}`,
    undefined,
    { cause: first },
  );
}

function codeOf(err: unknown): string {
  if (err instanceof SqliteError || err instanceof AbortError) return err.code;
  return ErrorCode.Internal;
}

/**
 * True when `err`, the failure of a commit (a COMMIT, the RELEASE ending a
 * transaction, the last step of an autocommit write), may have come after
 * SQLite wrote the commit record: an I/O error other than a failed read or
 * write (`SQLITE_IOERR_FSYNC`, `SQLITE_IOERR_SHMSIZE` as the WAL-index grows
 * after the frames were written, ...), or running out of memory. SQLite then
 * rolls the transaction back in memory, but the WAL may hold it, committed,
 * for the next process that opens the database to find: the outcome is
 * unknown. False for failures before anything was committed:
 * `SQLITE_FULL`, `SQLITE_IOERR_WRITE` (a frame could not be written, the
 * commit record last), `SQLITE_IOERR_READ`, constraints (a deferred foreign
 * key), `SQLITE_BUSY` and `SQLITE_LOCKED`, and every other code, which
 * SQLite raises before it writes (`SQLITE_CORRUPT`, `SQLITE_READONLY`, ...).
 *
 * @example
 * ```ts
 * import { SqliteError } from "../protocol/errors.ts";
 * import { commitMayHaveWritten } from "./session_errors.ts";
 * const fsync = new SqliteError("SQLITE_IOERR_FSYNC", "disk I/O error", 1034);
 * const full = new SqliteError("SQLITE_FULL", "database or disk is full", 13);
 * if (!commitMayHaveWritten(fsync) || commitMayHaveWritten(full)) throw new Error("wrong");
 * ```
 */
export function commitMayHaveWritten(err: unknown): boolean {
  if (!(err instanceof SqliteError) || err.sqliteCode === undefined) return false;
  const code = err.sqliteCode;
  if ((code & 0xff) === SQLITE_NOMEM) return true;
  if ((code & 0xff) !== SQLITE_IOERR) return false;
  return code !== SQLITE_IOERR_WRITE && code !== SQLITE_IOERR_READ &&
    code !== SQLITE_IOERR_SHORT_READ;
}

/**
 * `err` of a commit that may have been written ({@link commitMayHaveWritten}):
 * `what` (`"the transaction"`, `"the write"`, ...) may be committed, or not;
 * `mayHaveRun` true.
 */
export function commitOutcomeUnknown(err: SqliteError, what: string): SqliteError {
  return new SqliteError(
    err.code,
    `${err.message}; outcome unknown: the commit of ${what} may have been written (SQLite ` +
      "failed after it may have written it to the WAL: reads do not show it now, but opening " +
      "the database after a crash may): check whether it took effect before retrying",
    err.sqliteCode,
    { cause: err, mayHaveRun: true },
  );
}

/**
 * `err` of a COMMIT (or of the RELEASE ending a transaction) that failed,
 * SQLite having rolled the transaction back: nothing of it was written
 * (`mayHaveRun` false), or, after an error that may have come once the
 * commit was written ({@link commitMayHaveWritten}), the outcome is unknown
 * (`mayHaveRun` true).
 */
export function commitFailed(err: unknown): SqliteError {
  if (commitMayHaveWritten(err)) return commitOutcomeUnknown(err as SqliteError, "the transaction");
  return rolledBackAtCommit(err, false);
}

/**
 * `err` of a COMMIT (or of the RELEASE ending a transaction) that failed
 * and made SQLite roll the transaction back: it has ended, nothing of it
 * was written (cluster mode; the single-file engine says {@link commitFailed}).
 */
export function commitRolledBack(err: unknown): SqliteError {
  return rolledBackAtCommit(err);
}

/** `err` of a COMMIT that rolled the transaction back, saying so; `mayHaveRun` as given. */
function rolledBackAtCommit(err: unknown, mayHaveRun?: boolean): SqliteError {
  const e = err instanceof SqliteError ? err : null;
  const message = err instanceof Error ? err.message : String(err);
  return new SqliteError(
    e?.code ?? ErrorCode.Internal,
    `${message}; the transaction was rolled back at COMMIT, nothing of it was written: ` +
      "retry the whole transaction",
    e?.sqliteCode,
    mayHaveRun === undefined ? { cause: err } : { cause: err, mayHaveRun },
  );
}
