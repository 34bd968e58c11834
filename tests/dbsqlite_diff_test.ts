/**
 * What a port from Deno's `@db/sqlite` (denodrivers/sqlite3, 0.13) meets,
 * against real in-process servers on both engines: the spellings README's
 * "Coming from @db/sqlite" maps, and the differences it documents.
 * `@db/sqlite` itself is not needed (JSR is not reachable here): what it
 * gives is written down beside each check.
 */

import assert from "node:assert/strict";
import { SqliteError } from "../mod.ts";
import { refused, startServer } from "./_helpers.ts";

const ENGINES = ["ffi", "node"] as const;

const EXEC_NO_PARAMS = "exec() takes no parameters: use run() or query() for a statement with " +
  "parameters";
const EXEC_PARAMS =
  `${EXEC_NO_PARAMS} (exec()'s second argument is its options: { timeout, signal })`;

for (const engine of ENGINES) {
  // `@db/sqlite`'s `db.exec(sql, ...params)` binds values spread after the
  // SQL: `db.exec("INSERT ... VALUES (?)", id)`. Here exec() takes no
  // parameters, and an array or an object in their place was refused saying
  // so, but a lone value was refused only as "expected { signal }, got 1"
  // and two or more as "takes at most 2 arguments", neither naming the
  // parameters the caller meant nor run().
  Deno.test(`exec() given spread parameters says it takes none (${engine})`, async () => {
    await using srv = await startServer({ engine });
    await using db = await srv.client();
    await db.exec("CREATE TABLE t (id INTEGER, name TEXT)");
    // deno-lint-ignore no-explicit-any
    const any = db as any;
    const sql = "INSERT INTO t VALUES (?, ?)";
    for (const value of [1, "ada", 1n, true]) {
      await assert.rejects(any.exec("INSERT INTO t (id) VALUES (?)", value), {
        name: "TypeError",
        message: `Invalid exec() options: expected { timeout, signal }, got ${
          typeof value === "bigint" ? "1n" : JSON.stringify(value)
        } (${EXEC_NO_PARAMS})`,
      });
    }
    await assert.rejects(any.exec(sql, 1, "ada"), {
      name: "TypeError",
      message: "Invalid exec() call: it takes at most 2 arguments (sql, options), got 3: " +
        `${EXEC_NO_PARAMS}, given in one array (positional) or plain object (named)`,
    });
    // What the message points to does it, and nothing was written before.
    assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]]);
    assert.deepEqual(await db.run(sql, [1, "ada"]), { changes: 1, lastInsertRowid: 1 });
  });

  // The spellings README maps, each checked to exist and do what it says.
  Deno.test(`README's @db/sqlite spellings work as documented (${engine})`, async () => {
    await using srv = await startServer({ engine });
    await using db = await srv.client();
    await db.exec(`
      CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE);
      INSERT INTO t (name) VALUES ('ada'), ('bob');
    `);
    // run() gives an object (`@db/sqlite`: the change count as a number).
    assert.deepEqual(await db.run("INSERT INTO t (name) VALUES (?)", ["cy"]), {
      changes: 1,
      lastInsertRowid: 3,
    });
    // deno-lint-ignore no-explicit-any
    const any = db as any;
    for (const name of ["changes", "totalChanges", "lastInsertRowId", "autocommit", "sql"]) {
      assert.equal(any[name], undefined, name);
    }
    await using stmt = await db.prepare("SELECT id, name FROM t ORDER BY id");
    assert.deepEqual(stmt.columns, ["id", "name"]); // `columnNames()`
    assert.deepEqual((await stmt.values())[0], [1, "ada"]); // `value()`
    assert.deepEqual(await stmt.raw().get(), [1, "ada"]);
    assert.deepEqual(await stmt.get(), [1, "ada"], "raw() stays on");
    assert.deepEqual(await stmt.raw(false).get(), { id: 1, name: "ada" });
    const rows = [];
    for await (const row of stmt.iterate()) rows.push(row); // `iter()`, `for (... of stmt)`
    assert.equal(rows.length, 3);
    // deno-lint-ignore no-explicit-any
    const s = stmt as any;
    for (const name of ["value", "iter", "bind", "bindParameterCount", "expandedSql"]) {
      assert.equal(s[name], undefined, name);
    }
    assert.equal(s[Symbol.iterator], undefined);
    assert.equal(s[Symbol.dispose], undefined);
    assert.equal(typeof s[Symbol.asyncDispose], "function");
    await stmt.finalize();
    assert.equal(await stmt.finalize(), undefined, "finalize() twice sends nothing");
    // exec() takes no parameters and gives nothing back.
    assert.equal(await db.exec("DELETE FROM t WHERE id = 3"), undefined);
    await assert.rejects(any.exec("SELECT ?", [1]), { name: "TypeError", message: EXEC_PARAMS });
    // Parameters in one argument; an unknown option or an argument more is a TypeError.
    await refused(any.run("SELECT ?, ?", 1, "a"), "INVALID_PARAM", /got a number/);
    await assert.rejects(any.run("SELECT ?", [1], { x: 1 }), TypeError);
    await assert.rejects(any.run("SELECT ?", [1], {}, 1), TypeError);
    // transaction(fn) runs fn at once.
    assert.equal(await db.transaction(() => Promise.resolve(7)), 7);
    // With max: 1, a db.transaction() inside fn nests in a savepoint, as a
    // transaction function called inside another does in `@db/sqlite`.
    await db.transaction(async (tx) => {
      await tx.run("INSERT INTO t (name) VALUES ('in')");
      await assert.rejects(
        db.transaction(async (inner) => {
          await inner.run("INSERT INTO t (name) VALUES ('undone')");
          throw new Error("inner");
        }),
        /inner/,
      );
      assert.ok(tx.inTransaction && db.inTransaction);
    });
    assert.deepEqual(await db.values("SELECT name FROM t WHERE id > 2 ORDER BY id"), [["in"]]);
  });

  // The value differences README lists (`@db/sqlite`'s side in comments).
  Deno.test(`values differ from @db/sqlite's as README says (${engine})`, async () => {
    await using srv = await startServer({ engine });
    await using db = await srv.client();
    // Beyond 2^53 − 1 a bigint (`@db/sqlite` with int64: true agrees; without it,
    // 32 bits); -2^53 too, as there.
    assert.deepEqual(
      await db.get(
        "SELECT 9007199254740991 AS a, 9007199254740992 AS b, -9007199254740992 AS c, 2147483648 AS d",
      ),
      { a: 2 ** 53 - 1, b: 2n ** 53n, c: -(2n ** 53n), d: 2 ** 31 },
    );
    // A JSON function's result is its text (`@db/sqlite` parses it).
    assert.deepEqual(await db.get("SELECT json_object('a', 1) AS v"), { v: '{"a":1}' });
    // Safe integers bind as INTEGER (as there); 2 ** 60 and -0 as REAL (`@db/sqlite`:
    // INTEGER 1152921504606846976 and INTEGER 0).
    const typed = "SELECT typeof(?1) AS t, ?1 AS v";
    assert.deepEqual(await db.get(typed, [5]), { t: "integer", v: 5 });
    assert.deepEqual(await db.get(typed, [2 ** 60]), { t: "real", v: 2 ** 60 });
    assert.deepEqual(await db.get(typed, [2n ** 60n]), { t: "integer", v: 2n ** 60n });
    const zero = await db.get<{ t: string; v: number }>(typed, [-0]);
    assert.equal(zero?.t, "real");
    assert.ok(Object.is(zero?.v, -0));
    // Booleans as 1/0 and blobs as Uint8Array, as there (an empty blob too).
    assert.deepEqual(await db.get(typed, [true]), { t: "integer", v: 1 });
    assert.deepEqual(await db.get(typed, [new Uint8Array()]), { t: "blob", v: new Uint8Array() });
    // `@db/sqlite` binds a Date as ISO text, an object as JSON, undefined as NULL.
    for (const value of [new Date(0), { a: 1 }, [1], undefined]) {
      // deno-lint-ignore no-explicit-any
      await refused(
        db.get("SELECT ?1", [value as any]),
        "INVALID_PARAM",
        /^Cannot bind parameter 1/,
      );
    }
    // Missing values are refused (`@db/sqlite` binds NULL for them).
    await refused(db.get("SELECT ?, ?", [1]), "INVALID_PARAM", /^Missing parameter values/);
    await refused(db.get("SELECT :a, :b", { a: 1 }), "INVALID_PARAM", /^Missing value/);
    await refused(db.exec("SELECT ?"), "INVALID_PARAM", /^Missing parameter values/);
    // run() and prepare() take one statement (`@db/sqlite`'s run() without
    // parameters runs a script; with them, and prepare(), only the first statement).
    await refused(db.run("SELECT 1; SELECT 2"), "BAD_REQUEST", /more than one statement/);
    await refused(db.prepare("SELECT 1; SELECT 2"), "BAD_REQUEST", /more than one statement/);
  });

  // `@db/sqlite` throws SQLite's statement errors as a plain `Error` with
  // SQLite's message, and its `SqliteError` (bind errors) has a numeric
  // primary `code`: here every one is a `SqliteError` whose message is
  // SQLite's text, `code` a name and `sqliteCode` the extended number.
  Deno.test(`errors keep SQLite's message, with code as a name (${engine})`, async () => {
    await using srv = await startServer({ engine });
    await using db = await srv.client();
    await db.exec("CREATE TABLE t (name TEXT UNIQUE)");
    await db.run("INSERT INTO t VALUES ('a')");
    await assert.rejects(db.run("INSERT INTO t VALUES ('a')"), (err: unknown) => {
      assert.ok(err instanceof SqliteError && err instanceof Error);
      assert.equal(err.name, "SqliteError");
      assert.equal(err.message, "UNIQUE constraint failed: t.name");
      assert.equal(err.code, "SQLITE_CONSTRAINT_UNIQUE");
      assert.equal(err.sqliteCode, 2067);
      assert.equal(err.sqliteCode! & 0xff, 19);
      return true;
    });
    // netsqlite's own codes carry no SQLite number.
    await assert.rejects(db.run("SELECT ?", []), (err: unknown) => {
      assert.ok(err instanceof SqliteError);
      assert.equal(err.code, "INVALID_PARAM");
      assert.equal(err.sqliteCode, undefined);
      return true;
    });
  });
}
