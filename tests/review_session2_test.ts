/**
 * A second review of the engine's per-connection logic (engine_session.ts:
 * scripts, batches, prepared statements, ended transactions), each finding
 * met through a real server and a real client, on both engines.
 */

import assert from "node:assert/strict";
import { abortTransaction, delay, rejection, startServer, statsUntil } from "./_helpers.ts";

Deno.test(
  "A script that begins with the ROLLBACK ending a transaction the engine ended runs its " +
    "other statements too (before, they were dropped, and the script answered as if run)",
  async () => {
    await using srv = await startServer();
    const db = await srv.client();
    try {
      await db.exec("CREATE TABLE t (a INTEGER PRIMARY KEY, b UNIQUE)");

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
      assert.deepEqual(await db.query("SELECT a FROM t ORDER BY a"), [{ a: 1 }, { a: 2 }, {
        a: 3,
      }]);

      // A failing statement after it is reported as the script's second.
      await abortTransaction(db);
      const err = await rejection(db.exec("ROLLBACK; INSERT INTO t VALUES (4, 'a')"));
      assert.equal(err.code, "SQLITE_CONSTRAINT_UNIQUE");
      assert.match(err.message, /statement 2 of the script; the 1 before it ran/);
      assert.equal(db.inTransaction, false);
      // The ROLLBACK ran: the connection works in autocommit again.
      await db.run("INSERT INTO t VALUES (5, 'e')");
      assert.deepEqual(await db.query("SELECT a FROM t WHERE a > 3"), [{ a: 5 }]);
    } finally {
      await db.close();
    }
  },
);

Deno.test(
  "Such a script that waits for the writer (another client's transaction holds it) runs " +
    "once it is free, its ROLLBACK a no-op as when it ran at once",
  async () => {
    await using srv = await startServer();
    const db = await srv.client();
    const other = await srv.client();
    try {
      await db.exec("CREATE TABLE t (a INTEGER PRIMARY KEY, b UNIQUE)");
      await abortTransaction(db);
      await other.exec("BEGIN; INSERT INTO t VALUES (7, 'g')");
      const script = db.exec("ROLLBACK; INSERT INTO t VALUES (1, 'a')");
      // (It waits in the writer's line, counted by the server: not a fixed delay.)
      await statsUntil(srv.connectOptions, (r) => r.writer.waiting === 1, "the script waits");
      await other.exec("COMMIT");
      await script; // (before: "cannot rollback - no transaction is active")
      assert.equal(db.inTransaction, false);
      assert.deepEqual(await db.query("SELECT a FROM t ORDER BY a"), [{ a: 1 }, { a: 7 }]);
    } finally {
      await db.close();
      await other.close();
    }
  },
);

Deno.test(
  "run() of the ROLLBACK ending a transaction the engine ended, followed by another " +
    "statement, is refused rather than answered with the other statement dropped",
  async () => {
    await using srv = await startServer();
    const db = await srv.client();
    try {
      await db.exec("CREATE TABLE t (a INTEGER PRIMARY KEY, b UNIQUE)");
      await abortTransaction(db);
      const err = await rejection(db.run("ROLLBACK; INSERT INTO t VALUES (1, 'a')"));
      assert.equal(err.code, "TX_ABORTED", err.message);
      const read = await rejection(db.query("ROLLBACK; SELECT 1"));
      assert.equal(read.code, "TX_ABORTED", read.message);
      const cursor = await rejection((async () => {
        for await (const _ of db.iterate("ROLLBACK; SELECT 1")) break;
      })());
      // (A cursor's text is prepared before: refused as two statements.)
      assert.equal(cursor.code, "BAD_REQUEST", cursor.message);
      // Nothing of it ran: the transaction is still to be ended.
      assert.equal(db.inTransaction, true);
      await db.run("ROLLBACK");
      assert.equal(db.inTransaction, false);
      assert.deepEqual(await db.query("SELECT a FROM t"), []);
      // (Outside that state the same text is refused as two statements.)
      const two = await rejection(db.run("ROLLBACK; INSERT INTO t VALUES (1, 'a')"));
      assert.equal(two.code, "BAD_REQUEST", two.message);
    } finally {
      await db.close();
    }
  },
);

Deno.test(
  "A batch inside a transaction that changed the schema and failed leaves no statement " +
    "cached for the undone schema: SELECT * after it has the columns the table has",
  async () => {
    await using srv = await startServer();
    const db = await srv.client();
    try {
      await db.exec(
        "CREATE TABLE t (a INTEGER PRIMARY KEY, b UNIQUE); INSERT INTO t VALUES (1, 'x')",
      );
      await db.exec("BEGIN");
      const err = await rejection(db.batch([
        { sql: "ALTER TABLE t ADD COLUMN c DEFAULT 5" },
        { sql: "SELECT * FROM t" },
        { sql: "UPDATE t SET b = 'y' RETURNING *" },
        { sql: "INSERT INTO t VALUES (2, 'y', 1)" },
      ]));
      assert.equal(err.code, "SQLITE_CONSTRAINT_UNIQUE", err.message);
      assert.equal(db.inTransaction, true);
      // The same texts as the batch's (the writer's statement cache): the
      // ADD COLUMN was undone with the batch. (Before, node:sqlite answered
      // the old row width: { a: 1, b: "x", c: null }.)
      assert.deepEqual(await db.query("SELECT * FROM t"), [{ a: 1, b: "x" }]);
      assert.deepEqual(await db.query("UPDATE t SET b = 'y' RETURNING *"), [{ a: 1, b: "y" }]);
      await db.exec("COMMIT");
      assert.deepEqual(await db.query("SELECT * FROM t"), [{ a: 1, b: "y" }]);
    } finally {
      await db.close();
    }
  },
);

Deno.test(
  "On a :memory: server (no reader to classify on) the ROLLBACK that ends a transaction the " +
    "engine ended is recognised: before, every request failed with TX_ABORTED for good",
  async () => {
    await using srv = await startServer({ database: ":memory:" });
    const db = await srv.client();
    try {
      await db.exec("CREATE TABLE t (a INTEGER PRIMARY KEY, b UNIQUE)");
      await abortTransaction(db);
      await db.exec("ROLLBACK");
      assert.equal(db.inTransaction, false);
      assert.deepEqual(await db.query("SELECT a FROM t"), []);

      // Spelled otherwise, and followed by more of a script.
      await abortTransaction(db);
      await db.exec("/* done */ rollback transaction; INSERT INTO t VALUES (1, 'a')");
      assert.equal(db.inTransaction, false);
      assert.deepEqual(await db.query("SELECT a FROM t"), [{ a: 1 }]);

      // The failed COMMIT and the ROLLBACK ORMs send after it.
      await abortTransaction(db);
      assert.equal((await rejection(db.run("END TRANSACTION"))).code, "TX_ABORTED");
      await db.run("ROLLBACK");
      assert.equal(db.inTransaction, false);

      // ROLLBACK TO (and anything else) is still refused while the state lasts.
      await abortTransaction(db);
      assert.equal((await rejection(db.run("ROLLBACK TO x"))).code, "TX_ABORTED");
      assert.equal((await rejection(db.run("ROLLBACK x"))).code, "TX_ABORTED");
      const s = await db.prepare("ROLLBACK");
      await s.run();
      assert.equal(db.inTransaction, false);
      await db.run("INSERT INTO t VALUES (2, 'b')");
      assert.deepEqual(await db.query("SELECT a FROM t"), [{ a: 1 }, { a: 2 }]);
    } finally {
      await db.close();
    }
  },
);

Deno.test(
  "A script statement that makes SQLite roll back the transaction the script began says that " +
    "the statements before that transaction ran (they stay committed)",
  async () => {
    await using srv = await startServer();
    const db = await srv.client();
    try {
      await db.exec("CREATE TABLE t (a INTEGER PRIMARY KEY, b UNIQUE)");
      const err = await rejection(db.exec(
        "INSERT INTO t VALUES (1, 'a'); INSERT INTO t VALUES (2, 'b'); BEGIN; " +
          "INSERT INTO t VALUES (3, 'c'); INSERT OR ROLLBACK INTO t VALUES (4, 'a')",
      ));
      assert.equal(err.code, "SQLITE_CONSTRAINT_UNIQUE");
      assert.match(err.message, /SQLite rolled back the transaction it was in/);
      assert.match(
        err.message,
        /\(statement 5 of the script; the 2 before statement 3, which began the transaction, ran\)/,
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
    } finally {
      await db.close();
    }
  },
);

Deno.test(
  "close() while a script runs inside a transaction the script began: the statements before " +
    "its BEGIN stay applied, and the call says so (before: 'cancelled and did not run', " +
    "mayHaveRun false)",
  async () => {
    await using srv = await startServer();
    const db = await srv.client();
    const other = await srv.client();
    try {
      await db.exec("CREATE TABLE t (a)");
      const script = db.exec(
        "INSERT INTO t VALUES (1); BEGIN; INSERT INTO t VALUES (2); " +
          "SELECT 1;".repeat(400_000),
      ).then(() => null, (err: unknown) => err);
      // (The script runs for seconds: close() comes after its BEGIN, once its first insert is
      // seen committed, and then BEGIN's own step.)
      for (let i = 0; i < 500 && (await other.query("SELECT a FROM t")).length === 0; i++) {
        await delay(10);
      }
      await delay(100);
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
      assert.deepEqual(await other.query("SELECT a FROM t"), [{ a: 1 }]);
    } finally {
      await db.close();
      await other.close();
    }
  },
);
