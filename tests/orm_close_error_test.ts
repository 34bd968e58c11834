/**
 * A transaction whose client is closed (a graceful shutdown: Kysely's
 * `db.destroy()`, `client.close()`) or whose connection is lost while its
 * callback runs: the caller gets the callback's own error, or its failed
 * statement's, not the error of the rollback that could not be sent
 * ("Client is closed"). Through the real `kysely` and `drizzle-orm`
 * packages, and the client's own `transaction()`, against a real server.
 */

import assert from "node:assert/strict";
import { Kysely, sql as ksql } from "npm:kysely@^0.28";
import { sql } from "npm:drizzle-orm@^0.45";
import { NetsqliteDialect } from "../adapters/kysely.ts";
import { drizzle } from "../adapters/drizzle.ts";
import { connect, ConnectionError, ErrorCode, serve } from "../mod.ts";
import { startServer, tempDir } from "./_helpers.ts";

/** A promise and its resolver: the callback waits on it while the test closes the client. */
function signal(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => resolve = r);
  return { promise, resolve };
}

/** Asserts that `err` is the client's "Client is closed" `ConnectionError`. */
function assertClientClosed(err: unknown): void {
  assert.ok(err instanceof ConnectionError, String(err));
  assert.equal(err.code, ErrorCode.ConnectionClosed);
  assert.equal(err.message, "Client is closed");
}

Deno.test("Kysely: a callback that throws after db.destroy() closed the client rejects with its own error", async () => {
  await using srv = await startServer();
  const db = new Kysely<{ t: { x: number } }>({
    // A function: db.destroy() closes the client it connected.
    dialect: new NetsqliteDialect({ client: () => connect(srv.connectOptions) }),
  });
  await ksql`CREATE TABLE t (x INTEGER)`.execute(db);
  const inserted = signal();
  const closed = signal();
  const appError = new Error("app error");
  const tx = db.transaction().execute(async (trx) => {
    await trx.insertInto("t").values({ x: 1 }).execute();
    inserted.resolve();
    await closed.promise;
    throw appError;
  });
  const settled = tx.then(() => "resolved", (err) => err);
  await inserted.promise;
  await db.destroy();
  closed.resolve();
  assert.equal(await settled, appError);
  await using client = await connect(srv.connectOptions);
  assert.deepEqual(await client.values("SELECT count(*) FROM t"), [[0]]);
});

Deno.test("Kysely: a statement that fails after client.close() rejects with its own error, not the rollback's", async () => {
  await using srv = await startServer();
  const client = await connect(srv.connectOptions);
  const db = new Kysely<{ t: { x: number } }>({ dialect: new NetsqliteDialect({ client }) });
  await ksql`CREATE TABLE t (x INTEGER)`.execute(db);
  const inserted = signal();
  const closed = signal();
  let stmtError: unknown = null;
  const tx = db.transaction().execute(async (trx) => {
    await trx.insertInto("t").values({ x: 1 }).execute();
    inserted.resolve();
    await closed.promise;
    try {
      await trx.insertInto("t").values({ x: 2 }).execute();
    } catch (err) {
      stmtError = err;
      throw err;
    }
  });
  const settled = tx.then(() => "resolved", (err) => err);
  await inserted.promise;
  await client.close();
  closed.resolve();
  const err = await settled;
  assertClientClosed(stmtError);
  assert.equal(err, stmtError); // the same object: not the ROLLBACK's error
  await db.destroy();
  await using other = await connect(srv.connectOptions);
  assert.deepEqual(await other.values("SELECT count(*) FROM t"), [[0]]);
});

Deno.test("Kysely: trx.rollback() of a controlled transaction after client.close() resolves", async () => {
  await using srv = await startServer();
  const client = await connect(srv.connectOptions);
  const db = new Kysely<{ t: { x: number } }>({ dialect: new NetsqliteDialect({ client }) });
  await ksql`CREATE TABLE t (x INTEGER)`.execute(db);
  const trx = await db.startTransaction().execute();
  await trx.insertInto("t").values({ x: 1 }).execute();
  await client.close();
  // Nothing is left to roll back: the server rolled the closed connection's transaction back.
  assert.equal(await trx.rollback().execute(), undefined);
  await db.destroy();
  await using other = await connect(srv.connectOptions);
  assert.deepEqual(await other.values("SELECT count(*) FROM t"), [[0]]);
});

Deno.test("Drizzle: a callback that throws after client.close() rejects with its own error", async () => {
  await using srv = await startServer();
  const client = await connect(srv.connectOptions);
  const db = drizzle(client);
  await db.run(sql`CREATE TABLE t (x INTEGER)`);
  const inserted = signal();
  const closed = signal();
  const appError = new Error("app error");
  const settled = db.transaction(async (tx) => {
    await tx.run(sql`INSERT INTO t VALUES (1)`);
    inserted.resolve();
    await closed.promise;
    throw appError;
  }).then(() => "resolved", (err) => err);
  await inserted.promise;
  await client.close();
  closed.resolve();
  assert.equal(await settled, appError);
  await using other = await connect(srv.connectOptions);
  assert.deepEqual(await other.values("SELECT count(*) FROM t"), [[0]]);
});

Deno.test("Drizzle: a statement that fails after client.close() rejects with its own error, not the rollback's", async () => {
  await using srv = await startServer();
  const client = await connect(srv.connectOptions);
  const db = drizzle(client);
  await db.run(sql`CREATE TABLE t (x INTEGER)`);
  const inserted = signal();
  const closed = signal();
  let stmtError: unknown = null;
  const settled = db.transaction(async (tx) => {
    await tx.run(sql`INSERT INTO t VALUES (1)`);
    inserted.resolve();
    await closed.promise;
    try {
      await tx.run(sql`INSERT INTO t VALUES (2)`);
    } catch (err) {
      stmtError = err;
      throw err;
    }
  }).then(() => "resolved", (err) => err);
  await inserted.promise;
  await client.close();
  closed.resolve();
  const err = await settled;
  assert.ok(stmtError instanceof Error);
  assert.match(stmtError.message, /^Failed query: INSERT INTO t VALUES \(2\)/);
  assertClientClosed(stmtError.cause);
  assert.equal(err, stmtError); // not "Failed query: rollback"
});

Deno.test("Drizzle: a nested transaction's callback that throws after client.close() rejects with its own error", async () => {
  await using srv = await startServer();
  const client = await connect(srv.connectOptions);
  const db = drizzle(client);
  await db.run(sql`CREATE TABLE t (x INTEGER)`);
  const appError = new Error("app error");
  const settled = db.transaction(async (tx) => {
    await tx.run(sql`INSERT INTO t VALUES (1)`);
    await tx.transaction(async (inner) => {
      await inner.run(sql`INSERT INTO t VALUES (2)`);
      await client.close();
      throw appError;
    });
  }).then(() => "resolved", (err) => err);
  // Not "Failed query: rollback to savepoint sp0".
  assert.equal(await settled, appError);
});

Deno.test("Drizzle: a nested transaction's callback that throws after its connection was lost rejects with its own error", async () => {
  await using dir = await tempDir();
  const options = { database: `${dir.path}/r.db`, path: `${dir.path}/r.sock` };
  let server = await serve(options);
  try {
    await using client = await connect({ path: options.path });
    const db = drizzle(client);
    await db.run(sql`CREATE TABLE t (x INTEGER)`);
    const appError = new Error("app error");
    const settled = db.transaction(async (tx) => {
      await tx.run(sql`INSERT INTO t VALUES (1)`);
      await tx.transaction(async (inner) => {
        await inner.run(sql`INSERT INTO t VALUES (2)`);
        await server.shutdown(); // the server rolls the transaction back
        server = await serve(options);
        throw appError;
      });
    }).then(() => "resolved", (err) => err);
    // Not "Failed query: rollback to savepoint sp0" with the lost transaction's error.
    assert.equal(await settled, appError);
    // The transaction's own rollback acknowledged the loss: the client goes on.
    assert.deepEqual(await db.values(sql`SELECT count(*) FROM t`), [[0]]);
  } finally {
    await server.shutdown();
  }
});

Deno.test("Client.transaction(): a callback that throws after client.close() rejects with its own error, nested too", async () => {
  await using srv = await startServer();
  for (const nested of [false, true]) {
    const client = await connect(srv.connectOptions);
    await client.exec("CREATE TABLE IF NOT EXISTS t (x INTEGER)");
    const appError = new Error("app error");
    const settled = client.transaction(async (tx) => {
      await tx.run("INSERT INTO t VALUES (1)");
      if (!nested) {
        await client.close();
        throw appError;
      }
      await tx.transaction(async (inner) => {
        await inner.run("INSERT INTO t VALUES (2)");
        await client.close();
        throw appError;
      });
    }).then(() => "resolved", (err) => err);
    assert.equal(await settled, appError, `nested: ${nested}`);
  }
  await using other = await connect(srv.connectOptions);
  assert.deepEqual(await other.values("SELECT count(*) FROM t"), [[0]]);
});

Deno.test("ReservedConnection.inTransaction turns false once its client is closed", async () => {
  await using srv = await startServer();
  const client = await connect(srv.connectOptions);
  const r = await client.reserve();
  await r.exec("BEGIN");
  await r.exec("CREATE TABLE t (x)");
  assert.equal(r.inTransaction, true);
  await client.close();
  // The server rolled it back, and no ROLLBACK can be sent any more.
  assert.equal(r.inTransaction, false);
  assert.equal(r.released, false);
  await assert.rejects(r.exec("ROLLBACK"), (err) => {
    assertClientClosed(err);
    return true;
  });
  await using other = await connect(srv.connectOptions);
  assert.deepEqual(await other.values("SELECT count(*) FROM sqlite_schema"), [[0]]);
});

Deno.test("Client.inTransaction (max: 1, raw BEGIN) turns false once the client is closed", async () => {
  await using srv = await startServer();
  const client = await connect({ ...srv.connectOptions, max: 1 });
  await client.exec("BEGIN");
  await client.exec("CREATE TABLE t (x)");
  assert.equal(client.inTransaction, true);
  await client.close();
  assert.equal(client.inTransaction, false);
  await using other = await connect(srv.connectOptions);
  assert.deepEqual(await other.values("SELECT count(*) FROM sqlite_schema"), [[0]]);
});
