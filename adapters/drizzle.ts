/**
 * Drizzle ORM on netsqlite: {@link drizzle} returns a Drizzle database built
 * on `drizzle-orm/sqlite-proxy`, whose queries run through a netsqlite
 * {@link Client}. `drizzle-orm` is an optional peer dependency: only this
 * module imports it (importing `@netsqlite/netsqlite` itself pulls it not in).
 *
 * - Queries run on the client's shared pool; `db.batch([...])` runs
 *   atomically in one request (`Client.batch`).
 * - `db.transaction(fn)` reserves one connection of the client
 *   (`Client.reserve()`) for the whole transaction: Drizzle's `begin`,
 *   `commit`, `rollback` and savepoints, and every query made inside `fn`
 *   (through `tx`, or through `db` from inside `fn`), run on it and on
 *   nothing else, so transactions of concurrent callers never mix. A
 *   `db.transaction()` called inside `fn` nests with a savepoint, as
 *   `tx.transaction()` does; nested transactions started side by side
 *   (`Promise.all`) run one after another, also when some go through an
 *   outer `tx` (Drizzle names the savepoints of one level alike, so open at
 *   once they would undo each other). Work that `fn` started but that runs
 *   after the transaction ended (a timer, a queued job) runs on the shared
 *   pool, in autocommit.
 * - The client's own calls made from `fn` act as inside the client's
 *   `transaction()` (Drizzle's transaction is one for the pool): a
 *   `client.transaction()` nests as a savepoint, with `max: 1` plain calls
 *   join the transaction, and `client.reserve()` is refused with
 *   `TX_CONTROL` when it would wait for the transaction.
 * - Inside `fn`, statements that would begin or end the transaction
 *   (`BEGIN`, `COMMIT`, `END`, `ROLLBACK` without `TO`) are refused with
 *   `SqliteError` `TX_CONTROL` before they are sent, as a `transaction()`
 *   handle refuses them: a `COMMIT` would keep the work done so far even when
 *   `fn` throws afterwards. Savepoints stay allowed.
 * - When `commit` fails (an expired lease: `TX_TIMEOUT`), that error reaches
 *   the caller, not the `rollback` Drizzle sends after it.
 *
 * @example
 * ```ts
 * import { serve } from "../server.ts";
 * import { connect } from "../client.ts";
 * import { drizzle } from "./drizzle.ts";
 * import { eq } from "drizzle-orm";
 * import { integer, sqliteTable, text } from "drizzle-orm/sqlite-core";
 *
 * const users = sqliteTable("users", {
 *   id: integer("id").primaryKey(),
 *   name: text("name").notNull(),
 * });
 * const dir = await Deno.makeTempDir();
 * await using server = await serve({ database: `${dir}/a.db`, path: `${dir}/a.sock` });
 * await using client = await connect({ path: `${dir}/a.sock` });
 * const db = drizzle(client);
 * await db.run("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL)");
 * const [ada] = await db.insert(users).values({ name: "Ada" }).returning();
 * await db.transaction(async (tx) => {
 *   await tx.update(users).set({ name: "Ada L." }).where(eq(users.id, ada.id));
 * });
 * const row = await db.select().from(users).where(eq(users.id, ada.id)).get();
 * if (row?.name !== "Ada L.") throw new Error("expected the committed name");
 * ```
 *
 * @module
 */

import { AsyncLocalStorage } from "node:async_hooks";
import type { DrizzleConfig } from "drizzle-orm";
import type { BatchItem, BatchResponse } from "drizzle-orm/batch";
import type { BaseSQLiteDatabase, SQLiteTransaction } from "drizzle-orm/sqlite-core";
import {
  type AsyncBatchRemoteCallback,
  type AsyncRemoteCallback,
  drizzle as drizzleProxy,
  type SqliteRemoteDatabase,
  type SqliteRemoteResult,
} from "drizzle-orm/sqlite-proxy";
import type { BindParams, Client, Queryable, ReservedConnection, RunResult } from "../client.ts";
import { transactionContext } from "../client/pool.ts";
import { firstValues } from "../client/queryable.ts";
import { PoolScope } from "./_pool_scope.ts";
import { refuseTxEnd } from "./_refuse_tx_end.ts";
import { applyMigrations, type MigrationConfig } from "./drizzle_migrate.ts";

export type { MigrationConfig } from "./drizzle_migrate.ts";

/**
 * What a statement run for its effect reports: `db.run(sql)`, `.run()` of an
 * `insert`/`update`/`delete` without `returning`, and such an item of
 * `db.batch([...])`: Drizzle's proxy result (`rows`, empty) with the rows
 * the statement changed and the last rowid it inserted, as the client's
 * `run()` reports them.
 *
 * @example
 * ```ts
 * import { serve } from "../server.ts";
 * import { connect } from "../client.ts";
 * import { drizzle, type NetsqliteRunResult } from "./drizzle.ts";
 * import { sql } from "drizzle-orm";
 * const dir = await Deno.makeTempDir();
 * await using server = await serve({ database: `${dir}/a.db`, path: `${dir}/a.sock` });
 * await using client = await connect({ path: `${dir}/a.sock` });
 * const db = drizzle(client);
 * await db.run(sql`CREATE TABLE t (x INTEGER)`);
 * const r: NetsqliteRunResult = await db.run(sql`INSERT INTO t VALUES (1), (2)`);
 * if (r.changes !== 2 || r.lastInsertRowid !== 2) throw new Error("expected 2 rows, rowid 2");
 * ```
 */
export interface NetsqliteRunResult extends SqliteRemoteResult, RunResult {}

/**
 * The Drizzle database {@link drizzle} returns: `drizzle-orm/sqlite-proxy`'s
 * `SqliteRemoteDatabase`, typed so that `run` results (of `db.run()`,
 * `tx.run()`, `.run()` of a query, `db.batch()` items) are
 * {@link NetsqliteRunResult}: `r.changes` and `r.lastInsertRowid` compile.
 * A variable typed `SqliteRemoteDatabase<TSchema>` still accepts it.
 *
 * @typeParam TSchema The schema given to {@link drizzle} (for `db.query`).
 */
export interface NetsqliteDatabase<
  TSchema extends Record<string, unknown> = Record<string, never>,
> extends BaseSQLiteDatabase<"async", NetsqliteRunResult, TSchema> {
  /**
   * Runs the queries in one atomic request (`Client.batch`): all take effect
   * or none does.
   *
   * @param batch Queries Drizzle can prepare (`select`, `insert`, `update`,
   *   `delete`, relational queries, `db.run(sql)`).
   * @returns each query's result, in order.
   */
  batch<U extends BatchItem<"sqlite">, T extends Readonly<[U, ...U[]]>>(
    batch: T,
  ): Promise<BatchResponse<T>>;
}

/** The client of each database {@link drizzle} returned, for {@link migrate}. */
const clients = new WeakMap<object, Client>();

/** Whether a `db.transaction()` is still open (shared by its nested levels). */
interface TransactionState {
  open: boolean;
}

/**
 * A `db.transaction()` in progress: its reserved connection, whether it is
 * still open, and, once Drizzle has begun it, one level of it: Drizzle's
 * transaction (the outermost or a savepoint) that a `db.transaction()` or
 * `tx.transaction()` called at this level nests in.
 */
interface TransactionScope {
  readonly conn: ReservedConnection;
  readonly state: TransactionState;
  readonly level?: Level;
}

/** One level of an open transaction: Drizzle's `tx`, its depth and its queue of nested ones. */
interface Level {
  readonly tx: SQLiteTransaction<"async", unknown, any, any>;
  /** Drizzle's own `tx.transaction()`: opens a savepoint of `tx` and runs the function in it. */
  readonly savepoint: (fn: (tx: any) => Promise<unknown>) => Promise<unknown>;
  /** 0: the outermost transaction; each savepoint one more. */
  readonly depth: number;
  /**
   * Settles when the last transaction started inside this level ended (one
   * nested in `tx`, or opened through an outer `tx` from this level's
   * function): Drizzle names every savepoint of one level alike (`sp0`), so
   * two open side by side would release or undo each other's work; each
   * waits for the one before.
   */
  tail: Promise<void>;
}

/** The statement Drizzle's proxy session sends to roll a transaction back. */
const ROLLBACK = /^\s*rollback\s*;?\s*$/i;

/** Where a refused statement was sent, and what to use instead (see `refuseTxEnd`). */
const WHERE = "db.transaction()";
const HOW = "Drizzle ends the transaction itself (it commits when the callback resolves and " +
  "rolls back when it throws or calls tx.rollback()); use savepoints or a nested tx.transaction()";

/** How Drizzle asks for a query's result. */
type Method = "run" | "all" | "values" | "get";

/**
 * Creates a Drizzle database on a netsqlite client.
 *
 * @param client A connected client (see `connect()`); closing it stays the
 *   caller's job.
 * @param config Drizzle's options (`schema` for relational queries,
 *   `logger`, `casing`).
 * @returns the Drizzle database.
 * @throws {TypeError} when `client` is not a netsqlite client.
 * @example
 * ```ts
 * import { serve } from "../server.ts";
 * import { connect } from "../client.ts";
 * import { drizzle } from "./drizzle.ts";
 * import { sql } from "drizzle-orm";
 * const dir = await Deno.makeTempDir();
 * await using server = await serve({ database: `${dir}/a.db`, path: `${dir}/a.sock` });
 * await using client = await connect({ path: `${dir}/a.sock` });
 * const db = drizzle(client);
 * const row = await db.get<[number]>(sql`SELECT 6 * 7`);
 * if (row[0] !== 42) throw new Error("expected 42");
 * ```
 */
export function drizzle<TSchema extends Record<string, unknown> = Record<string, never>>(
  client: Client,
  config?: DrizzleConfig<TSchema>,
): NetsqliteDatabase<TSchema> {
  if (client === null || typeof client !== "object" || typeof client.reserve !== "function") {
    throw new TypeError("Invalid client: expected a netsqlite Client from connect()");
  }
  // The transaction whose `fn` (or work it started) makes the current call,
  // followed through awaits, timers and queued jobs; `open` turns false when
  // the transaction ends, so work that runs later goes to the client.
  const context = new AsyncLocalStorage<TransactionScope>();
  const target = (): Queryable => {
    const scope = context.getStore();
    return scope !== undefined && scope.state.open ? scope.conn : client;
  };

  // A statement sent from inside `fn` (at a level) that would begin or end
  // the transaction is refused; Drizzle's own `begin`/`commit`/`rollback`
  // run outside every level (its savepoints are allowed anyway).
  const guard = (sql: string): void => {
    const scope = context.getStore();
    if (scope?.level !== undefined && scope.state.open) refuseTxEnd(sql, WHERE, HOW);
  };
  const callback: AsyncRemoteCallback = async (sql, params, method) => {
    guard(sql);
    const on = target();
    try {
      return await runOne(on, sql, params as BindParams, method);
    } catch (err) {
      // Drizzle sends `rollback` after a failed `commit` (or a failed statement
      // that ended the transaction, as an expired lease does); with nothing
      // left to roll back, let the error that ended it reach the caller.
      if (on !== client && ROLLBACK.test(sql) && !(on as ReservedConnection).inTransaction) {
        return { rows: [] };
      }
      throw err;
    }
  };
  const batch: AsyncBatchRemoteCallback = async (queries) => {
    for (const q of queries) guard(q.sql);
    const results = await target().batch<unknown[]>(
      queries.map((q) => ({ sql: q.sql, params: q.params as BindParams })),
      { arrays: true },
    );
    return results.map((r, i) =>
      queries[i].method === "run"
        ? { rows: [], changes: r.changes, lastInsertRowid: r.lastInsertRowid } as { rows: any[] }
        : shape(queries[i].method, r.rows)
    );
  };
  const db = drizzleProxy<TSchema>(callback, batch, config);

  // Drizzle's proxy session sends `begin`/`commit` through the callback; run
  // the whole transaction, and everything `fn` does, on one reserved connection.
  // A `db.transaction()` called inside `fn` (a helper that wraps its own work
  // in one) nests in it with a savepoint, as Drizzle's better-sqlite3 driver
  // does: `begin` there would fail and end the outer transaction.
  const transaction = db.transaction.bind(db);
  type Fn = (tx: any) => Promise<unknown>;
  /** The scope of `fn` at Drizzle's `tx`: one level deeper; `tx.transaction()` queued there. */
  const enter = (scope: TransactionScope, tx: Level["tx"], depth: number): TransactionScope => {
    const level: Level = { tx, savepoint: tx.transaction.bind(tx), depth, tail: Promise.resolve() };
    const at = { ...scope, level };
    tx.transaction = ((inner: Fn) => nest(at, inner)) as typeof tx.transaction;
    return at;
  };
  /**
   * Runs `fn` in a savepoint of `at.level` once the transactions nested there
   * before it ended (siblings started side by side run one after another).
   * Called from deeper inside (an outer `tx` used in a nested `fn`), it nests
   * in the savepoint open there, queued with every other transaction opened
   * in it (through its own `tx` or an outer one): Drizzle names a savepoint
   * after the level of the `tx` that opens it, and SQLite's `RELEASE` and
   * `ROLLBACK TO` act on the newest savepoint of that name, so only
   * savepoints strictly nested in one another keep each other's work. It
   * never queues behind the function it is called from (that one holds a
   * place in an outer level's queue, not in its own). `ended` runs `fn` when
   * the transaction ended while it waited (a `db.transaction()`: on its own).
   */
  const nest = async (
    at: TransactionScope & { level: Level },
    fn: Fn,
    ended?: () => Promise<unknown>,
  ): Promise<unknown> => {
    const caller = context.getStore();
    const deeper = caller?.state === at.state && (caller.level?.depth ?? 0) > at.level.depth;
    const run: Fn = (tx) => {
      const depth = (deeper ? caller!.level!.depth : at.level.depth) + 1;
      return context.run(enter(at, tx, depth), () => fn(tx));
    };
    const queue = deeper ? caller!.level! : at.level;
    const before = queue.tail;
    let done!: () => void;
    queue.tail = new Promise<void>((resolve) => done = resolve);
    try {
      await before;
      if (!at.state.open && ended !== undefined) return await ended();
      return await at.level.savepoint(run);
    } finally {
      done();
    }
  };
  const outermost = async (fn: Fn, txConfig?: any): Promise<unknown> => {
    const scope: TransactionScope = { conn: await client.reserve(), state: { open: true } };
    // The pool's scope too: the client's own calls made from `fn` (a helper
    // written for the client) act as inside its `transaction()`, instead of
    // waiting for this transaction's connection or writer.
    const pool = new PoolScope();
    pool.bind(scope.conn);
    try {
      return await transactionContext.run(pool, () =>
        context.run(
          scope,
          () => transaction((tx) => context.run(enter(scope, tx, 0), () => fn(tx)), txConfig),
        ));
    } finally {
      pool.end();
      scope.state.open = false;
      scope.conn.release(); // closed instead of reused if a transaction is still open
    }
  };
  db.transaction = (async (fn: Fn, txConfig?: any) => {
    const outer = context.getStore();
    if (outer?.state.open && outer.level !== undefined) {
      const at = outer as TransactionScope & { level: Level };
      return await nest(at, fn, () => outermost(fn, txConfig));
    }
    return await outermost(fn, txConfig);
  }) as typeof db.transaction;
  clients.set(db, client);
  // The callbacks report `changes` and `lastInsertRowid` for `run` (see runOne and batch).
  return db as unknown as NetsqliteDatabase<TSchema>;
}

/**
 * Applies the pending migrations that `drizzle-kit generate` wrote to
 * `config.migrationsFolder`, as Drizzle's own SQLite migrators do (the same
 * `__drizzle_migrations` table and rows, so either can take over from the
 * other), but safely from several processes at once: checking what is
 * applied and applying the rest are one atomic request, so each migration is
 * applied exactly once, and a migrator that finds its work done returns.
 *
 * - All pending migrations run in one transaction: when one fails, none of
 *   them is applied, and the error names it (a `SqliteError` with the
 *   server's code, the batch's error as `cause`).
 * - drizzle-kit's `PRAGMA foreign_keys=OFF` (a table rebuild) runs the
 *   migrations with foreign keys off, checked before the commit (see
 *   `Client.batch`'s `foreignKeys`), so `DROP TABLE` deletes no rows of
 *   tables that reference it.
 * - Call it outside a transaction.
 *
 * @param db A database returned by {@link drizzle}.
 * @param config `migrationsFolder`, and `migrationsTable` (default
 *   `__drizzle_migrations`); `migrationsSchema` is ignored (SQLite has none);
 *   `timeout`: the run's deadline in ms (all pending migrations are one
 *   batch), instead of the server's statement timeout.
 * @throws {TypeError} when `db` does not come from {@link drizzle}, or the
 *   config is invalid.
 * @throws {SqliteError} naming the migration that failed.
 * @example
 * ```ts
 * import { serve } from "../server.ts";
 * import { connect } from "../client.ts";
 * import { drizzle, migrate } from "./drizzle.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.mkdir(`${dir}/drizzle/meta`, { recursive: true });
 * await Deno.writeTextFile(`${dir}/drizzle/0000_init.sql`, "CREATE TABLE t (x INTEGER);");
 * await Deno.writeTextFile(
 *   `${dir}/drizzle/meta/_journal.json`,
 *   JSON.stringify({ entries: [{ idx: 0, when: 1700000000000, tag: "0000_init", breakpoints: true }] }),
 * );
 * await using server = await serve({ database: `${dir}/a.db`, path: `${dir}/a.sock` });
 * await using client = await connect({ path: `${dir}/a.sock` });
 * const db = drizzle(client);
 * await migrate(db, { migrationsFolder: `${dir}/drizzle` });
 * await migrate(db, { migrationsFolder: `${dir}/drizzle` }); // nothing left to apply
 * if ((await client.values("SELECT count(*) FROM __drizzle_migrations"))[0][0] !== 1) {
 *   throw new Error("expected one applied migration");
 * }
 * ```
 */
export async function migrate(
  db: NetsqliteDatabase<any> | SqliteRemoteDatabase<any>,
  config: MigrationConfig,
): Promise<void> {
  const client = db !== null && typeof db === "object" ? clients.get(db) : undefined;
  if (client === undefined) {
    throw new TypeError("Invalid db: expected a database returned by netsqlite's drizzle()");
  }
  await applyMigrations(client, config);
}

async function runOne(
  target: Queryable,
  sql: string,
  params: BindParams,
  method: Method,
): Promise<{ rows: any[] }> {
  if (method === "run") {
    const { changes, lastInsertRowid } = await target.run(sql, params);
    return { rows: [], changes, lastInsertRowid } as { rows: any[] };
  }
  if (method === "get") {
    // The server steps the statement for its first row only.
    const row = await firstValues(target, sql, params);
    return shape(method, row === undefined ? [] : [row]);
  }
  return shape(method, await target.values(sql, params));
}

/** The row shape sqlite-proxy expects: arrays of values; `get` one row (or `undefined`). */
function shape(method: Method, rows: unknown[][]): { rows: any } {
  if (method === "get") return { rows: rows[0] };
  if (method === "run") return { rows: [] };
  return { rows };
}
