import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { type Client, connect, type Queryable, SqliteError } from "../mod.ts";
import { delay, readStdoutUntil, startServer, statsUntil, within } from "./_helpers.ts";

/** Tracks whether a promise has settled, without awaiting it. */
function track<T>(p: Promise<T>): { promise: Promise<T>; settled: () => boolean } {
  let done = false;
  const promise = p.finally(() => done = true);
  promise.catch(() => {});
  return { promise, settled: () => done };
}

async function counter(db: Queryable): Promise<number> {
  return (await db.get<{ n: number }>("SELECT n FROM c"))!.n;
}

Deno.test("Client.transaction() hides uncommitted writes from other clients (no dirty reads)", async () => {
  await using srv = await startServer();
  await using a = await connect({ ...srv.connectOptions, max: 1 });
  await using b = await srv.client();
  await a.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT)");
  await a.exec("BEGIN");
  await a.run("INSERT INTO t (who) VALUES ('a')");
  assert.equal(a.inTransaction, true);
  assert.deepEqual(await a.query("SELECT who FROM t"), [{ who: "a" }]);
  assert.deepEqual(await b.query("SELECT who FROM t"), []);
  await a.exec("COMMIT");
  assert.equal(a.inTransaction, false);
  assert.deepEqual(await b.query("SELECT who FROM t"), [{ who: "a" }]);
});

Deno.test("Client.run() of another client waits for an open transaction, then lands after commit", async () => {
  await using srv = await startServer();
  await using a = await connect({ ...srv.connectOptions, max: 1 });
  await using b = await srv.client();
  await using c = await srv.client();
  await a.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT)");
  await a.exec("BEGIN");
  await a.run("INSERT INTO t (who) VALUES ('a1')");
  const write = track(b.run("INSERT INTO t (who) VALUES ('b')"));
  await delay(150);
  assert.equal(write.settled(), false, "b's write must wait while a's transaction is open");
  // A third client's read is answered at once, from the last committed state.
  // (b's own later requests run after its queued write, in order.)
  assert.deepEqual(await c.query("SELECT who FROM t"), []);
  await a.run("INSERT INTO t (who) VALUES ('a2')");
  await a.exec("COMMIT");
  const res = await write.promise;
  assert.equal(res.lastInsertRowid, 3);
  assert.deepEqual(await b.values("SELECT who FROM t ORDER BY id"), [["a1"], ["a2"], ["b"]]);
});

Deno.test("Client.query() of another client does not wait for an open transaction", async () => {
  await using srv = await startServer();
  await using a = await connect({ ...srv.connectOptions, max: 1 });
  await using b = await srv.client();
  await a.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1)");
  await a.exec("BEGIN IMMEDIATE");
  await a.run("UPDATE t SET x = 2");
  const read = track(b.get<{ x: number }>("SELECT x FROM t"));
  // The read is answered while a's transaction is open (1 s: a local round trip
  // takes well under a millisecond; waiting for a's COMMIT would never end).
  const row = await within(read.promise, 1000);
  assert.deepEqual(row, { x: 1 });
  assert.equal(read.settled(), true);
  assert.equal(a.inTransaction, true);
  await a.exec("COMMIT");
  assert.deepEqual(await b.get("SELECT x FROM t"), { x: 2 });
});

Deno.test("Client.transaction() commits on resolve and returns the function's value", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (x)");
  const out = await db.transaction(async (tx) => {
    assert.equal(tx.inTransaction, true);
    await tx.run("INSERT INTO t VALUES (1)");
    return "done";
  });
  assert.equal(out, "done");
  assert.equal(db.inTransaction, false);
  assert.deepEqual(await db.values("SELECT x FROM t"), [[1]]);
});

Deno.test("Client.transaction() rolls back and rethrows when the function throws", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (x)");
  await assert.rejects(
    db.transaction(async (tx) => {
      await tx.run("INSERT INTO t VALUES (1)");
      throw new Error("boom");
    }, { behavior: "immediate" }),
    { message: "boom" },
  );
  assert.equal(db.inTransaction, false);
  assert.deepEqual(await db.values("SELECT x FROM t"), []);
});

Deno.test("Client.transaction() nested call uses a savepoint: inner failure undoes only inner work", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (x)");
  await db.transaction(async (tx) => {
    await tx.run("INSERT INTO t VALUES ('outer')");
    await assert.rejects(
      tx.transaction(async (inner) => {
        await inner.run("INSERT INTO t VALUES ('inner')");
        throw new Error("inner fails");
      }),
      { message: "inner fails" },
    );
    assert.equal(tx.inTransaction, true);
    await tx.transaction(async (inner) => {
      await inner.run("INSERT INTO t VALUES ('inner2')");
    });
  });
  assert.deepEqual(await db.values("SELECT x FROM t ORDER BY rowid"), [["outer"], ["inner2"]]);
});

Deno.test("Client.transaction() leaves a failed statement's transaction open until it ends it", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (x UNIQUE)");
  await assert.rejects(
    db.transaction(async (tx) => {
      await tx.run("INSERT INTO t VALUES (1)");
      const err = await tx.run("INSERT INTO t VALUES (1)").catch((e) => e);
      assert.equal(err.code, "SQLITE_CONSTRAINT_UNIQUE");
      assert.equal(tx.inTransaction, true, "SQLite keeps the transaction after a constraint error");
      throw err;
    }),
    SqliteError,
  );
  assert.equal(db.inTransaction, false);
  assert.deepEqual(await db.values("SELECT x FROM t"), []);
});

Deno.test("Client.exec() SAVEPOINT/RELEASE/ROLLBACK TO work like BEGIN/COMMIT", async () => {
  await using srv = await startServer();
  await using a = await connect({ ...srv.connectOptions, max: 1 });
  await using b = await srv.client();
  await a.exec("CREATE TABLE t (x)");
  await a.exec("SAVEPOINT s1");
  assert.equal(a.inTransaction, true);
  await a.run("INSERT INTO t VALUES (1)");
  await a.exec("SAVEPOINT s2");
  await a.run("INSERT INTO t VALUES (2)");
  await a.exec("ROLLBACK TO s2");
  assert.deepEqual(await b.values("SELECT x FROM t"), []);
  await a.exec("RELEASE s1");
  assert.equal(a.inTransaction, false);
  assert.deepEqual(await b.values("SELECT x FROM t"), [[1]]);
});

Deno.test("Engine rolls back a transaction idle past --tx-idle-timeout and fails the owner with TX_TIMEOUT", async () => {
  await using srv = await startServer({ txIdleTimeout: 200 });
  await using a = await connect({ ...srv.connectOptions, max: 1 });
  await using b = await srv.client();
  assert.equal(a.serverInfo.limits.txIdleTimeout, 200);
  await a.exec("CREATE TABLE t (who)");
  await a.exec("BEGIN");
  await a.run("INSERT INTO t VALUES ('a')");
  // b's write is freed by the lease expiry, well before its busy timeout.
  const started = performance.now();
  await b.run("INSERT INTO t VALUES ('b')");
  const waited = performance.now() - started;
  assert.ok(waited >= 150 && waited < 2000, `b waited ${waited} ms`);
  await assert.rejects(a.run("INSERT INTO t VALUES ('a2')"), { code: "TX_TIMEOUT" });
  // Still aborted until the client ends the transaction.
  await assert.rejects(a.query("SELECT * FROM t"), { code: "TX_TIMEOUT" });
  await a.exec("ROLLBACK");
  assert.deepEqual(await a.values("SELECT who FROM t"), [["b"]]);
  assert.equal(a.inTransaction, false);
});

Deno.test("Engine rolls back a transaction open past --tx-timeout however busy, and fails the owner with TX_TIMEOUT", async () => {
  await using srv = await startServer({ txTimeout: 300, txIdleTimeout: 200 });
  await using a = await connect({ ...srv.connectOptions, max: 1 });
  await using b = await srv.client();
  await a.exec("CREATE TABLE t (who)");
  // Timed from before the BEGIN is sent: the server's 300 ms start after
  // (from after the INSERT, a slow reply on a loaded machine made it short).
  const started = performance.now();
  await a.exec("BEGIN");
  await a.run("INSERT INTO t VALUES ('a')");
  // a is never idle for its 200 ms lease: a statement every 50 ms.
  const bWrite = b.run("INSERT INTO t VALUES ('b')");
  let err: unknown = null;
  while (err === null && performance.now() - started < 3000) {
    await delay(50);
    err = await a.values("SELECT count(*) FROM t").then(() => null, (e) => e);
  }
  const lasted = performance.now() - started;
  assert.ok(err instanceof SqliteError, `a's transaction lasted ${lasted} ms: ${err}`);
  assert.equal(err.code, "TX_TIMEOUT");
  assert.equal(
    err.message,
    "Transaction was rolled back after lasting 300 ms (--tx-timeout); send ROLLBACK to end it " +
      "(transaction() does so itself), then retry the whole transaction, shorter",
  );
  assert.ok(lasted >= 200 && lasted < 2000, `rolled back after ${lasted} ms`);
  await bWrite; // freed by the rollback, well before its 5 s busy timeout
  await a.exec("ROLLBACK");
  assert.deepEqual(await a.values("SELECT who FROM t"), [["b"]]);
  // A new transaction gets the whole 300 ms again.
  await a.exec("BEGIN");
  await a.run("INSERT INTO t VALUES ('a3')");
  await a.exec("COMMIT");
  assert.deepEqual(await b.values("SELECT count(*) FROM t"), [[2]]);
});

Deno.test("Engine fails a write waiting past --busy-timeout with BUSY_TIMEOUT", async () => {
  await using srv = await startServer({ busyTimeout: 200 });
  await using a = await connect({ ...srv.connectOptions, max: 1 });
  await using b = await srv.client();
  await a.exec("CREATE TABLE t (x)");
  await a.exec("BEGIN");
  const started = performance.now();
  const err = await b.run("INSERT INTO t VALUES (1)").catch((e) => e);
  const waited = performance.now() - started;
  assert.ok(err instanceof SqliteError);
  assert.equal(err.code, "BUSY_TIMEOUT");
  assert.match(err.message, /busy timeout/);
  assert.ok(waited >= 190, `gave up after ${waited} ms`);
  // b is still usable, and a's transaction is untouched.
  assert.equal(a.inTransaction, true);
  await a.exec("COMMIT");
  await b.run("INSERT INTO t VALUES (2)");
  assert.deepEqual(await b.values("SELECT x FROM t"), [[2]]);
});

Deno.test("Engine serves queued writers in arrival order (FIFO)", async () => {
  await using srv = await startServer();
  await using holder = await connect({ ...srv.connectOptions, max: 1 });
  const clients = await Promise.all(Array.from({ length: 5 }, () => srv.client()));
  try {
    await holder.exec("CREATE TABLE t (seq INTEGER PRIMARY KEY, who INTEGER)");
    await holder.exec("BEGIN");
    const writes = [];
    for (let i = 0; i < clients.length; i++) {
      writes.push(clients[i].run("INSERT INTO t (who) VALUES (?)", [i]));
      // The next is sent once the server has this one queued: that makes the
      // arrival order certain (a 20 ms pause did not, on a loaded machine).
      await statsUntil(srv.connectOptions, (s) => s.writer.waiting >= i + 1, `${i + 1} queued`);
    }
    await holder.exec("COMMIT");
    await Promise.all(writes);
    assert.deepEqual(await holder.values("SELECT who FROM t ORDER BY seq"), [[0], [1], [2], [3], [
      4,
    ]]);
  } finally {
    for (const c of clients) await c.close();
  }
});

Deno.test("Client.transaction() immediate read-modify-write from 8 clients loses no update", async () => {
  await using srv = await startServer();
  const clients = await Promise.all(Array.from({ length: 8 }, () => srv.client()));
  try {
    await clients[0].exec("CREATE TABLE c (n INTEGER); INSERT INTO c VALUES (0)");
    await Promise.all(clients.map(async (db) => {
      for (let i = 0; i < 25; i++) {
        await db.transaction(async (tx) => {
          const n = await counter(tx);
          await tx.run("UPDATE c SET n = ?", [n + 1]);
        }, { behavior: "immediate" });
      }
    }));
    assert.equal(await counter(clients[0]), 200);
  } finally {
    for (const c of clients) await c.close();
  }
});

Deno.test("Client.transaction() deferred transactions that both upgrade do not deadlock", async () => {
  await using srv = await startServer();
  await using a = await srv.client();
  await using b = await srv.client();
  await a.exec("CREATE TABLE c (n INTEGER); INSERT INTO c VALUES (0)");
  // Both read, then both write: with SQLite files this is the classic
  // SQLITE_BUSY upgrade deadlock. netsqlite serialises them instead.
  const bump = (db: Client) =>
    db.transaction(async (tx) => {
      const n = await counter(tx);
      await delay(50);
      await tx.run("UPDATE c SET n = ?", [n + 1]);
    });
  await Promise.all([bump(a), bump(b)]);
  assert.equal(await counter(a), 2);
});

Deno.test("Client.batch() of another client waits for an open transaction and stays atomic", async () => {
  await using srv = await startServer();
  await using a = await connect({ ...srv.connectOptions, max: 1 });
  await using b = await srv.client();
  await a.exec("CREATE TABLE t (x)");
  await a.exec("BEGIN");
  await a.run("INSERT INTO t VALUES ('a')");
  const batch = track(
    b.batch([{ sql: "INSERT INTO t VALUES ('b1')" }, { sql: "INSERT INTO t VALUES ('b2')" }]),
  );
  await statsUntil(srv.connectOptions, (s) => s.writer.waiting === 1, "the batch waits");
  assert.equal(batch.settled(), false);
  assert.deepEqual(await a.values("SELECT x FROM t"), [["a"]]);
  await a.exec("COMMIT");
  assert.equal((await batch.promise).length, 2);
  assert.deepEqual(await a.values("SELECT x FROM t ORDER BY rowid"), [["a"], ["b1"], ["b2"]]);
});

Deno.test("Session close mid-transaction rolls back and frees the writer at once", async () => {
  await using srv = await startServer();
  await using b = await srv.client();
  await b.exec("CREATE TABLE t (who)");
  const a = await connect({ ...srv.connectOptions, max: 1 });
  await a.exec("BEGIN");
  await a.run("INSERT INTO t VALUES ('a')");
  const write = track(b.run("INSERT INTO t VALUES ('b')"));
  await statsUntil(srv.connectOptions, (s) => s.writer.waiting === 1, "b's write waits");
  assert.equal(write.settled(), false, "b's write must wait while a's transaction is open");
  const started = performance.now();
  await a.close();
  await write.promise;
  // "At once" is a few ms. Freed only at the end of a's idle lease (10 s),
  // b's write would fail with BUSY_TIMEOUT (5 s); 3 s leaves room for a
  // loaded machine's stalls.
  const freedAfter = performance.now() - started;
  assert.ok(freedAfter < 3000, `writer freed ${freedAfter.toFixed(0)} ms after the close`);
  assert.deepEqual(await b.values("SELECT who FROM t"), [["b"]]);
});

Deno.test("Session of a client killed with SIGKILL mid-transaction frees the writer at once, not at the end of its idle lease", async () => {
  await using srv = await startServer();
  await using b = await srv.client();
  await b.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT)");
  const path = (srv.connectOptions as { path: string }).path;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      fileURLToPath(new URL("./fixtures/hold_transaction.ts", import.meta.url)),
      path,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const { text: out, drained } = await readStdoutUntil(child, "ready");
  assert.match(out, /ready/);
  const write = track(b.run("INSERT INTO t (who) VALUES ('b')"));
  await statsUntil(srv.connectOptions, (s) => s.writer.waiting === 1, "b's write waits");
  assert.equal(write.settled(), false, "the child holds the writer");
  const killedAt = performance.now();
  child.kill("SIGKILL");
  await write.promise;
  const freedAfter = performance.now() - killedAt;
  await child.status;
  await drained;
  // At once: a few ms. Freed only at the end of the child's idle lease
  // (10 s), b's write would fail with BUSY_TIMEOUT (5 s); 3 s leaves room
  // for a loaded machine's stalls.
  assert.ok(freedAfter < 3000, `writer freed ${freedAfter.toFixed(0)} ms after the kill`);
  assert.deepEqual(await b.values("SELECT who FROM t"), [["b"]]);
});

Deno.test('Client.transaction() with behavior "exclusive" isolates like immediate: other writes wait, reads see committed state', async () => {
  await using srv = await startServer();
  await using a = await srv.client();
  await using b = await srv.client();
  await using c = await srv.client();
  await a.exec(
    "CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT); INSERT INTO t (who) VALUES ('0')",
  );
  let write: ReturnType<typeof track<unknown>> | undefined;
  const out = await a.transaction(async (tx) => {
    assert.equal(tx.inTransaction, true);
    await tx.run("INSERT INTO t (who) VALUES ('a')");
    write = track(b.run("INSERT INTO t (who) VALUES ('b')"));
    // 150 ms: a write takes about a millisecond when the writer is free.
    await delay(150);
    assert.equal(write.settled(), false, "b's write must wait for the exclusive transaction");
    assert.deepEqual(await c.values("SELECT who FROM t ORDER BY id"), [["0"]]);
    assert.deepEqual(await tx.values("SELECT who FROM t ORDER BY id"), [["0"], ["a"]]);
    return "committed";
  }, { behavior: "exclusive" });
  assert.equal(out, "committed");
  assert.equal(a.inTransaction, false);
  await write!.promise;
  assert.deepEqual(await c.values("SELECT who FROM t ORDER BY id"), [["0"], ["a"], ["b"]]);
  // And it rolls back like the others.
  await assert.rejects(
    a.transaction(async (tx) => {
      await tx.run("INSERT INTO t (who) VALUES ('gone')");
      throw new Error("undo");
    }, { behavior: "exclusive" }),
    { message: "undo" },
  );
  assert.deepEqual(await c.values("SELECT count(*) FROM t WHERE who = 'gone'"), [[0]]);
});

Deno.test("Client.transaction() with an invalid behavior throws TypeError before beginning anything", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  let called = false;
  // (undefined means the default, "deferred"; null is refused like any other non-choice.)
  for (const behavior of ["IMMEDIATE", "exclusive; DROP TABLE t", "", "savepoint", null]) {
    await assert.rejects(
      db.transaction(() => {
        called = true;
        return Promise.resolve();
      }, { behavior: behavior as unknown as "deferred" }),
      (err: unknown) => {
        assert.ok(err instanceof TypeError, String(err));
        assert.equal(
          err.message,
          'Invalid transaction() option "behavior": expected "deferred", "immediate" or ' +
            `"exclusive", got ${behavior === null ? "null" : JSON.stringify(behavior)}`,
        );
        return true;
      },
    );
  }
  assert.equal(called, false, "fn ran although the behavior was refused");
  assert.equal(db.inTransaction, false);
  assert.deepEqual(await db.values("SELECT 1"), [[1]]);
});

Deno.test("Client.transaction() whose function meets TX_TIMEOUT rejects with it, rolls back, and the client goes on", async () => {
  await using srv = await startServer({ txIdleTimeout: 200 });
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (x)");
  const err = await db.transaction(async (tx) => {
    await tx.run("INSERT INTO t VALUES (1)");
    await delay(400); // idle past the 200 ms lease
    await tx.run("INSERT INTO t VALUES (2)");
  }, { behavior: "immediate" }).catch((e) => e);
  assert.ok(err instanceof SqliteError, String(err));
  assert.equal(err.code, "TX_TIMEOUT");
  assert.equal(db.inTransaction, false);
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]]);
  // The next transaction works normally.
  await db.transaction(async (tx) => void await tx.run("INSERT INTO t VALUES (3)"));
  assert.deepEqual(await db.values("SELECT x FROM t"), [[3]]);
});

Deno.test("Client.transaction() whose COMMIT comes after TX_TIMEOUT rejects with TX_TIMEOUT and keeps nothing", async () => {
  await using srv = await startServer({ txIdleTimeout: 200 });
  await using db = await srv.client();
  await using other = await srv.client();
  await db.exec("CREATE TABLE t (x)");
  const err = await db.transaction(async (tx) => {
    await tx.run("INSERT INTO t VALUES (1)");
    await delay(400); // the function's last statement is followed by the COMMIT only
    return "never seen";
  }).catch((e) => e);
  assert.ok(err instanceof SqliteError, String(err));
  assert.equal(err.code, "TX_TIMEOUT");
  assert.equal(db.inTransaction, false);
  assert.deepEqual(await other.values("SELECT count(*) FROM t"), [[0]]);
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]]);
  // An explicit COMMIT after the lease expired says so too, and ends the
  // (already rolled back) transaction.
  await db.exec("BEGIN");
  await db.run("INSERT INTO t VALUES (2)");
  await delay(400);
  await assert.rejects(db.exec("COMMIT"), { code: "TX_TIMEOUT" });
  assert.equal(db.inTransaction, false);
  assert.deepEqual(await other.values("SELECT count(*) FROM t"), [[0]]);
  await db.run("INSERT INTO t VALUES (3)");
  assert.deepEqual(await other.values("SELECT x FROM t"), [[3]]);
});

Deno.test("the ROLLBACK an ORM sends after a COMMIT refused with TX_TIMEOUT succeeds, so TX_TIMEOUT is the error the caller sees", async () => {
  await using srv = await startServer({ txIdleTimeout: 200 });
  await using db = await srv.client();
  await using other = await srv.client();
  await db.exec("CREATE TABLE t (x)");
  await db.exec("BEGIN");
  await db.run("INSERT INTO t VALUES (1)");
  await delay(400);
  await assert.rejects(db.run("COMMIT"), { code: "TX_TIMEOUT" });
  // What Drizzle and Kysely do after a failed COMMIT.
  assert.deepEqual(await db.run("ROLLBACK"), { changes: 0, lastInsertRowid: 0 });
  // Only that one: a ROLLBACK outside any transaction fails as in SQLite.
  await assert.rejects(db.exec("ROLLBACK"), /no transaction is active/);
  // Through exec() as well, and a new transaction's ROLLBACK is a real one.
  await db.exec("BEGIN");
  await db.run("INSERT INTO t VALUES (2)");
  await delay(400);
  await assert.rejects(db.exec("COMMIT"), { code: "TX_TIMEOUT" });
  await db.exec("BEGIN");
  await db.run("INSERT INTO t VALUES (3)");
  await db.exec("ROLLBACK");
  assert.deepEqual(await other.values("SELECT count(*) FROM t"), [[0]]);
  await db.run("INSERT INTO t VALUES (4)");
  assert.deepEqual(await other.values("SELECT x FROM t"), [[4]]);
});

Deno.test("a statement whose failure makes SQLite roll the transaction back (INSERT OR ROLLBACK) says so, and the next statement is refused with TX_ABORTED until ROLLBACK", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await using other = await srv.client();
  await db.exec("CREATE TABLE t (x UNIQUE)");
  await db.exec("BEGIN");
  await db.run("INSERT INTO t VALUES (1)");
  await assert.rejects(db.run("INSERT OR ROLLBACK INTO t VALUES (1)"), (err: unknown) => {
    assert.ok(err instanceof SqliteError, String(err));
    assert.equal(err.code, "SQLITE_CONSTRAINT_UNIQUE");
    assert.match(
      err.message,
      /; SQLite rolled back the transaction it was in: end it with ROLLBACK/,
    );
    return true;
  });
  // Not run in autocommit: it was meant for the transaction. It violated
  // nothing: its code is not the earlier error's, which its message names.
  const aborted = {
    name: "SqliteError",
    code: "TX_ABORTED",
    sqliteCode: undefined,
    message: "Transaction was rolled back by an earlier statement's error, so this request did " +
      "not run (none will until the transaction is ended): end it with ROLLBACK (transaction() " +
      "does so itself), then retry the whole transaction; the earlier error: " +
      "SQLITE_CONSTRAINT_UNIQUE: UNIQUE constraint failed: t.x",
  };
  await assert.rejects(db.run("INSERT INTO t VALUES (2)"), aborted);
  await assert.rejects(db.values("SELECT 1"), aborted);
  assert.equal(db.inTransaction, true);
  await db.exec("ROLLBACK");
  assert.deepEqual(await other.values("SELECT x FROM t"), []);
  await db.run("INSERT INTO t VALUES (3)");
  assert.deepEqual(await other.values("SELECT x FROM t"), [[3]]);
});

Deno.test("transaction(fn) after SQLite rolled it back: later statements fail with TX_ABORTED, transaction() rejects with fn's error, or TX_ABORTED when fn swallowed it", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await db.exec(
    "CREATE TABLE t (x UNIQUE); CREATE TABLE g (y); " +
      "CREATE TRIGGER g_neg BEFORE INSERT ON g WHEN new.y < 0 BEGIN SELECT RAISE(ROLLBACK, 'neg'); END",
  );
  const aborted = (earlier: string) => (err: unknown): boolean => {
    assert.ok(err instanceof SqliteError, String(err));
    assert.equal(err.code, "TX_ABORTED");
    assert.match(err.message, /^Transaction was rolled back by an earlier statement's error/);
    assert.ok(err.message.endsWith(`; the earlier error: ${earlier}`), err.message);
    return true;
  };
  // fn lets the first error through: transaction() rejects with it.
  await assert.rejects(
    db.transaction(async (tx) => {
      await tx.run("INSERT INTO t VALUES (1)");
      await tx.run("INSERT OR ROLLBACK INTO t VALUES (1)");
    }),
    { code: "SQLITE_CONSTRAINT_UNIQUE", message: /SQLite rolled back the transaction it was in/ },
  );
  // fn catches it and goes on: what it runs next, which violates nothing, is
  // refused as TX_ABORTED (not as a UNIQUE violation); COMMIT is too.
  const seen: string[] = [];
  await assert.rejects(
    db.transaction(async (tx) => {
      await tx.run("INSERT INTO t VALUES (2)");
      await tx.run("INSERT OR ROLLBACK INTO t VALUES (2)").catch((e) => seen.push(e.code));
      await tx.run("INSERT INTO t VALUES (3)").catch((e) => seen.push(e.code));
      await assert.rejects(
        tx.values("SELECT 1"),
        aborted("SQLITE_CONSTRAINT_UNIQUE: UNIQUE constraint failed: t.x"),
      );
      assert.equal(tx.inTransaction, true);
    }),
    aborted("SQLITE_CONSTRAINT_UNIQUE: UNIQUE constraint failed: t.x"),
  );
  assert.deepEqual(seen, ["SQLITE_CONSTRAINT_UNIQUE", "TX_ABORTED"]);
  // RAISE(ROLLBACK) in a trigger, the same.
  await assert.rejects(
    db.transaction(async (tx) => {
      await tx.run("INSERT INTO t VALUES (4)");
      await tx.run("INSERT INTO g VALUES (-1)").catch(() => {});
    }),
    aborted("SQLITE_CONSTRAINT_TRIGGER: neg"),
  );
  assert.equal(db.inTransaction, false);
  assert.deepEqual(await db.values("SELECT x FROM t"), []);
  await db.transaction(async (tx) => void await tx.run("INSERT INTO t VALUES (5)"));
  assert.deepEqual(await db.values("SELECT x FROM t"), [[5]]);
});

Deno.test("nested transactions started side by side on one tx take turns: each keeps or undoes only its own work", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 2 });
  await db.exec("CREATE TABLE t (x)");
  const order: string[] = [];
  await db.transaction(async (tx) => {
    await tx.run("INSERT INTO t VALUES ('outer')");
    const [a, b] = await Promise.allSettled([
      tx.transaction(async (inner) => {
        order.push("a begins");
        await inner.run("INSERT INTO t VALUES ('a1')");
        await delay(20);
        await inner.run("INSERT INTO t VALUES ('a2')");
        // From inside a's function, the outer tx nests in a at once (no wait for a itself).
        await tx.transaction(async (deeper) =>
          void await deeper.run("INSERT INTO t VALUES ('a3')")
        );
        order.push("a ends");
      }),
      tx.transaction(async (inner) => {
        order.push("b begins");
        await inner.run("INSERT INTO t VALUES ('b1')");
        throw new Error("undo b");
      }),
    ]);
    assert.equal(a.status, "fulfilled");
    assert.equal(b.status, "rejected");
  });
  assert.deepEqual(order, ["a begins", "a ends", "b begins"]);
  assert.deepEqual(await db.values("SELECT x FROM t ORDER BY rowid"), [
    ["outer"],
    ["a1"],
    ["a2"],
    ["a3"],
  ]);
});

Deno.test("a statement through tx while a nested transaction from another branch is open waits for it: that one's rollback does not undo it", async () => {
  await using srv = await startServer();
  await using db = await connect(srv.connectOptions);
  await db.exec("CREATE TABLE t (v TEXT)");
  const order: string[] = [];
  await db.transaction(async (tx) => {
    const inner = tx.transaction(async (s) => {
      await s.run("INSERT INTO t VALUES ('inner')");
      await delay(50);
      order.push("inner ends");
      throw new Error("inner fails");
    }).catch((err) => assert.match(err.message, /inner fails/));
    const other = (async () => {
      await delay(10);
      // Through the outer tx, from a branch outside the nested transaction.
      const r = await tx.run("INSERT INTO t VALUES ('outer')");
      order.push("outer acknowledged");
      assert.equal(r.changes, 1);
    })();
    await Promise.all([inner, other]);
    assert.deepEqual(await tx.values("SELECT v FROM t"), [["outer"]]);
  });
  assert.deepEqual(order, ["inner ends", "outer acknowledged"]);
  assert.deepEqual(await db.values("SELECT v FROM t"), [["outer"]], "the acknowledged write stays");
});

Deno.test("two transactions started at once on one reserved connection take turns", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 2 });
  await db.exec("CREATE TABLE t (x)");
  await using conn = await db.reserve();
  const [a, b] = await Promise.allSettled([
    conn.transaction(async (tx) => {
      await tx.run("INSERT INTO t VALUES (1)");
      await delay(20);
    }),
    conn.transaction(async (tx) => {
      await tx.run("INSERT INTO t VALUES (2)");
      throw new Error("undo 2");
    }),
  ]);
  assert.equal(a.status, "fulfilled");
  assert.equal(b.status, "rejected");
  assert.equal((b as PromiseRejectedResult).reason.message, "undo 2");
  assert.deepEqual(await db.values("SELECT x FROM t"), [[1]]);
});

Deno.test("a nested transaction started through tx from code outside fn's async context (a job queue started earlier) nests at once", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 2 });
  // A queue whose loop runs in the context it started in, not its callers'.
  const jobs: (() => Promise<void>)[] = [];
  const waker: { wake: (() => void) | null } = { wake: null };
  let stop = false;
  const loop = (async () => {
    while (!stop) {
      while (jobs.length === 0 && !stop) await new Promise<void>((r) => waker.wake = r);
      await jobs.shift()?.();
    }
  })();
  const enqueue = <T>(fn: () => Promise<T>) =>
    new Promise<T>((resolve, reject) => {
      jobs.push(() => fn().then(resolve, reject));
      waker.wake?.();
    });
  const two = await within(
    db.transaction((tx) => enqueue(() => tx.transaction((inner) => inner.get("SELECT 2 AS two")))),
    5000,
  );
  assert.deepEqual(two, { two: 2 });
  stop = true;
  waker.wake?.();
  await loop;
});

Deno.test("max: 1 client: a plain call from a timer started in a nested transaction that ended joins the transaction still open", async () => {
  await using srv = await startServer();
  await using one = await srv.client();
  const five = await within(
    one.transaction(async (tx) => {
      let later!: Promise<unknown>;
      await tx.transaction((inner) => {
        later = (async () => {
          await delay(50);
          return await one.get("SELECT 5 AS five");
        })();
        return inner.get("SELECT 1"); // the nested transaction ends right after
      });
      return await later;
    }),
    5000,
  );
  assert.deepEqual(five, { five: 5 });
});

Deno.test("A batch whose own transaction SQLite rolled back fails alone: the connection stays usable", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await db.exec("CREATE TABLE u (k INTEGER PRIMARY KEY)");
  await db.run("INSERT INTO u VALUES (1)");
  await assert.rejects(
    db.batch([{ sql: "INSERT INTO u VALUES (2)" }, {
      sql: "INSERT OR ROLLBACK INTO u VALUES (1)",
    }]),
    {
      code: "SQLITE_CONSTRAINT_PRIMARYKEY",
      message: "Batch statement 2 of 2 failed, nothing was applied: UNIQUE constraint failed: u.k",
    },
  );
  assert.equal(db.inTransaction, false);
  assert.deepEqual(await db.values("SELECT k FROM u"), [[1]]);
  await db.run("INSERT INTO u VALUES (3)");
  assert.deepEqual(await db.values("SELECT k FROM u"), [[1], [3]]);
});

Deno.test("A transaction SQLite rolled back stays open for the client until ROLLBACK: a reserved connection released then is not pooled", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 1 });
  await db.exec("CREATE TABLE u (k INTEGER PRIMARY KEY)");
  await db.run("INSERT INTO u VALUES (1)");
  {
    await using rv = await db.reserve();
    await rv.exec("BEGIN");
    await rv.run("INSERT INTO u VALUES (2)");
    await assert.rejects(rv.run("INSERT OR ROLLBACK INTO u VALUES (1)"), /end it with ROLLBACK/);
    await assert.rejects(rv.run("INSERT INTO u VALUES (4)"), { code: "TX_ABORTED" });
    // In a failed transaction, as PostgreSQL says: the client knows to end it.
    assert.equal(rv.inTransaction, true);
  } // released without ROLLBACK: the connection is closed, not handed on
  assert.deepEqual(await db.values("SELECT k FROM u"), [[1]]);
  await db.run("INSERT INTO u VALUES (3)");
  assert.deepEqual(await db.values("SELECT k FROM u"), [[1], [3]]);
});

Deno.test("batch({ foreignKeys: false }) rebuilds a referenced table as drizzle-kit does, keeping the rows that reference it", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 2 });
  await db.exec(
    "CREATE TABLE users (id INTEGER PRIMARY KEY, age INTEGER); " +
      "CREATE TABLE posts (id INTEGER PRIMARY KEY, " +
      "author_id INTEGER REFERENCES users (id) ON DELETE CASCADE); " +
      "INSERT INTO users VALUES (1, 30), (2, NULL); INSERT INTO posts VALUES (10, 1), (11, 2)",
  );
  const rebuild = (select: string) => [
    { sql: "CREATE TABLE __new_users (id INTEGER PRIMARY KEY, age INTEGER NOT NULL)" },
    { sql: `INSERT INTO __new_users ${select}` },
    { sql: "DROP TABLE users" },
    { sql: "ALTER TABLE __new_users RENAME TO users" },
  ];
  // A rebuild that would orphan a post fails before its commit: nothing applied.
  await assert.rejects(
    db.batch(rebuild("SELECT id, age FROM users WHERE age IS NOT NULL"), { foreignKeys: false }),
    {
      code: "SQLITE_CONSTRAINT_FOREIGNKEY",
      message: /^Batch with foreignKeys: false would leave 1 row\(s\) violating a foreign key/,
    },
  );
  assert.deepEqual(await db.values("SELECT id, age FROM users ORDER BY id"), [[1, 30], [2, null]]);
  await db.batch(rebuild("SELECT id, coalesce(age, 0) FROM users"), { foreignKeys: false });
  assert.deepEqual(await db.values("SELECT id, age FROM users ORDER BY id"), [[1, 30], [2, 0]]);
  assert.deepEqual(await db.values("SELECT id, author_id FROM posts ORDER BY id"), [[10, 1], [
    11,
    2,
  ]]);
  // Foreign keys are on again, for everyone.
  assert.deepEqual(await db.values("PRAGMA foreign_keys"), [[1]]);
  await assert.rejects(db.run("INSERT INTO posts VALUES (12, 99)"), {
    code: "SQLITE_CONSTRAINT_FOREIGNKEY",
  });
  // Inside a transaction SQLite would ignore the setting: refused.
  await assert.rejects(
    db.transaction((tx) => tx.batch(rebuild("SELECT id, age FROM users"), { foreignKeys: false })),
    {
      code: "BAD_REQUEST",
      message: /^Cannot run a batch with foreignKeys: false inside a transaction/,
    },
  );
  // Without the option, DROP TABLE deletes the referencing rows (SQLite's own rule).
  await db.batch(rebuild("SELECT id, age FROM users"));
  assert.deepEqual(await db.values("SELECT count(*) FROM posts"), [[0]]);
});

Deno.test("A batch whose COMMIT fails (a deferred foreign key) says it was the commit, and nothing was applied", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await db.exec(
    "CREATE TABLE p (id INTEGER PRIMARY KEY); " +
      "CREATE TABLE c (pid REFERENCES p (id) DEFERRABLE INITIALLY DEFERRED)",
  );
  await assert.rejects(db.batch([{ sql: "INSERT INTO c VALUES (5)" }]), {
    code: "SQLITE_CONSTRAINT_FOREIGNKEY",
    message: "Batch commit failed, nothing was applied: FOREIGN KEY constraint failed",
  });
  assert.deepEqual(await db.values("SELECT count(*) FROM c"), [[0]]);
  assert.equal(db.inTransaction, false);
  await db.batch([{ sql: "INSERT INTO p VALUES (5)" }, { sql: "INSERT INTO c VALUES (5)" }]);
  assert.deepEqual(await db.values("SELECT count(*) FROM c"), [[1]]);
});
