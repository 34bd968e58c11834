/**
 * A write whose RETURNING rows netsqlite refuses to send (TEXT that is not
 * valid UTF-8: `INVALID_UTF8`; rows above `maxResultBytes`:
 * `RESULT_TOO_LARGE`) is undone, as if SQLite had failed it: a client never
 * gets an error for a write that stays. In autocommit (run inline, in the
 * background, in a group commit) nothing of it is written; inside a
 * transaction that statement alone is undone and the transaction stays
 * open; a change feed never reports it. Column names are held to the same
 * rule as values. Run with `NETSQLITE_ENGINE=node` too (node:sqlite reads
 * such text with U+FFFD in place of the bytes, as the README says: no
 * error, so the write stays).
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { connect } from "../client.ts";
import { ErrorCode, SqliteError } from "../protocol/errors.ts";
import { decodeColumnName } from "../engine/binding/ffi.ts";
import type { StatsReport } from "../protocol/messages.ts";
import {
  onlyOneRejected,
  serverStats,
  startServer,
  takeEvents,
  type TestServer,
} from "./_helpers.ts";

const ffi = Deno.env.get("NETSQLITE_ENGINE") !== "node";

/** TEXT that is not valid UTF-8. */
const BAD = "CAST(x'61ff62' AS TEXT)";

/** Asserts that `call` fails with `INVALID_UTF8` naming column `column`. */
async function invalidUtf8(call: Promise<unknown>, what: string, column = "x"): Promise<void> {
  const err = await call.then(() => null, (e) => e);
  assert.ok(err instanceof SqliteError, `${what}: expected INVALID_UTF8, got ${err}`);
  assert.equal(err.code, ErrorCode.InvalidUtf8, `${what}: ${err.message}`);
  assert.match(err.message, new RegExp(`column "${column}"`), what);
}

/** The server's group commit figures (the `stats` request). */
async function groupCommits(srv: TestServer): Promise<StatsReport["groupCommit"]> {
  return (await serverStats(srv.connectOptions)).groupCommit;
}

/** Every way a client reads a write's RETURNING rows, for `sql`. */
function readers(
  db: Awaited<ReturnType<TestServer["client"]>>,
): [string, (sql: string) => Promise<unknown>][] {
  return [
    ["query", (sql) => db.query(sql)],
    ["get", (sql) => db.get(sql)],
    ["values", (sql) => db.values(sql)],
    ["iterate", (sql) => Array.fromAsync(db.iterate(sql))],
    ["prepared all", async (sql) => {
      const stmt = await db.prepare(sql);
      try {
        return await stmt.all();
      } finally {
        await stmt.finalize();
      }
    }],
  ];
}

Deno.test({
  name:
    "INSERT/UPDATE ... RETURNING of TEXT that is not valid UTF-8 fails with INVALID_UTF8 and writes nothing, in autocommit (query, get, values, iterate, a statement's all)",
  ignore: !ffi, // node:sqlite replaces the bytes: no error (see the node test below)
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT)");
    await db.run("INSERT INTO t (id, x) VALUES (1, 'kept')");
    const writes = [
      `INSERT INTO t (x) VALUES (${BAD}) RETURNING x`,
      // The second row, which would be fine, is undone too.
      `INSERT INTO t (x) VALUES (${BAD}), ('fine') RETURNING x`,
      `UPDATE t SET x = ${BAD} WHERE id = 1 RETURNING x`,
      `INSERT INTO t (x) VALUES ('fine') RETURNING ${BAD} AS x`,
    ];
    // The first runs of a write go to the background; once known to be
    // fast it runs inline, in a group commit: each path, several times.
    for (let round = 0; round < 4; round++) {
      for (const [how, read] of readers(db)) {
        for (const sql of writes) {
          const what = `round ${round}, ${how}: ${sql}`;
          await invalidUtf8(read(sql), what);
          assert.deepEqual(await db.values("SELECT id, x FROM t"), [[1, "kept"]], what);
        }
      }
      assert.deepEqual(await db.query("INSERT INTO t (x) VALUES ('new') RETURNING x"), [{
        x: "new",
      }]);
      await db.run("DELETE FROM t WHERE id > 1");
    }
    // Rows not read are not refused: get() reads the first row only.
    assert.deepEqual(await db.get(`INSERT INTO t (x) VALUES ('first'), (${BAD}) RETURNING x`), {
      x: "first",
    });
    assert.deepEqual(await db.values("SELECT hex(x) FROM t WHERE id > 1"), [["6669727374"], [
      "61FF62",
    ]]);
    assert.equal(db.inTransaction, false);
  },
});

Deno.test({
  name:
    "INSERT ... RETURNING of invalid UTF-8 inside BEGIN is undone alone: the transaction stays open and commits the rest",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    // max: 3: the transaction() below runs while db is still reserved (reserve() holds max - 1).
    await using client = await connect({ ...srv.connectOptions, max: 3 });
    await client.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT)");
    await using db = await client.reserve();
    const insert = `INSERT INTO t (x) VALUES (${BAD}), ('a') RETURNING x`;
    for (const [begin, end] of [["BEGIN", "COMMIT"], ["SAVEPOINT s", "RELEASE s"]]) {
      await db.exec(begin);
      for (let i = 0; i < 4; i++) {
        await db.run("INSERT INTO t (x) VALUES (?)", [`${begin} ${i}`]);
        await invalidUtf8(db.query(insert), `${begin} query ${i}`);
        await invalidUtf8(db.get(`UPDATE t SET x = ${BAD} RETURNING x`), `${begin} get ${i}`);
        assert.equal(db.inTransaction, true);
      }
      await db.exec(end);
    }
    assert.equal(db.inTransaction, false);
    const expected = ["BEGIN", "SAVEPOINT s"].flatMap((b) =>
      [0, 1, 2, 3].map((i) => [`${b} ${i}`])
    );
    assert.deepEqual(await client.values("SELECT x FROM t ORDER BY id"), expected);
    // transaction(): the failed statement is undone, the transaction goes on.
    await client.transaction(async (tx) => {
      await tx.run("INSERT INTO t (x) VALUES ('tx 1')");
      await invalidUtf8(tx.query(insert), "transaction() query");
      await invalidUtf8(tx.get(insert), "transaction() get");
      await tx.run("INSERT INTO t (x) VALUES ('tx 2')");
    });
    assert.deepEqual(
      await client.values("SELECT x FROM t WHERE x LIKE 'tx%' OR x = 'a' ORDER BY id"),
      [["tx 1"], ["tx 2"]],
    );
  },
});

Deno.test({
  name:
    "group commit: the member whose RETURNING is not valid UTF-8 is undone alone; the others commit",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    const clients = await Promise.all(Array.from({ length: 5 }, () => srv.client()));
    try {
      await clients[0].exec("CREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT)");
      const sql = "INSERT INTO t (x) VALUES (CASE WHEN ? THEN CAST(x'ff' AS TEXT) ELSE ? END) " +
        "RETURNING x";
      for (let i = 0; i < 3; i++) await clients[0].get(sql, [0, "warm"]); // known to be fast: it groups
      await clients[0].exec("DELETE FROM t");
      let kept = 0;
      for (let round = 0; round < 10; round++) {
        const bad = round % clients.length; // first member of its group, and later ones
        const results = await Promise.allSettled(
          clients.map((db, i) => db.get(sql, [i === bad ? 1 : 0, `${round}.${i}`])),
        );
        kept += onlyOneRejected(results, bad, "INVALID_UTF8", round);
      }
      assert.deepEqual(
        await clients[0].values("SELECT count(*), count(*) FILTER (WHERE x GLOB '*.*') FROM t"),
        [[kept, kept]],
      );
      const g = await groupCommits(srv);
      assert.ok(g.largest > 1, `writes were grouped: ${JSON.stringify(g)}`);
    } finally {
      for (const c of clients) await c.close();
    }
  },
});

Deno.test({
  name: "feed: a write undone for RETURNING invalid UTF-8 is not reported",
  ignore: !ffi, // feeds need the FFI engine's update hook
  async fn() {
    await using srv = await startServer();
    await using client = await connect({ ...srv.connectOptions, max: 2 });
    await client.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT)");
    await using feed = await client.subscribe({ tables: ["t"], values: true });
    const insert = `INSERT INTO t (x) VALUES ('undone'), (${BAD}) RETURNING x`;
    for (let i = 0; i < 3; i++) {
      await invalidUtf8(client.query(insert), `autocommit ${i}`);
      await invalidUtf8(Array.fromAsync(client.iterate(insert)), `autocommit iterate ${i}`);
    }
    await client.run("INSERT INTO t (id, x) VALUES (10, 'first')");
    {
      await using db = await client.reserve();
      await db.exec("BEGIN");
      await db.run("INSERT INTO t (id, x) VALUES (11, 'in tx')");
      await invalidUtf8(db.query(insert), "BEGIN");
      await db.exec("COMMIT");
    }
    await client.run("INSERT INTO t (id, x) VALUES (12, 'last')");
    const events = await takeEvents(feed, 3);
    assert.deepEqual(
      events.map((e) => e.type === "table" ? [e.op, e.rowid, e.value] : e),
      [
        ["insert", 10, { id: 10, x: "first" }],
        ["insert", 11, { id: 11, x: "in tx" }],
        ["insert", 12, { id: 12, x: "last" }],
      ],
    );
    assert.deepEqual(await client.values("SELECT id FROM t ORDER BY id"), [[10], [11], [12]]);
  },
});

Deno.test("iterate() of a write outside a transaction whose rows exceed maxResultBytes writes nothing (grouped, or alone: into a TEMP table)", async () => {
  await using srv = await startServer({ maxResultBytes: 10_000 });
  await using db = await srv.client();
  for (const table of ["t", "temp.tt"]) {
    // (A write into a TEMP table is never grouped: it runs alone.)
    await db.exec(`CREATE TABLE ${table} (id INTEGER PRIMARY KEY, v BLOB)`);
    const sql = `INSERT INTO ${table} (v) VALUES (zeroblob(?)), (zeroblob(?)) RETURNING v`;
    for (let round = 0; round < 4; round++) {
      const what = `${table}, round ${round}`;
      const err = await Array.fromAsync(db.iterate(sql, [6000, 6000])).then(() => null, (e) => e);
      assert.ok(err instanceof SqliteError, `${what}: ${err}`);
      assert.equal(err.code, ErrorCode.ResultTooLarge, `${what}: ${err.message}`);
      assert.deepEqual(await db.values(`SELECT count(*) FROM ${table}`), [[0]], what);
      assert.equal((await Array.fromAsync(db.iterate(sql, [10, 10]))).length, 2);
      await db.run(`DELETE FROM ${table}`);
    }
  }
});

Deno.test({
  name:
    "node engine: RETURNING of TEXT that is not valid UTF-8 reads back with U+FFFD, and the write stays (no error)",
  ignore: ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    await db.exec("CREATE TABLE t (x TEXT)");
    assert.deepEqual(await db.values(`INSERT INTO t VALUES (${BAD}) RETURNING x`), [["a\ufffdb"]]);
    assert.deepEqual(await db.values("SELECT hex(x) FROM t"), [["61FF62"]]);
  },
});

// ---- column names ------------------------------------------------------------

Deno.test("decodeColumnName() returns valid UTF-8 as is and refuses invalid bytes with INVALID_UTF8 naming the column's position", () => {
  const enc = new TextEncoder();
  for (const name of ["id", "", "\ufeffbom", "caf\u00e9", "\ud83d\ude00", "a\ufffdb"]) {
    assert.equal(decodeColumnName(enc.encode(name), 0), name);
  }
  for (
    const bytes of [[0xff], [0x61, 0xff, 0x62], [0xe2, 0x82], [0xc0, 0x80], [0xed, 0xa0, 0x80]]
  ) {
    assert.throws(
      () => decodeColumnName(new Uint8Array(bytes), 2),
      (e: unknown) => {
        assert.ok(e instanceof SqliteError);
        assert.equal(e.code, ErrorCode.InvalidUtf8);
        assert.match(
          e.message,
          /^Cannot read the name of result column 3: it is not valid UTF-8 and would come back changed; /,
        );
        return true;
      },
    );
  }
});

/**
 * A database whose table `t (a, <b ff fe AA d>)` has a column named with
 * bytes that are not UTF-8, as another program can write it (SQL text sent
 * by a client is UTF-8 throughout, so no client can name one so): made by
 * node:sqlite, then patched in the file.
 */
function badNameDatabase(path: string): void {
  const db = new DatabaseSync(path);
  db.exec("CREATE TABLE t (a INTEGER, bZZZZd INTEGER); INSERT INTO t VALUES (1, 2)");
  db.close();
  const bytes = Deno.readFileSync(path);
  const mark = new TextEncoder().encode("ZZZZ");
  let patched = 0;
  for (let i = 0; i + mark.length <= bytes.length; i++) {
    if (mark.every((b, j) => bytes[i + j] === b)) {
      bytes.set([0xff, 0xfe, 0x41, 0x41], i);
      patched++;
    }
  }
  assert.equal(patched, 1);
  Deno.writeFileSync(path, bytes);
}

Deno.test({
  name:
    "FFI engine: a result column whose name is not valid UTF-8 is refused with INVALID_UTF8, not renamed with U+FFFD",
  ignore: !ffi, // node:sqlite replaces the bytes before netsqlite sees the name
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "netsqlite-test-" });
    try {
      badNameDatabase(`${dir}/bad.db`);
      await using srv = await startServer({ database: `${dir}/bad.db` });
      await using db = await srv.client();
      const refused = (e: unknown): boolean => {
        assert.ok(e instanceof SqliteError, String(e));
        assert.equal(e.code, ErrorCode.InvalidUtf8, e.message);
        assert.match(e.message, /^Cannot read the name of result column 2: it is not valid UTF-8/);
        return true;
      };
      await assert.rejects(db.query("SELECT * FROM t"), refused);
      await assert.rejects(db.get("SELECT * FROM t"), refused);
      await assert.rejects(Array.fromAsync(db.iterate("SELECT * FROM t")), refused);
      await assert.rejects(db.prepare("SELECT * FROM t"), refused);
      await assert.rejects(db.query("INSERT INTO t VALUES (3, 4) RETURNING *"), refused);
      assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[1]]);
      // Named by position in a column list, as the message says.
      assert.deepEqual(await db.query("WITH r(a, b) AS (SELECT * FROM t) SELECT * FROM r"), [
        { a: 1, b: 2 },
      ]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
