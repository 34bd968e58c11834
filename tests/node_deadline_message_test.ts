/**
 * node:sqlite cannot stop a running statement: one that ran past its
 * deadline fails with `STATEMENT_TIMEOUT` once it ends, and its message
 * says how long it ran, not that it was stopped at the deadline.
 */

import assert from "node:assert/strict";
import { SqliteError } from "../client.ts";
import { startServer } from "./_helpers.ts";

Deno.test("node:sqlite: a statement that runs to its end past its timeout says it exceeded the deadline and how long it ran", async () => {
  await using srv = await startServer({ engine: "node" });
  await using db = await srv.client();
  const slow =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) " +
    "SELECT count(*) FROM c";
  const err = await db.get(slow, [], { timeout: 50 }).then(() => null, (e) => e);
  assert.ok(err instanceof SqliteError, String(err));
  assert.equal(err.code, "STATEMENT_TIMEOUT");
  const m =
    /^Statement exceeded its 50 ms deadline \(.*\): it ran (\d+) ms, as node:sqlite cannot stop a running statement$/
      .exec(err.message);
  assert.ok(m, err.message);
  assert.ok(Number(m[1]) > 50, err.message);
});
