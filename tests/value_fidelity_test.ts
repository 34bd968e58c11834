/**
 * Values reach the database and come back as they were: parameters as they
 * were when the call was made (also when it waits for a connection), column
 * names that are also names of `Object.prototype`'s accessors, text that is
 * not valid UTF-8, feeds on tables with a column named like the rowid.
 */

import assert from "node:assert/strict";
import { ErrorCode, SqliteError } from "../protocol/errors.ts";
import { startServer } from "./_helpers.ts";

const ffi = Deno.env.get("NETSQLITE_ENGINE") !== "node";

// ---- parameters are taken when the call is made ------------------------------

Deno.test("a call waiting for a connection sends its parameters as they were when it was made", async () => {
  await using srv = await startServer();
  await using db = await srv.client(); // max: 1
  await db.exec("CREATE TABLE m (k TEXT, i, v)");
  const insert = await db.prepare("INSERT INTO m VALUES ('stmt', ?, ?)");
  const select = await db.prepare("SELECT 'stmt', ?, ?");
  const reserved = await db.reserve();
  const positional: unknown[] = [1, "first"];
  const named: Record<string, unknown> = { i: 1, v: "first" };
  const bytes = new Uint8Array([1, 2, 3]);
  const blob: unknown[] = [1, bytes];
  const calls = [
    db.run("INSERT INTO m VALUES ('positional', ?, ?)", positional as never),
    db.run("INSERT INTO m VALUES ('named', :i, :v)", named as never),
    db.run("INSERT INTO m VALUES ('blob', ?, ?)", blob as never),
    db.batch([{ sql: "INSERT INTO m VALUES ('batch', ?, ?)", params: positional as never }]),
    db.values("SELECT 'query', ?, ?", positional as never),
    insert.run(positional as never),
    select.values(positional as never),
  ];
  const rows = db.iterate("SELECT 'iterate', ?, ?", positional as never, { arrays: true });
  const stmtRows = select.iterate(positional as never, { arrays: true });
  // The caller reuses its objects while the calls wait for the reserved connection.
  positional[0] = 2;
  positional[1] = undefined;
  named.i = 2;
  named.v = undefined;
  bytes.fill(9);
  blob[0] = 2;
  await new Promise((resolve) => setTimeout(resolve, 50));
  await reserved.release();
  const results = await Promise.all(calls);
  assert.deepEqual(results[4], [["query", 1, "first"]]);
  assert.deepEqual(results[6], [["stmt", 1, "first"]]);
  // iterate() starts its cursor on the first next(), with the parameters of the call.
  assert.deepEqual(await Array.fromAsync(rows), [["iterate", 1, "first"]]);
  assert.deepEqual(await Array.fromAsync(stmtRows), [["stmt", 1, "first"]]);
  await insert.finalize();
  await select.finalize();
  assert.deepEqual(await db.values("SELECT k, i, v FROM m ORDER BY rowid"), [
    ["positional", 1, "first"],
    ["named", 1, "first"],
    ["blob", 1, new Uint8Array([1, 2, 3])],
    ["batch", 1, "first"],
    ["stmt", 1, "first"],
  ]);
});

// ---- a column named __proto__ ------------------------------------------------------

function assertProtoRow(row: unknown, value: unknown, keys = ["id", "__proto__"]): void {
  assert.equal(Object.getPrototypeOf(row), Object.prototype);
  assert.deepEqual(Object.keys(row as object), keys);
  assert.deepEqual(Object.getOwnPropertyDescriptor(row, "__proto__")?.value, value);
}

Deno.test("a result column named __proto__ is an own property of every row object", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const sql = (v: string) => `SELECT 1 AS id, ${v} AS "__proto__"`;
  assertProtoRow(await db.get(sql("42")), 42);
  assertProtoRow((await db.query(sql("x'0102'")))[0], new Uint8Array([1, 2]));
  assertProtoRow(await db.get(sql("NULL")), null);
  for await (const row of db.iterate(sql("x'03'"))) assertProtoRow(row, new Uint8Array([3]));
  assertProtoRow((await db.batch([{ sql: sql("x'04'") }]))[0].rows[0], new Uint8Array([4]));
  const stmt = await db.prepare(sql("?"));
  assertProtoRow(await stmt.get([new Uint8Array([5])]), new Uint8Array([5]));
  assertProtoRow((await stmt.all([6]))[0], 6);
  for await (const row of stmt.iterate([7])) assertProtoRow(row, 7);
  await stmt.finalize();
  // Duplicate names: the last column wins, as for other names.
  assertProtoRow(await db.get(`SELECT 1 AS id, 2 AS "__proto__", 3 AS "__proto__"`), 3);
});

Deno.test({
  name: "a change feed with values delivers rows of a table with a __proto__ column",
  ignore: !ffi, // feeds need the FFI engine's update hook
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    await db.exec('CREATE TABLE p (id INTEGER PRIMARY KEY, "__proto__" BLOB)');
    await using feed = await db.subscribe({ tables: ["p"], values: true });
    const events = feed[Symbol.asyncIterator]();
    await db.run("INSERT INTO p VALUES (1, 5)");
    await db.run("INSERT INTO p VALUES (2, x'01')");
    for (const value of [5, new Uint8Array([1])]) {
      const { value: e } = await events.next();
      assert.equal(e?.op, "insert");
      assertProtoRow((e as { value: unknown }).value, value);
    }
    assert.deepEqual(await db.values("SELECT count(*) FROM p"), [[2]]);
  },
});

Deno.test("a Proxy of a Uint8Array is refused as a parameter with INVALID_PARAM, saying why", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  for (const fake of [new Proxy(new Uint8Array(2), {}), Object.create(Uint8Array.prototype)]) {
    await assert.rejects(db.values("SELECT ?", [fake]), (e: unknown) => {
      assert.ok(e instanceof SqliteError);
      assert.equal(e.code, ErrorCode.InvalidParam);
      assert.match(
        e.message,
        /^Cannot bind parameter 1: a Proxy of a Uint8Array .*pass the Uint8Array itself$/,
      );
      return true;
    });
  }
  assert.deepEqual(await db.values("SELECT ?", [new Uint8Array([1])]), [[new Uint8Array([1])]]);
});

// ---- text that is not valid UTF-8 ------------------------------------------------

Deno.test({
  name: "FFI engine: TEXT that is not valid UTF-8 is refused with INVALID_UTF8 naming the column",
  ignore: !ffi, // node:sqlite replaces invalid bytes before netsqlite sees them (README)
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)");
    // Bytes no UTF-8 decoder accepts: 0xff, a cut sequence, an overlong NUL, a NUL after 0xff.
    for (const hex of ["61ff62", "ff", "e282", "c080", "ff0041", "ffff00414243"]) {
      await db.run(`INSERT INTO t (body) VALUES (CAST(x'${hex}' AS TEXT))`);
    }
    const refused = (e: unknown): boolean => {
      assert.ok(e instanceof SqliteError, String(e));
      assert.equal(e.code, ErrorCode.InvalidUtf8);
      assert.match(
        e.message,
        /Cannot read column "body": its TEXT value is not valid UTF-8 and would come back changed; read its bytes with CAST\("body" AS BLOB\) \(or hex\(\)\)$/,
      );
      return true;
    };
    for (let id = 1; id <= 6; id++) {
      await assert.rejects(db.values("SELECT body FROM t WHERE id = ?", [id]), refused);
      await assert.rejects(db.get("SELECT id, body FROM t WHERE id = ?", [id]), refused);
    }
    await assert.rejects(Array.fromAsync(db.iterate("SELECT body FROM t")), refused);
    const stmt = await db.prepare("SELECT body FROM t WHERE id = ?");
    await assert.rejects(stmt.all([1]), refused);
    await stmt.finalize();
    await assert.rejects(db.batch([{ sql: "SELECT body FROM t" }]), refused);
    // Its bytes, as the message says; and the connection carries on.
    assert.deepEqual(await db.values("SELECT CAST(body AS BLOB), hex(body) FROM t WHERE id = 1"), [
      [new Uint8Array([0x61, 0xff, 0x62]), "61FF62"],
    ]);
    assert.deepEqual(await db.values("SELECT length(CAST(body AS BLOB)) FROM t WHERE id = 6"), [[
      6,
    ]]);
    // A column named otherwise than a plain identifier is a table's column or
    // an expression (named by its text): the hint gives both, each of which
    // reads the bytes.
    const expr = "CAST(x'61ff62' AS TEXT)";
    const err = await db.values(`SELECT ${expr}`).then(() => null, (e: unknown) => e);
    assert.ok(err instanceof SqliteError && err.code === ErrorCode.InvalidUtf8, String(err));
    assert.equal(
      err.message,
      `Cannot read column "${expr}": its TEXT value is not valid UTF-8 and would come back ` +
        `changed; read its bytes with CAST(col AS BLOB) (or hex(col)), col being the table's column ` +
        `"CAST(x'61ff62' AS TEXT)" or the expression ${expr} that the column selects`,
    );
    const bytes = [[new Uint8Array([0x61, 0xff, 0x62])]];
    assert.deepEqual(await db.values(`SELECT CAST(${expr} AS BLOB)`), bytes);
    await db.exec(`CREATE TABLE u ("first name" TEXT); INSERT INTO u VALUES (${expr})`);
    await assert.rejects(db.values('SELECT "first name" FROM u'), {
      message: 'Cannot read column "first name": its TEXT value is not valid UTF-8 and would ' +
        "come back changed; read its bytes with CAST(col AS BLOB) (or hex(col)), col being the " +
        `table's column "first name" or the expression first name that the column selects`,
    });
    assert.deepEqual(await db.values('SELECT CAST("first name" AS BLOB) FROM u'), bytes);
  },
});

// ---- feeds on tables with a column named like the rowid -----------------------------

Deno.test({
  name:
    "a change feed with values reads the right row when the table has a column named rowid, oid or _rowid_",
  ignore: !ffi, // feeds need the FFI engine's update hook
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    // Each user column holds the rowid of the other row, so reading by it gives the wrong row.
    const tables: [string, string][] = [
      ["r1", '"_rowid_" INTEGER'],
      ["r2", "RowId INTEGER"],
      ["r3", "rowid INTEGER, oid INTEGER"],
      ["r4", "_rowid_ INTEGER, oid INTEGER"],
    ];
    for (const [name, columns] of tables) {
      await db.exec(`CREATE TABLE ${name} (name TEXT, ${columns})`);
    }
    // A table declaring all three: its rowid has no SQL name left, so its rows come without value.
    await db.exec("CREATE TABLE r5 (name TEXT, rowid INTEGER, oid INTEGER, _rowid_ INTEGER)");
    await using feed = await db.subscribe({
      tables: ["r1", "r2", "r3", "r4", "r5"],
      values: true,
    });
    const events = feed[Symbol.asyncIterator]();
    for (const [name, columns] of tables) {
      const n = columns.split(",").length;
      const fill = (v: number) => Array(n).fill(v).join(", ");
      await db.run(`INSERT INTO ${name} VALUES ('first', ${fill(2)})`); // rowid 1
      await db.run(`INSERT INTO ${name} VALUES ('second', ${fill(1)})`); // rowid 2
      for (const [rowid, expected] of [[1, "first"], [2, "second"]] as const) {
        const { value: e } = await events.next();
        assert.equal(e?.table, name);
        assert.equal((e as { rowid: unknown }).rowid, rowid);
        assert.equal((e as { value: { name: string } }).value.name, expected, name);
      }
    }
    await db.run("INSERT INTO r5 VALUES ('only', 7, 7, 7)");
    const { value: e } = await events.next();
    assert.equal(e?.table, "r5");
    assert.equal((e as { value: unknown }).value, null);
  },
});

// ---- named parameters ----------------------------------------------------------

Deno.test("two keys naming one parameter ({ a, $a }) are refused with INVALID_PARAM naming both", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const refused = (message: string) => (e: unknown): boolean => {
    assert.ok(e instanceof SqliteError, String(e));
    assert.equal(e.code, ErrorCode.InvalidParam);
    assert.equal(e.message, message);
    return true;
  };
  await assert.rejects(
    db.values("SELECT $a", { a: 1, $a: 2 }),
    refused('Cannot bind parameter "$a": both "a" and "$a" name it; give one'),
  );
  await assert.rejects(
    db.values("SELECT :a, @a", { "@a": 2, a: 1 }),
    refused('Cannot bind parameter "@a": both "@a" and "a" name it; give one'),
  );
  const stmt = await db.prepare("SELECT :x");
  await assert.rejects(
    stmt.all({ x: 1, ":x": 1 }),
    refused(/* same value too */ 'Cannot bind parameter ":x": both "x" and ":x" name it; give one'),
  );
  assert.deepEqual(await stmt.values({ x: 3 }), [[3]]);
  await stmt.finalize();
  // One key per parameter: as before.
  assert.deepEqual(await db.values("SELECT $a, :b", { a: 1, ":b": 2 }), [[1, 2]]);
});
