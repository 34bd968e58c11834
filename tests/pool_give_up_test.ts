/**
 * Waits for a pool connection that their callers give up (signal, `acquireTimeout`) or that
 * `close()` ends leave nothing behind in the pool: no queue entry holding back later callers, no
 * timer running on after the client closed.
 */

import assert from "node:assert/strict";
import { connect, ConnectionError } from "../mod.ts";
import { startServer, statsUntil, within } from "./_helpers.ts";

/** Runs the pending microtasks (no timer can fire meanwhile). */
async function microtasks(n = 50): Promise<void> {
  for (let i = 0; i < n; i++) await Promise.resolve();
}

for (const how of ["signal", "acquireTimeout"] as const) {
  Deno.test(`Client pool at a full server: a reserve() given up (${how}) after its new connection was refused leaves no wait behind: a later reserve() takes the room freed`, async () => {
    await using srv = await startServer({ maxConnections: 2 });
    const other = await srv.client(); // the server's second connection: it is full
    await using db = await connect({
      ...srv.connectOptions,
      max: 2,
      acquireTimeout: how === "acquireTimeout" ? 200 : 0,
    });
    await db.exec("CREATE TABLE t (x)");
    await db.run("INSERT INTO t VALUES (1), (2)");
    // An open cursor keeps the first connection busy (not idle) for as long as the test wants.
    const rows = db.iterate("SELECT x FROM t")[Symbol.asyncIterator]();
    assert.deepEqual((await rows.next()).value, { x: 1 });
    const refused = (await statsUntil(srv.connectOptions, () => true, "stats")).connections.refused;
    // reserve() opens a second connection, refused: it waits for the first instead, and gives up.
    const ac = new AbortController();
    const given = db.reserve({ signal: ac.signal });
    await statsUntil(srv.connectOptions, (s) => s.connections.refused > refused, "refused");
    if (how === "signal") {
      ac.abort();
      await assert.rejects(given, { name: "AbortError" });
    } else {
      await assert.rejects(given, { name: "ConnectionError", code: "ACQUIRE_TIMEOUT" });
    }
    // The server has room again: the next reserve() opens a connection there at once.
    await other.close();
    await statsUntil(
      srv.connectOptions,
      (s) => s.connections.open - (s.connections.admin ?? 0) === 1,
      "other's connection is closed",
    );
    const next = db.reserve();
    next.catch(() => {});
    const got = await within(next, 3000);
    assert.notEqual(got, "timeout", "the reserve() given up still held later ones back");
    if (got !== "timeout") {
      assert.deepEqual(await got.values("SELECT count(*) FROM t"), [[2]]);
      got.release();
    }
    await rows.return(undefined);
  });
}

Deno.test("Client pool at a full server: close() during the pause between opening attempts ends it at once (the call fails, no timer is left)", async () => {
  await using srv = await startServer({ maxConnections: 2 });
  await using other = await srv.client();
  const db = await connect({ ...srv.connectOptions, max: 2 });
  const tx = await db.reserve(); // the first connection: plain calls need a second one
  const refused = (await statsUntil(srv.connectOptions, () => true, "stats")).connections.refused;
  let failure: unknown = null;
  const call = db.values("SELECT 1").catch((err) => failure = err);
  await statsUntil(srv.connectOptions, (s) => s.connections.refused > refused, "refused");
  tx.release();
  await db.close();
  await microtasks();
  assert.ok(failure instanceof ConnectionError, `not failed at once: ${failure}`);
  assert.match(failure.message, /Client is closed/);
  await call;
  assert.deepEqual(await other.values("SELECT 2"), [[2]]);
});
