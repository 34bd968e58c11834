/**
 * Another process (the sqlite3 shell, a migration tool) holds the database
 * file's write lock: writes wait for it up to the busy timeout, in the
 * background, and nobody else waits behind them — the event loop is never
 * held by a lock (FFI engine; node:sqlite waits on the main thread).
 */
import assert from "node:assert/strict";
import { openLink } from "../client/connection.ts";
import { resolveConnectOptions } from "../client/options.ts";
import { AbortError, type Client, connect, type Queryable, type RunResult } from "../mod.ts";
import { Op } from "../protocol/messages.ts";
import { holdWriteLock, startServer, statsUntil } from "./_helpers.ts";

/** Settles with the order in which the promises settled. */
function settleOrder(named: Record<string, Promise<unknown>>): Promise<string[]> {
  const order: string[] = [];
  return Promise.allSettled(
    Object.entries(named).map(([name, p]) => p.finally(() => order.push(name))),
  ).then(() => order);
}

/**
 * With another process holding `database`'s write lock, `a` inserts into
 * `t` (20 rows) while `r` reads 20 times: every read is answered first, and
 * the write lands once the lock is released. Returns the write's result.
 */
async function writeWhileLocked(
  database: string,
  a: Queryable,
  r: Queryable,
): Promise<RunResult> {
  const holder = await holdWriteLock(database);
  try {
    const write = a.run("INSERT INTO t VALUES (?)", [1]);
    const reads = (async () => {
      for (let i = 0; i < 20; i++) {
        assert.deepEqual(await r.values("SELECT count(*) FROM t"), [[20]]);
      }
    })();
    const order = settleOrder({ reads, write });
    await reads;
    await holder.release();
    assert.deepEqual(await order, ["reads", "write"]);
    return await write;
  } finally {
    await holder.release();
  }
}

const ffi = (Deno.env.get("NETSQLITE_ENGINE") ?? "ffi") !== "node";

Deno.test({
  name:
    "A write meeting another process's lock waits in the background: other clients' reads go on (autocommit, transaction, batch, BEGIN IMMEDIATE)",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    // One connection each, so that every write is at the server at once.
    await using a = await srv.client();
    await using b = await srv.client();
    await using c = await srv.client();
    await using d = await srv.client();
    await using r = await srv.client();
    await a.exec("CREATE TABLE t (x)");
    // Seen before, and fast: these would run inline on the main thread.
    for (let i = 0; i < 20; i++) {
      await a.run("INSERT INTO t VALUES (?)", [0]);
      await b.transaction(async (tx) => void await tx.run("INSERT INTO t VALUES (?)", [0]));
      await c.batch([{ sql: "INSERT INTO t VALUES (?)", params: [0] }]);
    }
    const before = (await r.values("SELECT count(*) FROM t"))[0][0];

    const holder = await holdWriteLock(srv.database);
    try {
      const writes = {
        autocommit: a.run("INSERT INTO t VALUES (?)", [1]),
        transaction: b.transaction(async (tx) =>
          void await tx.run("INSERT INTO t VALUES (?)", [2])
        ),
        batch: c.batch([{ sql: "INSERT INTO t VALUES (?)", params: [3] }]),
        beginImmediate: (async () => {
          await d.exec("BEGIN IMMEDIATE");
          await d.run("INSERT INTO t VALUES (?)", [4]);
          await d.exec("COMMIT");
        })(),
      };
      // Reads answered while every write still waits for the lock.
      const reads = (async () => {
        for (let i = 0; i < 20; i++) {
          assert.deepEqual(await r.values("SELECT count(*) FROM t"), [[before]]);
        }
      })();
      const order = settleOrder({ reads, ...writes });
      await reads;
      await new Promise((resolve) => setTimeout(resolve, 50));
      await holder.release();
      const settled = await order;
      assert.equal(settled[0], "reads", `settled in order ${settled}`);
      for (const [name, p] of Object.entries(writes)) {
        await assert.doesNotReject(p, `${name} failed`);
      }
      assert.deepEqual(
        await r.values("SELECT x FROM t WHERE x > 0 ORDER BY x"),
        [[1], [2], [3], [4]],
      );
    } finally {
      await holder.release();
    }
  },
});

Deno.test({
  name:
    "A write that waits for another process's lock past the busy timeout fails with SQLITE_BUSY, and the server goes on",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer({ busyTimeout: 200 });
    await using db = await connect({ ...srv.connectOptions, max: 2 });
    await db.exec("CREATE TABLE t (x)");
    for (let i = 0; i < 20; i++) await db.run("INSERT INTO t VALUES (?)", [0]);
    const holder = await holdWriteLock(srv.database);
    try {
      await assert.rejects(db.run("INSERT INTO t VALUES (?)", [1]), { code: "SQLITE_BUSY" });
      await assert.rejects(db.batch([{ sql: "INSERT INTO t VALUES (?)", params: [1] }]), {
        code: "SQLITE_BUSY",
      });
    } finally {
      await holder.release();
    }
    await db.run("INSERT INTO t VALUES (?)", [5]);
    assert.deepEqual(await db.values("SELECT x FROM t WHERE x > 0"), [[5]]);
    assert.deepEqual(await db.values("SELECT count(*) FROM other_program"), [[1]]);
  },
});

Deno.test({
  name: "After a checkpoint, a write meeting another process's lock still waits in the background",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using a = await srv.client();
    await using r = await srv.client();
    await a.exec("CREATE TABLE t (x)");
    for (let i = 0; i < 20; i++) await a.run("INSERT INTO t VALUES (?)", [0]);
    // The checkpoint sets SQLite's busy timeout for itself and back.
    const [admin] = await openLink(await resolveConnectOptions(srv.connectOptions));
    try {
      await admin.request(Op.Checkpoint, ["passive"]);
    } finally {
      admin.fail(new Error("done"));
      await admin.ended;
    }
    await writeWhileLocked(srv.database, a, r);
  },
});

Deno.test({
  name: "The first insert into a table inside a transaction waits for another process's lock too",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using a = await srv.client();
    await a.exec("CREATE TABLE fresh (x); CREATE TABLE w (k PRIMARY KEY) WITHOUT ROWID");
    const holder = await holdWriteLock(srv.database);
    try {
      const tx = a.transaction(async (tx) => {
        await tx.run("INSERT INTO fresh VALUES (1)");
        return await tx.run("INSERT INTO w VALUES ('k')");
      });
      await new Promise((resolve) => setTimeout(resolve, 100));
      await holder.release();
      assert.deepEqual(await tx, { changes: 1, lastInsertRowid: 0 });
    } finally {
      await holder.release();
    }
    assert.deepEqual(await a.values("SELECT x FROM fresh"), [[1]]);
  },
});

Deno.test({
  name:
    "While change feeds capture, a write meeting another process's lock is retried from a timer: other clients' reads go on",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using a = await srv.client();
    await using r = await srv.client();
    await a.exec("CREATE TABLE t (x)");
    {
      await using _feed = await a.subscribe({ tables: ["t"] }); // capture starts, and stays on
    }
    for (let i = 0; i < 20; i++) await a.run("INSERT INTO t VALUES (?)", [0]);
    assert.deepEqual(await writeWhileLocked(srv.database, a, r), {
      changes: 1,
      lastInsertRowid: 21,
    });
  },
});

/**
 * Far above the deadlines below, and far below the busy timeout of the
 * servers (10 s): before, SQLite's busy handler slept through the
 * interrupt of a deadline or a cancel, and such a write waited the whole
 * busy timeout.
 */
const PROMPT_MS = 3_000;

/**
 * Starts change capture on `db` (it stays on once the feed is closed):
 * writes then step on the main thread, and a write meeting the lock is
 * tried again from a timer rather than waiting in the background.
 */
async function capture(db: Client): Promise<void> {
  await using _feed = await db.subscribe({ tables: ["t"] });
}

for (const captures of [false, true]) {
  const how = captures ? ", while change feeds capture" : "";

  Deno.test({
    name:
      `A write waiting for another process's lock stops at its deadline, long before the busy timeout (autocommit, batch, BEGIN IMMEDIATE, transaction, iterate())${how}`,
    ignore: !ffi,
    fn: () => stopsAtDeadline(captures),
  });

  Deno.test({
    name:
      `A cancelled write waiting for another process's lock stops at once: its connection answers, the write never lands${how}`,
    ignore: !ffi,
    fn: () => stopsAtCancel(captures),
  });
}

async function stopsAtDeadline(captures: boolean): Promise<void> {
  await using srv = await startServer({ busyTimeout: 10_000 });
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (x)");
  if (captures) await capture(db);
  // Seen before, and fast: these would run inline on the main thread.
  for (let i = 0; i < 20; i++) await db.run("INSERT INTO t VALUES (?)", [0]);
  const holder = await holdWriteLock(srv.database);
  try {
    const writes: Record<string, () => Promise<unknown>> = {
      autocommit: () => db.run("INSERT INTO t VALUES (?)", [1], { timeout: 300 }),
      batch: () => db.batch([{ sql: "INSERT INTO t VALUES (?)", params: [2] }], { timeout: 300 }),
      beginImmediate: () => db.run("BEGIN IMMEDIATE", [], { timeout: 300 }),
      transaction: () =>
        db.transaction((tx) => tx.run("INSERT INTO t VALUES (?)", [3], { timeout: 300 })),
      iterate: () =>
        db.transaction(async (tx) => {
          const rows = [];
          const sql = "UPDATE t SET x = 4 WHERE rowid = 1 RETURNING x";
          for await (const row of tx.iterate(sql, [], { timeout: 300 })) rows.push(row);
          return rows;
        }),
    };
    for (const [name, write] of Object.entries(writes)) {
      const start = performance.now();
      await assert.rejects(write(), { code: "STATEMENT_TIMEOUT" }, name);
      const took = performance.now() - start;
      assert.ok(took < PROMPT_MS, `${name}: failed after ${took.toFixed(0)} ms`);
      assert.equal(db.inTransaction, false, name);
    }
    // The connection is usable at once, while the lock is still held.
    assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[20]]);
  } finally {
    await holder.release();
  }
  await db.run("INSERT INTO t VALUES (?)", [5]);
  assert.deepEqual(await db.values("SELECT x FROM t WHERE x > 0"), [[5]]);
  assert.deepEqual(await db.values("SELECT count(*) FROM other_program"), [[1]]);
}

async function stopsAtCancel(captures: boolean): Promise<void> {
  await using srv = await startServer({ busyTimeout: 10_000 });
  await using db = await srv.client();
  await using other = await srv.client();
  await db.exec("CREATE TABLE t (x)");
  if (captures) await capture(db);
  for (let i = 0; i < 20; i++) await db.run("INSERT INTO t VALUES (?)", [0]);
  const holder = await holdWriteLock(srv.database);
  try {
    const ac = new AbortController();
    const write = db.run("INSERT INTO t VALUES (?)", [1], { signal: ac.signal });
    write.catch(() => {});
    // Another client's write waits for the writer: `db`'s write holds it,
    // waiting for the lock, when the cancel comes.
    const queued = other.run("INSERT INTO t VALUES (?)", [2]);
    queued.catch(() => {});
    await statsUntil(
      srv.connectOptions,
      (s) => s.writer.waiting === 1,
      "a write waits for the writer",
    );
    const start = performance.now();
    ac.abort();
    await assert.rejects(write, AbortError);
    // `db`'s next request is answered once the server stopped its write.
    assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[20]]);
    const took = performance.now() - start;
    assert.ok(took < PROMPT_MS, `answered ${took.toFixed(0)} ms after the cancel`);
    await holder.release();
    assert.deepEqual(await queued, { changes: 1, lastInsertRowid: 21 });
  } finally {
    await holder.release();
  }
  assert.deepEqual(await db.values("SELECT x FROM t WHERE x > 0"), [[2]]);
}
