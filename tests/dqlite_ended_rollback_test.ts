/**
 * Cluster mode: a script that begins with the ROLLBACK ending a transaction
 * the engine ended (`TX_ABORTED`) ends that state only once the script runs
 * on the leader. One that fails before anything of it was sent (no leader)
 * keeps the state, so the client's retry of the same script runs it (before,
 * the state ended all the same, and the retried ROLLBACK failed: `cannot
 * rollback - no transaction is active`). A script with a statement cluster
 * mode forbids is refused whole (`FORBIDDEN`, nothing run) and keeps the
 * state too. Skipped (with the reason printed) when `dqlite-demo` is not
 * installed.
 */

import assert from "node:assert/strict";
import { type Client, connect } from "../mod.ts";
import { serve } from "../server.ts";
import { DemoCluster, skipWithoutDqlite } from "./_dqlite_nodes.ts";
import { abortTransaction, rejection } from "./_helpers.ts";

const ignore = skipWithoutDqlite("dqlite_ended_rollback_test.ts");

/**
 * With the one node down, `script` (a ROLLBACK ending the ended transaction,
 * then more) fails with NO_LEADER, nothing of it run: the state lasts
 * (before: it ended, and the retry's ROLLBACK failed with `cannot rollback -
 * no transaction is active`). Then, the node back, the retry runs whole.
 * `atCommit`: the state is that of a COMMIT that failed there (not in a
 * transaction any more; a ROLLBACK right after it succeeds).
 */
async function noLeaderThenRetry(
  nodes: DemoCluster,
  db: Client,
  script: string,
  atCommit = false,
): Promise<void> {
  await nodes.kill(0);
  const lost = await rejection(db.exec(script));
  assert.equal(lost.code, "NO_LEADER", lost.message);
  assert.equal(lost.mayHaveRun, false);
  assert.match(lost.message, /\(not applied: safe to retry\)$/);
  assert.doesNotMatch(lost.message, /before it ran/);
  assert.equal(db.inTransaction, !atCommit);
  nodes.restart(0);
  await nodes.waitVoters(1);
  // The state lasted: a request other than its ending is refused as before.
  if (!atCommit) assert.equal((await rejection(db.run("SELECT 1"))).code, "TX_ABORTED");
  await db.exec(script, { timeout: 30_000 });
  assert.equal(db.inTransaction, false);
}

Deno.test({
  name: "cluster mode: 'ROLLBACK; ...' after TX_ABORTED that fails with NO_LEADER keeps the " +
    "state: its retry runs (before: the state ended unsent, the retried ROLLBACK failed)",
  ignore,
  async fn() {
    await using nodes = await DemoCluster.start(1);
    const dir = await Deno.makeTempDir({ prefix: "netsqlite-dqlite-ended-" });
    const path = `${dir}/s.sock`;
    const server = await serve({
      path,
      dqlite: { nodes: nodes.addresses, database: "ended", leaderTimeout: 1_500 },
    });
    try {
      await using db = await connect({ path, max: 1 });
      await db.exec("CREATE TABLE t (a INTEGER PRIMARY KEY, b UNIQUE)");
      await abortTransaction(db);

      // A forbidden statement after the ROLLBACK: refused whole, nothing run, the state stays.
      const forbidden = await rejection(db.exec("ROLLBACK; ATTACH 'x.db' AS x"));
      assert.equal(forbidden.code, "FORBIDDEN", forbidden.message);
      assert.equal(db.inTransaction, true);
      assert.equal((await rejection(db.run("SELECT 1"))).code, "TX_ABORTED");

      // No leader: nothing of the script was sent, and the error says so.
      await noLeaderThenRetry(nodes, db, "ROLLBACK; INSERT INTO t VALUES (1, 'a')");
      assert.deepEqual(await db.query("SELECT a FROM t"), [{ a: 1 }]);

      // So after the COMMIT that failed there (the ROLLBACK ORMs send after it).
      await abortTransaction(db);
      assert.equal((await rejection(db.exec("COMMIT"))).code, "TX_ABORTED");
      await noLeaderThenRetry(nodes, db, "ROLLBACK; INSERT INTO t VALUES (2, 'b')", true);
      assert.deepEqual(await db.query("SELECT a FROM t ORDER BY a"), [{ a: 1 }, { a: 2 }]);
    } finally {
      await server.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "cluster mode: 'ROLLBACK; ...' after TX_ABORTED stopped at its deadline or cancelled while no leader " +
    "could be reached keeps the state: its retry runs (before: the state ended unsent)",
  ignore,
  async fn() {
    await using nodes = await DemoCluster.start(1);
    const dir = await Deno.makeTempDir({ prefix: "netsqlite-dqlite-ended-" });
    const path = `${dir}/s.sock`;
    const server = await serve({
      path,
      dqlite: { nodes: nodes.addresses, database: "ended_late", leaderTimeout: 20_000 },
    });
    try {
      await using db = await connect({ path, max: 1 });
      await db.exec("CREATE TABLE t (a INTEGER PRIMARY KEY, b UNIQUE)");
      await abortTransaction(db);
      await nodes.kill(0);
      const script = "ROLLBACK; INSERT INTO t VALUES (1, 'a')";
      const late = await rejection(db.exec(script, { timeout: 800 }));
      assert.equal(late.code, "STATEMENT_TIMEOUT", late.message);
      assert.equal(late.mayHaveRun, false);
      assert.match(late.message, /\(not applied: safe to retry\)$/);
      assert.doesNotMatch(late.message, /before it ran/);
      assert.equal(db.inTransaction, true);
      // So when the client cancels it meanwhile.
      const signal = AbortSignal.timeout(500);
      const cancelled = await db.exec(script, { signal, timeout: 10_000 }).then(
        () => assert.fail("expected a rejection"),
        (err: Error & { code?: string; ran?: number }) => err,
      );

      assert.doesNotMatch(cancelled.message, /before it ran/);
      assert.equal(cancelled.ran ?? 0, 0);
      assert.equal(db.inTransaction, true);
      nodes.restart(0);
      await nodes.waitVoters(1);
      assert.equal((await rejection(db.run("SELECT 1"))).code, "TX_ABORTED");
      await db.exec(script, { timeout: 30_000 });
      assert.equal(db.inTransaction, false);
      assert.deepEqual(await db.query("SELECT a FROM t"), [{ a: 1 }]);
    } finally {
      await server.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
