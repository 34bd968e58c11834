/**
 * Kysely on netsqlite: {@link NetsqliteDialect} is a Kysely `Dialect` whose
 * driver runs queries through a netsqlite {@link Client}, with SQLite's
 * adapter, introspector and query compiler. `kysely` is an optional peer
 * dependency: only this module imports it (importing `@netsqlite/netsqlite`
 * itself pulls it not in).
 *
 * - Plain queries run on the client's shared pool, as the client's own
 *   calls do. A transaction, from `begin` to `commit`/`rollback` (savepoints
 *   and `stream()` inside it included), runs on one connection reserved with
 *   `Client.reserve()`, so transactions never mix with other callers' work.
 * - Inside a transaction, statements that would begin or end it (`BEGIN`,
 *   `COMMIT`, `END`, `ROLLBACK` without `TO`) are refused with `SqliteError`
 *   `TX_CONTROL` before they are sent, as a `transaction()` handle refuses
 *   them; savepoints stay allowed, raw ones in a `read only` transaction
 *   too. Raw `BEGIN`/`COMMIT` inside
 *   `db.connection()`, outside Kysely's transaction, stay allowed: the first
 *   one reserves a connection for the rest of that callback, whatever the
 *   client's `max`, so other queries through `db` wait for it (as with
 *   Kysely's own dialects) rather than join its transaction.
 * - Kysely's `Migrator` runs its migrations in one transaction (SQLite's DDL
 *   is transactional), so a failing migration leaves nothing behind and
 *   migrators of several processes run one after the other.
 * - The client's own calls made from the callback of
 *   `db.transaction().execute()` act as inside the client's `transaction()`
 *   (Kysely's transaction is one for the pool): a `client.transaction()`
 *   nests as a savepoint, with `max: 1` plain calls (and queries through
 *   `db`) join the transaction, and `client.reserve()` is refused with
 *   `TX_CONTROL` when it would wait for the transaction.
 * - A transaction never commits while a `client.transaction()` nested in it
 *   still runs or waits for its turn (left without `await`): when the
 *   callback resolves first, it is rolled back and rejects with
 *   `SqliteError` `TX_NESTED_RUNNING`, as the client's `transaction()` does;
 *   the nested one sends nothing more (its calls are refused with
 *   `TX_ENDED`), whether the callback resolved or threw. One whose function
 *   settled, its `RELEASE` or undo in flight, is waited for instead.
 * - A `rollbackToSavepoint()` that fails (a `RELEASE` sent after the
 *   savepoint, of one opened before it, ended it too) rejects with
 *   `SqliteError` `TX_UNDO_FAILED`, and the transaction cannot commit: its
 *   statements are refused with `TX_UNDO_FAILED` unsent, and `commit()`
 *   rolls it back and rejects, so the savepoint's work is never committed.
 * - A transaction takes the server's writer at `BEGIN`, a read only one
 *   too: read outside a transaction for long reports.
 * - `numAffectedRows` and `insertId` are bigint, as Kysely expects.
 * - Raw SQL returns rows when the statement has result columns, else what
 *   it changed; one request when its text says which (`SELECT`, `INSERT`,
 *   ... without `RETURNING`), else three (prepared first for its columns).
 * - Kysely 0.29's abort signals: with `inflightQueryAbortStrategy:
 *   'cancel query'`, an aborted query is stopped on the server
 *   (`cancelQuery`, the client's cancel); with the default `'ignore query'`
 *   it runs to its end, as Kysely documents. An aborted `stream()` stops
 *   its cursor's read in flight. `'kill session'` is refused by Kysely (no
 *   `killSession`): a netsqlite connection holds nothing a cancel leaves.
 * - `stream()` reads through the server's cursor (`iterate()`), chunk by
 *   chunk, so memory stays bounded. On the shared pool, a stream past the
 *   cursors the client can keep open waits for one of the dialect's streams
 *   to end (see `StreamRoom`), as Kysely's own dialects wait for a connection.
 * - When a transaction ends before its rollback (its lease expired, its
 *   `commit` failed, or the client was closed, by `db.destroy()` too), the
 *   caller gets the error that ended it, or the callback's own, not the
 *   rollback's.
 * - A query (or savepoint command) of a transaction whose connection was
 *   lost before anything could commit it (see `lostWithConnection`), and
 *   whose `ConnectionError` says it may have run, rejects with the
 *   transaction's loss instead (`CONNECTION_CLOSED`, `mayHaveRun` false,
 *   its own error as `cause`), as the client's `transaction()` does: the
 *   server rolled the transaction back, that query's effects with it. So
 *   does the transaction, which Kysely rejects with its callback's error.
 *   Its `BEGIN`, likewise, says it did not run (`mayHaveRun` false, see
 *   `lostAtBegin`): the transaction it may have opened ended with the
 *   connection.
 *
 * @example
 * ```ts
 * import { serve } from "@netsqlite/netsqlite/server";
 * import { connect } from "@netsqlite/netsqlite/client";
 * import { NetsqliteDialect } from "@netsqlite/netsqlite/kysely";
 * import { type Generated, Kysely } from "npm:kysely@^0.28";
 *
 * interface Database {
 *   person: { id: Generated<number>; name: string };
 * }
 * const dir = await Deno.makeTempDir();
 * await using server = await serve({ database: `${dir}/a.db`, path: `${dir}/a.sock` });
 * const client = await connect({ path: `${dir}/a.sock` });
 * const db = new Kysely<Database>({ dialect: new NetsqliteDialect({ client, closeClient: true }) });
 * await db.schema.createTable("person")
 *   .addColumn("id", "integer", (c) => c.primaryKey())
 *   .addColumn("name", "text", (c) => c.notNull())
 *   .execute();
 * const { insertId } = await db.insertInto("person").values({ name: "Ada" }).executeTakeFirstOrThrow();
 * const ada = await db.selectFrom("person").selectAll().where("id", "=", Number(insertId))
 *   .executeTakeFirst();
 * if (ada?.name !== "Ada") throw new Error("expected Ada");
 * await db.destroy(); // closes the client (closeClient: true)
 * ```
 *
 * @module
 */

import {
  type CompiledQuery,
  createQueryId,
  type DatabaseConnection,
  type DatabaseIntrospector,
  type Dialect,
  type DialectAdapter,
  type Driver,
  IdentifierNode,
  type Kysely,
  type QueryCompiler,
  type QueryResult,
  RawNode,
  SqliteAdapter,
  SqliteIntrospector,
  SqliteQueryCompiler,
  type TransactionSettings,
} from "npm:kysely@^0.28";
import {
  type BindParams,
  type Client,
  ConnectionError,
  ErrorCode,
  type Queryable,
  type ReservedConnection,
  type RunResult,
  SqliteError,
} from "../client.ts";
import { readsOnly } from "../client/connection.ts";
import { resultShape } from "../protocol/sql_lexer.ts";
import { findTxControl } from "../client/_tx_control.ts";
import { transactionContext } from "../client/pool.ts";
import { openTransactions } from "../client/_tx_order.ts";
import { levelOf, newLevel } from "../client/_tx_undo.ts";
import { lostAtBegin, lostIn } from "./_lost_tx.ts";
import { PoolScope } from "./_pool_scope.ts";
import { StreamRoom } from "./_stream_room.ts";
import { isSavepointCommand, refuseTxEnd } from "./_refuse_tx_end.ts";

/** Options of {@link NetsqliteDialect}. */
export interface NetsqliteDialectConfig {
  /**
   * The client, or a function that connects one (called once, by Kysely's
   * first query).
   */
  client: Client | (() => Promise<Client>);
  /**
   * Close the client on `db.destroy()`.
   * @default {true when `client` is a function, else false}
   */
  closeClient?: boolean;
}

/**
 * A Kysely dialect for netsqlite: SQLite's SQL, run through a client.
 *
 * @example
 * ```ts
 * import { serve } from "@netsqlite/netsqlite/server";
 * import { connect } from "@netsqlite/netsqlite/client";
 * import { NetsqliteDialect } from "@netsqlite/netsqlite/kysely";
 * import { Kysely, sql } from "npm:kysely@^0.28";
 * const dir = await Deno.makeTempDir();
 * await using server = await serve({ database: `${dir}/a.db`, path: `${dir}/a.sock` });
 * const db = new Kysely<Record<string, never>>({
 *   dialect: new NetsqliteDialect({ client: () => connect({ path: `${dir}/a.sock` }) }),
 * });
 * const { rows } = await sql<{ x: number }>`SELECT 6 * 7 AS x`.execute(db);
 * if (rows[0].x !== 42) throw new Error("expected 42");
 * await db.destroy();
 * ```
 */
export class NetsqliteDialect implements Dialect {
  readonly #config: NetsqliteDialectConfig;

  /**
   * Creates the dialect; nothing connects until Kysely's first query.
   *
   * @param config The client (or how to connect one).
   * @throws {TypeError} when `config.client` is neither a client nor a function
   *   (a reserved connection is not a client).
   */
  constructor(config: NetsqliteDialectConfig) {
    const c = config?.client as unknown;
    if (typeof c !== "function") checkClient(c);
    this.#config = { ...config };
  }

  /**
   * Creates the driver Kysely runs queries with (called by Kysely).
   *
   * @returns the driver that runs queries through the client.
   */
  createDriver(): Driver {
    return new NetsqliteDriver(this.#config);
  }

  /**
   * Creates the query compiler (called by Kysely).
   *
   * @returns Kysely's SQLite query compiler.
   */
  createQueryCompiler(): QueryCompiler {
    return new SqliteQueryCompiler();
  }

  /**
   * Creates the adapter (called by Kysely).
   *
   * @returns Kysely's SQLite adapter, with transactional DDL: `Migrator` runs
   *   its migrations in one transaction.
   */
  createAdapter(): DialectAdapter {
    return new NetsqliteAdapter();
  }

  /**
   * Creates the schema introspector (called by Kysely).
   *
   * @param db The Kysely instance.
   * @returns Kysely's SQLite introspector.
   */
  createIntrospector(db: Kysely<any>): DatabaseIntrospector {
    return new SqliteIntrospector(db);
  }
}

/**
 * SQLite's adapter with `supportsTransactionalDdl`: SQLite's DDL is
 * transactional, so Kysely's `Migrator` runs all pending migrations in one
 * transaction (a failing one leaves nothing behind). That transaction's
 * `BEGIN` takes the server's writer (netsqlite's deferred transactions do),
 * so migrators of several processes run one after the other, and the later
 * one reads the migrations the earlier one recorded; no lock table is needed.
 *
 * And with `supportsMultipleConnections`: the server serves many
 * connections, and this dialect's plain queries run on the client's pool
 * beside its transactions and streams. Kysely 0.29 reads it (0.28 does not):
 * for an adapter that says false, as its `SqliteAdapter` does, it runs one
 * connection at a time, so a query through `db` would wait for an open
 * controlled transaction (for ever when the caller commits after it) and
 * for every open stream.
 */
class NetsqliteAdapter extends SqliteAdapter {
  override get supportsTransactionalDdl(): boolean {
    return true;
  }

  get supportsMultipleConnections(): boolean {
    return true;
  }
}

/**
 * The driver: plain queries run on the client's shared pool; a transaction
 * reserves one connection from `begin` to `commit`/`rollback`.
 */
class NetsqliteDriver implements Driver {
  readonly #config: NetsqliteDialectConfig;
  #client: Client | null = null;
  /** This driver's streams on the shared pool (see {@link StreamRoom}). */
  readonly #streams = new StreamRoom();

  constructor(config: NetsqliteDialectConfig) {
    this.#config = config;
  }

  async init(): Promise<void> {
    const c = this.#config.client;
    this.#client = typeof c === "function" ? checkClient(await c()) : c;
  }

  acquireConnection(): Promise<DatabaseConnection> {
    return Promise.resolve(new NetsqliteConnection(this.#client!, this.#streams));
  }

  beginTransaction(
    connection: DatabaseConnection,
    settings: TransactionSettings,
  ): Promise<void> {
    // The pool's transaction scope, entered before anything is awaited: Kysely
    // awaits this call and then, in the same async function, runs the
    // transaction's callback, which so runs in the scope. The client's own
    // calls made from the callback then act as inside its `transaction()`
    // (see `PoolScope`). The scope ends with the transaction.
    const scope = new PoolScope();
    transactionContext.enterWith(scope);
    // Every isolation level is accepted: SQLite's transactions are serializable
    // (a stronger guarantee than any level asks for).
    return (connection as NetsqliteConnection).begin(settings.accessMode === "read only", scope);
  }

  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    await (connection as NetsqliteConnection).commit();
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    await (connection as NetsqliteConnection).rollback();
  }

  async savepoint(
    connection: DatabaseConnection,
    name: string,
    compileQuery: QueryCompiler["compileQuery"],
  ): Promise<void> {
    await (connection as NetsqliteConnection).control(
      savepointQuery("savepoint", name, compileQuery),
    );
  }

  async rollbackToSavepoint(
    connection: DatabaseConnection,
    name: string,
    compileQuery: QueryCompiler["compileQuery"],
  ): Promise<void> {
    await (connection as NetsqliteConnection).rollbackTo(
      name,
      savepointQuery("rollback to", name, compileQuery),
    );
  }

  async releaseSavepoint(
    connection: DatabaseConnection,
    name: string,
    compileQuery: QueryCompiler["compileQuery"],
  ): Promise<void> {
    await (connection as NetsqliteConnection).control(
      savepointQuery("release", name, compileQuery),
    );
  }

  releaseConnection(connection: DatabaseConnection): Promise<void> {
    (connection as NetsqliteConnection).release();
    return Promise.resolve();
  }

  async destroy(): Promise<void> {
    const close = this.#config.closeClient ?? typeof this.#config.client === "function";
    if (close) await this.#client?.close();
    this.#client = null;
  }
}

/**
 * `c` when it is a netsqlite client (as `connect()` returns); else throws a
 * `TypeError`: a reserved connection or a transaction handle runs queries,
 * but cannot reserve the connection each transaction needs.
 */
function checkClient(c: unknown): Client {
  if (c === null || typeof c !== "object" || typeof (c as Client).reserve !== "function") {
    throw new TypeError(
      'Invalid option "client": expected a netsqlite Client from connect() (not a reserved ' +
        "connection or a transaction handle: each transaction reserves a connection of its " +
        "own), or a function returning one",
    );
  }
  return c as Client;
}

/** Why a transaction whose callback settled while one nested in it still ran is rolled back. */
function nestedRunning(): SqliteError {
  return new SqliteError(
    ErrorCode.TxNestedRunning,
    "Transaction rolled back: its callback settled while a transaction nested in it was still " +
      "running (a client.transaction() without await?); the work of both was undone",
  );
}

function savepointQuery(
  command: string,
  name: string,
  compileQuery: QueryCompiler["compileQuery"],
): CompiledQuery {
  const node = RawNode.createWithChildren([
    RawNode.createWithSql(`${command} `),
    IdentifierNode.create(name),
  ]);
  return compileQuery(node, createQueryId());
}

/** Query kinds that return rows only with a `returning` clause. */
const WRITES = new Set(["InsertQueryNode", "UpdateQueryNode", "DeleteQueryNode"]);

/**
 * One Kysely connection. Outside a transaction its queries run on the
 * client's shared pool, so they never wait for a connection of their own.
 * `begin()` reserves a connection and sends `BEGIN` on it; until `commit()` or
 * `rollback()` gives it back, every query of this object runs there (Kysely
 * uses one connection object for a whole `db.transaction()`). Raw transaction
 * control sent outside a transaction (`sql\`BEGIN\`` inside `db.connection()`)
 * pins a reserved connection, before it is sent, until Kysely releases this
 * object.
 */
class NetsqliteConnection implements DatabaseConnection {
  readonly #client: Client;
  /** The connection of the open transaction, else `null`. */
  #tx: ReservedConnection | null = null;
  /** The connection raw transaction control pinned, until {@link release}. */
  #pinned: ReservedConnection | null = null;
  /** The open transaction is `read only` (Kysely's `setAccessMode`). */
  #readOnly = false;
  /** The pool's scope of the open transaction (see {@link NetsqliteDriver.beginTransaction}). */
  #scope: PoolScope | null = null;
  /**
   * Why the open transaction cannot commit, once a `rollbackToSavepoint()`
   * failed (see {@link rollbackTo}); `null` while it can.
   */
  #poison: string | null = null;
  /** The driver's streams on the shared pool. */
  readonly #streams: StreamRoom;
  /** One per query of this object in flight: {@link cancelQuery} aborts them. */
  readonly #inflight = new Set<AbortController>();

  constructor(client: Client, streams: StreamRoom) {
    this.#client = client;
    this.#streams = streams;
  }

  get #target(): Queryable {
    return this.#tx ?? this.#pinned ?? this.#client;
  }

  /**
   * Reserves a connection and begins; `readOnly`: refuse every statement that
   * may write; `scope`: the pool's scope of the transaction, bound to its
   * connection until the transaction ends.
   */
  async begin(readOnly = false, scope?: PoolScope): Promise<void> {
    if (this.#tx !== null) throw new Error("A transaction is already open on this connection");
    const conn = this.#pinned ?? await this.#client.reserve();
    this.#tx = conn;
    this.#readOnly = readOnly;
    this.#scope = scope ?? null;
    this.#scope?.bind(conn);
    try {
      await conn.exec("BEGIN");
    } catch (err) {
      this.#endTransaction();
      // Lost with the connection: nothing of the transaction stays applied (see lostAtBegin).
      throw lostAtBegin(err);
    }
  }

  async commit(): Promise<void> {
    const conn = this.#open();
    // A client transaction() nested in it whose undo is in flight may yet roll it back.
    await this.#scope?.nestedSettled();
    // One still running (left without await) could still throw, and its later statements
    // would land after the COMMIT: commit neither (Kysely rolls back on this error).
    if (this.#scope?.abandonNested()) throw nestedRunning();
    if (this.#poison !== null) {
      // A savepoint's work could not be undone: it must not be committed. Rolled back now
      // (statements sent after this are refused); the connection stays until Kysely's rollback.
      await conn.exec("ROLLBACK").catch(() => {});
      throw new SqliteError(
        ErrorCode.TxUndoFailed,
        `Transaction rolled back instead of committed: ${this.#poison}; this transaction was ` +
          "undone as a whole, that savepoint's work with it",
      );
    }
    // A failed COMMIT may leave the transaction open (a deferred foreign key):
    // the connection stays until Kysely's rollback.
    await conn.exec("COMMIT");
    this.#endTransaction();
  }

  async rollback(): Promise<void> {
    const conn = this.#open();
    try {
      await this.#scope?.nestedSettled();
      // Ends one still running: its later statements are refused, not run after the ROLLBACK.
      this.#scope?.abandonNested();
      await conn.exec("ROLLBACK");
    } catch (err) {
      // Nothing left to roll back (the server ended the transaction: its lease
      // expired, or COMMIT failed; or the client was closed, which the server
      // rolls back): the caller sees the error that ended it (or the
      // callback's own), not this one.
      if (conn.inTransaction) throw err;
    } finally {
      this.#endTransaction();
    }
  }

  /** Gives back any reserved connection (closed instead of reused if a transaction is open). */
  release(): void {
    this.#endTransaction();
    this.#pinned?.release();
    this.#pinned = null;
  }

  #open(): ReservedConnection {
    if (this.#tx === null) throw new Error("No transaction is open on this connection");
    return this.#tx;
  }

  #endTransaction(): void {
    this.#scope?.end();
    this.#scope = null;
    if (this.#tx !== null && this.#tx !== this.#pinned) this.#tx.release();
    this.#tx = null;
    this.#readOnly = false;
    this.#poison = null;
  }

  /**
   * In a `read only` transaction, refuses `sql` unless it surely only reads
   * (`SELECT`, `WITH ... SELECT`, `VALUES`, `EXPLAIN`, a `PRAGMA` that reads:
   * see `readsOnly`) or is a savepoint command (`SAVEPOINT`, `RELEASE`,
   * `ROLLBACK TO`: they write nothing; inside the transaction's `BEGIN` a
   * `RELEASE` commits nothing, and undoing reads undoes nothing), before
   * anything is sent. The server's `query_only` PRAGMA is a setting of its
   * shared connection, which clients may not set, so the adapter checks; a
   * statement holds one statement only (the server refuses more), so the
   * check is sound.
   */
  #checkAccess(sql: string): void {
    if (!this.#readOnly || this.#tx === null || readsOnly(sql) || isSavepointCommand(sql)) return;
    const head = sql.trim().replace(/\s+/g, " ");
    throw new SqliteError(
      ErrorCode.ReadOnly,
      `Cannot run "${head.length > 60 ? `${head.slice(0, 60)}...` : head}" in a read only ` +
        'transaction: it may write (setAccessMode("read only") allows reading statements only)',
    );
  }

  /** Runs transaction control (a savepoint) on the open transaction, read only or not. */
  async control(compiled: CompiledQuery): Promise<void> {
    this.#refusePoisoned();
    const tx = this.#tx;
    try {
      await this.#on(compiled.sql, (q) => q.run(compiled.sql));
    } catch (err) {
      throw lostIn(tx, err);
    }
  }

  /**
   * Runs `rollbackToSavepoint(name)` (`compiled`). Its failure is never
   * ignored, as that of a nested `transaction()`'s `ROLLBACK TO` (see
   * `client/_tx_undo.ts`): when the savepoint is gone (a `RELEASE` or
   * `ROLLBACK TO` of a savepoint opened before it ended it too), its work
   * stays in the transaction, which therefore cannot commit: it rejects with
   * `TX_UNDO_FAILED` (the failure as `cause`), the transaction's statements
   * (and savepoint commands, and the client's own calls made in it) are
   * refused with `TX_UNDO_FAILED` unsent, and its `commit()` rolls it back
   * and rejects. Not when the transaction has ended already (nothing of it
   * can be committed): that error is passed on as it is.
   */
  async rollbackTo(name: string, compiled: CompiledQuery): Promise<void> {
    try {
      await this.control(compiled);
    } catch (err) {
      const conn = this.#tx;
      if (
        conn === null || !conn.inTransaction || err instanceof ConnectionError ||
        (err instanceof SqliteError && !err.code.startsWith("SQLITE_"))
      ) throw err;
      const said = err instanceof Error ? err.message : String(err);
      const lost = /no such savepoint/i.test(said)
        ? `savepoint "${name}" is gone (SQLite: ${said}): a statement sent after it released or ` +
          "rolled back to a savepoint opened before it, which ends every savepoint opened after " +
          "that one"
        : `rollback to savepoint "${name}" failed (${
          err instanceof SqliteError ? `${err.code}: ` : ""
        }${said})`;
      this.#poisonWith(`the work of a savepoint could not be undone: ${lost}`);
      throw new SqliteError(
        ErrorCode.TxUndoFailed,
        `Savepoint's work could not be undone: ${lost}; the transaction cannot commit: its ` +
          "statements fail with TX_UNDO_FAILED, and commit() rolls it back",
        undefined,
        { cause: err },
      );
    }
  }

  /**
   * Poisons the open transaction (see {@link rollbackTo}), with the client's
   * `transaction()`s open in it and its scope in the pool (so that the
   * client's own calls made in it are refused too).
   */
  #poisonWith(why: string): void {
    if (this.#poison === null) this.#poison = why;
    const scope = this.#scope;
    if (scope === null || !scope.active) return;
    if (levelOf(scope) === undefined) newLevel(scope, null).poison = why;
    for (const s of openTransactions(scope.conn)?.stack ?? []) {
      const level = levelOf(s);
      if (level !== undefined && level.poison === null) level.poison = why;
    }
  }

  /** Throws `TX_UNDO_FAILED` in a transaction that cannot commit (see {@link rollbackTo}). */
  #refusePoisoned(): void {
    if (this.#poison === null || this.#tx === null) return;
    throw new SqliteError(
      ErrorCode.TxUndoFailed,
      `Transaction cannot go on: ${this.#poison}; it cannot commit, and commit() rolls it back ` +
        "(this statement was not sent)",
    );
  }

  /**
   * Runs `fn` (which sends `sql`) on the current target. Raw transaction
   * control (`BEGIN`, `SAVEPOINT`, `COMMIT`, ...) sent outside Kysely's
   * transaction first pins a connection reserved for this object, whatever
   * the client's `max`, so the transaction it opens holds that connection
   * alone: with `max: 1` the shared pool would run it (better-sqlite3's
   * way), and another caller's query through `db` would then join it and
   * be undone by its `ROLLBACK` after being acknowledged; it waits until
   * Kysely releases this object instead, as with Kysely's own dialects.
   */
  async #on<T>(sql: string, fn: (q: Queryable) => Promise<T>): Promise<T> {
    if (this.#target === this.#client && findTxControl(sql, false) !== null) {
      const conn = await this.#client.reserve();
      // Another query of this object pinned one meanwhile: one is enough.
      if (this.#target === this.#client) this.#pinned = conn;
      else conn.release();
    }
    return await fn(this.#target);
  }

  /**
   * Inside a transaction, refuses a statement that would begin or end it
   * (`BEGIN`, `COMMIT`, `END`, `ROLLBACK` without `TO`) before it is sent, as
   * a `transaction()` handle does: a raw `COMMIT` would keep the work done so
   * far even when the callback throws afterwards. Kysely's own control goes
   * through {@link begin}, {@link commit}, {@link rollback} and
   * {@link control}, never through here.
   */
  #checkControl(sql: string): void {
    if (this.#tx === null) return;
    refuseTxEnd(
      sql,
      "a Kysely transaction",
      "Kysely ends the transaction itself (execute() commits when the callback resolves and " +
        "rolls back when it throws; a controlled transaction ends with trx.commit() or " +
        "trx.rollback()); use savepoints (trx.savepoint())",
    );
  }

  /**
   * Runs one query. Kysely 0.29 passes `options.signal` when the caller gave
   * one; the query is not stopped by it (Kysely's `'ignore query'` lets it
   * run to its end), only by {@link cancelQuery}, which Kysely calls only
   * then.
   */
  async executeQuery<R>(
    compiled: CompiledQuery,
    options?: { readonly signal?: AbortSignal },
  ): Promise<QueryResult<R>> {
    this.#refusePoisoned();
    this.#checkControl(compiled.sql);
    this.#checkAccess(compiled.sql);
    const tx = this.#tx;
    const call = options?.signal ? new AbortController() : null;
    if (call !== null) this.#inflight.add(call);
    try {
      return await this.#on(compiled.sql, (q) => executeOn<R>(q, compiled, call?.signal));
    } catch (err) {
      throw lostIn(tx, err);
    } finally {
      if (call !== null) this.#inflight.delete(call);
    }
  }

  /**
   * Kysely 0.29's `inflightQueryAbortStrategy: 'cancel query'`: stops this
   * connection's queries in flight on the server (the client's cancel: each
   * rejects with `AbortError`; a write it stopped changed nothing, and one
   * inside a transaction ends it, as `{ signal }` does on the client).
   */
  cancelQuery(): Promise<void> {
    for (const call of this.#inflight) {
      call.abort(new DOMException("Query cancelled by Kysely (abort signal)", "AbortError"));
    }
    return Promise.resolve();
  }

  async *streamQuery<R>(
    compiled: CompiledQuery,
    chunkSize = 100,
    options?: { readonly signal?: AbortSignal },
  ): AsyncIterableIterator<
    QueryResult<R>
  > {
    if (!Number.isInteger(chunkSize) || chunkSize < 1) {
      throw new RangeError(`Invalid chunkSize ${chunkSize}: expected a positive integer`);
    }
    this.#refusePoisoned();
    this.#checkControl(compiled.sql);
    this.#checkAccess(compiled.sql);
    let rows: R[] = [];
    const params = compiled.parameters as BindParams;
    const tx = this.#tx;
    const target = this.#target;
    // An aborted stream is closed by Kysely: the read in flight stops with it.
    const signal = options?.signal;
    const start = () =>
      target.iterate<R>(compiled.sql, params, signal ? { signal } : undefined)[
        Symbol.asyncIterator
      ]();
    // On the shared pool a stream past the client's cursors waits for one of
    // this driver's streams to end, as Kysely's own dialects wait for a
    // connection; a transaction's connection runs one query at a time anyway.
    const streams = target === this.#client ? this.#streams : null;
    // Kept by this generator until its `finally`: collected with a stream dropped unfinished.
    const holder = {};
    let iterator: AsyncIterator<R>;
    let r: IteratorResult<R>;
    try {
      if (streams !== null) ({ iterator, first: r } = await streams.open(start, holder));
      else r = await (iterator = start()).next();
    } catch (err) {
      throw lostIn(tx, err);
    }
    let done = false;
    try {
      for (; !r.done; r = await iterator.next()) {
        rows.push(r.value);
        if (rows.length === chunkSize) {
          yield { rows };
          rows = [];
        }
      }
      done = true;
    } catch (err) {
      done = true; // a cursor whose next() failed is closed
      throw lostIn(tx, err);
    } finally {
      // Left early (the caller's `break`): close the cursor.
      if (!done) await iterator.return?.();
      streams?.ended(holder);
    }
    if (rows.length > 0) yield { rows };
  }
}

/**
 * Runs one compiled query on `q`, with the result shape Kysely expects of its
 * kind; `signal`, if given, stops it on the server.
 */
async function executeOn<R>(
  q: Queryable,
  compiled: CompiledQuery,
  signal: AbortSignal | undefined,
): Promise<QueryResult<R>> {
  const { sql } = compiled;
  const params = compiled.parameters as BindParams;
  const kind = compiled.query.kind;
  const o = signal ? { signal } : undefined;
  if (kind === "SelectQueryNode") return { rows: await q.query<R>(sql, params, o) };
  if (WRITES.has(kind) && !("returning" in compiled.query && compiled.query.returning)) {
    return changed(await q.run(sql, params, o), []);
  }
  if (WRITES.has(kind)) return { rows: await q.query<R>(sql, params, o) }; // returning
  if (kind !== "RawNode") return changed(await q.run(sql, params, o), []);
  // Raw SQL: rows when the statement has result columns (as better-sqlite3's
  // `reader`), else what it changed. One request when its text says which;
  // else the prepared statement's columns say (three requests).
  const shape = resultShape(sql);
  if (shape === "rows") return { rows: await q.query<R>(sql, params, o) };
  if (shape === "changes") return changed(await q.run(sql, params, o), []);
  const stmt = await q.prepare(sql);
  try {
    if (stmt.columns.length > 0) return { rows: await stmt.all<R>(params, o) };
    return changed(await stmt.run(params, o), []);
  } finally {
    stmt.finalize().catch(() => {/* the connection is gone; so is the statement */});
  }
}

function changed<R>(r: RunResult, rows: R[]): QueryResult<R> {
  return { numAffectedRows: BigInt(r.changes), insertId: BigInt(r.lastInsertRowid), rows };
}
