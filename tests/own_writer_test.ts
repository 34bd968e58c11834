/**
 * Calls through a client's shared pool that would wait for the writer held
 * by the same client's own transaction (the better-sqlite3 porting trap of
 * `db.run()` or a `db.prepare()`d statement used inside `db.transaction(fn)`):
 * a call that times out waiting for that transaction's writer names it in its
 * `BUSY_TIMEOUT` and says to query through `tx`.
 */

import assert from "node:assert/strict";
import { connect, SqliteError } from "../mod.ts";
import { startServer } from "./_helpers.ts";

const ADVICE = "inside transaction(fn), query through tx (tx.prepare / tx.run)";

/** A `BUSY_TIMEOUT` naming this client's own transaction; `fromFn`: and that fn made the call. */
function ownHolder(fromFn: boolean): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof SqliteError, String(err));
    assert.equal(err.code, "BUSY_TIMEOUT");
    assert.match(err.message, /held by this client's own transaction \(session \d+\)/);
    assert.equal(err.message.includes("whose fn made this call"), fromFn, err.message);
    assert.ok(err.message.includes(ADVICE), err.message);
    assert.ok(err.cause instanceof SqliteError);
    return true;
  };
}

Deno.test("Client.run() awaited inside its own transaction(fn) fails with a BUSY_TIMEOUT that names that transaction", async () => {
  await using s = await startServer({ busyTimeout: 150 });
  await using db = await connect({ ...s.connectOptions, max: 4 });
  await db.exec("CREATE TABLE t (x)");
  await assert.rejects(
    db.transaction(async () => {
      await db.run("INSERT INTO t VALUES (1)");
    }),
    ownHolder(true),
  );
  assert.deepEqual(await db.values("SELECT x FROM t"), []);
});

Deno.test("Statement.run() of a statement prepared on the client inside its transaction(fn): BUSY_TIMEOUT names that transaction", async () => {
  await using s = await startServer({ busyTimeout: 150 });
  await using db = await connect({ ...s.connectOptions, max: 4 });
  await db.exec("CREATE TABLE cats (name)");
  const insert = await db.prepare("INSERT INTO cats VALUES (?)");
  // A deferred transaction that wrote nothing yet holds the writer too.
  await assert.rejects(
    db.transaction(async () => {
      for (const c of ["a", "b"]) await insert.run([c]);
    }),
    ownHolder(true),
  );
  // Also from a nested transaction's fn.
  await assert.rejects(
    db.transaction(async (tx) => {
      await tx.run("INSERT INTO cats VALUES ('z')");
      await tx.transaction(() => insert.run(["y"]));
    }),
    ownHolder(true),
  );
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

Deno.test("Client.exec(), batch() and prepare() inside its own transaction(fn): BUSY_TIMEOUT names that transaction", async () => {
  await using s = await startServer({ busyTimeout: 150 });
  await using db = await connect({ ...s.connectOptions, max: 4 });
  await db.exec("CREATE TABLE t (x)");
  await db.transaction(async (tx) => {
    await tx.run("INSERT INTO t VALUES (1)");
    // A script and a batch always take the writer, also ones that only read.
    await assert.rejects(db.exec("SELECT 1"), ownHolder(true));
    await assert.rejects(db.batch([{ sql: "SELECT 1" }]), ownHolder(true));
    // prepare() only compiles (it does not wait for the writer); the run does.
    const insert = await db.prepare("INSERT INTO t VALUES (2)");
    await assert.rejects(insert.run(), ownHolder(true));
  });
  assert.deepEqual(await db.values("SELECT x FROM t"), [[1]]);
});

Deno.test("Client.run() sent from transaction(fn) without awaiting still runs after the commit (unchanged)", async () => {
  await using s = await startServer({ busyTimeout: 2000 });
  await using db = await connect({ ...s.connectOptions, max: 4 });
  await db.exec("CREATE TABLE t (v)");
  let plain: Promise<unknown> | undefined;
  await db.transaction(async (tx) => {
    await tx.run("INSERT INTO t VALUES ('tx')");
    plain = db.run("INSERT INTO t VALUES ('plain')");
  });
  assert.deepEqual(await plain, { changes: 1, lastInsertRowid: 2 });
  assert.deepEqual(await db.values("SELECT v FROM t ORDER BY rowid"), [["tx"], ["plain"]]);
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
  const insert = await db.prepare("INSERT INTO t VALUES (?)");
  const failures = [
    await db.run("INSERT INTO t VALUES (1)").catch((err) => err),
    await insert.run([2]).catch((err) => err),
  ];
  release();
  await tx;
  for (const err of failures) assert.ok(ownHolder(false)(err));
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
    assert.ok(ownHolder(false)(err));
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

Deno.test("Client BUSY_TIMEOUT: a writer held by another client, after the server ended this client's transaction (its lease), is not blamed on this client", async () => {
  // The other client's transaction must outlive this client's wait (lease > busy timeout).
  await using s = await startServer({ busyTimeout: 200, txIdleTimeout: 600 });
  await using db = await connect({ ...s.connectOptions, max: 4 });
  await using other = await connect({ ...s.connectOptions, max: 1 });
  await db.exec("CREATE TABLE t (x)");
  let err: unknown = null;
  const ended = await db.transaction(async (tx) => {
    await tx.run("INSERT INTO t VALUES (1)");
    // Idle past its lease: the server rolls this transaction back (the client learns it later).
    await new Promise((r) => setTimeout(r, 900));
    await other.exec("BEGIN IMMEDIATE");
    try {
      err = await db.run("INSERT INTO t VALUES (2)").catch((e) => e);
    } finally {
      await other.exec("ROLLBACK");
    }
  }).catch((e) => e);
  assert.equal((ended as SqliteError).code, "TX_TIMEOUT", String(ended));
  const busy = err instanceof SqliteError && err.code === "BUSY_TIMEOUT" ? err : null;
  assert.ok(busy !== null, String(err));
  assert.match(busy.message, /held by session \d+: /);
  assert.doesNotMatch(busy.message, /own transaction/);
});
