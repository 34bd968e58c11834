/**
 * Fixes of the ORM adapters' review, through the real `kysely` and
 * `drizzle-orm` packages: raw savepoint commands in a Kysely `read only`
 * transaction, and a transaction `BEGIN` in flight when the server process
 * dies, which reports `mayHaveRun` false (Drizzle, Kysely and the client's
 * own `transaction()` alike).
 */

import assert from "node:assert/strict";
import { Kysely, sql as ksql } from "npm:kysely@^0.28";
import { DrizzleQueryError, sql as dsql } from "npm:drizzle-orm@^0.45";
import { NetsqliteDialect } from "../adapters/kysely.ts";
import { drizzle } from "../adapters/drizzle.ts";
import { type Client, connect, ConnectionError, ErrorCode, SqliteError } from "../client.ts";
import { reservedConnections } from "../client/pool.ts";
import type { PooledConnection } from "../client/connection.ts";
import { delay, type ServerProcess, startServer, startServerProcess } from "./_helpers.ts";

interface Database {
  t: { x: number };
}

/** Waits (10 s at most) until `ok()`, polling: no fixed pause to lose a race with. */
async function until(what: string, ok: () => boolean): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    if (ok()) return;
    await delay(10);
  }
  throw new Error(`Timed out waiting: ${what}`);
}

Deno.test("kysely: raw SAVEPOINT, RELEASE and ROLLBACK TO run in a read only transaction; writes and ROLLBACK stay refused", async () => {
  await using srv = await startServer();
  await using client = await connect(srv.connectOptions);
  const db = new Kysely<Database>({ dialect: new NetsqliteDialect({ client }) });
  try {
    await ksql`CREATE TABLE t (x INTEGER)`.execute(db);
    await ksql`INSERT INTO t VALUES (1)`.execute(db);
    const isReadOnly = (err: unknown) => {
      assert.ok(err instanceof SqliteError, String(err));
      assert.equal(err.code, ErrorCode.ReadOnly);
      assert.match(err.message, /^Cannot run "INSERT INTO t VALUES \(2\)" in a read only /);
      return true;
    };
    // db.transaction(): raw savepoint commands through sql`...`.execute(trx).
    const read = await db.transaction().setAccessMode("read only").execute(async (trx) => {
      await ksql`SAVEPOINT a`.execute(trx);
      await ksql`savepoint "b"`.execute(trx);
      await assert.rejects(ksql`INSERT INTO t VALUES (2)`.execute(trx), isReadOnly);
      // One statement per call (the server refuses more): no write rides along a savepoint.
      const two = await ksql`SAVEPOINT c; INSERT INTO t VALUES (2)`.execute(trx).catch((e) => e);
      assert.ok(two instanceof SqliteError, String(two));
      assert.equal(two.code, ErrorCode.BadRequest);
      assert.match(two.message, /^Cannot prepare statement: SQL holds more than one statement/);
      await ksql`ROLLBACK TO b`.execute(trx);
      await ksql`ROLLBACK TRANSACTION TO SAVEPOINT b`.execute(trx);
      await ksql`RELEASE SAVEPOINT b`.execute(trx);
      await ksql`/* comment */ RELEASE a`.execute(trx);
      // ROLLBACK without TO would end the transaction: still TX_CONTROL.
      await assert.rejects(
        ksql`ROLLBACK`.execute(trx),
        (e: SqliteError) => e.code === ErrorCode.TxControl,
      );
      return (await ksql<{ n: number }>`SELECT count(*) AS n FROM t`.execute(trx)).rows;
    });
    assert.deepEqual(read, [{ n: 1 }]);
    // A controlled transaction: raw ones, and Kysely's own savepoint commands.
    const trx = await db.startTransaction().setAccessMode("read only").execute();
    await ksql`SAVEPOINT raw`.execute(trx);
    const sp = await trx.savepoint("own").execute();
    await assert.rejects(ksql`INSERT INTO t VALUES (2)`.execute(sp), isReadOnly);
    const back = await sp.rollbackToSavepoint("own").execute();
    const released = await back.releaseSavepoint("own").execute();
    await ksql`ROLLBACK TO raw`.execute(released);
    await ksql`RELEASE raw`.execute(released);
    await released.commit().execute();
    // Nothing was written; the connection went back without the read only mode.
    await db.transaction().execute((t) => ksql`INSERT INTO t VALUES (3)`.execute(t));
    assert.deepEqual((await ksql<{ x: number }>`SELECT x FROM t ORDER BY x`.execute(db)).rows, [
      { x: 1 },
      { x: 3 },
    ]);
  } finally {
    await db.destroy();
  }
});

/**
 * A client (max 1) with its only connection open, and that connection: the
 * transaction the test begins reserves it, so its `sent` counter tells when
 * the `BEGIN` was sent.
 */
async function oneConnection(srv: ServerProcess): Promise<[Client, PooledConnection]> {
  const client = await connect({ ...srv.connectOptions, max: 1 });
  await client.exec("CREATE TABLE t (x INTEGER)");
  const r = await client.reserve();
  const conn = reservedConnections.get(r)!;
  r.release();
  return [client, conn];
}

/**
 * Begins a transaction with `begin` while the server process is stopped
 * (SIGSTOP), waits until its BEGIN was sent on `conn` (unanswered), then
 * kills the server (SIGKILL): the BEGIN's answer never comes. Returns what
 * `begin` rejected with.
 */
async function beginLost(
  srv: ServerProcess,
  conn: PooledConnection,
  begin: () => Promise<unknown>,
): Promise<unknown> {
  const before = conn.sent;
  srv.child.kill("SIGSTOP");
  const failed = begin().then(() => null, (e: unknown) => e);
  try {
    await until("the BEGIN was sent", () => conn.sent > before);
  } finally {
    await srv.kill(); // SIGKILL reaches a stopped process
  }
  assert.equal(conn.sent, before + 1, "the BEGIN alone was sent");
  return await failed;
}

/** The error of a BEGIN in flight as the server died: it says it did not run. */
function assertLostBegin(err: unknown): void {
  assert.ok(err instanceof ConnectionError, String(err));
  assert.equal(err.code, ErrorCode.ConnectionClosed);
  assert.equal(err.mayHaveRun, false);
  assert.match(
    err.message,
    /^Connection was lost while the transaction was beginning \(Connection to unix:\S+ was closed \(the call was sent: it may or may not have run\)\); had its BEGIN run, the transaction ended with the connection, which the server rolled back: nothing of it stays applied; retry the whole transaction$/,
  );
  assert.ok(err.cause instanceof ConnectionError, String(err.cause));
  assert.equal(err.cause.mayHaveRun, true);
}

Deno.test("client transaction(): a BEGIN in flight when the server process dies rejects with mayHaveRun false", async () => {
  await using srv = await startServerProcess();
  const [client, conn] = await oneConnection(srv);
  await using _client = client;
  let ran = false;
  const err = await beginLost(srv, conn, () =>
    client.transaction(async (tx) => {
      ran = true;
      await tx.run("INSERT INTO t VALUES (1)");
    }));
  assert.equal(ran, false);
  assertLostBegin(err);
});

Deno.test("drizzle: a begin in flight when the server process dies rejects with mayHaveRun false", async () => {
  await using srv = await startServerProcess();
  const [client, conn] = await oneConnection(srv);
  await using _client = client;
  const db = drizzle(client);
  let ran = false;
  const err = await beginLost(srv, conn, () =>
    db.transaction(async (tx) => {
      ran = true;
      await tx.run(dsql`INSERT INTO t VALUES (1)`);
    }));
  assert.equal(ran, false);
  // Drizzle's error of the failed query, whose cause says it did not run.
  assert.ok(err instanceof DrizzleQueryError, String(err));
  assert.equal(err.query, "begin");
  assertLostBegin(err.cause);
});

Deno.test("kysely: a BEGIN in flight when the server process dies rejects with mayHaveRun false", async (t) => {
  const begins = {
    "db.transaction().execute()": (db: Kysely<Database>, ran: () => void) =>
      db.transaction().execute(async (trx) => {
        ran();
        await ksql`INSERT INTO t VALUES (1)`.execute(trx);
      }),
    "db.startTransaction().execute()": (db: Kysely<Database>, ran: () => void) =>
      db.startTransaction().execute().then(ran),
  };
  for (const [name, begin] of Object.entries(begins)) {
    await t.step(name, async () => {
      await using srv = await startServerProcess();
      const [client, conn] = await oneConnection(srv);
      await using _client = client;
      const db = new Kysely<Database>({ dialect: new NetsqliteDialect({ client }) });
      try {
        let ran = false;
        const err = await beginLost(srv, conn, () => begin(db, () => ran = true));
        assert.equal(ran, false);
        assertLostBegin(err);
      } finally {
        await db.destroy();
      }
    });
  }
});
