/**
 * Key-value collections from a Deno KV user's side: calls given a shape
 * Deno KV takes (options of `atomic().set()`, `getMany()` of one key), and a
 * `Uint8Array` at the deepest level a value may nest. Run on both engines.
 */

import assert from "node:assert/strict";
import { SqliteError } from "../protocol/errors.ts";
import { startServer } from "./_helpers.ts";

/** `value` wrapped in `levels` arrays and objects, alternately. */
function nest(value: unknown, levels: number): unknown {
  for (let i = 0; i < levels; i++) value = i % 2 === 0 ? [value] : { a: value };
  return value;
}

Deno.test("KvCollection.put() stores a Uint8Array at the deepest level a value may nest, as a string there", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const kv = db.kv("deep");
  const bytes = nest(new Uint8Array([1, 2, 3]), 32);
  const text = nest("leaf", 32);
  // A string there was stored; a Uint8Array failed with a bare MsgpackError (no code).
  await kv.put("text", text);
  await kv.put("bytes", bytes);
  await kv.atomic().set("bytes2", bytes).commit();
  assert.deepEqual((await kv.get("text"))!.value, text);
  assert.deepEqual((await kv.get("bytes"))!.value, bytes);
  assert.deepEqual((await kv.get("bytes2"))!.value, bytes);
  // One level more is refused as any value nesting too deep: INVALID_PARAM naming where.
  await assert.rejects(kv.put("x", nest(new Uint8Array([1]), 33)), (e: unknown) => {
    assert.ok(e instanceof SqliteError, `expected a SqliteError, got ${e}`);
    assert.equal(e.code, "INVALID_PARAM");
    assert.match(
      e.message,
      /^Invalid key-value value: value\[0\]\.a\[0\].* nests deeper than 32 levels$/,
    );
    return true;
  });
});
