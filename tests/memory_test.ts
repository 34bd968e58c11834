/**
 * Memory release after disconnects (server/memory.ts), in-process: what the
 * server reports it can do under the test runner's permissions, and that a
 * wave of closes leads to a `malloc_trim` call. What it achieves (RSS back
 * near the start after 1000 connections) is measured on a server process in
 * soak_test.ts.
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { connect } from "../client.ts";
import { FIRST_RELEASE_MS, MMAP_THRESHOLD, WAVE_MIN_CLOSED } from "../server/memory.ts";
import { startServer } from "./_helpers.ts";

const LINUX_GLIBC = Deno.build.os === "linux" &&
  /\/libc\.so\.6$/m.test(Deno.readTextFileSync("/proc/self/maps"));

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

Deno.test({
  name: "memoryRelease: with --allow-ffi on glibc the server trims after a wave of closes",
  ignore: !LINUX_GLIBC,
  fn: async () => {
    await using ts = await startServer();
    const before = ts.server.memoryRelease;
    // deno test runs without --expose-gc: trimming only.
    assert.deepEqual(before, {
      trim: true,
      gc: false,
      trimOffReason: null,
      mmapThreshold: MMAP_THRESHOLD,
      trims: 0,
      collections: 0,
    });
    const clients = await Promise.all(
      Array.from({ length: WAVE_MIN_CLOSED + 6 }, () => connect(ts.connectOptions)),
    );
    for (const c of clients) assert.equal((await c.get<{ x: number }>("SELECT 1 AS x"))?.x, 1);
    assert.equal(ts.server.memoryRelease.trims, 0, "nothing to release while all are open");
    await Promise.all(clients.map((c) => c.close()));
    const t0 = performance.now();
    while (ts.server.memoryRelease.trims === 0 && performance.now() - t0 < 5000) await sleep(50);
    const after = ts.server.memoryRelease;
    assert.equal(after.trims, 1, `one trim ${FIRST_RELEASE_MS} ms after the wave`);
    assert.equal(after.collections, 0);
    assert.ok(performance.now() - t0 >= FIRST_RELEASE_MS / 2, "not long before the delay");
    // The server is still fine afterwards.
    await using db = await ts.client();
    assert.deepEqual(await db.get("SELECT 2 AS x"), { x: 2 });
  },
});

Deno.test("memoryRelease: releaseMemory: false turns it off and nothing runs", async () => {
  await using ts = await startServer({ releaseMemory: false });
  assert.deepEqual(ts.server.memoryRelease, {
    trim: false,
    gc: false,
    trimOffReason: "disabled by the releaseMemory option",
    mmapThreshold: null,
    trims: 0,
    collections: 0,
  });
  for (let i = 0; i < 3; i++) {
    await using db = await ts.client();
    await db.get("SELECT 1");
  }
  await sleep(FIRST_RELEASE_MS + 200);
  assert.equal(ts.server.memoryRelease.trims, 0);
});

Deno.test("memoryRelease: the snapshot is a copy, not a live handle", async () => {
  await using ts = await startServer();
  const snap = ts.server.memoryRelease as { trims: number };
  snap.trims = 99;
  assert.equal(ts.server.memoryRelease.trims, 0);
});

/** Runs tests/_arena_child.ts: RSS growth, in KiB, left by a 30 MB block freed on a worker thread. */
async function arenaGrowth(mode: "tuned" | "plain"): Promise<number> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", fileURLToPath(new URL("./_arena_child.ts", import.meta.url)), mode],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return (JSON.parse(text) as { growthKiB: number }).growthKiB;
}

Deno.test({
  name: "memoryRelease: a large block freed in a worker thread's arena goes back to the system",
  ignore: !LINUX_GLIBC,
  fn: async () => {
    // As a background SQLite step allocates a 30 MB value: without fixed
    // thresholds the freed block stays at the top of the worker's arena,
    // which malloc_trim does not shrink (the cause of a server staying
    // hundreds of MiB up after clients left big results unread).
    // Each child runs up to three times: which thread (and arena) the
    // nonblocking calls land on is the runtime's choice, so under load a
    // round may use the main arena, which malloc_trim does shrink. One
    // run that shows the effect (plain) or its absence (tuned) decides.
    const plains: number[] = [];
    while (plains.length < 3 && !(plains.at(-1)! > 20 * 1024)) {
      plains.push(await arenaGrowth("plain"));
    }
    assert.ok(plains.at(-1)! > 20 * 1024, `glibc keeps the block without the fix: ${plains} KiB`);
    const tuned: number[] = [];
    while (tuned.length < 3 && !(tuned.at(-1)! < 4 * 1024)) tuned.push(await arenaGrowth("tuned"));
    assert.ok(tuned.at(-1)! < 4 * 1024, `the block went back to the system: ${tuned} KiB left`);
  },
});
