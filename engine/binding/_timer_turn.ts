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
 * "step in the background, then 2 ms inline", Deno 2.9.6, 2 cores).
 *
 * So a background step, as it starts, arms a probe (one `setTimeout(0)`,
 * shared by every step while it is pending) unless one is pending already:
 * it fires as soon as timers run. A step that completes while the probe has
 * been pending for longer than the allowed interval waits for it (timers
 * starve: let them run); otherwise it goes on at once. The first step after
 * an idle period never waits (its probe was armed as it started), and
 * neither do steps while timers run freely (each probe fires in time).
 *
 * The allowed interval adapts: it starts at {@link TIMER_TURN_MS}; after a
 * forced turn during whose period no other work started ({@link noteWork}:
 * the server counts every request it starts, an interrupt counts too) it
 * doubles, up to {@link MAX_TIMER_TURN_MS}, so that a lone client's long
 * script pays for few turns; it is back at {@link TIMER_TURN_MS} once
 * other work ran, or once a probe fired without a step waiting for it.
 *
 * @module
 */

/** How long (ms) a probe may be pending before a completing step waits for it, at first. */
export const TIMER_TURN_MS = 4;
/**
 * Longest the allowed interval grows (ms) while forced turns find no other
 * work: a statement's deadline timer then still fires within about this
 * plus one inline slice (2 ms) of its time.
 */
export const MAX_TIMER_TURN_MS = 16;

/** The allowed interval now (ms). */
let allowedMs = TIMER_TURN_MS;
/** Whether a probe is pending, and since when (`performance.now()`). */
let pending = false;
let armedAt = 0;
/** The pending probe's timer: unref'd (a probe keeps nothing alive) until a step waits for it. */
let probe = 0;
/** {@link work} when the pending probe was armed. */
let workMark = 0;
/** Work started anywhere ({@link noteWork}). */
let work = 0;
/** The forced turn: settles when the pending probe fires (made by the first step to wait). */
let turn: Promise<void> | null = null;
let endTurn: (() => void) | null = null;
/** The last probe was waited for; its period's work is judged when the next one is armed. */
let forced = false;
/** {@link work} when the forced probe was armed. */
let forcedMark = 0;

function fire(): void {
  pending = false;
  const end = endTurn;
  if (end === null) return;
  forced = true;
  forcedMark = workMark;
  turn = endTurn = null;
  end();
}

/** Counts work started elsewhere: a forced turn that let some run keeps the interval short. */
export function noteWork(): void {
  work++;
}

/** Arms the probe as a background step starts, unless one is pending. */
export function armTimerProbe(): void {
  if (pending) return;
  // Judge the last period: lengthen the interval only when a forced turn let nothing else start.
  if (forced) {
    allowedMs = work !== forcedMark ? TIMER_TURN_MS : Math.min(2 * allowedMs, MAX_TIMER_TURN_MS);
    forced = false;
  } else {
    allowedMs = TIMER_TURN_MS;
  }
  pending = true;
  armedAt = performance.now();
  workMark = work;
  probe = setTimeout(fire, 0) as unknown as number;
  Deno.unrefTimer(probe);
}

/**
 * As a background step completes: a promise that settles once the event
 * loop ran its due timers, when the probe has been pending for longer than
 * the allowed interval; otherwise `null` (go on).
 */
export function timerTurn(): Promise<void> | null {
  if (!pending) return null;
  if (turn !== null) return turn;
  if (performance.now() - armedAt <= allowedMs) return null;
  Deno.refTimer(probe); // (a step waits for it now)
  return turn = new Promise<void>((resolve) => endTurn = resolve);
}

/**
 * Clears a pending probe no step waits for (an engine closing: nothing of
 * it steps any more, and a probe left pending would outlive it, e.g. past
 * the end of a test). Another engine's next step arms a new one.
 */
export function disarmTimerProbe(): void {
  if (!pending || endTurn !== null) return;
  clearTimeout(probe);
  pending = false;
}
