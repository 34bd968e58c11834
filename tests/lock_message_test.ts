/**
 * Messages when another program (not a netsqlite client: node:sqlite in
 * this test's own process, the server in a process of its own) holds a
 * lock on the database file: a start that cannot open the database says
 * so, naming `--busy-timeout`; a write that waited for the writer while
 * its holder waited for that lock says that the holder is waiting too.
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { connect, ErrorCode, SqliteError } from "../mod.ts";
import { WriterQueue } from "../engine/writer_queue.ts";
import { delay, startServerProcess } from "./_helpers.ts";

const SERVER_TS = fileURLToPath(new URL("../server.ts", import.meta.url));
const ffi = (Deno.env.get("NETSQLITE_ENGINE") ?? "ffi") !== "node";

/** The error `p` rejects with (it must reject with a `SqliteError`). */
async function rejection(p: Promise<unknown>): Promise<SqliteError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof SqliteError) return err;
    throw err;
  }
  throw new Error("expected a rejection");
}

Deno.test("a start while another program holds an exclusive lock on the database names the lock and --busy-timeout", async () => {
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-lockmsg-" });
  try {
    const database = `${dir}/test.db`;
    const other = new DatabaseSync(database);
    other.exec("CREATE TABLE t (x)");
    other.exec("BEGIN EXCLUSIVE");
    other.exec("INSERT INTO t VALUES (1)");
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        SERVER_TS,
        "--db",
        database,
        "--socket",
        `${dir}/test.sock`,
        "--busy-timeout",
        "200",
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.notEqual(out.code, 0, stderr);
    assert.match(stderr, /database is locked: another process holds a lock on the database file/);
    assert.match(stderr, /the server waited --busy-timeout 200 ms for it/);
    assert.match(stderr, /close that program and start again, or raise --busy-timeout/);
    other.exec("COMMIT");
    other.close();
    // Released: the same start succeeds, and finds the other program's row.
    await using srv = await startServerProcess({
      dir,
      database,
      args: ["--busy-timeout", "200"],
    });
    const db = await srv.client();
    try {
      assert.deepEqual(await db.values("SELECT x FROM t"), [[1]]);
    } finally {
      await db.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("BUSY_TIMEOUT behind a session waiting for another program's lock on the file says so", async () => {
  // B's wait must end while A's write waits for the other program's lock:
  // A's wait starts ~300 ms after B's, and may start late on a loaded machine.
  const busyTimeout = 3000;
  await using srv = await startServerProcess({ args: ["--busy-timeout", String(busyTimeout)] });
  const a = await srv.client();
  const b = await connect({ ...srv.connectOptions, max: 1 });
  let other: DatabaseSync | null = null;
  try {
    await a.exec("CREATE TABLE t (x)");
    // A holds the writer (a transaction that has not touched the file yet).
    await a.run("BEGIN");
    // B waits for the writer from now: its busy timeout ends before A's wait for the lock.
    const bWrite = rejection(b.run("INSERT INTO t VALUES ('b')"));
    await delay(300);
    // Another program takes the file's write lock.
    other = new DatabaseSync(srv.database);
    other.exec("BEGIN EXCLUSIVE");
    other.exec("INSERT INTO t VALUES ('other')");
    // A's write waits for that lock (FFI: in the background, up to --busy-timeout).
    const aWrite = a.run("INSERT INTO t VALUES ('a')").then(() => null, (err) => err);
    const err = await bWrite;
    assert.equal(err.code, ErrorCode.BusyTimeout, err.message);
    assert.match(
      err.message,
      new RegExp(`^Write waited ${busyTimeout} ms for the writer, held by session \\d+: `),
    );
    if (ffi) {
      assert.match(
        err.message,
        /session \d+ is itself waiting for a lock on the database file that another process holds/,
      );
    } else {
      // node:sqlite waits for the lock on the server's thread: by the time B's
      // wait ends, A's write failed (SQLITE_BUSY), and A just holds the writer.
      assert.doesNotMatch(err.message, /waiting for a lock/);
    }
    other.exec("COMMIT");
    other.close();
    other = null;
    const aErr = await aWrite;
    if (aErr !== null) assert.match(String(aErr), /database is locked/);
    await a.run("ROLLBACK");
    // With the lock gone, B writes.
    await b.run("INSERT INTO t VALUES ('b')");
    assert.deepEqual(await b.values("SELECT x FROM t WHERE x <> 'a' ORDER BY x"), [
      ["b"],
      ["other"],
    ]);
  } finally {
    if (other?.isTransaction) other.exec("ROLLBACK");
    other?.close();
    await a.close();
    await b.close();
  }
});

Deno.test("WriterQueue: BUSY_TIMEOUT says what is known of the holder's wait for another program's lock", async () => {
  const waiter = (id: number) => ({ id, wake() {} });
  for (
    const [known, says] of [
      [true, /held by session 1: busy timeout .*; session 1 is itself waiting for a lock on the/],
      [
        null,
        /held by session 1: .*keep transactions short \(session 1's statement is still running: it may itself be waiting for a lock on the database file held by another process\)$/,
      ],
      [
        false,
        /held by session 1: busy timeout \(--busy-timeout\) exceeded; retry, or keep transactions short$/,
      ],
    ] as const
  ) {
    const q = new WriterQueue<{ id: number; wake(): void }>(10, 0, () => {}, 0, () => known);
    const [a, b] = [waiter(1), waiter(2)];
    assert.equal(q.take(a, true), true);
    assert.equal(q.take(b, false), false);
    // Past the 10 ms busy timeout: its timer gives a grace when it fires late (a loaded
    // machine), so the wait is polled rather than slept once.
    let refused: unknown = null;
    for (const end = performance.now() + 5_000; refused === null && performance.now() < end;) {
      await delay(10);
      try {
        assert.equal(q.take(b, false), false);
      } catch (err) {
        refused = err;
      }
    }
    assert.throws(() => {
      throw refused;
    }, { code: "BUSY_TIMEOUT", message: says });
    q.close();
  }
});

Deno.test("BUSY_TIMEOUT behind a session running a long SELECT while another program holds the write lock does not say the session waits for that lock", async () => {
  const busyTimeout = 800;
  await using srv = await startServerProcess({ args: ["--busy-timeout", String(busyTimeout)] });
  const a = await srv.client();
  const b = await connect({ ...srv.connectOptions, max: 1 });
  let other: DatabaseSync | null = null;
  try {
    await a.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1)");
    // A holds the writer, and reads: its transaction waits for no lock.
    await a.run("BEGIN");
    assert.deepEqual(await a.values("SELECT count(*) FROM t"), [[1]]);
    // Another program takes the file's write lock (A only read, so it may).
    other = new DatabaseSync(srv.database);
    other.exec("BEGIN IMMEDIATE");
    other.exec("INSERT INTO t VALUES ('other')");
    // A runs a long SELECT (about 3 s) in its transaction, on the writer.
    let selecting = true;
    const start = performance.now();
    const longSelect = a.values(
      "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 20000000) " +
        "SELECT count(*) FROM c",
    ).finally(() => selecting = false);
    await delay(100);
    // B waits for the writer behind A, and times out while A's SELECT runs.
    const err = await rejection(b.run("INSERT INTO t VALUES ('b')"));
    const still = selecting;
    assert.deepEqual(await longSelect, [[20000000]]);
    assert.equal(err.code, ErrorCode.BusyTimeout, err.message);
    assert.match(err.message, /^Write waited 800 ms for the writer, held by session \d+: /);
    assert.doesNotMatch(err.message, /waiting for a lock/);
    if (ffi) {
      // (The node engine runs the SELECT on its one thread: B's wait ends after it.)
      assert.ok(still, `A's SELECT ended before B timed out (${performance.now() - start} ms)`);
    }
    await a.run("ROLLBACK");
  } finally {
    if (other?.isTransaction) other.exec("ROLLBACK");
    other?.close();
    await a.close();
    await b.close();
  }
});
