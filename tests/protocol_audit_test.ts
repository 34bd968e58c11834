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

Deno.test("A value of the wrong type is named by its MessagePack type: bin and map, not 'object'", async () => {
  await using srv = await startServer();
  const path = (srv.connectOptions as { path: string }).path;
  await using raw = await Raw.open(path);
  const cases: [unknown[], RegExp][] = [
    // SQL sent as bin (bytes), as a client in another language may.
    [[Op.Query, 2, new TextEncoder().encode("SELECT 1")], /got bin$/],
    [[Op.Query, 3, { sql: "SELECT 1" }], /got map$/],
    [[Op.Next, 4, new Uint8Array([1])], /got bin$/],
  ];
  for (const [request, message] of cases) {
    await raw.write(frame(request));
    const [id, status, error] = await raw.read(10_000) as [number, number, {
      code: string;
      message: string;
    }];
    assert.equal(id, request[1]);
    assert.equal(status, Status.Error);
    assert.equal(error.code, "BAD_REQUEST");
    assert.match(error.message, message);
  }
  // The connection stays usable.
  await raw.write(frame([Op.Query, 5, "SELECT 5"]));
  assert.deepEqual(await raw.read(10_000), [5, 0, [["5"], [[5]]]]);
});
