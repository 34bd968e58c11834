/**
 * Keeps the event loop's timers running while statements step in the
 * background.
 *
 * Deno resolves every nonblocking FFI call that has completed before it
 * runs due timers, and a step in the background completes in tens of µs:
 * a chain of them (a script's statements, a read's rows), each followed by a
 * slice of inline work, is never interrupted by a timer, and with a few
 * chains at once the timers (the server's turns between connections,
 * deadlines, idle timeouts) waited 270–950 ms (measured: 4 chains of
 * "step in the background, then 2 ms inline", Deno 2.9.6, 2 cores). So a
 * background step that completes more than {@link TIMER_TURN_MS} after
 * timers last ran waits for them to run (a `setTimeout(0)`, shared by all
 * steps completing meanwhile) before it returns.
 *
 * @module
 */

/** How long (ms) background steps may complete one after another without the timers running. */
export const TIMER_TURN_MS = 4;

/** When our last timer ran (`performance.now()`). */
let timersRanAt = 0;
/** The pending turn, shared by every step that completes before it runs. */
let pending: Promise<void> | null = null;

function turn(resolve: () => void): void {
  setTimeout(() => {
    pending = null;
    timersRanAt = performance.now();
    resolve();
  }, 0);
}

/**
 * A promise that settles once the event loop ran its due timers, when they
 * may not have run for {@link TIMER_TURN_MS}; otherwise `null` (go on).
 */
export function timerTurn(): Promise<void> | null {
  if (pending !== null) return pending;
  if (performance.now() - timersRanAt < TIMER_TURN_MS) return null;
  return pending = new Promise<void>(turn);
}
