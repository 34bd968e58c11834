/**
 * What a client that sends a value of the wrong kind is told: the error names
 * what the op wanted (a statement handle, a cursor, a subscription) and, for
 * a number that is no integer, the value sent; an empty frame is called
 * empty. Found by sending every op's fields with wrong types to a live server.
 */

import assert from "node:assert/strict";
import { Op } from "../protocol/messages.ts";
import { startServer } from "./_helpers.ts";
import { frame, Raw } from "./_raw.ts";

type Reply = [number, number, { code: string; message: string }];

Deno.test("Session names a cursor, a subscription, and a non-integer number in the BAD_REQUEST it answers", async () => {
  await using srv = await startServer();
  await using raw = await Raw.open((srv.connectOptions as { path: string }).path);
  const cases: [unknown[], string][] = [
    [[Op.Next, 0, "1"], "Expected a cursor, got string"],
    [[Op.CloseCursor, 0, null], "Expected a cursor, got null"],
    [[Op.Next, 0, 1.5], "Expected a cursor, got 1.5"],
    [[Op.Unsubscribe, 0, [1]], "Expected a subscription, got array"],
    [[Op.Finalize, 0, NaN], "Expected a statement handle, got NaN"],
    [[Op.Query, 0, Infinity], "Expected SQL text or a statement handle, got Infinity"],
    [[Op.Exec, 0, -0.5], "Expected SQL text, got -0.5"],
    [[Op.Run, 0, "SELECT 1", 2.5], "Expected parameters as an array or a map, got 2.5"],
    // An integer stays "number", as before.
    [[Op.Exec, 0, 42], "Expected SQL text, got number"],
  ];
  let id = 1;
  for (const [msg, message] of cases) {
    msg[1] = ++id;
    await raw.write(frame(msg));
    const reply = await raw.read(10_000) as Reply;
    assert.deepEqual(reply, [id, 1, { code: "BAD_REQUEST", message }], JSON.stringify(msg));
  }
  // The connection goes on.
  await raw.write(frame([Op.Query, ++id, "SELECT 7", null]));
  assert.deepEqual(await raw.read(10_000), [id, 0, [["7"], [[7]]]]);
});

Deno.test("Session answers a zero-length frame with a BAD_REQUEST that calls it empty, then closes", async () => {
  await using srv = await startServer();
  const path = (srv.connectOptions as { path: string }).path;
  // Before the hello and after it.
  for (const hello of [false, true]) {
    await using raw = hello
      ? await Raw.open(path)
      : new Raw(await Deno.connect({ transport: "unix", path }));
    await raw.write(new Uint8Array(4));
    const reply = await raw.read(10_000) as Reply;
    assert.deepEqual(reply, [0, 1, {
      code: "BAD_REQUEST",
      message: "Cannot decode frame: Empty: 0 bytes, where one MessagePack value is due",
    }]);
    assert.equal(await raw.read(10_000), "EOF");
  }
  // Other clients are served.
  await using db = await srv.client();
  assert.deepEqual(await db.query("SELECT 1 AS one"), [{ one: 1 }]);
});
