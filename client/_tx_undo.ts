/**
 * How a `transaction()` level undoes its work, and what happens when it
 * cannot. A nested level is a savepoint (`netsqlite_spN`); a statement
 * inside it that releases or rolls back to a savepoint opened before it
 * (`RELEASE mine`, `ROLLBACK TO mine`) ends that savepoint too, as SQLite
 * ends every savepoint opened after the one named. The level's
 * `ROLLBACK TO` then fails with "no such savepoint" and what it wrote stays
 * in the transaction it is nested in. That failure is never ignored: the
 * level rejects with `TX_UNDO_FAILED`, and the level it nests in is
 * poisoned (PostgreSQL's "current transaction is aborted"): its calls are
 * refused and it cannot commit; when its function settles it is undone as a
 * whole, which removes the nested level's leftovers with it (or, when its
 * own savepoint went too, poisons the next level out, and so on up to the
 * `BEGIN`, which always rolls back). A level nested in a transaction begun
 * outside `transaction()` (a raw `BEGIN` on a reserved connection, an ORM
 * adapter's) has no such level to poison: that whole transaction is rolled
 * back at once.
 *
 * The client does not refuse such a `RELEASE` or `ROLLBACK TO` before it is
 * sent: it cannot tell reliably which savepoints a level opened (a
 * `SAVEPOINT` run by a prepared statement, any number of times, or in a
 * script that failed part way), so a refusal would either turn away a
 * level's `RELEASE` of its own savepoint or let such a statement through;
 * SQLite's own answer to the level's `ROLLBACK TO` is exact.
 *
 * @module
 */

import { ConnectionError, ErrorCode, SqliteError } from "../protocol/errors.ts";
import { Op } from "../protocol/messages.ts";
import type { PooledConnection } from "./connection.ts";
import {
  callerScope,
  type OpenTransactions,
  openTransactions,
  type TransactionScope,
} from "./_tx_order.ts";

/** What a `transaction()` level keeps beyond its scope (see {@link levelOf}). */
export interface Level {
  /** Its savepoint (`netsqlite_spN`), or `null` for the outermost, begun with `BEGIN`. */
  readonly savepoint: string | null;
  /**
   * Why it cannot commit, once a level nested in it could not undo its work
   * (see {@link undoLevel}); `null` while it can.
   */
  poison: string | null;
  /**
   * `RELEASE` / `ROLLBACK TO` statements of other savepoints sent while it
   * was the innermost level (at most a few), named when its savepoint turns
   * out to be gone.
   */
  readonly ends: string[];
}

const levels = new WeakMap<TransactionScope, Level>();

/** Registers `scope` as a `transaction()` level with savepoint `savepoint` (`null`: `BEGIN`). */
export function newLevel(scope: TransactionScope, savepoint: string | null): Level {
  const level: Level = { savepoint, poison: null, ends: [] };
  levels.set(scope, level);
  return level;
}

/** The `transaction()` level that `scope` is, if it is one (not an ORM adapter's scope). */
export function levelOf(scope: TransactionScope | undefined): Level | undefined {
  return scope === undefined ? undefined : levels.get(scope);
}

/** The innermost transaction open on `conn`, where a statement sent now runs, if it is a level. */
function innermostLevel(conn: PooledConnection): Level | undefined {
  return levelOf(openTransactions(conn)?.stack.at(-1));
}

/**
 * Notes `ends` (`RELEASE s`, `ROLLBACK TO s` of savepoints not
 * `transaction()`'s own) sent on `conn`, for the message of the innermost
 * level should its savepoint be gone (see {@link Level.ends}).
 */
export function noteSavepointEnds(conn: PooledConnection, ends: readonly string[]): void {
  const level = innermostLevel(conn);
  if (level !== undefined && level.savepoint !== null) noteEnds(level, ends);
}

function noteEnds(level: Level, ends: readonly string[]): void {
  for (const end of ends) {
    if (level.ends.length < 3 && !level.ends.includes(end)) level.ends.push(end);
  }
}

/**
 * The error of a call that would run on `conn` in `level` (by default the
 * innermost level open there) when that level is poisoned (see
 * {@link undoLevel}), or its transaction has ended under it; else `null`.
 * Nothing is sent then.
 */
export function poisonedCall(
  conn: PooledConnection,
  level: Level | undefined = innermostLevel(conn),
): SqliteError | null {
  if (level?.poison === null && conn.open && !conn.inTransaction && !conn.lostTransaction) {
    // Ended, not by the server (which keeps a transaction it rolled back open for the client
    // until ROLLBACK), nor with the connection: by a statement of its own (see endedInside).
    return new SqliteError(
      ErrorCode.TxUndoFailed,
      "Transaction cannot go on: it has ended while transaction() was running in it (a RELEASE " +
        "of the savepoint that began a raw transaction commits it), and this call would run " +
        "outside any transaction (it was not sent)",
    );
  }
  const poison = level?.poison ?? null;
  return poison === null ? null : cannotGoOn(poison);
}

/**
 * The error of a call refused, unsent, in a transaction that cannot commit
 * because of `poison` (a `transaction()` level's, or an ORM adapter's).
 */
export function cannotGoOn(poison: string): SqliteError {
  return new SqliteError(
    ErrorCode.TxUndoFailed,
    `Transaction cannot go on: ${poison}; it cannot commit, and is rolled back when its ` +
      "function settles (this call was not sent)",
  );
}

/**
 * {@link poisonedCall} for a call not made through a `tx` that runs on
 * `conn` from inside the function of a `transaction()` level open there
 * (followed across awaits): a plain call on a `max: 1` client, which joins
 * that transaction, or on the reserved connection it runs on. It runs in
 * that level, so it obeys the same rule as the level's `tx`. `null` when
 * the caller is in no such level.
 */
export function joinedCallRefused(conn: PooledConnection): SqliteError | null {
  const level = levelOf(callerScope(conn));
  return level === undefined ? null : poisonedCall(conn, level);
}

/**
 * The error a poisoned level (see {@link undoLevel}) whose function resolved
 * rejects with (an ORM adapter's level too).
 */
export function poisonedCommit(level: { readonly poison: string | null }): SqliteError {
  return new SqliteError(
    ErrorCode.TxUndoFailed,
    `Transaction rolled back instead of committed: ${level.poison}; this transaction was undone ` +
      "as a whole, the nested one's work with it",
  );
}

/**
 * The error a `transaction()` level (or an ORM adapter's) rejects with
 * instead of `err`, the `ConnectionError` of a call on `conn` that may have
 * run (`mayHaveRun` true), which its function or its `RELEASE` failed with,
 * when the transaction was lost with the connection before anything could
 * commit it (see `PooledConnection.rolledBackWithLink`): whatever that call
 * did, the server rolled the transaction back. It is the error its `COMMIT`
 * gets then (`CONNECTION_CLOSED`, `mayHaveRun` false, naming why the
 * connection ended), with `err` as `cause`. Else `err` as it is: one with
 * `mayHaveRun` false says already that nothing of it stays applied, and one
 * raised elsewhere (see `PooledConnection.raised`: another client's, or
 * another connection's of this one) is not this transaction's to judge.
 */
export function lostWithConnection(conn: PooledConnection, err: unknown): unknown {
  if (
    !(err instanceof ConnectionError) || !err.mayHaveRun || !conn.rolledBackWithLink ||
    !conn.raised(err)
  ) return err;
  const lost = conn.lostTransactionError();
  return new ConnectionError(lost.message, { code: lost.code, cause: err, mayHaveRun: false });
}

/**
 * The error of a transaction's `BEGIN` (`transaction()`'s, or an ORM
 * adapter's) that failed with `err`: when `err` is a `ConnectionError`
 * saying it may have run, the same error with `mayHaveRun` false (same
 * `code`, `err` as `cause`). A `BEGIN` that ran on a connection that then
 * ended opened a transaction that ended with it (the server rolls it back),
 * and nothing else of the transaction was sent, so nothing of it stays
 * applied: retrying the whole transaction is safe. The client cannot tell
 * the loss from the connection's transaction state here (as
 * {@link lostWithConnection} does): no answer said the transaction was
 * open. Else `err` as it is.
 */
export function lostAtBegin(err: unknown): unknown {
  if (!(err instanceof ConnectionError) || !err.mayHaveRun) return err;
  return new ConnectionError(
    `Connection was lost while the transaction was beginning (${err.message}); had its BEGIN ` +
      "run, the transaction ended with the connection, which the server rolled back: nothing " +
      "of it stays applied; retry the whole transaction",
    { code: err.code, cause: err, mayHaveRun: false },
  );
}

/**
 * True when `err`, the failure of a statement ending the transaction or a
 * savepoint of it, says the transaction is gone, or will be rolled back
 * whatever is sent: the connection was lost (the server rolls it back),
 * SQLite or the server already rolled it back (`TX_ABORTED`,
 * `TX_TIMEOUT`), or the server is stopping. Not when SQLite refused it
 * because the transaction has ended (see {@link endedInside}).
 */
export function endedAlready(conn: PooledConnection, err: unknown): boolean {
  if (err instanceof ConnectionError) return true;
  if (!conn.inTransaction) return !endedInside(conn, err);
  if (!(err instanceof SqliteError)) return false;
  return err.code === ErrorCode.TxAborted || err.code === ErrorCode.TxTimeout ||
    err.code === ErrorCode.ShuttingDown;
}

/**
 * True when SQLite refused a nested level's `ROLLBACK TO` or `RELEASE`
 * (`err`, a `SQLITE_*` error) because the transaction had ended while the
 * level was open, not rolled back by the server (which keeps it open for
 * the client, failing its requests with `TX_ABORTED` or `TX_TIMEOUT`,
 * until `ROLLBACK`): a statement inside the level ended it, as a `RELEASE`
 * of the savepoint that began a raw transaction (`SAVEPOINT mine` sent on
 * a reserved connection instead of `BEGIN`) commits it.
 */
function endedInside(conn: PooledConnection, err: unknown): boolean {
  return conn.open && !conn.inTransaction && err instanceof SqliteError &&
    err.code.startsWith("SQLITE_");
}

/**
 * Undoes the work of `level` (`scope` on `open.stack`, its function
 * settled): `ROLLBACK`, or `ROLLBACK TO` and `RELEASE` of its savepoint.
 * Resolves to `null` once done, or when the transaction had ended already
 * (see {@link endedAlready}: nothing of it can be committed). A nested
 * level whose savepoint is gone (see the module doc) resolves to the error
 * it rejects with, `TX_UNDO_FAILED` with `cause` (`fn`'s error, or the
 * failed `RELEASE`'s), after poisoning the level it nests in, or, when that
 * is not a `transaction()` level, rolling the whole transaction back.
 */
export async function undoLevel(
  conn: PooledConnection,
  open: OpenTransactions,
  scope: TransactionScope,
  level: Level,
  cause: unknown,
): Promise<SqliteError | null> {
  const savepoint = level.savepoint;
  const exec = (sql: string): Promise<unknown> => conn.request(Op.Exec, [sql]);
  if (savepoint === null) {
    // A failed ROLLBACK leaves the connection in a transaction: released so, it is closed, and
    // the server rolls the transaction back (see Pool.release).
    await exec("ROLLBACK").catch(() => {});
    return null;
  }
  let failure: unknown;
  try {
    await exec(`ROLLBACK TO ${savepoint}; RELEASE ${savepoint}`);
    return null;
  } catch (err) {
    if (endedAlready(conn, err)) return null;
    failure = err;
  }
  const ended = endedInside(conn, failure);
  const why = ended ? endedReason(level) : lostReason(savepoint, failure, level.ends);
  const at = open.stack.indexOf(scope);
  const enclosing = at > 0 ? levelOf(open.stack[at - 1]) : undefined;
  let then: string;
  if (ended) {
    poisonAll(open, level, why);
    then = "calls through transaction() on this connection are refused with TX_UNDO_FAILED " +
      "from now on, and other statements run outside any transaction";
  } else if (enclosing !== undefined) {
    if (enclosing.poison === null) enclosing.poison = `a transaction nested in it ${why}`;
    // Its own savepoint may be gone too: its message then names what ended them.
    noteEnds(enclosing, level.ends);
    then = "the transaction it is nested in cannot commit: its calls fail with TX_UNDO_FAILED, " +
      "and it is rolled back when its function settles";
  } else {
    // Begun outside transaction() (a raw BEGIN on a reserved connection, an ORM's): nothing
    // here can keep it from committing later but ending it now.
    await exec("ROLLBACK").catch(() => {});
    poisonAll(open, level, why);
    then = "the transaction it is nested in was begun outside transaction() (a raw BEGIN, an " +
      "ORM's transaction), so the whole transaction was rolled back now: statements sent after " +
      "this run outside any transaction, and its COMMIT fails";
  }
  return new SqliteError(
    ErrorCode.TxUndoFailed,
    `Nested transaction's work could not be undone: it ${why}; ${then}`,
    undefined,
    { cause },
  );
}

/** Poisons every `transaction()` level on `open.stack` but `level`, whose loss is `why`. */
function poisonAll(open: OpenTransactions, level: Level, why: string): void {
  for (const s of open.stack) {
    const other = levelOf(s);
    if (other !== undefined && other !== level && other.poison === null) {
      other.poison = `a transaction nested in it ${why}`;
    }
  }
}

/** Why a level whose transaction ended inside it (see {@link endedInside}) is lost. */
function endedReason(level: Level): string {
  const named = level.ends.length === 0
    ? ""
    : `, here ${level.ends.map((s) => `"${s}"`).join(", ")}`;
  return "saw the transaction it is nested in end inside it (a RELEASE of the savepoint that " +
    `began that transaction commits it${named}), so its work so far may have been committed`;
}

/**
 * Why `savepoint`'s `ROLLBACK TO` failed with `err`, for the messages: in
 * the words "it <reason>"; `ends` names the statements that ended it, when
 * known (an ORM adapter's nested level knows none).
 */
export function lostReason(savepoint: string, err: unknown, ends: readonly string[]): string {
  const said = err instanceof Error ? err.message : String(err);
  if (!/no such savepoint/i.test(said)) {
    const code = err instanceof SqliteError ? `${err.code}: ` : "";
    return `could not roll back to its savepoint ${savepoint} (${code}${said})`;
  }
  const named = ends.length === 0
    ? "a RELEASE or ROLLBACK TO of a name it did not open"
    : ends.map((s) => `"${s}"`).join(", ");
  return `lost its savepoint ${savepoint} (SQLite: ${said}): a statement inside it released or ` +
    `rolled back to a savepoint opened before it (${named}), which ends every savepoint opened ` +
    "after that one";
}
