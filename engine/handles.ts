/**
 * A session's prepared-statement handles (`prepare` → number → SQL text),
 * bounded so that a client that never finalizes cannot make the server
 * keep its SQL without end. Shared by the single-file engine and cluster
 * mode.
 *
 * @module
 */

import { ErrorCode, SqliteError } from "../protocol/errors.ts";
import { unknownHandle } from "./session_errors.ts";

/** Most handles one connection may hold, unless configured (`maxStatements`). */
export const MAX_HANDLES = 10_000;
/** Most SQL text, in UTF-16 code units, one connection's handles may hold. */
export const MAX_HANDLE_TEXT = 16 * 1024 * 1024;

/** Handles of one session. */
export class Handles {
  readonly #sql = new Map<number, string>();
  readonly #max: number;
  #next = 1;
  #text = 0;

  /** @param max Most handles at once. */
  constructor(max: number = MAX_HANDLES) {
    this.#max = max;
  }

  /**
   * Numbers `sql`.
   *
   * @throws {SqliteError} `BAD_REQUEST` when the connection holds its
   *   most handles, or {@link MAX_HANDLE_TEXT} of SQL, already.
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
    const handle = this.#next++;
    this.#sql.set(handle, sql);
    this.#text += sql.length;
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
  }

  /** Forgets every handle. */
  clear(): void {
    this.#sql.clear();
    this.#text = 0;
  }
}
