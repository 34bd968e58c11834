/**
 * The pool's rules between plain calls, `iterate()` cursors, `reserve()` and
 * `transaction()` of one client: a cursor runs on the connection chosen when
 * iterating starts; cursors left unfinished stop holding their connection
 * once dead; `reserve()`/`transaction()` hold at most `max` − 1 connections
 * and waiters are served first come, first served; a `db.transaction()`
 * inside `fn` nests; a `BUSY_TIMEOUT` caused by the client's own
 * transaction says so.
 */

import assert from "node:assert/strict";
import { connect, SqliteError } from "../mod.ts";
import { runWithGc, startServer, within } from "./_helpers.ts";

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

Deno.test("Pool: an iterate() made before a transaction() began and iterated inside it runs outside it", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 2 });
  await db.exec("CREATE TABLE t (x)");
  await db.run("INSERT INTO t VALUES ('committed')");
  const early = db.iterate<{ x: string }>("SELECT x FROM t");
  await delay(10);
  const seen: string[] = [];
  await assert.rejects(
    db.transaction(async (tx) => {
      await tx.run("INSERT INTO t VALUES ('uncommitted')");
      for await (const r of early) seen.push(r.x);
      throw new Error("roll back");
    }),
    /roll back/,
  );
  assert.deepEqual(seen, ["committed"], "no dirty read of the transaction's row");
  // Started in the same run of code as a transaction(): the cursor keeps its connection.
  const it = db.iterate<{ x: string }>("SELECT x FROM t");
  const first = it.next();
  const tx = db.transaction(async (tx) => {
    await tx.run("INSERT INTO t VALUES ('uncommitted 2')");
    await delay(20);
    throw new Error("roll back");
  });
  const rows = [(await first).value?.x];
  for await (const r of it) rows.push(r.x);
  await assert.rejects(tx, /roll back/);
  assert.deepEqual(rows, ["committed"]);
  assert.deepEqual(await db.values("SELECT x FROM t"), [["committed"]]);
});

Deno.test("Pool: an iterate() issued in a burst after a write sees it, though iterated after an await", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 2 });
  await db.exec("CREATE TABLE bu (x)");
  await Promise.all([db.get("SELECT 1"), db.get("SELECT 2")]); // both connections open
  for (let round = 0; round < 3; round++) {
    await db.exec("DELETE FROM bu");
    // One synchronous run: a write, then an iterate over its table (README: Order).
    const write = db.run(
      "INSERT INTO bu WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c " +
        "WHERE i < 50000) SELECT i FROM c",
    );
    const it = db.iterate<{ n: number }>("SELECT count(*) AS n FROM bu");
    await Promise.resolve(); // the burst ends before iterating starts
    const seen: number[] = [];
    for await (const r of it) seen.push(r.n);
    assert.deepEqual(seen, [50000], `round ${round}: the iterate missed the write before it`);
    await write;
  }
  // A prepared statement's iterate() keeps the same order.
  const count = await db.prepare("SELECT count(*) AS n FROM bu");
  const write = db.run("INSERT INTO bu SELECT x FROM bu");
  const it = count.iterate<{ n: number }>();
  await Promise.resolve();
  const seen: number[] = [];
  for await (const r of it) seen.push(r.n);
  assert.deepEqual(seen, [100000], "Statement.iterate() missed the write before it");
  await write;
});

Deno.test("Pool: a tx.iterate() made inside fn and iterated after fn settled fails with TX_ENDED, never runs on the released connection", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 2 });
  await db.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1)");
  const late = await db.transaction((tx) => Promise.resolve(tx.iterate("SELECT x FROM t")));
  await assert.rejects(late.next(), { code: "TX_ENDED" });
});

Deno.test("Pool: cursors left unfinished stop holding their connection once the server closed them (idle timeout) or their transaction ended", async () => {
  await using srv = await startServer({ cursorIdleTimeout: 100 });
  await using db = await connect({ ...srv.connectOptions, max: 1, acquireTimeout: 5000 });
  assert.equal(db.serverInfo.limits.cursorIdleTimeout, 100);
  await db.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1), (2), (3)");
  // Left unfinished, and kept referenced: garbage-collected, it would close at once (a GC under
  // load did, and the transaction below did not wait).
  const unfinished = db.iterate<{ x: number }>("SELECT x FROM t");
  assert.deepEqual((await unfinished.next()).value, { x: 1 });
  // The one connection holds that cursor: the transaction waits until it
  // lapses (100 ms + a second's margin), then runs.
  const started = performance.now();
  assert.equal(await within(db.transaction(() => Promise.resolve(7)), 4000), 7);
  assert.ok(performance.now() - started >= 900, "waited for the server to close the cursor");
  assert.ok(unfinished !== null); // (referenced until here)
  // A cursor opened inside a transaction dies with it: its connection is free at once.
  await db.transaction(async (tx) => {
    const it = tx.iterate("SELECT x FROM t");
    await it.next(); // abandoned
  });
  const r = await within(db.reserve(), 500);
  assert.notEqual(r, "timeout", "the transaction's connection came back free");
  if (r !== "timeout") r.release();
});

Deno.test("Pool: an iterator dropped unfinished releases its connection once collected (max: 1)", async () => {
  const out = await runWithGc(new URL("./fixtures/dropped_cursors.ts", import.meta.url));
  assert.equal(out.trim(), "ok 10");
});

Deno.test("Pool: transactions in a loop do not starve a plain read (reserve() leaves a connection)", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 2 });
  await db.exec("CREATE TABLE t (x)");
  let stop = false;
  const worker = async () => {
    while (!stop) {
      await db.transaction(async (tx) => {
        await tx.get("SELECT count(*) FROM t");
        await delay(5);
      });
    }
  };
  const workers = [worker(), worker(), worker()];
  await delay(50);
  const read = await within(db.get<{ one: number }>("SELECT 1 AS one"), 1000);
  stop = true;
  await Promise.all(workers);
  assert.deepEqual(read, { one: 1 });
});

/** A read that keeps the server busy for tens of ms. */
const SLOW_READ = "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c LIMIT 150000) " +
  "SELECT count(*) AS n FROM c";

Deno.test("Pool (max: 1): plain calls that never let the connection go idle do not starve a waiting transaction() or reserve()", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 1 });
  await db.exec("CREATE TABLE t (x)");
  for (const kind of ["transaction", "reserve"]) {
    const order: string[] = [];
    const read = (i: number) => db.get(SLOW_READ).then(() => order.push(`r${i}`));
    let prev = read(0);
    const waiting = kind === "transaction"
      ? db.transaction(async (tx) => {
        order.push(kind);
        await tx.run("INSERT INTO t VALUES (1)");
      })
      : db.reserve().then(async (r) => {
        order.push(kind);
        await r.run("INSERT INTO t VALUES (2)");
        r.release();
      });
    await delay(0);
    // Each read is issued before the one before it was answered: one is always in flight.
    for (let i = 1; i <= 6; i++) {
      const next = read(i);
      await prev;
      prev = next;
    }
    await prev;
    await waiting;
    // Reads issued after it began to wait go behind it (before: it waited for all of them).
    assert.ok(order.indexOf(kind) <= 1 && order.indexOf(kind) < order.indexOf("r1"), `${order}`);
  }
  // Given up (acquireTimeout), it no longer holds back the calls made behind it.
  await using quick = await connect({ ...srv.connectOptions, max: 1, acquireTimeout: 20 });
  const first = quick.get(SLOW_READ);
  const given = quick.transaction(async () => {}).catch((e) => e);
  await delay(0);
  const behind = quick.get<{ one: number }>("SELECT 1 AS one");
  assert.equal((await given).code, "ACQUIRE_TIMEOUT");
  assert.deepEqual(await within(behind, 5000), { one: 1 });
  await first;
  // A reserve() refused once a raw BEGIN sent before it opened: a call made behind it goes on.
  const begin = quick.exec("BEGIN");
  const refused = quick.reserve().catch((e) => e);
  await null;
  const insert = quick.run("INSERT INTO t VALUES (3)");
  await begin;
  assert.equal((await refused).code, "TX_CONTROL");
  assert.equal((await within(insert, 5000) as { changes: number }).changes, 1);
  await quick.exec("COMMIT");
  assert.deepEqual(await quick.get("SELECT count(*) AS n FROM t"), { n: 3 });
  // A cursor open on the connection: calls made inside its loop go on (behind a transaction()
  // made in the loop, they would wait for the cursor's end, which waits for them).
  await db.exec("DELETE FROM t; INSERT INTO t VALUES (1), (2), (3)");
  const seen: number[] = [];
  let later: Promise<unknown> | null = null;
  const loop = (async () => {
    for await (const row of db.iterate<{ x: number }>("SELECT x FROM t")) {
      later ??= db.transaction(async (tx) => await tx.run("INSERT INTO t VALUES (4)"));
      seen.push((await db.get<{ x: number }>("SELECT ? AS x", [row.x]))!.x);
    }
  })();
  loop.catch(() => {}); // (left waiting, it fails when the client closes)
  assert.notEqual(await within(loop, 5000), "timeout", "the loop waited for the transaction");
  assert.deepEqual(seen, [1, 2, 3]);
  await later;
  assert.deepEqual(await db.get("SELECT count(*) AS n FROM t"), { n: 4 });
});

Deno.test("Pool (max > 1): plain calls that keep every connection busy do not starve a waiting transaction() or reserve()", async () => {
  await using srv = await startServer();
  await using setup = await connect({ ...srv.connectOptions, max: 1 });
  await setup.exec("CREATE TABLE t (x)");
  for (const [max, kind] of [[2, "transaction"], [2, "reserve"], [3, "transaction"]] as const) {
    await using db = await connect({ ...srv.connectOptions, max });
    {
      // Every connection opened, then two reads in flight on each (least busy first) at all times.
      const window = 2 * max;
      const order: string[] = [];
      const read = (i: number) => db.get(SLOW_READ).then(() => order.push(`r${i}`));
      const inFlight: Promise<number>[] = [];
      for (let i = 0; i < window; i++) inFlight.push(read(i));
      let i = window;
      const next = async () => {
        await inFlight.shift();
        inFlight.push(read(i++));
      };
      while (i < 2 * window) await next(); // steady: every connection open and busy
      const at = order.length;
      const waiting = kind === "transaction"
        ? db.transaction(async (tx) => {
          order.push(kind);
          await tx.run("INSERT INTO t VALUES (1)");
        })
        : db.reserve().then(async (r) => {
          order.push(kind);
          await r.run("INSERT INTO t VALUES (2)");
          r.release();
        });
      while (i < 6 * window) await next();
      await Promise.all(inFlight);
      await waiting;
      // Before: it ran once all the reads were answered (4 × window of them here).
      assert.ok(order.indexOf(kind) - at <= 2 * window, `${order.slice(at)}`);
    }
  }
});

Deno.test("Pool: concurrent transactions that read through the client inside fn all finish (no client-side deadlock)", async () => {
  await using srv = await startServer({ busyTimeout: 3000 });
  await using db = await connect({ ...srv.connectOptions, max: 2 });
  await db.exec("CREATE TABLE c (id INTEGER PRIMARY KEY, v INTEGER); INSERT INTO c VALUES (1, 0)");
  const started = performance.now();
  const seen = await Promise.all(Array.from({ length: 4 }, () =>
    db.transaction(async (tx) => {
      await tx.run("UPDATE c SET v = v + 1");
      return (await db.get<{ v: number }>("SELECT v FROM c"))!.v; // committed state
    })));
  assert.ok(performance.now() - started < 2000, "no transaction waited for the busy timeout");
  assert.deepEqual(seen, [0, 1, 2, 3]);
  assert.deepEqual(await db.values("SELECT v FROM c"), [[4]]);
});

Deno.test("Pool: reserve() from inside fn of the transaction that holds the max - 1 reservable connections is refused, not left waiting", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 2 });
  await db.transaction(async () => {
    await assert.rejects(db.reserve(), (err: unknown) => {
      assert.ok(err instanceof SqliteError);
      assert.equal(err.code, "TX_CONTROL");
      assert.match(
        err.message,
        /from inside the client's own transaction\(\): 1 of its 2 connections \(max\) is reserved by that transaction, and reserve\(\) leaves one/,
      );
      return true;
    });
  });
});

Deno.test("Pool: db.transaction() inside fn nests as a savepoint with max > 1 (as better-sqlite3)", async () => {
  await using srv = await startServer({ busyTimeout: 2000 });
  await using db = await connect({ ...srv.connectOptions, max: 4 });
  await db.exec("CREATE TABLE t (x)");
  const started = performance.now();
  await db.transaction(async (tx) => {
    await tx.run("INSERT INTO t VALUES (1)");
    await db.transaction(async (inner) => {
      await inner.run("INSERT INTO t VALUES (2)");
    });
    await db.transaction(async (inner) => {
      await inner.run("INSERT INTO t VALUES (3)");
      throw new Error("undo 3");
    }).catch(() => {});
    assert.deepEqual(await tx.values("SELECT x FROM t ORDER BY x"), [[1], [2]]);
  });
  assert.ok(performance.now() - started < 1500, "no wait for the writer");
  assert.deepEqual(await db.values("SELECT x FROM t ORDER BY x"), [[1], [2]]);
});

Deno.test("Pool: a transaction()'s BEGIN and a reserved connection's BEGIN that waited for the client's own transaction say so", async () => {
  await using srv = await startServer({ busyTimeout: 200 });
  await using db = await connect({ ...srv.connectOptions, max: 3 });
  await db.exec("CREATE TABLE t (x)");
  let release!: () => void;
  const gate = new Promise<void>((resolve) => release = resolve);
  const holder = db.transaction(async (tx) => {
    await tx.run("INSERT INTO t VALUES (1)");
    await gate;
  });
  await delay(30);
  const own = /held by this client's own transaction \(session \d+\)/;
  await assert.rejects(
    db.transaction(async (tx) => {
      await tx.run("INSERT INTO t VALUES (2)");
    }),
    (err: unknown) =>
      err instanceof SqliteError && err.code === "BUSY_TIMEOUT" && own.test(err.message),
  );
  const r = await db.reserve();
  try {
    await assert.rejects(
      r.exec("BEGIN IMMEDIATE"),
      (err: unknown) =>
        err instanceof SqliteError && err.code === "BUSY_TIMEOUT" && own.test(err.message),
    );
  } finally {
    r.release();
  }
  release();
  await holder;
});
