/**
 * Cluster mode against the single-file engine's answers to scripts around
 * a transaction the engine ended or the script began (the cases of
 * `review_session2_test.ts`, which cluster mode implements apart, in
 * `engine/dqlite/engine_session.ts`): each case runs on the single-file
 * engine (the reference) and on a one-node `dqlite-demo` cluster. Cluster
 * cases are skipped (with the reason printed) when `dqlite-demo` is not
 * installed: `apt-get install go-dqlite libdqlite0`.
 */

import assert from "node:assert/strict";
import { type Client, connect } from "../mod.ts";
import { serve, type ServeOptions } from "../server.ts";
import { DemoCluster, skipWithoutDqlite } from "./_dqlite_nodes.ts";
import { abortTransaction, delay, rejection, startServer } from "./_helpers.ts";

const ignore = skipWithoutDqlite("dqlite_script_left_test.ts", "cluster cases");

/** A script that begins with the ROLLBACK ending the ended transaction runs the rest of it. */
async function rollbackThenMore(db: Client): Promise<void> {
  await db.exec("DROP TABLE IF EXISTS t; CREATE TABLE t (a INTEGER PRIMARY KEY, b UNIQUE)");

  // After TX_ABORTED.
  await abortTransaction(db);
  await db.exec("ROLLBACK; INSERT INTO t VALUES (1, 'a'); INSERT INTO t VALUES (2, 'b')");
  assert.equal(db.inTransaction, false);
  assert.deepEqual(await db.query("SELECT a FROM t ORDER BY a"), [{ a: 1 }, { a: 2 }]);

  // After the COMMIT that failed there (the ROLLBACK ORMs send after it).
  await abortTransaction(db);
  assert.equal((await rejection(db.exec("COMMIT"))).code, "TX_ABORTED");
  await db.exec("ROLLBACK; BEGIN; INSERT INTO t VALUES (3, 'c')");
  assert.equal(db.inTransaction, true);
  await db.exec("COMMIT");
  assert.deepEqual(await db.query("SELECT a FROM t ORDER BY a"), [{ a: 1 }, { a: 2 }, { a: 3 }]);

  // A script that ends with a COMMIT of its own.
  await abortTransaction(db);
  await db.exec("ROLLBACK; BEGIN; INSERT INTO t VALUES (6, 'f'); COMMIT");
  assert.equal(db.inTransaction, false);
  assert.deepEqual(await db.query("SELECT a FROM t WHERE a = 6"), [{ a: 6 }]);

  // Spelled otherwise (a comment before it), alone and followed by more.
  await abortTransaction(db);
  await db.exec("/* done */ rollback transaction");
  assert.equal(db.inTransaction, false);
  await abortTransaction(db);
  await db.exec("-- done\nROLLBACK; INSERT INTO t VALUES (7, 'g')");
  assert.deepEqual(await db.query("SELECT a FROM t WHERE a = 7"), [{ a: 7 }]);

  // A failing statement after it is reported as the script's second.
  await abortTransaction(db);
  const err = await rejection(db.exec("ROLLBACK; INSERT INTO t VALUES (4, 'a')"));
  assert.equal(err.code, "SQLITE_CONSTRAINT_UNIQUE");
  assert.match(err.message, /statement 2 of the script; the 1 before it ran/);
  assert.equal(db.inTransaction, false);
  // The ROLLBACK ran: the connection works in autocommit again.
  await db.run("INSERT INTO t VALUES (5, 'e')");
  assert.deepEqual(await db.query("SELECT a FROM t WHERE a > 3 ORDER BY a"), [{ a: 5 }, {
    a: 6,
  }, { a: 7 }]);
}

/** The same after `TX_TIMEOUT` (a server whose `txIdleTimeout` is 200 ms). */
async function afterTimeout(db: Client): Promise<void> {
  await db.exec("DROP TABLE IF EXISTS t; CREATE TABLE t (a INTEGER PRIMARY KEY, b UNIQUE)");
  await db.exec("BEGIN; INSERT INTO t VALUES (100, 'x')");
  await delay(400);
  assert.equal((await rejection(db.run("SELECT 1"))).code, "TX_TIMEOUT");
  await db.exec("ROLLBACK; INSERT INTO t VALUES (1, 'a')");
  assert.equal(db.inTransaction, false);
  assert.deepEqual(await db.query("SELECT a FROM t"), [{ a: 1 }]);
}

/**
 * run() and query() of such text are refused while the state lasts, nothing
 * of it run; a prepared ROLLBACK ends the state when run.
 */
async function oneStatementCalls(db: Client): Promise<void> {
  await db.exec("DROP TABLE IF EXISTS t; CREATE TABLE t (a INTEGER PRIMARY KEY, b UNIQUE)");
  await abortTransaction(db);
  const err = await rejection(db.run("ROLLBACK; INSERT INTO t VALUES (1, 'a')"));
  assert.equal(err.code, "TX_ABORTED", err.message);
  const read = await rejection(db.query("ROLLBACK; SELECT 1"));
  assert.equal(read.code, "TX_ABORTED", read.message);
  // Nothing of it ran: the transaction is still to be ended.
  assert.equal(db.inTransaction, true);
  await db.run("ROLLBACK");
  assert.equal(db.inTransaction, false);
  assert.deepEqual(await db.query("SELECT a FROM t"), []);
  // A prepared ROLLBACK ends the state when it runs, not when it is prepared.
  await abortTransaction(db);
  const rollback = await db.prepare("ROLLBACK");
  assert.equal(db.inTransaction, true);
  assert.equal((await rejection(db.run("SELECT 1"))).code, "TX_ABORTED");
  await rollback.run(); // (before: UNKNOWN_STATEMENT, handle 0; the state ended at prepare)
  assert.equal(db.inTransaction, false);
  // ... and after the COMMIT that failed there.
  await abortTransaction(db);
  assert.equal((await rejection(db.exec("COMMIT"))).code, "TX_ABORTED");
  const again = await db.prepare("ROLLBACK");
  await again.run();
  assert.equal(db.inTransaction, false);
  await rollback.finalize();
  await again.finalize();
  await db.run("INSERT INTO t VALUES (8, 'h')");
  assert.deepEqual(await db.query("SELECT a FROM t"), [{ a: 8 }]);
  await db.run("DELETE FROM t");
  // (Outside that state the same text is refused as two statements.)
  const two = await rejection(db.run("ROLLBACK; INSERT INTO t VALUES (1, 'a')"));
  assert.equal(two.code, "BAD_REQUEST", two.message);
}

/** A statement that rolls back the transaction its script began names those before its BEGIN. */
async function scriptBeganTx(db: Client): Promise<void> {
  await db.exec("DROP TABLE IF EXISTS t; CREATE TABLE t (a INTEGER PRIMARY KEY, b UNIQUE)");
  const err = await rejection(db.exec(
    "INSERT INTO t VALUES (1, 'a'); INSERT INTO t VALUES (2, 'b'); BEGIN; " +
      "INSERT INTO t VALUES (3, 'c'); INSERT OR ROLLBACK INTO t VALUES (4, 'a')",
  ));
  assert.equal(err.code, "SQLITE_CONSTRAINT_UNIQUE");
  assert.match(err.message, /SQLite rolled back the transaction it was in/);
  assert.match(
    err.message,
    /\(statement 5 of the script; the 2 before statement 3, which began the transaction, ran\)$/,
  );
  await db.exec("ROLLBACK");
  assert.deepEqual(await db.query("SELECT a FROM t ORDER BY a"), [{ a: 1 }, { a: 2 }]);
  // A transaction begun before the script: nothing of the script stays.
  await db.exec("BEGIN");
  const inTx = await rejection(db.exec(
    "INSERT INTO t VALUES (5, 'e'); INSERT OR ROLLBACK INTO t VALUES (6, 'a')",
  ));
  assert.match(inTx.message, /\(statement 2 of the script\)$/);
  await db.exec("ROLLBACK");
  assert.deepEqual(await db.query("SELECT a FROM t ORDER BY a"), [{ a: 1 }, { a: 2 }]);
}

/**
 * close() while a script runs inside a transaction it began: the statement
 * before its BEGIN stays applied, and the call says so.
 */
async function closedInScriptTx(open: () => Promise<Client>, selects: number): Promise<void> {
  const db = await open();
  const other = await open();
  try {
    await other.exec("DROP TABLE IF EXISTS c; CREATE TABLE c (a)");
    const script = db.exec(
      "INSERT INTO c VALUES (1); BEGIN; INSERT INTO c VALUES (2); " + "SELECT 1;".repeat(selects),
    ).then(() => null, (err: unknown) => err);
    // (The script runs for seconds: close() comes after its BEGIN, once its first insert
    // is seen committed, and then the two round trips of BEGIN and the second insert.)
    for (let i = 0; i < 200 && (await other.query("SELECT a FROM c")).length === 0; i++) {
      await delay(10);
    }
    await delay(300);
    await db.close();
    const err = await script;
    assert.ok(err instanceof Error, String(err));
    assert.equal((err as { code?: string }).code, "CONNECTION_CLOSED", err.message);
    assert.equal((err as { mayHaveRun?: boolean }).mayHaveRun, true, err.message);
    assert.match(
      err.message,
      /stopped after 1 statement\(s\) of its script ran, which stay applied/,
    );
    // The transaction the script began was rolled back; the insert before it stays.
    let rows: unknown[] = [];
    for (let i = 0; i < 50; i++) {
      rows = await other.query("SELECT a FROM c");
      if (rows.length === 1) break;
      await delay(100); // (the rollback happens as the server drops the connection)
    }
    assert.deepEqual(rows, [{ a: 1 }]);
  } finally {
    await db.close();
    await other.close();
  }
}

Deno.test("single-file engine (the reference): scripts around an ended or begun transaction", async () => {
  await using srv = await startServer();
  const db = await srv.client();
  try {
    await rollbackThenMore(db);
    await oneStatementCalls(db);
    await scriptBeganTx(db);
  } finally {
    await db.close();
  }
  await closedInScriptTx(() => srv.client(), 400_000);
  await using timing = await startServer({ txIdleTimeout: 200 });
  const timed = await timing.client();
  try {
    await afterTimeout(timed);
  } finally {
    await timed.close();
  }
});

/** A server in cluster mode on a one-node cluster, for `fn`. */
async function onCluster(
  fn: (path: string) => Promise<void>,
  options: ServeOptions = {},
): Promise<void> {
  await using nodes = await DemoCluster.start(1);
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-dqlite-left-" });
  const path = `${dir}/s.sock`;
  const server = await serve({
    ...options,
    path,
    dqlite: { nodes: nodes.addresses, database: `left_${Date.now()}` },
  });
  try {
    await fn(path);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

Deno.test({
  name: "cluster mode: a script that begins with the ROLLBACK ending a transaction the engine " +
    "ended runs its other statements (before, the script was answered as run with them " +
    "dropped, or failed), also with a comment before the ROLLBACK (before: TX_ABORTED)",
  ignore,
  fn: () =>
    onCluster(async (path) => {
      await using db = await connect({ path, max: 1 });
      await rollbackThenMore(db);
    }),
});

Deno.test({
  name: "cluster mode: so does such a script after TX_TIMEOUT",
  ignore,
  fn: () =>
    onCluster(async (path) => {
      await using db = await connect({ path, max: 1 });
      await afterTimeout(db);
    }, { txIdleTimeout: 200 }),
});

Deno.test({
  name: "cluster mode: run() and query() of that ROLLBACK followed by another statement are " +
    "refused with TX_ABORTED, nothing of them run (before: BAD_REQUEST); a prepared ROLLBACK " +
    "ends the state when run (before: at prepare, and its run failed UNKNOWN_STATEMENT)",
  ignore,
  fn: () =>
    onCluster(async (path) => {
      await using db = await connect({ path, max: 1 });
      await oneStatementCalls(db);
    }),
});

Deno.test({
  name: "cluster mode: a script statement that makes SQLite roll back the transaction the " +
    "script began says that the statements before that transaction ran",
  ignore,
  fn: () =>
    onCluster(async (path) => {
      await using db = await connect({ path, max: 1 });
      await scriptBeganTx(db);
    }),
});

Deno.test({
  name: "cluster mode: close() while a script runs inside a transaction the script began says " +
    "the statements before its BEGIN stay applied (mayHaveRun)",
  ignore,
  fn: () => onCluster((path) => closedInScriptTx(() => connect({ path, max: 1 }), 40_000)),
});
