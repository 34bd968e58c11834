/**
 * The one interface the engine needs from SQLite. Two implementations exist:
 * `ffi.ts` (the system's libsqlite3 through `Deno.dlopen`, the default) and
 * `node.ts` (`node:sqlite`, built into Deno, the fallback that needs nothing
 * installed). The engine above this interface does not know which one it
 * runs on; what one of them cannot do is stated by {@link Sqlite.capabilities}.
 *
 * Value rules, identical on both implementations:
 * - Bound values are already checked by the engine (`engine/_bind.ts`):
 *   `null` → NULL; a `number` that is a safe integer (and not `-0`) →
 *   INTEGER, any other finite number → REAL; `bigint` (within int64) →
 *   INTEGER; `string` (no NUL, well-formed) → TEXT; `Uint8Array` → BLOB.
 * - Values read back: NULL → `null`, INTEGER → `number` when within
 *   ±(2^53 − 1), else `bigint`; REAL → `number`; TEXT → `string`;
 *   BLOB → `Uint8Array` (a copy the caller owns).
 * - Every failure is a `SqliteError` carrying SQLite's extended result code
 *   (`sqliteCode`) and its name (`code`, e.g. `SQLITE_CONSTRAINT_UNIQUE`).
 *
 * @module
 */

import type { SqliteError } from "../../protocol/errors.ts";

/** A value bound to, or read from, SQLite. */
export type SqlValue = null | number | bigint | string | Uint8Array;

/** Statement arguments: positional, or named (keys with their prefix: `:a`, `$a`, `@a`, or bare `a` = `:a`). */
export type BindArgs = readonly SqlValue[] | Readonly<Record<string, SqlValue>>;

/** What an implementation can do beyond the common core. */
export interface Capabilities {
  /** `Db.interrupt()` and `Db.setBudget()` stop a running statement. */
  readonly interrupt: boolean;
  /** `Stmt.stepInBackground()` runs a step off the main thread. */
  readonly background: boolean;
  /** `Db.backup()` copies a live database page by page. */
  readonly backup: boolean;
  /** `Db.onUpdate()` reports each changed row. */
  readonly updateHook: boolean;
  /**
   * `Stmt.reprepares` tells when SQLite prepared a statement again (its
   * result columns may have changed as it stepped).
   */
  readonly reprepares: boolean;
}

/** A loaded SQLite library. */
export interface Sqlite {
  /** Which implementation: `"ffi"` or `"node"`. */
  readonly engine: "ffi" | "node";
  /** The library file loaded (`/usr/lib/.../libsqlite3.so.0`), or `"node:sqlite"`. */
  readonly library: string;
  /** `sqlite3_libversion()`, e.g. `3.40.1`. */
  readonly version: string;
  /** What this implementation can do. */
  readonly capabilities: Capabilities;
  /** What is lost against the FFI implementation, one sentence each (empty for ffi). */
  readonly limitations: readonly string[];
  /**
   * Whether connections accept SQLite's double-quoted string literals
   * (`"x"` read as the text 'x' where no column `x` exists) unless
   * {@link OpenOptions.doubleQuotedStrings} says otherwise. False by default
   * (`loadSqlite()` in `load.ts`): `"x"` is always a name.
   */
  readonly doubleQuotedStrings: boolean;
  /**
   * Opens a connection. WAL mode, synchronous and other PRAGMAs are the
   * caller's business.
   *
   * @throws {SqliteError} when the file cannot be opened.
   */
  open(path: string, options: OpenOptions): Db;
  /** Unloads the library (FFI); every connection must be closed first. Idempotent. */
  close(): void;
}

/** Options of {@link Sqlite.open}. */
export interface OpenOptions {
  /** Open read-only (`SQLITE_OPEN_READONLY`); otherwise read-write, created if missing. */
  readOnly: boolean;
  /** SQLite's busy timeout for file locks held by other processes, in ms. */
  busyTimeout: number;
  /**
   * Accept double-quoted string literals in DML and DDL (SQLite's legacy
   * `DQS` behaviour: `SQLITE_DBCONFIG_DQS_DML`/`_DDL`, node:sqlite's
   * `enableDoubleQuotedStringLiterals`).
   * @default {the Sqlite's {@link Sqlite.doubleQuotedStrings}}
   */
  doubleQuotedStrings?: boolean;
}

/**
 * Authorizer callback (`sqlite3_set_authorizer`), called while a statement
 * is prepared, and also while one runs (SQLite preparing it again after a
 * schema change; a virtual table preparing statements of its own, as an FTS
 * table reading its content table): action code (see `Auth` in
 * `_constants.ts`) and up to four strings. Returns 0 (`SQLITE_OK`), 1
 * (`SQLITE_DENY`) or 2 (`SQLITE_IGNORE`); or an error, which denies as 1
 * does, and which a step then failing with `SQLITE_AUTH` throws instead of
 * SQLite's `not authorized`. With the FFI binding it may be called while a
 * statement steps in the background: Deno runs it on the main thread while
 * that thread waits, so it must not use the connection.
 */
export type Authorizer = (
  action: number,
  arg1: string | null,
  arg2: string | null,
  dbName: string | null,
  trigger: string | null,
) => number | SqliteError;

/** Changes of one row, reported by {@link Db.onUpdate} (`sqlite3_update_hook`). */
export interface RowChange {
  /** `"insert"`, `"update"` or `"delete"`. */
  op: "insert" | "update" | "delete";
  /** Schema name, `main` usually. */
  db: string;
  /** Table name. */
  table: string;
  /** The row's rowid. */
  rowid: number | bigint;
}

/** A row whose rowid an UPDATE changes, reported by {@link Db.onRowidChange}. */
export interface RowidChange {
  /** Schema name, `main` usually. */
  db: string;
  /** Table name. */
  table: string;
  /** The rowid the row had. */
  oldRowid: number | bigint;
  /** The rowid it gets. */
  newRowid: number | bigint;
}

/**
 * A row of the table {@link Db.onRowChanging} watches, about to be
 * inserted, updated or deleted. Its values can be read only during the
 * callback.
 */
export interface RowChanging {
  /** What is about to happen to the row. */
  op: "insert" | "update" | "delete";
  /** The rowid it has (an insert: the rowid it gets). */
  rowid: number | bigint;
  /** The rowid it gets (a delete: the rowid it had). */
  newRowid: number | bigint;
  /** Column `i`'s value before an update or delete (`sqlite3_preupdate_old`). */
  before(i: number): SqlValue;
  /** True when column `i` was NULL before an update or delete (its value is not read). */
  nullBefore(i: number): boolean;
  /** Column `i`'s value after an insert or update (`sqlite3_preupdate_new`). */
  after(i: number): SqlValue;
}

/** Result of {@link Db.checkpoint}. */
export interface CheckpointResult {
  /** Frames in the WAL after the checkpoint (`pnLog`). */
  walFrames: number;
  /** Frames checkpointed (`pnCkpt`). */
  checkpointed: number;
}

/** One open connection. Not thread-safe: see {@link Stmt.stepInBackground}. */
export interface Db {
  /** True while a transaction is open (`!sqlite3_get_autocommit`). */
  readonly inTransaction: boolean;
  /**
   * Prepares the first statement of `sql` that starts at or after UTF-16
   * index `from`. Returns `null` when only white space, comments and
   * semicolons remain (SQLite prepares nothing then). The statement's
   * {@link Stmt.end} tells where the next one starts. SQL containing a NUL
   * character is refused with `BAD_REQUEST` (SQLite would stop reading there).
   *
   * @throws {SqliteError} SQLite's error when the statement does not compile.
   */
  prepare(sql: string, from?: number): Stmt | null;
  /**
   * Runs a script of statements without parameters, discarding rows (for
   * BEGIN, COMMIT, PRAGMA and the like).
   *
   * @throws {SqliteError}
   */
  exec(sql: string): void;
  /** `sqlite3_changes64()`: rows changed by the last INSERT/UPDATE/DELETE. */
  changes(): number | bigint;
  /** `sqlite3_last_insert_rowid()`. */
  lastInsertRowid(): number | bigint;
  /**
   * `sqlite3_set_last_insert_rowid()`; false (and nothing done) when the
   * implementation cannot set it (node:sqlite).
   */
  setLastInsertRowid(rowid: number | bigint): boolean;
  /** `sqlite3_total_changes64()`. */
  totalChanges(): number | bigint;
  /**
   * True while deferred foreign key constraints are unresolved on this
   * connection (`sqlite3_db_status(SQLITE_DBSTATUS_DEFERRED_FKS)`): a
   * COMMIT now would fail. `null` when the implementation cannot tell
   * (node:sqlite).
   */
  deferredViolations(): boolean | null;
  /** Installs (or with `null` removes) the authorizer used while preparing. */
  setAuthorizer(callback: Authorizer | null): void;
  /**
   * `sqlite3_interrupt()`: the statement running on this connection (on a
   * background thread) stops with `SQLITE_INTERRUPT`. Safe to call from the
   * main thread at any time. No-op without `capabilities.interrupt`.
   */
  interrupt(): void;
  /**
   * Sets a time budget for statements stepped synchronously on this
   * connection: once they have run `ms` milliseconds, the running step
   * fails with `SQLITE_INTERRUPT`. A progress handler checks every few
   * thousand VM instructions, and the budget counts from its first check
   * (tens of microseconds into the statement), so that a statement done
   * before then — a point read — reads no clock at all. `ms <= 0` stops at
   * the first check. `null` removes the budget, which must be done before
   * {@link Stmt.stepInBackground}. No-op without `capabilities.interrupt`.
   */
  setBudget(ms: number | null): void;
  /**
   * Largest string or BLOB (and row) SQLite may build on this connection
   * (`SQLITE_LIMIT_LENGTH`, at most 1,000,000,000): past it a statement
   * fails at once with `SQLITE_TOOBIG`, instead of building gigabytes in
   * one step that nothing can stop (`zeroblob(1e9)`, `printf('%.*c', ...)`).
   */
  setLengthLimit(bytes: number): void;
  /**
   * Whether calls made on the main thread wait for a file lock another
   * process holds, up to the busy timeout given to `open` (default true).
   * When false, such a call fails at once with `SQLITE_BUSY`, while a step
   * in the background still waits: the engine then reruns the statement
   * there, so that no lock another program holds stops the event loop.
   * Ignored without `capabilities.background`.
   */
  waitsInline: boolean;
  /**
   * True while a statement of this connection waits for a file lock another
   * connection holds (it met `SQLITE_BUSY`: waiting in the background, or
   * failed on the main thread and not stepped since). Always false without
   * `capabilities.background`: a wait there blocks the thread, so no other
   * code runs to ask.
   */
  readonly waitingForLock: boolean;
  /**
   * Reports every row changed on this connection (`sqlite3_update_hook`),
   * or stops with `null`. Throws without `capabilities.updateHook`.
   */
  onUpdate(callback: ((change: RowChange) => void) | null): void;
  /**
   * Reports each row an UPDATE (or an upsert's DO UPDATE) moves to another
   * rowid, before it moves, or stops with `null`: the update hook reports
   * such a row as an update of its new rowid only. Built on
   * `sqlite3_preupdate_hook`, which only some builds of SQLite have, and
   * which, while set, makes statements prepared meanwhile delete row by row
   * where SQLite would empty a table at once (`DELETE FROM t`): set it only
   * while a statement that may move rows runs. Setting the same callback
   * again is cheap. Like the update hook, it must not be set while a
   * statement steps in the background.
   *
   * @returns false (and nothing done) when the library lacks the hook (node:sqlite,
   *   SQLite built without `SQLITE_ENABLE_PREUPDATE_HOOK`).
   */
  onRowidChange(callback: ((change: RowidChange) => void) | null): boolean;
  /**
   * Reports each row of `table` in the main database about to be inserted,
   * updated or deleted, with its values before and after, also the rows
   * that REPLACE deletes (which the update hook does not report); or stops
   * with `null`. Shares SQLite's preupdate hook with {@link onRowidChange},
   * with its costs and rules: set it only while a statement that needs it
   * runs, never while one steps in the background.
   *
   * @returns false (and nothing done) when the library lacks the hook.
   */
  onRowChanging(table: string, callback: ((row: RowChanging) => void) | null): boolean;
  /**
   * `sqlite3_wal_checkpoint_v2()` on `main`.
   *
   * @throws {SqliteError} e.g. `SQLITE_BUSY` or `SQLITE_LOCKED`.
   */
  checkpoint(mode: "passive" | "full" | "restart" | "truncate"): CheckpointResult;
  /**
   * Copies the database to `destPath` with SQLite's online backup API,
   * `pagesPerStep` pages at a time; `onProgress(remaining, total)` after
   * each step. With `capabilities.background` (ffi) each step, and the sync
   * of the copy at the last one, runs on a background thread and the event
   * loop runs meanwhile; node:sqlite's `backup()` runs every step in one
   * synchronous call (the event loop waits for the whole copy).
   *
   * @throws {SqliteError} SQLite's code and message (the caller names the destination).
   */
  backup(
    destPath: string,
    options: { pagesPerStep: number; onProgress?: (remaining: number, total: number) => void },
  ): Promise<void>;
  /** Finalizes every statement still open and closes. Idempotent. */
  close(): void;
}

/**
 * Receives rows value by value from {@link Stmt.allInto}: each row is
 * announced with its length, then its values follow, each through the
 * method of its type (the value rules above apply: an INTEGER is passed as
 * a number when within ±(2^53 − 1)).
 */
export interface RowSink {
  /** Bytes written so far. */
  readonly size: number;
  /** A row of `length` values follows. */
  row(length: number): void;
  /** NULL. */
  nil(): void;
  /** An INTEGER. */
  integer(value: number | bigint): void;
  /** A REAL. */
  real(value: number): void;
  /** A TEXT. */
  text(value: string): void;
  /** A BLOB. */
  blob(value: Uint8Array): void;
  /**
   * A BLOB of `length` bytes, which the caller copies into the view
   * returned at once (a large value, copied from SQLite's memory straight
   * into the sink's).
   */
  blobRoom(length: number): Uint8Array;
  /**
   * As {@link blobRoom}, for a TEXT of `length` bytes of UTF-8: the caller
   * checks they are valid, and throws when not (the rows being written are
   * dropped then, as after any error).
   */
  textRoom(length: number): Uint8Array;
}

/** Result of {@link Stmt.run}. */
export interface RunInfo {
  /** `sqlite3_changes64()` after the statement. */
  changes: number | bigint;
  /** `sqlite3_last_insert_rowid()` after the statement. */
  lastInsertRowid: number | bigint;
}

/**
 * Bytes of text and BLOBs bound to a statement from which
 * {@link Stmt.dropLargeValues} unbinds them after its run.
 */
export const LARGE_BOUND_BYTES = 64 * 1024;

/**
 * One prepared statement. A statement is either idle (after prepare or
 * {@link reset}) or active (after a `step()` that returned a row); binding
 * resets it first.
 */
export interface Stmt {
  /** The statement's own SQL text (`sqlite3_sql`). */
  readonly sql: string;
  /** UTF-16 index in the text given to `prepare` right after this statement (its tail). */
  readonly end: number;
  /** `sqlite3_stmt_readonly()`. */
  readonly readOnly: boolean;
  /** `sqlite3_bind_parameter_count()`. */
  readonly paramCount: number;
  /**
   * Result column names as of now (`sqlite3_column_name`); they can change
   * when a schema change makes SQLite re-prepare the statement, so callers
   * read them after the first step (or after {@link all}).
   */
  columnNames(): string[];
  /**
   * How many times SQLite prepared the statement again since it was
   * prepared (`SQLITE_STMTSTATUS_REPREPARE`): it does so as the statement
   * steps after the schema changed, and {@link columnNames} may then differ.
   * Always 0 where the implementation cannot tell (node:sqlite).
   */
  readonly reprepares: number;
  /**
   * Resets the statement, clears earlier bindings, and binds `args`.
   *
   * @throws {SqliteError} `INVALID_PARAM` for too many or too few
   *   positional values, an unknown name or a parameter an object leaves out.
   */
  bind(args: BindArgs): void;
  /**
   * Steps once on the main thread.
   *
   * @returns true when a row is available ({@link row}), false when done.
   * @throws {SqliteError} SQLite's error; the statement is reset.
   */
  step(): boolean;
  /**
   * Steps once on a background thread (`nonblocking` FFI call); the event
   * loop runs meanwhile. A lock another process holds is waited for up to
   * the busy timeout, and {@link Db.interrupt} stops that wait too (within
   * `LOCK_WAIT_SLICE_MS` of ffi.ts). Nothing else may use this statement's
   * connection until the promise settles, except {@link Db.interrupt}.
   * Throws without `capabilities.background`.
   */
  stepInBackground(): Promise<boolean>;
  /** The current row's values. */
  row(): SqlValue[];
  /**
   * Steps to the end and returns every remaining row (then resets).
   * Stops with `RESULT_TOO_LARGE` past `maxBytes` approximate bytes when given.
   *
   * @throws {SqliteError}
   */
  all(maxBytes?: number): SqlValue[][];
  /**
   * Like {@link all}, but writes each row straight into `sink` instead of
   * building arrays (the server encodes a reply's rows this way). Stops
   * with `RESULT_TOO_LARGE` once the sink grew by more than `maxBytes`.
   *
   * @returns the number of rows written.
   * @throws {SqliteError} the sink may then hold part of the rows.
   */
  allInto(sink: RowSink, maxBytes: number): number;
  /**
   * Steps to the end discarding rows and reports the changes (then resets).
   *
   * @throws {SqliteError}
   */
  run(): RunInfo;
  /** `sqlite3_reset()`; bindings stay. Never throws. */
  reset(): void;
  /**
   * Unbinds the values bound when they hold {@link LARGE_BOUND_BYTES} or
   * more of text and BLOBs together, so that a statement kept prepared (the
   * statement cache) does not keep SQLite's copy of them resident until its
   * next run; done only on a reset statement (the next run binds anew).
   * Never throws.
   */
  dropLargeValues(): void;
  /** `sqlite3_finalize()`. Idempotent. */
  finalize(): void;
}

/**
 * Every row of a short statement without parameters, stepped at once on
 * the calling thread (PRAGMAs and catalogue reads of maintenance work).
 */
export function rowsNow(db: Db, sql: string): SqlValue[][] {
  const stmt = db.prepare(sql)!;
  try {
    stmt.bind([]);
    return stmt.all();
  } finally {
    stmt.finalize();
  }
}
