/**
 * A statement of an `exec()` script (or of a batch) that makes SQLite roll
 * back the transaction it is in (`INSERT OR ROLLBACK`): its error says so,
 * and the requests after it fail with `TX_ABORTED` until ROLLBACK, on the
 * single-file engine and in cluster mode alike, whether the script began
 * the transaction or ran inside one; a script's statement that fails after
 * the script's own COMMIT ended the transaction is a plain error. Cluster
 * cases against a one-node `dqlite-demo` cluster; skipped (with the reason
 * printed) when `dqlite-demo` is not installed:
 * `apt-get install go-dqlite libdqlite0`.
 */

import assert from "node:assert/strict";
import { type Client, connect, SqliteError } from "../mod.ts";
import { serve } from "../server.ts";
import { DemoCluster, skipWithoutDqlite } from "./_dqlite_nodes.ts";
import { startServer } from "./_helpers.ts";

const ignore = skipWithoutDqlite("dqlite_script_tx_test.ts", "cluster case");

const ROLLED_BACK = "UNIQUE constraint failed: u.x; SQLite rolled back the transaction it was " +
  "in: end it with ROLLBACK (transaction() does so itself), then retry the whole transaction";
const REFUSED =
  /^Transaction was rolled back by an earlier statement's error, so this request did not run .*; the earlier error: SQLITE_CONSTRAINT_UNIQUE: UNIQUE constraint failed: u\.x$/;

async function failure(p: Promise<unknown>): Promise<SqliteError> {
  const err = await p.then(() => undefined, (e) => e);
  assert.ok(err instanceof SqliteError, `expected a SqliteError, got ${String(err)}`);
  return err;
}

async function fails(p: Promise<unknown>, code: string, message: string | RegExp): Promise<void> {
  const err = await failure(p);
  assert.equal(err.code, code, err.message);
  if (typeof message === "string") assert.equal(err.message, message);
  else assert.match(err.message, message);
}

async function reset(db: Client): Promise<void> {
  await db.exec("CREATE TABLE IF NOT EXISTS u (x UNIQUE); DELETE FROM u; INSERT INTO u VALUES (1)");
}

/** The case, against a server behind `open()`. */
async function scriptRollbacks(db: Client): Promise<void> {
  // The script begins the transaction.
  await reset(db);
  await fails(
    db.exec("BEGIN; INSERT INTO u VALUES (2); INSERT OR ROLLBACK INTO u VALUES (1)"),
    "SQLITE_CONSTRAINT_UNIQUE",
    `${ROLLED_BACK} (statement 3 of the script)`,
  );
  assert.equal(db.inTransaction, true);
  // Nothing meant for the transaction runs in autocommit.
  await fails(db.run("INSERT INTO u VALUES (3)"), "TX_ABORTED", REFUSED);
  await fails(db.run("COMMIT"), "TX_ABORTED", REFUSED);
  await db.run("ROLLBACK"); // right after the refused COMMIT: nothing left to undo
  assert.equal(db.inTransaction, false);
  assert.deepEqual(await db.values("SELECT x FROM u ORDER BY x"), [[1]]);

  // The script runs inside the client's transaction.
  await reset(db);
  await db.exec("BEGIN");
  await fails(
    db.exec(
      "INSERT INTO u VALUES (2); INSERT OR ROLLBACK INTO u VALUES (1); INSERT INTO u VALUES (4)",
    ),
    "SQLITE_CONSTRAINT_UNIQUE",
    `${ROLLED_BACK} (statement 2 of the script)`,
  );
  await fails(db.exec("COMMIT"), "TX_ABORTED", REFUSED);
  await db.exec("ROLLBACK");
  assert.deepEqual(await db.values("SELECT x FROM u ORDER BY x"), [[1]]);
  // ... and would end it: the COMMIT did not run, so it did not fail.
  await db.exec("BEGIN");
  await db.run("INSERT INTO u VALUES (2)");
  await fails(
    db.exec("INSERT OR ROLLBACK INTO u VALUES (1); COMMIT"),
    "SQLITE_CONSTRAINT_UNIQUE",
    ROLLED_BACK,
  );
  await fails(db.values("SELECT x FROM u"), "TX_ABORTED", REFUSED);
  await db.exec("ROLLBACK");
  assert.deepEqual(await db.values("SELECT x FROM u ORDER BY x"), [[1]]);

  // The script ends the transaction, then a statement fails in autocommit: a plain error.
  await reset(db);
  await db.exec("BEGIN");
  await db.run("INSERT INTO u VALUES (2)");
  await fails(
    db.exec("COMMIT; INSERT INTO u VALUES (1)"),
    "SQLITE_CONSTRAINT_UNIQUE",
    "UNIQUE constraint failed: u.x (statement 2 of the script; the 1 before it ran)",
  );
  assert.equal(db.inTransaction, false);
  await db.run("INSERT INTO u VALUES (3)");
  assert.deepEqual(await db.values("SELECT x FROM u ORDER BY x"), [[1], [2], [3]]);

  // transaction() ends it itself.
  await reset(db);
  await fails(
    db.transaction((tx) =>
      tx.exec("INSERT INTO u VALUES (2); INSERT OR ROLLBACK INTO u VALUES (1)")
    ),
    "SQLITE_CONSTRAINT_UNIQUE",
    `${ROLLED_BACK} (statement 2 of the script)`,
  );
  assert.equal(db.inTransaction, false);
  await db.run("INSERT INTO u VALUES (4)");
  assert.deepEqual(await db.values("SELECT x FROM u ORDER BY x"), [[1], [4]]);

  // A batch inside the transaction: the requests it refuses name the statement's own error.
  await reset(db);
  await db.exec("BEGIN");
  await db.run("INSERT INTO u VALUES (2)");
  await fails(
    db.batch([{ sql: "INSERT INTO u VALUES (3)" }, {
      sql: "INSERT OR ROLLBACK INTO u VALUES (1)",
    }]),
    "SQLITE_CONSTRAINT_UNIQUE",
    `Batch statement 2 of 2 failed, nothing was applied: ${ROLLED_BACK}`,
  );
  await fails(db.run("COMMIT"), "TX_ABORTED", REFUSED);
  await db.run("ROLLBACK");
  assert.deepEqual(await db.values("SELECT x FROM u ORDER BY x"), [[1]]);
}

Deno.test("single-file engine: a script's statement that rolls the transaction back", async () => {
  await using s = await startServer();
  await using db = await s.client();
  await scriptRollbacks(db);
});

Deno.test({
  name: "cluster mode: a script's statement that rolls the transaction back",
  ignore,
  async fn() {
    await using nodes = await DemoCluster.start(1);
    const dir = await Deno.makeTempDir({ prefix: "netsqlite-dqlite-script-" });
    const server = await serve({
      path: `${dir}/s.sock`,
      dqlite: { nodes: nodes.addresses, database: `script_tx_${Date.now()}` },
    });
    try {
      await using db = await connect({ path: `${dir}/s.sock`, max: 1 });
      await scriptRollbacks(db);
    } finally {
      await server.shutdown();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
