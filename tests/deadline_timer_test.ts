/**
 * `engine/deadline_timer.ts` on its own: a timer that fires on time acts at
 * once; one that fires late (here: the event loop held by a busy loop, as a
 * stopped or paused server is) gives a grace of min(limit, 1 s) first, once.
 */

import assert from "node:assert/strict";
import { DeadlineTimer } from "../engine/deadline_timer.ts";
import { delay } from "./_helpers.ts";

/** Holds the event loop (and every timer) for `ms`, as a stopped process would. */
function stall(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // busy: nothing else runs
  }
}

/** A DeadlineTimer whose calls are counted, and a promise of the first. */
function counted(ms: number, limitMs?: number): {
  timer: DeadlineTimer;
  calls: () => number;
  fired: Promise<number>;
} {
  let calls = 0;
  let resolve!: (at: number) => void;
  const fired = new Promise<number>((r) => resolve = r);
  const timer = new DeadlineTimer(
    () => {
      calls++;
      resolve(performance.now());
    },
    ms,
    limitMs,
  );
  return { timer, calls: () => calls, fired };
}

Deno.test("DeadlineTimer fires once at its deadline when the event loop runs", async () => {
  const t0 = performance.now();
  const { timer, calls, fired } = counted(40);
  assert.equal(timer.expired, false);
  const at = await fired;
  assert.ok(at - t0 >= 39, `fired after ${(at - t0).toFixed(0)} ms`);
  assert.equal(timer.expired, true);
  await delay(60);
  assert.equal(calls(), 1);
});

Deno.test("DeadlineTimer fired late (a stalled loop) waits a grace of its limit before it enforces", async () => {
  const { timer, calls, fired } = counted(50, 400);
  stall(300); // past the deadline by 250 ms: the thread did not run
  const resumed = performance.now();
  await delay(20); // the late timer has run (it was due first) and re-armed
  assert.equal(calls(), 0, "enforced at once after the stall");
  assert.equal(timer.expired, false);
  const at = await fired;
  assert.ok(at - resumed >= 390, `enforced ${(at - resumed).toFixed(0)} ms after the stall`);
  assert.equal(calls(), 1);
  assert.equal(timer.expired, true);
});

Deno.test("DeadlineTimer's grace is at most 1 s, however long its limit", async () => {
  const { fired } = counted(50, 60_000);
  stall(300);
  const resumed = performance.now();
  const ms = await fired - resumed;
  assert.ok(ms >= 990 && ms < 5000, `enforced ${ms.toFixed(0)} ms after the stall`);
});

Deno.test("DeadlineTimer's grace defaults to the time it was armed for", async () => {
  const { fired } = counted(200);
  stall(450);
  const resumed = performance.now();
  const ms = await fired - resumed;
  assert.ok(ms >= 190 && ms < 1000, `enforced ${ms.toFixed(0)} ms after the stall`);
});

Deno.test("DeadlineTimer re-arms once: a grace that fires late too enforces at once", async () => {
  const { calls } = counted(20, 100);
  stall(300);
  await delay(0); // the late timer runs, arms its grace
  assert.equal(calls(), 0);
  stall(300); // a second stall, past the grace
  await delay(0); // the grace's timer was due first
  assert.equal(calls(), 1);
});

Deno.test("DeadlineTimer.clear() during the grace: the deadline never comes", async () => {
  const { timer, calls } = counted(20, 50);
  stall(300);
  await delay(0);
  assert.equal(calls(), 0);
  timer.clear();
  timer.clear(); // idempotent
  await delay(120);
  assert.equal(calls(), 0);
  assert.equal(timer.expired, false);
});

Deno.test("DeadlineTimer.clear() before the deadline: it never fires", async () => {
  const { timer, calls } = counted(20);
  timer.clear();
  await delay(60);
  assert.equal(calls(), 0);
});
