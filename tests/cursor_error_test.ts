/**
 * A cursor (`iterate()`) whose statement fails part way through a chunk: the
 * rows stepped before the error are yielded, then the next pull rejects with
 * the error `query()` reports for the whole statement, and the cursor is gone
 * from the server (failing cursors do not use up `maxCursors`). So too where
 * the server materialises a read's rows before the cursor opens (`:memory:`,
 * a TEMP table present); a write materialised so (outside a transaction)
 * that fails is undone, and yields no row. Real servers, on the engine
 * `NETSQLITE_ENGINE` names; the shell prints those rows too.
 */

import assert from "node:assert/strict";
import { type Client, SqliteError } from "../mod.ts";
import { Shell, type ShellIO } from "../cli/shell.ts";
import { drain, serverStats, startServer, type TestServer } from "./_helpers.ts";

/** `abs()` of the smallest integer raises `integer overflow`: row 3 fails. */
const FAILING = "SELECT abs(x) AS x FROM t ORDER BY rowid";

async function seed(db: Client): Promise<void> {
  await db.exec(
    "CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1), (2), (-9223372036854775807 - 1), (4)",
  );
}

/** The server's count of open cursors, over all sessions. */
async function openCursors(srv: TestServer): Promise<number> {
  return (await serverStats(srv.connectOptions)).cursors;
}

for (const where of ["outside a transaction", "inside a transaction"] as const) {
  Deno.test(`Client.iterate() ${where} yields the rows before a row's error, then rejects with it; no cursor is left open`, async () => {
    await using srv = await startServer();
    await using db = await srv.client();
    await seed(db);
    const whole = await db.query(FAILING).then(() => null, (e: unknown) => e);
    assert.ok(whole instanceof SqliteError, String(whole));
    assert.match(whole.message, /integer overflow/);
    if (where === "inside a transaction") await db.exec("BEGIN");
    // More failures than cursors a connection may hold (maxCursors, 16).
    for (let i = 0; i < 20; i++) {
      const { rows, error } = await drain(db.iterate<{ x: number }>(FAILING));
      assert.deepEqual(rows, [{ x: 1 }, { x: 2 }], `attempt ${i}`);
      assert.ok(error instanceof SqliteError, String(error));
      assert.equal(error.code, whole.code);
      assert.equal(error.message, whole.message);
    }
    // Stopped after the rows before the error (its error never pulled).
    for (let i = 0; i < 20; i++) {
      const it = db.iterate<{ x: number }>(FAILING, [], { arrays: true });
      assert.deepEqual((await it.next()).value, [1]);
      assert.deepEqual((await it.next()).value, [2]);
      await it.return(undefined);
    }
    if (where === "inside a transaction") {
      // A read's error leaves the transaction open.
      assert.equal(db.inTransaction, true);
      await db.run("INSERT INTO t VALUES (5)");
      await db.exec("COMMIT");
    }
    assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[
      where === "inside a transaction" ? 5 : 4,
    ]]);
    assert.equal(await openCursors(srv), 0);
  });
}

Deno.test("Client.iterate() yields a row held back for the next chunk when the step after it fails", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  // Row 2 would take the first chunk past 64 KiB: it starts the second,
  // whose first step (in the background on the FFI engine) fails on row 3.
  await db.exec(
    "CREATE TABLE t (k INTEGER, b BLOB); INSERT INTO t VALUES " +
      "(1, zeroblob(10)), (2, zeroblob(70000)), (-9223372036854775807 - 1, NULL), (4, NULL)",
  );
  const { rows, error } = await drain(
    db.iterate<{ k: number; n: number }>(
      "SELECT abs(k) AS k, length(b) AS n FROM t ORDER BY rowid",
    ),
  );
  assert.deepEqual(rows, [{ k: 1, n: 10 }, { k: 2, n: 70000 }]);
  assert.ok(error instanceof SqliteError, String(error));
  assert.match(error.message, /integer overflow/);
  assert.equal(await openCursors(srv), 0);
});

Deno.test("Shell prints the rows before an error in the first chunk of a streamed result, then the error", async () => {
  await using srv = await startServer();
  const client = await srv.client();
  try {
    await seed(client);
    let out = "";
    let err = "";
    const io: ShellIO = {
      out: (t) => Promise.resolve(void (out += t)),
      err: (t) => Promise.resolve(void (err += t)),
    };
    const shell = new Shell(client, io, "csv");
    await shell.runScript(
      (async function* () {
        yield `${FAILING};\n`;
      })(),
      "test",
    ).then(() => assert.fail("expected the script to stop"), () => {});
    assert.equal(out, "x\r\n1\r\n2\r\n");
    assert.equal(err, "Error: near line 1: SQLITE_ERROR: integer overflow\n");
  } finally {
    await client.close();
  }
});

/** Servers whose cursors outside a transaction materialise their rows first. */
const MATERIALISED = [
  { name: "a :memory: database", options: { database: ":memory:" } },
  { name: "a file database with a TEMP table", options: {}, temp: true },
] as const;

/** Where a write's cursor outside a transaction materialises its rows: everywhere. */
const WRITES = [...MATERIALISED, { name: "a file database", options: {} }] as const;

/** Starts the server of `where`, with `t` seeded (and a TEMP table, for that case). */
async function materialising(
  where: (typeof WRITES)[number],
): Promise<{ srv: TestServer; db: Client }> {
  const srv = await startServer(where.options);
  const db = await srv.client();
  await seed(db);
  if ("temp" in where) await db.exec("CREATE TEMP TABLE scratch (a)");
  return { srv, db };
}

for (const where of MATERIALISED) {
  Deno.test(`Client.iterate() on ${where.name} yields the rows a read stepped before its error, then rejects with it; no cursor is left open`, async () => {
    const { srv, db } = await materialising(where);
    await using _srv = srv;
    await using _db = db;
    const whole = await db.query(FAILING).then(() => null, (e: unknown) => e);
    assert.ok(whole instanceof SqliteError, String(whole));
    const reads = [
      FAILING,
      // A reading WITH.
      "WITH r(x) AS (SELECT x FROM t ORDER BY rowid) SELECT abs(x) AS x FROM r",
    ];
    for (const sql of reads) {
      for (let i = 0; i < 20; i++) {
        const { rows, error } = await drain(db.iterate<{ x: number }>(sql));
        assert.deepEqual(rows, [{ x: 1 }, { x: 2 }], `${sql}: attempt ${i}`);
        assert.ok(error instanceof SqliteError, String(error));
        assert.equal(error.code, whole.code);
        assert.equal(error.message, whole.message);
      }
    }
    // Stopped after the rows before the error (its error never pulled).
    for (let i = 0; i < 20; i++) {
      const it = db.iterate<{ x: number }>(FAILING, [], { arrays: true });
      assert.deepEqual((await it.next()).value, [1]);
      assert.deepEqual((await it.next()).value, [2]);
      await it.return(undefined);
    }
    // An error at the first row: no rows, then the error.
    const first = await drain(db.iterate("SELECT abs(x) AS x FROM t WHERE x < 0"));
    assert.deepEqual(first.rows, []);
    assert.ok(first.error instanceof SqliteError, String(first.error));
    assert.equal(first.error.message, whole.message);
    assert.equal(await openCursors(srv), 0);
  });
}

for (const where of WRITES) {
  Deno.test(`Client.iterate() of a write that fails on ${where.name} yields no row, then rejects; nothing is written`, async () => {
    const { srv, db } = await materialising(where);
    await using _srv = srv;
    await using _db = db;
    await db.exec("CREATE TABLE u (x INTEGER)");
    // SQLite's error, in RETURNING of row 3: SQLite undoes the statement.
    const { rows, error } = await drain(
      db.iterate("INSERT INTO u SELECT x FROM t ORDER BY rowid RETURNING abs(x) AS x"),
    );
    assert.deepEqual(rows, []);
    assert.ok(error instanceof SqliteError, String(error));
    assert.match(error.message, /integer overflow/);
    assert.deepEqual(await db.values("SELECT count(*) FROM u"), [[0]]);
    if (Deno.env.get("NETSQLITE_ENGINE") !== "node") {
      // Ours: row 4 of RETURNING is not valid UTF-8 (FFI engine), after 3
      // rows it could read: the write is undone, so none of them is yielded.
      const bad = await drain(
        db.iterate(
          "INSERT INTO u SELECT x FROM t ORDER BY rowid " +
            "RETURNING CASE WHEN x = 4 THEN CAST(x'ff' AS TEXT) ELSE x END AS x",
        ),
      );
      assert.deepEqual(bad.rows, []);
      assert.ok(bad.error instanceof SqliteError, String(bad.error));
      assert.equal(bad.error.code, "INVALID_UTF8");
      assert.deepEqual(await db.values("SELECT count(*) FROM u"), [[0]]);
    }
    assert.equal(await openCursors(srv), 0);
  });
}

/** Rows 1 and 2 come at once; the step to row 4 counts to 10^7 first, past a 200 ms timeout. */
const SLOW_AFTER_TWO = "SELECT x FROM t WHERE x > 0 AND (x < 3 OR (WITH RECURSIVE c(i) AS " +
  "(SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 10000000) SELECT count(*) FROM c) > 0) " +
  "ORDER BY rowid";

for (const where of MATERIALISED) {
  Deno.test(`Client.iterate() on ${where.name} yields the rows a read stepped before its deadline, then rejects with STATEMENT_TIMEOUT`, async () => {
    const { srv, db } = await materialising(where);
    await using _srv = srv;
    await using _db = db;
    const { rows, error } = await drain(
      db.iterate<{ x: number }>(SLOW_AFTER_TWO, [], { timeout: 200 }),
    );
    assert.deepEqual(rows, [{ x: 1 }, { x: 2 }]);
    assert.ok(error instanceof SqliteError, String(error));
    assert.equal(error.code, "STATEMENT_TIMEOUT");
    assert.equal(await openCursors(srv), 0);
  });
}
