/**
 * Key-value collections from a Deno KV user's side: calls given a shape
 * Deno KV takes (options of `atomic().set()`, `getMany()` of one key), and a
 * `Uint8Array` at the deepest level a value may nest. Run on both engines.
 */

import assert from "node:assert/strict";
import type { KvKeyPart } from "../client.ts";
import { connect } from "../client.ts";
import { SqliteError } from "../protocol/errors.ts";
import { startServer, takeEvents } from "./_helpers.ts";

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

Deno.test('KvCollection.list() pages as README says (start: [...last.key, ""], or end: last.key in reverse), keys changed between pages skipping nothing', async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const kv = db.kv("pages");
  // Keys that sit right after one another in tuple order: a key and its extensions.
  const keys: (string | number | bigint)[][] = [
    [],
    [""],
    ["a"],
    ["a", ""],
    ["a", "", ""],
    [
      "a",
      -0,
    ],
    ["a", 0],
    ["a", 0n],
    ["a\0"],
    ["b"],
    [1],
    [1n],
  ];
  for (let i = 0; i < 40; i++) keys.push(["n", i]);
  for (const k of keys) await kv.put(k, 0);
  const label = (k: unknown[]) =>
    JSON.stringify(k, (_, v) => typeof v === "bigint" ? `${v}n` : Object.is(v, -0) ? "-0" : v);
  const all = (await Array.fromAsync(kv.list())).map((e) => label(e.key));
  assert.equal(all.length, keys.length);
  for (const reverse of [false, true]) {
    const seen: string[] = [];
    let bound: KvKeyPart[] | undefined;
    for (let page = 0;; page++) {
      const entries = await Array.fromAsync(
        kv.list(reverse ? { end: bound, reverse, limit: 5 } : { start: bound, limit: 5 }),
      );
      if (entries.length === 0) break;
      seen.push(...entries.map((e) => label(e.key)));
      const last = entries[entries.length - 1].key;
      bound = reverse ? last : [...last, ""];
      if (page === 2) {
        // Between pages: a key before the position (not listed), one after it (listed), and a
        // delete of a key not listed yet (not listed).
        await kv.put(reverse ? ["zz"] : ["a", "new"], 1);
        await kv.put(reverse ? ["n", 0, "x"] : ["n", 39, "x"], 1);
        await kv.delete(["n", 20]);
      }
    }
    const expected = all.filter((k) => k !== label(["n", 20]));
    expected.splice(
      expected.indexOf(label(["n", reverse ? 0 : 39])) + 1,
      0,
      label(["n", reverse ? 0 : 39, "x"]),
    );
    if (reverse) expected.reverse();
    assert.deepEqual(seen, expected);
    // Undo for the next direction.
    await kv.delete(reverse ? ["zz"] : ["a", "new"]);
    await kv.delete(["n", 0, "x"]);
    await kv.delete(["n", 39, "x"]);
    await kv.put(["n", 20], 0);
  }
});

Deno.test("KvCollection.put() refuses a key part of another type naming what it is (Deno KV's Uint8Array and boolean parts)", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const kv = db.kv("keys");
  const put = kv.put.bind(kv) as (key: unknown, value: unknown) => Promise<number>;
  const message = (got: string) =>
    new SqliteError(
      "INVALID_PARAM",
      `Invalid key-value key: key parts must be strings, numbers or bigints, got ${got}`,
    );
  // They said "got object" for each of null, a Uint8Array and an array.
  for (
    const [part, got] of [
      [true, "a boolean"],
      [null, "null"],
      [new Uint8Array([1]), "an instance of Uint8Array"],
      [["nested"], "an array"],
      [undefined, "undefined"],
    ] as const
  ) {
    await assert.rejects(put(["a", part], 1), (e: unknown) => {
      assert.ok(e instanceof SqliteError);
      assert.equal(e.code, "INVALID_PARAM");
      assert.equal(e.message, message(got).message);
      return true;
    });
  }
  assert.equal(await kv.count(), 0);
});

Deno.test("KvCollection.list() without a limit over a small range takes no cursor: 200 listings at once all succeed", async () => {
  await using srv = await startServer();
  await using db = await connect(srv.connectOptions); // the default pool: 4 connections
  const kv = db.kv("many");
  await db.transaction(async (tx) => {
    for (let i = 0; i < 200; i++) for (let j = 0; j < 3; j++) await tx.kv("many").put([i, j], j);
  });
  // Each unbounded listing opened a cursor: past max × maxCursors (64) open at once, some
  // failed with BAD_REQUEST "Too many open cursors: 16 per connection; close one first".
  const lists = await Promise.all(
    Array.from({ length: 200 }, (_, i) => Array.fromAsync(kv.list({ prefix: [i] }))),
  );
  for (let i = 0; i < 200; i++) {
    assert.deepEqual(lists[i].map((e) => [e.key, e.value]), [[[i, 0], 0], [[i, 1], 1], [
      [i, 2],
      2,
    ]]);
  }
  // A range larger than one query still streams through a cursor, from one snapshot.
  await db.transaction(async (tx) => {
    for (let i = 0; i < 1001; i++) await tx.kv("many").put(["big", i], i);
  });
  const big = await Array.fromAsync(kv.list({ prefix: ["big"] }));
  assert.deepEqual(big.map((e) => e.value), Array.from({ length: 1001 }, (_, i) => i));
  const limited = await Array.fromAsync(kv.list({ prefix: ["big"], limit: 1001, reverse: true }));
  assert.equal(limited.length, 1001);
  assert.equal(limited[0].value, 1000);
});

Deno.test("KvAtomic.commit() applies the operation as it was at the call: checks and changes added afterwards are not part of it", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const kv = db.kv("late");
  const op = kv.atomic().set("a", 1);
  const committed = op.commit();
  // Added while the commit waits for its transaction: they ran with it (a check added later
  // still would have been skipped, its checks already evaluated, while a set was applied).
  op.check("a", 123456).set("b", 2);
  assert.equal((await committed).versions.length, 1);
  assert.equal((await kv.get("a"))!.value, 1);
  assert.equal(await kv.get("b"), null);
  // The operation can be committed again, with what was added since.
  await assert.rejects(
    op.commit(),
    (e: unknown) => e instanceof SqliteError && e.code === "KV_CONFLICT",
  );
  assert.equal(await kv.get("b"), null);
});

Deno.test({
  name:
    "Client.subscribe({ kv: true }) reports every collection's changes and no table's, as README says",
  ignore: Deno.env.get("NETSQLITE_ENGINE") === "node", // node:sqlite has no update hook
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    await db.exec("CREATE TABLE t (x)");
    await using feed = await db.subscribe({ kv: true });
    await db.run("INSERT INTO t VALUES (1)");
    await db.kv("a").put("k", 1);
    await db.kv("b").put("k", 2);
    await db.kv("b").delete("k");
    const events = await takeEvents(feed, 3, 20_000);
    assert.deepEqual(
      events.map((e) => e.type === "kv" ? [e.collection, e.key, e.op] : e),
      [["a", ["k"], "insert"], ["b", ["k"], "insert"], ["b", ["k"], "delete"]],
    );
  },
});
