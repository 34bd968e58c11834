/**
 * Turns between connections: one scheduler for the whole process, so that
 * connections that pipeline thousands of requests take turns without
 * holding up a request that arrives on another socket.
 *
 * A connection that used up its turn with requests still queued
 * {@link TurnScheduler.wait | waits}: it joins a FIFO. One timer runs the
 * waiting connections' turns, in order, until {@link ROUND_MS} were spent in
 * that timer's callback, and then arms itself again (`setTimeout(0)`), so
 * that Deno polls the sockets between two rounds: a request that arrives on
 * another connection waits for at most about one round, however many
 * connections wait. (With a timer per connection, all the expired timers ran
 * one after another in the same timers phase, with no socket poll between
 * them: a new request waited for the sum of all the turns.)
 *
 * A connection that is not waiting and receives requests still runs them at
 * once; but while others wait, such turns between two rounds share one more
 * budget of {@link ROUND_MS} ({@link TurnScheduler.inlineLeft}): once it is
 * spent, a connection runs one request at once and waits for the rest. Many
 * pipelining clients whose new requests arrive in the same event-loop turn
 * would otherwise each run a whole turn before the next socket poll.
 *
 * @module
 */

/**
 * Time, in ms, that one round of turns (one run of the scheduler's timer)
 * may take before sockets are polled again.
 */
export const ROUND_MS = 2;

/** Something that takes turns: a connection with more queued work than one turn runs. */
export interface TurnTaker {
  /**
   * Its turn began: it runs for about `ms` (at least one request), and calls
   * {@link TurnScheduler.wait} again when work is left after that.
   *
   * @param ms What is left of this round's budget, in ms.
   * @param alone True when it is the round's first turn and nobody else
   * waits: it may take a longer turn (see the caller's rule).
   */
  takeTurn(ms: number, alone: boolean): void;
}

/**
 * A FIFO of {@link TurnTaker}s waiting for their turn, served by one timer
 * in rounds of at most {@link ROUND_MS}. No timer is armed while nobody
 * waits.
 */
export class TurnScheduler {
  /** Waiting takers, in order of arrival (a `Set` keeps insertion order). */
  readonly #waiting = new Set<TurnTaker>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  readonly #roundMs: number;
  /** Time spent in turns taken at once (not given by the timer) since the last round. */
  #inlineSpent = 0;

  /** @param roundMs Budget of one round, in ms. */
  constructor(roundMs: number = ROUND_MS) {
    this.#roundMs = roundMs;
  }

  /** Takers waiting for their turn. */
  get size(): number {
    return this.#waiting.size;
  }

  /** True while the timer is armed (somebody waits). */
  get armed(): boolean {
    return this.#timer !== undefined;
  }

  /**
   * Puts `taker` at the end of the queue (where it stays, if it already
   * waits), and arms the timer.
   */
  wait(taker: TurnTaker): void {
    this.#waiting.add(taker);
    if (this.#timer === undefined) {
      this.#inlineSpent = 0;
      this.#timer = setTimeout(() => this.#round(), 0);
    }
  }

  /**
   * How long, in ms, a connection that is not waiting may run the requests
   * it just received: without limit while nobody waits, else what is left of
   * the budget shared by such turns until the next round (0: one request).
   */
  get inlineLeft(): number {
    if (this.#waiting.size === 0) return Infinity;
    return Math.max(0, this.#roundMs - this.#inlineSpent);
  }

  /**
   * Counts `ms` spent in a turn taken at once (see {@link inlineLeft}); nothing
   * while nobody waits.
   */
  charge(ms: number): void {
    if (this.#waiting.size > 0) this.#inlineSpent += ms;
  }

  /** Takes `taker` out of the queue (a closed connection); no timer is left for nobody. */
  leave(taker: TurnTaker): void {
    this.#waiting.delete(taker);
    if (this.#waiting.size === 0 && this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
  }

  /** Runs waiting takers' turns, first come first served, until the round's budget is spent. */
  #round(): void {
    this.#timer = undefined;
    const start = performance.now();
    let first = true;
    try {
      for (let elapsed = 0; elapsed < this.#roundMs; elapsed = performance.now() - start) {
        const taker: TurnTaker | undefined = this.#waiting.values().next().value;
        if (taker === undefined) break;
        this.#waiting.delete(taker);
        const alone = first && this.#waiting.size === 0;
        first = false;
        taker.takeTurn(this.#roundMs - elapsed, alone);
      }
    } finally {
      this.#inlineSpent = 0;
      if (this.#waiting.size > 0) this.#timer ??= setTimeout(() => this.#round(), 0);
    }
  }
}
