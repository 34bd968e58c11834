/**
 * Commits that fail on a real device: a small tmpfs (mounted by the test,
 * as root) filled to the last page. A COMMIT whose WAL frames do not fit
 * fails with SQLITE_FULL before anything is committed (`mayHaveRun`
 * false). One whose frames fit (the WAL file already that large) but whose
 * WAL-index must grow past its first 32 KiB region (frame 4062 on) fails
 * with SQLITE_IOERR_SHMSIZE after the commit record was written: SQLite
 * rolls back in memory, yet the next open after a crash finds the
 * transaction committed, so the outcome is unknown (`mayHaveRun` true).
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { type Client, SqliteError } from "../mod.ts";
import { type ServerProcess, startServerProcess, tempDir } from "./_helpers.ts";
import { canMount, fill } from "./_tmpfs.ts";

const TMPFS = canMount;

/** A tmpfs of `mib` MiB mounted on a fresh directory, unmounted on dispose. */
async function tmpfs(mib: number): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix: "netsqlite-tmpfs-" });
  const out = await new Deno.Command("mount", {
    args: ["-t", "tmpfs", "-o", `size=${mib}m`, "tmpfs", path],
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  return {
    path,
    async [Symbol.asyncDispose]() {
      await new Deno.Command("umount", { args: ["-l", path] }).output();
      await Deno.remove(path, { recursive: true }).catch(() => {});
    },
  };
}

/** A database with `t(id, v)` holding row 1, made outside the server (its WAL checkpointed away). */
function createDatabase(path: string): void {
  const db = new DatabaseSync(path);
  db.exec("PRAGMA journal_mode = WAL");
  db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)");
  db.exec("INSERT INTO t VALUES (1, 'small')");
  db.close();
}

async function ids(db: Client): Promise<number[]> {
  return (await db.values<[number]>("SELECT id FROM t ORDER BY id")).map((r) => r[0]);
}

/** The error `p` rejects with, a SqliteError. */
async function failure(p: Promise<unknown>): Promise<SqliteError> {
  const err = await p.then(() => null, (e) => e);
  assert.ok(err instanceof SqliteError, `expected a SqliteError, got ${err}`);
  return err;
}

/** What a server process started on `database` (socket in `sockets`) needs. */
function start(sockets: string, database: string): Promise<ServerProcess> {
  return startServerProcess({ dir: sockets, database });
}

/** The statement grouped writes run (known fast once it ran). */
const GROUPED = "INSERT INTO t (id, v) VALUES (?, randomblob(?))";

Deno.test({
  name: "COMMIT failing with SQLITE_FULL on a full device: transaction, batch, script, " +
    "autocommit and grouped writes are told nothing was written (mayHaveRun false), and " +
    "after a crash and restart none of them is there",
  ignore: !TMPFS,
  async fn() {
    await using sockets = await tempDir();
    await using fs = await tmpfs(16);
    const database = `${fs.path}/a.db`;
    createDatabase(database);
    let server = await start(sockets.path, database);
    try {
      const db = await server.client();
      const others = await Promise.all([1, 2, 3].map(() => server.client()));
      try {
        // Known fast before the device is full, so that it joins groups.
        await db.run(GROUPED, [2, 10]);
        await db.run("DELETE FROM t WHERE id = 2");
        await fill(fs.path);
        const big = "INSERT INTO t VALUES (?, randomblob(200000))";

        const tx = await failure(db.transaction(async (t) => {
          await t.run(big, [10]);
        }));
        assert.equal(tx.code, "SQLITE_FULL");
        assert.equal(tx.mayHaveRun, false);
        assert.match(tx.message, /rolled back at COMMIT, nothing of it was written/);
        assert.equal(db.inTransaction, false);

        const batch = await failure(db.batch([{ sql: big, params: [11] }]));
        assert.equal(batch.code, "SQLITE_FULL");
        assert.equal(batch.mayHaveRun, false);
        assert.match(batch.message, /^Batch commit failed, nothing was applied: /);

        const script = await failure(
          db.exec("BEGIN; INSERT INTO t VALUES (12, randomblob(200000)); COMMIT"),
        );
        assert.equal(script.code, "SQLITE_FULL");
        assert.equal(script.mayHaveRun, false);
        assert.match(script.message, /rolled back at COMMIT, nothing of it was written/);
        await db.exec("ROLLBACK"); // a no-op, as after any failed COMMIT
        assert.equal(db.inTransaction, false);

        // The RELEASE of the savepoint that began the transaction commits it; failing so,
        // it leaves the transaction open (SQLite's choice, unlike a failed COMMIT's
        // rollback): the client is told the error and that it is still in the
        // transaction, and its ROLLBACK undoes it.
        await db.run("SAVEPOINT outer_sp");
        await db.run("INSERT INTO t VALUES (14, randomblob(200000))");
        const released = await failure(db.run("RELEASE outer_sp"));
        assert.equal(released.code, "SQLITE_FULL");
        assert.notEqual(released.mayHaveRun, true);
        assert.equal(db.inTransaction, true);
        await db.exec("ROLLBACK");
        assert.equal(db.inTransaction, false);

        const single = await failure(db.run(big, [13]));
        assert.equal(single.code, "SQLITE_FULL");
        assert.notEqual(single.mayHaveRun, true);

        // Grouped writes: the shared COMMIT fails, each member gets its cause.
        // (Writes sent together usually share a group, not always: rounds
        // until some did.)
        let grouped = 0;
        for (let round = 0; round < 20 && grouped === 0; round++) {
          const results = await Promise.allSettled(
            [db, ...others].map((c, i) => c.run(GROUPED, [100 + 10 * round + i, 100000])),
          );
          for (const r of results) {
            assert.equal(r.status, "rejected", JSON.stringify(r));
            const err = (r as PromiseRejectedResult).reason as SqliteError;
            assert.equal(err.code, "SQLITE_FULL", err.message);
            assert.notEqual(err.mayHaveRun, true, err.message);
            if (/group commit holding this write was rolled back/.test(err.message)) {
              assert.equal(err.mayHaveRun, false);
              grouped++;
            }
          }
        }
        assert.ok(grouped > 0, "no write failed with its group's COMMIT");
      } finally {
        for (const c of others) await c.close();
        await db.close();
      }
      // What the WAL holds after a crash: none of it.
      await server.kill();
      await Deno.remove(`${fs.path}/filler`);
      server = await start(sockets.path, database);
      await using again = await server.client();
      assert.deepEqual(await ids(again), [1]);
      assert.deepEqual(await again.values("PRAGMA integrity_check"), [["ok"]]);
    } finally {
      await server.kill();
    }
  },
});

Deno.test({
  name: "COMMIT failing with SQLITE_IOERR_SHMSIZE after the commit record was written: " +
    "transaction, batch, script, autocommit and grouped writes are told the outcome is " +
    "unknown (mayHaveRun true), and after a crash and restart the last of them is there",
  ignore: !TMPFS,
  async fn() {
    await using sockets = await tempDir();
    await using fs = await tmpfs(48);
    const database = `${fs.path}/a.db`;
    createDatabase(database);
    // A WAL file already 24 MiB long: frames written into it need no new
    // pages of the device; the WAL-index growing past frame 4062 does.
    await Deno.writeFile(`${database}-wal`, new Uint8Array(24 << 20));
    let server = await start(sockets.path, database);
    const unknown =
      /; outcome unknown: the commit of .* may have been written \(.*\): check whether it took effect before retrying/;
    const failedUnknown: number[] = [];
    const acked: number[] = [1];
    /** Writes of the last round that committed (in a group after the failed one, maybe). */
    let lastRoundAcked = 0;
    try {
      const db = await server.client();
      const others = await Promise.all([1, 2, 3].map(() => server.client()));
      try {
        await db.run(GROUPED, [2, 10]);
        await db.run("DELETE FROM t WHERE id = 2");
        await fill(fs.path);
        // About 4100 pages: more frames than the WAL-index's first region
        // holds; the 2 MiB page cache spills all but the last ~480 before
        // the COMMIT, which writes the rest and crosses it.
        const big = "INSERT INTO t VALUES (?, randomblob(16800000))";
        const expectUnknown = (err: SqliteError, id: number) => {
          assert.equal(err.code, "SQLITE_IOERR_SHMSIZE", err.message);
          assert.equal(err.mayHaveRun, true, err.message);
          assert.match(err.message, unknown);
          failedUnknown.push(id);
        };

        const tx = await failure(db.transaction(async (t) => {
          await t.run(big, [10]);
        }));
        expectUnknown(tx, 10);
        assert.match(tx.message, /the commit of the transaction may have been written/);
        assert.equal(db.inTransaction, false);
        // This server reads on without it.
        assert.deepEqual(await ids(db), [1]);

        const batch = await failure(db.batch([{ sql: big, params: [11] }]));
        expectUnknown(batch, 11);
        assert.match(batch.message, /the commit of the batch may have been written/);

        const script = await failure(
          db.exec("BEGIN; INSERT INTO t VALUES (12, randomblob(16800000)); COMMIT"),
        );
        expectUnknown(script, 12);
        await db.exec("ROLLBACK");
        assert.equal(db.inTransaction, false);

        expectUnknown(await failure(db.run(big, [13])), 13);
        assert.deepEqual(await ids(db), [1]);

        // Grouped writes: a committed transaction of ~3900 frames first
        // (under the first region, its checkpoint failing on the full
        // device, so the WAL is not restarted), then writes whose shared
        // COMMIT crosses frame 4062.
        await db.run("INSERT INTO t VALUES (14, randomblob(15900000))");
        acked.push(14);
        // (Rounds until some write failed with its group: each commit past
        // frame 4062 fails, so the WAL stays short of it.)
        let grouped = 0;
        for (let round = 0; round < 20 && grouped === 0; round++) {
          const id = (i: number) => 100 + 10 * round + i;
          const results = await Promise.allSettled(
            [db, ...others].map((c, i) => c.run(GROUPED, [id(i), 100000])),
          );
          lastRoundAcked = 0;
          for (const [i, r] of results.entries()) {
            if (r.status === "fulfilled") {
              acked.push(id(i));
              lastRoundAcked++;
              continue;
            }
            const err = r.reason as SqliteError;
            expectUnknown(err, id(i));
            if (/the commit of the group holding this write/.test(err.message)) grouped++;
          }
        }
        assert.ok(grouped > 0, "no write failed with its group's COMMIT");
        assert.deepEqual(await ids(db), acked.toSorted((a, b) => a - b));
      } finally {
        for (const c of others) await c.close();
        await db.close();
      }
      // After a crash, the last failed commit is found in the WAL: "may
      // have been written" was the truth. (Unless a smaller group of the
      // last round committed after it, over its frames: which writes share
      // a group depends on when their requests arrive.)
      await server.kill();
      await Deno.remove(`${fs.path}/filler`);
      server = await start(sockets.path, database);
      await using again = await server.client();
      const found = await ids(again);
      for (const id of acked) assert.ok(found.includes(id), `acknowledged row ${id} lost`);
      const extra = found.filter((id) => !acked.includes(id));
      if (lastRoundAcked === 0) {
        assert.ok(extra.length > 0, `no failed commit was found after the restart: ${found}`);
      }
      for (const id of extra) assert.ok(failedUnknown.includes(id), `row ${id} appeared`);
      assert.deepEqual(await again.values("PRAGMA integrity_check"), [["ok"]]);
    } finally {
      await server.kill();
    }
  },
});

Deno.test({
  name: "A grouped write failing with SQLITE_FULL as its pages spill to the WAL: SQLite rolls " +
    "back the whole group, and the writes before it are told that cause (SQLITE_FULL, " +
    "mayHaveRun false), not SQLITE_ABORT",
  ignore: !TMPFS,
  async fn() {
    await using sockets = await tempDir();
    await using fs = await tmpfs(16);
    const database = `${fs.path}/a.db`;
    createDatabase(database);
    // Room in the WAL file for the small writes' frames once the device is full.
    await Deno.writeFile(`${database}-wal`, new Uint8Array(1 << 20));
    const server = await start(sockets.path, database);
    try {
      await using a = await server.client();
      await a.run(GROUPED, [2, 10]);
      await fill(fs.path);
      const acked = [1, 2];
      let before = 0;
      for (let round = 0; round < 40 && before === 0; round++) {
        // A fresh statement, known fast, so that it joins the group (once
        // slow, a statement runs alone).
        const large = `${GROUPED} -- round ${round}`;
        await a.run(large, [1000 + round, 10]);
        acked.push(1000 + round);
        // Pipelined on one connection: both reach the server together.
        const [small, big] = await Promise.allSettled([
          a.run(GROUPED, [100 + 10 * round, 10]),
          a.run(large, [101 + 10 * round, 4_000_000]),
        ]);
        assert.equal(big.status, "rejected");
        assert.equal((big as PromiseRejectedResult).reason.code, "SQLITE_FULL");
        if (small.status === "fulfilled") {
          acked.push(100 + 10 * round); // committed before the large one ran
          continue;
        }
        const err = small.reason as SqliteError;
        assert.equal(err.code, "SQLITE_FULL", err.message);
        assert.equal(err.mayHaveRun, false, err.message);
        assert.match(
          err.message,
          /^Write was rolled back with its group commit: a later write in it failed with SQLITE_FULL \(database or disk is full\), and SQLite rolled back the whole group: nothing of this write was written; retry$/,
        );
        before++;
      }
      assert.ok(before > 0, "no write was rolled back with a grouped write that failed");
      assert.deepEqual(await ids(a), acked.toSorted((x, y) => x - y));
    } finally {
      await server.kill();
    }
  },
});
