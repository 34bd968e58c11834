/**
 * What a call reports when its connection was lost under it, against real
 * server processes stopped by SIGTERM (a shutdown) or SIGKILL: a cursor of
 * the lost link fails at once with why that link ended, without trying to
 * connect again (a new server on the same socket changes nothing); a call
 * of a transaction lost with its link names why it ended (its `cause`),
 * and advises sending `ROLLBACK` only where the caller must (a raw `BEGIN`),
 * not inside `transaction(fn)` or an ORM's transaction, which roll back
 * themselves.
 */

import assert from "node:assert/strict";
import { Kysely, sql } from "npm:kysely@^0.28";
import { connect, ConnectionError, ErrorCode, SqliteError } from "../mod.ts";
import { NetsqliteDialect } from "../adapters/kysely.ts";
import type { PooledConnection } from "../client/connection.ts";
import { reservedConnections } from "../client/pool.ts";
import { delay, type ServerProcess, startServerProcess, tempDir } from "./_helpers.ts";

/** The server's last frame as the link's failure (`Link.failure.message`). */
const SHUTDOWN = "Server closed the connection: Server is shutting down: requests without a " +
  "reply were not run, or were stopped and undone";

/** A link that ended as its server was killed (EOF, or a reset). */
const KILLED = String.raw`Connection to unix:\S+ (?:was closed|failed: [^()]*\(os error \d+\))`;

/** Rows enough for many chunks (a chunk is at most 1,024 rows). */
const ROWS = 20_000;

const SEED = "CREATE TABLE t (x INTEGER); INSERT INTO t WITH RECURSIVE c(i) AS (SELECT 1 " +
  `UNION ALL SELECT i + 1 FROM c WHERE i < ${ROWS}) SELECT i FROM c`;

/** Waits (10 s at most) until `ok()`, polling: no fixed pause to lose a race with. */
async function until(what: string, ok: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !ok(); i++) await delay(10);
  assert.ok(ok(), `still not ${what} after 10 s`);
}

/** Sends SIGTERM to the server and waits for it to exit (its shutdown done). */
async function stop(srv: ServerProcess): Promise<void> {
  srv.child.kill("SIGTERM");
  const status = await srv.child.status;
  assert.equal(status.code, 0);
}

/**
 * Opens a cursor over {@link ROWS} rows on `conn`'s reserved connection, reads
 * its first row, and waits until the chunk asked for ahead has arrived: the
 * cursor's next `next` is sent only once that chunk was read.
 */
async function openCursor(
  r: { iterate(sql: string): AsyncIterable<unknown> },
  conn: PooledConnection,
): Promise<AsyncIterator<unknown>> {
  const rows = r.iterate("SELECT x FROM t ORDER BY x")[Symbol.asyncIterator]();
  assert.deepEqual((await rows.next()).value, { x: 1 });
  await conn.settled();
  return rows;
}

/** Reads `rows` to its end: how many rows came (checked in order from `from`), and the error. */
async function rest(rows: AsyncIterator<unknown>, from: number): Promise<[number, unknown]> {
  let n = 0;
  try {
    for (let r = await rows.next(); !r.done; r = await rows.next()) {
      assert.deepEqual(r.value, { x: from + n });
      n++;
    }
  } catch (err) {
    return [n, err];
  }
  return [n, null];
}

Deno.test("iterate() cut off by a server shutdown fails at once with the shutdown's error, without connecting again", async () => {
  await using srv = await startServerProcess({ args: ["--grace-ms", "200"] });
  await using db = await connect({ ...srv.connectOptions, max: 2 });
  await db.exec(SEED);
  await using r = await db.reserve();
  const conn = reservedConnections.get(r)!;
  const rows = await openCursor(r, conn);
  await stop(srv);
  await until("seen the connection end", () => !conn.open);
  // The rows received before the end are read; the next `next` is not sent.
  const [n, err] = await rest(rows, 2);
  assert.ok(n > 0 && n < ROWS - 1, `${n} rows`);
  assert.ok(err instanceof ConnectionError, String(err));
  // Not "Cannot connect to ...: No such file or directory": no connection was tried.
  assert.equal(
    err.message,
    `${SHUTDOWN} (the call was not sent: the cursor died with the connection)`,
  );
  assert.equal(err.code, ErrorCode.ConnectionClosed);
  assert.equal(err.mayHaveRun, false);
  assert.ok(err.cause instanceof SqliteError, String(err.cause));
  assert.equal(err.cause.code, ErrorCode.ShuttingDown);
  // A plain call does try to connect, and finds no server.
  await assert.rejects(r.values("SELECT 1"), { message: /^Cannot connect to unix:/ });
});

Deno.test("iterate() cut off by a killed server fails with the lost link's error even after a new server took its socket and the connection reopened", async () => {
  await using dir = await tempDir();
  await using first = await startServerProcess({ dir: dir.path });
  await using db = await connect({ ...first.connectOptions, max: 2 });
  await db.exec(SEED);
  await using r = await db.reserve();
  const conn = reservedConnections.get(r)!;
  const rows = await openCursor(r, conn);
  await first.kill();
  await until("seen the connection end", () => !conn.open);
  await using _second = await startServerProcess({ dir: dir.path });
  // Another call reopens the connection on the new server first.
  assert.deepEqual(await r.values("SELECT count(*) FROM t"), [[ROWS]]);
  assert.ok(conn.open);
  const [n, err] = await rest(rows, 2);
  assert.ok(n > 0 && n < ROWS - 1, `${n} rows`);
  assert.ok(err instanceof ConnectionError, String(err));
  assert.match(
    err.message,
    new RegExp(`^${KILLED} \\(the call was not sent: the cursor died with the connection\\)$`),
  );
  assert.equal(err.code, ErrorCode.ConnectionClosed);
  assert.equal(err.mayHaveRun, false);
  // A new cursor reads the new server.
  const again = await rest(r.iterate("SELECT x FROM t ORDER BY x")[Symbol.asyncIterator](), 1);
  assert.deepEqual(again, [ROWS, null]);
});

Deno.test("transaction() whose COMMIT finds its connection ended by a shutdown names the shutdown and advises a retry, not a ROLLBACK", async () => {
  await using dir = await tempDir();
  await using srv = await startServerProcess({ dir: dir.path, args: ["--grace-ms", "200"] });
  await using db = await connect(srv.connectOptions);
  await db.exec("CREATE TABLE t (x)");
  const err = await db.transaction(async (tx) => {
    await tx.run("INSERT INTO t VALUES (1)");
    // The grace period runs out with the transaction open: the server rolls it back.
    await stop(srv);
    await until("seen the connection end", () => !tx.inTransaction);
  }).catch((e) => e);
  assert.ok(err instanceof ConnectionError, String(err));
  assert.equal(
    err.message,
    `Connection was lost inside a transaction (${SHUTDOWN}), which the server rolled back: ` +
      "retry the whole transaction",
  );
  assert.equal(err.code, ErrorCode.ConnectionClosed);
  assert.equal(err.mayHaveRun, false);
  assert.ok(err.cause instanceof ConnectionError, String(err.cause));
  assert.equal(err.cause.message, SHUTDOWN);
  assert.ok(err.cause.cause instanceof SqliteError);
  assert.equal(err.cause.cause.code, ErrorCode.ShuttingDown);
  // transaction() acknowledged the loss itself: the client goes on on a new server.
  await using _again = await startServerProcess({ dir: dir.path });
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]]);
});

Deno.test("tx.run() in transaction() after its server was killed names the lost link and advises a retry, not a ROLLBACK", async () => {
  await using dir = await tempDir();
  await using first = await startServerProcess({ dir: dir.path });
  await using db = await connect(first.connectOptions);
  await db.exec("CREATE TABLE t (x)");
  let inner: unknown = null;
  const err = await db.transaction(async (tx) => {
    await tx.run("INSERT INTO t VALUES (1)");
    await first.kill();
    await until("seen the connection end", () => !tx.inTransaction);
    inner = await tx.run("INSERT INTO t VALUES (2)").catch((e) => e);
    throw inner;
  }).catch((e) => e);
  assert.equal(err, inner);
  assert.ok(err instanceof ConnectionError, String(err));
  assert.match(
    err.message,
    new RegExp(
      `^Connection was lost inside a transaction \\(${KILLED}\\), which the server rolled ` +
        "back: retry the whole transaction$",
    ),
  );
  assert.equal(err.code, ErrorCode.ConnectionClosed);
  assert.equal(err.mayHaveRun, false);
  assert.ok(err.cause instanceof ConnectionError, String(err.cause));
  assert.match(err.cause.message, new RegExp(`^${KILLED}$`));
  await using _second = await startServerProcess({ dir: dir.path });
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]]);
});

Deno.test("A raw BEGIN on a reserved connection lost to a shutdown names it and still asks for the ROLLBACK", async () => {
  await using dir = await tempDir();
  await using srv = await startServerProcess({ dir: dir.path, args: ["--grace-ms", "200"] });
  await using db = await connect({ ...srv.connectOptions, max: 2 });
  await db.exec("CREATE TABLE t (x)");
  await using r = await db.reserve();
  const conn = reservedConnections.get(r)!;
  await r.exec("BEGIN");
  await r.run("INSERT INTO t VALUES (1)");
  await stop(srv);
  await until("seen the connection end", () => !conn.open);
  const expected = `Connection was lost inside a transaction (${SHUTDOWN}), which the server ` +
    "rolled back: send ROLLBACK, then retry the whole transaction";
  for (const call of [() => r.run("INSERT INTO t VALUES (2)"), () => r.exec("COMMIT")]) {
    const err = await call().catch((e) => e);
    assert.ok(err instanceof ConnectionError, String(err));
    assert.equal(err.message, expected);
    assert.equal(err.mayHaveRun, false);
    assert.ok(err.cause instanceof ConnectionError);
    assert.equal(err.cause.message, SHUTDOWN);
  }
  await r.exec("ROLLBACK"); // a no-op after the failed COMMIT, as ORMs send
  await using _again = await startServerProcess({ dir: dir.path });
  assert.deepEqual(await r.values("SELECT count(*) FROM t"), [[0]]);
});

Deno.test("Kysely's transaction lost with a killed server advises a retry, not a ROLLBACK (Kysely sends it)", async () => {
  await using dir = await tempDir();
  await using first = await startServerProcess({ dir: dir.path });
  await using client = await connect(first.connectOptions);
  const db = new Kysely<{ t: { x: number } }>({ dialect: new NetsqliteDialect({ client }) });
  await sql`CREATE TABLE t (x)`.execute(db);
  const err = await db.transaction().execute(async (trx) => {
    await trx.insertInto("t").values({ x: 1 }).execute();
    await first.kill();
    // The first statement may go out before the client saw the end (then it
    // fails as sent on the dead link); the next one surely finds the link lost.
    await trx.insertInto("t").values({ x: 2 }).execute().catch(() => {});
    await trx.insertInto("t").values({ x: 3 }).execute();
  }).catch((e) => e);
  assert.ok(err instanceof ConnectionError, String(err));
  assert.match(
    err.message,
    new RegExp(
      `^Connection was lost inside a transaction \\(${KILLED}\\), which the server rolled ` +
        "back: retry the whole transaction$",
    ),
  );
  assert.equal(err.mayHaveRun, false);
  await using _second = await startServerProcess({ dir: dir.path });
  assert.deepEqual(await client.values("SELECT count(*) FROM t"), [[0]]);
  await db.destroy();
});
