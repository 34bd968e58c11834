/**
 * A transaction's lease (`--tx-timeout`) that ends while one of its cursors
 * steps on the writer (FFI engine: in the background). The engine's
 * interrupt can come too late to stop that step: a step computing one row
 * (here: `instr()` over long strings, which SQLite does not interrupt)
 * returns the row, and the interrupt stays pending on the writer while any
 * statement is active there. It must neither stop the engine's ROLLBACK (the
 * writer would go to the next client with the dead transaction still open:
 * that client's acknowledged writes ran inside it, and were rolled back with
 * it) nor be reported as the cursor's own `STATEMENT_TIMEOUT` (which named
 * the 30 s statement timeout after 0.5 s). On node:sqlite nothing can be
 * interrupted: the step runs to its end, as documented. And a cursor of a
 * transaction the lease rolled back between two chunks says why.
 */

import assert from "node:assert/strict";
import { connect, SqliteError } from "../mod.ts";
import { delay, startServer } from "./_helpers.ts";

const ffi = (Deno.env.get("NETSQLITE_ENGINE") ?? "ffi") !== "node";

/**
 * Two rows, each one `instr()` call of 0.3–1 s on the 2-core VM (3.2e10 bytes
 * compared; no interrupt check inside it): the lease comes during the
 * first row's step.
 */
const SLOW = "SELECT instr(printf('%.*c', 4000000, 'a'), printf('%.*c', 8000, 'a') || 'b') AS m " +
  "FROM (SELECT 1 UNION ALL SELECT 2)";

const TX_TIMEOUT_MS = 100;

Deno.test("--tx-timeout reached while a cursor steps on the writer: the transaction is rolled back, and the next client's writes are kept", async () => {
  // The server's log: the engine's safety net (a writer given back inside a
  // transaction is rolled back before anyone else writes, and logged) must
  // not be what kept the writes: the lease's own ROLLBACK must succeed.
  const logged: string[] = [];
  const consoleError = console.error;
  console.error = (...args: unknown[]) => logged.push(args.join(" "));
  try {
    await leaseDuringCursorStep();
  } finally {
    console.error = consoleError;
  }
  assert.deepEqual(logged.filter((l) => /inside a transaction|cannot be rolled back/.test(l)), []);
});

async function leaseDuringCursorStep(): Promise<void> {
  await using srv = await startServer({ txTimeout: TX_TIMEOUT_MS, logLevel: "error" });
  await using a = await connect({ ...srv.connectOptions, max: 1 });
  await using b = await connect({ ...srv.connectOptions, max: 1 });
  await using c = await connect({ ...srv.connectOptions, max: 1 });
  await a.exec(
    "CREATE TABLE t (x INTEGER); INSERT INTO t (x) " +
      "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s LIMIT 5000) SELECT n FROM s",
  );
  await a.exec("BEGIN");
  await a.run("INSERT INTO t VALUES (-1)");
  // A cursor of the transaction left open (part read): a statement active on the writer.
  const open = a.iterate<{ x: number }>("SELECT x FROM t")[Symbol.asyncIterator]();
  assert.deepEqual((await open.next()).value, { x: 1 });
  const slow = a.iterate(SLOW)[Symbol.asyncIterator]();
  const err = await (async () => {
    for (;;) if ((await slow.next()).done) return null;
  })().catch((e) => e);
  assert.ok(err instanceof SqliteError, String(err)); // (its code: the next test)
  await open.return!(undefined);
  await assert.rejects(a.run("INSERT INTO t VALUES (-2)"), { code: "TX_TIMEOUT" });
  await a.exec("ROLLBACK");
  // Another client's writes, acknowledged, are kept: none ran in the dead transaction.
  assert.deepEqual(await b.run("INSERT INTO t VALUES (-3)"), { changes: 1, lastInsertRowid: 5001 });
  await b.transaction(async (tx) => {
    await tx.run("INSERT INTO t VALUES (-4)");
  });
  assert.deepEqual(await c.values("SELECT x FROM t WHERE x < 0 ORDER BY x DESC"), [[-3], [-4]]);
  assert.deepEqual(await a.values("SELECT count(*) FROM t"), [[5002]]);
}

Deno.test("--tx-timeout reached while a cursor steps on the writer: transaction() rejects with TX_TIMEOUT, not the cursor's STATEMENT_TIMEOUT", async () => {
  await using srv = await startServer({ txTimeout: TX_TIMEOUT_MS, logLevel: "error" });
  await using db = await connect({ ...srv.connectOptions, max: 2 });
  let rows = 0;
  const err = await db.transaction(async (tx) => {
    for await (const _ of tx.iterate(SLOW)) rows++;
  }).catch((e) => e);
  assert.ok(err instanceof SqliteError, String(err));
  if (ffi) {
    // Stopped as any request of the transaction running at its deadline is.
    assert.equal(err.code, "TX_TIMEOUT", err.message);
    assert.match(err.message, /lasting 100 ms \(--tx-timeout\)/);
    assert.equal(rows, 0);
  } else {
    // node:sqlite: the step runs to its end, then the transaction is rolled back.
    assert.notEqual(err.code, "STATEMENT_TIMEOUT", err.message);
  }
  assert.equal(await db.values("SELECT 1").then((r) => r.length), 1);
});

Deno.test("A cursor of a transaction the idle lease rolled back says so: transaction() rejects naming --tx-idle-timeout, not advising to read before COMMIT", async () => {
  await using srv = await startServer({ txIdleTimeout: 200, logLevel: "error" });
  await using db = await connect({ ...srv.connectOptions, max: 2 });
  await db.exec(
    "CREATE TABLE t (x INTEGER); INSERT INTO t (x) " +
      "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s LIMIT 5000) SELECT n FROM s",
  );
  let rows = 0;
  const err = await db.transaction(async (tx) => {
    await tx.run("INSERT INTO t VALUES (-1)");
    for await (const _ of tx.iterate("SELECT x FROM t")) {
      // Slow work on the first row: the transaction sits idle past its lease.
      if (rows++ === 0) await delay(600);
    }
  }).catch((e) => e);
  assert.ok(err instanceof SqliteError, String(err));
  assert.equal(err.code, "CURSOR_CLOSED", err.message);
  assert.match(
    err.message,
    /^Cursor \d+ was closed when its transaction ended, rolled back by the server: Transaction was rolled back after 200 ms idle \(--tx-idle-timeout\); send ROLLBACK/,
  );
  assert.doesNotMatch(err.message, /before COMMIT/);
  assert.ok(rows > 0 && rows < 5001, String(rows));
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[5000]]);
});
