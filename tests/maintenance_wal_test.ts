/**
 * What an in-place vacuum leaves of the WAL while other clients keep
 * reading, and the permissions of the copies `backup` and `vacuum --into`
 * write: on real servers, on both engines.
 */

import assert from "node:assert/strict";
import type { Link } from "../client/link.ts";
import { describeVacuum } from "../cli/admin.ts";
import { Op } from "../protocol/messages.ts";
import { DatabaseSync } from "node:sqlite";
import {
  asNobody,
  canRunAsNobody,
  openTestLink,
  rowsOf,
  startServer,
  tempDir,
  type TestServer,
} from "./_helpers.ts";
import { cli } from "./_cli.ts";
import { connectWhenUp, ENGINE, spawnServer, stop } from "./_logged_server.ts";

const ENGINES = ["ffi", "node"] as const;

/** A read of more rows than a cursor chunk holds, so its cursor stays open (and holds a snapshot). */
const LONG_READ = "SELECT t.id FROM t, t AS u";

function link(srv: Pick<TestServer, "connectOptions">): Promise<Link & AsyncDisposable> {
  return openTestLink(srv.connectOptions);
}

/** Table t: `n` rows of 200 random bytes, then every third deleted (VACUUM has work to do). */
async function fill(l: Link, n: number): Promise<void> {
  await l.request(Op.Exec, [
    "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);" +
    `WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ${n}) ` +
    "INSERT INTO t(b) SELECT randomblob(200) FROM c; DELETE FROM t WHERE id % 3 = 0",
  ]);
  await l.request(Op.Checkpoint, ["truncate"]);
}

function fileSize(path: string): number {
  try {
    return Deno.statSync(path).size;
  } catch {
    return 0;
  }
}

/** A server whose backups go under `dir`/copies, on a database made `mode` before it serves. */
async function serverWithCopies(
  engine: "ffi" | "node",
  mode: number,
): Promise<TestServer & { copies: string }> {
  const first = await startServer({ engine });
  await first.server.shutdown();
  const copies = `${first.dir}/copies`;
  await Deno.mkdir(copies);
  Deno.chmodSync(first.database, mode);
  const srv = await startServer({ engine, database: first.database, backupDir: copies });
  const dispose = srv[Symbol.asyncDispose];
  return Object.assign(srv, {
    copies,
    async [Symbol.asyncDispose]() {
      await dispose();
      await Deno.remove(first.dir, { recursive: true }).catch(() => {});
    },
  });
}

for (const engine of ENGINES) {
  Deno.test(`${engine}: vacuum in place while clients keep reading leaves the WAL empty`, async () => {
    await using srv = await startServer({ engine });
    await using a = await link(srv);
    await using b = await link(srv);
    await using c = await link(srv);
    await fill(a, 60000); // about 14 MB: VACUUM takes a while, reads go on meanwhile (ffi)
    const wal = `${srv.database}-wal`;
    let vacuumDone = false;
    let reads = 0;
    // Two clients read in a loop until the vacuum answers, and a little after:
    // the shared reader holds a snapshot whenever one of their reads ran.
    const reader = async (l: Link) => {
      let after = 0;
      while (!vacuumDone || after++ < 20) {
        const id = 1 + (reads++ % 40000);
        await l.request(Op.Query, ["SELECT length(b) FROM t WHERE id = ?", [id], null]);
      }
    };
    const loops = Promise.all([reader(b), reader(c)]);
    while (reads < 10) await new Promise((resolve) => setTimeout(resolve, 1));
    const r = await a.request(Op.Vacuum, [null]).finally(() => vacuumDone = true);
    const walAfter = fileSize(wal);
    await loops;
    assert.ok(r.pagesAfter < r.pagesBefore * 0.8, `${r.pagesBefore} -> ${r.pagesAfter}`);
    // The truncating checkpoint reset the WAL: 0 bytes (a few pages at most).
    assert.ok(
      walAfter <= 4 * 4096,
      `WAL after the vacuum: ${walAfter} bytes (${r.bytesAfter} database)`,
    );
    assert.ok(fileSize(wal) <= 4 * 4096, `WAL after the reads: ${fileSize(wal)} bytes`);
    assert.equal(fileSize(srv.database), r.bytesAfter);
    assert.ok(reads > 20, `${reads} reads`);
    assert.equal(r.walBusy, false);
    assert.equal(describeVacuum(r).includes("busy"), false);
  });

  Deno.test(`${engine}: vacuum in place reports walBusy when a cursor keeps the WAL`, async () => {
    await using srv = await startServer({ engine });
    await using a = await link(srv);
    await using b = await link(srv);
    await fill(a, 3000);
    await a.request(Op.Run, ["INSERT INTO t(b) VALUES (x'01')", null, null]);
    // A cursor's snapshot: no checkpoint can reset the WAL under it.
    const [cursor] = await b.request(Op.Iterate, [LONG_READ, null, null]);
    await b.request(Op.Next, [cursor]);
    const r = await a.request(Op.Vacuum, [null]);
    assert.equal(r.walBusy, true);
    assert.ok(fileSize(`${srv.database}-wal`) > 0);
    assert.match(
      describeVacuum(r),
      /^vacuum: \d+ -> \d+ pages, .*; busy: a reader holds an older snapshot, .*run `netsqlite checkpoint --truncate` once it is done$/,
    );
    await b.request(Op.CloseCursor, [cursor]);
    const done = await a.request(Op.Checkpoint, ["truncate"]);
    assert.equal(done.busy, false);
    assert.equal(fileSize(`${srv.database}-wal`), 0);
    assert.equal(fileSize(srv.database), r.bytesAfter);
  });

  Deno.test({
    name: `${engine}: backup and vacuum --into copy the database file's permission bits (0600)`,
    ignore: Deno.build.os === "windows",
    fn: async () => {
      await using srv = await serverWithCopies(engine, 0o600);
      await using a = await link(srv);
      await fill(a, 500);
      const backup = await a.request(Op.Backup, ["backup.db"]);
      assert.equal(Deno.statSync(backup.dest).mode! & 0o777, 0o600);
      const into = await a.request(Op.Vacuum, ["compact.db"]);
      assert.equal(Deno.statSync(into.into!).mode! & 0o777, 0o600);
      assert.equal(into.walBusy, undefined);
      assert.deepEqual(
        [...Deno.readDirSync(srv.copies)].map((e) => e.name).sort(),
        ["backup.db", "compact.db"],
      );
    },
  });

  Deno.test({
    name: `${engine}: copies of a 0664 database are 0664 (a umask of 022 takes no bit away)`,
    ignore: Deno.build.os === "windows",
    fn: async () => {
      await using srv = await serverWithCopies(engine, 0o664);
      await using a = await link(srv);
      await fill(a, 100);
      const backup = await a.request(Op.Backup, ["backup.db"]);
      assert.equal(Deno.statSync(backup.dest).mode! & 0o777, 0o664);
      const into = await a.request(Op.Vacuum, ["compact.db"]);
      assert.equal(Deno.statSync(into.into!).mode! & 0o777, 0o664);
    },
  });

  Deno.test({
    name:
      `${engine}: a --readonly server, not root, backs up a read-only (0444) database: the copies are 0444 (they failed with SQLITE_READONLY)`,
    // A server process on the engine of NETSQLITE_ENGINE (run the file with each).
    ignore: !canRunAsNobody || engine !== ENGINE,
    fn: async () => {
      await using dir = await tempDir();
      const db = `${dir.path}/ro.db`;
      const d = new DatabaseSync(db);
      d.exec(
        "PRAGMA journal_mode = WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);" +
          "PRAGMA wal_checkpoint(TRUNCATE)",
      );
      d.close();
      const copies = `${dir.path}/copies`;
      Deno.mkdirSync(copies);
      for (const p of [dir.path, copies, db]) Deno.chownSync(p, 65534, 65534);
      Deno.chmodSync(db, 0o444);
      const sock = `${dir.path}/s.sock`;
      const extra = ["--readonly", "--backup-dir", copies];
      const srv = spawnServer(db, sock, extra, asNobody);
      try {
        await (await connectWhenUp(sock, srv.child)).close();
        for (const args of [["backup", "a.db"], ["vacuum", "--into", "b.db"]]) {
          const r = await cli([...args, "--socket", sock]);
          assert.equal(r.code, 0, r.stderr);
        }
      } finally {
        assert.equal(await stop(srv), 0, srv.log());
      }
      assert.deepEqual([...Deno.readDirSync(copies)].map((e) => e.name).sort(), ["a.db", "b.db"]);
      for (const copy of [`${copies}/a.db`, `${copies}/b.db`]) {
        assert.equal(Deno.statSync(copy).mode! & 0o777, 0o444, copy);
        assert.deepEqual(rowsOf(copy, "SELECT x FROM t ORDER BY x"), [[1], [2]]);
        assert.deepEqual(rowsOf(copy, "PRAGMA integrity_check"), [["ok"]]);
      }
    },
  });
}
