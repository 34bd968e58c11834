/**
 * Suspicions left by the review of the engine core, reproduced on real
 * servers (both engines where they apply).
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { SqliteError } from "../client.ts";
import { delay, startServer, statsUntil, tempDir, within } from "./_helpers.ts";
import { connectWhenUp, ENGINE, spawnServer, stop } from "./_logged_server.ts";
import { canMount, fill, mountedDisk } from "./_tmpfs.ts";
import { Wire } from "./_wire.ts";
import { Op, Status } from "../protocol/messages.ts";

Deno.test({
  name: "A read inside a transaction that fails so that SQLite rolls the transaction back " +
    "(a full device as the read spills the transaction's pages) ends the transaction: " +
    "later requests are refused until ROLLBACK, none runs in autocommit",
  ignore: !canMount,
  async fn() {
    await using disk = await mountedDisk("48m");
    const database = `${disk.disk}/a.db`;
    const made = new DatabaseSync(database);
    made.exec(
      "PRAGMA journal_mode = WAL; CREATE TABLE big (id INTEGER PRIMARY KEY, v); " +
        "CREATE TABLE other (id INTEGER PRIMARY KEY, v); CREATE TABLE t (id INTEGER PRIMARY KEY); " +
        "INSERT INTO other WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c " +
        "WHERE i < 4000) SELECT i, randomblob(1000) FROM c",
    );
    made.close();
    await using srv = await startServer({ database });
    const db = await srv.client();
    try {
      await db.exec("BEGIN");
      // More dirty pages than the writer's page cache holds (2 MiB): the
      // cache stays full of them, so each page a later read loads spills one
      // to the WAL first.
      await db.exec(
        "INSERT INTO big WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c " +
          "WHERE i < 4000) SELECT i, randomblob(1000) FROM c",
      );
      await fill(disk.disk);
      const read = await db.get("SELECT count(*) AS n, sum(length(v)) AS s FROM other").then(
        (row) => ({ row }),
        (err: unknown) => ({ err }),
      );
      await Deno.remove(`${disk.disk}/filler`);
      if (!("err" in read)) assert.fail(`the read answered ${JSON.stringify(read.row)}`);
      assert.ok(read.err instanceof SqliteError, String(read.err));
      // (node:sqlite hides the error of a query's step: the server sees the
      // transaction gone, not why.)
      assert.equal(
        read.err.code,
        ENGINE === "ffi" ? "SQLITE_FULL" : "SQLITE_ERROR",
        read.err.message,
      );
      assert.match(read.err.message, /SQLite rolled back the transaction it was in/);
      // SQLite rolled the transaction back: the next write must not run in
      // autocommit (and commit), it is refused until ROLLBACK.
      const write = await db.run("INSERT INTO t VALUES (1)").then(
        () => null,
        (err: unknown) => err,
      );
      assert.ok(write instanceof SqliteError, "the write after the failed read ran");
      assert.equal(write.code, "TX_ABORTED", write.message);
      await db.exec("ROLLBACK");
      assert.deepEqual(await db.values("SELECT id FROM t"), []);
      assert.deepEqual(await db.values("SELECT count(*) FROM big"), [[0]]);
    } finally {
      await db.close();
    }
  },
});

Deno.test("PRAGMA data_version pipelined right behind the client's own grouped write answers the value after that write's commit", async () => {
  await using srv = await startServer();
  await using a = await srv.client();
  await using b = await srv.client();
  await a.exec("CREATE TABLE g (v)");
  const write = "INSERT INTO g VALUES (?)";
  // Known fast (it ran within the inline budget), so that it is grouped.
  for (let i = 0; i < 3; i++) await a.run(write, [i]);
  for (let round = 0; round < 10; round++) {
    const [[before]] = await a.values<[number]>("PRAGMA data_version");
    const [, [[after]]] = await Promise.all([
      a.run(write, [round]),
      a.values<[number]>("PRAGMA data_version"),
      b.run(write, [-round]),
    ]);
    assert.notEqual(after, before, `round ${round}: the write before it committed`);
  }
});

Deno.test({
  name: "--tx-timeout reached while the transaction's COMMIT runs in the background, which " +
    "commits: the server's log does not say the transaction was rolled back [ffi]",
  ignore: ENGINE !== "ffi",
  async fn() {
    await using dir = await tempDir();
    const sock = `${dir.path}/s.sock`;
    const txTimeout = 600;
    const srv = spawnServer(`${dir.path}/a.db`, sock, [
      "--tx-timeout",
      String(txTimeout),
      "--synchronous",
      "full",
      "--busy-timeout",
      "10000",
    ]);
    const db = await connectWhenUp(sock, srv.child);
    const outcomes: string[] = [];
    try {
      await db.exec("CREATE TABLE big (round, v)");
      // 20 MB: the COMMIT starts SQLite's automatic checkpoint, which copies and syncs them.
      const fill = "INSERT INTO big WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 " +
        "FROM c WHERE i < 5000) SELECT ?, zeroblob(4000) FROM c";
      for (let round = 0; round < 12; round++) {
        await db.exec("BEGIN");
        const began = performance.now();
        const filled = await db.run(fill, [round]).then(() => null, (err: unknown) => err);
        if (filled !== null) {
          assert.ok(filled instanceof SqliteError, String(filled));
          assert.equal(filled.code, "TX_TIMEOUT", filled.message);
          await db.exec("ROLLBACK");
          outcomes.push("fill late");
          continue;
        }
        // COMMIT sent from 120 ms before the deadline to just after it.
        const at = began + txTimeout - 120 + round * 12;
        if (at > performance.now()) await delay(at - performance.now());
        const commit = await db.exec("COMMIT").then(() => null, (err: unknown) => err);
        if (commit === null) {
          outcomes.push("committed");
        } else {
          assert.ok(commit instanceof SqliteError, String(commit));
          assert.equal(commit.code, "TX_TIMEOUT", commit.message);
          await db.exec("ROLLBACK");
          outcomes.push("rolled back");
        }
        await db.run("DELETE FROM big");
      }
    } finally {
      await db.close();
      await stop(srv);
    }
    const rolledBack = outcomes.filter((o) => o !== "committed").length;
    const logged = srv.log().match(/lease expired: .* rolled back/g) ?? [];
    assert.equal(
      logged.length,
      rolledBack,
      `outcomes ${outcomes}; the log:\n${srv.log()}`,
    );
  },
});

Deno.test("A write waiting for the writer keeps its place in line while its connection's replies are held back (the server's unsent replies past --max-unsent-bytes)", async () => {
  const MiB = 1024 * 1024;
  await using srv = await startServer({ maxResultBytes: MiB, maxUnsentBytes: 5 * MiB });
  const holder = await srv.client();
  const c = await srv.client();
  const path = (srv.connectOptions as { path: string }).path;
  const a = await Wire.open(path);
  const p = await Wire.open(path);
  try {
    await holder.exec(
      "CREATE TABLE w (who TEXT); CREATE TABLE blob (v); " +
        "INSERT INTO blob VALUES (randomblob(900000))",
    );
    await holder.exec("BEGIN IMMEDIATE");
    // A: reads whose replies it does not take (some stay unsent), then a
    // write, which waits for the writer, first in line.
    const read = [Op.Query, "SELECT v FROM blob", null, null];
    await a.sendAll(read, read, read, [Op.Run, "INSERT INTO w VALUES ('a')", null, null]);
    // (Waits counted by the server, not a fixed delay: under load A's write
    // may reach the writer's line after C's would have.)
    await statsUntil(srv.connectOptions, (r) => r.writer.waiting === 1, "A's write waits");
    // C's write waits behind A's.
    const cWrite = c.run("INSERT INTO w VALUES ('c')");
    await statsUntil(srv.connectOptions, (r) => r.writer.waiting === 2, "C's write waits");
    // P's replies, which P does not read either, take the server past its bound.
    await p.sendAll(...Array.from({ length: 12 }, () => read));
    await delay(200);
    await holder.exec("ROLLBACK");
    await cWrite;
    assert.deepEqual(
      await holder.values("SELECT who FROM w ORDER BY rowid"),
      [["a"], ["c"]],
      "A's write came first in line",
    );
  } finally {
    await a[Symbol.asyncDispose]();
    await p[Symbol.asyncDispose]();
    await c.close();
    await holder.close();
  }
});

Deno.test({
  name: "A raw connection that subscribes and writes: a group commit of its that fails (full " +
    "device) loses none of the events of its write committed just before [ffi]",
  ignore: !canMount || ENGINE !== "ffi",
  async fn() {
    let failedAfterCommit = 0;
    for (let free = 1; free <= 3 && failedAfterCommit === 0; free++) {
      await using disk = await mountedDisk("16m");
      const database = `${disk.disk}/a.db`;
      const made = new DatabaseSync(database);
      made.exec(
        "PRAGMA journal_mode = WAL; CREATE TABLE t (id INTEGER PRIMARY KEY); CREATE TABLE z (a)",
      );
      made.close();
      await using srv = await startServer({ database, synchronous: "normal" });
      await using a = await Wire.open((srv.connectOptions as { path: string }).path);
      const insert = "INSERT INTO t VALUES (?)";
      // A write that writes nothing and is never grouped (it mentions rollback).
      const alone = "UPDATE z SET a = 1 WHERE 0 -- rollback";
      // Both known fast: the insert is grouped, and `alone` runs inline.
      for (let i = 0; i < 3; i++) {
        await a.call(Op.Run, insert, [100 + i], null);
        await a.call(Op.Run, alone, null, null);
      }
      await a.call(Op.Run, "DELETE FROM t", null, null);
      assert.equal((await a.call(Op.Subscribe, { tables: ["t"] })).status & Status.Error, 0);
      // Room for one more commit, not two.
      await fill(disk.disk, free);
      const filler = `${disk.disk}/filler`;
      // Insert 1 commits (a group of its own); `alone` waits for that commit,
      // then runs inline, and insert 3 opens the next group, whose COMMIT
      // finds the device full.
      const ids = await a.sendAll(
        [Op.Run, insert, [1], null],
        [Op.Run, alone, null, null],
        [Op.Run, insert, [3], null],
      );
      const events: number[] = [];
      const replies = new Map<number, number>();
      const take = ([id, status, body]: [number, number, unknown]) => {
        if ((status & Status.Event) === 0) return replies.set(id, status);
        for (const c of (body as [number, number, unknown[][]])[2]) events.push(c[4] as number);
      };
      while (replies.size < ids.length) take(await a.reply());
      await Deno.remove(filler);
      const last = await a.send(Op.Run, insert, [5], null);
      while (!replies.has(last)) take(await a.reply());
      // Events of insert 5 follow its reply (sent from a microtask).
      while (!events.includes(5)) {
        const r = await within(a.reply(), 2000);
        if (r === "timeout") break;
        take(r);
      }
      const db = await srv.client();
      const rows = (await db.values<[number]>("SELECT id FROM t ORDER BY id")).map((r) => r[0]);
      await db.close();
      if (
        (replies.get(ids[0])! & Status.Error) === 0 && (replies.get(ids[2])! & Status.Error) !== 0
      ) {
        failedAfterCommit++;
      }
      assert.deepEqual(events, rows, `free ${free}: the feed's events are the committed rows`);
    }
    assert.ok(failedAfterCommit > 0, "no round had insert 1 commit and insert 3's group fail");
  },
});

Deno.test("Past the server's bound on unsent replies, the write woken from the writer's line is the only request of its connection that runs: those queued behind it wait until its client reads", async () => {
  const MiB = 1024 * 1024;
  await using srv = await startServer({ maxResultBytes: MiB, maxUnsentBytes: 5 * MiB });
  const holder = await srv.client();
  const path = (srv.connectOptions as { path: string }).path;
  const a = await Wire.open(path);
  const p = await Wire.open(path);
  try {
    await holder.exec(
      "CREATE TABLE w (who TEXT); CREATE TABLE blob (v); " +
        "INSERT INTO blob VALUES (randomblob(900000))",
    );
    await holder.exec("BEGIN IMMEDIATE");
    const read = [Op.Query, "SELECT v FROM blob", null, null];
    const write = (who: string) => [Op.Run, `INSERT INTO w VALUES ('${who}')`, null, null];
    const dataVersion = [Op.Query, "PRAGMA data_version", null, null];
    // A: replies it does not take, its write first in the writer's line,
    // then more writes and reads behind it.
    const behind = [
      dataVersion,
      write("b"),
      dataVersion,
      ...Array.from({ length: 10 }, () => write("b")),
    ];
    const ids = await a.sendAll(read, read, read, write("a"), ...behind);
    await delay(100);
    // P's unread replies take the server past its bound.
    await p.sendAll(...Array.from({ length: 12 }, () => read));
    await delay(200);
    await holder.exec("ROLLBACK");
    await delay(300);
    assert.deepEqual(await holder.values("SELECT who, count(*) FROM w GROUP BY who"), [["a", 1]]);
    // Once A reads its replies, the rest runs.
    const replies = new Map<number, number>();
    while (replies.size < ids.length) {
      const [id, status] = await a.reply();
      replies.set(id, status);
    }
    for (const id of ids) assert.equal(replies.get(id)! & Status.Error, 0, `request ${id}`);
    assert.deepEqual(await holder.values("SELECT who, count(*) FROM w GROUP BY who ORDER BY who"), [
      ["a", 1],
      ["b", 11],
    ]);
  } finally {
    await a[Symbol.asyncDispose]();
    await p[Symbol.asyncDispose]();
    await holder.close();
  }
});
