/**
 * A cursor opened inside a transaction ends with it, also when one `exec`
 * script ends that transaction and begins another (`COMMIT; BEGIN`,
 * `ROLLBACK; BEGIN IMMEDIATE`, `RELEASE a; SAVEPOINT b`): its next pull fails
 * `CURSOR_CLOSED` without yielding the rows already received, while a cursor
 * opened in the new transaction reads on. A script that only nests
 * savepoints inside the transaction ends nothing. Real servers, on the
 * engine `NETSQLITE_ENGINE` names.
 */

import assert from "node:assert/strict";
import { ErrorCode, SqliteError } from "../mod.ts";
import { MessageDecoder, MessageEncoder } from "../protocol/codec.ts";
import { Op, PROTOCOL_VERSION, type Request, Status } from "../protocol/messages.ts";
import { FrameReader } from "../transport/frame_reader.ts";
import { startServer } from "./_helpers.ts";

const ROWS = 5_000;
const SERIES =
  "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < ?) SELECT x FROM n";

/** Reads `it` to its end; returns the rows read and the error that ended it, if any. */
async function drain<T>(it: AsyncIterator<T>): Promise<{ rows: T[]; error: unknown }> {
  const rows: T[] = [];
  try {
    for (;;) {
      const r = await it.next();
      if (r.done) return { rows, error: null };
      rows.push(r.value);
    }
  } catch (error) {
    return { rows, error };
  }
}

function assertClosed(error: unknown, what: string): void {
  assert.ok(error instanceof SqliteError, `${what}: expected CURSOR_CLOSED, got ${String(error)}`);
  assert.equal(error.code, ErrorCode.CursorClosed, error.message);
  assert.match(error.message, /closed when its transaction ended/);
}

/** Scripts that end the open transaction and begin another, and how the first is opened. */
const SCRIPTS: { open: string; script: string; committed: boolean }[] = [
  { open: "BEGIN", script: "COMMIT; BEGIN", committed: true },
  { open: "BEGIN", script: "ROLLBACK; BEGIN", committed: false },
  { open: "BEGIN", script: "ROLLBACK; BEGIN IMMEDIATE", committed: false },
  { open: "BEGIN", script: "END TRANSACTION; BEGIN DEFERRED", committed: true },
  // COMMIT followed by other statements, then a new transaction.
  {
    open: "BEGIN",
    script: "COMMIT; INSERT INTO log VALUES ('between'); SELECT 1; BEGIN; " +
      "INSERT INTO log VALUES ('second')",
    committed: true,
  },
  // A transaction begun by SAVEPOINT ends at its RELEASE.
  { open: "SAVEPOINT a", script: "RELEASE a; SAVEPOINT b", committed: true },
  { open: "SAVEPOINT a", script: "ROLLBACK; SAVEPOINT b", committed: false },
];

for (const { open, script, committed } of SCRIPTS) {
  Deno.test(`Reserved cursor opened after "${open}" fails CURSOR_CLOSED after exec("${script}"); one opened after reads on`, async () => {
    await using srv = await startServer();
    await using db = await srv.client();
    await db.exec("CREATE TABLE t (x); CREATE TABLE log (what TEXT)");
    await db.run(`INSERT INTO t ${SERIES}`, [ROWS]);
    await using conn = await db.reserve();
    await conn.exec(open);
    await conn.run("INSERT INTO log VALUES ('first')");
    const old = conn.iterate<[number]>("SELECT x FROM t ORDER BY x", [], { arrays: true })
      [Symbol.asyncIterator]();
    assert.deepEqual((await old.next()).value, [1]);
    await conn.exec(script);
    assert.equal(conn.inTransaction, true);
    const { rows, error } = await drain(old);
    assertClosed(error, script);
    assert.equal(rows.length, 0, `${rows.length} rows yielded after exec("${script}")`);
    // A cursor of the new transaction reads to its end.
    const fresh = await drain(
      conn.iterate<[number]>("SELECT x FROM t ORDER BY x", [], { arrays: true })
        [Symbol.asyncIterator](),
    );
    assert.equal(fresh.error, null);
    assert.equal(fresh.rows.length, ROWS);
    assert.deepEqual(fresh.rows.at(-1), [ROWS]);
    await conn.exec("COMMIT");
    const first = await conn.values("SELECT count(*) FROM log WHERE what = 'first'");
    assert.deepEqual(first, [[committed ? 1 : 0]]);
  });
}

Deno.test("Client and prepared-statement cursors of a transaction fail CURSOR_CLOSED after exec('COMMIT; BEGIN')", async () => {
  await using srv = await startServer();
  await using db = await srv.client(); // max: 1, raw BEGIN allowed
  await db.exec("CREATE TABLE t (x)");
  await db.run(`INSERT INTO t ${SERIES}`, [ROWS]);
  const stmt = await db.prepare("SELECT x FROM t WHERE x > ? ORDER BY x");
  await db.exec("BEGIN");
  const plain = db.iterate<{ x: number }>("SELECT x FROM t ORDER BY x")[Symbol.asyncIterator]();
  const prepared = stmt.iterate<{ x: number }>([0])[Symbol.asyncIterator]();
  assert.equal((await plain.next()).value?.x, 1);
  assert.equal((await prepared.next()).value?.x, 1);
  await db.exec("COMMIT; BEGIN");
  assert.equal(db.inTransaction, true);
  for (const [name, it] of [["iterate()", plain], ["statement.iterate()", prepared]] as const) {
    const { rows, error } = await drain(it);
    assertClosed(error, name);
    assert.equal(rows.length, 0, `${name}: ${rows.length} rows yielded`);
  }
  const fresh = await drain(stmt.iterate<{ x: number }>([ROWS - 10])[Symbol.asyncIterator]());
  assert.equal(fresh.error, null);
  assert.deepEqual(fresh.rows.map((r) => r.x), Array.from({ length: 10 }, (_, i) => ROWS - 9 + i));
  await db.exec("ROLLBACK");
  await stmt.finalize();
});

Deno.test("A script that fails after its COMMIT and BEGIN still closes the first transaction's cursors", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (x)");
  await db.run(`INSERT INTO t ${SERIES}`, [ROWS]);
  await using conn = await db.reserve();
  await conn.exec("BEGIN");
  const old = conn.iterate<[number]>("SELECT x FROM t", [], { arrays: true })
    [Symbol.asyncIterator]();
  await old.next();
  await assert.rejects(conn.exec("COMMIT; BEGIN; SELECT * FROM missing"), /no such table/);
  assert.equal(conn.inTransaction, true);
  const { rows, error } = await drain(old);
  assertClosed(error, "failed script");
  assert.equal(rows.length, 0);
  await conn.exec("ROLLBACK");
});

Deno.test("A script of savepoints nested in the transaction leaves its cursors open", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (x); CREATE TABLE u (y)");
  await db.run(`INSERT INTO t ${SERIES}`, [ROWS]);
  await using conn = await db.reserve();
  await conn.exec("BEGIN");
  const it = conn.iterate<[number]>("SELECT x FROM t ORDER BY x", [], { arrays: true })
    [Symbol.asyncIterator]();
  assert.deepEqual((await it.next()).value, [1]);
  await conn.exec(
    "SAVEPOINT s1; INSERT INTO u VALUES (1); RELEASE s1; SAVEPOINT s2; ROLLBACK TO s2; RELEASE s2",
  );
  await conn.exec("SELECT 1; INSERT INTO u VALUES (2)");
  const { rows, error } = await drain(it);
  assert.equal(error, null);
  assert.equal(rows.length, ROWS - 1);
  await conn.exec("COMMIT");
  assert.deepEqual(await conn.values("SELECT y FROM u ORDER BY y"), [[1], [2]]);
});

Deno.test("Protocol: an exec script that ends the transaction says so (TxEnded) and ends its cursors on the server", async () => {
  await using srv = await startServer();
  const path = (srv.connectOptions as { path: string }).path;
  const conn = await Deno.connect({ transport: "unix", path });
  const enc = new MessageEncoder(1 << 20);
  const dec = new MessageDecoder();
  const reader = new FrameReader(1 << 22);
  const buf = new Uint8Array(64 * 1024);
  let id = 0;
  const call = async (op: number, ...args: unknown[]): Promise<[number, unknown]> => {
    enc.append([op, ++id, ...args] as unknown as Request);
    await conn.write(enc.take());
    for (;;) {
      const frame = reader.next();
      if (frame !== undefined) {
        const [got, status, body] = dec.decode(frame) as [number, number, unknown];
        assert.equal(got, id);
        return [status, body];
      }
      const n = await conn.read(buf);
      if (n === null) throw new Error("connection closed");
      reader.push(buf.slice(0, n));
    }
  };
  try {
    await call(Op.Hello, { version: PROTOCOL_VERSION });
    assert.equal((await call(Op.Exec, "CREATE TABLE t (x)"))[0], Status.Ok);
    await call(Op.Run, `INSERT INTO t ${SERIES}`, [ROWS]);
    assert.equal((await call(Op.Exec, "BEGIN"))[0], Status.InTransaction);
    const [, opened] = await call(Op.Iterate, "SELECT x FROM t", null);
    const cursor = (opened as [number])[0];
    assert.equal((await call(Op.Next, cursor))[0], Status.InTransaction);
    // Ended and begun again: both bits.
    const [status] = await call(Op.Exec, "COMMIT; BEGIN");
    assert.equal(status, Status.InTransaction | Status.TxEnded);
    const [nextStatus, next] = await call(Op.Next, cursor);
    assert.equal(nextStatus, Status.InTransaction | Status.Error, "the cursor went on");
    assert.equal((next as { code: string }).code, ErrorCode.CursorClosed);
    // Said once; a script of nested savepoints ends nothing.
    assert.equal(
      (await call(Op.Exec, "SAVEPOINT s; RELEASE s; SELECT 1"))[0],
      Status.InTransaction,
    );
    // Set only with a transaction open after the reply.
    assert.equal((await call(Op.Exec, "COMMIT; BEGIN; COMMIT"))[0], Status.Ok);
    assert.equal((await call(Op.Exec, "BEGIN"))[0], Status.InTransaction);
    assert.equal((await call(Op.Exec, "COMMIT"))[0], Status.Ok);
    assert.equal((await call(Op.Exec, "SELECT 1"))[0], Status.Ok);
  } finally {
    conn.close();
  }
});
