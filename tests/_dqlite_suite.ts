/**
 * Core, transaction and value behaviour of the server as a list of cases
 * that take only a way to connect, so that the same cases run against the
 * single-file engine and against cluster mode (`tests/dqlite_server_test.ts`):
 * a case that passes on one and fails on the other is a difference to fix
 * or to document. A representative subset of `integration_test.ts`,
 * `transactions_test.ts` and the value cases there.
 */

import assert from "node:assert/strict";
import type { BindValue, Client, SqlValue } from "../client.ts";
import { SqliteError } from "../protocol/errors.ts";

/** What a case gets: a fresh, empty database behind a server. */
export interface SuiteTarget {
  /** A new client with one connection. */
  client(): Promise<Client>;
}

/** One case of the suite. */
export interface SuiteCase {
  name: string;
  fn(target: SuiteTarget): Promise<void>;
}

async function rejectsWith(
  p: Promise<unknown>,
  code: string,
  message?: RegExp,
): Promise<SqliteError> {
  const err = await p.then(() => undefined, (e) => e);
  assert.ok(err instanceof SqliteError, `expected SqliteError ${code}, got ${String(err)}`);
  assert.equal(err.code, code, err.message);
  if (message) assert.match(err.message, message);
  return err;
}

function same(actual: unknown, expected: unknown, label: string): void {
  if (typeof expected === "number") {
    assert.equal(typeof actual, "number", `${label}: type`);
    assert.ok(Object.is(actual, expected), `${label}: expected ${expected}, got ${actual}`);
  } else if (expected instanceof Uint8Array) {
    assert.ok(actual instanceof Uint8Array, `${label}: expected a Uint8Array`);
    assert.deepEqual(Array.from(actual), Array.from(expected), label);
  } else {
    assert.equal(typeof actual, typeof expected, `${label}: type`);
    assert.equal(actual, expected, label);
  }
}

const VALUES: [label: string, value: BindValue, type: string, expected?: SqlValue][] = [
  ["null", null, "null"],
  ["zero", 0, "integer"],
  ["negative integer", -7, "integer"],
  ["MAX_SAFE_INTEGER", Number.MAX_SAFE_INTEGER, "integer"],
  ["2^53+1 as bigint", 2n ** 53n + 1n, "integer"],
  ["-2^63", -(2n ** 63n), "integer"],
  ["2^63-1", 2n ** 63n - 1n, "integer"],
  ["small bigint", 5n, "integer", 5],
  ["real", 1.5, "real"],
  ["2^53 as number", 2 ** 53, "real"],
  ["-0", -0, "real"],
  ["Infinity", Infinity, "real"],
  ["-Infinity", -Infinity, "real"],
  ["unicode text", "héllo — 日本語 🎉👩‍👩‍👧", "text"],
  ["empty string", "", "text"],
  ["long text", "x".repeat(100_000), "text"],
  ["blob with zero bytes", new Uint8Array([0, 1, 0, 255, 0]), "blob"],
  ["empty blob", new Uint8Array(0), "blob"],
  ["true", true, "integer", 1],
  ["false", false, "integer", 0],
];

/**
 * A write that computes for about a second or more (0.8 s on a dqlite node,
 * 2.3 s with node:sqlite, on a quiet machine) before its one row: far past
 * a 100 ms deadline.
 */
const SLOW_WRITE =
  "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5000000) " +
  "INSERT INTO big SELECT sum(x) FROM c";

/** The cases. */
export const SUITE: SuiteCase[] = [
  {
    name: "exec() runs a script; run() reports changes and lastInsertRowid of its own statement",
    async fn(t) {
      await using db = await t.client();
      await db.exec(`
        CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT);
        -- a comment between statements
        INSERT INTO t (name) VALUES ('a'); /* block */ INSERT INTO t (name) VALUES ('b');
      `);
      assert.deepEqual(await db.values("SELECT id, name FROM t ORDER BY id"), [[1, "a"], [2, "b"]]);
      assert.equal(await db.exec(""), undefined);
      await db.exec(
        "CREATE TABLE s (x); INSERT INTO s VALUES ('a;b'); SELECT * FROM s; " +
          "INSERT INTO s VALUES (2)",
      );
      assert.deepEqual(await db.values("SELECT x FROM s ORDER BY rowid"), [["a;b"], [2]]);
      assert.deepEqual(await db.run("INSERT INTO t (id, name) VALUES (?, ?)", [41, "c"]), {
        changes: 1,
        lastInsertRowid: 41,
      });
      assert.deepEqual(await db.run("UPDATE t SET name = upper(name)"), {
        changes: 3,
        lastInsertRowid: 0,
      });
      const big = await db.run("INSERT INTO t (id, name) VALUES (?, 'max')", [2n ** 63n - 1n]);
      assert.equal(big.lastInsertRowid, 2n ** 63n - 1n);
      assert.equal((await db.run("DELETE FROM t")).changes, 4);
    },
  },
  {
    name: "query(), values() and get() return objects, arrays and the first row",
    async fn(t) {
      await using db = await t.client();
      await db.exec("CREATE TABLE p (id INTEGER PRIMARY KEY, name TEXT, score REAL)");
      await db.run("INSERT INTO p VALUES (1, 'ada', 9.5), (2, 'bob', NULL)");
      assert.deepEqual(await db.query("SELECT id, name, score FROM p ORDER BY id"), [
        { id: 1, name: "ada", score: 9.5 },
        { id: 2, name: "bob", score: null },
      ]);
      assert.deepEqual(await db.get("SELECT name FROM p WHERE id = ?", [2]), { name: "bob" });
      assert.equal(await db.get("SELECT name FROM p WHERE id = ?", [3]), undefined);
      assert.deepEqual(await db.query("SELECT * FROM p WHERE id > 10"), []);
      assert.deepEqual(await db.values("SELECT 1 AS a, 2 AS a"), [[1, 2]]);
      assert.deepEqual(await db.query("INSERT INTO p (name) VALUES ('cy')"), []);
      assert.deepEqual(await db.values("SELECT count(*) FROM p"), [[3]]);
    },
  },
  {
    name: "prepare() runs a statement many times until finalize(), and refuses bad SQL",
    async fn(t) {
      await using db = await t.client();
      await db.exec("CREATE TABLE k (id INTEGER PRIMARY KEY, v TEXT)");
      const insert = await db.prepare("INSERT INTO k (id, v) VALUES (?, ?)");
      assert.deepEqual(insert.columns, []);
      for (let i = 1; i <= 5; i++) {
        assert.deepEqual(await insert.run([i, `v${i}`]), { changes: 1, lastInsertRowid: i });
      }
      const select = await db.prepare("SELECT id, v FROM k WHERE id >= $min ORDER BY id");
      assert.deepEqual(select.columns, ["id", "v"]);
      assert.deepEqual(await select.all({ min: 4 }), [{ id: 4, v: "v4" }, { id: 5, v: "v5" }]);
      assert.deepEqual(await select.get({ min: 2 }), { id: 2, v: "v2" });
      await insert.finalize();
      await select.finalize();
      await rejectsWith(insert.run([6, "v6"]), "UNKNOWN_STATEMENT");
      await rejectsWith(db.prepare("SELEC 1"), "SQLITE_ERROR", /syntax error/);
      await rejectsWith(db.prepare("SELECT * FROM missing"), "SQLITE_ERROR", /no such table/);
    },
  },
  {
    name: "run() stores every value type exactly and typeof() agrees",
    async fn(t) {
      await using db = await t.client();
      await db.exec("CREATE TABLE vals (id INTEGER PRIMARY KEY, v)");
      for (let i = 0; i < VALUES.length; i++) {
        await db.run("INSERT INTO vals (id, v) VALUES (?, ?)", [i, VALUES[i][1]]);
      }
      const rows = await db.values<[SqlValue, string]>("SELECT v, typeof(v) FROM vals ORDER BY id");
      assert.equal(rows.length, VALUES.length);
      for (let i = 0; i < VALUES.length; i++) {
        const [label, value, type, expected] = VALUES[i];
        assert.equal(rows[i][1], type, `${label}: typeof`);
        same(rows[i][0], expected === undefined ? value : expected, label);
      }
    },
  },
  {
    name: "values() returns SQL expressions exactly: int64 limits, -0, infinities, blobs",
    async fn(t) {
      await using db = await t.client();
      const [row] = await db.values(
        "SELECT 9223372036854775807, -9223372036854775808, 9007199254740993, -0.0, 1e999, " +
          "0.1, '', x'', x'00ff00', NULL, 'ünï🎉'",
      );
      const expected: SqlValue[] = [
        2n ** 63n - 1n,
        -(2n ** 63n),
        2n ** 53n + 1n,
        -0,
        Infinity,
        0.1,
        "",
        new Uint8Array(0),
        new Uint8Array([0, 255, 0]),
        null,
        "ünï🎉",
      ];
      assert.equal(row.length, expected.length);
      for (let i = 0; i < expected.length; i++) same(row[i], expected[i], `column ${i}`);
    },
  },
  {
    name:
      "named parameters $a, :a, @a and ?NNN bind; unknown names and bad values are INVALID_PARAM",
    async fn(t) {
      await using db = await t.client();
      assert.deepEqual(await db.values("SELECT $a, :b, @c", { a: 1, b: "two", c: null }), [
        [1, "two", null],
      ]);
      assert.deepEqual(await db.values("SELECT :x + :x", { x: 2 }), [[4]]);
      assert.deepEqual(await db.values("SELECT ?2, ?1", ["first", "second"]), [[
        "second",
        "first",
      ]]);
      const err = await rejectsWith(db.values("SELECT $a", { a: 1, zz: 2 }), "INVALID_PARAM");
      assert.match(err.message, /zz/);
      await rejectsWith(db.values("SELECT ?", [NaN]), "INVALID_PARAM", /NaN/);
      await rejectsWith(db.values("SELECT ?", [2n ** 63n]), "INVALID_PARAM", /outside/);
      assert.deepEqual(await db.values("SELECT 1"), [[1]]);
    },
  },
  {
    name: "a missing parameter value is INVALID_PARAM; a bare key binds $a, @a and :a",
    async fn(t) {
      await using db = await t.client();
      assert.deepEqual(await db.values("SELECT $a, @a, :a", { a: 7 }), [[7, 7, 7]]);
      await rejectsWith(
        db.values("SELECT :a, :b", { a: 1 }),
        "INVALID_PARAM",
        /^Missing value for parameter ":b": the parameters object has no "b" \(or ":b"\)$/,
      );
      await rejectsWith(
        db.values("SELECT ?, ?", [1]),
        "INVALID_PARAM",
        /^Missing parameter values: the statement has 2 parameters, 1 was given$/,
      );
      await db.exec("CREATE TABLE t (x)");
      await rejectsWith(db.run("INSERT INTO t VALUES (?)"), "INVALID_PARAM", /Missing parameter/);
      assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]]);
    },
  },
  {
    name:
      "run() reports lastInsertRowid 0 for an insert that inserted nothing, after another client's",
    async fn(t) {
      await using a = await t.client();
      await using b = await t.client();
      await a.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v); CREATE TABLE e (id)");
      await a.run("INSERT INTO t VALUES (7, 'x')");
      const other = await a.run("INSERT INTO t VALUES (41, 'y')");
      assert.equal(other.lastInsertRowid, 41);
      const ignored = await b.run("INSERT OR IGNORE INTO t VALUES (7, 'z')");
      assert.deepEqual([ignored.changes, ignored.lastInsertRowid], [0, 0]);
      await a.run("INSERT INTO t VALUES (42, 'y')");
      const upsert = await b.run(
        "INSERT INTO t VALUES (7, 'u') ON CONFLICT (id) DO UPDATE SET v = excluded.v",
      );
      assert.deepEqual([upsert.changes, upsert.lastInsertRowid], [1, 0]);
      await a.run("INSERT INTO t VALUES (43, 'y')");
      const none = await b.run("INSERT INTO t SELECT id, 0 FROM e");
      assert.deepEqual([none.changes, none.lastInsertRowid], [0, 0]);
      await a.run("INSERT INTO t VALUES (44, 'y')");
      const [row] = await b.batch([{ sql: "INSERT OR IGNORE INTO t VALUES (7, 'w')" }]);
      assert.deepEqual([row.changes, row.lastInsertRowid], [0, 0]);
      const real = await b.run("INSERT INTO t VALUES (50, 'r')");
      assert.deepEqual([real.changes, real.lastInsertRowid], [1, 50]);
    },
  },
  {
    name: "constraint failures carry their SQLite codes; syntax errors, empty SQL, two statements",
    async fn(t) {
      await using db = await t.client();
      await db.exec(`
        CREATE TABLE parent (id INTEGER PRIMARY KEY);
        CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER NOT NULL REFERENCES parent(id),
          name TEXT UNIQUE, n INTEGER CHECK (n >= 0));
        INSERT INTO parent VALUES (1);
        INSERT INTO child VALUES (1, 1, 'a', 0);
      `);
      const insert = "INSERT INTO child VALUES (?, ?, ?, ?)";
      const cases: [BindValue[], string, number][] = [
        [[2, 1, "a", 0], "SQLITE_CONSTRAINT_UNIQUE", 2067],
        [[3, null, "b", 0], "SQLITE_CONSTRAINT_NOTNULL", 1299],
        [[4, 99, "c", 0], "SQLITE_CONSTRAINT_FOREIGNKEY", 787],
        [[1, 1, "d", 0], "SQLITE_CONSTRAINT_PRIMARYKEY", 1555],
        [[5, 1, "e", -1], "SQLITE_CONSTRAINT_CHECK", 275],
      ];
      for (const [params, code, sqliteCode] of cases) {
        const err = await rejectsWith(db.run(insert, params), code);
        assert.equal(err.sqliteCode, sqliteCode, code);
      }
      await rejectsWith(db.query("SELEC 1"), "SQLITE_ERROR", /syntax error/);
      await rejectsWith(
        db.query(""),
        "BAD_REQUEST",
        /SQL text holds no statement \(it is empty, or only whitespace/,
      );
      await rejectsWith(db.query("SELECT 1; SELECT 2"), "BAD_REQUEST", /more than one statement/);
      await rejectsWith(db.run("CREATE TABLE a (x); CREATE TABLE b (x)"), "BAD_REQUEST");
      assert.deepEqual(await db.values("SELECT 4; -- done"), [[4]]);
      assert.deepEqual(await db.values("SELECT count(*) FROM child"), [[1]]);
    },
  },
  {
    name: "a script stops at its first error, which says which statement failed and what ran",
    async fn(t) {
      await using db = await t.client();
      await db.exec("CREATE TABLE s (id INTEGER PRIMARY KEY)");
      // Writes only, then with a read: the failing statement is named either way.
      for (
        const script of [
          "INSERT INTO s VALUES (1); INSERT INTO s VALUES (1); INSERT INTO s VALUES (2)",
          "SELECT 1; INSERT INTO s VALUES (1); INSERT INTO s VALUES (2)",
        ]
      ) {
        await rejectsWith(
          db.exec(script),
          "SQLITE_CONSTRAINT_PRIMARYKEY",
          /^UNIQUE constraint failed: s\.id \(statement 2 of the script; the 1 before it ran\)$/,
        );
      }
      // The first statement's error is SQLite's alone.
      await rejectsWith(
        db.exec("INSERT INTO s VALUES (1); INSERT INTO s VALUES (3)"),
        "SQLITE_CONSTRAINT_PRIMARYKEY",
        /^UNIQUE constraint failed: s\.id$/,
      );
      assert.deepEqual(await db.values("SELECT id FROM s ORDER BY id"), [[1]]);
      // Inside a transaction the statements before it ran in it, which stays open.
      await db.exec("BEGIN");
      await rejectsWith(
        db.exec("INSERT INTO s VALUES (4); INSERT INTO s VALUES (4)"),
        "SQLITE_CONSTRAINT_PRIMARYKEY",
        /\(statement 2 of the script; the 1 before it ran\)$/,
      );
      assert.equal(db.inTransaction, true);
      await db.exec("COMMIT");
      assert.deepEqual(await db.values("SELECT id FROM s ORDER BY id"), [[1], [4]]);
    },
  },
  {
    name:
      "a write stopped at its { timeout } in a transaction ends it; a batch stopped applies none",
    async fn(t) {
      await using db = await t.client();
      await db.exec("CREATE TABLE t (x); CREATE TABLE big (x)");
      await db.exec("BEGIN");
      await db.run("INSERT INTO t VALUES (1)");
      await rejectsWith(
        db.run(SLOW_WRITE, [], { timeout: 100 }),
        "STATEMENT_TIMEOUT",
        // (node:sqlite runs it to its end: "exceeded its 100 ms deadline ...: it ended N ms past it")
        /^Statement (stopped after|exceeded its) 100 ms .*rolled back the transaction it was in: end it with ROLLBACK/,
      );
      const refused = /^Transaction was rolled back .*; the earlier error: STATEMENT_TIMEOUT: /;
      await rejectsWith(db.run("INSERT INTO t VALUES (2)"), "TX_ABORTED", refused);
      await rejectsWith(db.exec("COMMIT"), "TX_ABORTED", refused);
      await db.exec("ROLLBACK");
      assert.equal(db.inTransaction, false);
      assert.deepEqual(await db.values("SELECT (SELECT count(*) FROM t), count(*) FROM big"), [
        [0, 0],
      ]);

      await rejectsWith(
        db.batch([{ sql: "INSERT INTO t VALUES (3)" }, { sql: SLOW_WRITE }, { sql: "SELECT 1" }], {
          timeout: 100,
        }),
        "STATEMENT_TIMEOUT",
        /^Batch statement 2 of 3 failed, nothing was applied: Statement (stopped after|exceeded its) 100 ms/,
      );
      assert.equal(db.inTransaction, false);
      assert.deepEqual(await db.values("SELECT (SELECT count(*) FROM t), count(*) FROM big"), [
        [0, 0],
      ]);
      await db.run("INSERT INTO t VALUES (4)");
      assert.deepEqual(await db.values("SELECT x FROM t"), [[4]]);
    },
  },
  {
    name: "batch() returns one result per statement and applies nothing when one fails",
    async fn(t) {
      await using db = await t.client();
      await db.exec("CREATE TABLE b (id INTEGER PRIMARY KEY, v TEXT UNIQUE)");
      const results = await db.batch([
        { sql: "INSERT INTO b (v) VALUES (?)", params: ["one"] },
        { sql: "INSERT INTO b (v) VALUES (:v)", params: { v: "two" } },
        { sql: "SELECT id, v FROM b ORDER BY id" },
      ]);
      assert.equal(results.length, 3);
      assert.deepEqual(results[0].changes, 1);
      assert.deepEqual(results[1].lastInsertRowid, 2);
      assert.deepEqual(results[2].rows, [{ id: 1, v: "one" }, { id: 2, v: "two" }]);
      const err = await rejectsWith(
        db.batch([
          { sql: "INSERT INTO b (v) VALUES ('three')" },
          { sql: "INSERT INTO b (v) VALUES ('one')" },
        ]),
        "SQLITE_CONSTRAINT_UNIQUE",
      );
      assert.match(err.message, /Batch statement 2 of 2 failed, nothing was applied/);
      assert.deepEqual(await db.values("SELECT v FROM b ORDER BY id"), [["one"], ["two"]]);
      assert.equal(db.inTransaction, false);
    },
  },
  {
    name: "a transaction is invisible to other clients until COMMIT; ROLLBACK undoes it",
    async fn(t) {
      await using a = await t.client();
      await using b = await t.client();
      await a.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT)");
      await a.exec("BEGIN");
      await a.run("INSERT INTO t (who) VALUES ('a')");
      assert.equal(a.inTransaction, true);
      assert.deepEqual(await a.query("SELECT who FROM t"), [{ who: "a" }]);
      assert.deepEqual(await b.query("SELECT who FROM t"), []);
      await a.exec("COMMIT");
      assert.equal(a.inTransaction, false);
      assert.deepEqual(await b.query("SELECT who FROM t"), [{ who: "a" }]);
      await b.exec("BEGIN");
      await b.run("DELETE FROM t");
      await b.exec("ROLLBACK");
      assert.deepEqual(await a.values("SELECT count(*) FROM t"), [[1]]);
    },
  },
  {
    name: "transaction() commits, rolls back on throw, and nests with savepoints",
    async fn(t) {
      await using db = await t.client();
      await db.exec("CREATE TABLE t (x)");
      assert.equal(
        await db.transaction(async (tx) => {
          await tx.run("INSERT INTO t VALUES ('outer')");
          await assert.rejects(
            tx.transaction(async (inner) => {
              await inner.run("INSERT INTO t VALUES ('inner')");
              throw new Error("inner fails");
            }),
            { message: "inner fails" },
          );
          assert.equal(tx.inTransaction, true);
          return "done";
        }),
        "done",
      );
      await assert.rejects(
        db.transaction(async (tx) => {
          await tx.run("INSERT INTO t VALUES ('lost')");
          throw new Error("boom");
        }),
        { message: "boom" },
      );
      assert.equal(db.inTransaction, false);
      assert.deepEqual(await db.values("SELECT x FROM t ORDER BY rowid"), [["outer"]]);
    },
  },
  {
    name: "a statement that makes SQLite roll the transaction back ends it: refused until ROLLBACK",
    async fn(t) {
      await using db = await t.client();
      await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)");
      await db.run("INSERT INTO t VALUES (1)");
      const ended = /; SQLite rolled back the transaction it was in: end it with ROLLBACK/;
      const refused =
        /^Transaction was rolled back by an earlier statement's error, so this .*; the earlier error: SQLITE_CONSTRAINT_/;
      await db.exec("BEGIN");
      await db.run("INSERT INTO t VALUES (2)");
      await rejectsWith(
        db.run("INSERT OR ROLLBACK INTO t VALUES (1)"),
        "SQLITE_CONSTRAINT_PRIMARYKEY",
        ended,
      );
      // Nothing meant for the transaction runs in autocommit.
      await rejectsWith(db.run("INSERT INTO t VALUES (3)"), "TX_ABORTED", refused);
      await rejectsWith(db.exec("COMMIT"), "TX_ABORTED", refused);
      await db.exec("ROLLBACK"); // right after the refused COMMIT: nothing left to undo
      assert.deepEqual(await db.values("SELECT id FROM t ORDER BY id"), [[1]]);

      await db.exec(
        "CREATE TABLE g (x); CREATE TRIGGER g_no BEFORE INSERT ON g WHEN NEW.x < 0 " +
          "BEGIN SELECT RAISE(ROLLBACK, 'negative'); END",
      );
      await db.exec("BEGIN");
      await db.run("INSERT INTO t VALUES (5)");
      await rejectsWith(db.run("INSERT INTO g VALUES (-1)"), "SQLITE_CONSTRAINT_TRIGGER", ended);
      await rejectsWith(
        db.values("SELECT 1"),
        "TX_ABORTED",
        /SQLITE_CONSTRAINT_TRIGGER: negative$/,
      );
      await db.exec("ROLLBACK");
      await db.run("INSERT INTO t VALUES (6)");
      assert.deepEqual(await db.values("SELECT id FROM t ORDER BY id"), [[1], [6]]);
    },
  },
  {
    name: "deferred transactions that read then write, from 3 clients at once, all commit in turn",
    async fn(t) {
      await using setup = await t.client();
      await setup.exec(
        "CREATE TABLE ctr (id INTEGER PRIMARY KEY, n INTEGER); INSERT INTO ctr VALUES (1, 0)",
      );
      const clients = await Promise.all([t.client(), t.client(), t.client()]);
      const pause = () => new Promise((r) => setTimeout(r, 3));
      try {
        await Promise.all(clients.map(async (c, k) => {
          for (let i = 0; i < 8; i++) {
            if (k === 2) {
              // Raw BEGIN (deferred) through exec(), as a script would send it.
              await c.exec("BEGIN");
              const [[n]] = await c.values<[number]>("SELECT n FROM ctr WHERE id = 1");
              await pause();
              await c.run("UPDATE ctr SET n = ? WHERE id = 1", [n + 1]);
              await c.exec("COMMIT");
              continue;
            }
            await c.transaction(async (tx) => {
              const row = await tx.get<{ n: number }>("SELECT n FROM ctr WHERE id = 1");
              await pause();
              await tx.run("UPDATE ctr SET n = ? WHERE id = 1", [row!.n + 1]);
            });
          }
        }));
      } finally {
        for (const c of clients) await c.close();
      }
      assert.deepEqual(await setup.values("SELECT n FROM ctr"), [[24]]);
    },
  },
  {
    name: "RELEASE of a savepoint opened outside BEGIN commits and ends the transaction",
    async fn(t) {
      await using db = await t.client();
      await using other = await t.client();
      await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)");
      await db.exec("SAVEPOINT a");
      await db.run("INSERT INTO t VALUES (1)");
      await db.exec("SAVEPOINT b");
      await db.run("INSERT INTO t VALUES (2)");
      await db.exec("RELEASE b");
      assert.deepEqual(await other.values("SELECT id FROM t"), []);
      assert.equal(db.inTransaction, true);
      await db.exec("RELEASE a");
      assert.equal(db.inTransaction, false);
      assert.deepEqual(await other.values("SELECT id FROM t ORDER BY id"), [[1], [2]]);
      await rejectsWith(db.exec("COMMIT"), "SQLITE_ERROR", /no transaction is active/);
      await other.run("INSERT INTO t VALUES (3)");
      assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[3]]);
    },
  },
  {
    name: "close() inside a transaction rolls it back; the next writer is not held up",
    async fn(t) {
      await using b = await t.client();
      await b.exec("CREATE TABLE t (x)");
      const a = await t.client();
      await a.exec("BEGIN IMMEDIATE");
      await a.run("INSERT INTO t VALUES (1)");
      await a.close();
      await b.run("INSERT INTO t VALUES (2)");
      assert.deepEqual(await b.values("SELECT x FROM t"), [[2]]);
    },
  },
  {
    name:
      "a query that fails while it runs reports SQLite's code and message, whatever its columns",
    async fn(t) {
      await using db = await t.client();
      await db.exec("CREATE TABLE seq (x INTEGER)");
      await db.run(
        "INSERT INTO seq WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r " +
          "WHERE x < 3000) SELECT x FROM r",
      );
      const boom = "abs(-9223372036854775808)";
      // 2 and 5 columns: dqlite's failure once decoded as SQLITE_INTERNAL "a" and SQLITE_BUSY.
      for (const n of [1, 2, 5, 18]) {
        const cols = Array.from({ length: n - 1 }, (_, i) => `${i} AS c${i}, `).join("");
        const started = performance.now();
        await rejectsWith(
          db.values(`SELECT ${cols}${boom} AS b`),
          "SQLITE_ERROR",
          /^integer overflow$/,
        );
        assert.ok(performance.now() - started < 1_000, `${n} columns: failed at once`);
      }
      // After rows were produced, in the first batch and in a later one.
      for (const at of [3, 2500]) {
        await rejectsWith(
          db.values(`SELECT x, CASE WHEN x = ${at} THEN ${boom} ELSE x END AS y FROM seq`),
          "SQLITE_ERROR",
          /^integer overflow$/,
        );
      }
      await rejectsWith(
        db.get(`SELECT 1 AS a, ${boom} AS b`),
        "SQLITE_ERROR",
        /^integer overflow$/,
      );
      await rejectsWith(
        db.values("SELECT 1 AS a, json('{') AS j"),
        "SQLITE_ERROR",
        /^malformed JSON$/,
      );
      await rejectsWith(
        db.values("SELECT 1 AS a, zeroblob(2000000000) AS z"),
        "SQLITE_TOOBIG",
        /string or blob too big/,
      );
      // Inside a transaction: the failed read leaves it open and usable.
      await db.exec("BEGIN");
      await db.run("INSERT INTO seq VALUES (0)");
      await rejectsWith(
        db.values(`SELECT 1, 2, 3, 4, ${boom}`),
        "SQLITE_ERROR",
        /^integer overflow$/,
      );
      assert.equal(db.inTransaction, true);
      await db.exec("COMMIT");
      assert.deepEqual(await db.values("SELECT count(*) FROM seq"), [[3001]]);
    },
  },
  {
    name: "iterate() streams 3000 rows in order",
    async fn(t) {
      await using db = await t.client();
      await db.exec(
        "CREATE TABLE r (n INTEGER PRIMARY KEY); WITH RECURSIVE c(n) AS " +
          "(SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 3000) INSERT INTO r SELECT n FROM c",
      );
      let expect = 1;
      for await (const row of db.iterate<{ n: number }>("SELECT n FROM r ORDER BY n")) {
        assert.equal(row.n, expect++);
      }
      assert.equal(expect, 3001);
    },
  },
];
