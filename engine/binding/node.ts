/**
 * The node:sqlite implementation of {@link Sqlite}: built into Deno, needs
 * nothing installed, and is the fallback when no libsqlite3 loads. Every
 * node:sqlite quirk is handled here and nowhere else:
 * - a JS number binds as REAL, so integer numbers are bound as bigint;
 * - integers beyond 2^53 throw unless `readBigInts` is on: read-only
 *   statements read numbers first and run again reading bigints when one is
 *   out of range; stepping and writes always read bigints (and iterating
 *   with `readBigInts` off crashes the process on such a value);
 * - positional values bind only `?` parameters, so values for `:a` are
 *   passed by name; bare and unknown names are resolved here;
 * - it has no `sqlite3_stmt_readonly`, `changes()` or parameter count: an
 *   authorizer, `SELECT changes()` and a scan of the SQL text stand in;
 * - `exec()` errors carry no result code, so scripts run statement by
 *   statement; the tail of a script comes from `sourceSQL`;
 * - preparing text without a statement and then running it crashes the
 *   process, so such text is never prepared;
 * - `iterate()` reports an error raised while stepping as the normal end of
 *   rows and keeps nothing of it, so {@link NodeStmt.step} confirms every end
 *   (see there) and steps other statements by reading all their rows at once.
 *
 * It cannot interrupt a statement, step in the background or report row
 * changes ({@link NodeSqlite.limitations}).
 *
 * @module
 */

import * as nodeSqlite from "node:sqlite";
import { ErrorCode, SqliteError } from "../../protocol/errors.ts";
import { resultCodeName } from "../_result_codes.ts";
import { hasStatement, statementBody } from "../_sql_text.ts";
import { scan } from "../../protocol/sql_lexer.ts";
import { Auth, AuthResult, Result } from "./_constants.ts";
import type {
  Authorizer,
  BindArgs,
  Capabilities,
  CheckpointResult,
  Db,
  OpenOptions,
  RowChange,
  RowChanging,
  RowidChange,
  RowSink,
  RunInfo,
  Sqlite,
  SqlValue,
  Stmt,
} from "./binding.ts";
import { LARGE_BOUND_BYTES } from "./binding.ts";
import { exact } from "./ffi.ts";
import {
  busyMessage,
  descriptorsHint,
  missingValues,
  openErrno,
  resultTooLarge,
  rowBytes,
  sqliteMessage,
  tooManyValues,
} from "./_errors.ts";
import { NamedParams, parameterNames } from "./_params.ts";

/** The parts of node:sqlite's `StatementSync` used here, including undeclared ones. */
interface NodeStatement {
  readonly sourceSQL: string;
  all(...params: unknown[]): unknown[];
  get(...params: unknown[]): unknown;
  run(...params: unknown[]): { changes: number | bigint; lastInsertRowid: number | bigint };
  iterate(...params: unknown[]): IterableIterator<unknown>;
  columns(): { name: string }[];
  setReturnArrays(enabled: boolean): void;
  setReadBigInts(enabled: boolean): void;
  setAllowBareNamedParameters(enabled: boolean): void;
}

/** The parts of node:sqlite's `DatabaseSync` used here, including undeclared ones. */
interface NodeDatabase {
  readonly isOpen: boolean;
  readonly isTransaction: boolean;
  /** `sqlite3_limit()` values by name (missing from Deno's declarations). */
  readonly limits: { length: number };
  prepare(sql: string): NodeStatement;
  setAuthorizer(callback: Authorizer | null): void;
  close(): void;
}

/** node:sqlite's `backup()` export (missing from Deno's declarations). */
type NodeBackup = (
  db: unknown,
  path: string,
  options: { rate: number; progress?: (p: { totalPages: number; remainingPages: number }) => void },
) => Promise<number>;

const NODE_CAPABILITIES: Capabilities = Object.freeze({
  interrupt: false,
  background: false,
  backup: true,
  updateHook: false,
  reprepares: false,
});

const NODE_LIMITATIONS: readonly string[] = Object.freeze([
  "A running statement cannot be interrupted, so statement timeouts and time budgets only act between rows",
  "Statements cannot run on a background thread, so a long statement, a backup or a vacuum holds up every other request",
  "Row changes cannot be reported (no update hook), so subscribe() fails with FEED_UNSUPPORTED",
  "TEXT values and column names that are not valid UTF-8 read back with U+FFFD in place of the invalid bytes (FFI refuses them with INVALID_UTF8)",
  "Text holding a NUL character is cut at the NUL when read",
]);

const NO_ARGS: unknown[] = [];
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** node:sqlite, as a {@link Sqlite}. */
export class NodeSqlite implements Sqlite {
  /** Always `"node"`. */
  readonly engine = "node" as const;
  /** Always `"node:sqlite"`. */
  readonly library = "node:sqlite";
  /** The bundled SQLite's version. */
  readonly version: string;
  /** Backup only. */
  readonly capabilities: Capabilities = NODE_CAPABILITIES;
  /** What is lost against the FFI implementation. */
  readonly limitations: readonly string[] = NODE_LIMITATIONS;
  /** Whether connections accept double-quoted string literals unless told otherwise. */
  readonly doubleQuotedStrings: boolean;

  /** Nothing to unload. */
  close(): void {}

  /** @param doubleQuotedStrings The default of {@link OpenOptions.doubleQuotedStrings}. */
  constructor(doubleQuotedStrings = false) {
    this.doubleQuotedStrings = doubleQuotedStrings;
    const db = new nodeSqlite.DatabaseSync(":memory:");
    try {
      this.version = String(db.prepare("SELECT sqlite_version() AS v").get()!.v);
    } finally {
      db.close();
    }
  }

  /**
   * Opens a connection with foreign keys off (SQLite's default) and
   * double-quoted string literals refused unless `doubleQuotedStrings`
   * (of `options`, else of this object) accepts them, as the FFI
   * implementation does.
   *
   * @throws {SqliteError} when the file cannot be opened.
   */
  open(path: string, options: OpenOptions): Db {
    let db: NodeDatabase;
    try {
      db = new nodeSqlite.DatabaseSync(path, {
        readOnly: options.readOnly,
        timeout: options.busyTimeout,
        enableForeignKeyConstraints: false,
        enableDoubleQuotedStringLiterals: options.doubleQuotedStrings ?? this.doubleQuotedStrings,
      }) as unknown as NodeDatabase;
    } catch (err) {
      // node:sqlite's open errors carry no result code: CANTOPEN is the one SQLite gives.
      const e = err as { errcode?: number; message?: string };
      const code = typeof e?.errcode === "number" ? e.errcode : 14;
      const detail = String(e?.message ?? err).replace(`: ${path}`, "");
      const hint = code === 14 && path !== ":memory:" ? descriptorsHint(openErrno(path)) : "";
      throw new SqliteError(
        resultCodeName(code),
        `Cannot open database "${path}": ${detail}${hint}`,
        code,
        { cause: err },
      );
    }
    return new NodeDb(db, options.busyTimeout);
  }
}

/** One node:sqlite connection. */
class NodeDb implements Db {
  readonly #db: NodeDatabase;
  #user: Authorizer | null = null;
  #internal = false;
  /**
   * The error the authorizer last denied with: cleared as a statement is
   * prepared and as a call runs one ({@link running}), so that a failed
   * call finds the denial made while it ran ({@link failure}).
   */
  #denied: SqliteError | null = null;
  /** The busy timeout given to `open`, in ms (node:sqlite waits it on the main thread). */
  readonly #busyMs: number;
  /**
   * When the last call began running a statement ({@link running}), by
   * `Date.now()`: cheaper than `performance.now()` on every call, and a
   * millisecond is fine enough to tell a wait of the busy timeout.
   */
  #since = 0;
  /** Set by the authorizer while a statement is prepared. */
  #writes = false;
  /** Set by the authorizer when the statement calls a function whose answer varies (random()). */
  #varies = false;
  /** The last SQL text found free of NUL characters (a script is checked once, whole). */
  #checked: string | null = null;
  #counters: NodeStatement | null = null;
  /** Holds the read snapshot while {@link pin}ned (see there). */
  #pinStmt: NodeStatement | null = null;
  #pinIt: Iterator<unknown> | null = null;
  #pins = 0;

  constructor(db: NodeDatabase, busyMs: number) {
    this.#db = db;
    this.#busyMs = busyMs;
    db.setAuthorizer((action, a1, a2, dbName, trigger) => {
      if (!readsOnly(action, a1, a2)) this.#writes = true;
      if (action === Auth.FUNCTION && a2 !== null && VARYING_FUNCTIONS.has(a2.toLowerCase())) {
        this.#varies = true;
      }
      if (this.#user === null || this.#internal) return AuthResult.OK;
      try {
        const result = this.#user(action, a1, a2, dbName, trigger);
        if (typeof result === "number") return result;
        this.#denied = result;
        return AuthResult.DENY; // reported as `result` (see failure)
      } catch {
        return AuthResult.DENY;
      }
    });
  }

  get inTransaction(): boolean {
    return this.#live().isTransaction;
  }

  prepare(sql: string, from = 0): Stmt | null {
    // A script is checked once, whole, as the FFI implementation does.
    if (sql !== this.#checked) {
      if (sql.includes("\0")) {
        throw new SqliteError(
          ErrorCode.BadRequest,
          "Cannot prepare statement: SQL text contains a NUL character",
        );
      }
      this.#checked = sql;
    }
    // node:sqlite crashes running a statement prepared from text without one.
    if (!hasStatement(sql, from)) return null;
    this.#denied = null; // (a denial while preparing is the caller's to report)
    this.#writes = false;
    this.#varies = false;
    // node:sqlite takes the whole text it is given (converting all of it),
    // though it compiles only the first statement: each statement of a
    // script is given only up to its semicolon (further while SQLite finds
    // it incomplete, as a trigger's body), else a script of n statements
    // costs n times its length.
    let end = from;
    let st: NodeStatement | undefined;
    while (st === undefined) {
      end = nextSemicolon(sql, end);
      const text = from === 0 && end === sql.length ? sql : sql.slice(from, end);
      try {
        st = this.#live().prepare(text);
      } catch (err) {
        if (end < sql.length && isIncomplete(err)) continue;
        throw toSqliteError(err);
      }
    }
    const text = st.sourceSQL;
    st.setReturnArrays(true);
    // Values are passed under full names (`_params.ts` resolves bare keys).
    st.setAllowBareNamedParameters(false);
    const readOnly = !this.#writes && !writesByText(text);
    return new NodeStmt(this, st, text, from + text.length, readOnly, this.#varies);
  }

  /**
   * A call is about to run a statement: a denial made before is not its own,
   * and a `SQLITE_BUSY` it fails with is told apart by the time it took
   * ({@link failure}).
   */
  running(): void {
    this.#denied = null;
    this.#since = Date.now();
  }

  /**
   * `err`, thrown by node:sqlite as a statement ran (after {@link running}),
   * as a {@link SqliteError}: the error the authorizer denied with (see
   * {@link Authorizer}) when it denied while the statement ran (a statement
   * SQLite prepared again, or one a virtual table prepared itself), whatever
   * code the call failed with (FTS5's `'rebuild'` reports it as a bare
   * `SQL logic error`), but `SQLITE_INTERRUPT`; a plain `SQLITE_BUSY` says
   * whether node:sqlite waited the busy timeout for the lock, or failed at
   * once as SQLite does where waiting cannot help ({@link busyMessage}).
   */
  failure(err: unknown): SqliteError {
    const e = toSqliteError(err);
    const denied = this.#denied;
    this.#denied = null;
    const code = e.sqliteCode ?? 0;
    if (denied !== null && (code & 0xff) !== Result.INTERRUPT) return denied;
    if (code === Result.BUSY) {
      const elapsed = Date.now() - this.#since;
      const message = busyMessage(
        e.message,
        this.#busyMs,
        elapsed,
        this.#db.isOpen && this.#db.isTransaction,
      );
      return new SqliteError(e.code, message, code, { cause: err });
    }
    return e;
  }

  /**
   * Prepares a statement of the engine's own, out of the user's authorizer
   * (what it reads was authorized with the statement it stands in for).
   *
   * @throws {SqliteError}
   */
  prepareInternal(sql: string): NodeStatement {
    this.#internal = true;
    try {
      return this.#live().prepare(sql);
    } catch (err) {
      throw toSqliteError(err);
    } finally {
      this.#internal = false;
    }
  }

  /**
   * Keeps the connection's read snapshot until {@link unpin}: outside a
   * transaction SQLite ends the read when its last active statement is
   * reset, so a statement stepped once and left active keeps it. Called
   * before a statement's first step (which then reads in the same snapshot),
   * it lets the end of that statement's rows be confirmed on the same data.
   * Pins nest; inside a transaction the transaction holds the snapshot.
   *
   * @returns whether a pin was taken (to be given back with {@link unpin}).
   */
  pin(): boolean {
    if (this.#pins > 0) {
      this.#pins++;
      return true;
    }
    if (this.#live().isTransaction) return false;
    this.#internal = true; // a schema change re-prepares it
    try {
      // One row whatever the schema size (see Connection.pinSnapshot).
      const st = this.#pinStmt ??= this.#live().prepare(
        "SELECT (SELECT 1 FROM sqlite_schema LIMIT 1)",
      );
      const it = st.iterate();
      it.next();
      this.#pinIt = it;
    } catch (err) {
      throw toSqliteError(err);
    } finally {
      this.#internal = false;
    }
    this.#pins = 1;
    return true;
  }

  /** Gives back a pin taken by {@link pin}. Never throws. */
  unpin(): void {
    if (this.#pins === 0 || --this.#pins > 0) return;
    const it = this.#pinIt;
    this.#pinIt = null;
    try {
      it?.return?.();
    } catch {
      // resetting never fails
    }
  }

  exec(sql: string): void {
    for (let from = 0;;) {
      const st = this.prepare(sql, from);
      if (st === null) return;
      try {
        st.run();
      } finally {
        st.finalize();
      }
      from = st.end;
    }
  }

  changes(): number | bigint {
    return this.#count(0);
  }

  lastInsertRowid(): number | bigint {
    return this.#count(1);
  }

  setLastInsertRowid(_rowid: number | bigint): boolean {
    return false; // node:sqlite has no sqlite3_set_last_insert_rowid()
  }

  totalChanges(): number | bigint {
    return this.#count(2);
  }

  deferredViolations(): null {
    return null; // node:sqlite has no sqlite3_db_status()
  }

  setAuthorizer(callback: Authorizer | null): void {
    this.#user = callback;
  }

  interrupt(): void {}

  setBudget(_ms: number | null): void {}

  setLengthLimit(bytes: number): void {
    this.#db.limits.length = Math.min(bytes, 1_000_000_000);
  }

  /** Always true: node:sqlite steps nothing in the background. */
  get waitsInline(): boolean {
    return true;
  }

  set waitsInline(_on: boolean) {}

  /** Always false: node:sqlite waits for a lock on the main thread, where nothing else runs. */
  get waitingForLock(): boolean {
    return false;
  }

  onUpdate(_callback: ((change: RowChange) => void) | null): void {
    throw unsupported("report row changes (update hook)");
  }

  /** Always false: node:sqlite has no preupdate hook. */
  onRowidChange(_callback: ((change: RowidChange) => void) | null): boolean {
    return false;
  }

  /** Always false: node:sqlite has no preupdate hook. */
  onRowChanging(_table: string, _callback: ((row: RowChanging) => void) | null): boolean {
    return false;
  }

  checkpoint(mode: "passive" | "full" | "restart" | "truncate"): CheckpointResult {
    const row = this.#internalRows(`PRAGMA wal_checkpoint(${mode.toUpperCase()})`)[0];
    if (Number(row[0]) !== 0) {
      throw new SqliteError("SQLITE_BUSY", "database is locked", Result.BUSY);
    }
    return { walFrames: Number(row[1]), checkpointed: Number(row[2]) };
  }

  async backup(
    destPath: string,
    options: { pagesPerStep: number; onProgress?: (remaining: number, total: number) => void },
  ): Promise<void> {
    const backup = (nodeSqlite as unknown as { backup: NodeBackup }).backup;
    const onProgress = options.onProgress;
    try {
      const total = await backup(this.#live(), destPath, {
        rate: options.pagesPerStep,
        progress: onProgress === undefined
          ? undefined
          : (p) => onProgress(p.remainingPages, p.totalPages),
      });
      onProgress?.(0, total); // node:sqlite reports no progress after its last step
    } catch (err) {
      // (The caller names the destination: `destPath` may be a file of its own.)
      const e = toSqliteError(err);
      throw new SqliteError(e.code, e.message, e.sqliteCode, { cause: err });
    }
  }

  close(): void {
    if (this.#db.isOpen) this.#db.close();
  }

  #live(): NodeDatabase {
    if (!this.#db.isOpen) {
      throw new SqliteError("SQLITE_MISUSE", "Cannot use connection: it is closed", Result.MISUSE);
    }
    return this.#db;
  }

  #count(column: number): number | bigint {
    this.#internal = true; // (a schema change re-prepares it)
    try {
      if (this.#counters === null) {
        this.#counters = this.#live().prepare(
          "SELECT changes(), last_insert_rowid(), total_changes()",
        );
        this.#counters.setReturnArrays(true);
        this.#counters.setReadBigInts(true);
      }
      const row = this.#counters.all()[0] as bigint[];
      return exact(row[column]);
    } catch (err) {
      // Preparing it reads the schema: a damaged one fails here as SQLite's error.
      throw err instanceof SqliteError ? err : toSqliteError(err);
    } finally {
      this.#internal = false;
    }
  }

  #internalRows(sql: string): unknown[][] {
    this.#internal = true;
    try {
      const st = this.#live().prepare(sql);
      st.setReturnArrays(true);
      return st.all() as unknown[][];
    } catch (err) {
      throw toSqliteError(err);
    } finally {
      this.#internal = false;
    }
  }
}

/** One node:sqlite statement. */
class NodeStmt implements Stmt {
  readonly sql: string;
  readonly end: number;
  readonly readOnly: boolean;
  readonly #db: NodeDb;
  readonly #st: NodeStatement;
  /** True when the rows are stepped through `iterate()` (a query whose end can be confirmed). */
  readonly #iterable: boolean;
  #args: unknown[] = NO_ARGS;
  /** True when {@link #args} hold {@link LARGE_BOUND_BYTES} or more of text and BLOBs. */
  #large = false;
  #it: Iterator<unknown> | null = null;
  /** Rows the iterator gave so far. */
  #seen = 0;
  /** Whether the running iteration holds a pin of the connection. */
  #pinned = false;
  /** Whether the running iteration asked for one. */
  #pinTried = false;
  /** The rows of a statement not stepped through `iterate()`, read at its first step. */
  #buffer: SqlValue[][] | null = null;
  #next = 0;
  #row: SqlValue[] = [];
  #bigints = false;
  #names: (string | null)[] | null = null;
  /** How named-parameter objects bind (made at the first one). */
  #named: NamedParams | null = null;
  #finalized = false;
  /** Whether the statement writes and has result columns (known at its first run()). */
  #returnsRows: boolean | undefined;
  /** True when a run again may answer differently (it calls random(), the clock...). */
  readonly #varies: boolean;
  /**
   * Inside a transaction, the connection's total changes at the first step
   * (its own writes since change the answer of a second run); else null.
   */
  #changesAtFirst: number | bigint | null = null;

  constructor(
    db: NodeDb,
    st: NodeStatement,
    sql: string,
    end: number,
    readOnly: boolean,
    varies: boolean,
  ) {
    this.#db = db;
    this.#st = st;
    this.#varies = varies;
    this.sql = sql;
    this.end = end;
    this.readOnly = readOnly;
    this.#iterable = readOnly && isQueryText(sql);
  }

  get paramCount(): number {
    return this.#params().length;
  }

  /** node:sqlite cannot tell (see {@link Stmt.reprepares}). */
  readonly reprepares = 0;

  columnNames(): string[] {
    const cols = this.#live().columns();
    const names = new Array<string>(cols.length);
    for (let i = 0; i < cols.length; i++) names[i] = cols[i].name;
    return names;
  }

  bind(args: BindArgs): void {
    this.#live();
    this.reset();
    this.#large = boundBytes(Array.isArray(args) ? args : Object.values(args)) >= LARGE_BOUND_BYTES;
    if (Array.isArray(args)) {
      this.#args = this.#positional(args as readonly SqlValue[]);
      return;
    }
    const names = this.#params();
    let out: Record<string, unknown> | null = null;
    // node:sqlite binds a `?NNN` only positionally: each gets a positional
    // value (an index no parameter takes, NULL).
    let numbered: unknown[] | null = null;
    (this.#named ??= new NamedParams(names, this.sql)).bind(
      args as Readonly<Record<string, SqlValue>>,
      (index, value) => {
        const name = names[index - 1]!;
        if (name[0] !== "?") (out ??= {})[name] = toNode(value);
        else (numbered ??= new Array<unknown>(names.length).fill(null))[index - 1] = toNode(value);
      },
    );
    if (numbered === null) {
      this.#args = out === null ? NO_ARGS : [out];
      return;
    }
    const values: unknown[] = [out ?? {}];
    for (let i = 0; i < names.length; i++) {
      if (isPositional(names[i])) values.push((numbered as unknown[])[i]);
    }
    this.#args = values;
  }

  /**
   * Steps once. node:sqlite's `iterate()` ends the rows silently when SQLite
   * fails, so:
   * - a query (read-only SELECT, VALUES or WITH) is iterated, and when the
   *   iterator ends after `n` rows, the end is confirmed by running
   *   `SELECT * FROM (<sql>) LIMIT 1 OFFSET n` with the same values in the
   *   same snapshot (the connection is {@link NodeDb.pin}ned from the first
   *   step): SQLite's error, when it recurs, is thrown; a row means the
   *   iterator hid an error that did not recur (thrown as `SQLITE_ERROR`),
   *   unless the query calls a function whose answer varies (`random()`,
   *   the clock), where the end stands;
   * - any other statement (a write, which makes all its changes at its
   *   first step, a PRAGMA, EXPLAIN) reads all its rows at the first step,
   *   where node:sqlite reports errors.
   */
  step(): boolean {
    if (!this.#iterable) return this.#stepBuffered();
    const it = this.#it;
    if (it === null) return this.#first(false);
    if (!this.#pinTried) {
      // Past its first row the query is active and holds its snapshot: the
      // pin keeps it past the end, for #confirmEnd (a get() never gets here).
      this.#pinTried = true;
      this.#pinned = this.#db.pin();
    }
    const r = this.#advance(it);
    if (r.done) {
      this.#it = null;
      try {
        this.#failIfTxLost(this.#seen);
        this.#confirmEnd(this.#seen);
      } finally {
        this.#unpin();
      }
      return false;
    }
    return this.#take(r.value);
  }

  /** The first step of a query; `pinned` pins the connection first. */
  #first(pinned: boolean): boolean {
    const st = this.#live();
    this.#setBigInts(true);
    this.#pinTried = pinned;
    if (pinned) this.#pinned = this.#db.pin();
    let it: Iterator<unknown>;
    this.#db.running();
    try {
      it = this.#it = st.iterate(...this.#args);
    } catch (err) {
      this.#unpin();
      throw this.#db.failure(err);
    }
    this.#seen = 0;
    // Only a transaction's own writes can land between two steps of a query.
    this.#changesAtFirst = this.#db.inTransaction ? this.#db.totalChanges() : null;
    const r = this.#advance(it);
    if (!r.done) return this.#take(r.value);
    this.#it = null;
    try {
      this.#failIfTxLost(0);
    } catch (err) {
      this.#unpin();
      throw err;
    }
    if (pinned) {
      try {
        this.#confirmEnd(0);
      } finally {
        this.#unpin();
      }
      return false;
    }
    // Unpinned, the snapshot ended with the iterator: ask again with get(),
    // which throws SQLite's error. No row now is a true answer (no row was
    // given yet, so the later snapshot may answer).
    let row: unknown;
    this.#db.running();
    try {
      row = st.get(...this.#args);
    } catch (err) {
      throw this.#db.failure(err);
    }
    if (row === undefined) return false;
    // A row now: written since, or the iterator hid an error that did not
    // recur. Start over, pinned, so that the end is confirmed in one snapshot.
    return this.#first(true);
  }

  #advance(it: Iterator<unknown>): IteratorResult<unknown> {
    this.#db.running();
    try {
      return it.next();
    } catch (err) {
      this.reset();
      throw this.#db.failure(err);
    }
  }

  /**
   * Throws when the transaction the query began in has ended under it:
   * SQLite rolled it back as a step failed (a full device or an I/O error
   * while spilling the transaction's pages from a full cache, memory ran
   * out), an error the iterator hid. Checking the end again (get(),
   * {@link #confirmEnd}) would then read in autocommit, without the
   * transaction's writes, and take a truncated answer for a true one.
   */
  #failIfTxLost(n: number): void {
    if (this.#changesAtFirst === null || this.#db.inTransaction) return;
    throw new SqliteError(
      "SQLITE_ERROR",
      `Cannot read row ${n + 1}: SQLite failed (a full device, an I/O error, out of memory), ` +
        "and node:sqlite did not report the error",
      Result.ERROR,
    );
  }

  #take(value: unknown): true {
    this.#seen++;
    const row = value as SqlValue[];
    normalizeRow(row);
    this.#row = row;
    return true;
  }

  #stepBuffered(): boolean {
    const rows = this.#buffer ??= this.#allRows();
    if (this.#next === rows.length) {
      this.#buffer = null;
      this.#next = 0;
      return false;
    }
    this.#row = rows[this.#next++];
    return true;
  }

  /**
   * Throws unless the query has no row past its first `n` (see {@link step}).
   * Runs with the values of the iteration just ended, in its snapshot.
   */
  #confirmEnd(n: number): void {
    const body = statementBody(this.sql);
    let row: unknown;
    this.#db.running();
    try {
      // (Preparing it reads the schema, which may fail as the statement's steps did not.)
      const check = this.#db.prepareInternal(`SELECT * FROM (\n${body}\n) LIMIT 1 OFFSET ${n}`);
      check.setReadBigInts(true); // a value beyond 2^53 must not fail the check
      check.setAllowBareNamedParameters(false);
      row = check.get(...this.#args);
    } catch (err) {
      throw this.#db.failure(err);
    }
    // A row here: the iterator hid an error that did not recur, unless the
    // query may answer differently when run again (random(), the clock),
    // when a row proves nothing and the end stands, as the iterator said.
    // The connection's own writes since the first step (inside a transaction,
    // while a cursor reads) also make a second run answer differently.
    const wrote = this.#changesAtFirst !== null &&
      this.#db.totalChanges() !== this.#changesAtFirst;
    if (row !== undefined && !this.#varies && !wrote) {
      throw new SqliteError(
        "SQLITE_ERROR",
        `Cannot read row ${n + 1}: SQLite failed and node:sqlite did not report the error`,
        Result.ERROR,
      );
    }
  }

  #unpin(): void {
    this.#pinTried = false;
    if (!this.#pinned) return;
    this.#pinned = false;
    this.#db.unpin();
  }

  stepInBackground(): Promise<boolean> {
    throw unsupported("step a statement in the background");
  }

  row(): SqlValue[] {
    return this.#row;
  }

  all(maxBytes?: number): SqlValue[][] {
    let rows: SqlValue[][];
    if (this.#it !== null || this.#buffer !== null) {
      rows = [];
      while (this.step()) rows.push(this.#row);
    } else {
      rows = this.#allRows();
    }
    if (maxBytes !== undefined) {
      let bytes = 0;
      for (let i = 0; i < rows.length; i++) {
        bytes += rowBytes(rows[i]);
        if (bytes > maxBytes) throw resultTooLarge(maxBytes);
      }
    }
    return rows;
  }

  allInto(sink: RowSink, maxBytes: number): number {
    // node:sqlite builds every row in one call: they are written afterwards.
    const rows = this.all();
    const limit = sink.size + maxBytes;
    for (let r = 0; r < rows.length; r++) {
      const row = rows[r];
      sink.row(row.length);
      for (let i = 0; i < row.length; i++) {
        const v = row[i];
        if (v === null) sink.nil();
        else if (typeof v === "string") sink.text(v);
        else if (typeof v === "bigint") sink.integer(v);
        else if (typeof v === "number") {
          if (Number.isInteger(v) && !Object.is(v, -0)) sink.integer(v);
          else sink.real(v);
        } else sink.blob(v);
      }
      if (sink.size > limit) throw resultTooLarge(maxBytes);
    }
    return rows.length;
  }

  run(): RunInfo {
    const st = this.#live();
    this.reset();
    this.#setBigInts(true);
    this.#db.running();
    try {
      // node:sqlite's run() steps once and ignores the reset's error: a
      // statement with rows is stepped to its end, where SQLite reports an
      // error of a later row (a read's `integer overflow` on row 2, which
      // would pass as done, and a script go on) or of its end (a write with
      // RETURNING, whose rows SQLite made at its first step, failing its
      // autocommit COMMIT on a deferred foreign key, which rolls it back),
      // as FFI does. (all(): one call, where stepping row by row through the
      // iterator costs a check of its end: 4x slower on a script of reads.)
      this.#returnsRows ??= st.columns().length > 0;
      if (this.#returnsRows) {
        st.all(...this.#args);
        return { changes: this.#db.changes(), lastInsertRowid: this.#db.lastInsertRowid() };
      }
      const info = st.run(...this.#args);
      return { changes: exact(info.changes), lastInsertRowid: exact(info.lastInsertRowid) };
    } catch (err) {
      throw this.#db.failure(err);
    }
  }

  reset(): void {
    this.#buffer = null;
    this.#next = 0;
    const it = this.#it;
    if (it === null) return;
    this.#it = null;
    try {
      it.return?.();
    } catch {
      // resetting never fails
    }
    this.#unpin();
  }

  dropLargeValues(): void {
    if (!this.#large || this.#finalized || this.#it !== null) return;
    this.#large = false;
    this.#args = NO_ARGS;
    // node:sqlite has no clear_bindings; iterate() clears them and binds
    // none, and its iterator, returned unstepped, runs nothing.
    try {
      (this.#st.iterate() as Iterator<unknown>).return?.();
    } catch {
      // kept until the next run then
    }
  }

  finalize(): void {
    this.reset();
    this.#finalized = true;
  }

  #allRows(): SqlValue[][] {
    const st = this.#live();
    if (this.readOnly) {
      // Numbers first; a value beyond 2^53 throws, then run again reading
      // bigints (safe: the statement changes nothing).
      this.#setBigInts(false);
      this.#db.running();
      try {
        const rows = st.all(...this.#args) as SqlValue[][];
        // node:sqlite lets -2^63 through as a number instead of refusing it
        // like other integers beyond 2^53: read it exactly.
        if (!hasInt64Min(rows)) return rows;
      } catch (err) {
        if ((err as { code?: string }).code !== "ERR_OUT_OF_RANGE") throw this.#db.failure(err);
      }
    }
    this.#setBigInts(true);
    let rows: SqlValue[][];
    this.#db.running();
    try {
      rows = st.all(...this.#args) as SqlValue[][];
    } catch (err) {
      throw this.#db.failure(err);
    }
    for (let i = 0; i < rows.length; i++) normalizeRow(rows[i]);
    return rows;
  }

  #positional(values: readonly SqlValue[]): unknown[] {
    const names = this.#params();
    if (values.length > names.length) throw tooManyValues(values.length, names.length);
    if (values.length < names.length) throw missingValues(values.length, names.length);
    let named: Record<string, unknown> | null = null;
    const anonymous: unknown[] = [];
    for (let i = 0; i < values.length; i++) {
      const name = names[i];
      if (isPositional(name)) anonymous.push(toNode(values[i]));
      else (named ??= {})[name as string] = toNode(values[i]);
    }
    return named === null ? anonymous : [named, ...anonymous];
  }

  /** Parameter names by index ({@link parameterNames}). */
  #params(): (string | null)[] {
    return this.#names ??= parameterNames(this.sql);
  }

  #setBigInts(on: boolean): void {
    if (this.#bigints !== on) {
      this.#st.setReadBigInts(on);
      this.#bigints = on;
    }
  }

  #live(): NodeStatement {
    if (this.#finalized) {
      throw new SqliteError(
        "SQLITE_MISUSE",
        "Cannot use statement: it is finalized",
        Result.MISUSE,
      );
    }
    return this.#st;
  }
}

/** A bound value as node:sqlite needs it: integer numbers as bigint so they stay INTEGER. */
function toNode(v: SqlValue): unknown {
  return typeof v === "number" && Number.isSafeInteger(v) && !Object.is(v, -0) ? BigInt(v) : v;
}

/** Converts bigints within ±(2^53 − 1) to numbers, in place. */
function normalizeRow(row: SqlValue[]): void {
  for (let i = 0; i < row.length; i++) {
    const v = row[i];
    if (typeof v === "bigint" && v <= MAX_SAFE && v >= -MAX_SAFE) row[i] = Number(v);
  }
}

/** Pragmas that make `sqlite3_stmt_readonly()` false whatever their argument. */
const WRITING_PRAGMAS = new Set(["journal_mode", "wal_checkpoint", "incremental_vacuum"]);
/** Pragmas that make it false when given a value. */
const SETTING_PRAGMAS = new Set(["user_version", "application_id", "schema_version"]);

/**
 * True when an authorizer action leaves `sqlite3_stmt_readonly()` true:
 * reads, transaction control, ATTACH/DETACH and most pragmas.
 */
/**
 * Functions whose answer may differ between two runs of one statement in
 * one snapshot: `random()`, the clock (date and time functions default to
 * 'now'), and the connection's counters.
 */
const VARYING_FUNCTIONS: ReadonlySet<string> = new Set([
  "random",
  "randomblob",
  "date",
  "time",
  "datetime",
  "julianday",
  "unixepoch",
  "strftime",
  "timediff",
  "current_date",
  "current_time",
  "current_timestamp",
  "changes",
  "total_changes",
  "last_insert_rowid",
]);

function readsOnly(action: number, a1: string | null, a2: string | null): boolean {
  switch (action) {
    case Auth.READ:
    case Auth.SELECT:
    case Auth.RECURSIVE:
    case Auth.FUNCTION:
    case Auth.TRANSACTION:
    case Auth.SAVEPOINT:
    case Auth.ATTACH:
    case Auth.DETACH:
      return true;
    case Auth.PRAGMA: {
      const name = (a1 ?? "").toLowerCase();
      return !WRITING_PRAGMAS.has(name) && !(a2 !== null && SETTING_PRAGMAS.has(name));
    }
    default:
      return false;
  }
}

/**
 * The first two words of `sql`'s first statement (lower case; `""` where
 * none), past blanks, comments and, when `skipSemicolons`, leading `;`s: a
 * linear scan with the project's lexer (a regular expression over leading
 * comments can backtrack for exponential time).
 */
function leadingWords(sql: string, skipSemicolons: boolean): [string, string] {
  const words: string[] = [];
  scan(sql, (t) => {
    if (t.kind === "semicolon" && words.length === 0 && skipSemicolons) return true;
    words.push(t.kind === "word" ? t.text : "");
    return words.length < 2;
  });
  return [words[0] ?? "", words[1] ?? ""];
}

/** A query whose rows can be counted from a subquery: SELECT, VALUES, WITH. */
function isQueryText(sql: string): boolean {
  const [first] = leadingWords(sql, false);
  return first === "select" || first === "values" || first === "with";
}
/** Statements the authorizer does not see as writes: VACUUM, BEGIN IMMEDIATE/EXCLUSIVE. */
function writesByText(sql: string): boolean {
  const [first, second] = leadingWords(sql, true);
  return first === "vacuum" ||
    (first === "begin" && (second === "immediate" || second === "exclusive"));
}

/** True for a parameter node:sqlite binds by position: `?`, `?NNN`, an index no parameter takes. */
function isPositional(name: string | null): boolean {
  return name === null || name[0] === "?";
}

function unsupported(what: string): SqliteError {
  return new SqliteError(
    ErrorCode.Internal,
    `Cannot ${what}: the node:sqlite engine cannot; use the FFI engine (--engine ffi)`,
  );
}

/**
 * SQLite's text for a primary result code (`sqlite3_errstr()`), back to the
 * code: for the node:sqlite errors that carry the text but no `errcode`.
 */
const CODE_OF_MESSAGE: ReadonlyMap<string, number> = new Map([
  ["access permission denied", 3],
  ["query aborted", 4],
  ["database is locked", 5],
  ["database table is locked", 6],
  ["out of memory", 7],
  ["attempt to write a readonly database", 8],
  ["interrupted", 9],
  ["disk I/O error", 10],
  ["database disk image is malformed", 11],
  ["database or disk is full", 13],
  ["unable to open database file", 14],
  ["file is not a database", 26],
]);

/** Maps an error thrown by node:sqlite to a {@link SqliteError} with SQLite's extended code. */
export function toSqliteError(err: unknown): SqliteError {
  if (err instanceof SqliteError) return err;
  const e = err as { errcode?: number; code?: string; message?: string };
  const message = e?.message ?? String(err);
  if (typeof e?.errcode === "number") {
    return new SqliteError(
      resultCodeName(e.errcode),
      sqliteMessage(e.errcode, message),
      e.errcode,
      { cause: err },
    );
  }
  if (e?.code === "ERR_SQLITE_ERROR") {
    // Some calls (backup()) give no code, only SQLite's own text for it.
    const code = CODE_OF_MESSAGE.get(message) ?? Result.ERROR;
    return new SqliteError(resultCodeName(code), message, code, { cause: err });
  }
  if (e?.code === "ERR_INVALID_STATE" && /finalized|not open/.test(message)) {
    return new SqliteError("SQLITE_MISUSE", message, Result.MISUSE, { cause: err });
  }
  if (e?.code === "ERR_INVALID_ARG_TYPE" || e?.code === "ERR_INVALID_STATE") {
    return new SqliteError(ErrorCode.InvalidParam, message, undefined, { cause: err });
  }
  return new SqliteError(ErrorCode.Internal, message, undefined, { cause: err });
}

const INT64_MIN_AS_NUMBER = -(2 ** 63);

function hasInt64Min(rows: SqlValue[][]): boolean {
  for (let r = 0; r < rows.length; r++) {
    const row = rows[r];
    for (let i = 0; i < row.length; i++) if (row[i] === INT64_MIN_AS_NUMBER) return true;
  }
  return false;
}

/**
 * Offset just past the first semicolon of `sql` from `from` on (outside
 * strings, names and comments) that follows something other than
 * semicolons, or its length: the text node:sqlite is given must hold a
 * statement (it crashes on text without one).
 */
function nextSemicolon(sql: string, from: number): number {
  let end = sql.length;
  let seen = false;
  scan(sql, (t) => {
    if (t.kind !== "semicolon") {
      seen = true;
      return true;
    }
    if (!seen) return true;
    end = t.end;
    return false;
  }, from);
  return end;
}

/** True for SQLite's "incomplete input": the text ends inside a statement. */
function isIncomplete(err: unknown): boolean {
  return /incomplete input/.test(String((err as Error)?.message));
}

/** Bytes of text (UTF-16 code units) and BLOBs among `values`. */
function boundBytes(values: readonly unknown[]): number {
  let n = 0;
  for (const v of values) {
    if (typeof v === "string" || v instanceof Uint8Array) n += v.length;
  }
  return n;
}
