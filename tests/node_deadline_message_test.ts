/**
 * node:sqlite cannot stop a running statement: one that ran past its
 * deadline fails with `STATEMENT_TIMEOUT` once it ends, and its message
 * says how far past the deadline it ended, not that it was stopped at the
 * deadline.
 */

import assert from "node:assert/strict";
import { SqliteError } from "../client.ts";
import { startServer } from "./_helpers.ts";

Deno.test("node:sqlite: a statement that runs to its end past its timeout says it exceeded the deadline and how far past it it ended", async () => {
  await using srv = await startServer({ engine: "node" });
  await using db = await srv.client();
  const slow =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) " +
    "SELECT count(*) FROM c";
  const err = await db.get(slow, [], { timeout: 50 }).then(() => null, (e) => e);
  assert.ok(err instanceof SqliteError, String(err));
  assert.equal(err.code, "STATEMENT_TIMEOUT");
  const m =
    /^Statement exceeded its 50 ms deadline \(.*\): it ended (\d+) ms past it, as node:sqlite cannot stop a running statement$/
      .exec(err.message);
  assert.ok(m, err.message);
  assert.ok(Number(m[1]) >= 1, err.message);
});

Deno.test("node:sqlite: a write inside a transaction that ran past its timeout says the server rolled the transaction back", async () => {
  await using srv = await startServer({ engine: "node" });
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (x)");
  await db.exec("BEGIN");
  await db.run("INSERT INTO t VALUES (0)");
  const slow =
    "INSERT INTO t WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) " +
    "SELECT count(*) FROM c";
  const err = await db.run(slow, [], { timeout: 50 }).then(() => null, (e) => e);
  assert.ok(err instanceof SqliteError, String(err));
  assert.equal(err.code, "STATEMENT_TIMEOUT");
  assert.match(
    err.message,
    /; the server rolled back the transaction it was in: end it with ROLLBACK \(transaction\(\) does so itself\), then retry the whole transaction$/,
  );
  await assert.rejects(db.values("SELECT 1"), { code: "TX_ABORTED" });
  await db.exec("ROLLBACK");
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]]);
});
