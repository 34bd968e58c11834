/**
 * README's "Values" and "Limits" claims, as a user meets them through the
 * client API on a real server (both engines): the bigint range SQLite
 * takes, what a number becomes in a TEXT column, and the batch size
 * `--max-request-values` allows.
 */

import assert from "node:assert/strict";
import { ErrorCode, SqliteError } from "../protocol/errors.ts";
import { startServer } from "./_helpers.ts";

Deno.test("a bigint binds from -2^63 to 2^63-1 exactly; 2^63 and 2^64-1 are refused", async () => {
  await using s = await startServer();
  const db = await s.client();
  try {
    for (const v of [-(2n ** 63n), 2n ** 63n - 1n]) {
      assert.deepEqual(await db.get("SELECT ? AS v, typeof(?) AS t", [v, v]), {
        v,
        t: "integer",
      });
    }
    // "Within 64 bits" as unsigned is not enough: SQLite's INTEGER is signed.
    for (const v of [2n ** 63n, 2n ** 64n - 1n, -(2n ** 63n) - 1n]) {
      await assert.rejects(
        db.get("SELECT ? AS v", [v]),
        (err: unknown) =>
          err instanceof SqliteError && err.code === ErrorCode.InvalidParam &&
          err.message ===
            `Cannot bind parameter 1: bigint ${v} is outside SQLite's 64-bit INTEGER range`,
      );
    }
    // The refusal fails that call alone.
    assert.deepEqual(await db.get("SELECT 1 AS one"), { one: 1 });
  } finally {
    await db.close();
  }
});

Deno.test("a number bound into a TEXT column is stored as SQLite's text of it", async () => {
  await using s = await startServer();
  const db = await s.client();
  try {
    await db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, x TEXT)");
    const values = [-0, Infinity, -Infinity];
    for (const [i, v] of values.entries()) {
      await db.run("INSERT INTO t VALUES (?, ?)", [i, v]);
    }
    // -0 loses its sign; ±Infinity reads back as text Number() does not parse.
    assert.deepEqual(await db.values("SELECT x, typeof(x) FROM t ORDER BY id"), [
      ["0.0", "text"],
      ["Inf", "text"],
      ["-Inf", "text"],
    ]);
  } finally {
    await db.close();
  }
});

Deno.test("--max-request-values: a batch of statements of 7 parameters counts 10 values each", async () => {
  // README: the default 1,048,576 allows a batch of about 100,000 such
  // statements (104,857 exactly); with 1,024, 102 pass and 103 do not.
  await using s = await startServer({ maxRequestValues: 1024 });
  const db = await s.client();
  try {
    await db.exec("CREATE TABLE t(a, b, c, d, e, f, g)");
    const batch = (n: number) =>
      Array.from({ length: n }, (_, i) => ({
        sql: "INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?)",
        params: [i, 1, 2, 3, 4, 5, 6],
      }));
    assert.equal((await db.batch(batch(102))).length, 102);
    await assert.rejects(
      db.batch(batch(103)),
      (err: unknown) =>
        err instanceof SqliteError && err.code === ErrorCode.BadRequest &&
        err.message.startsWith("Cannot run request: it holds more than 1024 values"),
    );
    // The connection goes on, and nothing of the refused batch was applied.
    assert.deepEqual(await db.get("SELECT count(*) AS n FROM t"), { n: 102 });
  } finally {
    await db.close();
  }
});
