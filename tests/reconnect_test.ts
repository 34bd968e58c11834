import assert from "node:assert/strict";
import { connect, ConnectionError, type ConnectOptions, serve, SqliteError } from "../mod.ts";
import { openLink } from "../client/connection.ts";
import { reservedConnections } from "../client/pool.ts";
import { resolveConnectOptions } from "../client/options.ts";
import { Op } from "../protocol/messages.ts";
import { delay, startServerProcess, tempDir, within } from "./_helpers.ts";

async function restartable(dir: string) {
  const options = { database: `${dir}/r.db`, path: `${dir}/r.sock` };
  let server = await serve(options);
  return {
    options,
    async restart() {
      await server.shutdown();
      server = await serve(options);
    },
    async [Symbol.asyncDispose]() {
      await server.shutdown();
    },
  };
}

Deno.test("Client reconnects on its next call after the connection was lost outside a transaction", async () => {
  await using dir = await tempDir();
  await using srv = await restartable(dir.path);
  await using db = await connect({ path: srv.options.path });
  await db.exec("CREATE TABLE t (x)");
  await db.run("INSERT INTO t VALUES (1)");
  const stmt = await db.prepare("SELECT count(*) AS n FROM t");
  await srv.restart();
  // Let the client see the server close the old connection. (A request
  // already sent when a connection drops fails with ConnectionError.)
  await new Promise((r) => setTimeout(r, 20));
  // The first call after the loss transparently reconnects.
  assert.deepEqual(await db.values("SELECT x FROM t"), [[1]]);
  // A statement prepared on the old connection is prepared again.
  assert.deepEqual(await stmt.get(), { n: 1 });
  await stmt.finalize();
});

Deno.test("Client rejects pending requests with ConnectionError when the connection drops", async () => {
  await using dir = await tempDir();
  await using srv = await restartable(dir.path);
  await using a = await connect({ path: srv.options.path, max: 1 });
  await using b = await connect({ path: srv.options.path });
  await a.exec("CREATE TABLE t (x)");
  await a.exec("BEGIN IMMEDIATE");
  // Waits for a's transaction; the handler is attached before the drop.
  const pending = b.run("INSERT INTO t VALUES (1)").catch((e) => e);
  await srv.restart();
  const err = await pending;
  assert.ok(err instanceof ConnectionError, String(err));
  assert.deepEqual(await b.values("SELECT count(*) FROM t"), [[0]]);
});

Deno.test("Client never continues a lost transaction on a new connection", async () => {
  await using dir = await tempDir();
  await using srv = await restartable(dir.path);
  await using db = await connect({ path: srv.options.path, max: 1 });
  await db.exec("CREATE TABLE t (x)");
  await db.exec("BEGIN");
  await db.run("INSERT INTO t VALUES ('in tx')");
  assert.equal(db.inTransaction, true);
  await srv.restart();
  // Until its ROLLBACK the lost transaction still counts as open, so that
  // `if (db.inTransaction) await db.exec("ROLLBACK")` clears it.
  assert.equal(db.inTransaction, true);
  // Statements meant for the lost transaction fail instead of autocommitting.
  await assert.rejects(db.run("INSERT INTO t VALUES ('would autocommit')"), ConnectionError);
  await assert.rejects(db.query("SELECT * FROM t"), /lost inside a transaction/);
  assert.equal(db.inTransaction, true);
  // ROLLBACK acknowledges the loss; then the client reconnects.
  await db.exec("ROLLBACK");
  assert.equal(db.inTransaction, false);
  assert.deepEqual(await db.values("SELECT x FROM t"), []);
});

Deno.test("ReservedConnection.inTransaction stays true for a transaction lost with its connection until ROLLBACK", async () => {
  await using dir = await tempDir();
  await using srv = await restartable(dir.path);
  await using db = await connect({ path: srv.options.path });
  await db.exec("CREATE TABLE t (x)");
  await using r = await db.reserve();
  await r.exec("BEGIN");
  await r.run("INSERT INTO t VALUES (1)");
  await srv.restart();
  // The first call learns of the loss (from the server's shutdown notice, or the closed link).
  await assert.rejects(r.run("INSERT INTO t VALUES (2)"), ConnectionError);
  assert.equal(r.inTransaction, true);
  await assert.rejects(r.run("INSERT INTO t VALUES (2)"), /lost inside a transaction/);
  assert.equal(r.inTransaction, true);
  await r.exec("ROLLBACK");
  assert.equal(r.inTransaction, false);
  await r.run("INSERT INTO t VALUES (3)");
  assert.deepEqual(await db.values("SELECT x FROM t"), [[3]]);
});

Deno.test("Client.transaction() interrupted by a lost connection rethrows and leaves the client usable", async () => {
  await using dir = await tempDir();
  await using srv = await restartable(dir.path);
  await using db = await connect({ path: srv.options.path });
  await db.exec("CREATE TABLE t (x)");
  const err = await db.transaction(async (tx) => {
    await tx.run("INSERT INTO t VALUES (1)");
    await srv.restart();
    await tx.run("INSERT INTO t VALUES (2)");
  }).catch((e) => e);
  assert.ok(err instanceof ConnectionError);
  assert.deepEqual(await db.values("SELECT x FROM t"), []);
});

Deno.test("Client with requestTimeout rejects a slow request with REQUEST_TIMEOUT and closes the connection", async () => {
  await using dir = await tempDir();
  await using srv = await restartable(dir.path);
  await using holder = await connect({ path: srv.options.path, max: 1 });
  await using db = await connect({ path: srv.options.path, requestTimeout: 200 });
  await holder.exec("CREATE TABLE t (x)");
  await holder.exec("BEGIN IMMEDIATE");
  const started = performance.now();
  const err = await db.run("INSERT INTO t VALUES (1)").catch((e) => e);
  const took = performance.now() - started;
  assert.ok(err instanceof ConnectionError, String(err));
  assert.equal(err.code, "REQUEST_TIMEOUT");
  assert.ok(took >= 190 && took < 2000, `timed out after ${took} ms`);
  // Once the server has seen the connection close, the queued write is
  // dropped unrun. (Had the writer freed up before that, it could have run:
  // a timed-out request's outcome is unknown, as with any database.)
  await new Promise((r) => setTimeout(r, 50));
  await holder.exec("ROLLBACK");
  // The next call reconnects.
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]]);
});

Deno.test("connect() with reconnect: false keeps failing after the connection is lost", async () => {
  await using dir = await tempDir();
  await using srv = await restartable(dir.path);
  await using db = await connect({ path: srv.options.path, reconnect: false });
  await srv.restart();
  await assert.rejects(db.values("SELECT 1"), ConnectionError);
  await assert.rejects(db.values("SELECT 1"), ConnectionError);
});

Deno.test("reconnect: false: a transaction() or reserve() waiting for a connection when one is lost fails with the loss, not left waiting", async () => {
  await using dir = await tempDir();
  await using srv = await restartable(dir.path);
  for (const max of [1, 3]) {
    await using db = await connect({ path: srv.options.path, max, reconnect: false });
    await db.exec("CREATE TABLE IF NOT EXISTS t (x)");
    let go!: () => void;
    const gate = new Promise<void>((resolve) => go = resolve);
    // Transactions holding every connection reserve() may take (max - 1; with max: 1, the one).
    const holders = Array.from(
      { length: Math.max(1, max - 1) },
      () =>
        db.transaction(async (tx) => {
          await tx.run("INSERT INTO t VALUES (1)");
          await gate;
        }).catch((e) => e),
    );
    await delay(30);
    let ran = false;
    const waiting = [
      db.transaction(() => Promise.resolve(ran = true)).catch((e) => e),
      db.reserve().catch((e) => e),
    ];
    await delay(10);
    await srv.restart();
    // While the holders still hold theirs (before: they waited until then, or forever).
    const errors = await within(Promise.all(waiting), 5000);
    go();
    await Promise.all(holders);
    assert.notEqual(errors, "timeout", `max ${max}: still waiting`);
    for (const err of errors as unknown[]) {
      assert.ok(err instanceof ConnectionError, String(err));
      assert.equal(err.mayHaveRun, false);
    }
    assert.equal(ran, false);
  }
});

/** The server's request counters, by op name, read over a connection of its own. */
async function requestCounts(options: ConnectOptions): Promise<Record<string, number>> {
  const [link] = await openLink(await resolveConnectOptions(options));
  try {
    return (await link.request(Op.Stats, [])).requests;
  } finally {
    link.fail(new Error("test done"));
    await link.ended;
  }
}

Deno.test("Statement called in a burst after its server was killed and restarted prepares once and leaves no handle behind", async () => {
  await using dir = await tempDir();
  const first = await startServerProcess({ dir: dir.path });
  await using db = await connect({ ...first.connectOptions, max: 1 });
  await db.exec("CREATE TABLE t (x)");
  const stmt = await db.prepare("SELECT count(*) AS n FROM t");
  assert.deepEqual(await stmt.get(), { n: 0 });
  await first.kill();
  // Same socket, same database: the client's connection reopens on its next call.
  await using second = await startServerProcess({ dir: dir.path });
  const rows = await Promise.all(Array.from({ length: 300 }, () => stmt.get()));
  assert.equal(rows.length, 300);
  for (const row of rows) assert.deepEqual(row, { n: 0 });
  // The handle prepared for the burst serves the next call.
  assert.deepEqual(await stmt.get(), { n: 0 });
  await stmt.finalize();
  const counts = await requestCounts(second.connectOptions);
  assert.equal(counts.prepare, 1, "one prepare for the whole burst");
  assert.equal(counts.finalize, 1, "every handle prepared was freed");
});

Deno.test("A cursor whose connection was lost inside its transaction fails with the lost transaction's ConnectionError, not CURSOR_CLOSED", async () => {
  await using dir = await tempDir();
  const srv = await startServerProcess({ dir: dir.path });
  try {
    await using db = await connect({ ...srv.connectOptions, max: 2 });
    await db.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1), (2), (3)");
    await using r = await db.reserve();
    await r.exec("BEGIN");
    const rows = r.iterate("SELECT x FROM t")[Symbol.asyncIterator]();
    assert.deepEqual((await rows.next()).value, { x: 1 });
    // A first chunk cut short by its time budget leaves the next chunk asked
    // for ahead: a later request of the link is answered after it, so once
    // it is, no request of the cursor is in flight when the server dies (one
    // in flight would fail as sent, with its own error).
    assert.deepEqual(await r.get("SELECT 1 AS one"), { one: 1 });
    await srv.kill();
    // The client sees its connection end (a fixed pause lost the race on a
    // loaded machine: the next was then sent on the dying link).
    const conn = reservedConnections.get(r)!;
    for (let i = 0; i < 500 && !conn.lostTransaction; i++) await delay(10);
    assert.equal(conn.lostTransaction, true);
    const err = await rows.next().catch((e) => e);
    assert.ok(err instanceof ConnectionError, String(err));
    assert.equal(err.code, "CONNECTION_CLOSED");
    assert.equal(err.mayHaveRun, false);
    assert.match(err.message, /^Connection was lost inside a transaction/);
    // As any other call of that transaction.
    await assert.rejects(r.get("SELECT 1"), { message: err.message, mayHaveRun: false });
    await r.exec("ROLLBACK");
  } finally {
    await srv.kill();
  }
});

Deno.test("tx.iterate() in transaction(fn) whose server was killed mid-iteration rejects with ConnectionError", async () => {
  await using dir = await tempDir();
  const srv = await startServerProcess({ dir: dir.path });
  try {
    await using db = await connect({ ...srv.connectOptions, max: 2 });
    await db.exec(
      "CREATE TABLE t (x); INSERT INTO t WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL " +
        "SELECT i + 1 FROM c WHERE i < 20000) SELECT i FROM c",
    );
    let seen = 0;
    const err = await db.transaction(async (tx) => {
      for await (const _ of tx.iterate("SELECT x FROM t")) {
        if (++seen === 500) await srv.kill();
      }
    }).catch((e) => e);
    assert.ok(err instanceof ConnectionError, String(err));
    assert.equal(err.code, "CONNECTION_CLOSED");
    assert.ok(seen >= 500 && seen < 20000, `${seen} rows seen`);
  } finally {
    await srv.kill();
  }
});

Deno.test("A cursor whose transaction was committed before its connection was lost still fails with CURSOR_CLOSED", async () => {
  await using dir = await tempDir();
  const srv = await startServerProcess({ dir: dir.path });
  try {
    await using db = await connect({ ...srv.connectOptions, max: 2 });
    await db.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1), (2), (3)");
    await using r = await db.reserve();
    await r.exec("BEGIN");
    const rows = r.iterate("SELECT x FROM t")[Symbol.asyncIterator]();
    assert.deepEqual((await rows.next()).value, { x: 1 });
    await r.exec("COMMIT");
    await srv.kill();
    await delay(50);
    await assert.rejects(rows.next(), (err: Error) => {
      assert.ok(err instanceof SqliteError, String(err));
      assert.equal(err.code, "CURSOR_CLOSED");
      return true;
    });
  } finally {
    await srv.kill();
  }
});
