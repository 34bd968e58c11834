/**
 * Connection-level SQL that reaches past one client: ATTACH, and PRAGMAs set
 * by one client. Every write of every client runs on one shared writer
 * connection, so such settings are shared unless the server isolates or
 * refuses them (issue 12). Each behaviour is pinned in one clearly named test.
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { SqliteError } from "../mod.ts";
import { startServer } from "./_helpers.ts";

// Today's behaviour, pinned so that a change is noticed. Issue 12 refuses ATTACH
// by default (`--allow-attach` to permit): then replace this test with one that
// expects the refusal, and keep this one for a server started with --allow-attach.
Deno.test("ATTACH today (no --allow-attach yet): succeeds on the shared writer, shows in every client's database_list, creates the file, but its tables cannot be used (no such table)", async () => {
  await using srv = await startServer();
  await using a = await srv.client();
  await using b = await srv.client();
  const other = `${srv.dir}/other.db`;
  await a.exec(`ATTACH DATABASE '${other}' AS other`);
  // The file was created by the server on a client's say-so.
  assert.ok((await Deno.stat(other)).isFile);
  // The attachment is on the shared writer connection: b sees it too.
  const names = async (db: typeof a) =>
    (await db.values<[number, string, string]>("PRAGMA database_list")).map((r) => r[1]);
  assert.deepEqual(await names(a), ["main", "other"]);
  assert.deepEqual(await names(b), ["main", "other"]);
  // DDL on it runs (on the writer) ...
  await a.exec("CREATE TABLE other.t (x)");
  // ... but reading or writing its tables fails: the read connections do not
  // have it attached, and statements are routed through them first.
  for (
    const call of [
      () => a.run("INSERT INTO other.t VALUES (1)"),
      () => a.values("SELECT x FROM other.t"),
      () => b.values("SELECT x FROM other.t"),
    ]
  ) {
    await assert.rejects(call(), (err: unknown) => {
      assert.ok(err instanceof SqliteError, String(err));
      assert.equal(err.code, "SQLITE_ERROR");
      assert.match(err.message, /no such table: other\.t/);
      return true;
    });
  }
  await a.exec("DETACH DATABASE other");
  assert.deepEqual(await names(b), ["main"]);
  // The table was created in the attached file.
  const direct = new DatabaseSync(other, { readOnly: true });
  try {
    assert.deepEqual(
      direct.prepare("SELECT name FROM sqlite_schema").all().map((r) => r.name),
      ["t"],
    );
  } finally {
    direct.close();
  }
});

Deno.test({
  name:
    "PRAGMA query_only and foreign_keys set by one client do not change another client's reads and writes",
  // fixed by issue 12: today one client's PRAGMA query_only=1 makes every
  // client's writes (and even `PRAGMA query_only` reads) fail with INTERNAL
  // "attempt to write a readonly database", and PRAGMA foreign_keys changes
  // foreign-key enforcement for everybody (one shared writer connection).
  ignore: true,
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
