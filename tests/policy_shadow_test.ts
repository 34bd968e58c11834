/**
 * The shadow tables a virtual table's module makes (FTS5, FTS4, R*Tree)
 * may not share a name with a table of another schema either (a TEMP one
 * would shadow the database's: writes acknowledged, then lost), however the
 * clash comes about; and a read-only server refuses VACUUM INTO.
 */

import assert from "node:assert/strict";
import { connect } from "../client.ts";
import { serve } from "../server.ts";
import { startServer, tempDir } from "./_helpers.ts";

const shadowed = (name: string) =>
  new RegExp(`^Cannot give a table or view the name "${name}": a TEMP one and another`);

/**
 * Refused as shadowing, or by SQLite itself: node:sqlite's connection runs
 * in SQLite's defensive mode, which reserves a virtual table's shadow names.
 */
function refusedName(name: string) {
  return (err: { code: string; message: string }) => {
    if (err.code === "SQLITE_ERROR") {
      assert.equal(err.message, `object name reserved for internal use: ${name}`);
    } else {
      assert.equal(err.code, "FORBIDDEN");
      assert.match(err.message, shadowed(name));
    }
    return true;
  };
}

async function names(db: { values(sql: string): Promise<unknown[][]> }, schema: string) {
  return (await db.values(`SELECT name FROM ${schema}.sqlite_schema ORDER BY name`)).map((r) =>
    r[0]
  );
}

Deno.test("A TEMP virtual table whose shadow tables would shadow a table of the database is refused, and leaves nothing behind", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await db.exec(
    "CREATE TABLE app_config (x); CREATE TABLE v4_segdir (x); CREATE TABLE r_parent (x)",
  );
  for (
    const [sql, name] of [
      ["CREATE VIRTUAL TABLE temp.app USING fts5(x)", "app_config"],
      ["CREATE VIRTUAL TABLE temp.v4 USING fts4(x)", "v4_segdir"],
      ["CREATE VIRTUAL TABLE temp.r USING rtree(id, a, b)", "r_parent"],
    ]
  ) {
    await assert.rejects(db.exec(sql), { code: "FORBIDDEN", message: shadowed(name) }, sql);
    assert.deepEqual(await names(db, "temp"), [], sql);
  }
  // Inside a transaction too; the transaction goes on.
  await db.exec("BEGIN");
  await assert.rejects(db.exec("CREATE VIRTUAL TABLE temp.app USING fts5(x)"), {
    code: "FORBIDDEN",
  });
  await db.exec("INSERT INTO app_config VALUES (1); COMMIT");
  assert.deepEqual(await names(db, "temp"), []);
  assert.deepEqual(await db.values("SELECT x FROM main.app_config"), [[1]]);
  // Names of its own are fine.
  await db.exec("CREATE VIRTUAL TABLE temp.mine USING fts5(x)");
  await db.exec("DROP TABLE temp.mine");
});

Deno.test("A virtual table of the database whose shadow tables a TEMP table would shadow is refused", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await db.exec("CREATE TEMP TABLE app_data (x); CREATE TEMP TABLE r_node (x)");
  for (
    const [sql, name] of [
      ["CREATE VIRTUAL TABLE app USING fts5(x)", "app_data"],
      ["CREATE VIRTUAL TABLE main.r USING rtree(id, a, b)", "r_node"],
    ]
  ) {
    await assert.rejects(db.exec(sql), { code: "FORBIDDEN", message: shadowed(name) }, sql);
  }
  assert.deepEqual(await names(db, "main"), []);
  // And the other way: a table of the database named like a TEMP shadow table.
  await db.exec("DROP TABLE temp.app_data; CREATE VIRTUAL TABLE temp.t4 USING fts4(x)");
  await assert.rejects(db.exec("CREATE TABLE t4_stat (x)"), refusedName("t4_stat"));
});

Deno.test("Renaming a virtual table is refused when its shadow tables would then shadow, or be shadowed by, another schema's table", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await db.exec("CREATE TABLE app_config (x); CREATE VIRTUAL TABLE temp.w USING fts5(x)");
  await assert.rejects(db.exec("ALTER TABLE temp.w RENAME TO app"), {
    code: "FORBIDDEN",
    message: shadowed("app_config"),
  });
  await db.exec("CREATE VIRTUAL TABLE temp.r USING rtree(id, a, b)");
  await db.exec("CREATE TABLE q_rowid (x)");
  await assert.rejects(db.exec("ALTER TABLE temp.r RENAME TO Q"), {
    code: "FORBIDDEN",
    message: shadowed("Q_rowid"),
  });
  // A virtual table of the database renamed onto a TEMP table's name.
  await db.exec("DROP TABLE temp.w; DROP TABLE temp.r; CREATE TEMP TABLE z_docsize (x)");
  await db.exec("CREATE VIRTUAL TABLE m USING fts5(x)");
  await assert.rejects(db.exec("ALTER TABLE m RENAME TO z"), {
    code: "FORBIDDEN",
    message: shadowed("z_docsize"),
  });
  // A table renamed onto a TEMP shadow table's name.
  await db.exec("CREATE VIRTUAL TABLE temp.s USING fts5(x)");
  await assert.rejects(db.exec("ALTER TABLE app_config RENAME TO s_idx"), refusedName("s_idx"));
  await db.exec("ALTER TABLE m RENAME TO m2");
  assert.deepEqual(
    (await names(db, "main")).filter((n) => String(n).startsWith("m")),
    ["m2", "m2_config", "m2_content", "m2_data", "m2_docsize", "m2_idx"],
  );
  // The database's table takes the writes.
  await db.run("INSERT INTO app_config VALUES (1)");
  assert.deepEqual(await db.values("SELECT x FROM main.app_config"), [[1]]);
});

Deno.test("serve({ readonly, allowAttach }) refuses VACUUM INTO with READONLY, writing no file", async () => {
  await using dir = await tempDir();
  const database = `${dir.path}/a.db`;
  {
    await using _rw = await serve({ database, path: `${dir.path}/rw.sock` });
    await using db = await connect({ path: `${dir.path}/rw.sock` });
    await db.exec("CREATE TABLE t (v); INSERT INTO t VALUES (1)");
  }
  await using _ro = await serve({
    database,
    path: `${dir.path}/ro.sock`,
    readonly: true,
    allowAttach: true,
  });
  await using db = await connect({ path: `${dir.path}/ro.sock` });
  for (
    const sql of [`VACUUM INTO '${dir.path}/copy.db'`, `VACUUM main INTO '${dir.path}/copy.db'`]
  ) {
    await assert.rejects(db.exec(sql), {
      code: "READONLY",
      message: /^Cannot VACUUM INTO: the server runs read-only \(--readonly\)$/,
    });
  }
  await assert.rejects(db.run("VACUUM INTO ?", [`${dir.path}/copy.db`]), { code: "READONLY" });
  await assert.rejects(Deno.lstat(`${dir.path}/copy.db`), Deno.errors.NotFound);
  // TEMP tables are writes too (README says so).
  for (const sql of ["CREATE TEMP TABLE x (y)", "CREATE VIRTUAL TABLE temp.f USING fts5(x)"]) {
    await assert.rejects(db.exec(sql), { code: "READONLY" }, sql);
  }
  assert.deepEqual(await db.values("SELECT v FROM t"), [[1]]);
});
