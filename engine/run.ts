/**
 * Running one prepared statement: on the main thread under a time budget,
 * or on a background thread (FFI binding) while the event loop serves other
 * clients; either way stopped at its deadline.
 *
 * - {@link runInline} steps on the main thread. With a binding that can
 *   interrupt, a progress handler stops the step at `min(budget, deadline)`:
 *   past the budget it throws {@link OverBudget} (the statement was stopped
 *   and undone: only reads, and writes outside any transaction, are run with
 *   a budget), past the deadline `STATEMENT_TIMEOUT`.
 * - {@link runInBackground} steps with non-blocking calls; a timer
 *   interrupts it at the deadline, {@link Running.cancel} at once.
 *
 * @module
 */

import { ErrorCode, SqliteError } from "../protocol/errors.ts";
import type { BindArgs, SqlValue } from "./binding/binding.ts";
import { columnsOf, type Connection, type Prepared, release } from "./connection.ts";
import { resultTooLarge, rowBytes } from "./binding/_errors.ts";
import { type ChangeLog, changeLogOf } from "./change_log.ts";
import { type Encoded, MsgpackWriter } from "../protocol/msgpack.ts";
import { RowsEncoder } from "../protocol/rows_encoder.ts";

export { resultTooLarge, rowBytes };

/** SQLite's primary code for an interrupted statement. */
const SQLITE_INTERRUPT = 9;

/** Bounds on one statement's execution. */
export interface RunLimits {
  /** The statement's time limit in ms. */
  timeout: number;
  /**
   * `performance.now()` value after which the statement is stopped, set by
   * {@link deadlineOf} when first needed: a statement that runs inline and
   * quickly never reads the clock.
   */
  deadline?: number;
  /** Largest result, in approximate bytes, before `RESULT_TOO_LARGE`. */
  maxBytes: number;
  /**
   * Rows wanted at most (a read is not stepped past them, a write is stepped
   * to its end so that an error of its end is reported); all when absent.
   */
  maxRows?: number;
  /**
   * The room the reply has, for a statement whose rows must fit it before
   * its changes stay: a write with RETURNING, a batch's statements. Its rows
   * are then measured exactly as encoded, and a statement they do not fit
   * is stopped before its last step and fails with `reply.error()`.
   */
  reply?: ReplyRoom;
  /**
   * Keep the rows a read stepped before it failed (SQLite's error, a row
   * that cannot be read, `STATEMENT_TIMEOUT`): {@link rowsBefore} finds
   * them by the error. For a cursor whose rows are materialised, which
   * yields them before the error as a streaming cursor does. Never for a
   * write: one that fails is undone, so none of its rows happened.
   */
  partial?: boolean;
}

/**
 * Room left in a buffered reply (`query`, `batch`), shared by the
 * statements that fill it: {@link runInline} and {@link runInBackground}
 * take what a statement's rows used (its column names and
 * {@link STATEMENT_OVERHEAD} included) from `bytes`.
 */
export interface ReplyRoom {
  /** Bytes left, as encoded. */
  bytes: number;
  /** The error of a statement whose rows do not fit. */
  error: () => SqliteError;
  /**
   * Whether a write stopped for its reply (or for a row that cannot be
   * read) is undone here: `false` when the caller undoes it (a group
   * commit's savepoint, a batch's transaction).
   */
  undo: boolean;
}

/**
 * Bytes of a reply message besides its statements' results, at most: the
 * array header, request id and status, a batch's array header.
 */
export const REPLY_OVERHEAD = 24;

/**
 * Bytes of one statement's result in a reply besides its column names and
 * rows, at most: array header, a batch item's changes and rowid, the rows'
 * array header.
 */
export const STATEMENT_OVERHEAD = 24;

/**
 * Whether a statement's rows are wanted: `false` (none), `true` (as arrays)
 * or `"encoded"` (for a reply: as one MessagePack {@link Encoded} array
 * when the statement runs inline, arrays otherwise).
 */
export type WantRows = boolean | "encoded";

/** What a statement produced. */
export interface Outcome {
  /** Result column names (read after running: they follow schema changes). */
  columns: string[];
  /** Rows (empty for statements that return none); `Encoded` only when asked for. */
  rows: SqlValue[][] | Encoded;
  /** Rows changed by this statement (0 when it changes none itself). */
  changes: number | bigint;
  /** Rowid of its last insert (0 when it inserts none itself). */
  lastInsertRowid: number | bigint;
}

/** When the statement of `limits` is stopped (fixed at the first call). */
export function deadlineOf(limits: RunLimits): number {
  return limits.deadline ??= performance.now() + limits.timeout;
}

/** Thrown by {@link runInline} when the budget ran out: nothing was changed. */
export class OverBudget extends Error {
  constructor() {
    super("Statement ran past its inline budget");
    this.name = "OverBudget";
  }
}

/**
 * Thrown by {@link runInline} when the statement met a file lock another
 * process holds (`SQLITE_BUSY` on a connection that does not wait for locks
 * on the main thread): nothing was changed; run it in the background, where
 * it waits up to the busy timeout.
 */
export class LockBusy extends Error {
  constructor() {
    super("Statement met a lock another process holds");
    this.name = "LockBusy";
  }
}

/**
 * Thrown where a read is about to begin on a reader (its schema check, a
 * reader lent to it, a cursor's snapshot) and met a file lock another
 * process holds, which the main thread does not wait for: on a database not
 * in WAL mode, another program's EXCLUSIVE lock keeps readers out while it
 * commits (or holds `BEGIN EXCLUSIVE`). Nothing of the request ran: it waits
 * for the lock in the background (`ReaderPool.waitForLock`), then runs again.
 */
export class ReadLocked extends Error {
  constructor() {
    super("A read met a lock another process holds before it began");
    this.name = "ReadLocked";
  }
}

/**
 * True when `err`, from a call on `conn` on the main thread, means another
 * process holds a lock (`SQLITE_BUSY`, `SQLITE_BUSY_RECOVERY`) that the call
 * did not wait for: run again in the background, it waits.
 */
export function metLock(conn: Connection, err: unknown): boolean {
  const code = err instanceof SqliteError ? err.sqliteCode : undefined;
  return (code === 5 || code === 261) && !conn.db.waitsInline && conn.caps.background;
}

/**
 * Binds and runs `p` on the main thread.
 *
 * @param budget Milliseconds after which the statement is stopped with
 *   {@link OverBudget}; `Infinity` for none.
 * @throws {SqliteError} SQLite's error, `STATEMENT_TIMEOUT`, `RESULT_TOO_LARGE`.
 * @throws {OverBudget}
 */
export function runInline(
  p: Prepared,
  args: BindArgs,
  limits: RunLimits,
  wantRows: WantRows,
  budget = Infinity,
): Outcome {
  const log = p.onWriter ? changeLogOf(p.conn) : undefined;
  if (log === undefined) return stepInline(p, args, limits, wantRows, budget);
  const mark = log.mark(p);
  let o: Outcome;
  try {
    o = stepInline(p, args, limits, wantRows, budget);
  } catch (err) {
    // (Rows that could not be read or did not fit the reply: the
    // statement's changes were undone.)
    if (isUndone(err)) log.truncate(mark);
    log.failed(mark, p);
    throw err;
  }
  log.ran(p, mark);
  return o;
}

function stepInline(
  p: Prepared,
  args: BindArgs,
  limits: RunLimits,
  wantRows: WantRows,
  budget: number,
): Outcome {
  const guard = replyGuard(p, limits, wantRows);
  if (guard !== "savepoint") return stepGuarded(p, args, limits, wantRows, budget, guard);
  return inSavepoint(p, () => stepGuarded(p, args, limits, wantRows, budget, guard));
}

function stepGuarded(
  p: Prepared,
  args: BindArgs,
  limits: RunLimits,
  wantRows: WantRows,
  budget: number,
  guard: ReplyGuard,
): Outcome {
  const db = p.conn.db;
  // Time left: the whole timeout, unless a deadline was fixed already (a
  // batch's statements share one).
  const left = limits.deadline === undefined ? limits.timeout : limits.deadline - performance.now();
  const stop = Math.min(budget, left);
  const timed = stop !== Infinity && p.conn.caps.interrupt;
  /** The rows stepped, kept when the statement fails ({@link RunLimits.partial}). */
  const stepped: SqlValue[][] = [];
  p.busy++;
  let before: Counters | null = null;
  try {
    p.stmt.bind(args);
    before = countersBefore(p);
    if (timed) db.setBudget(stop);
    if (!p.conn.caps.interrupt && p.recursive && limits.timeout !== Infinity) {
      // Nothing can stop a step of this binding: a recursive statement,
      // which may run without bound, is stepped a row at a time instead; a
      // write, which does its work in one step, is undone when it ends late.
      deadlineOf(limits);
      const step = () => stepRows(p, limits, wantRows, true, guard, stepped);
      const rows = p.readOnly ? step() : undoIfLate(p, limits, step);
      return outcome(p, rows, before);
    }
    // A write's rows are read one at a time: one that cannot be read (or
    // does not fit) stops the write before its last step (see ReplyGuard).
    if (
      wantRows &&
      (limits.maxRows !== undefined || limits.reply !== undefined || guard !== "none" ||
        limits.partial)
    ) {
      return outcome(p, stepRows(p, limits, wantRows, false, guard, stepped), before);
    }
    if (wantRows === "encoded") {
      rowsOut.begin();
      p.stmt.allInto(rowsOut, limits.maxBytes);
      return outcome(p, rowsOut.finish(), before);
    }
    if (wantRows) return outcome(p, p.stmt.all(limits.maxBytes), before);
    p.stmt.run();
    return outcome(p, NO_ROWS, before);
  } catch (err) {
    restoreRowid(p, before);
    throw keepRows(p, limits, stopped(p, err, limits, budget, left), stepped);
  } finally {
    if (timed) db.setBudget(null);
    release(p);
  }
}

/**
 * Runs a write in a savepoint and undoes it when it failed or ended past
 * the deadline (`STATEMENT_TIMEOUT`), for bindings that cannot stop it.
 */
function undoIfLate<T>(p: Prepared, limits: RunLimits, run: () => T): T {
  const db = p.conn.db;
  const undo = (): void => {
    try {
      db.exec("ROLLBACK TO netsqlite_deadline; RELEASE netsqlite_deadline");
    } catch {
      // The statement already ended the transaction (e.g. OR ROLLBACK).
    }
  };
  db.exec("SAVEPOINT netsqlite_deadline");
  let result: T;
  try {
    result = run();
  } catch (err) {
    undo();
    throw err;
  }
  if (performance.now() > deadlineOf(limits)) {
    undo();
    throw statementOverran(limits);
  }
  db.exec("RELEASE netsqlite_deadline");
  return result;
}

/**
 * Steps `p` a row at a time, then resets it: its rows when wanted (into
 * `rows`, so a caller has those stepped when it fails), at most
 * `limits.maxRows` of them (a read is not stepped past them; a write with
 * RETURNING, which made all its changes at the first step, is stepped to
 * its end, where its autocommit COMMIT may still fail); with `clock`,
 * checking the deadline between rows.
 */
function stepRows(
  p: Prepared,
  limits: RunLimits,
  wantRows: WantRows,
  clock: boolean,
  guard: ReplyGuard,
  rows: SqlValue[][] = [],
): SqlValue[][] {
  const max = limits.maxRows ?? Infinity;
  const fits = rowsFit(p, limits);
  let bytes = 0;
  try {
    // A write is stepped to its end, its rows past `max` unread: SQLite
    // reports an error of its end there (its autocommit COMMIT failing on a
    // deferred foreign key rolls it back), not at the reset.
    while ((rows.length < max || !p.readOnly) && p.stmt.step()) {
      if (clock && performance.now() > deadlineOf(limits)) throw statementOverran(limits);
      if (!wantRows || rows.length >= max) continue;
      let row: SqlValue[];
      try {
        // (A name SQLite read anew at the first step, refused as a value
        // is: before a write's changes stay.)
        if (rows.length === 0 && !p.readOnly) columnsOf(p);
        row = p.stmt.row();
        bytes = takeRow(row, fits, bytes, limits);
      } catch (err) {
        throw unreadRow(p, guard, err);
      }
      rows.push(row);
    }
    fits?.(null);
  } finally {
    p.stmt.reset();
  }
  return rows;
}

/**
 * How a write whose rows are read is undone when one of them cannot be
 * read (a TEXT value that is not valid UTF-8: `INVALID_UTF8`) or they do
 * not fit the reply ({@link RunLimits.reply}) or `maxBytes`: a client never
 * gets an error for a write that stays. `"interrupt"` (in autocommit, with
 * a binding that can interrupt: the statement is stopped before its last
 * step, and SQLite rolls it back), `"savepoint"` (inside a transaction,
 * where an interrupted write would roll all of it back, or with a binding
 * that cannot interrupt: it runs in a savepoint of its own), `"none"`
 * (nothing to undo, or the caller undoes it: a group commit's savepoint, a
 * batch's transaction).
 */
type ReplyGuard = "none" | "interrupt" | "savepoint";

function replyGuard(p: Prepared, limits: RunLimits, wantRows: WantRows): ReplyGuard {
  // Transaction control (BEGIN, COMMIT, END, ROLLBACK, SAVEPOINT, RELEASE,
  // ROLLBACK TO) returns no rows, and is never wrapped: it would end, or
  // cancel, a savepoint around it (COMMIT releases it with the transaction,
  // `RELEASE x` and `ROLLBACK TO x` those opened after `x`), or leave a
  // savepoint of its own to be released with ours.
  if (!wantRows || limits.reply?.undo === false || p.readOnly || p.txOp !== null) return "none";
  // A statement without result columns (VACUUM, DDL, a write without
  // RETURNING) has no rows to read or undo: unwrapped, as VACUUM must be
  // (it fails inside a transaction). A reply room still measures it: it
  // refuses it before it runs when not even an empty result fits.
  if (p.columns.length === 0) return "none";
  return p.conn.caps.interrupt && !p.conn.db.inTransaction ? "interrupt" : "savepoint";
}

/**
 * Runs `run` in a savepoint: undone when a row could not be read or the
 * rows did not fit (with the changes the change log saw: {@link isUndone}),
 * released otherwise (SQLite undid a failed statement itself, or kept what
 * OR FAIL keeps).
 */
function inSavepoint<T>(p: Prepared, run: () => T): T {
  const conn = p.conn;
  const log = p.onWriter ? changeLogOf(conn) : undefined;
  const mark = log?.mark() ?? 0;
  // Busy: the savepoint's statements, prepared into the cache, must not evict `p`.
  p.busy++;
  try {
    conn.runOwn("SAVEPOINT netsqlite_reply");
    let result: T;
    try {
      result = run();
    } catch (err) {
      endSavepoint(p, err, log, mark);
      throw err;
    }
    try {
      releaseReply(p);
    } catch (err) {
      // (Outside a transaction RELEASE commits, and may fail as COMMIT does.)
      undoSavepoint(p, log, mark);
      throw err;
    }
    return result;
  } finally {
    release(p);
  }
}

/**
 * Releases the savepoint of {@link inSavepoint} (or of
 * {@link runInBackground}) after its statement succeeded. A statement that
 * ended the savepoint itself (only transaction control could, and it is
 * never wrapped: see {@link replyGuard}) did what it said: there is nothing
 * to release, and no error to report as a rollback.
 */
function releaseReply(p: Prepared): void {
  if (!p.conn.db.inTransaction) return;
  try {
    p.conn.runOwn("RELEASE netsqlite_reply");
  } catch (err) {
    if (err instanceof SqliteError && err.message.startsWith(NO_REPLY_SAVEPOINT)) return;
    throw err;
  }
}

/** SQLite's message for RELEASE of the reply's savepoint when it is gone. */
const NO_REPLY_SAVEPOINT = "no such savepoint: netsqlite_reply";

/**
 * Ends the savepoint of {@link inSavepoint} after `err`: rolled back to
 * when the statement is to be undone ({@link isUndone}), else released.
 */
function endSavepoint(
  p: Prepared,
  err: unknown,
  log: ChangeLog | undefined,
  mark: number,
): void {
  if (isUndone(err)) {
    undoSavepoint(p, log, mark);
    return;
  }
  try {
    p.conn.runOwn("RELEASE netsqlite_reply");
  } catch {
    // The statement already ended the transaction (e.g. OR ROLLBACK, or
    // stopped at its deadline); or, in autocommit (a binding that cannot
    // interrupt), RELEASE failed as COMMIT does: nothing stays.
    undoSavepoint(p, log, mark);
  }
}

/**
 * Rolls back to and releases the savepoint of {@link inSavepoint}, and
 * drops the changes the change log saw since `mark` (taken before it).
 */
function undoSavepoint(p: Prepared, log: ChangeLog | undefined, mark: number): void {
  log?.truncate(mark);
  try {
    p.conn.runOwn("ROLLBACK TO netsqlite_reply");
    p.conn.runOwn("RELEASE netsqlite_reply");
  } catch {
    // The statement already ended the transaction (e.g. OR ROLLBACK, or
    // stopped at its deadline).
  }
}

/** Measures rows exactly as the reply encodes them. */
const sizer = new MsgpackWriter(4096);

/** Exact encoded size of `value`. */
function encodedBytes(value: unknown): number {
  sizer.pos = 0;
  sizer.write(value);
  const n = sizer.pos;
  // A buffer grown for one large value is not kept.
  if (sizer.bytes.length > 64 * 1024) sizer.reset(4096);
  return n;
}

/**
 * With a reply room ({@link RunLimits.reply}): a function that takes each
 * row as it is stepped and throws the room's error when it no longer fits
 * (the caller stops the statement: {@link unreadRow}); called with
 * `null` after the last row, it takes the rows' bytes from the room.
 * `null` without a room.
 */
function rowsFit(
  p: Prepared,
  limits: RunLimits,
): ((row: SqlValue[] | null) => void) | null {
  const room = limits.reply;
  if (room === undefined) return null;
  /** The column names measured, until the first step (then `null`). */
  let columns: string[] | null = p.columns;
  let used = STATEMENT_OVERHEAD + encodedBytes(columns);
  // Not even an empty result fits: refused before the statement runs (a
  // write without rows would have committed at its only step).
  if (used > room.bytes) throw roomFull(room);
  return (row) => {
    if (columns !== null) {
      // Stepped: the columns SQLite has now are those the reply sends.
      const now = columnsOf(p);
      if (now !== columns) used += encodedBytes(now) - encodedBytes(columns);
      columns = null;
    }
    if (row === null) {
      room.bytes -= used;
      return;
    }
    used += encodedBytes(row);
    if (used <= room.bytes) return;
    throw roomFull(room);
  };
}

/**
 * Checks one more row: against the reply's room (`fits`, from
 * {@link rowsFit}), else against `maxBytes` by `bytes`, the estimate so far.
 * Returns the new estimate.
 *
 * @throws {SqliteError} when the row does not fit.
 */
function takeRow(
  row: SqlValue[],
  fits: ((row: SqlValue[] | null) => void) | null,
  bytes: number,
  limits: RunLimits,
): number {
  if (fits !== null) {
    fits(row);
    return bytes;
  }
  bytes += rowBytes(row);
  if (bytes > limits.maxBytes) throw resultTooLarge(limits.maxBytes);
  return bytes;
}

/**
 * Takes the bytes of `payload`, exactly as encoded, from `room`: a batch's
 * result for a statement without rows (its changes, rowid and empty arrays),
 * which {@link rowsFit} does not measure.
 *
 * @throws {SqliteError} the room's error when it does not fit.
 */
export function chargeReply(room: ReplyRoom, payload: unknown): void {
  const n = encodedBytes(payload);
  if (n > room.bytes) throw roomFull(room);
  room.bytes -= n;
}

/** Errors of {@link roomFull}: a statement's rows did not fit its reply. */
const roomErrors = new WeakSet<object>();

/**
 * Errors of ours that failed a statement after it ran (see {@link isUndone}):
 * {@link roomFull}'s, and those of {@link unreadRow}.
 */
const undoErrors = new WeakSet<object>();

/** The error of a statement whose rows do not fit `room` (see {@link isRoomFull}). */
export function roomFull(room: ReplyRoom): SqliteError {
  const err = room.error();
  roomErrors.add(err);
  undoErrors.add(err);
  return err;
}

/**
 * True when `err` says a statement's rows did not fit its reply: the
 * statement ran, and its changes are to be undone (unlike SQLite's own
 * errors, after which SQLite kept what it keeps: the rows an OR FAIL
 * statement changed before failing).
 */
export function isRoomFull(err: unknown): boolean {
  return typeof err === "object" && err !== null && roomErrors.has(err);
}

/**
 * True when `err` is ours, raised after the statement ran (a row that could
 * not be read, `INVALID_UTF8`; rows that did not fit, `RESULT_TOO_LARGE`):
 * its changes are to be undone, as if SQLite had failed it. SQLite's own
 * errors are not: after them SQLite kept what it keeps (the rows an OR
 * FAIL statement changed before failing), or ended the transaction (OR
 * ROLLBACK).
 */
export function isUndone(err: unknown): boolean {
  return typeof err === "object" && err !== null && undoErrors.has(err);
}

/**
 * A row of `p`, stepped, could not be read or taken (`err`): a write is
 * undone (a read is left as it is). With `guard` `"interrupt"` it is
 * stopped here, before its last step (SQLite rolls it back); a savepoint
 * is rolled back to by its caller ({@link endSavepoint}), a group's or a
 * batch's by theirs (`"none"`). Returns `err`, marked for {@link isUndone}.
 */
function unreadRow(p: Prepared, guard: ReplyGuard, err: unknown): unknown {
  if (p.readOnly) return err;
  if (guard === "interrupt") stopWrite(p);
  if (typeof err === "object" && err !== null) undoErrors.add(err);
  return err;
}

/**
 * Stops a write in autocommit before its last step, so that SQLite rolls
 * it back: its changes (all made at the first step, with RETURNING) would
 * be committed when it is reset or runs to its end.
 */
function stopWrite(p: Prepared): void {
  p.conn.db.interrupt();
  try {
    p.stmt.step();
  } catch {
    // SQLITE_INTERRUPT: the statement was rolled back.
    return;
  }
  throw new SqliteError(
    ErrorCode.Internal,
    "Internal error: a write stopped for its reply's size was not interrupted",
  );
}

/** Rows a read stepped before its error, by the error ({@link RunLimits.partial}). */
const rowsBeforeError = new WeakMap<object, { columns: string[]; rows: SqlValue[][] }>();

/**
 * The rows a read run with {@link RunLimits.partial} stepped before it
 * failed with `err`, and its columns; `undefined` when it stepped none, or
 * it was not such a read.
 */
export function rowsBefore(
  err: unknown,
): { columns: string[]; rows: SqlValue[][] } | undefined {
  return typeof err === "object" && err !== null ? rowsBeforeError.get(err) : undefined;
}

/**
 * Keeps `rows`, which the read `p` stepped before it failed with `err`,
 * for {@link rowsBefore} (with {@link RunLimits.partial}). Not for a write
 * (one that fails is undone: none of its rows happened), nor rows that did
 * not fit (`RESULT_TOO_LARGE`: the statement did not fail), nor an error
 * that is not the statement's (a run stopped to run again elsewhere).
 * Returns `err`.
 */
function keepRows(p: Prepared, limits: RunLimits, err: unknown, rows: SqlValue[][]): unknown {
  if (
    limits.partial && p.readOnly && rows.length > 0 && err instanceof SqliteError &&
    err.code !== ErrorCode.ResultTooLarge
  ) {
    rowsBeforeError.set(err, { columns: columnsOf(p), rows });
  }
  return err;
}

/** A statement running on a background thread. */
export interface Running {
  /** Settles when the statement is done. */
  readonly done: Promise<Outcome>;
  /** Stops it now; `done` rejects with `reason`. */
  cancel(reason: Error): void;
  /**
   * Why the connection was interrupted (the deadline's error, or the
   * cancel's reason); `null` when it was not. SQLite's interrupt stops every
   * statement running on the connection, and stays pending until a
   * statement starts while none runs: the caller ends the connection's
   * other statements (a transaction's cursors) once `done` settled.
   */
  readonly interruptedBy: Error | null;
}

/**
 * Binds and runs `p` with non-blocking steps: the event loop runs
 * meanwhile, and nothing else may use `p`'s connection until `done`
 * settles. Needs a binding with `capabilities.background`.
 */
export function runInBackground(
  p: Prepared,
  args: BindArgs,
  limits: RunLimits,
  wantRows: WantRows,
): Running {
  let reason: Error | null = null;
  /**
   * True once `reason` was thrown between two steps of a write and the
   * write undone here: SQLite did not interrupt it (a step had returned a
   * row), so it undid nothing, and the changes would stay (be committed,
   * in autocommit) when the statement is reset.
   */
  let undone = false;
  const db = p.conn.db;
  const guard = replyGuard(p, limits, wantRows);
  // A write with rows (RETURNING) inside a transaction runs in a savepoint
  // even when they are not wanted, or not measured: a deadline or a cancel
  // that comes between two of its rows is undone with it (unless the
  // caller undoes it, as a batch does).
  const savepoint = guard === "savepoint" ||
    (guard === "none" && !p.readOnly && p.txOp === null && p.columns.length > 0 &&
      db.inTransaction && limits.reply?.undo !== false);
  const log = p.onWriter ? changeLogOf(p.conn) : undefined;
  const mark = log?.mark(p) ?? 0;
  if (savepoint) {
    // Busy: the savepoint's statements, prepared into the cache, must not evict `p`.
    p.busy++;
    try {
      p.conn.runOwn("SAVEPOINT netsqlite_reply");
    } catch (err) {
      release(p);
      throw err;
    }
  }
  const timer = setTimeout(() => {
    reason = statementTimeout(limits);
    db.interrupt();
  }, Math.max(0, deadlineOf(limits) - performance.now()));
  // Steps (numbered from 1) found slow inline on an earlier run: they go to
  // the background; from `slowFrom` on, every step does.
  const slow = new Set<number>();
  let slowFrom = Infinity;
  /** The rows of the latest attempt, kept when it fails ({@link RunLimits.partial}). */
  let stepped: SqlValue[][] = [];
  /** True once {@link Running.cancel} stopped it: its rows are not kept. */
  let cancelled = false;
  const attempt = async (): Promise<{ rows: SqlValue[][] } | SlowStep> => {
    const rows: SqlValue[][] = stepped = [];
    // (Without rows wanted nothing is measured: the caller counts its result.)
    const fits = wantRows ? rowsFit(p, limits) : null;
    let bytes = 0;
    // The first step (where sorting, aggregating and writing happen) runs
    // in the background; rows that follow quickly are stepped inline for
    // a slice, then the next step goes to the background again.
    let more = await p.stmt.stepInBackground();
    let sliceEnd = performance.now() + SLICE_MS;
    for (let step = 2; more; step++) {
      if (wantRows && rows.length !== limits.maxRows) {
        let row: SqlValue[];
        try {
          if (rows.length === 0 && !p.readOnly) columnsOf(p); // (as stepRows)
          row = p.stmt.row();
          bytes = takeRow(row, fits, bytes, limits);
        } catch (err) {
          throw unreadRow(p, guard, err);
        }
        rows.push(row);
        // (A write is stepped to its end, as in stepRows.)
        if (rows.length === limits.maxRows && p.readOnly) break;
      }
      if (reason !== null) {
        // The deadline, a cancel or the lease came after a step returned a
        // row: undone as rows that do not fit the reply are.
        if (savepoint) {
          undone = true; // (rolled back to the savepoint once it is reset)
        } else if (!p.readOnly && !db.inTransaction && p.conn.caps.interrupt) {
          stopWrite(p); // in autocommit, SQLite rolls it back
          undone = true;
        }
        throw reason;
      }
      if (performance.now() < sliceEnd && step < slowFrom && !slow.has(step)) {
        // A row that turns slow here holds the event loop, where the
        // deadline's timer cannot fire. A read (nothing of it was sent, it
        // changed nothing) is stopped after INLINE_STEP_MS and run again,
        // that step in the background; a write's step stops at the deadline.
        const left = Math.max(0, deadlineOf(limits) - performance.now());
        const cap = p.readOnly && left > INLINE_STEP_MS;
        db.setBudget(cap ? INLINE_STEP_MS : left);
        try {
          more = p.stmt.step();
        } catch (err) {
          if (cap && isInterrupt(err) && reason === null) return new SlowStep(step);
          throw err;
        } finally {
          db.setBudget(null);
        }
      } else {
        more = await p.stmt.stepInBackground();
        sliceEnd = performance.now() + SLICE_MS;
      }
    }
    fits?.(null);
    return { rows };
  };
  const run = async (): Promise<Outcome> => {
    p.busy++;
    let before: Counters | null = null;
    try {
      p.stmt.bind(args);
      before = countersBefore(p);
      for (let runs = 1;; runs++) {
        const result = await attempt();
        if (!(result instanceof SlowStep)) return outcome(p, result.rows, before);
        p.stmt.reset(); // (the bindings stay)
        // Twice slow somewhere new: every step from there runs in the background; thrice, all do.
        if (runs === 1) slow.add(result.step);
        else slowFrom = runs === 2 ? result.step : 2;
      }
    } catch (err) {
      restoreRowid(p, before);
      let failure = err;
      if (isInterrupt(err)) {
        if (reason !== null) failure = reason;
        else if (performance.now() >= deadlineOf(limits)) failure = statementTimeout(limits);
      }
      throw cancelled ? failure : keepRows(p, limits, failure, stepped);
    } finally {
      clearTimeout(timer);
      p.stmt.reset();
      release(p);
    }
  };
  const guarded = (): Promise<Outcome> => {
    if (!savepoint) return run();
    return run().finally(() => release(p)).then((o) => {
      try {
        releaseReply(p);
      } catch (err) {
        // (Outside a transaction RELEASE commits, and may fail as COMMIT does.)
        undoSavepoint(p, log, mark);
        throw err;
      }
      return o;
    }, (err) => {
      if (undone) undoSavepoint(p, log, mark);
      else endSavepoint(p, err, log, mark);
      throw err;
    });
  };
  const done = log === undefined ? guarded() : guarded().then((o) => {
    log.ran(p, mark);
    return o;
  }, (err) => {
    if (isUndone(err) || undone) log.truncate(mark);
    log.failed(mark, p);
    throw err;
  });
  return {
    done,
    cancel(why: Error): void {
      if (reason === null) cancelled = true;
      reason ??= why;
      db.interrupt();
    },
    get interruptedBy(): Error | null {
      return reason;
    },
  };
}

/** How long rows are stepped inline between two background steps, in ms. */
export const SLICE_MS = 0.5;

/**
 * Longest one inline step of a read running in the background may hold
 * the event loop, in ms, before the read is run again with that step in
 * the background (see {@link runInBackground}).
 */
export const INLINE_STEP_MS = 2;

/** An inline step of a read ran past {@link INLINE_STEP_MS}: the read runs again. */
class SlowStep {
  constructor(readonly step: number) {}
}

const NO_ROWS: SqlValue[][] = [];

/** The rows of an outcome run with `wantRows: true`, which are arrays. */
export function rowArrays(rows: SqlValue[][] | Encoded): SqlValue[][] {
  if (!Array.isArray(rows)) {
    throw new Error("Internal error: rows encoded where arrays were asked for");
  }
  return rows;
}

/** Encodes the rows of inline reads (one at a time: the main thread runs them). */
const rowsOut = new RowsEncoder();

/**
 * The shared writer's counters before a statement that may change rows:
 * SQLite's `changes()` and last rowid belong to the connection, so after a
 * statement that inserted (or changed) nothing they still tell another
 * client's statement.
 */
interface Counters {
  /** `total_changes()` before. */
  total: number | bigint;
  /** The last insert rowid before. */
  rowid: number | bigint;
  /** True when the rowid was set to {@link UNSET_ROWID} for the statement (see {@link countersBefore}). */
  zeroed: boolean;
}

/**
 * Reads the counters. Only an upsert ({@link Prepared.zeroesRowid}) has the
 * last rowid unset first ({@link UNSET_ROWID}) (where the binding can: FFI): after it, an
 * unchanged rowid could mean an update or an insert that got the same rowid
 * as the previous one. Others keep SQLite's value, which SQL may read
 * (`INSERT ... VALUES (last_insert_rowid())`).
 */
function countersBefore(p: Prepared): Counters | null {
  if (!p.changesRows && !p.inserts) return null;
  const db = p.conn.db;
  const rowid = p.inserts ? db.lastInsertRowid() : 0;
  const zeroed = p.zeroesRowid && db.setLastInsertRowid(UNSET_ROWID);
  return { total: db.totalChanges(), rowid, zeroed };
}

/**
 * What an upsert's last rowid is set to before it runs: the least 64-bit
 * integer, which no insert sets short of naming that rowid itself (rowid 0
 * can be inserted as any other: it must read back as 0, not as unset).
 */
const UNSET_ROWID = -(2n ** 63n);

/** A zeroed statement that inserted nothing leaves the connection's last rowid as it was. */
function restoreRowid(p: Prepared, before: Counters | null, now?: number | bigint): void {
  if (before?.zeroed && (now ?? p.conn.db.lastInsertRowid()) === UNSET_ROWID) {
    p.conn.db.setLastInsertRowid(before.rowid);
  }
}

/**
 * The statement's own changes and inserted rowid: 0 when it changed or
 * inserted nothing itself (DDL, an ignored insert, an upsert that updated),
 * whoever's statement the connection's counters tell.
 */
function outcome(p: Prepared, rows: SqlValue[][] | Encoded, before: Counters | null): Outcome {
  // Columns are read when prepared: a schema change that could alter them
  // clears the statement cache (engine.ts); one SQLite noticed only as the
  // statement stepped (it prepared it again) is caught here.
  const o: Outcome = { columns: columnsOf(p), rows, changes: 0, lastInsertRowid: 0 };
  if (before === null) return o;
  const db = p.conn.db;
  const moved = db.totalChanges() !== before.total;
  if (moved && p.changesRows) o.changes = db.changes();
  if (!p.inserts) return o;
  const now = db.lastInsertRowid();
  if (before.zeroed) {
    o.lastInsertRowid = now === UNSET_ROWID ? 0 : now;
    restoreRowid(p, before, now);
    return o;
  }
  // A moved rowid is this statement's insert; so is an unchanged one when
  // the statement changed rows and can only insert, whatever its triggers
  // update (it got the rowid the writer's previous insert had, in this
  // table or another). Left: an upsert where the binding could not zero the
  // rowid, taken as an update.
  if (
    moved && (now !== before.rowid || (o.changes !== 0 && !p.updatesItself)) &&
    p.conn.setsRowid(p)
  ) {
    o.lastInsertRowid = now;
  }
  return o;
}

function isInterrupt(err: unknown): boolean {
  return err instanceof SqliteError && ((err.sqliteCode ?? 0) & 0xff) === SQLITE_INTERRUPT;
}

/**
 * Maps an interrupt from the progress handler to what stopped it: the
 * shorter of the budget and the statement's timeout (nothing else can
 * interrupt a statement stepping on the main thread).
 */
function stopped(
  p: Prepared,
  err: unknown,
  limits: RunLimits,
  budget: number,
  left: number,
): unknown {
  if (metLock(p.conn, err)) return new LockBusy();
  if (!isInterrupt(err)) return err;
  if (budget >= left) return statementTimeout(limits);
  // The time spent here counts against the deadline where it runs on.
  limits.deadline ??= performance.now() + limits.timeout - budget;
  return new OverBudget();
}

/** The error for a buffered reply larger than a frame. */
export function replyTooLarge(maxFrameSize: number): SqliteError {
  return new SqliteError(
    ErrorCode.ResultTooLarge,
    `Result exceeds maxFrameSize ${maxFrameSize} bytes: use iterate() for large results`,
  );
}

/**
 * The error for a statement found past its deadline when a step that
 * nothing could stop returned (node:sqlite cannot interrupt a running
 * statement): it ran to that step's end, so its message tells how far past
 * the deadline it ended rather than that it was stopped at the deadline (a
 * batch's or script's statements share one deadline, so how long this one
 * ran would not say it).
 */
export function statementOverran(limits: RunLimits): SqliteError {
  const past = Math.max(1, Math.round(performance.now() - deadlineOf(limits)));
  return new SqliteError(
    ErrorCode.StatementTimeout,
    `Statement exceeded its ${limits.timeout} ms deadline (--statement-timeout or the call's ` +
      `timeout option): it ended ${past} ms past it, as node:sqlite cannot stop a running ` +
      "statement",
  );
}

/** The error for a statement stopped at its deadline. */
export function statementTimeout(limits: Pick<RunLimits, "timeout">): SqliteError {
  return new SqliteError(
    ErrorCode.StatementTimeout,
    `Statement stopped after ${limits.timeout} ms (--statement-timeout or the call's timeout option)`,
  );
}
