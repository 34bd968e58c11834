/**
 * One SQLite connection with a statement cache. Every statement is classified
 * when prepared (via SQLite's authorizer): does it only read, and does it
 * control a transaction. Results come back as arrays with integers as exact
 * JavaScript values (number when safe, bigint beyond 2^53).
 *
 * @module
 */

import { ErrorCode, SqliteError } from "../protocol/errors.ts";
import { resultCodeName } from "./_result_codes.ts";
import { hasStatement } from "./_sql_text.ts";
import { Auth, type Database, openDatabase, type Statement } from "./_sqlite.ts";
import type { PolicyCheck, Refusal } from "./policy.ts";

/** Transaction control done by a statement, as SQLite's authorizer names it. */
export type TxOp = "BEGIN" | "COMMIT" | "ROLLBACK" | "SAVEPOINT" | "RELEASE" | "ROLLBACK TO";

/** A statement prepared on one connection, with what it does. */
export interface Prepared {
  /** The statement. */
  readonly stmt: Statement;
  /** True when prepared on the writer connection. */
  readonly onWriter: boolean;
  /** True when the statement only reads (may run on a read-only connection). */
  readonly readOnly: boolean;
  /** Transaction control done by the statement, or `null`. */
  readonly txOp: TxOp | null;
  /**
   * True for recursive queries, which may run without bound: they are stepped
   * row by row so the statement deadline and result limit can stop them.
   */
  readonly recursive: boolean;
  /** True when the statement creates or drops TEMP objects. */
  readonly touchesTemp: boolean;
  /** True when it inserts, updates or deletes rows (so `changes` is its own). */
  readonly changesRows: boolean;
  /** True when it inserts rows (so `lastInsertRowid` is its own). */
  readonly inserts: boolean;
  /** Result column names; refreshed when the schema changes them. */
  columns: string[];
}

/** Options for {@link Connection}. */
export interface ConnectionOptions {
  /** Open read-only (a reader) rather than read-write (the writer). */
  readOnly: boolean;
  /** SQLite busy timeout for locks held by other processes, in ms. */
  timeout: number;
  /** Statements kept prepared. */
  cacheSize: number;
  /** Runs as the writer even when opened read-only (a `--readonly` server). @default {!readOnly} */
  writer?: boolean;
  /** What client statements may do (see `policy.ts`); `null` permits everything. */
  policy?: PolicyCheck | null;
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const MIN_SAFE = -MAX_SAFE;

/** A node:sqlite connection plus a statement cache and classification. */
export class Connection {
  /** The underlying node:sqlite database. */
  readonly db: Database;
  readonly #isWriter: boolean;
  readonly #cacheSize: number;
  readonly #cache = new Map<string, Prepared>();
  #classifying = false;
  #sawWrite = false;
  #sawRecursive = false;
  #sawTemp = false;
  #sawDml = false;
  #sawInsert = false;
  #txOp: TxOp | null = null;
  readonly #policy: PolicyCheck | null;
  #refusal: Refusal | null = null;

  /**
   * @param path Database file.
   * @param options Read-only or writer, busy timeout, cache size.
   */
  constructor(path: string, options: ConnectionOptions) {
    this.db = openDatabase(path, { readOnly: options.readOnly, timeout: options.timeout });
    this.#isWriter = options.writer ?? !options.readOnly;
    this.#cacheSize = options.cacheSize;
    this.#policy = options.policy ?? null;
    this.db.setAuthorizer((action, arg1, arg2, dbName, trigger) => {
      // ATTACH is checked when statements run too: VACUUM INTO attaches its target only then.
      if (!this.#classifying && action !== Auth.ATTACH) return Auth.OK;
      const refusal = this.#policy?.(action, arg1, arg2, dbName, trigger) ?? null;
      if (refusal !== null) {
        this.#refusal ??= refusal;
        return Auth.DENY;
      }
      if (this.#classifying) this.#classify(action, arg1, arg2);
      return Auth.OK;
    });
  }

  /** True while a transaction is open on this connection. */
  get inTransaction(): boolean {
    return this.db.isTransaction;
  }

  /**
   * Returns the cached statement for `sql`, preparing it on a miss.
   *
   * @throws {SqliteError} SQLite's error, `BAD_REQUEST` for empty SQL or
   *   SQL holding several statements.
   */
  prepare(sql: string): Prepared {
    const hit = this.#cache.get(sql);
    if (hit !== undefined) return hit;
    const prepared = this.prepareUncached(sql);
    if (this.#cache.size >= this.#cacheSize) {
      this.#cache.delete(this.#cache.keys().next().value!);
    }
    this.#cache.set(sql, prepared);
    return prepared;
  }

  /**
   * Prepares exactly one statement, bypassing the cache (for a statement that
   * stays busy, like a cursor's).
   *
   * @throws {SqliteError} as {@link prepare}.
   */
  prepareUncached(sql: string): Prepared {
    const prepared = this.prepareOne(sql, 0);
    if (prepared === null) {
      throw new SqliteError(ErrorCode.BadRequest, "Cannot prepare statement: SQL text is empty");
    }
    const used = prepared.stmt.sourceSQL.length;
    if (used < sql.length && hasStatement(sql, used)) {
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
   * `from + stmt.sourceSQL.length`.
   */
  prepareOne(sql: string, from: number): Prepared | null {
    if (from === 0 && sql.includes("\0")) {
      // SQLite would stop reading at the NUL and silently ignore the rest.
      throw new SqliteError(
        ErrorCode.BadRequest,
        "Cannot prepare statement: SQL text contains a NUL character",
      );
    }
    if (!hasStatement(sql, from)) return null;
    this.#classifying = true;
    this.#sawWrite = false;
    this.#sawRecursive = false;
    this.#sawTemp = false;
    this.#sawDml = false;
    this.#sawInsert = false;
    this.#txOp = null;
    this.#refusal = null;
    let stmt: Statement;
    try {
      stmt = this.db.prepare(from === 0 ? sql : sql.slice(from));
    } catch (err) {
      const refusal = this.#refusal as Refusal | null;
      if (refusal !== null) throw new SqliteError(refusal.code, refusal.message);
      throw toSqliteError(err);
    } finally {
      this.#classifying = false;
    }
    const into = VACUUM_INTO.exec(stmt.sourceSQL); // authorized only when it runs: say so now
    const refusal = into && this.#policy?.(Auth.ATTACH, into[1], "VACUUM INTO", null, null);
    if (refusal) throw new SqliteError(refusal.code, refusal.message);
    const readOnly = !this.#sawWrite;
    stmt.setReturnArrays(true);
    // Reads try plain numbers first (see readRows); other statements cannot
    // be re-run, so they always read integers as bigint.
    stmt.setReadBigInts(!readOnly);
    return {
      stmt,
      onWriter: this.#isWriter,
      readOnly,
      txOp: this.#txOp,
      recursive: this.#sawRecursive,
      touchesTemp: this.#sawTemp,
      changesRows: this.#sawDml,
      inserts: this.#sawInsert,
      columns: columnNames(stmt),
    };
  }

  /** Closes the connection; the cache is dropped. */
  close(): void {
    this.#cache.clear();
    this.db.close();
  }

  #classify(action: number, arg1: string | null, arg2: string | null): void {
    if (action === Auth.RECURSIVE) this.#sawRecursive = true;
    if (action === Auth.FUNCTION) {
      // These report the state of the connection that runs them: only the
      // writer has it, so statements using them run there.
      if (arg2 !== null && WRITER_STATE_FUNCTIONS.has(arg2.toLowerCase())) this.#sawWrite = true;
      return;
    }
    if (action === Auth.READ || action === Auth.SELECT || action === Auth.RECURSIVE) return;
    this.#sawWrite = true;
    if (action === Auth.INSERT) {
      this.#sawDml = this.#sawInsert = true;
    } else if (action === Auth.UPDATE || action === Auth.DELETE) {
      this.#sawDml = true;
    } else if (
      (action >= Auth.CREATE_TEMP_INDEX && action <= Auth.CREATE_TEMP_VIEW) ||
      (action >= Auth.DROP_TEMP_INDEX && action <= Auth.DROP_TEMP_VIEW)
    ) {
      this.#sawTemp = true;
    } else if (action === Auth.TRANSACTION) {
      this.#txOp = arg1 as TxOp;
    } else if (action === Auth.SAVEPOINT) {
      this.#txOp = arg1 === "BEGIN" ? "SAVEPOINT" : arg1 === "RELEASE" ? "RELEASE" : "ROLLBACK TO";
    }
  }
}

const VACUUM_INTO = /^\s*VACUUM\s+(?:\w+\s+)?INTO\s+'((?:[^']|'')*)'/i;

const WRITER_STATE_FUNCTIONS = new Set(["last_insert_rowid", "changes", "total_changes"]);

function columnNames(stmt: Statement): string[] {
  const cols = stmt.columns();
  const names = new Array<string>(cols.length);
  for (let i = 0; i < cols.length; i++) names[i] = cols[i].name;
  return names;
}

/** Bounds on one statement's execution. */
export interface RunLimits {
  /** `performance.now()` value after which stepping stops. */
  deadline: number;
  /** The deadline's length in ms, for the error message. */
  timeout: number;
  /** Largest result, in approximate bytes, before `RESULT_TOO_LARGE`. */
  maxBytes: number;
}

/**
 * Runs `p` and returns its rows as arrays. A read-only statement first reads
 * integers as numbers; if one is beyond 2^53 it is run again reading bigints,
 * which is safe because it changes nothing. Recursive statements are stepped
 * row by row under `limits`; others run in one call (node:sqlite cannot
 * interrupt a call, and stepping costs about 6x more).
 *
 * @throws {SqliteError}
 */
export function readRows(p: Prepared, args: unknown[], limits?: RunLimits): unknown[][] {
  if (p.recursive && limits !== undefined) return stepRows(p, args, limits);
  let rows: unknown[][];
  let bigints = !p.readOnly;
  try {
    rows = p.stmt.all(...args) as unknown[][];
  } catch (err) {
    if (bigints || (err as { code?: string }).code !== "ERR_OUT_OF_RANGE") {
      throw toSqliteError(err);
    }
    bigints = true;
    p.stmt.setReadBigInts(true);
    try {
      rows = p.stmt.all(...args) as unknown[][];
    } catch (err2) {
      throw toSqliteError(err2);
    } finally {
      p.stmt.setReadBigInts(false);
    }
  }
  if (rows.length === 0 || rows[0].length !== p.columns.length) p.columns = columnNames(p.stmt);
  if (bigints) normalizeRows(rows);
  return rows;
}

function stepRows(p: Prepared, args: unknown[], limits: RunLimits): unknown[][] {
  p.stmt.setReadBigInts(true);
  const rows: unknown[][] = [];
  try {
    const it = p.stmt.iterate(...args) as IterableIterator<unknown[]>;
    try {
      const { bytes } = stepRowsInto(it, rows, Infinity, limits.maxBytes + 1, limits);
      if (bytes > limits.maxBytes) throw resultTooLarge(limits.maxBytes);
    } finally {
      it.return?.();
    }
  } catch (err) {
    throw toSqliteError(err);
  } finally {
    p.stmt.setReadBigInts(!p.readOnly);
  }
  normalizeRows(rows);
  return rows;
}

/**
 * Appends rows from `it` to `out` until `maxRows` rows or about `maxBytes`
 * bytes were added, or the clock passed `softEnd` (the chunk is cut short,
 * not failed), checking the deadline after every row. Shared by recursive
 * buffered queries and cursors.
 *
 * @returns whether the statement is done, and the bytes added.
 * @throws {SqliteError} `STATEMENT_TIMEOUT` past the deadline.
 */
export function stepRowsInto(
  it: Iterator<unknown[]>,
  out: unknown[][],
  maxRows: number,
  maxBytes: number,
  limits: RunLimits,
  softEnd = Infinity,
): { done: boolean; bytes: number } {
  let bytes = 0;
  for (let n = 0; n < maxRows && bytes < maxBytes; n++) {
    const r = it.next();
    if (r.done) return { done: true, bytes };
    out.push(r.value);
    bytes += rowBytes(r.value);
    // Stepping costs ~1.3 µs a row; the clock check adds a few percent.
    const now = performance.now();
    if (now > limits.deadline) throw statementTimeout(limits);
    if (now > softEnd) break;
  }
  return { done: false, bytes };
}

/** The error for a result above the buffered-result limit. */
export function resultTooLarge(maxBytes: number): SqliteError {
  return new SqliteError(
    ErrorCode.ResultTooLarge,
    `Result exceeds maxResultBytes ${maxBytes} (--max-result-bytes): ` +
      "use iterate() to stream large results",
  );
}

/** Approximate encoded size of a row. */
function rowBytes(row: unknown[]): number {
  let n = 1;
  for (let i = 0; i < row.length; i++) {
    const v = row[i];
    n += typeof v === "string" ? v.length + 5 : v instanceof Uint8Array ? v.length + 5 : 9;
  }
  return n;
}

/** The error for a statement stopped at its deadline. */
export function statementTimeout(limits: RunLimits): SqliteError {
  return new SqliteError(
    ErrorCode.StatementTimeout,
    `Statement stopped after ${limits.timeout} ms (--statement-timeout or the call's timeout option)`,
  );
}

/**
 * Runs `p` for its effect and returns `[changes, lastInsertRowid]`: 0 for
 * a statement that changes no rows / inserts none.
 */
export function runStatement(p: Prepared, args: unknown[]): [number | bigint, number | bigint] {
  let info;
  // Writes always read bigints (set at prepare); a read run for its effect
  // switches for the call, so a rowid beyond 2^53 cannot throw.
  try {
    if (p.readOnly) p.stmt.setReadBigInts(true);
    info = p.stmt.run(...args);
  } catch (err) {
    throw toSqliteError(err);
  } finally {
    if (p.readOnly) p.stmt.setReadBigInts(false);
  }
  // SQLite reports the connection's last values, which after DDL or an
  // UPDATE may belong to another client's statement: report only our own.
  return [
    p.changesRows ? exactInteger(info.changes) : 0,
    p.inserts ? exactInteger(info.lastInsertRowid) : 0,
  ];
}

/** Converts bigints within ±(2^53 - 1) to numbers, in place. */
export function normalizeRows(rows: unknown[][]): void {
  for (let r = 0; r < rows.length; r++) {
    const row = rows[r];
    for (let i = 0; i < row.length; i++) {
      const v = row[i];
      if (typeof v === "bigint" && v <= MAX_SAFE && v >= MIN_SAFE) row[i] = Number(v);
    }
  }
}

/** A number when `v` is a safe integer, else the bigint itself. */
function exactInteger(v: number | bigint): number | bigint {
  return typeof v === "bigint" && v <= MAX_SAFE && v >= MIN_SAFE ? Number(v) : v;
}

/** Maps an error thrown by node:sqlite to a {@link SqliteError}. */
export function toSqliteError(err: unknown): SqliteError {
  if (err instanceof SqliteError) return err;
  const e = err as { errcode?: number; code?: string; message?: string };
  const message = e?.message ?? String(err);
  if (typeof e?.errcode === "number") {
    return new SqliteError(resultCodeName(e.errcode), message, e.errcode, { cause: err });
  }
  if (e?.code === "ERR_SQLITE_ERROR") return new SqliteError("SQLITE_ERROR", message, 1);
  if (e?.code === "ERR_INVALID_ARG_TYPE" || e?.code === "ERR_INVALID_STATE") {
    return new SqliteError(ErrorCode.InvalidParam, message, undefined, { cause: err });
  }
  return new SqliteError(ErrorCode.Internal, message, undefined, { cause: err });
}
