/**
 * Maintenance through the server (ops 20+): checkpoint, vacuum, integrity
 * check and online backup, on real servers, on both engines, while clients
 * stay connected and keep writing.
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { openLink } from "../client/connection.ts";
import type { Link } from "../client/link.ts";
import { resolveConnectOptions } from "../client/options.ts";
import { Op } from "../protocol/messages.ts";
import { describeCheckpoint } from "../cli/admin.ts";
import {
  delay,
  holdWriteLock,
  openTestLink,
  readStdoutUntil,
  rowsOf,
  SERVE_TASK_FLAGS,
  startServer,
  startServerProcess,
  tempDir,
  type TestServer,
  within,
} from "./_helpers.ts";
import { cli } from "./_cli.ts";
import { limitFileSize, PRLIMIT } from "./_file_size.ts";

const ENGINES = ["ffi", "node"] as const;
const CHECKPOINTER = fileURLToPath(new URL("./_checkpointer.ts", import.meta.url));
const SERVER_TS = fileURLToPath(new URL("../server.ts", import.meta.url));

function link(srv: Pick<TestServer, "connectOptions">): Promise<Link & AsyncDisposable> {
  return openTestLink(srv.connectOptions);
}

async function withCopies(
  engine: "ffi" | "node",
  options: { busyTimeout?: number } = {},
): Promise<TestServer & { copies: string }> {
  const srv = await startServer({ engine, ...options });
  const copies = `${srv.dir}/copies`;
  await srv.server.shutdown();
  await Deno.mkdir(copies);
  const again = await startServer({
    engine,
    database: srv.database,
    backupDir: copies,
    ...options,
  });
  const dispose = again[Symbol.asyncDispose];
  return Object.assign(again, {
    copies,
    async [Symbol.asyncDispose]() {
      await dispose();
      await Deno.remove(srv.dir, { recursive: true }).catch(() => {});
    },
  });
}

/** Fills table t with `n` rows of 200 random bytes each, then deletes every other row. */
/** A read of more rows than a cursor chunk holds (CHUNK_ROWS), so its cursor stays open. */
const LONG_READ = "SELECT t.id FROM t, t AS u";

async function fill(l: Link, n: number): Promise<void> {
  await l.request(Op.Exec, [
    "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, b BLOB);" +
    `WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ${n}) ` +
    "INSERT INTO t(b) SELECT randomblob(200) FROM c;",
  ]);
}

/** Writes a database of `n` rows of 1,000 random bytes (table t), WAL mode, WAL checkpointed. */
function writeDatabase(path: string, n: number): void {
  const db = new DatabaseSync(path);
  try {
    db.exec(
      "PRAGMA journal_mode = WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);" +
        `WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ${n}) ` +
        "INSERT INTO t(b) SELECT randomblob(1000) FROM c; PRAGMA wal_checkpoint(TRUNCATE)",
    );
  } finally {
    db.close();
  }
}

/**
 * A server process on `dir`/db.db (backups under `dir`/copies) whose files
 * may not grow past `bytes` (its file size limit, `ulimit -f`, set once it
 * runs: `_file_size.ts`); a write past it fails with EFBIG (the server takes
 * SIGXFSZ).
 */
async function limitedServer(
  engine: string,
  dir: string,
  bytes: number,
): Promise<{ connectOptions: { path: string } } & AsyncDisposable> {
  const socket = `${dir}/s.sock`;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      SERVER_TS,
      "--db",
      `${dir}/db.db`,
      "--socket",
      socket,
      "--engine",
      engine,
      "--backup-dir",
      `${dir}/copies`,
    ],
    stdout: "piped",
    stderr: "null",
    stdin: "null",
  }).spawn();
  const { drained } = await readStdoutUntil(child, "serving");
  const dispose = async () => {
    child.kill("SIGTERM");
    await child.status;
    await drained;
  };
  try {
    await limitFileSize(child.pid, bytes);
  } catch (err) {
    await dispose();
    throw err;
  }
  return { connectOptions: { path: socket }, [Symbol.asyncDispose]: dispose };
}

function walSize(database: string): number {
  try {
    return Deno.statSync(`${database}-wal`).size;
  } catch {
    return 0;
  }
}

for (const engine of ENGINES) {
  Deno.test(`${engine}: checkpoint truncate empties the WAL while clients stay connected`, async () => {
    await using srv = await startServer({ engine });
    await using a = await link(srv);
    await using b = await link(srv);
    await fill(a, 2000);
    // b reads (the server's shared reader takes its snapshot), then stays connected.
    assert.deepEqual((await b.request(Op.Query, ["SELECT count(*) FROM t", null, null]))[1], [
      [2000],
    ]);
    assert.ok(walSize(srv.database) > 0);
    const r = await b.request(Op.Checkpoint, ["truncate"]);
    assert.equal(r.mode, "truncate");
    assert.equal(r.busy, false);
    assert.ok(r.walBytesBefore > 0);
    assert.equal(r.walBytesAfter, 0);
    assert.equal(walSize(srv.database), 0);
    // SQLite's answer for a completed TRUNCATE: the WAL was reset, 0 frames in it, 0 written back.
    assert.deepEqual([r.walFrames, r.checkpointed], [0, 0]);
    // Everyone goes on.
    await a.request(Op.Run, ["INSERT INTO t(b) VALUES (x'01')", null, null]);
    assert.deepEqual((await b.request(Op.Query, ["SELECT count(*) FROM t", null, null]))[1], [
      [2001],
    ]);
    const passive = await a.request(Op.Checkpoint, ["passive"]);
    assert.equal(passive.busy, false);
    assert.equal(passive.checkpointed, passive.walFrames);
  });

  Deno.test(`${engine}: checkpoint reports busy at once when a cursor holds an older snapshot`, async () => {
    await using srv = await startServer({ engine, busyTimeout: 3000 });
    await using a = await link(srv);
    await using b = await link(srv);
    await fill(a, 3000);
    const [cursor] = await b.request(Op.Iterate, ["SELECT id FROM t", null, null]);
    await b.request(Op.Next, [cursor]);
    await a.request(Op.Run, ["INSERT INTO t(b) VALUES (x'02')", null, null]);
    const start = performance.now();
    const r = await a.request(Op.Checkpoint, ["truncate"]);
    assert.ok(performance.now() - start < 1500, "the checkpoint did not wait for the reader");
    assert.equal(r.busy, true);
    assert.ok(r.walBytesAfter > 0);
    await b.request(Op.CloseCursor, [cursor]);
    const after = await a.request(Op.Checkpoint, ["truncate"]);
    assert.equal(after.busy, false);
    assert.equal(after.walBytesAfter, 0);
  });

  Deno.test(`${engine}: checkpoint reports SQLite's answer: -1 frames while another process checkpoints, all frames but no reset while a cursor reads the last commit`, async () => {
    await using srv = await startServer({ engine });
    await using a = await link(srv);
    await using b = await link(srv);
    await fill(a, 500);
    // b's cursor holds the snapshot before the last write: the other
    // program's FULL checkpoint waits for it, holding the checkpoint lock.
    // (Its 250,000 rows never fit one chunk: a cursor read to its end in
    // one chunk, as 500 rows may be on a fast machine, holds nothing.)
    const [old] = await b.request(Op.Iterate, [LONG_READ, null, null]);
    await b.request(Op.Next, [old]);
    await a.request(Op.Run, ["INSERT INTO t(b) VALUES (x'05')", null, null]);
    const other = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", CHECKPOINTER, srv.database],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const lines = other.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let said = "";
    while (!said.includes("checkpointing\n")) said += (await lines.read()).value ?? "";
    try {
      await delay(100); // (it is inside its checkpoint, waiting for b's reader)
      const busy = await a.request(Op.Checkpoint, ["truncate"]);
      // SQLite's answer when the checkpoint lock is taken: busy, -1 and -1.
      assert.deepEqual(
        { busy: busy.busy, walFrames: busy.walFrames, checkpointed: busy.checkpointed },
        { busy: true, walFrames: -1, checkpointed: -1 },
      );
      assert.equal(busy.walBytesAfter, busy.walBytesBefore);
      assert.match(
        describeCheckpoint(busy),
        /^checkpoint \(truncate\): busy: another connection \(another process\) is checkpointing now, so this one could not run and wrote nothing back, WAL .*; try again$/,
      );
    } finally {
      await b.request(Op.CloseCursor, [old]);
      for (let r = await lines.read(); !r.done; r = await lines.read()) said += r.value;
      await other.status;
    }
    assert.match(said, /^checkpointing\n0 \d+ \d+\n$/, "the other program's checkpoint completed");
    // A cursor on the last commit: every frame is written back, but the WAL
    // cannot be reset under its reader.
    await a.request(Op.Run, ["INSERT INTO t(b) VALUES (x'06')", null, null]);
    const [last] = await b.request(Op.Iterate, [LONG_READ, null, null]);
    await b.request(Op.Next, [last]);
    const kept = await a.request(Op.Checkpoint, ["truncate"]);
    assert.equal(kept.busy, true);
    assert.ok(kept.walFrames > 0);
    assert.equal(kept.checkpointed, kept.walFrames);
    assert.ok(kept.walBytesAfter > 0);
    assert.match(
      describeCheckpoint(kept),
      new RegExp(
        `^checkpoint \\(truncate\\): busy: all ${kept.walFrames} WAL frames written back, but the WAL could not be reset, .*the next checkpoint resets it$`,
      ),
    );
    await b.request(Op.CloseCursor, [last]);
    const done = await a.request(Op.Checkpoint, ["truncate"]);
    assert.deepEqual(
      { busy: done.busy, walFrames: done.walFrames, checkpointed: done.checkpointed },
      { busy: false, walFrames: 0, checkpointed: 0 },
    );
    assert.equal(done.walBytesAfter, 0);
    assert.match(
      describeCheckpoint(done),
      /^checkpoint \(truncate\): WAL written back and reset, /,
    );
  });

  Deno.test(`${engine}: checkpoint waits its turn behind a transaction, and is refused inside one`, async () => {
    await using srv = await startServer({ engine });
    await using a = await link(srv);
    await using b = await link(srv);
    await a.request(Op.Exec, ["CREATE TABLE t(x)"]);
    await a.request(Op.Exec, ["BEGIN"]);
    await a.request(Op.Run, ["INSERT INTO t VALUES (1)", null, null]);
    await assert.rejects(a.request(Op.Checkpoint, ["passive"]), (err: Error & { code: string }) => {
      assert.equal(err.code, "BAD_REQUEST");
      assert.match(err.message, /^Cannot checkpoint inside a transaction: commit or roll back/);
      return true;
    });
    const waiting = b.request(Op.Checkpoint, ["truncate"]);
    assert.equal(await within(waiting, 100), "timeout");
    await a.request(Op.Exec, ["COMMIT"]);
    const r = await waiting;
    assert.equal(r.busy, false);
    assert.equal(r.walBytesAfter, 0);
    assert.deepEqual(rowsOf(srv.database, "SELECT x FROM t"), [[1]]);
  });

  Deno.test(`${engine}: vacuum in place shrinks the database and keeps every row`, async () => {
    await using srv = await startServer({ engine });
    await using a = await link(srv);
    await fill(a, 4000);
    await a.request(Op.Run, ["DELETE FROM t WHERE id % 2 = 0", null, null]);
    const r = await a.request(Op.Vacuum, [null]);
    assert.equal(r.into, null);
    assert.ok(r.pagesAfter < r.pagesBefore * 0.7, `${r.pagesBefore} -> ${r.pagesAfter}`);
    assert.equal(r.bytesAfter, Deno.statSync(srv.database).size);
    const [, rows] = await a.request(Op.Query, ["SELECT count(*), sum(id % 2) FROM t", null, null]);
    assert.deepEqual(rows, [[2000, 2000]]);
    const check = await a.request(Op.Integrity, []);
    assert.deepEqual({ ok: check.ok, problems: check.problems }, { ok: true, problems: [] });
    assert.equal(check.pages, r.pagesAfter);
  });

  Deno.test(`${engine}: vacuum into writes a compacted copy under --backup-dir only`, async () => {
    await using srv = await withCopies(engine);
    await using a = await link(srv);
    await fill(a, 3000);
    await a.request(Op.Run, ["DELETE FROM t WHERE id > 1000", null, null]);
    const r = await a.request(Op.Vacuum, ["compact.db"]);
    assert.equal(r.into, `${Deno.realPathSync(srv.copies)}/compact.db`);
    assert.ok(r.pagesAfter < r.pagesBefore / 2, `${r.pagesBefore} -> ${r.pagesAfter}`);
    assert.equal(r.bytesAfter, Deno.statSync(r.into!).size);
    assert.deepEqual(rowsOf(r.into!, "PRAGMA integrity_check"), [["ok"]]);
    assert.deepEqual(rowsOf(r.into!, "SELECT count(*) FROM t"), [[1000]]);
    assert.deepEqual([...Deno.readDirSync(srv.copies)].map((e) => e.name), ["compact.db"]);
  });

  Deno.test(`${engine}: integrity check answers ok on a snapshot while a transaction is open`, async () => {
    await using srv = await startServer({ engine });
    await using a = await link(srv);
    await using b = await link(srv);
    await fill(a, 1000);
    await a.request(Op.Exec, ["BEGIN"]);
    await a.request(Op.Run, ["INSERT INTO t(b) VALUES (x'03')", null, null]);
    const r = await b.request(Op.Integrity, []);
    assert.equal(r.ok, true);
    assert.deepEqual(r.problems, []);
    assert.ok(r.pages > 1);
    assert.equal(r.bytes, r.pages * 4096);
    await a.request(Op.Exec, ["COMMIT"]);
  });

  Deno.test(`${engine}: backup under concurrent writes is consistent and holds every acknowledged write`, async () => {
    await using srv = await withCopies(engine);
    await using a = await link(srv);
    await using w = await link(srv);
    await using watcher = await link(srv);
    // About 5 MB: the backup takes many steps of 256 pages, writes land between them.
    await fill(a, 20000);
    let acked = 0;
    let stop = false;
    const writer = (async () => {
      while (!stop) {
        const [, id] = await w.request(Op.Run, [
          "INSERT INTO t(b) VALUES (randomblob(500))",
          [],
          null,
        ]);
        acked = Number(id);
      }
    })();
    let r, ackedBefore, ackedAfter, sawProgress = false;
    try {
      // Writes are acknowledged before the backup begins (however loaded the machine).
      for (let i = 0; i < 500 && acked <= 20000; i++) await delay(10);
      ackedBefore = acked;
      assert.ok(ackedBefore > 20000, "writes were acknowledged before the backup began");
      const pending = a.request(Op.Backup, ["online.db"]);
      for (let i = 0; i < 50; i++) {
        const s = await watcher.request(Op.Stats, []);
        if (s.backups.length === 0) break;
        assert.match(s.backups[0].dest, /\/online\.db$/);
        if (s.backups[0].total > 0) sawProgress = true;
        await delay(2);
      }
      r = await pending;
      ackedAfter = acked;
    } finally {
      stop = true;
      await writer;
    }
    assert.ok(ackedAfter > ackedBefore, "writes went on while the backup ran");
    assert.match(r.dest, /\/copies\/online\.db$/);
    assert.equal(r.bytes, Deno.statSync(r.dest).size);
    assert.ok(r.pages > 1000, `${r.pages} pages`);
    assert.ok(sawProgress || engine === "node", "stats showed the backup in progress");
    assert.deepEqual(rowsOf(r.dest, "PRAGMA integrity_check"), [["ok"]]);
    const [[count, max]] = rowsOf(r.dest, "SELECT count(*), max(id) FROM t") as number[][];
    // Every write acknowledged before the backup began is in the copy, none is torn.
    assert.ok(max >= ackedBefore, `copy ends at ${max}, ${ackedBefore} were acknowledged`);
    assert.equal(count, max);
    assert.deepEqual([...Deno.readDirSync(srv.copies)].map((e) => e.name), ["online.db"]);
  });

  Deno.test(`${engine}: backup and vacuum into refuse destinations the server does not permit`, async () => {
    await using srv = await withCopies(engine);
    await using a = await link(srv);
    await a.request(Op.Exec, ["CREATE TABLE t(x)"]);
    const refused = async (req: Promise<unknown>, code: string, message: RegExp) => {
      await assert.rejects(req, (err: Error & { code: string }) => {
        assert.equal(err.code, code);
        assert.match(err.message, message);
        return true;
      });
    };
    await refused(
      a.request(Op.Backup, [`${srv.dir}/outside.db`]),
      "FORBIDDEN",
      /^Cannot back up to ".*\/outside\.db": the server permits destinations under ".*\/copies" only/,
    );
    await refused(a.request(Op.Backup, ["../escape.db"]), "FORBIDDEN", /permits destinations/);
    await refused(a.request(Op.Vacuum, [srv.database]), "FORBIDDEN", /permits destinations/);
    Deno.symlinkSync(srv.dir, `${srv.copies}/link`);
    await refused(a.request(Op.Backup, ["link/x.db"]), "FORBIDDEN", /permits destinations/);
    await a.request(Op.Backup, ["one.db"]);
    await refused(
      a.request(Op.Backup, ["one.db"]),
      "BAD_REQUEST",
      /^Cannot back up to ".*\/one\.db": the file exists; choose a new name \(nothing is overwritten\)$/,
    );
    await refused(a.request(Op.Backup, ["no/such/dir.db"]), "BAD_REQUEST", /directory cannot/);
    await refused(
      a.request(Op.Backup, [""]),
      "BAD_REQUEST",
      /^Expected the backup destination as a file path, got an empty string$/,
    );
    await refused(
      a.request(Op.Backup, ["x\0.db"]),
      "BAD_REQUEST",
      /^Expected the backup destination as a file path, got a string with a NUL character \(\\0\) at 1: no file name can hold one$/,
    );
    await refused(
      a.request(Op.Vacuum, [""]),
      "BAD_REQUEST",
      /^Expected the vacuum destination as a file path, got an empty string$/,
    );
    await refused(
      a.request(Op.Backup, [7 as unknown as string]),
      "BAD_REQUEST",
      /^Expected the backup destination as a file path, got number$/,
    );
    // The session goes on after each refusal.
    assert.deepEqual((await a.request(Op.Query, ["SELECT 1", null, null]))[1], [[1]]);
    assert.deepEqual([...Deno.readDirSync(srv.copies)].map((e) => e.name).sort(), [
      "link",
      "one.db",
    ]);
  });

  Deno.test(`${engine}: a destination the server cannot write fails with BAD_REQUEST naming it and why`, async () => {
    await using srv = await withCopies(engine);
    await using a = await link(srv);
    await a.request(Op.Exec, ["CREATE TABLE t(x)"]);
    const refused = async (op: typeof Op.Backup | typeof Op.Vacuum, dest: string, why: RegExp) => {
      await assert.rejects(a.request(op, [dest]), (err: Error & { code: string }) => {
        assert.equal(err.code, "BAD_REQUEST", err.message);
        assert.match(err.message, why);
        return true;
      });
    };
    // The name fits, but the partial copy beside it (17 more characters) or its journal (25
    // more) does not: a name of 248 bytes, and one of 231, which only the journal's overflows.
    for (const long of [`${"x".repeat(245)}.db`, `${"x".repeat(228)}.db`]) {
      const tooLong = new RegExp(
        `^Cannot (back up to|vacuum into) ".*/copies/${long.replace(".", "\\.")}": the file ` +
          "name is too long \\(the partial copy and its journal written beside it add 25 " +
          "characters\\): File name too long \\(os error 36\\)$",
      );
      await refused(Op.Backup, long, tooLong);
      await refused(Op.Vacuum, long, tooLong);
      assert.deepEqual([...Deno.readDirSync(srv.copies)].map((e) => e.name), [], "nothing left");
    }
    // A directory, not a file: it says so (and not "the file exists").
    await Deno.mkdir(`${srv.copies}/sub`);
    for (
      const [op, what, dest] of [
        [Op.Backup, "back up to", "sub"],
        [Op.Vacuum, "vacuum into", "sub/"],
        [Op.Backup, "back up to", "."],
      ] as const
    ) {
      await refused(
        op,
        dest,
        new RegExp(
          `^Cannot ${what} "(.*/copies${dest === "." ? "" : "/sub"})": it is a directory; ` +
            "name a new file in it " +
            `\\(for example "\\1/copy\\.db"\\)$`,
        ),
      );
    }
    if (Deno.uid() !== 0) { // root writes anywhere
      await Deno.mkdir(`${srv.copies}/ro`, { mode: 0o555 });
      const denied =
        /^Cannot back up to ".*\/copies\/ro\/x\.db": the server's user may not create files in ".*\/copies\/ro": Permission denied \(os error 13\)$/;
      await refused(Op.Backup, "ro/x.db", denied);
    }
    assert.deepEqual((await a.request(Op.Query, ["SELECT 1", null, null]))[1], [[1]]);
  });

  Deno.test({
    name:
      `${engine}: a copy that fails half way (a write error) names its destination and leaves no partial file or journal`,
    ignore: Deno.build.os !== "linux" || PRLIMIT === undefined,
    async fn() {
      await using dir = await tempDir();
      await Deno.mkdir(`${dir.path}/copies`);
      writeDatabase(`${dir.path}/db.db`, 8000); // about 8 MB
      // Files up to 2 MiB: the copy's writes past that fail (EFBIG).
      await using srv = await limitedServer(engine, dir.path, 2 * 1024 * 1024);
      await using a = await link(srv);
      const dest = `${Deno.realPathSync(dir.path)}/copies/x.db`;
      for (const [op, what] of [[Op.Backup, "back up to"], [Op.Vacuum, "vacuum into"]] as const) {
        await assert.rejects(a.request(op, ["x.db"]), (err: Error & { code: string }) => {
          assert.match(err.code, /^SQLITE_IOERR/, err.message);
          assert.equal(err.message, `Cannot ${what} "${dest}": disk I/O error`);
          return true;
        });
        assert.deepEqual([...Deno.readDirSync(`${dir.path}/copies`)].map((e) => e.name), []);
      }
      // The server goes on.
      assert.deepEqual((await a.request(Op.Query, ["SELECT count(*) FROM t", null, null]))[1], [
        [8000],
      ]);
    },
  });

  Deno.test(`${engine}: what a backup killed half way left is removed by the next backup to its destination`, async () => {
    await using dir = await tempDir();
    const copies = `${dir.path}/copies`;
    await Deno.mkdir(copies);
    writeDatabase(`${dir.path}/test.db`, 30000); // about 30 MB: the copy takes many steps
    const args = ["--engine", engine, "--backup-dir", copies];
    const first = await startServerProcess({ dir: dir.path, args });
    const [l] = await openLink(await resolveConnectOptions(first.connectOptions));
    const running = l.request(Op.Backup, ["x.db"]).catch((err) => err);
    // Killed once the copy is being written (its journal exists).
    const names = () => [...Deno.readDirSync(copies)].map((e) => e.name).sort();
    for (let i = 0; i < 5000 && !names().some((n) => n.endsWith(".partial-journal")); i++) {
      await delay(1);
    }
    await first.kill();
    l.fail(new Error("killed"));
    await l.ended;
    assert.ok((await running) instanceof Error);
    const left = names();
    assert.ok(left.some((n) => /^x\.db\.[0-9a-f]{8}\.partial$/.test(n)), left.join(" "));
    assert.ok(left.every((n) => /^x\.db\.[0-9a-f]{8}\.partial(-journal)?$/.test(n)), left.join());
    await using again = await startServerProcess({ dir: dir.path, args });
    await using b = await link(again);
    // A partial copy of another destination, and a user's file like one, are not touched.
    await Deno.writeTextFile(`${copies}/y.db.0123abcd.partial`, "another destination's");
    await Deno.writeTextFile(`${copies}/x.db.partial`, "mine");
    const r = await b.request(Op.Backup, ["x.db"]);
    assert.deepEqual(rowsOf(r.dest, "SELECT count(*) FROM t"), [[30000]]);
    assert.deepEqual(names(), ["x.db", "x.db.partial", "y.db.0123abcd.partial"]);
  });

  Deno.test(`${engine}: a partial copy that another program is writing is left alone`, async () => {
    await using srv = await withCopies(engine);
    await using a = await link(srv);
    await fill(a, 100);
    // Another server's copy in progress: it holds the write lock of its partial copy.
    const theirs = `${srv.copies}/x.db.0123abcd.partial`;
    const holder = await holdWriteLock(theirs);
    try {
      await a.request(Op.Backup, ["x.db"]);
      assert.deepEqual([...Deno.readDirSync(srv.copies)].map((e) => e.name).sort(), [
        "x.db",
        "x.db.0123abcd.partial",
        "x.db.0123abcd.partial-journal",
      ]);
    } finally {
      await holder.release();
    }
    // Once nobody writes it, the next backup to that destination removes it.
    await Deno.remove(`${srv.copies}/x.db`);
    await a.request(Op.Backup, ["x.db"]);
    assert.deepEqual([...Deno.readDirSync(srv.copies)].map((e) => e.name), ["x.db"]);
  });

  for (const kind of ["backup", "vacuum into"] as const) {
    Deno.test(`${engine}: two ${kind} requests to one destination at once: the second is refused, the first completes, a user's DEST.partial stays`, async () => {
      await using srv = await withCopies(engine);
      await using a = await link(srv);
      await using b = await link(srv);
      await fill(a, 20000); // about 5 MB: the first copy is still running when the second asks
      const mine = `${srv.copies}/same.db.partial`;
      await Deno.writeTextFile(mine, "not the server's");
      const ask = (l: Link): Promise<unknown> =>
        kind === "backup" ? l.request(Op.Backup, ["same.db"]) : l.request(Op.Vacuum, ["same.db"]);
      const [one, two] = await Promise.allSettled([ask(a), ask(b)]);
      assert.equal(one.status, "fulfilled", String((one as PromiseRejectedResult).reason));
      assert.equal(two.status, "rejected");
      const err = (two as PromiseRejectedResult).reason as Error & { code: string };
      assert.equal(err.code, "BAD_REQUEST");
      assert.match(
        err.message,
        new RegExp(
          `^Cannot ${
            kind === "backup" ? "back up to" : kind
          } ".*/same\\.db": a backup or vacuum into it is in progress$`,
        ),
      );
      const copy = `${Deno.realPathSync(srv.copies)}/same.db`;
      assert.deepEqual(rowsOf(copy, "PRAGMA integrity_check"), [["ok"]]);
      assert.deepEqual(rowsOf(copy, "SELECT count(*) FROM t"), [[20000]]);
      assert.equal(await Deno.readTextFile(mine), "not the server's");
      assert.deepEqual([...Deno.readDirSync(srv.copies)].map((e) => e.name).sort(), [
        "same.db",
        "same.db.partial",
      ]);
      // Once it is done the name is free again for another destination.
      assert.ok(await ask(a).then(() => false, (e) => /the file exists/.test(e.message)));
    });
  }

  Deno.test(`${engine}: a --readonly server refuses checkpoint and vacuum with READONLY`, async () => {
    await using rw = await startServer({ engine });
    await using w = await link(rw);
    await fill(w, 100);
    await rw.server.shutdown();
    await using ro = await startServer({ engine, database: rw.database, readonly: true });
    await using r = await link(ro);
    for (
      const [req, what] of [
        [r.request(Op.Checkpoint, ["passive"]), "checkpoint"],
        [r.request(Op.Checkpoint, ["truncate"]), "checkpoint"],
        [r.request(Op.Vacuum, [null]), "vacuum"],
      ] as const
    ) {
      await assert.rejects(req, (err: Error & { code: string }) => {
        assert.equal(err.code, "READONLY");
        assert.equal(err.message, `Cannot ${what}: the server runs read-only (--readonly)`);
        return true;
      });
    }
    assert.equal((await r.request(Op.Integrity, [])).ok, true);
  });

  Deno.test(`${engine}: without --backup-dir the server writes no files; :memory: refuses maintenance`, async () => {
    await using srv = await startServer({ engine });
    await using a = await link(srv);
    await assert.rejects(a.request(Op.Backup, ["x.db"]), (err: Error & { code: string }) => {
      assert.equal(err.code, "FORBIDDEN");
      assert.match(
        err.message,
        /this server writes no files for clients; start it with --backup-dir/,
      );
      return true;
    });
    await assert.rejects(a.request(Op.Vacuum, ["x.db"]), /--backup-dir/);
    await using mem = await startServer({ engine, database: ":memory:" });
    await using m = await link(mem);
    for (const req of [m.request(Op.Checkpoint, ["passive"]), m.request(Op.Integrity, [])]) {
      await assert.rejects(req, /the database is in memory/);
    }
  });
}

Deno.test("under deno task serve's permissions: maintenance works; vacuum on node says why it cannot", async () => {
  for (const engine of ENGINES) {
    const dir = await Deno.makeTempDir({ prefix: "netsqlite-test-" });
    await Deno.mkdir(`${dir}/copies`);
    await using srv = await startServerProcess({
      dir,
      denoFlags: SERVE_TASK_FLAGS,
      args: ["--engine", engine, "--backup-dir", `${dir}/copies`],
    });
    const [l] = await openLink(await resolveConnectOptions(srv.connectOptions));
    try {
      await fill(l, 2000);
      const ckpt = await l.request(Op.Checkpoint, ["truncate"]);
      assert.equal(ckpt.walBytesAfter, 0, engine);
      assert.equal((await l.request(Op.Integrity, [])).ok, true);
      const copy = await l.request(Op.Backup, ["b.db"]);
      assert.deepEqual(rowsOf(copy.dest, "SELECT count(*) FROM t"), [[2000]]);
      if (engine === "ffi") {
        const v = await l.request(Op.Vacuum, [null]);
        assert.ok(v.pagesAfter > 0);
        const into = await l.request(Op.Vacuum, ["v.db"]);
        assert.deepEqual(rowsOf(into.into!, "SELECT count(*) FROM t"), [[2000]]);
      } else {
        for (const into of [null, "v.db"]) {
          await assert.rejects(l.request(Op.Vacuum, [into]), (err: Error & { code: string }) => {
            assert.equal(err.code, "SQLITE_ERROR");
            // The destination is named (`Cannot vacuum into "DEST": <reason>`).
            const what = into === null
              ? "vacuum"
              : `vacuum into "${RegExp.escape(`${Deno.realPathSync(dir)}/copies/${into}`)}"`;
            assert.match(
              err.message,
              new RegExp(
                `^Cannot ${what}: too many attached databases - max 0: node:sqlite under Deno ` +
                  "permits no attached database .* \\(-A\\)",
              ),
            );
            return true;
          });
        }
        const path = (srv.connectOptions as { path: string }).path;
        const run = await cli(["vacuum", "--into", "w.db", "--socket", path]);
        assert.equal(run.code, 1);
        assert.match(
          run.stderr,
          /^netsqlite vacuum: SQLITE_ERROR: Cannot vacuum into ".*\/copies\/w\.db": too many attached databases - max 0: /,
        );
        assert.deepEqual([...Deno.readDirSync(`${dir}/copies`)].map((e) => e.name), ["b.db"]);
      }
    } finally {
      l.fail(new Error("test done"));
      await l.ended;
    }
    await srv[Symbol.asyncDispose]();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ffi: reads go on during an in-place vacuum; writes wait for it", async () => {
  await using srv = await startServer({ engine: "ffi" });
  await using a = await link(srv);
  await using b = await link(srv);
  await using c = await link(srv);
  await fill(a, 60000); // about 14 MB: VACUUM takes a while
  await a.request(Op.Run, ["DELETE FROM t WHERE id % 3 = 0", null, null]);
  const order: string[] = [];
  const vacuum = a.request(Op.Vacuum, [null]).then((r) => {
    order.push("vacuum");
    return r;
  });
  await delay(1);
  const read = b.request(Op.Query, ["SELECT count(*) FROM t", null, null]).then((r) => {
    order.push("read");
    return r;
  });
  const write = c.request(Op.Run, ["INSERT INTO t(b) VALUES (x'04')", null, null]).then((r) => {
    order.push("write");
    return r;
  });
  const [v, [, rows]] = await Promise.all([vacuum, read, write]);
  assert.deepEqual(rows, [[40000]]);
  assert.ok(v.ms > 5, `vacuum took ${v.ms} ms`);
  assert.deepEqual(order, ["read", "vacuum", "write"]);
  assert.deepEqual((await b.request(Op.Query, ["SELECT count(*) FROM t", null, null]))[1], [
    [40001],
  ]);
});
