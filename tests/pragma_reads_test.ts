/**
 * Reading PRAGMAs run where reads run: a PRAGMA whose answer is the
 * database's (schema introspection, `user_version`, `page_count`, ...) is
 * answered by a read connection, plainly or table-valued, while another
 * client holds the writer; a PRAGMA that sets, or reads a setting of the
 * writer's own connection, goes to the writer as before. And statements on
 * an ATTACHed database (which the read connections lack) run on the writer
 * outside transactions too. Every test runs on both engines.
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { type Client, SqliteError } from "../mod.ts";
import { startServer } from "./_helpers.ts";

const ENGINES = ["ffi", "node"] as const;

/** Asserts that `promise` fails with `BUSY_TIMEOUT` and a message matching `message`. */
async function busy(promise: Promise<unknown>, message: RegExp): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof SqliteError, String(err));
    assert.equal(err.code, "BUSY_TIMEOUT", err.message);
    assert.match(err.message, message);
    return true;
  });
}

/** Runs `fn` while `holder` holds the writer in an open transaction (with an uncommitted write). */
async function whileHeld(holder: Client, fn: () => Promise<void>): Promise<void> {
  await holder.exec("BEGIN IMMEDIATE");
  try {
    await holder.run("PRAGMA user_version = 8");
    await holder.run("INSERT INTO t VALUES (2, 'uncommitted')");
    await fn();
  } finally {
    await holder.exec("ROLLBACK");
  }
}

for (const engine of ENGINES) {
  Deno.test(`PRAGMA reads of the database are answered at once while another client holds a transaction (${engine})`, async () => {
    await using srv = await startServer({ engine, busyTimeout: 300 });
    await using a = await srv.client();
    await using b = await srv.client();
    await a.exec(
      "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL); CREATE INDEX t_name ON t (name); " +
        "INSERT INTO t VALUES (1, 'one'); PRAGMA user_version = 7; PRAGMA application_id = 42",
    );
    const [[schemaVersion]] = await a.values<[number]>("PRAGMA schema_version");
    const [[pageCount]] = await a.values<[number]>("PRAGMA page_count");
    const [[pageSize]] = await a.values<[number]>("PRAGMA page_size");
    const tableInfo = [
      [0, "id", "INTEGER", 0, null, 1],
      [1, "name", "TEXT", 1, null, 0],
    ];
    await whileHeld(b, async () => {
      const started = performance.now();
      // The committed state: b's uncommitted user_version 8 is not seen.
      assert.deepEqual(await a.values("PRAGMA user_version"), [[7]]);
      assert.deepEqual(await a.values("PRAGMA main.user_version"), [[7]]);
      assert.deepEqual(await a.values("PRAGMA application_id"), [[42]]);
      assert.deepEqual(await a.values("PRAGMA schema_version"), [[schemaVersion]]);
      assert.deepEqual(await a.values("PRAGMA page_count"), [[pageCount]]);
      assert.deepEqual(await a.values("PRAGMA page_size"), [[pageSize]]);
      assert.deepEqual(await a.values("PRAGMA freelist_count"), [[0]]);
      assert.deepEqual(await a.values("PRAGMA encoding"), [["UTF-8"]]);
      assert.deepEqual(await a.values("PRAGMA journal_mode"), [["wal"]]);
      assert.deepEqual(await a.values("PRAGMA auto_vacuum"), [[0]]);
      assert.deepEqual(await a.values("PRAGMA table_info(t)"), tableInfo);
      assert.deepEqual(await a.values("PRAGMA index_list(t)"), [[0, "t_name", 0, "c", 0]]);
      assert.deepEqual(await a.values("PRAGMA index_info(t_name)"), [[0, 1, "name"]]);
      assert.deepEqual(await a.values("PRAGMA foreign_key_list(t)"), []);
      assert.deepEqual(await a.values("PRAGMA integrity_check"), [["ok"]]);
      assert.deepEqual(await a.values("PRAGMA quick_check"), [["ok"]]);
      // (SQLite lists "temp" once the connection opened its temp database.)
      assert.deepEqual(
        (await a.values<[number, string, string]>("PRAGMA database_list"))
          .map((r) => [r[1], r[2]]).filter((r) => r[0] !== "temp"),
        [["main", srv.database]],
      );
      // Table-valued: the same list, the same answers.
      assert.deepEqual(await a.values("SELECT * FROM pragma_user_version"), [[7]]);
      assert.deepEqual(await a.values("SELECT * FROM pragma_table_info('t')"), tableInfo);
      assert.deepEqual(
        await a.values("SELECT name, type FROM pragma_table_xinfo('t') ORDER BY cid"),
        [["id", "INTEGER"], ["name", "TEXT"]],
      );
      assert.deepEqual(
        await a.values(
          "SELECT m.name, p.name FROM sqlite_schema AS m JOIN pragma_index_list(m.name) AS p " +
            "WHERE m.type = 'table'",
        ),
        [["t", "t_name"]],
      );
      assert.deepEqual(await a.values("SELECT count(*) FROM t"), [[1]]);
      // None of them waited for b's transaction (busy timeout 300 ms each).
      assert.ok(performance.now() - started < 300, `took ${performance.now() - started} ms`);
    });
  });

  Deno.test(`PRAGMA set, and reads of the writer connection's settings, wait for the writer as before (${engine})`, async () => {
    await using srv = await startServer({ engine, busyTimeout: 150 });
    await using a = await srv.client();
    await using b = await srv.client();
    await a.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)");
    await whileHeld(b, async () => {
      await busy(a.run("PRAGMA user_version = 9"), /^Write waited 150 ms for the writer/);
      // Reads, but of the writer's own connection: not called writes.
      for (const sql of ["PRAGMA foreign_keys", "SELECT * FROM pragma_foreign_keys"]) {
        await busy(
          a.values(sql),
          /^Statement waited 150 ms for the writer \(it reads a setting or state of the writer connection, which only the writer answers\), held by session \d+: /,
        );
      }
      // (Not data_version: every client's commits are the writer's own, so the shared reader
      // answers it, at once: tests/session_state_audit_test.ts.)
      assert.equal((await a.values("PRAGMA data_version")).length, 1);
      await busy(a.values("SELECT last_insert_rowid()"), /^Statement waited 150 ms/);
    });
    // The writer's settings, once free: foreign keys are on (the server turns them on).
    assert.deepEqual(await a.values("PRAGMA foreign_keys"), [[1]]);
    assert.deepEqual(await a.values("SELECT * FROM pragma_foreign_keys"), [[1]]);
    assert.deepEqual(await a.run("PRAGMA user_version = 9"), { changes: 0, lastInsertRowid: 0 });
    assert.deepEqual(await b.values("PRAGMA user_version"), [[9]]);
  });

  Deno.test(`ATTACH: autocommit writes, prepare() and reads of the attached database work outside a transaction (${engine})`, async () => {
    await using srv = await startServer({ engine, allowAttach: true, busyTimeout: 150 });
    const a = await srv.client();
    await using b = await srv.client();
    await using c = await srv.client();
    await a.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)");
    await a.exec(`ATTACH '${srv.dir}/aux.db' AS aux; CREATE TABLE aux.x (v INTEGER)`);
    assert.deepEqual(await a.run("INSERT INTO aux.x VALUES (1)"), {
      changes: 1,
      lastInsertRowid: 1,
    });
    const insert = await a.prepare("INSERT INTO aux.x VALUES (?)");
    assert.deepEqual(await insert.run([2]), { changes: 1, lastInsertRowid: 2 });
    const select = await a.prepare("SELECT v FROM aux.x ORDER BY v");
    assert.deepEqual(await select.values(), [[1], [2]]);
    assert.deepEqual(await a.values("SELECT v FROM x ORDER BY v"), [[1], [2]]);
    // Unqualified, the table is found in aux, by PRAGMAs too.
    assert.deepEqual(await a.values("SELECT name FROM pragma_table_info('x')"), [["v"]]);
    assert.deepEqual(await a.values("PRAGMA aux.user_version"), [[0]]);
    // Server-wide: other clients see it, and it outlives the client that attached it.
    await a.close();
    const names = async (db: Client) =>
      (await db.values<[number, string, string]>("PRAGMA database_list"))
        .map((r) => r[1]).filter((name) => name !== "temp");
    assert.deepEqual(await names(b), ["main", "aux"]);
    assert.deepEqual(await b.values("SELECT v FROM aux.x ORDER BY v"), [[1], [2]]);
    // Reads of main still do not wait for another client's transaction;
    // what needs the attached database (and PRAGMA reads) goes to the writer.
    await c.exec("BEGIN IMMEDIATE");
    assert.deepEqual(await b.values("SELECT count(*) FROM t"), [[0]]);
    await busy(
      b.values("SELECT v FROM aux.x"),
      /^Statement waited 150 ms for the writer \(it uses a database attached to the writer, which the read connections lack; DETACH it when done\)/,
    );
    await busy(b.values("PRAGMA table_info(t)"), /^Statement waited 150 ms .*attached/);
    await c.exec("ROLLBACK");
    await b.exec("DETACH aux");
    assert.deepEqual(await names(b), ["main"]);
    await assert.rejects(b.values("SELECT v FROM aux.x"), /no such table: aux\.x/);
    // Detached: PRAGMA reads are the readers' again.
    await c.exec("BEGIN IMMEDIATE");
    assert.deepEqual(await b.values("SELECT name FROM pragma_table_info('t')"), [["id"], ["name"]]);
    await c.exec("ROLLBACK");
    const aux = new DatabaseSync(`${srv.dir}/aux.db`);
    assert.deepEqual(aux.prepare("SELECT v FROM x ORDER BY v").all().map((r) => r.v), [1, 2]);
    aux.close();
  });

  Deno.test(`serve({ readonly }) answers table-valued PRAGMAs and json_each (${engine})`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "netsqlite-test-" });
    try {
      const file = new DatabaseSync(`${dir}/ro.db`);
      file.exec("PRAGMA journal_mode = WAL; CREATE TABLE t (a INTEGER); PRAGMA user_version = 3");
      file.close();
      await using srv = await startServer({ engine, database: `${dir}/ro.db`, readonly: true });
      await using db = await srv.client();
      // (SQLite 3.40 reports declaring a virtual table as an update of the schema table.)
      assert.deepEqual(await db.values("SELECT name FROM pragma_table_info('t')"), [["a"]]);
      assert.deepEqual(await db.values("SELECT * FROM pragma_user_version"), [[3]]);
      assert.deepEqual(await db.values("SELECT value FROM json_each('[5,6]')"), [[5], [6]]);
      await db.exec("BEGIN");
      assert.deepEqual(await db.values("SELECT value FROM json_each('[7]')"), [[7]]);
      await db.exec("COMMIT");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}
