/**
 * Waits for a pool connection that their callers give up (signal, `acquireTimeout`) or that
 * `close()` ends leave nothing behind in the pool: no queue entry holding back later callers, no
 * timer running on after the client closed.
 */

import assert from "node:assert/strict";
import { connect, ConnectionError } from "../mod.ts";
import { startServer, statsUntil } from "./_helpers.ts";

/** Runs the pending microtasks (no timer can fire meanwhile). */
async function microtasks(n = 50): Promise<void> {
  for (let i = 0; i < n; i++) await Promise.resolve();
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
