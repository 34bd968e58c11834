/**
 * A client closed (or killed) while thousands of its writes wait behind
 * another client's write transaction: the server stops reading a connection
 * at 4096 queued requests, so it reads the end of the stream only after
 * them. Nobody is left to learn what those writes did: the server drops
 * them unrun once it finds the client gone, instead of running them when the
 * writer comes free.
 */

import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import { startServer, statsUntil } from "./_helpers.ts";

Deno.test("writes queued behind another client's transaction by a client that closed are dropped, not run later", async () => {
  // The queued writes wait far longer than the check takes (without it, the busy timeout ended
  // the wait, its error's write found the client gone).
  await using srv = await startServer({ busyTimeout: 60_000 });
  await using holder = await connect(srv.connectOptions);
  await holder.exec("CREATE TABLE t (x)");
  const openBefore = (await statsUntil(srv.connectOptions, () => true, "stats")).connections.open;
  await using writer = await holder.reserve();
  await writer.exec("BEGIN IMMEDIATE");
  const victim = await connect({ ...srv.connectOptions, max: 1 });
  // More than the 4096 a connection may have waiting: the rest stay unread in the socket.
  const n = 6000;
  const calls: Promise<unknown>[] = [];
  for (let i = 0; i < n; i++) {
    calls.push(victim.run("INSERT INTO t VALUES (?)", [i]).catch((e) => e));
  }
  await statsUntil(srv.connectOptions, (s) => s.writer.waiting >= 1, "the victim's write waits");
  await victim.close();
  const settled = await Promise.all(calls);
  assert.ok(settled.every((r) => r instanceof Error), "every call of the closed client failed");
  // Found gone while its head write waited: its connection closed, the writer still held.
  await statsUntil(
    srv.connectOptions,
    (s) => s.connections.open === openBefore,
    "the closed client's connection ends",
  );
  await writer.exec("COMMIT");
  assert.deepEqual(await holder.values("SELECT count(*) FROM t"), [[0]]);
});
