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
 *   once they would undo each other). A statement sent at a level while a
 *   transaction nested there by another branch of its function is open
 *   waits for it to end (inside its savepoint, that one's rollback would
 *   undo it). Work that `fn` started but that runs after the transaction
 *   ended (a timer, a queued job) runs on the shared pool, in autocommit.
 * - Every database made by `drizzle(client)` over one client shares its
 *   transactions: queries through another one from inside `fn` run in the
 *   transaction, and its `db.transaction()` nests there as a savepoint.
 * - The client's own calls made from `fn` act as inside the client's
 *   `transaction()` (Drizzle's transaction is one for the pool): a
 *   `client.transaction()` nests as a savepoint, with `max: 1` plain calls
 *   join the transaction, and `client.reserve()` is refused with
 *   `TX_CONTROL` when it would wait for the transaction. Drizzle's levels and
 *   the client's transactions nested in them are one stack on the
 *   connection: a call of either made at a level waits while a transaction
 *   of either kind that another branch nested there is open, and runs at
 *   once from inside that transaction's function.
 * - A transaction never commits while one nested in it still runs or waits
 *   for its turn (left without `await`): when the callback settles first,
 *   that level is rolled back and rejects with `SqliteError`
 *   `TX_NESTED_RUNNING`, as the client's `transaction()` does; the nested
 *   one sends nothing more (its statements are refused with `TX_ENDED`).
 *   One whose callback settled, its `release` or `rollback to savepoint`
 *   still in flight, is waited for instead, by a `client.transaction()` it
 *   is nested in too (whose `RELEASE` would end Drizzle's savepoint with its
 *   own, keeping the work that rollback was to undo).
 * - A nested transaction whose `rollback to savepoint` fails (a `RELEASE`
 *   inside it of a savepoint opened before it ended Drizzle's savepoint too)
 *   rejects with `SqliteError` `TX_UNDO_FAILED` (Drizzle's error as
 *   `cause`), and the transaction it is nested in (a Drizzle level, or a
 *   `client.transaction()`) is poisoned, as the client's `transaction()`
 *   poisons one: its statements are refused with `TX_UNDO_FAILED` unsent,
 *   and it is rolled back instead of committed, so the leftovers are never
 *   committed.
 * - Inside `fn`, statements that would begin or end the transaction
 *   (`BEGIN`, `COMMIT`, `END`, `ROLLBACK` without `TO`) are refused with
 *   `SqliteError` `TX_CONTROL` before they are sent, as a `transaction()`
 *   handle refuses them: a `COMMIT` would keep the work done so far even when
 *   `fn` throws afterwards. Savepoints stay allowed.
 * - When `commit` fails (an expired lease: `TX_TIMEOUT`), that error reaches
 *   the caller, not the `rollback` Drizzle sends after it. Likewise when the
 *   client is closed (or the connection lost) during a transaction: the
 *   callback's own error, or its failed statement's, reaches the caller, not
 *   the `rollback` (or a nested transaction's `rollback to savepoint`) that
 *   could not be sent.
 * - A `begin` in flight when the connection is lost rejects (as the
 *   `cause` of Drizzle's error) with a `ConnectionError` whose `mayHaveRun`
 *   is false (its own error as `cause`): had it run, the transaction it
 *   opened ended with the connection (see `lostAtBegin`), so retrying the
 *   transaction is safe.
 *
 * @example
 * ```ts
 * import { serve } from "@netsqlite/netsqlite/server";
 * import { connect } from "@netsqlite/netsqlite/client";
 * import { drizzle } from "@netsqlite/netsqlite/drizzle";
 * import { eq } from "npm:drizzle-orm@^0.45";
 * import { integer, sqliteTable, text } from "npm:drizzle-orm@^0.45/sqlite-core";
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
import type { DrizzleConfig } from "npm:drizzle-orm@^0.45";
import type { BatchItem, BatchResponse } from "npm:drizzle-orm@^0.45/batch";
import type { BaseSQLiteDatabase, SQLiteTransaction } from "npm:drizzle-orm@^0.45/sqlite-core";
import {
  type AsyncBatchRemoteCallback,
  type AsyncRemoteCallback,
  drizzle as drizzleProxy,
  type SqliteRemoteDatabase,
  type SqliteRemoteResult,
} from "npm:drizzle-orm@^0.45/sqlite-proxy";
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
import {
  abandonNested,
  callerScope,
  leaveTurn,
  nestedSettled,
  type OpenTransactions,
  openTransactions,
  takeTurn,
  transactionContext,
  type TransactionScope as PoolTransaction,
  turnOf,
} from "../client/_tx_order.ts";
import { firstValues } from "../client/queryable.ts";
import {
  cannotGoOn,
  joinedCallRefused,
  levelOf,
  lostReason,
  lostWithConnection,
  newLevel,
  poisonedCommit,
} from "../client/_tx_undo.ts";
import { lostAtBegin } from "./_lost_tx.ts";
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
 * import { serve } from "@netsqlite/netsqlite/server";
 * import { connect } from "@netsqlite/netsqlite/client";
 * import { drizzle, type NetsqliteRunResult } from "@netsqlite/netsqlite/drizzle";
 * import { sql } from "npm:drizzle-orm@^0.45";
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

/**
 * The transaction context of each client, shared by every database
 * {@link drizzle} made over it: the `db.transaction()` whose `fn` (or work
 * it started) makes the current call, followed through awaits, timers and
 * queued jobs. Shared so that a second `drizzle(client)` (another module's)
 * used from inside the first one's transaction joins it, as the client's
 * own calls do, instead of waiting for the writer it holds.
 */
const contexts = new WeakMap<Client, AsyncLocalStorage<TransactionScope>>();

/** The transaction context of `client` (see {@link contexts}). */
function contextOf(client: Client): AsyncLocalStorage<TransactionScope> {
  let context = contexts.get(client);
  if (context === undefined) contexts.set(client, context = new AsyncLocalStorage());
  return context;
}

/** Whether a `db.transaction()` is still open (shared by its nested levels). */
interface TransactionState {
  open: boolean;
}

/**
 * A `db.transaction()` in progress: its reserved connection, whether it is
 * still open, and, once Drizzle has begun it, one level of it: Drizzle's
 * transaction (the outermost or a savepoint) that a `db.transaction()` or
 * `tx.transaction()` called at this level nests in. Without a level, the
 * scope of Drizzle's own statements that begin or end a transaction
 * (`begin`, `commit`, `rollback`; `savepoint`, `release`, `rollback to`).
 */
interface TransactionScope {
  readonly conn: ReservedConnection;
  readonly state: TransactionState;
  readonly level?: Level;
  /**
   * The savepoint that Drizzle's `begin`, `commit` and `rollback` sent in
   * this scope open, release and roll back: a `db.transaction()` of another
   * database over the same client, nested in this transaction.
   */
  readonly savepoint?: string;
  /** In the scope of a nested transaction's own statements: that transaction. */
  readonly nested?: Part;
}

/**
 * One transaction of a `db.transaction()`: the outermost, or one nested in
 * a level of it (a savepoint), from its call to its end.
 */
interface Part {
  /**
   * Its scope in the client's pool (see `PoolScope`): the client's own calls
   * made from its function belong to it, and it takes its place among the
   * transactions open on the connection (the client's `transaction()`s
   * nested in this one's levels included), so that a statement sent at a
   * level waits while a transaction another branch nested there is open.
   * `undefined` when the pool could not be joined (another copy of the client).
   */
  readonly pool: PoolTransaction | undefined;
  /** The level it is nested in; `undefined` for the outermost. */
  readonly home: Level | undefined;
  /** True once its function settled. */
  settled: boolean;
  /**
   * True once the level it is nested in settled while it still waited or
   * ran: its work was undone with that level's, and it sends nothing more.
   */
  abandoned: boolean;
  /**
   * Why it cannot commit, once a transaction nested in it could not undo
   * its work (see {@link undoFailed}); `null` while it can.
   */
  poison: string | null;
  /**
   * Why its own `rollback to savepoint` failed (a nested one's), in the
   * words "it <reason>" (see {@link undoFailed}); `null` until then.
   */
  lost: string | null;
}

/**
 * The Drizzle transaction each pool scope stands for, of every database
 * {@link drizzle} made (a transaction of one may nest in another's level).
 */
const partOfPool = new WeakMap<PoolTransaction, Part>();

/** A new {@link Part}, known by its pool scope `pool` (see {@link partOfPool}). */
function newPart(pool: PoolTransaction | undefined, home: Level | undefined): Part {
  const part: Part = { pool, home, settled: false, abandoned: false, poison: null, lost: null };
  if (pool !== undefined) partOfPool.set(pool, part);
  return part;
}

/**
 * Notes that `part`, a nested transaction, could not undo its work: its
 * `rollback to savepoint` (`sql`) failed with `err`, as when a statement
 * inside it released or rolled back to a savepoint opened before it
 * (`RELEASE mine`), which ends its savepoint too; what it wrote stays in
 * the transaction it is nested in. That one is poisoned, as the client's
 * `transaction()` poisons the level a failed level nests in (see
 * `client/_tx_undo.ts`): the transaction just below it on the connection's
 * stack, a `client.transaction()` it was started from, or else the Drizzle
 * level it nests in. Its calls are then refused with `TX_UNDO_FAILED`, and
 * it cannot commit: it is rolled back when its function settles, which
 * removes the leftovers (or, its own savepoint gone too, poisons the next
 * one out, up to the outermost, whose `rollback` always works).
 */
function undoFailed(part: Part, sql: string, err: unknown): void {
  const name = /savepoint\s+(\S+)/i.exec(sql)?.[1] ?? "";
  part.lost = lostReason(name, err, []);
  const why = `a transaction nested in it ${part.lost}`;
  const pool = part.pool;
  const open = pool === undefined ? undefined : openTransactions(pool.conn);
  const at = open === undefined ? -1 : open.stack.indexOf(pool!);
  const below = at > 0 ? open!.stack[at - 1] : undefined;
  const client = levelOf(below);
  if (client !== undefined) {
    if (client.poison === null) client.poison = why;
    return;
  }
  const enclosing = (below === undefined ? undefined : partOfPool.get(below)) ?? part.home?.part;
  if (enclosing === undefined || enclosing.poison !== null) return;
  enclosing.poison = why;
  // The client's own calls made from its function (max: 1 plain calls, a client.transaction()
  // nested there) are refused too, as in a poisoned transaction() level.
  if (enclosing.pool !== undefined) newLevel(enclosing.pool, null).poison = why;
}

/**
 * The error of a statement (or nested transaction) that would run in a
 * transaction that cannot commit (see {@link undoFailed}): at `level` (a
 * Drizzle level), or in a `client.transaction()` the caller is in; `null`
 * when it may run. Nothing is sent then.
 */
function poisonedAt(level: Level): SqliteError | null {
  const pool = level.part.pool;
  const refused = pool === undefined ? null : joinedCallRefused(pool.conn);
  if (refused !== null || level.part.poison === null) return refused;
  return cannotGoOn(level.part.poison);
}

/**
 * The error a nested transaction whose `rollback to savepoint` failed (see
 * {@link undoFailed}) rejects with, Drizzle's error (`err`) as its cause.
 */
function undoFailedError(part: Part, err: unknown): SqliteError {
  return new SqliteError(
    ErrorCode.TxUndoFailed,
    `Nested transaction's work could not be undone: it ${part.lost}; the transaction it is ` +
      "nested in cannot commit: its statements fail with TX_UNDO_FAILED, and it is rolled back " +
      "when its callback settles",
    undefined,
    { cause: err },
  );
}

/**
 * True when `part`, or a transaction it is nested in, was abandoned (see
 * {@link Part.abandoned}; also when the client's `transaction()` it is
 * nested in settled first, which ends its pool scope before its function).
 */
function abandoned(part: Part | undefined): boolean {
  for (let p = part; p !== undefined; p = p.home?.part) {
    if (p.abandoned || (p.pool !== undefined && !p.pool.active && !p.settled)) return true;
  }
  return false;
}

/** One level of an open transaction: Drizzle's `tx`, its depth and its queue of nested ones. */
interface Level {
  /** The database whose `tx` this is. */
  readonly owner: object;
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
  /**
   * How many transactions of this level's queue ({@link tail}) wait or run.
   * While one does, statements sent at this level (from its function, not
   * from inside the nested one) wait for the tail: sent while a sibling's
   * savepoint is open, they would be part of it, and its `ROLLBACK TO`
   * would undo them after they were acknowledged.
   */
  nested: number;
  /** The transaction this level is. */
  readonly part: Part;
  /** The transactions nested in this level that wait for their turn or run. */
  readonly children: Set<Part>;
}

/** The statement Drizzle's proxy session sends to roll a transaction back. */
const ROLLBACK = /^\s*rollback\s*(?:;\s*)?$/i;
/** That one, or the one that rolls a savepoint back (`rollback to savepoint sp0`). */
const ROLLBACK_ANY = /^\s*rollback\b/i;
/** The one that rolls a nested transaction's savepoint back. */
const ROLLBACK_TO = /^\s*rollback\s+to\b/i;
/**
 * True when Drizzle's own `rollback` or `rollback to savepoint` (sent after a
 * failed `commit`, a failed statement, or a callback that threw) failed with
 * `err` because there is nothing left to undo, so the error that ended the
 * transaction (or the callback's) must reach the caller instead: the
 * transaction is no longer open on `conn` (the server ended it, as an expired
 * lease does; the client was closed, which the server rolls back), or, for a
 * savepoint's, the whole transaction is gone or will be rolled back whatever
 * is sent, as for a nested `client.transaction()` (see `endedAlready`): the
 * connection is gone (`ConnectionError`: lost, closed), or SQLite or the
 * server rolled the transaction back (`TX_ABORTED`: a statement inside it
 * ran `RAISE(ROLLBACK)` or `INSERT OR ROLLBACK`; `TX_TIMEOUT`;
 * `SHUTTING_DOWN`). The transaction's own `rollback` follows (and clears its
 * state).
 */
function undoneAlready(sql: string, conn: Queryable, err: unknown): boolean {
  if (!ROLLBACK_ANY.test(sql)) return false;
  if (!(conn as ReservedConnection).inTransaction) return true;
  if (ROLLBACK.test(sql)) return false;
  if (err instanceof ConnectionError) return true;
  return err instanceof SqliteError && ENDED_CODES.has(err.code);
}

/** The codes of a transaction that SQLite or the server rolled back (see `undoneAlready`). */
const ENDED_CODES: ReadonlySet<string> = new Set([
  ErrorCode.TxAborted,
  ErrorCode.TxTimeout,
  ErrorCode.ShuttingDown,
]);

/** The statements Drizzle's proxy session sends to begin and to commit a transaction. */
const BEGIN = /^\s*begin\b/i;
const COMMIT = /^\s*commit\s*(?:;\s*)?$/i;

/** Where a refused statement was sent, and what to use instead (see `refuseTxEnd`). */
const WHERE = "db.transaction()";
const HOW = "Drizzle ends the transaction itself (it commits when the callback resolves and " +
  "rolls back when it throws or calls tx.rollback()); use savepoints or a nested tx.transaction()";

/** Why a statement of a nested transaction abandoned by its enclosing level is refused. */
function nestedEnded(): SqliteError {
  return new SqliteError(
    ErrorCode.TxEnded,
    "Transaction has ended: the transaction it is nested in settled while this nested one was " +
      "still running (a tx.transaction() or db.transaction() without await?), and rolled back " +
      "the work of both (its statements are refused)",
  );
}

/**
 * Why a statement made at a level is refused when the level's callback
 * settled before it could be sent: it was made without `await` (the
 * callback threw meanwhile), or it waited for a transaction nested beside
 * it. It must not run after that transaction's commit or rollback, on its
 * own.
 */
function endedWhileWaiting(): SqliteError {
  return new SqliteError(
    ErrorCode.TxEnded,
    "Transaction has ended: its callback settled before this statement could be sent (a " +
      "statement made without await, or one that waited for a transaction nested beside it); " +
      "the statement was not sent",
  );
}

/** Why a statement made through a `tx` whose transaction has ended is refused. */
function txEnded(): SqliteError {
  return new SqliteError(
    ErrorCode.TxEnded,
    "Transaction has ended: this statement was made through the tx of a db.transaction() that " +
      "has settled, and was not sent (it would have run outside the transaction, in " +
      "autocommit); make it through db instead, or before the transaction's callback settles",
  );
}

/** Why a transaction whose callback settled while one nested in it still ran is rolled back. */
function nestedRunning(): SqliteError {
  return new SqliteError(
    ErrorCode.TxNestedRunning,
    "Transaction rolled back: its callback settled while a transaction nested in it was still " +
      "running (a tx.transaction() or db.transaction() without await?); the work of both was " +
      "undone",
  );
}

/**
 * Waits while a transaction nested at the level of `scope` by another
 * branch of its function waits or runs (see {@link Level.nested}), or while
 * another transaction is open above the caller's on the connection (a
 * `client.transaction()` another branch nested there), unless the
 * transaction ends meanwhile. Made from inside a `client.transaction()`
 * nested in the level, the statement is that transaction's: it waits only
 * for transactions nested in it.
 */
async function turn(scope: TransactionScope): Promise<void> {
  const level = scope.level;
  if (level === undefined) return;
  const pool = level.part.pool;
  while (scope.state.open) {
    const caller = pool === undefined ? undefined : callerScope(pool.conn);
    const inside = caller !== undefined && caller !== pool;
    if (!inside && level.nested > 0) {
      await level.tail;
      continue;
    }
    const wait = pool === undefined ? null : turnOf(pool.conn, undefined, () => scope.state.open);
    if (wait === null) return;
    await wait;
  }
}

/**
 * The statement that stands for Drizzle's `begin`, `commit` or `rollback`
 * of a transaction nested as savepoint `name` (another database's
 * `db.transaction()` inside this one's): `savepoint`, `release savepoint`,
 * `rollback to savepoint`.
 */
function savepointStatement(sql: string, name: string): string {
  if (BEGIN.test(sql)) return `savepoint ${name}`;
  if (COMMIT.test(sql)) return `release savepoint ${name}`;
  if (ROLLBACK.test(sql)) return `rollback to savepoint ${name}`;
  return sql;
}

/** How Drizzle asks for a query's result. */
type Method = "run" | "all" | "values" | "get";

/**
 * Creates a Drizzle database on a netsqlite client.
 *
 * Every database made over one client shares its transactions: a query
 * through another `drizzle(client)` made from inside this one's
 * `db.transaction()` runs in that transaction, and its `db.transaction()`
 * nests there with a savepoint.
 *
 * @param client A connected client (see `connect()`); closing it stays the
 *   caller's job.
 * @param config Drizzle's options (`schema` for relational queries,
 *   `logger`, `casing`).
 * @returns the Drizzle database.
 * @throws {TypeError} when `client` is not a netsqlite client.
 * @example
 * ```ts
 * import { serve } from "@netsqlite/netsqlite/server";
 * import { connect } from "@netsqlite/netsqlite/client";
 * import { drizzle } from "@netsqlite/netsqlite/drizzle";
 * import { sql } from "npm:drizzle-orm@^0.45";
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
  // The transaction whose `fn` (or work it started) makes the current call;
  // `open` turns false when the transaction ends, so work that runs later
  // goes to the client.
  const context = contextOf(client);
  const target = (scope: TransactionScope | undefined): Queryable =>
    scope !== undefined && scope.state.open ? scope.conn : client;

  /**
   * What to send for `sql` in `scope`, once it may be sent; `null` for
   * nothing. A statement sent from inside `fn` (at a level) that would begin
   * or end the transaction is refused; one sent while a transaction nested
   * at its level by another branch of the level's function is open waits
   * for it to end. Drizzle's own `begin`/`commit`/`rollback` and savepoints
   * run outside every level; those of another database's `db.transaction()`
   * nested here become a savepoint's. A nested transaction abandoned by the
   * level it nests in sends nothing more: its statements are refused with
   * `TX_ENDED`, its savepoint's `rollback to` is skipped (that level's
   * rollback undid it already), so that its callback's error reaches the caller.
   */
  const statementFor = async (
    scope: TransactionScope | undefined,
    sql: string,
    viaTx: boolean,
  ): Promise<string | null> => {
    if (scope === undefined) return sql;
    if (abandoned(scope.level?.part ?? scope.nested)) {
      if (scope.level === undefined && ROLLBACK_ANY.test(sql)) return null;
      throw nestedEnded();
    }
    if (!scope.state.open) {
      // Made through the `tx` of a transaction that has ended: sent now, it would run on the
      // shared pool in autocommit, kept even though the transaction rolled back.
      if (viaTx && scope.level !== undefined) throw txEnded();
      return sql;
    }
    if (scope.level === undefined) {
      return scope.savepoint === undefined ? sql : savepointStatement(sql, scope.savepoint);
    }
    refuseTxEnd(sql, WHERE, HOW);
    await turn(scope);
    if (abandoned(scope.level.part)) throw nestedEnded();
    if (!scope.state.open || scope.level.part.settled) throw endedWhileWaiting();
    const poisoned = poisonedAt(scope.level);
    if (poisoned !== null) throw poisoned;
    return sql;
  };
  /**
   * Runs a statement Drizzle sends; `viaTx`: made through a `tx` (see
   * {@link bindTx}), refused once its transaction has ended.
   */
  const send = async (
    text: string,
    params: unknown[],
    method: Method,
    viaTx: boolean,
  ): Promise<{ rows: any[] }> => {
    const scope = context.getStore();
    const sql = await statementFor(scope, text, viaTx);
    if (sql === null) return { rows: [] };
    const on = target(scope);
    try {
      return await runOne(on, sql, params as BindParams, method);
    } catch (err) {
      if (on !== client && scope!.level === undefined) {
        if (undoneAlready(sql, on, err)) return { rows: [] };
        // A nested transaction's undo failed: never ignored (see undoFailed).
        if (scope!.nested !== undefined && ROLLBACK_TO.test(sql)) {
          undoFailed(scope!.nested, sql, err);
        }
        // Its begin, lost with the connection: nothing of the transaction stays applied, so
        // the error says it did not run (mayHaveRun false; see lostAtBegin).
        if (BEGIN.test(sql)) throw lostAtBegin(err);
      }
      throw err;
    }
  };
  const callback: AsyncRemoteCallback = (text, params, method) => send(text, params, method, false);
  /**
   * Gives `tx`, Drizzle's transaction object of the level `at`, a session of
   * its own whose statements belong to that transaction whatever code makes
   * them: made from outside the transaction's function (a `tx` handed to a
   * job queue's worker, whose async context is not the function's), they
   * run at that level, as made from its function (instead of on the shared
   * pool, outside the transaction, waiting for the writer it holds); made
   * once the transaction has ended, they are refused with `TX_ENDED` (instead
   * of running in autocommit after its rollback). Made from inside the
   * transaction's function or a nested one's, they run as the context says
   * (an outer `tx` used in a nested function is part of the nested one).
   */
  const bindTx = (at: TransactionScope & { level: Level }, tx: any): void => {
    const pool = at.level.part.pool;
    const bound: AsyncRemoteCallback = (text, params, method) => {
      if (context.getStore()?.state === at.state) return send(text, params, method, true);
      const run = () => send(text, params, method, true);
      return context.run(
        at,
        () => pool === undefined ? run() : transactionContext.run(pool, run),
      );
    };
    const session = Object.create(tx.session);
    session.client = bound;
    tx.session = session;
    // Relational queries (`tx.query.users.findMany()`) hold the session they were made with.
    for (const builder of Object.values(tx.query ?? {})) (builder as any).session = session;
  };
  const batch: AsyncBatchRemoteCallback = async (queries) => {
    const scope = context.getStore();
    if (scope?.level !== undefined) {
      if (abandoned(scope.level.part)) throw nestedEnded();
      if (scope.state.open) {
        for (const q of queries) refuseTxEnd(q.sql, WHERE, HOW);
        await turn(scope);
        if (abandoned(scope.level.part)) throw nestedEnded();
        if (!scope.state.open || scope.level.part.settled) throw endedWhileWaiting();
        const poisoned = poisonedAt(scope.level);
        if (poisoned !== null) throw poisoned;
      }
    }
    const results = await target(scope).batch<unknown[]>(
      queries.map((q) => ({ sql: q.sql, params: q.params as BindParams })),
      { arrays: true },
    );
    return results.map((r, i) =>
      queries[i].method === "run"
        ? { rows: [], changes: r.changes, lastInsertRowid: r.lastInsertRowid } as { rows: any[] }
        : shape(queries[i].method, r.rows)
    );
  };
  const drizzleDb = drizzleProxy<TSchema>(callback, batch, config);
  const db = drizzleDb as unknown as NetsqliteDatabase<TSchema>;

  // Drizzle's proxy session sends `begin`/`commit` through the callback; run
  // the whole transaction, and everything `fn` does, on one reserved connection.
  // A `db.transaction()` called inside `fn` (a helper that wraps its own work
  // in one) nests in it with a savepoint, as Drizzle's better-sqlite3 driver
  // does: `begin` there would fail and end the outer transaction.
  const transaction = drizzleDb.transaction.bind(drizzleDb);
  type Fn = (tx: any) => Promise<unknown>;
  /**
   * The scope of `part`'s function at Drizzle's `tx`: one level deeper;
   * `tx.transaction()` queued there.
   */
  const enter = (
    scope: TransactionScope,
    tx: Level["tx"],
    depth: number,
    part: Part,
  ): TransactionScope & { level: Level } => {
    const level: Level = {
      owner: db,
      tx,
      savepoint: tx.transaction.bind(tx),
      depth,
      tail: Promise.resolve(),
      nested: 0,
      part,
      children: new Set(),
    };
    const at = { conn: scope.conn, state: scope.state, level };
    tx.transaction = ((inner: Fn) => nest(at, inner)) as typeof tx.transaction;
    bindTx(at, tx);
    return at;
  };
  /**
   * Runs a transaction's function at its level `at` (in Drizzle's context
   * and the pool's), then settles the level: the transactions nested in it
   * that still wait or run are abandoned (see {@link Part.abandoned}, and
   * the client's `transaction()`s nested in it). When one was, the level
   * must not commit (that function could still throw, and its later
   * statements would land after the commit): it throws `TX_NESTED_RUNNING`,
   * and Drizzle rolls the level back, as the client's `transaction()` does.
   */
  const body = async (at: TransactionScope & { level: Level }, fn: Fn, tx: any) => {
    const part = at.level.part;
    const pool = part.pool;
    let result: unknown;
    try {
      result = await context.run(
        at,
        () => pool === undefined ? fn(tx) : transactionContext.run(pool, () => fn(tx)),
      );
    } catch (err) {
      // A call's ConnectionError, the transaction lost with its connection: it says so, with
      // mayHaveRun false, as the client's transaction() does (before Drizzle's rollback, which
      // ends that state). Drizzle's error of a failed query ("Failed query: ...") keeps its
      // place: its cause says so, as that of its commit refused after the loss would.
      let thrown = err;
      if (pool !== undefined) {
        if (err instanceof ConnectionError) thrown = lostWithConnection(pool.conn, err);
        else if (err instanceof Error && err.cause instanceof ConnectionError) {
          err.cause = lostWithConnection(pool.conn, err.cause);
        }
      }
      const settling = settle(at.level);
      if (settling instanceof Promise) await settling;
      throw thrown;
    }
    const ended = abandoned(part);
    const settling = settle(at.level);
    const running = settling instanceof Promise ? await settling : settling;
    if (ended) throw nestedEnded();
    if (running) throw nestedRunning();
    // A transaction nested in it could not undo its work, which is still in this one.
    if (part.poison !== null) throw poisonedCommit(part);
    return result;
  };
  /**
   * Ends `level`'s function (see {@link body}); true when a transaction nested in it still ran.
   * A transaction nested in it whose function settled and whose `release`, `rollback to` or
   * undo is still in flight (a Drizzle one's, or a client `transaction()`'s, which may yet fail
   * to undo its work and then roll the whole transaction back: see `nestedSettled`) does not
   * run any more: until it has ended, Drizzle must not send its `commit` (which would keep
   * that work) nor its `rollback` (after which that undo's own `ROLLBACK` would be stray), so
   * it resolves once it has, and then counts only what still runs; at once, without a tick,
   * when none is in flight. The level itself is such a transaction to the one it is nested in
   * (its pool scope `settling`) until its own `release` or `rollback to` has ended (see
   * {@link nest}).
   */
  const settle = (level: Level): boolean | Promise<boolean> => {
    const part = level.part;
    if (abandoned(part)) part.abandoned = true; // kept once its pool scope ends below
    part.settled = true;
    /** Abandons the Drizzle transactions nested in it that still wait or run; true if any. */
    const abandon = (): boolean => {
      const running = level.children.size > 0;
      for (const child of level.children) child.abandoned = true;
      return running;
    };
    const pool = part.pool;
    if (pool === undefined) return abandon();
    pool.active = false;
    if (part.home !== undefined) pool.settling = true;
    const open = openTransactions(pool.conn);
    if (open === undefined) return abandon();
    const end = (): boolean => {
      const running = abandon();
      return abandonNested(open, pool) || running;
    };
    const settled = nestedSettled(open, pool);
    return settled === null ? end() : settled.then(end);
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
   * place in an outer level's queue, not in its own). Called from inside a
   * `client.transaction()` nested in the level, it nests in that one, in
   * the order the pool keeps (the level's queue waits for that one).
   * `foreign`: a `db.transaction()` of this database nested in another
   * database's level: this database's own transaction, whose `begin`,
   * `commit` and `rollback` become the savepoint's.
   */
  const nest = async (
    at: TransactionScope & { level: Level },
    fn: Fn,
    foreign?: (run: Fn) => Promise<unknown>,
  ): Promise<unknown> => {
    const caller = context.getStore();
    const deeper = caller?.state === at.state && (caller.level?.depth ?? 0) > at.level.depth;
    const home = deeper ? caller!.level! : at.level;
    if (abandoned(home.part)) throw nestedEnded();
    // On a tx whose transaction ended: its savepoint, sent to the shared pool now, would be
    // refused there, or with max: 1 begin a transaction of its own there.
    if (!at.state.open) {
      throw new SqliteError(
        ErrorCode.TxEnded,
        "Transaction has ended: tx.transaction() was called after the db.transaction() of that " +
          "tx settled",
      );
    }
    const depth = home.depth;
    const homePool = home.part.pool;
    const pool: PoolTransaction | undefined = homePool === undefined ? undefined : {
      conn: homePool.conn,
      active: true,
      parent: transactionContext.getStore(),
    };
    const poolCaller = homePool === undefined ? undefined : callerScope(homePool.conn);
    const part = newPart(pool, home);
    home.children.add(part);
    let done: (() => void) | undefined;
    let open: OpenTransactions | null = null;
    try {
      // Inside a client.transaction() nested in the home level (the pool's scope of the caller
      // is not the level's): only the pool orders it (the level's queue may wait for that one).
      if (poolCaller === undefined || poolCaller === homePool) {
        const before = home.tail;
        home.tail = new Promise<void>((resolve) => done = resolve);
        home.nested++;
        await before;
      }
      if (pool !== undefined) open = await takeTurn(pool.conn, pool, undefined);
      if (abandoned(part)) throw nestedEnded();
      // The transaction it nests in cannot commit (see undoFailed): no savepoint is sent.
      const poisoned = poisonedAt(home);
      if (poisoned !== null) throw poisoned;
      // Its savepoint's statements belong to no level: they neither wait for
      // this queue (they are its transaction) nor are refused.
      const control: TransactionScope = {
        conn: at.conn,
        state: at.state,
        nested: part,
        ...(foreign === undefined ? {} : { savepoint: `sp${depth}` }),
      };
      const run: Fn = (tx) => body(enter(at, tx, depth + 1, part), fn, tx);
      try {
        return await context.run(control, () => (foreign ?? at.level.savepoint)(run));
      } catch (err) {
        // Its rollback to savepoint failed: Drizzle's error (that rollback's) says only that.
        throw part.lost === null ? err : undoFailedError(part, err);
      }
    } finally {
      home.children.delete(part);
      if (open !== null) leaveTurn(open, pool!);
      if (done !== undefined) {
        home.nested--;
        done();
      }
    }
  };
  const outermost = async (fn: Fn, txConfig?: any): Promise<unknown> => {
    const scope: TransactionScope = { conn: await client.reserve(), state: { open: true } };
    // The pool's scope too: the client's own calls made from `fn` (a helper
    // written for the client) act as inside its `transaction()`, instead of
    // waiting for this transaction's connection or writer.
    const pool = new PoolScope();
    pool.bind(scope.conn);
    const part = newPart(pool.active ? pool : undefined, undefined);
    // The bottom of the connection's stack (it was just reserved: nothing to wait for).
    const open = pool.active ? await takeTurn(pool.conn, pool, undefined) : null;
    try {
      return await transactionContext.run(pool, () =>
        context.run(
          scope,
          () => transaction((tx) => body(enter(scope, tx, 0, part), fn, tx), txConfig),
        ));
    } finally {
      pool.end();
      if (open !== null) leaveTurn(open, pool);
      scope.state.open = false;
      scope.conn.release(); // closed instead of reused if a transaction is still open
    }
  };
  db.transaction = (async (fn: Fn, txConfig?: any) => {
    const outer = context.getStore();
    if (outer?.state.open && outer.level !== undefined) {
      const at = outer as TransactionScope & { level: Level };
      const foreign = at.level.owner === db ? undefined : (run: Fn) => transaction(run, txConfig);
      return await nest(at, fn, foreign);
    }
    return await outermost(fn, txConfig);
  }) as typeof db.transaction;
  clients.set(db, client);
  return db;
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
 *   server's code, the batch's error as `cause`). Except around a table
 *   rebuild (below): the migrations that turn foreign keys off and those
 *   that do not run as consecutive batches, each atomic.
 * - A write of the run that waited `--busy-timeout` for the writer (held by
 *   another instance's migrations: `BUSY_TIMEOUT`) is sent again until the
 *   run's deadline (`timeout`, else the server's statement timeout) has
 *   passed since it began, so a slow migration of another instance is
 *   waited for.
 * - drizzle-kit's `PRAGMA foreign_keys=OFF` (a table rebuild) runs that
 *   migration with foreign keys off, checked before the commit (see
 *   `Client.batch`'s `foreignKeys`), so `DROP TABLE` deletes no rows of
 *   tables that reference it; the migrations before and after it run with
 *   foreign keys on (their `ON DELETE CASCADE` takes place), in batches of
 *   their own.
 * - Call it outside a transaction: called from inside a `db.transaction()`
 *   of this client (any database over it), it is refused at once with
 *   `SqliteError` `TX_CONTROL` (its own transaction would wait for that
 *   one's writer, or nest in it).
 *
 * @param db A database returned by {@link drizzle}.
 * @param config `migrationsFolder`, and `migrationsTable` (default
 *   `__drizzle_migrations`); `migrationsSchema` is ignored (SQLite has none);
 *   `timeout`: the run's deadline in ms (all pending migrations are one
 *   batch), instead of the server's statement timeout.
 * @throws {TypeError} when `db` does not come from {@link drizzle}, or the
 *   config is invalid.
 * @throws {SqliteError} naming the migration that failed; `TX_CONTROL`
 *   when called inside a `db.transaction()` of the same client.
 * @example
 * ```ts
 * import { serve } from "@netsqlite/netsqlite/server";
 * import { connect } from "@netsqlite/netsqlite/client";
 * import { drizzle, migrate } from "@netsqlite/netsqlite/drizzle";
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
  if (contextOf(client).getStore()?.state.open) {
    // Its batch would wait for the writer this transaction holds (--busy-timeout), or with
    // max: 1 nest in it, committed or undone by whatever the transaction does next.
    throw new SqliteError(
      ErrorCode.TxControl,
      "Cannot run migrate() inside db.transaction(): migrations run in a transaction of their " +
        "own, which cannot begin while this one is open on the same client; call migrate() " +
        "outside the transaction (before it, as at startup)",
    );
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
