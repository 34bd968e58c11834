/**
 * The server's thread keeps reaching its timers while clients send long
 * scripts and floods of requests: an interval timer in the server's process
 * measures the longest stretch it waited (README, "No client waits behind
 * another's statement"). The FFI engine steps statements in the background,
 * and Deno resolves their completions before due timers
 * (`engine/binding/_timer_turn.ts`).
 */

import assert from "node:assert/strict";
import { startServer } from "./_helpers.ts";

/**
 * Timer lag (ms) this test allows: without the fix 4 scripts of 40,000 statements held timers
 * 693–803 ms (of 20,000: 490–1,350 ms); with it 73–122 ms (2 cores, load about 16). With the
 * probe (`_timer_turn.ts`), 2 cores with 2 busy loops beside: 45–48 ms (without waits: 233–379 ms).
 */
const MAX_LAG_MS = 400;

/** A statement that never ends on its own: it counts forever. */
const ENDLESS =
  "WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s) SELECT count(*) FROM s";

/**
 * Runs `work` while a 5 ms interval timer measures how late it fires: the
 * worst lateness in ms.
 */
async function worstLag(work: () => Promise<unknown>): Promise<number> {
  let last = performance.now();
  let worst = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    worst = Math.max(worst, now - last - 5);
    last = now;
  }, 5);
  try {
    await work();
  } finally {
    clearInterval(timer);
  }
  return worst;
}

Deno.test({
  name: "Lag: 4 clients' scripts of 40,000 reads at once leave the server's timers running",
  // node:sqlite runs every statement inline, in slices with a macrotask between them: the
  // starvation tested here (nonblocking FFI completions resolved before timers) cannot happen,
  // and its 4 scripts take about 10 s in all (timer lag measured once: 197 ms, load 16 on 2 cores).
  ignore: Deno.env.get("NETSQLITE_ENGINE") === "node",
}, async () => {
  await using srv = await startServer({ synchronous: "normal", busyTimeout: 60_000 });
  const clients = await Promise.all([0, 1, 2, 3].map(() => srv.client()));
  try {
    const script = "SELECT 1;".repeat(40_000);
    await clients[0].exec(script.slice(0, 900)); // (warm up: everything loaded and compiled)
    const lag = await worstLag(() => Promise.all(clients.map((c) => c.exec(script))));
    assert.ok(lag < MAX_LAG_MS, `timers waited ${lag.toFixed(0)} ms (at most ${MAX_LAG_MS})`);
    assert.deepEqual(await clients[3].values("SELECT 7"), [[7]]);
  } finally {
    await Promise.all(clients.map((c) => c.close()));
  }
});

Deno.test({
  name: "Lag: a statement's deadline fires in time while 4 clients' long scripts run",
  ignore: Deno.env.get("NETSQLITE_ENGINE") === "node",
}, async () => {
  await using srv = await startServer({ synchronous: "normal", busyTimeout: 60_000 });
  const clients = await Promise.all([0, 1, 2, 3, 4].map(() => srv.client()));
  try {
    const script = "SELECT 1;".repeat(40_000);
    await clients[0].exec(script.slice(0, 900)); // (warm up: everything loaded and compiled)
    const scripts = Promise.all(clients.slice(0, 4).map((c) => c.exec(script)));
    await new Promise((resolve) => setTimeout(resolve, 20)); // (the scripts are under way)
    const timeout = 100;
    const start = performance.now();
    const err = await clients[4].values(ENDLESS, [], { timeout }).catch((e) => e);
    const late = performance.now() - start - timeout;
    await scripts;
    assert.equal(err?.code, "STATEMENT_TIMEOUT", String(err));
    // (Its timer waits at most about 16 + 2 ms for a turn; the rest is load and the round trip.)
    assert.ok(late < MAX_LAG_MS, `the deadline fired ${late.toFixed(0)} ms late`);
    assert.deepEqual(await clients[4].values("SELECT 7"), [[7]]);
  } finally {
    await Promise.all(clients.map((c) => c.close()));
  }
});
