/**
 * Differences found by running one set of statements through better-sqlite3
 * 12.x and through netsqlite's client (real in-process servers, both
 * engines), as a user porting code meets them. better-sqlite3 itself is not
 * needed: what it gives is written down here.
 */

import assert from "node:assert/strict";
import { refused, startServer } from "./_helpers.ts";

const ENGINES = ["ffi", "node"] as const;

for (const engine of ENGINES) {
  // better-sqlite3 binds `?NNN` as a named parameter whose key is the bare
  // number (`stmt.get({ 1: 5 })`), as it binds `{ a }` to `:a`. netsqlite took
  // only "?1" and refused `{ 1: 5 }` saying the statement had no such
  // parameter, though it has one.
  Deno.test(`a bare number key binds ?NNN, as better-sqlite3's { 1: v } does (${engine})`, async () => {
    await using srv = await startServer({ engine });
    await using db = await srv.client();
    assert.deepEqual(await db.get("SELECT ?1 AS a", { 1: 5 }), { a: 5 });
    assert.deepEqual(await db.get("SELECT ?2 AS a, ?1 AS b", { 1: "x", 2: "y" }), {
      a: "y",
      b: "x",
    });
    assert.deepEqual(await db.get("SELECT ?1 AS a, :n AS n, ?1 AS c", { 1: 7, n: 8 }), {
      a: 7,
      n: 8,
      c: 7,
    });
    const stmt = await db.prepare("SELECT ?3 AS v, typeof(?3) AS t");
    assert.deepEqual(await stmt.get({ 3: 2n ** 60n }), { v: 2n ** 60n, t: "integer" });
    assert.deepEqual(await stmt.get({ "?3": 1 }), { v: 1, t: "integer" });
    await stmt.finalize();
    // Both spellings of one parameter are two keys for it, as `a` and `:a` are.
    await refused(
      db.get("SELECT ?1 AS a", { 1: 5, "?1": 6 }),
      "INVALID_PARAM",
      /^Cannot bind parameter "\?1": both "1" and "\?1" name it; give one$/,
    );
    // An index no parameter takes is still no key, bare or not.
    await refused(
      db.get("SELECT ?1 AS a, ?3 AS b", { 1: 1, 2: 2, 3: 3 }),
      "INVALID_PARAM",
      /^Cannot bind parameter "2": the statement has no parameter of that name$/,
    );
    // A name is not a number: `{ 1 }` still binds only what is called 1.
    await refused(
      db.get("SELECT :a AS a", { 1: 5 }),
      "INVALID_PARAM",
      /^Cannot bind parameter "1": the statement has no parameter of that name$/,
    );
  });
}

for (const engine of ENGINES) {
  // better-sqlite3's `stmt.get(null)` binds NULL to the statement's one
  // parameter; here `null` parameters are none, and the refusal said only
  // "0 were given", though the caller passed a value.
  Deno.test(`null as the parameters of a statement that has some says to pass [null] (${engine})`, async () => {
    await using srv = await startServer({ engine });
    await using db = await srv.client();
    const hint =
      /^Missing parameter values: the statement has 1 parameter, 0 were given \(null parameters are none: to bind NULL, pass \[null\]\)$/;
    await refused(db.get("SELECT ? AS a", null), "INVALID_PARAM", hint);
    await refused(db.run("SELECT ? AS a", null), "INVALID_PARAM", hint);
    await refused(db.query("SELECT ? AS a", null), "INVALID_PARAM", hint);
    await refused(db.values("SELECT ? AS a", null), "INVALID_PARAM", hint);
    await refused(
      (async () => {
        for await (const _ of db.iterate("SELECT ? AS a", null)) break;
      })(),
      "INVALID_PARAM",
      hint,
    );
    const stmt = await db.prepare("SELECT ? AS a");
    await refused(stmt.get(null), "INVALID_PARAM", hint);
    await refused(stmt.all(null), "INVALID_PARAM", hint);
    await refused(stmt.run(null), "INVALID_PARAM", hint);
    assert.deepEqual(await stmt.get([null]), { a: null });
    await stmt.finalize();
    // Left out, the message stays as it was; null on a statement without parameters is fine.
    await refused(
      db.get("SELECT ? AS a"),
      "INVALID_PARAM",
      /^Missing parameter values: the statement has 1 parameter, 0 were given$/,
    );
    assert.deepEqual(await db.get("SELECT 1 AS a", null), { a: 1 });
    // So does a statement whose parameters are named.
    await refused(db.get("SELECT :a AS a", null), "INVALID_PARAM", /pass \[null\]\)$/);
  });
}

for (const engine of ENGINES) {
  // What README's "Coming from better-sqlite3" says of run() results, client
  // properties and TEMP tables, as compared with better-sqlite3 12.11.1.
  Deno.test(`run() results, closed and TEMP tables as "Coming from better-sqlite3" says (${engine})`, async () => {
    await using srv = await startServer({ engine });
    await using db = await srv.client();
    await db.exec(`
      CREATE TABLE a(id INTEGER PRIMARY KEY, v);
      CREATE TABLE log(id INTEGER PRIMARY KEY, msg);
      CREATE TRIGGER a_ins AFTER INSERT ON a BEGIN
        INSERT INTO log(msg) VALUES ('one'); INSERT INTO log(msg) VALUES ('two');
      END;
      CREATE VIEW av AS SELECT * FROM a;
      CREATE TRIGGER av_ins INSTEAD OF INSERT ON av BEGIN INSERT INTO a(v) VALUES (NEW.v); END;
      CREATE TABLE parent(id INTEGER PRIMARY KEY);
      CREATE TABLE child(pid REFERENCES parent(id) ON DELETE CASCADE);
      CREATE TABLE w(k TEXT PRIMARY KEY, v) WITHOUT ROWID;
    `);
    // A trigger's and a cascade's rows are not the statement's (as sqlite3_changes()).
    assert.deepEqual(await db.run("INSERT INTO a(id, v) VALUES (7, 'x')"), {
      changes: 1,
      lastInsertRowid: 7,
    });
    await db.exec("INSERT INTO parent VALUES (1); INSERT INTO child VALUES (1), (1), (1)");
    assert.deepEqual(await db.run("DELETE FROM parent"), { changes: 1, lastInsertRowid: 0 });
    // No rowid: 0, where better-sqlite3 gives the connection's last one (7 here).
    assert.deepEqual(await db.run("INSERT INTO w VALUES ('k', 1), ('l', 2)"), {
      changes: 2,
      lastInsertRowid: 0,
    });
    assert.deepEqual(await db.run("INSERT INTO av(v) VALUES ('y')"), {
      changes: 0,
      lastInsertRowid: 0,
    });
    assert.deepEqual(await db.run("CREATE TABLE z(x)"), { changes: 0, lastInsertRowid: 0 });
    // TEMP objects are the server's writer's: another client sees them and cannot make its own.
    await db.run("CREATE TEMP TABLE scratch(x)");
    await db.run("INSERT INTO scratch VALUES (1)");
    {
      await using other = await srv.client();
      assert.deepEqual(await other.query("SELECT x FROM scratch"), [{ x: 1 }]);
      await refused(
        other.run("CREATE TEMP TABLE scratch(y)"),
        "SQLITE_ERROR",
        /table scratch already exists/,
      );
      await refused(
        other.run("CREATE TEMP TRIGGER t AFTER INSERT ON a BEGIN SELECT 1; END"),
        "FORBIDDEN",
        /TEMP trigger/,
      );
    }
    await db.run("DROP TABLE temp.scratch");
    // `closed` is better-sqlite3's `open` inverted; there is no `open`.
    const c = await srv.client();
    assert.equal(c.closed, false);
    assert.equal((c as unknown as { open?: boolean }).open, undefined);
    await c.close();
    assert.equal(c.closed, true);
  });
}
