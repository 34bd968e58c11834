/**
 * Errors SQLite raises while rows are stepped, on the node:sqlite engine:
 * its `iterate()` reports them as the normal end of rows, so the binding
 * confirms each end (in the same snapshot) and reads other statements at
 * once. Nothing here may end short silently or let a failed write look done.
 */

import assert from "node:assert/strict";
import { SqliteError } from "../protocol/errors.ts";
import type { Db, SqlValue, Stmt } from "../engine/binding/binding.ts";
import { loadSqlite } from "../engine/binding/load.ts";
import { toSqliteError } from "../engine/binding/node.ts";
import { startServer } from "./_helpers.ts";

const node = loadSqlite({ engine: "node" });
const INT64_MIN = -9223372036854775808n;

/** Opens a fresh WAL database twice (two connections); removed afterwards. */
async function withDbs(fn: (a: Db, b: Db) => void): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-node-step-" });
  const a = node.open(`${dir}/test.db`, { readOnly: false, busyTimeout: 1000 });
  const b = node.open(`${dir}/test.db`, { readOnly: false, busyTimeout: 1000 });
  try {
    a.exec("PRAGMA journal_mode = WAL");
    a.exec("CREATE TABLE t(v INTEGER); CREATE TABLE u(k INTEGER UNIQUE)");
    fn(a, b);
  } finally {
    a.close();
    b.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** Steps `stmt` to its end, returning its rows (or throwing what `step()` threw). */
function stepAll(stmt: Stmt, args: SqlValue[] = []): { rows: SqlValue[][]; error: unknown } {
  stmt.bind(args);
  const rows: SqlValue[][] = [];
  try {
    while (stmt.step()) rows.push(stmt.row());
  } catch (error) {
    return { rows, error };
  }
  return { rows, error: null };
}

function assertSqliteError(err: unknown, code: string, message: RegExp): void {
  assert.ok(err instanceof SqliteError, `expected SqliteError, got ${err}`);
  assert.equal(err.code, code, err.message);
  assert.match(err.message, message);
}

Deno.test("node step(): an error on a later row is thrown after the rows before it", () =>
  withDbs((db) => {
    db.exec(`INSERT INTO t VALUES (1), (2), (${INT64_MIN}), (4)`);
    const stmt = db.prepare("SELECT abs(v) FROM t ORDER BY rowid")!;
    const { rows, error } = stepAll(stmt);
    stmt.finalize();
    assert.deepEqual(rows, [[1], [2]]);
    assertSqliteError(error, "SQLITE_ERROR", /integer overflow/);
  }));

Deno.test("node step(): an error at the first step is thrown (aggregate, bound values)", () =>
  withDbs((db) => {
    db.exec("INSERT INTO t VALUES (9223372036854775807), (1)");
    const stmt = db.prepare("SELECT sum(v) FROM t WHERE v <= ?")!;
    const { rows, error } = stepAll(stmt, [9223372036854775807n]);
    assert.deepEqual(rows, []);
    assertSqliteError(error, "SQLITE_ERROR", /integer overflow/);
    // The same statement still ends normally where nothing overflows.
    assert.deepEqual(stepAll(stmt, [1]), { rows: [[1]], error: null });
    stmt.finalize();
  }));

Deno.test("node step(): a failing write with RETURNING throws and changes nothing", () =>
  withDbs((db) => {
    db.exec("INSERT INTO u VALUES (1)");
    const stmt = db.prepare("INSERT INTO u VALUES (2), (1) RETURNING k")!;
    const { rows, error } = stepAll(stmt);
    stmt.finalize();
    assert.deepEqual(rows, []);
    assertSqliteError(error, "SQLITE_CONSTRAINT_UNIQUE", /UNIQUE constraint failed: u\.k/);
    const check = db.prepare("SELECT k FROM u")!;
    assert.deepEqual(stepAll(check), { rows: [[1]], error: null });
    check.finalize();
  }));

Deno.test("node step(): the end is confirmed in the query's own snapshot, then released", () =>
  withDbs((a, b) => {
    a.exec("INSERT INTO t VALUES (1), (2)");
    // Text ending in a comment and a semicolon (kept in the statement's text).
    const stmt = a.prepare("SELECT v FROM t WHERE v > ? -- all of them\n;")!;
    stmt.bind([0]);
    assert.equal(stmt.step(), true);
    assert.equal(stmt.step(), true);
    // Another connection adds a row after the query saw its last one: the
    // query's end holds (its snapshot has two rows), and no error is raised.
    b.exec("INSERT INTO t VALUES (3)");
    assert.equal(stmt.step(), false);
    // The snapshot is not held past the end.
    assert.deepEqual(stepAll(stmt, [0]).rows, [[1], [2], [3]]);
    stmt.finalize();
  }));

Deno.test("node step(): all() after some steps and a reset mid-way keep errors and rows", () =>
  withDbs((db) => {
    db.exec(`INSERT INTO t VALUES (1), (2), (${INT64_MIN})`);
    const stmt = db.prepare("SELECT abs(v) FROM t ORDER BY rowid")!;
    stmt.bind([]);
    assert.equal(stmt.step(), true);
    assert.throws(() => stmt.all(), /integer overflow/);
    stmt.bind([]);
    assert.equal(stmt.step(), true);
    stmt.reset();
    const ok = db.prepare("SELECT v FROM t WHERE v > 0 ORDER BY rowid")!;
    assert.deepEqual(stepAll(ok), { rows: [[1], [2]], error: null });
    ok.finalize();
    stmt.finalize();
  }));

Deno.test("node engine: get(), iterate() and recursive queries throw SQLite's error", async () => {
  await using srv = await startServer({ engine: "node" });
  const db = await srv.client();
  try {
    await db.exec(`CREATE TABLE t(v INTEGER); INSERT INTO t VALUES (1), (2), (${INT64_MIN}), (4)`);
    await db.exec("CREATE TABLE u(k INTEGER PRIMARY KEY); INSERT INTO u VALUES (1)");
    await assert.rejects(async () => {
      for await (const _ of db.iterate("SELECT abs(v) AS a FROM t ORDER BY rowid"));
    }, (err) => (assertSqliteError(err, "SQLITE_ERROR", /integer overflow/), true));
    await assert.rejects(
      db.get("SELECT sum(abs(v)) FROM t WHERE v > 0 OR v < 0"),
      (err) => (assertSqliteError(err, "SQLITE_ERROR", /integer overflow/), true),
    );
    await assert.rejects(
      db.get("INSERT INTO u VALUES (1) RETURNING k"),
      (err) => (assertSqliteError(err, "SQLITE_CONSTRAINT_PRIMARYKEY", /u\.k/), true),
    );
    assert.deepEqual(await db.get("INSERT INTO u VALUES (2) RETURNING k"), { k: 2 });
    assert.equal(await db.get("SELECT k FROM u WHERE k = 3"), undefined);
    // A recursive query is stepped row by row for its deadline on node.
    await assert.rejects(
      db.query(
        `WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5)
         SELECT abs(CASE x WHEN 3 THEN -9223372036854775807 - 1 ELSE x END) FROM c`,
      ),
      (err) => (assertSqliteError(err, "SQLITE_ERROR", /integer overflow/), true),
    );
    assert.deepEqual(await db.query("SELECT k FROM u ORDER BY k"), [{ k: 1 }, { k: 2 }]);
  } finally {
    await db.close();
  }
});

Deno.test("node step(): a query that answers differently each run (random()) ends without a false error", async () => {
  await withDbs((a) => {
    a.exec(
      "WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s LIMIT 100) " +
        "INSERT INTO t SELECT x FROM s",
    );
    const sample = a.prepare("SELECT v FROM t WHERE abs(random()) % 10 = 0")!;
    const rare = a.prepare("SELECT v FROM t WHERE abs(random()) % 100 = 0")!;
    try {
      for (let i = 0; i < 30; i++) {
        const { rows, error } = stepAll(sample);
        assert.equal(error, null);
        assert.ok(rows.length <= 100);
        assert.equal(stepAll(rare).error, null);
      }
    } finally {
      sample.finalize();
      rare.finalize();
    }
  });
});

Deno.test("node step(): a query the same transaction writes to while it is stepped ends without a false error", async () => {
  await withDbs((a) => {
    a.exec(
      "WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s LIMIT 50) " +
        "INSERT INTO t SELECT x FROM s",
    );
    a.exec("BEGIN");
    const scan = a.prepare("SELECT v FROM t ORDER BY v DESC")!; // sorted at the first step
    try {
      scan.bind([]);
      let n = 0;
      while (scan.step()) {
        if (++n % 10 === 0) a.exec(`INSERT INTO t VALUES (${1000 + n})`);
      }
      assert.equal(n, 50);
    } finally {
      scan.finalize();
      a.exec("COMMIT");
    }
  });
});

Deno.test("A query ending in a comment SQLite accepts unterminated reads alike on every path, on both engines", async () => {
  for (const engine of ["ffi", "node"] as const) {
    await using srv = await startServer({ engine });
    const db = await srv.client();
    try {
      for (
        const [sql, rows] of [
          ["SELECT 1 /* never closed", [[1]]],
          ["VALUES (1), (2) /* never closed ", [[1], [2]]],
          ["SELECT 3; /* after the end", [[3]]],
          ["SELECT 4 -- to the end of the text", [[4]]],
        ] as const
      ) {
        const what = `${engine}: ${sql}`;
        assert.deepEqual(await db.values(sql), rows, what);
        const seen: unknown[] = [];
        for await (const row of db.iterate(sql, [], { arrays: true })) seen.push(row);
        assert.deepEqual(seen, rows, `iterate() ${what}`);
        const [batched] = await db.batch([{ sql }], { arrays: true });
        assert.deepEqual(batched.rows, rows, `batch() ${what}`);
        await db.transaction(async (tx) => {
          const inTx: unknown[] = [];
          for await (const row of tx.iterate(sql, [], { arrays: true })) inTx.push(row);
          assert.deepEqual(inTx, rows, `iterate() in a transaction ${what}`);
        });
      }
    } finally {
      await db.close();
    }
  }
});

Deno.test("node engine: an error node:sqlite gives without a code (backup() on a full disk) keeps SQLite's code from its text", () => {
  // What node:sqlite's backup() throws on ENOSPC (seen on a 4 MiB tmpfs): no errcode.
  const full = toSqliteError(
    Object.assign(new Error("database or disk is full"), { code: "ERR_SQLITE_ERROR" }),
  );
  assert.equal(full.code, "SQLITE_FULL");
  assert.equal(full.sqliteCode, 13);
  const io = toSqliteError(
    Object.assign(new Error("disk I/O error"), { code: "ERR_SQLITE_ERROR" }),
  );
  assert.equal(io.code, "SQLITE_IOERR");
  // Any other text stays a plain SQLITE_ERROR; an errcode, when given, wins.
  const other = toSqliteError(
    Object.assign(new Error("database or disk is full!"), { code: "ERR_SQLITE_ERROR" }),
  );
  assert.equal(other.code, "SQLITE_ERROR");
  const given = toSqliteError(
    Object.assign(new Error("database or disk is full"), { code: "ERR_SQLITE_ERROR", errcode: 1 }),
  );
  assert.equal(given.code, "SQLITE_ERROR");
});
