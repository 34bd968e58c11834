/**
 * A call that fails with `RESULT_TOO_LARGE` has no effect: a write whose
 * RETURNING rows do not fit the reply (the frame, or `maxResultBytes`) is
 * undone before it commits, alone in a group commit, at statement level
 * inside a transaction; a batch is all-or-nothing. Run with
 * `NETSQLITE_ENGINE=node` too.
 */

import assert from "node:assert/strict";
import { type BatchStatement, type Client, connect, SqliteError } from "../mod.ts";
import type { StatsReport } from "../protocol/messages.ts";
import { onlyOneRejected, serverStats, startServer, type TestServer } from "./_helpers.ts";
import { loadSqlite } from "../engine/binding/load.ts";
import type { Stmt } from "../engine/binding/binding.ts";

/** Frames of 64 KiB: a RETURNING of a 100 kB value does not fit one. */
const FRAME = 64 * 1024;
const BIG = 100_000;
const INSERT = "INSERT INTO t (v) VALUES (zeroblob(?)) RETURNING id, v";

async function tooLarge(call: Promise<unknown>, limit = "maxFrameSize"): Promise<SqliteError> {
  const err = await call.then(() => null, (e) => e);
  assert.ok(err instanceof SqliteError, `expected RESULT_TOO_LARGE, got ${err}`);
  assert.equal(err.code, "RESULT_TOO_LARGE", err.message);
  assert.match(err.message, new RegExp(`exceeds ${limit}`));
  return err;
}

/** The server's group commit figures (the `stats` request). */
async function groupCommits(srv: TestServer): Promise<StatsReport["groupCommit"]> {
  return (await serverStats(srv.connectOptions)).groupCommit;
}

async function sizes(db: Client): Promise<number[]> {
  const rows = await db.values<[number]>("SELECT length(v) FROM t ORDER BY id");
  return rows.map((r) => r[0]);
}

Deno.test("query() of INSERT ... RETURNING larger than a frame fails with RESULT_TOO_LARGE and commits nothing", async () => {
  await using srv = await startServer({ maxFrameSize: FRAME });
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)");
  // The first runs of a write go to the background; once known to be fast
  // it runs inline (in a group commit): each path, several times.
  for (let i = 0; i < 4; i++) {
    await tooLarge(db.get(INSERT, [BIG]));
    await tooLarge(db.query(INSERT, [BIG]));
    assert.equal((await db.get<{ id: number }>(INSERT, [10]))?.id, i + 1);
  }
  assert.deepEqual(await sizes(db), [10, 10, 10, 10]);
  assert.equal(db.inTransaction, false);
});

Deno.test("query() of INSERT ... RETURNING into a TEMP table (run alone, not grouped) larger than a frame commits nothing", async () => {
  await using srv = await startServer({ maxFrameSize: FRAME });
  await using db = await srv.client();
  await db.exec("CREATE TEMP TABLE t (id INTEGER PRIMARY KEY, v BLOB)");
  for (let i = 0; i < 4; i++) {
    await tooLarge(db.get(INSERT, [BIG]));
    assert.equal((await db.get<{ id: number }>(INSERT, [10]))?.id, i + 1);
  }
  assert.deepEqual(await sizes(db), [10, 10, 10, 10]);
});

Deno.test("query() of INSERT ... SELECT ... RETURNING above maxResultBytes commits none of its rows", async () => {
  await using srv = await startServer({ maxResultBytes: 100_000 });
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
  const sql = "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?) " +
    "INSERT INTO t (v) SELECT printf('%.1000c', 'x') FROM c RETURNING id, v";
  for (let i = 0; i < 3; i++) {
    await tooLarge(db.query(sql, [200]), "maxResultBytes");
    assert.equal((await db.query(sql, [20])).length, 20);
  }
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[60]]);
  // Non-ASCII text takes up to 3 bytes a character as encoded: measured so.
  const wide = "INSERT INTO t (v) SELECT printf('%.*c', ?, '€') RETURNING v";
  await tooLarge(db.query(wide, [40_000]), "maxResultBytes");
  assert.equal((await db.query<{ v: string }>(wide, [30_000]))[0].v.length, 30_000);
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[61]]);
});

Deno.test("batch() whose results do not fit a frame applies nothing", async () => {
  await using srv = await startServer({ maxFrameSize: FRAME });
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)");
  const cases: BatchStatement[][] = [
    // One RETURNING too large.
    [{ sql: "INSERT INTO t (v) VALUES (1)" }, { sql: INSERT, params: [BIG] }],
    // Each fits, both together do not.
    [{ sql: INSERT, params: [40_000] }, { sql: INSERT, params: [40_000] }],
    // A read too large after a write.
    [{ sql: "INSERT INTO t (v) VALUES (1)" }, { sql: "SELECT zeroblob(?)", params: [BIG] }],
  ];
  for (let round = 0; round < 2; round++) {
    for (const items of cases) await tooLarge(db.batch(items));
  }
  assert.deepEqual(await sizes(db), []);
  const ok = await db.batch([{ sql: INSERT, params: [20_000] }, { sql: INSERT, params: [20_000] }]);
  assert.equal(ok.length, 2);
  assert.deepEqual(await sizes(db), [20_000, 20_000]);
});

Deno.test("INSERT ... RETURNING too large inside BEGIN is undone alone: the transaction stays open and commits", async () => {
  await using srv = await startServer({ maxFrameSize: FRAME });
  // max: 3: the transaction() below runs while db is still reserved (reserve() holds max - 1).
  await using client = await connect({ ...srv.connectOptions, max: 3 });
  await client.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)");
  await using db = await client.reserve();
  await db.exec("BEGIN");
  for (let i = 0; i < 4; i++) {
    await db.run("INSERT INTO t (v) VALUES (zeroblob(?))", [i + 1]);
    await tooLarge(db.get(INSERT, [BIG]));
    assert.equal(db.inTransaction, true);
  }
  // Batches inside the transaction too (a savepoint of it).
  await tooLarge(
    db.batch([{ sql: "INSERT INTO t (v) VALUES (1)" }, { sql: INSERT, params: [BIG] }]),
  );
  await db.run("INSERT INTO t (v) VALUES (zeroblob(5))");
  await db.exec("COMMIT");
  assert.equal(db.inTransaction, false);
  assert.deepEqual(await sizes(client), [1, 2, 3, 4, 5]);
  // transaction(): the error rolls it back, as any error does.
  await tooLarge(client.transaction(async (tx) => {
    await tx.run("INSERT INTO t (v) VALUES (1)");
    await tx.get(INSERT, [BIG]);
  }));
  assert.deepEqual(await sizes(client), [1, 2, 3, 4, 5]);
});

Deno.test("group commit: the member whose RETURNING does not fit a frame is undone alone; the others commit", async () => {
  await using srv = await startServer({ maxFrameSize: FRAME });
  const clients = await Promise.all(Array.from({ length: 5 }, () => srv.client()));
  try {
    await clients[0].exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)");
    for (let i = 0; i < 3; i++) await clients[0].get(INSERT, [1]); // known to be fast: it groups
    await clients[0].exec("DELETE FROM t");
    let kept = 0;
    for (let round = 0; round < 10; round++) {
      const big = round % clients.length; // first member of its group, and later ones
      const results = await Promise.allSettled(
        clients.map((db, i) => db.get(INSERT, [i === big ? BIG : 10 + i])),
      );
      kept += onlyOneRejected(results, big, "RESULT_TOO_LARGE", round);
    }
    const all = await sizes(clients[0]);
    assert.equal(all.length, kept);
    assert.ok(all.every((n) => n < 20), `stored sizes: ${all}`);
    const g = await groupCommits(srv);
    assert.ok(g.largest > 1, `writes were grouped: ${JSON.stringify(g)}`);
  } finally {
    for (const c of clients) await c.close();
  }
});

Deno.test("query() of a SELECT larger than a frame or maxResultBytes still fails with RESULT_TOO_LARGE; the connection stays usable", async () => {
  await using srv = await startServer({ maxFrameSize: FRAME, maxResultBytes: 50_000 });
  await using db = await srv.client();
  await tooLarge(db.query("SELECT zeroblob(?)", [BIG]), "maxResultBytes");
  await tooLarge(db.query("SELECT printf('%.*c', ?, 'x')", [60_000]), "maxResultBytes");
  await db.exec("BEGIN");
  await tooLarge(db.query("SELECT zeroblob(?)", [BIG]), "maxResultBytes");
  assert.equal(db.inTransaction, true);
  await db.exec("COMMIT");
  assert.deepEqual(await db.values("SELECT length(zeroblob(?))", [BIG]), [[BIG]]);
  await using big = await startServer({ maxFrameSize: FRAME });
  await using db2 = await big.client();
  await tooLarge(db2.query("SELECT zeroblob(?)", [BIG]));
  assert.deepEqual(await db2.values("SELECT 1"), [[1]]);
});

/** What plain SQLite keeps of `INSERT OR FAIL ... VALUES (1), (2), (3), (4)` failing at 3. */
const OR_FAIL = "INSERT OR FAIL INTO t (id) VALUES (1), (2), (3), (4) RETURNING id";
const OR_FAIL_TABLE =
  "DROP TABLE IF EXISTS t; CREATE TABLE t (id INTEGER PRIMARY KEY CHECK (id <> 3))";

Deno.test("INSERT OR FAIL ... RETURNING (query(), get(), run()) keeps the rows SQLite keeps, in autocommit, BEGIN and a SAVEPOINT", async () => {
  await using srv = await startServer({ maxFrameSize: FRAME });
  await using client = await srv.client();
  await using db = await client.reserve();
  for (const [pre, post] of [[null, null], ["BEGIN", "COMMIT"], ["SAVEPOINT a", "RELEASE a"]]) {
    for (const how of ["query", "get", "run"] as const) {
      for (let run = 0; run < 3; run++) {
        await db.exec(OR_FAIL_TABLE);
        if (pre !== null) await db.exec(pre);
        const call = how === "query"
          ? db.query(OR_FAIL)
          : how === "get"
          ? db.get(OR_FAIL)
          : db.run(OR_FAIL);
        const err = await call.then(() => null, (e) => e);
        assert.equal(err?.code, "SQLITE_CONSTRAINT_CHECK", `${pre} ${how}: ${err}`);
        if (post !== null) await db.exec(post);
        assert.deepEqual(await db.values("SELECT id FROM t"), [[1], [2]], `${pre} ${how} ${run}`);
      }
    }
  }
});

Deno.test("batch() of writes without RETURNING whose results exceed maxResultBytes fails before it commits: nothing applied", async () => {
  await using srv = await startServer({ maxResultBytes: 1024 });
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v)");
  // Every later rowid takes 9 bytes: each result [1, rowid, [], []] 13.
  await db.run("INSERT INTO t (id) VALUES (5000000000)");
  const items = (n: number): BatchStatement[] =>
    Array.from({ length: n }, (_, i) => ({ sql: "INSERT INTO t (v) VALUES (?)", params: [i] }));
  for (let round = 0; round < 2; round++) {
    const err = await tooLarge(db.batch(items(100)), "maxResultBytes");
    assert.match(err.message, /^Batch statement 77 of 100 failed, nothing was applied: /);
    assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[1]]);
  }
  // 76 results take 988 bytes (1000 left after the reply's own 24): they fit, exactly measured.
  assert.equal((await db.batch(items(76))).length, 76);
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[77]]);
});

Deno.test("query() of a write without RETURNING under a maxResultBytes too small for any reply is refused before it runs", async () => {
  // 16 bytes left after the reply's own 24: a query's result needs 25 at least.
  await using srv = await startServer({ maxResultBytes: 40 });
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)");
  for (let i = 0; i < 4; i++) {
    await tooLarge(db.query("INSERT INTO t DEFAULT VALUES"), "maxResultBytes");
    // Each result [1, rowid, [], []] takes 5 bytes: 4 do not fit.
    const items = Array.from({ length: 4 }, () => ({ sql: "INSERT INTO t DEFAULT VALUES" }));
    await tooLarge(db.batch(items), "maxResultBytes");
  }
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]]);
  assert.equal((await db.run("INSERT INTO t DEFAULT VALUES")).changes, 1);
});

Deno.test({
  name:
    "INSERT ... RETURNING that fails at its deadline while its rows are read leaves nothing: query() and run(), in BEGIN or autocommit [ffi]",
  ignore: Deno.env.get("NETSQLITE_ENGINE") === "node", // node:sqlite runs nothing in the background
  fn: async () => {
    await using srv = await startServer({ maxResultBytes: 64 << 20, maxFrameSize: 64 << 20 });
    await using db = await srv.client();
    await db.exec("CREATE TABLE t (v INTEGER)");
    const n = 50_000;
    const sql = "INSERT INTO t (v) SELECT n FROM (WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL " +
      "SELECT n + 1 FROM c WHERE n < ?) SELECT n FROM c) RETURNING v";
    // How long it takes whole: the deadlines below land across its run,
    // some between two rows (a background step returned one, the next not
    // asked for yet), where SQLite is not stopping it.
    let start = performance.now();
    assert.equal((await db.query(sql, [n])).length, n);
    let whole = performance.now() - start;
    await db.exec("DELETE FROM t");
    const seen: Record<string, number> = {};
    const alone = (kind: string): number => seen[`${kind}: undone alone`] ?? 0;
    for (let round = 0; round < 150 && (alone("query") < 2 || alone("run") < 2); round++) {
      const timeout = Math.max(1, Math.round(whole * (0.3 + (round % 20) / 25)));
      const inTx = round % 2 === 0;
      if (inTx) await db.exec("BEGIN; INSERT INTO t VALUES (-1)");
      start = performance.now();
      // query() wants its rows; run() steps through them without.
      const call = round % 4 < 2
        ? db.query(sql, [n], { timeout }).then((rows) => rows.length)
        : db.run(sql, [n], { timeout }).then((res) => Number(res.changes));
      const r = await call.then((k) => k, (e) => e);
      const took = performance.now() - start;
      // Stopped mid-step, SQLite rolls back the whole transaction (COMMIT
      // then fails); between rows, only the statement is undone.
      const open = !inTx || await db.exec("COMMIT").then(() => true, async () => {
        await db.exec("ROLLBACK");
        return false;
      });
      const [[mine, marker]] = await db.values<[number, number]>(
        "SELECT count(*) FILTER (WHERE v > 0), count(*) FILTER (WHERE v = -1) FROM t",
      );
      const what = `round ${round}, ${round % 4 < 2 ? "query" : "run"} in ${
        inTx ? "BEGIN" : "autocommit"
      }, timeout ${timeout} ms: ${r}`;
      if (typeof r === "number") {
        assert.equal(r, n, what);
        assert.equal(mine, n, what);
        seen.ok = (seen.ok ?? 0) + 1;
        whole = Math.min(whole, took); // (the first run may have been slow)
      } else {
        assert.ok(r instanceof SqliteError, what);
        assert.equal(r.code, "STATEMENT_TIMEOUT", what);
        assert.equal(mine, 0, `${what}: the failed statement's rows stayed`);
        if (inTx) {
          assert.equal(marker, open ? 1 : 0, what);
          const k = `${round % 4 < 2 ? "query" : "run"}: ${
            open ? "undone alone" : "transaction rolled back"
          }`;
          seen[k] = (seen[k] ?? 0) + 1;
        }
      }
      await db.exec("DELETE FROM t");
    }
    // Where the deadlines land depends on the machine's load (a loaded one
    // stops nearly every run mid-step): the case between two rows is made
    // certain by the next test.
    console.log(`whole ${whole.toFixed(0)} ms: ${JSON.stringify(seen)}`);
  },
});

/**
 * The FFI binding's statement prototype: its library loaded here, outside
 * any test (the sanitizers count a library loaded in a test), and not on the
 * node engine, whose run may not have the library.
 */
const FFI_STMT = Deno.env.get("NETSQLITE_ENGINE") === "node" ? null : ffiStmtPrototype();

function ffiStmtPrototype(): Stmt & { sql: string } {
  const db = loadSqlite({ engine: "ffi" }).open(":memory:", { readOnly: false, busyTimeout: 0 });
  const probe = db.prepare("SELECT 1")!;
  probe.finalize();
  db.close();
  return Object.getPrototypeOf(probe);
}

/**
 * Holds the event loop's hand-over of every row a background step of a
 * statement whose SQL contains `marker` returns, for `ms`: as a busy event
 * loop (a loaded machine, the timers' turn of engine/binding/_timer_turn.ts)
 * is late to take a step's row, so that the statement's deadline timer,
 * due meanwhile, fires between two of its rows. Patches the FFI binding's
 * statements in this process (the test server's engine runs in it); undone
 * by disposing the result.
 */
function holdRows(marker: string, ms: number): { held: number } & Disposable {
  const proto = FFI_STMT!;
  const original = proto.stepInBackground;
  const state = {
    held: 0,
    [Symbol.dispose]() {
      proto.stepInBackground = original;
    },
  };
  proto.stepInBackground = async function (this: Stmt & { sql: string }): Promise<boolean> {
    const more = await original.call(this);
    if (more && this.sql.includes(marker)) {
      state.held++;
      await new Promise((resolve) => setTimeout(resolve, ms));
    }
    return more;
  };
  return state;
}

Deno.test({
  name:
    "INSERT ... RETURNING whose deadline comes between two of its rows (a step returned one) is undone alone: query() and run(), in BEGIN or autocommit [ffi]",
  ignore: Deno.env.get("NETSQLITE_ENGINE") === "node", // node:sqlite runs nothing in the background
  fn: async () => {
    await using srv = await startServer();
    await using db = await srv.client();
    await db.exec("CREATE TABLE t (v INTEGER)");
    const sql = "INSERT INTO t (v) SELECT n FROM (WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL " +
      "SELECT n + 1 FROM c WHERE n < ?) SELECT n FROM c) RETURNING v /* held */";
    // SQLite inserts every row in the first step (RETURNING rows are then
    // read from a buffer): a deadline far past that step, and each row
    // handed over that much later, so the deadline's timer (due first)
    // always fires after a step returned a row and before the next one.
    const timeout = 300;
    using hold = holdRows("/* held */", timeout + 50);
    for (const how of ["query", "run"] as const) {
      for (const inTx of [true, false]) {
        const what = `${how} in ${inTx ? "BEGIN" : "autocommit"}`;
        if (inTx) await db.exec("BEGIN; INSERT INTO t VALUES (-1)");
        const held = hold.held;
        const call = how === "query"
          ? db.query(sql, [100], { timeout })
          : db.run(sql, [100], { timeout });
        const err = await call.then(() => null, (e) => e);
        assert.equal(hold.held, held + 1, `${what}: ran in the background, its first row held`);
        assert.ok(err instanceof SqliteError, `${what}: ${err}`);
        assert.equal(err.code, "STATEMENT_TIMEOUT", `${what}: ${err.message}`);
        // Between two rows SQLite was not stopping it: only the statement
        // is undone, the transaction stays open with the marker row.
        assert.equal(db.inTransaction, inTx, what);
        if (inTx) await db.exec("COMMIT");
        assert.deepEqual(await db.values("SELECT v FROM t"), inTx ? [[-1]] : [], what);
        await db.exec("DELETE FROM t");
      }
    }
  },
});
