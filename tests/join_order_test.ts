/**
 * A plain call on a `max: 1` client made from inside `transaction(fn)`
 * joins the transaction, at the level its caller is in: made from the outer
 * function while a nested transaction that another branch started is open,
 * it waits until that one has ended, as a call through the outer `tx` does
 * (inside the nested one's savepoint, that one's `ROLLBACK TO` would undo it
 * after it was acknowledged); made from inside the nested function, it runs
 * at once, as part of the nested transaction.
 */
import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import { delay, startServer } from "./_helpers.ts";

/** A nested transaction that inserts, lets the other branches run, then fails. */
function failingNested(
  open: (fn: () => Promise<void>) => Promise<unknown>,
  insert: () => Promise<unknown>,
  events: string[],
): Promise<unknown> {
  return open(async () => {
    await insert();
    await delay(40); // the other branches send their calls now
    events.push("nested throws");
    throw new Error("nested fails");
  });
}

for (const max of [1, 4]) {
  Deno.test(`Client (max: ${max}): a call through the client from transaction()'s fn beside an open nested transaction waits for it, so its rollback keeps the call's write`, async () => {
    await using srv = await startServer();
    await using db = await connect({ ...srv.connectOptions, max });
    await db.exec("CREATE TABLE t (v TEXT)");
    const insert = await db.prepare("INSERT INTO t VALUES (?)");
    const events: string[] = [];
    /** Sends `call` from another branch of fn while the nested transaction's savepoint is open. */
    const beside = async (name: string, call: () => Promise<unknown>) => {
      await delay(10);
      await call();
      events.push(`${name} acknowledged`);
    };
    await db.transaction(async (tx) => {
      const settled = await Promise.allSettled([
        failingNested(
          (fn) => tx.transaction(fn),
          () => tx.run("INSERT INTO t VALUES ('nested')"),
          events,
        ),
        beside("tx", () => tx.run("INSERT INTO t VALUES ('tx')")),
        // Nests in the transaction of fn (whatever max): after the open nested one.
        beside(
          "client tx",
          () => db.transaction((inner) => inner.run("INSERT INTO t VALUES ('client tx')")),
        ),
        // Join the transaction (max: 1): at the outer level, so they wait as tx.run does.
        ...(max === 1
          ? [
            beside("client run", () => db.run("INSERT INTO t VALUES ('client run')")),
            beside("client statement", () => insert.run(["client statement"])),
            beside("client exec", () => db.exec("INSERT INTO t VALUES ('client exec')")),
          ]
          : []),
      ]);
      assert.deepEqual(
        settled.map((s) => s.status),
        ["rejected", ...settled.slice(1).map(() => "fulfilled")],
      );
    });
    // Every acknowledged write is committed; the failed nested transaction's row is gone.
    assert.deepEqual(
      await db.values("SELECT v FROM t ORDER BY v"),
      max === 1
        ? [["client exec"], ["client run"], ["client statement"], ["client tx"], ["tx"]]
        : [["client tx"], ["tx"]],
    );
    assert.equal(events[0], "nested throws", events.join(", "));
    await insert.finalize();
    assert.equal(db.inTransaction, false);
  });
}

Deno.test("Client (max: 1): a plain call made from inside a nested transaction's fn runs at once, as part of it, and is undone with it", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 1 });
  await db.exec("CREATE TABLE t (v TEXT)");
  await db.transaction(async (tx) => {
    await tx.run("INSERT INTO t VALUES ('outer')");
    await assert.rejects(
      tx.transaction(async (inner) => {
        await inner.run("INSERT INTO t VALUES ('inner')");
        // Would wait for itself if it queued behind the nested transaction.
        await db.run("INSERT INTO t VALUES ('client in nested')");
        assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[3]]);
        throw new Error("undo the nested level");
      }),
      /undo the nested level/,
    );
    // And after the nested one ended, at the outer level at once.
    await db.run("INSERT INTO t VALUES ('client after')");
  });
  assert.deepEqual(await db.values("SELECT v FROM t ORDER BY rowid"), [["outer"], [
    "client after",
  ]]);
});

Deno.test("Client (max: 1): after a raw BEGIN, a plain call made elsewhere while a transaction() nested in it is open waits for that one", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 1 });
  await db.exec("CREATE TABLE t (v TEXT)");
  await db.exec("BEGIN");
  const events: string[] = [];
  const nested = failingNested(
    (fn) => db.transaction(fn), // a savepoint of the raw transaction
    () => db.run("INSERT INTO t VALUES ('nested')"), // from its fn: part of it
    events,
  ).then(() => "committed", (err: Error) => err.message);
  await delay(10);
  await db.run("INSERT INTO t VALUES ('plain')");
  events.push("plain acknowledged");
  assert.equal(await nested, "nested fails");
  await db.exec("COMMIT");
  assert.deepEqual(events, ["nested throws", "plain acknowledged"]);
  assert.deepEqual(await db.values("SELECT v FROM t"), [["plain"]]);
});

Deno.test("Client (max: 1): a plain call that waited beside a nested transaction is refused with TX_ENDED when its transaction fails meanwhile, and writes nothing", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 1 });
  await db.exec("CREATE TABLE t (v TEXT)");
  let joined: Promise<unknown> | null = null;
  await assert.rejects(
    db.transaction(async (tx) => {
      await tx.run("INSERT INTO t VALUES ('tx')");
      await Promise.all([
        tx.transaction(() => delay(60)),
        (async () => {
          await delay(5);
          joined = db.run("INSERT INTO t VALUES ('joined')"); // waits for the nested one
          await joined;
        })(),
        (async () => {
          await delay(20);
          throw new Error("a branch failed");
        })(),
      ]);
    }),
    /a branch failed/,
  );
  assert.ok(joined !== null);
  await assert.rejects(joined, (err: Error & { code?: string }) => {
    assert.equal(err.code, "TX_ENDED", err.message);
    assert.match(err.message, /settled meanwhile without it/);
    return true;
  });
  await delay(100);
  assert.deepEqual(
    await db.values("SELECT v FROM t"),
    [],
    "nothing committed, in autocommit either",
  );
  assert.equal(db.inTransaction, false);
});

Deno.test("Client (max: 1): a nested function that awaits a plain call made at the level it nests in no longer hangs: the call fails with TX_TIMEOUT once the connection was idle past the server's lease", async () => {
  await using srv = await startServer({ txIdleTimeout: 300 });
  await using db = await connect({ ...srv.connectOptions, max: 1 });
  await db.exec("CREATE TABLE t (v TEXT)");
  const started = performance.now();
  let call: Promise<unknown> | null = null;
  await assert.rejects(
    db.transaction(async (tx) => {
      await tx.run("INSERT INTO t VALUES ('tx')");
      // Made at the outer level (a timer, a job queue): it waits for the nested transaction,
      // which waits for it.
      const later = new Promise((resolve, reject) =>
        setTimeout(() => {
          call = db.run("INSERT INTO t VALUES ('later')");
          call.then(resolve, reject);
        }, 10)
      );
      await tx.transaction(async () => {
        await later;
      });
    }),
    (err: Error & { code?: string }) => {
      // The nested function rethrows the call's error; the transaction is gone on the server.
      assert.equal(err.code, "TX_TIMEOUT", err.message);
      return true;
    },
  );
  const waited = performance.now() - started;
  assert.ok(waited >= 300 && waited < 5000, `failed after ${waited} ms`);
  assert.ok(call !== null);
  await assert.rejects(call, (err: Error & { code?: string }) => {
    assert.equal(err.code, "TX_TIMEOUT");
    assert.match(
      err.message,
      /waited \d+ ms for a transaction nested beside it, while the connection sent nothing, longer than the server's --tx-idle-timeout \(300 ms\)/,
    );
    return true;
  });
  assert.deepEqual(await db.values("SELECT v FROM t"), [], "nothing committed");
  assert.equal(db.inTransaction, false);
  // The client goes on.
  await db.run("INSERT INTO t VALUES ('after')");
  assert.deepEqual(await db.values("SELECT v FROM t"), [["after"]]);
});

Deno.test("Client (max: 1): a plain call waiting beside a long nested transaction that keeps working is not timed out by the idle lease", async () => {
  await using srv = await startServer({ txIdleTimeout: 200 });
  await using db = await connect({ ...srv.connectOptions, max: 1 });
  await db.exec("CREATE TABLE t (v TEXT)");
  await db.transaction(async (tx) => {
    await Promise.all([
      tx.transaction(async (n) => {
        for (let i = 0; i < 10; i++) { // 600 ms in all, never idle for 200
          await delay(60);
          await n.run("INSERT INTO t VALUES ('nested')");
        }
      }),
      delay(5).then(() => db.run("INSERT INTO t VALUES ('beside')")),
    ]);
  });
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[11]]);
});
