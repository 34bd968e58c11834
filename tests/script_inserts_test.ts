/**
 * Scripts (`exec`) of inserts inside a transaction: the engine learns an
 * insert's speed from its shape (`insertShape`), so the inserts after the
 * first of each shape run inline. What they store, where a failing one
 * stops the script, and how a slow one of a known shape is stopped are as
 * for any statement of a script.
 */

import assert from "node:assert/strict";
import { insertShape } from "../engine/_sql_text.ts";
import { startServer } from "./_helpers.ts";

Deno.test("insertShape: one shape for an insert whatever its literals; null for other statements", () => {
  const shape = (sql: string) => insertShape(sql, 0, sql.length);
  const a = shape("INSERT INTO t(a, b) VALUES (1, 'x')");
  assert.equal(a, "insert into t ( a , b ) values ( ? , ? )");
  assert.equal(
    shape("insert  into t(a,b) values (-2.5e3, 'it''s' /* c */)"),
    "insert into t ( a , b ) values ( - ? , ? )",
  );
  assert.equal(shape("INSERT INTO t(a, b) VALUES (2, 'y')"), a);
  assert.equal(shape(";; -- note\n INSERT INTO t(a, b) VALUES (3, 'z');"), a);
  assert.equal(
    shape("INSERT INTO t(a, b) VALUES (x'00ff', NULL)"),
    "insert into t ( a , b ) values ( x ? , null )",
  );
  assert.equal(shape('REPLACE INTO "my t" VALUES (1)'), 'replace into "my t" values ( ? )');
  assert.equal(
    shape("INSERT INTO t VALUES (1) ON CONFLICT DO UPDATE SET a = 2"),
    "insert into t values ( ? ) on conflict do update set a = ?",
  );
  // Different tables, columns or row counts are different shapes.
  assert.notEqual(shape("INSERT INTO u(a, b) VALUES (1, 'x')"), a);
  assert.notEqual(shape("INSERT INTO t(a, b) VALUES (1, 'x'), (2, 'y')"), a);
  // Anything that may read other rows, or is no insert: no shape.
  assert.equal(shape("INSERT INTO t SELECT * FROM u"), null);
  assert.equal(shape("INSERT INTO t VALUES ((SELECT max(a) FROM t))"), null);
  assert.equal(shape("WITH c(x) AS (VALUES (1)) INSERT INTO t SELECT x FROM c"), null);
  assert.equal(shape("INSERT INTO t VALUES (zeroblob(10))"), null);
  assert.equal(shape("INSERT INTO t VALUES (1, lower ('A'))"), null);
  assert.equal(
    shape("INSERT INTO t(a) VALUES (1) ON CONFLICT (a) DO NOTHING"),
    "insert into t ( a ) values ( ? ) on conflict ( a ) do nothing",
  );
  assert.equal(shape("UPDATE t SET a = 1 WHERE b = 'x'"), null);
  assert.equal(shape("DELETE FROM t WHERE a = 1"), null);
  assert.equal(shape(""), null);
  // Only the statement between `from` and `end` counts.
  const two = "INSERT INTO t VALUES (1); SELECT 2";
  assert.equal(insertShape(two, 0, two.indexOf(";") + 1), "insert into t values ( ? )");
  assert.equal(insertShape(two, two.indexOf(";") + 1, two.length), null);
});

Deno.test("a script of inserts in a transaction stores every value exactly, and stops at the one that fails", async () => {
  await using srv = await startServer();
  const db = await srv.client();
  try {
    await db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v ANY, n INTEGER UNIQUE) STRICT");
    const rows: string[] = [];
    for (let i = 1; i <= 300; i++) {
      // Four shapes, each many times, with values of every type.
      const v = [`'s${i}''q'`, `${i}.5`, `x'${i.toString(16).padStart(4, "0")}'`, "NULL"][i % 4];
      rows.push(
        i % 5 === 0
          ? `REPLACE INTO t(id, v, n) VALUES (${i}, ${v}, ${i})`
          : `INSERT INTO t(id, v, n) VALUES (${i}, ${v}, ${i})`,
      );
    }
    await db.transaction((tx) => tx.exec(rows.join(";\n")));
    const got = await db.query<{ id: number; v: unknown; n: number }>(
      "SELECT * FROM t ORDER BY id",
    );
    assert.equal(got.length, 300);
    for (const r of got) {
      const i = r.id;
      const want = [`s${i}'q`, i + 0.5, null, null][i % 4];
      if (i % 4 === 2) {
        assert.deepEqual(r.v, new Uint8Array([i >> 8, i & 0xff]), `row ${i}`);
      } else {
        assert.equal(r.v, want, `row ${i}`);
      }
      assert.equal(r.n, i);
    }
    // The 51st insert of a known shape breaks a constraint: the script stops there.
    const more: string[] = [];
    for (let i = 301; i <= 400; i++) {
      more.push(`INSERT INTO t(id, v, n) VALUES (${i}, 'm', ${i === 351 ? 7 : i})`);
    }
    await db.exec("BEGIN");
    await assert.rejects(db.exec(more.join(";")), (err: Error & { code?: string }) => {
      assert.equal(err.code, "SQLITE_CONSTRAINT_UNIQUE");
      assert.match(err.message, /statement 51 of the script; the 50 before it ran/);
      return true;
    });
    assert.deepEqual(await db.get("SELECT count(*) AS c FROM t WHERE v = 'm'"), { c: 50 });
    await db.exec("COMMIT");
    assert.deepEqual(await db.get("SELECT count(*) AS c, max(id) AS m FROM t"), { c: 350, m: 350 });
  } finally {
    await db.close();
  }
});

// (node:sqlite cannot stop a write that is not recursive: README, Limits.)
const NODE = Deno.env.get("NETSQLITE_ENGINE") === "node";

Deno.test({
  name:
    "an insert of a known-fast shape that turns slow still stops at its deadline and ends the transaction",
  ignore: NODE,
}, async () => {
  await using srv = await startServer({ statementTimeout: 200 });
  const db = await srv.client();
  try {
    await db.exec(
      "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); CREATE TABLE big(x); CREATE TABLE sink(c)",
    );
    await db.transaction((tx) =>
      tx.exec(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 4000) " +
          "INSERT INTO big SELECT x FROM c",
      )
    );
    // Slow only for v = 'slow': the same shape as the fast inserts before it.
    await db.exec(
      "CREATE TRIGGER slow AFTER INSERT ON t WHEN new.v = 'slow' " +
        "BEGIN INSERT INTO sink SELECT count(*) FROM big a, big b WHERE (a.x * b.x) % 7 = 3; END",
    );
    const script = [];
    for (let i = 1; i <= 100; i++) script.push(`INSERT INTO t(v) VALUES ('fast${i}')`);
    script.push("INSERT INTO t(v) VALUES ('slow')");
    script.push("INSERT INTO t(v) VALUES ('after')");
    await db.exec("BEGIN");
    await assert.rejects(db.exec(script.join(";")), (err: Error & { code?: string }) => {
      assert.equal(err.code, "STATEMENT_TIMEOUT", err.message);
      assert.match(err.message, /statement 101 of the script/);
      return true;
    });
    // The transaction ended with the slow insert: its earlier inserts are gone.
    await assert.rejects(db.get("SELECT 1 AS one"), { code: "TX_ABORTED" });
    await db.exec("ROLLBACK");
    assert.deepEqual(
      await db.get("SELECT count(*) AS t, (SELECT count(*) FROM sink) AS s FROM t"),
      { t: 0, s: 0 },
    );
    // The connection and the server go on.
    await db.transaction((tx) =>
      tx.exec("INSERT INTO t(v) VALUES ('x'); INSERT INTO t(v) VALUES ('y')")
    );
    assert.deepEqual(await db.query("SELECT v FROM t ORDER BY id"), [{ v: "x" }, { v: "y" }]);
  } finally {
    await db.close();
  }
});
