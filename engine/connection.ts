/**
 * One SQLite connection with a statement cache. Every statement is classified
 * when prepared (via SQLite's authorizer): does it only read, does it control
 * a transaction, can it change the schema. Works on any binding
 * (`engine/binding/`).
 *
 * @module
 */

import { ErrorCode, SqliteError } from "../protocol/errors.ts";
import { Auth, AuthResult } from "./binding/_constants.ts";
import {
  type Capabilities,
  type Db,
  rowsNow,
  type Sqlite,
  type SqlValue,
  type Stmt,
} from "./binding/binding.ts";
import {
  CONNECTION_PRAGMAS,
  type PolicyCheck,
  type Refusal,
  samePragmaValue,
  VACUUM_ACTION,
} from "./policy.ts";
import { pragmaUse } from "./pragma_use.ts";
import { foldCase, startsWith, statementTokens } from "./_sql_text.ts";
import { scan, type Token } from "../protocol/sql_lexer.ts";

/** Transaction control done by a statement, as SQLite's authorizer names it. */
export type TxOp = "BEGIN" | "COMMIT" | "ROLLBACK" | "SAVEPOINT" | "RELEASE" | "ROLLBACK TO";

/** A statement prepared on one connection, with what it does. */
export interface Prepared {
  /** The statement. */
  readonly stmt: Stmt;
  /** The connection it belongs to. */
  readonly conn: Connection;
  /** True when prepared on the writer connection. */
  readonly onWriter: boolean;
  /** True when the statement only reads (may run on a read-only connection). */
  readonly readOnly: boolean;
  /** Transaction control done by the statement, or `null`. */
  readonly txOp: TxOp | null;
  /**
   * True for `EXPLAIN` and `EXPLAIN QUERY PLAN`: it returns the plan and
   * runs nothing, though SQLite reports `EXPLAIN INSERT ...` as no read-only
   * statement (`sqlite3_stmt_readonly` answers for the statement explained).
   */
  readonly explain: boolean;
  /**
   * The savepoint a `SAVEPOINT`, `RELEASE` or `ROLLBACK TO` names, as SQLite
   * read it (unquoted, comments skipped), or `null`.
   */
  readonly savepoint: string | null;
  /** True for recursive queries, which may run without bound. */
  readonly recursive: boolean;
  /**
   * True when the statement creates or drops TEMP objects, or attaches or
   * detaches a database: what the writer alone has, which the engine then
   * reads again.
   */
  readonly touchesTemp: boolean;
  /**
   * True when it reads a PRAGMA that a read connection answers as the writer
   * would (see `pragma_use.ts`), plainly or table-valued: while databases are
   * attached to the writer alone, the writer answers it.
   */
  readonly readsPragma: boolean;
  /**
   * True when it only reads, but what only the writer's connection answers:
   * a PRAGMA of the connection's own (`foreign_keys`, `cache_size`),
   * `last_insert_rowid()`, `changes()`. It runs on the writer, yet is no write.
   */
  readonly readsWriterState: boolean;
  /** True when it inserts, updates or deletes rows (so `changes` is its own). */
  readonly changesRows: boolean;
  /**
   * When it sets a PRAGMA of {@link REPLAYED_PRAGMAS} (a setting of the
   * connection that changes what reads answer, `case_sensitive_like`): the
   * assignment, as a statement every other connection of the engine runs
   * once it has run on the writer (see `engine.ts`); else `null`.
   */
  readonly setsPragma: string | null;
  /** True when it inserts rows itself, not only its triggers (so `lastInsertRowid` may be its own). */
  readonly inserts: boolean;
  /**
   * The tables it inserts into itself, `[schema, table]`; whether one has
   * rowids (not WITHOUT ROWID) is looked up once needed, see
   * {@link Connection.setsRowid}.
   */
  readonly insertTargets: readonly (readonly [string, string])[];
  /**
   * The tables it deletes from itself (not its triggers), `[schema, table]`:
   * a `DELETE` without WHERE empties its table without calling the update
   * hook (see `change_log.ts`).
   */
  readonly deleteTargets: readonly (readonly [string, string])[];
  /** Cached answer of {@link Connection.setsRowid}. */
  setsRowid?: boolean;
  /**
   * True when its SQL text mentions `rollback` anywhere (`OR ROLLBACK`,
   * `RAISE(ROLLBACK, ...)`, or merely a name): such a write never joins a
   * group commit (see `engine.ts`). Set once looked at.
   */
  mentionsRollback?: boolean;
  /**
   * The columns it or its triggers update in tables of the main database,
   * `[table, column]` (a rowid named `rowid`, `oid` or `_rowid_` comes as
   * `ROWID`): when one is the table's rowid or its INTEGER PRIMARY KEY, the
   * statement may move rows to another rowid, which SQLite's update hook
   * reports as an update of the new rowid alone (see `change_log.ts`).
   */
  readonly updatedColumns: readonly (readonly [string, string])[];
  /**
   * The tables of the main database it or its triggers insert into, update
   * or delete from, as named (each once): the change log watches key-value
   * rows through writes to `netsqlite_kv`.
   */
  readonly writtenTables: readonly string[];
  /**
   * The tables whose rows it may move to another rowid: the change log's
   * reading of {@link updatedColumns} against the schema, once it ran.
   */
  movesRowids?: readonly string[];
  /**
   * True when the statement itself, not only its triggers, may update rows:
   * an upsert (`ON CONFLICT ... DO UPDATE`). An insert whose triggers update
   * other rows is no upsert: its `changes()` are its own inserted rows.
   */
  readonly updatesItself: boolean;
  /**
   * A refusal the policy lifted for the connection's state when prepared
   * (a PRAGMA set to the value it has, `defer_foreign_keys` inside a
   * transaction): checked again whenever the statement comes from the cache.
   */
  readonly guard?: Refusal;
  /**
   * True for a statement that may both insert and update (an upsert) and
   * does not call `last_insert_rowid()` (as the authorizer saw it: not words
   * in a comment, a string or a column name): `run.ts` zeroes the connection's
   * last rowid before it, to tell an insert from an update after.
   */
  readonly zeroesRowid: boolean;
  /**
   * True when running it may change the schema this connection sees: DDL,
   * PRAGMA, VACUUM, REINDEX, and rollbacks (which undo DDL).
   */
  readonly changesSchema: boolean;
  /**
   * Result column names as read when prepared; {@link columnsOf} reads them
   * again when SQLite prepared the statement again since.
   */
  columns: string[];
  /** `stmt.reprepares` when {@link columns} were read. */
  reprepares: number;
  /**
   * True once a run of this statement finished within the inline budget:
   * the engine then runs it on the main thread (see `engine.ts`).
   */
  fast: boolean;
  /**
   * True once an inline run went far past its budget (one long SQL function
   * call, which the progress handler cannot stop): reads run in the
   * background from then on (see `engine_session.ts`).
   */
  unstoppable: boolean;
  /** Runs in progress; a statement evicted while busy is finalized when they end. */
  busy: number;
  /** True once dropped from the cache. */
  evicted: boolean;
}

/** Options for {@link Connection}. */
export interface ConnectionOptions {
  /** Open read-only (a reader) rather than read-write (the writer). */
  readOnly: boolean;
  /** SQLite busy timeout for locks held by other processes, in ms. */
  timeout: number;
  /** Statements kept prepared. */
  cacheSize: number;
  /**
   * SQL text the cached statements may hold together, in UTF-16 code units
   * (SQLite keeps a copy of each), each parameter slot counting 32 (its
   * memory in SQLite); a longer statement is cached alone.
   * @default {MAX_CACHED_SQL}
   */
  cacheText?: number;
  /** Runs as the writer even when opened read-only (a `--readonly` server). @default {!readOnly} */
  writer?: boolean;
  /** What client statements may do (see `policy.ts`); `null` permits everything. */
  policy?: PolicyCheck | null;
  /** Largest string or BLOB SQLite may build (see `Db.setLengthLimit`). */
  maxValueBytes?: number;
  /**
   * Asked when a client's statement fails to prepare: true when the schema
   * the connection holds may be older than the database's (another program
   * committed since the connection last read the schema cookie, as inside a
   * transaction that has read nothing yet). The connection then reads the
   * cookie and, when the schema moved, prepares the statement once more.
   * @default {null} (never)
   */
  schemaMayHaveMoved?: (() => boolean) | null;
}

/**
 * SQL text one connection's statement cache holds, unless configured: 256
 * statements of a megabyte each would otherwise hold half a gigabyte (the
 * text in the cache's keys, and SQLite's copy) on every connection.
 */
export const MAX_CACHED_SQL = 8 * 1024 * 1024;

/**
 * What one parameter slot of a cached statement counts against
 * {@link ConnectionOptions.cacheText}, in code units: SQLite gives a statement
 * a 56-byte cell per parameter up to the highest number it names, so
 * `SELECT ?30000 + 1`, 17 characters, holds 1.7 MB (a unit of text costs
 * about 3 bytes: the cache's key and SQLite's copy). Without it 256 such
 * statements, from one client, held 450 MB per connection (3.4 GB with
 * Debian's library, which takes ?250000).
 */
const PARAM_SLOT_COST = 32;

/** A connection plus a statement cache and classification. */
export class Connection {
  /** The underlying connection. */
  readonly db: Db;
  /** What the binding can do (interrupt, background steps, ...). */
  readonly caps: Capabilities;
  readonly #isWriter: boolean;
  readonly #cacheSize: number;
  readonly #cache = new Map<string, Prepared>();
  readonly #cacheText: number;
  /** SQL text of the cached statements, plus their parameter slots ({@link PARAM_SLOT_COST}). */
  #cachedText = 0;
  /** What each cached statement counts in {@link #cachedText}. */
  readonly #cost = new WeakMap<Prepared, number>();
  #classifying = false;
  #sawRead = false;
  #sawWrite = false;
  #sawSchema = false;
  #sawRecursive = false;
  #sawTemp = false;
  #sawDml = false;
  /** A PRAGMA read any connection answers (plain or table-valued). */
  #sawPragmaRead = false;
  /** A plain `PRAGMA name` read any connection answers (SQLite may call it no read-only statement). */
  #plainPragmaRead = false;
  /** A read of what only the writer's connection answers (see {@link Prepared.readsWriterState}). */
  #sawWriterState = false;
  /** A write other than such a read. */
  #sawOtherWrite = false;
  /** Names after `pragma_` of the tables the statement reads (eponymous PRAGMA tables, maybe). */
  #pragmaTables: string[] = [];
  /**
   * An update of the schema table before any DDL, `[table, column, schema]`:
   * SQLite 3.40 reports one when a virtual table is first declared on a
   * connection (`json_each`, `pragma_table_info`), in a read. Judged after
   * the prepare: only a statement that writes does it.
   */
  #schemaUpdate: [string | null, string | null, string | null] | null = null;
  /** The names of the PRAGMAs SQLite knows (`PRAGMA pragma_list`), once read. */
  #pragmaNames: Set<string> | null = null;
  /** Names of the TEMP tables and views the statement creates. */
  #tempNames: string[] = [];
  /** Names of the tables and views the statement creates outside the temp schema. */
  #mainNames: string[] = [];
  /** The table an `ALTER TABLE` names: `[schema, table]`, or null. */
  #altered: [string, string] | null = null;
  /**
   * Names of the tables and views of the temp schema, and of the other
   * schemas (lower case), read when a statement creating a virtual table was
   * last prepared: what the shadow tables its module creates as it runs must
   * not be named (see the constructor). Dropped with the cache.
   */
  #namesInTemp: Set<string> | null = null;
  #namesOutsideTemp: Set<string> | null = null;
  /**
   * The TEMP tables and views of this connection (the writer's), by name
   * in ASCII lower case (as SQLite compares names), with their type; null
   * while there are none (see {@link setTempObjects}).
   */
  #tempObjects: Map<string, string> | null = null;
  /**
   * The names a TEMP table or view shares with a table or view of another
   * schema (ASCII lower case), with that schema: made by another program,
   * or attached, behind the checks of {@link #shadows}. A statement that
   * would use such a TEMP object by its bare name is refused (see the
   * constructor). Null when there are none.
   */
  #clashes: Map<string, string> | null = null;
  /** True when {@link #clashes} must be read again before the next prepare. */
  #clashesStale = false;
  /** The SQL text being prepared, and where its statement starts. */
  #preparing = "";
  #preparingFrom = 0;
  /** The tokens of the statement being prepared, once read (see {@link #namedIn}). */
  #preparingTokens: Token[] | null = null;
  /** Name of the trigger the statement creates, or null. */
  #createsTrigger: string | null = null;
  /** Name of the virtual table the statement creates, or null. */
  #createsVtable: string | null = null;
  /** Tables the statement itself inserts into (not its triggers): `[schema, table]`. */
  #insertTargets: [string, string][] = [];
  /** Tables the statement itself deletes from (not its triggers): `[schema, table]`. */
  #deleteTargets: [string, string][] = [];
  /** Columns the statement or its triggers update in the main database: `[table, column]`. */
  #updatedColumns: [string, string][] = [];
  /** Tables of the main database the statement or its triggers insert into, update or delete from. */
  #writtenTables: string[] = [];
  /** Whether a table has rowids (not WITHOUT ROWID), by `schema.table`; cleared with the cache. */
  readonly #hasRowid = new Map<string, boolean>();
  /** The statement itself (not a trigger of it) updates or deletes rows. */
  #sawOwnUpdate = false;
  /** The statement, a trigger or a view it runs calls `last_insert_rowid()`. */
  #readsLastRowid = false;
  #txOp: TxOp | null = null;
  /** The savepoint the statement names (see {@link Prepared.savepoint}). */
  #savepoint: string | null = null;
  /** `schema_version` when the cache was last known valid. */
  #schemaVersion = -1;
  readonly #policy: PolicyCheck | null;
  /** See {@link ConnectionOptions.schemaMayHaveMoved}. */
  readonly #schemaMayHaveMoved: (() => boolean) | null;
  /** The policy's first refusal while preparing the current statement. */
  #refusal: Refusal | null = null;
  /**
   * The policy's refusal with a condition (`Refusal.unless`) that did not
   * hold while preparing: decided after the prepare failed, see {@link prepareOne}.
   */
  #conditional: Refusal | null = null;
  /** A conditional refusal found to hold, while the statement is prepared again. */
  #lifted: Refusal | null = null;
  /** The conditional refusal lifted for the current statement (its `Prepared.guard`). */
  #guard: Refusal | null = null;
  /** True while the engine prepares its own statements, which the policy does not judge. */
  #trusted = false;
  /** See {@link Prepared.setsPragma}. */
  #setsPragma: string | null = null;
  /** The statement that holds a read snapshot while {@link pinSnapshot}ted (kept for reuse). */
  #pinStmt: Stmt | null = null;
  /** True while {@link pinSnapshot} holds a snapshot. */
  #pinned = false;

  /**
   * @param sqlite The SQLite binding.
   * @param path Database file.
   * @param options Read-only or writer, busy timeout, cache size.
   */
  constructor(sqlite: Sqlite, path: string, options: ConnectionOptions) {
    this.db = sqlite.open(path, { readOnly: options.readOnly, busyTimeout: options.timeout });
    if (options.maxValueBytes !== undefined) this.db.setLengthLimit(options.maxValueBytes);
    this.caps = sqlite.capabilities;
    this.#isWriter = options.writer ?? !options.readOnly;
    this.#cacheSize = options.cacheSize;
    this.#cacheText = options.cacheText ?? MAX_CACHED_SQL;
    this.#policy = options.policy ?? null;
    this.#schemaMayHaveMoved = options.schemaMayHaveMoved ?? null;
    this.db.setAuthorizer((action, arg1, arg2, dbName, trigger) => {
      // A trigger's `DELETE FROM t` without WHERE would empty t without
      // calling the update hook, and uncounted by changes(): IGNORE makes
      // SQLite delete its rows one by one (the DELETE still runs), so that
      // change feeds see them. (Also when SQLite prepares a statement again.)
      const ok = action === Auth.DELETE && trigger !== null && this.#isWriter
        ? AuthResult.IGNORE
        : AuthResult.OK;
      // (Only while preparing: a statement prepared since the clash is known
      // names it qualified, and SQLite preparing it again keeps that.)
      const clash = this.#clashes === null || !this.#classifying
        ? null
        : this.#clash(action, arg1, arg2, dbName, trigger);
      if (clash !== null) {
        this.#refusal ??= clash;
        return AuthResult.DENY;
      }
      if (!this.#classifying) {
        // SQLite asks while statements run too: it prepares one again after
        // a schema change, and a virtual table prepares its own (an FTS
        // table reads its content table, which may be sqlite_stmt or a view
        // of it). Reads and function calls are judged then as when prepared;
        // ATTACH too, as VACUUM INTO attaches its target only then. (Plain
        // VACUUM attaches a nameless temporary database: not a file.)
        if (isCreate(action) && arg1 !== null && !this.#trusted && this.#policy !== null) {
          // A virtual table's module creates its shadow tables as it runs
          // (`app_config` of an FTS5 table `app`): judged by their real
          // names against the names read when its statement was prepared.
          const inTemp = dbName === "temp" || action === Auth.CREATE_TEMP_TABLE ||
            action === Auth.CREATE_TEMP_VIEW;
          const other = inTemp ? this.#namesOutsideTemp : this.#namesInTemp;
          if (other?.has(arg1.toLowerCase())) {
            return new SqliteError(ErrorCode.Forbidden, shadowMessage(arg1));
          }
          return ok;
        }
        if (
          action !== Auth.READ && action !== Auth.FUNCTION && (action !== Auth.ATTACH || !arg1)
        ) {
          return ok;
        }
        // (With the FFI binding this may run for a background step: the
        // policy only compares names, and nothing here uses the connection.)
        const refusal = this.#trusted
          ? null
          : this.#policy?.(action, arg1, arg2, dbName, trigger) ?? null;
        return refusal === null ? ok : new SqliteError(refusal.code, refusal.message);
      }
      if (
        this.#classifying && action === Auth.UPDATE && trigger === null && isSchemaTable(arg1) &&
        !this.#sawSchema
      ) {
        // Maybe SQLite declaring a virtual table (see #schemaUpdate): judged after the prepare.
        this.#schemaUpdate ??= [arg1, arg2, dbName];
        return ok;
      }
      const refusal = this.#trusted
        ? null
        : this.#policy?.(action, arg1, arg2, dbName, trigger) ?? null;
      if (refusal?.unless !== undefined && this.#classifying) {
        // SQLite applies many PRAGMAs while it prepares them: deny until the
        // condition is known to hold (prepareOne reads the value, then
        // prepares again with the refusal lifted).
        if (this.#lifted !== null || this.#inOwnTransaction(refusal)) {
          this.#guard ??= refusal;
        } else {
          this.#conditional ??= refusal;
          return AuthResult.DENY;
        }
      } else if (refusal !== null) {
        this.#refusal ??= refusal;
        return AuthResult.DENY;
      }
      if (this.#classifying) this.#classify(action, arg1, arg2, dbName, trigger);
      return ok;
    });
  }

  /** True while a transaction is open on this connection. */
  get inTransaction(): boolean {
    return this.db.inTransaction;
  }

  /**
   * Returns the cached statement for `sql`, preparing it on a miss.
   *
   * @throws {SqliteError} SQLite's error, `BAD_REQUEST` for empty SQL or
   *   SQL holding several statements.
   */
  prepare(sql: string): Prepared {
    const hit = this.#cache.get(sql);
    if (hit !== undefined) {
      if (hit.guard !== undefined && !this.#trusted && !this.#permits(hit.guard)) {
        throw new SqliteError(hit.guard.code, hit.guard.message);
      }
      return hit;
    }
    const prepared = this.prepareUncached(sql);
    const cost = sql.length + prepared.stmt.paramCount * PARAM_SLOT_COST;
    while (
      this.#cache.size > 0 &&
      (this.#cache.size >= this.#cacheSize || this.#cachedText + cost > this.#cacheText)
    ) {
      const [oldest, p] = this.#cache.entries().next().value!;
      this.#cache.delete(oldest);
      this.#cachedText -= this.#cost.get(p) ?? oldest.length;
      evict(p);
    }
    this.#cache.set(sql, prepared);
    this.#cost.set(prepared, cost);
    this.#cachedText += cost;
    return prepared;
  }

  /**
   * Runs one statement of the server's own without parameters or rows
   * (`BEGIN IMMEDIATE`, `COMMIT`, `SAVEPOINT`…) through the statement
   * cache, so that it is parsed once rather than on every call.
   *
   * @throws {SqliteError} SQLite's error.
   */
  runOwn(sql: string): void {
    const p = this.prepare(sql);
    p.busy++;
    try {
      p.stmt.bind(NO_ARGS);
      p.stmt.run();
    } finally {
      release(p);
    }
  }

  /**
   * Statements cached, and their SQL text in UTF-16 code units (plus
   * {@link PARAM_SLOT_COST} per parameter slot).
   */
  get cached(): { statements: number; text: number } {
    return { statements: this.#cache.size, text: this.#cachedText };
  }

  /** The cached statement for `sql`, if any (nothing is prepared). */
  peek(sql: string): Prepared | undefined {
    return this.#cache.get(sql);
  }

  /**
   * Prepares exactly one statement, bypassing the cache (for a statement that
   * stays busy, like a cursor's); the caller finalizes it.
   *
   * @throws {SqliteError} as {@link prepare}.
   */
  prepareUncached(sql: string): Prepared {
    const prepared = this.prepareOne(sql, 0);
    if (prepared === null) {
      throw new SqliteError(
        ErrorCode.BadRequest,
        "Cannot prepare statement: SQL text holds no statement (it is empty, or only whitespace, " +
          "comments and semicolons)",
      );
    }
    if (prepared.stmt.end < sql.length && this.#hasMore(sql, prepared.stmt.end)) {
      prepared.stmt.finalize();
      throw new SqliteError(
        ErrorCode.BadRequest,
        "Cannot prepare statement: SQL holds more than one statement; use exec() for scripts",
      );
    }
    return prepared;
  }

  /**
   * Prepares the first statement of `sql` at or after index `from`, without
   * caching it; `null` when no statement is left. The caller continues at
   * `stmt.end` and finalizes the statement.
   */
  prepareOne(sql: string, from: number): Prepared | null {
    // (Its own statements go through here too: the engine's are trusted.)
    if (this.#clashesStale && !this.#trusted) this.#findClashes();
    this.#preparing = sql;
    this.#preparingFrom = from;
    this.#preparingTokens = null;
    this.#classifying = true;
    this.#sawRead = false;
    this.#sawWrite = false;
    this.#sawSchema = false;
    this.#sawRecursive = false;
    this.#sawTemp = false;
    this.#sawDml = false;
    this.#sawPragmaRead = false;
    this.#plainPragmaRead = false;
    this.#sawWriterState = false;
    this.#setsPragma = null;
    this.#sawOtherWrite = false;
    this.#pragmaTables = [];
    this.#schemaUpdate = null;
    this.#insertTargets = [];
    this.#deleteTargets = [];
    this.#updatedColumns = [];
    this.#writtenTables = [];
    this.#tempNames = [];
    this.#mainNames = [];
    this.#altered = null;
    this.#createsTrigger = null;
    this.#createsVtable = null;
    this.#sawOwnUpdate = false;
    this.#readsLastRowid = false;
    this.#txOp = null;
    this.#savepoint = null;
    this.#refusal = null;
    this.#conditional = null;
    this.#guard = null;
    let stmt: Stmt | null = null;
    let failed = false;
    let failure: unknown;
    try {
      stmt = this.db.prepare(sql, from);
    } catch (err) {
      failed = true;
      failure = err;
    } finally {
      this.#classifying = false;
    }
    if (failed) {
      const refusal = this.#refusal as Refusal | null;
      if (refusal !== null) throw new SqliteError(refusal.code, refusal.message);
      const pending = this.#conditional as Refusal | null;
      if (pending === null) {
        // Prepared against a schema another program has changed since
        // (SQLite compiles with the schema it holds and reads the cookie only
        // as a statement starts): `INSERT INTO t VALUES (...)` for the new
        // column count fails ("table t has 3 columns but 2 values were
        // supplied"). Prepared again once that schema is loaded.
        if (this.#schemaMoved()) return this.prepareOne(sql, from);
        throw failure;
      }
      // Only the writer runs a PRAGMA set, and only its value counts.
      if (!this.#isWriter) throw new WriterDecides(pending);
      if (this.#lifted !== null || !this.#permits(pending)) {
        throw new SqliteError(pending.code, pending.message);
      }
      // It sets the value the connection has: prepare it again, permitted.
      this.#lifted = pending;
      try {
        return this.prepareOne(sql, from);
      } finally {
        this.#lifted = null;
      }
    }
    if (stmt === null) return null;
    const schemaUpdate = this.#schemaUpdate as [string, string | null, string | null] | null;
    if (schemaUpdate !== null && !stmt.readOnly) {
      // A real update of the schema table (writable_schema): judged as any write.
      const refusal = this.#trusted
        ? null
        : this.#policy?.(Auth.UPDATE, ...schemaUpdate, null) ?? null;
      if (refusal !== null) {
        stmt.finalize();
        throw new SqliteError(refusal.code, refusal.message);
      }
      this.#sawWrite = true;
      this.#sawOtherWrite = true;
      this.#sawSchema = true;
      if (schemaUpdate[2] === "temp") this.#sawTemp = true;
    }
    // SQLite's authorizer reports nothing for VACUUM, and VACUUM INTO
    // attaches its target only when it runs: judge them now, clearly.
    const vacuum = this.#policy !== null && !this.#trusted ? vacuumOf(stmt.sql) : null;
    const refusal = vacuum &&
      this.#policy?.(VACUUM_ACTION, vacuum.target, vacuum.into ? "INTO" : null, null, null);
    if (refusal) {
      stmt.finalize();
      throw new SqliteError(refusal.code, refusal.message);
    }
    let sawWrite = this.#sawWrite;
    let readsPragma = this.#sawPragmaRead;
    let readsWriterState = this.#sawWriterState;
    let otherWrite = this.#sawOtherWrite;
    const plainPragmaRead = this.#plainPragmaRead;
    for (const name of this.#pragmaTables) {
      // A table-valued PRAGMA follows the plain one's rule (not a table of that name).
      if (!this.#pragmaNamed(name)) continue;
      const use = pragmaUse(name, null);
      if (use === "reader") readsPragma = true;
      else sawWrite = true;
      if (use === "writer") readsWriterState = true;
      if (use === "write") otherWrite = true;
    }
    // A statement that reports neither a read nor a write to the authorizer
    // (VACUUM, REINDEX) still writes: only proven reads go to a reader. (SQLite
    // calls `PRAGMA journal_mode` no read-only statement: read, it changes nothing.)
    const readOnly = this.#sawRead && !sawWrite && (stmt.readOnly || plainPragmaRead);
    const updatesItself = this.#sawOwnUpdate;
    const txOp = this.#txOp;
    const savepoint = this.#savepoint;
    const flags = {
      recursive: this.#sawRecursive,
      touchesTemp: this.#sawTemp,
      changesRows: this.#sawDml,
      readsPragma,
      readsWriterState: readsWriterState && !otherWrite,
      changesSchema: this.#sawSchema || (!this.#sawRead && !sawWrite) ||
        txOp === "ROLLBACK" || txOp === "ROLLBACK TO",
    };
    // (Read before #shadows(), whose own statement resets the fields above.)
    const insertTargets = this.#insertTargets;
    const deleteTargets = this.#deleteTargets;
    const updatedColumns = this.#updatedColumns;
    const writtenTables = this.#writtenTables;
    const createsTrigger = this.#createsTrigger;
    const createsVtable = this.#createsVtable;
    const setsPragma = this.#setsPragma;
    const guard = (this.#guard as Refusal | null) ?? undefined;
    const judged = this.#policy !== null && !this.#trusted;
    if (judged && createsTrigger !== null && flags.touchesTemp) {
      // (`CREATE TRIGGER temp.t ... ON main.t` is one too: SQLite reports it
      // as a plain trigger of main, written to the temp schema.)
      stmt.finalize();
      throw new SqliteError(
        ErrorCode.Forbidden,
        `Cannot create TEMP trigger "${createsTrigger}": on the server's shared connection ` +
          "it would fire on every client's writes, unseen in the schema, and outlive its " +
          "creator; use CREATE TRIGGER",
      );
    }
    // Its arguments go to the module unread by the authorizer: an FTS
    // table's `content=sqlite_stmt` would read it as the table is read
    // (refused then too, see the constructor; this tells at once).
    const stmtTable = judged && createsVtable !== null && namesStmtTable(stmt.sql)
      ? this.#policy!(Auth.READ, "sqlite_stmt", null, null, null)
      : null;
    if (stmtTable !== null) {
      stmt.finalize();
      throw new SqliteError(
        stmtTable.code,
        `${stmtTable.message} (virtual table "${createsVtable}" names it in its arguments)`,
      );
    }
    // `INSERT INTO t SELECT * FROM x` copies x's rows without asking the
    // authorizer (SQLite's transfer optimization): its bare name is found here.
    const copied = judged && this.#clashes !== null && insertTargets.length > 0
      ? this.#copiesBareClash()
      : null;
    if (copied !== null) {
      stmt.finalize();
      throw new SqliteError(copied.code, copied.message);
    }
    const shadowed = judged ? this.#shadows(stmt.sql, createsVtable !== null) : undefined;
    if (shadowed !== undefined) {
      stmt.finalize();
      throw new SqliteError(ErrorCode.Forbidden, shadowMessage(shadowed));
    }
    // Only the statement's own inserts set the last rowid (a trigger's
    // leave it as it was once the trigger ends).
    const inserts = insertTargets.length > 0;
    return {
      stmt,
      conn: this,
      onWriter: this.#isWriter,
      readOnly,
      txOp,
      explain: startsWith(stmt.sql, "explain"),
      savepoint,
      ...flags,
      setsPragma,
      inserts,
      insertTargets,
      deleteTargets,
      updatedColumns,
      writtenTables,
      updatesItself,
      ...(guard === undefined ? {} : { guard }),
      zeroesRowid: inserts && updatesItself && !this.#readsLastRowid,
      columns: stmt.columnNames(),
      reprepares: 0,
      fast: false,
      unstoppable: false,
      busy: 0,
      evicted: false,
    };
  }

  /**
   * Drops every cached statement, so that the next use of any SQL text is
   * prepared against the current schema (classification and column names
   * included). Call after this connection changed the schema.
   */
  clearCache(): void {
    for (const p of this.#cache.values()) evict(p);
    this.#cache.clear();
    this.#cachedText = 0;
    this.#hasRowid.clear();
    this.#namesInTemp = this.#namesOutsideTemp = null;
    // The schema moved (here, or by another program): which TEMP names
    // clash is read again before the next statement is prepared.
    if (this.#tempObjects !== null) this.#clashesStale = true;
  }

  /**
   * Tells the connection its TEMP tables and views (`[type, name]`), read
   * after a statement touched the temp schema or attached a database: while
   * there are any, the names they share with another schema are read again
   * whenever the schema moved (see {@link #findClashes}). None costs nothing.
   */
  setTempObjects(objects: readonly (readonly [string, string])[]): void {
    const tables = objects.filter(([type, name]) =>
      (type === "table" || type === "view") && !foldCase(name).startsWith("sqlite_")
    );
    this.#tempObjects = tables.length === 0
      ? null
      : new Map(tables.map(([type, name]) => [foldCase(name), type]));
    this.#clashes = null;
    this.#clashesStale = this.#tempObjects !== null;
  }

  /**
   * Reads which TEMP tables and views share a name with a table or view of
   * another schema. The server refuses DDL that would make one (see
   * {@link #shadows}), but another program may create (or rename to) such a
   * name in the database, or a database holding one may be attached: then
   * every statement naming it bare would use the TEMP one, and its writes
   * would be lost at the next restart. Run before a prepare, never by the
   * authorizer (which may not use the connection).
   */
  #findClashes(): void {
    this.#clashesStale = false;
    this.#clashes = null;
    const temp = this.#tempObjects;
    if (temp === null) return;
    let clashes: Map<string, string> | null = null;
    const schemas = this.ownRows("SELECT name FROM pragma_database_list WHERE name <> 'temp'")
      .map((r) => String(r[0]));
    for (const schema of schemas) {
      const quoted = `"${schema.replaceAll('"', '""')}"`;
      let names: SqlValue[][];
      try {
        names = this.ownRows(
          `SELECT name FROM ${quoted}.sqlite_schema WHERE type IN ('table', 'view')`,
        );
      } catch (err) {
        // An attached file gone bad fails the statements that use it, not all.
        if (schema === "main") {
          this.#clashesStale = true;
          throw err;
        }
        continue;
      }
      for (const [name] of names) {
        const key = foldCase(String(name));
        if (temp.has(key) && !clashes?.has(key)) (clashes ??= new Map()).set(key, schema);
      }
    }
    this.#clashes = clashes;
  }

  /**
   * The refusal for an action that would use a TEMP table or view whose
   * name another schema's table or view shares (see {@link #findClashes}),
   * unless the statement names it only qualified (`temp.t`, `main.t`): the
   * bare name would silently mean the TEMP one. Asked while preparing,
   * when the statement's text can tell.
   */
  #clash(
    action: number,
    arg1: string | null,
    arg2: string | null,
    dbName: string | null,
    trigger: string | null,
  ): Refusal | null {
    if (this.#trusted || this.#policy === null) return null;
    let name: string | null = null;
    switch (action) {
      case Auth.READ:
        // A table read for no column of it (`count(*)`, `EXISTS (SELECT 1
        // FROM t)`) comes with an empty column and no schema: the statement's
        // text tells whether it named the table bare.
        name = dbName === "temp" || (dbName === null && arg2 === "") ? arg1 : null;
        break;
      case Auth.INSERT:
      case Auth.UPDATE:
      case Auth.DELETE:
      case Auth.DROP_TEMP_TABLE:
      case Auth.DROP_TEMP_VIEW:
        name = dbName === "temp" ? arg1 : null;
        break;
      case Auth.CREATE_TEMP_INDEX:
        name = dbName === "temp" ? arg2 : null;
        break;
      case Auth.ALTER_TABLE:
        name = arg1 === "temp" ? arg2 : null;
        break;
    }
    if (name === null) return null;
    const key = foldCase(name);
    const schema = this.#clashes!.get(key);
    if (schema === undefined) return null;
    if (this.#classifying) {
      // Named in the statement (a CTE's body included): qualified each time, or refused.
      const named = this.#namedIn(key);
      if (named === "qualified") return null;
      // Read through a TEMP view the statement names: its definition, made on
      // this connection, meant the TEMP table (the server refuses to make the
      // name clash), whether it named it bare or qualified. (SQLite names the
      // view, unless it flattened it into the query: then any TEMP view named.)
      if (
        named === "absent" && (trigger === null ? this.#namesTempView() : this.#isTempView(trigger))
      ) {
        return null;
      }
    }
    const type = this.#tempObjects?.get(key) === "view" ? "VIEW" : "TABLE";
    const q = `"${name.replaceAll('"', '""')}"`;
    const other = schema === "main"
      ? "the database now has a table or view of it too (made by another program)"
      : `attached database "${schema}" has a table or view of it too`;
    return {
      code: ErrorCode.Forbidden,
      message: `Cannot use ${q} by its bare name: the server's shared connection has a TEMP ` +
        `${type.toLowerCase()} of that name, and ${other}; the bare name would mean the TEMP one (its ` +
        `writes lost at the next restart). Qualify it (${schema}.${q} or temp.${q}), or drop ` +
        `the TEMP one: DROP ${type} temp.${q}` +
        (type === "TABLE" ? ` (or rename it: ALTER TABLE temp.${q} RENAME TO ...)` : ""),
    };
  }

  /**
   * The refusal for the statement being prepared when it names a clashing
   * TEMP table bare right after `FROM` (see {@link #clash}), else null.
   */
  #copiesBareClash(): Refusal | null {
    const tokens = this.#tokensPreparing();
    for (let i = 1; i < tokens.length; i++) {
      const t = tokens[i];
      if (
        isNameToken(t) && tokens[i - 1].kind === "word" && tokens[i - 1].text === "from" &&
        tokens[i + 1]?.text !== "."
      ) {
        const name = tokenName(this.#preparing, t);
        const refusal = this.#clash(Auth.READ, name, null, "temp", null);
        if (refusal !== null) return refusal;
      }
    }
    return null;
  }

  /** The tokens of the statement being prepared, up to its first semicolon. */
  #tokensPreparing(): Token[] {
    let tokens = this.#preparingTokens;
    if (tokens === null) {
      const found: Token[] = [];
      scan(this.#preparing, (t) => {
        if (t.kind !== "semicolon") found.push(t);
        return t.kind !== "semicolon" || found.length === 0;
      }, this.#preparingFrom);
      tokens = this.#preparingTokens = found;
    }
    return tokens;
  }

  /** True when `name` is one of this connection's TEMP views. */
  #isTempView(name: string): boolean {
    return this.#tempObjects?.get(foldCase(name)) === "view";
  }

  /** True when the statement being prepared names one of this connection's TEMP views. */
  #namesTempView(): boolean {
    return this.#tokensPreparing().some((t) =>
      isNameToken(t) && this.#isTempView(tokenName(this.#preparing, t))
    );
  }

  /**
   * How the statement being prepared names `key` (ASCII lower case):
   * `"qualified"` when at least once and each time after a schema (`temp.t`,
   * `main.t`; a column's table `x.t` counts alike, being no table's bare
   * name), `"bare"` when once without, `"absent"` when not at all (a view's
   * definition names it). Reads its text up to the first semicolon (a TEMP
   * trigger, whose body would hold more, is refused anyway).
   */
  #namedIn(key: string): "qualified" | "bare" | "absent" {
    const tokens = this.#tokensPreparing();
    let seen = false;
    for (let i = 0; i < tokens.length; i++) {
      const t = tokens[i];
      if (!isNameToken(t) || foldCase(tokenName(this.#preparing, t)) !== key) continue;
      const dot = tokens[i - 1];
      if (dot?.kind !== "punct" || dot.text !== "." || !isNameToken(tokens[i - 2])) return "bare";
      seen = true;
    }
    return seen ? "qualified" : "absent";
  }

  /**
   * True when `p`'s insert can set the last rowid: one of the tables it
   * inserts into has rowids (is not WITHOUT ROWID). Asked after `p` ran and
   * changed rows, never while preparing: inside a client's deferred
   * transaction a lookup then would start a read transaction, which SQLite
   * cannot turn into a write one while another process holds the lock
   * (SQLITE_BUSY at once, without waiting). Cached on `p`; when the lookup
   * fails, the answer is true.
   */
  setsRowid(p: Prepared): boolean {
    if (p.setsRowid !== undefined) return p.setsRowid;
    let sets = true;
    try {
      sets = p.insertTargets.some(([schema, table]) => this.#rowidTable(schema, table));
    } catch {
      // Keep true: the counters decide, as before WITHOUT ROWID was known.
    }
    return p.setsRowid = sets;
  }

  /**
   * A name the statement gives a table or view (creating it, or renaming one
   * with `ALTER TABLE ... RENAME TO`) that a TEMP table or view and one of
   * another schema would then share, or undefined. Reading the temp schema
   * takes no lock of the database file.
   */
  #shadows(sql: string, createsVtable: boolean): string | undefined {
    const toTemp = [...this.#tempNames];
    const toOthers = [...this.#mainNames];
    const altered = this.#altered;
    if (altered !== null) {
      const name = renamedTo(sql);
      if (name !== null) {
        const names = altered[0].toLowerCase() === "temp" ? toTemp : toOthers;
        names.push(name);
        // A virtual table's module renames its shadow tables with it (SQLite
        // names them "<table>_<suffix>", and PRAGMA table_list knows them).
        const quoted = `"${altered[0].replaceAll('"', '""')}"`;
        for (
          const [shadow] of this.ownRows(
            `SELECT name FROM ${quoted}.pragma_table_list WHERE type = 'shadow' ` +
              "AND substr(name, 1, length(?1) + 1) = ?1 || '_' COLLATE NOCASE",
            [altered[1]],
          )
        ) {
          names.push(name + String(shadow).slice(altered[1].length));
        }
      }
    }
    if (createsVtable) {
      // Its module creates shadow tables as it runs: the constructor's
      // authorizer judges their names against these.
      this.#namesInTemp = this.#tableNames(["temp"]);
      this.#namesOutsideTemp = this.#tableNames(
        this.ownRows("SELECT name FROM pragma_database_list WHERE name <> 'temp'", [])
          .map((r) => String(r[0])),
      );
    }
    if (toTemp.length === 0 && toOthers.length === 0) return undefined;
    const schemas = toTemp.length === 0 ? ["temp"] : this.ownRows(
      "SELECT name FROM pragma_database_list WHERE name <> 'temp'",
      [],
    ).map((r) => String(r[0])).concat(toOthers.length > 0 ? ["temp"] : []);
    for (const schema of schemas) {
      const names = schema === "temp" ? toOthers : toTemp;
      const quoted = `"${schema.replaceAll('"', '""')}"`;
      for (const name of names) {
        const rows = this.ownRows(
          `SELECT 1 FROM ${quoted}.sqlite_schema WHERE type IN ('table', 'view') ` +
            "AND name = ?1 COLLATE NOCASE",
          [name],
        );
        if (rows.length > 0) return name;
      }
    }
    return undefined;
  }

  /** Names of the tables and views of `schemas`, lower case. */
  #tableNames(schemas: string[]): Set<string> {
    const names = new Set<string>();
    for (const schema of schemas) {
      const quoted = `"${schema.replaceAll('"', '""')}"`;
      for (
        const [name] of this.ownRows(
          `SELECT name FROM ${quoted}.sqlite_schema WHERE type IN ('table', 'view')`,
        )
      ) names.add(String(name).toLowerCase());
    }
    return names;
  }

  /**
   * The rows of a statement of the engine's own, run at once through the
   * statement cache; the policy does not judge it.
   */
  ownRows(sql: string, args: SqlValue[] = []): SqlValue[][] {
    let p: Prepared;
    this.#trusted = true;
    try {
      p = this.prepare(sql);
    } finally {
      this.#trusted = false;
    }
    p.busy++;
    try {
      p.stmt.bind(args);
      return p.stmt.all();
    } finally {
      release(p);
    }
  }

  /**
   * True when `refusal` may be set inside a transaction and this connection,
   * the writer, is inside one (the session's own: a PRAGMA never joins a
   * group commit, and SQLite resets it at that transaction's end).
   */
  #inOwnTransaction(refusal: Refusal): boolean {
    return refusal.unless?.inTransaction === true && this.#isWriter && this.db.inTransaction;
  }

  /**
   * True when the condition of `refusal` holds now: it may be set inside a
   * transaction and the writer is inside one, or the PRAGMA already has the
   * value the statement sets (read back on this connection; a reader must
   * agree too, as the statement is prepared there first). False when the
   * value cannot be read or compared.
   */
  #permits(refusal: Refusal): boolean {
    const unless = refusal.unless;
    if (unless === undefined) return false;
    if (this.#inOwnTransaction(refusal)) return true;
    const schema = unless.schema === null ? "" : `"${unless.schema.replaceAll('"', '""')}".`;
    let p: Prepared | null = null;
    this.#trusted = true;
    try {
      // (Not cached: caching could evict the statement being checked. The
      // name is one of the policy's lists: letters and underscores.)
      p = this.prepareOne(`PRAGMA ${schema}${unless.pragma}`, 0);
      if (p === null) return false;
      p.stmt.bind(NO_ARGS);
      const rows = p.stmt.all();
      return rows.length === 1 && rows[0].length === 1 &&
        samePragmaValue(unless.pragma, unless.value, rows[0][0]);
    } catch {
      return false;
    } finally {
      this.#trusted = false;
      p?.stmt.finalize();
    }
  }

  /**
   * True when SQLite knows a PRAGMA `name` (lower case), so that a table
   * named `pragma_<name>` is its table-valued form (or shares its name).
   * The list is read once, past the authorizer's classification.
   */
  #pragmaNamed(name: string): boolean {
    this.#pragmaNames ??= new Set(rowsNow(this.db, "PRAGMA pragma_list").map((r) => String(r[0])));
    return this.#pragmaNames.has(name);
  }

  /** True when `schema.table` has rowids: a table not declared WITHOUT ROWID (or a view). */
  #rowidTable(schema: string, table: string): boolean {
    const key = `${schema}.${table}`;
    let known = this.#hasRowid.get(key);
    if (known === undefined) {
      const rows = this.ownRows("SELECT wr FROM pragma_table_list(?1) WHERE schema = ?2", [
        table,
        schema,
      ]);
      known = rows.length === 0 || Number(rows[0][0]) === 0;
      this.#hasRowid.set(key, known);
    }
    return known;
  }

  /**
   * After a failed prepare: true when the schema may have moved unseen (see
   * {@link ConnectionOptions.schemaMayHaveMoved}) and reading the cookie
   * shows that it did (the statement cache is dropped then). Once per
   * move: the next failure finds the cookie as read.
   */
  #schemaMoved(): boolean {
    if (this.#trusted || this.#schemaMayHaveMoved === null || !this.#schemaMayHaveMoved()) {
      return false;
    }
    const before = this.#schemaVersion;
    try {
      return this.refreshSchema() !== before;
    } catch {
      return false; // (the statement's own error says more)
    }
  }

  /**
   * Makes this connection's view of the schema current: reads the schema
   * cookie (which also makes SQLite reload a schema changed by another
   * connection) and drops the statement cache when it moved. Inside a read
   * transaction this is the transaction's snapshot.
   *
   * @returns the schema version.
   */
  refreshSchema(): number {
    // The table-valued form checks the schema cookie (plain PRAGMA does not),
    // so SQLite resets a stale schema and reloads it on the next prepare.
    const version = this.ownRows(
      "SELECT schema_version FROM pragma_schema_version",
    )[0][0] as number;
    if (version !== this.#schemaVersion) {
      this.clearCache();
      this.#schemaVersion = version;
    }
    return version;
  }

  /**
   * Starts a read transaction now and keeps it until {@link unpinSnapshot}:
   * outside a transaction SQLite ends a read when its last active statement
   * is reset, so a statement of the engine's own stepped once and left
   * active holds the snapshot for the statements prepared and stepped
   * meanwhile (a cursor's, whose first step may come much later). Then makes
   * the schema this connection prepares with the snapshot's. A no-op inside
   * a transaction (which holds its own snapshot) and while pinned.
   *
   * @throws {SqliteError} SQLite's error (nothing is held then).
   */
  pinSnapshot(): void {
    if (this.#pinned || this.db.inTransaction) return;
    let stmt = this.#pinStmt;
    if (stmt === null) {
      this.#trusted = true;
      try {
        // One row whatever the schema (it reads at most one schema row):
        // `count(*) FROM sqlite_schema` walks the schema, 2 ms at 20,000 tables.
        stmt = this.#pinStmt = this.db.prepare("SELECT (SELECT 1 FROM sqlite_schema LIMIT 1)")!;
      } finally {
        this.#trusted = false;
      }
    }
    try {
      stmt.bind(NO_ARGS);
      stmt.step();
      this.#pinned = true;
      this.refreshSchema();
    } catch (err) {
      this.unpinSnapshot();
      throw err;
    }
  }

  /** Ends the snapshot {@link pinSnapshot} held, if any. Never throws. */
  unpinSnapshot(): void {
    this.#pinned = false;
    this.#pinStmt?.reset();
  }

  /** Finalizes every statement and closes the connection. */
  close(): void {
    this.#pinned = false;
    this.#pinStmt = null;
    this.#cache.clear();
    this.#cachedText = 0;
    this.db.close();
  }

  /** True when `sql` holds another statement from `from` on (prepares it to see). */
  #hasMore(sql: string, from: number): boolean {
    const next = this.db.prepare(sql, from);
    if (next === null) return false;
    next.finalize();
    return true;
  }

  /** Notes `table` of `schema` as written by the statement (see {@link Prepared.writtenTables}). */
  #noteWritten(table: string | null, schema: string | null): void {
    if (table === null || (schema ?? "main") !== "main") return;
    if (!this.#writtenTables.includes(table)) this.#writtenTables.push(table);
  }

  #classify(
    action: number,
    arg1: string | null,
    arg2: string | null,
    dbName: string | null,
    trigger: string | null,
  ): void {
    if (action === Auth.RECURSIVE) this.#sawRecursive = true;
    if (action === Auth.READ || action === Auth.SELECT) this.#sawRead = true;
    if (action === Auth.READ && arg1 !== null && arg1.toLowerCase().startsWith("pragma_")) {
      // An eponymous PRAGMA table maybe: judged once prepared (see #pragmaNamed).
      const name = arg1.slice(7).toLowerCase();
      if (!this.#pragmaTables.includes(name)) this.#pragmaTables.push(name);
    }
    if (action === Auth.PRAGMA) {
      const use = pragmaUse(arg1 ?? "", arg2);
      if (use === "reader") {
        this.#sawRead = true;
        this.#sawPragmaRead = true;
        this.#plainPragmaRead = true;
        return;
      }
      // Otherwise on the writer, as a write (it may change what the writer's statements do).
      if (use === "writer") this.#sawWriterState = true;
      else this.#sawOtherWrite = true;
      if (arg1 !== null && arg2 !== null && REPLAYED_PRAGMAS.has(arg1.toLowerCase())) {
        const schema = dbName === null ? "" : `"${dbName.replaceAll('"', '""')}".`;
        this.#setsPragma = `PRAGMA ${schema}${arg1.toLowerCase()} = '${
          arg2.replaceAll("'", "''")
        }'`;
      }
    } else if (action === Auth.FUNCTION) {
      if (arg2 !== null && WRITER_STATE_FUNCTIONS.has(arg2.toLowerCase())) {
        this.#sawWriterState = true;
      }
    } else if (action !== Auth.READ && action !== Auth.SELECT && action !== Auth.RECURSIVE) {
      this.#sawOtherWrite = true;
    }
    if (action === Auth.FUNCTION) {
      // These report the state of the connection that runs them: only the
      // writer has it, so statements using them run there.
      const name = arg2?.toLowerCase() ?? "";
      if (WRITER_STATE_FUNCTIONS.has(name)) this.#sawWrite = true;
      // (Also in a trigger's body or a view: both are compiled into the statement.)
      if (name === "last_insert_rowid") this.#readsLastRowid = true;
      return;
    }
    if (action === Auth.READ || action === Auth.SELECT || action === Auth.RECURSIVE) return;
    this.#sawWrite = true;
    if (
      (action === Auth.INSERT || action === Auth.UPDATE || action === Auth.DELETE) &&
      isSchemaTable(arg1)
    ) {
      // DDL edits the schema table itself: that is no row change of the client's.
      this.#sawSchema = true;
      // However spelled (TEMP, temp.name, a TEMP trigger on a main table),
      // an object made or dropped in the temp schema writes its schema table.
      if (dbName === "temp") this.#sawTemp = true;
    } else if (action === Auth.INSERT) {
      this.#sawDml = true;
      this.#noteWritten(arg1, dbName);
      if (trigger === null && arg1 !== null) this.#insertTargets.push([dbName ?? "main", arg1]);
    } else if (action === Auth.UPDATE || action === Auth.DELETE) {
      this.#sawDml = true;
      this.#noteWritten(arg1, dbName);
      // (Inside a trigger SQLite names the trigger: its updates are not the statement's.)
      if (trigger === null) this.#sawOwnUpdate = true;
      if (action === Auth.DELETE && trigger === null && arg1 !== null) {
        this.#deleteTargets.push([dbName ?? "main", arg1]);
      }
      // (Also a trigger's: its statements are compiled into this one.)
      if (action === Auth.UPDATE && arg1 !== null && arg2 !== null && dbName === "main") {
        this.#updatedColumns.push([arg1, arg2]);
      }
    } else if (SCHEMA_ACTIONS.has(action)) {
      this.#sawSchema = true;
      const inTemp = dbName === "temp" || action === Auth.CREATE_TEMP_TABLE ||
        action === Auth.CREATE_TEMP_VIEW;
      if (
        arg1 !== null &&
        (action === Auth.CREATE_TEMP_TABLE || action === Auth.CREATE_TEMP_VIEW ||
          action === Auth.CREATE_TABLE || action === Auth.CREATE_VIEW ||
          action === Auth.CREATE_VTABLE)
      ) {
        (inTemp ? this.#tempNames : this.#mainNames).push(arg1);
      }
      if (action === Auth.ALTER_TABLE && arg1 !== null && arg2 !== null) {
        this.#altered = [arg1, arg2];
      }
      if (action === Auth.CREATE_TRIGGER || action === Auth.CREATE_TEMP_TRIGGER) {
        this.#createsTrigger = arg1 ?? "";
      }
      if (action === Auth.CREATE_VTABLE) this.#createsVtable = arg1 ?? "";
      if (
        (action >= Auth.CREATE_TEMP_INDEX && action <= Auth.CREATE_TEMP_VIEW) ||
        (action >= Auth.DROP_TEMP_INDEX && action <= Auth.DROP_TEMP_VIEW)
      ) {
        this.#sawTemp = true;
      }
    } else if (action === Auth.ATTACH || action === Auth.DETACH) {
      // The writer alone attaches it (see Prepared.touchesTemp).
      this.#sawTemp = true;
    } else if (action === Auth.TRANSACTION) {
      this.#txOp = arg1 as TxOp;
    } else if (action === Auth.SAVEPOINT) {
      this.#txOp = arg1 === "BEGIN" ? "SAVEPOINT" : arg1 === "RELEASE" ? "RELEASE" : "ROLLBACK TO";
      this.#savepoint = arg2;
    }
  }
}

const NO_ARGS: readonly never[] = [];

/**
 * Thrown by a reader for a statement the policy refuses unless the writer's
 * state permits it (`Refusal.unless`): it is no read, so route it to the
 * writer, which decides. Its message is the refusal's.
 */
export class WriterDecides extends SqliteError {
  /** @param refusal The refusal the writer may lift. */
  constructor(refusal: Refusal) {
    super(refusal.code, refusal.message);
  }
}

/**
 * Settings of a connection (of {@link CONNECTION_PRAGMAS}, which only
 * `--allow-unsafe-pragmas` lets clients set) that change what its reads
 * answer or how they run: a client sets one on the writer, and the engine
 * sets it on every reader too (see {@link Prepared.setsPragma}), so that a
 * read answers alike on whichever connection it runs. Not replayed:
 * `busy_timeout` (the server's own waits on readers), `foreign_keys` and
 * `defer_foreign_keys` (writes only; the latter ends with its
 * transaction), `query_only` (readers are read-only), `encoding` (the
 * file's).
 */
export const REPLAYED_PRAGMAS: ReadonlySet<string> = new Set(
  CONNECTION_PRAGMAS.filter((name) =>
    !["busy_timeout", "defer_foreign_keys", "encoding", "foreign_keys", "query_only"].includes(
      name,
    )
  ),
);

/** Finalizes a cached statement now, or when its last run ends. */
function evict(p: Prepared): void {
  p.evicted = true;
  if (p.busy === 0) p.stmt.finalize();
}

/**
 * `p`'s result column names as SQLite has them now: read again when SQLite
 * prepared the statement again since they were read (it does so as the
 * statement steps after another connection, or another program, changed the
 * schema; its rows then have the new columns). Call after stepping.
 */
export function columnsOf(p: Prepared): string[] {
  const n = p.stmt.reprepares;
  if (n !== p.reprepares) {
    p.reprepares = n;
    p.columns = p.stmt.columnNames();
  }
  return p.columns;
}

/**
 * Marks the end of one run of `p` (see {@link Prepared.busy}). A statement
 * kept in the cache drops the large values it was bound (its copy of a
 * 64 MiB BLOB would stay resident until its next run).
 */
export function release(p: Prepared): void {
  if (--p.busy !== 0) return;
  if (p.evicted) p.stmt.finalize();
  else p.stmt.dropLargeValues();
}

/**
 * Authorizer actions that change the schema: CREATE/DROP of indexes,
 * tables, triggers and views (1–17 but DELETE), PRAGMA, ALTER TABLE,
 * REINDEX, ANALYZE, CREATE/DROP VTABLE.
 */
const SCHEMA_ACTIONS = new Set([
  1,
  2,
  3,
  4,
  5,
  6,
  7,
  8,
  10,
  11,
  12,
  13,
  14,
  15,
  16,
  17,
  19,
  26,
  27,
  28,
  29,
  30,
]);

/** Authorizer actions that create a table or view (TEMP or not). */
function isCreate(action: number): boolean {
  return action === Auth.CREATE_TABLE || action === Auth.CREATE_TEMP_TABLE ||
    action === Auth.CREATE_VIEW || action === Auth.CREATE_TEMP_VIEW;
}

/** True for a token that may be a name: a bare word or a quoted name. */
function isNameToken(t: Token | undefined): t is Token {
  return t?.kind === "word" || t?.kind === "name";
}

/** The name a token spells (a word as written: the lexer folds its case beyond ASCII). */
function tokenName(sql: string, t: Token): string {
  return t.kind === "word" ? sql.slice(t.at, t.end) : t.text;
}

/** Why a table or view may not be named `name`: a TEMP one would shadow another. */
function shadowMessage(name: string): string {
  return `Cannot give a table or view the name "${name}": a TEMP one and another of the ` +
    "database would share it, and every client's statements naming it would use the TEMP " +
    "one on the server's shared connection (writes lost at the next restart); choose " +
    "another name, or drop the TEMP one";
}

/** `sqlite_master` and its aliases, which DDL writes through the authorizer's eyes. */
function isSchemaTable(table: string | null): boolean {
  if (table === null) return false;
  const t = table.toLowerCase();
  return t === "sqlite_master" || t === "sqlite_schema" || t === "sqlite_temp_master" ||
    t === "sqlite_temp_schema";
}

/**
 * Whether `sql` is a `VACUUM` statement: `into` when it has an `INTO`
 * clause, and `target` the file named when that is one plain string literal
 * (`null` for an expression, a parameter, ...); `null` for any other
 * statement. Reads SQLite's tokens (comments, quoted names and strings
 * skipped), so that no spelling hides the `INTO`.
 */
export function vacuumOf(sql: string): { into: boolean; target: string | null } | null {
  const tokens = statementTokens(sql);
  if (!isWord(tokens[0], "vacuum")) return null;
  // VACUUM [schema] [INTO expr]: INTO is a keyword, never a bare schema name.
  const at = tokens.findIndex((t, i) => i > 0 && i < 3 && isWord(t, "into"));
  if (at === -1) return { into: false, target: null };
  const rest = tokens.slice(at + 1).filter((t) => t.kind !== "semicolon");
  const literal = rest.length === 1 && rest[0].kind === "string";
  return { into: true, target: literal ? rest[0].text : null };
}

function isWord(t: Token | undefined, word: string): boolean {
  return t?.kind === "word" && t.text === word;
}

const WRITER_STATE_FUNCTIONS = new Set(["last_insert_rowid", "changes", "total_changes"]);

/**
 * True when `sql`, a `CREATE VIRTUAL TABLE`, names `sqlite_stmt` among its
 * module's arguments, however quoted (`content='sqlite_stmt'`,
 * `content=[SQLITE_STMT]`).
 */
function namesStmtTable(sql: string): boolean {
  const tokens = statementTokens(sql);
  const using = tokens.findIndex((t) => isWord(t, "using"));
  return using !== -1 &&
    tokens.some((t, i) =>
      i > using && (t.kind === "word" || t.kind === "name" || t.kind === "string") &&
      t.text.toLowerCase() === "sqlite_stmt"
    );
}

/** The new name of `ALTER TABLE ... RENAME TO name` (unquoted), or null for other statements. */
function renamedTo(sql: string): string | null {
  // ALTER TABLE [schema .] table RENAME TO name (not RENAME [COLUMN] a TO b).
  const tokens = statementTokens(sql);
  if (!isWord(tokens[0], "alter") || !isWord(tokens[1], "table")) return null;
  const at = tokens[3]?.text === "." ? 5 : 3;
  if (!isWord(tokens[at], "rename") || !isWord(tokens[at + 1], "to")) return null;
  const name = tokens[at + 2];
  if (name === undefined) return null;
  // A bare name as written (SQLite folds the case of ASCII letters only).
  return name.kind === "word" ? sql.slice(name.at, name.end) : name.text;
}
