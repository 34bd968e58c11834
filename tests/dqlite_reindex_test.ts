/**
 * Cluster mode and dqlite 1.11's page-cache spill: a write transaction that
 * changes more pages than the leader connection's page cache holds (SQLite
 * spills dirty pages past 483 of them, with the default 2000 KiB cache and
 * 4 KiB pages), then reads one of the spilled pages back, fails on the
 * leader with `SQLITE_IOERR_SHORT_READ` ("disk I/O error"): `REINDEX` of an
 * index of ~1,000 pages, an `UPDATE` of every key. The failure is clean:
 * the statement (and the transaction it was in) is rolled back, the
 * database stays sound and whole, on the new leader after a leader change
 * too, and `DROP INDEX` then `CREATE INDEX` (two statements) rebuilds the
 * index. This pins the behaviour the README documents, so that a dqlite
 * upgrade that changes it shows here. Skipped (with the reason printed)
 * when `dqlite-demo` is not installed: `apt-get install go-dqlite libdqlite0`.
 */

import assert from "node:assert/strict";
import { type Client, connect } from "../client.ts";
import { serve } from "../server.ts";
import { SqliteError } from "../protocol/errors.ts";
import { DqliteCluster } from "../engine/dqlite/cluster.ts";
import { DemoCluster, DQLITE_DEMO } from "./_dqlite_nodes.ts";

const ignore = DQLITE_DEMO === null;
if (ignore) {
  console.log(
    "dqlite_reindex_test.ts skipped: dqlite-demo not found on PATH " +
      "(apt-get install go-dqlite libdqlite0)",
  );
}

/** Rows of the table: its index on 32-character random keys takes ~1,000 pages of 4 KiB. */
const ROWS = 100_000;

async function rejectsWith(p: Promise<unknown>, code: string, message: RegExp): Promise<void> {
  const err = await p.then(() => undefined, (e) => e);
  assert.ok(err instanceof SqliteError, `expected SqliteError ${code}, got ${String(err)}`);
  assert.equal(err.code, code, err.message);
  assert.match(err.message, message);
}

/** What must not change: the rows (count, sums, extremes), the index's view of them, the size. */
async function contents(db: Client): Promise<unknown[]> {
  return [
    await db.values("SELECT count(*), sum(v), sum(length(k)), min(k), max(k) FROM t"),
    await db.values("SELECT count(*) FROM t INDEXED BY idx WHERE k >= ''"),
    await db.values("PRAGMA page_count"),
  ];
}

async function integrity(db: Client): Promise<void> {
  assert.deepEqual(await db.values("PRAGMA integrity_check"), [["ok"]]);
}

Deno.test({
  name: "cluster mode: REINDEX and an UPDATE past the page cache fail with " +
    "SQLITE_IOERR_SHORT_READ, roll back, and leave the cluster sound, after a leader change too",
  ignore,
  async fn() {
    await using nodes = await DemoCluster.start(3);
    const dir = await Deno.makeTempDir({ prefix: "netsqlite-reindex-" });
    const path = `${dir}/s.sock`;
    await using _server = await serve({
      path,
      dqlite: { nodes: nodes.addresses, database: "reindex" },
    });
    const db = await connect({ path, max: 1 });
    try {
      await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT, v INTEGER)");
      // In statements of 10,000 rows: each changes fewer pages than the cache holds.
      for (let i = 0; i < ROWS; i += 10_000) {
        await db.run(
          "INSERT INTO t (k, v) WITH RECURSIVE c(x) AS " +
            "(SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10000) " +
            "SELECT lower(hex(randomblob(16))), x FROM c",
        );
      }
      const [[before]] = await db.values("PRAGMA page_count") as [[number]];
      await db.exec("CREATE INDEX idx ON t (k)");
      const [[after]] = await db.values("PRAGMA page_count") as [[number]];
      assert.ok(after - before > 900, `the index takes ${after - before} pages`);
      const expected = await contents(db);

      for (const sql of ["REINDEX", "REINDEX idx", "REINDEX t", "UPDATE t SET k = k || 'x'"]) {
        await rejectsWith(db.run(sql), "SQLITE_IOERR_SHORT_READ", /^disk I\/O error/);
        assert.deepEqual(await contents(db), expected, `after ${sql}`);
      }
      await integrity(db);

      // Inside a transaction, SQLite rolls the whole transaction back.
      await db.exec("BEGIN");
      await db.run("INSERT INTO t (k, v) VALUES ('in-tx', 1)");
      await rejectsWith(
        db.run("REINDEX idx"),
        "SQLITE_IOERR_SHORT_READ",
        /^disk I\/O error; SQLite rolled back the transaction it was in/,
      );
      await rejectsWith(db.exec("COMMIT"), "TX_ABORTED", /rolled back/);
      await db.exec("ROLLBACK");
      assert.deepEqual(await db.values("SELECT count(*) FROM t WHERE k = 'in-tx'"), [[0]]);
      assert.deepEqual(await contents(db), expected);

      // A small index is rebuilt; writes go on.
      await db.exec("CREATE TABLE small (k TEXT); CREATE INDEX small_k ON small (k)");
      await db.exec(
        "INSERT INTO small WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c " +
          "WHERE x < 1000) SELECT hex(randomblob(16)) FROM c",
      );
      await db.exec("REINDEX small_k");
      await integrity(db);
      const settled = await contents(db);
      assert.deepEqual(settled.slice(0, 2), expected.slice(0, 2));

      // The leader's death: the new leader holds the same sound database.
      const probe = new DqliteCluster(nodes.addresses, { leaderTimeout: 5_000 });
      try {
        await nodes.kill(nodes.indexOf(await probe.leader()));
      } finally {
        probe.close();
      }
      assert.deepEqual(await contents(db), settled, "on the new leader");
      await integrity(db);

      // The workaround: drop the index, then create it again (two statements).
      await db.exec("DROP INDEX idx");
      await db.exec("CREATE INDEX idx ON t (k)");
      assert.deepEqual(
        await db.values("SELECT count(*) FROM t INDEXED BY idx WHERE k >= ''"),
        [[ROWS]],
      );
      await integrity(db);
    } finally {
      await db.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
