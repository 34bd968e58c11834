/**
 * A server-side cursor: a statement stepped a chunk at a time, so a result of
 * any size streams in bounded memory. The client asks for each chunk (its
 * outstanding requests are its credit), so the server never runs ahead of a
 * slow reader.
 *
 * With a binding that has background steps, the first step of each chunk
 * runs off the main thread (a slow first row never holds up other clients)
 * and a timer interrupts it when the cursor's time is up; the rows that
 * follow are stepped inline for at most {@link CHUNK_MS}.
 *
 * @module
 */

import type { SqlValue } from "./binding/binding.ts";
import type { Prepared } from "./connection.ts";
import { rowBytes, statementTimeout } from "./run.ts";
import { SqliteError } from "../protocol/errors.ts";

/** Rows per chunk at most. */
export const CHUNK_ROWS = 1024;
/** Approximate bytes per chunk at most. */
export const CHUNK_BYTES = 64 * 1024;
/**
 * Time budget of one chunk's inline stepping in ms: other clients' requests
 * are served between chunks, so this bounds how long a stream delays them.
 */
export const CHUNK_MS = 0.5;

/** One chunk: `[rows, done]`. */
export type Chunk = [rows: SqlValue[][], done: boolean];

/** One open cursor. */
export class Cursor {
  /** Result column names. */
  readonly columns: string[];
  readonly #timeout: number;
  #spent = 0;
  #p: Prepared | null;
  #rows: SqlValue[][] | null;
  #release: (() => void) | null;
  /** The background step now running, if any. */
  #inflight: Promise<boolean> | null = null;

  /**
   * @param columns Result column names.
   * @param source A bound statement this cursor now owns, or rows already materialised.
   * @param timeout Time the server may spend stepping the cursor, in ms.
   * @param release Called once when the cursor ends (returns its connection).
   */
  constructor(
    columns: string[],
    source: Prepared | SqlValue[][],
    timeout: number,
    release: () => void,
  ) {
    this.columns = columns;
    this.#timeout = timeout;
    if (Array.isArray(source)) {
      this.#rows = source;
      this.#p = null;
    } else {
      this.#p = source;
      this.#rows = null;
    }
    this.#release = release;
  }

  /**
   * Produces the next chunk; after `done` the cursor is closed.
   *
   * @throws {SqliteError} `STATEMENT_TIMEOUT` once the time spent stepping
   *   the cursor, over all chunks, exceeds the timeout, or SQLite's error;
   *   the cursor is closed then.
   */
  next(): Chunk | Promise<Chunk> {
    if (this.#rows !== null) {
      const rows = this.#rows.splice(0, CHUNK_ROWS);
      const done = this.#rows.length === 0;
      if (done) this.close();
      return [rows, done];
    }
    const p = this.#p;
    if (p === null) return [[], true];
    // The writer is stepped inline: its owner's lease may need it meanwhile.
    if (!p.conn.caps.background || p.onWriter) return this.#inline(p, [], p.stmt.step());
    return this.#firstInBackground(p);
  }

  async #firstInBackground(p: Prepared): Promise<Chunk> {
    const start = performance.now();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      p.conn.db.interrupt();
    }, Math.max(0, this.#timeout - this.#spent));
    let more: boolean;
    const step = p.stmt.stepInBackground();
    this.#inflight = step;
    try {
      more = await step;
    } catch (err) {
      this.#inflight = null;
      this.close();
      throw timedOut && err instanceof SqliteError ? statementTimeout(this) : err;
    } finally {
      this.#inflight = null;
      clearTimeout(timer);
      this.#spent += performance.now() - start;
    }
    // Closed while the step ran (its session went away): nothing more.
    if (this.#p === null) return [[], true];
    if (timedOut) {
      // The timer fired as the step returned: its interrupt is still pending
      // on the connection and would stop the next step. The time is up anyway.
      this.close();
      throw statementTimeout(this);
    }
    return this.#inline(p, [], more);
  }

  /** Collects rows inline, starting from a step that returned `more`. */
  #inline(p: Prepared, out: SqlValue[][], more: boolean): Chunk {
    // The deadline counts the server's time stepping this cursor, summed
    // over chunks; the client's time between chunks does not count.
    const start = performance.now();
    const deadline = start + this.#timeout - this.#spent;
    const softEnd = start + CHUNK_MS;
    let bytes = 0;
    try {
      while (more) {
        const row = p.stmt.row();
        out.push(row);
        bytes += rowBytes(row);
        const now = performance.now();
        if (now > deadline) throw statementTimeout(this);
        if (out.length >= CHUNK_ROWS || bytes >= CHUNK_BYTES || now > softEnd) break;
        more = p.stmt.step();
      }
    } catch (err) {
      this.close();
      throw err;
    }
    this.#spent += performance.now() - start;
    if (!more) this.close();
    return [out, !more];
  }

  /** The cursor's timeout, for its error message. */
  get timeout(): number {
    return this.#timeout;
  }

  /**
   * Stops the statement and releases its connection. Idempotent. A step
   * running in the background is interrupted first; the statement is
   * finalized and the connection released once it has returned (the
   * connection is busy until then).
   */
  close(): void {
    const p = this.#p;
    this.#p = null;
    this.#rows = null;
    const release = this.#release;
    this.#release = null;
    const finish = () => {
      p?.stmt.finalize();
      release?.();
    };
    if (this.#inflight === null) {
      finish();
      return;
    }
    p?.conn.db.interrupt();
    this.#inflight.then(finish, finish);
  }
}
