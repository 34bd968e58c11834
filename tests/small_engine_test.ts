/**
 * A `--readonly` server of a rollback-journal database whose read meets
 * another program's EXCLUSIVE lock before it begins waits for it in the
 * background (FFI): a cursor keeps the deadline it had before the wait,
 * `stats` counts the reads waiting, and a reader whose schema check failed
 * for another reason is not lent again.
 */

import assert from "node:assert/strict";
import { describeStats } from "../cli/admin.ts";
import { ErrorCode, SqliteError } from "../mod.ts";
import { holdExclusive, rollbackJournalDb, serverStats, startServer, within } from "./_helpers.ts";

const ffi = (Deno.env.get("NETSQLITE_ENGINE") ?? "ffi") !== "node";

/** A read that steps for many seconds before its one row. */
const SLOW_SUM =
  "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT 500000000) " +
  "SELECT sum(x) AS s FROM n";

Deno.test({
  name:
    "small engine: iterate() that waited for another program's lock keeps its deadline (its timeout does not start again)",
  ignore: !ffi,
  async fn() {
    await using journal = await rollbackJournalDb();
    const { database } = journal;
    await using srv = await startServer({
      database,
      readonly: true,
      busyTimeout: 5_000,
      logLevel: "error",
    });
    await using a = await srv.client();
    assert.deepEqual(await a.values("SELECT count(*) FROM t"), [[1]]);
    const holder = await holdExclusive(database);
    let ms: number;
    let error: unknown = null;
    try {
      const t0 = performance.now();
      const it = a.iterate(SLOW_SUM, [], { timeout: 1_500 })[Symbol.asyncIterator]();
      const first = it.next().then(() => null, (err) => err);
      assert.equal(await within(first, 1_000), "timeout");
      await holder.release();
      error = await first;
      ms = performance.now() - t0;
      await it.return?.(undefined);
    } finally {
      await holder.release();
    }
    assert.ok(error instanceof SqliteError, String(error));
    assert.equal(error.code, ErrorCode.StatementTimeout, error.message);
    // 1.5 s after it was sent (about 1 s waiting, 0.5 s stepping), not 1.5 s after the lock.
    assert.ok(ms >= 1_300 && ms < 2_200, `the cursor failed after ${ms.toFixed(0)} ms`);
    assert.deepEqual(await a.values("SELECT count(*) FROM t"), [[2]]);
  },
});

Deno.test({
  name:
    "small engine: stats counts the requests waiting for another program's lock (lockWaiting), which no writer wait counts",
  ignore: !ffi,
  async fn() {
    await using journal = await rollbackJournalDb();
    const { database } = journal;
    await using srv = await startServer({
      database,
      readonly: true,
      busyTimeout: 5_000,
      logLevel: "error",
    });
    await using a = await srv.client();
    await using b = await srv.client();
    assert.equal((await serverStats(srv.connectOptions)).lockWaiting, 0);
    const holder = await holdExclusive(database);
    try {
      const first = a.values("SELECT count(*) FROM t");
      const second = b.values("SELECT max(a) FROM t");
      assert.equal(await within(first, 300), "timeout");
      assert.equal(await within(second, 50), "timeout");
      const stats = await serverStats(srv.connectOptions);
      assert.equal(stats.lockWaiting, 2, JSON.stringify(stats));
      assert.equal(stats.writer.waiting, 0);
      // `netsqlite stats` shows them.
      assert.match(
        describeStats(stats),
        /\nlock waits {4}2 waiting for another program's lock on the database file\n/,
      );
      await holder.release();
      assert.deepEqual(await Promise.all([first, second]), [[[2]], [[2]]]);
    } finally {
      await holder.release();
    }
    const after = await serverStats(srv.connectOptions);
    assert.equal(after.lockWaiting, 0);
    assert.doesNotMatch(describeStats(after), /lock waits/);
  },
});
