/**
 * The server when its storage misbehaves, as an operator meets it: a
 * device that fills up under a running server (a small tmpfs, mounted by
 * the test as root; skipped where mount is not possible). What clients are
 * told is in `commit_io_test.ts`; here: what the server's log says, and
 * that it goes on by itself once there is room again, no restart needed,
 * every acknowledged write kept.
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { type Client, connect, SqliteError } from "../mod.ts";
import { delay, tempDir } from "./_helpers.ts";
import { connectWhenUp, ENGINE, spawnServer, stop, until } from "./_logged_server.ts";
import { canMount, fill, mountedDisk } from "./_tmpfs.ts";

/** The error `p` rejects with, a SqliteError. */
async function failure(p: Promise<unknown>): Promise<SqliteError> {
  const err = await p.then(() => null, (e) => e);
  assert.ok(err instanceof SqliteError, `expected a SqliteError, got ${err}`);
  return err;
}

async function ids(db: Client): Promise<number[]> {
  return (await db.values<[number]>("SELECT id FROM t ORDER BY id")).map((r) => r[0]);
}

const INSERT = "INSERT INTO t VALUES (?, randomblob(?))";

Deno.test({
  name: "A full disk under a running server: failed writes are logged at error (the device is " +
    "full), reads go on, and once there is room writes go on without a restart, nothing " +
    "acknowledged lost",
  ignore: !canMount,
  async fn() {
    await using dir = await mountedDisk("16m");
    const disk = dir.disk;
    const db = `${disk}/a.db`, sock = `${dir.path}/a.sock`;
    const srv = spawnServer(db, sock); // the default log level, warn
    const c = await connectWhenUp(sock, srv.child);
    const others = await Promise.all([1, 2].map(() => connect({ path: sock, max: 1 })));
    try {
      await c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)");
      await c.run(INSERT, [1, 10]);
      // Known fast before the device is full, so that it joins groups.
      await c.run(INSERT, [2, 10]);
      await c.run("DELETE FROM t WHERE id = 2");
      await fill(disk);
      const line = (what: string) =>
        new RegExp(
          ` error netsqlite: storage error: session \\d+, ${what}: SQLITE_FULL: database or ` +
            "disk is full.* \\(the device holding the database, or SQLite's temporary " +
            "directory \\(large sorts, VACUUM\\), is full: requests that need room fail " +
            "until there is some, and go on by themselves then\\)",
        );

      // Every kind of write fails with SQLITE_FULL, and says nothing was written;
      // the operator learns why from the log, at the default level.
      const failed: SqliteError[] = [];
      failed.push(await failure(c.run(INSERT, [2, 200_000])));
      assert.ok(await until(() => line(".+?").test(srv.log())), srv.log());
      failed.push(await failure(c.batch([{ sql: INSERT, params: [3, 200_000] }])));
      failed.push(
        await failure(c.transaction(async (t) => {
          await t.run(INSERT, [4, 200_000]);
        })),
      );
      // Grouped writes: the shared COMMIT fails. (Writes sent together
      // usually share a group, not always: rounds until some did.)
      let grouped = 0;
      for (let round = 0; round < 20 && grouped === 0; round++) {
        const group = await Promise.allSettled(
          [c, ...others].map((x, i) => x.run(INSERT, [10 + i, 100_000])),
        );
        for (const r of group) {
          assert.equal(r.status, "rejected");
          const err = (r as PromiseRejectedResult).reason;
          failed.push(err);
          if (/group commit holding this write was rolled back/.test(err.message)) grouped++;
        }
      }
      assert.ok(grouped > 0, "no write failed with its group's COMMIT");
      assert.ok(
        await until(() => line("group commit \\(\\d writes? of this session\\)").test(srv.log())),
        srv.log(),
      );
      for (const err of failed) {
        assert.ok(err instanceof SqliteError, String(err));
        assert.equal(err.code, "SQLITE_FULL", err.message);
        assert.notEqual(err.mayHaveRun, true, err.message);
      }
      // Reads go on.
      assert.deepEqual(await ids(c), [1]);

      // Room again: writes go on, no restart.
      await Deno.remove(`${disk}/filler`);
      await c.run(INSERT, [2, 200_000]);
      await Promise.all([c, ...others].map((x, i) => x.run(INSERT, [10 + i, 200_000])));
      await c.transaction(async (t) => {
        await t.run(INSERT, [4, 200_000]);
      });
      assert.deepEqual(await ids(c), [1, 2, 4, 10, 11, 12]);
      assert.deepEqual(await c.values("PRAGMA integrity_check"), [["ok"]]);
    } finally {
      for (const o of others) await o.close();
      await c.close();
      assert.equal(await stop(srv), 0);
    }
  },
});

Deno.test({
  name: "Writers through a disk filling up and freed twice, then kill -9 and a restart: every " +
    "acknowledged write is there, none told it was not written",
  ignore: !canMount,
  async fn() {
    await using dir = await mountedDisk("32m");
    const disk = dir.disk;
    const db = `${disk}/a.db`, sock = `${dir.path}/a.sock`;
    let srv = spawnServer(db, sock);
    const acked = new Set<number>(), notWritten = new Set<number>();
    let failures = 0, next = 1, stopping = false;
    const size = () => 100 + Math.floor(Math.random() * 8000);
    // Autocommit writes (grouped), batches and transactions, until told to stop.
    const writer = async (c: Client) => {
      for (let n = 0; !stopping; n++) {
        const rows = n % 3 === 0 ? [next++] : [next++, next++, next++];
        try {
          if (n % 3 === 0) await c.run(INSERT, [rows[0], size()]);
          else if (n % 3 === 1) {
            await c.batch(rows.map((id) => ({ sql: INSERT, params: [id, size()] })));
          } else {
            await c.transaction(async (t) => {
              for (const id of rows) await t.run(INSERT, [id, size()]);
            });
          }
          for (const id of rows) acked.add(id);
        } catch (err) {
          assert.ok(err instanceof SqliteError, String(err));
          assert.match(err.code, /^SQLITE_(FULL|IOERR)/, err.message);
          failures++;
          if (err.mayHaveRun !== true) { for (const id of rows) notWritten.add(id); }
          await new Promise((r) => setTimeout(r, 5));
        }
      }
    };
    const c = await connectWhenUp(sock, srv.child);
    const clients = [c, ...await Promise.all([1, 2, 3].map(() => connect({ path: sock })))];
    try {
      await c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)");
      const writing = clients.map(writer);
      try {
        for (let round = 0; round < 2; round++) {
          const before = acked.size;
          assert.ok(await until(() => acked.size >= before + 50), "writes go on");
          await fill(disk);
          const failed = failures;
          assert.ok(await until(() => failures >= failed + 20), "writes fail");
          await Deno.remove(`${disk}/filler`);
        }
        const before = acked.size;
        assert.ok(await until(() => acked.size >= before + 50), "writes go on at the end");
      } finally {
        stopping = true;
        await Promise.all(writing);
      }
    } finally {
      for (const x of clients) await x.close();
    }
    await stop(srv, "SIGKILL");
    srv = spawnServer(db, sock);
    const again = await connectWhenUp(sock, srv.child);
    try {
      const found = new Set(await ids(again));
      for (const id of acked) assert.ok(found.has(id), `acknowledged row ${id} lost`);
      for (const id of notWritten) assert.ok(!found.has(id), `row ${id} said not written`);
      assert.deepEqual(await again.values("PRAGMA integrity_check"), [["ok"]]);
    } finally {
      await again.close();
      assert.equal(await stop(srv), 0);
    }
  },
});

Deno.test({
  name: "A lock file deleted under a running server: a second server on the database is still " +
    "refused (Linux), and its message names that cause and the first server's pid, not only a " +
    "hard link",
  ignore: Deno.build.os !== "linux",
  async fn() {
    await using dir = await tempDir();
    const db = `${dir.path}/a.db`;
    const first = spawnServer(db, `${dir.path}/a.sock`);
    const c = await connectWhenUp(`${dir.path}/a.sock`, first.child);
    try {
      await c.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1)");
      await Deno.remove(`${db}.lock`);
      const second = spawnServer(db, `${dir.path}/b.sock`);
      assert.equal((await second.child.status).code, 1);
      await second.done;
      assert.match(
        second.log(),
        new RegExp(
          `another server owns ${db} \\(through another name of the same file, a hard link; ` +
            `its pid and socket are in the \\.lock beside that name; or its lock file ` +
            `"${db}\\.lock" was deleted while it runs \\(pid ${first.child.pid} holds the ` +
            "database file's lock\\): restart that server to make it again\\)",
        ),
      );
      // The first server serves on.
      assert.deepEqual(await c.values("SELECT x FROM t"), [[1]]);
    } finally {
      await c.close();
      assert.equal(await stop(first), 0);
    }
  },
});

Deno.test({
  name: "A server whose log and output go to a file on the full disk serves on: lines it cannot " +
    "write are counted and reported once it can, and SIGTERM still shuts it down cleanly",
  ignore: !canMount,
  async fn() {
    await using dir = await mountedDisk("16m");
    const disk = dir.disk;
    const db = `${disk}/a.db`, sock = `${dir.path}/a.sock`, log = `${disk}/server.log`;
    // As an operator runs it: `netsqlite serve ... >> server.log 2>&1` on the database's disk.
    const server = fileURLToPath(new URL("../server.ts", import.meta.url));
    const child = new Deno.Command("sh", {
      args: [
        "-c",
        'exec "$0" run -A "$1" --db "$2" --socket "$3" --engine "$4" >>"$5" 2>&1',
        Deno.execPath(),
        server,
        db,
        sock,
        ENGINE,
        log,
      ],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    let exited = false;
    child.status.then(() => exited = true);
    /** Fills the disk, the last page of the log file too (appends into it need no new page). */
    const fillAll = async () => {
      const size = (await Deno.stat(log)).size;
      await Deno.writeTextFile(log, "\n".repeat((4096 - size % 4096) % 4096), { append: true });
      await fill(disk);
    };
    try {
      const c = await connectWhenUp(sock, child);
      try {
        await c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)");
        await c.run(INSERT, [1, 10]);
        await fillAll();
        // Logged at error, into the full disk: lost, and the server serves on.
        assert.equal((await failure(c.run(INSERT, [2, 200_000]))).code, "SQLITE_FULL");
        assert.equal((await failure(c.run(INSERT, [3, 200_000]))).code, "SQLITE_FULL");
        assert.deepEqual(await ids(c), [1]);
        assert.equal(exited, false, "the server exited");
        await Deno.remove(`${disk}/filler`);
        await c.run(INSERT, [2, 10]);
        // The next line written (a statement timeout's, at warn) says how many were lost.
        const endless = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) " +
          "SELECT i FROM r";
        assert.equal(
          (await failure(c.values(endless, [], { timeout: 50 }))).code,
          "STATEMENT_TIMEOUT",
        );
        assert.ok(
          await until(() =>
            /error netsqlite: [12] log lines? could not be written \(No space left on device/
              .test(Deno.readTextFileSync(log))
          ),
          Deno.readTextFileSync(log),
        );
      } finally {
        await c.close();
      }
      await fillAll(); // SIGTERM's own lines cannot be written either
      child.kill("SIGTERM");
      assert.equal((await child.status).code, 0);
    } finally {
      if (!exited) {
        child.kill("SIGKILL");
        await child.status;
      }
    }
    await Deno.remove(`${disk}/filler`);
    // Once there is room, the server starts again (the WAL its shutdown kept is read).
    const again = spawnServer(db, sock);
    const c = await connectWhenUp(sock, again.child);
    try {
      assert.deepEqual(await ids(c), [1, 2]);
    } finally {
      await c.close();
      assert.equal(await stop(again), 0);
    }
  },
});

Deno.test({
  name: "A socket file deleted on a device with no inode left: said once (not every second), " +
    "made again once there is room",
  ignore: !canMount,
  async fn() {
    // Few inodes: the socket file needs one, and the test takes the rest.
    await using dir = await mountedDisk("1m,nr_inodes=16");
    const disk = dir.disk;
    const sock = `${disk}/a.sock`;
    const s = spawnServer(`${dir.path}/a.db`, sock);
    try {
      (await connectWhenUp(sock, s.child)).close();
      const taken: string[] = [];
      for (let i = 0; i < 64; i++) {
        try {
          Deno.writeFileSync(`${disk}/f${i}`, new Uint8Array(0));
          taken.push(`${disk}/f${i}`);
        } catch {
          break;
        }
      }
      Deno.removeSync(sock);
      // The check runs every second: three of them find the device still full.
      await delay(3_500);
      const failed = s.log().match(/could not be made again: [^\n]*/g) ?? [];
      assert.equal(failed.length, 1, s.log());
      assert.match(
        failed[0],
        /tried again every 1000 ms \(said again only if the error changes\)/,
      );
      for (const f of taken) Deno.removeSync(f);
      assert.ok(
        await until(() => /was deleted while the server ran: made it again/.test(s.log())),
      );
      const c = await connect({ path: sock });
      assert.deepEqual(await c.values("SELECT 1"), [[1]]);
      await c.close();
    } finally {
      assert.equal(await stop(s), 0);
    }
  },
});
