/**
 * Change feeds equal what is committed: each test replays the feed's events
 * onto a copy of the tables and compares it with the tables as committed,
 * after SQL that SQLite undoes or keeps in ways the text does not show
 * (comments before `SAVEPOINT` / `ROLLBACK TO`, `DELETE` without WHERE in
 * any spelling, statements failing under `OR FAIL`, `OR ABORT`,
 * `OR ROLLBACK`, `RAISE(...)`). The feed needs the FFI engine.
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { type Client, connect, type Subscription } from "../client.ts";
import type { SqliteError } from "../protocol/errors.ts";
import { startServer, within } from "./_helpers.ts";
import type { Change } from "../engine/change_log.ts";
import { BLOCKED, Engine, type EngineSession } from "../engine/engine.ts";
import { FfiSqlite } from "../engine/binding/ffi.ts";
import { type Symbols, symbols } from "../engine/binding/_ffi_symbols.ts";
import { loadSqlite } from "../engine/binding/load.ts";

const ffi = Deno.env.get("NETSQLITE_ENGINE") !== "node";

/** Rows of each table by rowid, as the feed's events build them. */
type Mirror = Map<string, Map<string, unknown>>;

/** A copy of `tables` as they are now (before the feed starts). */
async function snapshot(db: Client, tables: string[]): Promise<Mirror> {
  const m: Mirror = new Map();
  for (const t of tables) m.set(t, await rowsOf(db, t));
  return m;
}

async function rowsOf(db: Client, table: string): Promise<Map<string, unknown>> {
  // (`_rowid_`: a test table has a column named `rowid`.)
  const ids = await db.values<[number]>(`SELECT _rowid_ FROM ${table} ORDER BY _rowid_`);
  const rows = await db.query(`SELECT * FROM ${table} ORDER BY _rowid_`);
  return new Map(ids.map(([id], i) => [String(id), rows[i]]));
}

/**
 * Applies the feed's events to `mirror` up to a marker row written now (so
 * every earlier commit has been read), then asserts that the mirror equals
 * the committed tables.
 */
async function assertReplayed(db: Client, sub: Subscription, mirror: Mirror): Promise<void> {
  await db.run("INSERT INTO marker DEFAULT VALUES");
  const reading = (async () => {
    for (;;) {
      const r = await sub.next();
      assert.ok(!r.done, "the feed ended");
      const e = r.value;
      assert.equal(e.type, "table", `unexpected event ${JSON.stringify(e)}`);
      if (e.type !== "table") continue;
      if (e.table === "marker") return;
      const rows = mirror.get(e.table);
      assert.ok(rows !== undefined, `event for an unexpected table: ${JSON.stringify(e)}`);
      if (e.rowid === null) {
        assert.equal(e.op, "delete");
        rows.clear();
      } else if (e.op === "delete") {
        rows.delete(String(e.rowid));
      } else if (e.value !== null && e.value !== undefined) {
        rows.set(String(e.rowid), e.value);
      }
    }
  })();
  assert.notEqual(await within(reading, 10_000), "timeout", "timed out waiting for the marker");
  for (const [table, rows] of mirror) {
    assert.deepEqual(
      Object.fromEntries(rows),
      Object.fromEntries(await rowsOf(db, table)),
      `the feed's ${table} differs from the committed one`,
    );
  }
}

Deno.test({
  name: "feed replay: SAVEPOINT / ROLLBACK TO after a comment, quoted and in any case",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await connect({ ...srv.connectOptions, max: 4 });
    await db.exec(
      "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); CREATE TABLE marker (id INTEGER PRIMARY KEY);" +
        "INSERT INTO t VALUES (1, 'alive'), (2, 'alive')",
    );
    const mirror = await snapshot(db, ["t"]);
    await using sub = await db.subscribe({ values: true });
    await using r = await db.reserve();
    await r.exec(
      "BEGIN; UPDATE t SET v = 'x' WHERE 0; SAVEPOINT a; DELETE FROM t WHERE id = 1;\n" +
        "-- changed my mind\nROLLBACK TO a; COMMIT;",
    );
    await r.exec(
      "BEGIN; INSERT INTO t (v) VALUES ('kept');\n/* step */ SAVEPOINT a; " +
        "INSERT INTO t (v) VALUES ('undone'); ROLLBACK TO a; COMMIT;",
    );
    await r.exec(
      `BEGIN; SAVEPOINT "Outer Name"; INSERT INTO t (v) VALUES ('kept 2'); ` +
        "/* c */ SAVEPOINT [inner]; DELETE FROM t WHERE id = 2; " +
        "-- undo the inner one only\nROLLBACK TRANSACTION TO SAVEPOINT INNER; " +
        "RELEASE `OUTER NAME`; COMMIT;",
    );
    // Each statement its own call, a comment before ROLLBACK TO.
    await r.exec("BEGIN");
    await r.run("INSERT INTO t (v) VALUES ('kept 3')");
    await r.exec("SAVEPOINT a");
    await r.run("INSERT INTO t (v) VALUES ('undone 3')");
    await r.exec("-- undo\nROLLBACK TO a");
    await r.exec("COMMIT");
    // A savepoint that starts the transaction, released after a comment: commits.
    await r.exec("/* x */ SAVEPOINT s1; INSERT INTO t (v) VALUES ('kept 4'); -- y\nRELEASE s1");
    await assertReplayed(db, sub, mirror);
    assert.equal(mirror.get("t")!.size, 6);
  },
});

Deno.test({
  name: "feed replay: DELETE without WHERE in any spelling, in triggers, never on TEMP tables",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await connect({ ...srv.connectOptions, max: 4 });
    await db.exec(
      "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); CREATE TABLE marker (id INTEGER PRIMARY KEY);" +
        "CREATE TABLE a (id INTEGER PRIMARY KEY); CREATE TABLE b (id INTEGER PRIMARY KEY, v);" +
        "CREATE TRIGGER wipe_b AFTER INSERT ON a BEGIN DELETE FROM b; END;" +
        "CREATE VIEW tv AS SELECT * FROM t;" +
        "CREATE TRIGGER tv_del INSTEAD OF DELETE ON tv BEGIN DELETE FROM t WHERE id = old.id; END;",
    );
    const mirror = await snapshot(db, ["t", "a", "b"]);
    await using sub = await db.subscribe({ values: true });
    const forms = [
      "DELETE FROM t",
      "DELETE FROM t -- wipe\n",
      "/* wipe */ DELETE FROM t",
      "DELETE FROM t AS x",
      "WITH c AS (SELECT 1) DELETE FROM t",
      'DELETE FROM main."T"',
    ];
    for (const sql of forms) {
      await db.run("INSERT INTO t (v) VALUES ('a'), ('b'), ('c')");
      assert.equal((await db.run(sql)).changes, 3, sql);
    }
    // In a script and a transaction, between inserts.
    await db.exec("INSERT INTO t (v) VALUES ('z'); DELETE FROM t; INSERT INTO t (v) VALUES ('y');");
    await db.transaction(async (tx) => {
      await tx.run("INSERT INTO t (v) VALUES ('in tx')");
      await tx.run("/* all */ DELETE FROM t");
      await tx.run("INSERT INTO t (v) VALUES ('after')");
    });
    // A trigger's DELETE without WHERE (uncounted by changes()).
    await db.run("INSERT INTO b (v) VALUES (1), (2), (3)");
    await db.run("INSERT INTO a DEFAULT VALUES");
    assert.deepEqual(await db.values("SELECT count(*) FROM b"), [[0]]);
    // Through a view's INSTEAD OF trigger: rows reported one by one, no phantom for the view.
    await db.run("INSERT INTO t (v) VALUES ('v1'), ('v2')");
    await db.run("DELETE FROM tv");
    // A TEMP table's rows are not seen, and its emptying reports nothing.
    await using r = await db.reserve();
    await r.exec(
      "CREATE TEMP TABLE scratch (id INTEGER PRIMARY KEY, v TEXT);" +
        "INSERT INTO scratch VALUES (5, 'temp'), (6, 'temp')",
    );
    assert.equal((await r.run("DELETE FROM scratch")).changes, 2);
    await r.run("INSERT INTO t (v) VALUES ('last')");
    await assertReplayed(db, sub, mirror);
    assert.equal(mirror.get("t")!.size, 1);
  },
});

Deno.test({
  name: "feed replay: statements failing under OR FAIL keep rows, OR ABORT / OR ROLLBACK undo",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await connect({ ...srv.connectOptions, max: 4 });
    await db.exec(
      "CREATE TABLE marker (id INTEGER PRIMARY KEY);" +
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE); INSERT INTO t (v) VALUES ('dup');" +
        "CREATE TABLE u (id INTEGER PRIMARY KEY, n INTEGER CHECK (n < 3));" +
        "INSERT INTO u (n) VALUES (0), (1), (2);" +
        "CREATE TABLE w (id INTEGER PRIMARY KEY, v TEXT); CREATE TABLE wlog (id INTEGER PRIMARY KEY, v);" +
        "CREATE TRIGGER w_log AFTER INSERT ON w BEGIN INSERT INTO wlog (v) VALUES (new.v); END;" +
        "CREATE TRIGGER w_check BEFORE INSERT ON w BEGIN " +
        "SELECT CASE new.v WHEN 'fail' THEN RAISE(FAIL, 'no') WHEN 'abort' THEN RAISE(ABORT, 'no') " +
        "WHEN 'rollback' THEN RAISE(ROLLBACK, 'no') END; END;",
    );
    const mirror = await snapshot(db, ["t", "u", "w", "wlog"]);
    await using sub = await db.subscribe({ values: true });
    await using r = await db.reserve();
    const statements = (n: number): string[] => [
      `INSERT OR FAIL INTO t (v) VALUES ('f${n}a'), ('f${n}b'), ('dup'), ('f${n}c')`,
      `INSERT OR ABORT INTO t (v) VALUES ('a${n}a'), ('dup'), ('a${n}b')`,
      `INSERT INTO t (v) VALUES ('d${n}a'), ('dup')`,
      `INSERT OR IGNORE INTO t (v) VALUES ('i${n}a'), ('dup'), ('i${n}b')`,
      `INSERT OR REPLACE INTO t (id, v) VALUES (1, 'dup'), (-${n}, 'r${n}')`,
      "UPDATE OR FAIL u SET n = n + 1",
      "UPDATE u SET n = id - 1",
      `INSERT INTO w (v) VALUES ('w${n}a'), ('w${n}b'), ('fail'), ('w${n}c')`,
      `INSERT INTO w (v) VALUES ('w${n}d'), ('abort')`,
      `INSERT OR ROLLBACK INTO t (v) VALUES ('rb${n}'), ('dup')`,
      `INSERT INTO w (v) VALUES ('w${n}e'), ('rollback')`,
    ];
    // In autocommit.
    const failures: string[] = [];
    for (const sql of statements(1)) {
      await r.run(sql).catch((e: SqliteError) => failures.push(e.code));
    }
    // Inside a transaction, between other writes (OR ROLLBACK and
    // RAISE(ROLLBACK) end it: COMMIT fails then, and ROLLBACK ends it for the session).
    let i = 0;
    for (const sql of statements(2)) {
      await r.exec("BEGIN");
      await r.run("INSERT INTO t (v) VALUES (?)", [`before ${++i}`]);
      await r.run(sql).catch((e: SqliteError) => failures.push(e.code));
      await r.run("INSERT INTO t (v) VALUES (?)", [`after ${i}`]).catch(() => {});
      await r.exec("COMMIT").catch(() => r.exec("ROLLBACK"));
    }
    // Through the pool (the engine's group commit), and db.transaction().
    for (const sql of statements(3)) {
      await db.run(sql).catch((e: SqliteError) => failures.push(e.code));
    }
    for (const sql of statements(4)) {
      await db.transaction(async (tx) => {
        await tx.run("INSERT INTO t (v) VALUES (?)", [`tx before ${++i}`]);
        await tx.run(sql).catch((e: SqliteError) => failures.push(e.code));
      }).catch(() => {});
    }
    assert.equal(failures.length, 32, failures.join());
    await assertReplayed(db, sub, mirror);
    // What SQLite kept: the rows before each OR FAIL / RAISE(FAIL) failure.
    const kept = (await db.values<[string]>("SELECT v FROM t UNION ALL SELECT v FROM w"))
      .map(([v]) => v);
    for (const n of [1, 2, 3, 4]) {
      for (const v of [`f${n}a`, `f${n}b`, `w${n}a`, `w${n}b`, `i${n}a`, `i${n}b`, `r${n}`]) {
        assert.ok(kept.includes(v), `${v} kept`);
      }
      for (const v of [`f${n}c`, `a${n}a`, `d${n}a`, `w${n}c`, `w${n}d`, `rb${n}`, `w${n}e`]) {
        assert.ok(!kept.includes(v), `${v} undone`);
      }
    }
  },
});

Deno.test({
  name:
    "feed replay: writes undone by RESULT_TOO_LARGE (RETURNING larger than a frame) in autocommit, BEGIN and a SAVEPOINT",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer({ maxFrameSize: 64 * 1024 });
    await using db = await connect({ ...srv.connectOptions, max: 4 });
    await db.exec(
      "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB); CREATE TABLE marker (id INTEGER PRIMARY KEY);" +
        "INSERT INTO t (v) VALUES ('a'), ('b')",
    );
    const mirror = await snapshot(db, ["t"]);
    await using sub = await db.subscribe({ values: true });
    await using r = await db.reserve();
    const undone = [
      "DELETE FROM t WHERE id = 1 RETURNING zeroblob(100000)",
      "UPDATE t SET v = 'c' WHERE id = 2 RETURNING zeroblob(100000)",
      "INSERT INTO t (v) VALUES ('d') RETURNING zeroblob(100000)",
    ];
    for (const [pre, post] of [[null, null], ["BEGIN", "COMMIT"], ["SAVEPOINT a", "RELEASE a"]]) {
      for (let run = 0; run < 3; run++) {
        if (pre !== null) await r.exec(pre);
        for (const sql of undone) {
          for (const call of [r.get(sql), r.query(sql)]) {
            const err = await call.then(() => null, (e: SqliteError) => e);
            assert.equal(err?.code, "RESULT_TOO_LARGE", `${pre} ${sql}: ${err}`);
          }
        }
        await r.run("INSERT INTO t (v) VALUES (?)", [run]);
        if (post !== null) await r.exec(post);
      }
    }
    await assertReplayed(db, sub, mirror);
    assert.equal(mirror.get("t")!.size, 11);
  },
});

Deno.test({
  name:
    "feed replay: INSERT OR FAIL ... RETURNING read by query() in BEGIN keeps the rows SQLite keeps",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await connect({ ...srv.connectOptions, max: 4 });
    await db.exec(
      "CREATE TABLE t (id INTEGER PRIMARY KEY, v); CREATE TABLE marker (id INTEGER PRIMARY KEY);" +
        "CREATE TRIGGER no3 BEFORE INSERT ON t WHEN new.v % 10 = 3 " +
        "BEGIN SELECT RAISE(FAIL, 'no 3'); END",
    );
    const mirror = await snapshot(db, ["t"]);
    await using sub = await db.subscribe({ values: true });
    await using r = await db.reserve();
    for (let run = 0; run < 3; run++) {
      await r.exec("BEGIN");
      for (const how of ["query", "get"] as const) {
        const sql = "INSERT OR FAIL INTO t (v) VALUES (?1 + 1), (?1 + 2), (?1 + 3), (?1 + 4) " +
          "RETURNING id";
        const base = run * 100 + (how === "query" ? 0 : 10);
        const err = await (how === "query" ? r.query(sql, [base]) : r.get(sql, [base]))
          .then(() => null, (e: SqliteError) => e);
        assert.equal(err?.code, "SQLITE_CONSTRAINT_TRIGGER", String(err));
      }
      await r.exec("COMMIT");
    }
    assert.deepEqual((await db.values("SELECT count(*) FROM t"))[0], [12]);
    await assertReplayed(db, sub, mirror);
    assert.equal(mirror.get("t")!.size, 12);
  },
});

Deno.test({
  name:
    "INSERT OR FAIL in autocommit keeps its rows alone and in a group commit (feed replay on FFI)",
  async fn() {
    await using srv = await startServer();
    await using db = await connect({ ...srv.connectOptions, max: 4 });
    await db.exec(
      "CREATE TABLE t (id INTEGER PRIMARY KEY, g INT, CHECK (id % 10 <> 3));" +
        "CREATE TABLE marker (id INTEGER PRIMARY KEY)",
    );
    const mirror = await snapshot(db, ["t"]);
    await using sub = ffi ? await db.subscribe({ values: true }) : null;
    const orFail = "INSERT OR FAIL INTO t (id, g) VALUES (?1 * 10 + 1, ?1), (?1 * 10 + 2, ?1), " +
      "(?1 * 10 + 3, ?1)";
    const kept = async (g: number): Promise<number> =>
      (await db.values<[number]>("SELECT count(*) FROM t WHERE g = ?", [g]))[0][0];
    // Alone: the first runs in the background, then inline and grouped.
    for (let g = 0; g <= 8; g++) {
      const err = await db.run(orFail, [g]).then(() => null, (e: SqliteError) => e);
      assert.equal(err?.code, "SQLITE_CONSTRAINT_CHECK", `run ${g}: ${err}`);
      assert.equal(await kept(g), 2, `run ${g}`);
    }
    // With other members in the same group: first, in between and last.
    const clients = await Promise.all(Array.from({ length: 4 }, () => srv.client()));
    try {
      for (let round = 0; round < 4; round++) {
        const g = 100 + round;
        const results = await Promise.allSettled(
          clients.map((c, i) =>
            i === round
              ? c.run(orFail, [g])
              : c.run("INSERT INTO t (id, g) VALUES (?, -1)", [g * 10 + 4 + i])
          ),
        );
        for (const [i, res] of results.entries()) {
          assert.equal(res.status, i === round ? "rejected" : "fulfilled", `${round} ${i}`);
        }
        assert.equal(await kept(g), 2, `round ${round}`);
      }
    } finally {
      for (const c of clients) await c.close();
    }
    assert.deepEqual((await db.values("SELECT count(*) FROM t"))[0], [9 * 2 + 4 * 2 + 4 * 3]);
    if (sub !== null) await assertReplayed(db, sub, mirror);
  },
});

Deno.test({
  name:
    "feed replay: UPDATEs that move rows to other rowids (INTEGER PRIMARY KEY, rowid, upsert, triggers, cascades)",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await connect({ ...srv.connectOptions, max: 4 });
    await db.exec(
      "CREATE TABLE marker (id INTEGER PRIMARY KEY);" +
        "CREATE TABLE rc (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO rc VALUES (1, 'a'), (2, 'b');" +
        // Many rows, each moved.
        "CREATE TABLE many (id INTEGER PRIMARY KEY, v);" +
        "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 500) " +
        "INSERT INTO many SELECT i, i * 2 FROM r;" +
        // No INTEGER PRIMARY KEY: the rowid moves by its own names.
        "CREATE TABLE plain (a, b); INSERT INTO plain VALUES ('x', 1), ('y', 2), ('z', 3);" +
        // A column named like the rowid hides it: updating it moves nothing.
        "CREATE TABLE hides (rowid TEXT, v); INSERT INTO hides VALUES ('r1', 1), ('r2', 2);" +
        "CREATE TABLE up (id INTEGER PRIMARY KEY, k TEXT UNIQUE, v);" +
        "INSERT INTO up VALUES (1, 'a', 0), (2, 'b', 0);" +
        // A trigger that moves another table's rows.
        "CREATE TABLE tgt (id INTEGER PRIMARY KEY, v); INSERT INTO tgt VALUES (1, 't1'), (2, 't2'), (3, 't3');" +
        "CREATE TABLE go (n INTEGER);" +
        "CREATE TRIGGER mover AFTER INSERT ON go BEGIN UPDATE tgt SET id = id + 500 WHERE id = new.n; END;" +
        // A cascade that moves a child whose INTEGER PRIMARY KEY references its parent.
        "CREATE TABLE parent (n INTEGER PRIMARY KEY, k INTEGER UNIQUE); INSERT INTO parent VALUES (1, 10), (2, 20);" +
        "CREATE TABLE child (id INTEGER PRIMARY KEY REFERENCES parent (k) ON UPDATE CASCADE, v);" +
        "INSERT INTO child VALUES (10, 'c10'), (20, 'c20');" +
        // OR FAIL: the rows moved before the failure are kept.
        "CREATE TABLE f (id INTEGER PRIMARY KEY, v); INSERT INTO f VALUES (1, 'f1'), (2, 'f2'), (3, 'f3'), (10, 'f10');",
    );
    const tables = ["rc", "many", "plain", "hides", "up", "tgt", "go", "parent", "child", "f"];
    const mirror = await snapshot(db, tables);
    await using sub = await db.subscribe({ values: true });
    // Each statement twice at least: the first run of a statement, and one
    // whose columns the change log has read against the schema.
    await db.run("UPDATE rc SET id = 100 WHERE id = 1");
    await db.run("UPDATE rc SET id = id + 1000");
    await db.run("UPDATE rc SET id = id + 1000");
    await db.run("UPDATE rc SET id = id - 1000");
    await db.run("INSERT INTO rc VALUES (0, 'end')");
    await db.run("UPDATE many SET id = id + 1000");
    await db.run("UPDATE many SET id = id + 1000");
    await db.run("UPDATE many SET id = id - 1000");
    await db.run("UPDATE many SET id = -id WHERE id % 3 = 0");
    await db.run("UPDATE plain SET rowid = rowid + 10");
    await db.run("UPDATE plain SET rowid = rowid + 10");
    await db.run("UPDATE plain SET oid = 5 WHERE a = 'x'");
    await db.run("UPDATE plain SET _rowid_ = -1, b = 9 WHERE a = 'y'");
    await db.run("UPDATE hides SET rowid = 'moved?' WHERE v = 1");
    await db.run("UPDATE hides SET rowid = 'moved?' WHERE v = 1");
    await db.run(
      "INSERT INTO up (k, v) VALUES ('a', 1) ON CONFLICT (k) DO UPDATE SET id = id + 100, v = excluded.v",
    );
    await db.run("INSERT INTO up (k, v) VALUES ('c', 1) ON CONFLICT (k) DO UPDATE SET id = 7");
    await db.run(
      "INSERT INTO up (k, v) VALUES ('a', 2) ON CONFLICT (k) DO UPDATE SET id = id + 100, v = excluded.v",
    );
    await db.run("INSERT INTO go VALUES (2)");
    await db.run("INSERT INTO go VALUES (1)");
    await db.run("UPDATE parent SET k = k + 1");
    await db.run("UPDATE parent SET k = k + 1");
    const err = await db.run("UPDATE OR FAIL f SET id = id + 7").then(() => null, (e) => e);
    assert.equal((err as SqliteError | null)?.code, "SQLITE_CONSTRAINT_PRIMARYKEY", String(err));
    // In transactions and scripts: moved and moved back, rolled back to a savepoint.
    await db.transaction(async (tx) => {
      await tx.run("UPDATE rc SET id = 7777 WHERE id = 0");
      await tx.run("UPDATE rc SET id = 0 WHERE id = 7777");
      await tx.run("UPDATE tgt SET id = 9 WHERE id = 1");
    });
    await using r = await db.reserve();
    await r.exec(
      "BEGIN; UPDATE tgt SET id = 90 WHERE id = 9; SAVEPOINT s; UPDATE tgt SET id = 91 WHERE id = 90;" +
        "ROLLBACK TO s; RELEASE s; COMMIT",
    );
    await r.exec("UPDATE many SET id = id + 1 WHERE id = 1500; INSERT INTO go VALUES (3)");
    // Several members of one group commit.
    await Promise.all([
      db.run("UPDATE up SET id = 50 WHERE k = 'b'"),
      db.run("UPDATE rc SET id = 3 WHERE id = 1100"),
      db.run("UPDATE many SET id = 0 WHERE id = 1002"),
    ]);
    assert.deepEqual(
      await db.values("SELECT id FROM rc ORDER BY id"),
      [[0], [3], [1002]],
    );
    assert.deepEqual(await db.values("SELECT id FROM f ORDER BY id"), [[3], [8], [9], [10]]);
    assert.deepEqual(await db.values("SELECT id FROM child ORDER BY id"), [[12], [22]]);
    await assertReplayed(db, sub, mirror);
  },
});

/** The FFI binding over the system's libsqlite3 as if it were built without the preupdate hook. */
function withoutPreupdateHook(): FfiSqlite {
  const probe = loadSqlite({ engine: "ffi" });
  const path = probe.library;
  probe.close();
  const { sqlite3_preupdate_hook: _, ...rest } = symbols;
  const lib = Deno.dlopen(path, rest);
  const missing = { ...lib.symbols, sqlite3_preupdate_hook: null } as unknown as Symbols;
  return new FfiSqlite(missing, path, () => lib.close());
}

Deno.test({
  name:
    "feed replay: without the preupdate hook, a table whose rows an UPDATE moved is reported whole",
  ignore: !ffi,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "netsqlite-moves-" });
    const sqlite = withoutPreupdateHook();
    const engine = new Engine({
      path: `${dir}/m.db`,
      synchronous: "normal",
      busyTimeout: 1000,
      txIdleTimeout: 0,
      statementCacheSize: 16,
      statementTimeout: 30_000,
      maxResultBytes: 1 << 20,
      maxCursors: 4,
      policy: { readonly: false, allowAttach: false, allowUnsafePragmas: false },
    }, sqlite);
    const tables = ["rc", "many", "plain", "up", "tgt", "go", "f", "still", "same"];
    const mirror: Mirror = new Map(tables.map((t) => [t, new Map()]));
    const nulls: string[] = [];
    let session: EngineSession | null = null;
    try {
      session = engine.openSession(() => {}, () => {});
      const s = session;
      const exec = async (sql: string): Promise<unknown> => {
        const r = await s.exec(sql);
        assert.notEqual(r, BLOCKED, sql);
        return r;
      };
      await exec(
        "CREATE TABLE rc (id INTEGER PRIMARY KEY, v TEXT); CREATE TABLE many (id INTEGER PRIMARY KEY, v);" +
          "CREATE TABLE plain (a, b); CREATE TABLE up (id INTEGER PRIMARY KEY, k TEXT UNIQUE, v);" +
          "CREATE TABLE tgt (id INTEGER PRIMARY KEY, v); CREATE TABLE go (n INTEGER);" +
          "CREATE TRIGGER mover AFTER INSERT ON go BEGIN UPDATE tgt SET id = id + 500 WHERE id = new.n; END;" +
          "CREATE TABLE f (id INTEGER PRIMARY KEY, v); CREATE TABLE still (id INTEGER PRIMARY KEY, v);" +
          "CREATE TABLE same (id INTEGER PRIMARY KEY, v)",
      );
      engine.changes!.subscribe({
        wantsValues: true,
        deliver(changes: readonly Change[]) {
          for (const c of changes) {
            const rows = mirror.get(c.table)!;
            if (c.rowid === null) {
              assert.equal(c.op, "delete");
              nulls.push(c.table);
              rows.clear();
            } else if (c.op === "delete") rows.delete(String(c.rowid));
            else if (c.value !== null) rows.set(String(c.rowid), c.value);
          }
        },
      });
      await exec(
        "INSERT INTO rc VALUES (1, 'a'), (2, 'b');" +
          "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 300) " +
          "INSERT INTO many SELECT i, i * 2 FROM r;" +
          "INSERT INTO plain VALUES ('x', 1), ('y', 2), ('z', 3);" +
          "INSERT INTO up VALUES (1, 'a', 0), (2, 'b', 0);" +
          "INSERT INTO tgt VALUES (1, 't1'), (2, 't2'), (3, 't3');" +
          "INSERT INTO f VALUES (1, 'f1'), (2, 'f2'), (3, 'f3'), (10, 'f10');" +
          "INSERT INTO still VALUES (1, 's1'), (2, 's2'); INSERT INTO same VALUES (1, 's1'), (2, 's2')",
      );
      for (
        const sql of [
          "UPDATE rc SET id = 100 WHERE id = 1",
          "UPDATE rc SET id = id + 1000",
          "UPDATE rc SET id = id + 1000",
          "UPDATE still SET v = 'not moved'",
          "UPDATE still SET v = 'not moved'",
          // Sets the INTEGER PRIMARY KEY to its value: without the hook, that
          // cannot be told from a move (as ORMs that write every column do).
          "UPDATE same SET v = 'not moved', id = id WHERE id = 1",
          "UPDATE many SET id = id + 1000",
          "UPDATE many SET id = id + 1000",
          "UPDATE plain SET rowid = rowid + 10",
          "UPDATE plain SET _rowid_ = -1, b = 9 WHERE a = 'y'",
          "INSERT INTO up (k, v) VALUES ('a', 1) ON CONFLICT (k) DO UPDATE SET id = id + 100",
          "INSERT INTO up (k, v) VALUES ('a', 2) ON CONFLICT (k) DO UPDATE SET id = id + 100",
          "INSERT INTO go VALUES (2)",
          "INSERT INTO go VALUES (1)",
          "BEGIN; UPDATE rc SET id = 5 WHERE id = 2100; SAVEPOINT s; UPDATE rc SET id = 6 WHERE id = 5;" +
          "ROLLBACK TO s; RELEASE s; COMMIT",
        ]
      ) await exec(sql);
      // OR FAIL keeps the rows moved before the failure: 1 -> 8, 2 -> 9, then 3 -> 10 fails.
      await assert.rejects(
        exec("UPDATE OR FAIL f SET id = id + 7"),
        (e: SqliteError) => e.code === "SQLITE_CONSTRAINT_PRIMARYKEY",
      );
    } finally {
      session?.close();
      await engine.close();
    }
    // Every statement that may move rows reported its table whole (and only those did).
    assert.deepEqual(
      [...new Set(nulls)].sort(),
      ["f", "many", "plain", "rc", "same", "tgt", "up"],
    );
    const db = new DatabaseSync(`${dir}/m.db`);
    try {
      for (const [table, rows] of mirror) {
        const committed = db.prepare(`SELECT _rowid_ AS "__rowid", * FROM ${table}`).all()
          .map(({ __rowid, ...row }) => [String(__rowid), row] as const);
        assert.deepEqual(
          Object.fromEntries(rows),
          Object.fromEntries(committed),
          `the feed's ${table} differs from the committed one`,
        );
      }
      assert.deepEqual(db.prepare("SELECT id FROM f ORDER BY id").all().map((r) => r.id), [
        3,
        8,
        9,
        10,
      ]);
    } finally {
      db.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
