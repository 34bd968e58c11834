/**
 * What `transaction()` rejects with when its connection is lost before its
 * `COMMIT` was sent (here: a call in it gets no reply within the client's
 * `requestTimeout`, which closes the connection): the transaction was rolled
 * back by the server, so `mayHaveRun` is false, whether its function lets
 * the call's error (`mayHaveRun` true: that call may have run) propagate or
 * swallows it; the same error either way, with the call's error as `cause`
 * when it propagated. Not when the lost call may have committed it (a
 * `COMMIT` sent on the transaction's connection by a plain call).
 *
 * The call that times out is a write waiting for the database file's write
 * lock, which another program holds: no reply can come before the client
 * gives up.
 */

import assert from "node:assert/strict";
import { sql } from "npm:drizzle-orm@^0.45";
import { drizzle } from "../adapters/drizzle.ts";
import { type Client, connect, ConnectionError, ErrorCode } from "../client.ts";
import { reservedConnections } from "../client/pool.ts";
import { holdWriteLock, startServer, startServerProcess } from "./_helpers.ts";

/** The client's `requestTimeout`: far below the server's busy timeout. */
const REQUEST_TIMEOUT = 300;

/** The message of a call made in a transaction lost with its connection (after a timeout). */
const LOST = new RegExp(
  String.raw`^Connection was lost inside a transaction \(No reply from unix:\S+ within ` +
    `${REQUEST_TIMEOUT} ms \\(requestTimeout\\): .*\\), which the server rolled back: retry ` +
    "the whole transaction$",
);

interface Setup extends AsyncDisposable {
  /** The client under test (`requestTimeout`). */
  db: Client;
  /** Ends the other program's transaction, which holds the write lock. */
  release(): Promise<void>;
  /** The value of the row, read by another client. */
  value(): Promise<number>;
}

/**
 * A server (whose busy timeout is far longer than the client's
 * `requestTimeout`), a table, and another program holding the database
 * file's write lock (see `_lock_holder.ts`).
 */
async function setup(max = 2): Promise<Setup> {
  // A process of its own: node:sqlite's busy wait blocks the thread it runs on.
  const srv = await startServerProcess({ args: ["--busy-timeout", "60000"] });
  const other = await connect({ ...srv.connectOptions, max: 1 });
  await other.exec(
    "CREATE TABLE c (id INTEGER PRIMARY KEY, v INTEGER); INSERT INTO c VALUES (1, 0)",
  );
  const holder = await holdWriteLock(srv.database);
  // (Its connection may take longer than the short request timeout on a loaded machine.)
  const db = await connect({
    ...srv.connectOptions,
    max,
    requestTimeout: REQUEST_TIMEOUT,
    connectTimeout: 10_000,
  });
  const release = () => holder.release();
  return {
    db,
    release,
    value: async () => (await other.values<[number]>("SELECT v FROM c"))[0][0],
    async [Symbol.asyncDispose]() {
      await release();
      await db.close();
      await other.close();
      await srv[Symbol.asyncDispose]();
    },
  };
}

/** A write of `v` that waits for the write lock (the other program's) until it times out. */
const WRITE = (v: number) => `UPDATE c SET v = ${v} WHERE id = 1`;

/** Asserts `err` is the lost transaction's error: `mayHaveRun` false, `CONNECTION_CLOSED`. */
function assertLost(err: unknown): asserts err is ConnectionError {
  assert.ok(err instanceof ConnectionError, String(err));
  assert.match(err.message, LOST);
  assert.equal(err.code, ErrorCode.ConnectionClosed);
  assert.equal(err.mayHaveRun, false);
}

/** Asserts `err` is the timed-out call's own error: `REQUEST_TIMEOUT`, `mayHaveRun` true. */
function assertTimedOut(err: unknown): asserts err is ConnectionError {
  assert.ok(err instanceof ConnectionError, String(err));
  assert.equal(err.code, ErrorCode.RequestTimeout);
  assert.equal(err.mayHaveRun, true);
}

Deno.test("transaction() whose call timed out rejects with mayHaveRun false, as when fn swallowed the call's error", async () => {
  let propagated: ConnectionError;
  {
    await using t = await setup();
    let inner: unknown = null;
    const err = await t.db.transaction(async (tx) => {
      inner = await tx.run(WRITE(1)).catch((e) => e);
      throw inner;
    }).catch((e) => e);
    assertTimedOut(inner);
    assertLost(err);
    assert.equal(err.cause, inner);
    propagated = err;
    await t.release();
    assert.equal(await t.value(), 0);
  }
  {
    await using t = await setup();
    const swallowed = await t.db.transaction(async (tx) => {
      await tx.run(WRITE(2)).catch(() => {});
    }).catch((e) => e);
    // The same answer: the error of the transaction's COMMIT, refused after the loss.
    assertLost(swallowed);
    assert.equal(
      swallowed.message.replace(/unix:\S+/, "unix:"),
      propagated.message.replace(/unix:\S+/, "unix:"),
    );
    await t.release();
    assert.equal(await t.value(), 0);
  }
});

Deno.test("transaction() nested: each level lost with the connection rejects with the same error, mayHaveRun false", async () => {
  await using t = await setup();
  let nested: unknown = null;
  const err = await t.db.transaction(async (tx) => {
    nested = await tx.transaction(async (inner) => {
      await inner.run(WRITE(3));
    }).catch((e) => e);
    throw nested;
  }).catch((e) => e);
  assertLost(nested);
  assertTimedOut(nested.cause);
  // Passed on as it is: not wrapped again.
  assert.equal(err, nested);
  await t.release();
  assert.equal(await t.value(), 0);
});

Deno.test("transaction() on a reserved connection lost with it rejects with mayHaveRun false", async () => {
  await using t = await setup();
  await using r = await t.db.reserve();
  const err = await r.transaction(async (tx) => {
    await tx.run(WRITE(4));
  }).catch((e) => e);
  assertLost(err);
  assertTimedOut(err.cause);
  await t.release();
  assert.equal(await t.value(), 0);
});

Deno.test("transaction() whose lost call may have committed it (a COMMIT on its connection) keeps mayHaveRun true", async () => {
  await using t = await setup(1);
  const err = await t.db.transaction(async () => {
    // A plain call of a max: 1 client joins the transaction: its COMMIT ends it.
    await t.db.exec(`${WRITE(5)}; COMMIT`);
  }).catch((e) => e);
  assertTimedOut(err);
  await t.release();
});

Deno.test("drizzle: a transaction lost with its connection rejects with mayHaveRun false", async () => {
  await using t = await setup();
  const orm = drizzle(t.db);
  const err = await orm.transaction(async (tx) => {
    await tx.run(sql.raw(WRITE(6)));
  }).catch((e) => e);
  // Drizzle's "Failed query: ..." (DrizzleQueryError), whose cause says why.
  assert.match(String(err?.message), /^Failed query: UPDATE c SET v = 6/);
  assertLost(err.cause);
  assertTimedOut(err.cause.cause);
  await t.release();
  assert.equal(await t.value(), 0);
});

/** A Kysely instance on `client` (imported here: the tests above do without Kysely). */
async function kysely(client: Client) {
  const { Kysely } = await import("npm:kysely@^0.28");
  const { NetsqliteDialect } = await import("../adapters/kysely.ts");
  return new Kysely<{ c: { id: number; v: number } }>({
    dialect: new NetsqliteDialect({ client }),
  });
}

Deno.test("kysely: a transaction whose callback lets the lost call's error propagate rejects with mayHaveRun false", async () => {
  await using t = await setup();
  const orm = await kysely(t.db);
  let inner: unknown = null;
  const err = await orm.transaction().execute(async (trx) => {
    inner = await trx.updateTable("c").set({ v: 7 }).where("id", "=", 1).execute()
      .catch((e) => e);
    throw inner;
  }).catch((e) => e);
  // The query itself rejects with the loss: its effects went with the rolled back transaction.
  assertLost(inner);
  assertTimedOut(inner.cause);
  assert.equal(err, inner);
  await t.release();
  assert.equal(await t.value(), 0);
  await orm.destroy();
});

Deno.test("kysely: a query of a controlled transaction, in a savepoint, lost with the connection rejects with mayHaveRun false", async () => {
  await using t = await setup();
  const orm = await kysely(t.db);
  const trx = await orm.startTransaction().execute();
  const sp = await trx.savepoint("a").execute();
  const err = await sp.updateTable("c").set({ v: 8 }).where("id", "=", 1).execute()
    .catch((e) => e);
  assertLost(err);
  assertTimedOut(err.cause);
  // Its next statement is refused with the same loss, unsent; the rollback succeeds.
  const next = await sp.rollbackToSavepoint("a").execute().catch((e) => e);
  assertLost(next);
  await sp.rollback().execute();
  await t.release();
  assert.equal(await t.value(), 0);
  await orm.destroy();
});

Deno.test("transaction() lost with its connection passes on another client's error that may have run as it is", async () => {
  // Two servers, each with its write lock held: a write times out on either.
  const [t, other] = await Promise.all([setup(), setup()]);
  await using _t = t;
  await using _other = other;
  // The other database's call (an audit write, say): it may have run there.
  const foreign = await other.db.run(WRITE(20)).catch((e) => e);
  assertTimedOut(foreign);
  const err = await t.db.transaction(async (tx) => {
    // This transaction is lost with its connection: the server rolled it back.
    await tx.run(WRITE(21)).catch(() => {});
    throw foreign;
  }).catch((e) => e);
  // Not "rolled back": whatever became of this transaction, the other call may have run.
  assert.equal(err, foreign);
  assertTimedOut(err);
  await t.release();
  assert.equal(await t.value(), 0);
});

Deno.test("drizzle: a transaction lost with its connection passes on another client's error that may have run as it is", async () => {
  // A lost transaction per case (the server's writer stays busy with the lost write).
  const [t, t2, other] = await Promise.all([setup(), setup(), setup()]);
  await using _t = t;
  await using _t2 = t2;
  await using _other = other;
  // Drizzle's "Failed query: ..." of the other database, whose cause may have run there.
  const foreign = await drizzle(other.db).run(sql.raw(WRITE(30))).catch((e) => e);
  assert.match(String(foreign?.message), /^Failed query: UPDATE c SET v = 30/);
  assertTimedOut(foreign.cause);
  const own = foreign.cause;
  const direct = await drizzle(t.db).transaction(async (tx) => {
    await tx.run(sql.raw(WRITE(31))).catch(() => {});
    throw own;
  }).catch((e) => e);
  assert.equal(direct, own);
  assertTimedOut(direct);
  const wrapped = await drizzle(t2.db).transaction(async (tx) => {
    await tx.run(sql.raw(WRITE(32))).catch(() => {});
    throw foreign;
  }).catch((e) => e);
  assert.equal(wrapped, foreign);
  assert.equal(wrapped.cause, own);
  assertTimedOut(wrapped.cause);
  await Promise.all([t.release(), t2.release()]);
  assert.equal(await t.value(), 0);
  assert.equal(await t2.value(), 0);
});

Deno.test("a prepared COMMIT finalized is forgotten: no memory kept per prepare and finalize", async () => {
  await using srv = await startServer();
  const db = await connect({ ...srv.connectOptions, max: 1 });
  try {
    await using r = await db.reserve();
    const conn = reservedConnections.get(r)!;
    const kept = await r.prepare("COMMIT");
    assert.equal(conn.committingHandles, 1);
    for (let i = 0; i < 50; i++) await (await r.prepare("COMMIT")).finalize();
    assert.equal(conn.committingHandles, 1);
    await kept.finalize();
    assert.equal(conn.committingHandles, 0);
  } finally {
    await db.close();
  }
});
