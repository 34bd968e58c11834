/**
 * Room for the Kysely adapter's streams on a client's shared pool. A client
 * keeps at most `max` × the server's `maxCursors` cursors open at once (64 by
 * default) and fails the next `iterate()` at once with `BAD_REQUEST` "Too many
 * open cursors" (see the client's `iterate()`). Kysely's own dialects make a
 * `stream()` wait for a connection instead, so under load (an HTTP server
 * streaming an export per request) every stream ends up served: this module
 * gives the adapter that behaviour, a stream past the limit waiting for one
 * of the adapter's streams to end.
 *
 * @module
 */

import { ErrorCode, SqliteError } from "../protocol/errors.ts";

/** True when `err` is the server's refusal of a cursor past its limit. */
function noCursorRoom(err: unknown): boolean {
  return err instanceof SqliteError && err.code === ErrorCode.BadRequest &&
    err.message.startsWith("Too many open cursors");
}

/** How often (ms) a stream waiting for room tries again without being woken. */
const RETRY_MS = 250;

/** A cursor that opened, with its first result. */
export interface OpenedCursor<R> {
  iterator: AsyncIterator<R>;
  first: IteratorResult<R>;
}

/**
 * Ends the streams that were dropped unfinished (their iterator neither read
 * to its end nor closed): the client closes such a stream's cursor once it
 * is garbage-collected, and so this counts it ended then.
 */
const dropped = new FinalizationRegistry<StreamRoom>((room) => room.ended());

/**
 * Counts the streams of one Kysely driver open on the shared pool, and wakes
 * one stream waiting for room each time one of them ends.
 */
export class StreamRoom {
  /** Streams that opened and have not ended. */
  #open = 0;
  /** Cursors being opened (their first result not in yet): they may open, then end. */
  #opening = 0;
  readonly #waiting: (() => void)[] = [];

  /**
   * Opens a cursor with `start` and reads its first result; while the client
   * has no room for one and a stream of this room is open or opening (it
   * will end and free one), waits for that and tries again. With none (the
   * cursors belong to other code using the client, which this room cannot
   * wait for), the refusal is thrown as it came. The stream counts as open
   * until {@link ended} is called with `holder` (an object the stream keeps
   * until it ends), or until `holder` is garbage-collected (the stream was
   * dropped unfinished: the client closes its cursor then too).
   */
  async open<R>(start: () => AsyncIterator<R>, holder: object): Promise<OpenedCursor<R>> {
    for (;;) {
      this.#opening++;
      const iterator = start();
      try {
        const first = await iterator.next();
        this.#opening--;
        this.#open++;
        dropped.register(holder, this, holder);
        return { iterator, first };
      } catch (err) {
        this.#opening--;
        if (!noCursorRoom(err) || this.#idle()) {
          this.#wake();
          throw err;
        }
      }
      await this.#wait();
    }
  }

  /**
   * Until a stream of this room ends, or {@link RETRY_MS} passed: cursors
   * also close without a stream's end being seen here in time (a dropped
   * stream's, once collected, after its close reached the server; another
   * caller's), so a waiting stream tries again now and then.
   */
  async #wait(): Promise<void> {
    let wake!: () => void;
    const woken = new Promise<void>((resolve) => wake = resolve);
    this.#waiting.push(wake);
    const timer = setTimeout(wake, RETRY_MS);
    try {
      await woken;
    } finally {
      clearTimeout(timer);
      const i = this.#waiting.indexOf(wake);
      if (i !== -1) this.#waiting.splice(i, 1);
    }
  }

  /**
   * A stream opened by {@link open} ended (`holder`: the one it was opened
   * with; none when it was collected): one waiting stream tries again.
   */
  ended(holder?: object): void {
    if (holder !== undefined) dropped.unregister(holder);
    this.#open--;
    this.#waiting.shift()?.();
    this.#wake();
  }

  /** No stream of this room is open or opening: none will end to free a cursor. */
  #idle(): boolean {
    return this.#open + this.#opening === 0;
  }

  /** When idle, every waiting stream tries again (none could wait for another end). */
  #wake(): void {
    if (this.#idle()) { for (const wake of this.#waiting.splice(0)) wake(); }
  }
}
