/**
 * Arguments of the client's query API checked before anything is sent:
 * SQL that is not a string (a number would reach the server as a prepared
 * statement's handle, and run that statement), parameters that are neither
 * an array nor a plain object, and `Statement.raw()`'s toggle. Each case
 * runs against a real server and checks that nothing ran there.
 */

import assert from "node:assert/strict";
import { connect, ErrorCode, type Queryable, SqliteError } from "../client.ts";
import { startServer } from "./_helpers.ts";

/** Calls each SQL-taking method of `q` with `sql`, bypassing the types, as JavaScript can. */
function sqlCalls(q: Queryable, sql: unknown): [string, () => Promise<unknown>][] {
  // deno-lint-ignore no-explicit-any
  const any = q as any;
  return [
    ["exec", () => any.exec(sql)],
    ["run", () => any.run(sql)],
    ["query", () => any.query(sql)],
    ["get", () => any.get(sql)],
    ["values", () => any.values(sql)],
    ["iterate", () => any.iterate(sql).next()],
    ["batch", () => any.batch([{ sql }])],
    ["prepare", () => any.prepare(sql)],
  ];
}

/** What each call of {@link sqlCalls} settled with: its method and its error, or `"resolved"`. */
async function outcomes(calls: [string, () => Promise<unknown>][]): Promise<[string, unknown][]> {
  const settled: [string, unknown][] = [];
  for (const [method, call] of calls) {
    settled.push([method, await call().then(() => "resolved", (err) => err)]);
  }
  return settled;
}

/** Asserts that each outcome is the client's refusal of SQL that is not a string. */
function assertRefused(settled: [string, unknown][], got: string): void {
  for (const [method, err] of settled) {
    assert.ok(err instanceof SqliteError, `${method}: ${String(err)}`);
    assert.equal(err.code, ErrorCode.BadRequest, method);
    const prefix = method === "batch" ? "Batch statement 1: " : "";
    assert.equal(
      err.message,
      `${prefix}Cannot send SQL: expected a string, got ${got} (a prepared statement runs ` +
        "through its Statement)",
      method,
    );
  }
}

Deno.test("Queryable methods refuse a number as SQL before sending it, so it never runs a prepared statement by handle", async () => {
  await using srv = await startServer();
  // One connection: the handles prepared below are on the connection the calls would use.
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1), (2)");
  const del = await db.prepare("DELETE FROM t");
  const ins = await db.prepare("INSERT INTO t VALUES (3)");
  const settled: [string, unknown][] = [];
  for (const handle of [0, 1, 2, 3]) settled.push(...await outcomes(sqlCalls(db, handle)));
  assert.deepEqual(await db.values("SELECT x FROM t ORDER BY x"), [[1], [2]], "nothing ran");
  assertRefused(settled, "a number");
  await del.finalize();
  await ins.finalize();
});

Deno.test("ReservedConnection and Transaction methods refuse a number as SQL before sending it", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 2 });
  await db.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1)");
  {
    await using conn = await db.reserve();
    const del = await conn.prepare("DELETE FROM t");
    const settled = [...await outcomes(sqlCalls(conn, 1)), ...await outcomes(sqlCalls(conn, 2))];
    assert.deepEqual(await conn.values("SELECT x FROM t"), [[1]], "nothing ran");
    assertRefused(settled, "a number");
    await del.finalize();
  }
  await db.transaction(async (tx) => {
    const del = await tx.prepare("DELETE FROM t");
    const settled = await outcomes(sqlCalls(tx, 1));
    assert.deepEqual(await tx.values("SELECT x FROM t"), [[1]], "nothing ran");
    assertRefused(settled, "a number");
    await del.finalize();
  });
  assert.deepEqual(await db.values("SELECT x FROM t"), [[1]]);
});

Deno.test("Queryable methods refuse SQL of any type but string with BAD_REQUEST naming the type", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const cases: [unknown, string][] = [
    [1n, "a bigint"],
    [null, "null"],
    [undefined, "undefined"],
    [true, "a boolean"],
    [["SELECT 1"], "an array"],
    [{ sql: "SELECT 1" }, "a plain object"],
    [new String("SELECT 1"), "an instance of String"],
  ];
  for (const [sql, got] of cases) assertRefused(await outcomes(sqlCalls(db, sql)), got);
  // A string is still sent as it is.
  assert.deepEqual(await db.values("SELECT 1"), [[1]]);
});

Deno.test("Statement.raw() takes no argument or a boolean and throws TypeError for anything else, as better-sqlite3", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const st = await db.prepare("SELECT 1 AS a, 2 AS b");
  assert.equal(st.raw().isRaw, true);
  assert.deepEqual(await st.all(), [[1, 2]]);
  assert.equal(st.raw(false).isRaw, false);
  assert.deepEqual(await st.all(), [{ a: 1, b: 2 }]);
  assert.equal(st.raw(true).isRaw, true);
  assert.equal(st.raw(undefined).isRaw, true, "undefined is the default, true");
  st.raw(false);
  const cases: [unknown, string][] = [
    [1, "a number"],
    [0, "a number"],
    ["false", "a string"],
    [null, "null"],
    [{}, "a plain object"],
  ];
  for (const [arg, kind] of cases) {
    assert.throws(
      () => st.raw(arg as boolean),
      (err: unknown) => {
        assert.ok(err instanceof TypeError, String(err));
        assert.equal(err.message, `Invalid argument of raw(): expected a boolean, got ${kind}`);
        return true;
      },
    );
    assert.equal(st.isRaw, false, "left as it was");
  }
  assert.deepEqual(await st.get(), { a: 1, b: 2 });
  await st.finalize();
});
