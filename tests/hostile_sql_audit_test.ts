/**
 * What one client can do through SQL alone to the server's host, to the
 * database the other clients share, or to their sessions: the hostile-SQL
 * audit of 2026-12-06. Every test runs on the engine the environment picks
 * (`NETSQLITE_ENGINE`), and must pass on both.
 */

import assert from "node:assert/strict";
import { Connection } from "../engine/connection.ts";
import { loadSqlite } from "../engine/binding/load.ts";
import { serverStats, startServer } from "./_helpers.ts";

const ffi = Deno.env.get("NETSQLITE_ENGINE") !== "node";

Deno.test("A client cannot corrupt a virtual table by writing its shadow tables (SQLite's defensive mode, on both engines)", async () => {
  await using srv = await startServer();
  await using a = await srv.client();
  await using b = await srv.client();
  await a.exec(
    "CREATE VIRTUAL TABLE f5 USING fts5(x); INSERT INTO f5 VALUES ('hello world');" +
      "CREATE VIRTUAL TABLE f4 USING fts4(x); INSERT INTO f4 VALUES ('hello world');" +
      "CREATE VIRTUAL TABLE r USING rtree(id, x0, x1); INSERT INTO r VALUES (1, 0, 1)",
  );
  for (
    const [sql, table] of [
      ["UPDATE f5_data SET block = randomblob(200)", "f5_data"],
      ["DELETE FROM f5_idx", "f5_idx"],
      ["INSERT INTO f5_config VALUES ('version', 99)", "f5_config"],
      ["UPDATE f4_segments SET block = randomblob(200)", "f4_segments"],
      ["UPDATE f4_segdir SET root = randomblob(50)", "f4_segdir"],
      ["UPDATE r_node SET data = randomblob(100)", "r_node"],
    ]
  ) {
    await assert.rejects(a.exec(sql), {
      code: "SQLITE_ERROR",
      message: `table ${table} may not be modified`,
    }, sql);
  }
  // The other client's searches still find what was written.
  assert.deepEqual(await b.values("SELECT x FROM f5 WHERE f5 MATCH 'hello'"), [["hello world"]]);
  assert.deepEqual(await b.values("SELECT x FROM f4 WHERE f4 MATCH 'hello'"), [["hello world"]]);
  assert.deepEqual(await b.values("SELECT id FROM r WHERE x0 >= 0"), [[1]]);
  // Reading the shadow tables, and writing through the virtual tables, work.
  assert.equal((await b.values("SELECT count(*) FROM f5_data"))[0][0] as number > 0, true);
  await b.exec("INSERT INTO f5 VALUES ('hello again')");
  assert.deepEqual(await a.values("SELECT count(*) FROM f5 WHERE f5 MATCH 'hello'"), [[2]]);
});

Deno.test("With --allow-unsafe-pragmas too, no client's SQL turns the journal off or rewrites the schema table (both engines alike)", async () => {
  await using srv = await startServer({ allowUnsafePragmas: true });
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (a)");
  assert.deepEqual(await db.values("PRAGMA journal_mode = OFF"), [["wal"]]);
  assert.deepEqual(await db.values("PRAGMA journal_mode"), [["wal"]]);
  await db.exec("PRAGMA writable_schema = ON");
  await assert.rejects(db.exec("UPDATE sqlite_master SET sql = 'CREATE TABLE t (b)'"), {
    code: "SQLITE_ERROR",
    message: "table sqlite_master may not be modified",
  });
  await db.exec("PRAGMA writable_schema = OFF");
  assert.deepEqual(await db.values("SELECT sql FROM sqlite_master"), [["CREATE TABLE t (a)"]]);
});

Deno.test("A connection's statement cache counts the parameter slots a statement names against its bound", () => {
  // SQLite gives a statement one 56-byte slot per parameter up to the highest number it
  // names: `SELECT ?30000 + 1` is 17 characters and 1.7 MB. Before, each connection's
  // cache kept 256 such statements (about 450 MB; Debian's library takes ?250000: 3.4 GB
  // from one client in 30 s, server RSS measured), whether or not they ran.
  const dir = Deno.makeTempDirSync({ prefix: "netsqlite-hostile-" });
  const sqlite = loadSqlite({ engine: ffi ? "ffi" : "node" });
  const conn = new Connection(sqlite, `${dir}/c.db`, {
    readOnly: false,
    timeout: 1000,
    cacheSize: 256,
    cacheText: 200_000,
  });
  try {
    // 3,000 slots count 96,000 code units: two such statements fit.
    for (let i = 0; i < 300; i++) conn.prepare(`SELECT ?3000 + ${i}`);
    const { statements, text } = conn.cached;
    assert.equal(statements, 2);
    assert.ok(text <= 200_000, `${text}`);
    // Statements without parameters still fill the cache by count.
    for (let i = 0; i < 300; i++) conn.prepare(`SELECT ${i}`);
    assert.equal(conn.cached.statements, 256);
  } finally {
    conn.close();
    sqlite.close();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test({
  // node:sqlite frees a statement only when V8 collects it, which it may put off: there
  // the process holds what the cache let go until a garbage collection (measured with
  // 2,000 such statements: RSS about 550 MB, steady, against 2.5 GB and growing before).
  name: "Short statements naming a high parameter number do not grow the server by gigabytes",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    const before = Deno.memoryUsage().rss;
    for (let i = 0; i < 300; i++) {
      // They fail for their missing values, and were cached all the same.
      await assert.rejects(db.query(`SELECT ?30000 + ${i}`), { code: "INVALID_PARAM" });
    }
    const grown = (Deno.memoryUsage().rss - before) / 2 ** 20;
    assert.ok(grown < 150, `the server's process grew by ${grown.toFixed(0)} MiB`);
    const values = Array.from({ length: 30000 }, (_, i) => i);
    assert.deepEqual(await db.values("SELECT ?30000 + 1", values), [[30000]]);
  },
});

Deno.test("TEMP tables with long names cannot make the stats report too large to send", async () => {
  // Any client names TEMP objects, and they outlive it: before, 70 TEMP tables with names of a
  // million characters made `netsqlite stats` fail with RESULT_TOO_LARGE (64 MiB frames).
  await using srv = await startServer({ maxFrameSize: 1024 * 1024 });
  await using db = await srv.client();
  for (let i = 0; i < 3; i++) {
    await db.exec(`CREATE TEMP TABLE "t${i}${"x".repeat(400_000)}" (a)`);
  }
  const report = await serverStats(srv.connectOptions);
  assert.equal(report.writer.temp.length, 3);
  assert.equal(report.writer.tempCount, 3);
  for (const [i, entry] of report.writer.temp.entries()) {
    assert.ok(entry.startsWith(`table t${i}xxx`), entry.slice(0, 20));
    assert.ok(entry.length <= 300, `${entry.length} characters`);
    assert.ok(entry.endsWith("…"), entry.slice(-5));
  }
});
