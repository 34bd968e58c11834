/**
 * The SQLite binding (`engine/binding/`): the same cases against both
 * implementations, FFI (system libsqlite3) and node:sqlite, plus what only
 * the FFI one can do (budgets, background steps, interrupt, update hook).
 */

import assert from "node:assert/strict";
import { SqliteError } from "../protocol/errors.ts";
import type { Db, Sqlite, SqlValue } from "../engine/binding/binding.ts";
import { LOAD_FAILED, loadSqlite } from "../engine/binding/load.ts";
import { decodeMsgpack, MsgpackWriter } from "../protocol/msgpack.ts";
import { inEnv, type SqliteFromEnvironment } from "./_helpers.ts";
import { RowsEncoder } from "../protocol/rows_encoder.ts";
import { parameterNames } from "../engine/binding/_params.ts";
import { openLibc } from "../engine/binding/_libc.ts";

const ENGINES: Sqlite[] = [loadSqlite({ engine: "ffi" }), loadSqlite({ engine: "node" })];

const MAX_SAFE = Number.MAX_SAFE_INTEGER;
const INT64_MAX = 9223372036854775807n;
const INT64_MIN = -9223372036854775808n;

/** Opens a fresh database file in a temp dir; removed afterwards. */
async function withDb(sqlite: Sqlite, fn: (db: Db, dir: string) => void | Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-binding-" });
  const db = sqlite.open(`${dir}/test.db`, { readOnly: false, busyTimeout: 1000 });
  try {
    await fn(db, dir);
  } finally {
    db.close();
    await Deno.remove(dir, { recursive: true });
    // A background step arms a timer probe (engine/binding/_timer_turn.ts)
    // that fires at the next timers phase: let it, inside this test.
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
}

function query(
  db: Db,
  sql: string,
  args: SqlValue[] | Record<string, SqlValue> = [],
): SqlValue[][] {
  const stmt = db.prepare(sql)!;
  try {
    stmt.bind(args);
    return stmt.all();
  } finally {
    stmt.finalize();
  }
}

function encodeValue(v: unknown): Uint8Array {
  const w = new MsgpackWriter(64);
  w.write(v);
  return w.bytes.slice(0, w.pos);
}

function rejects(fn: () => unknown, code: string, sqliteCode?: number, message?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof SqliteError, `expected SqliteError, got ${err}`);
    assert.equal(err.code, code, err.message);
    if (sqliteCode !== undefined) assert.equal(err.sqliteCode, sqliteCode);
    if (message !== undefined) assert.match(err.message, message);
    return true;
  });
}

for (const sqlite of ENGINES) {
  const e = `[${sqlite.engine}]`;

  Deno.test(`Db.prepare(sql, from) walks a script statement by statement, trigger bodies whole ${e}`, () =>
    withDb(sqlite, (db) => {
      const script = "CREATE TABLE t(x); CREATE TABLE u(y); -- a comment; with a semicolon\n" +
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO u VALUES (new.x); " +
        "INSERT INTO u VALUES (';'); END; INSERT INTO t VALUES ('a;b'); ;; SELECT count(*) FROM u";
      const texts: string[] = [];
      let from = 0;
      for (let st = db.prepare(script, from); st !== null; st = db.prepare(script, from)) {
        texts.push(st.sql.trim());
        st.all();
        from = st.end;
        st.finalize();
      }
      // (Each text as SQLite has it: from where the previous one ended.)
      assert.deepEqual(texts.map((t) => t.replace(/^(--[^\n]*\n|;|\s)+/, "").replace(/;$/, "")), [
        "CREATE TABLE t(x)",
        "CREATE TABLE u(y)",
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO u VALUES (new.x); " +
        "INSERT INTO u VALUES (';'); END",
        "INSERT INTO t VALUES ('a;b')",
        "SELECT count(*) FROM u",
      ]);
      assert.deepEqual(query(db, "SELECT y FROM u ORDER BY rowid"), [["a;b"], [";"]]);
      // A NUL anywhere in the script refuses it before its first statement runs.
      rejects(
        () => db.prepare("CREATE TABLE w(z); SELECT '\0'"),
        "BAD_REQUEST",
        undefined,
        /NUL/,
      );
      assert.deepEqual(query(db, "SELECT count(*) FROM sqlite_master WHERE name = 'w'"), [[0]]);
    }));

  Deno.test(`Stmt.bind() and row() round-trip every value type exactly ${e}`, () =>
    withDb(sqlite, (db) => {
      db.exec("CREATE TABLE v(id INTEGER PRIMARY KEY, x)");
      const cases: [SqlValue, string, SqlValue][] = [
        [null, "null", null],
        [0, "integer", 0],
        [-1, "integer", -1],
        // Either side of 32 bits (bound through sqlite3_bind_int / _int64).
        [2 ** 31 - 1, "integer", 2 ** 31 - 1],
        [2 ** 31, "integer", 2 ** 31],
        [-(2 ** 31), "integer", -(2 ** 31)],
        [-(2 ** 31) - 1, "integer", -(2 ** 31) - 1],
        [2 ** 32 + 7, "integer", 2 ** 32 + 7],
        [MAX_SAFE, "integer", MAX_SAFE],
        [-MAX_SAFE, "integer", -MAX_SAFE],
        [2 ** 53, "real", 2 ** 53],
        [9007199254740993n, "integer", 9007199254740993n],
        [-9007199254740993n, "integer", -9007199254740993n],
        [5n, "integer", 5],
        [INT64_MAX, "integer", INT64_MAX],
        [INT64_MIN, "integer", INT64_MIN],
        [1.5, "real", 1.5],
        [-0, "real", -0],
        [Infinity, "real", Infinity],
        [-Infinity, "real", -Infinity],
        [Number.MIN_VALUE, "real", Number.MIN_VALUE],
        [Number.MAX_VALUE, "real", Number.MAX_VALUE],
        ["", "text", ""],
        ["héllo wörld 😀 日本", "text", "héllo wörld 😀 日本"],
        [new Uint8Array(0), "blob", new Uint8Array(0)],
        [new Uint8Array([0, 255, 1, 0]), "blob", new Uint8Array([0, 255, 1, 0])],
      ];
      const insert = db.prepare("INSERT INTO v(id, x) VALUES (?, ?)")!;
      cases.forEach(([value], i) => {
        insert.bind([i, value]);
        insert.run();
      });
      insert.finalize();
      const rows = query(db, "SELECT x, typeof(x) FROM v ORDER BY id");
      assert.equal(rows.length, cases.length);
      cases.forEach(([value, type, back], i) => {
        assert.equal(rows[i][1], type, `typeof ${String(value)}`);
        assert.deepEqual(rows[i][0], back, `value ${String(value)}`);
      });
      // Bound and read directly, without storing.
      const [[a, b, c]] = query(db, "SELECT ?, typeof(?2), ?3", [-0, new Uint8Array(0), "😀"]);
      assert.ok(Object.is(a, -0) || Object.is(a, 0));
      assert.equal(b, "blob");
      assert.equal(c, "😀");
    }));

  Deno.test(`Stmt.row() reads int64 literals exactly ${e}`, () =>
    withDb(sqlite, (db) => {
      const [row] = query(
        db,
        "SELECT 9223372036854775807, -9223372036854775808, 9007199254740991, 9007199254740992, 0.5",
      );
      assert.deepEqual(row, [INT64_MAX, INT64_MIN, MAX_SAFE, 9007199254740992n, 0.5]);
    }));

  Deno.test(`Stmt.bind() binds positional and named values ${e}`, () =>
    withDb(sqlite, (db) => {
      assert.deepEqual(query(db, "SELECT :a, @b, $c", [1, 2, 3]), [[1, 2, 3]]);
      assert.deepEqual(query(db, "SELECT :a, @b, $c", { a: 1, "@b": 2, $c: 3 }), [[1, 2, 3]]);
      assert.deepEqual(query(db, "SELECT :a, @b, $c", { ":a": "x", b: null, $c: null }), [[
        "x",
        null,
        null,
      ]]);
      assert.deepEqual(query(db, "SELECT $a, @a, :a", { a: 5 }), [[5, 5, 5]]);
      assert.deepEqual(query(db, "SELECT ?, :a, ?", [1, 2, 3]), [[1, 2, 3]]);
      assert.deepEqual(query(db, "SELECT ?2, ?1, ?2", ["a", "b"]), [["b", "a", "b"]]);
      assert.deepEqual(query(db, "SELECT :a, :a + 1", { a: 41 }), [[41, 42]]);
      assert.deepEqual(query(db, "SELECT ?3", { "?3": 7 }), [[7]]);
      assert.deepEqual(query(db, "SELECT ?1, ?3", { "?1": 1, "?3": 3 }), [[1, 3]]);
      // A `?NNN` sharing its index with a name (SQLite names index 1 `$b`)
      // is bound by either spelling; both at once is two keys for one parameter.
      assert.deepEqual(query(db, "SELECT $b, ?1", { "?1": 5 }), [[5, 5]]);
      assert.deepEqual(query(db, "SELECT $b, ?1", { b: 6 }), [[6, 6]]);
      assert.deepEqual(query(db, "SELECT :a, ?1, ?2", { "?1": 5, "?2": 6 }), [[5, 5, 6]]);
      assert.deepEqual(query(db, "SELECT $b, ?01", { "?01": 7 }), [[7, 7]]);
      rejects(
        () => query(db, "SELECT $b, ?1", { "?1": 5, $b: 5 }),
        "INVALID_PARAM",
        undefined,
        /both "\?1" and "\$b" name it; give one$/,
      );
      // A `?NNN` the SQL does not spell is no key for that index.
      rejects(() => query(db, "SELECT $b", { "?1": 5 }), "INVALID_PARAM");
      const stmt = db.prepare("SELECT ':x' AS \"@y\", :z -- :w\n")!;
      assert.equal(stmt.paramCount, 1);
      stmt.bind({ z: 1 });
      assert.deepEqual(stmt.all(), [[":x", 1]]);
      stmt.finalize();
    }));

  Deno.test(`Stmt.bind() refuses unknown names, missing values and too many values with INVALID_PARAM ${e}`, () =>
    withDb(sqlite, (db) => {
      const stmt = db.prepare("SELECT :a, ?")!;
      assert.equal(stmt.paramCount, 2);
      // An object cannot name the `?`: refused rather than bound NULL.
      const objects: Record<string, number>[] = [{ a: 1 }, { nope: 1 }, {}, { a: 1, "?2": 2 }];
      for (const values of objects) {
        rejects(
          () => stmt.bind(values),
          "INVALID_PARAM",
          undefined,
          /positional parameters "\?": pass an array$/,
        );
      }
      rejects(
        () => stmt.bind([1, 2, 3]),
        "INVALID_PARAM",
        undefined,
        /^Too many parameter values: the statement has 2 parameters, 3 were given$/,
      );
      rejects(() => stmt.bind([1]), "INVALID_PARAM", undefined, /has 2 parameters, 1 was given/);
      stmt.bind([1, 2]);
      assert.deepEqual(stmt.all(), [[1, 2]]);
      stmt.finalize();
      // `?NNN` is required like a name; an index no parameter takes stays NULL.
      const numbered = db.prepare("SELECT :a, ?3, ?3")!;
      assert.equal(numbered.paramCount, 3);
      rejects(() => numbered.bind({ nope: 1 }), "INVALID_PARAM", undefined, /"nope"/);
      rejects(
        () => numbered.bind({}),
        "INVALID_PARAM",
        undefined,
        /Missing value for parameter ":a"/,
      );
      rejects(
        () => numbered.bind({ a: 1 }),
        "INVALID_PARAM",
        undefined,
        /^Missing value for parameter "\?3": the parameters object has no "\?3"$/,
      );
      rejects(
        () => numbered.bind({ a: 1, "?3": 3, "?2": 2 }),
        "INVALID_PARAM",
        undefined,
        /"\?2": the statement has no parameter/,
      );
      numbered.bind({ a: 1, "?3": 3 });
      assert.deepEqual(numbered.all(), [[1, 3, 3]]);
      numbered.bind([1, 2, 3]);
      assert.deepEqual(numbered.all(), [[1, 3, 3]]);
      numbered.finalize();
      // A `?` after `?NNN` takes the next index; before it, one SQLite leaves nameless.
      for (const sql of ["SELECT ?2, ?", "SELECT ?, ?2", "SELECT ?, ?1"]) {
        const s = db.prepare(sql)!;
        if (sql === "SELECT ?, ?1") {
          // (SQLite names index 1 "?1": the key binds the `?` too.)
          s.bind({ "?1": 7 });
          assert.deepEqual(s.all(), [[7, 7]]);
        } else {
          rejects(() => s.bind({ "?2": 1 }), "INVALID_PARAM", undefined, /pass an array$/);
        }
        s.finalize();
      }
    }));

  Deno.test(`Stmt.bind() reads parameter names as SQLite's tokenizer does: #a, $ in a name, :: and (...) after any prefix ${e}`, () =>
    withDb(sqlite, (db) => {
      const count = (sql: string) => {
        const s = db.prepare(sql)!;
        try {
          return s.paramCount;
        } finally {
          s.finalize();
        }
      };
      // `#` is a prefix like `:`, `@` and `$`.
      assert.deepEqual(query(db, "SELECT #a", [9]), [[9]]);
      assert.deepEqual(query(db, "SELECT #a, :a", { a: 9 }), [[9, 9]]);
      assert.deepEqual(query(db, "SELECT #a", { "#a": 9 }), [[9]]);
      rejects(
        () => query(db, "SELECT #a, :x", { x: 1 }),
        "INVALID_PARAM",
        undefined,
        /^Missing value for parameter "#a": the parameters object has no "a" \(or "#a"\)$/,
      );
      // `$` is a name character after any prefix: `:a$b` is one parameter, not `:a` and `$b`.
      assert.equal(count("SELECT :a$b, :a, $b"), 3);
      assert.deepEqual(query(db, "SELECT :a$b, :a, $b", [1, 2, 3]), [[1, 2, 3]]);
      assert.deepEqual(query(db, "SELECT :a$b, :a, $b", { "a$b": 1, a: 2, b: 3 }), [[1, 2, 3]]);
      rejects(
        () => query(db, "SELECT :a$b, :a, $b", { a: 2, b: 3 }),
        "INVALID_PARAM",
        undefined,
        /^Missing value for parameter ":a\$b"/,
      );
      // So it is in a bare word: a column `x$y`, no parameter.
      db.exec("CREATE TABLE t (x$y); INSERT INTO t VALUES (4)");
      assert.equal(count("SELECT x$y FROM t"), 0);
      assert.deepEqual(query(db, "SELECT x$y FROM t"), [[4]]);
      // `::` and a `(...)` suffix belong to the name after every prefix, not only `$`.
      for (const p of [":", "@", "$", "#"]) {
        assert.equal(count(`SELECT ${p}a::b, ${p}a, ${p}b`), 3, p);
        assert.deepEqual(query(db, `SELECT ${p}a::b, ${p}a, ${p}b`, { "a::b": 1, a: 2, b: 3 }), [[
          1,
          2,
          3,
        ]], p);
        rejects(
          () => query(db, `SELECT ${p}a::b, ${p}a, ${p}b`, { a: 2, b: 3 }),
          "INVALID_PARAM",
          undefined,
          new RegExp(`^Missing value for parameter "\\${p}a::b"`),
        );
        assert.deepEqual(query(db, `SELECT ${p}a(x)y, ${p}a`, { "a(x)": 1, a: 2 }), [[1, 2]], p);
        assert.deepEqual(query(db, `SELECT ${p}a(x:"y")`, [5]), [[5]], p);
      }
      // `::` may come first, or last.
      assert.deepEqual(query(db, "SELECT :::a, $::b, @c::", { "::a": 1, "::b": 2, "c::": 3 }), [[
        1,
        2,
        3,
      ]]);
      // A `(` needs its `)` before a blank; a prefix alone is no parameter: SQLite refuses both.
      for (const sql of ["SELECT @a(x y)", "SELECT #", "SELECT $::", "SELECT #1"]) {
        assert.throws(() => db.prepare(sql), SqliteError, sql);
      }
    }));

  Deno.test(`Db.prepare() walks a multi-statement script with non-ASCII text ${e}`, () =>
    withDb(sqlite, (db) => {
      const parts = [
        "CREATE TABLE ü(名前 TEXT, v);",
        " -- café ☕\nINSERT INTO ü VALUES ('😀 naïve', 1);",
        " /* ñ */ INSERT INTO ü VALUES ('𝄞', 2);",
        "\n;;SELECT 名前 FROM ü ORDER BY v;",
      ];
      const script = parts.join("") + " -- done 🎉\n ";
      const ends: number[] = [];
      let from = 0;
      let last: SqlValue[][] = [];
      for (;;) {
        const stmt = db.prepare(script, from);
        if (stmt === null) break;
        assert.ok(stmt.end > from);
        last = stmt.all();
        ends.push(stmt.end);
        stmt.finalize();
        from = stmt.end;
      }
      let at = 0;
      assert.deepEqual(ends, parts.map((p) => at += p.length));
      assert.deepEqual(last, [["😀 naïve"], ["𝄞"]]);
      assert.equal(db.prepare(script, ends[3]), null);
    }));

  Deno.test(`Db.prepare() returns null for blank or comment-only text ${e}`, () =>
    withDb(sqlite, (db) => {
      for (const sql of ["", "   ", "-- only a comment", "/* c */ ;; \n", ";"]) {
        assert.equal(db.prepare(sql), null, JSON.stringify(sql));
      }
      assert.equal(db.prepare("SELECT 1;   ", 9), null);
    }));

  Deno.test(`Db.prepare() and exec() refuse SQL containing NUL ${e}`, () =>
    withDb(sqlite, (db) => {
      rejects(() => db.prepare("SELECT 1;\0 DROP TABLE x"), "BAD_REQUEST", undefined, /NUL/);
      rejects(() => db.exec("SELECT 1;\0"), "BAD_REQUEST", undefined, /NUL/);
    }));

  Deno.test(`Stmt and Db errors carry extended result codes ${e}`, () =>
    withDb(sqlite, (db) => {
      db.exec("CREATE TABLE u(id INTEGER PRIMARY KEY, k TEXT UNIQUE, n TEXT NOT NULL)");
      db.exec("INSERT INTO u(k, n) VALUES ('a', 'x')");
      const ins = db.prepare("INSERT INTO u(k, n) VALUES (?, ?)")!;
      ins.bind(["a", "y"]);
      rejects(() => ins.run(), "SQLITE_CONSTRAINT_UNIQUE", 2067, /UNIQUE constraint failed: u\.k/);
      ins.bind(["b", null]);
      rejects(() => ins.run(), "SQLITE_CONSTRAINT_NOTNULL", 1299, /NOT NULL/);
      ins.bind(["b", "ok"]);
      assert.equal(ins.run().changes, 1);
      ins.finalize();
      rejects(
        () => db.exec("INSERT INTO u(k, n) VALUES ('a', 'z')"),
        "SQLITE_CONSTRAINT_UNIQUE",
        2067,
      );
      rejects(() => db.prepare("SELEC 1"), "SQLITE_ERROR", 1, /near "SELEC": syntax error/);
      rejects(
        () => db.prepare("SELECT * FROM missing"),
        "SQLITE_ERROR",
        1,
        /no such table: missing/,
      );
      rejects(() => db.exec("COMMIT"), "SQLITE_ERROR", 1, /no transaction is active/);
    }));

  Deno.test(`Stmt.run() and Db counters report int64 rowids and changes exactly ${e}`, () =>
    withDb(sqlite, (db) => {
      db.exec("CREATE TABLE r(id INTEGER PRIMARY KEY, v)");
      const ins = db.prepare("INSERT INTO r(id, v) VALUES (?, 1)")!;
      ins.bind([2n ** 62n]);
      assert.deepEqual(ins.run(), { changes: 1, lastInsertRowid: 2n ** 62n });
      assert.equal(db.lastInsertRowid(), 2n ** 62n);
      ins.bind([MAX_SAFE]);
      assert.deepEqual(ins.run(), { changes: 1, lastInsertRowid: MAX_SAFE });
      ins.finalize();
      db.exec("INSERT INTO r(v) VALUES (2)"); // rowid = max + 1
      assert.equal(db.lastInsertRowid(), 2n ** 62n + 1n);
      const upd = db.prepare("UPDATE r SET v = v + 1")!;
      assert.equal(upd.run().changes, 3);
      upd.finalize();
      assert.equal(db.changes(), 3);
      assert.equal(db.totalChanges(), 6);
    }));

  Deno.test(`Stmt.columnNames() follows a schema change on a cached statement ${e}`, () =>
    withDb(sqlite, (db) => {
      db.exec("CREATE TABLE s(a, b); INSERT INTO s VALUES (1, 2)");
      const stmt = db.prepare("SELECT * FROM s")!;
      assert.deepEqual(stmt.columnNames(), ["a", "b"]);
      assert.deepEqual(stmt.all(), [[1, 2]]);
      db.exec("DROP TABLE s; CREATE TABLE s(x, y, z); INSERT INTO s VALUES (7, 8, 9)");
      stmt.bind([]);
      assert.equal(stmt.step(), true);
      assert.deepEqual(stmt.columnNames(), ["x", "y", "z"]);
      assert.deepEqual(stmt.row(), [7, 8, 9]);
      assert.equal(stmt.step(), false);
      stmt.finalize();
    }));

  Deno.test(`Stmt.step() steps row by row and all() honours maxBytes ${e}`, () =>
    withDb(sqlite, (db) => {
      const stmt = db.prepare(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5) SELECT x, 'row' || x FROM c",
      )!;
      assert.equal(stmt.step(), true);
      assert.deepEqual(stmt.row(), [1, "row1"]);
      assert.equal(stmt.step(), true);
      assert.deepEqual(stmt.all(), [[3, "row3"], [4, "row4"], [5, "row5"]]);
      stmt.reset();
      assert.equal(stmt.all().length, 5);
      rejects(() => stmt.all(30), "RESULT_TOO_LARGE", undefined, /maxResultBytes 30 /);
      assert.equal(stmt.all(1000).length, 5);
      stmt.finalize();
      stmt.finalize();
      rejects(() => stmt.bind([]), "SQLITE_MISUSE", 21, /finalized/);
    }));

  Deno.test(`Stmt.allInto() writes the bytes of all()'s rows and honours maxBytes ${e}`, () =>
    withDb(sqlite, (db) => {
      db.exec("CREATE TABLE v(x)");
      const insert = db.prepare("INSERT INTO v VALUES (?)")!;
      const values: SqlValue[] = [
        null,
        7,
        -(2 ** 31) - 1,
        2 ** 53 - 1,
        INT64_MAX,
        INT64_MIN,
        -0,
        2.5,
        "",
        "a\0b é 😀",
        "t".repeat(100),
        new Uint8Array(0),
        new Uint8Array([0, 1, 255]),
        // Each string header size: fixstr, str8, str16, str32.
        "é".repeat(15) + "x",
        "x".repeat(32),
        "😀".repeat(64),
        "y".repeat(70_000),
      ];
      for (const v of values) {
        insert.bind([v]);
        insert.run();
      }
      insert.finalize();
      // Malformed UTF-8 stored as TEXT (bad byte, truncated sequence,
      // surrogate, overlong, above U+10FFFF): node:sqlite reads it as
      // TextDecoder decodes it; FFI refuses it (INVALID_UTF8), row() and allInto() alike.
      const malformed = sqlite.engine === "node"
        ? ["61ff62", "61c3", "eda080", "c080", "f4908080", "e282"]
        : [];
      for (const hex of ["61ff62", "61c3", "eda080", "c080", "f4908080", "e282"]) {
        if (sqlite.engine === "node") continue;
        db.exec("CREATE TABLE bad(x)");
        db.exec(`INSERT INTO bad VALUES (CAST(x'${hex}' AS TEXT))`);
        const bad = db.prepare("SELECT x FROM bad")!;
        rejects(() => bad.all(), "INVALID_UTF8", undefined, /column "x"/);
        const sink = new RowsEncoder();
        sink.begin();
        rejects(() => bad.allInto(sink, 1e6), "INVALID_UTF8", undefined, /column "x"/);
        bad.finalize();
        db.exec("DROP TABLE bad");
      }
      for (const hex of malformed) db.exec(`INSERT INTO v VALUES (CAST(x'${hex}' AS TEXT))`);
      const stmt = db.prepare("SELECT rowid, x, typeof(x) FROM v ORDER BY rowid")!;
      const rows = stmt.all();
      const n = values.length + malformed.length;
      const out = new RowsEncoder();
      out.begin();
      assert.equal(stmt.allInto(out, 1e6), n);
      const encoded = out.finish();
      assert.deepEqual(encoded.bytes, encodeValue(rows));
      // (node:sqlite cuts text at a NUL when reading it: README, SQLite engines.)
      const nul = sqlite.engine === "node" ? "a" : values[9];
      const lossy = malformed.map((hex) =>
        new TextDecoder().decode(Uint8Array.from(hex.match(/../g)!, (h) => parseInt(h, 16)))
      );
      assert.deepEqual((decodeMsgpack(encoded.bytes) as SqlValue[][]).map((r) => r[1]), [
        ...values.slice(0, 9),
        nul,
        ...values.slice(10),
        ...lossy,
      ]);
      // Past the limit: RESULT_TOO_LARGE, and the statement is reset for the next run.
      out.begin();
      rejects(() => stmt.allInto(out, 40), "RESULT_TOO_LARGE", undefined, /maxResultBytes 40 /);
      out.begin();
      assert.equal(stmt.allInto(out, 1e6), n);
      assert.deepEqual(out.finish().bytes, encoded.bytes);
      stmt.finalize();
    }));

  Deno.test(`Db.inTransaction follows BEGIN and COMMIT ${e}`, () =>
    withDb(sqlite, (db) => {
      assert.equal(db.inTransaction, false);
      db.exec("BEGIN IMMEDIATE");
      assert.equal(db.inTransaction, true);
      db.exec("CREATE TABLE tx(a)");
      db.exec("ROLLBACK");
      assert.equal(db.inTransaction, false);
      assert.deepEqual(query(db, "SELECT count(*) FROM sqlite_schema WHERE name = 'tx'"), [[0]]);
    }));

  Deno.test(`Db.deferredViolations() follows unresolved deferred foreign keys ${e}`, () =>
    withDb(sqlite, (db) => {
      db.exec(
        "PRAGMA foreign_keys = ON; CREATE TABLE p (id INTEGER PRIMARY KEY);" +
          "CREATE TABLE c (pid INTEGER REFERENCES p (id) DEFERRABLE INITIALLY DEFERRED)",
      );
      const ffi = sqlite.engine === "ffi";
      const expect = (v: boolean) => assert.equal(db.deferredViolations(), ffi ? v : null);
      expect(false);
      db.exec("BEGIN; INSERT INTO c VALUES (7)");
      expect(true);
      db.exec("SAVEPOINT s; INSERT INTO p VALUES (7)");
      expect(false);
      db.exec("ROLLBACK TO s; RELEASE s");
      expect(true);
      db.exec("ROLLBACK");
      expect(false);
    }));

  Deno.test(`Stmt.readOnly tells reads from writes ${e}`, () =>
    withDb(sqlite, (db) => {
      db.exec("CREATE TABLE ro(a)");
      const expected: [string, boolean][] = [
        ["SELECT * FROM ro", true],
        ["WITH RECURSIVE c(x) AS (SELECT 1) SELECT x FROM c", true],
        ["INSERT INTO ro VALUES (1)", false],
        ["UPDATE ro SET a = 2", false],
        ["DELETE FROM ro", false],
        ["CREATE TABLE ro2(b)", false],
        ["CREATE TEMP TABLE t1(b)", false],
        ["BEGIN", true],
        ["BEGIN IMMEDIATE", false],
        ["COMMIT", true],
        ["SAVEPOINT sp", true],
        ["PRAGMA user_version", true],
        ["PRAGMA user_version = 3", false],
        ["PRAGMA journal_mode", false],
        ["PRAGMA foreign_keys = ON", true],
        ["PRAGMA table_info(ro)", true],
        ["VACUUM", false],
      ];
      for (const [sql, readOnly] of expected) {
        const stmt = db.prepare(sql)!;
        assert.equal(stmt.readOnly, readOnly, sql);
        stmt.finalize();
      }
    }));

  Deno.test(`Db.setAuthorizer() sees actions and can deny ${e}`, () =>
    withDb(sqlite, (db) => {
      db.exec("CREATE TABLE secret(a); CREATE TABLE open(b)");
      const seen: string[] = [];
      db.setAuthorizer((action, a1, a2) => {
        if (action === 20) seen.push(`${a1}.${a2}`); // SQLITE_READ
        return action === 20 && a1 === "secret" ? 1 : 0;
      });
      assert.deepEqual(query(db, "SELECT b FROM open"), []);
      assert.ok(seen.includes("open.b"));
      rejects(() => db.prepare("SELECT a FROM secret"), "SQLITE_AUTH", 23, /prohibited/);
      db.setAuthorizer(null);
      assert.deepEqual(query(db, "SELECT a FROM secret"), []);
    }));

  Deno.test(`a step an authorizer's error denies throws that error (an FTS table's own read) ${e}`, () =>
    withDb(sqlite, async (db) => {
      db.exec(
        "CREATE TABLE docs(body); INSERT INTO docs VALUES ('hidden');" +
          "CREATE VIRTUAL TABLE f4 USING fts4(body, content='docs');" +
          "CREATE VIRTUAL TABLE f5 USING fts5(body, content='docs', content_rowid='rowid')",
      );
      const refusal = new SqliteError("FORBIDDEN", "Cannot read docs: not yours");
      let preparing = false;
      // Allowed while preparing: denied when the table reads its content table as it runs.
      db.setAuthorizer((action, a1) => action === 20 && a1 === "docs" && !preparing ? refusal : 0);
      for (const table of ["f4", "f5"]) {
        for (const background of [false, true]) {
          if (background && !sqlite.capabilities.background) continue;
          preparing = true;
          const stmt = db.prepare(`SELECT body FROM ${table}`)!;
          preparing = false;
          try {
            stmt.bind([]);
            let thrown: unknown = null;
            try {
              await (background ? stmt.stepInBackground() : stmt.step());
            } catch (err) {
              thrown = err;
            }
            assert.equal(thrown, refusal, `${table}${background ? " in the background" : ""}`);
          } finally {
            stmt.finalize();
          }
        }
      }
      // A plain denial (1) while running stays SQLite's own error.
      db.setAuthorizer((action, a1) => action === 20 && a1 === "docs" && !preparing ? 1 : 0);
      preparing = true;
      const stmt = db.prepare("SELECT body FROM f5")!;
      preparing = false;
      try {
        stmt.bind([]);
        rejects(() => stmt.step(), "SQLITE_AUTH", 23);
      } finally {
        stmt.finalize();
      }
    }));

  Deno.test(`Db.checkpoint() checkpoints the WAL ${e}`, () =>
    withDb(sqlite, (db) => {
      assert.deepEqual(query(db, "PRAGMA journal_mode = WAL"), [["wal"]]);
      db.exec("CREATE TABLE w(a); INSERT INTO w VALUES (1), (2)");
      const passive = db.checkpoint("passive");
      assert.ok(passive.walFrames > 0);
      assert.equal(passive.checkpointed, passive.walFrames);
      assert.deepEqual(db.checkpoint("truncate"), { walFrames: 0, checkpointed: 0 });
    }));

  Deno.test(`Db.backup() copies a database that passes integrity_check ${e}`, () =>
    withDb(sqlite, async (db, dir) => {
      db.exec("PRAGMA journal_mode = WAL; CREATE TABLE b(id INTEGER PRIMARY KEY, t TEXT)");
      db.exec(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000) " +
          "INSERT INTO b SELECT x, printf('%.200c', 'x') || x FROM c",
      );
      const progress: [number, number][] = [];
      await db.backup(`${dir}/copy.db`, {
        pagesPerStep: 20,
        onProgress: (remaining, total) => progress.push([remaining, total]),
      });
      assert.ok(progress.length > 2, `progress ${progress.length}`);
      assert.equal(progress.at(-1)![0], 0);
      const copy = sqlite.open(`${dir}/copy.db`, { readOnly: true, busyTimeout: 0 });
      try {
        assert.deepEqual(query(copy, "PRAGMA integrity_check"), [["ok"]]);
        assert.deepEqual(
          query(copy, "SELECT count(*), sum(id), max(t) FROM b"),
          query(db, "SELECT count(*), sum(id), max(t) FROM b"),
        );
      } finally {
        copy.close();
      }
    }));

  Deno.test(`Sqlite.open() reports a file that cannot be opened ${e}`, () => {
    rejects(
      () => sqlite.open("/nonexistent-dir/x.db", { readOnly: false, busyTimeout: 0 }),
      "SQLITE_CANTOPEN",
      14,
      /Cannot open database "\/nonexistent-dir\/x.db": unable to open database file/,
    );
  });

  Deno.test(`Db.close() is idempotent and finalizes open statements ${e}`, async () => {
    const dir = await Deno.makeTempDir();
    try {
      const db = sqlite.open(`${dir}/c.db`, { readOnly: false, busyTimeout: 0 });
      const stmt = db.prepare("SELECT 1")!;
      assert.equal(stmt.step(), true);
      db.close();
      db.close();
      rejects(() => db.prepare("SELECT 1"), "SQLITE_MISUSE");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

const [ffi, node] = ENGINES;

/** `CLOCK_THREAD_CPUTIME_ID` of `clock_gettime`. */
const THREAD_CPU_CLOCK = { linux: 3, darwin: 16 } as const;

/**
 * Times the calling thread's CPU time in ms (`clock_gettime` with
 * `CLOCK_THREAD_CPUTIME_ID`), which, unlike the wall clock, a stall of a
 * loaded machine (the thread not scheduled) does not advance; `null` where
 * libc has no such clock (Windows). Close it when done.
 */
function threadCpuClock(): { now(): number; close(): void } | null {
  const id = THREAD_CPU_CLOCK[Deno.build.os as keyof typeof THREAD_CPU_CLOCK];
  if (id === undefined) return null;
  // int clock_gettime(clockid_t clk_id, struct timespec *tp)
  const libc = openLibc({ clock_gettime: { parameters: ["i32", "buffer"], result: "i32" } });
  if (libc === null) return null;
  const ts = new BigInt64Array(2); // { time_t tv_sec; long tv_nsec } on 64-bit systems
  return {
    now() {
      assert.equal(libc.symbols.clock_gettime(id, ts), 0);
      return Number(ts[0]) * 1000 + Number(ts[1]) / 1e6;
    },
    close: () => libc.close(),
  };
}

Deno.test("Db.setBudget() stops a runaway recursive CTE with SQLITE_INTERRUPT [ffi]", () =>
  withDb(ffi, (db) => {
    const stmt = db.prepare(
      "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
    )!;
    // The budget is wall-clock time: never stopped before it. That it stops
    // soon after is told by the thread's CPU time (the step runs on this
    // thread), which a stall of a loaded machine does not advance, where
    // the wall clock would (elsewhere, generous wall-clock bounds).
    const cpu = threadCpuClock();
    const spentOn = (f: () => void): { wall: number; cpu: number } => {
      const [wall, work] = [performance.now(), cpu?.now() ?? 0];
      f();
      return { wall: performance.now() - wall, cpu: (cpu?.now() ?? 0) - work };
    };
    const upTo = (ms: number) => cpu === null ? 10 * ms : ms;
    try {
      db.setBudget(30);
      const took = spentOn(() => rejects(() => stmt.step(), "SQLITE_INTERRUPT", 9, /interrupted/));
      assert.ok(took.wall >= 29, `stopped after ${took.wall.toFixed(1)} ms`);
      const work = cpu === null ? took.wall : took.cpu;
      assert.ok(work < upTo(200), `stopped after ${work.toFixed(1)} ms of work`);
      // A new budget counts afresh; a spent one stops at the first check.
      db.setBudget(30);
      const again = spentOn(() => rejects(() => stmt.step(), "SQLITE_INTERRUPT", 9, /interrupted/));
      assert.ok(again.wall >= 29, "the second budget counted from the first stop");
      db.setBudget(0);
      const spent = spentOn(() => rejects(() => stmt.step(), "SQLITE_INTERRUPT", 9, /interrupted/));
      const stop = cpu === null ? spent.wall : spent.cpu;
      assert.ok(stop < upTo(20), `a zero budget stops at the first check (${stop.toFixed(1)} ms)`);
    } finally {
      cpu?.close();
    }
    db.setBudget(null);
    stmt.finalize();
    assert.deepEqual(query(db, "SELECT 1 + 1"), [[2]]);
    db.setBudget(1000);
    assert.deepEqual(query(db, "SELECT 2 + 2"), [[4]]);
    db.setBudget(null);
  }));

Deno.test("Db.backup() copies on a background thread: timers run during a step; the connection is busy meanwhile [ffi]", () =>
  withDb(ffi, async (db, dir) => {
    // About 20 MB, copied in one step (and synced at its end): tens of ms.
    db.exec(
      "CREATE TABLE b(id INTEGER PRIMARY KEY, x BLOB);" +
        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 20000) " +
        "INSERT INTO b(x) SELECT randomblob(1000) FROM c",
    );
    const progress: [number, number][] = [];
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const start = performance.now();
    try {
      const copying = db.backup(`${dir}/copy.db`, {
        pagesPerStep: 1_000_000,
        onProgress: (remaining, total) => progress.push([remaining, total]),
      });
      // The connection has no mutex: while the step runs, calls on it are refused.
      rejects(() => db.prepare("SELECT 1"), "SQLITE_MISUSE", 21, /background/);
      await copying;
    } finally {
      clearInterval(timer);
    }
    const took = performance.now() - start;
    // Synchronous, the one step would have let no timer run until it returned.
    assert.ok(ticks >= 1, `no timer ran during a ${took.toFixed(1)} ms step`);
    assert.equal(progress.length, 1);
    assert.equal(progress[0][0], 0);
    const copy = ffi.open(`${dir}/copy.db`, { readOnly: true, busyTimeout: 0 });
    try {
      assert.deepEqual(query(copy, "SELECT count(*) FROM b"), [[20000]]);
    } finally {
      copy.close();
    }
    assert.deepEqual(query(db, "SELECT count(*) FROM b"), [[20000]]);
  }));

Deno.test("Db.backup() waits for a statement that began stepping in the background between two of its steps [ffi]", () =>
  withDb(ffi, async (db, dir) => {
    db.exec(
      "CREATE TABLE b(id INTEGER PRIMARY KEY, x BLOB);" +
        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 2000) " +
        "INSERT INTO b(x) SELECT randomblob(1000) FROM c",
    );
    const endless = db.prepare(
      "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
    )!;
    endless.bind([]);
    // Between two of the copy's steps the connection is free: a statement
    // begins a step in the background there. The connection has no mutex:
    // the copy's next step must wait for it, and the connection stays busy
    // until it returns (a backup step ran beside it, on the same connection,
    // and its end marked the connection free while the statement still ran).
    let steps = 0;
    let stepping: Promise<unknown> | null = null;
    let stepped = false;
    const beside: string[] = [];
    const copying = db.backup(`${dir}/copy.db`, {
      pagesPerStep: 50,
      onProgress: () => {
        if (++steps === 2) {
          stepping = endless.stepInBackground().finally(() => stepped = true);
        } else if (steps > 2 && !stepped) beside.push(`backup step ${steps}`);
      },
    });
    await new Promise((resolve) => setTimeout(resolve, 50));
    rejects(() => db.inTransaction, "SQLITE_MISUSE", 21, /background/);
    assert.deepEqual(beside, []);
    db.interrupt();
    await assert.rejects(stepping!, (err: SqliteError) => err.code === "SQLITE_INTERRUPT");
    await copying;
    assert.deepEqual(beside, []);
    assert.ok(steps > 3, `${steps} steps`);
    endless.finalize();
    const copy = ffi.open(`${dir}/copy.db`, { readOnly: true, busyTimeout: 0 });
    try {
      assert.deepEqual(query(copy, "SELECT count(*) FROM b"), [[2000]]);
      assert.deepEqual(query(copy, "PRAGMA integrity_check"), [["ok"]]);
    } finally {
      copy.close();
    }
  }));

Deno.test("Db.backup() stops after its current step when its connection is closed [ffi]", () =>
  withDb(ffi, async (db, dir) => {
    db.exec(
      "CREATE TABLE b(id INTEGER PRIMARY KEY, x BLOB);" +
        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 4000) " +
        "INSERT INTO b(x) SELECT randomblob(1000) FROM c",
    );
    let steps = 0;
    const copying = db.backup(`${dir}/copy.db`, {
      pagesPerStep: 10,
      onProgress: () => {
        if (++steps === 3) db.close();
      },
    });
    await assert.rejects(copying, (err: SqliteError) => {
      assert.equal(err.code, "SQLITE_MISUSE");
      assert.equal(err.message, "Cannot back up: the connection was closed while the backup ran");
      return true;
    });
    assert.ok(steps >= 3 && steps < 10, `${steps} steps`);
  }));

Deno.test("Stmt.stepInBackground() leaves the event loop free and stops on interrupt() [ffi]", () =>
  withDb(ffi, async (db) => {
    const quick = db.prepare("SELECT 42")!;
    assert.equal(await quick.stepInBackground(), true);
    assert.deepEqual(quick.row(), [42]);
    quick.finalize();
    const slow = db.prepare(
      "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
    )!;
    const other = db.prepare("SELECT 7")!;
    // The event loop is free while the step runs: a timer ticks 10 times
    // before the step (which never ends by itself) is interrupted. Counted
    // against the step, not against the wall clock, which a loaded machine's
    // stall advances while no timer runs.
    let ticks = 0;
    let tenTicks!: () => void;
    const ticked = new Promise<void>((resolve) => tenTicks = resolve);
    const timer = setInterval(() => {
      if (++ticks === 10) tenTicks();
    }, 5);
    const stepping = slow.stepInBackground();
    let settled = false;
    stepping.then(() => settled = true, () => settled = true);
    try {
      // The connection has no mutex: while it steps on the background thread,
      // every other call on it is refused at once (interrupt() excepted).
      rejects(() => db.prepare("SELECT 1"), "SQLITE_MISUSE", 21, /background/);
      rejects(() => other.step(), "SQLITE_MISUSE", 21, /background/);
      rejects(() => db.inTransaction, "SQLITE_MISUSE", 21, /background/);
      await ticked;
      assert.equal(settled, false, "the step ended before the timer ticked 10 times");
      db.interrupt();
      // Stopped by the interrupt: nothing else ends this step (no bound on
      // how soon: a stall of a loaded machine can take seconds).
      await assert.rejects(stepping, (err: SqliteError) => err.code === "SQLITE_INTERRUPT");
    } finally {
      clearInterval(timer);
    }
    slow.finalize();
    assert.equal(other.step(), true);
    assert.deepEqual(other.row(), [7]);
    other.finalize();
    assert.deepEqual(query(db, "SELECT 'usable'"), [["usable"]]);
  }));

Deno.test("Db.close() stops a statement stepping in the background, also one whose thread has not yet begun it [ffi]", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // close() right after the step is handed to its thread: SQLite forgets
    // an interrupt that comes before the step begins, so one interrupt is
    // not enough (it was lost in most of these rounds): the statement,
    // which never ends by itself, ran on and the connection stayed open.
    for (let round = 0; round < 20; round++) {
      const db = ffi.open(`${dir}/c.db`, { readOnly: false, busyTimeout: 1000 });
      const endless = db.prepare(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
      )!;
      endless.bind([]);
      const stepping = endless.stepInBackground().then(() => "stopped", () => "stopped");
      db.close();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const outcome = await Promise.race([
        stepping,
        new Promise<string>((resolve) => timer = setTimeout(() => resolve("still running"), 2000)),
      ]);
      clearTimeout(timer);
      if (outcome !== "stopped") {
        db.interrupt(); // (ends it, so that the failure leaves no thread running)
        await stepping;
      }
      assert.equal(outcome, "stopped", `round ${round}: close() did not stop the step`);
      rejects(() => db.prepare("SELECT 1"), "SQLITE_MISUSE", 21, /closed/);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
    await new Promise((resolve) => setTimeout(resolve, 0)); // (the timer probe of _timer_turn.ts)
  }
});

Deno.test("Stmt.stepInBackground() fails with its own message when a statement finalized meanwhile was active [ffi]", () =>
  withDb(ffi, async (db) => {
    db.exec("CREATE TABLE t(a UNIQUE); INSERT INTO t VALUES (1), (2)");
    // An active statement (a cursor's, mid-rows) finalized while another
    // steps in the background is finalized once that step returns: SQLite
    // then hands its state (no error) to the connection, which read back
    // afterwards gave the failed step the message "not an error".
    const active = db.prepare("SELECT a FROM t")!;
    active.bind([]);
    assert.equal(active.step(), true);
    const insert = db.prepare("INSERT INTO t VALUES (1)")!;
    insert.bind([]);
    const stepping = insert.stepInBackground();
    active.finalize();
    await assert.rejects(stepping, (err: SqliteError) => {
      assert.equal(err.code, "SQLITE_CONSTRAINT_UNIQUE");
      assert.equal(err.sqliteCode, 2067);
      assert.equal(err.message, "UNIQUE constraint failed: t.a");
      return true;
    });
    insert.finalize();
    assert.deepEqual(query(db, "SELECT count(*) FROM t"), [[2]]);
  }));

Deno.test("Stmt.stepInBackground() refuses while a time budget is set [ffi]", () =>
  withDb(ffi, async (db) => {
    const stmt = db.prepare("SELECT 1")!;
    db.setBudget(1000);
    await assert.rejects(async () => await stmt.stepInBackground(), /time budget/);
    db.setBudget(null);
    assert.equal(await stmt.stepInBackground(), true);
    stmt.finalize();
  }));

Deno.test("Stmt.row() reads text holding NUL characters whole [ffi]", () =>
  withDb(ffi, (db) => {
    const [[a, b, c]] = query(db, "SELECT 'a' || char(0) || 'b', 'é' || char(0), ?", ["ascii"]);
    assert.equal(a, "a\0b");
    assert.equal(b, "é\0");
    assert.equal(c, "ascii");
  }));

Deno.test("Stmt.row() and allInto() keep a leading U+FEFF in text that also holds NUL or U+FFFD [ffi]", () =>
  withDb(ffi, (db) => {
    // Such text is decoded from its bytes (not read as a C string): a
    // decoder that strips a byte order mark would drop the first character.
    const sql = "SELECT char(65279) || 'a' || char(0) || 'b', char(65279) || char(65533), " +
      "char(65279) || 'x'";
    const expected = ["\ufeffa\0b", "\ufeff\ufffd", "\ufeffx"];
    assert.deepEqual(query(db, sql), [expected]);
    const stmt = db.prepare(sql)!;
    const out = new RowsEncoder();
    out.begin();
    assert.equal(stmt.allInto(out, 1e6), 1);
    assert.deepEqual(out.finish().bytes, encodeValue([expected]));
    stmt.finalize();
  }));

Deno.test("Db.onUpdate() reports inserts, updates and deletes with rowids [ffi]", () =>
  withDb(ffi, (db) => {
    db.exec("CREATE TABLE h(id INTEGER PRIMARY KEY, v)");
    const changes: unknown[] = [];
    db.onUpdate((c) => changes.push(c));
    db.exec(
      `INSERT INTO h VALUES (1, 'a'), (${2n ** 60n}, 'b'); UPDATE h SET v = 'c' WHERE id = 1`,
    );
    db.exec("DELETE FROM h WHERE id = 1");
    db.onUpdate(null);
    db.exec("INSERT INTO h VALUES (3, 'd')");
    assert.deepEqual(changes, [
      { op: "insert", db: "main", table: "h", rowid: 1 },
      { op: "insert", db: "main", table: "h", rowid: 2n ** 60n },
      { op: "update", db: "main", table: "h", rowid: 1 },
      { op: "delete", db: "main", table: "h", rowid: 1 },
    ]);
  }));

Deno.test("Db.onRowidChange() reports rows an UPDATE moves, old and new rowid, while set [ffi]", () =>
  withDb(ffi, (db) => {
    if (!db.onRowidChange(null)) return; // (a libsqlite3 built without the preupdate hook)
    db.exec("CREATE TABLE m(id INTEGER PRIMARY KEY, v); INSERT INTO m VALUES (1, 'a'), (2, 'b')");
    db.exec("CREATE TABLE w(k PRIMARY KEY, v) WITHOUT ROWID; INSERT INTO w VALUES ('a', 1)");
    const moves: unknown[] = [];
    const onMove = (c: unknown) => moves.push(c);
    assert.equal(db.onRowidChange(onMove), true);
    db.exec(
      `UPDATE m SET id = ${2n ** 60n} WHERE id = 1; UPDATE m SET v = 'c'; UPDATE m SET id = id;` +
        "INSERT INTO m VALUES (3, 'd'); DELETE FROM m WHERE id = 3; UPDATE w SET k = 'b'",
    );
    assert.equal(db.onRowidChange(null), true);
    db.exec("UPDATE m SET id = 5 WHERE id = 2");
    assert.equal(db.onRowidChange(onMove), true); // (the same callback: set again)
    db.exec("UPDATE m SET rowid = 6 WHERE id = 5");
    db.onRowidChange(null);
    assert.deepEqual(moves, [
      { db: "main", table: "m", oldRowid: 1, newRowid: 2n ** 60n },
      { db: "main", table: "m", oldRowid: 5, newRowid: 6 },
    ]);
  }));

Deno.test("NodeSqlite reports no moved rows: it has no preupdate hook [node]", () =>
  withDb(node, (db) => {
    assert.equal(db.onRowidChange(() => {}), false);
    assert.equal(db.onRowidChange(null), false);
  }));

Deno.test("NodeSqlite states what it cannot do and refuses it clearly [node]", () =>
  withDb(node, async (db) => {
    assert.deepEqual(node.capabilities, {
      interrupt: false,
      background: false,
      backup: true,
      updateHook: false,
      reprepares: false,
    });
    assert.equal(node.limitations.length, 5);
    // What the start-up line says is lost (README, SQLite engines).
    assert.match(node.limitations.join("; "), /subscribe\(\) fails with FEED_UNSUPPORTED/);
    assert.match(node.limitations.join("; "), /not valid UTF-8 read back with U\+FFFD/);
    assert.match(node.limitations.join("; "), /cut at the NUL when read/);
    assert.ok(ffi.limitations.length === 0 && ffi.capabilities.background);
    db.interrupt();
    db.setBudget(0); // a no-op: statements still run
    assert.deepEqual(query(db, "SELECT 1"), [[1]]);
    rejects(() => db.onUpdate(() => {}), "INTERNAL", undefined, /node:sqlite engine cannot/);
    const stmt = db.prepare("SELECT 1")!;
    await assert.rejects(async () => await stmt.stepInBackground(), /node:sqlite engine cannot/);
    stmt.finalize();
  }));

Deno.test("the node engine numbers and names parameters as SQLite does, for generated names (the FFI engine as the oracle)", async () => {
  const [ffi, node] = ENGINES;
  let seed = 20240607;
  const pick = <T>(xs: readonly T[]): T => { // mulberry32
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return xs[((t ^ (t >>> 14)) >>> 0) % xs.length];
  };
  const PREFIXES = [":", "@", "$", "#"];
  // Mostly name characters; a few pieces SQLite refuses in places (`(`, `#`, a lone `:`).
  const PIECES = [
    ..."abcdefgh",
    "Z9",
    "_",
    "$",
    "$x",
    "é",
    "日本",
    "1",
    "::",
    "(x)",
    "()",
    "(a:b$)",
    ":",
    "(",
    "#",
  ];
  const param = (): string => {
    let name = pick(PREFIXES);
    for (let k = 1 + pick([0, 1, 2, 3]); k > 0; k--) name += pick(PIECES);
    return name;
  };
  const statements = ["SELECT ?, ?1, #a", "SELECT ?2, :a$b, ?", "SELECT @a(x)b, ?3"];
  for (let i = 0; i < 300; i++) {
    const params = [param(), param()];
    if (i % 3 === 0) params.push(params[0]);
    statements.push(`SELECT ${params.join(", ")}`);
  }
  let compared = 0;
  await withDb(ffi, (oracle) =>
    withDb(node, (db) => {
      for (const sql of statements) {
        let want;
        try {
          want = oracle.prepare(sql)!;
        } catch (err) {
          assert.ok(err instanceof SqliteError);
          assert.throws(() => db.prepare(sql), SqliteError, sql);
          continue;
        }
        const got = db.prepare(sql)!;
        try {
          assert.equal(got.paramCount, want.paramCount, sql);
          const values = Array.from({ length: want.paramCount }, (_, i) => `v${i + 1}`);
          want.bind(values);
          got.bind(values);
          const rows = want.all();
          assert.deepEqual(got.all(), rows, sql);
          // The shared scanner's names are SQLite's: the oracle takes an
          // object keyed by them (refusing a key it has no parameter for,
          // and a parameter no key names).
          const names = parameterNames(sql);
          if (!names.includes("?") && !names.includes(null)) {
            const byName = Object.fromEntries(names.map((n, i) => [n!, values[i]]));
            want.bind(byName);
            got.bind(byName);
            assert.deepEqual(want.all(), rows, sql);
            assert.deepEqual(got.all(), rows, sql);
          }
          // Leaving the values out is refused alike (or passes alike, for none).
          const error = (s: typeof want) => {
            try {
              s.bind({});
              return null;
            } catch (err) {
              return `${(err as SqliteError).code}: ${(err as Error).message}`;
            }
          };
          assert.equal(error(got), error(want), sql);
          compared++;
        } finally {
          want.finalize();
          got.finalize();
        }
      }
    }));
  assert.ok(compared >= 60, `only ${compared} of ${statements.length} statements prepared`);
});

Deno.test("loadSqlite() names what it tried when the forced FFI library cannot load", () => {
  rejects(
    () => loadSqlite({ engine: "ffi", library: "/nonexistent/libsqlite3.so" }),
    LOAD_FAILED,
    undefined,
    /Cannot load SQLite through FFI: "\/nonexistent\/libsqlite3.so": .*--sqlite-lib/,
  );
  // An explicit library makes auto mean ffi: it loads, or loading fails (tests/options_test.ts).
  rejects(
    () => loadSqlite({ engine: "auto", library: "/nonexistent/libsqlite3.so" }),
    LOAD_FAILED,
    undefined,
    /named by --sqlite-lib/,
  );
  assert.equal(ffi.engine, "ffi");
  assert.match(ffi.version, /^3\.\d+\.\d+$/);
  assert.throws(() => loadSqlite({ engine: "sqlite4" as "ffi" }), TypeError);
});

const HELPERS = new URL("./_helpers.ts", import.meta.url).href;

Deno.test("loadSqlite() takes the engine and library from the environment", async () => {
  const inChild = (env: Record<string, string | undefined>) =>
    inEnv<SqliteFromEnvironment>(env, HELPERS, "sqliteFromEnvironment");
  const node = await inChild({ NETSQLITE_ENGINE: "node", NETSQLITE_SQLITE_LIB: undefined });
  assert.equal(node.engine, "node", JSON.stringify(node.error));
  const ffi = await inChild({
    NETSQLITE_ENGINE: "ffi",
    NETSQLITE_SQLITE_LIB: "/nonexistent/env-lib.so",
  });
  assert.deepEqual(ffi.candidates, ["/nonexistent/env-lib.so"]);
  assert.deepEqual(ffi.explicit, ["/x/lib.so"]);
  assert.equal(ffi.engine, null);
  assert.equal(ffi.error?.name, "SqliteError");
  assert.equal(ffi.error?.code, LOAD_FAILED, ffi.error?.message);
  assert.match(ffi.error?.message ?? "", /env-lib\.so/);
  const bogus = await inChild({ NETSQLITE_ENGINE: "bogus", NETSQLITE_SQLITE_LIB: undefined });
  assert.equal(bogus.engine, null);
  assert.equal(bogus.error?.name, "TypeError", bogus.error?.message);
});
