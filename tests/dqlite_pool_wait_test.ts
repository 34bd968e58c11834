/**
 * Cluster mode: a request that found every pooled connection to the leader
 * lent (`dqlite.poolSize`) waits up to `--busy-timeout` for one, then fails
 * with `BUSY_TIMEOUT`. Nothing of it was sent: the error says so (`not
 * applied: safe to retry`, `mayHaveRun` false), and it names what holds the
 * connections as the deadline's `STATEMENT_TIMEOUT` does, "other requests
 * or transactions". Before, it said "other clients hold them in
 * transactions", also when they were held by requests running (a long
 * statement, requests waiting for a new leader after a failover: 36 of 100
 * clients met it then) and no transaction was open, and `mayHaveRun` was
 * undefined. Skipped (with the reason printed) when `dqlite-demo` is not
 * installed.
 */

import assert from "node:assert/strict";
import { connect } from "../client.ts";
import { serve } from "../server.ts";
import { SqliteError } from "../protocol/errors.ts";
import { DemoCluster, skipWithoutDqlite } from "./_dqlite_nodes.ts";

const ignore = skipWithoutDqlite("dqlite_pool_wait_test.ts");

/** A read that counts to `n` on the node. */
function counting(n: number): string {
  return "SELECT count(*) FROM (WITH RECURSIVE c(i) AS " +
    `(SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ${Math.round(n)}) SELECT i FROM c)`;
}

Deno.test({
  name: "cluster mode: a request that waited --busy-timeout for a pooled connection fails as " +
    "not applied, naming requests or transactions as the holders",
  ignore,
  async fn() {
    await using nodes = await DemoCluster.start(1);
    const dir = await Deno.makeTempDir({ prefix: "netsqlite-dqlite-pool-" });
    const path = `${dir}/s.sock`;
    try {
      await using _server = await serve({
        path,
        busyTimeout: 300,
        dqlite: { nodes: nodes.addresses, database: "pool", poolSize: 1 },
      });
      await using holder = await connect({ path, max: 1 });
      await using other = await connect({ path, max: 1 });
      // How far the node counts per ms now: the holder's read below takes about 3 s.
      const started = performance.now();
      await holder.values(counting(1_000_000));
      const perMs = 1_000_000 / Math.max(1, performance.now() - started);

      const expectWait = async (holding: string): Promise<void> => {
        const err = await other.get("SELECT 1").then(() => null, (e) => e);
        assert.ok(err instanceof SqliteError, `${holding}: ${err}`);
        assert.equal(err.code, "BUSY_TIMEOUT", `${holding}: ${err.message}`);
        assert.equal(
          err.message,
          "No connection to the dqlite leader was free within 300 ms (--busy-timeout): all 1 in " +
            "use (dqlite.poolSize), held by other requests or transactions (not applied: safe to " +
            "retry)",
          holding,
        );
        assert.equal(err.mayHaveRun, false, holding);
      };

      // The one connection held by a request running (no transaction anywhere).
      const slow = holder.values(counting(perMs * 3000)).then(() => null, (e) => e);
      await new Promise((r) => setTimeout(r, 100));
      try {
        await expectWait("a request");
      } finally {
        assert.equal(await slow, null);
      }
      // Held by a transaction.
      await holder.exec("BEGIN");
      await expectWait("a transaction");
      await holder.exec("ROLLBACK");
      assert.deepEqual(await other.get("SELECT 2 AS n"), { n: 2 });
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
