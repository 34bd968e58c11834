/**
 * Key-value checks made by the client before anything is sent, and change
 * feeds meeting entries written by SQL directly: `Uint8Array` subclasses
 * and `Buffer` as values, collection names, `atomic().check()` versions,
 * the options and argument count of the collection's calls, and a key or value that does not decode reaching a feed with or without
 * values. The feed tests need the FFI engine (node:sqlite has no update
 * hook); the rest run on both.
 */

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import type { Subscription } from "../client.ts";
import { SqliteError } from "../protocol/errors.ts";
import { encodeKey } from "../client/kv_key.ts";
import { startServer, takeEvents } from "./_helpers.ts";

const ffi = Deno.env.get("NETSQLITE_ENGINE") !== "node";

/** A predicate for `assert.rejects`/`throws`: `code` and the exact `message`. */
function error(code: string, message: string): (e: unknown) => boolean {
  return (e: unknown): boolean => {
    assert.ok(e instanceof SqliteError, `expected a SqliteError, got ${e}`);
    assert.equal(e.code, code);
    assert.equal(e.message, message);
    return true;
  };
}

/** The next `n` events of `sub`; 20 s here (feeds of large values). */
const take = (sub: Subscription, n: number, ms = 20_000) => takeEvents(sub, n, ms);

class Tagged extends Uint8Array {
  tag = "important";
}

Deno.test("KvCollection.put() refuses Uint8Array subclasses naming where, and stores a Buffer as its bytes", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const kv = db.kv("bytes");
  const subclass = (path: string, name: string): string =>
    `Invalid key-value value: ${path} is an instance of ${name} (a Uint8Array subclass), ` +
    "which would read back as a plain Uint8Array without its class or properties: " +
    "store new Uint8Array(bytes), or an object holding the bytes and the rest";
  await assert.rejects(
    kv.put("tagged", new Tagged([3])),
    error("INVALID_PARAM", subclass("value", "Tagged")),
  );
  await assert.rejects(
    kv.put("nested", { a: [1, new (class Plain extends Uint8Array {})(2)] }),
    error("INVALID_PARAM", subclass("value.a[1]", "Plain")),
  );
  // A subclass of Buffer is not a Buffer either.
  class MyBuffer extends Buffer {}
  await assert.rejects(
    kv.put("mybuffer", Object.setPrototypeOf(Buffer.from([1]), MyBuffer.prototype)),
    error("INVALID_PARAM", subclass("value", "MyBuffer")),
  );
  assert.throws(
    () => kv.atomic().set("tagged", { t: new Tagged(1) }),
    error("INVALID_PARAM", subclass("value.t", "Tagged")),
  );
  assert.equal(await kv.count(), 0, "nothing was stored");

  // A Buffer (Node's, also from node:buffer in Deno) is stored as its bytes
  // and reads back as a plain Uint8Array, as a BLOB parameter does in SQL.
  await kv.put("buffer", { b: Buffer.from([1, 2, 255]), s: Buffer.from("hi").subarray(1) });
  const got = (await kv.get<{ b: Uint8Array; s: Uint8Array }>("buffer"))!.value;
  assert.equal(Object.getPrototypeOf(got.b), Uint8Array.prototype);
  assert.deepEqual(got, { b: new Uint8Array([1, 2, 255]), s: new Uint8Array([0x69]) });
  const [v] = (await kv.atomic().set("buffer2", Buffer.alloc(2)).commit()).versions;
  assert.ok(typeof v === "number");
  assert.deepEqual((await kv.get("buffer2"))!.value, new Uint8Array(2));

  // The SQL API binds any Uint8Array, subclasses included, as a BLOB of its
  // bytes (a BLOB holds bytes only), read back as a plain Uint8Array.
  const [row] = await db.values<[Uint8Array, Uint8Array]>("SELECT ?, ?", [
    Buffer.from([9]),
    new Tagged([8]),
  ]);
  assert.deepEqual(row, [new Uint8Array([9]), new Uint8Array([8])]);
  assert.equal(Object.getPrototypeOf(row[0]), Uint8Array.prototype);
});

Deno.test("KvCollection.put() refuses a Uint8Array whose bytes are gone with INVALID_PARAM naming where", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const kv = db.kv("gone");
  const detached = new Uint8Array([1, 2, 3]);
  structuredClone(detached.buffer, { transfer: [detached.buffer] });
  await assert.rejects(
    kv.put("d", { a: detached }),
    error(
      "INVALID_PARAM",
      "Invalid key-value value: value.a is not storable: " +
        "Uint8Array's ArrayBuffer is detached (transferred): its bytes are gone",
    ),
  );
  const resizable = new ArrayBuffer(8, { maxByteLength: 16 });
  const view = new Uint8Array(resizable, 4, 4);
  resizable.resize(2);
  assert.throws(
    () => kv.atomic().set("r", [view]),
    error(
      "INVALID_PARAM",
      "Invalid key-value value: value[0] is not storable: " +
        "Uint8Array is out of bounds of its ArrayBuffer (resized smaller than the view)",
    ),
  );
  // An empty Uint8Array is not a gone one.
  await kv.put("empty", new Uint8Array(0));
  assert.deepEqual((await kv.get("empty"))!.value, new Uint8Array(0));
});

Deno.test("Client.kv() refuses a collection name the collection column cannot hold exactly", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const name = (message: string) =>
    error("INVALID_PARAM", `Invalid key-value collection name: ${message}`);
  assert.throws(
    () => db.kv("nul\0name"),
    name('"nul\\u0000name" contains a NUL character, which a collection name cannot hold'),
  );
  assert.throws(
    () => db.kv("a\uD800b"),
    name(
      '"a\\ud800b" contains a lone UTF-16 surrogate, which UTF-8 (and so the collection column) ' +
        "cannot hold",
    ),
  );
  assert.throws(() => db.kv(""), name('expected a non-empty string, got ""'));
  assert.throws(() => db.kv(42 as never), name("expected a non-empty string, got a number"));
  assert.throws(
    () => db.kv(undefined as never),
    name("expected a non-empty string, got undefined"),
  );
  await db.transaction((tx) => {
    assert.throws(
      () => tx.kv("x\0"),
      name('"x\\u0000" contains a NUL character, which a collection name cannot hold'),
    );
    return Promise.resolve();
  });
  // The same rule for the collections a feed names (before connecting, so on either engine).
  await assert.rejects(
    db.subscribe({ kv: ["ok", "nul\0name"] }),
    error(
      "INVALID_PARAM",
      'Invalid key-value collection name in kv: "nul\\u0000name" contains a NUL character, ' +
        "which a collection name cannot hold",
    ),
  );
  // Names that are fine, however unusual, are stored exactly.
  for (const ok of ["nul name", "ü", " ", "a\u{1F600}b", "'; DROP TABLE x; --"]) {
    await db.kv(ok).put("k", ok);
    assert.deepEqual((await db.kv(ok).get("k"))!.value, ok);
  }
  assert.deepEqual(
    (await db.values<[string]>(
      "SELECT DISTINCT collection FROM netsqlite_kv ORDER BY collection",
    )).map((r) => r[0]),
    [" ", "'; DROP TABLE x; --", "a\u{1F600}b", "nul name", "ü"],
  );
});

Deno.test("KvAtomic.check() refuses a version no entry can have, as put({ ifVersion }) does", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const kv = db.kv("versions");
  const v = await kv.put("k", 1);
  for (
    const [bad, shown] of [
      [1.5, "1.5"],
      [NaN, "NaN"],
      [Infinity, "Infinity"],
      [2 ** 53, String(2 ** 53)],
      ["1", 'the string "1"'],
      [1n, "the bigint 1n"],
      [undefined, "undefined"],
    ] as const
  ) {
    assert.throws(
      () => kv.atomic().check("k", bad as never),
      error("INVALID_PARAM", `Invalid check() version: expected an integer or null, got ${shown}`),
    );
    // (ifVersion: undefined means no condition.)
    if (bad === undefined) continue;
    await assert.rejects(
      kv.put("k", 2, { ifVersion: bad as never }),
      error("INVALID_PARAM", `Invalid ifVersion: expected an integer or null, got ${shown}`),
    );
  }
  assert.equal((await kv.get("k"))!.version, v, "nothing was written");
  // Valid checks still hold or conflict as before.
  const r = await kv.atomic().check("k", v).check("absent", null).set("k", 3).commit();
  assert.equal(r.versions.length, 1);
  await assert.rejects(
    kv.atomic().check("k", v).set("k", 4).commit(),
    (e: unknown) => e instanceof SqliteError && e.code === "KV_CONFLICT",
  );
  assert.equal((await kv.get("k"))!.value, 3);
});

Deno.test({
  name:
    "Subscription: a key that does not decode ends a feed without values too, naming the collection and how to resume",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    const kv = db.kv("bk");
    await kv.put("init", 1);
    await using feed = await db.subscribe({ kv: ["bk"] }); // values: false
    await kv.put("before", 1);
    await db.run(
      "INSERT INTO netsqlite_kv (collection, key, value, version) VALUES ('bk', x'ff', x'01', 1000)",
    );
    await kv.put("after", 1);
    const [before] = await take(feed, 1);
    assert.ok(before.type === "kv");
    assert.deepEqual([before.op, before.collection, before.key], ["insert", "bk", ["before"]]);
    const bad = before.seq + 1; // the next change of the server, into this collection
    await assert.rejects(
      feed.next(),
      error(
        "KV_CORRUPT",
        `Cannot read key-value entry in collection "bk" with key x'ff': the key is malformed: ` +
          `it holds an unknown part type 0xff (the change feed ended at that change, seq ${bad}: ` +
          `subscribe with since: ${bad} to resume after it)`,
      ),
    );
    assert.deepEqual(await feed.next(), { value: undefined, done: true });
    // Resuming as the message says skips that change and goes on.
    await using resumed = await db.subscribe({ kv: ["bk"], since: bad });
    const [after] = await take(resumed, 1);
    assert.deepEqual(after.type === "kv" ? [after.op, after.key] : after, ["insert", ["after"]]);
  },
});

Deno.test({
  name:
    "Subscription: with values, a value stored as TEXT or not MessagePack ends the feed with KV_CORRUPT",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    await using feed = await db.subscribe({ kv: ["tv"], values: true });
    await db.kv("tv").put("ok", { n: 1 });
    await db.run(
      "INSERT INTO netsqlite_kv (collection, key, value, version) VALUES ('tv', ?, 'text', 1000)",
      [encodeKey(["text"])],
    );
    const [ok] = await take(feed, 1);
    assert.deepEqual(ok.type === "kv" ? [ok.key, ok.value] : ok, [["ok"], { n: 1 }]);
    const bad = ok.type === "kv" ? ok.seq + 1 : -1;
    await assert.rejects(
      feed.next(),
      error(
        "KV_CORRUPT",
        `Cannot read key-value entry in collection "tv" under key ["text"]: the stored value is ` +
          `TEXT, not a MessagePack BLOB (the change feed ended at that change, seq ${bad}: ` +
          `subscribe with since: ${bad} to resume after it)`,
      ),
    );
    // Without values the same change is delivered (its key decodes).
    await using plain = await db.subscribe({ kv: ["tv"], since: bad - 1 });
    const [text] = await take(plain, 1);
    assert.deepEqual(text.type === "kv" ? [text.op, text.key, "value" in text] : text, [
      "insert",
      ["text"],
      false,
    ]);
  },
});

Deno.test("KvCollection calls refuse an unknown option (a misspelt ifVersion would make a put unconditional), wrong option values and an extra argument with a TypeError; nothing is written", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const kv = db.kv("opts");
  await kv.put("k", 1);
  const v = await kv.put("k", 2);
  // deno-lint-ignore no-explicit-any
  const any = kv as any;
  const list = (options: unknown, ...more: unknown[]) =>
    Array.fromAsync(any.list(options, ...more));
  const refused: [string, () => Promise<unknown>, string][] = [
    [
      "put ifversion",
      () => any.put("k", 4, { ifversion: v - 1 }),
      'Invalid option "ifversion": not a KvCollection.put() option; did you mean "ifVersion"?',
    ],
    [
      "put options 5",
      () => any.put("k", 4, 5),
      "Invalid KvCollection.put() options: expected { ifVersion }, got 5",
    ],
    [
      "put extra",
      () => any.put("k", 4, {}, 5),
      "Invalid KvCollection.put() call: it takes at most 3 arguments (key, value, options), got 4",
    ],
    [
      "list revers",
      () => list({ revers: true }),
      'Invalid option "revers": not a KvCollection.list() option; did you mean "reverse"?',
    ],
    [
      "list prefx",
      () => list({ prefx: ["k"] }),
      'Invalid option "prefx": not a KvCollection.list() option; did you mean "prefix"?',
    ],
    [
      "list limit string",
      () => list({ limit: "1" }),
      'Invalid KvCollection.list() option "limit": expected an integer from 0 to 2^53 - 1, got "1"',
    ],
    [
      "list limit -1",
      () => list({ limit: -1 }),
      'Invalid KvCollection.list() option "limit": expected an integer from 0 to 2^53 - 1, got -1',
    ],
    [
      "list limit 1.5",
      () => list({ limit: 1.5 }),
      'Invalid KvCollection.list() option "limit": expected an integer from 0 to 2^53 - 1, got 1.5',
    ],
    [
      "list reverse string",
      () => list({ reverse: "yes" }),
      'Invalid KvCollection.list() option "reverse": expected a boolean, got "yes"',
    ],
    [
      "list extra",
      () => list({ prefix: ["k"] }, { limit: 1 }),
      "Invalid KvCollection.list() call: it takes at most 1 argument (options), got 2: " +
      "pass limit and reverse in the one options object, with prefix, start and end",
    ],
    [
      "count prefx",
      () => any.count({ prefx: ["k"] }),
      'Invalid option "prefx": not a KvCollection.count() option; did you mean "prefix"?',
    ],
    [
      "count limit",
      () => any.count({ limit: 1 }),
      'Invalid option "limit": not a KvCollection.count() option (known: prefix, start, end)',
    ],
    [
      "get extra",
      () => any.get("k", { consistency: "strong" }),
      "Invalid KvCollection.get() call: it takes at most 1 argument (key), got 2",
    ],
    [
      "getMany extra",
      () => any.getMany(["k"], ["j"]),
      "Invalid KvCollection.getMany() call: it takes at most 1 argument (keys), got 2: pass every key in the one array",
    ],
    [
      "delete extra",
      () => any.delete("k", {}),
      "Invalid KvCollection.delete() call: it takes at most 1 argument (key), got 2",
    ],
  ];
  for (const [label, call, message] of refused) {
    await assert.rejects(call(), { name: "TypeError", message }, label);
  }
  assert.deepEqual(await kv.get("k"), { key: ["k"], value: 2, version: v }, "nothing was written");
  // The options spelt right: the stale ifVersion conflicts; null is no options.
  await assert.rejects(
    kv.put("k", 4, { ifVersion: v - 1 }),
    error("KV_CONFLICT", 'Key-value check failed: key ["k"] is not at version ' + (v - 1)),
  );
  await kv.put("j", 1, null as never);
  assert.deepEqual(
    (await list({ reverse: true, limit: 1 })).map((e) => (e as { key: unknown }).key),
    [["k"]],
  );
  assert.deepEqual((await list(null)).length, 2);
  assert.equal(await any.count(null), 2);
  assert.equal(await kv.count({ prefix: ["j"] }), 1);
});

Deno.test("KvAtomic keeps each key as it was at set(), check() and delete(): a key array reused in a loop writes every entry, and one changed later cannot slip past the checks", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const kv = db.kv("users");
  // The loop shape that lost all but the last entry: one key array, reused.
  const key: (string | number)[] = ["user", 0];
  const op = kv.atomic();
  for (const id of [1, 2, 3]) {
    key[1] = id;
    op.set(key, { id });
  }
  assert.deepEqual((await op.commit()).versions, [1, 2, 3]);
  const stored: unknown[] = [];
  for await (const e of kv.list()) stored.push([e.key, e.value]);
  assert.deepEqual(stored, [[["user", 1], { id: 1 }], [["user", 2], { id: 2 }], [
    ["user", 3],
    { id: 3 },
  ]]);
  // Changed after set() to what the API refuses: the key set is the one written.
  const bad = db.kv("bad");
  for (const later of [NaN, 2n ** 70n, "\uD800", {}]) {
    const k: unknown[] = ["a"];
    const o = bad.atomic().set(k as never, 1);
    k[0] = later;
    await o.commit();
  }
  const keys: unknown[] = [];
  for await (const e of bad.list()) keys.push(e.key);
  assert.deepEqual(keys, [["a"]]);
  // check() checks the key it was given, and delete() deletes it.
  const chk = db.kv("chk");
  await chk.put("a", 1);
  const ck = ["b"];
  const op2 = chk.atomic().check(ck, null).set("c", 1);
  const dk = ["c"];
  const op3 = chk.atomic().delete(dk);
  ck[0] = "a";
  dk[0] = "a";
  assert.equal((await op2.commit()).versions.length, 1);
  await op3.commit();
  assert.equal((await chk.get("a"))?.value, 1, "delete() deleted the key it was given");
  assert.equal(await chk.get("c"), null);
});

Deno.test("KvCollection.put() and atomic().set() read a value's properties and a key's parts once: a getter cannot change what was checked", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const kv = db.kv("once");
  /** An object whose property `a` is `first` on its first read and `later` after. */
  const twoFaced = (first: unknown, later: unknown) => {
    let reads = 0;
    const o = {};
    Object.defineProperty(o, "a", { enumerable: true, get: () => reads++ === 0 ? first : later });
    return o;
  };
  for (const later of [undefined, "\uD800", "second", new Date(0)]) {
    await kv.put("k", twoFaced("first", later));
    assert.deepEqual((await kv.get("k"))?.value, { a: "first" });
    await kv.atomic().set("k2", [twoFaced(1, later)]).commit();
    assert.deepEqual((await kv.get("k2"))?.value, [{ a: 1 }]);
  }
  // An array item read once too, through a Proxy.
  let reads = 0;
  const items = new Proxy([1], {
    get: (t, p, r) => p === "0" ? (reads++ === 0 ? 1 : undefined) : Reflect.get(t, p, r),
  });
  await kv.put("arr", items);
  assert.deepEqual((await kv.get("arr"))?.value, [1]);
  // A key part through a getter: read once, checked as read.
  for (const later of [NaN, "\uD800", 2n ** 70n]) {
    let n = 0;
    const parts = ["p", 0];
    Object.defineProperty(parts, 1, { enumerable: true, get: () => n++ === 0 ? 7 : later });
    await kv.put(parts as never, "v");
    assert.deepEqual((await kv.get(["p", 7]))?.value, "v");
  }
  const keys: unknown[] = [];
  for await (const e of kv.list({ prefix: ["p"] })) keys.push(e.key);
  assert.deepEqual(keys, [["p", 7]]);
});
