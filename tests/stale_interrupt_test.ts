/**
 * A statement stopped at its deadline inside a transaction while a cursor of
 * that transaction is open on the writer, on both engines: the next
 * statement runs normally (FFI: SQLite's interrupt stays pending while any
 * statement is active on the connection, so the engine ends the cursors
 * that the interrupt stopped too: they fail with `CURSOR_CLOSED` naming the
 * cause; node:sqlite stops the statement between rows, and the cursor reads
 * on), and the transaction stays usable and commits.
 */

import assert from "node:assert/strict";
import { SqliteError } from "../mod.ts";
import { startServer } from "./_helpers.ts";

const ENGINES = ["ffi", "node"] as const;

/** A read that runs for seconds (far past its 100 ms timeout), returning few rows. */
const SLOW = "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 50000000) " +
  "SELECT i FROM c WHERE i % 1000000 = 0";

const ROWS = 5000;

for (const engine of ENGINES) {
  Deno.test(`a statement timeout next to an open cursor leaves the transaction usable (${engine})`, async () => {
    await using srv = await startServer({ engine });
    const db = await srv.client();
    try {
      await db.exec(
        "CREATE TABLE t (x INTEGER); WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 " +
          `FROM c WHERE i < ${ROWS}) INSERT INTO t SELECT i FROM c`,
      );
      await db.transaction(async (tx) => {
        const it = tx.iterate<{ x: number }>("SELECT x FROM t")[Symbol.asyncIterator]();
        assert.deepEqual(await it.next(), { value: { x: 1 }, done: false });
        await assert.rejects(
          tx.values(SLOW, [], { timeout: 100 }),
          (e: unknown) => e instanceof SqliteError && e.code === "STATEMENT_TIMEOUT",
        );
        // The next statement runs (it failed with SQLITE_INTERRUPT before the fix).
        assert.deepEqual(await tx.values("SELECT count(*) FROM t"), [[ROWS]]);
        // Drain the cursor: rows the client holds from its first chunk come first.
        let n = 1;
        let last = 1;
        let failure: unknown = null;
        try {
          for (let r = await it.next(); !r.done; r = await it.next()) {
            n++;
            last = r.value.x;
          }
        } catch (e) {
          failure = e;
        }
        assert.equal(last, n, "rows in order, none skipped");
        if (engine === "ffi") {
          // The interrupt stopped the cursor's statement as well: closed, saying why.
          assert.ok(n < ROWS, `the cursor ended early, after ${n} rows`);
          assert.ok(failure instanceof SqliteError, String(failure));
          assert.equal(failure.code, "CURSOR_CLOSED");
          assert.match(failure.message, /another statement of its transaction was stopped/);
          assert.match(failure.message, /\(STATEMENT_TIMEOUT\)/);
        } else {
          assert.equal(failure, null);
          assert.equal(n, ROWS);
        }
        // The transaction is still open and writes.
        await tx.run("INSERT INTO t VALUES (-1)");
        assert.deepEqual(await tx.values("SELECT count(*) FROM t"), [[ROWS + 1]]);
      });
      assert.deepEqual(await db.values("SELECT count(*) FROM t WHERE x = -1"), [[1]]);
      // A cursor opened after it reads normally.
      await db.transaction(async (tx) => {
        let n = 0;
        for await (const _ of tx.iterate("SELECT x FROM t")) n++;
        assert.equal(n, ROWS + 1);
      });
    } finally {
      await db.close();
    }
  });
}

Deno.test("a read cancelled next to an open cursor leaves the transaction usable (ffi)", async () => {
  // (node:sqlite cannot stop a statement stepping on the main thread: no cancel reaches it.)
  await using srv = await startServer({ engine: "ffi" });
  const db = await srv.client();
  try {
    await db.exec(
      "CREATE TABLE t (x INTEGER); WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 " +
        `FROM c WHERE i < ${ROWS}) INSERT INTO t SELECT i FROM c`,
    );
    await db.transaction(async (tx) => {
      const it = tx.iterate<{ x: number }>("SELECT x FROM t")[Symbol.asyncIterator]();
      assert.deepEqual(await it.next(), { value: { x: 1 }, done: false });
      const ac = new AbortController();
      const slow = tx.values(SLOW, [], { signal: ac.signal });
      setTimeout(() => ac.abort(), 100);
      await assert.rejects(slow);
      assert.deepEqual(await tx.values("SELECT count(*) FROM t"), [[ROWS]]);
      let failure: unknown = null;
      try {
        for (let r = await it.next(); !r.done; r = await it.next()) { /* drain */ }
      } catch (e) {
        failure = e;
      }
      assert.ok(failure instanceof SqliteError, String(failure));
      assert.equal(failure.code, "CURSOR_CLOSED");
      assert.match(failure.message, /another statement of its transaction was stopped/);
      await tx.run("INSERT INTO t VALUES (-1)");
    });
    assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[ROWS + 1]]);
  } finally {
    await db.close();
  }
});
