/**
 * One database on a dqlite cluster's leader, over one connection: see
 * {@link DqliteDatabase}. Opened with `DqliteCluster.open()`.
 *
 * Leadership: when the node stops being the leader, or the connection
 * breaks, the running request fails with {@link LeaderError} (`NOT_LEADER`
 * or `LEADER_LOST`) and nothing is retried; the next request finds the new
 * leader by itself. When the loss happened inside a transaction, that
 * transaction is gone: every request then fails with `LEADER_LOST` until the
 * caller ends it with `ROLLBACK` (which succeeds) or `COMMIT` (which fails
 * with `LEADER_LOST`, `maybeApplied` false: dqlite replicates a transaction
 * only at its commit, so nothing of it was written).
 *
 * A row set stopped early (interrupt, deadline, `maxBytes`) fails at once;
 * what the node still sends is drained in the background, and the next
 * request on this database waits for that (so does one made while the
 * stopped one ran: requests take turns). A query that keeps its first
 * rows alone (`keep`, `endAfterKept`: a `get()` outside a transaction) ends
 * its row set so too, answered with those rows. When the drain takes too long the
 * connection is closed (see {@link DqliteDatabase.interrupt}); inside a
 * transaction that ends the transaction, and every request then fails with
 * `TX_ABORTED` naming why the read was stopped, until `ROLLBACK` (a no-op)
 * or `COMMIT` (which fails with it too) ends it: no leader was lost.
 *
 * An EXEC interrupted while the node runs it fails at once too; dqlite
 * cannot stop it, so its connection is closed at once (see
 * {@link DqliteDatabase.interrupt}): a transaction open on it is lost as
 * above, and outside one the node may still run the statement to its end.
 *
 * A connection found dead while idle (the node closed it between requests:
 * see `DqliteConn`) is replaced before the next request is sent, through the
 * usual leader discovery, so that request waits for the new leader instead
 * of failing; inside a transaction, the transaction is lost as above
 * (`maybeApplied` false: nothing of it was committed).
 *
 * A leader that stops answering (hung) has its connections closed by the
 * cluster's leader watch once another node leads (see `DqliteCluster`): a
 * request waiting there fails with `LEADER_LOST` (`maybeApplied` true), and
 * an idle connection is as one found dead while idle.
 *
 * @module
 */

import { AbortError, ErrorCode, SqliteError } from "../../protocol/errors.ts";
import { txAborted } from "../session_errors.ts";
import { DeadlineTimer } from "../deadline_timer.ts";
import type { SqlValue } from "../binding/binding.ts";
import { type DqliteConn, expectResponse, type Received } from "./conn.ts";
import { DqliteErrorCode, failureError, LeaderError } from "./errors.ts";
import { DqliteStatement } from "./statement.ts";
import {
  controlsOnly,
  noTxEffect,
  positionalArgs,
  type TxEffect,
  txEffect,
  writesRows,
} from "./_sql_scan.ts";
import {
  encodeExecSql,
  encodeInterrupt,
  encodeOpen,
  encodeQuerySql,
  type FailureResponse,
  WORD,
} from "./wire.ts";

/**
 * Message of the `SQLITE_INTERRUPT` of a request interrupted (deadline,
 * cancel) while its connection to the leader was being made, or was still
 * draining an earlier stopped read: it was not sent.
 */
export const CONNECT_INTERRUPTED =
  "Interrupted while connecting to the dqlite leader: nothing was sent";

/**
 * Message of the `SQLITE_INTERRUPT` of a request interrupted while it waited
 * for its node connection to end an earlier stopped read (see
 * {@link DqliteDatabase.interrupt}): it was not sent.
 */
export const DRAIN_INTERRUPTED =
  "Interrupted while the node connection was still ending an earlier stopped read: nothing was sent";

/**
 * Message of the `SQLITE_INTERRUPT` of a statement interrupted while it
 * waited to try again after `SQLITE_BUSY` (the writer held by another
 * connection): it did not run.
 */
export const BUSY_INTERRUPTED =
  "Interrupted while waiting for the writer, held by another connection: the statement did not run";

/**
 * Message of the `SQLITE_INTERRUPT` of an EXEC interrupted while the node
 * ran it: dqlite cannot stop it, so its connection was closed (see
 * {@link DqliteDatabase.interrupt}); the node may still run it to its end.
 */
export const EXEC_INTERRUPTED =
  "Interrupted while the dqlite leader ran the statement: its connection was closed";

/**
 * Message of the `LEADER_LOST` of a request after the transaction it was
 * meant for was lost with the leader (see {@link DqliteDatabase.transactionLost}).
 */
export const TX_LOST =
  "The transaction was lost with the leader: end it with ROLLBACK, then start over";

/**
 * Run on every connection to the leader once its database is opened, before
 * its first request (so after each reconnection and leader change too).
 *
 * `cache_spill = OFF`: SQLite spills dirty pages out of a connection's page
 * cache in the middle of a write transaction once more than the spill
 * threshold of them are dirty (483 with the default 2000 KiB cache and
 * 4 KiB pages), and dqlite 1.11's VFS cannot read a spilled page back: the
 * statement then fails with `SQLITE_IOERR_SHORT_READ` (a large `REINDEX`,
 * an `UPDATE` of every key of a large table). With spilling off, a
 * transaction's dirty pages stay in the leader's page cache (growing past
 * `cache_size` as needed) until its commit. The setting is the
 * connection's own, and applies to every database attached to it.
 */
export const CONNECTION_PRAGMAS: readonly string[] = ["PRAGMA cache_spill = OFF"];

/** Result of {@link DqliteDatabase.exec}. */
export interface ExecResult {
  /** `sqlite3_last_insert_rowid()` after the (last) statement. */
  lastInsertId: number | bigint;
  /** `sqlite3_changes()` of the (last) statement. */
  rowsAffected: number;
  /**
   * The connection's `lastInsertId` before this request (from the previous
   * EXEC reply on it; 0 on a new connection): an unchanged value means the
   * statement inserted nothing, or got the rowid of a row since removed.
   */
  lastInsertIdBefore: number | bigint;
}

/** Result of {@link DqliteDatabase.query}. */
export interface QueryResult {
  /** Column names. */
  columns: string[];
  /** Rows, each an array of values in column order. */
  rows: SqlValue[][];
}

/** Options of {@link DqliteDatabase.query}. */
export interface QueryOptions {
  /**
   * Stop with `RESULT_TOO_LARGE` once the result's messages pass this many
   * bytes (the rest is read and discarded to keep the connection in step).
   * @default Infinity
   */
  maxBytes?: number;
  /**
   * The error for a result past {@link maxBytes}.
   * @default `RESULT_TOO_LARGE` naming maxBytes
   */
  tooLarge?: () => SqliteError;
  /**
   * Rows to keep: the first `keep` rows are returned, the rest of the row
   * set is read and discarded, one message at a time, and {@link maxBytes}
   * does not apply (the caller holds `keep` rows at most: a `get()` keeps
   * 1, a `run()` or script 0). An error the node reports after the kept
   * rows does not fail a query that keeps at least one (as a single file's
   * `get()` steps once and never meets it); with `keep` 0 it does.
   * @default Infinity
   */
  keep?: number;
  /**
   * With {@link keep} > 0: once the kept rows arrived, answer at once and
   * end the row set as a stop does (see {@link DqliteDatabase.interrupt}):
   * INTERRUPT, what the node still sends discarded in the background for
   * up to 250 ms, then the connection closed. Only for a statement that
   * writes nothing, outside a transaction (closing the connection would
   * end it).
   * @default false
   */
  endAfterKept?: boolean;
  /**
   * Outside a transaction, read the schema version on the same connection
   * before (or the one read after the last such read there) and after the
   * query, and run the query again when it moved (at most
   * {@link SCHEMA_RUNS} runs, then `SQLITE_SCHEMA`): see
   * {@link DqliteDatabase.query}. Only for a statement that writes nothing.
   * @default false
   */
  schemaCheck?: boolean;
}

/** Runs of a read whose schema version keeps moving before it fails with `SQLITE_SCHEMA`. */
export const SCHEMA_RUNS = 5;
/** The query that reads the schema version (SQLite's schema cookie). */
const SCHEMA_PROBE = "SELECT schema_version FROM pragma_schema_version";

/**
 * Statement parameters: positional, or named (keys with their prefix, `:a`,
 * `@a`, `$a`, or bare `a`). dqlite binds by index only: named arguments are
 * numbered from the SQL text as SQLite numbers them (see `positionalArgs`).
 */
export type Params =
  | readonly (SqlValue | boolean)[]
  | Readonly<Record<string, SqlValue | boolean>>;

/** The effect recorded when a transaction's connection dies between its requests. */
const IDLE_EFFECT: TxEffect = noTxEffect();
const noChange = (): ExecResult => ({ lastInsertId: 0, rowsAffected: 0, lastInsertIdBefore: 0 });
const noRows = (): QueryResult => ({ columns: [], rows: [] });
/**
 * How long a stopped row set may take to end (its remaining messages are
 * read and discarded) before its connection is closed instead.
 */
const DRAIN_MS = 250;
const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * One database on the cluster's leader, over one connection: statements run
 * one at a time, in order; a transaction begun with `exec("BEGIN")` stays on
 * this connection.
 */
export class DqliteDatabase {
  readonly #connectLeader: () => Promise<DqliteConn>;
  readonly #name: string;
  readonly #onClose: () => void;
  readonly #busyTimeout: number;
  #conn: DqliteConn | null = null;
  #generation = 0;
  #closed = false;
  #inTx = false;
  /** True when the open transaction began with SAVEPOINT (RELEASE may end it). */
  #bySavepoint = false;
  /** The name of the SAVEPOINT that began the open transaction (lowercased), or null. */
  #txSavepoint: string | null = null;
  #txLost = false;
  #txLostMaybeApplied = false;
  /** Set when the transaction was lost because a stop closed its connection (see {@link #stop}). */
  #txLostBy: SqliteError | null = null;
  #interrupt = false;
  /** Why {@link interrupt} was called (the caller's cancel or deadline), if it said. */
  #interruptReason: Error | null = null;
  /** The drain of a stopped row set under way in the background (see {@link #stop}). */
  #draining: Promise<void> | null = null;
  /**
   * Settles when the last request made is answered: the next one starts
   * then (see {@link #run}). A request made while another runs would else
   * pass the {@link #draining} check before that one is stopped, take the
   * connection, and find it closed under it when the drain runs out of time:
   * `LEADER_LOST`, though nothing was lost.
   */
  #turn: Promise<void> = Promise.resolve();
  /** Requests made and not yet answered (see {@link #turn}). */
  #unanswered = 0;
  /** Connections {@link #stop} closed, with the error to report for a transaction lost so. */
  readonly #stopClosed = new WeakMap<DqliteConn, SqliteError>();
  /** Errors {@link #stop} threw: the statement was stopped, SQLite did not fail it. */
  readonly #stopErrors = new WeakSet<Error>();
  /** Counts the EXECs {@link interrupt} cut off (see {@link execStops}). */
  #execStops = 0;
  /** True when the last EXEC cut off ran inside a transaction. */
  #execStopInTx = false;
  /** Wakes a {@link query} waiting for the node's next message, to stop it. */
  #wake: (() => void) | null = null;
  #connecting: Promise<void> | null = null;
  /** Per connection, the lastInsertId of its last EXEC reply. */
  readonly #lastInsert = new WeakMap<DqliteConn, number | bigint>();
  /** Per connection, the schema version read after its last checked query (see {@link query}). */
  readonly #schemaVersions = new WeakMap<DqliteConn, number | bigint>();

  /** @internal Use {@link DqliteCluster.open}. */
  constructor(
    connectLeader: () => Promise<DqliteConn>,
    name: string,
    busyTimeout: number,
    onClose: () => void,
  ) {
    this.#connectLeader = connectLeader;
    this.#name = name;
    this.#busyTimeout = busyTimeout;
    this.#onClose = onClose;
  }

  /** The database name. */
  get name(): string {
    return this.#name;
  }

  /**
   * True while this database holds an open connection to a node: false
   * before the first, once the node closed it or it was closed (a stopped
   * read, a leader change, {@link close}), until a request connects anew.
   */
  get connected(): boolean {
    return this.#conn !== null && !this.#conn.closed;
  }

  /** The leader this database is connected to, or null between connections. */
  get address(): string | null {
    return this.#conn?.address ?? null;
  }

  /**
   * True while a transaction is open, as far as the statements run tell
   * (`BEGIN`/`SAVEPOINT` open one, `COMMIT`/`END`/`ROLLBACK` close it; dqlite
   * does not report SQLite's autocommit state). After a statement fails
   * inside a transaction, or a RELEASE in one SAVEPOINT opened, the node is
   * asked (one more round trip): SQLite may have ended the transaction.
   */
  get inTransaction(): boolean {
    return this.#inTx;
  }

  /**
   * True after the leader was lost inside a transaction, until `ROLLBACK` or
   * `COMMIT` ends it: until then every other request fails with `LEADER_LOST`
   * (`TX_ABORTED` when the transaction was lost because stopping a read
   * closed its connection).
   */
  get transactionLost(): boolean {
    return this.#txLost;
  }

  /**
   * Why the transaction open here is gone, or null when it is not (or none
   * is open): lost ({@link transactionLost}), or its connection closed since
   * its last request, which the next request will find (the node died or was
   * left as hung, or a stop closed it). A cursor of that transaction ends
   * then (see `DqliteEngineSession.nextCursor`).
   */
  get transactionGone(): string | null {
    if (this.#txLost) {
      return this.#txLostBy?.message ?? "its connection to the dqlite leader was lost";
    }
    const conn = this.#conn;
    if (!this.#inTx || conn === null || !conn.closed) return null;
    const stopped = this.#stopClosed.get(conn);
    if (stopped !== undefined) return stopped.message;
    return `its connection to the dqlite leader "${conn.address}" closed (${
      conn.closedWhileIdle ?? "it broke"
    })`;
  }

  /**
   * Counts the EXEC requests cut off by {@link interrupt} while the node ran
   * them (their connection was closed, which rolled back a transaction
   * open on it; the node may still run an autocommit statement to its end).
   */
  get execStops(): number {
    return this.#execStops;
  }

  /**
   * True when the last EXEC cut off (see {@link execStops}) ran inside a
   * transaction, which its connection's close rolled back: nothing of it
   * was applied.
   */
  get execStopInTx(): boolean {
    return this.#execStopInTx;
  }

  /** Counts reconnections: a statement prepared under another generation is prepared again. */
  get generation(): number {
    return this.#generation;
  }

  /** The open connection, or a new one to the (new) leader; concurrent callers share it. */
  async #connection(): Promise<DqliteConn> {
    if (this.#conn !== null && !this.#conn.closed) return this.#conn;
    this.#connecting ??= this.connect().finally(() => this.#connecting = null);
    await this.#connecting;
    return this.#conn!;
  }

  /**
   * {@link #connection}, or `SQLITE_INTERRUPT` ({@link CONNECT_INTERRUPTED})
   * as soon as {@link interrupt} is called while it is being made (nothing
   * was sent; the connection, once made, serves the next request).
   */
  async #connectionOrInterrupt(): Promise<DqliteConn> {
    if (this.#conn !== null && !this.#conn.closed) return this.#conn;
    const connecting = this.#connection();
    connecting.catch(() => {}); // observed below, or by nobody once interrupted
    let wake!: () => void;
    const interrupted = new Promise<null>((resolve) => wake = () => resolve(null));
    this.#wake = wake;
    try {
      const conn = await Promise.race([connecting, interrupted]);
      if (conn === null) throw new SqliteError("SQLITE_INTERRUPT", CONNECT_INTERRUPTED, 9);
      return conn;
    } finally {
      this.#wake = null;
    }
  }

  /**
   * @internal Connects to the leader and opens the database.
   *
   * @throws {SqliteError} `CONNECTION_CLOSED` when the database is closed, or
   *   was closed while connecting (the new connection is closed then, not kept).
   */
  async connect(): Promise<void> {
    if (this.#closed) {
      throw new SqliteError(ErrorCode.ConnectionClosed, `Database "${this.#name}" is closed`);
    }
    let conn: DqliteConn;
    try {
      conn = await this.#connectLeader();
    } catch (err) {
      this.#stillOpen(); // (closing the cluster ends its search: say so as the database)
      throw err;
    }
    try {
      this.#stillOpen();
      expectResponse(await conn.call(encodeOpen(this.#name)), "db", conn.address);
      // A new leader may not have applied every committed entry yet, and dqlite 1.11
      // prepares a statement before its Raft barrier: a table created just before a
      // failover would be "no such table" there. A query runs the barrier first.
      await this.#rows(conn, encodeQuerySql(0, "SELECT 1", []), {});
      // See CONNECTION_PRAGMAS: before the connection's first request, on every new one.
      for (const sql of CONNECTION_PRAGMAS) {
        expectResponse(await conn.call(encodeExecSql(0, sql, [])), "result", conn.address);
      }
      this.#stillOpen();
    } catch (err) {
      conn.close();
      // The leader was lost while the database was opened on it: nothing of the request
      // this connection was made for was sent.
      if (err instanceof LeaderError && err.maybeApplied) {
        throw new LeaderError(err.code, err.message, false, err.sqliteCode, { cause: err });
      }
      throw err;
    }
    this.#conn = conn;
    this.#generation++;
  }

  /** Throws `CONNECTION_CLOSED` when {@link close} ran while a connection was being made. */
  #stillOpen(): void {
    if (this.#closed) {
      throw new SqliteError(
        ErrorCode.ConnectionClosed,
        `Database "${this.#name}" was closed while connecting to the dqlite leader`,
      );
    }
  }

  /**
   * Runs `sql` (every statement of it; `params` bind to the first) and
   * reports the last statement's changes. A statement that returns rows is
   * refused: use {@link query}.
   *
   * @throws {SqliteError} SQLite's error (e.g. `SQLITE_CONSTRAINT_UNIQUE`), `INVALID_PARAM`.
   * @throws {LeaderError} `NOT_LEADER`, `LEADER_LOST` or `NO_LEADER`.
   */
  exec(sql: string, params: Params = []): Promise<ExecResult> {
    return this.#run(sql, async (conn) => {
      const args = positionalArgs(sql, params);
      const r = expectResponse(
        await this.execCall(conn, encodeExecSql(0, sql, args), sql),
        "result",
        conn.address,
      );
      return this.noteExec(conn, r);
    }, noChange);
  }

  /**
   * Runs the first statement of `sql` and returns its rows (all of them,
   * however many messages they take, or the first `options.keep`).
   *
   * With `options.schemaCheck`, outside a transaction, a read whose schema
   * version moved while it ran is run again: a dqlite 1.11 leader can answer
   * a read run while another connection changes the schema (`ALTER TABLE`,
   * `DROP` then `CREATE`) with the column names of one schema and the
   * values of the other (`["a","b"]` with `["x","y"]`). The version is read
   * on the same connection after the query, and compared with the one read
   * after the previous checked query there (read before it on a new
   * connection). A read stopped or ended early (`endAfterKept`) is not
   * checked: its connection is draining.
   *
   * @throws {SqliteError} SQLite's error, `INVALID_PARAM`, `RESULT_TOO_LARGE`, `SQLITE_INTERRUPT`,
   *   `SQLITE_SCHEMA` (the schema moved under {@link SCHEMA_RUNS} runs in a row).
   * @throws {LeaderError} `NOT_LEADER`, `LEADER_LOST` or `NO_LEADER`.
   */
  query(sql: string, params: Params = [], options: QueryOptions = {}): Promise<QueryResult> {
    return this.#run(
      sql,
      (conn) => {
        const message = encodeQuerySql(0, sql, positionalArgs(sql, params));
        return options.schemaCheck === true && !this.#inTx
          ? this.#checkedRows(conn, message, options)
          : this.#rows(conn, message, options);
      },
      noRows,
    );
  }

  /** {@link #rows}, run again while the schema version moves (see {@link query}). */
  async #checkedRows(
    conn: DqliteConn,
    message: Uint8Array,
    options: QueryOptions,
  ): Promise<QueryResult> {
    for (let run = 1;; run++) {
      const before = this.#schemaVersions.get(conn) ?? await this.#schemaVersion(conn);
      let result: QueryResult | null = null;
      let failure: unknown = null;
      try {
        result = await this.#rows(conn, message, options);
      } catch (err) {
        // Stops and leadership errors are not the statement's: they end the request.
        if (!(err instanceof SqliteError) || err instanceof LeaderError) throw err;
        if (this.#stopErrors.has(err) || err.sqliteCode === undefined) throw err;
        failure = err; // (SQLite's error: "no such column" may be the schema change's too)
      }
      // Ended early or stopped: the connection drains (or closed), nothing more to ask it.
      if (this.#draining !== null || conn.closed) {
        if (result === null) throw failure;
        return result;
      }
      const after = await this.#schemaVersion(conn);
      this.#schemaVersions.set(conn, after);
      if (after === before) {
        if (result === null) throw failure;
        return result;
      }
      if (run === SCHEMA_RUNS) {
        throw new SqliteError(
          "SQLITE_SCHEMA",
          `The database schema changed while the read ran, ${SCHEMA_RUNS} times in a row ` +
            "(another client altered it meanwhile): retry the read",
          17,
        );
      }
    }
  }

  /** The schema version (SQLite's schema cookie) read on `conn`. */
  async #schemaVersion(conn: DqliteConn): Promise<number | bigint> {
    const { rows } = await this.#rows(conn, encodeQuerySql(0, SCHEMA_PROBE, []), {});
    return rows[0][0] as number | bigint;
  }

  /**
   * Prepares the first statement of `sql` on the leader.
   *
   * @throws {SqliteError} SQLite's error when the statement does not compile.
   * @throws {LeaderError} `NOT_LEADER`, `LEADER_LOST` or `NO_LEADER`.
   */
  async prepare(sql: string): Promise<DqliteStatement> {
    const stmt = new DqliteStatement(this, sql);
    await stmt.ensure();
    return stmt;
  }

  /**
   * Stops the running request: it fails with `SQLITE_INTERRUPT` at once.
   *
   * A {@link query} fails without waiting for the node's next message.
   * (dqlite 1.11 reads the INTERRUPT request only once the row set is fully
   * sent: what still arrives within 250 ms is discarded, in the background;
   * past that, the connection is closed, which makes the node finalize the
   * statement, and the next request opens a new one. Inside a transaction,
   * that loses the transaction: see {@link transactionLost}.)
   *
   * An {@link exec} the node is running cannot be stopped (dqlite runs an
   * EXEC to its end): its connection is closed at once ({@link execStops}
   * counts it), which rolls back a transaction open on it (lost as above);
   * outside a transaction, the node may still run the statement to its end
   * and commit it. An EXEC of transaction control alone (`COMMIT`,
   * `ROLLBACK`, ...) is not cut off: its outcome decides the transaction's.
   *
   * A wait before anything is sent (for the leader, for a stopped read's
   * drain, between tries after `SQLITE_BUSY`) ends too: nothing ran.
   * Requests still waiting their turn behind the running one are not
   * stopped: each is interrupted on its own once it runs (the server makes
   * one request at a time per connection, so it never has such a queue).
   *
   * @param reason Why (the caller's cancel or deadline): named by the
   *   `TX_ABORTED` of a transaction lost so.
   */
  interrupt(reason?: Error): void {
    this.#interrupt = true;
    this.#interruptReason = reason ?? null;
    this.#wake?.();
  }

  /** @internal Runs `fn` on the leader's connection with the session's rules. */
  async run<T>(
    sql: string,
    fn: (conn: DqliteConn) => Promise<T>,
    lostRollback: (() => T) | null,
  ): Promise<T> {
    return await this.#run(sql, fn, lostRollback);
  }

  /**
   * @internal Sends EXEC `message` (of `sql`) on `conn` and returns the
   * answer; {@link interrupt} cuts it off (see there).
   */
  async execCall(conn: DqliteConn, message: Uint8Array, sql: string): Promise<Received> {
    const call = conn.call(message);
    if (controlsOnly(sql)) return await call;
    const received = await this.#orInterrupt(call);
    if (received !== null) return received;
    call.catch(() => {}); // closing the connection fails it
    const reason = this.#interruptReason ??
      new SqliteError("SQLITE_INTERRUPT", "Statement interrupted", 9);
    this.#stopClosed.set(conn, closedToStop(reason, "statement"));
    this.#execStops++;
    this.#execStopInTx = this.#inTx;
    conn.close();
    const stop = new SqliteError("SQLITE_INTERRUPT", EXEC_INTERRUPTED, 9);
    this.#stopErrors.add(stop);
    throw stop;
  }

  /** @internal Records an EXEC reply's lastInsertId on `conn` and returns the result. */
  noteExec(
    conn: DqliteConn,
    r: { lastInsertId: number | bigint; rowsAffected: number },
  ): ExecResult {
    const before = this.#lastInsert.get(conn) ?? 0;
    this.#lastInsert.set(conn, r.lastInsertId);
    return {
      lastInsertId: r.lastInsertId,
      rowsAffected: r.rowsAffected,
      lastInsertIdBefore: before,
    };
  }

  /** @internal Reads a row set to its end (see {@link query}). */
  rows(conn: DqliteConn, message: Uint8Array, options: QueryOptions): Promise<QueryResult> {
    return this.#rows(conn, message, options);
  }

  /**
   * Runs `fn` on the leader's connection, once the requests made before
   * this one are answered (see {@link #turn}). `lostRollback` gives the
   * result of a ROLLBACK after the transaction was lost; `null` marks a
   * prepare, which neither runs the statement nor changes the transaction
   * state.
   */
  async #run<T>(
    sql: string,
    fn: (conn: DqliteConn) => Promise<T>,
    lostRollback: (() => T) | null,
  ): Promise<T> {
    const previous = this.#turn;
    let done!: () => void;
    this.#turn = new Promise((resolve) => done = resolve);
    try {
      // None unanswered: at once, so that no interrupt() comes between the caller's last
      // check and #runNow clearing the flag (as before requests took turns).
      if (this.#unanswered++ > 0) await previous;
      return await this.#runNow(sql, fn, lostRollback);
    } finally {
      this.#unanswered--;
      done();
    }
  }

  /** {@link #run}, this request's turn come. */
  async #runNow<T>(
    sql: string,
    fn: (conn: DqliteConn) => Promise<T>,
    lostRollback: (() => T) | null,
  ): Promise<T> {
    if (this.#closed) {
      throw new SqliteError(ErrorCode.ConnectionClosed, `Database "${this.#name}" is closed`);
    }
    this.#interrupt = false;
    this.#interruptReason = null;
    // A stopped row set is still being drained: this request waits for it (see #stop).
    if (this.#draining !== null && await this.#orInterrupt(this.#draining) === null) {
      throw new SqliteError("SQLITE_INTERRUPT", DRAIN_INTERRUPTED, 9);
    }
    const effect: TxEffect = lostRollback === null ? IDLE_EFFECT : txEffect(sql);
    const tx = effect.last;
    if (this.#inTx && this.#conn !== null && this.#conn.closed) {
      // The connection died between requests (seen while idle), or a stop closed it: so
      // did the transaction.
      this.#lose(this.#conn, IDLE_EFFECT, true, this.#stopClosed.get(this.#conn) ?? null);
    }
    if (writesRows(sql)) {
      // dqlite 1.11 aborts the node (assertion in its VFS) on a write that returns rows.
      throw new SqliteError(
        ErrorCode.BadRequest,
        "Cannot run a statement with RETURNING on dqlite: the node would abort; run the write, " +
          "then SELECT (key-value collections write with RETURNING: kv writes are not available " +
          "in cluster mode)",
      );
    }
    if (this.#txLost && lostRollback !== null) {
      const by = this.#txLostBy;
      if (tx === "end") {
        this.#txLost = false;
        this.#txLostBy = null;
        if (/^\s*rollback/i.test(sql)) return lostRollback(); // nothing left to roll back
        if (by !== null) throw txAborted(by);
        throw new LeaderError(
          DqliteErrorCode.LeaderLost,
          this.#txLostMaybeApplied
            ? "Cannot commit: the transaction was lost with the leader while a script ending it ran"
            : "Cannot commit: the transaction was lost with the leader, nothing of it was written",
          this.#txLostMaybeApplied,
        );
      }
      if (by !== null) throw txAborted(by);
      throw new LeaderError(DqliteErrorCode.LeaderLost, TX_LOST, false);
    }
    const conn = await this.#connectionOrInterrupt();
    const wasInTx = this.#inTx;
    try {
      const result = await this.#retryBusy(() => fn(conn));
      if (tx === "begin") {
        this.#inTx = true;
        if (!wasInTx) {
          this.#bySavepoint = effect.opener === "savepoint";
          this.#txSavepoint = effect.savepoint;
        }
      } else if (tx === "end") this.#inTx = false;
      // RELEASE of the outermost savepoint ends a transaction SAVEPOINT opened.
      if (this.#inTx && this.#bySavepoint && effect.releases) {
        this.#inTx = await this.#txOpen(conn);
      }
      return result;
    } catch (err) {
      // A stopped read did not end the transaction (should its drain close the
      // connection, the next request finds the transaction lost: see #stop).
      if (err instanceof Error && this.#stopErrors.has(err)) throw err;
      const lost = err instanceof LeaderError ||
        (err as { code?: string }).code === DqliteErrorCode.Protocol;
      if (!lost && (wasInTx || tx === "begin")) {
        // SQLite may have ended the transaction itself (ON CONFLICT ROLLBACK,
        // RAISE(ROLLBACK), an I/O error): ask the node, dqlite does not say.
        if (err instanceof SqliteError && /no transaction is active/.test(err.message)) {
          this.#inTx = false;
          throw err;
        }
        try {
          this.#inTx = await this.#txOpen(conn);
          throw err;
        } catch (probeErr) {
          if (probeErr === err) throw err;
          this.#lose(conn, effect, true);
          throw err;
        }
      }
      if (lost) {
        // A RELEASE of the savepoint that began the transaction commits it: lost under
        // it, the transaction ended as with a COMMIT lost so, its outcome unknown.
        const commits = wasInTx && this.#bySavepoint && this.#txSavepoint !== null &&
          effect.last !== "begin" && effect.released.includes(this.#txSavepoint);
        this.#lose(conn, effect, wasInTx, null, commits);
      }
      throw err;
    }
  }

  /**
   * The connection is gone: so is a transaction open on it (see {@link
   * transactionLost}), unless the request ran to end it (`commits`: a
   * RELEASE that may have committed it).
   */
  #lose(
    conn: DqliteConn,
    effect: TxEffect,
    wasInTx: boolean,
    by: SqliteError | null = null,
    commits = false,
  ): void {
    conn.close();
    if (this.#conn === conn) this.#conn = null;
    // A transaction open before, or opened by this script and not ended by it, is gone;
    // a script that ended one may have committed it (dqlite replicates at commit only).
    if ((wasInTx || effect.last === "begin") && effect.last !== "end" && !commits) {
      this.#txLost = true;
      this.#txLostMaybeApplied = effect.ends;
      this.#txLostBy = by;
    }
    this.#inTx = false;
  }

  /**
   * Asks the node whether a transaction is open on `conn`: `BEGIN` fails
   * inside one; outside, the probe's own transaction is rolled back at once.
   */
  async #txOpen(conn: DqliteConn): Promise<boolean> {
    try {
      expectResponse(
        await conn.call(encodeExecSql(0, "BEGIN; ROLLBACK", [])),
        "result",
        conn.address,
      );
      return false;
    } catch (err) {
      if (err instanceof SqliteError && /within a transaction/.test(err.message)) return true;
      throw err;
    }
  }

  /**
   * Runs `fn` again while it fails with SQLITE_BUSY (nothing ran), up to
   * busyTimeout; then fails with `BUSY_TIMEOUT`, as the single-file engine does.
   */
  async #retryBusy<T>(fn: () => Promise<T>): Promise<T> {
    const start = performance.now();
    // A timer, not a clock: time this server did not run (stopped, paused) counts after a grace.
    // Armed at the first BUSY (most statements meet none).
    let limit: DeadlineTimer | undefined;
    try {
      for (let attempt = 0;; attempt++) {
        try {
          return await fn();
        } catch (err) {
          const busy = err instanceof SqliteError &&
            (err.sqliteCode === 5 || err.sqliteCode === 261);
          if (!busy) throw err;
          if (limit === undefined) {
            const left = start + this.#busyTimeout - performance.now();
            if (left > 0) limit = new DeadlineTimer(() => {}, left, this.#busyTimeout);
          }
          if (limit === undefined || limit.expired) {
            throw new SqliteError(
              ErrorCode.BusyTimeout,
              `Write waited ${this.#busyTimeout} ms for the writer, held by another connection: ` +
                "busy timeout (--busy-timeout) exceeded; retry, or keep transactions short",
              err.sqliteCode,
              { cause: err },
            );
          }
          await delay(Math.min(2 ** attempt, 20));
          if (this.#interrupt) {
            throw new SqliteError("SQLITE_INTERRUPT", BUSY_INTERRUPTED, 9, { cause: err });
          }
        }
      }
    } finally {
      limit?.clear();
    }
  }

  async #rows(conn: DqliteConn, message: Uint8Array, options: QueryOptions): Promise<QueryResult> {
    const keep = options.keep ?? Infinity;
    // Discarded rows hold no memory: the limit is for results kept whole.
    const maxBytes = keep === Infinity ? options.maxBytes ?? Infinity : Infinity;
    // A stop fails the query at once (`stopped`), while its drain keeps the connection; a
    // row set ended after its kept rows answers at once (`finished`) the same way.
    let stopped!: (err: SqliteError) => void;
    let finished!: (result: QueryResult) => void;
    const early = new Promise<QueryResult>((resolve, reject) => {
      finished = resolve;
      stopped = reject;
    });
    const reading = conn.exclusive(async (): Promise<QueryResult> => {
      await conn.send(message);
      let columns: string[] = [];
      const rows: SqlValue[][] = [];
      let bytes = 0;
      // The rows kept are all there (`keep` > 0): an error after them is not the caller's.
      const kept = (): boolean => keep > 0 && rows.length >= keep;
      for (;;) {
        // An interrupt does not wait for the next message: a statement may
        // compute for long before its first row, or between two batches.
        const next = conn.receive();
        const received = await this.#orInterrupt(next);
        if (received === null) {
          const stop = new SqliteError("SQLITE_INTERRUPT", "Query interrupted", 9);
          await this.#stop(conn, next, stop, () => stopped(stop));
          throw stop;
        }
        if (received!.oversize) {
          // (Read past: a value of hundreds of MiB, which the single-file engine refuses too.)
          const stop = valueTooBig(received!.bytes);
          if (!(received!.response as { more: boolean }).more) throw stop;
          await this.#stop(conn, null, stop, () => stopped(stop));
          throw stop;
        }
        const response = received!.response;
        if (response.type === "failure") {
          const failure = failedAfter(columns, rows, response, conn.address, keep);
          // (A leadership error is never the statement's: it fails the query.)
          if (kept() && !(failure instanceof LeaderError)) return { columns, rows };
          throw failure;
        }
        const r = expectResponse(received!, "rows", conn.address);
        columns = r.columns;
        // A row not decoded exactly fails the query when it is one to keep (a row discarded
        // unread on a single file cannot fail it).
        const undecoded = r.error !== undefined && r.errorAt! < keep - rows.length;
        const usable = r.error !== undefined ? r.errorAt! : r.rows.length;
        for (let i = 0; i < usable && rows.length < keep; i++) rows.push(r.rows[i]);
        if (undecoded) {
          // The rows before the one not decoded exactly are the query's rows before its error.
          rowsBeforeError.set(r.error!, { columns, rows });
          if (!r.more) throw r.error;
        }
        bytes += received!.bytes;
        if (!r.more) return { columns, rows };
        if (kept() && options.endAfterKept === true) {
          const result = { columns, rows };
          const ended = new SqliteError("SQLITE_INTERRUPT", "Query ended after its kept rows", 9);
          await this.#stop(conn, null, ended, () => finished(result));
          return result;
        }
        let stop: SqliteError | null = null;
        if (undecoded) {
          stop = r.error!;
        } else if (r.rows.length === 0) {
          stop = namesFillMessage(columns);
        } else if (this.#interrupt) {
          stop = new SqliteError("SQLITE_INTERRUPT", "Query interrupted", 9);
        } else if (bytes > maxBytes) {
          stop = options.tooLarge?.() ?? new SqliteError(
            ErrorCode.ResultTooLarge,
            `Cannot return the result: it exceeds maxBytes ${maxBytes}`,
          );
        }
        if (stop !== null) {
          await this.#stop(conn, null, stop, () => stopped(stop));
          throw stop;
        }
      }
    });
    return await Promise.race([reading, early]);
  }

  /** `received`'s value, or null as soon as {@link interrupt} is called (at once if it was). */
  async #orInterrupt<T>(received: Promise<T>): Promise<T | null> {
    if (this.#interrupt) return null;
    let wake!: () => void;
    const interrupted = new Promise<null>((resolve) => wake = () => resolve(null));
    this.#wake = wake;
    try {
      return await Promise.race([received, interrupted]);
    } finally {
      this.#wake = null;
    }
  }

  /**
   * Ends a row set early: answers the query at once (`reply`: fails it with
   * `stop`, or returns the rows kept), then sends INTERRUPT and discards
   * what is still in flight, up to the EMPTY answer, for at most
   * {@link DRAIN_MS}, holding the connection meanwhile (the next request
   * waits: {@link #draining}); returns once that is over.
   * dqlite 1.11 reads the INTERRUPT only once the row set is fully sent,
   * which for an endless or slow statement is never: past that bound the
   * connection is closed (the node finalizes the statement when the
   * connection goes) and the next request opens another one; a transaction
   * open on it is lost, and reported as stopped by the interrupt's reason
   * (`TX_ABORTED`), not as a lost leader. `pending` is a receive already
   * under way, if any.
   */
  async #stop(
    conn: DqliteConn,
    pending: Promise<Received> | null,
    stop: SqliteError,
    reply: () => void,
  ): Promise<void> {
    const reason = this.#interruptReason ?? stop;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), DRAIN_MS);
    });
    const drain = (async (): Promise<"drained"> => {
      await conn.send(encodeInterrupt(0));
      let next = pending ?? conn.receive();
      while ((await next).response.type !== "empty") next = conn.receive();
      return "drained";
    })();
    drain.catch(() => {}); // after a timeout, closing the connection fails the receive under way
    const close = (): void => {
      if (conn.closed) return;
      this.#stopClosed.set(conn, closedToStop(reason, "read"));
      conn.close();
    };
    const drained = (async (): Promise<void> => {
      try {
        if (await Promise.race([drain, timedOut]) === "timeout") close();
      } catch {
        close(); // the connection broke while draining: it is replaced on the next request
      } finally {
        clearTimeout(timer);
      }
    })();
    const draining: Promise<void> = drained.finally(() => {
      if (this.#draining === draining) this.#draining = null;
    });
    this.#draining = draining;
    this.#stopErrors.add(stop);
    reply();
    await drained;
  }

  /** Closes the connection. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#conn?.close();
    this.#conn = null;
    this.#onClose();
  }

  /** Closes, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}

/**
 * The error for a row set whose message, more to come, holds no row: a
 * dqlite 1.11 node checks that its ~4 KiB message is full before it steps
 * the statement, so when the column names alone fill it, it sends them
 * again and again and never a row (the statement never runs). Measured: a
 * message header, the column count and the padded names reaching 4,096
 * bytes (510 one-character names; 85 of 40 characters).
 */
function namesFillMessage(columns: readonly string[]): SqliteError {
  const bytes = WORD + columns.reduce((n, c) => n + ((utf8Length(c) + 1 + 7) & ~7), 0);
  return new SqliteError(
    ErrorCode.BadRequest,
    `Cannot return the rows of this query in cluster mode: its ${columns.length} column names ` +
      `take ${bytes} bytes on dqlite's wire, and a dqlite 1.11 node sends no row when the names ` +
      "fill its 4 KiB message (it sends them again and again; nothing ran); " +
      "select fewer columns, or shorter names (AS)",
  );
}

/**
 * The error for a message of rows past the largest the server reads
 * (`maxMessageBytes`, 256 MiB): as the single-file engine, whose
 * `SQLITE_LIMIT_LENGTH` is at least 256 MiB, fails building such a value.
 */
function valueTooBig(bytes: number): SqliteError {
  return new SqliteError(
    "SQLITE_TOOBIG",
    `string or blob too big: the dqlite node sent a message of ${bytes} bytes of rows, past the ` +
      "256 MiB the server reads in one (a value that large; nothing of it was kept)",
    18,
  );
}

const utf8 = new TextEncoder();

function utf8Length(s: string): number {
  return utf8.encode(s).length;
}

/** The rows a query returned before the error it failed with: see {@link rowsBefore}. */
const rowsBeforeError = new WeakMap<Error, QueryResult>();

/**
 * The rows a {@link DqliteDatabase.query} (or a prepared statement's query)
 * returned before it failed with `err`, in order, and its columns: those
 * the node sent before SQLite's error (`integer overflow` in row 3: rows 1
 * and 2), or before the first row holding a value that cannot be decoded
 * exactly (`INVALID_UTF8`, the error then). Undefined for any other error (a
 * stop, a leadership error, one before the statement ran).
 *
 * @example
 * ```ts
 * import { rowsBefore } from "./database.ts";
 * if (rowsBefore(new Error("other")) !== undefined) throw new Error("no rows expected");
 * ```
 */
export function rowsBefore(err: unknown): QueryResult | undefined {
  return err instanceof Error ? rowsBeforeError.get(err) : undefined;
}

/**
 * The error of a query's FAILURE (`response`) that came after the rows
 * `rows` (of earlier messages), with those and the failure's own partial
 * rows (up to `keep` in all) recorded for {@link rowsBefore}; a leadership
 * error as it is.
 */
function failedAfter(
  columns: string[],
  rows: SqlValue[][],
  response: FailureResponse,
  address: string,
  keep = Infinity,
): SqliteError {
  const failure = failureError(response.code, response.message, address);
  if (failure instanceof LeaderError) return failure;
  const partial = response.partial;
  if (partial !== undefined) {
    columns = partial.columns;
    for (const row of partial.rows) if (rows.length < keep) rows.push(row);
  }
  // A row not decoded exactly comes first, when it is one to keep.
  const err = partial?.error !== undefined && rows.length < keep ? partial.error : failure;
  rowsBeforeError.set(err, { columns, rows });
  return err;
}

/**
 * The error that ended a transaction whose connection {@link DqliteDatabase}
 * closed to stop a read or a statement (EXEC) of it (`reason`: the cancel,
 * the deadline, or the stop's own error); it keeps `reason`'s code.
 */
function closedToStop(reason: Error, what: "read" | "statement"): SqliteError {
  const code = reason instanceof SqliteError || reason instanceof AbortError
    ? reason.code
    : ErrorCode.Internal;
  const why = what === "read"
    ? `the read could not be stopped in ${DRAIN_MS} ms`
    : "dqlite cannot stop a running statement";
  return new SqliteError(
    code,
    `${reason.message}: ${why}, so its connection to the dqlite leader was closed, which ` +
      "rolled back the transaction it was in",
    undefined,
    { cause: reason },
  );
}
