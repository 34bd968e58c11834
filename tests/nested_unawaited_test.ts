/**
 * A nested `tx.transaction()` left un-awaited: when the enclosing `fn`
 * settles first, neither level is committed, the enclosing `transaction()`
 * rejects with `TX_NESTED_RUNNING`, and the nested one's later calls are
 * refused with `TX_ENDED` (nothing of it runs after the enclosing level ended).
 */
import assert from "node:assert/strict";
import { type Client, connect, ErrorCode, SqliteError } from "../mod.ts";
import { openLink } from "../client/connection.ts";
import { resolveConnectOptions } from "../client/options.ts";
import { Op } from "../protocol/messages.ts";
import { startServer } from "./_helpers.ts";

const ENGINES = ["ffi", "node"] as const;

/** Settles `p` into a value to assert on, so that its rejection is never unhandled. */
function outcome<T>(p: Promise<T>): Promise<{ value?: T; error?: unknown }> {
  return p.then((value) => ({ value }), (error) => ({ error }));
}

function assertCode(error: unknown, code: string): void {
  assert.ok(error instanceof SqliteError, `expected SqliteError ${code}, got ${error}`);
  assert.equal(error.code, code, error.message);
}

for (const engine of ENGINES) {
  Deno.test(`Client.transaction() (${engine}) whose fn returns while a nested transaction is still beginning rolls both back and rejects with TX_NESTED_RUNNING`, async () => {
    await using srv = await startServer({ engine });
    await using db = await connect({ ...srv.connectOptions, max: 2 });
    await db.exec("CREATE TABLE t (v TEXT)");
    let nested!: Promise<{ value?: unknown; error?: unknown }>;
    const outer = await outcome(db.transaction(async (tx) => {
      await tx.run("INSERT INTO t VALUES ('outer')");
      // Missing await: the nested transaction is meant to be all or nothing.
      nested = outcome(tx.transaction(async (inner) => {
        await inner.run("INSERT INTO t VALUES ('inner-1')");
        await inner.run("INSERT INTO t VALUES ('inner-2')");
        throw new Error("inner fails: its savepoint should be rolled back");
      }));
      return "outer done";
    }));
    assertCode(outer.error, ErrorCode.TxNestedRunning);
    assert.match((outer.error as Error).message, /nested in it was still running/);
    const inner = await nested;
    assert.ok(inner.error instanceof Error, "the nested transaction() rejects too");
    assert.deepEqual(await db.values("SELECT v FROM t"), [], "nothing of either level committed");
    // The client goes on: a transaction on the connection begins and commits as usual.
    await db.transaction(async (tx) => void await tx.run("INSERT INTO t VALUES ('after')"));
    assert.deepEqual(await db.values("SELECT v FROM t"), [["after"]]);
  });

  Deno.test(`Client.transaction() (${engine}): a nested transaction that already wrote when the enclosing fn returned keeps nothing, and its later calls fail with TX_ENDED`, async () => {
    await using srv = await startServer({ engine });
    // max: 1, so that the next transaction takes the very connection the nested one held.
    await using db = await connect({ ...srv.connectOptions, max: 1 });
    await db.exec("CREATE TABLE t (v TEXT)");
    const wrote = Promise.withResolvers<void>();
    const goOn = Promise.withResolvers<void>();
    const late: { error?: unknown }[] = [];
    let nested!: Promise<{ value?: unknown; error?: unknown }>;
    const outer = await outcome(db.transaction(async (tx) => {
      await tx.run("INSERT INTO t VALUES ('outer')");
      nested = outcome(tx.transaction(async (inner) => {
        await inner.run("INSERT INTO t VALUES ('inner-1')");
        wrote.resolve();
        await goOn.promise;
        late.push(await outcome(inner.run("INSERT INTO t VALUES ('inner-2')")));
        late.push(await outcome(inner.transaction(() => Promise.resolve("deeper"))));
        return "nested done";
      }));
      await wrote.promise;
      return "outer done";
    }));
    assertCode(outer.error, ErrorCode.TxNestedRunning);
    // A transaction of the same client now holds the connection the nested one used.
    const next = db.transaction(async (tx) => {
      await tx.run("INSERT INTO t VALUES ('next')");
      goOn.resolve();
      const inner = await nested;
      // The nested fn resolved, but its work is gone: its transaction() says so.
      assertCode(inner.error, ErrorCode.TxEnded);
      assert.match((inner.error as Error).message, /nested in settled/);
      await tx.run("INSERT INTO t VALUES ('next-2')");
    });
    await next;
    assert.equal(late.length, 2);
    assertCode(late[0].error, ErrorCode.TxEnded);
    assertCode(late[1].error, ErrorCode.TxEnded);
    assert.deepEqual(
      await db.values("SELECT v FROM t ORDER BY rowid"),
      [["next"], ["next-2"]],
      "only the next transaction's rows: none of the abandoned levels, none inside the next one",
    );
    // That next transaction began with BEGIN (no savepoint left over): rolling one back undoes it all.
    await outcome(db.transaction(async (tx) => {
      await tx.run("DELETE FROM t");
      throw new Error("undo");
    }));
    assert.equal(db.inTransaction, false);
    assert.equal((await db.values("SELECT count(*) FROM t"))[0][0], 2);
  });
}

Deno.test("Client.transaction(): a nested level that returns while its own nested one runs rolls back only its level; the outer fn may catch that and commit its own work", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 2 });
  await db.exec("CREATE TABLE t (v TEXT)");
  const wrote = Promise.withResolvers<void>();
  let deepest!: Promise<{ value?: unknown; error?: unknown }>;
  const result = await db.transaction(async (tx) => {
    await tx.run("INSERT INTO t VALUES ('outer')");
    const middle = await outcome(tx.transaction(async (mid) => {
      await mid.run("INSERT INTO t VALUES ('middle')");
      deepest = outcome(mid.transaction(async (deep) => {
        await deep.run("INSERT INTO t VALUES ('deepest')");
        wrote.resolve();
        await new Promise<void>(() => {}); // never settles on its own
      }));
      await wrote.promise;
    }));
    assertCode(middle.error, ErrorCode.TxNestedRunning);
    assert.equal(tx.inTransaction, true);
    await tx.run("INSERT INTO t VALUES ('outer-2')");
    return "outer done";
  });
  assert.equal(result, "outer done");
  assert.deepEqual(await db.values("SELECT v FROM t ORDER BY rowid"), [["outer"], ["outer-2"]]);
  // The deepest fn never settles; its transaction() stays pending, and sends nothing more.
  let settled = false;
  void deepest.then(() => settled = true);
  await db.get("SELECT 1");
  assert.equal(settled, false);
});

Deno.test("Client.transaction(): a nested transaction waiting for its turn when the enclosing fn returns never runs, and counts as still running", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 2 });
  await db.exec("CREATE TABLE t (v TEXT)");
  const ran: string[] = [];
  const wrote = Promise.withResolvers<void>();
  let first!: Promise<{ value?: unknown; error?: unknown }>;
  let second!: Promise<{ value?: unknown; error?: unknown }>;
  const outer = await outcome(db.transaction(async (tx) => {
    first = outcome(tx.transaction(async (a) => {
      ran.push("a");
      await a.run("INSERT INTO t VALUES ('a')");
      wrote.resolve();
    }));
    // Started side by side: it waits until the first one ended.
    second = outcome(tx.transaction(async (b) => {
      ran.push("b");
      await b.run("INSERT INTO t VALUES ('b')");
    }));
    await wrote.promise;
  }));
  assertCode(outer.error, ErrorCode.TxNestedRunning);
  const b = await second;
  assertCode(b.error, ErrorCode.TxEnded);
  await first;
  assert.deepEqual(ran, ["a"]);
  assert.deepEqual(await db.values("SELECT v FROM t"), []);
});

/** Ways of starting a nested transaction just after the enclosing `fn` returned or threw. */
const LATE_STARTS: Record<string, (start: () => void) => void> = {
  queueMicrotask: (start) => queueMicrotask(start),
  "Promise.resolve().then": (start) => void Promise.resolve().then(start),
};

/**
 * Runs `levels` transactions nested in one another on `q` (each awaiting the
 * next); the innermost writes, queues a nested `tx.transaction()` with
 * `later`, then returns ("commit") or throws ("rollback"). Returns the
 * outcome of the outermost level and of the late nested one.
 */
async function lateNested(
  q: { transaction: Client["transaction"] },
  levels: number,
  end: "commit" | "rollback",
  later: (start: () => void) => void,
): Promise<{ outer: { value?: unknown; error?: unknown }; late: { error?: unknown } }> {
  let late: Promise<{ value?: unknown; error?: unknown }> | undefined;
  let ranLate = false;
  const level = (on: { transaction: Client["transaction"] }, n: number): Promise<string> =>
    on.transaction(async (tx) => {
      await tx.run("INSERT INTO t VALUES (?)", [`level ${n}`]);
      if (n < levels) return await level(tx, n + 1);
      later(() => {
        late = outcome(tx.transaction(async (inner) => {
          ranLate = true;
          await inner.run("INSERT INTO t VALUES ('late')");
          return "late done";
        }));
      });
      if (end === "rollback") throw new Error("innermost fn throws");
      return "innermost done";
    });
  const outer = await outcome(level(q, 1));
  assert.ok(late !== undefined, "the late nested transaction() was called");
  const settled = await late;
  assert.equal(ranLate, false, "the late nested fn never runs");
  return { outer, late: settled };
}

for (const [how, later] of Object.entries(LATE_STARTS)) {
  Deno.test(`ReservedConnection.transaction(): a nested tx.transaction() started by ${how} as fn returns or throws sends no SAVEPOINT, and the connection is left outside any transaction`, async () => {
    await using srv = await startServer();
    await using db = await connect({ ...srv.connectOptions, max: 2 });
    await db.exec("CREATE TABLE t (v TEXT)");
    await using r = await db.reserve();
    for (const end of ["commit", "rollback"] as const) {
      for (const levels of [1, 2, 3]) {
        const what = `${end}, ${levels} level(s)`;
        const { outer, late } = await lateNested(r, levels, end, later);
        if (end === "commit") assertCode(outer.error, ErrorCode.TxNestedRunning);
        else assert.equal((outer.error as Error).message, "innermost fn throws", what);
        assertCode(late.error, ErrorCode.TxEnded);
        assert.match((late.error as Error).message, /nested in settled/, what);
        assert.equal(r.inTransaction, false, `${what}: no transaction left open`);
        assert.deepEqual(await r.get("SELECT 1 AS one"), { one: 1 }, what);
        // A raw BEGIN would fail inside a transaction a stray SAVEPOINT opened.
        await r.exec("BEGIN");
        await r.exec("ROLLBACK");
        await r.transaction(async (tx) => void await tx.run("INSERT INTO t VALUES ('next')"));
        assert.deepEqual(
          await db.values("SELECT v FROM t"),
          [["next"]],
          `${what}: nothing of the levels or of the late one; the next transaction committed`,
        );
        await db.run("DELETE FROM t");
      }
    }
  });

  Deno.test(`Client.transaction() (max: 1): a nested tx.transaction() started by ${how} as fn returns or throws sends nothing, and the connection is kept`, async () => {
    await using srv = await startServer();
    await using db = await connect({ ...srv.connectOptions, max: 1 });
    await db.exec("CREATE TABLE t (v TEXT)");
    const [stats] = await openLink(await resolveConnectOptions(srv.connectOptions));
    try {
      for (const end of ["commit", "rollback"] as const) {
        for (const levels of [1, 3]) {
          const what = `${end}, ${levels} level(s)`;
          const { late } = await lateNested(db, levels, end, later);
          assertCode(late.error, ErrorCode.TxEnded);
          assert.equal(db.inTransaction, false, what);
          assert.deepEqual(await db.values("SELECT v FROM t"), [], what);
        }
      }
      // A stray SAVEPOINT would have left the connection inside a transaction when the
      // pool took it back: closed, then opened again. Two connections in all: db's, this one.
      const { connections } = await stats.request(Op.Stats, []);
      assert.equal(connections.total, 2, JSON.stringify(connections));
    } finally {
      stats.fail(new Error("test done"));
      await stats.ended;
    }
  });
}
