/** The client link's limits: requests above the server's maxFrameSize are refused before sending. */

import assert from "node:assert/strict";
import { ProtocolError } from "../protocol/errors.ts";
import { startServer } from "./_helpers.ts";

Deno.test("link: a request above the server's maxFrameSize fails with FRAME_TOO_LARGE and nothing is sent", async () => {
  await using srv = await startServer({ maxFrameSize: 4096 });
  await using db = await srv.client();
  assert.equal(db.serverInfo.limits.maxFrameSize, 4096);
  await db.exec("CREATE TABLE t (b BLOB)");
  await assert.rejects(
    db.run("INSERT INTO t VALUES (?)", [new Uint8Array(5000)]),
    (err: Error) => err instanceof ProtocolError && err.code === "FRAME_TOO_LARGE",
  );
  // The connection stayed up (the server never saw the frame) and the insert did not happen.
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]]);
  await db.run("INSERT INTO t VALUES (?)", [new Uint8Array(3000)]);
  assert.deepEqual(await db.values("SELECT length(b) FROM t"), [[3000]]);
  assert.equal(db.connections, 1);
});
