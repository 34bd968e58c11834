/**
 * A server-side cursor: a statement stepped a chunk at a time, so a result of
 * any size streams in bounded memory. The client asks for each chunk (its
 * outstanding requests are its credit), so the server never runs ahead of a
 * slow reader.
 *
 * @module
 */

import { normalizeRows, type RunLimits, stepRowsInto, toSqliteError } from "./connection.ts";

/** Rows per chunk at most. */
export const CHUNK_ROWS = 1024;
/** Approximate bytes per chunk at most. */
export const CHUNK_BYTES = 64 * 1024;
/**
 * Time budget of one chunk in ms: other clients' requests are served
 * between chunks, so this bounds how long a stream delays them.
 */
export const CHUNK_MS = 0.5;

/** One open cursor. */
export class Cursor {
  /** Result column names. */
  readonly columns: string[];
  readonly #timeout: number;
  #spent = 0;
  #it: Iterator<unknown[]> | null;
  #rows: unknown[][] | null;
  #release: (() => void) | null;

  /**
   * @param columns Result column names.
   * @param source A live row iterator, or rows already materialised.
   * @param timeout Time the server may spend stepping the cursor, in ms.
   * @param release Called once when the cursor ends (returns its connection).
   */
  constructor(
    columns: string[],
    source: Iterator<unknown[]> | unknown[][],
    timeout: number,
    release: () => void,
  ) {
    this.columns = columns;
    this.#timeout = timeout;
    if (Array.isArray(source)) {
      this.#rows = source;
      this.#it = null;
    } else {
      this.#it = source;
      this.#rows = null;
    }
    this.#release = release;
  }

  /**
   * Produces the next chunk.
   *
   * @returns `[rows, done]`; after `done` the cursor is closed.
   * @throws {SqliteError} `STATEMENT_TIMEOUT` once the time spent stepping
   *   the cursor, over all chunks, exceeds the timeout, or SQLite's error;
   *   the cursor is closed then.
   */
  next(): [unknown[][], boolean] {
    if (this.#rows !== null) {
      const rows = this.#rows.splice(0, CHUNK_ROWS);
      const done = this.#rows.length === 0;
      if (done) this.close();
      return [rows, done];
    }
    if (this.#it === null) return [[], true];
    // The deadline counts the server's time stepping this cursor, summed
    // over chunks; the client's time between chunks does not count.
    const start = performance.now();
    const limits: RunLimits = {
      deadline: start + this.#timeout - this.#spent,
      timeout: this.#timeout,
      maxBytes: Infinity,
    };
    const out: unknown[][] = [];
    let done: boolean;
    try {
      done = stepRowsInto(this.#it, out, CHUNK_ROWS, CHUNK_BYTES, limits, start + CHUNK_MS).done;
    } catch (err) {
      this.close();
      throw toSqliteError(err);
    }
    this.#spent += performance.now() - start;
    normalizeRows(out);
    if (done) this.close();
    return [out, done];
  }

  /** Stops the statement and releases its connection. Idempotent. */
  close(): void {
    try {
      this.#it?.return?.();
    } catch {
      // Resetting a failed statement may throw again; it is reset either way.
    }
    this.#it = null;
    this.#rows = null;
    const release = this.#release;
    this.#release = null;
    release?.();
  }
}
