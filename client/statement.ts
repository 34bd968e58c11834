/**
 * A prepared statement. On the shared pool it is prepared lazily on each
 * connection it runs on: the first call on a connection sends `prepare`
 * followed at once by the call itself (by SQL text, so nothing waits);
 * calls made before its reply go by SQL text too (one `prepare` per
 * connection, however many calls), and later calls use the handle. On a reserved connection or in a
 * transaction it stays on that connection. A connection that is reopened
 * loses its handles; the statement prepares again there.
 *
 * @module
 */

import { withCallerFrames } from "./_caller_stack.ts";
import { ErrorCode, SqliteError } from "../protocol/errors.ts";
import {
  type CallOptions,
  Op,
  type Replies,
  type Requests,
  type WireCallOptions,
  type WireParams,
} from "../protocol/messages.ts";
import { type PooledConnection, readsOnly } from "./connection.ts";
import { abortable, heldArgs } from "./link.ts";
import {
  type BindParams,
  type BindParamsOf,
  callOptions,
  type CallShape,
  changesOf,
  checkArgCount,
  type CheckedOptions,
  optionsAsParams,
  ownParams,
  type RunResult,
  wireOptions,
} from "./_calls.ts";
import { cursorRows, type IterateOptions } from "./cursor.ts";
import { describeKind } from "../protocol/values.ts";
import type { Route } from "./route.ts";
import { ownBytes } from "./_snapshot.ts";
import { type Row, type SqlValue, toObject, toObjects } from "./rows.ts";

interface Handle {
  handle: number;
  generation: number;
}

type StatementOp = typeof Op.Query | typeof Op.Run;

/** The shape of a statement's call (see `CallShape`): parameters, then options. */
function statementCall(name: string, options: CallShape["options"]): CallShape {
  return {
    name: `Statement.${name}`,
    args: ["params", "options"],
    options,
    arrayHint: "pass every parameter in the one array or plain object, the first argument",
  };
}

const ALL = statementCall("all()", ["timeout", "signal"]);
const GET = statementCall("get()", ["timeout", "signal"]);
const VALUES = statementCall("values()", ["timeout", "signal"]);
const RUN = statementCall("run()", ["timeout", "signal"]);
const ITERATE = statementCall("iterate()", ["arrays", "timeout", "signal"]);

/** Sends `finalize` for each handle still live on its connection; empties `handles`. */
function freeHandles(handles: Map<PooledConnection, Handle>): Promise<unknown>[] {
  const sent: Promise<unknown>[] = [];
  for (const [conn, h] of handles) {
    if (h.generation === conn.generation && conn.open) {
      sent.push(conn.request(Op.Finalize, [h.handle], undefined, h.generation).catch(() => {}));
    }
  }
  handles.clear();
  return sent;
}

/**
 * Statements dropped without `finalize()` free their handles on the server
 * once collected, so that a program preparing in a loop does not fill the
 * server's table of handles (bounded per connection).
 */
const dropped = new FinalizationRegistry<Map<PooledConnection, Handle>>(freeHandles);

/**
 * A statement prepared on the server, run with different parameters; get
 * one from `prepare()`.
 *
 * @example
 * ```ts
 * import { serve } from "@netsqlite/netsqlite/server";
 * import { connect } from "@netsqlite/netsqlite";
 * const dir = await Deno.makeTempDir();
 * await using server = await serve({ database: `${dir}/a.db`, path: `${dir}/a.sock` });
 * await using db = await connect({ path: `${dir}/a.sock` });
 * await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)");
 * const insert = await db.prepare("INSERT INTO t (name) VALUES (?)");
 * await insert.run(["ada"]);
 * await insert.run(["bob"]);
 * await insert.finalize();
 * const select = await db.prepare("SELECT id, name FROM t ORDER BY id");
 * if ((await select.all<{ name: string }>())[1].name !== "bob") throw new Error("expected bob");
 * if ((await select.raw().get<[number, string]>())?.[0] !== 1) throw new Error("raw rows are arrays");
 * await select.finalize();
 * ```
 */
export class Statement {
  readonly #route: Route;
  readonly #handles = new Map<PooledConnection, Handle>();
  /** `prepare` requests in flight, by connection: at most one each. */
  readonly #preparing = new Map<PooledConnection, Promise<void>>();
  #columns: string[];
  #raw = false;
  #finalized = false;
  /** What `finalize()` returns: set by its first call, which frees the handles. */
  #finalizing: Promise<void> | null = null;
  /** True when the statement surely does not wait for the server's writer. */
  readonly #readsOnly: boolean;
  /** The SQL text. */
  readonly sql: string;

  /** @internal Use `prepare()`. */
  constructor(
    route: Route,
    sql: string,
    columns: string[],
    conn: PooledConnection,
    handle: number,
    generation: number,
  ) {
    this.#route = route;
    this.sql = sql;
    this.#readsOnly = readsOnly(sql);
    this.#columns = columns;
    this.#handles.set(conn, { handle, generation });
    dropped.register(this, this.#handles, this);
  }

  /**
   * Result column names (empty for statements that return no rows): as
   * prepared, then as the latest result had them, `iterate()`'s too
   * (`SELECT *` after an `ALTER TABLE ... ADD COLUMN` gains the column).
   */
  get columns(): readonly string[] {
    return this.#columns;
  }

  /** True after {@link raw}`(true)`: `all`, `get` and `iterate` return arrays. */
  get isRaw(): boolean {
    return this.#raw;
  }

  /**
   * Makes `all()`, `get()` and `iterate()` return rows as arrays of values
   * (better-sqlite3's `raw()`), which keeps columns of the same name apart.
   *
   * @param enabled `false` goes back to objects.
   * @returns this statement.
   * @throws {TypeError} when `enabled` is given and is not a boolean (as
   *   better-sqlite3); the statement stays as it was.
   */
  raw(enabled?: boolean): this {
    if (enabled !== undefined && typeof enabled !== "boolean") {
      throw new TypeError(
        `Invalid argument of raw(): expected a boolean, got ${describeKind(enabled)}`,
      );
    }
    this.#raw = enabled ?? true;
    return this;
  }

  /**
   * Runs the statement for its rows (the first only when `first`), noting
   * its columns; a failure carries the caller's frames.
   */
  async #rows(
    shape: CallShape,
    count: number,
    params: BindParams | undefined,
    options: unknown,
    first: boolean,
  ): Promise<Replies[typeof Op.Query]> {
    let reply: Replies[typeof Op.Query];
    try {
      reply = await this.#call(Op.Query, shape, count, params, options, first);
    } catch (err) {
      throw withCallerFrames(err);
    }
    this.#columns = reply[0];
    return reply;
  }

  /**
   * Runs the statement and returns every row (objects, or arrays when raw).
   *
   * @param params Positional or named values.
   * @param options A deadline or an abort signal for this call.
   * @returns every row.
   * @throws {SqliteError} SQLite's error, or `UNKNOWN_STATEMENT` after `finalize()`.
   * @throws {TypeError} for an option it does not take or of the wrong type, options that
   *   are not a plain object, or an argument past the options (nothing is sent).
   */
  async all<T = Row, P extends BindParamsOf<P> = BindParams>(
    params?: P,
    options?: CallOptions | null,
  ): Promise<T[]> {
    const raw = this.#raw; // the mode when called, whatever raw() does while it runs
    const p = params as BindParams | undefined;
    const [columns, rows] = await this.#rows(ALL, arguments.length, p, options, false);
    return (raw ? rows : toObjects(columns, rows)) as T[];
  }

  /**
   * Runs the statement and returns its first row, or `undefined`.
   *
   * @param params Positional or named values.
   * @param options A deadline or an abort signal for this call.
   * @returns the first row (an array when raw), or `undefined`.
   * @throws {SqliteError} SQLite's error, or `UNKNOWN_STATEMENT` after `finalize()`.
   * @throws {TypeError} for an option it does not take or of the wrong type, options that
   *   are not a plain object, or an argument past the options (nothing is sent).
   */
  async get<T = Row, P extends BindParamsOf<P> = BindParams>(
    params?: P,
    options?: CallOptions | null,
  ): Promise<T | undefined> {
    const raw = this.#raw; // the mode when called, whatever raw() does while it runs
    const p = params as BindParams | undefined;
    const [columns, rows] = await this.#rows(GET, arguments.length, p, options, true);
    if (rows.length === 0) return undefined;
    return (raw ? rows[0] : toObject(columns, rows[0])) as T;
  }

  /**
   * Runs the statement and returns rows as arrays.
   *
   * @param params Positional or named values.
   * @param options A deadline or an abort signal for this call.
   * @returns every row as an array of values.
   * @throws {SqliteError} SQLite's error, or `UNKNOWN_STATEMENT` after `finalize()`.
   * @throws {TypeError} for an option it does not take or of the wrong type, options that
   *   are not a plain object, or an argument past the options (nothing is sent).
   */
  async values<T extends unknown[] = SqlValue[], P extends BindParamsOf<P> = BindParams>(
    params?: P,
    options?: CallOptions | null,
  ): Promise<T[]> {
    const p = params as BindParams | undefined;
    const [, rows] = await this.#rows(VALUES, arguments.length, p, options, false);
    return rows as T[];
  }

  /**
   * Runs the statement and reports what it changed.
   *
   * @param params Positional or named values.
   * @param options A deadline or an abort signal for this call.
   * @returns the number of rows changed and the last inserted rowid.
   * @throws {SqliteError} SQLite's error, or `UNKNOWN_STATEMENT` after `finalize()`.
   * @throws {TypeError} for an option it does not take or of the wrong type, options that
   *   are not a plain object, or an argument past the options (nothing is sent).
   */
  async run<P extends BindParamsOf<P> = BindParams>(
    params?: P,
    options?: CallOptions | null,
  ): Promise<RunResult> {
    let reply: Replies[typeof Op.Run];
    try {
      const p = params as BindParams | undefined;
      reply = await this.#call(Op.Run, RUN, arguments.length, p, options);
    } catch (err) {
      throw withCallerFrames(err);
    }
    return { changes: changesOf(reply[0]), lastInsertRowid: reply[1] };
  }

  /**
   * Streams the statement's rows through a server cursor (see `Client.iterate()`).
   *
   * @param params Positional or named values.
   * @param options `arrays`, a deadline or an abort signal.
   * @returns an async generator of rows (arrays when raw).
   * @throws {SqliteError} SQLite's error, or `UNKNOWN_STATEMENT` after `finalize()`.
   * @throws {TypeError} for an option it does not take or of the wrong type, options that
   *   are not a plain object, or an argument past the options (nothing is sent).
   */
  iterate<T = Row, P extends BindParamsOf<P> = BindParams>(
    params?: P,
    options?: (IterateOptions & { arrays?: false }) | null,
  ): AsyncGenerator<T>;
  /**
   * {@link iterate} with `arrays: true`: rows as arrays of values, in column order.
   *
   * @param params Positional or named values.
   * @param options `arrays: true`, a deadline or an abort signal.
   * @returns an async generator of rows as arrays.
   * @throws {SqliteError} SQLite's error, or `UNKNOWN_STATEMENT` after `finalize()`.
   */
  iterate<T extends unknown[] = SqlValue[], P extends BindParamsOf<P> = BindParams>(
    params: P | undefined,
    options: IterateOptions & { arrays: true },
  ): AsyncGenerator<T>;
  /**
   * {@link iterate} with `arrays: true` and a row type that is no array
   * (an object type): rows are arrays all the same, typed `SqlValue[]`
   * (give a tuple type to type them).
   *
   * @param params Positional or named values.
   * @param options `arrays: true`, a deadline or an abort signal.
   * @returns an async generator of rows as arrays.
   * @throws {SqliteError} SQLite's error, or `UNKNOWN_STATEMENT` after `finalize()`.
   */
  iterate<T, P extends BindParamsOf<P> = BindParams>(
    params: P | undefined,
    options: IterateOptions & { arrays: true },
  ): AsyncGenerator<SqlValue[]>;
  /**
   * {@link iterate} with `arrays` a `boolean` known only at run time
   * (`{ arrays: flag }`): rows as objects or arrays, whatever {@link raw}
   * says. `T` types one of the two forms: an array type the arrays
   * (objects are then `Row`), any other type the objects (arrays are then
   * `SqlValue[]`).
   *
   * @param params Positional or named values.
   * @param options `arrays`, a deadline or an abort signal.
   * @returns an async generator of rows.
   * @throws {SqliteError} SQLite's error, or `UNKNOWN_STATEMENT` after `finalize()`.
   */
  iterate<T = Row, P extends BindParamsOf<P> = BindParams>(
    params: P | undefined,
    options: IterateOptions & { arrays: boolean },
  ): AsyncGenerator<[T] extends [readonly unknown[]] ? Row | T : T | SqlValue[]>;
  /**
   * {@link iterate} with options typed `IterateOptions`, whose `arrays` is
   * optional: rows typed as objects, the default (type the options
   * `IterateOptions & { arrays: true }` for arrays; after {@link raw} give
   * an array type).
   *
   * @param params Positional or named values.
   * @param options A deadline or an abort signal; `arrays`.
   * @returns an async generator of rows.
   * @throws {SqliteError} SQLite's error, or `UNKNOWN_STATEMENT` after `finalize()`.
   */
  iterate<T = Row, P extends BindParamsOf<P> = BindParams>(
    params?: P,
    options?: IterateOptions | null,
  ): AsyncGenerator<T>;
  iterate(params?: BindParams, options?: IterateOptions | null): AsyncGenerator<unknown> {
    // Rows are asked for when iterating starts: the parameters are those of
    // now, and calls issued before it in the same burst run first.
    const earlier = this.#route.earlier?.() ?? null;
    // Read once now, and sent when iterating starts with the bytes of now; a
    // refusal is reported then (after UNKNOWN_STATEMENT, as for other calls).
    let own: WireParams = null;
    let opts: CheckedOptions = {};
    let refused: { error: unknown } | null = null;
    try {
      own = ownParams(params);
      ownBytes(own);
      checkArgCount(ITERATE, arguments.length);
      opts = callOptions(ITERATE, options);
    } catch (error) {
      refused = { error };
    }
    return this.#iterate(own, refused, { ...opts, arrays: opts.arrays ?? this.#raw }, earlier);
  }

  async *#iterate(
    params: WireParams,
    refused: { error: unknown } | null,
    options: CheckedOptions,
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
    this.#checkLive();
    if (refused !== null) throw refused.error;
    const c = this.#route.connection(!this.#readsOnly, true, earlier !== null);
    // Held by cursorRows in this same run. A wait for it ends when the signal aborts.
    let conn: PooledConnection;
    try {
      conn = c instanceof Promise ? await abortable(c, options.signal) : c;
    } catch (err) {
      throw withCallerFrames(err);
    }
    const h = this.#handleOn(conn);
    try {
      yield* cursorRows(
        conn,
        h?.handle ?? this.sql,
        params,
        options,
        !this.#readsOnly,
        h?.generation,
        (columns) => this.#columns = columns,
      );
    } catch (err) {
      throw withCallerFrames(err);
    }
  }

  /**
   * Frees the statement on every connection it was prepared on. Calls after
   * this fail with `UNKNOWN_STATEMENT`. Idempotent, as `@db/sqlite`'s: a
   * later call sends nothing and returns what the first returned.
   *
   * @returns once the server freed it (never rejects: a handle on a
   *   connection lost meanwhile is gone with it).
   */
  finalize(): Promise<void> {
    if (this.#finalizing === null) {
      this.#finalized = true;
      dropped.unregister(this);
      // A `prepare` still in flight frees its handle when its reply arrives.
      this.#finalizing = Promise.all([...freeHandles(this.#handles), ...this.#preparing.values()])
        .then(() => {});
    }
    return this.#finalizing;
  }

  /**
   * {@link finalize}, for `await using stmt = await db.prepare(sql)`. There
   * is no synchronous `[Symbol.dispose]`: freeing the statement takes a
   * round trip to the server, which a `using` block could not wait for.
   */
  [Symbol.asyncDispose](): Promise<void> {
    return this.finalize();
  }

  #call<O extends StatementOp>(
    op: O,
    shape: CallShape,
    count: number,
    params: BindParams | undefined,
    options: unknown,
    first = false,
  ): Promise<Replies[O]> {
    let wp: WireParams;
    let opts: CheckedOptions;
    try {
      this.#checkLive();
      wp = ownParams(params);
      checkArgCount(shape, count);
      opts = callOptions(shape, options);
    } catch (err) {
      return Promise.reject(optionsAsParams(err, shape, params));
    }
    const { signal } = opts;
    const explain = this.#route.ownWriter?.watch() ?? null;
    const wo = wireOptions(opts, first);
    const writes = op === Op.Run || !this.#readsOnly;
    const c = this.#route.connection(writes);
    // A call that waits for a connection sends the bytes as they are now.
    if (c instanceof Promise) ownBytes(wp);
    const sent = c instanceof Promise
      ? this.#sendOnceConnected(c, op, wp, wo, signal, writes)
      : this.#send(c, op, wp, wo, signal, writes);
    this.#route.issued?.(sent);
    // Options passed in the parameters' place are named so (see optionsAsParams).
    return sent.catch((err) =>
      Promise.reject(optionsAsParams(explain === null ? err : explain(err), shape, params))
    );
  }

  /** Sends the call on `conn`: by the handle prepared there, else by its SQL. */
  #send<O extends StatementOp>(
    conn: PooledConnection,
    op: O,
    params: WireParams,
    wo: WireCallOptions | null,
    signal: AbortSignal | undefined,
    writes: boolean,
  ): Promise<Replies[O]> {
    const h = this.#handleOn(conn);
    if (h !== undefined) {
      return conn.request(op, [h.handle, params, wo], signal, h.generation, writes);
    }
    return conn.request(op, [this.sql, params, wo], signal, undefined, writes);
  }

  /**
   * {@link #send} once the connection the call waits for comes; its
   * parameters are let go should its signal abort first (see `heldArgs`: no
   * closure here keeps them).
   */
  #sendOnceConnected<O extends StatementOp>(
    c: Promise<PooledConnection>,
    op: O,
    params: WireParams,
    wo: WireCallOptions | null,
    signal: AbortSignal | undefined,
    writes: boolean,
  ): Promise<Replies[O]> {
    const held = heldArgs(op, [this.sql, params, wo] as Requests[O], signal);
    const send = (conn: PooledConnection): Promise<Replies[O]> =>
      this.#send(conn, op, held.take()[1] as WireParams, wo, signal, writes);
    const stop = (err: unknown): never => {
      held.take(); // (stops watching the signal)
      throw err;
    };
    return abortable(c.then(send, stop), signal);
  }

  /**
   * The handle on `conn`, or `undefined` when there is none yet: then this
   * call goes by SQL text, and a `prepare` is sent there unless one already
   * is in flight (one per connection and generation, whatever the burst of
   * calls; its handle serves later calls).
   */
  #handleOn(conn: PooledConnection): Handle | undefined {
    const h = this.#handles.get(conn);
    if (h !== undefined && h.generation === conn.generation && conn.open) return h;
    this.#handles.delete(conn);
    if (!this.#preparing.has(conn)) this.#preparing.set(conn, this.#prepareOn(conn));
    return undefined;
  }

  /**
   * Prepares the statement on `conn` and keeps the handle; frees it at once
   * instead when the statement was finalized meanwhile or already has a
   * live handle there. Never rejects (the calls themselves report errors).
   */
  async #prepareOn(conn: PooledConnection): Promise<void> {
    try {
      const [handle, columns] = await conn.request(Op.Prepare, [this.sql]);
      // A reply arrives only while its link is the connection's current one.
      const generation = conn.generation;
      const live = this.#handles.get(conn);
      if (this.#finalized || (live !== undefined && live.generation === generation)) {
        await conn.request(Op.Finalize, [handle], undefined, generation).catch(() => {});
        return;
      }
      this.#handles.set(conn, { handle, generation });
      this.#columns = columns;
    } catch {
      // The call that caused the prepare goes by SQL text and reports its own error.
    } finally {
      this.#preparing.delete(conn);
    }
  }

  #checkLive(): void {
    if (this.#finalized) {
      throw new SqliteError(
        ErrorCode.UnknownStatement,
        `Unknown statement handle: the statement was finalized ("${this.sql}")`,
      );
    }
  }
}
