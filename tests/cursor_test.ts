/**
 * Server cursors (`iterate()`) at their edges: a cursor opened inside a
 * transaction ends with it; deadlines hold for every step of a cursor (FFI
 * engine); cancelling a cursor's step stops it on the server; rows that
 * cannot stream say why; a row too large for a frame says so. Real servers,
 * on the engine `NETSQLITE_ENGINE` names (FFI-only behaviour is skipped on
 * node:sqlite, which cannot interrupt a step).
 */

import assert from "node:assert/strict";
import { AbortError, connect, ErrorCode, type Queryable, SqliteError } from "../mod.ts";
import { startServer } from "./_helpers.ts";

const ffi = Deno.env.get("NETSQLITE_ENGINE") !== "node";

const SERIES =
  "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < ?) SELECT x FROM n";

/** A statement whose one row takes seconds to produce. */
const SLOW_SUM = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT 20000000) " +
  "SELECT sum(x) AS s FROM n";

/** Reads `it` to its end; returns the rows read and the error that ended it, if any. */
async function drain<T>(it: AsyncIterator<T>): Promise<{ rows: T[]; error: unknown }> {
  const rows: T[] = [];
  try {
    for (;;) {
      const r = await it.next();
      if (r.done) return { rows, error: null };
      rows.push(r.value);
    }
  } catch (error) {
    return { rows, error };
  }
}

function assertCode(err: unknown, code: string, message?: RegExp): void {
  assert.ok(err instanceof SqliteError, `expected ${code}, got ${String(err)}`);
  assert.equal(err.code, code, err.message);
  if (message !== undefined) assert.match(err.message, message);
}

for (const end of ["COMMIT", "ROLLBACK"]) {
  Deno.test(`Client.iterate() opened in a transaction is closed by ${end}; other clients' writes and DDL go on`, async () => {
    await using srv = await startServer();
    await using a = await srv.client();
    await using b = await srv.client();
    await a.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT); CREATE TABLE u (x)");
    await a.run(`INSERT INTO t (who) SELECT 'seed' FROM (${SERIES})`, [20_000]);
    await a.exec("BEGIN");
    const it = a.iterate<{ id: number; who: string }>("SELECT id, who FROM t ORDER BY id")
      [Symbol.asyncIterator]();
    assert.deepEqual((await it.next()).value, { id: 1, who: "seed" });
    await a.exec(end);
    assert.equal(a.inTransaction, false);
    // The writer is free of the cursor: writes, DDL and a checkpoint succeed.
    await b.run("INSERT INTO t (who) VALUES ('B')");
    await b.run("UPDATE t SET who = 'B' WHERE id = 19000");
    await b.exec("DROP TABLE u; CREATE INDEX t_who ON t (who); DROP INDEX t_who");
    const { rows, error } = await drain(it);
    assertCode(error, ErrorCode.CursorClosed, /closed when its transaction ended/);
    assert.ok(rows.length < 19_000, `read ${rows.length} rows after ${end}`);
    assert.ok(rows.every((r) => r.who === "seed"), "the cursor saw another client's write");
    // The connection goes on, with no cursor left behind.
    assert.deepEqual(await a.values("SELECT count(*) FROM t"), [[20_001]]);
  });
}

for (const end of ["rolled back", "committed"] as const) {
  Deno.test(`tx.iterate() that escapes transaction(fn) yields no prefetched row once it ${end}`, async () => {
    await using srv = await startServer();
    await using db = await srv.client();
    await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
    await db.run(`INSERT INTO t (v) SELECT 'committed' FROM (${SERIES})`, [5_000]);
    let it: AsyncIterator<{ id: number; v: string }> | undefined;
    const outcome = await db.transaction(async (tx) => {
      await tx.run("UPDATE t SET v = 'in the transaction'");
      it = tx.iterate<{ id: number; v: string }>("SELECT id, v FROM t ORDER BY id")
        [Symbol.asyncIterator]();
      assert.deepEqual((await it.next()).value, { id: 1, v: "in the transaction" });
      if (end === "rolled back") throw new Error("roll back");
    }).then(() => "committed", (e: Error) => e.message);
    assert.equal(outcome, end === "rolled back" ? "roll back" : "committed");
    // The rows prefetched while the transaction was open are not handed out.
    const { rows, error } = await drain(it!);
    assertCode(error, ErrorCode.CursorClosed, /closed when its transaction ended/);
    assert.equal(rows.length, 0, `${rows.length} rows yielded after the transaction ${end}`);
    const v = end === "rolled back" ? "committed" : "in the transaction";
    assert.deepEqual(await db.values("SELECT v, count(*) FROM t GROUP BY v"), [[v, 5_000]]);
  });
}

Deno.test("A reserved connection's cursor opened after BEGIN fails CURSOR_CLOSED at once after ROLLBACK; one opened before goes on", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (x)");
  await db.run(`INSERT INTO t ${SERIES}`, [5_000]);
  await using conn = await db.reserve();
  const before = conn.iterate<[number]>("SELECT x FROM t ORDER BY x", [], { arrays: true })
    [Symbol.asyncIterator]();
  assert.deepEqual((await before.next()).value, [1]);
  for (const end of ["ROLLBACK", "COMMIT"]) {
    await conn.exec("BEGIN");
    const inside = conn.iterate<[number]>("SELECT x FROM t ORDER BY x", [], { arrays: true })
      [Symbol.asyncIterator]();
    assert.deepEqual((await inside.next()).value, [1]);
    await conn.exec(end);
    const { rows, error } = await drain(inside);
    assertCode(error, ErrorCode.CursorClosed, /closed when its transaction ended/);
    assert.equal(rows.length, 0, `${rows.length} rows yielded after ${end}`);
  }
  // Opened in a transaction that ended, and a new one begun since: closed all the same.
  await conn.exec("BEGIN");
  const first = conn.iterate<[number]>("SELECT x FROM t", [], { arrays: true })
    [Symbol.asyncIterator]();
  await first.next();
  await conn.exec("COMMIT");
  await conn.exec("BEGIN");
  assertCode((await drain(first)).error, ErrorCode.CursorClosed);
  await conn.exec("ROLLBACK");
  // The cursor opened outside any transaction outlived them all.
  const { rows, error } = await drain(before);
  assert.equal(error, null);
  assert.equal(rows.length, 4_999);
});

Deno.test("Client.iterate() opened in a transaction is closed when the server rolls it back (idle lease)", async () => {
  await using srv = await startServer({ txIdleTimeout: 150 });
  await using a = await srv.client();
  await using b = await srv.client();
  await a.exec("CREATE TABLE t (x)");
  await a.run(`INSERT INTO t ${SERIES}`, [20_000]);
  await a.exec("BEGIN");
  const it = a.iterate<{ x: number }>("SELECT x FROM t")[Symbol.asyncIterator]();
  assert.equal((await it.next()).value?.x, 1);
  // Waits for the writer until the lease ends, then runs and is seen by no cursor.
  await b.run("INSERT INTO t VALUES (0)");
  await b.exec("CREATE TABLE u (x)");
  const { rows, error } = await drain(it);
  assertCode(error, ErrorCode.CursorClosed, /rolled back by the server/);
  assert.ok(rows.every((r) => r.x !== 0));
  await a.exec("ROLLBACK");
});

Deno.test({
  name: "Client.iterate() in a transaction stops at its timeout and leaves the transaction intact",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using a = await srv.client();
    await a.exec("CREATE TABLE t (x)");
    await a.exec("BEGIN");
    await a.run("INSERT INTO t VALUES (1)");
    const start = performance.now();
    const { error } = await drain(
      a.iterate(SLOW_SUM, [], { timeout: 200 })[Symbol.asyncIterator](),
    );
    const ms = performance.now() - start;
    assertCode(error, ErrorCode.StatementTimeout);
    assert.ok(ms < 2000, `stopped after ${ms.toFixed(0)} ms`);
    assert.equal(a.inTransaction, true);
    await a.run("INSERT INTO t VALUES (2)");
    await a.exec("COMMIT");
    assert.deepEqual(await a.values("SELECT x FROM t ORDER BY x"), [[1], [2]]);
  },
});

Deno.test({
  name:
    "Client.iterate() stops at its timeout when a row after the first turns slow, after yielding the first",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using a = await srv.client();
    const sql = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT 20000000) " +
      "SELECT x FROM n WHERE x = 1 OR x = 20000000";
    const start = performance.now();
    const { rows, error } = await drain(
      a.iterate<{ x: number }>(sql, [], { timeout: 200 })[Symbol.asyncIterator](),
    );
    const ms = performance.now() - start;
    assertCode(error, ErrorCode.StatementTimeout);
    assert.ok(ms < 2000, `stopped after ${ms.toFixed(0)} ms`);
    // The row stepped before the slow one is delivered, then the timeout.
    assert.deepEqual(rows, [{ x: 1 }]);
    assert.deepEqual(await a.values("SELECT 1"), [[1]]);
  },
});

Deno.test({
  name: "Client.iterate() aborted during its first step stops the step on the server",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer({ statementTimeout: 3000 });
    await using a = await srv.client();
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), 100);
    const { error } = await drain(
      a.iterate(SLOW_SUM, [], { signal: ac.signal })[Symbol.asyncIterator](),
    );
    clearTimeout(timer);
    assert.ok(error instanceof AbortError, String(error));
    // The same connection answers at once: its cursor's step was stopped.
    const start = performance.now();
    assert.deepEqual(await a.values("SELECT 1"), [[1]]);
    const ms = performance.now() - start;
    assert.ok(ms < 1000, `next call took ${ms.toFixed(0)} ms`);
    // And the cursor is gone: a new one can use the reader.
    const xs = [];
    for await (const r of a.iterate<{ x: number }>(SERIES, [3])) xs.push(r.x);
    assert.deepEqual(xs, [1, 2, 3]);
  },
});

Deno.test("Client.iterate() while a TEMP table exists: too large a result says why it cannot stream; in a transaction it streams", async () => {
  await using srv = await startServer({ maxResultBytes: 50_000 });
  await using a = await srv.client();
  await using b = await srv.client();
  await a.exec("CREATE TEMP TABLE scratch (x)");
  const sql = `SELECT x, printf('%0100d', x) AS pad FROM (${SERIES})`;
  const { error } = await drain(b.iterate(sql, [5000])[Symbol.asyncIterator]());
  assertCode(error, ErrorCode.ResultTooLarge, /cannot stream: TEMP tables exist/);
  assert.doesNotMatch((error as Error).message, /use iterate/);
  await b.exec("BEGIN");
  let n = 0;
  for await (const _ of b.iterate(sql, [5000])) n++;
  await b.exec("COMMIT");
  assert.equal(n, 5000);
});

Deno.test("Client.iterate() on :memory:: too large a result says why it cannot stream; in a transaction it streams", async () => {
  await using srv = await startServer({ database: ":memory:", maxResultBytes: 50_000 });
  await using a = await srv.client();
  const sql = `SELECT x, printf('%0100d', x) AS pad FROM (${SERIES})`;
  const { error } = await drain(a.iterate(sql, [5000])[Symbol.asyncIterator]());
  assertCode(error, ErrorCode.ResultTooLarge, /cannot stream: a :memory: database has no reader/);
  assert.doesNotMatch((error as Error).message, /use iterate/);
  await a.exec("BEGIN");
  let n = 0;
  for await (const _ of a.iterate(sql, [5000])) n++;
  await a.exec("COMMIT");
  assert.equal(n, 5000);
});

Deno.test("Client.iterate() of a row larger than maxFrameSize says the row is too large", async () => {
  await using srv = await startServer({ maxFrameSize: 200_000, maxResultBytes: 100_000 });
  await using a = await srv.client();
  const { rows, error } = await drain(
    a.iterate("SELECT 1 AS k, zeroblob(10) AS b UNION ALL SELECT 2, zeroblob(300000)")
      [Symbol.asyncIterator](),
  );
  assert.deepEqual(rows.map((r) => (r as { k: number }).k), [1]);
  assertCode(error, ErrorCode.ResultTooLarge, /one row is larger than --max-frame-size/);
  assert.match((error as Error).message, /substr\(\)/);
  assert.doesNotMatch((error as Error).message, /use iterate/);
});

Deno.test("Client.iterate() yields every row before one larger than maxFrameSize, then its RESULT_TOO_LARGE", async () => {
  await using srv = await startServer({ maxFrameSize: 200_000, maxResultBytes: 100_000 });
  await using a = await srv.client();
  await a.exec("CREATE TABLE k (i INTEGER PRIMARY KEY, b BLOB)");
  // Rows of 9 KB, row 10 of 250 KB: a chunk reaches ~64 KiB at row 8.
  await a.run(
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20) " +
      "INSERT INTO k SELECT x, zeroblob(CASE WHEN x = 10 THEN 250000 ELSE 9000 END) FROM c",
  );
  const sql = "SELECT i, b FROM k ORDER BY i";
  const { rows, error } = await drain(a.iterate(sql)[Symbol.asyncIterator]());
  assert.deepEqual(rows.map((r) => (r as { i: number }).i), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assertCode(error, ErrorCode.ResultTooLarge, /one row is larger than --max-frame-size/);
  assert.match((error as Error).message, /the cursor is closed/);
  // Rows of 40 KB: a chunk never holds more than ~64 KiB, so all of them fit a frame.
  await a.run("UPDATE k SET b = zeroblob(40000)");
  let n = 0;
  for await (const r of a.iterate(sql)) {
    assert.equal((r as { b: Uint8Array }).b.length, 40000);
    n++;
  }
  assert.equal(n, 20);
});

Deno.test({
  name:
    "Client.query() stops at its timeout when a row after the first turns slow (rows stepped between background steps)",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using a = await srv.client();
    const sql = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT 20000000) " +
      "SELECT x FROM n WHERE x = 1 OR x = 20000000";
    const start = performance.now();
    const error = await a.query(sql, [], { timeout: 200 }).then(() => null, (e: unknown) => e);
    const ms = performance.now() - start;
    assertCode(error, ErrorCode.StatementTimeout);
    assert.ok(ms < 2000, `stopped after ${ms.toFixed(0)} ms`);
    assert.deepEqual(await a.values("SELECT 1"), [[1]]);
  },
});

Deno.test("Client.iterate() chooses its connection when iterating starts: made while none is free it does not wait before, and its wait when consumed fails as a rejection of next()", async () => {
  await using srv = await startServer();
  // (max: 1: the one connection reserved, a plain call waits; with max > 1 reserve() leaves one.)
  const db = await connect({ ...srv.connectOptions, max: 1, acquireTimeout: 50 });
  const a = await db.reserve();
  const made = db.iterate<[number]>("SELECT 1", [], { arrays: true }); // nothing chosen yet
  const waiting = db.iterate("SELECT 1");
  await new Promise((resolve) => setTimeout(resolve, 150));
  await assert.rejects(waiting.next(), { name: "ConnectionError", code: "ACQUIRE_TIMEOUT" });
  a.release();
  assert.deepEqual(await made.next(), { done: false, value: [1] });
  await made.return(undefined);
  await db.close();
  const closed = db.iterate("SELECT 1");
  await new Promise((resolve) => setTimeout(resolve, 20));
  await assert.rejects(closed.next(), { name: "ConnectionError", message: "Client is closed" });
});

Deno.test("Client.iterate() aborted between rows yields no further row of the chunk already received", async () => {
  await using srv = await startServer();
  await using a = await srv.client();
  const ac = new AbortController();
  const it = a.iterate<{ x: number }>(SERIES, [3000], { signal: ac.signal })[
    Symbol.asyncIterator
  ]();
  const xs: number[] = [];
  for (let i = 0; i < 10; i++) {
    const r = await it.next();
    assert.ok(!r.done);
    xs.push(r.value.x);
  }
  const reason = new Error("enough");
  ac.abort(reason);
  const { rows, error } = await drain(it);
  assert.deepEqual(rows, []);
  assert.ok(error instanceof AbortError, String(error));
  assert.equal(error.cause, reason);
  assert.deepEqual(xs, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  // The connection goes on (the cursor was closed).
  assert.deepEqual(await a.values("SELECT 1"), [[1]]);
});

Deno.test("cursor: rows that each fit a small frame stream whatever the timing, non-ASCII text included", async () => {
  // 32 KiB frames, below the 64 KiB a chunk may otherwise hold: chunks are cut to fit the frame.
  await using srv = await startServer({ maxFrameSize: 32 * 1024 });
  await using db = await srv.client();
  await db.exec("CREATE TABLE w(id INTEGER PRIMARY KEY, t TEXT, b BLOB)");
  // Each row ≈ 3 × 3,000 bytes of 3-byte UTF-8 text, or a 14,000-byte blob: one fits a frame,
  // three do not.
  const text = "€".repeat(3_000);
  for (let i = 0; i < 12; i++) {
    await db.run("INSERT INTO w(t, b) VALUES (?, ?)", [
      i % 2 === 0 ? text : null,
      i % 2 === 1 ? new Uint8Array(14_000).fill(i) : null,
    ]);
  }
  const read = async (q: Queryable): Promise<number> => {
    let n = 0;
    for await (
      const r of q.iterate<{ id: number; t: string | null; b: Uint8Array | null }>(
        "SELECT id, t, b FROM w ORDER BY id",
      )
    ) {
      if (r.id % 2 === 1) assert.equal(r.t, text);
      else assert.equal(r.b![13_999], r.id - 1);
      n++;
    }
    return n;
  };
  assert.equal(await read(db), 12);
  // Inside a transaction the cursor steps the writer (inline only).
  assert.equal(await db.transaction((tx) => read(tx)), 12);
});
