/**
 * Cluster mode and dqlite 1.11's page-cache spill: SQLite spills dirty pages
 * out of a connection's page cache in the middle of a write transaction past
 * 483 of them (the default 2000 KiB cache, 4 KiB pages), and dqlite 1.11
 * cannot read a spilled page back (`SQLITE_IOERR_SHORT_READ`, "disk I/O
 * error"). The server runs `PRAGMA cache_spill = OFF` on every connection to
 * the leader (`engine/dqlite/database.ts`), so writes that change more pages
 * than that and read them back succeed: `REINDEX` of an index of ~1,000
 * pages in all three forms, an `UPDATE` of every key of 100,000 rows, a
 * `DELETE` of half of them, on the leader and on the new leader after the
 * old one's death (new connections, set up again). Skipped (with the reason
 * printed) when `dqlite-demo` is not installed: `apt-get install go-dqlite
 * libdqlite0`.
 */

import assert from "node:assert/strict";
import { type Client, connect } from "../client.ts";
import { serve } from "../server.ts";
import { SqliteError } from "../protocol/errors.ts";
import { DqliteCluster } from "../engine/dqlite/cluster.ts";
import { DemoCluster, skipWithoutDqlite } from "./_dqlite_nodes.ts";

const ignore = skipWithoutDqlite("dqlite_reindex_test.ts");

/** Rows of the table: its index on 32-character random keys takes ~1,000 pages of 4 KiB. */
const ROWS = 100_000;

async function rejectsWith(p: Promise<unknown>, code: string, message: RegExp): Promise<void> {
  const err = await p.then(() => undefined, (e) => e);
  assert.ok(err instanceof SqliteError, `expected SqliteError ${code}, got ${String(err)}`);
  assert.equal(err.code, code, err.message);
  assert.match(err.message, message);
}

/** The rows (count, sums, extremes), the index's view of them, the size. */
async function contents(db: Client): Promise<unknown[]> {
  return [
    await db.values("SELECT count(*), sum(v), sum(length(k)), min(k), max(k) FROM t"),
    await db.values("SELECT count(*), sum(length(k)) FROM t INDEXED BY idx WHERE k >= ''"),
    await db.values("PRAGMA page_count"),
  ];
}

async function integrity(db: Client): Promise<void> {
  assert.deepEqual(await db.values("PRAGMA integrity_check"), [["ok"]]);
}

/** REINDEX in its three forms: each rewrites the index's ~1,000 pages; nothing else changes. */
async function reindex(db: Client, where: string): Promise<void> {
  const expected = await contents(db);
  for (const sql of ["REINDEX", "REINDEX idx", "REINDEX t"]) {
    await db.run(sql);
    assert.deepEqual(await contents(db), expected, `after ${sql} ${where}`);
  }
  await integrity(db);
}

Deno.test({
  name: "cluster mode: REINDEX, an UPDATE of every key and a DELETE of half the rows, past " +
    "the page cache, succeed with spilling off, on the new leader after a leader change too",
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
      // The setting shows, and clients cannot change it (the cluster's PRAGMA policy).
      assert.deepEqual(await db.values("PRAGMA cache_spill"), [[0]]);
      await rejectsWith(db.run("PRAGMA cache_spill = ON"), "FORBIDDEN", /cache_spill/);
      await rejectsWith(db.run("PRAGMA cache_spill = 100"), "FORBIDDEN", /cache_spill/);
      assert.deepEqual(await db.values("PRAGMA cache_spill"), [[0]]);

      await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT, v INTEGER)");
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

      await reindex(db, "on the first leader");

      // Every key changes: every page of the index is rewritten, the table's too.
      const update = await db.run("UPDATE t SET k = k || 'x'");
      assert.equal(update.changes, ROWS);
      assert.deepEqual(
        await db.values(
          "SELECT count(*), sum(length(k)), sum(k LIKE '%x') FROM t INDEXED BY idx WHERE k >= ''",
        ),
        [[ROWS, ROWS * 33, ROWS]],
      );
      await integrity(db);

      // Inside a transaction too, with a write before and after.
      await db.exec("BEGIN");
      await db.run("INSERT INTO t (k, v) VALUES ('in-tx', 1)");
      await db.run("REINDEX idx");
      await db.run("UPDATE t SET v = v + 1");
      await db.exec("COMMIT");
      assert.deepEqual(await db.values("SELECT count(*) FROM t WHERE k = 'in-tx'"), [[1]]);
      await db.run("DELETE FROM t WHERE k = 'in-tx'");
      assert.deepEqual(
        await db.values("SELECT count(*), sum(v) FROM t"),
        [[ROWS, (ROWS / 10_000) * (10_000 * 10_001 / 2) + ROWS]],
      );
      await integrity(db);
      const settled = await contents(db);

      // The leader's death: the new leader holds the same sound database, and the
      // server's new connections to it have spilling off again.
      const probe = new DqliteCluster(nodes.addresses, { leaderTimeout: 5_000 });
      try {
        await nodes.kill(nodes.indexOf(await probe.leader()));
      } finally {
        probe.close();
      }
      assert.deepEqual(await contents(db), settled, "on the new leader");
      await integrity(db);
      assert.deepEqual(await db.values("PRAGMA cache_spill"), [[0]]);

      await reindex(db, "on the new leader");

      // Half the rows go: ~half of every page of the table and the index.
      const deleted = await db.run("DELETE FROM t WHERE id % 2 = 0");
      assert.equal(deleted.changes, ROWS / 2);
      assert.deepEqual(
        await db.values("SELECT count(*), sum(id % 2) FROM t INDEXED BY idx WHERE k >= ''"),
        [[ROWS / 2, ROWS / 2]],
      );
      await integrity(db);
    } finally {
      await db.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
