/**
 * Calls through a client's shared pool that would wait for the writer held
 * by the same client's own transaction (the better-sqlite3 porting trap of
 * `db.run()` or a `db.prepare()`d statement used inside `db.transaction(fn)`):
 * writes from inside `fn` fail at once with `TX_CONTROL`; other calls that
 * time out on that transaction name it in their `BUSY_TIMEOUT`.
 */

import assert from "node:assert/strict";
import { connect, SqliteError } from "../mod.ts";
import { startServer } from "./_helpers.ts";
import { surelyWrites } from "../client/_own_writer.ts";

const ADVICE = "inside transaction(fn), query through tx (tx.prepare / tx.run)";

function isSelfWait(err: unknown): boolean {
  assert.ok(err instanceof SqliteError, String(err));
  assert.equal(err.code, "TX_CONTROL");
  assert.match(err.message, /from inside the client's own transaction\(\)/);
  assert.ok(err.message.includes(ADVICE), err.message);
  return true;
}

Deno.test("Client.run() inside its own transaction(fn) fails at once instead of waiting for the writer", async () => {
  await using s = await startServer({ busyTimeout: 2000 });
  await using db = await connect({ ...s.connectOptions, max: 4 });
  await db.exec("CREATE TABLE t (x)");
  const t0 = performance.now();
  await assert.rejects(
    db.transaction(async () => {
      await db.run("INSERT INTO t VALUES (1)");
    }),
    isSelfWait,
  );
  assert.ok(performance.now() - t0 < 1000, "failed before the busy timeout");
  assert.deepEqual(await db.values("SELECT x FROM t"), []);
});

Deno.test("Statement.run() of a statement prepared on the client fails at once inside the client's transaction(fn)", async () => {
  await using s = await startServer({ busyTimeout: 2000 });
  await using db = await connect({ ...s.connectOptions, max: 4 });
  await db.exec("CREATE TABLE cats (name)");
  const insert = await db.prepare("INSERT INTO cats VALUES (?)");
  const t0 = performance.now();
  // A deferred transaction that wrote nothing yet holds the writer too.
  await assert.rejects(
    db.transaction(async () => {
      for (const c of ["a", "b"]) await insert.run([c]);
    }),
    isSelfWait,
  );
  await assert.rejects(
    db.transaction(async (tx) => {
      await tx.run("INSERT INTO cats VALUES ('z')");
      // Also from a nested transaction, and for a statement iterated.
      await tx.transaction(async () => {
        for await (const _ of insert.iterate(["y"])) { /* never reached */ }
      });
    }),
    isSelfWait,
  );
  assert.ok(performance.now() - t0 < 1000, "failed before the busy timeout");
  assert.deepEqual(await db.values("SELECT name FROM cats"), []);
  // Through tx it works; the same statement works again once the transaction ended.
  await db.transaction(async (tx) => {
    const own = await tx.prepare("INSERT INTO cats VALUES (?)");
    await own.run(["a"]);
    await tx.run("INSERT INTO cats VALUES (?)", ["b"]);
  });
  await insert.run(["c"]);
  assert.deepEqual(await db.values("SELECT name FROM cats ORDER BY name"), [["a"], ["b"], ["c"]]);
  await insert.finalize();
});

Deno.test("Client.exec(), batch() and prepare() of a write inside its own transaction(fn) fail at once", async () => {
  await using s = await startServer({ busyTimeout: 2000 });
  await using db = await connect({ ...s.connectOptions, max: 4 });
  await db.exec("CREATE TABLE t (x)");
  const t0 = performance.now();
  await db.transaction(async (tx) => {
    await tx.run("INSERT INTO t VALUES (1)");
    // A script always takes the writer, also one that only reads.
    await assert.rejects(db.exec("SELECT 1"), isSelfWait);
    await assert.rejects(db.batch([{ sql: "SELECT 1" }]), isSelfWait);
    await assert.rejects(db.prepare("INSERT INTO t VALUES (2)"), isSelfWait);
    await assert.rejects(
      db.get("WITH v(a) AS (SELECT 3) INSERT INTO t SELECT a FROM v"),
      isSelfWait,
    );
    await assert.rejects(db.kv("k").put("a", 1), isSelfWait);
  });
  assert.ok(performance.now() - t0 < 1000, "failed before the busy timeout");
  assert.deepEqual(await db.values("SELECT x FROM t"), [[1]]);
});

Deno.test("Client reads inside its own transaction(fn) still run, on committed state", async () => {
  await using s = await startServer({ busyTimeout: 2000 });
  await using db = await connect({ ...s.connectOptions, max: 4 });
  await db.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1)");
  const count = await db.prepare("SELECT count(*) AS n FROM t");
  const seen = await db.transaction(async (tx) => {
    await tx.run("INSERT INTO t VALUES (2)");
    return [
      await count.get(),
      await db.get("SELECT count(*) AS n FROM t"),
      await tx.get("SELECT count(*) AS n FROM t"),
    ];
  });
  assert.deepEqual(seen, [{ n: 1 }, { n: 1 }, { n: 2 }]);
  await count.finalize();
});

Deno.test("Client.run() inside transaction(fn) with max: 1 joins the transaction (unchanged)", async () => {
  await using s = await startServer({ busyTimeout: 2000 });
  await using db = await connect({ ...s.connectOptions, max: 1 });
  await db.exec("CREATE TABLE t (x)");
  const insert = await db.prepare("INSERT INTO t VALUES (?)");
  await db.transaction(async () => {
    await db.run("INSERT INTO t VALUES (1)");
    await insert.run([2]);
  });
  assert.deepEqual(await db.values("SELECT x FROM t ORDER BY x"), [[1], [2]]);
  await insert.finalize();
});

Deno.test("Client.run() outside transaction(fn) timing out on the client's own transaction says so", async () => {
  await using s = await startServer({ busyTimeout: 150 });
  await using db = await connect({ ...s.connectOptions, max: 4 });
  await db.exec("CREATE TABLE t (x)");
  let release!: () => void;
  const held = new Promise<void>((resolve) => release = resolve);
  let begun!: () => void;
  const began = new Promise<void>((resolve) => begun = resolve);
  // Deferred and nothing written: the transaction holds the writer from BEGIN.
  const tx = db.transaction(async () => {
    begun();
    await held;
  });
  await began;
  const insert = await db.prepare("INSERT INTO t VALUES (?)").catch((err) => err);
  const failures = [await db.run("INSERT INTO t VALUES (1)").catch((err) => err), insert];
  release();
  await tx;
  for (const err of failures) {
    assert.ok(err instanceof SqliteError, String(err));
    assert.equal(err.code, "BUSY_TIMEOUT");
    assert.match(err.message, /held by this client's own transaction \(session \d+\): /);
    assert.ok(err.message.includes(ADVICE), err.message);
    assert.ok(err.cause instanceof SqliteError);
  }
  assert.deepEqual(await db.values("SELECT x FROM t"), []);
});

Deno.test("Statement.run() timing out on a raw BEGIN of the client's reserved connection names it", async () => {
  await using s = await startServer({ busyTimeout: 150 });
  await using db = await connect({ ...s.connectOptions, max: 4 });
  await db.exec("CREATE TABLE t (x)");
  const insert = await db.prepare("INSERT INTO t VALUES (?)");
  {
    await using r = await db.reserve();
    await r.exec("BEGIN");
    const err = await insert.run([1]).catch((e) => e);
    assert.ok(err instanceof SqliteError, String(err));
    assert.equal(err.code, "BUSY_TIMEOUT");
    assert.match(err.message, /held by this client's own transaction/);
    await r.exec("ROLLBACK");
  }
  await insert.run([2]);
  assert.deepEqual(await db.values("SELECT x FROM t"), [[2]]);
  await insert.finalize();
});

Deno.test("Client.run() timing out on another client's transaction keeps the server's message", async () => {
  await using s = await startServer({ busyTimeout: 150 });
  await using db = await connect({ ...s.connectOptions, max: 4 });
  await using other = await connect({ ...s.connectOptions, max: 4 });
  await db.exec("CREATE TABLE t (x)");
  await other.transaction(async (tx) => {
    await tx.run("INSERT INTO t VALUES (1)");
    // Inside another client's fn: not this client's transaction.
    const err = await db.run("INSERT INTO t VALUES (2)").catch((e) => e);
    assert.ok(err instanceof SqliteError, String(err));
    assert.equal(err.code, "BUSY_TIMEOUT");
    assert.match(err.message, /held by session \d+: busy timeout/);
  });
  assert.deepEqual(await db.values("SELECT x FROM t"), [[1]]);
});

Deno.test("surelyWrites() tells statements that always take the writer", () => {
  for (
    const sql of [
      "INSERT INTO t VALUES (1)",
      " update t set x = 1",
      "DELETE FROM t",
      "REPLACE INTO t VALUES (1)",
      "CREATE TABLE u (x)",
      "drop table t",
      "ALTER TABLE t ADD y",
      "WITH a(x) AS (SELECT 1) INSERT INTO t SELECT x FROM a",
      "/* c */ -- d\n INSERT INTO t VALUES (1)",
    ]
  ) {
    assert.equal(surelyWrites(sql), true, sql);
  }
  for (
    const sql of [
      "SELECT 1",
      "WITH a(x) AS (SELECT 1) SELECT x FROM a",
      "PRAGMA user_version = 1",
      "VALUES (1)",
      "EXPLAIN INSERT INTO t VALUES (1)",
      "ATTACH 'x' AS y",
      "",
      "BEGIN",
    ]
  ) {
    assert.equal(surelyWrites(sql), false, sql);
  }
});
