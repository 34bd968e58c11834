/**
 * Cluster mode: a `COMMIT` sent to a leader that stops answering (SIGSTOP)
 * while no other node can take over (here the only node) is not cut off at
 * the statement's deadline (transaction control's outcome decides the
 * transaction's): it fails after the server's 30 s wait for a node's reply,
 * with `LEADER_LOST`, outcome unknown. The message named that wait
 * `requestTimeout`, which reads as the client's option of that name (not
 * set here, and not what bounded it) and is no option of the server; it now
 * says what the 30 s are. Skipped (with the reason printed) when
 * `dqlite-demo` is not installed.
 */

import assert from "node:assert/strict";
import { connect } from "../client.ts";
import { serve } from "../server.ts";
import { SqliteError } from "../protocol/errors.ts";
import { DemoCluster, skipWithoutDqlite } from "./_dqlite_nodes.ts";

const ignore = skipWithoutDqlite("dqlite_commit_hung_test.ts");

Deno.test({
  name: "cluster mode: a COMMIT on a hung leader fails after the server's 30 s wait for a " +
    "node's reply, saying so without naming the client's requestTimeout",
  ignore,
  async fn() {
    await using nodes = await DemoCluster.start(1);
    const dir = await Deno.makeTempDir({ prefix: "netsqlite-dqlite-commit-" });
    const path = `${dir}/s.sock`;
    try {
      await using _server = await serve({
        path,
        statementTimeout: 1000,
        dqlite: { nodes: nodes.addresses, database: "commit" },
      });
      await using db = await connect({ path, max: 1 });
      await db.exec("CREATE TABLE t (x)");
      await db.exec("BEGIN");
      await db.run("INSERT INTO t VALUES (1)");
      await nodes.pause(0);
      const started = performance.now();
      const err = await db.exec("COMMIT").then(() => null, (e) => e);
      const took = performance.now() - started;
      nodes.resume(0);
      assert.ok(err instanceof SqliteError, String(err));
      assert.equal(err.code, "LEADER_LOST", err.message);
      assert.equal(err.mayHaveRun, true);
      assert.ok(took > 25_000 && took < 45_000, `failed after ${Math.round(took)} ms`);
      assert.match(
        err.message,
        /^Connection to dqlite node "[^"]+" lost: no answer within 30000 ms \(the longest the server waits for a dqlite node's reply\) \(outcome unknown: /,
      );
      assert.equal(db.inTransaction, false);
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
