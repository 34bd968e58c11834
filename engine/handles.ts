/**
 * A session's prepared-statement handles (`prepare` → number → SQL text),
 * bounded so that a client that never finalizes cannot make the server
 * keep its SQL without end: per connection, and on the whole server
 * ({@link PreparedBudget}, shared by every session of an engine), so that
 * many connections cannot add up to more than the server can hold. A
 * handle holds its SQL text only: the statement itself is prepared again
 * from it, through the SQLite connection's bounded statement cache
 * (`connection.ts`). Shared by the single-file engine and cluster mode.
 *
 * @module
 */

import { ErrorCode, SqliteError } from "../protocol/errors.ts";
import { unknownHandle } from "./session_errors.ts";

/** Most handles one connection may hold, unless configured (`maxStatements`). */
export const MAX_HANDLES = 10_000;
/** Most SQL text, in UTF-16 code units, one connection's handles may hold. */
export const MAX_HANDLE_TEXT = 16 * 1024 * 1024;

/** Most handles all connections of a server may hold together, unless configured. */
export const MAX_PREPARED = 1_000_000;
/** Most SQL text, in UTF-16 code units, all connections' handles may hold, unless configured. */
export const MAX_PREPARED_TEXT = 256 * 1024 * 1024;

/** Handles and SQL text held by every session of one server, and the most they may. */
export class PreparedBudget {
  /** Most handles on the server. */
  readonly maxHandles: number;
  /** Most SQL text on the server, in UTF-16 code units. */
  readonly maxText: number;
  /** Handles held now. */
  handles = 0;
  /** SQL text held now, in UTF-16 code units. */
  text = 0;

  /**
   * @param maxHandles Most handles on the server.
   * @param maxText Most SQL text on the server, in UTF-16 code units.
   */
  constructor(maxHandles: number = MAX_PREPARED, maxText: number = MAX_PREPARED_TEXT) {
    this.maxHandles = maxHandles;
    this.maxText = maxText;
  }
}

/** Handles of one session. */
export class Handles {
  readonly #sql = new Map<number, string>();
  readonly #max: number;
  readonly #budget: PreparedBudget;
  #next = 1;
  #text = 0;

  /**
   * @param max Most handles at once.
   * @param budget What every session of the server holds (a private one by default).
   */
  constructor(max: number = MAX_HANDLES, budget: PreparedBudget = new PreparedBudget()) {
    this.#max = max;
    this.#budget = budget;
  }

  /**
   * Numbers `sql`.
   *
   * @throws {SqliteError} `BAD_REQUEST` when the connection holds its
   *   most handles, or {@link MAX_HANDLE_TEXT} of SQL, already; or the
   *   server holds its most handles or SQL text on all connections.
   */
  add(sql: string): number {
    if (sql.length > MAX_HANDLE_TEXT) {
      throw new SqliteError(
        ErrorCode.BadRequest,
        `Statement too long to prepare: ${sql.length} characters (at most ${MAX_HANDLE_TEXT}); ` +
          "run it by its SQL text instead",
      );
    }
    if (this.#sql.size >= this.#max || this.#text + sql.length > MAX_HANDLE_TEXT) {
      throw new SqliteError(
        ErrorCode.BadRequest,
        `Too many prepared statements: ${this.#sql.size} on this connection, holding ` +
          `${this.#text} characters of SQL (at most ${this.#max}, ${MAX_HANDLE_TEXT}); ` +
          "finalize() the ones no longer needed",
      );
    }
    const b = this.#budget;
    if (b.handles >= b.maxHandles || b.text + sql.length > b.maxText) {
      throw new SqliteError(
        ErrorCode.BadRequest,
        `Too many prepared statements on the server: ${b.handles} on all connections, holding ` +
          `${b.text} characters of SQL (at most ${b.maxHandles}, ${b.maxText}); ` +
          "finalize() the ones no longer needed, or run this statement by its SQL text",
      );
    }
    const handle = this.#next++;
    this.#sql.set(handle, sql);
    this.#text += sql.length;
    b.handles++;
    b.text += sql.length;
    return handle;
  }

  /** True when `handle` numbers a statement. */
  has(handle: number): boolean {
    return this.#sql.has(handle);
  }

  /** The SQL of `handle`. @throws {SqliteError} `UNKNOWN_STATEMENT`. */
  sql(handle: number): string {
    const sql = this.#sql.get(handle);
    if (sql === undefined) throw unknownHandle(handle);
    return sql;
  }

  /** Forgets `handle`. @throws {SqliteError} `UNKNOWN_STATEMENT`. */
  delete(handle: number): void {
    const sql = this.sql(handle);
    this.#sql.delete(handle);
    this.#text -= sql.length;
    this.#budget.handles--;
    this.#budget.text -= sql.length;
  }

  /** Forgets every handle. */
  clear(): void {
    this.#budget.handles -= this.#sql.size;
    this.#budget.text -= this.#text;
    this.#sql.clear();
    this.#text = 0;
  }
}
