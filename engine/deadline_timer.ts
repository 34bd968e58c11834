/**
 * A timer for limits a client has to meet (an idle lease, a wait, a hello)
 * that does not count against the client the time the server itself did not
 * run: see {@link DeadlineTimer}.
 *
 * @module
 */

/**
 * A timer that fires more than this late (ms) shows that the server's thread
 * did not run meanwhile: the process was stopped (SIGSTOP, a debugger), its
 * VM paused, a long GC pause, a statement held the thread. A running server's
 * timers are late by a few ms; 73–122 ms under heavy load (event_loop_lag_test).
 */
export const STALL_MS = 100;

/** The longest grace a timer that fired late gives before it enforces (ms). */
export const MAX_GRACE_MS = 1000;

/**
 * Like `setTimeout(onDeadline, ms)`, except when it fires more than
 * {@link STALL_MS} late: the server did not run, so what the client sent
 * meanwhile (its `COMMIT`, the rest of its frame, its `next`) is still
 * unread. It then arms itself once more, for a grace of
 * `min(limitMs, MAX_GRACE_MS)`, and calls `onDeadline` at the end of it,
 * however late that fires. Callers check in `onDeadline` whether the limit
 * is still exceeded (the client may have acted during the grace).
 */
export class DeadlineTimer {
  #timer: ReturnType<typeof setTimeout> | undefined;
  #expired = false;

  /**
   * Arms the timer.
   *
   * @param onDeadline Called once, at the deadline (after the grace when the timer fired late).
   * @param ms Time to the deadline, in ms.
   * @param limitMs The limit this deadline enforces, which bounds the grace; defaults to `ms`.
   */
  constructor(onDeadline: () => void, ms: number, limitMs: number = ms) {
    const due = performance.now() + ms;
    this.#timer = setTimeout(() => {
      if (performance.now() - due <= STALL_MS) return this.#fire(onDeadline);
      this.#timer = setTimeout(
        () => this.#fire(onDeadline),
        Math.min(Math.max(0, limitMs), MAX_GRACE_MS),
      );
    }, ms);
  }

  /** True once `onDeadline` was called. */
  get expired(): boolean {
    return this.#expired;
  }

  /** Disarms the timer (`onDeadline` is not called). Idempotent. */
  clear(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #fire(onDeadline: () => void): void {
    this.#timer = undefined;
    this.#expired = true;
    onDeadline();
  }
}
