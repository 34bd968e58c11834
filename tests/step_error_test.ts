/**
 * What a statement that fails as it steps reports: the authorizer's error
 * (the policy's refusal, in the server) when it refused something the
 * statement prepared as it ran (an FTS5 table's `'rebuild'` reads its
 * content table then), whatever code SQLite failed it with (FTS5 reports a
 * bare `SQL logic error`); a hint naming another process's lock and the
 * busy timeout for a plain `SQLITE_BUSY`. And statements without result
 * columns (VACUUM) run through the calls that return rows.
 */

import assert from "node:assert/strict";
import { SqliteError } from "../protocol/errors.ts";
import type { Db, Sqlite } from "../engine/binding/binding.ts";
import { loadSqlite } from "../engine/binding/load.ts";
import { holdWriteLock, startServer } from "./_helpers.ts";
import { ENGINE } from "./_logged_server.ts";

/** What a write that waited in vain for another process's lock says. */
const LOCKED =
  /^database is locked \(another process holds a lock on the database file: the server waited its busy timeout, 200 ms \(--busy-timeout\), for it to be released\)$/;

async function withDb(sqlite: Sqlite, fn: (db: Db) => void | Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-step-error-" });
  const db = sqlite.open(`${dir}/test.db`, { readOnly: false, busyTimeout: 1000 });
  try {
    await fn(db);
  } finally {
    db.close();
    await Deno.remove(dir, { recursive: true });
    // A background step arms a timer probe (engine/binding/_timer_turn.ts): let it fire here.
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
}

for (const engine of ["ffi", "node"] as const) {
  Deno.test(`[${engine}] an FTS5 'rebuild' whose read of its content table the authorizer denies throws the authorizer's error, not "SQL logic error"`, async () => {
    const sqlite = loadSqlite({ engine });
    await withDb(sqlite, async (db) => {
      db.exec(
        "CREATE TABLE docs(body); INSERT INTO docs VALUES ('hidden');" +
          "CREATE VIRTUAL TABLE f5 USING fts5(body, content='docs', content_rowid='rowid')",
      );
      const refusal = new SqliteError("FORBIDDEN", "Cannot read docs: not yours");
      let preparing = false;
      // Allowed while preparing: denied when the table reads its content table as it runs.
      db.setAuthorizer((action, a1) => action === 20 && a1 === "docs" && !preparing ? refusal : 0);
      for (const background of [false, true]) {
        if (background && !sqlite.capabilities.background) continue;
        preparing = true;
        const stmt = db.prepare("INSERT INTO f5(f5) VALUES ('rebuild')")!;
        preparing = false;
        try {
          stmt.bind([]);
          let thrown: unknown = null;
          try {
            await (background ? stmt.stepInBackground() : stmt.step());
          } catch (err) {
            thrown = err;
          }
          assert.equal(thrown, refusal, background ? "in the background" : "inline");
        } finally {
          stmt.finalize();
        }
      }
      // A denial is reported by the step it was made in only: the next
      // statement's own error is its own.
      preparing = true;
      const bad = db.prepare("INSERT INTO f5(f5) VALUES ('rebuild')")!;
      const other = db.prepare("SELECT abs(-9223372036854775807 - 1)")!;
      preparing = false;
      try {
        bad.bind([]);
        assert.throws(() => bad.step(), (err) => err === refusal);
        // (Denied again, as the refused read runs: the stored error is that run's.)
        assert.throws(() => bad.step(), (err) => err === refusal);
        other.bind([]);
        assert.throws(() => other.step(), { code: "SQLITE_ERROR", message: "integer overflow" });
      } finally {
        bad.finalize();
        other.finalize();
      }
      db.setAuthorizer(null);
    });
    sqlite.close();
  });
}

Deno.test("VACUUM runs through query(), values(), get() and a prepared statement's all(), returning no rows", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1), (2)");
  await db.exec("DELETE FROM t WHERE x = 1");
  assert.deepEqual(await db.query("VACUUM"), []);
  assert.deepEqual(await db.values("VACUUM"), []);
  assert.equal(await db.get("VACUUM"), undefined);
  const st = await db.prepare("VACUUM");
  try {
    assert.deepEqual(await st.all(), []);
    assert.deepEqual(await st.values(), []);
  } finally {
    await st.finalize();
  }
  // Other statements without result columns too, and they did their work.
  assert.deepEqual(await db.query("CREATE TABLE u (y)"), []);
  assert.deepEqual(await db.values("INSERT INTO u VALUES (7)"), []);
  assert.deepEqual(await db.values("SELECT x FROM t UNION ALL SELECT y FROM u"), [[2], [7]]);
  // Inside a transaction VACUUM stays SQLite's error.
  await assert.rejects(
    db.transaction((tx) => tx.query("VACUUM")),
    { message: /cannot VACUUM from within a transaction/ },
  );
});

Deno.test("A write that waits its busy timeout for another process's lock fails with SQLITE_BUSY saying so; once released it succeeds", async () => {
  // (A process of its own: POSIX file locks are per process, so a
  // connection in this process through another copy of SQLite would not
  // block the server's, and closing it would drop the server's locks.)
  await using srv = await startServer({ busyTimeout: 200 });
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (x)");
  const holder = await holdWriteLock(srv.database);
  try {
    for (
      const write of [
        () => db.run("INSERT INTO t VALUES (1)"),
        () => db.exec("INSERT INTO t VALUES (1)"),
      ]
    ) {
      await assert.rejects(write(), (err: SqliteError) => {
        assert.equal(err.code, "SQLITE_BUSY");
        assert.match(err.message, LOCKED);
        return true;
      });
    }
    // A cursor over a write, and a write while a change feed captures
    // (retried from a timer: its own path), say so too.
    await assert.rejects(
      (async () => {
        for await (const _ of db.iterate("INSERT INTO t VALUES (1) RETURNING x")) break;
      })(),
      (err: SqliteError) => {
        assert.equal(err.code, "SQLITE_BUSY");
        assert.match(err.message, LOCKED);
        return true;
      },
    );
    // (Change feeds need the FFI engine's update hook.)
    await using feed = ENGINE === "ffi" ? await db.subscribe({ tables: ["t"] }) : null;
    if (feed !== null) {
      await assert.rejects(db.run("INSERT INTO t VALUES (1)"), (err: SqliteError) => {
        assert.equal(err.code, "SQLITE_BUSY");
        assert.match(err.message, LOCKED);
        return true;
      });
    }
  } finally {
    await holder.release();
  }
  await db.run("INSERT INTO t VALUES (2)");
  assert.deepEqual(await db.values("SELECT x FROM t"), [[2]]);
  assert.deepEqual(await db.values("SELECT count(*) FROM other_program"), [[1]]);
});

Deno.test("A write inside a deferred transaction that has read meets another process's write lock: SQLITE_BUSY at once, saying so, not that the server waited", async () => {
  // SQLite does not wait for the write lock where a transaction already
  // reads (waiting could deadlock): the message must not claim the wait.
  const busyTimeout = 2000;
  await using srv = await startServer({ busyTimeout });
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1)");
  await db.exec("BEGIN");
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[1]]);
  const holder = await holdWriteLock(srv.database);
  try {
    const start = performance.now();
    await assert.rejects(db.run("INSERT INTO t VALUES (2)"), (err: SqliteError) => {
      assert.equal(err.code, "SQLITE_BUSY", err.message);
      assert.doesNotMatch(err.message, /waited its busy timeout/);
      assert.match(
        err.message,
        /^database is locked \(another process holds the write lock on the database file, and a transaction that has read cannot wait for it, as that could deadlock: SQLite failed at once, without waiting; roll back and retry the transaction, or begin it with behavior: "immediate"\)$/,
      );
      return true;
    });
    const took = performance.now() - start;
    assert.ok(took < busyTimeout / 2, `failed after ${took} ms`);
    await db.exec("ROLLBACK");
  } finally {
    await holder.release();
  }
  // Retried once the other program committed, the transaction writes.
  await db.exec("BEGIN");
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[1]]);
  await db.run("INSERT INTO t VALUES (2)");
  await db.exec("COMMIT");
  assert.deepEqual(await db.values("SELECT x FROM t ORDER BY x"), [[1], [2]]);
});

for (const engine of ["ffi", "node"] as const) {
  Deno.test(`[${engine}] binding: SQLITE_BUSY says the step waited its busy timeout only when it did`, async () => {
    const sqlite = loadSqlite({ engine });
    const dir = await Deno.makeTempDir({ prefix: "netsqlite-step-error-" });
    const path = `${dir}/test.db`;
    const db = sqlite.open(path, { readOnly: false, busyTimeout: 300 });
    const holder = { release: () => Promise.resolve() };
    try {
      db.exec("PRAGMA journal_mode = wal; CREATE TABLE t (x); INSERT INTO t VALUES (1)");
      const lock = await holdWriteLock(path);
      holder.release = lock.release;
      const fail = async (sql: string, background: boolean): Promise<[SqliteError, number]> => {
        const stmt = db.prepare(sql)!;
        try {
          stmt.bind([]);
          const start = performance.now();
          try {
            await (background ? stmt.stepInBackground() : stmt.step());
          } catch (err) {
            assert.ok(err instanceof SqliteError, String(err));
            return [err, performance.now() - start];
          }
          throw new Error(`${sql}: expected SQLITE_BUSY`);
        } finally {
          stmt.finalize();
        }
      };
      for (const background of sqlite.capabilities.background ? [false, true] : [false]) {
        const how = background ? "in the background" : "inline";
        // Autocommit: the write waits the busy timeout.
        const [waited, waitedMs] = await fail("INSERT INTO t VALUES (2)", background);
        assert.equal(waited.code, "SQLITE_BUSY", how);
        assert.ok(waitedMs >= 250, `${how}: ${waitedMs} ms`);
        assert.match(waited.message, /waited its busy timeout, 300 ms/, how);
        // A transaction that has read: no wait, and the message says why.
        db.exec("BEGIN");
        const read = db.prepare("SELECT count(*) FROM t")!;
        read.bind([]);
        assert.equal(read.step(), true);
        read.finalize();
        const [met, metMs] = await fail("INSERT INTO t VALUES (2)", background);
        db.exec("ROLLBACK");
        assert.equal(met.code, "SQLITE_BUSY", how);
        assert.ok(metMs < 150, `${how}: ${metMs} ms`);
        assert.doesNotMatch(met.message, /waited/, how);
        assert.match(met.message, /a transaction that has read cannot wait for it/, how);
      }
    } finally {
      await holder.release();
      db.close();
      sqlite.close();
      await Deno.remove(dir, { recursive: true });
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
  });
}
