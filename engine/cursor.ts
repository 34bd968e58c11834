/**
 * A server-side cursor: a statement stepped a chunk at a time, so a result of
 * any size streams in bounded memory. The client asks for each chunk (its
 * outstanding requests are its credit), so the server never runs ahead of a
 * slow reader.
 *
 * With a binding that has background steps, the first step of each chunk
 * runs off the main thread (a slow first row never holds up other clients)
 * and a timer interrupts it when the cursor's time is up; the rows that
 * follow are stepped inline for at most {@link CHUNK_MS}, each step under
 * the time left to the deadline (a progress handler stops it there). A
 * cursor on the writer (inside a transaction) steps the same way when its
 * session says the writer may step in the background (it keeps the writer
 * meanwhile). A first step there that meets another process's lock changed
 * nothing: the session has it wait for the lock ({@link Cursor.waitForLock}).
 *
 * @module
 */

import type { SqlValue } from "./binding/binding.ts";
import type { Prepared } from "./connection.ts";
import { LockBusy, metLock, rowBytes, statementTimeout } from "./run.ts";
import { SqliteError } from "../protocol/errors.ts";
import { lockedMessage } from "./binding/_errors.ts";

/** SQLite's primary code for an interrupted statement. */
const SQLITE_INTERRUPT = 9;

/** Rows per chunk at most. */
export const CHUNK_ROWS = 1024;
/**
 * Bytes per chunk at most, as {@link rowBytes} estimates them: a row that
 * would take a chunk past this starts the next chunk instead, so a chunk
 * larger than this holds one row alone (and a reply too large to send is
 * about that row only, never rows that fit).
 */
export const CHUNK_BYTES = 64 * 1024;
/**
 * Time budget of one chunk's inline stepping in ms: other clients' requests
 * are served between chunks, so this bounds how long a stream delays them.
 */
export const CHUNK_MS = 0.5;

/**
 * The chunk byte budget for replies held to `maxFrameSize`: {@link CHUNK_BYTES},
 * or less when the frame is small. {@link rowBytes} counts a string by its
 * UTF-16 length, which its UTF-8 may exceed up to three times, so a budget of
 * a third of the frame keeps every chunk of more than one row within it:
 * rows that fit a frame one at a time always stream, whatever the timing.
 */
export function chunkBytesFor(maxFrameSize = Infinity): number {
  return Math.max(1, Math.min(CHUNK_BYTES, Math.floor((maxFrameSize - 64) / 3)));
}

/**
 * How many of `rows`, from `from`, make the next chunk: up to {@link CHUNK_ROWS}
 * and `maxBytes` as {@link rowBytes} counts them, and at least one row.
 */
export function chunkLength(rows: readonly SqlValue[][], from: number, maxBytes: number): number {
  let n = 0;
  for (let bytes = 0; from + n < rows.length && n < CHUNK_ROWS; n++) {
    bytes += rowBytes(rows[from + n]);
    if (n > 0 && bytes > maxBytes) break;
  }
  return n;
}

/** One chunk: `[rows, done]`. */
export type Chunk = [rows: SqlValue[][], done: boolean];

/** One open cursor. */
export class Cursor {
  /** Result column names. */
  readonly columns: string[];
  readonly #timeout: number;
  /** Bytes per chunk at most ({@link chunkBytesFor}). */
  readonly #chunkBytes: number;
  #spent = 0;
  #p: Prepared | null;
  #rows: SqlValue[][] | null;
  /** A row stepped but held back because it would take its chunk past its byte budget: it starts the next chunk. */
  #held: SqlValue[] | null = null;
  #release: (() => void) | null;
  /** The background step now running, if any. */
  #inflight: Promise<boolean> | null = null;
  /**
   * Why the cursor ended before its last row: ended from outside ({@link end},
   * {@link cancel}), or the error of a step that followed rows of its chunk
   * (the chunk was delivered). What `next` throws.
   */
  #ended: unknown = null;
  /**
   * The error that failed a statement after the rows materialised in
   * `source`: thrown by the {@link next} after their last chunk.
   */
  #failure: unknown;
  /** True when the cursor steps the writer (it was opened inside a transaction). */
  readonly onWriter: boolean;
  /** True once a step of the statement returned (its first step did its writing). */
  #started = false;
  /** While the cursor waits between tries at another process's lock: ends the wait. */
  #wake: (() => void) | null = null;
  /** True once the cursor interrupted its connection (its deadline, {@link cancel}). */
  #interrupted = false;

  /**
   * @param columns Result column names.
   * @param source A bound statement this cursor now owns, or rows already materialised.
   * @param timeout Time the server may spend stepping the cursor, in ms.
   * @param release Called once when the cursor ends (returns its connection).
   * @param failure With rows materialised: the error that failed the
   *   statement after them, thrown by the {@link next} after they were
   *   delivered (as a streaming cursor does, see {@link next}); `null` when
   *   the statement ran to its end.
   * @param chunkBytes Bytes per chunk at most ({@link chunkBytesFor} of the frame).
   */
  constructor(
    columns: string[],
    source: Prepared | SqlValue[][],
    timeout: number,
    release: () => void,
    failure: unknown = null,
    chunkBytes = CHUNK_BYTES,
  ) {
    this.columns = columns;
    this.#timeout = timeout;
    this.#chunkBytes = chunkBytes;
    this.#failure = failure;
    if (Array.isArray(source)) {
      this.#rows = source;
      this.#p = null;
    } else {
      this.#p = source;
      this.#rows = null;
    }
    this.onWriter = !Array.isArray(source) && source.onWriter;
    this.#release = release;
  }

  /**
   * Produces the next chunk; after `done` the cursor is closed.
   *
   * A step that fails after rows of the chunk were collected ends the
   * cursor (closed at once, its connection released) and the chunk is
   * returned as not done: the error is thrown by the next call, so a stream
   * delivers every row before it. (Unless the error ended the transaction
   * the cursor reads in: then it is thrown at once.)
   *
   * @param writerInBackground A cursor on the writer: whether its steps may
   *   run in the background, its session keeping the writer meanwhile
   *   (false: inline only, as while change feeds capture).
   * @throws {SqliteError} `STATEMENT_TIMEOUT` once the time spent stepping
   *   the cursor, over all chunks, exceeds the timeout, or SQLite's error;
   *   the cursor is closed then. The error given to {@link end} once the
   *   cursor was ended from outside.
   * @throws {LockBusy} when the first step of a write on the writer met a
   *   lock another process holds: nothing changed, the cursor stays open;
   *   {@link waitForLock} steps it again.
   */
  next(writerInBackground = false): Chunk | Promise<Chunk> {
    if (this.#ended !== null) throw this.#ended;
    if (this.#rows !== null) {
      const rows = this.#rows;
      const chunk = rows.splice(0, chunkLength(rows, 0, this.#chunkBytes));
      if (rows.length > 0) return [chunk, false];
      this.close();
      if (this.#failure === null) return [chunk, true];
      this.#ended = this.#failure;
      return [chunk, false];
    }
    const p = this.#p;
    if (p === null) return [[], true];
    const out: SqlValue[][] = [];
    if (this.#held !== null) {
      out.push(this.#held);
      this.#held = null;
    }
    // The writer steps in the background only when its session can keep it
    // meanwhile (its owner's lease must not use it while the step runs).
    if (!p.conn.caps.background || (p.onWriter && !writerInBackground)) {
      return this.#inline(p, out, null);
    }
    return this.#firstInBackground(p, out);
  }

  /**
   * After {@link next} threw {@link LockBusy}: the first chunk, once the
   * first step got past another process's lock. `inBackground`: that step
   * runs in the background, where SQLite waits for the lock up to the busy
   * timeout (its connection's own); else (a binding that cannot step in the
   * background) it is tried again on the main thread from a timer, 5 ms
   * doubling to 50 ms, until `busyTimeout`. The wait counts against the
   * cursor's timeout, and {@link cancel} ends it: between tries at once; in
   * the background by the interrupt, which the binding's wait for the lock
   * sees within a slice of it (`LOCK_WAIT_SLICE_MS` of ffi.ts).
   *
   * @throws {SqliteError} `SQLITE_BUSY` once the lock was held past the
   *   busy timeout (nothing changed), and as {@link next}.
   */
  waitForLock(busyTimeout: number, inBackground: boolean): Promise<Chunk> {
    const p = this.#p;
    if (p === null) return Promise.resolve([[], true]);
    if (inBackground) return this.#firstInBackground(p, []);
    return this.#retryInline(p, busyTimeout);
  }

  async #retryInline(p: Prepared, busyTimeout: number): Promise<Chunk> {
    const first = performance.now();
    for (let pause = 5;; pause = Math.min(pause * 2, 50)) {
      const start = performance.now();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const left = this.#timeout - this.#spent;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        timer = setTimeout(resolve, Math.max(0, Math.min(pause, left)));
      });
      clearTimeout(timer);
      this.#wake = null;
      this.#spent += performance.now() - start;
      if (this.#ended !== null) throw this.#ended;
      if (this.#p === null) return [[], true];
      if (this.#spent >= this.#timeout) return this.#failed(p, [], statementTimeout(this));
      try {
        return this.#inline(p, [], null);
      } catch (err) {
        if (!(err instanceof LockBusy)) throw err;
      }
      if (performance.now() - first >= busyTimeout) {
        const locked = lockedMessage("database is locked", busyTimeout);
        return this.#failed(p, [], new SqliteError("SQLITE_BUSY", locked, 5));
      }
    }
  }

  /**
   * True once the cursor interrupted its connection (its deadline, or
   * {@link cancel}, while a step ran in the background): on the writer the
   * interrupt may stop other statements there.
   */
  get interrupted(): boolean {
    return this.#interrupted;
  }

  /** Steps once in the background, then collects rows after `out` (a row held back) inline. */
  async #firstInBackground(p: Prepared, out: SqlValue[][]): Promise<Chunk> {
    const start = performance.now();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      this.#interrupted = true;
      p.conn.db.interrupt();
    }, Math.max(0, this.#timeout - this.#spent));
    let more: boolean;
    const step = p.stmt.stepInBackground();
    this.#inflight = step;
    try {
      more = await step;
    } catch (err) {
      this.#inflight = null;
      if (this.#ended !== null) {
        this.close();
        throw this.#ended;
      }
      return this.#failed(
        p,
        out,
        timedOut && isInterrupt(err) ? statementTimeout(this) : err,
      );
    } finally {
      this.#inflight = null;
      clearTimeout(timer);
      this.#spent += performance.now() - start;
    }
    this.#started = true;
    // Ended while the step ran (cancelled), or closed (its session went away).
    if (this.#ended !== null) throw this.#ended;
    if (this.#p === null) return [[], true];
    if (timedOut) {
      // The timer fired as the step returned: its interrupt is still pending
      // on the connection and would stop the next step. The time is up anyway.
      return this.#failed(p, out, statementTimeout(this));
    }
    return this.#inline(p, out, more);
  }

  /**
   * Collects rows inline, starting from a step that returned `more` (`null`:
   * step first). Each step runs under the time left to the deadline, where
   * the binding can stop it (a progress handler): a row that turns slow
   * after fast ones fails with `STATEMENT_TIMEOUT` at the deadline. A row
   * that would take the chunk past its byte budget is held back for the
   * next chunk, unless it would be the chunk's first. A step that fails
   * ends the cursor, after the rows collected (see {@link #failed}).
   */
  #inline(p: Prepared, out: SqlValue[][], more: boolean | null): Chunk {
    // The deadline counts the server's time stepping this cursor, summed
    // over chunks; the client's time between chunks does not count.
    const start = performance.now();
    const deadline = start + this.#timeout - this.#spent;
    const softEnd = start + CHUNK_MS;
    const maxBytes = this.#chunkBytes;
    const db = p.conn.db;
    const timed = p.conn.caps.interrupt && deadline !== Infinity;
    let bytes = 0;
    for (const row of out) bytes += rowBytes(row);
    let failed = false;
    let failure: unknown;
    let locked = false;
    try {
      if (timed) db.setBudget(Math.max(0, deadline - start));
      if (more === null) {
        try {
          more = p.stmt.step();
        } catch (err) {
          // The first step of a write on the writer met another process's
          // lock: it changed nothing (SQLite undid the statement alone), and
          // the statement, reset, steps again from its start.
          locked = !this.#started && p.onWriter && metLock(p.conn, err);
          throw err;
        }
      }
      this.#started = true;
      while (more) {
        const row = p.stmt.row();
        const size = rowBytes(row);
        if (out.length > 0 && bytes + size > maxBytes) {
          this.#held = row;
          break;
        }
        out.push(row);
        bytes += size;
        const now = performance.now();
        if (now > deadline) throw statementTimeout(this);
        if (out.length >= CHUNK_ROWS || bytes >= maxBytes || now > softEnd) break;
        more = p.stmt.step();
      }
    } catch (err) {
      failed = true;
      failure = timed && isInterrupt(err) ? statementTimeout(this) : err;
    } finally {
      // Before any background step: a handler there would call back into
      // the main thread (the binding drops it then, too).
      if (timed) db.setBudget(null);
    }
    if (locked) {
      this.#spent += performance.now() - start;
      throw new LockBusy();
    }
    if (failed) return this.#failed(p, out, failure);
    this.#spent += performance.now() - start;
    if (!more) this.close();
    return [out, !more];
  }

  /**
   * A step failed with `err` after the rows `out` of its chunk: closes the
   * cursor, and returns them as a chunk that is not done, keeping `err` for
   * the next {@link next} to throw. Thrown at once when there are no rows,
   * and when the failure ended the transaction a cursor on the writer reads
   * in (SQLite rolled it back): its session must learn of it now, and the
   * rows are of a transaction that is over.
   */
  #failed(p: Prepared, out: SqlValue[][], err: unknown): Chunk {
    this.close();
    if (out.length === 0 || (p.onWriter && !p.conn.inTransaction)) throw err;
    this.#ended = err;
    return [out, false];
  }

  /**
   * Why the cursor ended before its last row, once it has (what its next
   * {@link next} throws); `null` while it has not.
   */
  get ended(): unknown {
    return this.#ended;
  }

  /**
   * Counts `ms` the request waited before the cursor opened (for another
   * program's lock) against its timeout: it keeps the deadline it was sent
   * with, as a statement does.
   */
  spend(ms: number): void {
    this.#spent += Math.max(0, ms);
  }

  /** The cursor's timeout, for its error message. */
  get timeout(): number {
    return this.#timeout;
  }

  /**
   * Ends the cursor from outside: closes it, and its next {@link next}
   * throws `reason` (e.g. its transaction ended).
   */
  end(reason: Error): void {
    if (this.#p === null && this.#rows === null) return;
    this.#ended = reason;
    this.close();
  }

  /**
   * Stops a step running in the background, or a wait for another
   * process's lock ({@link waitForLock}), if any, and ends the cursor with
   * `reason` (the pending {@link next} rejects with it).
   *
   * @returns true when a step was running or the cursor was waiting.
   */
  cancel(reason: Error): boolean {
    if (this.#inflight === null && this.#wake === null) return false;
    this.end(reason);
    return true;
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
    this.#held = null;
    this.#wake?.();
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
    this.#interrupted = true;
    p?.conn.db.interrupt();
    this.#inflight.then(finish, finish);
  }
}

/** The error of a statement stopped by `sqlite3_interrupt` or the progress handler. */
function isInterrupt(err: unknown): boolean {
  return err instanceof SqliteError && ((err.sqliteCode ?? 0) & 0xff) === SQLITE_INTERRUPT;
}
