/**
 * Cluster mode: a `batch()` that loses the leader before its COMMIT was sent
 * says it was not applied (`mayHaveRun` false: dqlite replicates a
 * transaction at its commit only, so the leader's loss ended it) and which
 * statement met the loss, instead of `outcome unknown`. The single node is
 * killed while statement 2 of 3 runs, then restarted: nothing of the batch
 * is there. Skipped (with the reason printed) when `dqlite-demo` is not
 * installed.
 */

import assert from "node:assert/strict";
import { connect } from "../client.ts";
import { serve } from "../server.ts";
import { SqliteError } from "../protocol/errors.ts";
import { DemoCluster, skipWithoutDqlite } from "./_dqlite_nodes.ts";

const ignore = skipWithoutDqlite("dqlite_batch_lost_test.ts");

/** A write that computes for seconds (counts 200 million rows) before it writes. */
const SLOW_INSERT = "INSERT INTO t SELECT count(*) FROM (WITH RECURSIVE c(i) AS " +
  "(SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 200000000) SELECT i FROM c)";

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

Deno.test({
  name: "batch() that loses the leader before its COMMIT fails with LEADER_LOST, not applied, " +
    "naming the statement",
  ignore,
  async fn() {
    await using nodes = await DemoCluster.start(1);
    const dir = await Deno.makeTempDir({ prefix: "netsqlite-dqlite-batch-" });
    const path = `${dir}/s.sock`;
    const server = await serve({
      path,
      dqlite: { nodes: nodes.addresses, database: "batch", leaderTimeout: 20_000 },
    });
    try {
      await using db = await connect({ path, max: 1 });
      await db.exec("CREATE TABLE t (x INTEGER)");
      const batch = db.batch([
        { sql: "INSERT INTO t VALUES (1)" },
        { sql: SLOW_INSERT },
        { sql: "INSERT INTO t VALUES (3)" },
      ], { timeout: 60_000 }).then(() => null, (e) => e);
      await sleep(700); // statement 2 is running on the node
      await nodes.kill(0);
      const err = await batch;
      assert.ok(err instanceof SqliteError, String(err));
      assert.equal(err.code, "LEADER_LOST", err.message);
      assert.match(
        err.message,
        /^Batch statement 2 of 3 failed, nothing was applied: .* \(not applied: safe to retry\)$/,
      );
      assert.equal(err.mayHaveRun, false);
      // Nothing of the batch was applied.
      nodes.restart(0);
      await nodes.waitVoters(1);
      assert.deepEqual(await db.values("SELECT count(*) FROM t", [], { timeout: 30_000 }), [[0]]);
    } finally {
      await server.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
