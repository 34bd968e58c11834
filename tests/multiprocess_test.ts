/**
 * The multi-client core and transaction behaviour with every client in its own
 * `deno run` process (tests/_client_process.ts) and the server in its own
 * process too, as users run them. The in-process variants of these tests are
 * in transactions_test.ts, group_commit_test.ts and integration_test.ts.
 */

import assert from "node:assert/strict";
import { type ClientProcess, spawnClientProcess } from "./_client_process.ts";
import { delay, startServerProcess } from "./_helpers.ts";
import { openLink } from "../client/connection.ts";
import { resolveConnectOptions } from "../client/options.ts";
import { Op } from "../protocol/messages.ts";

/** Starts `n` client processes at once. */
async function clients(
  options: Parameters<typeof spawnClientProcess>[0],
  n: number,
): Promise<ClientProcess[] & AsyncDisposable> {
  const list = await Promise.all(Array.from({ length: n }, () => spawnClientProcess(options)));
  return Object.assign(list, {
    async [Symbol.asyncDispose]() {
      await Promise.all(list.map((c) => c[Symbol.asyncDispose]()));
    },
  });
}

/** Tracks whether a promise has settled, without awaiting it. */
function track<T>(p: Promise<T>): { promise: Promise<T>; settled: () => boolean } {
  let done = false;
  const promise = p.finally(() => done = true);
  promise.catch(() => {});
  return { promise, settled: () => done };
}

Deno.test("client processes: one process's uncommitted writes are invisible to another (no dirty reads)", async () => {
  await using sp = await startServerProcess();
  await using ps = await clients(sp.connectOptions, 2);
  const [a, b] = ps;
  await a.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT)");
  await a.exec("BEGIN");
  await a.run("INSERT INTO t (who) VALUES ('a')");
  assert.equal(await a.inTransaction(), true);
  assert.deepEqual(await a.query("SELECT who FROM t"), [{ who: "a" }]);
  assert.deepEqual(await b.query("SELECT who FROM t"), []);
  await a.exec("COMMIT");
  assert.equal(await a.inTransaction(), false);
  assert.deepEqual(await b.query("SELECT who FROM t"), [{ who: "a" }]);
});

Deno.test("client processes: a write waits for another process's open transaction and lands after COMMIT; reads do not wait", async () => {
  await using sp = await startServerProcess();
  await using ps = await clients(sp.connectOptions, 3);
  const [a, b, c] = ps;
  await a.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT)");
  await a.exec("BEGIN");
  await a.run("INSERT INTO t (who) VALUES ('a1')");
  const write = track(b.run("INSERT INTO t (who) VALUES ('b')"));
  // 200 ms: an unblocked write between processes takes a few ms.
  await delay(200);
  assert.equal(write.settled(), false, "b's write must wait while a's transaction is open");
  assert.deepEqual(await c.query("SELECT who FROM t"), [], "c reads the last committed state");
  await a.run("INSERT INTO t (who) VALUES ('a2')");
  await a.exec("COMMIT");
  assert.deepEqual(await write.promise, { changes: 1, lastInsertRowid: 3 });
  assert.deepEqual(await c.values("SELECT who FROM t ORDER BY id"), [["a1"], ["a2"], ["b"]]);
});

Deno.test("client processes: writers queued behind a transaction are served in arrival order", async () => {
  await using sp = await startServerProcess();
  await using ps = await clients(sp.connectOptions, 5);
  const [holder, ...writers] = ps;
  await holder.exec("CREATE TABLE t (seq INTEGER PRIMARY KEY, who INTEGER)");
  await holder.exec("BEGIN IMMEDIATE");
  // The server's stats say when each writer is queued: the next one is sent
  // only then, which makes the arrival order certain however loaded the machine.
  const [admin] = await openLink(await resolveConnectOptions(sp.connectOptions));
  const writes = [];
  try {
    for (let i = 0; i < writers.length; i++) {
      writes.push(writers[i].run("INSERT INTO t (who) VALUES (?)", [i]));
      while ((await admin.request(Op.Stats, [])).writer.waiting < i + 1) await delay(10);
    }
  } finally {
    admin.fail(new Error("test done"));
    await admin.ended;
  }
  await holder.exec("COMMIT");
  await Promise.all(writes);
  assert.deepEqual(await holder.values("SELECT who FROM t ORDER BY seq"), [[0], [1], [2], [3]]);
});

Deno.test("client processes: immediate read-modify-write transactions from 4 processes lose no update", async () => {
  await using sp = await startServerProcess();
  await using ps = await clients(sp.connectOptions, 4);
  await ps[0].exec("CREATE TABLE c (n INTEGER); INSERT INTO c VALUES (0)");
  const done = await Promise.all(ps.map((p) => p.increment(25, "immediate")));
  assert.deepEqual(done, [25, 25, 25, 25]);
  assert.deepEqual(await ps[1].values("SELECT n FROM c"), [[100]]);
});

Deno.test("client processes: deferred transactions of two processes that both upgrade do not deadlock", async () => {
  await using sp = await startServerProcess();
  await using ps = await clients(sp.connectOptions, 2);
  await ps[0].exec("CREATE TABLE c (n INTEGER); INSERT INTO c VALUES (0)");
  // Both read, then both write: on a shared SQLite file this is the SQLITE_BUSY
  // upgrade deadlock; netsqlite serialises them, so the second sees the first.
  const results = await Promise.all(ps.map((p) => p.bumpSlow(100)));
  assert.deepEqual(results.sort(), [1, 2]);
  assert.deepEqual(await ps[0].values("SELECT n FROM c"), [[2]]);
});

Deno.test("client processes: a transaction idle past --tx-idle-timeout is rolled back, its owner gets TX_TIMEOUT, the waiter lands", async () => {
  await using sp = await startServerProcess({ args: ["--tx-idle-timeout", "300"] });
  await using ps = await clients(sp.connectOptions, 2);
  const [a, b] = ps;
  await a.exec("CREATE TABLE t (who)");
  await a.exec("BEGIN");
  await a.run("INSERT INTO t VALUES ('a')");
  const started = performance.now();
  await b.run("INSERT INTO t VALUES ('b')");
  const waited = performance.now() - started;
  // Freed by the 300 ms lease, not by b's 5 s busy timeout (bound: load margin).
  assert.ok(waited >= 250 && waited < 3000, `b waited ${waited.toFixed(0)} ms`);
  await assert.rejects(a.run("INSERT INTO t VALUES ('a2')"), { code: "TX_TIMEOUT" });
  await a.exec("ROLLBACK");
  assert.equal(await a.inTransaction(), false);
  assert.deepEqual(await a.values("SELECT who FROM t"), [["b"]]);
});

Deno.test("client processes: concurrent autocommit writes from 4 processes are all acknowledged and stored", async () => {
  await using sp = await startServerProcess({ args: ["--synchronous", "full"] });
  await using ps = await clients(sp.connectOptions, 4);
  await ps[0].exec("CREATE TABLE t (id INTEGER PRIMARY KEY, client INTEGER, n INTEGER)");
  const acked = (await Promise.all(
    ps.map((p, c) =>
      Promise.all(
        Array.from(
          { length: 50 },
          (_, n) => p.run("INSERT INTO t (client, n) VALUES (?, ?)", [c, n]),
        ),
      )
    ),
  )).flat();
  assert.ok(acked.every((r) => r.changes === 1));
  const ids = acked.map((r) => Number(r.lastInsertRowid)).sort((x, y) => x - y);
  assert.equal(new Set(ids).size, 200, "every write got its own rowid");
  assert.deepEqual(
    (await ps[3].values<[number]>("SELECT id FROM t ORDER BY id")).map((r) => r[0]),
    ids,
  );
  assert.deepEqual(
    await ps[2].values("SELECT client, count(*) FROM t GROUP BY client ORDER BY client"),
    [[0, 50], [1, 50], [2, 50], [3, 50]],
  );
});

Deno.test("client processes: values written by one process are read back exactly by another", async () => {
  await using sp = await startServerProcess();
  await using ps = await clients(sp.connectOptions, 2);
  const [w, r] = ps;
  await w.exec("CREATE TABLE v (i INTEGER, big INTEGER, f REAL, s TEXT, b BLOB, z)");
  const row = [
    -(2 ** 53) + 1,
    2n ** 63n - 1n,
    -0.1,
    "héllo, 世界 😀",
    new Uint8Array([0, 1, 254, 255]),
    null,
  ];
  await w.run("INSERT INTO v VALUES (?, ?, ?, ?, ?, ?)", row);
  assert.deepEqual(await r.values("SELECT i, big, f, s, b, z FROM v"), [row]);
  assert.deepEqual(
    await r.values(
      "SELECT typeof(i), typeof(big), typeof(f), typeof(s), typeof(b), typeof(z) FROM v",
    ),
    [["integer", "integer", "real", "text", "blob", "null"]],
  );
});

Deno.test("client processes: a SQL error in one process is a typed error there and leaves the other unaffected", async () => {
  await using sp = await startServerProcess();
  await using ps = await clients(sp.connectOptions, 2);
  const [a, b] = ps;
  await a.exec("CREATE TABLE u (k INTEGER UNIQUE)");
  await a.run("INSERT INTO u VALUES (1)");
  await assert.rejects(b.run("INSERT INTO u VALUES (1)"), (err: unknown) => {
    assert.ok(err instanceof Error);
    assert.equal((err as { code?: string }).code, "SQLITE_CONSTRAINT_UNIQUE");
    assert.equal((err as { remoteName?: string }).remoteName, "SqliteError");
    return true;
  });
  assert.deepEqual(await a.run("INSERT INTO u VALUES (2)"), { changes: 1, lastInsertRowid: 2 });
  assert.deepEqual(await b.values("SELECT k FROM u ORDER BY k"), [[1], [2]]);
});
