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

Deno.test("KvAtomic.set(), check(), delete() and commit() refuse an argument too many (Deno KV's expireIn would be ignored)", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const kv = db.kv("atomic");
  const op = kv.atomic() as unknown as Record<string, (...args: unknown[]) => unknown>;
  assert.throws(
    () => op.set("session", "token", { expireIn: 60_000 }),
    new TypeError(
      "Invalid KvAtomic.set() call: it takes at most 2 arguments (key, value), got 3: " +
        "an atomic operation takes no options (entries do not expire)",
    ),
  );
  assert.throws(
    () => op.check("session", null, "again"),
    new TypeError(
      "Invalid KvAtomic.check() call: it takes at most 2 arguments (key, version), got 3",
    ),
  );
  assert.throws(
    () => op.delete("session", {}),
    new TypeError("Invalid KvAtomic.delete() call: it takes at most 1 argument (key), got 2"),
  );
  await assert.rejects(
    async () => await op.commit({}),
    new TypeError("Invalid KvAtomic.commit() call: it takes no arguments, got 1"),
  );
  // Nothing was added by the refused calls, nor written.
  assert.deepEqual(await kv.atomic().commit(), { versions: [] });
  assert.equal(await kv.get("session"), null);
  assert.equal(await kv.count(), 0);
});

Deno.test("KvCollection.getMany() refuses keys that are not an array with a TypeError saying what to pass", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const kv = db.kv("many");
  await kv.put("a", 1);
  const getMany = kv.getMany.bind(kv) as (keys: unknown) => Promise<unknown>;
  // They failed with "keys.map is not a function" or "Cannot read properties of null".
  await assert.rejects(
    getMany("a"),
    new TypeError(
      "Invalid KvCollection.getMany() call: expected an array of keys, got a string " +
        "(one key: pass [key], or use get())",
    ),
  );
  await assert.rejects(
    getMany(null),
    new TypeError("Invalid KvCollection.getMany() call: expected an array of keys, got null"),
  );
  await assert.rejects(
    getMany(new Set([["a"]])),
    new TypeError(
      "Invalid KvCollection.getMany() call: expected an array of keys, got an instance of Set",
    ),
  );
  await assert.rejects(
    (kv.getMany as () => Promise<unknown>)(),
    new TypeError("Invalid KvCollection.getMany() call: expected an array of keys, got undefined"),
  );
  const [entry] = await kv.getMany(["a"]);
  assert.equal(entry!.value, 1);
});

Deno.test("KvCollection.list() given Deno KV's second options argument says to pass one options object", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const kv = db.kv("list");
  const list = kv.list.bind(kv) as (...args: unknown[]) => AsyncGenerator<unknown>;
  await assert.rejects(
    Array.fromAsync(list({ prefix: ["a"] }, { limit: 10 })),
    new TypeError(
      "Invalid KvCollection.list() call: it takes at most 1 argument (options), got 2: " +
        "pass limit and reverse in the one options object, with prefix, start and end",
    ),
  );
});
