import assert from "node:assert/strict";
import { SqliteError } from "../mod.ts";
import { startServer } from "./_helpers.ts";

const COUNT_SQL = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < ?) " +
  "SELECT x, printf('%090d', x) AS pad FROM n";

const SERIES =
  "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < ?) SELECT x FROM n";

Deno.test("Client.iterate() streams every row of a large result in order", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  let expected = 1;
  for await (const row of db.iterate<{ x: number; pad: string }>(COUNT_SQL, [50_000])) {
    assert.equal(row.x, expected);
    expected++;
  }
  assert.equal(expected, 50_001);
});

Deno.test("Client.iterate() break closes the cursor on the server", async () => {
  await using srv = await startServer({ maxCursors: 2 });
  await using db = await srv.client();
  for (let round = 0; round < 5; round++) {
    let seen = 0;
    for await (const _ of db.iterate(COUNT_SQL, [100_000])) {
      if (++seen === 10) break;
    }
    assert.equal(seen, 10);
  }
  // With maxCursors 2, leaked cursors would have made this fail.
  const rows = [];
  for await (const row of db.iterate<{ x: number }>("SELECT 1 AS x")) rows.push(row.x);
  assert.deepEqual(rows, [1]);
});

Deno.test("Statement.iterate() streams a prepared statement with parameters", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const stmt = await db.prepare(COUNT_SQL);
  let last = 0;
  for await (const row of stmt.iterate<{ x: number }>([2500])) last = row.x;
  assert.equal(last, 2500);
  await stmt.finalize();
});

Deno.test("Client.iterate() inside a transaction sees the transaction's own writes", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (x)");
  await db.transaction(async (tx) => {
    await tx.run("INSERT INTO t VALUES (1), (2), (3)");
    const xs = [];
    for await (const row of tx.iterate<{ x: number }>("SELECT x FROM t ORDER BY x")) xs.push(row.x);
    assert.deepEqual(xs, [1, 2, 3]);
  });
});

Deno.test("Client.iterate() of INSERT ... RETURNING applies the write and streams its rows", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, x)");
  const ids = [];
  for await (
    const row of db.iterate<{ id: number }>("INSERT INTO t (x) VALUES (1), (2) RETURNING id")
  ) {
    ids.push(row.id);
  }
  assert.deepEqual(ids, [1, 2]);
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[2]]);
});

Deno.test("Client.iterate() holds its snapshot; other readers see new commits meanwhile", async () => {
  await using srv = await startServer();
  await using a = await srv.client();
  await using b = await srv.client();
  await a.exec("CREATE TABLE t (x)");
  await a.run(`INSERT INTO t ${SERIES}`, [3000]);
  const it = a.iterate<{ x: number }>("SELECT x FROM t");
  const first = await it.next();
  assert.equal(first.value?.x, 1);
  await b.run("INSERT INTO t VALUES (-1)");
  assert.deepEqual(await b.values("SELECT count(*) FROM t"), [[3001]]);
  let n = 1;
  for await (const _ of { [Symbol.asyncIterator]: () => it }) n++;
  assert.equal(n, 3000, "the cursor's snapshot predates b's insert");
});

Deno.test("Client.query() above --max-result-bytes fails with RESULT_TOO_LARGE pointing to iterate()", async () => {
  await using srv = await startServer({ maxResultBytes: 100_000 });
  await using db = await srv.client();
  assert.equal(db.serverInfo.limits.maxResultBytes, 100_000);
  await db.exec("CREATE TABLE t (s)");
  await db.run(`INSERT INTO t SELECT printf('%0100d', x) FROM (${SERIES})`, [5000]);
  const err = await db.query("SELECT s FROM t").catch((e) => e);
  assert.ok(err instanceof SqliteError);
  assert.equal(err.code, "RESULT_TOO_LARGE");
  assert.match(err.message, /maxResultBytes 100000.*iterate\(\)/);
  // Recursive statements are stopped while running, not after.
  const rec = await db.query(COUNT_SQL, [1_000_000]).catch((e) => e);
  assert.equal(rec.code, "RESULT_TOO_LARGE");
  // Smaller results and streaming still work on the same connection.
  assert.equal((await db.query("SELECT s FROM t LIMIT 10")).length, 10);
  let n = 0;
  for await (const _ of db.iterate("SELECT s FROM t")) n++;
  assert.equal(n, 5000);
});

Deno.test("Client.query() of a runaway recursive query stops near --statement-timeout", async () => {
  await using srv = await startServer({ statementTimeout: 300 });
  await using db = await srv.client();
  // Yields rows forever (a filter that yields nothing for long cannot be
  // stopped: node:sqlite has no interrupt; see README, Limits).
  const runaway = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT x FROM n";
  const started = performance.now();
  const err = await db.query(runaway).catch((e) => e);
  const took = performance.now() - started;
  assert.equal(err.code, "STATEMENT_TIMEOUT", String(err));
  // Bounds: not before the 300 ms deadline (timer slack 10 ms); the upper bound
  // only catches "not stopped at all" on a loaded machine (measured: ~300 ms).
  assert.ok(took >= 290 && took < 3000, `stopped after ${took} ms`);
  // A longer per-call timeout overrides the shorter server default: the query
  // runs past 300 ms and is stopped near its own 800 ms.
  const started2 = performance.now();
  const err2 = await db.query(runaway, [], { timeout: 800 }).catch((e) => e);
  const took2 = performance.now() - started2;
  assert.equal(err2.code, "STATEMENT_TIMEOUT");
  assert.ok(took2 >= 790 && took2 < 3500, `stopped after ${took2} ms (timeout 800)`);
  assert.deepEqual(await db.values("SELECT 42"), [[42]]);
});

Deno.test("Client.query() with a per-call timeout shorter than the server's default stops at its own timeout", async () => {
  // Server default 20 s: a per-call timeout that is ignored runs 20 s and fails
  // the bound below (the per-test limit of tests/_limit.ts is 60 s).
  await using srv = await startServer({ statementTimeout: 20_000 });
  await using db = await srv.client();
  const runaway = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT x FROM n";
  const started = performance.now();
  const err = await db.query(runaway, [], { timeout: 100 }).catch((e) => e);
  const took = performance.now() - started;
  assert.equal(err.code, "STATEMENT_TIMEOUT", String(err));
  // 5 s: far below the 20 s default, far above the ~100 ms it takes (load margin).
  assert.ok(took >= 90 && took < 5000, `stopped after ${took} ms (timeout 100)`);
  assert.deepEqual(await db.values("SELECT 42"), [[42]]);
});

Deno.test("Client.iterate() whose stepping time exceeds its timeout fails with STATEMENT_TIMEOUT", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const runaway = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) " +
    "SELECT x FROM n WHERE x % 100000 = 0";
  const started = performance.now();
  const err = await (async () => {
    for await (const _ of db.iterate(runaway, [], { timeout: 200 })) { /* rows are rare */ }
  })().catch((e) => e);
  const took = performance.now() - started;
  assert.equal(err?.code, "STATEMENT_TIMEOUT");
  // The server default is 30 s: an ignored per-call timeout would run that long.
  // 5 s leaves room for load above the ~200 ms expected.
  assert.ok(took >= 190 && took < 5000, `stopped after ${took} ms (timeout 200)`);
  assert.deepEqual(await db.values("SELECT 1"), [[1]]);
});

Deno.test("Session answers other clients promptly while one client streams a large result", async () => {
  await using srv = await startServer();
  await using streamer = await srv.client();
  await using other = await srv.client();
  await other.exec("CREATE TABLE kv (k INTEGER PRIMARY KEY, v)");
  await other.run("INSERT INTO kv VALUES (1, 'one')");
  let streamed = 0;
  const stream = (async () => {
    for await (const _ of streamer.iterate(COUNT_SQL, [200_000])) streamed++;
  })();
  const latencies: number[] = [];
  while (streamed < 150_000) {
    const t = performance.now();
    assert.deepEqual(await other.get("SELECT v FROM kv WHERE k = 1"), { v: "one" });
    latencies.push(performance.now() - t);
  }
  await stream;
  assert.equal(streamed, 200_000);
  latencies.sort((a, b) => a - b);
  const p99 = latencies[Math.floor(latencies.length * 0.99)];
  assert.ok(latencies.length >= 10, `only ${latencies.length} point reads during the stream`);
  // Bound 250 ms: well above the 3–5 ms p99 measured by bench/stream_memory.ts
  // (where the README's figure comes from), because this suite shares two cores
  // with other test files; it fails when the stream holds other clients for
  // whole result-sized stretches (a 200,000-row stream takes ~1 s), which is
  // the defect that matters. The measured claim lives in the benchmark.
  assert.ok(p99 < 250, `p99 point read during the stream: ${p99.toFixed(1)} ms`);
});
