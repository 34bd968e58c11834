/**
 * The query API shared by `Client` (the shared pool), `ReservedConnection`
 * and `Transaction`: the better-sqlite3 vocabulary, async. Each object
 * reaches its connections through a private {@link Route}.
 *
 * @module
 */

import { AbortError, ConnectionError, ErrorCode, SqliteError } from "../protocol/errors.ts";
import type {
  BatchItem,
  CallOptions,
  Replies,
  Requests,
  WireBatchOptions,
  WireParams,
} from "../protocol/messages.ts";
import { Op } from "../protocol/messages.ts";
import {
  type BindParams,
  type BindParamsOf,
  call,
  callOptions,
  type CallShape,
  changesOf,
  checkArgCount,
  checkBatchItem,
  checkBatchStatements,
  type CheckedOptions,
  checkSql,
  optionsAsParams,
  ownParams,
  type RunResult,
  show,
  type TransactionBehavior,
  wireOptions,
} from "./_calls.ts";
import { type PooledConnection, readsOnly } from "./connection.ts";
import { cursorRows, type IterateOptions } from "./cursor.ts";
import { abortable } from "./link.ts";
import { ownBytes } from "./_snapshot.ts";
import { keepStack, withCallerFrames } from "./_caller_stack.ts";
import {
  abandonNested,
  leaveTurn,
  nestedSettled,
  type OpenTransactions,
  takeTurn,
  transactionContext,
  type TransactionScope,
  turnOf,
} from "./_tx_order.ts";
import { type Ended, endedError, fixedRoute, type Route } from "./route.ts";
import { type Row, type SqlValue, toObject, toObjects } from "./rows.ts";
import { findTxControl, findTxEnd, RESERVED_SAVEPOINT } from "./_tx_control.ts";
import { Statement } from "./statement.ts";
import { KvCollection } from "./kv.ts";
import type { OwnWriter } from "./_own_writer.ts";
import {
  endedAlready,
  joinedCallRefused,
  levelOf,
  lostAtBegin,
  lostWithConnection,
  newLevel,
  noteSavepointEnds,
  poisonedCall,
  poisonedCommit,
  undoLevel,
} from "./_tx_undo.ts";

export type { BindParams, BindParamsOf, BindValue, RunResult } from "./_calls.ts";
export type { IterateOptions } from "./cursor.ts";

/**
 * One statement of `batch()`; `P` is its parameters' type, checked as
 * {@link BindParamsOf} checks a call's (an interface is accepted).
 */
export interface BatchStatement<P extends BindParamsOf<P> = BindParams> {
  /** SQL text of one statement. */
  sql: string;
  /** Its parameters. */
  params?: P;
}

/**
 * The statements `S` `batch()` accepts: each one's parameters checked
 * against their own type, as {@link BindParamsOf} checks a call's, so that
 * parameters typed by an interface are accepted and a property that cannot
 * be bound (`Date`, `undefined`, an optional property) is refused at
 * compile time. The statements of an array literal, whose element type is
 * a union, are checked each apart (the `infer X`).
 *
 * @example
 * ```ts
 * import type { BatchStatementsOf } from "@netsqlite/netsqlite";
 * interface UserParams { name: string }
 * function check<S extends BatchStatementsOf<S>>(statements: S): S {
 *   return statements;
 * }
 * const p: UserParams = { name: "ada" };
 * if (check([{ sql: "INSERT INTO u VALUES (:name)", params: p }]).length !== 1) {
 *   throw new Error("expected 1");
 * }
 * ```
 */
export type BatchStatementsOf<S> = {
  readonly [I in keyof S]: S[I] extends infer X
    ? X extends { params?: infer P } ? { sql: string; params?: BindParamsOf<P> } : { sql: string }
    : never;
};

/** Result of one statement of `batch()`. */
export interface BatchResult<T = Row> extends RunResult {
  /** Rows the statement returned (empty for statements that return none). */
  rows: T[];
}

/** Options of `exec()`: a deadline for the whole script, and a signal. */
export interface ExecOptions {
  /**
   * Deadline in ms (> 0) of the whole script, instead of the server's
   * statement timeout (`--statement-timeout`, which bounds each statement
   * alone): a statement running at the deadline is stopped, one not yet
   * begun does not run, and the call fails with `STATEMENT_TIMEOUT` saying
   * which statement and how many ran before it (as a failing statement, they
   * stay applied). A server older than this option ignores it.
   */
  timeout?: number;
  /** Aborts the call (see {@link CallOptions.signal}). */
  signal?: AbortSignal | null;
}

/** Options of `batch()`. */
export interface BatchOptions extends ExecOptions {
  /** Return rows as arrays of values (every column kept) instead of objects. @default {false} */
  arrays?: boolean;
  /**
   * `false` runs the batch with foreign keys off, as a table rebuild needs
   * (`CREATE TABLE new_t ...; INSERT INTO new_t SELECT ...; DROP TABLE t;
   * ALTER TABLE new_t RENAME TO t`, what drizzle-kit emits): `DROP TABLE t`
   * then deletes no rows of tables that reference `t`. Before the commit the
   * server runs `PRAGMA foreign_key_check`: any violation fails the batch,
   * nothing applied. Outside a transaction only (SQLite ignores the setting
   * inside one); other clients' statements keep their foreign keys.
   * @default {true}
   */
  foreignKeys?: boolean;
  /**
   * Deadline in ms of the whole batch (> 0), instead of the server's
   * statement timeout (`--statement-timeout`). A server older than this
   * option refuses the batch (`BAD_REQUEST`).
   */
  timeout?: number;
}

/** Options of `transaction()`. */
export interface TransactionOptions {
  /**
   * How the outermost transaction begins: `deferred`, `immediate` or
   * `exclusive`. netsqlite gives the transaction the writer at `BEGIN`
   * either way, also one that only reads: other clients' writes wait until
   * it ends (their reads do not). Read outside a transaction not to hold
   * them up.
   * @default {"deferred"}
   */
  behavior?: "deferred" | "immediate" | "exclusive";
  /**
   * Aborts the wait for a connection of the pool (all reserved or busy):
   * `transaction()` rejects with `AbortError` and `fn` never runs. Once the
   * transaction has begun it is `fn`'s: give its calls the signal to stop them.
   */
  signal?: AbortSignal | null;
}

let firstValuesOf: (
  q: Queryable,
  sql: string,
  params: BindParams | undefined,
) => Promise<SqlValue[] | undefined>;

/**
 * The first row of a statement as an array of values (every column kept,
 * duplicate names included), or `undefined`; the server steps the statement
 * for that row only. For adapters (Drizzle's `get`), not exported by the
 * package.
 *
 * @internal
 */
export function firstValues(
  q: Queryable,
  sql: string,
  params?: BindParams,
): Promise<SqlValue[] | undefined> {
  return firstValuesOf(q, sql, params);
}

/**
 * The query methods common to a client, a reserved connection and a
 * transaction (see `Client`, `ReservedConnection`, `Transaction`).
 *
 * @example
 * ```ts
 * import { serve } from "@netsqlite/netsqlite/server";
 * import { connect } from "@netsqlite/netsqlite";
 * const dir = await Deno.makeTempDir();
 * await using server = await serve({ database: `${dir}/a.db`, path: `${dir}/a.sock` });
 * await using db = await connect({ path: `${dir}/a.sock` });
 * import type { Queryable } from "@netsqlite/netsqlite";
 * // Works on a client, a reserved connection or inside a transaction alike.
 * async function count(q: Queryable, table: string): Promise<number> {
 *   return (await q.values<[number]>(`SELECT count(*) FROM ${table}`))[0][0];
 * }
 * await db.exec("CREATE TABLE t (x)");
 * const n = await db.transaction(async (tx) => {
 *   await tx.run("INSERT INTO t VALUES (1)");
 *   return await count(tx, "t");
 * });
 * if (n !== 1 || await count(db, "t") !== 1) throw new Error("expected 1");
 * ```
 */
export abstract class Queryable {
  readonly #route: Route;

  static {
    firstValuesOf = (q, sql, params) =>
      q.#query(sql, params, null, 0, undefined, true).then(([, rows]) =>
        rows[0] as SqlValue[] | undefined
      );
  }

  /** @internal */
  constructor(route: Route) {
    this.#route = route.refusesTxEnd === true ? route : joinedRoute(route);
  }

  /**
   * Runs a script of zero or more statements, without parameters.
   *
   * @param sql The script.
   * @param options One deadline for the whole script (see {@link ExecOptions.timeout}), an
   *   abort signal.
   * @throws {SqliteError} from the first failing statement; earlier ones stay applied.
   * @throws {TypeError} when `options` is not `{ timeout, signal }` (parameters, say: use
   *   {@link run}), or an argument follows them.
   * @example
   * ```ts
   * import { serve } from "@netsqlite/netsqlite/server";
   * import { connect } from "@netsqlite/netsqlite";
   * const dir = await Deno.makeTempDir();
   * await using server = await serve({ database: `${dir}/a.db`, path: `${dir}/a.sock` });
   * await using db = await connect({ path: `${dir}/a.sock` });
   * await db.exec(`
   *   CREATE TABLE note (id INTEGER PRIMARY KEY, body TEXT);
   *   INSERT INTO note (body) VALUES ('first'), ('second');
   * `);
   * if ((await db.values("SELECT count(*) FROM note"))[0][0] !== 2) throw new Error("expected 2");
   * ```
   */
  async exec(sql: string, options?: ExecOptions | null): Promise<void> {
    checkArgCount(EXEC, arguments.length);
    const opts = callOptions(EXEC, options);
    checkSql(sql);
    this.#refuseTxControl(sql, true);
    const wire = wireOptions(opts);
    try {
      await this.#call(Op.Exec, wire === null ? [sql] : [sql, null, wire], opts.signal);
    } catch (err) {
      throw withCallerFrames(err);
    }
  }

  /**
   * Runs one statement and reports what it changed.
   *
   * @param sql One SQL statement.
   * @param params Positional (`?`) values as an array, or named (`:name`) values as an object.
   * @param options A deadline or an abort signal for this call.
   * @returns the number of rows changed and the last inserted rowid.
   * @throws {SqliteError} SQLite's error (`code` such as `SQLITE_CONSTRAINT_UNIQUE`), or
   *   `INVALID_PARAM` for a value that cannot be bound.
   * @throws {TypeError} for an option it does not take or of the wrong type, options that
   *   are not a plain object, or an argument past the options (nothing is sent).
   * @example
   * ```ts
   * import { serve } from "@netsqlite/netsqlite/server";
   * import { connect } from "@netsqlite/netsqlite";
   * const dir = await Deno.makeTempDir();
   * await using server = await serve({ database: `${dir}/a.db`, path: `${dir}/a.sock` });
   * await using db = await connect({ path: `${dir}/a.sock` });
   * await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)");
   * const { changes, lastInsertRowid } = await db.run("INSERT INTO t (name) VALUES (?)", ["ada"]);
   * if (changes !== 1 || lastInsertRowid !== 1) throw new Error("unexpected result");
   * ```
   */
  async run<P extends BindParamsOf<P> = BindParams>(
    sql: string,
    params?: P,
    options?: CallOptions | null,
  ): Promise<RunResult> {
    checkSql(sql);
    this.#refuseTxControl(sql);
    const own = ownParamsOf(RUN, params);
    checkArgCount(RUN, arguments.length);
    const opts = callOptions(RUN, options);
    let reply: Replies[typeof Op.Run];
    try {
      reply = await this.#call(Op.Run, [sql, own, wireOptions(opts)], opts.signal);
    } catch (err) {
      throw withCallerFrames(optionsAsParams(err, RUN, own ?? params));
    }
    return { changes: changesOf(reply[0]), lastInsertRowid: reply[1] };
  }

  /**
   * Runs one statement and returns every row as an object; where column names
   * repeat, the last column of a name wins (use {@link values} to keep all).
   * The whole result is buffered; results above the server's `maxResultBytes`
   * fail with `RESULT_TOO_LARGE`: use {@link iterate} for those.
   *
   * @param sql One SQL statement.
   * @param params Positional or named values.
   * @param options A deadline or an abort signal for this call.
   * @returns every row, as objects keyed by column name.
   * @throws {SqliteError} SQLite's error, or `RESULT_TOO_LARGE`.
   * @throws {TypeError} for an option it does not take or of the wrong type, options that
   *   are not a plain object, or an argument past the options (nothing is sent).
   * @example
   * ```ts
   * import { serve } from "@netsqlite/netsqlite/server";
   * import { connect } from "@netsqlite/netsqlite";
   * const dir = await Deno.makeTempDir();
   * await using server = await serve({ database: `${dir}/a.db`, path: `${dir}/a.sock` });
   * await using db = await connect({ path: `${dir}/a.sock` });
   * const rows = await db.query<{ n: number; sq: number }>(
   *   "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s LIMIT 3) SELECT n, n * n AS sq FROM s",
   * );
   * if (rows[2].sq !== 9) throw new Error("expected 9");
   * ```
   */
  async query<T = Row, P extends BindParamsOf<P> = BindParams>(
    sql: string,
    params?: P,
    options?: CallOptions | null,
  ): Promise<T[]> {
    let reply: Replies[typeof Op.Query];
    try {
      reply = await this.#query(
        sql,
        params as BindParams | undefined,
        QUERY,
        arguments.length,
        options,
      );
    } catch (err) {
      throw withCallerFrames(err);
    }
    return toObjects(reply[0], reply[1]) as T[];
  }

  /**
   * Runs one statement and returns every row as an array of values, in
   * column order; columns of the same name stay apart.
   *
   * @param sql One SQL statement.
   * @param params Positional or named values.
   * @param options A deadline or an abort signal for this call.
   * @returns every row as an array.
   * @throws {SqliteError} SQLite's error, or `RESULT_TOO_LARGE`.
   * @throws {TypeError} for an option it does not take or of the wrong type, options that
   *   are not a plain object, or an argument past the options (nothing is sent).
   * @example
   * ```ts
   * import { serve } from "@netsqlite/netsqlite/server";
   * import { connect } from "@netsqlite/netsqlite";
   * const dir = await Deno.makeTempDir();
   * await using server = await serve({ database: `${dir}/a.db`, path: `${dir}/a.sock` });
   * await using db = await connect({ path: `${dir}/a.sock` });
   * const [[a, b]] = await db.values<[number, string]>("SELECT 1 AS x, 'one' AS x");
   * if (a !== 1 || b !== "one") throw new Error("both columns named x are kept");
   * ```
   */
  async values<T extends unknown[] = SqlValue[], P extends BindParamsOf<P> = BindParams>(
    sql: string,
    params?: P,
    options?: CallOptions | null,
  ): Promise<T[]> {
    try {
      const p = params as BindParams | undefined;
      return (await this.#query(sql, p, VALUES, arguments.length, options))[1] as T[];
    } catch (err) {
      throw withCallerFrames(err);
    }
  }

  /**
   * Runs one statement and returns its first row, or `undefined`.
   *
   * @param sql One SQL statement.
   * @param params Positional or named values.
   * @param options A deadline or an abort signal for this call.
   * @returns the first row as an object, or `undefined` when there is none.
   * @throws {SqliteError} SQLite's error.
   * @throws {TypeError} for an option it does not take or of the wrong type, options that
   *   are not a plain object, or an argument past the options (nothing is sent).
   * @example
   * ```ts
   * import { serve } from "@netsqlite/netsqlite/server";
   * import { connect } from "@netsqlite/netsqlite";
   * const dir = await Deno.makeTempDir();
   * await using server = await serve({ database: `${dir}/a.db`, path: `${dir}/a.sock` });
   * await using db = await connect({ path: `${dir}/a.sock` });
   * const row = await db.get<{ big: bigint }>("SELECT 9007199254740993 AS big");
   * if (row?.big !== 9007199254740993n) throw new Error("integers beyond 2^53 come back as bigint");
   * if (await db.get("SELECT 1 WHERE 0") !== undefined) throw new Error("no row: undefined");
   * ```
   */
  async get<T = Row, P extends BindParamsOf<P> = BindParams>(
    sql: string,
    params?: P,
    options?: CallOptions | null,
  ): Promise<T | undefined> {
    let reply: Replies[typeof Op.Query];
    try {
      reply = await this.#query(
        sql,
        params as BindParams | undefined,
        GET,
        arguments.length,
        options,
        true,
      );
    } catch (err) {
      throw withCallerFrames(err);
    }
    const [columns, rows] = reply;
    return rows.length === 0 ? undefined : toObject(columns, rows[0]) as T;
  }

  /**
   * Streams a statement's rows: the server steps it a chunk at a time and
   * sends the next chunk only when asked, so memory stays bounded on both
   * sides whatever the result size. Leaving the loop early closes the cursor.
   *
   * @param sql One SQL statement.
   * @param params Positional or named values.
   * @param options `arrays: true` for rows as arrays; a deadline or abort signal.
   * @returns an async generator of rows.
   *
   * @example
   * ```ts
   * import { serve } from "@netsqlite/netsqlite/server";
   * import { connect } from "@netsqlite/netsqlite/client";
   * const dir = await Deno.makeTempDir();
   * await using server = await serve({ database: `${dir}/a.db`, path: `${dir}/a.sock` });
   * await using db = await connect({ path: `${dir}/a.sock` });
   * let sum = 0;
   * const sql = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT 10000) SELECT x FROM n";
   * for await (const row of db.iterate<{ x: number }>(sql)) sum += row.x;
   * if (sum !== 50005000) throw new Error("wrong sum");
   * ```
   *
   * @throws {SqliteError} `STATEMENT_TIMEOUT` when one chunk takes longer
   *   than the statement timeout, or SQLite's error.
   * @throws {TypeError} for an option it does not take or of the wrong type, options that
   *   are not a plain object, or an argument past the options (nothing is sent).
   */
  iterate<T = Row, P extends BindParamsOf<P> = BindParams>(
    sql: string,
    params?: P,
    options?: (IterateOptions & { arrays?: false }) | null,
  ): AsyncGenerator<T>;
  /**
   * {@link iterate} with `arrays: true`: rows as arrays of values, in column order.
   *
   * @param sql One SQL statement.
   * @param params Positional or named values.
   * @param options `arrays: true`; a deadline or abort signal.
   * @returns an async generator of rows as arrays.
   * @throws {SqliteError} `STATEMENT_TIMEOUT` or SQLite's error.
   */
  iterate<T extends unknown[] = SqlValue[], P extends BindParamsOf<P> = BindParams>(
    sql: string,
    params: P | undefined,
    options: IterateOptions & { arrays: true },
  ): AsyncGenerator<T>;
  /**
   * {@link iterate} with `arrays: true` and a row type that is no array
   * (an object type): rows are arrays all the same, typed `SqlValue[]`
   * (give a tuple type to type them).
   *
   * @param sql One SQL statement.
   * @param params Positional or named values.
   * @param options `arrays: true`; a deadline or abort signal.
   * @returns an async generator of rows as arrays.
   * @throws {SqliteError} `STATEMENT_TIMEOUT` or SQLite's error.
   */
  iterate<T, P extends BindParamsOf<P> = BindParams>(
    sql: string,
    params: P | undefined,
    options: IterateOptions & { arrays: true },
  ): AsyncGenerator<SqlValue[]>;
  /**
   * {@link iterate} with `arrays` a `boolean` known only at run time
   * (`{ arrays: flag }`): rows as objects or arrays. `T` types one of the
   * two forms: an array type the arrays (objects are then `Row`), any
   * other type the objects (arrays are then `SqlValue[]`).
   *
   * @param sql One SQL statement.
   * @param params Positional or named values.
   * @param options `arrays`; a deadline or abort signal.
   * @returns an async generator of rows.
   * @throws {SqliteError} `STATEMENT_TIMEOUT` or SQLite's error.
   */
  iterate<T = Row, P extends BindParamsOf<P> = BindParams>(
    sql: string,
    params: P | undefined,
    options: IterateOptions & { arrays: boolean },
  ): AsyncGenerator<[T] extends [readonly unknown[]] ? Row | T : T | SqlValue[]>;
  /**
   * {@link iterate} with options typed `IterateOptions`, whose `arrays` is
   * optional: rows typed as objects, the default (type the options
   * `IterateOptions & { arrays: true }` for arrays).
   *
   * @param sql One SQL statement.
   * @param params Positional or named values.
   * @param options A deadline or abort signal; `arrays`.
   * @returns an async generator of rows.
   * @throws {SqliteError} `STATEMENT_TIMEOUT` or SQLite's error.
   */
  iterate<T = Row, P extends BindParamsOf<P> = BindParams>(
    sql: string,
    params?: P,
    options?: IterateOptions | null,
  ): AsyncGenerator<T>;
  iterate(
    sql: string,
    params?: BindParams,
    options?: IterateOptions | null,
  ): AsyncGenerator<unknown> {
    let own: WireParams;
    let opts: CheckedOptions;
    try {
      checkSql(sql);
      this.#refuseTxControl(sql);
      own = ownParamsOf(ITERATE, params);
      checkArgCount(ITERATE, arguments.length);
      opts = callOptions(ITERATE, options);
    } catch (err) {
      return failing(err);
    }
    // Sent when iterating starts: with the bytes of now.
    ownBytes(own);
    const writes = !readsOnly(sql);
    // Calls issued before it in the same burst run first (README: Order),
    // although its connection is chosen only when iterating starts.
    const earlier = this.#route.earlier?.() ?? null;
    return this.#iterate(sql, own, opts, writes, earlier);
  }

  /**
   * {@link iterate}'s rows. The connection is chosen when iterating starts,
   * as for any call at the moment it is sent: one chosen at `iterate()` and
   * used later could meanwhile be handed to a `transaction()` of the same
   * client, and the cursor would run inside that transaction (reading its
   * uncommitted rows, and a write through it rolled back with it).
   */
  async *#iterate(
    sql: string,
    params: WireParams,
    options: CheckedOptions,
    writes: boolean,
    earlier: Promise<void> | null,
  ): AsyncGenerator<unknown> {
    if (earlier !== null) {
      // The wait for them ends when the call's signal aborts, as any wait of a call does.
      try {
        await abortable(earlier, options.signal);
      } catch (err) {
        throw withCallerFrames(err);
      }
    }
    const explain = this.#route.ownWriter?.watch() ?? null;
    const c = this.#route.connection(writes, true, earlier !== null);
    const rows = cursorRows(c, sql, params, options, writes);
    try {
      yield* rows;
    } catch (err) {
      const hinted = optionsAsParams(err, ITERATE, params);
      throw withCallerFrames(explain === null ? hinted : explain(hinted));
    }
  }

  /**
   * Runs statements atomically, in one transaction: all take effect or none.
   *
   * @param statements The statements and their parameters, in order.
   * @param options `arrays: true` for rows as arrays; `foreignKeys`; a
   *   deadline for the whole batch (`timeout`); an abort signal.
   * @returns one result per statement, in order; rows as objects, or as
   *   arrays with `{ arrays: true }`.
   * @throws {SqliteError} naming the failing statement; nothing was applied
   *   (`STATEMENT_TIMEOUT` when the batch ran past its deadline).
   * @throws {TypeError} for an option it does not take or of the wrong type, options that
   *   are not a plain object, or an argument past the options (nothing is sent).
   * @example
   * ```ts
   * import { serve } from "@netsqlite/netsqlite/server";
   * import { connect } from "@netsqlite/netsqlite";
   * const dir = await Deno.makeTempDir();
   * await using server = await serve({ database: `${dir}/a.db`, path: `${dir}/a.sock` });
   * await using db = await connect({ path: `${dir}/a.sock` });
   * await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE)");
   * const results = await db.batch([
   *   { sql: "INSERT INTO t (name) VALUES (?)", params: ["ada"] },
   *   { sql: "SELECT name FROM t" },
   * ]);
   * if (results[1].rows[0].name !== "ada") throw new Error("expected ada");
   * // A failing statement undoes the whole batch.
   * await db.batch([{ sql: "INSERT INTO t (name) VALUES ('bob')" }, { sql: "INSERT INTO t (name) VALUES ('ada')" }])
   *   .catch(() => {});
   * if ((await db.values("SELECT count(*) FROM t"))[0][0] !== 1) throw new Error("bob was undone");
   * ```
   */
  batch<T = Row, S extends BatchStatementsOf<S> = readonly BatchStatement[]>(
    statements: S,
    options?: (BatchOptions & { arrays?: false }) | null,
  ): Promise<BatchResult<T>[]>;
  /**
   * {@link batch} with `arrays: true`: each result's rows as arrays of values.
   *
   * @param statements The statements and their parameters, in order.
   * @param options `arrays: true`; `foreignKeys`, `timeout`, an abort signal.
   * @returns one result per statement, in order, rows as arrays.
   * @throws {SqliteError} naming the failing statement; nothing was applied.
   */
  batch<
    T extends unknown[] = SqlValue[],
    S extends BatchStatementsOf<S> = readonly BatchStatement[],
  >(
    statements: S,
    options: BatchOptions & { arrays: true },
  ): Promise<BatchResult<T>[]>;
  /**
   * {@link batch} with `arrays: true` and a row type that is no array (an
   * object type): rows are arrays all the same, typed `SqlValue[]` (give a
   * tuple type to type them).
   *
   * @param statements The statements and their parameters, in order.
   * @param options `arrays: true`; `foreignKeys`, `timeout`, an abort signal.
   * @returns one result per statement, in order, rows as arrays.
   * @throws {SqliteError} naming the failing statement; nothing was applied.
   */
  batch<T, S extends BatchStatementsOf<S> = readonly BatchStatement[]>(
    statements: S,
    options: BatchOptions & { arrays: true },
  ): Promise<BatchResult<SqlValue[]>[]>;
  /**
   * {@link batch} with `arrays` a `boolean` known only at run time
   * (`{ arrays: flag }`): rows as objects or arrays. `T` types one of the
   * two forms: an array type the arrays (objects are then `Row`), any
   * other type the objects (arrays are then `SqlValue[]`).
   *
   * @param statements The statements and their parameters, in order.
   * @param options `arrays`, `foreignKeys`, `timeout`, an abort signal.
   * @returns one result per statement, in order.
   * @throws {SqliteError} naming the failing statement; nothing was applied.
   */
  batch<T = Row, S extends BatchStatementsOf<S> = readonly BatchStatement[]>(
    statements: S,
    options: BatchOptions & { arrays: boolean },
  ): Promise<BatchResult<[T] extends [readonly unknown[]] ? Row | T : T | SqlValue[]>[]>;
  /**
   * {@link batch} with options typed `BatchOptions`, whose `arrays` is
   * optional: rows typed as objects, the default (type the options
   * `BatchOptions & { arrays: true }` for arrays).
   *
   * @param statements The statements and their parameters, in order.
   * @param options `foreignKeys`, `timeout`, an abort signal; `arrays`.
   * @returns one result per statement, in order.
   * @throws {SqliteError} naming the failing statement; nothing was applied.
   */
  batch<T = Row, S extends BatchStatementsOf<S> = readonly BatchStatement[]>(
    statements: S,
    options?: BatchOptions | null,
  ): Promise<BatchResult<T>[]>;
  async batch(
    statements: readonly { sql: string; params?: unknown }[],
    options?: BatchOptions | null,
  ): Promise<BatchResult<unknown>[]> {
    checkBatchStatements(statements);
    const items: BatchItem[] = [];
    for (let i = 0; i < statements.length; i++) {
      // Each read once: what is checked is what is sent.
      const item: unknown = statements[i];
      const where = `Batch statement ${i + 1}: `;
      checkBatchItem(item, where);
      const { sql, params } = item;
      checkSql(sql, where);
      items.push([sql, ownParams(params, where)]);
    }
    checkArgCount(BATCH, arguments.length);
    const opts = callOptions(BATCH, options);
    const wire: WireBatchOptions = {};
    if (opts.foreignKeys === false) wire.foreignKeys = false;
    if (opts.timeout !== undefined) wire.timeout = opts.timeout;
    const args: [BatchItem[], WireBatchOptions?] = Object.keys(wire).length > 0
      ? [items, wire]
      : [items];
    let results: Replies[typeof Op.Batch];
    try {
      results = await this.#call(Op.Batch, args, opts.signal);
    } catch (err) {
      throw withCallerFrames(err);
    }
    const arrays = opts.arrays === true;
    return results.map(([changes, lastInsertRowid, columns, rows]) => ({
      changes: changesOf(changes),
      lastInsertRowid,
      rows: arrays ? rows : toObjects(columns, rows),
    }));
  }

  /**
   * Runs `fn` inside a transaction on a connection of its own: commits when
   * it resolves, rolls back when it throws (and rethrows), and returns its
   * value. Only statements issued through `tx` run inside the transaction;
   * calls on the client meanwhile run outside it, on other connections. A
   * nested `tx.transaction()` uses a savepoint, so only the inner work is
   * undone when the inner `fn` throws.
   * `tx` refuses statements that would begin or end the transaction
   * (`BEGIN`, `COMMIT`, `END`, `ROLLBACK` without `TO`) with `SqliteError`
   * `TX_CONTROL`, before sending them; savepoints stay allowed (in a nested
   * transaction, release or roll back only the ones it opened).
   *
   * @param fn The work; it receives the transaction.
   * @param options How to begin.
   * @returns what `fn` resolved to.
   * @throws whatever `fn` threw, after rolling back; `SqliteError` when
   *   BEGIN or COMMIT fails (for example `BUSY_TIMEOUT` or `TX_TIMEOUT`);
   *   `SqliteError` `TX_NESTED_RUNNING`, after rolling back, when `fn`
   *   settled while a transaction nested in it was still running (a
   *   `tx.transaction()` without `await`): its calls then fail with `TX_ENDED`;
   *   `SqliteError` `TX_UNDO_FAILED` when a nested transaction could not undo its
   *   work (a `RELEASE` or `ROLLBACK TO` inside it of a savepoint opened before it
   *   ended its savepoint too): from the nested one, and from each enclosing one
   *   that was rolled back instead of committed because of it (see `_tx_undo.ts`);
   *   `ConnectionError` when the connection is lost after `fn` resolved:
   *   `mayHaveRun` true when its COMMIT was in flight (the transaction may
   *   or may not have been committed), false when the COMMIT was not sent
   *   (the server rolled the transaction back);
   *   `ConnectionError` `ACQUIRE_TIMEOUT` or `AbortError` when no
   *   connection came within the `acquireTimeout` connect option or before
   *   `options.signal` aborted (then `fn` did not run).
   * @throws {TypeError} (a rejection, as every error of this call) for an
   *   option other than `behavior` and `signal` or of the wrong type, options
   *   that are not a plain object, an `fn` that is not a function, or a third
   *   argument: nothing began and `fn` did not run.
   * @example
   * ```ts
   * import { serve } from "@netsqlite/netsqlite/server";
   * import { connect } from "@netsqlite/netsqlite";
   * const dir = await Deno.makeTempDir();
   * await using server = await serve({ database: `${dir}/a.db`, path: `${dir}/a.sock` });
   * await using db = await connect({ path: `${dir}/a.sock` });
   * await db.exec("CREATE TABLE account (id INTEGER PRIMARY KEY, balance INTEGER)");
   * await db.run("INSERT INTO account VALUES (1, 100), (2, 0)");
   * await db.transaction(async (tx) => {
   *   await tx.run("UPDATE account SET balance = balance - 30 WHERE id = 1");
   *   await tx.run("UPDATE account SET balance = balance + 30 WHERE id = 2");
   * });
   * await db.transaction(async (tx) => {
   *   await tx.run("DELETE FROM account");
   *   throw new Error("changed my mind"); // rolls back, then rethrows
   * }).catch(() => {});
   * if ((await db.values("SELECT sum(balance) FROM account"))[0][0] !== 100) throw new Error("lost money");
   * ```
   */
  transaction<T>(
    fn: (tx: Transaction) => Promise<T>,
    options?: TransactionOptions | null,
  ): Promise<T> {
    // Not async (the caller's frames are added to its errors below), so each refusal is
    // returned as a rejection, never thrown: `transaction(fn, null)` rejects as any call does.
    let behavior: TransactionBehavior;
    let signal: AbortSignal | undefined;
    try {
      checkArgCount(TRANSACTION, arguments.length);
      checkTransactionFn(fn);
      ({ behavior = "deferred", signal } = callOptions(TRANSACTION, options));
    } catch (err) {
      return Promise.reject(err);
    }
    if (signal?.aborted) {
      return Promise.reject(
        new AbortError("Call was aborted by its signal", { cause: signal.reason }),
      );
    }
    const ownWriter = this.#route.ownWriter;
    // Errors of BEGIN, COMMIT and of the wait for a connection get the caller's frames; a
    // netsqlite error `fn` threw from its calls has them already (see withCallerFrames).
    return this.#route.exclusive(
      (conn) => runTransaction(conn, fn, behavior, this, ownWriter),
      signal,
    ).catch((err) => Promise.reject(withCallerFrames(err)));
  }

  /**
   * A key-value collection stored in this database (table `netsqlite_kv`);
   * its operations run here: inside the transaction, on the reserved
   * connection, or on the shared pool. See `client/kv.ts`.
   */
  kv(name: string): KvCollection {
    return new KvCollection(this, name);
  }

  /**
   * Prepares a statement; call {@link Statement.finalize} when done. On the
   * shared pool it is prepared again, lazily, on each connection it runs on.
   *
   * @param sql One SQL statement.
   * @returns the prepared statement.
   * @throws {SqliteError} when the SQL does not compile.
   * @example
   * ```ts
   * import { serve } from "@netsqlite/netsqlite/server";
   * import { connect } from "@netsqlite/netsqlite";
   * const dir = await Deno.makeTempDir();
   * await using server = await serve({ database: `${dir}/a.db`, path: `${dir}/a.sock` });
   * await using db = await connect({ path: `${dir}/a.sock` });
   * await db.exec("CREATE TABLE t (x INTEGER)");
   * const insert = await db.prepare("INSERT INTO t VALUES (?)");
   * for (let i = 0; i < 3; i++) await insert.run([i]);
   * await insert.finalize();
   * if ((await db.values("SELECT sum(x) FROM t"))[0][0] !== 3) throw new Error("expected 3");
   * ```
   */
  async prepare(sql: string): Promise<Statement> {
    checkArgCount(PREPARE, arguments.length);
    checkSql(sql);
    this.#refuseTxControl(sql, false, false);
    const explain = this.#route.ownWriter?.watch() ?? null;
    // Sent in the same run of code as chosen (no await between): see #iterate.
    const c = this.#route.connection();
    let conn: PooledConnection;
    let handle: number;
    let columns: string[];
    try {
      conn = c instanceof Promise ? await c : c;
    } catch (err) {
      throw withCallerFrames(err);
    }
    try {
      [handle, columns] = await conn.request(Op.Prepare, [sql]);
    } catch (err) {
      throw withCallerFrames(explain === null ? err : explain(err));
    }
    return new Statement(this.#route, sql, columns, conn, handle, conn.generation);
  }

  /**
   * Runs `sql` for its rows (the first only when `first`). `shape` is the
   * public call's, whose `count` arguments and `options` are checked after
   * the SQL and the parameters; `null` for the client's own calls, which
   * pass none.
   */
  async #query(
    sql: string,
    params: BindParams | undefined,
    shape: CallShape | null,
    count: number,
    options: unknown,
    first = false,
  ): Promise<Replies[typeof Op.Query]> {
    checkSql(sql);
    this.#refuseTxControl(sql);
    if (shape === null) {
      return await this.#call(Op.Query, [sql, ownParams(params), wireOptions(undefined, first)]);
    }
    const own = ownParamsOf(shape, params);
    checkArgCount(shape, count);
    const opts = callOptions(shape, options);
    try {
      return await this.#call(Op.Query, [sql, own, wireOptions(opts, first)], opts.signal);
    } catch (err) {
      throw optionsAsParams(err, shape, own ?? params);
    }
  }

  /**
   * Sends one request by `call()`; on the shared pool, a `BUSY_TIMEOUT` it
   * gets while the client's own transaction held the writer names that
   * transaction and says to query through `tx` (see `OwnWriter`).
   */
  #call<O extends typeof Op.Exec | typeof Op.Run | typeof Op.Query | typeof Op.Batch>(
    op: O,
    args: Requests[O],
    signal?: AbortSignal,
  ): Promise<Replies[O]> {
    // Noted before sending: which of the client's transactions are open now.
    const explain = this.#route.ownWriter?.watch() ?? null;
    const sent = call(this.#route, op, args, signal);
    this.#route.issued?.(sent);
    return explain === null ? sent : sent.catch((err) => Promise.reject(explain(err)));
  }

  /**
   * Throws `TX_CONTROL` for what this route refuses; `sql` passed {@link checkSql} first.
   * On a `transaction()` handle, `note` records the savepoints `sql` releases or rolls back
   * to (see `noteSavepointEnds`): false for `prepare()`, which runs nothing.
   */
  #refuseTxControl(sql: string, script = false, note = true): void {
    if (this.#route.refusesTxEnd === true) {
      return refuseTxEnd(sql, script, note ? scopeOfTx.get(this) : undefined);
    }
    if (!this.#route.refusesTxControl) return;
    const word = findTxControl(sql, script);
    if (word === null) return;
    throw new SqliteError(
      ErrorCode.TxControl,
      `Cannot run "${word}" on the client's shared pool: other callers' statements would fall ` +
        "into the transaction; use transaction(), or reserve() for raw BEGIN/COMMIT (or connect " +
        "with max: 1)",
    );
  }
}

/** Scratch list for {@link refuseTxEnd}'s `findTxEnd` (always left empty). */
const endsMet: string[] = [];

/**
 * Throws `TX_CONTROL` for a statement of `sql` that would begin or end the
 * transaction of a `transaction()` handle (see `findTxEnd`): sent, a
 * `COMMIT` or `ROLLBACK` would end it while `fn` goes on, so its later
 * statements would run in autocommit, beyond the reach of its rollback.
 * With `scope`, the handle's transaction, notes the savepoints of other
 * names that `sql`, allowed, releases or rolls back to (see `_tx_undo.ts`).
 */
function refuseTxEnd(sql: string, script: boolean, scope: TransactionScope | undefined): void {
  const found = findTxEnd(sql, script, scope === undefined ? undefined : endsMet);
  if (endsMet.length > 0) {
    if (found === null) noteSavepointEnds(scope!.conn, endsMet);
    endsMet.length = 0;
  }
  if (found === null) return;
  const why = found.reserved
    ? `savepoints named ${RESERVED_SAVEPOINT}* are transaction()'s own (its nested levels): ` +
      "releasing one, or rolling back to one, would end that level early and let the statements " +
      "after it escape its rollback"
    : "transaction() ends the transaction itself (it commits when fn resolves and rolls back " +
      "when fn throws)";
  throw new SqliteError(
    ErrorCode.TxControl,
    `Cannot run "${found.statement}" inside transaction(): ${why}; use savepoints of other ` +
      "names or a nested tx.transaction()",
  );
}

/**
 * A transaction opened by `transaction()`: the query API on the transaction's
 * connection, valid until its `fn` settles (calls after that fail with
 * `SqliteError` `TX_ENDED`).
 *
 * @example
 * ```ts
 * import { serve } from "@netsqlite/netsqlite/server";
 * import { connect } from "@netsqlite/netsqlite";
 * const dir = await Deno.makeTempDir();
 * await using server = await serve({ database: `${dir}/a.db`, path: `${dir}/a.sock` });
 * await using db = await connect({ path: `${dir}/a.sock` });
 * await db.exec("CREATE TABLE t (x)");
 * await db.transaction(async (tx) => {
 *   await tx.run("INSERT INTO t VALUES (1)");
 *   // A nested transaction is a savepoint: only its own work is undone.
 *   await tx.transaction(async (inner) => {
 *     await inner.run("INSERT INTO t VALUES (2)");
 *     throw new Error("undo 2");
 *   }).catch(() => {});
 *   if (!tx.inTransaction) throw new Error("still inside");
 * });
 * if ((await db.values("SELECT x FROM t")).length !== 1) throw new Error("expected only 1");
 * ```
 */
export class Transaction extends Queryable {
  readonly #conn: PooledConnection;
  readonly #active: () => Ended | null;

  /** @internal */
  constructor(conn: PooledConnection, active: () => Ended | null, scope: TransactionScope) {
    super(transactionRoute(conn, active, scope));
    this.#conn = conn;
    this.#active = active;
  }

  /** True while the transaction is open on the server (SQLite may end it on some errors). */
  get inTransaction(): boolean {
    return this.#active() === null && this.#conn.inTransaction;
  }
}

/** The transaction each `tx` object stands for (whose `tx.transaction()` nests in it). */
const scopeOfTx = new WeakMap<Queryable, TransactionScope>();

/**
 * The route of a `tx`: its connection, once the statement may run there.
 * A statement sent through `tx` while a transaction nested in it, started
 * from another branch of its function (`Promise.all([tx.transaction(a),
 * tx.run(...)])`), is open waits until that one ended: run inside the
 * other's savepoint, it would be undone by that one's `ROLLBACK TO` after
 * being acknowledged. Sent through the innermost transaction's own `tx`, or
 * from inside that transaction's function, it runs at once.
 */
function transactionRoute(
  conn: PooledConnection,
  active: () => Ended | null,
  scope: TransactionScope,
): Route {
  const fixed = fixedRoute(conn, active);
  // Refused too where it would run in a level that cannot commit (see poisonedCall).
  const checked = (): PooledConnection | Promise<PooledConnection> => {
    const c = fixed.connection();
    if (c instanceof Promise) return c;
    const poisoned = poisonedCall(conn);
    return poisoned === null ? c : Promise.reject(poisoned);
  };
  return {
    connection(): PooledConnection | Promise<PooledConnection> {
      const c = fixed.connection();
      if (c instanceof Promise) return c;
      // Ended meanwhile: refused at once (the connection may serve another caller by now).
      const wait = turnOf(conn, scope, () => active() === null);
      return wait === null ? checked() : wait.then(checked);
    },
    exclusive: fixed.exclusive,
    refusesTxControl: false,
    refusesTxEnd: true,
  };
}

/**
 * A route that is not a `tx`'s (the client's, a reserved connection's),
 * whose calls refuse to run in a `transaction()` level that cannot go on,
 * as calls through that level's `tx` do (see `joinedCallRefused`): made
 * from inside its function, a plain call on a `max: 1` client joins it, and
 * one on the reserved connection it runs on runs in it. Checked once the
 * call's turn came (a level may be poisoned while it waited).
 */
function joinedRoute(route: Route): Route {
  const check = (c: PooledConnection): PooledConnection => {
    const refused = joinedCallRefused(c);
    if (refused !== null) throw refused;
    return c;
  };
  return {
    ...route,
    connection(
      writes?: boolean,
      cursor?: boolean,
      alone?: boolean,
    ): PooledConnection | Promise<PooledConnection> {
      const c = route.connection(writes, cursor, alone);
      if (c instanceof Promise) return c.then(check);
      const refused = joinedCallRefused(c);
      return refused === null ? c : Promise.reject(refused);
    },
  };
}

async function runTransaction<T>(
  conn: PooledConnection,
  fn: (tx: Transaction) => Promise<T>,
  behavior: string,
  on: Queryable,
  ownWriter: OwnWriter | undefined,
): Promise<T> {
  const parent = scopeOfTx.get(on);
  const scope: TransactionScope = {
    conn,
    active: true,
    parent: parent ?? transactionContext.getStore(),
  };
  const open = await takeTurn(conn, scope, parent);
  // The transaction it was to nest in settled meanwhile (see abandonNested): nothing was sent.
  if (open === null) throw endedError(NESTED_TX_ENDED);
  try {
    return await runInScope(conn, open, scope, fn, behavior, ownWriter);
  } finally {
    if (conn.txOwner === scope) conn.txOwner = null;
    leaveTurn(open, scope);
  }
}

/** What `exec()`'s options are most likely when they are not `{ signal }`: parameters. */
const EXEC_NO_PARAMS = "exec() takes no parameters: use run() or query() for a statement with " +
  "parameters";
const EXEC_PARAMS =
  `${EXEC_NO_PARAMS} (exec()'s second argument is its options: { timeout, signal })`;

/**
 * `exec()`: a script without parameters, whose options are a deadline and a
 * signal; an array, an unknown key, a lone value or values spread after the
 * SQL (`@db/sqlite`'s `exec(sql, ...params)`) are taken for parameters
 * (which a script cannot bind).
 */
const EXEC: CallShape = {
  name: "exec()",
  args: ["sql", "options"],
  options: ["timeout", "signal"],
  arrayMessage: EXEC_PARAMS,
  valueHint: EXEC_NO_PARAMS,
  extraHint: `${EXEC_NO_PARAMS}, given in one array (positional) or plain object (named)`,
  unknownKey: (key) => `Invalid exec() option "${key}": ${EXEC_PARAMS}`,
};

/** The shape of a call of one statement by its SQL (`run()`, `query()`, ...). */
function statementCall(name: string, options: CallShape["options"]): CallShape {
  return {
    name,
    args: ["sql", "params", "options"],
    options,
    arrayHint: "pass every parameter in the one array or plain object before the options",
  };
}

const RUN = statementCall("run()", ["timeout", "signal"]);
const QUERY = statementCall("query()", ["timeout", "signal"]);
const VALUES = statementCall("values()", ["timeout", "signal"]);
const GET = statementCall("get()", ["timeout", "signal"]);
const ITERATE = statementCall("iterate()", ["arrays", "timeout", "signal"]);
const PREPARE: CallShape = {
  name: "prepare()",
  args: ["sql"],
  options: [],
  extraHint: "pass the parameters to the statement's run(), all(), get(), values() or iterate()",
};
const BATCH: CallShape = {
  name: "batch()",
  args: ["statements", "options"],
  options: ["arrays", "foreignKeys", "timeout", "signal"],
};

/**
 * {@link ownParams} for a public call: a refusal of options passed in the
 * parameters' place (`{ signal }`) says where they go (see `optionsAsParams`).
 */
function ownParamsOf(shape: CallShape, params: unknown): WireParams {
  try {
    return ownParams(params);
  } catch (err) {
    throw optionsAsParams(err, shape, params);
  }
}

/** `transaction(fn, options)`: how it begins, and a signal for the wait for a connection. */
const TRANSACTION: CallShape = {
  name: "transaction()",
  args: ["fn", "options"],
  options: ["behavior", "signal"],
};

/**
 * Refuses a `fn` that is not a function before anything begins (called
 * after `BEGIN`, it would fail there and roll back an empty transaction).
 *
 * @throws {TypeError} naming what was passed instead.
 */
function checkTransactionFn(fn: unknown): void {
  if (typeof fn === "function") return;
  throw new TypeError(
    `Invalid transaction() call: expected a function (tx) => Promise as fn, got ${show(fn)}`,
  );
}

/** Why a call through a `tx` whose `fn` settled is refused. */
const TX_ENDED: Ended = {
  message: "Transaction has ended: its function already settled (calls through its tx are refused)",
  code: ErrorCode.TxEnded,
};

/** Why a nested transaction whose enclosing transaction's `fn` settled first is refused. */
const NESTED_TX_ENDED: Ended = {
  message: "Transaction has ended: the transaction it is nested in settled while this nested " +
    "one was still running (a tx.transaction() without await?), and rolled back the work of both " +
    "(calls through its tx are refused)",
  code: ErrorCode.TxEnded,
};

async function runInScope<T>(
  conn: PooledConnection,
  open: OpenTransactions,
  scope: TransactionScope,
  fn: (tx: Transaction) => Promise<T>,
  behavior: string,
  ownWriter: OwnWriter | undefined,
): Promise<T> {
  // The transaction it was to nest in settled after takeTurn() let this one in and before
  // this runs (a tx.transaction() started in a microtask as that fn returned or threw), and
  // was rolled back or committed: a SAVEPOINT (or BEGIN) sent now would open a transaction
  // of its own after that ROLLBACK or COMMIT, left open on the connection. Nothing is sent.
  if (!scope.active) throw endedError(NESTED_TX_ENDED);
  // The level it nests in cannot commit (see undoLevel): nothing is sent.
  const refused = poisonedCall(conn, levelOf(open.stack[open.stack.indexOf(scope) - 1]));
  if (refused !== null) throw refused;
  const depth = conn.txDepth;
  // Outermost, unless the connection is inside a transaction of its own (a
  // raw BEGIN on a reserved connection): a savepoint of it then, as
  // better-sqlite3's transaction() inside a transaction.
  const outer = depth === 0 && !conn.inTransaction;
  const savepoint = `netsqlite_sp${depth}`;
  const exec = (sql: string): Promise<unknown> => conn.request(Op.Exec, [sql]);
  if (outer) {
    // A BEGIN that waited for a transaction of the same client says so (see OwnWriter).
    const explain = ownWriter?.watch() ?? null;
    // One lost with the connection opened nothing that stays (see lostAtBegin).
    await exec(`BEGIN ${behavior.toUpperCase()}`).catch((err) =>
      Promise.reject(lostAtBegin(explain === null ? err : explain(err)))
    );
    // Its own to roll back, should the connection be lost (see PooledConnection.txOwner).
    conn.txOwner = scope;
  } else {
    await exec(`SAVEPOINT ${savepoint}`);
  }
  // The transaction it nests in settled while the SAVEPOINT was in flight, and rolled it back.
  if (!scope.active) throw endedError(NESTED_TX_ENDED);
  conn.txDepth++;
  let ended = false;
  const tx = new Transaction(
    conn,
    () => ended ? TX_ENDED : scope.active ? null : NESTED_TX_ENDED,
    scope,
  );
  scopeOfTx.set(tx, scope);
  const level = newLevel(scope, outer ? null : savepoint);
  // Undoes this level's work; resolves to the error to reject with instead of `cause` when
  // that could not be done (its savepoint gone), which never goes unreported (see undoLevel).
  const undo = (cause: unknown): Promise<SqliteError | null> =>
    undoLevel(conn, open, scope, level, cause);
  let result: T;
  try {
    result = await transactionContext.run(scope, () => fn(tx));
  } catch (thrown) {
    keepStack(thrown); // fn's to report as it is (see withCallerFrames)
    ended = true;
    // Ended by the transaction it nests in (see abandonNested), which rolled its work back:
    // the connection is no longer this one's to use.
    if (!scope.active) throw thrown;
    // A call's ConnectionError, the transaction lost with the connection before its COMMIT: it
    // says so, with mayHaveRun false (nothing of it stays applied), as its COMMIT would have.
    // Before the undo, whose ROLLBACK ends that state.
    const err = lostWithConnection(conn, thrown);
    scope.active = false;
    scope.settling = true;
    const settled = nestedSettled(open, scope);
    if (settled !== null) await settled;
    abandonNested(open, scope);
    conn.txDepth = depth;
    throw await undo(err) ?? err;
  }
  ended = true;
  if (!scope.active) throw endedError(NESTED_TX_ENDED);
  scope.active = false;
  scope.settling = true;
  // A nested one still undoing its work may yet poison this level: not committed before.
  const settled = nestedSettled(open, scope);
  if (settled !== null) await settled;
  const nestedRunning = abandonNested(open, scope);
  conn.txDepth = depth;
  if (nestedRunning) {
    // fn settled before a transaction nested in it did: that one could still throw, and its
    // later statements would land after the COMMIT. Commit neither.
    const err = new SqliteError(
      ErrorCode.TxNestedRunning,
      "Transaction rolled back: its function settled while a transaction nested in it was " +
        "still running (a tx.transaction() without await?); the work of both was undone",
    );
    throw await undo(err) ?? err;
  }
  if (level.poison !== null) {
    // A transaction nested in it could not undo its work, which is still in this one.
    const err = poisonedCommit(level);
    throw await undo(err) ?? err;
  }
  try {
    await exec(outer ? "COMMIT" : `RELEASE ${savepoint}`);
  } catch (err) {
    if (!outer) {
      // A nested transaction() that rejects has no work left: undone, unless the transaction
      // ended already, or its savepoint is gone (a RELEASE of an enclosing savepoint inside it).
      if (endedAlready(conn, err)) throw lostWithConnection(conn, err);
      throw await undo(err) ?? err;
    }
    // Whatever state the failed COMMIT left (still open, or rolled back by
    // SQLite), the connection leaves with no transaction: after a failed
    // COMMIT the server takes this ROLLBACK as a no-op.
    await exec("ROLLBACK").catch(() => {});
    if (err instanceof ConnectionError && err.mayHaveRun) {
      // The COMMIT was sent and its answer lost with the connection.
      throw new ConnectionError(
        "Cannot tell whether the transaction was committed: its COMMIT was in flight when " +
          `the connection ended (${err.message})`,
        { code: err.code, cause: err, mayHaveRun: true },
      );
    }
    throw err;
  }
  return result;
}

// deno-lint-ignore require-yield
async function* failing(err: unknown): AsyncGenerator<never> {
  throw err;
}
