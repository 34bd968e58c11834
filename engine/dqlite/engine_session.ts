/**
 * One client's view of the cluster engine: see {@link DqliteEngineSession}.
 *
 * @module
 */

import { bufferedFull, rowsBytes } from "../buffered_rows.ts";
import {
  cancelledAfterWrite,
  commitRolledBack,
  cursorTxEnded,
  leaseExpired,
  txAborted,
  txRolledBack,
  unknownCursor,
} from "../session_errors.ts";
import type { LeaseEnd } from "../writer_queue.ts";
import { DeadlineTimer } from "../deadline_timer.ts";
import { Handles } from "../handles.ts";
import { AbortError, ErrorCode, SqliteError } from "../../protocol/errors.ts";
import type {
  BatchItemPayload,
  PreparePayload,
  QueryPayload,
  RunPayload,
  WireBatchOptions,
} from "../../protocol/messages.ts";
import { bindArgs } from "../_bind.ts";
import type { SqlValue } from "../binding/binding.ts";
import { chunkBytesFor, chunkLength } from "../cursor.ts";
import { statementTimeout } from "../run.ts";
import {
  BUSY_INTERRUPTED,
  CONNECT_INTERRUPTED,
  type DqliteDatabase,
  DRAIN_INTERRUPTED,
  type ExecResult,
  type Params,
  type QueryOptions,
  rowsBefore,
  TX_LOST,
} from "./database.ts";
import { DqliteErrorCode, LeaderError } from "./errors.ts";
import { txEffect } from "./_sql_scan.ts";
import { scan, type Token } from "../../protocol/sql_lexer.ts";
import { statementBody } from "../_sql_text.ts";
import {
  checkClusterSql,
  immediateBegins,
  mayWrite,
  requireOneStatement,
  splitStatements,
  statementTexts,
  verbOf,
  withoutRows,
} from "./_sql_shape.ts";
import type { DqliteEngine } from "./engine.ts";

/**
 * Which rows of a statement a request returns: all of them, buffered up to
 * `maxResultBytes` (named by the call, for `RESULT_TOO_LARGE`: a query, a
 * cursor's, a batch's), or the first `n` only (`get()`: 1; `run()` and
 * scripts: 0), the rest read and discarded, whatever their size, as a
 * single file steps only what it returns.
 */
type Rows = "query" | "iterate" | "batch" | number;
/** The first row alone (`get()`). */
const FIRST_ROW = 1;
/** No row (`run()`, `exec()`). */
const NO_ROWS = 0;

/** What one statement produced. */
interface Outcome {
  columns: string[];
  rows: SqlValue[][];
  changes: number | bigint;
  lastInsertRowid: number | bigint;
}

interface BufferedCursor {
  columns: string[];
  rows: SqlValue[][];
  at: number;
  /** Opened inside a transaction: it ends with it. */
  inTx: boolean;
  /** The error its statement failed with after `rows`: the `next` after them fails with it. */
  failed: unknown;
  /** Bytes its rows hold, counted in the engine's `bufferedRows` until it ends. */
  bytes: number;
}

/**
 * Cursors ended before the client read their end (their transaction ended
 * or was lost, or their rows before a failure were all handed out) that a
 * session remembers until the client reads or closes them, to say why: the
 * oldest are forgotten past this many, so a client that never does holds a
 * bounded record (an id and a reason each), not a cursor slot nor its rows.
 * (As the single-file engine's `ENDED_CURSORS_REMEMBERED`.)
 */
const ENDED_CURSORS_REMEMBERED = 256;

/**
 * One client's requests on the cluster, in order. Every request is answered
 * by a promise (a round trip to the leader). Between requests the session
 * holds no connection: each request borrows one from the engine's pool, so
 * autocommit statements of many clients share connections. A session that
 * opens a transaction keeps its connection until the transaction ends, is
 * rolled back after `txIdleTimeout`, or the session closes (closing the
 * connection makes the leader roll the transaction back).
 *
 * Cursors are emulated: the statement runs to its end at `iterate()` and its
 * rows, bounded by `maxResultBytes`, are handed out in chunks. A read that
 * fails part way opens a cursor over the rows before its error, which the
 * `next` after them fails with, as the single-file engine's streaming
 * cursor does (no rows: the open fails). A cursor
 * opened inside a transaction ends with it (COMMIT, ROLLBACK, lost with the
 * leader, ended by the server): its next `next` fails with `CURSOR_CLOSED`,
 * as on the single-file engine, rather than hand out rows of a transaction
 * that is over. An ended cursor (so one whose rows before its error were
 * all handed out) no longer counts as open (`maxCursors`, `stats`), and
 * its rows are dropped: the session keeps only why it ended, for its next
 * `next` (the newest {@link ENDED_CURSORS_REMEMBERED}).
 *
 * A leader change fails the request running with `LeaderError`
 * (`NOT_LEADER`: not applied; `LEADER_LOST`: its message says whether it may
 * have been applied); nothing is retried, and the next request finds the
 * new leader.
 */
export class DqliteEngineSession {
  readonly #engine: DqliteEngine;
  #tx: DqliteDatabase | null = null;
  #lent: DqliteDatabase | null = null;
  #closed = false;
  #aborted: SqliteError | null = null;
  /** The transaction ended at a failed COMMIT: a ROLLBACK right after it succeeds. */
  #endedAtCommit = false;
  /** The open transaction's idle lease (a limit the client meets: grace after a stall). */
  #idleTimer: DeadlineTimer | undefined;
  /** Its age limit, `txTimeout` (wall-clock: enforced at once). */
  #ageTimer: ReturnType<typeof setTimeout> | undefined;
  /** When the open transaction began (`performance.now()`), 0 when none is open. */
  #txSince = 0;
  #cancelled: Error | null = null;
  /** The running request's deadline error, once its deadline passed. */
  #late: SqliteError | null = null;
  /** While a request waits for a connection: fails that wait with the reason given. */
  #stopAcquire: ((reason: Error) => void) | null = null;
  /** True while that wait is for a free connection of the full pool (see {@link #acquireWait}). */
  #queued = false;
  readonly #handles: Handles;
  readonly #cursors = new Map<number, BufferedCursor>();
  /**
   * Cursors ended and not yet told (see {@link #endCursor}): what their
   * next `next` throws, once. They no longer count as open. The oldest are
   * forgotten past {@link ENDED_CURSORS_REMEMBERED} (their `next` then
   * finds no cursor).
   */
  readonly #endedCursors = new Map<number, unknown>();
  #nextCursor = 1;
  /**
   * Requests that wrote inside the client's transaction, counted over the
   * session's life (see {@link writeMark}); `#txWriteFloor` is the count
   * when the last transaction ended, so that writes of an ended one do not
   * count.
   */
  #txWriteSeq = 0;
  #txWriteFloor = 0;
  /** See {@link txEnds}. */
  #txEnds = 0;
  /** True once a statement of the running request wrote inside the transaction still open. */
  #wrote = false;
  /**
   * Set by {@link cancelWrites} while a request of this session runs on the
   * transaction's connection: the transaction is ended when that request
   * returns (unless the request itself ended it), and this is its error.
   */
  #endWhenDone: SqliteError | null = null;

  /** Session number, for the log. */
  readonly id: number;

  /** @internal Use {@link DqliteEngine.openSession}. */
  constructor(engine: DqliteEngine, id = 0) {
    this.#handles = new Handles(engine.config.maxStatements, engine.prepared);
    this.#engine = engine;
    this.id = id;
  }

  /** Cursors open on this session (buffered results); ended ones do not count. */
  get cursorCount(): number {
    this.#endGoneTxCursors();
    return this.#cursors.size;
  }

  /** Always false: a write is acknowledged once Raft committed it; nothing is held back. */
  get awaitingCommit(): boolean {
    return false;
  }

  /** True while this session holds a connection with an open (or lost) transaction. */
  get inTransaction(): boolean {
    return this.#tx !== null || this.#aborted !== null;
  }

  /** True while a request of this session runs. @internal */
  get _busy(): boolean {
    return this.#lent !== null;
  }

  /**
   * Runs a script of zero or more statements without parameters, one
   * statement (one round trip) at a time: dqlite's EXEC of a whole script
   * does not say which statement failed, and refuses one that returns rows.
   */
  exec(script: string, timeout?: number): Promise<null> {
    const sql = immediateBegins(script);
    const statements = statementTexts(sql);
    // The ROLLBACK ending a transaction the engine ended: the statements
    // after it run as the script's next ones (the request is their text).
    // That state ends once they run on the leader: a request that reaches
    // none (no leader found, one that refused the first of them, not
    // applied, or stopped while a connection to one was being opened) keeps
    // it, so that the client's retry of the script runs.
    const from = this.#endsEndedTxFirst(statements) ? 1 : 0;
    const text = from === 0 ? sql : statements.slice(1).join("\n");
    return this.#request(text, null, timeout, true, async (db) => {
      const ending = from === 1 ? { aborted: this.#aborted, atCommit: this.#endedAtCommit } : null;
      if (ending !== null) {
        this.#aborted = null;
        this.#endedAtCommit = false;
      }
      // The statement (1-based) that began the transaction the script is in,
      // when the script began it (0: it began none, or ran inside one begun
      // before it): one that makes SQLite roll that transaction back, or a
      // stop inside it, undoes the statements from there on, not those before.
      let txFrom = 0;
      for (let i = from; i < statements.length; i++) {
        const inTx = db.inTransaction;
        const stops = db.execStops;
        try {
          await this.#statement(db, statements[i], [], NO_ROWS);
        } catch (err) {
          const e = this.#stopped(err);
          if (e === this.#endWhenDone) throw e; // cancelWrites() ended the transaction
          // No leader found, one that refused it, or a stop (the deadline, a cancel) while
          // the connection to one was being opened.
          const unsent = (e instanceof LeaderError && !e.maybeApplied) ||
            (err instanceof SqliteError && err.sqliteCode === 9 &&
              err.message === CONNECT_INTERRUPTED);
          if (ending !== null && i === 1 && !inTx && unsent) {
            // Nothing of the script reached a leader: its ROLLBACK is still to run.
            this.#aborted = ending.aborted;
            this.#endedAtCommit = ending.atCommit;
            throw e;
          }
          const cutOff = db.execStops !== stops;
          // The statements before it ran, unless the transaction they ran in ended with it.
          const undone = inTx && (!db.inTransaction || db.transactionLost || cutOff);
          // SQLite ended the transaction around it: as for a single statement.
          const ended = inTx && !db.inTransaction && !db.transactionLost && !cutOff;
          if (e instanceof AbortError && !inTx && i > 0) {
            // Stopped (a cancel, a shutdown) after the statements before it committed.
            throw new AbortError(
              `${e.message} (statement ${i + 1} of the script; the ${i} before it ran)`,
              {
                cause: e,
                ran: i,
              },
            );
          }
          if (e instanceof AbortError && inTx && txFrom > 1) {
            // Stopped inside the transaction the script began: those before its BEGIN
            // committed (`ran`), those from it on are in that transaction.
            throw new AbortError(
              `${e.message} (statement ${i + 1} of the script; the ${txFrom - 1} before ` +
                `statement ${txFrom}, which began the transaction, ran and stay applied)`,
              { cause: e, ran: txFrom - 1 },
            );
          }
          throw inScript(
            ended ? this.#scriptAbort(e, statements[i]) : e,
            i + 1,
            undone,
            inTx ? txFrom : 0,
          );
        }
        if (!inTx && db.inTransaction) txFrom = i + 1;
        if (inTx && !db.inTransaction) {
          txFrom = 0;
          // It ended the transaction (a later one may begin another): so are its cursors.
          this.#txEnds++;
          this.#endTxCursors();
        }
      }
      return null;
    }, from === 1);
  }

  /**
   * How many times a statement of an `exec` script ended this session's
   * transaction (its cursors ended with it): the server tells the client
   * when it changed since its last reply, since a script may end a
   * transaction and begin another (`COMMIT; BEGIN`), which the reply's
   * transaction bit alone does not show.
   */
  get txEnds(): number {
    return this.#txEnds;
  }

  /** Runs one statement and returns its columns and rows (`first`: the first row alone). */
  query(
    sql: string | number,
    params: unknown,
    timeout?: number,
    first = false,
  ): Promise<QueryPayload> {
    const text = this.#sqlOf(sql);
    this.#refuseWhileEnded(text);
    requireOneStatement(text);
    const args = bindArgs(params) as Params;
    return this.#request(text, [[], []], timeout, false, async (db) => {
      const o = await this.#statement(db, text, args, first ? FIRST_ROW : "query");
      return [o.columns, o.rows];
    });
  }

  /** Runs one statement and returns `[changes, lastInsertRowid]`. */
  run(sql: string | number, params: unknown, timeout?: number): Promise<RunPayload> {
    const text = this.#sqlOf(sql);
    this.#refuseWhileEnded(text);
    requireOneStatement(text);
    const args = bindArgs(params) as Params;
    return this.#request(text, [0, 0], timeout, false, async (db) => {
      const o = await this.#statement(db, text, args, NO_ROWS);
      return [o.changes, o.lastInsertRowid];
    });
  }

  /**
   * Runs statements atomically (BEGIN ... COMMIT on one connection; a
   * savepoint inside an open transaction).
   */
  batch(
    items: ReadonlyArray<readonly [string, unknown]>,
    options: WireBatchOptions | null = null,
    timeout?: number,
  ): Promise<BatchItemPayload[]> {
    if (options?.foreignKeys === false) {
      return Promise.reject(
        new SqliteError(
          ErrorCode.BadRequest,
          "Cannot run a batch with foreignKeys: false in cluster mode: the connections of the " +
            "cluster's pool share no foreign-key setting the server can hold for one batch",
        ),
      );
    }
    items.forEach(([sql], i) => {
      try {
        checkClusterSql(sql, this.#engine.config);
      } catch (err) {
        throw batchError(err, i, items.length); // (nothing ran: the check precedes the batch)
      }
    });
    return this.#request(null, [], timeout, false, async (db) => {
      const nested = db.inTransaction;
      try {
        await db.exec(nested ? "SAVEPOINT netsqlite_batch" : "BEGIN");
      } catch (err) {
        // Lost before the batch began: nothing of it ran.
        throw err instanceof LeaderError ? beforeCommit(err, err.message) : err;
      }
      const results: BatchItemPayload[] = [];
      try {
        for (let i = 0; i < items.length; i++) {
          const [sql, params] = items[i];
          try {
            requireOneStatement(sql);
            if (txEffect(sql).last !== "none") {
              throw new SqliteError(
                ErrorCode.BadRequest,
                "Batch statements cannot control transactions: the batch is one already",
              );
            }
            const o = await this.#statement(db, sql, bindArgs(params) as Params, "batch");
            results.push([o.changes, o.lastInsertRowid, o.columns, o.rows]);
          } catch (err) {
            // Lost before the COMMIT was sent: the leader's loss ended the transaction
            // (dqlite replicates a transaction at its commit only), so nothing was applied.
            if (err instanceof LeaderError) {
              throw beforeCommit(err, batchMessage(err.message, i, items.length));
            }
            const e = this.#stopped(err);
            // A cancel's error is the client's own: it is not the batch's.
            if (e !== err && e !== this.#late) throw e;
            throw batchError(e, i, items.length);
          }
        }
        await db.exec(nested ? "RELEASE netsqlite_batch" : "COMMIT");
        return results;
      } catch (err) {
        try {
          if (err instanceof LeaderError) {
            // Outside a transaction of the client's, forget the lost one (no round trip).
            if (!nested) await db.exec("ROLLBACK");
          } else if (nested) {
            await db.exec("ROLLBACK TO netsqlite_batch; RELEASE netsqlite_batch");
            this.#wrote = false; // its writes are undone: the transaction holds none of them
          } else if (db.inTransaction) {
            await db.exec("ROLLBACK");
          }
        } catch {
          // The connection is gone: the leader rolled the transaction back.
        }
        throw err;
      }
    });
  }

  /**
   * Prepares a statement on the leader (checking it compiles) and returns
   * `[handle, columns]`. The handle names the SQL text; each run prepares it
   * on the connection it borrows. Columns are known for SELECT, VALUES and
   * WITH ... SELECT, else empty: read by running the statement made to
   * return no rows (see `withoutRows`; a read: nothing of it can write),
   * which keeps SQLite's names, duplicates included; failing that, from the
   * statement as a subquery, `LIMIT 0` (SQLite renames duplicates there:
   * `x`, `x:1`).
   */
  prepare(sql: string): Promise<PreparePayload> {
    requireOneStatement(sql);
    if (
      (this.#aborted !== null || this.#endedAtCommit) && !this.#closed && endingOf(sql) !== null
    ) {
      // After the engine ended the transaction, a ROLLBACK or COMMIT prepares
      // without being sent: running its handle ends that state as its text
      // does (before, preparing it ended the state and gave handle 0, which
      // no run found).
      checkClusterSql(sql, this.#engine.config);
      return Promise.resolve([this.#handles.add(sql), []]);
    }
    return this.#request(sql, [0, []], undefined, false, async (db) => {
      const stmt = await db.prepare(sql);
      let columns: string[] = [];
      try {
        const head = splitStatements(sql)[0].find((t) => t.kind === "word")?.text;
        if (verbOf(sql) === "read" && head !== "pragma" && head !== "explain") {
          const inner = statementBody(sql);
          const nulls = new Array(stmt.paramCount).fill(null);
          for (const probe of [withoutRows(sql), `SELECT * FROM (${inner}\n) LIMIT 0`]) {
            try {
              columns = (await db.query(probe, nulls)).columns;
              break;
            } catch (err) {
              if (err instanceof LeaderError) throw err;
              // Not usable so: the next probe, else columns stay unknown until it runs.
            }
          }
        }
      } finally {
        await stmt.finalize();
      }
      const handle = this.#handles.add(sql);
      return [handle, columns];
    });
  }

  /**
   * The `RESULT_TOO_LARGE` of a reply the server found past `maxBytes` once
   * encoded (the rows' messages from the node were within it): worded as
   * the engine's own, which does not advise iterate().
   */
  resultTooLarge(maxBytes: number, call: "query" | "batch"): SqliteError {
    return tooLarge(maxBytes, call);
  }

  /** Frees a handle from {@link prepare}. */
  finalize(handle: number): null {
    this.#handles.delete(handle);
    return null;
  }

  /**
   * Runs a statement to its end and opens a cursor over its buffered rows:
   * `[cursorId, columns]`. A read (nothing it runs may write) that fails
   * after returning rows opens one over those, holding the error for the
   * `next` after them, unless the failure ended (or lost) the transaction
   * it ran in: that fails at once, as a write that fails does.
   */
  openCursor(sql: string | number, params: unknown, timeout?: number): Promise<[number, string[]]> {
    const max = this.#engine.config.maxCursors;
    this.#endGoneTxCursors();
    if (this.#cursors.size >= max) {
      throw new SqliteError(
        ErrorCode.BadRequest,
        `Too many open cursors: ${max} per connection; close one first`,
      );
    }
    const text = this.#sqlOf(sql);
    requireOneStatement(text);
    const args = bindArgs(params) as Params;
    const budget = this.#engine.bufferedRows;
    return this.#request(text, [0, []], timeout, false, async (db): Promise<[number, string[]]> => {
      const inTxBefore = db.inTransaction;
      let columns: string[];
      let rows: SqlValue[][];
      let failed: unknown = null;
      // Its rows count against the bytes all cursors may hold: a room of at
      // most --max-result-bytes now, what they take once they are in.
      const room = budget.reserve();
      try {
        ({ columns, rows } = await this.#statement(db, text, args, "iterate", room.bytes));
      } catch (err) {
        const before = rowsBefore(err);
        const keeps = db.inTransaction === inTxBefore && !db.transactionLost;
        if (before === undefined || before.rows.length === 0 || !keeps || mayWrite(text)) {
          budget.release(room.bytes);
          const why = "in cluster mode iterate() buffers the whole result on the server";
          throw bufferedFull(err, room, this.#engine.config.maxResultBytes, why) ?? err;
        }
        ({ columns, rows } = before);
        failed = err;
      }
      const bytes = rowsBytes(rows);
      budget.release(room.bytes - bytes);
      if (this.#closed) {
        budget.release(bytes);
        throw new SqliteError(ErrorCode.ConnectionClosed, "Connection closed");
      }
      const id = this.#nextCursor++;
      const inTx = db.inTransaction;
      this.#cursors.set(id, { columns, rows, at: 0, inTx, failed, bytes });
      return [id, columns];
    });
  }

  /** Forgets cursor `id`, giving back the bytes its rows held. */
  #dropCursor(id: number): void {
    const c = this.#cursors.get(id);
    if (c === undefined) return;
    this.#cursors.delete(id);
    this.#engine.bufferedRows.release(c.bytes);
  }

  /**
   * Returns the next chunk of a cursor: `[rows, done]`. A cursor of a
   * transaction that is gone (its connection to the leader closed: the
   * leader died or was left as hung, or a stop closed it) ends now, with
   * `CURSOR_CLOSED`, rather than hand out more of the lost transaction's
   * rows; so do the transaction's other cursors. A cursor that ended
   * already fails with why it did, once (then it is unknown).
   */
  nextCursor(id: number): [SqlValue[][], boolean] {
    this.#endGoneTxCursors();
    const ended = this.#endedCursors.get(id);
    if (ended !== undefined) {
      this.#endedCursors.delete(id);
      throw ended;
    }
    const c = this.#cursor(id);
    const n = chunkLength(c.rows, c.at, chunkBytesFor(this.#engine.config.maxFrameSize));
    const rows = c.rows.slice(c.at, c.at + n);
    c.at += rows.length;
    if (c.at < c.rows.length) return [rows, false];
    if (c.failed === null) {
      this.#dropCursor(id);
      return [rows, true];
    }
    // Its last rows before the error: it has ended, the error is for the next `next`.
    this.#endCursor(id, c.failed);
    return [rows, false];
  }

  /**
   * Closes a cursor early. One ended already (its transaction ended, its
   * error is still to be told) is forgotten, without error, unless `idle`:
   * closed by the server for idling, it then stays ended, so that its next
   * `next` says why it ended (the first reason), and this throws that
   * reason.
   */
  closeCursor(id: number, idle = false): null {
    this.#endGoneTxCursors();
    const ended = this.#endedCursors.get(id);
    if (ended !== undefined) {
      if (idle) throw ended;
      this.#endedCursors.delete(id);
      return null;
    }
    this.#cursor(id);
    this.#dropCursor(id);
    return null;
  }

  /** Stops the running request where it can be stopped (while its rows arrive). */
  cancel(reason: Error): void {
    this.#cancelled = reason;
    this.#lent?.interrupt(reason);
    this.#stopAcquire?.(reason);
  }

  /**
   * A mark for {@link wroteInTransactionSince}: take it before a request
   * runs. (It counts the requests that wrote inside the client's transaction.)
   */
  get writeMark(): number {
    return this.#txWriteSeq;
  }

  /**
   * True when a request that ran since `mark` was taken wrote inside the
   * client's transaction, and that transaction is still open (neither
   * ended by the client, nor by the engine, nor lost with the leader). A
   * statement counts as a write unless it reads or controls the
   * transaction (told from its text: dqlite does not say whether a
   * statement is read-only), whether it succeeded or failed; a batch
   * inside the transaction counts when it succeeded and one of its items
   * writes; a script, when a write of it is in the transaction left open.
   */
  wroteInTransactionSince(mark: number): boolean {
    return this.#aborted === null && !this.#closed && this.#tx?.inTransaction === true &&
      this.#txWriteSeq > Math.max(mark, this.#txWriteFloor);
  }

  /**
   * The client cancelled a request that had already written inside its
   * open transaction (the write finished before the cancel came, or could
   * not be stopped: dqlite runs an EXEC to its end): the transaction ends,
   * rolled back on the leader by closing its connection (at once, or, while
   * a request of this session runs on it, stopped where it can be, once
   * that request returns). Every request then fails with `TX_ABORTED`
   * naming `reason` until the client sends ROLLBACK (a no-op then). Returns
   * the error for the cancelled request's own reply, or `null` when no
   * transaction was open to end (one lost with the leader fails its
   * requests with `LEADER_LOST` already, and nothing of it was written).
   *
   * A COMMIT already running when the cancel comes is not stopped (it may
   * be replicated already): should it succeed, the transaction is
   * committed, the cancelled write with it, and the COMMIT's reply says so.
   */
  cancelWrites(reason: AbortError): AbortError | null {
    const tx = this.#tx;
    if (this.#closed || this.#aborted !== null || tx === null || !tx.inTransaction) return null;
    this.#aborted = txAborted(reason);
    this.#txWriteFloor = this.#txWriteSeq;
    if (this.#lent === null) {
      this.#endTx(tx);
    } else {
      this.#endWhenDone = this.#aborted;
      this.#lent.interrupt(reason);
    }
    return cancelledAfterWrite(reason);
  }

  /** Nothing to do: requests never wait as `BLOCKED` on a cluster. */
  stopWaiting(): void {}

  /** Ends the session; an open transaction is rolled back (its connection is closed). Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#stopLeaseTimers();
    for (const id of [...this.#cursors.keys()]) this.#dropCursor(id);
    this.#endedCursors.clear();
    this.#handles.clear();
    this.#cancelled = new SqliteError(ErrorCode.ConnectionClosed, "Connection closed");
    this.#lent?.interrupt(this.#cancelled);
    this.#stopAcquire?.(this.#cancelled);
    if (this.#tx !== null && this.#lent === null) {
      this.#engine._pool.discard(this.#tx);
      this.#tx = null;
    }
    this.#engine._forget(this);
  }

  // ---- internals ---------------------------------------------------------

  /**
   * Runs `fn` on this session's transaction connection, or on one borrowed
   * from the pool, with the statement's deadline; keeps the connection when
   * `fn` left a transaction open. `rolledBack` is the answer to a ROLLBACK
   * after the engine ended the transaction itself (`sql` null: a batch).
   * `script`: an `exec` script, whose statements' errors `fn` tells apart
   * itself (a statement that SQLite rolled the transaction back with, or
   * one after the script's own COMMIT). `afterEnding`: the request is the
   * rest of a script whose first statement is the ROLLBACK ending a
   * transaction the engine ended (see {@link #endsEndedTxFirst}): it runs
   * though that state lasts, which `fn` ends.
   */
  #request<T>(
    sql: string | null,
    rolledBack: T,
    timeout: number | undefined,
    script: boolean,
    fn: (db: DqliteDatabase) => Promise<T>,
    afterEnding = false,
  ): Promise<T> {
    if (this.#closed) {
      throw new SqliteError(ErrorCode.ConnectionClosed, "Connection closed");
    }
    const endsTx = sql !== null && txEffect(sql).last === "end";
    // What the first statement ends the transaction with (comments before it skipped).
    const first = sql === null ? null : endingOf(sql);
    const rollback = endsTx && first === "rollback";
    if (this.#aborted !== null && !afterEnding) {
      // The transaction ended on the node: requests fail until the client ends it
      // too. ROLLBACK succeeds; COMMIT fails, and a ROLLBACK right after it succeeds.
      // (A script's first statement says; one that begins with that ROLLBACK and
      // holds more does not come here: see exec.)
      const aborted = this.#aborted;
      if (first === null) throw aborted;
      this.#aborted = null;
      if (first === "rollback") return Promise.resolve(rolledBack);
      this.#endedAtCommit = true;
      throw aborted;
    }
    if (this.#endedAtCommit && !afterEnding) {
      this.#endedAtCommit = false;
      if (first === "rollback" && this.#tx === null) return Promise.resolve(rolledBack);
    }
    if (sql !== null) checkClusterSql(sql, this.#engine.config);
    this.#stopLeaseTimers();
    this.#cancelled = null;
    const commits = endsTx && !rollback;
    // One statement that writes nothing: losing the leader under it changes nothing.
    const reads: WritesNothing = sql === null || endsTx || splitStatements(sql).length > 1 ||
        mayWrite(sql)
      ? null
      : verbOf(sql) === "read"
      ? "read"
      : "control";
    return this.#engine._track(
      this.#borrowAndRun(timeout, sql === null, commits, endsTx, reads, script, fn),
    );
  }

  /**
   * While the engine has ended the client's transaction (`TX_ABORTED`,
   * `TX_TIMEOUT`), text of more than one statement for a call of one
   * (`run`, `query`) is refused with that error, as on a single file,
   * rather than as two statements (`BAD_REQUEST`): nothing of it runs, and
   * the state lasts.
   */
  #refuseWhileEnded(sql: string): void {
    if (this.#aborted !== null && !this.#closed && splitStatements(sql).length > 1) {
      throw this.#aborted;
    }
  }

  /**
   * For an `exec` script of `statements`: true when its first is the
   * ROLLBACK that ends a transaction the engine ended (`TX_ABORTED`,
   * `TX_TIMEOUT`, or after a COMMIT that failed there) and more follow: the
   * statements after it are to run as usual, as the script's next ones, and
   * that state ends when they start on the leader, as for a lone ROLLBACK
   * (see {@link #request}). (Before, the script was answered as run with
   * them dropped, or refused with `TX_ABORTED`; then the state ended here,
   * before the request was sent, and stayed ended when it failed unsent.)
   */
  #endsEndedTxFirst(statements: string[]): boolean {
    if (this.#closed || statements.length < 2 || endingOf(statements[0]) !== "rollback") {
      return false;
    }
    if (this.#aborted !== null) {
      checkClusterSql(statements.slice(1).join("\n"), this.#engine.config);
      return true;
    }
    return this.#endedAtCommit && this.#tx === null;
  }

  /**
   * Runs `fn` with the request's deadline (see {@link #request}); `batch`:
   * the request is a batch, `commits`: a COMMIT (or END), `endsTx`: it ends
   * the transaction, `reads`: one statement that writes nothing (a read, or
   * transaction control that does not end the transaction), or null;
   * `script`: see {@link #request}.
   */
  async #borrowAndRun<T>(
    timeout: number | undefined,
    batch: boolean,
    commits: boolean,
    endsTx: boolean,
    reads: WritesNothing,
    script: boolean,
    fn: (db: DqliteDatabase) => Promise<T>,
  ): Promise<T> {
    const engine = this.#engine;
    const wasInTx = this.#tx !== null;
    const ms = timeout ?? engine.config.statementTimeout;
    // The deadline covers finding the leader and waiting for a pooled connection too.
    this.#late = null;
    const timer = setTimeout(() => {
      const late = this.#late = statementTimeout({ timeout: ms });
      if (this.#lent !== null) this.#lent.interrupt(late);
      else this.#stopAcquire?.(notSent(late, this.#acquireWait()));
    }, ms);
    let db: DqliteDatabase;
    try {
      db = this.#tx ?? await this.#acquire();
    } catch (err) {
      clearTimeout(timer);
      // No leader was reached: nothing of the request was sent.
      if (err instanceof LeaderError) throw describeLeaderError(err, false);
      throw err;
    }
    this.#lent = db;
    this.#wrote = false;
    const stops = db.execStops;
    let cutOff = false;
    try {
      if (this.#cancelled !== null) throw this.#cancelled;
      return await fn(db);
    } catch (caught) {
      const err = this.#stopped(caught);
      if (db.execStops !== stops) {
        cutOff = true;
        throw this.#cutOff(db, err, batch ? wasInTx : db.inTransaction || db.transactionLost);
      }
      if (err !== caught) throw err;
      if (err instanceof LeaderError) {
        engine._leaderChanged();
        // A COMMIT that failed with the leader: a ROLLBACK right after it has nothing to undo.
        // So for a RELEASE of the savepoint that began the transaction: it commits it, so
        // DqliteDatabase ends the transaction instead of keeping it as lost.
        const released = wasInTx && !endsTx && !db.inTransaction && !db.transactionLost;
        if (wasInTx && (endsTx || released) && !db.transactionLost) this.#endedAtCommit = true;
        throw describeLeaderError(
          err,
          db.transactionLost,
          wasInTx && (commits || released),
          released ? null : reads,
        );
      }
      if (wasInTx && err instanceof SqliteError && err.code === ErrorCode.TxAborted) {
        // Stopping a read closed the transaction's connection (see DqliteDatabase):
        // the COMMIT that met it ends the transaction, as on a single file.
        if (endsTx) this.#endedAtCommit = true;
        throw err;
      }
      if (!script && wasInTx && !db.inTransaction && !db.transactionLost) {
        if (!endsTx) return this.#noteAbort(err, batch);
        // The client's COMMIT failed and the transaction was rolled back: it
        // has ended as asked; a ROLLBACK right after it is a no-op.
        this.#endedAtCommit = true;
        throw commitRolledBack(err);
      }
      throw err;
    } finally {
      clearTimeout(timer);
      this.#lent = null;
      this.#late = null;
      this.#noteRan(db);
      // A connection closed under a statement is not reused: a new one replaces it.
      if (cutOff) this.#endTx(db);
      else if (!this.#endAfterRun(db)) this.#keepOrReturn(db);
    }
  }

  /**
   * The error to report for `err` when it is the `SQLITE_INTERRUPT` of a
   * stop (the transaction ended by {@link cancelWrites}, a cancel, the
   * deadline), saying what of the request ran; else `err`.
   */
  #stopped(err: unknown): unknown {
    if (!(err instanceof SqliteError && err.sqliteCode === 9)) return err;
    if (this.#endWhenDone !== null) return this.#endWhenDone;
    if (this.#cancelled !== null) return this.#cancelled;
    const late = this.#late;
    if (late === null) return err;
    switch (err.message) {
      case CONNECT_INTERRUPTED:
        return notSent(late, NOT_OPENED);
      case DRAIN_INTERRUPTED:
        return notSent(
          late,
          "it waited for its node connection, still ending an earlier stopped read",
        );
      case BUSY_INTERRUPTED:
        return notSent(late, "it waited for the writer, held by another connection");
      default:
        return late;
    }
  }

  /**
   * The error of a request whose EXEC a stop cut off (`err`: the stop's, from
   * {@link #stopped}). dqlite cannot stop a running statement: its
   * connection to the leader was closed (see `DqliteDatabase.interrupt`).
   * Inside a transaction that rolled the transaction back; when it was the
   * client's (`clientTx`), the session then refuses requests with
   * `TX_ABORTED` until the client ends it. Outside one, the node may still
   * run the statement to its end and commit it: the outcome is unknown.
   */
  #cutOff(db: DqliteDatabase, err: unknown, clientTx: boolean): unknown {
    if (this.#endWhenDone !== null) {
      // cancelWrites() ended the transaction while this ran: `err` says so.
      this.#endWhenDone = null;
      return err;
    }
    const e = err instanceof SqliteError || err instanceof AbortError
      ? err
      : new SqliteError(ErrorCode.Internal, String(err));
    if (clientTx) {
      this.#aborted = txAborted(e);
      if (e instanceof AbortError) {
        // (`ran`: the statements of its script before the BEGIN of that transaction.)
        const ended = cancelledAfterWrite(e);
        return e.ran === undefined || e.ran === 0
          ? ended
          : new AbortError(ended.message, { cause: e, ran: e.ran });
      }
      return new SqliteError(
        e.code,
        `${e.message}; dqlite cannot stop a running statement, so the server closed its ` +
          "connection to the leader, which rolled back the transaction it was in: end it with " +
          "ROLLBACK (transaction() does so itself), then retry the whole transaction",
        e.sqliteCode,
        { cause: e },
      );
    }
    // (A batch's own transaction: its error says nothing was applied.)
    if (db.execStopInTx) return e;
    if (e instanceof AbortError) {
      // A cancel or a shutdown: the statement may commit all the same, unlike on a single file
      // (`ran`: the statements of its script before it, which did).
      return new AbortError(
        `${e.message}: dqlite cannot stop a running statement, so the server closed its ` +
          "connection to the leader, which may still run it to its end (outcome unknown: the " +
          "write may have been applied, check before retrying)",
        { cause: e, ran: e.ran, mayHaveRun: true },
      );
    }
    return new SqliteError(
      e.code,
      `${e.message}: dqlite cannot stop a running statement, so the server closed its ` +
        "connection to the leader, which may still run it to its end (outcome unknown: the " +
        "write may have been applied, check before retrying)",
      e.sqliteCode,
      { cause: e, mayHaveRun: true },
    );
  }

  /**
   * After a request ran on `db`: counts it when it wrote inside the
   * transaction still open, or notes that the transaction ended (see
   * {@link wroteInTransactionSince}).
   */
  #noteRan(db: DqliteDatabase): void {
    if (!db.inTransaction) this.#txWriteFloor = this.#txWriteSeq;
    else if (this.#wrote) this.#txWriteSeq++;
    this.#wrote = false;
  }

  /**
   * After a request ran on `db`, which {@link cancelWrites} was to end
   * meanwhile: closes the connection when the transaction is still there
   * (open, or lost with the leader), which makes the leader roll it back,
   * and returns true. When the request ended the transaction itself (a
   * COMMIT or ROLLBACK already sent), there is nothing left to end: the
   * session is out of it, and the request's reply tells what happened.
   */
  #endAfterRun(db: DqliteDatabase): boolean {
    const ending = this.#endWhenDone;
    if (ending === null) return false;
    this.#endWhenDone = null;
    if (db.inTransaction || db.transactionLost) {
      this.#endTx(db);
      return true;
    }
    if (this.#aborted === ending) this.#aborted = null;
    return false;
  }

  /**
   * Ends the transaction open on `db`, this session's connection: closing
   * the connection makes the leader roll it back (dqlite replicates a
   * transaction at its COMMIT only, so nothing of it reached another node).
   */
  #endTx(db: DqliteDatabase): void {
    this.#stopLeaseTimers();
    this.#endTxCursors();
    this.#tx = null;
    this.#txSince = 0;
    this.#engine._pool.discard(db);
  }

  /**
   * What the request stopped in {@link #acquire} waited for: a free
   * connection of the pool (all lent), or a new one being opened (finding
   * the leader, or the leader, busy, not answering yet).
   */
  #acquireWait(): string {
    if (!this.#queued) return NOT_OPENED;
    const max = this.#engine.config.poolSize;
    return `it waited for a free connection to the dqlite leader (all ${max} in use: ` +
      "dqlite.poolSize), held by other requests or transactions";
  }

  /**
   * A connection from the pool, or the rejection {@link cancel} or the
   * deadline hands {@link #stopAcquire} first (a connection that arrives
   * after that goes back to the pool unused).
   */
  #acquire(): Promise<DqliteDatabase> {
    const pool = this.#engine._pool;
    this.#queued = false;
    const acquiring = pool.acquire((queued) => this.#queued = queued);
    return new Promise<DqliteDatabase>((resolve, reject) => {
      let settled = false;
      const settle = (): boolean => {
        if (settled) return false;
        settled = true;
        this.#stopAcquire = null;
        return true;
      };
      this.#stopAcquire = (reason) => {
        if (!settle()) return;
        acquiring.then((db) => pool.release(db), () => {});
        reject(reason);
      };
      acquiring.then(
        (db) => settle() ? resolve(db) : undefined,
        (err) => settle() ? reject(err) : undefined,
      );
    });
  }

  #keepOrReturn(db: DqliteDatabase): void {
    const pool = this.#engine._pool;
    // Ended (COMMIT, ROLLBACK, SQLite ended it) or lost with the leader: so are its cursors.
    if (!db.inTransaction) this.#endTxCursors();
    if (!(db.inTransaction || db.transactionLost)) {
      this.#tx = null;
      this.#txSince = 0;
      pool.release(db);
      return;
    }
    if (this.#closed) {
      this.#tx = null;
      pool.discard(db);
      return;
    }
    this.#tx = db;
    const now = performance.now();
    if (this.#txSince === 0) this.#txSince = now;
    const { txIdleTimeout: idleMs, txTimeout: maxMs = 0 } = this.#engine.config;
    // (The timers are cleared at the next request, which renews the idle lease.)
    const expire = (why: LeaseEnd): void => {
      this.#stopLeaseTimers();
      if (this.#tx === null || this.#lent !== null) return;
      // Past both deadlines (the event loop was held past them): it is the age limit.
      if (maxMs > 0 && this.#txSince + maxMs <= performance.now() + 1) why = "age";
      this.#endTxCursors();
      pool.discard(this.#tx);
      this.#tx = null;
      this.#txSince = 0;
      this.#aborted = leaseExpired(why, idleMs, maxMs);
      this.#engine.onLeaseExpired?.(this.id, why);
    };
    if (maxMs > 0) {
      this.#ageTimer = setTimeout(() => expire("age"), Math.max(0, this.#txSince + maxMs - now));
    }
    if (idleMs > 0) this.#idleTimer = new DeadlineTimer(() => expire("idle"), idleMs);
  }

  /** Disarms the open transaction's lease timers. */
  #stopLeaseTimers(): void {
    this.#idleTimer?.clear();
    this.#idleTimer = undefined;
    clearTimeout(this.#ageTimer);
    this.#ageTimer = undefined;
  }

  /**
   * Runs one statement: a read with QUERY, anything else with EXEC (falling
   * back to the other when dqlite refuses it before running it). Changes and
   * the last rowid are reported only for statements that make them, as the
   * single-file engine does: dqlite reports the connection's last values.
   * `rows` says which of its rows the request returns (see {@link Rows}),
   * `maxBytes` how many bytes they may take (a cursor: its room in
   * `bufferedRows`).
   */
  async #statement(
    db: DqliteDatabase,
    sql: string,
    args: Params,
    rows: Rows,
    maxBytes = this.#engine.config.maxResultBytes,
  ): Promise<Outcome> {
    // Stopped between two statements (the stop interrupts the one running only).
    if (this.#late !== null || this.#cancelled !== null || this.#endWhenDone !== null) {
      throw new SqliteError("SQLITE_INTERRUPT", "Interrupted before the statement was sent", 9);
    }
    const writes = db.inTransaction && mayWrite(sql);
    try {
      return await this.#statementOnce(db, sql, args, rows, maxBytes);
    } finally {
      // A failed write counts too (`INSERT OR FAIL` keeps the rows before
      // its error); one that ended the transaction does not.
      if (!db.inTransaction) this.#wrote = false;
      else if (writes) this.#wrote = true;
    }
  }

  async #statementOnce(
    db: DqliteDatabase,
    sql: string,
    args: Params,
    rows: Rows,
    maxBytes: number,
  ): Promise<Outcome> {
    const verb = verbOf(sql);
    const options: QueryOptions = typeof rows === "number"
      ? {
        keep: rows,
        // A get() of a read outside a transaction answers with its first row; closing the
        // connection, should the rest take long to discard, loses nothing there.
        endAfterKept: rows > 0 && !db.inTransaction && !mayWrite(sql),
      }
      : { maxBytes, tooLarge: () => tooLarge(maxBytes, rows) };
    if (verb === "read") {
      try {
        const r = await db.query(sql, args, { ...options, schemaCheck: true });
        return { columns: r.columns, rows: r.rows, changes: 0, lastInsertRowid: 0 };
      } catch (err) {
        if (!refused(err, "Cannot query a statement that returns no columns")) throw err;
      }
      await db.exec(sql, args);
      return { columns: [], rows: [], changes: 0, lastInsertRowid: 0 };
    }
    try {
      const r = await db.exec(sql, args);
      return {
        columns: [],
        rows: [],
        changes: verb === "other" ? 0 : r.rowsAffected,
        lastInsertRowid: verb === "insert" ? await insertedRowid(db, sql, r) : 0,
      };
    } catch (err) {
      if (!refused(err, "Cannot exec a statement that returns rows")) throw err;
    }
    const r = await db.query(sql, args, options);
    return { columns: r.columns, rows: r.rows, changes: 0, lastInsertRowid: 0 };
  }

  /**
   * A request failed inside a transaction and SQLite ended the transaction
   * (`ON CONFLICT ROLLBACK`, `RAISE(ROLLBACK)`, an I/O error): tell the
   * client, and refuse further requests until it sends ROLLBACK, so that
   * none meant for the transaction runs in autocommit.
   */
  #noteAbort(err: unknown, batch = false): never {
    throw this.#aborts(err, batch);
  }

  /**
   * {@link #noteAbort}'s error, which it throws: returned. The requests it
   * refuses name a batch's failed statement's own error (`batch`), as on a
   * single file.
   */
  #aborts(err: unknown, batch = false): unknown {
    if (err instanceof SqliteError && /no transaction is active/.test(err.message)) return err;
    const first = batch && err instanceof SqliteError && err.cause instanceof SqliteError
      ? err.cause
      : err;
    this.#aborted = txAborted(first);
    return txRolledBack(err);
  }

  /**
   * Statement `sql` of a script failed inside a transaction, and SQLite
   * ended the transaction around it: the error to report, as for a request
   * of that one statement (see {@link #noteAbort}; a failed COMMIT that
   * rolled the transaction back has ended it, as asked). Leadership and
   * the engine's own errors (`TX_ABORTED`) are kept as they are.
   */
  #scriptAbort(err: unknown, sql: string): unknown {
    if (!(err instanceof SqliteError) || err instanceof LeaderError) return err;
    if (err.code === ErrorCode.TxAborted) return err;
    if (txEffect(sql).last === "end" && !/^\s*rollback/i.test(sql)) {
      this.#endedAtCommit = true;
      return commitRolledBack(err);
    }
    return this.#aborts(err);
  }

  /**
   * The transaction ended (`lost`: why it was lost, see {@link nextCursor}):
   * cursors opened in it end too (see the class doc).
   */
  #endTxCursors(lost?: string): void {
    for (const [id, c] of this.#cursors) {
      if (c.inTx) {
        this.#endCursor(id, lost === undefined ? cursorTxEnded(id) : cursorTxLost(id, lost));
      }
    }
  }

  /**
   * Ends the cursors of this session's transaction when it is gone (its
   * connection to the leader closed since its last request, which the next
   * request would find): they no longer count as open. Not while a request
   * runs: its end sees to them.
   */
  #endGoneTxCursors(): void {
    if (this.#lent !== null) return;
    const gone = this.#tx?.transactionGone ?? null;
    if (gone !== null) this.#endTxCursors(gone);
  }

  /**
   * Ends cursor `id`: it no longer counts as open, its rows are dropped, and
   * its next `next` throws `why`, once (the newest
   * {@link ENDED_CURSORS_REMEMBERED} are remembered).
   */
  #endCursor(id: number, why: unknown): void {
    this.#dropCursor(id);
    const ended = this.#endedCursors;
    if (ended.size >= ENDED_CURSORS_REMEMBERED) ended.delete(ended.keys().next().value!);
    ended.set(id, why);
  }

  #cursor(id: number): BufferedCursor {
    const c = this.#cursors.get(id);
    if (c === undefined) throw unknownCursor(id);
    return c;
  }

  /** The SQL text to run: `sql` or a handle's, with a deferred BEGIN made immediate. */
  #sqlOf(sql: string | number): string {
    return immediateBegins(typeof sql === "string" ? sql : this.#handles.sql(sql));
  }

  /** The SQL of prepared statement `handle`, or undefined for an unknown one. */
  statementSql(handle: number): string | undefined {
    return this.#handles.has(handle) ? this.#handles.sql(handle) : undefined;
  }
}

/**
 * The rowid an INSERT's EXEC reply reports when the statement inserted a
 * row, else 0 (dqlite reports the pooled connection's last one, maybe another
 * client's), with the single-file engine's rules: a moved rowid is this
 * statement's; so is an unchanged one when it changed rows and cannot update
 * (it got the rowid of a row since removed), unless it inserted into a
 * `WITHOUT ROWID` table, which has no rowid (the table is looked up on the
 * same connection then: one more round trip). An ignored insert or one of 0
 * rows changes none; an upsert that updated leaves the rowid unchanged.
 */
async function insertedRowid(
  db: DqliteDatabase,
  sql: string,
  r: ExecResult,
): Promise<number | bigint> {
  if (r.rowsAffected === 0) return 0;
  if (r.lastInsertId !== r.lastInsertIdBefore) return r.lastInsertId;
  let updates = false;
  scan(sql, (t) => !(updates = t.kind === "word" && t.text === "update"));
  if (updates) return 0;
  const target = insertTarget(sql);
  if (target === null) return r.lastInsertId;
  try {
    const found = await db.query(WITHOUT_ROWID_TABLE, [target.schema, target.name]);
    return found.rows.length > 0 ? 0 : r.lastInsertId;
  } catch {
    // The write is done, and its reply must not become the lookup's error
    // (the leader lost, the deadline passed): keep the reported rowid.
    return r.lastInsertId;
  }
}

/** One row when table ?2 of schema ?1 is a `WITHOUT ROWID` table. */
const WITHOUT_ROWID_TABLE = "SELECT 1 FROM pragma_table_list " +
  "WHERE schema = ?1 COLLATE NOCASE AND name = ?2 COLLATE NOCASE AND wr";

/**
 * The table an `INSERT`/`REPLACE` writes to: the name after its first `INTO`
 * (no CTE holds one), `schema.name` or `name` (schema `main`); null when the
 * text does not say.
 */
function insertTarget(sql: string): { schema: string; name: string } | null {
  const tokens: Token[] = [];
  let into = false;
  // The first INTO, then the four tokens after it: enough for `schema.name (`.
  scan(sql, (t) => {
    if (into) tokens.push(t);
    else into = t.kind === "word" && t.text === "into";
    return tokens.length < 4;
  });
  // A word keeps its case for the lookup (compared without case); a name is dequoted.
  const name = (t: Token | undefined) =>
    t?.kind === "word" ? sql.slice(t.at, t.end) : t?.kind === "name" ? t.text : null;
  const first = name(tokens[0]);
  if (first === null) return null;
  if (tokens[1]?.kind !== "punct" || tokens[1].text !== ".") return { schema: "main", name: first };
  const second = name(tokens[2]);
  return second === null ? null : { schema: first, name: second };
}

function refused(err: unknown, prefix: string): boolean {
  return err instanceof SqliteError && err.code === ErrorCode.BadRequest &&
    err.message.startsWith(prefix);
}

/**
 * A request of one statement that writes nothing: a `read` (SELECT,
 * VALUES, EXPLAIN, a PRAGMA that reports), or transaction `control` that
 * does not end the transaction (BEGIN, SAVEPOINT, RELEASE, ROLLBACK TO; a
 * RELEASE that ends it is told apart after the fact, see #borrowAndRun);
 * null for any other request.
 */
type WritesNothing = "read" | "control" | null;

/**
 * The leadership error with what it means for the request in its message.
 * Inside a transaction that the loss ended, nothing of it was written
 * (dqlite replicates a transaction at its commit only). `commit`: the
 * request is the COMMIT of the client's transaction, which ended with it
 * (or a RELEASE of the savepoint that began it, which commits it too).
 * `reads`: the request is one statement that writes nothing, so whatever
 * the node did of it changed nothing: a read that reached the node says
 * so; transaction control (a `BEGIN` on a connection now closed began
 * nothing) and a request that reached no node (`NO_LEADER`, sent nowhere)
 * end in `not applied: safe to retry`, as every `NO_LEADER` does.
 */
function describeLeaderError(
  err: LeaderError,
  txLost: boolean,
  commit = false,
  reads: WritesNothing = null,
): LeaderError {
  const maybeApplied = err.maybeApplied && !txLost && reads === null;
  // (The advice for a lost transaction is worded as the single-file engine's: transaction()
  // and the ORM adapters send the ROLLBACK themselves.)
  const tail = txLost
    ? "not applied: the transaction is gone; end it with ROLLBACK (transaction() does so " +
      "itself), then retry the whole transaction"
    : reads === "read" && err.code !== DqliteErrorCode.NoLeader
    ? "a read, which changed nothing: safe to retry"
    : reads !== null
    ? "not applied: safe to retry"
    : maybeApplied
    ? "outcome unknown: the write may have been applied, check before retrying"
    : commit
    ? "not applied: the transaction is gone; retry the whole transaction"
    : "not applied: safe to retry";
  // The database's own advice for a transaction lost earlier is the tail's.
  const message = err.message === TX_LOST
    ? "The transaction was lost with the leader, so this request did not run"
    : err.message;
  return new LeaderError(err.code, `${message} (${tail})`, maybeApplied, err.sqliteCode, {
    cause: err,
  });
}

/**
 * What a request stopped while its connection to the leader was being
 * opened waited for: no leader found yet, or the leader not answering yet
 * (busy, e.g. still running a statement stopped earlier).
 */
const NOT_OPENED = "no connection to the dqlite leader could be opened in time";

/** The deadline's error for a request stopped before it was sent (`why`: while it waited for what). */
function notSent(late: SqliteError, why: string): SqliteError {
  return new SqliteError(
    late.code,
    `${late.message}: ${why} (not applied: safe to retry)`,
    late.sqliteCode,
    { mayHaveRun: false },
  );
}

/**
 * The error of statement `n` of a script: from the second on, it says
 * which, and that the statements before it ran (as in SQLite, a script
 * stops at its first error), unless they were `undone` with it (their
 * transaction ended): then those before `txFrom`, the statement that began
 * that transaction, when the script began it. A cancel's error is the
 * client's own, kept as is.
 */
function inScript(err: unknown, n: number, undone: boolean, txFrom = 0): unknown {
  if (n < 2 || !(err instanceof SqliteError)) return err;
  const before = !undone
    ? `; the ${n - 1} before it ran`
    : txFrom > 1
    ? `; the ${txFrom - 1} before statement ${txFrom}, which began the transaction, ran`
    : "";
  const where = `statement ${n} of the script${before}`;
  if (err instanceof LeaderError) {
    return new LeaderError(
      err.code,
      `${err.message} (${where})`,
      err.maybeApplied,
      err.sqliteCode,
      { cause: err },
    );
  }
  return new SqliteError(err.code, `${err.message} (${where})`, err.sqliteCode, { cause: err });
}

/**
 * The error of cursor `id`, opened inside a transaction that was lost
 * (`why`) while it was read.
 */
function cursorTxLost(id: number, why: string): SqliteError {
  return new SqliteError(
    ErrorCode.CursorClosed,
    `Cursor ${id} was closed when its transaction was lost: ${why}; a cursor opened inside a ` +
      "transaction lasts until the transaction ends (end this one with ROLLBACK, then start over)",
  );
}

/**
 * The error of a result past `--max-result-bytes`, naming the call (`call`):
 * in cluster mode a cursor buffers its whole result as well, so iterate()
 * does not help.
 */
function tooLarge(maxBytes: number, call: "query" | "iterate" | "batch"): SqliteError {
  const why = call === "iterate"
    ? "in cluster mode iterate() buffers the whole result on the server"
    : call === "batch"
    ? "batch() returns its statements' rows in one reply, and in cluster mode iterate() " +
      "buffers a whole result on the server too"
    : "query(), all() and values() return the whole result in one reply, and in cluster mode " +
      "iterate() buffers it on the server too";
  return new SqliteError(
    ErrorCode.ResultTooLarge,
    `Result exceeds maxResultBytes ${maxBytes} (--max-result-bytes): ${why}; narrow the query ` +
      "(LIMIT, fewer or smaller columns), or raise --max-result-bytes",
  );
}

function batchError(err: unknown, i: number, n: number): SqliteError {
  const e = err instanceof SqliteError ? err : new SqliteError(ErrorCode.Internal, String(err));
  return new SqliteError(e.code, batchMessage(e.message, i, n), e.sqliteCode, { cause: e });
}

/** The message of a batch whose statement `i` (of `n`) failed with `message`. */
function batchMessage(message: string, i: number, n: number): string {
  return `Batch statement ${i + 1} of ${n} failed, nothing was applied: ${message}`;
}

/**
 * The leadership error `err` of a batch that met it before its COMMIT (or
 * RELEASE) was sent, with `message`: not applied, whatever the node may
 * have run of it ({@link describeLeaderError} adds the tail).
 */
function beforeCommit(err: LeaderError, message: string): LeaderError {
  return new LeaderError(err.code, message, false, err.sqliteCode, { cause: err });
}

/**
 * How the first statement of `sql` ends a transaction: `"rollback"`
 * (ROLLBACK, not ROLLBACK TO), `"commit"` (COMMIT, END), or null (it ends
 * none), read past comments before it.
 */
function endingOf(sql: string): "rollback" | "commit" | null {
  const [first] = statementTexts(sql);
  if (first === undefined || txEffect(first).last !== "end") return null;
  return /^rollback/i.test(first) ? "rollback" : "commit";
}
