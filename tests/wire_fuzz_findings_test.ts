/**
 * Regression tests for what tests/wire_fuzz_test.ts found, on a real server
 * (the engine NETSQLITE_ENGINE selects).
 */

import assert from "node:assert/strict";
import { decodeMsgpack, Encoded, MsgpackError } from "../protocol/msgpack.ts";
import { startServer } from "./_helpers.ts";
import { frame, Raw } from "./_raw.ts";

const h = (s: string) => new Uint8Array(s.match(/../g)!.map((b) => parseInt(b, 16)));

Deno.test("msgpack: a map holding a key twice is refused, not read as its last value", () => {
  // {a: true, a: "x"}; {"": 1, "": 2}; {constructor: 1} alone is fine (an own key, not the prototype's).
  for (const [hex, key] of [["82a161c3a161a178", "a"], ["82a001a002", ""]] as const) {
    assert.throws(() => decodeMsgpack(h(hex)), (err: unknown) => {
      assert.ok(err instanceof MsgpackError, String(err));
      assert.match(
        (err as Error).message,
        new RegExp(`Map key ${JSON.stringify(key)} appears twice`),
      );
      return true;
    });
  }
  assert.deepEqual(decodeMsgpack(h("81ab636f6e7374727563746f7201")), { constructor: 1 });
  assert.deepEqual(decodeMsgpack(h("82a161c3a162c2")), { a: true, b: false });
});

Deno.test("Session refuses a request whose named parameters hold a name twice instead of binding one of them", async () => {
  await using srv = await startServer();
  {
    await using raw = await Raw.open(srv.connectOptions.path!);
    // SELECT :a with {a: true, a: "x"}: which value was meant cannot be known.
    await raw.write(frame([2, 2, "SELECT :a AS a", new Encoded(h("82a161c3a161a178"), 0), null]));
    const reply = await raw.read(5000) as [number, number, { code: string; message: string }];
    assert.equal(reply[0], 0, JSON.stringify(reply));
    assert.equal(reply[1] & 1, 1);
    assert.equal(reply[2].code, "BAD_REQUEST");
    assert.match(reply[2].message, /Map key "a" appears twice/);
    assert.equal(await raw.read(5000), "EOF");
  }
  // The server goes on serving.
  await using c = await srv.client();
  assert.deepEqual(await c.values("SELECT :a", { a: "x" }), [["x"]]);
});
