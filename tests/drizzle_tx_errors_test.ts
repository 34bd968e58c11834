/**
 * Drizzle transactions' errors, as the client's own API gives them: a nested
 * transaction whose whole transaction SQLite already rolled back (or whose
 * lease ran out) rejects with the statement's error, not TX_UNDO_FAILED; a
 * statement refused after its callback threw says why.
 */

import assert from "node:assert/strict";
import { DrizzleQueryError, sql } from "npm:drizzle-orm@^0.45";
import { drizzle } from "../adapters/drizzle.ts";
import { connect, ErrorCode, SqliteError } from "../client.ts";
import { startServer } from "./_helpers.ts";

/** The `SqliteError` a Drizzle error carries (`cause`), or the error itself. */
function sqliteErrorOf(err: unknown): SqliteError {
  const e = err instanceof DrizzleQueryError ? err.cause : err;
  assert.ok(e instanceof SqliteError, `expected a SqliteError, got ${err}`);
  return e;
}

Deno.test("drizzle: a nested transaction whose statement SQLite rolled everything back for rejects with that statement's error, as a nested client.transaction() does", async () => {
  await using srv = await startServer();
  await using client = await connect(srv.connectOptions);
  await client.run("CREATE TABLE t (x INTEGER UNIQUE)");
  await client.run("CREATE TABLE u (y)");
  await client.run(
    "CREATE TRIGGER no_bad BEFORE INSERT ON u WHEN new.y = 'bad' " +
      "BEGIN SELECT RAISE(ROLLBACK, 'trigger says no'); END",
  );
  const db = drizzle(client);
  const isTriggers = (err: unknown) => {
    assert.ok(err instanceof DrizzleQueryError, String(err));
    assert.match(err.message, /^Failed query: INSERT INTO u VALUES \('bad'\)/);
    const e = sqliteErrorOf(err);
    assert.equal(e.code, "SQLITE_CONSTRAINT_TRIGGER");
    assert.match(e.message, /^trigger says no; SQLite rolled back the transaction/);
    return true;
  };

  // The client's own nested transaction, for reference: its function's error.
  const reference = await client.transaction(async (tx) => {
    await tx.run("INSERT INTO t VALUES (1)");
    await tx.transaction(async (t2) => {
      await t2.run("INSERT INTO u VALUES ('bad')");
    });
  }).catch((e) => e);
  assert.equal(sqliteErrorOf(reference).code, "SQLITE_CONSTRAINT_TRIGGER");

  // Drizzle's: the same error, not TX_UNDO_FAILED ("could not be undone": SQLite undid it all).
  let inner: unknown;
  const outer = await db.transaction(async (tx) => {
    await tx.run(sql`INSERT INTO t VALUES (1)`);
    inner = await tx.transaction(async (t2) => {
      await t2.run(sql`INSERT INTO u VALUES ('bad')`);
    }).catch((e) => e);
    // The transaction is gone: the next statement says so (the server's TX_ABORTED).
    await tx.run(sql`INSERT INTO t VALUES (2)`);
  }).catch((e) => e);
  assert.ok(isTriggers(inner));
  assert.equal(sqliteErrorOf(outer).code, ErrorCode.TxAborted);

  // Through INSERT OR ROLLBACK, left uncaught: the caller gets the constraint's error.
  const orRollback = await db.transaction(async (tx) => {
    await tx.run(sql`INSERT INTO t VALUES (3)`);
    await tx.transaction(async (t2) => {
      await t2.run(sql`INSERT OR ROLLBACK INTO t VALUES (3)`);
    });
  }).catch((e) => e);
  assert.ok(orRollback instanceof DrizzleQueryError, String(orRollback));
  assert.equal(sqliteErrorOf(orRollback).code, "SQLITE_CONSTRAINT_UNIQUE");

  // A nested callback that catches the statement's error and returns: its release fails with
  // TX_ABORTED, the commit is never reached, nothing is committed.
  const caught = await db.transaction(async (tx) => {
    await tx.run(sql`INSERT INTO t VALUES (4)`);
    await tx.transaction(async (t2) => {
      await t2.run(sql`INSERT INTO u VALUES ('bad')`).catch(() => {});
    });
  }).catch((e) => e);
  assert.equal(sqliteErrorOf(caught).code, ErrorCode.TxAborted);

  assert.deepEqual(await client.values("SELECT x FROM t"), []);
  // The connection is fine afterwards.
  await db.transaction(async (tx) => {
    await tx.transaction((t2) => t2.run(sql`INSERT INTO t VALUES (5)`));
  });
  assert.deepEqual(await client.values("SELECT x FROM t"), [[5]]);
});

Deno.test("drizzle: a statement made without await, refused because the callback threw first, says so (TX_ENDED), not that it waited for a nested transaction", async () => {
  await using srv = await startServer();
  await using client = await connect(srv.connectOptions);
  await client.run("CREATE TABLE t (x INTEGER)");
  const db = drizzle(client);
  let pending: Promise<unknown> | undefined;
  const thrown = await db.transaction((tx) => {
    // better-sqlite3 style: a synchronous callback whose statement is not awaited.
    pending = tx.run(sql`INSERT INTO t VALUES (1)`).catch((e) => e);
    throw new Error("callback failed");
  }).catch((e) => e);
  assert.equal((thrown as Error).message, "callback failed");
  const refused = sqliteErrorOf(await pending);
  assert.equal(refused.code, ErrorCode.TxEnded);
  assert.equal(
    refused.message,
    "Transaction has ended: its callback settled before this statement could be sent (a " +
      "statement made without await, or one that waited for a transaction nested beside it); " +
      "the statement was not sent",
  );
  assert.deepEqual(await client.values("SELECT x FROM t"), []);
});

Deno.test("drizzle: a nested transaction whose lease expired rejects with TX_TIMEOUT (retryable), not TX_UNDO_FAILED", async () => {
  // A 200 ms idle lease, idle 2 s: a wide margin on a loaded machine.
  await using srv = await startServer({ txIdleTimeout: 200 });
  await using client = await connect(srv.connectOptions);
  await client.run("CREATE TABLE t (x INTEGER)");
  const db = drizzle(client);
  let inner: unknown;
  const outer = await db.transaction(async (tx) => {
    await tx.run(sql`INSERT INTO t VALUES (1)`);
    inner = await tx.transaction(async (t2) => {
      await t2.run(sql`INSERT INTO t VALUES (2)`);
      await new Promise((resolve) => setTimeout(resolve, 2000));
      await t2.run(sql`INSERT INTO t VALUES (3)`);
    }).catch((e) => e);
    throw inner;
  }).catch((e) => e);
  assert.ok(inner instanceof DrizzleQueryError, String(inner));
  assert.match(inner.message, /^Failed query: INSERT INTO t VALUES \(3\)/);
  assert.equal(sqliteErrorOf(inner).code, ErrorCode.TxTimeout);
  assert.equal(outer, inner);
  assert.deepEqual(await client.values("SELECT x FROM t"), []);
});
