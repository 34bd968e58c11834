/**
 * Cluster mode and a value past the 256 MiB the server reads in one dqlite
 * message (`maxMessageBytes`): a dqlite node builds and stores such values
 * (it has no `SQLITE_LIMIT_LENGTH` of ours), and sends a row holding one as
 * one message. Before, the server closed its connection to the leader and
 * failed the read with `LEADER_LOST` (`safe to retry`, which it never
 * was), losing the transaction it was in. It now reads past the message
 * and fails the read with `SQLITE_TOOBIG`, as the single-file engine fails
 * building such a value; the transaction goes on. Skipped (with the reason
 * printed) when `dqlite-demo` is not installed.
 */

import assert from "node:assert/strict";
import { connect } from "../client.ts";
import { serve } from "../server.ts";
import { DemoCluster, skipWithoutDqlite } from "./_dqlite_nodes.ts";

const ignore = skipWithoutDqlite("dqlite_big_value_test.ts");

/** Past the 256 MiB (268,435,456 bytes) of one message. */
const BIG = 270_000_000;

function tooBig(e: unknown): boolean {
  assert.equal((e as { code?: string }).code, "SQLITE_TOOBIG", String(e));
  assert.match(
    (e as Error).message,
    /^string or blob too big: the dqlite node sent a message of 27\d{7} bytes/,
  );
  return true;
}

Deno.test({
  name: "cluster mode: a row past 256 MiB fails its read with SQLITE_TOOBIG, the transaction kept",
  ignore,
  async fn() {
    const nodes = await DemoCluster.start(1);
    const dir = await Deno.makeTempDir({ prefix: "netsqlite-dqlite-big-" });
    const server = await serve({
      path: `${dir}/s.sock`,
      dqlite: { nodes: nodes.addresses, database: "big" },
    });
    const c = await connect({ path: `${dir}/s.sock`, max: 1 });
    try {
      await c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v)");
      await c.exec("BEGIN");
      await c.run("INSERT INTO t VALUES (1, 'kept')");
      // The big row alone (one message), then with a row after it (more messages follow).
      await assert.rejects(c.values(`SELECT zeroblob(${BIG})`), tooBig);
      await assert.rejects(c.get(`SELECT zeroblob(${BIG}) UNION ALL SELECT 1`), tooBig);
      assert.deepEqual(await c.values("SELECT v FROM t"), [["kept"]]);
      await c.exec("COMMIT");
      assert.deepEqual(await c.values("SELECT v FROM t"), [["kept"]]);
      // Outside a transaction too; the connection serves on.
      await assert.rejects(c.query(`SELECT 1 UNION ALL SELECT zeroblob(${BIG})`), tooBig);
      assert.deepEqual(await c.values("SELECT length(zeroblob(?))", [BIG]), [[BIG]]);
    } finally {
      await c.close();
      await server.shutdown();
      await nodes.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
