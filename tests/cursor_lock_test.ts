/**
 * `iterate()` of a write inside a transaction whose first step meets the
 * database file's write lock, held by another program (`_lock_holder.ts`):
 * it changed nothing, and waits for the lock up to `--busy-timeout` as
 * `run()` does (FFI engine: in the background, other clients answered
 * meanwhile), rather than failing at once with `SQLITE_BUSY`.
 *
 * The server runs as a process of its own: on the node engine its wait for
 * the lock holds up its whole thread.
 */

import assert from "node:assert/strict";
import type { Client } from "../client.ts";
import { connect } from "../client.ts";
import { holdWriteLock, startServerProcess, statsUntil } from "./_helpers.ts";

const ffi = (Deno.env.get("NETSQLITE_ENGINE") ?? "ffi") !== "node";

/** The write under test: its first step does all its writing. */
const UPDATE = "UPDATE t SET v = v + 1 WHERE id = 1 RETURNING v";

interface Setup extends AsyncDisposable {
  /** The client under test: one connection (raw `BEGIN` allowed). */
  db: Client;
  /** Another client, to read the row and the server's state. */
  other: Client;
  connectOptions: { path?: string };
  /** Starts the other program and waits until it holds the write lock. */
  hold(): Promise<void>;
  /** Ends the other program's transaction (it commits) and waits for it to exit. */
  release(): Promise<void>;
  /** The row's value, read by the other client. */
  value(): Promise<number>;
}

async function setup(busyTimeout = 60_000): Promise<Setup> {
  const srv = await startServerProcess({ args: ["--busy-timeout", String(busyTimeout)] });
  const db = await srv.client();
  const other = await connect({ ...srv.connectOptions, max: 1 });
  await other.exec(
    "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER); INSERT INTO t VALUES (1, 0)",
  );
  let holder: { release(): Promise<void> } | null = null;
  const release = async () => await holder?.release();
  return {
    db,
    other,
    connectOptions: srv.connectOptions,
    async hold() {
      holder = await holdWriteLock(srv.database);
    },
    release,
    value: async () => (await other.values<[number]>("SELECT v FROM t WHERE id = 1"))[0][0],
    async [Symbol.asyncDispose]() {
      await release();
      await db.close();
      await other.close();
      await srv[Symbol.asyncDispose]();
    },
  };
}

/** Settles with the rows, or the error's code and message. */
async function rowsOf(it: AsyncIterable<unknown>): Promise<unknown[]> {
  const rows: unknown[] = [];
  for await (const row of it) rows.push(row);
  return rows;
}

/**
 * Once `started` (the transaction is open, the cursor write is sent),
 * waits until the write waits for the lock, then releases the other
 * program. On FFI the server shows the cursor open, and answers another
 * client's reads while the write is still pending (it waits in the
 * background). On node the server's thread waits for the lock, answering
 * nothing: the other program is released at once (the write may meet its
 * lock or not; either way it must succeed).
 */
async function releaseWhileWaiting(
  t: Setup,
  started: Promise<void>,
  write: Promise<unknown>,
): Promise<void> {
  await started;
  if (ffi) {
    let settled = false;
    write.then(() => settled = true, () => settled = true);
    await statsUntil(
      t.connectOptions,
      (s) => settled || (s.cursors === 1 && s.transactions.length === 1),
      "the cursor write is open in its transaction",
    );
    assert.equal(settled, false, "the cursor write settled before the lock was released");
    for (let i = 0; i < 10; i++) {
      assert.deepEqual(await t.other.values("SELECT v FROM t"), [[0]]);
    }
    assert.equal(settled, false, "the cursor write settled before the lock was released");
  }
  await t.release();
}

Deno.test("iterate() of a write inside transaction() waits for another program's lock, then succeeds", async () => {
  await using t = await setup();
  await t.hold();
  let begun!: () => void;
  const started = new Promise<void>((resolve) => begun = resolve);
  const write = t.db.transaction(async (tx) => {
    begun();
    return await rowsOf(tx.iterate(UPDATE));
  });
  await releaseWhileWaiting(t, started, write);
  assert.deepEqual(await write, [{ v: 1 }]);
  assert.equal(await t.value(), 1);
  assert.deepEqual(await t.other.values("SELECT count(*) FROM other_program"), [[1]]);
});

Deno.test({
  name:
    "iterate() of a write inside transaction() waits for another program's lock while a change feed captures, and the feed reports it",
  // (node:sqlite has no update hook: no change feeds.)
  ignore: !ffi,
  fn: feedCaptures,
});

async function feedCaptures(): Promise<void> {
  await using t = await setup();
  // Writes step on the main thread while feeds capture: the wait is tries from a timer.
  await using feed = await t.other.subscribe({ tables: ["t"] });
  await t.hold();
  let begun!: () => void;
  const started = new Promise<void>((resolve) => begun = resolve);
  const write = t.db.transaction(async (tx) => {
    begun();
    return await rowsOf(tx.iterate(UPDATE));
  });
  await releaseWhileWaiting(t, started, write);
  assert.deepEqual(await write, [{ v: 1 }]);
  assert.equal(await t.value(), 1);
  for await (const e of feed) {
    assert.equal(e.type, "table", JSON.stringify(e));
    if (e.type === "table") assert.deepEqual([e.op, e.table, e.rowid], ["update", "t", 1]);
    break;
  }
}

Deno.test("iterate() of a write in a raw BEGIN on a reserved connection, and prepare().iterate(), wait for another program's lock", async () => {
  await using t = await setup();
  await t.hold();
  {
    await using conn = await t.db.reserve();
    await conn.exec("BEGIN");
    const write = rowsOf(conn.iterate(UPDATE));
    await releaseWhileWaiting(t, Promise.resolve(), write);
    assert.deepEqual(await write, [{ v: 1 }]);
    await conn.exec("COMMIT");
  }
  assert.equal(await t.value(), 1);
  await t.release();

  await using u = await setup();
  await u.hold();
  let begun!: () => void;
  const started = new Promise<void>((resolve) => begun = resolve);
  const write = u.db.transaction(async (tx) => {
    const stmt = await tx.prepare(UPDATE);
    begun();
    return await rowsOf(stmt.iterate());
  });
  await releaseWhileWaiting(u, started, write);
  assert.deepEqual(await write, [{ v: 1 }]);
  assert.equal(await u.value(), 1);
});

Deno.test("iterate() of a write that meets another program's lock past --busy-timeout fails with SQLITE_BUSY, its transaction intact", async () => {
  await using t = await setup(300);
  await t.hold();
  await t.db.transaction(async (tx) => {
    await assert.rejects(rowsOf(tx.iterate(UPDATE)), {
      code: "SQLITE_BUSY",
      message: /database is locked/,
    });
    await t.release();
    // Nothing changed, and the transaction goes on.
    assert.deepEqual(await tx.values("SELECT v FROM t"), [[0]]);
    assert.deepEqual(await rowsOf(tx.iterate(UPDATE)), [{ v: 1 }]);
  });
  assert.equal(await t.value(), 1);
});
