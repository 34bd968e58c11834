/**
 * `sqlite_stmt` lists the SQL of every statement of the server's shared
 * connections, literals included: no route may read it, also the statements
 * a virtual table prepares itself while a client's statement runs (an FTS
 * table whose content table is `sqlite_stmt`, or a view of it).
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import type { Client } from "../client.ts";
import { startServer, tempDir } from "./_helpers.ts";

const ffiEngine = (Deno.env.get("NETSQLITE_ENGINE") ?? "ffi") !== "node";

/** What a refusal to read `sqlite_stmt` says. */
const REFUSED = /^Cannot read sqlite_stmt: it shows the SQL of other clients' statements/;

/** A secret only the victim's statements hold, as literals. */
const SECRET = "pw-hunter2-stmt";

/** Runs statements holding {@link SECRET} on the writer and on readers, kept prepared. */
async function victimRuns(victim: Client): Promise<void> {
  await victim.exec("CREATE TABLE IF NOT EXISTS users (name, pw)");
  await victim.run(`INSERT INTO users VALUES ('bob', '${SECRET}-run')`);
  for (let i = 0; i < 3; i++) await victim.query(`SELECT * FROM users WHERE pw = '${SECRET}-q'`);
  const st = await victim.prepare(`SELECT * FROM users WHERE pw = '${SECRET}-prepared'`);
  await st.all();
}

/** Every way `attacker` reads `table`: each must fail, and none may return the secret. */
async function assertUnreadable(attacker: Client, table: string): Promise<void> {
  const sql = `SELECT sql FROM ${table}`;
  const tries: [string, () => Promise<unknown>][] = [
    ["query", () => attacker.query(sql)],
    ["query again", () => attacker.query(sql)],
    ["iterate", async () => {
      const rows = [];
      for await (const row of attacker.iterate(sql)) rows.push(row);
      return rows;
    }],
    ["transaction", () => attacker.transaction((tx) => tx.query(sql))],
  ];
  for (const [how, read] of tries) {
    let rows: unknown;
    try {
      rows = await read();
    } catch (err) {
      if (ffiEngine) {
        // (node:sqlite's SQLite has no sqlite_stmt table: reading fails otherwise.)
        assert.equal((err as { code?: string }).code, "FORBIDDEN", `${how}: ${err}`);
        assert.match((err as Error).message, REFUSED, how);
      }
      assert.doesNotMatch(String(err), new RegExp(SECRET), how);
      continue;
    }
    assert.fail(`${how} of ${table} answered ${JSON.stringify(rows)}`);
  }
}

Deno.test("an FTS table over sqlite_stmt cannot be created: its arguments name sqlite_stmt", async () => {
  await using srv = await startServer();
  await using victim = await srv.client();
  await using attacker = await srv.client();
  await victimRuns(victim);
  for (
    const sql of [
      "CREATE VIRTUAL TABLE peek USING fts4(sql, content='sqlite_stmt')",
      "CREATE VIRTUAL TABLE peek USING fts5(sql, content='sqlite_stmt')",
      'CREATE VIRTUAL TABLE IF NOT EXISTS main.peek USING fts5(sql, content = "SQLITE_STMT")',
      "CREATE VIRTUAL TABLE peek USING fts4(content=[Sqlite_Stmt], sql)",
      "CREATE VIRTUAL TABLE peek USING fts5(sql, content=sqlite_stmt, content_rowid='rowid')",
    ]
  ) {
    await assert.rejects(attacker.exec(sql), { code: "FORBIDDEN", message: REFUSED }, sql);
  }
  assert.deepEqual(
    await attacker.values("SELECT name FROM sqlite_schema WHERE name LIKE 'peek%'"),
    [],
  );
  // Other FTS tables, and the words in strings, stay allowed.
  await attacker.exec("CREATE VIRTUAL TABLE docs USING fts5(body)");
  await attacker.run("INSERT INTO docs VALUES ('about sqlite_stmt')");
  assert.deepEqual(await attacker.values("SELECT body FROM docs WHERE docs MATCH 'about'"), [[
    "about sqlite_stmt",
  ]]);
});

Deno.test("an FTS table reading sqlite_stmt through a view is refused when read, with every way of reading", async () => {
  await using srv = await startServer();
  await using victim = await srv.client();
  await using attacker = await srv.client();
  await victimRuns(victim);
  await attacker.exec("CREATE VIEW stmts AS SELECT rowid, sql FROM sqlite_stmt");
  for (const module of ["fts4", "fts5"]) {
    const table = `peek_${module}`;
    await attacker.exec(
      module === "fts5"
        ? `CREATE VIRTUAL TABLE ${table} USING fts5(sql, content='stmts', content_rowid='rowid')`
        : `CREATE VIRTUAL TABLE ${table} USING fts4(sql, content='stmts')`,
    );
    await assertUnreadable(attacker, table);
  }
  // The victim's own statements still run.
  assert.equal((await victim.query(`SELECT * FROM users WHERE pw = '${SECRET}-q'`)).length, 0);
});

Deno.test("an FTS table over sqlite_stmt made before the server ran is refused when read", async () => {
  await using dir = await tempDir();
  const database = `${dir.path}/old.db`;
  const db = new DatabaseSync(database);
  db.exec(
    "CREATE VIRTUAL TABLE old4 USING fts4(sql, content='sqlite_stmt');" +
      "CREATE VIRTUAL TABLE old5 USING fts5(sql, content='sqlite_stmt', content_rowid='rowid')",
  );
  db.close();
  await using srv = await startServer({ database });
  await using victim = await srv.client();
  await using attacker = await srv.client();
  await victimRuns(victim);
  for (const table of ["old4", "old5"]) await assertUnreadable(attacker, table);
});
