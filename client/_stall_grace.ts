/**
 * The client's own stalls. When the client's process does not run for a
 * while (stopped with SIGSTOP or by a debugger, its machine asleep, a long
 * synchronous task or GC pause), the timers that came due meanwhile fire as
 * it goes on, before the replies that arrived meanwhile are read: a timeout
 * checked then would take a reply the server sent in time for none. So a
 * timer that fires late gives a short grace before it enforces, as the
 * server's limits do after the server's own stall (engine/deadline_timer.ts).
 *
 * @module
 */

/**
 * A timer that fires more than this late (ms) shows that the process did
 * not run meanwhile (the server's `STALL_MS`).
 */
export const STALL_MS = 100;

/** The longest grace a timer that fired late gives before it enforces (ms). */
export const MAX_GRACE_MS = 1000;

/**
 * Like `setTimeout(onDeadline, ms)`, except that when it fires more than
 * {@link STALL_MS} late it arms itself once more, for a grace of
 * `min(limitMs, MAX_GRACE_MS)`, and calls `onDeadline` at the end of it.
 *
 * @returns A function that disarms the timer (idempotent).
 */
export function setTimeoutAfterStall(
  onDeadline: () => void,
  ms: number,
  limitMs: number = ms,
): () => void {
  const due = performance.now() + ms;
  let timer = setTimeout(() => {
    if (performance.now() - due <= STALL_MS) return onDeadline();
    timer = setTimeout(onDeadline, Math.min(Math.max(0, limitMs), MAX_GRACE_MS));
  }, ms);
  return () => clearTimeout(timer);
}
