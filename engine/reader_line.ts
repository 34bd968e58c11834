/**
 * The line for reader connections lent to reads that went to the
 * background: at most `max` are lent at once (each is a SQLite connection of
 * its own, with its page cache and two open files); a read beyond them waits
 * in line, first come first served, until one is given back. The engine
 * owns the connections; this counts them and keeps the line.
 *
 * @module
 */

/**
 * Reads that went to the background (past the inline budget) running
 * at once, unless configured; more wait in line for a reader connection.
 * Each holds a connection with its page cache and two files open (and SQLite
 * keeps a closed connection's database descriptor open until the server
 * stops, so a burst of N would hold N descriptors for good); 16 keep a
 * machine's cores busy with room for a few long reports beside short reads,
 * within the descriptors the server sets aside besides connections and cursors.
 */
export const MAX_BACKGROUND_READS = 16;

/** A read waiting for a reader. */
export interface LineWaiter<C> {
  /** Called once with the reader now lent to it (give it back when done). */
  take(reader: C): void;
  /** Called once instead, when no reader will come (the engine closes, or one could not be opened). */
  fail(err: Error): void;
}

/** Counts the readers lent for background reads and keeps the reads waiting for one. */
export class ReaderLine<C> {
  /** Readers lent at once, at most. */
  readonly max: number;
  #lent = 0;
  /** In arrival order (a Set keeps insertion order and leaves in O(1)). */
  readonly #waiting = new Set<LineWaiter<C>>();

  /** A line lending at most `max` readers at once. */
  constructor(max: number) {
    this.max = max;
  }

  /** Readers lent now. */
  get lent(): number {
    return this.#lent;
  }

  /** Reads waiting now. */
  get waiting(): number {
    return this.#waiting.size;
  }

  /**
   * Counts one more reader lent, if one may be now (fewer than `max` are,
   * and no read waits before this one); false otherwise: wait with {@link join}.
   */
  enter(): boolean {
    if (this.#lent >= this.max || this.#waiting.size > 0) return false;
    this.#lent++;
    return true;
  }

  /** A reader counted by {@link enter} (or handed to a waiter) is back, none waiting for it. */
  leave(): void {
    this.#lent--;
  }

  /** Queues `w`; returns the function that takes it out of line (a no-op once served). */
  join(w: LineWaiter<C>): () => void {
    this.#waiting.add(w);
    return () => this.#waiting.delete(w);
  }

  /** The first waiter, taken out of line (the reader stays counted, handed to it), or `null`. */
  next(): LineWaiter<C> | null {
    for (const w of this.#waiting) {
      this.#waiting.delete(w);
      return w;
    }
    return null;
  }

  /** Fails every waiter with `err` (the engine closes). */
  close(err: Error): void {
    const waiters = [...this.#waiting];
    this.#waiting.clear();
    for (const w of waiters) w.fail(err);
  }
}
