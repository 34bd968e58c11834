/**
 * `run()`'s `changes` and `lastInsertRowid` are the statement's own. Every
 * client's writes run on one shared writer connection, whose SQLite counters
 * (`changes()`, `last_insert_rowid()`) still tell the previous statement
 * that changed or inserted something, whichever client sent it.
 */

import assert from "node:assert/strict";
import { connect } from "../client.ts";
import { startServer } from "./_helpers.ts";

const SETUP = "CREATE TABLE t (id INTEGER PRIMARY KEY, a UNIQUE, b); " +
  "CREATE TABLE secret (id INTEGER PRIMARY KEY, x); CREATE TABLE bulk (x)";

Deno.test("a statement that inserted or changed nothing reports 0, not another client's changes or rowid", async () => {
  await using srv = await startServer();
  await using a = await srv.client();
  await using b = await srv.client();
  await a.exec(SETUP);
  assert.deepEqual(await b.run("INSERT INTO t (a, b) VALUES (1, 1)"), {
    changes: 1,
    lastInsertRowid: 1,
  });
  // The other client's latest statements on the shared writer: an insert
  // with a rowid of its own, then 500 rows at once.
  await a.run("INSERT INTO secret (id, x) VALUES (777, 'not yours')");
  const nothing = { changes: 0, lastInsertRowid: 0 };
  assert.deepEqual(await b.run("INSERT OR IGNORE INTO t (a, b) VALUES (1, 2)"), nothing);
  assert.deepEqual(
    await b.run("INSERT INTO t (a, b) VALUES (1, 2) ON CONFLICT DO NOTHING"),
    nothing,
  );
  assert.deepEqual(await b.run("INSERT INTO t (a, b) SELECT 1, 1 WHERE 0"), nothing);
  // An upsert that updated: one row changed, none inserted.
  assert.deepEqual(
    await b.run("INSERT INTO t (a, b) VALUES (1, 2) ON CONFLICT (a) DO UPDATE SET b = 3"),
    { changes: 1, lastInsertRowid: 0 },
  );
  await a.exec(
    "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 500) " +
      "INSERT INTO bulk SELECT i FROM c",
  );
  assert.deepEqual(await b.run("DROP TABLE bulk"), nothing);
  assert.deepEqual(await b.run("CREATE TABLE y (x)"), nothing);
  assert.deepEqual(await b.run("UPDATE t SET b = 4 WHERE a = 99"), nothing);
  // A real insert still reports its rowid, also when it equals the rowid of
  // the previous insert on the writer (a row deleted and inserted again).
  assert.deepEqual(await b.run("INSERT INTO t (a, b) VALUES (10, 10)"), {
    changes: 1,
    lastInsertRowid: 2,
  });
  await b.run("DELETE FROM t WHERE a = 10");
  assert.deepEqual(await b.run("INSERT INTO t (a, b) VALUES (11, 11)"), {
    changes: 1,
    lastInsertRowid: 2,
  });
});

Deno.test("batch() reports each statement's own changes and rowid", async () => {
  await using srv = await startServer();
  await using a = await srv.client();
  await using b = await srv.client();
  await a.exec(SETUP);
  await a.run("INSERT INTO secret (id, x) VALUES (777, 'not yours')");
  const results = await b.batch([
    { sql: "CREATE TABLE y (x)" },
    { sql: "INSERT INTO t (a, b) VALUES (5, 5)" },
    { sql: "UPDATE t SET b = 9 WHERE a = 5" },
    { sql: "INSERT OR IGNORE INTO t (a, b) VALUES (5, 6)" },
  ]);
  assert.deepEqual(
    results.map((r) => [r.changes, r.lastInsertRowid]),
    [[0, 0], [1, 1], [1, 0], [0, 0]],
  );
});

Deno.test("inside a transaction, SQL's last_insert_rowid() after an ignored insert still names the session's previous insert", async () => {
  await using srv = await startServer();
  await using b = await srv.client();
  await b.exec(SETUP);
  await b.exec("BEGIN");
  await b.run("INSERT INTO t (a, b) VALUES (1, 1)");
  assert.deepEqual(await b.run("INSERT OR IGNORE INTO t (a, b) VALUES (1, 2)"), {
    changes: 0,
    lastInsertRowid: 0,
  });
  assert.deepEqual(await b.get("SELECT last_insert_rowid() AS r"), { r: 1 });
  await b.exec("COMMIT");
});

Deno.test("an insert reports its rowid when another client's rolled-back insert had used the same one", async () => {
  await using srv = await startServer();
  await using a = await srv.client();
  await using b = await srv.client();
  await a.exec(SETUP);
  await a.run("INSERT INTO t (a, b) VALUES (1, 1)");
  await a.exec("BEGIN");
  assert.deepEqual(await a.run("INSERT INTO t (a, b) VALUES (2, 2)"), {
    changes: 1,
    lastInsertRowid: 2,
  });
  await a.exec("ROLLBACK");
  assert.deepEqual(await b.run("INSERT INTO t (a, b) VALUES (3, 3)"), {
    changes: 1,
    lastInsertRowid: 2,
  });
  assert.deepEqual(await b.values("SELECT rowid FROM t WHERE a = 3"), [[2]]);
});

Deno.test("get() steps the statement for its first row only: a result far above maxResultBytes still gives it", async () => {
  await using srv = await startServer({ maxResultBytes: 10_000 });
  await using db = await srv.client();
  await db.exec(
    "CREATE TABLE big (id INTEGER PRIMARY KEY, pad TEXT); " +
      "INSERT INTO big (pad) WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s " +
      "LIMIT 5000) SELECT printf('%0100d', x) FROM s",
  );
  await assert.rejects(db.query("SELECT * FROM big"), { code: "RESULT_TOO_LARGE" });
  assert.deepEqual(await db.get("SELECT id FROM big ORDER BY id"), { id: 1 });
  const stmt = await db.prepare("SELECT id, pad FROM big WHERE id > ? ORDER BY id");
  assert.deepEqual(await stmt.raw().get([4990]), [4991, "0".repeat(96) + "4991"]);
  await stmt.finalize();
  assert.equal(await db.get("SELECT id FROM big WHERE id < 0"), undefined);
  // A write with RETURNING makes all its changes, though one row comes back.
  assert.deepEqual(await db.get("DELETE FROM big WHERE id > 10 RETURNING id"), { id: 11 });
  assert.deepEqual(await db.values("SELECT count(*) FROM big"), [[10]]);
  await db.exec("BEGIN");
  assert.deepEqual(await db.get("UPDATE big SET pad = 'x' RETURNING id"), { id: 1 });
  await db.exec("COMMIT");
  assert.deepEqual(await db.values("SELECT count(*) FROM big WHERE pad = 'x'"), [[10]]);
});

Deno.test("SQL reading last_insert_rowid() inside an insert sees the previous insert (the parent/child pattern)", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await db.exec(
    "CREATE TABLE parent (id INTEGER PRIMARY KEY, n); " +
      "CREATE TABLE child (id INTEGER PRIMARY KEY, pid, UNIQUE (pid))",
  );
  await db.transaction(async (tx) => {
    const { lastInsertRowid } = await tx.run("INSERT INTO parent (n) VALUES ('p1')");
    assert.equal(lastInsertRowid, 1);
    await tx.run("INSERT INTO child (pid) VALUES (last_insert_rowid())");
  });
  await db.exec(
    "BEGIN; INSERT INTO parent (n) VALUES ('p2'); " +
      "INSERT INTO child (pid) VALUES (last_insert_rowid()); COMMIT",
  );
  await db.batch([
    { sql: "INSERT INTO parent (n) VALUES ('p3')" },
    // An upsert reading it too.
    {
      sql: "INSERT INTO child (pid) VALUES (last_insert_rowid()) " +
        "ON CONFLICT (pid) DO UPDATE SET pid = excluded.pid",
    },
  ]);
  assert.deepEqual(await db.values("SELECT id, pid FROM child ORDER BY id"), [[1, 1], [2, 2], [
    3,
    3,
  ]]);
});

Deno.test("an upsert reports the rowid it inserted, also one equal to a rolled-back insert's, and 0 when it updated", async () => {
  await using srv = await startServer();
  await using a = await srv.client();
  await using b = await srv.client();
  await a.exec("CREATE TABLE kv (id INTEGER PRIMARY KEY, k UNIQUE, v)");
  await a.run("INSERT INTO kv (k, v) VALUES ('x', 1)");
  await a.exec("BEGIN");
  await a.run("INSERT INTO kv (k, v) VALUES ('y', 1)"); // rowid 2, rolled back
  await a.exec("ROLLBACK");
  const upsert = "INSERT INTO kv (k, v) VALUES (?, 1) ON CONFLICT (k) DO UPDATE SET v = v + 1";
  const node = Deno.env.get("NETSQLITE_ENGINE") === "node";
  // node:sqlite cannot zero the last rowid: an upsert getting the rowid the
  // writer reported last is taken for an update there (README).
  assert.deepEqual(await b.run(upsert, ["z"]), { changes: 1, lastInsertRowid: node ? 0 : 2 });
  assert.deepEqual(await b.run(upsert, ["w"]), { changes: 1, lastInsertRowid: 3 });
  assert.deepEqual(await a.run(upsert, ["x"]), { changes: 1, lastInsertRowid: 0 });
  assert.deepEqual(await b.run(upsert, ["w"]), { changes: 1, lastInsertRowid: 0 });
});

Deno.test("an exec() script that fails after its first statement says which statement failed, and that the ones before ran", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await assert.rejects(
    db.exec(
      "CREATE TABLE t (x UNIQUE); INSERT INTO t VALUES (1); INSERT INTO t VALUES (1); " +
        "INSERT INTO t VALUES (2)",
    ),
    (err: Error & { code?: string }) => {
      assert.equal(err.code, "SQLITE_CONSTRAINT_UNIQUE");
      assert.equal(
        err.message,
        "UNIQUE constraint failed: t.x (statement 3 of the script; the 2 before it ran)",
      );
      return true;
    },
  );
  assert.deepEqual(await db.values("SELECT x FROM t"), [[1]]);
  // A failing first (or only) statement: SQLite's message as it is.
  await assert.rejects(db.exec("SELEC 1"), { message: 'near "SELEC": syntax error' });
  // Inside a transaction SQLite rolled back around the failure: nothing before it stays.
  await db.exec("BEGIN");
  await assert.rejects(db.exec("INSERT INTO t VALUES (7); INSERT OR ROLLBACK INTO t VALUES (7)"), {
    message: "UNIQUE constraint failed: t.x; SQLite rolled back the transaction it was in: end " +
      "it with ROLLBACK (transaction() does so itself), then retry the whole transaction " +
      "(statement 2 of the script)",
  });
  await db.exec("ROLLBACK");
  assert.deepEqual(await db.values("SELECT x FROM t"), [[1]]);
  await assert.rejects(db.exec("INSERT INTO t VALUES (3); SELEC 2"), {
    message: 'near "SELEC": syntax error (statement 2 of the script; the 1 before it ran)',
  });
});

Deno.test("transaction() on a reserved connection inside its own raw BEGIN is a savepoint of it (kv atomics and large getMany too)", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 2 });
  await db.exec("CREATE TABLE t (x)");
  await using rv = await db.reserve();
  await rv.exec("BEGIN");
  await rv.run("INSERT INTO t VALUES (1)");
  await rv.transaction(async (tx) => void await tx.run("INSERT INTO t VALUES (2)"));
  await assert.rejects(
    rv.transaction(async (tx) => {
      await tx.run("INSERT INTO t VALUES (3)");
      throw new Error("undo 3");
    }),
    /undo 3/,
  );
  const kv = rv.kv("k");
  await kv.atomic().set(["a"], 1).commit();
  const many = Array.from({ length: 33_000 }, (_, i) => [i]);
  const got = await kv.getMany(many);
  assert.equal(got.length, 33_000);
  assert.equal(rv.inTransaction, true);
  await rv.exec("COMMIT");
  assert.deepEqual(await db.values("SELECT x FROM t ORDER BY x"), [[1], [2]]);
  assert.deepEqual((await db.kv("k").get(["a"]))?.value, 1);
});

Deno.test("run(): an insert into a WITHOUT ROWID table reports lastInsertRowid 0, never another client's rowid", async () => {
  await using srv = await startServer();
  await using a = await srv.client();
  await using b = await srv.client();
  await a.exec(
    "CREATE TABLE secret (id INTEGER PRIMARY KEY); " +
      "CREATE TABLE w (k TEXT PRIMARY KEY, v) WITHOUT ROWID; " +
      "CREATE TABLE log (id INTEGER PRIMARY KEY, what); " +
      "CREATE TABLE w2 (k TEXT PRIMARY KEY) WITHOUT ROWID; " +
      "CREATE TRIGGER w2_log AFTER INSERT ON w2 BEGIN INSERT INTO log (what) VALUES (new.k); END",
  );
  assert.deepEqual(await a.run("INSERT INTO secret VALUES (123456)"), {
    changes: 1,
    lastInsertRowid: 123456,
  });
  assert.deepEqual(await b.run("INSERT INTO w VALUES ('x', 1)"), {
    changes: 1,
    lastInsertRowid: 0,
  });
  assert.deepEqual(await b.run("INSERT INTO w VALUES ('y', 1), ('z', 2)"), {
    changes: 2,
    lastInsertRowid: 0,
  });
  assert.deepEqual(
    await b.run("INSERT INTO w VALUES ('x', 5) ON CONFLICT (k) DO UPDATE SET v = excluded.v"),
    { changes: 1, lastInsertRowid: 0 },
  );
  // Its trigger's insert into a rowid table does not count once the trigger ended.
  assert.deepEqual(await b.run("INSERT INTO w2 VALUES ('t')"), { changes: 1, lastInsertRowid: 0 });
  // A rowid table of the same name after a schema change reports its rowid again.
  await a.exec("DROP TABLE w; CREATE TABLE w (k TEXT, v)");
  assert.deepEqual(await b.run("INSERT INTO w VALUES ('x', 1)"), {
    changes: 1,
    lastInsertRowid: 1,
  });
  await a.exec("DROP TABLE w; CREATE TABLE w (k TEXT PRIMARY KEY, v) WITHOUT ROWID");
  assert.deepEqual(await b.run("INSERT INTO w VALUES ('x', 1)"), {
    changes: 1,
    lastInsertRowid: 0,
  });
});

Deno.test("an insert whose triggers update rows reports its rowid, also one equal to the previous insert's (fresh tables)", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await db.exec(
    "CREATE TABLE users (id INTEGER PRIMARY KEY, name); " +
      "CREATE TABLE counts (n INT, seen INT); INSERT INTO counts VALUES (0, NULL); " +
      "CREATE TABLE posts (id INTEGER PRIMARY KEY, title); " +
      "CREATE TRIGGER count_posts BEFORE INSERT ON posts BEGIN " +
      "UPDATE counts SET n = n + 1, seen = last_insert_rowid(); END; " +
      "CREATE TABLE tags (id INTEGER PRIMARY KEY, tag); " +
      "CREATE TRIGGER count_tags AFTER INSERT ON tags BEGIN " +
      "UPDATE counts SET n = n + 1; DELETE FROM users WHERE name = 'gone'; END; " +
      "CREATE TABLE settings (id INTEGER PRIMARY KEY, k UNIQUE, v)",
  );
  const one = { changes: 1, lastInsertRowid: 1 };
  // Every table starts at rowid 1: each insert gets the rowid the previous one got.
  assert.deepEqual(await db.run("INSERT INTO users (name) VALUES ('ada')"), one);
  assert.deepEqual(await db.run("INSERT INTO posts (title) VALUES ('hello')"), one);
  // The trigger saw SQLite's last rowid, the users insert's (not one reset to tell an update).
  assert.deepEqual(await db.values("SELECT seen FROM counts"), [[1]]);
  assert.deepEqual(await db.run("INSERT INTO tags (tag) VALUES ('x')"), one);
  const two = { changes: 1, lastInsertRowid: 2, rows: [] };
  assert.deepEqual(
    await db.batch([
      { sql: "INSERT INTO users (name) VALUES ('bob')" },
      { sql: "INSERT INTO posts (title) VALUES ('two')" },
    ]),
    [two, two],
  );
  assert.deepEqual(await db.values("SELECT n, seen FROM counts"), [[3, 2]]);
  // An upsert: node:sqlite cannot zero the last rowid, so an upsert that
  // inserts the rowid the writer's previous insert got reports 0 there (README).
  const node = Deno.env.get("NETSQLITE_ENGINE") === "node";
  const upsert =
    "INSERT INTO settings (k, v) VALUES (?, 1) ON CONFLICT (k) DO UPDATE SET v = v + 1";
  assert.deepEqual(await db.run(upsert, ["a"]), { changes: 1, lastInsertRowid: 1 });
  assert.deepEqual(await db.run("INSERT INTO tags (tag) VALUES ('y')"), {
    changes: 1,
    lastInsertRowid: 2,
  });
  assert.deepEqual(await db.run(upsert, ["b"]), { changes: 1, lastInsertRowid: node ? 0 : 2 });
  assert.deepEqual(await db.run(upsert, ["a"]), { changes: 1, lastInsertRowid: 0 });
});

Deno.test("an upsert that only names last_insert_rowid in a string, comment or column reports its insert; one whose trigger calls it leaves the trigger SQLite's value", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await db.exec(
    "CREATE TABLE e (id INTEGER PRIMARY KEY, k UNIQUE, last_insert_rowid INT); " +
      "CREATE TABLE other (id INTEGER PRIMARY KEY); " +
      "CREATE TABLE seen (v); CREATE TABLE f (id INTEGER PRIMARY KEY, k UNIQUE); " +
      "CREATE TRIGGER f_seen BEFORE INSERT ON f BEGIN INSERT INTO seen VALUES (last_insert_rowid()); END",
  );
  // node:sqlite cannot zero the last rowid: an upsert inserting the rowid
  // the writer's previous insert got reports 0 there (README).
  const node = Deno.env.get("NETSQLITE_ENGINE") === "node";
  const upserts = [
    "INSERT INTO e (id, k) VALUES (10, 'last_insert_rowid()') ON CONFLICT (k) DO UPDATE SET id = 1",
    "INSERT INTO e (id, k) VALUES (/* last_insert_rowid() */ 10, 'b') ON CONFLICT (k) DO UPDATE SET id = 1",
    "INSERT INTO e (id, k, last_insert_rowid) VALUES (10, 'c', 1) " +
    "ON CONFLICT (k) DO UPDATE SET last_insert_rowid = 2",
  ];
  for (const sql of upserts) {
    await db.run("INSERT INTO other (id) VALUES (10)");
    assert.deepEqual(await db.run(sql), { changes: 1, lastInsertRowid: node ? 0 : 10 }, sql);
    await db.exec("DELETE FROM other; DELETE FROM e");
  }
  // A rowid that differs from the previous insert's is told on both engines.
  await db.run("INSERT INTO other (id) VALUES (5)");
  assert.deepEqual(await db.run(upserts[0]), { changes: 1, lastInsertRowid: 10 });
  // The trigger calls last_insert_rowid(): the upsert leaves it SQLite's
  // value (the previous insert's), so the trigger reads 10, not 0.
  const upsertF = "INSERT INTO f (id, k) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET id = id";
  assert.deepEqual(await db.run(upsertF, [20, "x"]), { changes: 1, lastInsertRowid: 20 });
  assert.deepEqual(await db.values("SELECT v FROM seen"), [[10]]);
});

Deno.test("an upsert that inserts rowid 0 reports 0 and leaves SQL's last_insert_rowid() at 0, as SQLite has it", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await db.exec(
    "CREATE TABLE e (id INTEGER PRIMARY KEY, k UNIQUE, n INT DEFAULT 0); " +
      "CREATE TABLE other (id INTEGER PRIMARY KEY)",
  );
  const upsert = "INSERT INTO e (id, k) VALUES (0, ?) ON CONFLICT (k) DO UPDATE SET n = n + 1";
  await db.run("INSERT INTO other (id) VALUES (42)");
  assert.deepEqual(await db.run(upsert, ["z"]), { changes: 1, lastInsertRowid: 0 });
  assert.deepEqual(await db.values("SELECT id, k FROM e"), [[0, "z"]]);
  assert.deepEqual(await db.values("SELECT last_insert_rowid()"), [[0]]);
  // An upsert that updated leaves it as the previous insert set it.
  await db.run("INSERT INTO other (id) VALUES (43)");
  assert.deepEqual(await db.run(upsert, ["z"]), { changes: 1, lastInsertRowid: 0 });
  assert.deepEqual(await db.values("SELECT last_insert_rowid()"), [[43]]);
  await db.transaction(async (tx) => {
    await tx.run("DELETE FROM e");
    await tx.run("INSERT INTO other (id) VALUES (44)");
    assert.deepEqual(await tx.run(upsert, ["y"]), { changes: 1, lastInsertRowid: 0 });
    assert.deepEqual(await tx.values("SELECT last_insert_rowid()"), [[0]]);
  });
});

Deno.test("exec() refuses parameters (an array, or a named-parameter object) with a TypeError naming run(), before anything runs: pool, reserved connection, transaction", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (x)");
  const script = "INSERT INTO t VALUES (1); INSERT INTO t VALUES (?)";
  const params = "exec() takes no parameters: use run() or query() for a statement with " +
    "parameters (exec()'s second argument is its options: { timeout, signal })";
  // (Untyped callers: TypeScript refuses these already.)
  const exec = (q: { exec(sql: string, o?: unknown): Promise<void> }, o: unknown) =>
    q.exec(script, o);
  await assert.rejects(exec(db, [2]), { name: "TypeError", message: params });
  await assert.rejects(exec(db, { x: 2 }), {
    name: "TypeError",
    message: `Invalid exec() option "x": ${params}`,
  });
  await assert.rejects(exec(db, 2), {
    name: "TypeError",
    message:
      "Invalid exec() options: expected { timeout, signal }, got 2 (exec() takes no parameters: " +
      "use run() or query() for a statement with parameters)",
  });
  {
    await using rv = await db.reserve();
    await assert.rejects(exec(rv, [2]), { name: "TypeError", message: params });
  }
  await db.transaction(async (tx) => {
    await assert.rejects(exec(tx, [2]), { name: "TypeError", message: params });
    await tx.exec("INSERT INTO t VALUES (3)", { signal: new AbortController().signal });
  });
  await db.exec("INSERT INTO t VALUES (4)", undefined);
  assert.deepEqual(await db.values("SELECT x FROM t"), [[3], [4]]);
});

Deno.test("a statement's all() and get() give rows in the raw() mode of when they were called", async () => {
  await using srv = await startServer();
  await using db = await connect(srv.connectOptions);
  const s = await db.prepare("SELECT 1 AS a, 2 AS b");
  const asObjects = s.get();
  s.raw(true);
  const asArrays = s.all();
  s.raw(false);
  assert.deepEqual(await asObjects, { a: 1, b: 2 });
  assert.deepEqual(await asArrays, [[1, 2]]);
  assert.deepEqual(await s.get(), { a: 1, b: 2 });
});
