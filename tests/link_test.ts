/** The client link's limits: requests above the server's maxFrameSize are refused before sending. */

import assert from "node:assert/strict";
import { ProtocolError } from "../protocol/errors.ts";
import { connect } from "../client.ts";
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

Deno.test("link: FRAME_TOO_LARGE names the limit, whose it is, and that nothing was sent (a key-value put past it)", async () => {
  await using srv = await startServer({ maxFrameSize: 4096 });
  await using db = await connect({ ...srv.connectOptions, max: 2 });
  const kv = db.kv("big");
  await kv.put("small", new Uint8Array(100));
  const serverLimit =
    /^Request exceeds the server's maxFrameSize \(4096 bytes\): nothing was sent; send less in one call \(smaller values or fewer statements\), or start the server with a larger --max-frame-size$/;
  await assert.rejects(kv.put("big", new Uint8Array(5000)), (err: Error) => {
    assert.ok(err instanceof ProtocolError);
    assert.equal((err as ProtocolError).code, "FRAME_TOO_LARGE");
    assert.match(err.message, serverLimit);
    return true;
  });
  // An atomic operation with a set past the limit: refused, and none of its changes made.
  await assert.rejects(
    kv.atomic().set("small", 1).set("big", new Uint8Array(5000)).commit(),
    (err: Error) => err instanceof ProtocolError && serverLimit.test(err.message),
  );
  assert.equal(await kv.get("big"), null);
  assert.deepEqual((await kv.get("small"))?.value, new Uint8Array(100));

  // A client whose own maxFrameSize is the smaller one says so.
  await using own = await connect({ ...srv.connectOptions, maxFrameSize: 2048 });
  await assert.rejects(
    own.kv("big").put("big", new Uint8Array(3000)),
    (err: Error) =>
      err instanceof ProtocolError &&
      /^Request exceeds this client's maxFrameSize \(2048 bytes, a connect\(\) option\): nothing was sent; .*, or connect with a larger maxFrameSize$/
        .test(err.message),
  );
  assert.equal(await own.kv("big").get("big"), null);
});
