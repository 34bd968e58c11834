/**
 * Cluster mode: a PRAGMA that acts without a value (`PRAGMA optimize`,
 * which may run ANALYZE and so write; also read as a table,
 * `pragma_optimize`) is no read when the leader is lost under it: its
 * `LEADER_LOST` says the outcome is unknown (`mayHaveRun`), not "a read,
 * which changed nothing: safe to retry" as before. A plain read still
 * says so. Against a one-node `dqlite-demo` cluster stopped (SIGSTOP) while
 * the statement is sent, then killed; skipped (with the reason printed)
 * when `dqlite-demo` is not installed: `apt-get install go-dqlite libdqlite0`.
 */

import assert from "node:assert/strict";
import { connect, SqliteError } from "../mod.ts";
import { serve } from "../server.ts";
import { DemoCluster, skipWithoutDqlite } from "./_dqlite_nodes.ts";
import { delay } from "./_helpers.ts";

const ignore = skipWithoutDqlite("dqlite_acting_pragma_test.ts", "cluster cases");

/** The LEADER_LOST of `sql` sent to a leader that is stopped, then killed. */
async function lostUnder(sql: string): Promise<SqliteError> {
  await using nodes = await DemoCluster.start(1);
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-dqlite-pragma-" });
  const path = `${dir}/s.sock`;
  try {
    await using _server = await serve({
      path,
      dqlite: { nodes: nodes.addresses, database: "acting", leaderTimeout: 600 },
    });
    await using db = await connect({ path, max: 1 });
    await db.exec("CREATE TABLE t (x); CREATE INDEX tx ON t (x); INSERT INTO t VALUES (1)");
    await nodes.pause(0);
    const pending = db.values(sql).then(() => null, (e) => e);
    await delay(300); // (sent: the node reads it once resumed, which it never is)
    await nodes.kill(0);
    const err = await pending;
    assert.ok(err instanceof SqliteError, `${sql}: ${err}`);
    assert.equal(err.code, "LEADER_LOST", `${sql}: ${err.message}`);
    return err;
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

Deno.test({
  name: "cluster mode: PRAGMA optimize (plain, with a schema, as a table) lost with the leader " +
    "is not called a read safe to retry: outcome unknown, mayHaveRun",
  ignore,
  async fn() {
    for (
      const sql of ["PRAGMA optimize", "PRAGMA main.optimize", "SELECT * FROM pragma_optimize"]
    ) {
      const err = await lostUnder(sql);
      assert.match(
        err.message,
        /\(outcome unknown: the write may have been applied, check before retrying\)$/,
        `${sql}: ${err.message}`,
      );
      assert.equal(err.mayHaveRun, true, `${sql}: ${err.message}`);
    }
  },
});

Deno.test({
  name: "cluster mode: a read lost with the leader still says it changed nothing",
  ignore,
  async fn() {
    for (const sql of ["SELECT x FROM t", "PRAGMA table_info(t)", "PRAGMA user_version"]) {
      const err = await lostUnder(sql);
      assert.match(
        err.message,
        /\(a read, which changed nothing: safe to retry\)$/,
        `${sql}: ${err.message}`,
      );
      assert.equal(err.mayHaveRun, false, `${sql}: ${err.message}`);
    }
  },
});
