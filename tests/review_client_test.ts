/**
 * Findings of a fresh-eyes review of the client library (client/*.ts), each
 * confirmed through a real server before its fix.
 */

import assert from "node:assert/strict";
import { AbortError, connect } from "../client.ts";
import {
  delay,
  drain,
  rowsOf,
  runWithGc,
  serverStats,
  startServer,
  startServerProcess,
  within,
} from "./_helpers.ts";

/** Blocks this process's event loop for `ms` (the server, in its own process, runs on). */
function busyWait(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) { /* spin */ }
}

Deno.test("an iterate() aborted after the server opened its cursor closes that cursor", async () => {
  await using server = await startServerProcess();
  await using db = await connect({ ...server.connectOptions, max: 1 });
  await db.exec("CREATE TABLE t (x)");
  await db.run("INSERT INTO t VALUES (1), (2), (3)");
  // A slow read ahead of it on the one connection, so that the iterate is answered late.
  const slow = db.values(
    "WITH RECURSIVE c(x) AS (VALUES(1) UNION ALL SELECT x + 1 FROM c WHERE x < 1000000) " +
      "SELECT count(*) FROM c",
  );
  await delay(5);
  const controller = new AbortController();
  const it = db.iterate("SELECT x FROM t", [], { signal: controller.signal });
  const first = it.next();
  // The iterate request goes out behind the slow read; the server answers both (the cursor
  // open) while this process does not run, so their replies wait unread when the signal aborts.
  await delay(5);
  busyWait(2000);
  controller.abort();
  await assert.rejects(first, AbortError);
  assert.deepEqual(await slow, [[1000000]]);
  // A call after it on the same connection: answered after the cancel was read.
  assert.deepEqual(await db.values("SELECT 1"), [[1]]);
  const stats = await serverStats(server.connectOptions);
  assert.equal(stats.cursors, 0, "the aborted iterate()'s cursor was left open on the server");
});

Deno.test("an iterate() waiting for a connection of the pool ends when its signal aborts", async () => {
  await using server = await startServer();
  await using db = await connect({ ...server.connectOptions, max: 1 });
  const stmt = await db.prepare("SELECT 2 AS x");
  // Its one connection reserved: calls wait for it (acquireTimeout 0: no limit).
  const reserved = await db.reserve();
  const controller = new AbortController();
  const { signal } = controller;
  // Each from a tick of its own (no burst: in one, a cursor first waits for the calls before it).
  const byQuery = db.query("SELECT 1", [], { signal });
  await delay(5);
  const bySql = db.iterate("SELECT 1", [], { signal }).next();
  await delay(5);
  const byStatement = stmt.iterate([], { signal }).next();
  await delay(5);
  const outcomes = [byQuery, bySql, byStatement].map((p) =>
    p.then(() => "resolved", (e: Error) => e.name)
  );
  controller.abort();
  const [query, sql, statement] = await Promise.all(outcomes.map((p) => within(p, 2000)));
  assert.deepEqual({ query, sql, statement }, {
    query: "AbortError",
    sql: "AbortError",
    statement: "AbortError",
  });
  reserved.release();
  // The pool serves on: the aborted cursors took nothing with them.
  assert.deepEqual(await drain(db.iterate("SELECT 3 AS x")), { rows: [{ x: 3 }], error: null });
  assert.deepEqual(await stmt.all(), [{ x: 2 }]);
  await stmt.finalize();
});

for (const max of [1, 2]) {
  Deno.test(`max: ${max}: a reserved connection whose BEGIN was aborted after it ran is not shared with that transaction open`, async () => {
    await using server = await startServerProcess();
    await using db = await connect({ ...server.connectOptions, max });
    await db.exec("CREATE TABLE t (x)");
    const reserved = await db.reserve();
    const slow = reserved.values(
      "WITH RECURSIVE c(x) AS (VALUES(1) UNION ALL SELECT x + 1 FROM c WHERE x < 1000000) " +
        "SELECT count(*) FROM c",
    );
    await delay(5);
    const controller = new AbortController();
    const begin = reserved.exec("BEGIN", { signal: controller.signal });
    // The BEGIN goes out behind the slow read; the server runs both while this process does
    // not run, so the BEGIN's answer waits unread when the signal aborts.
    await delay(5);
    busyWait(2000);
    controller.abort();
    await assert.rejects(begin, AbortError);
    assert.deepEqual(await slow, [[1000000]]);
    reserved.release();
    // A plain write of the client after the release, acknowledged: it must be committed.
    await db.run("INSERT INTO t VALUES (1)");
    assert.equal(
      db.inTransaction,
      false,
      "the plain write ran inside the aborted BEGIN's transaction",
    );
    assert.deepEqual(rowsOf(server.database, "SELECT x FROM t"), [[1]]);
  });
}

Deno.test("calls given up while they wait for a connection of the pool let their parameters go", async () => {
  // 100 × 2 calls of 1 MiB each: before, all stayed held (≈ 200 MiB) until a connection freed.
  const out = await runWithGc(new URL("./_review_client_child.ts", import.meta.url));
  const { waiting, released } = JSON.parse(out) as { waiting: number; released: number };
  assert.ok(released < 20, `after the release: ${released} MiB`);
  assert.ok(waiting < 20, `${waiting} MiB of their parameters stayed held while they waited`);
});

Deno.test("requestTimeout still ends a link whose only call out was given up by its signal", async () => {
  // The call's connection stays busy until the server answers it: a stopped server must not keep
  // it (here a released reservation) from the pool past requestTimeout.
  await using server = await startServerProcess();
  await using db = await connect({ ...server.connectOptions, max: 2, requestTimeout: 300 });
  const reserved = await db.reserve();
  Deno.kill(server.child.pid, "SIGSTOP");
  try {
    const controller = new AbortController();
    const query = reserved.query("SELECT 1", [], { signal: controller.signal });
    await delay(50);
    controller.abort();
    await assert.rejects(query, AbortError);
    reserved.release();
    // reserve() needs that connection back (it leaves the other for plain calls): it comes once
    // the link has timed out, then reopening it fails on the stopped server.
    const outcome = await within(db.reserve().then((r) => r.release(), (e: Error) => e), 2000);
    assert.notEqual(outcome, "timeout", "the released connection stayed held past requestTimeout");
  } finally {
    Deno.kill(server.child.pid, "SIGCONT");
  }
});

Deno.test("requestTimeout counts from the oldest of the calls given up by their signal, whichever was given up first", async () => {
  // A goes out, then B; B is given up before A. The link must time out at A's deadline (1.5 s),
  // not at B's (the first given up), 1 s later.
  await using server = await startServerProcess();
  await using db = await connect({
    ...server.connectOptions,
    max: 2,
    requestTimeout: 1500,
    connectTimeout: 200, // (reopening it on the stopped server fails after that)
  });
  const reserved = await db.reserve();
  Deno.kill(server.child.pid, "SIGSTOP");
  try {
    const a = new AbortController();
    const b = new AbortController();
    const start = performance.now();
    const queryA = reserved.query("SELECT 1", [], { signal: a.signal });
    await delay(1000);
    const queryB = reserved.query("SELECT 2", [], { signal: b.signal });
    await delay(20);
    b.abort();
    await assert.rejects(queryB, AbortError);
    a.abort();
    await assert.rejects(queryA, AbortError);
    reserved.release();
    // reserve() needs that connection back: it comes once the link has timed out.
    const reopened = await db.reserve().then(
      (r) => (r.release(), "reserved"),
      (e: Error) => e.name,
    );
    const ms = performance.now() - start;
    // (Reopening it fails on the stopped server, after connectTimeout.)
    assert.equal(reopened, "ConnectionError");
    // A's deadline, the cancels' write and the reopening: about 1.75 s; B's: about 2.75 s.
    assert.ok(ms < 2250, `the link timed out after ${ms} ms, past A's deadline (1500 ms)`);
  } finally {
    Deno.kill(server.child.pid, "SIGCONT");
  }
});
