/**
 * Cluster mode: a `query()` or `batch()` reply found past
 * `--max-result-bytes` once encoded (its rows' messages from the node were
 * within it: rows of 15 REAL columns take 128 bytes in dqlite's messages and
 * 136 encoded) fails with `RESULT_TOO_LARGE` worded for cluster mode, which
 * does not advise `iterate()`: there a cursor buffers its whole result on the
 * server too. Skipped (with the reason printed) when `dqlite-demo` is not
 * installed.
 */

import assert from "node:assert/strict";
import { connect } from "../client.ts";
import { serve } from "../server.ts";
import { SqliteError } from "../protocol/errors.ts";
import { DemoCluster, skipWithoutDqlite } from "./_dqlite_nodes.ts";

const ignore = skipWithoutDqlite("dqlite_too_large_test.ts");

const REALS = Array.from({ length: 15 }, (_, i) => `id + 0.${i + 1}`).join(", ");

Deno.test({
  name: "query() and batch() past --max-result-bytes once encoded do not advise iterate() " +
    "in cluster mode",
  ignore,
  async fn() {
    await using nodes = await DemoCluster.start(1);
    const dir = await Deno.makeTempDir({ prefix: "netsqlite-dqlite-large-" });
    const path = `${dir}/s.sock`;
    const server = await serve({
      path,
      maxResultBytes: 20_000,
      dqlite: { nodes: nodes.addresses, database: "large" },
    });
    try {
      await using db = await connect({ path, max: 1 });
      await db.exec("CREATE TABLE big (id INTEGER PRIMARY KEY)");
      await db.exec(
        "INSERT INTO big WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c " +
          "WHERE i < 300) SELECT i FROM c",
      );
      const messages = new Set<string>();
      // Around the limit: ~146-149 rows pass the node's messages and not the encoded reply.
      for (let n = 130; n <= 170; n++) {
        const sql = `SELECT ${REALS} FROM big LIMIT ${n}`;
        for (const call of [() => db.query(sql), () => db.batch([{ sql }])]) {
          const err = await call().then(() => null, (e) => e);
          if (err === null) continue;
          assert.ok(err instanceof SqliteError, String(err));
          assert.equal(err.code, "RESULT_TOO_LARGE", err.message);
          messages.add(err.message.replace(/^Batch statement 1 of 1 failed, [^:]*: /, ""));
        }
      }
      assert.ok(messages.size > 0, "no result was too large");
      for (const m of messages) {
        assert.doesNotMatch(m, /use iterate\(\)/);
        assert.match(m, /in cluster mode iterate\(\) buffers/);
      }
    } finally {
      await server.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
