/**
 * Cluster mode: a read run while another client changes the schema returns
 * column names that match its values. A dqlite 1.11 leader answered such a
 * read with one schema's column names and the other's values (`["a","b"]`
 * with `["x","y"]`, `["x","y","z","c7"]` with `["a","b",null,null]`); the
 * server now reads the schema version around each read outside a
 * transaction and runs it again when it moved. Skipped (with the reason
 * printed) when `dqlite-demo` is not installed.
 */

import assert from "node:assert/strict";
import { connect } from "../client.ts";
import { serve } from "../server.ts";
import { DemoCluster, skipWithoutDqlite } from "./_dqlite_nodes.ts";

const ignore = skipWithoutDqlite("dqlite_schema_test.ts");

/** Each value of the table is its column's name: a row matches its columns when equal. */
const SCHEMAS = [
  "BEGIN; DROP TABLE t; CREATE TABLE t (a TEXT, b TEXT); INSERT INTO t VALUES ('a', 'b'); COMMIT",
  "BEGIN; DROP TABLE t; CREATE TABLE t (x TEXT, y TEXT, z TEXT); " +
  "INSERT INTO t VALUES ('x', 'y', 'z'); COMMIT",
];

Deno.test({
  name:
    "query(), iterate() and a statement's reads match columns to values while the schema changes",
  ignore,
  async fn() {
    await using nodes = await DemoCluster.start(1);
    const dir = await Deno.makeTempDir({ prefix: "netsqlite-dqlite-schema-" });
    const path = `${dir}/s.sock`;
    const server = await serve({ path, dqlite: { nodes: nodes.addresses, database: "schema" } });
    try {
      await using reader = await connect({ path, max: 1 });
      await using writer = await connect({ path, max: 1 });
      await writer.exec("CREATE TABLE t (a TEXT, b TEXT); INSERT INTO t VALUES ('a', 'b')");
      const stmt = await reader.prepare("SELECT * FROM t");
      let stop = false;
      let changes = 0;
      // Drops and recreates t with other columns, or adds a column, in turn, without pause.
      const changing = (async () => {
        for (let i = 0; !stop; i++) {
          await writer.exec(
            i % 3 === 2 ? `ALTER TABLE t ADD COLUMN c${i} TEXT DEFAULT 'c${i}'` : SCHEMAS[i % 3],
          );
          changes++;
        }
      })();
      const bad: string[] = [];
      const check = (how: string, columns: readonly string[], row: readonly unknown[]): void => {
        if (columns.length !== row.length || columns.some((c, i) => row[i] !== c)) {
          bad.push(`${how}: ${JSON.stringify(columns)} ${JSON.stringify(row)}`);
        }
      };
      const objects = (how: string, rows: Record<string, unknown>[]): void => {
        for (const r of rows) check(how, Object.keys(r), Object.values(r));
      };
      let rounds = 0;
      try {
        const start = performance.now();
        while (performance.now() - start < 3000) {
          objects("query()", await reader.query("SELECT * FROM t"));
          objects("get()", [(await reader.get<Record<string, unknown>>("SELECT * FROM t"))!]);
          for (const r of await stmt.values()) check("statement values()", stmt.columns, r);
          objects("statement all()", await stmt.all());
          for await (const r of reader.iterate<Record<string, unknown>>("SELECT * FROM t")) {
            objects("iterate()", [r]);
          }
          rounds++;
        }
      } finally {
        stop = true;
        await changing;
      }
      assert.ok(changes > 10, `the schema changed ${changes} times`);
      assert.ok(rounds > 10, `${rounds} rounds of reads`);
      // Before: some 40% of the reads were mismatched.
      assert.deepEqual(bad.slice(0, 10), [], `${bad.length} mismatched reads of ${rounds * 5}`);
    } finally {
      await server.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
