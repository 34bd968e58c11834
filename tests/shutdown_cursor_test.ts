/**
 * A graceful shutdown lets an `iterate()` cursor opened outside a
 * transaction read its snapshot to the end within the grace period, as it
 * lets an open transaction commit; the server exits once the cursor is
 * closed. One not read within the grace period is cut off, and says so.
 */

import assert from "node:assert/strict";
import { connect } from "../client.ts";
import { serve } from "../server.ts";
import { delay, tempDir } from "./_helpers.ts";

const ROWS = 20_000;

async function seeded(dir: string) {
  const path = `${dir}/s.sock`;
  const server = await serve({ database: `${dir}/a.db`, path });
  const db = await connect({ path, reconnect: false, max: 1 });
  await db.exec(
    "CREATE TABLE t (x INTEGER PRIMARY KEY, pad TEXT); " +
      "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < " + ROWS + ") " +
      "INSERT INTO t SELECT i, printf('%.100c', 'p') FROM c",
  );
  return { server, db };
}

Deno.test("shutdown with a grace period lets a cursor outside a transaction read every row, then exits", async () => {
  await using dir = await tempDir();
  const { server, db } = await seeded(dir.path);
  let seen = 0;
  let sum = 0;
  let stopping: Promise<void> | null = null;
  for await (const row of db.iterate<{ x: number }>("SELECT x FROM t ORDER BY x")) {
    if (seen++ === 0) {
      stopping = server.shutdown({ graceMs: 10_000 });
      // Far longer than the server takes to end idle connections (≈ 50 ms).
      await delay(300);
    }
    sum += row.x;
  }
  assert.equal(seen, ROWS);
  assert.equal(sum, (ROWS * (ROWS + 1)) / 2);
  // The cursor read to its end is closed: the server stops without waiting out its grace.
  const started = performance.now();
  await stopping;
  assert.ok(performance.now() - started < 5_000, "the shutdown waited out its grace period");
  await assert.rejects(
    db.get("SELECT 1"),
    (e: Error) => /shutting down|Cannot connect|closed/i.test(e.message),
  );
  await db.close();
});

Deno.test("a cursor left unread past the grace period fails with the shutdown's message once its rows are read", async () => {
  await using dir = await tempDir();
  const { server, db } = await seeded(dir.path);
  const cursor = db.iterate<{ x: number }>("SELECT x FROM t ORDER BY x")[Symbol.asyncIterator]();
  assert.deepEqual((await cursor.next()).value, { x: 1 });
  await server.shutdown({ graceMs: 100 });
  let seen = 1;
  const err = await (async () => {
    try {
      while (!(await cursor.next()).done) seen++;
    } catch (e) {
      return e as Error;
    }
    return null;
  })();
  assert.ok(err !== null, "the cursor ended without an error");
  assert.ok(seen < ROWS, `read ${seen} rows`);
  // (With the next chunk asked for ahead, its reply lost, the suffix is the
  // lost call's; with none asked for, the cursor's.)
  assert.match(
    err.message,
    /^Server closed the connection: Server is shutting down: .* \(the call was not sent(: the cursor died with the connection)?\)$/,
  );
  await db.close();
});
