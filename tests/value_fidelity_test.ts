/**
 * Values reach the database and come back as they were: parameters as they
 * were when the call was made (also when it waits for a connection), column
 * names that are also names of `Object.prototype`'s accessors, text that is
 * not valid UTF-8, feeds on tables with a column named like the rowid.
 */

import assert from "node:assert/strict";
import { ErrorCode, SqliteError } from "../protocol/errors.ts";
import { startServer } from "./_helpers.ts";

const ffi = Deno.env.get("NETSQLITE_ENGINE") !== "node";

// ---- parameters are taken when the call is made ------------------------------

Deno.test("a call waiting for a connection sends its parameters as they were when it was made", async () => {
  await using srv = await startServer();
  await using db = await srv.client(); // max: 1
  await db.exec("CREATE TABLE m (k TEXT, i, v)");
  const insert = await db.prepare("INSERT INTO m VALUES ('stmt', ?, ?)");
  const select = await db.prepare("SELECT 'stmt', ?, ?");
  const reserved = await db.reserve();
  const positional: unknown[] = [1, "first"];
  const named: Record<string, unknown> = { i: 1, v: "first" };
  const bytes = new Uint8Array([1, 2, 3]);
  const blob: unknown[] = [1, bytes];
  const calls = [
    db.run("INSERT INTO m VALUES ('positional', ?, ?)", positional as never),
    db.run("INSERT INTO m VALUES ('named', :i, :v)", named as never),
    db.run("INSERT INTO m VALUES ('blob', ?, ?)", blob as never),
    db.batch([{ sql: "INSERT INTO m VALUES ('batch', ?, ?)", params: positional as never }]),
    db.values("SELECT 'query', ?, ?", positional as never),
    insert.run(positional as never),
    select.values(positional as never),
  ];
  const rows = db.iterate("SELECT 'iterate', ?, ?", positional as never, { arrays: true });
  const stmtRows = select.iterate(positional as never, { arrays: true });
  // The caller reuses its objects while the calls wait for the reserved connection.
  positional[0] = 2;
  positional[1] = undefined;
  named.i = 2;
  named.v = undefined;
  bytes.fill(9);
  blob[0] = 2;
  await new Promise((resolve) => setTimeout(resolve, 50));
  await reserved.release();
  const results = await Promise.all(calls);
  assert.deepEqual(results[4], [["query", 1, "first"]]);
  assert.deepEqual(results[6], [["stmt", 1, "first"]]);
  // iterate() starts its cursor on the first next(), with the parameters of the call.
  assert.deepEqual(await Array.fromAsync(rows), [["iterate", 1, "first"]]);
  assert.deepEqual(await Array.fromAsync(stmtRows), [["stmt", 1, "first"]]);
  await insert.finalize();
  await select.finalize();
  assert.deepEqual(await db.values("SELECT k, i, v FROM m ORDER BY rowid"), [
    ["positional", 1, "first"],
    ["named", 1, "first"],
    ["blob", 1, new Uint8Array([1, 2, 3])],
    ["batch", 1, "first"],
    ["stmt", 1, "first"],
  ]);
});
