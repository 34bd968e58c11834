/**
 * A batch's `timeout` is one deadline for all its statements (PROTOCOL.md),
 * on both engines. node:sqlite cannot stop a statement while it runs, so
 * there the server checks the deadline between the batch's statements and
 * when each one ends: a batch of many cheap statements stops at its
 * deadline, and one whose statement ended past it fails, as on FFI, with
 * `STATEMENT_TIMEOUT` naming the statement, nothing of the batch applied.
 */

import assert from "node:assert/strict";
import { SqliteError } from "../client.ts";
import { startServer } from "./_helpers.ts";

const ENGINES = ["node", "ffi"] as const;

/** The statement number a batch's `STATEMENT_TIMEOUT` names, checked against `of`. */
function timedOutAt(err: unknown, of: number, timeout: number): number {
  assert.ok(err instanceof SqliteError, String(err));
  assert.equal(err.code, "STATEMENT_TIMEOUT", err.message);
  const m = new RegExp(
    `^Batch statement (\\d+) of ${of} failed, nothing was applied: ` +
      `Statement stopped after ${timeout} ms`,
  ).exec(err.message);
  assert.ok(m, err.message);
  return Number(m[1]);
}

Deno.test("Client.batch() of many cheap statements stops at its timeout on both engines: STATEMENT_TIMEOUT naming the statement, nothing applied", async () => {
  // 150,000 statements take seconds on node:sqlite (a batch without the
  // check ran 100,000 `select 1` to its end in 7–13 s on the 2-core VM;
  // these ran at ~100 µs each) and about a second on FFI (~7 µs each): 20
  // times the 50 ms deadline or more, even on a faster machine; a slower,
  // loaded one only stops them later.
  const n = 150_000;
  const timeout = 50;
  const items = Array.from(
    { length: n },
    (_, i) =>
      i % 2 === 0
        ? { sql: "INSERT INTO t VALUES (?)", params: [i] }
        : { sql: "SELECT count(*) FROM t" },
  );
  for (const engine of ENGINES) {
    await using srv = await startServer({ engine });
    const db = await srv.client();
    try {
      await db.exec("CREATE TABLE t (x INTEGER)");
      const err = await db.batch(items, { timeout }).then(() => null, (e) => e);
      assert.ok(err !== null, `${engine}: the batch of ${n} ran to its end past its ${timeout} ms`);
      const at = timedOutAt(err, n, timeout);
      assert.ok(at >= 1 && at < n, `${engine}: stopped at statement ${at} of ${n}`);
      // Atomic: none of the inserts before the deadline stayed.
      assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]], engine);
      // The connection is usable: a write, and a batch within its deadline.
      await db.run("INSERT INTO t VALUES (-1)");
      const ok = await db.batch([{ sql: "INSERT INTO t VALUES (-2)" }, {
        sql: "SELECT count(*) AS c FROM t",
      }], {
        timeout: 10_000,
      });
      assert.equal(ok[1].rows[0].c, 2, engine);
    } finally {
      await db.close();
    }
  }
});

Deno.test("Client.batch() whose statement ends past the timeout fails on both engines (node:sqlite: when it ends), nothing applied", async () => {
  for (const engine of ENGINES) {
    await using srv = await startServer({ engine });
    const db = await srv.client();
    try {
      // 300^3 = 27 million rows to count: far past 50 ms anywhere (node:sqlite
      // runs it to its end, FFI stops it).
      await db.exec(
        "CREATE TABLE t (x INTEGER); CREATE TABLE j (v INTEGER);" +
          "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 300) " +
          "INSERT INTO j SELECT i FROM c",
      );
      const slow = "SELECT count(*) FROM j a, j b, j c";
      const err = await db.batch([{ sql: "INSERT INTO t VALUES (1)" }, { sql: slow }], {
        timeout: 50,
      })
        .then(() => null, (e) => e);
      assert.ok(
        err !== null,
        `${engine}: a statement that ended past the deadline did not fail the batch`,
      );
      // The last statement, the one running at the deadline: the batch did not commit.
      assert.equal(timedOutAt(err, 2, 50), 2, engine);
      assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]], engine);
      assert.deepEqual(await db.values("SELECT count(*) FROM j"), [[300]], engine);
    } finally {
      await db.close();
    }
  }
});

Deno.test("Client.batch() inside a transaction on node:sqlite: stopped at its timeout, its statements are undone and the transaction goes on", async () => {
  await using srv = await startServer({ engine: "node" });
  const db = await srv.client();
  try {
    await db.exec("CREATE TABLE t (x INTEGER)");
    await db.exec("BEGIN");
    await db.run("INSERT INTO t VALUES (0)");
    const n = 100_000;
    const items = Array.from(
      { length: n },
      (_, i) => ({ sql: "INSERT INTO t VALUES (?)", params: [i + 1] }),
    );
    const err = await db.batch(items, { timeout: 100 }).then(() => null, (e) => e);
    assert.ok(err !== null, `the batch of ${n} ran to its end past its 100 ms`);
    assert.ok(timedOutAt(err, n, 100) < n);
    // The batch was a savepoint of the transaction: undone alone.
    assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[1]]);
    await db.run("INSERT INTO t VALUES (-1)");
    await db.exec("COMMIT");
    assert.deepEqual(await db.values("SELECT x FROM t ORDER BY x"), [[-1], [0]]);
  } finally {
    await db.close();
  }
});
