/**
 * Cursors of one burst on the shared pool (README: Order): `Promise.all`
 * over many `iterate()` loops spreads them over the pool's connections, each
 * holding at most the server's `maxCursors`, instead of failing past
 * `maxCursors` on the burst's one connection; they still see the burst's
 * writes made before them; past `max` × `maxCursors` open at once, the
 * server's "Too many open cursors" error.
 */

import assert from "node:assert/strict";
import { connect, type Queryable, SqliteError } from "../mod.ts";
import { startServer } from "./_helpers.ts";

/**
 * Opens `n` cursors in one burst, each over its own group of `t`, and keeps
 * them all open until every one has its first row (or failed); then reads
 * them to the end. Resolves to each cursor's row count, or its error.
 */
async function burstOfCursors(db: Queryable, n: number): Promise<(number | Error)[]> {
  let arrived = 0;
  let allArrived = () => {};
  const all = new Promise<void>((resolve) => allArrived = resolve);
  const arrive = () => {
    if (++arrived === n) allArrived();
  };
  return await Promise.all(Array.from({ length: n }, async (_, g) => {
    let rows = 0;
    let first = true;
    try {
      for await (const r of db.iterate<{ g: number }>("SELECT g FROM t WHERE g = ?", [g])) {
        assert.equal(r.g, g);
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

const ROWS_PER_GROUP = 1500;

async function seed(db: Queryable, groups: number): Promise<void> {
  await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, g INTEGER)");
  await db.run(
    "INSERT INTO t (g) WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c " +
      "WHERE i + 1 < ?) SELECT i % ? FROM c",
    [groups * ROWS_PER_GROUP, groups],
  );
}

Deno.test("Pool cursors: a burst of max × maxCursors cursors open at once spreads over the pool", async () => {
  await using srv = await startServer({ maxCursors: 3 });
  await using db = await connect({ ...srv.connectOptions, max: 4 });
  await seed(db, 12);
  for (let round = 0; round < 3; round++) {
    const counts = await burstOfCursors(db, 12);
    assert.deepEqual(counts, Array(12).fill(ROWS_PER_GROUP), `round ${round}`);
  }
  // Every cursor was closed: a burst as large works again, and plain calls too.
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[12 * ROWS_PER_GROUP]]);
});

Deno.test("Pool cursors: past max × maxCursors open at once, the extra cursors fail with the server's error", async () => {
  await using srv = await startServer({ maxCursors: 2 });
  await using db = await connect({ ...srv.connectOptions, max: 3 });
  await seed(db, 8);
  const counts = await burstOfCursors(db, 8);
  const failed = counts.filter((c) => c instanceof Error);
  assert.equal(failed.length, 2, `6 of 8 fit (3 connections × 2): ${counts}`);
  for (const err of failed) {
    assert.ok(err instanceof SqliteError);
    assert.match(err.message, /^Too many open cursors: 2 per connection/);
  }
  assert.deepEqual(counts.filter((c) => c === ROWS_PER_GROUP).length, 6);
});

Deno.test("Pool cursors: cursors of a burst moved to other connections still see the burst's write before them", async () => {
  await using srv = await startServer({ maxCursors: 2 });
  await using db = await connect({ ...srv.connectOptions, max: 4 });
  await db.exec("CREATE TABLE w (x)");
  for (let round = 0; round < 3; round++) {
    await db.exec("DELETE FROM w");
    // One synchronous run: a write, then six cursors over its table, kept open together.
    const write = db.run(
      "INSERT INTO w WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c " +
        "WHERE i < 20000) SELECT i FROM c",
    );
    let opened = 0;
    let allOpen = () => {};
    const all = new Promise<void>((resolve) => allOpen = resolve);
    const seen = await Promise.all(Array.from({ length: 6 }, async () => {
      for await (const r of db.iterate<{ n: number }>("SELECT count(*) AS n FROM w")) {
        if (++opened === 6) allOpen();
        await all;
        return r.n;
      }
      return -1;
    }));
    await write;
    assert.deepEqual(seen, Array(6).fill(20000), `round ${round}`);
  }
});

Deno.test("Pool cursors: with max: 1 a burst's cursors past maxCursors fail as before", async () => {
  await using srv = await startServer({ maxCursors: 2 });
  await using db = await connect({ ...srv.connectOptions, max: 1 });
  await seed(db, 3);
  const counts = await burstOfCursors(db, 3);
  assert.deepEqual(counts.slice(0, 2), [ROWS_PER_GROUP, ROWS_PER_GROUP]);
  assert.ok(counts[2] instanceof SqliteError, String(counts[2]));
  assert.match(counts[2].message, /^Too many open cursors: 2 per connection/);
});
