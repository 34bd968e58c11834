/**
 * `db.close()` while `db.subscribe()` is still opening its feed: the feed
 * must not outlive the client. The subscribe call fails with "Client is
 * closed", as any call made after `close()`, and the feed's connection is
 * closed (the test's resource sanitizer would see it otherwise). The feed
 * needs the FFI engine; under `NETSQLITE_ENGINE=node` only the refusal of
 * a closed client is checked.
 */

import assert from "node:assert/strict";
import { connect, ConnectionError } from "../client.ts";
import { delay, startServer, startServerProcess, within } from "./_helpers.ts";

const ffi = Deno.env.get("NETSQLITE_ENGINE") !== "node";

function clientClosed(err: unknown): boolean {
  assert.ok(err instanceof ConnectionError, String(err));
  assert.equal(err.message, "Client is closed");
  return true;
}

Deno.test({
  name: "subscribe() still opening when close() runs: rejects with 'Client is closed', feed closed",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    const setup = await srv.client();
    await setup.exec("CREATE TABLE t (x)");
    await setup.close();

    const db = await connect({ ...srv.connectOptions, max: 2 });
    const p = db.subscribe({ tables: ["t"] });
    // (Handled before close() runs: close() fails the opening at once.)
    const rejected = assert.rejects(p, clientClosed);
    await db.close();
    await rejected;
    assert.equal(db.closed, true);

    // The server holds no feed for it: a change committed now reaches no one,
    // and a new client's feed still works.
    await using other = await connect({ ...srv.connectOptions, max: 2 });
    await using feed = await other.subscribe({ tables: ["t"] });
    await other.run("INSERT INTO t VALUES (1)");
    const { value } = await feed.next();
    assert.equal(value?.type === "table" && value.op, "insert");
  },
});

Deno.test({
  name: "subscribe() with close() at any later point: rejects as closed or yields a closed feed",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    let rejected = 0;
    for (const ms of [0, 0, 1, 2, 5, 20]) {
      const db = await connect(srv.connectOptions);
      const p = db.subscribe().catch((err) => (clientClosed(err), null));
      if (ms > 0) await delay(ms);
      await db.close();
      const sub = await p;
      if (sub === null) {
        rejected++;
        continue;
      }
      // Opened before close(): close() closed it.
      assert.deepEqual(await within(sub.next(), 5000), { value: undefined, done: true });
    }
    assert.ok(rejected > 0, "no subscribe() was still opening when close() ran");
  },
});

Deno.test("subscribe() after close() rejects with 'Client is closed', unsent", async () => {
  await using srv = await startServer();
  const db = await srv.client();
  const closing = db.close();
  await assert.rejects(db.subscribe({ tables: ["t"] }), clientClosed);
  await closing;
});

for (const connectTimeout of [10_000, 0]) {
  Deno.test({
    name:
      `subscribe() opening to a stopped server: close() gives it up at once (connectTimeout ${connectTimeout})`,
    ignore: !ffi,
    async fn() {
      await using srv = await startServerProcess();
      const db = await connect({ ...srv.connectOptions, connectTimeout });
      assert.deepEqual(await db.get("SELECT 1 AS one"), { one: 1 });
      srv.child.kill("SIGSTOP");
      try {
        // Its connection is accepted (the listening socket's backlog), its handshake never answered.
        const opening = db.subscribe();
        const settled = opening.then(() => "opened", (err) => err);
        await delay(200);
        const t0 = performance.now();
        assert.notEqual(await within(db.close(), 5000), "timeout", "close() waited for the feed");
        const err = await within(settled, 1000);
        const ms = performance.now() - t0;
        clientClosed(err);
        assert.ok(ms < 1000, `subscribe() failed ${ms.toFixed(0)} ms after close()`);
      } finally {
        srv.child.kill("SIGCONT");
      }
    },
  });
}
