/**
 * `SQLITE_BUSY_SNAPSHOT`: a deferred transaction read, another program then
 * committed to the database file directly (outside the server's writer
 * queue), and the transaction's first write fails at once. SQLite's text
 * for it ("database is locked") reads as if waiting or retrying the
 * statement could help; the message says that only retrying the whole
 * transaction can. Code and extended code stay SQLite's.
 */

import assert from "node:assert/strict";
import { connect, SqliteError } from "../mod.ts";
import { holdWriteLock, startServer } from "./_helpers.ts";

Deno.test("SQLITE_BUSY_SNAPSHOT says to retry the whole transaction, not the statement", async () => {
  await using srv = await startServer();
  await using db = await connect(srv.connectOptions);
  await db.exec("CREATE TABLE c (id INTEGER PRIMARY KEY, v INTEGER); INSERT INTO c VALUES (1, 0)");
  const err = await db.transaction(async (tx) => {
    assert.deepEqual(await tx.get("SELECT v FROM c"), { v: 0 });
    await (await holdWriteLock(srv.database)).release(); // another program commits
    await tx.run("UPDATE c SET v = v + 1");
  }).catch((e) => e);
  assert.ok(err instanceof SqliteError, String(err));
  assert.equal(err.code, "SQLITE_BUSY_SNAPSHOT");
  assert.equal(err.sqliteCode, 517);
  assert.equal(
    err.message,
    "database is locked (SQLITE_BUSY_SNAPSHOT: another connection to the database file " +
      "committed since this transaction began reading, so retrying the statement cannot help; " +
      'retry the whole transaction, or begin it with behavior: "immediate")',
  );
  // Retried as a whole, it sees the other program's commit and writes.
  await db.transaction(async (tx) => {
    assert.deepEqual(await tx.get("SELECT v FROM c"), { v: 0 });
    await tx.run("UPDATE c SET v = v + 1");
  });
  assert.deepEqual(await db.get("SELECT v FROM c"), { v: 1 });
  assert.deepEqual(await db.values("SELECT count(*) FROM other_program"), [[1]]);
});
