/**
 * PROTOCOL.md as a third party reads it to write a client in another
 * language: what the server answers to requests written from the document
 * alone, as raw frames (tests/_raw.ts), on a real server on a temp socket.
 */

import assert from "node:assert/strict";
import { Op, Status } from "../protocol/messages.ts";
import { startServer } from "./_helpers.ts";
import { frame, Raw } from "./_raw.ts";

Deno.test("A hello without its options map is refused as a hello, naming what it must carry", async () => {
  await using srv = await startServer();
  const path = (srv.connectOptions as { path: string }).path;
  for (const hello of [[Op.Hello, 1], [Op.Hello, 1, null], [Op.Hello, 1, "v1"]]) {
    await using raw = new Raw(await Deno.connect({ transport: "unix", path }));
    await raw.write(frame(hello));
    const [id, status, error] = await raw.read(10_000) as [number, number, {
      code: string;
      message: string;
    }];
    assert.equal(id, 0, "a connection-level error");
    assert.equal(status, Status.Error);
    assert.equal(error.code, "BAD_REQUEST");
    // Was "first request must be hello", which puzzles a client that sent one.
    assert.match(error.message, /^Cannot start session: hello must carry \{version: integer\}/);
    assert.equal(await raw.read(10_000), "EOF");
  }
  // A request other than hello is still refused as before.
  await using raw = new Raw(await Deno.connect({ transport: "unix", path }));
  await raw.write(frame([Op.Query, 1, "SELECT 1"]));
  const [id, , error] = await raw.read(10_000) as [number, number, { message: string }];
  assert.equal(id, 0);
  assert.match(error.message, /first request must be hello/);
});
