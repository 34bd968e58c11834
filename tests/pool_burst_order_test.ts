/**
 * Order within a burst on the shared pool (README: Order): an `iterate()`
 * issued after calls of its burst sees their writes, whatever the state of
 * the burst's connection (being opened, reopened after the server
 * restarted, or waited for), and wherever its cursor goes; it waits only for
 * the calls issued before it, not for those issued after. A burst of
 * cursors uses the room (`maxCursors`) of connections that carry a write
 * waiting for the writer, behind that write, instead of failing; the room of
 * reserved connections it does not count on, and past the room of the
 * others a cursor fails at once with the server's error.
 */

import assert from "node:assert/strict";
import { connect, type Queryable, serve, SqliteError } from "../mod.ts";
import { startServer, tempDir } from "./_helpers.ts";

/** The first row of `it` (its cursor closed after). */
async function firstRow<T>(it: AsyncGenerator<T>): Promise<T> {
  for await (const r of it) return r;
  throw new Error("expected a row");
}

Deno.test("Client.iterate() in a burst sees the write before it while the burst's connection is being opened", async () => {
  await using srv = await startServer({ maxCursors: 1 });
  {
    await using setup = await srv.client();
    await setup.exec("CREATE TABLE t (x)");
  }
  for (let round = 0; round < 6; round++) {
    // A new client: an open cursor keeps its first connection busy, so the burst opens another.
    await using db = await connect({ ...srv.connectOptions, max: 4 });
    const hold = db.iterate("SELECT 1 UNION ALL SELECT 2");
    await hold.next();
    const write = db.run("INSERT INTO t VALUES (1)");
    // One cursor, or three: with maxCursors 1 they cannot all stay on the burst's connection.
    const n = round % 2 === 0 ? 1 : 3;
    const counts = await Promise.all(
      Array.from(
        { length: n },
        () => firstRow(db.iterate<[number]>("SELECT count(*) FROM t", [], { arrays: true })),
      ),
    );
    await write;
    await hold.return(undefined);
    assert.deepEqual(counts, Array(n).fill([round + 1]), `round ${round}`);
  }
});

Deno.test("Statement.iterate() calls in a burst see the Statement.run() before it while the burst's connection is being opened", async () => {
  await using srv = await startServer({ maxCursors: 1 });
  {
    await using setup = await srv.client();
    await setup.exec("CREATE TABLE t (x)");
  }
  for (let round = 0; round < 6; round++) {
    await using db = await connect({ ...srv.connectOptions, max: 4 });
    const insert = await db.prepare("INSERT INTO t VALUES (1)");
    const count = await db.prepare("SELECT count(*) AS n FROM t");
    const hold = db.iterate("SELECT 1 UNION ALL SELECT 2");
    await hold.next();
    const write = insert.run();
    // Three cursors: with maxCursors 1 they cannot all stay on the burst's connection.
    const rows = await Promise.all([1, 2, 3].map(() => firstRow(count.iterate<{ n: number }>())));
    await write;
    await hold.return(undefined);
    assert.deepEqual(rows, Array(3).fill({ n: round + 1 }), `round ${round}`);
    await insert.finalize();
    await count.finalize();
  }
});

Deno.test("Client.iterate() in a burst sees the write before it while the burst's connection is reopened after a restart", async () => {
  await using dir = await tempDir();
  const options = { database: `${dir.path}/r.db`, path: `${dir.path}/r.sock` };
  let server = await serve(options);
  try {
    await using db = await connect({ path: options.path, max: 4 });
    await db.exec("CREATE TABLE t (x)");
    for (let round = 0; round < 3; round++) {
      await server.shutdown();
      server = await serve(options);
      // Let the client see the server close the old connection.
      await new Promise((r) => setTimeout(r, 20));
      const write = db.run("INSERT INTO t VALUES (1)");
      const row = await firstRow(db.iterate<{ n: number }>("SELECT count(*) AS n FROM t"));
      await write;
      assert.equal(row.n, round + 1, `round ${round}`);
    }
  } finally {
    await server.shutdown();
  }
});

Deno.test("Client.iterate() in a burst that waits for a connection sees the write before it", async () => {
  await using srv = await startServer({ busyTimeout: 10_000 });
  await using holder = await connect({ ...srv.connectOptions, max: 1 });
  await using db = await connect({ ...srv.connectOptions, max: 2 });
  await db.exec("CREATE TABLE t (x)");
  await using reserved = await db.reserve();
  await holder.exec("BEGIN IMMEDIATE");
  // The other connection carries a write that waits for holder's transaction: the burst waits.
  const blocked = db.run("INSERT INTO t VALUES (0)");
  const read = db.get("SELECT 1 AS one");
  const write = db.run("INSERT INTO t VALUES (1)");
  const counted = firstRow(db.iterate<{ n: number }>("SELECT count(*) AS n FROM t"));
  await new Promise((r) => setTimeout(r, 50));
  await holder.exec("COMMIT");
  await blocked;
  assert.deepEqual(await read, { one: 1 });
  await write;
  assert.equal((await counted).n, 2);
  assert.deepEqual(await reserved.values("SELECT count(*) FROM t"), [[2]]);
});

Deno.test("Client.iterate() in a burst does not wait for the calls issued after it", async () => {
  await using srv = await startServer({ busyTimeout: 10_000 });
  await using holder = await connect({ ...srv.connectOptions, max: 1 });
  await using db = await connect({ ...srv.connectOptions, max: 3 });
  await db.exec("CREATE TABLE t (x)");
  await holder.exec("BEGIN IMMEDIATE");
  const read = db.get("SELECT 1 AS one");
  const counted = firstRow(db.iterate<{ n: number }>("SELECT count(*) AS n FROM t"));
  // Issued after the iterate(), in the same burst; it waits for holder's transaction.
  let written = false;
  const write = db.run("INSERT INTO t VALUES (1)").finally(() => written = true);
  // (Handled below; not left unhandled should an assertion fail first.)
  write.catch(() => {});
  counted.catch(() => {});
  let timer: ReturnType<typeof setTimeout> | undefined;
  const waited = new Promise<"waited">((r) => timer = setTimeout(() => r("waited"), 3000));
  const first = await Promise.race([counted, waited]);
  clearTimeout(timer);
  assert.deepEqual(first, { n: 0 }, "the cursor ran without waiting for the write after it");
  assert.equal(written, false);
  assert.deepEqual(await read, { one: 1 });
  await holder.exec("COMMIT");
  await write;
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[1]]);
});

const ROWS = 3000;

/**
 * Opens `n` cursors in one burst and keeps them all open until every one
 * has its first row (or failed); then reads them to the end. Resolves to
 * each cursor's row count, or its error.
 */
async function burstOfCursors(db: Queryable, n: number): Promise<(number | Error)[]> {
  let arrived = 0;
  let allArrived = () => {};
  const all = new Promise<void>((resolve) => allArrived = resolve);
  const arrive = () => {
    if (++arrived === n) allArrived();
  };
  const sql = `WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ${ROWS}) ` +
    "SELECT i FROM c";
  return await Promise.all(Array.from({ length: n }, async () => {
    let rows = 0;
    let first = true;
    try {
      for await (const _ of db.iterate(sql)) {
        rows++;
        if (first) {
          first = false;
          arrive();
          await all;
        }
      }
      return rows;
    } catch (err) {
      if (first) arrive();
      return err as Error;
    }
  }));
}

for (const reserve of [false, true]) {
  const cursors = reserve ? 4 : 6;
  const label = reserve ? "one reserved and one" : "one";
  Deno.test(`Client.iterate(): a burst of cursors uses the room of a connection carrying a write that waits for the writer (${label})`, async () => {
    await using srv = await startServer({ maxCursors: 2, busyTimeout: 10_000 });
    await using holder = await connect({ ...srv.connectOptions, max: 1 });
    await using db = await connect({ ...srv.connectOptions, max: 3 });
    await db.exec("CREATE TABLE t (x)");
    await using reserved = reserve ? await db.reserve() : null;
    await holder.exec("BEGIN IMMEDIATE");
    // Waits for holder's transaction: its connection carries a call that may wait for the writer.
    const blocked = db.run("INSERT INTO t VALUES (1)");
    blocked.catch(() => {});
    await new Promise((r) => setTimeout(r, 20));
    // The cursors past the room of the other connections wait behind that write.
    const committed = new Promise((r) => setTimeout(r, 200)).then(() => holder.exec("COMMIT"));
    const counts = await burstOfCursors(db, cursors);
    await committed;
    assert.deepEqual(counts, Array(cursors).fill(ROWS), String(counts));
    assert.deepEqual(await blocked, { changes: 1, lastInsertRowid: 1 });
    if (reserved !== null) assert.deepEqual(await reserved.values("SELECT count(*) FROM t"), [[1]]);
  });
}

Deno.test("Client.iterate(): past the room of the unreserved connections, a cursor of a burst fails at once with the server's error", async () => {
  await using srv = await startServer({ maxCursors: 2 });
  await using db = await connect({ ...srv.connectOptions, max: 3 });
  // The reserved connection's room is not waited for: its holder here is the caller itself.
  await using reserved = await db.reserve();
  const t0 = performance.now();
  const counts = await burstOfCursors(db, 5);
  const failed = counts.filter((c) => c instanceof Error);
  assert.equal(failed.length, 1, String(counts));
  assert.ok(failed[0] instanceof SqliteError);
  assert.match(failed[0].message, /^Too many open cursors: 2 per connection/);
  assert.ok(performance.now() - t0 < 2000);
  assert.deepEqual(await reserved.values("SELECT 1"), [[1]]);
});

Deno.test("Client.iterate(): inside transaction(fn), a burst of cursors through the client does not wait behind writes that wait for fn's transaction", async () => {
  await using srv = await startServer({ maxCursors: 2, busyTimeout: 3000 });
  await using db = await connect({ ...srv.connectOptions, max: 4 });
  await db.exec("CREATE TABLE t (x)");
  const writes: Promise<unknown>[] = [];
  const t0 = performance.now();
  const counts = await db.transaction(async (tx) => {
    await tx.run("INSERT INTO t VALUES (0)");
    // Other code's writes (separate ticks): they wait for this transaction's writer.
    for (let i = 0; i < 2; i++) {
      const w = db.run("INSERT INTO t VALUES (1)");
      w.catch(() => {});
      writes.push(w);
      await new Promise((r) => setTimeout(r, 5));
    }
    // One connection is left free of them: room for 2 cursors; the third fails at once.
    return await burstOfCursors(db, 3);
  });
  const elapsed = performance.now() - t0;
  const failed = counts.filter((c) => c instanceof Error);
  assert.equal(failed.length, 1, String(counts));
  assert.match(failed[0].message, /^Too many open cursors: 2 per connection/);
  assert.ok(elapsed < 2000, `took ${Math.round(elapsed)} ms`);
  for (const w of writes) assert.equal((await w as { changes: number }).changes, 1);
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[3]]);
});

Deno.test("iterate() waiting for an earlier call of its burst rejects at once when its signal aborts", async () => {
  await using srv = await startServer({ busyTimeout: 10_000 });
  await using holder = await connect({ ...srv.connectOptions, max: 1 });
  await using db = await connect({ ...srv.connectOptions, max: 4 });
  await db.exec("CREATE TABLE t (x)");
  const count = await db.prepare("SELECT count(*) AS n FROM t");
  await holder.exec("BEGIN IMMEDIATE");
  const ac = new AbortController();
  const t0 = performance.now();
  // Waits for holder's transaction: the cursors after it in the burst wait for it.
  const write = db.run("INSERT INTO t VALUES (1)");
  write.catch(() => {}); // (handled below; not left unhandled should an assertion fail first)
  const settle = (p: Promise<unknown>) =>
    p.then(() => "ran", (err) => [err.name, Math.round(performance.now() - t0)] as const);
  const a = settle(db.iterate("SELECT count(*) AS n FROM t", [], { signal: ac.signal }).next());
  const b = settle(count.iterate([], { signal: ac.signal }).next());
  setTimeout(() => ac.abort(), 100);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const results = await Promise.race([
    Promise.all([a, b]),
    new Promise((r) => timer = setTimeout(() => r("still waiting"), 3000)),
  ]);
  clearTimeout(timer);
  assert.ok(Array.isArray(results), String(results));
  for (const [name, ms] of results as [string, number][]) {
    assert.equal(name, "AbortError");
    assert.ok(ms < 2000, `rejected after ${ms} ms`);
  }
  await holder.exec("COMMIT");
  assert.equal((await write).changes, 1);
  await count.finalize();
});

Deno.test("iterate() that waited for an earlier call of its burst does not join a later burst's write", async () => {
  await using srv = await startServer({ busyTimeout: 10_000 });
  await using holder = await connect({ ...srv.connectOptions, max: 1 });
  await using db = await connect({ ...srv.connectOptions, max: 4 });
  await db.exec("CREATE TABLE t (x)");
  await holder.exec("BEGIN IMMEDIATE");
  const writes: Promise<unknown>[] = [];
  for (let round = 0; round < 3; round++) {
    const read = db.get("SELECT 1 AS one");
    const counted = firstRow(db.iterate<{ n: number }>("SELECT count(*) AS n FROM t"));
    // Issued after the iterate(), from the read's continuation: a burst of its own, which
    // starts in the microtasks where the iterate() resumes; it waits for holder's transaction.
    const write = read.then(() => db.run("INSERT INTO t VALUES (1)"));
    write.catch(() => {});
    writes.push(write);
    counted.catch(() => {});
    let timer: ReturnType<typeof setTimeout> | undefined;
    const waited = new Promise<"waited">((r) => timer = setTimeout(() => r("waited"), 2000));
    const first = await Promise.race([counted, waited]);
    clearTimeout(timer);
    assert.deepEqual(first, { n: 0 }, `round ${round}`);
  }
  await holder.exec("COMMIT");
  await Promise.all(writes);
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[3]]);
});

Deno.test("transaction() and reserve() in a burst see the writes of the calls issued before them", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 4 });
  await db.exec("CREATE TABLE t (x)");
  for (let round = 1; round <= 8; round++) {
    const write = db.run("INSERT INTO t VALUES (1)");
    const counted = db.transaction(async (tx) =>
      (await tx.get<{ n: number }>("SELECT count(*) AS n FROM t"))!.n
    );
    assert.equal(await counted, 2 * round - 1, `transaction(), round ${round}`);
    await write;
    const write2 = db.run("INSERT INTO t VALUES (1)");
    {
      await using reserved = await db.reserve();
      const row = await reserved.get<{ n: number }>("SELECT count(*) AS n FROM t");
      assert.equal(row!.n, 2 * round, `reserve(), round ${round}`);
    }
    await write2;
  }
});

Deno.test("reserve() in a burst does not wait for an earlier write while the client holds a transaction", async () => {
  await using srv = await startServer({ busyTimeout: 10_000 });
  await using db = await connect({ ...srv.connectOptions, max: 4 });
  await db.exec("CREATE TABLE t (x)");
  await using holder = await db.reserve();
  await holder.exec("BEGIN IMMEDIATE");
  const t0 = performance.now();
  // Waits for holder's transaction, which the caller ends only once it has the second reservation.
  const write = db.run("INSERT INTO t VALUES (1)");
  write.catch(() => {});
  {
    await using other = await db.reserve();
    assert.ok(performance.now() - t0 < 2000);
    assert.deepEqual(await other.values("SELECT count(*) FROM t"), [[0]]);
  }
  await holder.exec("COMMIT");
  assert.equal((await write).changes, 1);
});

Deno.test("transaction() waiting for an earlier call of its burst rejects at once when its signal aborts", async () => {
  await using srv = await startServer({ busyTimeout: 10_000 });
  await using holder = await connect({ ...srv.connectOptions, max: 1 });
  await using db = await connect({ ...srv.connectOptions, max: 4 });
  await db.exec("CREATE TABLE t (x)");
  await holder.exec("BEGIN IMMEDIATE");
  const ac = new AbortController();
  const write = db.run("INSERT INTO t VALUES (1)");
  write.catch(() => {});
  let ran = false;
  const t0 = performance.now();
  const tx = db.transaction(() => {
    ran = true;
    return Promise.resolve();
  }, { signal: ac.signal });
  setTimeout(() => ac.abort(), 100);
  await assert.rejects(tx, (err: Error) => err.name === "AbortError");
  assert.ok(performance.now() - t0 < 2000);
  assert.equal(ran, false);
  await holder.exec("COMMIT");
  assert.equal((await write).changes, 1);
});
