/**
 * One client's view of the engine: its requests, run in the order given, on
 * the connection the engine's rules pick (see `engine.ts`). Methods return a
 * result, throw a `SqliteError`, or return {@link BLOCKED} when the request
 * must wait (for the writer, or for the session's group commit); the engine
 * wakes the session to retry.
 *
 * @module
 */

import { ErrorCode, SqliteError } from "../protocol/errors.ts";
import type {
  BatchItemPayload,
  PreparePayload,
  QueryPayload,
  RunPayload,
} from "../protocol/messages.ts";
import { bindArgs } from "./_bind.ts";
import {
  type Prepared,
  readRows,
  type RunLimits,
  runStatement,
  statementTimeout,
  toSqliteError,
} from "./connection.ts";
import { Cursor } from "./cursor.ts";
import type { Engine } from "./engine.ts";

/** Returned by a session method that must wait for the writer. */
export const BLOCKED: unique symbol = Symbol("BLOCKED");

/** One client's view of the engine; requests run in the order given. */
export class EngineSession {
  /** Session number, used in messages to other clients. */
  readonly id: number;
  readonly #engine: Engine;
  readonly #wake: () => void;
  readonly #handles = new Map<number, string>();
  #nextHandle = 1;
  readonly #cursors = new Map<number, Cursor>();
  #nextCursor = 1;
  #waitTimer: ReturnType<typeof setTimeout> | undefined;
  #closed = false;
  /** @internal */ _isWaiting = false;
  /** @internal */ _waitExpired = false;
  /** @internal */ _txExpired = false;
  /** @internal */ _lastActive = 0;
  /** True while this session's last write waits in a group commit. */
  _awaitingCommit = false;
  readonly #onCommit: (error: SqliteError | null) => void;
  #grouping = false;

  /** @internal */
  constructor(
    engine: Engine,
    id: number,
    wake: () => void,
    onCommit: (error: SqliteError | null) => void,
  ) {
    this.#engine = engine;
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
    return this._awaitingCommit;
  }

  /** @internal */
  _groupDone(error: SqliteError | null): void {
    this._awaitingCommit = false;
    if (!this.#closed) this.#onCommit(error);
  }

  /** True while this session owns an open transaction. */
  get inTransaction(): boolean {
    return this.#engine._owns(this);
  }

  /** Runs a script of zero or more statements without parameters. */
  exec(sql: string): null | typeof BLOCKED {
    if (this._awaitingCommit) return BLOCKED;
    if (this._txExpired && this.#endsExpiredTx(sql)) return null;
    const engine = this.#engine;
    if (!engine._acquire(this)) return BLOCKED;
    const writer = engine._writer;
    let touchedTemp = false;
    try {
      for (let at = 0;;) {
        const p = writer.prepareOne(sql, at);
        if (p === null) break;
        at += p.stmt.sourceSQL.length;
        touchedTemp ||= p.touchesTemp;
        runStatement(p, []);
      }
    } finally {
      engine._afterWrite(this, touchedTemp);
    }
    return null;
  }

  /**
   * Runs one statement and returns its columns and rows (arrays).
   *
   * @param timeout Deadline in ms for statements that can be stopped
   *   (recursive ones); defaults to the engine's `statementTimeout`.
   */
  query(sql: string | number, params: unknown, timeout?: number): QueryPayload | typeof BLOCKED {
    const args = bindArgs(params);
    const p = this.#route(this.#sqlOf(sql), true);
    if (p === BLOCKED) return BLOCKED;
    const limits = p.recursive ? this.#limits(timeout) : undefined;
    if (!p.onWriter) return [p.columns, readRows(p, args, limits)];
    if (this.#grouping) {
      return this.#engine._grouped(this, () => [p.columns, readRows(p, args, limits)]);
    }
    try {
      const rows = readRows(p, args, limits);
      return [p.columns, rows];
    } finally {
      this.#engine._afterWrite(this, p.touchesTemp);
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
  ): [number, string[]] | typeof BLOCKED {
    if (this._awaitingCommit) return BLOCKED;
    const engine = this.#engine;
    if (this.#cursors.size >= engine.config.maxCursors) {
      throw new SqliteError(
        ErrorCode.BadRequest,
        `Too many open cursors: ${engine.config.maxCursors} per connection; close one first`,
      );
    }
    const args = bindArgs(params);
    const text = this.#sqlOf(sql);
    this.#failIfExpired();
    const ms = timeout ?? engine.config.statementTimeout;
    let cursor: Cursor | null = null;
    if (engine._owns(this)) {
      this._lastActive = performance.now();
      const p = engine._writer.prepareUncached(text);
      cursor = this.#lazyCursor(p, args, ms, () => {});
    } else {
      const conn = engine._writerHasTemp ? null : engine._borrowReader();
      if (conn !== null) {
        let p: Prepared;
        try {
          p = conn.prepare(text);
        } catch (err) {
          engine._returnReader(conn);
          throw err;
        }
        if (p.readOnly) {
          cursor = this.#lazyCursor(p, args, ms, () => engine._returnReader(conn));
        } else {
          engine._returnReader(conn);
        }
      }
    }
    if (cursor === null) {
      // A write (e.g. INSERT ... RETURNING) outside a transaction: run it to
      // completion on the writer, then stream the materialised rows.
      const p = this.#route(text);
      if (p === BLOCKED) return BLOCKED;
      let rows: unknown[][];
      try {
        rows = readRows(p, args, this.#limits(timeout));
      } finally {
        if (p.onWriter) engine._afterWrite(this);
      }
      cursor = new Cursor(p.columns, rows, ms, () => {});
    }
    const id = this.#nextCursor++;
    this.#cursors.set(id, cursor);
    return [id, cursor.columns];
  }

  /** Returns the next chunk of a cursor: `[rows, done]`. */
  nextCursor(id: number): [unknown[][], boolean] | typeof BLOCKED {
    if (this._awaitingCommit) return BLOCKED;
    const cursor = this.#cursor(id);
    if (this.#engine._owns(this)) this._lastActive = performance.now();
    try {
      const chunk = cursor.next();
      if (chunk[1]) this.#cursors.delete(id);
      return chunk;
    } catch (err) {
      this.#cursors.delete(id);
      throw err;
    }
  }

  /** Closes a cursor early. */
  closeCursor(id: number): null | typeof BLOCKED {
    if (this._awaitingCommit) return BLOCKED;
    this.#cursor(id).close();
    this.#cursors.delete(id);
    return null;
  }

  /**
   * Runs one statement and returns `[changes, lastInsertRowid]`.
   *
   * @param timeout Deadline in ms for recursive statements; defaults to the
   *   engine's `statementTimeout`.
   */
  run(sql: string | number, params: unknown, timeout?: number): RunPayload | typeof BLOCKED {
    const text = this.#sqlOf(sql);
    if (this._txExpired && this.#endsExpiredTx(text)) return [0, 0];
    const args = bindArgs(params);
    const p = this.#route(text, true);
    if (p === BLOCKED) return BLOCKED;
    const limits = p.recursive ? this.#limits(timeout) : undefined;
    const exec = (): RunPayload =>
      limits === undefined ? runStatement(p, args) : this.#runLimited(p, args, limits);
    if (!p.onWriter) return exec();
    if (this.#grouping) return this.#engine._grouped(this, exec);
    try {
      return exec();
    } finally {
      this.#engine._afterWrite(this, p.touchesTemp);
    }
  }

  /**
   * Runs statements atomically: all take effect or none does. Inside an open
   * transaction the batch is a savepoint of it.
   */
  batch(items: ReadonlyArray<readonly [string, unknown]>): BatchItemPayload[] | typeof BLOCKED {
    if (this._awaitingCommit) return BLOCKED;
    this.#failIfExpired();
    const engine = this.#engine;
    if (!engine._acquire(this)) return BLOCKED;
    const writer = engine._writer;
    const nested = writer.inTransaction;
    try {
      writer.db.exec(nested ? "SAVEPOINT netsqlite_batch" : "BEGIN IMMEDIATE");
      const results: BatchItemPayload[] = [];
      try {
        for (let i = 0; i < items.length; i++) results.push(this.#batchItem(items, i));
        writer.db.exec(nested ? "RELEASE netsqlite_batch" : "COMMIT");
      } catch (err) {
        if (writer.inTransaction) {
          writer.db.exec(
            nested ? "ROLLBACK TO netsqlite_batch; RELEASE netsqlite_batch" : "ROLLBACK",
          );
        }
        throw err;
      }
      return results;
    } catch (err) {
      throw toSqliteError(err);
    } finally {
      engine._afterWrite(this);
    }
  }

  /** Prepares a statement server-side and returns `[handle, columns]`. */
  prepare(sql: string): PreparePayload | typeof BLOCKED {
    if (this._awaitingCommit) return BLOCKED;
    const p = this.#route(sql);
    if (p === BLOCKED) return BLOCKED;
    if (p.onWriter) this.#engine._afterWrite(this);
    const handle = this.#nextHandle++;
    this.#handles.set(handle, sql);
    return [handle, p.columns];
  }

  /** Frees a handle from {@link prepare}. */
  finalize(handle: number): null | typeof BLOCKED {
    if (this._awaitingCommit) return BLOCKED;
    if (!this.#handles.delete(handle)) throw unknownHandle(handle);
    return null;
  }

  /** Stops the request now running on this session, if any (issue 11: not implemented yet). */
  cancel(): void {}

  /** Rolls back this session's transaction, leaves the queue. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this._stopWaiting();
    this.#engine._leaveQueue(this);
    for (const c of this.#cursors.values()) c.close();
    this.#cursors.clear();
    this.#engine._abort(this);
    this.#handles.clear();
    this.#engine._forget(this);
  }

  // ---- internals ---------------------------------------------------------

  /** @internal */
  _wake(): void {
    if (!this.#closed) this.#wake();
  }

  /** @internal */
  _startWaiting(ms: number): void {
    this._isWaiting = true;
    this.#waitTimer = setTimeout(() => {
      this.#waitTimer = undefined;
      this._isWaiting = false;
      this._waitExpired = true;
      this.#engine._leaveQueue(this);
      this._wake();
    }, ms);
  }

  /** @internal */
  _stopWaiting(): void {
    this._isWaiting = false;
    if (this.#waitTimer !== undefined) {
      clearTimeout(this.#waitTimer);
      this.#waitTimer = undefined;
    }
  }

  /**
   * Runs a recursive statement for its effect under `limits`. A read is
   * stepped row by row and stopped at the deadline. node:sqlite cannot stop a
   * running write, so a write's deadline is checked when it ends: past it, the
   * write is undone (it ran in a savepoint) and fails with `STATEMENT_TIMEOUT`.
   */
  #runLimited(p: Prepared, args: unknown[], limits: RunLimits): RunPayload {
    if (p.readOnly) {
      readRows(p, args, { ...limits, maxBytes: Infinity });
      return [0, 0];
    }
    const db = this.#engine._writer.db;
    const undo = (): void => {
      try {
        db.exec("ROLLBACK TO netsqlite_deadline; RELEASE netsqlite_deadline");
      } catch {
        // The statement already ended the transaction (e.g. OR ROLLBACK).
      }
    };
    db.exec("SAVEPOINT netsqlite_deadline");
    let result: RunPayload;
    try {
      result = runStatement(p, args);
    } catch (err) {
      undo();
      throw err;
    }
    if (performance.now() > limits.deadline) {
      undo();
      throw statementTimeout(limits);
    }
    db.exec("RELEASE netsqlite_deadline");
    return result;
  }

  #limits(timeout: number | undefined): RunLimits {
    const config = this.#engine.config;
    const ms = timeout ?? config.statementTimeout;
    return { deadline: performance.now() + ms, timeout: ms, maxBytes: config.maxResultBytes };
  }

  #lazyCursor(p: Prepared, args: unknown[], timeout: number, release: () => void): Cursor {
    p.stmt.setReadBigInts(true);
    try {
      return new Cursor(p.columns, p.stmt.iterate(...args) as Iterator<unknown[]>, timeout, () => {
        p.stmt.setReadBigInts(!p.readOnly);
        release();
      });
    } catch (err) {
      p.stmt.setReadBigInts(!p.readOnly);
      release();
      throw toSqliteError(err);
    }
  }

  #cursor(id: number): Cursor {
    const cursor = this.#cursors.get(id);
    if (cursor === undefined) {
      throw new SqliteError(
        ErrorCode.UnknownStatement,
        `Unknown cursor ${id}: it is finished, was closed, or never opened on this connection`,
      );
    }
    return cursor;
  }

  #sqlOf(sql: string | number): string {
    if (typeof sql === "string") return sql;
    const text = this.#handles.get(sql);
    if (text === undefined) throw unknownHandle(sql);
    return text;
  }

  /**
   * Picks the connection for one statement: the writer for the owner and for
   * writes (queueing if needed), a reader for everyone else's reads.
   */
  #route(sql: string, groupable = false): Prepared | typeof BLOCKED {
    this.#failIfExpired();
    this.#grouping = false;
    const engine = this.#engine;
    if (engine._owns(this)) {
      this._lastActive = performance.now();
      return engine._writer.prepare(sql);
    }
    const reader = engine._writerHasTemp ? null : engine._snapshotReader();
    let group = false;
    if (reader !== null) {
      // A statement the reader cannot prepare fails here, without waiting.
      const p = reader.prepare(sql);
      if (p.readOnly) return this._awaitingCommit ? BLOCKED : p;
      group = groupable && engine._groupable(p);
    }
    // Behind a write awaiting its group commit, only more grouped writes may
    // go on (they see it); anything else waits for the commit.
    if (this._awaitingCommit && !group) return BLOCKED;
    if (!engine._acquire(this, group)) return BLOCKED;
    this.#grouping = group;
    try {
      return engine._writer.prepare(sql);
    } catch (err) {
      if (group) engine._release(this);
      else engine._afterWrite(this);
      throw err;
    }
  }

  #batchItem(items: ReadonlyArray<readonly [string, unknown]>, i: number): BatchItemPayload {
    const [sql, params] = items[i];
    try {
      const p = this.#engine._writer.prepare(sql);
      if (p.txOp !== null) {
        throw new SqliteError(
          ErrorCode.BadRequest,
          "Batch statements cannot control transactions: the batch is one already",
        );
      }
      const args = bindArgs(params);
      if (p.columns.length === 0) return [...runStatement(p, args), [], []];
      const rows = readRows(p, args);
      if (p.readOnly) return [0, 0, p.columns, rows];
      const [changes, lastId] = readRows(
        this.#engine._writer.prepare("SELECT changes(), last_insert_rowid()"),
        [],
      )[0] as [number, number];
      return [changes, lastId, p.columns, rows];
    } catch (err) {
      const e = toSqliteError(err);
      throw new SqliteError(
        e.code,
        `Batch statement ${i + 1} of ${items.length} failed, nothing was applied: ${e.message}`,
        e.sqliteCode,
        { cause: e },
      );
    }
  }

  #failIfExpired(): void {
    if (this._txExpired) throw txTimeout(this.#engine.config.txIdleTimeout);
  }

  /**
   * After a lease expiry, requests fail with `TX_TIMEOUT` until the client
   * ends the (already rolled back) transaction. A ROLLBACK succeeds; COMMIT
   * fails but also ends the aborted state.
   */
  #endsExpiredTx(sql: string): boolean {
    let op = null;
    try {
      op = this.#engine._writer.prepareOne(sql, 0)?.txOp ?? null;
    } catch {
      // Not a statement we can read: fall through to TX_TIMEOUT.
    }
    if (op === "ROLLBACK" || op === "COMMIT") this._txExpired = false;
    if (op === "ROLLBACK") return true;
    throw txTimeout(this.#engine.config.txIdleTimeout);
  }
}

function unknownHandle(handle: number): SqliteError {
  return new SqliteError(
    ErrorCode.UnknownStatement,
    `Unknown statement handle ${handle}: it was finalized or never prepared on this connection`,
  );
}

function txTimeout(ms: number): SqliteError {
  return new SqliteError(
    ErrorCode.TxTimeout,
    `Transaction was rolled back after ${ms} ms idle (--tx-idle-timeout); ` +
      "send ROLLBACK to end it, then retry the whole transaction",
  );
}
