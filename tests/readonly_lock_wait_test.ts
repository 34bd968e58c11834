/**
 * A `--readonly` server of a rollback-journal database (no `-wal`): every
 * read needs a SHARED lock on the file, which another program's EXCLUSIVE
 * lock (`BEGIN EXCLUSIVE`, or its commit) keeps out. A read that meets it
 * waits, up to `--busy-timeout` and its own deadline, in the background on
 * the FFI engine: the server's other clients are answered meanwhile (before,
 * the read waited on the main thread, and with it every client of the
 * server). The other program is a process of its own (node:sqlite), as
 * POSIX locks of one process never conflict.
 */

import assert from "node:assert/strict";
import { SqliteError } from "../mod.ts";
import {
  drain,
  holdExclusive,
  rollbackJournalDb,
  serverStats,
  startServer,
  within,
} from "./_helpers.ts";

const ffi = (Deno.env.get("NETSQLITE_ENGINE") ?? "ffi") !== "node";

/** `p`, its rejection naming `what`. */
function named<T>(p: Promise<T>, what: string): Promise<T> {
  return p.catch((err) => {
    throw new Error(`${what} failed: ${err.message}`, { cause: err });
  });
}

Deno.test({
  name:
    "--readonly, rollback journal: a read waiting for another program's EXCLUSIVE lock does not hold up the server's other clients, then answers",
  ignore: !ffi,
  async fn() {
    await using journal = await rollbackJournalDb();
    const { database } = journal;
    await using srv = await startServer({ database, readonly: true, logLevel: "error" });
    await using a = await srv.client();
    await using b = await srv.client();
    await using d = await srv.client();
    await using e = await srv.client();
    // Known to the server before the lock: the reads below are cached.
    assert.deepEqual(await a.values("SELECT count(*) FROM t"), [[1]]);
    assert.deepEqual(await b.values("SELECT a FROM t ORDER BY a"), [[1]]);
    const holder = await holdExclusive(database);
    try {
      const read = a.values("SELECT count(*) FROM t");
      const other = b.values("SELECT a FROM t ORDER BY a");
      // A cursor's reader meets the lock as its snapshot is taken: it waits too.
      const cursorRows = drain(d.iterate("SELECT a FROM t ORDER BY a"));
      // A read given up by its caller while it waits is answered ABORTED at once.
      const abort = new AbortController();
      const given = e.values("SELECT count(*) FROM t", [], { signal: abort.signal }).then(
        () => null,
        (err) => err,
      );
      // (Both reached the server and met the lock.)
      assert.equal(await within(read, 200), "timeout");
      // A new connection's hello and a stats request are answered while
      // the lock is held (before: not until the lock was released, the
      // main thread waiting in the read's schema check).
      const start = performance.now();
      const stats = await within(serverStats(srv.connectOptions), 1_000);
      if (stats === "timeout") throw new Error("stats was not answered while the read waited");
      assert.ok(performance.now() - start < 1_000);
      // Reads waiting for the other program's lock wait for no writer.
      assert.deepEqual(
        [stats.writer.waiting, stats.writer.longestWaitMs],
        [0, 0],
        JSON.stringify(stats.writer),
      );
      abort.abort();
      const aborted = await within(given, 1_000);
      assert.ok(aborted instanceof Error, String(aborted));
      assert.equal((aborted as SqliteError).code, "ABORTED", (aborted as Error).message);
      // A read whose deadline comes first fails with STATEMENT_TIMEOUT at
      // its deadline, not at the busy timeout (5 s).
      await using c = await srv.client();
      const t0 = performance.now();
      const late = await c.values("SELECT count(*) FROM t", [], { timeout: 300 }).then(
        () => null,
        (err) => err,
      );
      const took = performance.now() - t0;
      assert.ok(late instanceof SqliteError, String(late));
      assert.equal(late.code, "STATEMENT_TIMEOUT", late.message);
      assert.ok(took < 2_000, `the timeout came after ${took} ms`);
      // The reads still wait; once the other program commits, both
      // answer with its row.
      assert.equal(await within(read, 50), "timeout");
      await holder.release();
      assert.deepEqual(await read, [[2]]);
      assert.deepEqual(await other, [[1], [2]]);
      const { rows, error } = await cursorRows;
      assert.equal(error, null);
      assert.deepEqual(rows, [[1], [2]].map(([a]) => ({ a })));
      assert.deepEqual(await e.values("SELECT count(*) FROM t"), [[2]]);
      // The server goes on as before: reads, and the connection that timed out.
      assert.deepEqual(await c.values("SELECT count(*) FROM t"), [[2]]);
      assert.deepEqual(await a.values("SELECT max(a) FROM t"), [[2]]);
    } finally {
      await holder.release();
    }
  },
});

Deno.test({
  name:
    "--readonly, rollback journal: a read waiting for another program's lock past --busy-timeout fails with SQLITE_BUSY, and the server goes on",
  ignore: !ffi,
  async fn() {
    await using journal = await rollbackJournalDb();
    const { database } = journal;
    await using srv = await startServer({
      database,
      readonly: true,
      busyTimeout: 300,
      logLevel: "error",
    });
    await using a = await srv.client();
    const holder = await holdExclusive(database);
    try {
      const t0 = performance.now();
      const failed = await a.values("SELECT count(*) FROM t").then(() => null, (err) => err);
      const took = performance.now() - t0;
      assert.ok(failed instanceof SqliteError, String(failed));
      assert.equal(failed.code, "SQLITE_BUSY", failed.message);
      assert.match(failed.message, /busy timeout, 300 ms/);
      assert.ok(took >= 250 && took < 3_000, `failed after ${took} ms`);
    } finally {
      await holder.release();
    }
    assert.deepEqual(await a.values("SELECT count(*) FROM t"), [[2]]);
  },
});

Deno.test({
  name:
    "--readonly, rollback journal: a read waiting in line for a reader, handed one as another program takes its lock, waits for the lock in the background",
  ignore: !ffi,
  async fn() {
    await using journal = await rollbackJournalDb();
    const { database } = journal;
    // Another program that, told to, asks for the EXCLUSIVE lock: it holds
    // PENDING (new readers are kept out) until the server's running read
    // ends, then EXCLUSIVE until told to commit.
    const code = `import { DatabaseSync } from "node:sqlite";
const db = new DatabaseSync(Deno.args[0]);
const line = async () => { await Deno.stdin.read(new Uint8Array(8)); };
db.exec("PRAGMA busy_timeout = 20000");
console.log("ready");
await line();
db.exec("BEGIN EXCLUSIVE; INSERT INTO t VALUES (2)");
console.log("locked");
await line();
db.exec("COMMIT");
db.close();`;
    const child = new Deno.Command(Deno.execPath(), {
      args: ["eval", "--ext=js", code, database],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const stdin = child.stdin.getWriter();
    const say = () => stdin.write(new TextEncoder().encode("go\n"));
    const out = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    const until = async (marker: string) => {
      while (!text.includes(marker)) {
        const { value, done } = await out.read();
        if (done) throw new Error(`the other program ended before "${marker}": ${text}`);
        text += value;
      }
    };
    try {
      await using srv = await startServer({
        database,
        readonly: true,
        maxBackgroundReads: 1,
        logLevel: "error",
      });
      await using a = await srv.client();
      await using b = await srv.client();
      await until("ready");
      // Both past the inline budget, both reading t (a SHARED lock while
      // they run): `a`'s, which would never end, takes the one background
      // reader until its deadline; `b`'s waits in line.
      const slow = (n: number) =>
        `WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ${n}) ` +
        "SELECT count(*) + (SELECT count(*) FROM t) FROM c";
      const endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) " +
        "SELECT count(*) + (SELECT count(*) FROM t) FROM c";
      const first = a.values(endless, [], { timeout: 1_500 });
      first.catch(() => {}); // (awaited below: an assertion failing first must not leave it unhandled)
      assert.equal(await within(first, 100), "timeout"); // (in the background now)
      const second = b.values(slow(200_000));
      second.catch(() => {});
      assert.equal(await within(second, 100), "timeout");
      await say(); // (it waits for `a`'s read, holding PENDING meanwhile)
      // It holds the lock once `a`'s read ended, at its deadline.
      await until("locked");
      // `b` was handed the reader as the lock was taken: it waits for the
      // lock, and the server answers meanwhile.
      const stats = await within(serverStats(srv.connectOptions), 1_000);
      assert.notEqual(stats, "timeout", "stats was not answered while the read waited");
      assert.equal(await within(second, 50), "timeout");
      await say();
      assert.deepEqual(await named(second, "the read in line"), [[200_002]]);
      await assert.rejects(first, (err: SqliteError) => err.code === "STATEMENT_TIMEOUT");
    } finally {
      await say().catch(() => {});
      await stdin.close().catch(() => {});
      while (!(await out.read()).done);
      await child.status;
    }
  },
});
