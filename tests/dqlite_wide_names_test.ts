/**
 * Cluster mode and results whose column names fill dqlite's 4 KiB message:
 * a dqlite 1.11 node then sends the names again and again, without a row
 * (it checks that the message is full before it steps the statement), so
 * such a query never ends. Before, `query()` and `iterate()` failed after
 * some 64 MiB of names with a `RESULT_TOO_LARGE` advising a `LIMIT`, and
 * `get()` and `run()` waited for their deadline (30 s) while the node
 * streamed. They now fail at the first such message with `BAD_REQUEST`
 * saying why (inside a transaction, which ends as for any read still
 * streaming 250 ms after its stop: `TX_ABORTED` until `ROLLBACK`), and a
 * narrower select of the same table returns its row.
 * Skipped (with the reason printed) when `dqlite-demo` is not installed.
 */

import assert from "node:assert/strict";
import { connect } from "../client.ts";
import { serve } from "../server.ts";
import { DemoCluster, skipWithoutDqlite } from "./_dqlite_nodes.ts";

const ignore = skipWithoutDqlite("dqlite_wide_names_test.ts");

/** 100 column names of 40 characters: 4,800 bytes of names on dqlite's wire. */
const COLUMNS = Array.from(
  { length: 100 },
  (_, i) => `column_with_a_rather_long_name_nr_${i}`.padEnd(40, "x"),
);

Deno.test({
  name: "cluster mode: a result whose column names fill dqlite's message fails at once, saying why",
  ignore,
  async fn() {
    const nodes = await DemoCluster.start(1);
    const dir = await Deno.makeTempDir({ prefix: "netsqlite-dqlite-wide-" });
    const server = await serve({
      path: `${dir}/s.sock`,
      dqlite: { nodes: nodes.addresses, database: "wide" },
    });
    const c = await connect({ path: `${dir}/s.sock`, max: 1 });
    try {
      await c.exec(`CREATE TABLE wide (${COLUMNS.join(", ")})`);
      await c.run(`INSERT INTO wide (${COLUMNS[0]}) VALUES (1)`);
      // Half the columns fit: the row comes back.
      const half = COLUMNS.slice(0, 50).join(", ");
      assert.deepEqual(await c.values(`SELECT ${half} FROM wide`), [
        [1, ...Array(49).fill(null)],
      ]);
      const expected = (e: unknown): boolean => {
        assert.equal((e as { code?: string }).code, "BAD_REQUEST", String(e));
        assert.match(
          (e as Error).message,
          /^Cannot return the rows of this query in cluster mode: its 100 column names take 4808 bytes on dqlite's wire, .*select fewer columns, or shorter names \(AS\)/,
        );
        return true;
      };
      const calls: [string, () => Promise<unknown>][] = [
        ["query", () => c.query("SELECT * FROM wide", [], { timeout: 5_000 })],
        ["get", () => c.get("SELECT * FROM wide", [], { timeout: 5_000 })],
        ["run", () => c.run("SELECT * FROM wide", [], { timeout: 5_000 })],
        ["iterate", async () => {
          for await (const _ of c.iterate("SELECT * FROM wide", [], { timeout: 5_000 })) {
            // no row comes
          }
        }],
      ];
      for (const [label, call] of calls) {
        const start = performance.now();
        await assert.rejects(call(), expected, label);
        const ms = performance.now() - start;
        assert.ok(ms < 2_000, `${label} took ${ms.toFixed(0)} ms`);
      }
      // The server and the node serve on.
      assert.deepEqual(await c.values("SELECT count(*) FROM wide"), [[1]]);
      // Inside a transaction, the node cannot be stopped: its connection is closed, which ends
      // the transaction, as for any read still streaming 250 ms after its stop.
      await c.exec("BEGIN");
      await c.run(`INSERT INTO wide (${COLUMNS[0]}) VALUES (2)`);
      await assert.rejects(c.query("SELECT * FROM wide"), expected);
      await assert.rejects(c.values("SELECT count(*) FROM wide"), (e: Error) => {
        assert.equal((e as { code?: string }).code, "TX_ABORTED");
        assert.match(e.message, /the earlier error: BAD_REQUEST: Cannot return the rows/);
        return true;
      });
      await c.exec("ROLLBACK");
      assert.deepEqual(await c.values("SELECT count(*) FROM wide"), [[1]]);
    } finally {
      await c.close();
      await server.shutdown();
      await nodes.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
