/**
 * The client's lifecycle as application code meets it: calls refused with a
 * clear error instead of silently doing nothing, and resources given back.
 */
import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import { startServer } from "./_helpers.ts";

Deno.test("batch() given no array of statements rejects with a TypeError saying what it takes, and runs nothing", async () => {
  await using srv = await startServer();
  await using db = await connect(srv.connectOptions);
  await db.exec("CREATE TABLE t (x)");
  const batch = db.batch as (statements: unknown, options?: unknown) => Promise<unknown>;
  // One statement object where an array of them goes: it used to resolve to [] having run nothing.
  await assert.rejects(batch.call(db, { sql: "INSERT INTO t VALUES (1)" }), {
    name: "TypeError",
    message:
      "Invalid batch() call: expected an array of { sql, params } as statements, got a plain object (one statement: pass [{ sql, params }], or use run())",
  });
  await assert.rejects(batch.call(db, 5), {
    name: "TypeError",
    message:
      /^Invalid batch\(\) call: expected an array of \{ sql, params \} as statements, got a number$/,
  });
  // (They used to fail with "Cannot read properties of null (reading 'length')".)
  for (const nothing of [null, undefined]) {
    await assert.rejects(batch.call(db, nothing), {
      name: "TypeError",
      message:
        `Invalid batch() call: expected an array of { sql, params } as statements, got ${nothing}`,
    });
  }
  // A string where the statement object goes used to say "expected a string, got undefined".
  await assert.rejects(batch.call(db, ["INSERT INTO t VALUES (2)"]), {
    name: "TypeError",
    message: "Batch statement 1: expected { sql, params }, got a string",
  });
  await assert.rejects(batch.call(db, [{ sql: "INSERT INTO t VALUES (3)" }, null]), {
    name: "TypeError",
    message: "Batch statement 2: expected { sql, params }, got null",
  });
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]], "nothing ran");
  assert.deepEqual(await db.batch([]), [], "an empty batch stays allowed");
});
