/**
 * A client of a dqlite cluster: finds the leader, opens a database on it,
 * and runs statements there.
 *
 * ```ts ignore
 * const cluster = new DqliteCluster(["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]);
 * await using db = await cluster.open("app");
 * await db.exec("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v)");
 * const { lastInsertId } = await db.exec("INSERT INTO t(v) VALUES (?)", ["x"]);
 * const { columns, rows } = await db.query("SELECT id, v FROM t WHERE id = ?", [lastInsertId]);
 * ```
 *
 * Leadership: a {@link DqliteDatabase} talks to one leader over one
 * connection. When that node stops being the leader, or the connection
 * breaks, the running request fails with {@link LeaderError} (`NOT_LEADER`
 * or `LEADER_LOST`) and nothing is retried; the next request finds the new
 * leader by itself. When the loss happened inside a transaction, that
 * transaction is gone: every request then fails with `LEADER_LOST` until the
 * caller ends it with `ROLLBACK` (which succeeds) or `COMMIT` (which fails
 * with `LEADER_LOST`, `maybeApplied` false: dqlite replicates a transaction
 * only at its commit, so nothing of it was written).
 *
 * @module
 */

import { ErrorCode, ProtocolError, SqliteError } from "../../protocol/errors.ts";
import type { SqlValue } from "../binding/binding.ts";
import { type ConnOptions, DqliteConn, parseAddress, type Received } from "./conn.ts";
import { DqliteErrorCode, failureError, LeaderError } from "./errors.ts";
import { positionalArgs, txEffect, writesRows } from "./_sql_scan.ts";
import {
  encodeClient,
  encodeCluster,
  encodeExec,
  encodeExecSql,
  encodeFinalize,
  encodeInterrupt,
  encodeLeader,
  encodeOpen,
  encodePrepare,
  encodeQuery,
  encodeQuerySql,
  type NodeInfo,
  type Response,
} from "./wire.ts";

/** Options of {@link DqliteCluster}. */
export interface DqliteClusterOptions {
  /**
   * Time allowed to find a leader (asking every node in turn, again and
   * again) before failing with `NO_LEADER`, in ms.
   * @default 10000
   */
  leaderTimeout?: number;
  /**
   * Time allowed for one TCP connect, in ms.
   * @default 2000
   */
  connectTimeout?: number;
  /**
   * Time allowed between a request and each message of its answer, in ms;
   * past it the connection is dropped and the request fails with `LEADER_LOST`.
   * @default 30000
   */
  requestTimeout?: number;
  /**
   * How long a statement refused with `SQLITE_BUSY` (another connection on
   * the leader holds the write lock; dqlite sets no busy timeout of its own)
   * is tried again before the error is returned, in ms. `SQLITE_BUSY` means
   * the statement did not run, so trying again cannot apply it twice. 0
   * returns the error at once.
   * @default 5000
   */
  busyTimeout?: number;
  /**
   * Largest message accepted from a node, in bytes (a row set arrives in
   * messages of about 4 KiB, but one large value makes one large message).
   * @default 268435456
   */
  maxMessageBytes?: number;
}

interface ClusterConfig extends ConnOptions {
  leaderTimeout: number;
  busyTimeout: number;
}

function resolveOptions(options: DqliteClusterOptions): ClusterConfig {
  const config: ClusterConfig = {
    leaderTimeout: options.leaderTimeout ?? 10_000,
    connectTimeout: options.connectTimeout ?? 2_000,
    requestTimeout: options.requestTimeout ?? 30_000,
    maxMessageBytes: options.maxMessageBytes ?? 256 * 1024 * 1024,
    busyTimeout: options.busyTimeout ?? 5_000,
  };
  for (const [key, value] of Object.entries(config)) {
    if (!Number.isFinite(value) || value < 0 || (value === 0 && key !== "busyTimeout")) {
      throw new RangeError(`Invalid option ${key}: ${value} (expected a positive number)`);
    }
  }
  return config;
}

/** Result of {@link DqliteDatabase.exec}. */
export interface ExecResult {
  /** `sqlite3_last_insert_rowid()` after the (last) statement. */
  lastInsertId: number | bigint;
  /** `sqlite3_changes()` of the (last) statement. */
  rowsAffected: number;
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
}

/**
 * Statement parameters: positional, or named (keys with their prefix, `:a`,
 * `@a`, `$a`, or bare `a`). dqlite binds by index only: named arguments are
 * numbered from the SQL text as SQLite numbers them (see `positionalArgs`).
 */
export type Params =
  | readonly (SqlValue | boolean)[]
  | Readonly<Record<string, SqlValue | boolean>>;

const noChange = (): ExecResult => ({ lastInsertId: 0, rowsAffected: 0 });
const noRows = (): QueryResult => ({ columns: [], rows: [] });
const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A dqlite cluster, known by the addresses of some or all of its nodes. */
export class DqliteCluster {
  readonly #nodes: readonly string[];
  readonly #config: ClusterConfig;
  readonly #open = new Set<DqliteDatabase>();
  #lastLeader: string | null = null;
  #clientId = 0n;

  /**
   * @param nodes Node addresses (`host:port`, as the nodes were started with `-d`/`--db`).
   * @param options Timeouts and limits.
   * @throws {TypeError} for an empty list or a malformed address.
   */
  constructor(nodes: readonly string[], options: DqliteClusterOptions = {}) {
    if (nodes.length === 0) throw new TypeError("Invalid dqlite node list: it is empty");
    for (const node of nodes) parseAddress(node);
    this.#nodes = [...nodes];
    this.#config = resolveOptions(options);
  }

  /** The node addresses given to the constructor. */
  get nodes(): readonly string[] {
    return this.#nodes;
  }

  /** The leader found last, or null before the first discovery. */
  get lastLeader(): string | null {
    return this.#lastLeader;
  }

  /**
   * Connects to the leader and registers as a client: asks each node in turn
   * which node leads (LEADER request), follows the answer, and retries with
   * a short pause until `leaderTimeout`.
   *
   * @throws {LeaderError} `NO_LEADER` when no leader was found in time.
   */
  async connectLeader(): Promise<DqliteConn> {
    const deadline = performance.now() + this.#config.leaderTimeout;
    let lastError: unknown;
    for (let round = 0;; round++) {
      const candidates = this.#lastLeader === null
        ? [...this.#nodes]
        : [this.#lastLeader, ...this.#nodes.filter((n) => n !== this.#lastLeader)];
      const asked = new Set<string>();
      while (candidates.length > 0) {
        const address = candidates.shift()!;
        if (asked.has(address)) continue;
        asked.add(address);
        let conn: DqliteConn | null = null;
        try {
          conn = await DqliteConn.connect(address, this.#config);
          const answer = expect(await conn.call(encodeLeader()), "server", address);
          if (answer.address === address) {
            expect(await conn.call(encodeClient(++this.#clientId)), "welcome", address);
            this.#lastLeader = address;
            return conn;
          }
          conn.close();
          // Ask the node it names next (it may not be in our list).
          if (answer.address !== "") candidates.unshift(answer.address);
        } catch (err) {
          conn?.close();
          lastError = err;
        }
      }
      this.#lastLeader = null;
      if (performance.now() >= deadline) {
        throw new LeaderError(
          DqliteErrorCode.NoLeader,
          `No dqlite leader found among ${
            this.#nodes.map((n) => `"${n}"`).join(", ")
          } within leaderTimeout ${this.#config.leaderTimeout} ms`,
          false,
          undefined,
          lastError === undefined ? undefined : { cause: lastError },
        );
      }
      await delay(Math.min(50 * (round + 1), 250));
    }
  }

  /**
   * The current leader's address (discovery as in {@link connectLeader}).
   *
   * @throws {LeaderError} `NO_LEADER`.
   */
  async leader(): Promise<string> {
    const conn = await this.connectLeader();
    conn.close();
    return conn.address;
  }

  /**
   * The cluster's members as the leader knows them (id, address, role).
   *
   * @throws {LeaderError} `NO_LEADER`, or `LEADER_LOST` if the leader fails meanwhile.
   */
  async members(): Promise<NodeInfo[]> {
    const conn = await this.connectLeader();
    try {
      return expect(await conn.call(encodeCluster(1)), "servers", conn.address).nodes;
    } finally {
      conn.close();
    }
  }

  /**
   * Opens database `name` on the leader (created on first use), over a
   * connection of its own.
   *
   * @throws {LeaderError} `NO_LEADER` when no leader is found in time.
   */
  async open(name: string): Promise<DqliteDatabase> {
    if (name === "" || name.includes("\0") || name.includes("/")) {
      throw new TypeError(`Invalid dqlite database name "${name}"`);
    }
    const db = new DqliteDatabase(
      this,
      name,
      this.#config.busyTimeout,
      () => this.#open.delete(db),
    );
    await db.connect();
    this.#open.add(db);
    return db;
  }

  /** Closes every database opened through this cluster. Idempotent. */
  close(): void {
    for (const db of [...this.#open]) db.close();
  }
}

/** Unwraps a response of the expected type; turns FAILURE into its error. */
function expect<T extends Response["type"]>(
  received: Received,
  type: T,
  address: string,
): Extract<Response, { type: T }> {
  const r = received.response;
  if (r.type === type) return r as Extract<Response, { type: T }>;
  if (r.type === "failure") throw failureError(r.code, r.message, address);
  throw new ProtocolError(
    DqliteErrorCode.Protocol,
    `Unexpected ${r.type} response from "${address}": expected ${type}`,
  );
}

/**
 * One database on the cluster's leader, over one connection: statements run
 * one at a time, in order; a transaction begun with `exec("BEGIN")` stays on
 * this connection.
 */
export class DqliteDatabase {
  readonly #cluster: DqliteCluster;
  readonly #name: string;
  readonly #onClose: () => void;
  readonly #busyTimeout: number;
  #conn: DqliteConn | null = null;
  #generation = 0;
  #closed = false;
  #inTx = false;
  #txLost = false;
  #txLostMaybeApplied = false;
  #interrupt = false;
  #connecting: Promise<void> | null = null;

  /** @internal Use {@link DqliteCluster.open}. */
  constructor(cluster: DqliteCluster, name: string, busyTimeout: number, onClose: () => void) {
    this.#cluster = cluster;
    this.#name = name;
    this.#busyTimeout = busyTimeout;
    this.#onClose = onClose;
  }

  /** The database name. */
  get name(): string {
    return this.#name;
  }

  /** The leader this database is connected to, or null between connections. */
  get address(): string | null {
    return this.#conn?.address ?? null;
  }

  /**
   * True while a transaction is open, as far as the statements run tell
   * (`BEGIN`/`SAVEPOINT` open one, `COMMIT`/`END`/`ROLLBACK` close it; dqlite
   * does not report SQLite's autocommit state).
   */
  get inTransaction(): boolean {
    return this.#inTx;
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

  /** @internal Connects to the leader and opens the database. */
  async connect(): Promise<void> {
    if (this.#closed) {
      throw new SqliteError(ErrorCode.ConnectionClosed, `Database "${this.#name}" is closed`);
    }
    const conn = await this.#cluster.connectLeader();
    try {
      expect(await conn.call(encodeOpen(this.#name)), "db", conn.address);
      // A new leader may not have applied every committed entry yet, and dqlite 1.11
      // prepares a statement before its Raft barrier: a table created just before a
      // failover would be "no such table" there. A query runs the barrier first.
      await this.#rows(conn, encodeQuerySql(0, "SELECT 1", []), {});
    } catch (err) {
      conn.close();
      throw err;
    }
    this.#conn = conn;
    this.#generation++;
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
      const r = expect(await conn.call(encodeExecSql(0, sql, args)), "result", conn.address);
      return { lastInsertId: r.lastInsertId, rowsAffected: r.rowsAffected };
    }, noChange);
  }

  /**
   * Runs the first statement of `sql` and returns its rows (all of them,
   * however many messages they take).
   *
   * @throws {SqliteError} SQLite's error, `INVALID_PARAM`, `RESULT_TOO_LARGE`, `SQLITE_INTERRUPT`.
   * @throws {LeaderError} `NOT_LEADER`, `LEADER_LOST` or `NO_LEADER`.
   */
  query(sql: string, params: Params = [], options: QueryOptions = {}): Promise<QueryResult> {
    return this.#run(
      sql,
      (conn) => this.#rows(conn, encodeQuerySql(0, sql, positionalArgs(sql, params)), options),
      noRows,
    );
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
   * Stops the row set being received: the running {@link query} fails with
   * `SQLITE_INTERRUPT` after the current message. (dqlite 1.11 reads the
   * INTERRUPT request only once the row set is fully sent, so the node still
   * runs the statement to its end; the rows are discarded.)
   */
  interrupt(): void {
    this.#interrupt = true;
  }

  /** @internal Runs `fn` on the leader's connection with the session's rules. */
  async run<T>(
    sql: string,
    fn: (conn: DqliteConn) => Promise<T>,
    lostRollback: (() => T) | null,
  ): Promise<T> {
    return await this.#run(sql, fn, lostRollback);
  }

  /** @internal Reads a row set to its end (see {@link query}). */
  rows(conn: DqliteConn, message: Uint8Array, options: QueryOptions): Promise<QueryResult> {
    return this.#rows(conn, message, options);
  }

  /**
   * Runs `fn` on the leader's connection. `lostRollback` gives the result of
   * a ROLLBACK after the transaction was lost; `null` marks a prepare, which
   * neither runs the statement nor changes the transaction state.
   */
  async #run<T>(
    sql: string,
    fn: (conn: DqliteConn) => Promise<T>,
    lostRollback: (() => T) | null,
  ): Promise<T> {
    if (this.#closed) {
      throw new SqliteError(ErrorCode.ConnectionClosed, `Database "${this.#name}" is closed`);
    }
    const effect = lostRollback === null ? { last: "none", ends: false } : txEffect(sql);
    const tx = effect.last;
    if (writesRows(sql)) {
      // dqlite 1.11 aborts the node (assertion in its VFS) on a write that returns rows.
      throw new SqliteError(
        ErrorCode.BadRequest,
        "Cannot run a statement with RETURNING on dqlite: the node would abort; run the write, then SELECT",
      );
    }
    if (this.#txLost && lostRollback !== null) {
      if (tx === "end") {
        this.#txLost = false;
        if (/^\s*rollback/i.test(sql)) return lostRollback(); // nothing left to roll back
        throw new LeaderError(
          DqliteErrorCode.LeaderLost,
          this.#txLostMaybeApplied
            ? "Cannot commit: the transaction was lost with the leader while a script ending it ran"
            : "Cannot commit: the transaction was lost with the leader, nothing of it was written",
          this.#txLostMaybeApplied,
        );
      }
      throw new LeaderError(
        DqliteErrorCode.LeaderLost,
        "The transaction was lost with the leader: end it with ROLLBACK, then start over",
        false,
      );
    }
    this.#interrupt = false;
    const conn = await this.#connection();
    try {
      const result = await this.#retryBusy(() => fn(conn));
      if (tx === "begin") this.#inTx = true;
      else if (tx === "end") this.#inTx = false;
      return result;
    } catch (err) {
      const lost = err instanceof LeaderError ||
        (err as { code?: string }).code === DqliteErrorCode.Protocol;
      if (lost) {
        conn.close();
        if (this.#conn === conn) this.#conn = null;
        // A transaction open before, or opened by this script and not ended by it, is gone;
        // a script that ended one may have committed it (dqlite replicates at commit only).
        if ((this.#inTx || effect.last === "begin") && effect.last !== "end") {
          this.#txLost = true;
          this.#txLostMaybeApplied = effect.ends;
        }
        this.#inTx = false;
      }
      throw err;
    }
  }

  /** Runs `fn` again while it fails with SQLITE_BUSY (nothing ran), up to busyTimeout. */
  async #retryBusy<T>(fn: () => Promise<T>): Promise<T> {
    const deadline = performance.now() + this.#busyTimeout;
    for (let attempt = 0;; attempt++) {
      try {
        return await fn();
      } catch (err) {
        const busy = err instanceof SqliteError && (err.sqliteCode === 5 || err.sqliteCode === 261);
        if (!busy || performance.now() >= deadline) throw err;
        await delay(Math.min(2 ** attempt, 20));
      }
    }
  }

  async #rows(conn: DqliteConn, message: Uint8Array, options: QueryOptions): Promise<QueryResult> {
    const maxBytes = options.maxBytes ?? Infinity;
    return await conn.exclusive(async () => {
      await conn.send(message);
      let columns: string[] = [];
      const rows: SqlValue[][] = [];
      let bytes = 0;
      for (;;) {
        const received = await conn.receive();
        const r = expect(received, "rows", conn.address);
        columns = r.columns;
        for (const row of r.rows) rows.push(row);
        bytes += received.bytes;
        if (!r.more) {
          if (r.error !== undefined) throw r.error;
          return { columns, rows };
        }
        let stop: SqliteError | null = null;
        if (r.error !== undefined) {
          stop = r.error;
        } else if (this.#interrupt) {
          stop = new SqliteError("SQLITE_INTERRUPT", "Query interrupted", 9);
        } else if (bytes > maxBytes) {
          stop = new SqliteError(
            ErrorCode.ResultTooLarge,
            `Cannot return the result: it exceeds maxBytes ${maxBytes}`,
          );
        }
        if (stop !== null) {
          await conn.send(encodeInterrupt(0));
          // Discard what is still in flight, up to the EMPTY answer.
          while ((await conn.receive()).response.type !== "empty");
          throw stop;
        }
      }
    });
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
 * A statement prepared on the leader. After a reconnection (new leader) it
 * is prepared again before its next use (preparing writes nothing).
 */
export class DqliteStatement {
  readonly #db: DqliteDatabase;
  readonly #sql: string;
  #id = -1;
  #params = 0;
  #generation = -1;
  #conn: DqliteConn | null = null;
  #finalized = false;

  /** @internal Use {@link DqliteDatabase.prepare}. */
  constructor(db: DqliteDatabase, sql: string) {
    this.#db = db;
    this.#sql = sql;
  }

  /** The SQL given to prepare. */
  get sql(): string {
    return this.#sql;
  }

  /** Number of parameters (`sqlite3_bind_parameter_count`). */
  get paramCount(): number {
    return this.#params;
  }

  /** @internal Prepares on the current connection unless done already. */
  async ensure(): Promise<void> {
    await this.#db.run(this.#sql, (conn) => this.#prepareOn(conn), null);
  }

  async #prepareOn(conn: DqliteConn): Promise<void> {
    if (this.#finalized) {
      throw new SqliteError(ErrorCode.UnknownStatement, "Statement is finalized");
    }
    if (this.#conn === conn && this.#generation === this.#db.generation) return;
    const r = expect(await conn.call(encodePrepare(0, this.#sql)), "stmt", conn.address);
    this.#id = r.id;
    this.#params = r.params;
    this.#conn = conn;
    this.#generation = this.#db.generation;
  }

  /**
   * Runs the statement with `params` (EXEC request).
   *
   * @throws {SqliteError} as {@link DqliteDatabase.exec}.
   * @throws {LeaderError} `NOT_LEADER`, `LEADER_LOST` or `NO_LEADER`.
   */
  exec(params: Params = []): Promise<ExecResult> {
    return this.#db.run(this.#sql, async (conn) => {
      await this.#prepareOn(conn);
      const r = expect(
        await conn.call(encodeExec(0, this.#id, positionalArgs(this.#sql, params))),
        "result",
        conn.address,
      );
      return { lastInsertId: r.lastInsertId, rowsAffected: r.rowsAffected };
    }, noChange);
  }

  /**
   * Runs the statement with `params` and returns its rows (QUERY request).
   *
   * @throws {SqliteError} as {@link DqliteDatabase.query}.
   * @throws {LeaderError} `NOT_LEADER`, `LEADER_LOST` or `NO_LEADER`.
   */
  query(params: Params = [], options: QueryOptions = {}): Promise<QueryResult> {
    return this.#db.run(this.#sql, async (conn) => {
      await this.#prepareOn(conn);
      const args = positionalArgs(this.#sql, params);
      return await this.#db.rows(conn, encodeQuery(0, this.#id, args), options);
    }, noRows);
  }

  /** Releases the statement on the node (FINALIZE). Idempotent; never throws. */
  async finalize(): Promise<void> {
    if (this.#finalized) return;
    this.#finalized = true;
    const conn = this.#conn;
    if (conn === null || conn.closed || this.#generation !== this.#db.generation) return;
    try {
      await conn.call(encodeFinalize(0, this.#id));
    } catch {
      // The connection is gone: so is the statement.
    }
  }
}
