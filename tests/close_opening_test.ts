/**
 * `close()` while a connection of the pool is still opening (its handshake
 * not answered: the server's process is stopped with SIGSTOP): the opening
 * is given up at once, whatever `connectTimeout` (0: none), the call waiting
 * for it fails with "Client is closed" (not sent), and `close()` returns
 * after its documented wait for the calls in flight (100 ms), not after
 * `connectTimeout` or never. And `close()` not awaited (as better-sqlite3's
 * synchronous one is called): the client is closed at once.
 */

import assert from "node:assert/strict";
import { connect, ConnectionError } from "../mod.ts";
import { reservedConnections } from "../client/pool.ts";
import { delay, startServerProcess, tempDir, within } from "./_helpers.ts";

/** How `p` settled: its error (or `"resolved"`), and when (`performance.now()`). */
function outcome(p: Promise<unknown>): Promise<{ result: unknown; at: number }> {
  return p.then(
    () => ({ result: "resolved", at: performance.now() }),
    (err) => ({ result: err, at: performance.now() }),
  );
}

for (const connectTimeout of [10_000, 0]) {
  Deno.test(`Client.close() gives up a connection still opening to a stopped server at once (connectTimeout ${connectTimeout})`, async () => {
    await using srv = await startServerProcess();
    const db = await connect({ ...srv.connectOptions, max: 4, connectTimeout });
    assert.deepEqual(await db.get("SELECT 1 AS one"), { one: 1 });
    srv.child.kill("SIGSTOP");
    try {
      // On the open connection: sent, never answered.
      const first = outcome(db.get("SELECT 1 AS a"));
      await delay(0);
      // Another tick's call, the open connection busy: a second connection opens; no hello reply.
      const second = outcome(db.get("SELECT 2 AS b"));
      await delay(200);
      const t0 = performance.now();
      const closed = await within(db.close(), 5000);
      const closeMs = performance.now() - t0;
      assert.notEqual(closed, "timeout", "close() waited for the connection opening");
      assert.ok(closeMs < 1000, `close() took ${closeMs.toFixed(0)} ms`);

      const waiting = await second;
      assert.ok(waiting.result instanceof ConnectionError, String(waiting.result));
      assert.equal(waiting.result.message, "Client is closed");
      assert.equal(waiting.result.code, "CONNECTION_CLOSED");
      assert.equal(waiting.result.mayHaveRun, false);
      assert.ok(waiting.at - t0 < closeMs + 1, "the waiting call failed before close() returned");

      const sent = await first;
      assert.ok(sent.result instanceof ConnectionError, String(sent.result));
      assert.match(sent.result.message, /^Connection was closed by the client/);
      // Nothing opens or runs after close().
      await assert.rejects(db.get("SELECT 3"), { message: "Client is closed" });
    } finally {
      srv.child.kill("SIGCONT");
    }
  });
}

Deno.test("Client.close() while a reserved connection reconnects to a stopped server: its call fails with 'Client is closed' at once", async () => {
  await using dir = await tempDir();
  const first = await startServerProcess({ dir: dir.path });
  // No time limit: only close() can end the reconnect.
  const db = await connect({ ...first.connectOptions, connectTimeout: 0 });
  const r = await db.reserve();
  assert.deepEqual(await r.get("SELECT 1 AS one"), { one: 1 });
  await first.kill();
  // The client sees its link end (no transaction open: the next call
  // reconnects). A fixed pause could end first on a loaded machine: the call
  // was then sent on the dying link and failed as sent.
  const conn = reservedConnections.get(r)!;
  for (let i = 0; i < 1000 && conn.open; i++) await delay(10);
  assert.equal(conn.open, false, "the client saw its link end");
  await using second = await startServerProcess({ dir: dir.path });
  second.child.kill("SIGSTOP");
  try {
    const reopening = outcome(r.get("SELECT 2"));
    await delay(200);
    const t0 = performance.now();
    const closed = await within(db.close(), 5000);
    const closeMs = performance.now() - t0;
    assert.notEqual(closed, "timeout", "close() waited for the reconnect");
    assert.ok(closeMs < 1000, `close() took ${closeMs.toFixed(0)} ms`);
    const { result, at } = await reopening;
    assert.ok(result instanceof ConnectionError, String(result));
    assert.equal(result.message, "Client is closed");
    assert.equal(result.mayHaveRun, false);
    assert.ok(at - t0 < closeMs + 1, "the call failed before close() returned");
  } finally {
    second.child.kill("SIGCONT");
  }
});

Deno.test("Client.close() not awaited: closed at once, and a call made right after fails unsent and never runs", async () => {
  await using srv = await startServerProcess();
  const setup = await connect(srv.connectOptions);
  await setup.exec("CREATE TABLE t (x)");
  for (let i = 0; i < 20; i++) {
    const db = await connect({ ...srv.connectOptions, max: 2 });
    await db.get("SELECT 1"); // an open, idle connection
    const closing = db.close(); // as with better-sqlite3's synchronous close(), not awaited
    assert.equal(db.closed, true, `try ${i}: closed right after close()`);
    const after = await outcome(db.run("INSERT INTO t VALUES (?)", [i]));
    assert.ok(after.result instanceof ConnectionError, `try ${i}: ${after.result}`);
    assert.equal(after.result.mayHaveRun, false);
    assert.match(after.result.message, /Client is closed/);
    await closing;
  }
  assert.deepEqual(
    await setup.values("SELECT count(*) FROM t"),
    [[0]],
    "no call made after close() ran",
  );
  await setup.close();
});
