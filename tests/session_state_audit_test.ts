/**
 * State that a client would have to itself on its own SQLite connection, as
 * seen through the server's shared connections: values SQL reads back must
 * be what SQLite gives a single-connection user, and one client's statements
 * must not change another's.
 */

import assert from "node:assert/strict";
import type { Client } from "../mod.ts";
import { startServer } from "./_helpers.ts";

async function dataVersion(db: Client, sql = "PRAGMA data_version"): Promise<number> {
  const [[v]] = await db.values<[number]>(sql);
  return v;
}

Deno.test("PRAGMA data_version read by one client changes when another client commits: in autocommit, inside a transaction and while TEMP tables exist", async () => {
  // Every client's commits are the shared writer's own, so the writer's
  // data_version never changed for them: a client polling it to learn of
  // other clients' changes saw none.
  await using srv = await startServer();
  await using a = await srv.client();
  await using b = await srv.client();
  await b.exec("CREATE TABLE t (x)");
  const v0 = await dataVersion(a);
  assert.equal(await dataVersion(a), v0, "nothing committed: unchanged");
  await b.run("INSERT INTO t VALUES (1)");
  const v1 = await dataVersion(a);
  assert.notEqual(v1, v0, "another client committed");
  // The table-valued form, outside a transaction.
  await b.run("INSERT INTO t VALUES (2)");
  const v2 = await dataVersion(a, "SELECT data_version FROM pragma_data_version");
  assert.notEqual(v2, v1);
  // Inside a's transaction: unchanged while nobody else can commit, and the
  // commits that came before it are seen.
  await b.run("INSERT INTO t VALUES (3)");
  await a.exec("BEGIN");
  const inTx = await dataVersion(a, "pragma main.DATA_VERSION;");
  assert.notEqual(inTx, v2, "b's commit before a's BEGIN");
  await a.run("INSERT INTO t VALUES (4)");
  assert.equal(await dataVersion(a), inTx, "a's own write: unchanged");
  await a.exec("COMMIT");
  // While a TEMP table exists every statement runs on the writer, this one not.
  await a.exec("CREATE TEMP TABLE scratch (y)");
  const t0 = await dataVersion(a);
  await b.run("INSERT INTO t VALUES (5)");
  assert.notEqual(await dataVersion(a), t0, "b committed while a TEMP table exists");
  await a.exec("DROP TABLE temp.scratch");
});

Deno.test("PRAGMA data_version changes when another program commits to the file directly", async () => {
  await using srv = await startServer();
  await using a = await srv.client();
  await a.exec("CREATE TABLE t (x)");
  const v0 = await dataVersion(a);
  // (In a process of its own: two SQLite libraries in one process drop each other's file locks.)
  const code = 'const { DatabaseSync } = await import("node:sqlite"); ' +
    "const db = new DatabaseSync(Deno.args[0]); " +
    'db.exec("PRAGMA busy_timeout = 5000; INSERT INTO t VALUES (1)"); db.close();';
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code, srv.database],
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  assert.notEqual(await dataVersion(a), v0);
  assert.deepEqual(await a.values("SELECT x FROM t"), [[1]]);
});

Deno.test("PRAGMA data_version through prepare(), iterate() and pipelined behind the client's own grouped write reads the same counter", async () => {
  await using srv = await startServer();
  await using a = await srv.client();
  await using b = await srv.client();
  await a.exec("CREATE TABLE g (v)");
  const stmt = await a.prepare("PRAGMA data_version");
  const iterated = async () => {
    const rows: unknown[] = [];
    for await (const row of a.iterate<{ data_version: number }>("PRAGMA data_version")) {
      rows.push(row.data_version);
    }
    return rows;
  };
  const v0 = await dataVersion(a);
  assert.deepEqual(await stmt.values(), [[v0]]);
  assert.deepEqual(await iterated(), [v0]);
  await b.run("INSERT INTO g VALUES (1)");
  const [[v1]] = await stmt.values<[number]>();
  assert.notEqual(v1, v0);
  assert.deepEqual(await iterated(), [v1]);
  // Inside a transaction too (a cursor there would otherwise read the writer's).
  await a.exec("BEGIN");
  assert.deepEqual(await iterated(), [v1]);
  assert.deepEqual(await stmt.values(), [[v1]]);
  await a.exec("ROLLBACK");
  // Pipelined behind a's own write, grouped with b's: answered, then changed once committed.
  const [, , [[during]]] = await Promise.all([
    b.run("INSERT INTO g VALUES (2)"),
    a.run("INSERT INTO g VALUES (3)"),
    a.values<[number]>("PRAGMA data_version"),
    b.run("INSERT INTO g VALUES (4)"),
  ]);
  assert.equal(typeof during, "number");
  assert.notEqual(await dataVersion(a), v1);
  assert.deepEqual(await a.values("SELECT count(*) FROM g"), [[4]]);
  await stmt.finalize();
});

Deno.test("PRAGMA data_version read inside a transaction keeps its idle lease like any other statement of it", async () => {
  await using srv = await startServer({ txIdleTimeout: 500 });
  await using a = await srv.client();
  await a.exec("CREATE TABLE l (x)");
  await a.exec("BEGIN");
  const until = performance.now() + 1500;
  while (performance.now() < until) {
    await dataVersion(a);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  assert.deepEqual(await a.run("INSERT INTO l VALUES (1)"), { changes: 1, lastInsertRowid: 1 });
  await a.exec("COMMIT");
  assert.deepEqual(await a.values("SELECT x FROM l"), [[1]]);
});
