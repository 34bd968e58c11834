/**
 * Connection-level SQL that reaches past one client: ATTACH, and PRAGMAs set
 * by one client. Every write of every client runs on one shared writer
 * connection, so such settings are shared unless the server isolates or
 * refuses them (issue 12). Each behaviour is pinned in one clearly named test.
 */

import assert from "node:assert/strict";
import { SqliteError } from "../mod.ts";
import { startServer } from "./_helpers.ts";

Deno.test("ATTACH is refused by default with FORBIDDEN, creates no file, and leaves every client's database_list alone", async () => {
  await using srv = await startServer();
  await using a = await srv.client();
  await using b = await srv.client();
  const other = `${srv.dir}/other.db`;
  await assert.rejects(a.exec(`ATTACH DATABASE '${other}' AS other`), (err: unknown) => {
    assert.ok(err instanceof SqliteError, String(err));
    assert.equal(err.code, "FORBIDDEN");
    assert.match(err.message, /--allow-attach/);
    return true;
  });
  await assert.rejects(Deno.stat(other), Deno.errors.NotFound);
  const names = async (db: typeof a) =>
    (await db.values<[number, string, string]>("PRAGMA database_list")).map((r) => r[1]);
  assert.deepEqual(await names(a), ["main"]);
  assert.deepEqual(await names(b), ["main"]);
  // Plain VACUUM (which attaches a nameless temporary database) still works.
  await a.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1); VACUUM");
  assert.deepEqual(await b.values("SELECT x FROM t"), [[1]]);
});

Deno.test({
  name:
    "PRAGMA query_only and foreign_keys set by one client do not change another client's reads and writes",
  // Before issue 12, one client's PRAGMA query_only=1 made every client's
  // writes fail with INTERNAL, and PRAGMA foreign_keys changed enforcement for
  // everybody (one shared writer connection); now both are refused.
  fn: async () => {
    await using srv = await startServer();
    await using a = await srv.client();
    await using b = await srv.client();
    await b.exec(
      "CREATE TABLE p (id INTEGER PRIMARY KEY); CREATE TABLE c (p INTEGER REFERENCES p(id)); " +
        "CREATE TABLE w (x)",
    );
    const [[fkBefore]] = await b.values<[number]>("PRAGMA foreign_keys");
    // a's settings: applied to a alone, or refused with a typed error; either way not INTERNAL.
    for (const pragma of ["PRAGMA query_only = 1", `PRAGMA foreign_keys = ${fkBefore ? 0 : 1}`]) {
      const err = await a.exec(pragma).then(() => null, (e) => e);
      if (err !== null) {
        assert.ok(err instanceof SqliteError, String(err));
        assert.notEqual(err.code, "INTERNAL", err.message);
      }
    }
    // b is unaffected: it writes, and its settings read back unchanged.
    assert.deepEqual(await b.run("INSERT INTO w VALUES (1)"), { changes: 1, lastInsertRowid: 1 });
    assert.deepEqual(await b.values("PRAGMA query_only"), [[0]]);
    assert.deepEqual(await b.values("PRAGMA foreign_keys"), [[fkBefore]]);
    const orphan = b.run("INSERT INTO c VALUES (42)");
    if (fkBefore) await assert.rejects(orphan, { code: "SQLITE_CONSTRAINT_FOREIGNKEY" });
    else assert.equal((await orphan).changes, 1);
    // a's own writes fail with a typed error (query_only), never INTERNAL.
    const own = await a.run("INSERT INTO w VALUES (2)").then(() => null, (e) => e);
    if (own !== null) assert.notEqual(own.code, "INTERNAL", own.message);
  },
});

Deno.test("PRAGMA busy_timeout, the common start-up line, is refused with a message saying the server waits for locks itself; the node engine allows the value it reports (the server's)", async () => {
  await using srv = await startServer({ busyTimeout: 5000 });
  await using db = await srv.client();
  const [[reported]] = await db.values<[number]>("PRAGMA busy_timeout");
  const node = Deno.env.get("NETSQLITE_ENGINE") === "node";
  // The FFI engine waits for locks off its main thread: its connection reports 0.
  assert.equal(reported, node ? 5000 : 0);
  const line = "PRAGMA busy_timeout = 5000";
  if (node) {
    assert.deepEqual(await db.query(line), [{ timeout: 5000 }]);
  } else {
    await assert.rejects(db.query(line), {
      code: "FORBIDDEN",
      message: 'Cannot set PRAGMA busy_timeout to "5000": the server waits for locks itself, ' +
        "for every client, up to its --busy-timeout (the FFI engine off its main thread: its " +
        "connection reports 0): drop the line; setting the value it already has is allowed " +
        "(start the server with --allow-unsafe-pragmas to permit)",
    });
  }
  await assert.rejects(db.query("PRAGMA busy_timeout = 100"), {
    code: "FORBIDDEN",
    message: /^Cannot set PRAGMA busy_timeout to "100": the server waits for locks itself/,
  });
  // Unchanged for everyone.
  assert.deepEqual(await db.values("PRAGMA busy_timeout"), [[reported]]);
});
