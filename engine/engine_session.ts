/**
 * One client's view of the engine: its requests, run in the order given, on
 * the connection the engine's rules pick (see `engine.ts`). Methods return a
 * result, a promise of one (the statement runs in the background), throw a
 * `SqliteError`, or return {@link BLOCKED} when the request must wait (for
 * the writer, or for the session's group commit); the engine wakes the
 * session to retry.
 *
 * Where a statement runs, with a binding that can interrupt and step in the
 * background (FFI):
 * - a read outside a transaction runs inline on the shared reader under
 *   {@link INLINE_BUDGET_MS}; past it, it is stopped (a read changes
 *   nothing) and run again in the background on a reader of its own;
 * - a write outside a transaction whose SQL text already ran within the
 *   budget joins the group commit inline; any other write runs alone in the
 *   background, its commit included;
 * - a read behind the session's own write waiting in an open group runs in
 *   the group's transaction on the writer, under the budget (past it, after
 *   the commit), its reply held with the write's;
 * - inside a transaction, on the writer: reads as above (a stopped read
 *   leaves the transaction intact); writes known to be fast inline, others
 *   in the background; COMMIT (and its fsync) always in the background;
 * - every statement stops at its deadline (`--statement-timeout` or the
 *   call's `timeout`): inline by a progress handler, in the background by
 *   `sqlite3_interrupt`. A write stopped inside a transaction ends the
 *   transaction (SQLite rolls it back); the session then refuses requests
 *   until the client sends ROLLBACK, as PostgreSQL does. A write the client
 *   cancelled after it ran (on node:sqlite always: the cancel is read once
 *   it ended) ends the transaction the same way ({@link EngineSession.cancelWrites}).
 *
 * A script (`exec`) or batch runs inline for {@link INLINE_BUDGET_MS}, then
 * goes on from the event loop, a slice at a time, so other sessions are
 * served between its statements (see `#inTurns`).
 *
 * With node:sqlite everything runs inline; only recursive statements and
 * cursors can be stopped at their deadline (between rows), and a batch
 * (between its statements).
 *
 * @module
 */

import {
  cancelledAfterWrite,
  commitFailed,
  commitMayHaveWritten,
  commitOutcomeUnknown,
  cursorInterrupted,
  cursorTxEnded,
  leaseExpired,
  txAborted,
  txRolledBack,
  unknownCursor,
} from "./session_errors.ts";
import { Handles } from "./handles.ts";
import { AbortError, ErrorCode, SqliteError } from "../protocol/errors.ts";
import type {
  BatchItemPayload,
  PreparePayload,
  QueryPayload,
  RunPayload,
  WireBatchOptions,
} from "../protocol/messages.ts";
import type { Encoded } from "../protocol/msgpack.ts";
import { bindArgs } from "./_bind.ts";
import { hasStatement, insertShape, plainTxEnd, startsWith } from "./_sql_text.ts";
import { isDataVersionRead } from "./pragma_use.ts";
import type { BindArgs, SqlValue } from "./binding/binding.ts";
import { isBusyInBackground } from "./binding/_errors.ts";
import { bufferedFull, rowsBytes } from "./buffered_rows.ts";
import { type Connection, type Prepared, release, WriterDecides } from "./connection.ts";
import { type Chunk, chunkBytesFor, Cursor } from "./cursor.ts";
import { changeLogOf } from "./change_log.ts";
import { INLINE_BUDGET_MS } from "./engine.ts";
import { IO_TURN_MS } from "./io_turn.ts";

/**
 * An inline read that took this long (ms), ten times its budget
 * (`INLINE_BUDGET_MS`), ran where the budget could not stop it: it runs in
 * the background from then on. (A literal: engine.ts imports this module.)
 */
const UNSTOPPABLE_MS = 20;
import {
  chargeReply,
  deadlineOf,
  LockBusy,
  metLock,
  type Outcome,
  OverBudget,
  ReadLocked,
  REPLY_OVERHEAD,
  type ReplyRoom,
  replyTooLarge,
  resultTooLarge,
  rowArrays,
  rowsBefore,
  runInBackground,
  runInline,
  type RunLimits,
  type Running,
  statementTimeout,
  type WantRows,
} from "./run.ts";
import type { HostedSession, SessionHost } from "./session_host.ts";
import type { LeaseEnd } from "./writer_queue.ts";

/**
 * What {@link EngineSession.query} answers: `QueryPayload`, whose rows may
 * come already encoded for the reply (an `Encoded` array: the same bytes,
 * decoded as arrays by the client).
 */
export type QueryReply = [columns: string[], rows: QueryPayload[1] | Encoded];

/** Returned by a session method that must wait for the writer. */
export const BLOCKED: unique symbol = Symbol("BLOCKED");

/** What a session method returns. */
export type Reply<T> = T | Promise<T> | typeof BLOCKED;

const NO_ARGS: BindArgs = [];

/** Insert shapes a script remembers the speed of (see `#exec`). */
const MAX_FAST_SHAPES = 64;

/**
 * The outcome of a ROLLBACK that ended a transaction the engine had ended
 * (see `#endsEndedTx`): nothing ran, no rows.
 */
function endedNoOp(): Outcome {
  return { columns: [], rows: [], changes: 0, lastInsertRowid: 0 };
}

/**
 * The error of a batch whose COMMIT failed: nothing of it was applied, or,
 * after an error that may have come once the commit was written, the
 * outcome is unknown (`mayHaveRun`).
 */
function batchCommitFailed(err: unknown): unknown {
  if (!(err instanceof SqliteError)) return err;
  if (commitMayHaveWritten(err)) return commitOutcomeUnknown(err, "the batch");
  return new SqliteError(
    err.code,
    `Batch commit failed, nothing was applied: ${err.message}`,
    err.sqliteCode,
    { cause: err, mayHaveRun: false },
  );
}

/**
 * Fails a batch run with foreign keys off that left a row violating one
 * (`PRAGMA foreign_key_check`): nothing of it is applied.
 */
function checkForeignKeys(writer: Connection): void {
  const bad = writer.ownRows("PRAGMA foreign_key_check");
  if (bad.length === 0) return;
  const [table, rowid, parent] = bad[0];
  throw new SqliteError(
    "SQLITE_CONSTRAINT_FOREIGNKEY",
    `Batch with foreignKeys: false would leave ${bad.length} row(s) violating a foreign key ` +
      `(first: "${table}" rowid ${rowid} references "${parent}"), nothing was applied`,
    787,
  );
}

/** A read that waited for a reader connection until its deadline: it never ran. */
function waitedForReader(limits: RunLimits, max: number): SqliteError {
  return new SqliteError(
    ErrorCode.StatementTimeout,
    `Statement stopped after ${limits.timeout} ms (--statement-timeout or the call's timeout ` +
      `option): it waited all that time for a reader connection, as ${max} reads ran in the ` +
      "background (maxBackgroundReads), and did not run",
  );
}

/**
 * A request that waited for another program's lock (ReadLocked) until its
 * deadline: it never ran.
 */
function waitedForLock(timeout: number): SqliteError {
  return new SqliteError(
    ErrorCode.StatementTimeout,
    `Statement stopped after ${timeout} ms (--statement-timeout or the call's timeout ` +
      "option): it waited all that time for another program's lock on the database file " +
      "(which keeps readers out of a database not in WAL mode while it writes), and did not run",
  );
}

/**
 * A script (`exec`) whose call's timeout passed between two statements: the
 * next one did not begin.
 */
function scriptTimedOut(timeout: number): SqliteError {
  return new SqliteError(
    ErrorCode.StatementTimeout,
    `Script stopped after ${timeout} ms (the call's timeout option, one deadline for the ` +
      "whole script): this statement did not begin",
  );
}

/**
 * A read cancelled (or its session closed) while it waited for a reader
 * (or, `lock`, for another program's lock): it never ran.
 */
function notRunWaiting(reason: Error, lock = false): Error {
  if (!(reason instanceof AbortError)) return reason;
  const what = lock ? "another program's lock on the database file" : "a reader connection";
  return new AbortError(`${reason.message} (it waited for ${what} and did not run)`, {
    cause: reason,
  });
}

/**
 * Cursors ended from outside (their transaction ended, an interrupt) that a
 * session remembers until the client reads or closes them, to say why: the
 * oldest are forgotten past this many, so a client that never does holds a
 * bounded record (an id and a reason each), not a cursor slot.
 */
const ENDED_CURSORS_REMEMBERED = 256;

/** True when a statement run inline is to run again in the background (it changed nothing). */
function toBackground(err: unknown): boolean {
  return err instanceof OverBudget || err instanceof LockBusy;
}

/** A request waiting for another program's lock (`EngineSession`'s `#unlessLocked`). */
interface LockWait {
  /** When it fails with `STATEMENT_TIMEOUT`, and the deadline it runs with once sent again. */
  deadline: number;
  /** Its timeout in ms, as the error names it. */
  timeout: number;
  /** True once it woke the session; `error`: why it fails, or null (the lock is gone). */
  done: boolean;
  error: Error | null;
  timer: ReturnType<typeof setTimeout> | undefined;
}

/** One client's view of the engine; requests run in the order given. */
export class EngineSession implements HostedSession {
  /** Session number, used in messages to other clients. */
  readonly id: number;
  readonly #host: SessionHost;
  readonly #wake: () => void;
  readonly #handles: Handles;
  readonly #cursors = new Map<number, Cursor>();
  /**
   * Cursors on the writer ended from outside (their transaction ended, or
   * an interrupt stopped them) and not yet told: what their next `next`
   * throws, once (`null`: {@link cursorTxEnded}, made then). They are closed
   * and no longer count as open. The oldest are forgotten past
   * {@link ENDED_CURSORS_REMEMBERED} (their `next` then finds no cursor).
   */
  readonly #endedCursors = new Map<number, unknown>();
  #nextCursor = 1;
  #closed = false;
  /** Set when the engine ended this session's transaction: why. */
  #aborted: SqliteError | null = null;
  /**
   * Set when a COMMIT was refused because the engine had ended the
   * transaction: the ROLLBACK a client (or an ORM) sends after a failed
   * COMMIT then succeeds as a no-op instead of failing with "no transaction
   * is active", which would hide why the COMMIT failed.
   */
  #endedAtCommit = false;
  /** The statement of this session running in the background, if any. */
  #running: Running | null = null;
  /** True while a statement of this session runs in the background on the writer. */
  runningOnWriter = false;
  /**
   * The time limit (ms) of the request now being dispatched: a wait for the
   * writer ends with `STATEMENT_TIMEOUT` once it passes (when it comes
   * before the busy timeout).
   */
  statementMs = Infinity;
  /**
   * While `runningOnWriter`: whether the client's transaction was open when
   * that began (the connection cannot be asked while a statement steps on it).
   */
  #txWhileRunning = false;
  /**
   * True while the transaction's own COMMIT (or the RELEASE of its
   * outermost savepoint) runs in the background: a lease that ends then
   * (`#leaseEndedInCommit`) is reported once it is known whether it
   * committed.
   */
  #runningCommit = false;
  #leaseEndedInCommit: LeaseEnd | null = null;
  /** True while this session's last write waits in a group commit. */
  #awaitingCommit = false;
  readonly #onCommit: (error: SqliteError | null) => void;
  #grouping = false;
  /** True while a batch runs in a transaction of its own (not the client's). */
  #batchTx = false;
  /** True while a batch's statements run (in its own transaction, or a savepoint of the client's). */
  #batchRuns = false;
  /** True once a statement of the running batch touched a TEMP object. */
  #batchTemp = false;
  /** An item of the batch running changed the schema (DDL, a PRAGMA). */
  #batchSchema = false;
  /** True while a script or batch runs from the event loop, between its statements. */
  #scriptRuns = false;
  /** Why the script (or batch) running from the event loop is to stop, if it is. */
  #scriptStop: Error | null = null;
  /**
   * Writes run inside the client's transaction, counted over the session's
   * life (see {@link writeMark}); `#txWriteFloor` is the count when the last
   * transaction ended, so that writes of an ended one do not count.
   */
  #txWriteSeq = 0;
  #txWriteFloor = 0;
  /**
   * Cursors on the writer over a write (`INSERT ... RETURNING`, DDL), with
   * their statements: each `next` may write.
   */
  #writingCursors: Map<number, Prepared> | null = null;
  /** True once an item of the batch running inside the client's transaction wrote. */
  #batchWrote = false;
  /**
   * The request that met another program's lock before it began
   * ({@link ReadLocked}) waits for it here, as {@link BLOCKED}: woken when
   * the lock is gone (`error` null), its deadline passed or the wait failed
   * (`error` set), it is sent again and runs (or fails with `error`).
   */
  #lockWait: LockWait | null = null;
  /** True while this session's running read waits for another program's lock ({@link #readAfterLock}). */
  #readWaitsForLock = false;
  /** The deadline a request sent again after {@link #lockWait} keeps (see {@link #limits}). */
  #resumeDeadline: number | undefined = undefined;

  /** @internal */
  constructor(
    host: SessionHost,
    id: number,
    wake: () => void,
    onCommit: (error: SqliteError | null) => void,
  ) {
    this.#handles = new Handles(host.config.maxStatements, host.prepared);
    this.#host = host;
    this.id = id;
    this.#wake = wake;
    this.#onCommit = onCommit;
  }

  /**
   * True while writes of this session wait in a group commit: their replies
   * must be held until `onCommit` fires; meanwhile only further grouped
   * writes run, other requests get {@link BLOCKED}.
   */
  get awaitingCommit(): boolean {
    return this.#awaitingCommit;
  }

  /** A write of this session joined the group commit (GroupMember). @internal */
  joinedGroup(): void {
    this.#awaitingCommit = true;
  }

  /** The group commit holding this session's writes ended (GroupMember). @internal */
  groupDone(error: SqliteError | null): void {
    this.#awaitingCommit = false;
    if (!this.#closed) this.#onCommit(error);
  }

  /** Cursors this session holds open. */
  get cursorCount(): number {
    return this.#cursors.size;
  }

  /**
   * True while this session owns an open transaction, or one that the
   * engine ended and the client has not yet ended with ROLLBACK.
   */
  get inTransaction(): boolean {
    if (this.#aborted !== null) return true;
    const host = this.#host;
    // Holding the writer is not enough: an autocommit statement (or script)
    // holds it while it runs, a batch runs in a transaction of its own, and a
    // grouped write runs in the group's.
    if (!host.writer.owns(this) || this.#batchTx || host.group.isOpen()) return false;
    return this.runningOnWriter ? this.#txWhileRunning : host.writer.connection.inTransaction;
  }

  /** Runs a script of zero or more statements without parameters. */
  exec(sql: string, timeout?: number): Reply<null> {
    return this.#unlessLocked(timeout, () => this.#settled(this.#exec(sql, timeout)));
  }

  #exec(sql: string, timeout?: number): Reply<null> {
    if (this.#awaitingCommit) return BLOCKED;
    // The ROLLBACK ending a transaction the engine ended: the statements
    // after it run as the script's next ones.
    const rest = this.#endsEndedTx(sql, true);
    if (rest !== false && !hasStatement(sql, rest)) return null;
    const host = this.#host;
    this.statementMs = timeout ?? host.config.statementTimeout;
    if (!this.#acquireUnlessLocked()) return BLOCKED;
    // (Ended only now: a script sent again once the writer is free still
    // begins with that ROLLBACK, a no-op then as now.)
    if (rest !== false) {
      this.#aborted = null;
      this.#endedAtCommit = false;
    }
    this.#grouping = false; // (a script's writes are never grouped)
    const writer = host.writer.connection;
    let touchedTemp = false;
    let n = rest === false ? 0 : 1; // statements of the script begun
    let at = rest === false ? 0 : rest; // where the next statement starts in `sql`
    // The last statement begun outside a transaction (0: none): one that
    // makes SQLite roll back the transaction began there undoes the
    // statements from there on, not those before.
    let txFrom = 0;
    // Inserts of the script known fast by their shape (insertShape): each
    // statement is prepared afresh, and one not known fast runs in the
    // background (about 40 µs more), which would make a script of inserts
    // in a transaction (a dump, a seed) several times slower than its work.
    // (In autocommit each insert commits: that, and its fsync, stays in the
    // background.)
    const fastShapes = new Map<string, boolean>();
    // A call's timeout is one deadline for the whole script, as a batch's
    // (fixed when its first statement begins); without one, each statement
    // has --statement-timeout.
    let scriptDeadline: number | undefined;
    /**
     * Runs the script's next statement (`away`: in the background, where the
     * binding can); false when none is left.
     */
    const next = (away = false): boolean | Promise<boolean> => {
      let p: Prepared | null;
      try {
        p = writer.prepareOne(sql, at);
      } catch (err) {
        throw this.#inScript(err, n + 1, txFrom);
      }
      if (p === null) return false;
      if (scriptDeadline !== undefined && performance.now() >= scriptDeadline) {
        p.stmt.finalize();
        throw this.#inScript(scriptTimedOut(timeout!), n + 1, txFrom);
      }
      const shape = p.readOnly || !writer.inTransaction ? null : insertShape(sql, at, p.stmt.end);
      if (shape !== null) p.fast = fastShapes.get(shape) === true;
      at = p.stmt.end;
      n++;
      touchedTemp ||= p.touchesTemp;
      const prepared = p;
      const inTx = writer.inTransaction;
      if (!inTx) txFrom = n;
      // After the statement ran: did it end the transaction (COMMIT, END,
      // ROLLBACK, the outermost RELEASE, SQLite rolling it back)? Its cursors
      // end with it, before a later statement begins another. (A statement
      // that failed stops the script: the request's end sees to that case,
      // and the writer may still be stepping it in the background.)
      const ran = () => {
        // (Ended under the script, by its lease or a close: the writer may
        // be rolling back in the background, and the cursors end with it.)
        if (!inTx || this.#aborted !== null || this.#closed) return;
        if (!writer.inTransaction) this.#scriptEndedTx();
      };
      const done = () => {
        if (shape !== null && (fastShapes.has(shape) || fastShapes.size < MAX_FAST_SHAPES)) {
          fastShapes.set(shape, prepared.fast);
        }
        prepared.stmt.finalize();
        host.writer.ranOnWriter(prepared);
        this.#noteRan(prepared);
        // A transaction the script began is leased from its BEGIN
        // (--tx-timeout bounds its age while the script goes on); one it
        // ended is not.
        host.writer.touch(this);
      };
      let result: Outcome | Promise<Outcome>;
      try {
        const limits = this.#limits(timeout);
        if (timeout !== undefined) limits.deadline = scriptDeadline ??= deadlineOf(limits);
        result = away
          ? this.#background(p, NO_ARGS, limits, false, null)
          : this.#onWriter(p, NO_ARGS, limits, false);
      } catch (err) {
        done();
        throw this.#inScript(err, n, txFrom);
      }
      if (!(result instanceof Promise)) {
        done();
        ran();
        return true;
      }
      return result.then(() => {
        done();
        ran();
        return true;
      }, (err) => {
        done();
        throw this.#inScript(err, n, txFrom);
      });
    };
    const end = () => host.writer.afterWrite(this, touchedTemp);
    // Statements run inline for one slice; the rest of a longer script runs
    // from the event loop (#inTurns), so other clients are served between
    // its statements.
    const sliceEnd = performance.now() + INLINE_BUDGET_MS;
    let more: boolean | Promise<boolean>;
    try {
      do more = next(); while (more === true && performance.now() < sliceEnd);
    } catch (err) {
      end();
      throw err;
    }
    if (more === false) {
      end();
      return null;
    }
    return this.#host.track(
      // (Only before a statement: one asked to stop after its last one ran has run, whole.)
      this.#inTurns(more, next, () => {
        if (hasStatement(sql, at)) this.#stopScriptIfAsked(n, txFrom);
      }).then(() => null),
    ).finally(end);
  }

  /**
   * Runs the rest of a script (`exec`) or batch after its first slice, one
   * statement at a time through `next` (true while more follow; `away`: run
   * it in the background): each further slice of {@link INLINE_BUDGET_MS}
   * inline starts after a statement run in the background (FFI, while no
   * change feed captures: about 60 µs off the main thread) or a macrotask,
   * so other connections are served between the statements. The session
   * keeps the writer throughout (`runningOnWriter`: its transaction's lease
   * is not idle). Between two slices `stopIfAsked` throws when the session
   * closed (the client is gone), its transaction's lease ended, or the
   * client cancelled the request (see {@link #stopReason}).
   */
  async #inTurns(
    pending: true | Promise<boolean>,
    next: (away?: boolean) => boolean | Promise<boolean>,
    stopIfAsked: () => void,
  ): Promise<void> {
    const writer = this.#host.writer.connection;
    let more: boolean | Promise<boolean> = pending;
    this.#scriptStop = null;
    this.#scriptRuns = true;
    let ioTurnAt = performance.now() + IO_TURN_MS;
    try {
      for (;;) {
        if (more === true) {
          const away = writer.caps.background;
          // Without a step in the background, or when the last turn is
          // IO_TURN_MS old: a turn of the event loop that lets Deno poll the
          // sockets, which this chain of ready work would put off (io_turn.ts).
          if (!away || performance.now() >= ioTurnAt) {
            await this.#pauseOnWriter();
            stopIfAsked();
            ioTurnAt = performance.now() + IO_TURN_MS;
          }
          if (away) more = next(true);
        }
        if (more instanceof Promise) {
          more = await more;
          stopIfAsked();
        }
        const sliceEnd = performance.now() + INLINE_BUDGET_MS;
        while (more === true && performance.now() < sliceEnd) more = next();
        if (more === false) return;
      }
    } finally {
      this.#scriptRuns = false;
      this.#scriptStop = null;
    }
  }

  /**
   * Lets the event loop serve other connections, their sockets polled
   * ({@link SessionHost.ioTurn}), while this session holds the writer
   * between two statements of a script or batch.
   */
  async #pauseOnWriter(): Promise<void> {
    this.#txWhileRunning = this.#host.writer.connection.inTransaction;
    this.runningOnWriter = true;
    try {
      await this.#host.ioTurn();
    } finally {
      this.runningOnWriter = false;
      this.#txWhileRunning = false;
    }
  }

  /**
   * Between two statements of a script: throws when it is to stop (see
   * {@link #stopReason}), saying how many statements ran.
   */
  #stopScriptIfAsked(ran: number, txFrom: number): void {
    const stop = this.#stopReason();
    if (stop === null) return;
    if (stop === this.#aborted) throw stop;
    throw this.#stoppedAfter(stop, `before statement ${ran + 1} of the script`, ran, txFrom);
  }

  /**
   * A script stopped after `ran` statements: `ran` tells the client what
   * stays applied only when they committed (autocommit). Inside a
   * transaction they are in it, which a closing connection rolls back,
   * but for those before `txFrom`, the statement that began it, when the
   * script began it (see `#exec`).
   */
  #stoppedAfter(stop: Error, where: string, ran: number, txFrom = 0): AbortError {
    if (ran > 0 && this.inTransaction && txFrom > 1) {
      // The script began the transaction at statement `txFrom`: those
      // before it stay applied (committed, or ended by the script itself).
      const kept = txFrom - 1;
      return new AbortError(
        `${stop.message} (${where}; the ${kept} before statement ${txFrom}, which began the ` +
          `transaction, ran and stay applied; the ${ran - kept} from it on ran inside the open ` +
          "transaction, which is rolled back if the connection closes)",
        { cause: stop, ran: kept },
      );
    }
    if (ran > 0 && this.inTransaction) {
      return new AbortError(
        `${stop.message} (${where}; the ${ran} before it ran inside the open transaction, ` +
          "which is rolled back if the connection closes)",
        { cause: stop },
      );
    }
    return new AbortError(`${stop.message} (${where}; the ${ran} before it ran)`, {
      cause: stop,
      ran,
    });
  }

  /**
   * Why a script or batch running from the event loop is to stop before its
   * next statement, or `null`: its transaction's lease ended (rolled back
   * now), the session closed, the client cancelled the request.
   */
  #stopReason(): Error | null {
    if (this.#aborted !== null) {
      this.#host.writer.abort(this);
      return this.#aborted;
    }
    if (this.#closed) return new SqliteError(ErrorCode.ConnectionClosed, "Connection closed");
    return this.#scriptStop;
  }

  /**
   * The error of statement `n` of a script: from the second on, it says
   * which, and that the statements before it ran (as in SQLite, a script
   * stops at its first error), unless they were rolled back with it: then
   * those before `txFrom`, the statement that began the transaction, if the
   * script began it.
   */
  #inScript(err: unknown, n: number, txFrom: number): unknown {
    if (n < 2) return err;
    if (err instanceof AbortError) {
      // Stopped while it ran (cancel, shutdown): the statements before it stay
      // applied unless its transaction was rolled back with it.
      if (this.#aborted !== null) return err;
      return this.#stoppedAfter(err, `statement ${n} of the script`, n - 1, txFrom);
    }
    if (!(err instanceof SqliteError)) return err;
    const before = this.#aborted === null
      ? `; the ${n - 1} before it ran`
      : txFrom > 1
      ? `; the ${txFrom - 1} before statement ${txFrom}, which began the transaction, ran`
      : "";
    return new SqliteError(
      err.code,
      `${err.message} (statement ${n} of the script${before})`,
      err.sqliteCode,
      { cause: err, mayHaveRun: err.mayHaveRun },
    );
  }

  /**
   * Runs one statement and returns its columns and rows ({@link QueryReply});
   * with `first`, its first row alone (stepped once).
   */
  query(
    sql: string | number,
    params: unknown,
    timeout?: number,
    first = false,
  ): Reply<QueryReply> {
    return this.#unlessLocked(timeout, () => {
      const limits = this.#limits(timeout);
      if (first) limits.maxRows = 1;
      return this.#settled(
        this.#statement(sql, params, limits, "encoded", (o) => [o.columns, o.rows]),
      );
    });
  }

  /** Runs one statement and returns `[changes, lastInsertRowid]`. */
  run(sql: string | number, params: unknown, timeout?: number): Reply<RunPayload> {
    return this.#unlessLocked(timeout, () => {
      const limits = this.#limits(timeout);
      return this.#settled(
        this.#statement(sql, params, limits, false, (o) => [o.changes, o.lastInsertRowid]),
      );
    });
  }

  /**
   * Runs `attempt`, the start of a request; when it meets another program's
   * lock before anything of it ran ({@link ReadLocked}: a read's schema
   * check, or its reader's, on a database not in WAL mode), the request
   * waits for the lock in the background as {@link BLOCKED}, up to the busy
   * timeout and its deadline, while the server answers its other clients;
   * woken, it is sent again (here), keeping its deadline.
   */
  #unlessLocked<T>(timeout: number | undefined, attempt: () => Reply<T>): Reply<T> {
    const waited = this.#lockWait;
    if (waited !== null) {
      if (!waited.done) return BLOCKED;
      this.#lockWait = null;
      if (waited.error !== null) throw waited.error;
    }
    this.#resumeDeadline = waited?.deadline;
    try {
      return attempt();
    } catch (err) {
      if (!(err instanceof ReadLocked)) throw err;
    } finally {
      this.#resumeDeadline = undefined;
    }
    const ms = waited?.timeout ?? timeout ?? this.#host.config.statementTimeout;
    const deadline = waited?.deadline ?? performance.now() + ms;
    const wait: LockWait = { deadline, timeout: ms, error: null, done: false, timer: undefined };
    const end = (error: Error | null): void => {
      if (wait.done || this.#lockWait !== wait) return;
      clearTimeout(wait.timer);
      wait.done = true;
      wait.error = error;
      this.wake();
    };
    wait.timer = setTimeout(
      () => end(waitedForLock(ms)),
      Math.max(0, deadline - performance.now()),
    );
    this.#lockWait = wait;
    this.#host.readers.waitForLock().then(() => end(null), (err) => end(err));
    return BLOCKED;
  }

  /**
   * True while this session's request, answered {@link BLOCKED}, waits for
   * another program's lock (`#unlessLocked`), not for the writer.
   */
  get waitsForLock(): boolean {
    return this.#lockWait !== null && !this.#lockWait.done;
  }

  /**
   * True while a request of this session waits for another program's lock
   * before it begins: answered {@link BLOCKED} ({@link waitsForLock}), or
   * running, a read met by the lock as a reader was lent to it (stats'
   * `lockWaiting`).
   */
  get waitingForLock(): boolean {
    return this.waitsForLock || this.#readWaitsForLock;
  }

  /** Forgets the request waiting for another program's lock (cancelled, or its session closed). */
  #dropLockWait(): void {
    if (this.#lockWait !== null) clearTimeout(this.#lockWait.timer);
    this.#lockWait = null;
  }

  /**
   * A request that went to the background finished: if the session closed
   * meanwhile, roll back and give the writer up only now, after the request
   * cleaned up after itself.
   */
  #settled<T>(reply: Reply<T>): Reply<T> {
    if (!(reply instanceof Promise)) return reply;
    return reply.finally(() => {
      if (this.#closed) this.#host.writer.abort(this);
    });
  }

  /** Runs one statement on the connection the rules pick, shaping its outcome. */
  #statement<T>(
    sql: string | number,
    params: unknown,
    limits: RunLimits,
    wantRows: WantRows,
    shape: (o: Outcome) => T,
  ): Reply<T> {
    const text = this.#sqlOf(sql);
    // (run and query alike, by SQL text or by handle; openCursor asks before.)
    if (this.#endsEndedTx(text) !== false) return shape(endedNoOp());
    const args = bindArgs(params);
    const p = this.#route(text, true);
    if (p === BLOCKED) return BLOCKED;
    const host = this.#host;
    if (!p.onWriter) return then(this.#read(p, text, args, limits, wantRows), shape);
    if (this.#awaitingCommit && !this.#grouping) {
      return this.#readInGroup(p, args, limits, wantRows, shape);
    }
    // A write's RETURNING rows must fit the reply before its changes stay
    // (a grouped write is undone by the group, as when it fails).
    if (wantRows === "encoded" && !p.readOnly) limits.reply = this.#replyRoom(!this.#grouping);
    if (this.#grouping) {
      // The first write of a group runs under the inline budget: should a
      // write known to be fast turn slow, SQLite stops and undoes it (the
      // group holds nothing else yet) and it runs again, alone, in the
      // background. A later member cannot be stopped that way: SQLite would
      // roll back the whole group with it.
      const alone = !host.group.isOpen() && p.conn.caps.interrupt;
      const budget = alone ? INLINE_BUDGET_MS : Infinity;
      // Busy: the group's own BEGIN or SAVEPOINT, prepared anew, must not
      // evict this statement from the cache (finalizing it) before it runs.
      p.busy++;
      try {
        return host.group.run(
          this,
          () => shape(this.#inlineTimed(p, args, limits, wantRows, budget)),
        );
      } catch (err) {
        if (!toBackground(err)) throw err;
        // Met another process's lock: it waits for it alone, in the background.
        if (err instanceof LockBusy) p.fast = false;
      } finally {
        release(p);
      }
      return this.#statement(text, params, limits, wantRows, shape); // no longer fast
    }
    let result: Outcome | Promise<Outcome>;
    const after = () => {
      host.writer.ranOnWriter(p);
      this.#noteRan(p);
      host.writer.afterWrite(this, p.touchesTemp);
    };
    try {
      result = this.#onWriter(p, args, limits, wantRows);
    } catch (err) {
      after();
      throw err;
    }
    if (!(result instanceof Promise)) {
      after();
      return shape(result);
    }
    return result.then((o) => {
      after();
      return shape(o);
    }, (err) => {
      after();
      throw err;
    });
  }

  /**
   * A read outside any transaction, on a reader: inline under the budget,
   * then (if it ran past it) again in the background on a reader of its own.
   * A read that once ran far past the budget inline (one long SQL function
   * call, which SQLite's progress handler cannot interrupt) goes straight to
   * the background from then on, until a run there is within the budget (so
   * a pause of the process that happened to fall in one run costs one run).
   */
  #read(
    p: Prepared,
    sql: string,
    args: BindArgs,
    limits: RunLimits,
    wantRows: WantRows,
  ): Outcome | Promise<Outcome> {
    if (!p.conn.caps.background) return runInline(p, args, limits, wantRows);
    if (!p.unstoppable) {
      const start = performance.now();
      try {
        const o = runInline(p, args, limits, wantRows, INLINE_BUDGET_MS);
        if (performance.now() - start > UNSTOPPABLE_MS) p.unstoppable = true;
        return o;
      } catch (err) {
        if (performance.now() - start > UNSTOPPABLE_MS) p.unstoppable = true;
        if (!toBackground(err)) throw err;
      }
    }
    const conn = this.#host.readers.borrow();
    if (conn !== null) return this.#readOn(conn, p, sql, args, limits, wantRows);
    return this.#waitForReader(p, sql, args, limits, wantRows);
  }

  /** Runs the read `p` in the background on `conn`, a reader lent to it alone. */
  #readOn(
    conn: Connection,
    p: Prepared,
    sql: string,
    args: BindArgs,
    limits: RunLimits,
    wantRows: WantRows,
  ): Promise<Outcome> {
    const readers = this.#host.readers;
    let own: Prepared;
    try {
      own = conn.prepare(sql);
    } catch (err) {
      readers.giveBack(conn);
      throw err;
    }
    const done = this.#background(own, args, limits, wantRows, () => readers.giveBack(conn));
    if (!p.unstoppable) return done;
    const start = performance.now();
    return done.finally(() => {
      if (performance.now() - start < INLINE_BUDGET_MS) p.unstoppable = false;
    });
  }

  /**
   * The most reads run in the background already (`maxBackgroundReads`):
   * this one waits in line for a reader, as this session's running request
   * (a cancel or the session closing takes it out of line, `ABORTED`), up to
   * its deadline (`STATEMENT_TIMEOUT`); either way nothing of it ran.
   */
  #waitForReader(
    p: Prepared,
    sql: string,
    args: BindArgs,
    limits: RunLimits,
    wantRows: WantRows,
  ): Promise<Outcome> {
    const { promise, resolve, reject } = Promise.withResolvers<Outcome>();
    // (`timer` is set below, before anything can call `settle`.)
    const settle = (): void => {
      clearTimeout(timer);
      this.#running = null;
    };
    const leave = this.#host.readers.wait({
      take: (conn) => {
        settle();
        try {
          resolve(this.#readOn(conn, p, sql, args, limits, wantRows));
        } catch (err) {
          reject(err);
        }
      },
      fail: (err) => {
        settle();
        // Another program's lock met as the reader was renewed for it: the
        // read waits for the lock (in the background), then asks again.
        if (err instanceof ReadLocked) resolve(this.#readAfterLock(p, sql, args, limits, wantRows));
        else reject(err);
      },
    });
    const stop = (err: Error): void => {
      leave();
      settle();
      reject(err);
    };
    const timer = setTimeout(
      () => stop(waitedForReader(limits, this.#host.readers.max)),
      Math.max(0, deadlineOf(limits) - performance.now()),
    );
    this.#running = {
      done: promise,
      cancel: (reason) => stop(notRunWaiting(reason)),
      interruptedBy: null,
    };
    return this.#host.track(promise);
  }

  /**
   * A read that met another program's lock as a reader was lent to it
   * ({@link ReadLocked}): waits for the lock in the background, as this
   * session's running request (a cancel or the session closing ends the
   * wait, `ABORTED`), up to its deadline (`STATEMENT_TIMEOUT`) and the busy
   * timeout (`SQLITE_BUSY`), then runs in the background on a reader; either
   * way nothing of it ran before.
   */
  #readAfterLock(
    p: Prepared,
    sql: string,
    args: BindArgs,
    limits: RunLimits,
    wantRows: WantRows,
  ): Promise<Outcome> {
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    let settled = false;
    const settle = (): boolean => {
      if (settled) return false;
      settled = true;
      clearTimeout(timer);
      this.#running = null;
      this.#readWaitsForLock = false;
      return true;
    };
    this.#readWaitsForLock = true;
    const timer = setTimeout(
      () => settle() && reject(waitedForLock(limits.timeout)),
      Math.max(0, deadlineOf(limits) - performance.now()),
    );
    this.#host.readers.waitForLock().then(
      () => settle() && resolve(),
      (err) => settle() && reject(err),
    );
    const done = promise.then(() => {
      let conn: Connection | null;
      try {
        conn = this.#host.readers.borrow();
      } catch (err) {
        if (err instanceof ReadLocked) return this.#readAfterLock(p, sql, args, limits, wantRows);
        throw err;
      }
      if (conn !== null) return this.#readOn(conn, p, sql, args, limits, wantRows);
      return this.#waitForReader(p, sql, args, limits, wantRows);
    });
    this.#running = {
      done,
      cancel: (reason) => settle() && reject(notRunWaiting(reason, true)),
      interruptedBy: null,
    };
    return this.#host.track(done);
  }

  /**
   * A read behind this session's grouped write, in the open group's
   * transaction on the writer (`#route`): its reply is held with the
   * write's, so the read waits for no fsync before it runs, and fails with
   * the group should the COMMIT fail. It runs under the inline budget; past
   * it, it is stopped (a read changes nothing, the group is left intact) and
   * waits for the commit, to run again as any read.
   */
  #readInGroup<T>(
    p: Prepared,
    args: BindArgs,
    limits: RunLimits,
    wantRows: WantRows,
    shape: (o: Outcome) => T,
  ): T | typeof BLOCKED {
    try {
      return shape(runInline(p, args, limits, wantRows, INLINE_BUDGET_MS));
    } catch (err) {
      if (!(err instanceof OverBudget)) throw err;
    }
    return BLOCKED;
  }

  /**
   * A statement on the writer, which this session holds: inline when it
   * cannot run long (or the binding cannot run it elsewhere), else in the
   * background.
   */
  #onWriter(
    p: Prepared,
    args: BindArgs,
    limits: RunLimits,
    wantRows: WantRows,
  ): Outcome | Promise<Outcome> {
    if (!p.conn.caps.background) return this.#inlineTimed(p, args, limits, wantRows);
    if (p.txOp === "COMMIT") return this.#background(p, args, limits, wantRows, null);
    if (p.txOp !== null) {
      // BEGIN IMMEDIATE may meet another process's lock: it waits for it
      // in the background.
      try {
        return runInline(p, args, limits, wantRows);
      } catch (err) {
        if (!(err instanceof LockBusy)) throw err;
      }
      return this.#background(p, args, limits, wantRows, null);
    }
    if (p.readOnly) {
      // A read can end the transaction too: SQLite rolls it back when the
      // read fails with a full device or an I/O error (spilling the
      // transaction's pages from a full cache), or running out of memory.
      const inTx = !this.#grouping && p.conn.inTransaction;
      try {
        return runInline(p, args, limits, wantRows, INLINE_BUDGET_MS);
      } catch (err) {
        if (!toBackground(err)) throw this.#noteAbort(err, p, inTx);
      }
      return this.#background(p, args, limits, wantRows, null);
    }
    if (!p.fast && !p.conn.inTransaction && changeLogOf(p.conn) !== undefined) {
      // While change feeds capture, a write stepped in the background pays a
      // round trip to the main thread for each row it changes (the hooks
      // run there): in autocommit one whose speed is not known yet is tried
      // inline under the budget first (#inlineTimed unmarks it if slow).
      p.fast = true;
    }
    if (p.fast) {
      // In autocommit a stopped write is undone: one that turned slow goes
      // to the background (inside a transaction it could not be stopped so).
      // A write that met another process's lock changed nothing: it waits
      // for the lock in the background, in a transaction too.
      try {
        const budget = p.conn.inTransaction ? Infinity : INLINE_BUDGET_MS;
        return this.#inlineTimed(p, args, limits, wantRows, budget);
      } catch (err) {
        if (!toBackground(err)) throw err;
      }
      return this.#background(p, args, limits, wantRows, null);
    }
    const start = performance.now();
    // Failing quickly (a constraint, say) counts as fast too.
    return this.#background(p, args, limits, wantRows, null).finally(() => {
      p.fast = performance.now() - start < INLINE_BUDGET_MS;
    });
  }

  /**
   * Inline with the deadline (and a budget, for a write that can be undone
   * when stopped); a statement that ran long is not fast any more.
   */
  #inlineTimed(
    p: Prepared,
    args: BindArgs,
    limits: RunLimits,
    wantRows: WantRows,
    budget = Infinity,
  ): Outcome {
    const start = performance.now();
    // A group commit's transaction is not the client's: stopping a grouped
    // write fails the group's writes, but leaves the session usable.
    const inTx = !this.#grouping && p.onWriter && p.conn.inTransaction;
    try {
      return runInline(p, args, limits, wantRows, budget);
    } catch (err) {
      let byServer = false;
      if (inTx && writes(p) && p.conn.inTransaction && isTimeout(err) && !this.#batchRuns) {
        // A binding that cannot interrupt undid the late write alone (its
        // savepoint): end the transaction as an interrupted write ends it.
        // (A batch's item is undone with the batch, which leaves the
        // client's transaction open.)
        try {
          p.conn.runOwn("ROLLBACK");
          byServer = true;
        } catch {
          // (Ended already.)
        }
      }
      throw this.#noteAbort(err, p, inTx, byServer);
    } finally {
      if (performance.now() - start >= INLINE_BUDGET_MS) p.fast = false;
    }
  }

  /** Runs `p` in the background as this session's running statement. */
  #background(
    p: Prepared,
    args: BindArgs,
    limits: RunLimits,
    wantRows: WantRows,
    release: (() => void) | null,
  ): Promise<Outcome> {
    const inTx = p.onWriter && p.conn.inTransaction;
    if (p.onWriter) this.#txWhileRunning = inTx;
    const commits = inTx && endsTx(p);
    this.#runningCommit = commits;
    const running = runInBackground(p, args, limits, wantRows);
    this.#running = running;
    this.runningOnWriter = p.onWriter;
    return this.#host.track(
      running.done.then(
        (o) => {
          // The engine ended the transaction while its own COMMIT (or the
          // RELEASE of its outermost savepoint) ran, which nothing stops
          // once it runs (its lease, or a cancel of a write of it that
          // had already run): it committed, as the client asked. The
          // writer is given back as after any COMMIT, not rolled back.
          if (this.#aborted !== null && commits && !p.conn.inTransaction) {
            this.#aborted = null;
          }
          return o;
        },
        (err) => {
          throw this.#noteAbort(err, p, inTx);
        },
      ).finally(() => {
        this.#running = null;
        this.runningOnWriter = false;
        this.#txWhileRunning = false;
        this.#runningCommit = false;
        const lease = this.#leaseEndedInCommit;
        this.#leaseEndedInCommit = null;
        // (Committed: the lease's end changed nothing, and is not reported.)
        if (lease !== null && this.#aborted !== null) this.#host.leaseEnded(this, lease);
        if (p.onWriter) this.#endInterruptedCursors(running.interruptedBy);
        release?.();
        // Closed, or the transaction's lease ran out, while it ran: roll
        // back and give the writer up now that the connection is free.
        if ((this.#closed || this.#aborted !== null) && p.onWriter) this.#host.writer.abort(this);
      }),
    );
  }

  /**
   * A statement failed inside a transaction, and SQLite ended the
   * transaction around it: a write stopped at its deadline or cancelled,
   * `ON CONFLICT ROLLBACK`, `RAISE(ROLLBACK)`, an I/O error. Tell the
   * client, and refuse further statements until it sends ROLLBACK, so that
   * none meant for the transaction runs in autocommit.
   */
  #noteAbort(err: unknown, p: Prepared, wasInTx: boolean, byServer = false): unknown {
    // An autocommit write commits at its last step: an error there may have
    // come once the commit was written. (A grouped write commits later, with
    // its group; a batch's statement with the batch.)
    if (
      !wasInTx && !this.#grouping && !this.#batchTx && writes(p) && commitMayHaveWritten(err)
    ) {
      return commitOutcomeUnknown(err as SqliteError, "the write");
    }
    // A batch's own transaction ending fails just the batch.
    if (!wasInTx || this.#batchTx) return err;
    // The engine ended the transaction meanwhile (its lease ran out) and
    // stopped the statement (a read leaves it to be rolled back after).
    if (this.#aborted !== null) return this.#aborted;
    if (p.conn.inTransaction) return err;
    if (p.txOp !== null && p.txOp !== "ROLLBACK TO") {
      // The client's own COMMIT (or RELEASE of its outermost savepoint)
      // failed, and SQLite rolled the transaction back (a full disk, an
      // I/O error): it has ended, as the client asked, but undone (or, after
      // some I/O errors, maybe written). The ROLLBACK that clients send
      // after a failed COMMIT is a no-op.
      this.#endedAtCommit = true;
      return commitFailed(err);
    }
    this.#aborted = txAborted(err);
    return txRolledBack(err, byServer ? "the server" : "SQLite");
  }

  /**
   * A statement on the writer ended after `sqlite3_interrupt` (`by`: its
   * deadline, a cancel) or with its transaction ending under it (the lease,
   * close): the interrupt stopped this session's cursors on the writer too,
   * and stays pending on the connection until no statement is active there
   * (SQLite clears it only when a statement starts while none runs). The
   * cursors are ended now (finalized, so the next statement and the
   * ROLLBACK run), and their next `next` says why.
   */
  #endInterruptedCursors(by: Error | null): void {
    let txEnded = this.#aborted !== null || this.#closed;
    if (!txEnded) {
      try {
        txEnded = !this.#host.writer.connection.inTransaction;
      } catch (err) {
        // Its step still runs (the statement was stopped while it stepped):
        // the cursors end when the writer is given back.
        if (isBusyInBackground(err)) return;
        throw err;
      }
    }
    if (by === null && !txEnded) return;
    this.#endWriterCursors(txEnded || by === null ? null : by);
  }

  /**
   * Ends this session's cursors on the writer (`interruptedBy`: stopped by
   * the interrupt of another statement, which ended with that error; `null`:
   * their transaction ended): closed, they no longer count as open, and
   * their next `next` says why (the error of a step that failed before, if
   * one did: the first reason).
   */
  #endWriterCursors(interruptedBy: Error | null): void {
    const ended = this.#endedCursors;
    for (const [id, c] of this.#cursors) {
      if (!c.onWriter) continue;
      const why = c.ended ??
        (interruptedBy !== null
          ? cursorInterrupted(id, interruptedBy)
          : this.#aborted !== null
          ? cursorTxEnded(id, this.#aborted)
          : null);
      c.close();
      this.#cursors.delete(id);
      this.#writingCursors?.delete(id);
      if (ended.size >= ENDED_CURSORS_REMEMBERED) ended.delete(ended.keys().next().value!);
      ended.set(id, why);
    }
  }

  /** What the next `next` of cursor `id`, ended from outside, throws. */
  #endedError(id: number, why: unknown): unknown {
    return why === null ? cursorTxEnded(id) : why;
  }

  /**
   * Gives up waiting for the writer: the blocked request was cancelled, or
   * was answered when tried again without needing it (a read that waited
   * while TEMP tables existed, say, runs on a reader once they are gone).
   */
  stopWaiting(): void {
    this.#host.writer.leaveQueue(this);
    this.#dropLockWait();
  }

  /**
   * Stops this session's statement running in the background, if any, or
   * the background step of its cursor (which is closed: its pending `next`
   * fails with `reason`); a script or batch running from the event loop
   * stops before its next statement.
   */
  cancel(reason: Error): void {
    this.#running?.cancel(reason);
    if (this.#scriptRuns) this.#scriptStop ??= reason;
    for (const [id, c] of this.#cursors) {
      if (!c.cancel(reason)) continue;
      this.#cursors.delete(id);
      this.#writingCursors?.delete(id);
    }
  }

  /**
   * A mark for {@link wroteInTransactionSince}: take it before a request
   * runs. (It counts the writes run inside the client's transaction.)
   */
  get writeMark(): number {
    return this.#txWriteSeq;
  }

  /**
   * True when a statement that writes (not a read, not transaction control)
   * ran inside the client's explicit transaction since `mark` was taken,
   * and that transaction is still open (neither ended by the client nor
   * by the engine). A batch inside the transaction counts when one of its
   * items wrote (also when a cancel then stopped it, undoing its
   * savepoint); a cursor over a write counts for each `next`.
   */
  wroteInTransactionSince(mark: number): boolean {
    return this.#aborted === null && !this.#closed &&
      this.#txWriteSeq > Math.max(mark, this.#txWriteFloor) && this.inTransaction;
  }

  /**
   * True when a request the client cancelled before it ran would (or may)
   * have written inside the client's open transaction, had it run now: a
   * statement SQLite does not call read-only (transaction control aside),
   * a script or batch holding one, the `next` of a cursor over a write.
   * A statement that would fail to prepare (or be refused) writes nothing;
   * a later statement of a script that cannot be prepared yet counts as a
   * write. False outside the client's transaction, or once it ended.
   */
  wouldWrite(planned: Planned): boolean {
    const host = this.#host;
    if (this.#closed || this.#aborted !== null || !this.inTransaction) return false;
    if (!host.writer.owns(this)) return false;
    if ("cursor" in planned) return this.#writingCursors?.has(planned.cursor) === true;
    const conn = host.writer.connection;
    if ("statement" in planned) {
      const s = planned.statement;
      if (typeof s === "number" && !this.#handles.has(s)) return false;
      try {
        return writes(conn.prepare(this.#sqlOf(s)));
      } catch {
        return false; // It would have failed, unrun.
      }
    }
    const texts = "script" in planned ? [planned.script] : planned.statements;
    for (const sql of texts) {
      for (let at = 0, first = true;; first = false) {
        let p: Prepared | null;
        try {
          p = conn.prepareOne(sql, at);
        } catch {
          if (first) break; // It fails there, before anything of it ran.
          return true; // (It may name what an earlier statement creates.)
        }
        if (p === null) break;
        at = p.stmt.end;
        const wrote = writes(p);
        p.stmt.finalize();
        if (wrote) return true;
      }
    }
    return false;
  }

  /**
   * The client cancelled a request that had already written inside its
   * open transaction (the write finished before the cancel came, or ran
   * where it could not be stopped): the transaction ends as an interrupted
   * write ends it. It is rolled back now (or, while a statement of this
   * session runs on the writer, once that is stopped), and every request
   * fails with `TX_ABORTED` naming `reason` until the client sends ROLLBACK
   * (a no-op then). Returns the error for the cancelled request's own reply,
   * or `null` when no transaction was open to end.
   */
  cancelWrites(reason: AbortError): AbortError | null {
    if (this.#closed || this.#aborted !== null || !this.inTransaction) return null;
    this.#aborted = txAborted(reason);
    this.#txWriteFloor = this.#txWriteSeq;
    this.#host.writer.abort(this);
    return cancelledAfterWrite(reason);
  }

  /**
   * After statement `p` ran (or failed) on the writer: counts it when it
   * wrote inside the client's transaction, or notes that the transaction
   * ended (see {@link wroteInTransactionSince}).
   */
  #noteRan(p: Prepared): void {
    if (!this.#host.writer.owns(this)) return;
    if (!this.#host.writer.connection.inTransaction) {
      this.#txWriteFloor = this.#txWriteSeq;
    } else if (writes(p) && !this.#batchTx && !this.#grouping) {
      this.#txWriteSeq++;
    }
  }

  /**
   * Opens a cursor over one statement's rows.
   *
   * @returns `[cursorId, columns]`.
   */
  openCursor(
    sql: string | number,
    params: unknown,
    timeout?: number,
  ): Reply<[number, string[]]> {
    return this.#unlessLocked(timeout, () => this.#openCursor(sql, params, timeout));
  }

  #openCursor(
    sql: string | number,
    params: unknown,
    timeout?: number,
  ): Reply<[number, string[]]> {
    if (this.#awaitingCommit) return BLOCKED;
    const host = this.#host;
    if (this.#cursors.size >= host.config.maxCursors) {
      throw new SqliteError(
        ErrorCode.BadRequest,
        `Too many open cursors: ${host.config.maxCursors} per connection; close one first`,
      );
    }
    const text = this.#sqlOf(sql);
    const ms = this.statementMs = timeout ?? host.config.statementTimeout;
    // The ROLLBACK ending a transaction the engine ended: a cursor with no rows.
    if (this.#endsEndedTx(text) !== false) return this.#addCursor(new Cursor([], [], ms, () => {}));
    const args = bindArgs(params);
    let cursor: Cursor | null = null;
    /** Why the rows cannot stream, when they are materialised instead. */
    let buffered = "it is a write, which runs to completion outside a transaction";
    if (isDataVersionRead(text)) {
      // Its one row comes from the shared reader, wherever the session's
      // other statements run (#route).
      buffered = "the shared reader answers PRAGMA data_version";
    } else if (host.writer.owns(this)) {
      // Inside the transaction, on the writer: the cursor is closed when the
      // transaction ends (writerReleased), as PostgreSQL does.
      host.writer.touch(this);
      host.writer.acquire(this); // (its schema up to date)
      // Its columns are sent before it steps: a schema another program
      // changed is read first, on every binding.
      host.writer.currentSchema();
      const p = host.writer.connection.prepareUncached(text);
      if (p.txOp !== null) {
        // Transaction control (no rows) runs now, as any statement does
        // (below): a COMMIT or ROLLBACK stepped by the cursor's `next`
        // would end the transaction without giving the writer back.
        p.stmt.finalize();
        buffered = "it controls the transaction";
      } else {
        cursor = this.#liveCursor(p, args, ms, () => {});
        if (writes(p)) {
          // Its steps write (each `next`): counted as writes of the transaction.
          const opened = this.#addCursor(cursor);
          (this.#writingCursors ??= new Map()).set(opened[0], p);
          return opened;
        }
      }
    } else {
      // While TEMP objects exist every statement runs on the writer, which
      // a cursor outside a transaction cannot hold; `:memory:` has no readers.
      const temp = host.writer.hasTemp();
      const conn = temp ? null : host.readers.borrowForCursor();
      if (conn === null) {
        buffered = temp
          ? "TEMP tables exist, so every statement runs on the shared writer"
          : "a :memory: database has no reader connections";
      }
      if (conn !== null) {
        let p: Prepared | null = null;
        const attached = host.writer.hasAttached();
        try {
          p = conn.prepareUncached(text);
        } catch (err) {
          if (attached && lacksOnReader(err)) {
            buffered = "it uses a database attached to the writer alone";
          } else if (!(err instanceof WriterDecides)) {
            host.readers.giveBackCursor(conn);
            throw err;
          }
        }
        if (p !== null && p.readOnly && p.readsPragma && attached) {
          // (As #route: the writer answers a PRAGMA read while databases are attached.)
          buffered = "it reads a PRAGMA while databases are attached to the writer alone";
          p.stmt.finalize();
          p = null;
        }
        if (p === null) {
          host.readers.giveBackCursor(conn);
        } else if (p.readOnly) {
          cursor = this.#liveCursor(p, args, ms, () => host.readers.giveBackCursor(conn));
        } else {
          p.stmt.finalize();
          host.readers.giveBackCursor(conn);
        }
      }
    }
    if (cursor !== null) return this.#addCursor(cursor);
    // A write (e.g. INSERT ... RETURNING) outside a transaction, or no
    // connection to stream from: run it to completion on the writer, then
    // stream the materialised rows (up to --max-result-bytes).
    // A read that fails part way yields the rows it stepped, then its
    // error, as a streaming cursor does; a write that fails is undone
    // (SQLite's error, or ours: run.ts isUndone), so none of its rows is.
    // Buffered rows count against the bytes all such cursors may hold (a
    // room of at most --max-result-bytes, reserved now, the rest given back
    // once the rows are in, the rows' bytes when the cursor ends).
    const room = host.readers.reserveBuffered();
    const buffer = (columns: string[], rows: SqlValue[][], err: unknown): Cursor => {
      const kept = rowsBytes(rows);
      host.readers.releaseBuffered(room.bytes - kept, false);
      const giveBack = () => host.readers.releaseBuffered(kept, true);
      return new Cursor(columns, rows, ms, giveBack, err, this.#chunkBytes);
    };
    const explain = (err: unknown): [number, string[]] => {
      const before = rowsBefore(err);
      if (before === undefined) {
        host.readers.releaseBuffered(room.bytes, true);
        const { maxResultBytes } = host.config;
        throw bufferedFull(
          err,
          room,
          maxResultBytes,
          `${buffered}, so its rows are buffered (open the cursor inside a transaction to stream them from the writer)`,
        ) ??
          cannotStream(err, buffered, maxResultBytes);
      }
      return this.#addCursor(buffer(before.columns, before.rows, err));
    };
    const limits = this.#limits(timeout);
    limits.maxBytes = room.bytes;
    limits.partial = true;
    let done: Reply<Cursor>;
    try {
      done = this.#statement(
        text,
        args as unknown,
        limits,
        true,
        (o) => buffer(o.columns, rowArrays(o.rows), null),
      );
    } catch (err) {
      if (err instanceof ReadLocked) {
        // (It waits for the lock, and the request is sent again: see #unlessLocked.)
        host.readers.releaseBuffered(room.bytes, true);
        throw err;
      }
      return explain(err);
    }
    if (done === BLOCKED) {
      host.readers.releaseBuffered(room.bytes, true);
      return BLOCKED;
    }
    return this.#settled(then(done, (c) => this.#addCursor(c), explain));
  }

  #addCursor(cursor: Cursor): [number, string[]] {
    const id = this.#nextCursor++;
    this.#cursors.set(id, cursor);
    return [id, cursor.columns];
  }

  /** Returns the next chunk of a cursor: `[rows, done]`. */
  nextCursor(id: number): Reply<[unknown[][], boolean]> {
    if (this.#awaitingCommit) return BLOCKED;
    const ended = this.#endedCursors.get(id);
    if (ended !== undefined) {
      this.#endedCursors.delete(id);
      this.#host.writer.touch(this);
      throw this.#endedError(id, ended);
    }
    const cursor = this.#cursor(id);
    this.#host.writer.touch(this);
    const writing = this.#writingCursors?.get(id);
    const stepped = (): void => {
      if (writing === undefined) return;
      if (this.#host.writer.owns(this) && this.#host.writer.connection.inTransaction) {
        this.#txWriteSeq++;
        // What it changed counts as a statement's would: DDL voids the
        // writer's cached statements (node:sqlite would read them with the
        // old row width), TEMP objects it made are every client's.
        this.#host.writer.ranOnWriter(writing);
        if (writing.touchesTemp) this.#host.writer.afterWrite(this, true);
      }
      if (!this.#cursors.has(id)) this.#writingCursors?.delete(id);
    };
    const forget = (chunk: [unknown[][], boolean]) => {
      if (chunk[1]) this.#cursors.delete(id);
      stepped();
      return chunk;
    };
    // A cursor on the writer steps in the background as a statement there
    // does (a slow step must not hold every client, and its deadline and a
    // cancel stop it there).
    const writer = this.#host.writer.connection;
    const inBackground = cursor.onWriter && writer.caps.background;
    const inTx = inBackground && writer.inTransaction;
    let chunk;
    try {
      chunk = cursor.next(inBackground);
      if (inBackground && chunk instanceof Promise) {
        chunk = this.#cursorRunsOnWriter(id, cursor, inTx, chunk);
      }
    } catch (err) {
      if (!(err instanceof LockBusy)) {
        this.#cursors.delete(id);
        stepped();
        throw this.#cursorFailed(cursor, err);
      }
      // A write's first step met another process's lock (nothing changed).
      chunk = this.#cursorWaitsForLock(id, cursor);
    }
    if (!(chunk instanceof Promise)) return forget(chunk);
    return this.#host.track(chunk).then(forget, (err) => {
      this.#cursors.delete(id);
      stepped();
      throw err;
    });
  }

  /**
   * A cursor's write met another process's lock at its first step, which
   * changed nothing: it waits for the lock as any write in a transaction
   * does (in the background up to `--busy-timeout`, or from a timer while
   * change feeds capture; see {@link Cursor.waitForLock}), this session
   * keeping the writer meanwhile (its transaction is not idle).
   */
  #cursorWaitsForLock(id: number, cursor: Cursor): Promise<Chunk> {
    const writer = this.#host.writer.connection;
    const inBackground = writer.caps.background;
    const inTx = writer.inTransaction;
    const waits = cursor.waitForLock(this.#host.config.busyTimeout, inBackground);
    return this.#cursorRunsOnWriter(id, cursor, inTx, waits);
  }

  /**
   * A step of a cursor on the writer that runs (in the background, or
   * waiting for another process's lock): this session keeps the writer
   * meanwhile, as for any statement of its running there (its transaction,
   * open before the step when `inTx`, is not idle; its lease stops the step
   * with an interrupt rather than using the connection).
   */
  async #cursorRunsOnWriter(
    id: number,
    cursor: Cursor,
    inTx: boolean,
    step: Promise<Chunk>,
  ): Promise<Chunk> {
    this.#txWhileRunning = inTx;
    this.runningOnWriter = true;
    let failure: unknown = null;
    try {
      const chunk = await step;
      // The transaction ended while the step ran (its lease, a cancel after
      // a write of it), too late for the interrupt to stop the step: the
      // interrupt, still pending, stopped the rows stepped inline after it
      // (which is no deadline of the cursor's). The request fails as one
      // stopped in time does; its rows are of a transaction that is over.
      if (this.#aborted !== null) {
        cursor.close();
        throw this.#aborted;
      }
      return chunk;
    } catch (err) {
      failure = err;
      this.#cursors.delete(id);
      // The lease ended the transaction (its interrupt stopped the step).
      throw this.#aborted ?? this.#cursorFailed(cursor, err);
    } finally {
      this.runningOnWriter = false;
      this.#txWhileRunning = false;
      // Its deadline or a cancel interrupted the writer: that may stop the
      // session's other cursors there too.
      if (cursor.interrupted) {
        this.#endInterruptedCursors(failure instanceof Error ? failure : null);
      }
      // Closed, or the transaction's lease ran out, while it waited: roll
      // back and give the writer up now that the connection is free.
      if (this.#closed || this.#aborted !== null) this.#host.writer.abort(this);
    }
  }

  /**
   * A cursor on the writer failed and SQLite ended the transaction around it
   * (`ON CONFLICT ROLLBACK` in a write's first step, say): as for any
   * statement, the session refuses requests until ROLLBACK, and gives the
   * writer back.
   */
  #cursorFailed(cursor: Cursor, err: unknown): unknown {
    const host = this.#host;
    if (!cursor.onWriter || !host.writer.owns(this) || host.writer.connection.inTransaction) {
      return err;
    }
    const first = this.#aborted === null;
    if (first) this.#aborted = txAborted(err);
    host.writer.afterWrite(this);
    return first ? txRolledBack(err) : this.#aborted;
  }

  /**
   * How many times a statement of an `exec` script ended this session's
   * transaction (its cursors on the writer ended with it): the server tells
   * the client when it changed since its last reply, since a script may end
   * a transaction and begin another (`COMMIT; BEGIN`), which the reply's
   * transaction bit alone does not show.
   */
  get txEnds(): number {
    return this.#txEnds;
  }

  #txEnds = 0;

  #scriptEndedTx(): void {
    this.#txEnds++;
    this.writerReleased();
  }

  /**
   * The engine took the writer back: this session's transaction ended
   * (COMMIT, ROLLBACK, its lease, SQLite rolling it back, close). Its
   * cursors on the writer end with it; their next `next` says so. @internal
   */
  writerReleased(): void {
    this.#endWriterCursors(null);
  }

  /**
   * Closes a cursor early. One ended already (its transaction ended) is
   * forgotten, without error, unless `idle`: closed by the server for idling,
   * it then stays ended, so that its next `next` says why it ended (the
   * first reason), and this throws that reason.
   */
  closeCursor(id: number, idle = false): Reply<null> {
    if (this.#awaitingCommit) return BLOCKED;
    const ended = this.#endedCursors.get(id);
    if (ended !== undefined) {
      if (idle) throw this.#endedError(id, ended);
      this.#endedCursors.delete(id);
      return null;
    }
    this.#cursor(id).close();
    this.#cursors.delete(id);
    this.#writingCursors?.delete(id);
    return null;
  }

  /**
   * Runs statements atomically: all take effect or none does. Inside an open
   * transaction the batch is a savepoint of it.
   */
  batch(
    items: ReadonlyArray<readonly [string, unknown]>,
    options: WireBatchOptions | null = null,
    timeout?: number,
  ): Reply<BatchItemPayload[]> {
    return this.#unlessLocked(timeout, () => this.#settled(this.#batch(items, options, timeout)));
  }

  /**
   * `host.writer.acquire`, for a request that waits for another program's
   * lock met as it is given the writer (its schema read, on a database not
   * in WAL mode: the writer is given back) in the background, as a read
   * does: {@link ReadLocked}, see {@link #unlessLocked}.
   */
  #acquireUnlessLocked(group = false): boolean {
    const writer = this.#host.writer;
    try {
      return writer.acquire(this, group);
    } catch (err) {
      if (metLock(writer.connection, err)) throw new ReadLocked();
      throw err;
    }
  }

  #batch(
    items: ReadonlyArray<readonly [string, unknown]>,
    options: WireBatchOptions | null,
    timeout?: number,
  ): Reply<BatchItemPayload[]> {
    if (this.#awaitingCommit) return BLOCKED;
    this.#failIfAborted();
    const host = this.#host;
    const limits = this.#limits(timeout);
    if (!this.#acquireUnlessLocked()) return BLOCKED;
    const writer = host.writer.connection;
    const nested = writer.inTransaction;
    deadlineOf(limits); // one deadline for the whole batch
    // The results must fit the reply before the batch commits (a failing
    // statement rolls the whole batch back).
    limits.reply = this.#replyRoom(false);
    // Foreign keys off for this batch alone (a table rebuild): the session
    // holds the writer, so no other client's statement runs meanwhile.
    const fkOff = options?.foreignKeys === false;
    if (fkOff && nested) {
      host.writer.afterWrite(this);
      throw new SqliteError(
        ErrorCode.BadRequest,
        "Cannot run a batch with foreignKeys: false inside a transaction: SQLite ignores " +
          "PRAGMA foreign_keys there; run it outside one",
      );
    }
    let restoreKeys: () => void = () => {};
    if (fkOff && writer.ownRows("PRAGMA foreign_keys")[0]?.[0] === 1) {
      // (Also turned on again by the engine should the writer be taken back.)
      host.writer.foreignKeys(false);
      restoreKeys = () => {
        restoreKeys = () => {};
        if (host.writer.owns(this)) host.writer.foreignKeys(true);
      };
    }
    const begin = nested ? "SAVEPOINT netsqlite_batch" : "BEGIN IMMEDIATE";
    let began: Outcome | Promise<Outcome> | null = null;
    try {
      writer.runOwn(begin);
    } catch (err) {
      if (!metLock(writer, err)) {
        restoreKeys();
        host.writer.afterWrite(this);
        throw err;
      }
      // Another process holds the file's write lock: wait for it in the background.
      began = this.#background(writer.prepare(begin), NO_ARGS, limits, false, null);
    }
    // (Its statements are prepared after: with the schema the lock holds.)
    if (began === null && !nested) host.writer.schemaMovedUnderLock();
    this.#batchTx = !nested;
    this.#batchRuns = true;
    this.#batchTemp = false;
    this.#batchSchema = false;
    this.#batchWrote = false;
    const log = changeLogOf(writer);
    const mark = log?.mark() ?? 0;
    const results: BatchItemPayload[] = [];
    const fail = (err: unknown): never => {
      this.#batchTx = false;
      this.#batchRuns = false;
      // Unless the writer was taken back (the session closed, its lease
      // ended): it was rolled back then, and the writer and its change log
      // may hold another session's work by now.
      if (host.writer.owns(this)) {
        if (writer.inTransaction) {
          writer.db.exec(
            nested ? "ROLLBACK TO netsqlite_batch; RELEASE netsqlite_batch" : "ROLLBACK",
          );
          // Inside the client's transaction, which goes on: statements cached
          // since an item changed the schema describe one undone now (column
          // names, and node:sqlite's row width). Once the writer is given
          // back, the engine drops them itself.
          if (nested && this.#batchSchema) {
            host.writer.ranOnWriter(writer.prepare("ROLLBACK TO netsqlite_batch"));
          }
        }
        if (nested) log?.truncate(mark);
        else log?.discard();
        // Stopped (a cancel) after an item wrote inside the client's
        // transaction: its savepoint is undone, but the write counts, so that
        // the cancel ends the transaction as it does an interrupted exec()
        // (wroteInTransactionSince). A batch failing for any other reason (a
        // constraint) leaves the transaction open.
        if (nested && this.#batchWrote && err instanceof AbortError) this.#txWriteSeq++;
      }
      restoreKeys();
      host.writer.afterWrite(this, this.#batchTemp);
      throw err;
    };
    const finish = (): BatchItemPayload[] | Promise<BatchItemPayload[]> => {
      this.#batchRuns = false;
      if (nested) {
        writer.runOwn("RELEASE netsqlite_batch");
        // Its writes are now the transaction's.
        if (this.#batchWrote) this.#txWriteSeq++;
        host.writer.afterWrite(this, this.#batchTemp);
        return results;
      }
      let committed: Outcome | Promise<Outcome>;
      try {
        if (fkOff) checkForeignKeys(writer);
      } catch (err) {
        return fail(err);
      }
      // (A deferred foreign key, say, fails the COMMIT: say it was the commit.)
      const commitFailed = (err: unknown): never => fail(batchCommitFailed(err));
      try {
        committed = this.#onWriter(writer.prepare("COMMIT"), NO_ARGS, limits, false);
      } catch (err) {
        return commitFailed(err);
      }
      return then(committed, () => {
        this.#batchTx = false;
        restoreKeys();
        host.writer.afterWrite(this, this.#batchTemp);
        return results;
      }, commitFailed);
    };
    // Items run inline for one slice; the rest of a longer batch runs from
    // the event loop, as a script's statements do (#inTurns), in the
    // batch's transaction: other sessions read meanwhile, writes queue.
    const step = (i: number): Reply<BatchItemPayload[]> => {
      const sliceEnd = performance.now() + INLINE_BUDGET_MS;
      for (; i < items.length; i++) {
        let item: BatchItemPayload | Promise<BatchItemPayload>;
        try {
          item = this.#batchItem(items, i, limits);
        } catch (err) {
          return fail(err);
        }
        if (item instanceof Promise) return host.track(rest(i, item));
        results.push(item);
        if (performance.now() >= sliceEnd && i + 1 < items.length) {
          return host.track(rest(i + 1, null));
        }
      }
      return finish();
    };
    /** Items from `i` on, taking turns (#inTurns); `pending`: item `i`, running in the background. */
    const rest = async (
      i: number,
      pending: Promise<BatchItemPayload> | null,
    ): Promise<BatchItemPayload[]> => {
      const ran = (item: BatchItemPayload): boolean => {
        results.push(item);
        return ++i < items.length;
      };
      const next = (away?: boolean): boolean | Promise<boolean> => {
        const item = this.#batchItem(items, i, limits, away);
        return item instanceof Promise ? item.then(ran) : ran(item);
      };
      const stopIfAsked = (): void => {
        const stop = this.#stopReason();
        if (stop === null) return;
        throw stop === this.#aborted ? stop : new AbortError(
          `${stop.message} (before batch statement ${i + 1} of ${items.length}, ` +
            "nothing was applied)",
          { cause: stop },
        );
      };
      try {
        await this.#inTurns(pending === null ? true : pending.then(ran), next, stopIfAsked);
      } catch (err) {
        return fail(err);
      }
      return await finish();
    };
    if (began === null) return step(0);
    return began.then(() => step(0), fail) as Promise<BatchItemPayload[]>;
  }

  /** Runs item `i` of a batch (`away`: in the background, where the binding can). */
  #batchItem(
    items: ReadonlyArray<readonly [string, unknown]>,
    i: number,
    limits: RunLimits,
    away = false,
  ): BatchItemPayload | Promise<BatchItemPayload> {
    const [sql, params] = items[i];
    const wrap = (err: unknown): never => {
      // Stopped (cancel, shutdown): still an abort, and nothing of the batch stays.
      if (err instanceof AbortError) {
        throw new AbortError(
          `${err.message} (batch statement ${i + 1} of ${items.length}, nothing was applied)`,
          { cause: err },
        );
      }
      const e = err instanceof SqliteError ? err : new SqliteError(ErrorCode.Internal, String(err));
      throw new SqliteError(
        e.code,
        `Batch statement ${i + 1} of ${items.length} failed, nothing was applied: ${e.message}`,
        e.sqliteCode,
        { cause: e },
      );
    };
    // One deadline for the whole batch, checked before each statement and
    // when it ended, on either engine: node:sqlite cannot stop a statement
    // while it runs, so it is what stops a batch of many there; one that
    // ended past the deadline fails the batch too (nothing of it stays).
    const late = (): void => {
      if (performance.now() > deadlineOf(limits)) throw statementTimeout(limits);
    };
    try {
      late();
      const p = this.#host.writer.connection.prepare(sql);
      if (p.touchesTemp) this.#batchTemp = true;
      if (p.changesSchema) this.#batchSchema = true;
      if (!p.readOnly) this.#batchWrote = true;
      if (p.txOp !== null) {
        throw new SqliteError(
          ErrorCode.BadRequest,
          "Batch statements cannot control transactions: the batch is one already",
        );
      }
      const args = bindArgs(params);
      const wantRows = p.columns.length > 0;
      const outcome = away
        ? this.#background(p, args, limits, wantRows, null)
        : this.#onWriter(p, args, limits, wantRows);
      const ran = (o: Outcome): BatchItemPayload => {
        this.#host.writer.ranOnWriter(p);
        late();
        const item: BatchItemPayload = [o.changes, o.lastInsertRowid, o.columns, rowArrays(o.rows)];
        // Every result must fit the reply before the batch commits: those
        // with rows were measured as they were stepped, the others here.
        if (!wantRows && limits.reply !== undefined) chargeReply(limits.reply, item);
        return item;
      };
      // (A statement that ran inline and failed is wrapped below.)
      return outcome instanceof Promise ? outcome.then(ran).catch(wrap) : ran(outcome);
    } catch (err) {
      return wrap(err);
    }
  }

  /**
   * Prepares a statement server-side and returns `[handle, columns]`.
   * Preparing compiles and checks the statement only: it does so on a
   * reader, so a write prepares at once while another session holds the
   * writer (each run of the handle is routed anew, a write to the writer).
   * The writer prepares it only for its owner (whose own transaction may
   * have changed the schema), and while TEMP objects exist (they live on
   * the writer alone), or for a PRAGMA only the writer may judge, or a
   * statement on a database attached to the writer alone.
   */
  prepare(sql: string): Reply<PreparePayload> {
    return this.#unlessLocked(undefined, () => this.#prepare(sql));
  }

  #prepare(sql: string): Reply<PreparePayload> {
    if (this.#awaitingCommit) return BLOCKED;
    this.statementMs = this.#host.config.statementTimeout;
    if (this.#aborted !== null || this.#endedAtCommit) {
      // After the engine ended the transaction, a ROLLBACK or COMMIT prepares
      // without routing: running its handle (run, query, iterate) ends that
      // state as its SQL text does (#endsEndedTx).
      const [txOp, end] = this.#txOpOf(sql);
      if ((txOp === "ROLLBACK" || txOp === "COMMIT") && !hasStatement(sql, end)) {
        return [this.#handles.add(sql), []];
      }
    }
    const checked = this.#checkOnReader(sql);
    if (checked !== null) return [this.#handles.add(sql), checked.columns];
    // Its columns are answered before it runs (see iterate).
    if (this.#host.writer.owns(this)) this.#host.writer.currentSchema();
    const p = this.#route(sql);
    if (p === BLOCKED) return BLOCKED;
    if (p.onWriter) this.#host.writer.afterWrite(this);
    const handle = this.#handles.add(sql);
    return [handle, p.columns];
  }

  /**
   * Prepares `sql` on the shared reader for {@link prepare}, without taking
   * the writer: `null` when the writer must (this session holds it, TEMP
   * objects exist, `:memory:`, the policy leaves the statement to the
   * writer's state, or it names what only the writer has attached).
   *
   * @throws {SqliteError} SQLite's error for a statement that does not
   *   compile against the committed schema.
   */
  #checkOnReader(sql: string): Prepared | null {
    this.#failIfAborted();
    const host = this.#host;
    // (Another session's open transaction is on the writer: its uncommitted
    // schema is no business of this one.)
    if (host.writer.owns(this) || host.writer.hasTemp()) return null;
    this.#endedAtCommit = false;
    try {
      return host.readers.snapshot()?.prepare(sql) ?? null;
    } catch (err) {
      if (err instanceof ReadLocked) throw err;
      // (As #route: a PRAGMA may fail there for the reader's own state, and
      // a statement may use a database attached to the writer alone.)
      if (err instanceof WriterDecides || startsWith(sql, "pragma")) return null;
      if (host.writer.hasAttached() && lacksOnReader(err)) return null;
      throw err;
    }
  }

  /** Frees a handle from {@link prepare}. */
  finalize(handle: number): Reply<null> {
    if (this.#awaitingCommit) return BLOCKED;
    this.#handles.delete(handle);
    return null;
  }

  /** Rolls back this session's transaction, leaves the queue. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#dropLockWait();
    this.#running?.cancel(new SqliteError(ErrorCode.ConnectionClosed, "Connection closed"));
    this.#host.writer.leaveQueue(this);
    for (const c of this.#cursors.values()) c.close();
    this.#cursors.clear();
    this.#endedCursors.clear();
    this.#writingCursors = null;
    this.#host.writer.abort(this);
    this.#handles.clear();
    this.#host.writer.forget(this);
  }

  // ---- internals ---------------------------------------------------------

  /** Waiter: retry the blocked request. @internal */
  wake(): void {
    if (!this.#closed) this.#wake();
  }

  /** The engine ends this session's transaction, whose lease ended (HostedSession). @internal */
  expire(why: LeaseEnd): boolean {
    const config = this.#host.config;
    this.#aborted = leaseExpired(why, config.txIdleTimeout, config.txTimeout ?? 0);
    if (!this.#runningCommit) return false;
    this.#leaseEndedInCommit = why;
    return true;
  }

  /** Deadline and result limit of one statement. */
  #limits(timeout: number | undefined): RunLimits {
    const config = this.#host.config;
    const ms = this.statementMs = timeout ?? config.statementTimeout;
    // (A request sent again after waiting for another program's lock keeps its deadline.)
    return { timeout: ms, maxBytes: config.maxResultBytes, deadline: this.#resumeDeadline };
  }

  /**
   * The room a buffered reply has (`RunLimits.reply`): `maxResultBytes` or
   * the frame, whichever is smaller, as the server holds replies to them.
   * `undo`: a write whose rows do not fit is undone by the run (else by the
   * caller).
   */
  #replyRoom(undo: boolean): ReplyRoom {
    const { maxResultBytes, maxFrameSize = Infinity } = this.#host.config;
    const limited = maxResultBytes < maxFrameSize;
    return {
      bytes: (limited ? maxResultBytes : maxFrameSize) - REPLY_OVERHEAD,
      error: limited ? () => resultTooLarge(maxResultBytes) : () => replyTooLarge(maxFrameSize),
      undo,
    };
  }

  #liveCursor(p: Prepared, args: BindArgs, timeout: number, release: () => void): Cursor {
    try {
      p.stmt.bind(args);
    } catch (err) {
      p.stmt.finalize();
      release();
      throw err;
    }
    const cursor = new Cursor(p.columns, p, timeout, release, null, this.#chunkBytes);
    // Sent again after waiting for another program's lock (#unlessLocked):
    // the wait counts against its timeout, as a statement's deadline counts it.
    const deadline = this.#resumeDeadline;
    if (deadline !== undefined) cursor.spend(timeout - (deadline - performance.now()));
    return cursor;
  }

  /** Bytes per cursor chunk at most: replies are held to the frame. */
  get #chunkBytes(): number {
    return chunkBytesFor(this.#host.config.maxFrameSize);
  }

  #cursor(id: number): Cursor {
    const cursor = this.#cursors.get(id);
    if (cursor === undefined) throw unknownCursor(id);
    return cursor;
  }

  #sqlOf(sql: string | number): string {
    if (typeof sql === "string") return sql;
    return this.#handles.sql(sql);
  }

  /** The SQL of prepared statement `handle`, or undefined for an unknown one. */
  statementSql(handle: number): string | undefined {
    return this.#handles.has(handle) ? this.#handles.sql(handle) : undefined;
  }

  /**
   * Picks the connection for one statement: the writer for the owner and for
   * writes (queueing if needed), a reader for everyone else's reads, unless
   * only the writer can answer them (TEMP objects, attached databases, the
   * writer connection's own settings and state).
   */
  #route(sql: string, groupable = false): Prepared | typeof BLOCKED {
    this.#failIfAborted();
    this.#endedAtCommit = false;
    this.#grouping = false;
    const host = this.#host;
    // Every client's commits are the writer's own, so its data_version would
    // never change for them: the shared reader answers it, in a transaction
    // too (pragma_use.ts).
    if (isDataVersionRead(sql)) {
      // Behind this session's own grouped write, it waits for that write's
      // commit, as any read on the shared reader does (below): it counts it.
      if (this.#awaitingCommit) return BLOCKED;
      const p = host.readers.snapshot()?.prepare(sql);
      if (p !== undefined) {
        host.writer.touch(this); // (a request of the transaction: it is not idle)
        return p;
      }
    }
    // (The owner's acquire only brings the writer's schema up to date.)
    if (host.writer.owns(this) && host.writer.acquire(this)) {
      return host.writer.connection.prepare(sql);
    }
    let group = false;
    const temp = host.writer.hasTemp();
    /** Why a statement that may not write goes to the writer (for a BUSY_TIMEOUT), or null. */
    let why: string | null = temp ? WHY_TEMP : null;
    if (!temp) {
      // A write the reader has classified before goes to the writer without
      // renewing the reader's snapshot (taking the writer drops it again).
      let p = host.readers.classified(sql);
      if (p === undefined || p.readOnly) {
        const inGroup = this.#awaitingCommit && groupable ? host.group.writer(this) : null;
        if (inGroup !== null) {
          // Behind this session's own grouped write, while the group is
          // open: a read runs in the group's transaction, which holds that
          // write.
          p = inGroup.prepare(sql);
          if (p.readOnly) return p;
        } else {
          // A statement the reader cannot prepare fails here, without waiting
          // (no write that changes the schema joins a group).
          try {
            p = host.readers.snapshot()?.prepare(sql);
          } catch (err) {
            if (err instanceof ReadLocked) throw err;
            // (A PRAGMA may fail there for the reader's own state, e.g. its
            // snapshot: "Safety level may not be changed inside a
            // transaction". The writer decides.)
            // (A statement naming what only the writer has attached: the writer compiles it.)
            const attached = host.writer.hasAttached() && lacksOnReader(err);
            if (attached) why = WHY_ATTACHED;
            else if (!(err instanceof WriterDecides) && !startsWith(sql, "pragma")) throw err;
          }
        }
      }
      if (p !== undefined) {
        if (p.readOnly) {
          // A PRAGMA read lists or finds what is attached: the writer answers it then.
          if (!p.readsPragma || !host.writer.hasAttached()) {
            return this.#awaitingCommit ? BLOCKED : p;
          }
          why = WHY_ATTACHED;
        } else {
          if (p.readsWriterState) why = WHY_WRITER_STATE;
          group = groupable && host.group.accepts(p, sql);
        }
      }
    }
    // Behind a write awaiting its group commit, only more grouped writes may
    // go on (they see it), and only into the same group, while it is open;
    // anything else waits for the commit. (A group's members are told one
    // by one: one told first may open the next group, and wake this session
    // from the writer's queue, before it is told. Its write must not join
    // that group: being told of the first would release its reply, and let
    // its next reads run on the shared reader, before the write committed.)
    if (this.#awaitingCommit && !(group && host.group.holds(this))) return BLOCKED;
    try {
      if (!this.#acquireUnlessLocked(group)) return BLOCKED;
    } catch (err) {
      if (err instanceof ReadLocked) throw err;
      throw why === null ? err : waitedAsStatement(err, why);
    }
    this.#grouping = group;
    try {
      return host.writer.connection.prepare(sql);
    } catch (err) {
      if (group) host.writer.release(this);
      else host.writer.afterWrite(this);
      throw err;
    }
  }

  #failIfAborted(): void {
    if (this.#aborted !== null) throw this.#aborted;
  }

  /**
   * After the engine ended the transaction, requests fail until the client
   * ends it too: a ROLLBACK succeeds (nothing more to run); COMMIT fails but
   * also ends the aborted state, and a ROLLBACK right after it succeeds too.
   * Returns false when `sql` is to run as usual; else where the text after
   * that ROLLBACK begins. Only a `script` (`exec`) may hold statements after
   * it, which then run as usual (the state left for the script to end once
   * it holds the writer: it may wait for it, and be sent again): for one
   * statement's request, text holding more is run as usual (refused, as two
   * statements or as the transaction ended), lest the others be dropped
   * unrun and the request answered.
   * Every request that runs SQL asks here first, whichever carries the
   * ROLLBACK (`exec`, `run`, `query`, `iterate`, by text or by a handle
   * from {@link prepare}), so that each ends the state alike.
   */
  #endsEndedTx(sql: string, script = false): number | false {
    if (this.#aborted === null && !this.#endedAtCommit) return false;
    const [txOp, end] = this.#txOpOf(sql);
    const more = hasStatement(sql, end);
    if (more && !script) return false;
    if (this.#aborted === null) {
      const noOp = txOp === "ROLLBACK" && !this.#host.writer.owns(this);
      // (A script's ROLLBACK followed by more ends the state once the
      // script has the writer: see #exec.)
      if (!noOp || !more) this.#endedAtCommit = false;
      return noOp ? end : false;
    }
    const aborted = this.#aborted;
    if (txOp === "ROLLBACK") {
      if (!more) this.#aborted = null;
      return end;
    }
    if (txOp === "COMMIT") {
      this.#aborted = null;
      this.#endedAtCommit = true;
    }
    throw aborted;
  }

  /**
   * Which transaction control the first statement of `sql` is (`null`:
   * none, or not a statement we can read), and where the text after it
   * begins.
   */
  #txOpOf(sql: string): [Prepared["txOp"], number] {
    const host = this.#host;
    // Classify on a reader: the writer may be busy with someone else.
    const conn = host.readers.snapshot() ??
      (host.writer.owns(this) ? host.writer.connection : null);
    // (None for `:memory:`, which has no reader, while another session may
    // use the writer: the ROLLBACK or COMMIT ending the state, read from its
    // words, else the state would last for good.)
    if (conn === null) return plainTxEnd(sql) ?? [null, sql.length];
    let op = null;
    try {
      op = conn?.prepareOne(sql, 0) ?? null;
    } catch {
      // Not a statement we can read.
    }
    op?.stmt.finalize();
    return [op?.txOp ?? null, op?.stmt.end ?? sql.length];
  }
}

/**
 * `RESULT_TOO_LARGE` of a cursor whose rows had to be materialised, saying
 * why they could not stream (`why`) and what would stream them.
 */
function cannotStream(err: unknown, why: string, maxBytes: number): unknown {
  if (!(err instanceof SqliteError) || err.code !== ErrorCode.ResultTooLarge) return err;
  return new SqliteError(
    err.code,
    `Result exceeds maxResultBytes ${maxBytes} (--max-result-bytes) and cannot stream: ` +
      `${why}, so its rows are ` +
      "buffered on the server; open the cursor inside a transaction (it then streams on the " +
      "writer), or select less",
    err.sqliteCode,
    { cause: err },
  );
}

/** Applies `f` to a value or a promise of one. */
function then<T, U>(
  v: T | Promise<T>,
  f: (t: T) => U,
  onError?: (err: unknown) => U,
): U | Promise<U> {
  if (v instanceof Promise) return v.then(f, onError);
  if (onError === undefined) return f(v);
  try {
    return f(v);
  } catch (err) {
    return onError(err);
  }
}

/** Why a statement waits for the writer while TEMP objects exist. */
const WHY_TEMP = "TEMP tables exist, so every statement goes through it; DROP them when done";

/** Why a statement using an attached database waits for the writer. */
const WHY_ATTACHED = "it uses a database attached to the writer, which the read connections " +
  "lack; DETACH it when done";

/** Why a read of the writer connection's own state waits for the writer. */
const WHY_WRITER_STATE = "it reads a setting or state of the writer connection, which only " +
  "the writer answers";

/**
 * A `BUSY_TIMEOUT` (or `STATEMENT_TIMEOUT`) of a statement that waited for the writer though it may
 * not write (it reads, and only the writer can answer it: `why`): says so,
 * rather than call it a write.
 */
function waitedAsStatement(err: unknown, why: string): unknown {
  if (!(err instanceof SqliteError)) return err;
  if (err.code !== ErrorCode.BusyTimeout && err.code !== ErrorCode.StatementTimeout) return err;
  const message = err.message.replace(
    /^Write waited (\d+) ms for the writer/,
    `Statement waited $1 ms for the writer (${why})`,
  );
  return new SqliteError(err.code, message, err.sqliteCode, { cause: err });
}

/**
 * True when a read connection failed to compile a statement for want of a
 * table, view, index, trigger or database: one the writer may have
 * attached (read connections attach nothing).
 */
function lacksOnReader(err: unknown): boolean {
  return err instanceof SqliteError &&
    /^(no such (table|view|index|trigger)|unknown database)\b/.test(err.message);
}

/**
 * What a request would run, for {@link EngineSession.wouldWrite}: one
 * statement (SQL text or prepared handle: `run`, `query`, `iterate`), a
 * script (`exec`), a batch's statements, or a cursor's next step.
 */
export type Planned =
  | { readonly statement: string | number }
  | { readonly script: string }
  | { readonly statements: readonly string[] }
  | { readonly cursor: number };

/**
 * True when `p` changes the database (transaction control aside; `EXPLAIN`
 * of a write runs nothing).
 */
function writes(p: Prepared): boolean {
  return !p.readOnly && p.txOp === null && !p.explain;
}

/** True for a statement stopped at its deadline. */
function isTimeout(err: unknown): boolean {
  return err instanceof SqliteError && err.code === ErrorCode.StatementTimeout;
}

/** True for a statement that commits the transaction it ends: COMMIT, END, the outermost RELEASE. */
function endsTx(p: Prepared): boolean {
  return p.txOp === "COMMIT" || p.txOp === "RELEASE";
}
