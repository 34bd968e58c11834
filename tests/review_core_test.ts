/**
 * A review of the engine's core (writer queue, group commit, sessions):
 * interleavings of timeouts, cancels, disconnects and failing commits with
 * the requests of other clients, each met through a real server and real
 * clients, on both engines.
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { type Client, SqliteError } from "../mod.ts";
import { delay, startServer } from "./_helpers.ts";
import { canMount, fill, mountedDisk } from "./_tmpfs.ts";
import { Wire } from "./_wire.ts";
import { Op, Status } from "../protocol/messages.ts";

/** How `p` settled: its value, or the SqliteError it rejected with. */
async function settled<T>(p: Promise<T>): Promise<{ ok: T } | { err: SqliteError }> {
  try {
    return { ok: await p };
  } catch (err) {
    assert.ok(err instanceof SqliteError, `expected a SqliteError, got ${err}`);
    return { err };
  }
}

async function ids(db: Client): Promise<number[]> {
  return (await db.values<[number]>("SELECT id FROM t ORDER BY id")).map((r) => r[0]);
}

Deno.test({
  name: "A grouped write whose group a waiter woken behind it commits at once, and whose " +
    "COMMIT fails (full device), is told it failed, not that it was written",
  ignore: !canMount,
  async fn() {
    await using disk = await mountedDisk("16m");
    const database = `${disk.disk}/a.db`;
    const made = new DatabaseSync(database);
    made.exec("PRAGMA journal_mode = WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, v)");
    made.close();
    // synchronous=normal: a small group's COMMIT runs inline (on node:sqlite
    // every COMMIT does, whatever the setting).
    await using srv = await startServer({ database, synchronous: "normal" });
    const [holder, a, c] = await Promise.all([0, 1, 2].map(() => srv.client()));
    try {
      const grouped = "INSERT INTO t VALUES (?, 'a')";
      // Known fast (it ran within the inline budget), so that it joins groups.
      for (let id = 1; id <= 3; id++) await a.run(grouped, [id]);
      await a.run("DELETE FROM t WHERE id > 1");
      await fill(disk.disk);
      for (let round = 0; round < 5; round++) {
        // A transaction holds the writer; A's grouped write waits for it, and
        // C's BEGIN (which needs the group committed first) waits behind A.
        await holder.exec("BEGIN IMMEDIATE");
        const write = settled(a.run(grouped, [100 + round]));
        await delay(50);
        const begin = settled(c.exec("BEGIN"));
        await delay(50);
        // The holder ends: A's write runs in a group, C is woken right after
        // and commits that group at once; its COMMIT needs room the device lacks.
        await holder.exec("ROLLBACK");
        const [w, b] = await Promise.all([write, begin]);
        if ("ok" in b) await c.exec("ROLLBACK");
        const stored = (await ids(holder)).includes(100 + round);
        if ("ok" in w) {
          assert.ok(
            stored,
            `round ${round}: A was told its write committed, yet row ` +
              `${100 + round} is not in the database`,
          );
        } else {
          assert.equal(stored, false, `round ${round}: ${w.err.message}`);
          assert.equal(w.err.code, "SQLITE_FULL", w.err.message);
          assert.notEqual(w.err.mayHaveRun, true, w.err.message);
        }
      }
    } finally {
      for (const x of [holder, a, c]) await x.close();
    }
  },
});

const FFI = Deno.env.get("NETSQLITE_ENGINE") !== "node";

/** A write that runs for seconds (FFI: in the background, stoppable). */
const SLOW_WRITE = "INSERT INTO big WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL " +
  "SELECT i + 1 FROM c WHERE i < 100000000) SELECT i FROM c";

/** A read that runs for a while (FFI: in the background). */
const SLOW_READ = "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c " +
  "WHERE i < 2000000) SELECT count(*) FROM c";

function isError(status: number): boolean {
  return (status & Status.Error) !== 0;
}

/** `SELECT count(*) FROM big`. */
async function bigRows(db: Client): Promise<number> {
  return (await db.values<[number]>("SELECT count(*) FROM big"))[0][0];
}

Deno.test("Cancel of a write waiting for the writer: ABORTED, and it never runs once the writer is free", async () => {
  await using srv = await startServer({ busyTimeout: 10_000 });
  await using holder = await srv.client();
  await holder.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)");
  await using w = await Wire.open(srv.connectOptions.path!);
  await holder.exec("BEGIN IMMEDIATE");
  const id = await w.send(Op.Run, "INSERT INTO t VALUES (1)", null, null);
  await delay(150);
  await w.cancel(id);
  const [got, status, body] = await w.reply();
  assert.equal(got, id);
  assert.ok(isError(status));
  assert.equal((body as { code: string }).code, "ABORTED", JSON.stringify(body));
  await holder.exec("COMMIT");
  // The connection goes on, and the cancelled write is not there.
  await w.ok("INSERT INTO t VALUES (2)");
  assert.deepEqual(await ids(holder), [2]);
});

Deno.test("A client gone while its write waits for the writer: the write never runs, the writer goes to the next", async () => {
  await using srv = await startServer({ busyTimeout: 10_000 });
  await using holder = await srv.client();
  await using other = await srv.client();
  await holder.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)");
  await holder.exec("BEGIN IMMEDIATE");
  {
    await using w = await Wire.open(srv.connectOptions.path!);
    await w.send(Op.Run, "INSERT INTO t VALUES (1)", null, null);
    // Pipelined behind it: a write that would commit by itself.
    await w.send(Op.Exec, "INSERT INTO t VALUES (3)");
    await delay(100);
  } // closed both ways
  const next = other.run("INSERT INTO t VALUES (2)");
  await delay(300);
  await holder.exec("COMMIT");
  await next;
  assert.deepEqual(await ids(holder), [2]);
});

Deno.test({
  name:
    "A client gone while its autocommit write runs in the background: stopped, nothing written, the writer free at once [ffi]",
  ignore: !FFI,
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    await db.exec("CREATE TABLE big (i)");
    {
      await using w = await Wire.open(srv.connectOptions.path!);
      await w.send(Op.Run, SLOW_WRITE, null, null);
      await delay(300);
    }
    const start = performance.now();
    await db.run("INSERT INTO big VALUES (-1)", [], { timeout: 5000 });
    assert.ok(performance.now() - start < 3000, `waited ${performance.now() - start} ms`);
    assert.equal(await bigRows(db), 1);
  },
});

Deno.test({
  name: "Cancel of an autocommit write running in the background: ABORTED, nothing written [ffi]",
  ignore: !FFI,
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    await db.exec("CREATE TABLE big (i)");
    await using w = await Wire.open(srv.connectOptions.path!);
    const [id, after] = await w.sendAll([Op.Run, SLOW_WRITE, null, null], [
      Op.Query,
      "SELECT count(*) FROM big",
      null,
      null,
    ]);
    await delay(300);
    await w.cancel(id);
    const [got, status, body] = await w.reply();
    assert.equal(got, id);
    assert.ok(isError(status));
    assert.equal((body as { code: string }).code, "ABORTED", JSON.stringify(body));
    const [got2, status2, body2] = await w.reply();
    assert.equal(got2, after);
    assert.ok(!isError(status2), JSON.stringify(body2));
    assert.deepEqual((body2 as [string[], number[][]])[1], [[0]]);
    assert.equal(await bigRows(db), 0);
  },
});

Deno.test("A statement timeout on a recursive autocommit write: STATEMENT_TIMEOUT, nothing written, the connection goes on", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await db.exec("CREATE TABLE big (i)");
  // (node:sqlite runs it to its end, then undoes it: a shorter one there.)
  const sql = FFI ? SLOW_WRITE : SLOW_WRITE.replace("< 100000000", "< 3000000");
  const r = await settled(db.run(sql, [], { timeout: 200 }));
  assert.ok("err" in r);
  assert.equal(r.err.code, "STATEMENT_TIMEOUT", r.err.message);
  assert.equal(await bigRows(db), 0);
  await db.run("INSERT INTO big VALUES (1)");
  assert.equal(await bigRows(db), 1);
});

Deno.test("Pipelined requests are answered in request order when one runs in the background and the next does not, and a read behind its own write sees it", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)");
  await using w = await Wire.open(srv.connectOptions.path!);
  for (let round = 0; round < 3; round++) {
    const sent = await w.sendAll(
      [Op.Query, SLOW_READ, null, null],
      [Op.Query, "SELECT 1", null, null],
      [Op.Run, "INSERT INTO t VALUES (?)", [round], null],
      [Op.Query, "SELECT count(*) FROM t WHERE id = ?", [round], null],
      [Op.Query, SLOW_READ, null, null],
      [Op.Run, "INSERT INTO t VALUES (?)", [100 + round], null],
      [Op.Query, "SELECT count(*) FROM t WHERE id = ?", [100 + round], null],
    );
    const got: [number, number, unknown][] = [];
    for (let i = 0; i < sent.length; i++) got.push(await w.reply());
    assert.deepEqual(got.map((g) => g[0]), sent, "replies in request order");
    for (const [, status, body] of got) assert.ok(!isError(status), JSON.stringify(body));
    assert.deepEqual((got[3][2] as [string[], number[][]])[1], [[1]]);
    assert.deepEqual((got[6][2] as [string[], number[][]])[1], [[1]]);
  }
});

Deno.test("A read pipelined behind its own write that waits for the writer reads that write", async () => {
  await using srv = await startServer({ busyTimeout: 10_000 });
  await using holder = await srv.client();
  await holder.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)");
  await using w = await Wire.open(srv.connectOptions.path!);
  await holder.exec("BEGIN IMMEDIATE");
  const sent = await w.sendAll(
    [Op.Run, "INSERT INTO t VALUES (1)", null, null],
    [Op.Query, "SELECT count(*) FROM t", null, null],
  );
  await delay(100);
  await holder.exec("COMMIT");
  const a = await w.reply();
  const b = await w.reply();
  assert.deepEqual([a[0], b[0]], sent);
  assert.ok(!isError(a[1]), JSON.stringify(a[2]));
  assert.deepEqual((b[2] as [string[], number[][]])[1], [[1]]);
});

Deno.test("Read-your-writes across connections: once a write's promise resolved, a read on another connection sees it (grouped writes, other writers beside)", async () => {
  await using srv = await startServer({ synchronous: "full" });
  const clients = await Promise.all([0, 1, 2, 3].map(() => srv.client()));
  try {
    const [a, b, c, d] = clients;
    await a.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, who)");
    let stop = false;
    let n = 1_000_000;
    // Other writers keep groups forming and COMMITs in the background.
    const noise = Promise.all([c, d].map(async (x) => {
      while (!stop) await x.run("INSERT INTO t VALUES (?, 'noise')", [n++]);
    }));
    try {
      for (let i = 0; i < 300; i++) {
        await a.run("INSERT INTO t VALUES (?, 'a')", [i]);
        const seen = await b.values("SELECT count(*) FROM t WHERE id = ?", [i]);
        assert.deepEqual(seen, [[1]], `write ${i} acknowledged but not seen`);
      }
    } finally {
      stop = true;
      await noise;
    }
  } finally {
    for (const x of clients) await x.close();
  }
});

Deno.test({
  name:
    "The idle lease does not end a transaction whose statement runs in the background past it; it ends one idle after [ffi]",
  ignore: !FFI,
  async fn() {
    await using srv = await startServer({ txIdleTimeout: 300, busyTimeout: 10_000 });
    await using db = await srv.client();
    await using other = await srv.client();
    await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)");
    await db.exec("BEGIN");
    await db.run("INSERT INTO t VALUES (1)");
    await db.values(
      "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 6000000) " +
        "SELECT count(*) FROM c",
    );
    await db.run("INSERT INTO t VALUES (2)");
    await db.exec("COMMIT");
    assert.deepEqual(await ids(other), [1, 2]);
    await db.exec("BEGIN");
    await db.run("INSERT INTO t VALUES (3)");
    await delay(700);
    await other.run("INSERT INTO t VALUES (4)");
    const late = await settled(db.run("INSERT INTO t VALUES (5)"));
    assert.ok("err" in late);
    assert.equal(late.err.code, "TX_TIMEOUT", late.err.message);
    await db.exec("ROLLBACK");
    assert.deepEqual(await ids(other), [1, 2, 4]);
  },
});

Deno.test({
  name:
    "--tx-timeout reached while the transaction's statement runs in the background stops it: TX_TIMEOUT, rolled back, the waiting writer goes on [ffi]",
  ignore: !FFI,
  async fn() {
    await using srv = await startServer({ txTimeout: 400, busyTimeout: 10_000 });
    await using db = await srv.client();
    await using other = await srv.client();
    await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY); CREATE TABLE big (i)");
    await db.exec("BEGIN");
    await db.run("INSERT INTO t VALUES (1)");
    const waiting = other.run("INSERT INTO t VALUES (2)");
    const start = performance.now();
    const r = await settled(db.run(SLOW_WRITE));
    assert.ok(performance.now() - start < 5000, `stopped after ${performance.now() - start} ms`);
    assert.ok("err" in r);
    assert.equal(r.err.code, "TX_TIMEOUT", r.err.message);
    await waiting;
    const next = await settled(db.run("INSERT INTO t VALUES (3)"));
    assert.ok("err" in next);
    assert.equal(next.err.code, "TX_TIMEOUT", next.err.message);
    await db.exec("ROLLBACK");
    assert.deepEqual(await ids(other), [2]);
    assert.equal(await bigRows(other), 0);
  },
});

Deno.test({
  name: "A client gone while its autocommit write with a CASE ... END runs in the background: " +
    "stopped as any other (END there ends no transaction) [ffi]",
  ignore: !FFI,
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    await db.exec("CREATE TABLE big (i)");
    {
      await using w = await Wire.open(srv.connectOptions.path!);
      await w.send(
        Op.Run,
        SLOW_WRITE.replace(
          "SELECT i FROM c",
          "SELECT CASE WHEN i % 2 = 0 THEN i ELSE -i END FROM c",
        ),
        null,
        null,
      );
      await delay(300);
    }
    const start = performance.now();
    await db.run("INSERT INTO big VALUES (-1)", [], { timeout: 5000 });
    assert.ok(performance.now() - start < 3000, `waited ${performance.now() - start} ms`);
    assert.equal(await bigRows(db), 1);
  },
});

Deno.test("A client gone while its write with a CASE ... END waits for the writer: the write never runs", async () => {
  await using srv = await startServer({ busyTimeout: 10_000 });
  await using holder = await srv.client();
  await holder.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)");
  await holder.exec("BEGIN IMMEDIATE");
  {
    await using w = await Wire.open(srv.connectOptions.path!);
    await w.send(Op.Run, "INSERT INTO t VALUES (CASE WHEN 1 THEN 7 END)", null, null);
    await delay(100);
  }
  await delay(300);
  await holder.exec("COMMIT");
  await delay(100);
  assert.deepEqual(await ids(holder), []);
});

Deno.test({
  name: "A client gone inside its transaction during a long statement with a CASE ... END: " +
    "stopped and rolled back at once, while a queued COMMIT still keeps it running [ffi]",
  ignore: !FFI,
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    await db.exec("CREATE TABLE big (i); CREATE TABLE t (id INTEGER PRIMARY KEY)");
    const withCase = SLOW_WRITE.replace(
      "SELECT i FROM c",
      "SELECT CASE WHEN i % 2 = 0 THEN i ELSE -i END FROM c",
    );
    for (const commit of [false, true]) {
      // (Followed by a COMMIT it runs to its end: a shorter one then.)
      const slow = commit ? withCase.replace("< 100000000", "< 3000000") : withCase;
      {
        await using w = await Wire.open(srv.connectOptions.path!);
        await w.ok("BEGIN");
        await w.ok("INSERT INTO t VALUES (1)");
        await w.send(Op.Run, slow, null, null);
        if (commit) await w.send(Op.Exec, "COMMIT");
        await delay(200);
      }
      const start = performance.now();
      await db.run("INSERT INTO t VALUES (2)", [], { timeout: 60_000 });
      const waited = performance.now() - start;
      if (commit) {
        // Its COMMIT may still end the transaction: the statement ran to its end, and committed.
        assert.deepEqual(await ids(db), [1, 2]);
        assert.equal(await bigRows(db), 3_000_000);
      } else {
        assert.ok(waited < 1000, `waited ${waited} ms`);
        assert.deepEqual(await ids(db), [2]);
        assert.equal(await bigRows(db), 0);
      }
      await db.exec("DELETE FROM t; DELETE FROM big");
    }
  },
});

Deno.test({
  name: "--tx-timeout reached while the transaction's COMMIT runs in the background, which " +
    "completes: the client is told the truth (committed, and no transaction open after; or " +
    "TX_TIMEOUT and nothing of it written) [ffi]",
  ignore: !FFI,
  async fn() {
    const txTimeout = 600;
    await using srv = await startServer({ txTimeout, synchronous: "full", busyTimeout: 10_000 });
    await using db = await srv.client();
    await using other = await srv.client();
    await db.exec("CREATE TABLE big (round, v); CREATE TABLE t (id INTEGER PRIMARY KEY)");
    // 20 MB: the COMMIT starts SQLite's automatic checkpoint, which copies and syncs them.
    const fill = "INSERT INTO big WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 " +
      "FROM c WHERE i < 5000) SELECT ?, zeroblob(4000) FROM c";
    const outcomes: string[] = [];
    for (let round = 0; round < 12; round++) {
      await db.exec("BEGIN");
      const began = performance.now();
      const filled = await settled(db.run(fill, [round]));
      if ("err" in filled) {
        assert.equal(filled.err.code, "TX_TIMEOUT", filled.err.message);
        await db.exec("ROLLBACK");
        outcomes.push("fill late");
        continue;
      }
      // COMMIT sent from 120 ms before the deadline to just after it.
      const at = began + txTimeout - 120 + round * 12;
      if (at > performance.now()) await delay(at - performance.now());
      const commit = await settled(db.exec("COMMIT"));
      const count = async () =>
        (await other.values<[number]>("SELECT count(*) FROM big WHERE round = ?", [round]))[0][0];
      if ("ok" in commit) {
        outcomes.push("committed");
        assert.equal(
          await count(),
          5000,
          `round ${round}: COMMIT succeeded, yet its rows are not there`,
        );
        // The connection writes on, in autocommit.
        const next = await settled(db.run("INSERT INTO t VALUES (?)", [round]));
        assert.ok(
          "ok" in next,
          `round ${round} (${outcomes}): after a successful COMMIT: ` +
            ("err" in next ? `${next.err.code}: ${next.err.message}` : ""),
        );
        assert.equal(db.inTransaction, false, `round ${round}: a transaction open after COMMIT`);
      } else {
        const n = await count();
        outcomes.push(commit.err.code);
        assert.equal(commit.err.code, "TX_TIMEOUT", commit.err.message);
        assert.equal(n, 0, `round ${round}: told TX_TIMEOUT, yet the rows are there`);
        await db.exec("ROLLBACK");
      }
      await db.run("DELETE FROM big");
    }
  },
});

Deno.test("A read that waited for the writer (TEMP tables) and then ran on a reader leaves the writer's line: the connection's next write waits its full busy timeout", async () => {
  await using srv = await startServer({ busyTimeout: 600, txIdleTimeout: 0 });
  await using holder = await srv.client();
  await holder.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)");
  await using w = await Wire.open(srv.connectOptions.path!);
  await holder.exec("BEGIN IMMEDIATE");
  await holder.exec("CREATE TEMP TABLE scratch (a)");
  // While TEMP tables exist every statement goes through the writer: this read waits.
  const first = await w.send(Op.Query, "SELECT count(*) FROM t", null, null);
  await delay(100);
  await holder.exec("DROP TABLE temp.scratch");
  // A request arriving makes the server look at the waiting read again: it runs on a reader now.
  const second = await w.send(Op.Query, "SELECT 2", null, null);
  for (const id of [first, second]) {
    const [got, status, body] = await w.reply();
    assert.equal(got, id);
    assert.ok(!isError(status), JSON.stringify(body));
  }
  // Well past the busy timeout of that first wait, the writer still held: a write now waits
  // its own busy timeout before it fails.
  await delay(900);
  const start = performance.now();
  const id = await w.send(Op.Run, "INSERT INTO t VALUES (1)", null, null);
  const [got, status, body] = await w.reply();
  const waited = performance.now() - start;
  assert.equal(got, id);
  assert.ok(isError(status));
  assert.equal((body as { code: string }).code, "BUSY_TIMEOUT", JSON.stringify(body));
  assert.ok(
    waited >= 500,
    `failed after ${waited.toFixed(0)} ms, without waiting its busy timeout`,
  );
  await holder.exec("ROLLBACK");
  await w.ok("INSERT INTO t VALUES (2)");
});

Deno.test("A cancel of a write answered in a transaction that a script then committed (COMMIT; BEGIN) does not end the transaction begun after it", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)");
  await using w = await Wire.open(srv.connectOptions.path!);
  await w.ok("BEGIN");
  const write = await w.send(Op.Run, "INSERT INTO t VALUES (1)", null, null);
  const [got, status] = await w.reply();
  assert.equal(got, write);
  assert.ok(!isError(status));
  const { status: s2 } = await w.call(Op.Exec, "COMMIT; BEGIN; INSERT INTO t VALUES (2)");
  assert.ok(!isError(s2));
  assert.equal(s2 & Status.TxEnded, Status.TxEnded);
  // Late: that write's transaction is committed, and the one open now never held it.
  await w.cancel(write);
  await w.ok("INSERT INTO t VALUES (3)");
  await w.ok("COMMIT");
  assert.deepEqual(await ids(db), [1, 2, 3]);
});

for (const end of ["COMMIT", "ROLLBACK"]) {
  Deno.test(`A ${end} run through iterate() ends the transaction and gives the writer back, as run() does`, async () => {
    await using srv = await startServer({ busyTimeout: 2000, txIdleTimeout: 300 });
    await using db = await srv.client();
    await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)");
    await using w = await Wire.open(srv.connectOptions.path!);
    await w.ok("BEGIN");
    await w.ok("INSERT INTO t VALUES (1)");
    const open = await w.call(Op.Iterate, end, null, null);
    assert.ok(!isError(open.status), JSON.stringify(open.body));
    const next = await w.call(Op.Next, (open.body as [number])[0]);
    assert.ok(!isError(next.status), JSON.stringify(next.body));
    assert.deepEqual(next.body, [[], true]);
    assert.equal(next.status & Status.InTransaction, 0, "no transaction open after it");
    // Another client writes at once, without waiting for the lease to end.
    const start = performance.now();
    await db.run("INSERT INTO t VALUES (2)");
    assert.ok(performance.now() - start < 250, `waited ${performance.now() - start} ms`);
    // Past the idle lease: nothing was left to expire, the connection goes on.
    await delay(500);
    await w.ok("INSERT INTO t VALUES (3)");
    assert.deepEqual(await ids(db), end === "COMMIT" ? [1, 2, 3] : [2, 3]);
  });
}
