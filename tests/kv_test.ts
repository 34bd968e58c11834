/**
 * Key-value collections (`db.kv(name)`): exact values, versions and
 * `ifVersion`, atomic operations, ordered listing with prefix, range,
 * reverse and limit, and use inside `transaction()` with SQL.
 */

import assert from "node:assert/strict";
import { connect, KvConflictError } from "../client.ts";
import { SqliteError } from "../protocol/errors.ts";
import { decodeKey, encodeKey } from "../client/kv_key.ts";
import { startServer } from "./_helpers.ts";

Deno.test("kv: values come back exactly (int64, bigint, blobs, nested), with increasing versions", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const kv = db.kv("things");
  const values: unknown[] = [
    null,
    true,
    0,
    -0,
    2 ** 53 - 1,
    1.5,
    -(2n ** 63n),
    2n ** 64n - 1n,
    "",
    "héllo\u0000x",
    new Uint8Array([0, 1, 255]),
    { a: [1, { b: new Uint8Array([7]) }], n: null, big: 123456789012345678n },
    [],
  ];
  let last = 0;
  for (let i = 0; i < values.length; i++) {
    const v = await kv.put(["v", i], values[i]);
    assert.ok(v > last, `version ${v} after ${last}`);
    last = v;
  }
  for (let i = 0; i < values.length; i++) {
    const e = await kv.get(["v", i]);
    assert.ok(e !== null);
    assert.deepEqual(e.value, values[i]);
    assert.deepEqual(e.key, ["v", i]);
  }
  assert.ok(Object.is((await kv.get(["v", 3]))!.value, -0));
  assert.equal(await kv.get(["v", 999]), null);
  // SQL sees the same table.
  const [{ n }] = await db.query<{ n: number }>(
    "SELECT count(*) AS n FROM netsqlite_kv WHERE collection = 'things' AND value IS NOT NULL",
  );
  assert.equal(n, values.length);
  await assert.rejects(kv.put("x", new Date()), (e: SqliteError) => e.code === "INVALID_PARAM");
  await assert.rejects(kv.put([{}] as never, 1), (e: SqliteError) => e.code === "INVALID_PARAM");
});

Deno.test("kv: ifVersion conflicts, delete, getMany and collections kept apart", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const a = db.kv("a");
  const b = db.kv("b");
  const v1 = await a.put("k", 1, { ifVersion: null });
  await assert.rejects(a.put("k", 2, { ifVersion: null }), KvConflictError);
  await assert.rejects(
    a.put("k", 2, { ifVersion: v1 + 100 }),
    (e: SqliteError) => e.code === "KV_CONFLICT" && /not at version/.test(e.message),
  );
  const v2 = await a.put("k", 2, { ifVersion: v1 });
  assert.ok(v2 > v1);
  assert.equal((await a.get("k"))!.version, v2);
  assert.equal(await b.get("k"), null);
  await b.put("k", "bee");
  assert.deepEqual(
    (await a.getMany(["k", "missing", ["k"]])).map((e) => e?.value ?? null),
    [2, null, 2],
  );
  assert.equal(await a.delete("k"), true);
  assert.equal(await a.delete("k"), false);
  assert.equal(await a.get("k"), null);
  await assert.rejects(a.put("k", 3, { ifVersion: v2 }), KvConflictError);
  const v3 = await a.put("k", 3, { ifVersion: null }); // absent again after delete
  assert.ok(v3 > v2);
  assert.equal((await b.get("k"))!.value, "bee");
});

Deno.test("kv: atomic commits all or nothing", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const kv = db.kv("acc");
  const va = await kv.put("alice", 100);
  const vb = await kv.put("bob", 0);
  const { versions } = await kv.atomic().check("alice", va).check("bob", vb)
    .set("alice", 70).set("bob", 30).delete("nobody").commit();
  // One version per put or delete, in order; null for the delete of an absent key.
  assert.equal(versions.length, 3);
  assert.ok(versions[0]! > vb && versions[1]! > versions[0]!);
  assert.equal(versions[2], null);
  assert.deepEqual((await kv.getMany(["alice", "bob"])).map((e) => e!.value), [70, 30]);
  // A stale check: nothing of the operation is written.
  await assert.rejects(
    kv.atomic().set("carol", 1).check("alice", va).set("alice", 0).commit(),
    KvConflictError,
  );
  assert.equal(await kv.get("carol"), null);
  assert.equal((await kv.get("alice"))!.value, 70);
  await kv.atomic().check("carol", null).set("carol", 5).commit();
  assert.equal((await kv.get("carol"))!.value, 5);
});

Deno.test("kv: list orders tuples, pages through a cursor, honours prefix, range, reverse and limit", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const kv = db.kv("list");
  // Inserted out of order; numbers order numerically, strings by bytes, prefixes stay apart.
  const keys: (string | number)[][] = [];
  for (let i = 2500; i >= 0; i--) keys.push(["n", i]);
  keys.push(["n", -1.5], ["n", 1e300], ["user"], ["users", "x"], ["user", "b"], ["user", "a"]);
  await db.transaction(async (tx) => {
    const t = tx.kv("list");
    for (const k of keys) await t.put(k, k.join("/"));
  });
  const ns: number[] = [];
  for await (const e of kv.list({ prefix: ["n"] })) ns.push(e.key[1] as number);
  assert.equal(ns.length, 2503);
  assert.deepEqual(ns.slice(0, 4), [-1.5, 0, 1, 2]);
  assert.equal(ns[ns.length - 1], 1e300);
  for (let i = 1; i < ns.length; i++) assert.ok(ns[i - 1] < ns[i]);
  const users: unknown[] = [];
  for await (const e of kv.list({ prefix: "user" })) users.push(e.key);
  assert.deepEqual(users, [["user"], ["user", "a"], ["user", "b"]]);
  const rev: unknown[] = [];
  for await (const e of kv.list({ prefix: ["n"], reverse: true, limit: 3 })) rev.push(e.key[1]);
  assert.deepEqual(rev, [1e300, 2500, 2499]);
  const range: unknown[] = [];
  for await (const e of kv.list({ start: ["n", 10], end: ["n", 13] })) range.push(e.value);
  assert.deepEqual(range, ["n/10", "n/11", "n/12"]);
  assert.equal(await kv.count({ prefix: ["n"] }), 2503);
  assert.equal(await kv.count({ prefix: "user" }), 3);
  assert.equal(await kv.count(), keys.length);
  // Leaving a listing early closes its cursor; the connection stays usable.
  for await (const _ of kv.list()) break;
  assert.equal((await kv.get(["user", "a"]))!.value, "user/a");
});

Deno.test("kv: inside transaction() with SQL; a rollback undoes both", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 4 });
  await db.exec("CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER)");
  await db.transaction(async (tx) => {
    await tx.run("INSERT INTO orders (total) VALUES (42)");
    await tx.kv("meta").put("last-order", 42);
    // Not visible outside before commit.
    assert.equal(await db.kv("meta").get("last-order"), null);
  });
  assert.equal((await db.kv("meta").get("last-order"))!.value, 42);
  await assert.rejects(
    db.transaction(async (tx) => {
      await tx.run("INSERT INTO orders (total) VALUES (7)");
      await tx.kv("meta").put("last-order", 7);
      throw new Error("changed my mind");
    }),
    /changed my mind/,
  );
  assert.equal((await db.kv("meta").get("last-order"))!.value, 42);
  assert.deepEqual(await db.values("SELECT total FROM orders"), [[42]]);
  // Atomic inside a transaction is a savepoint: its conflict undoes only itself.
  await db.transaction(async (tx) => {
    const m = tx.kv("meta");
    await m.put("a", 1);
    await assert.rejects(m.atomic().set("b", 2).check("a", null).commit(), KvConflictError);
  });
  assert.equal((await db.kv("meta").get("a"))!.value, 1);
  assert.equal(await db.kv("meta").get("b"), null);
});

Deno.test("kv: key encoding round-trips and sorts as tuples", () => {
  const keys = [
    ["a"],
    ["a", ""],
    ["a", "\u0000"],
    ["a", "b"],
    ["ab"],
    ["\ufeffa"],
    [-1e308],
    [-1],
    [-5e-324],
    [-0],
    [0],
    [5e-324],
    [0.5],
    [3],
    [-(2n ** 63n)],
    [0n],
    [2n ** 63n - 1n],
  ];
  const sorted = [...keys].sort((x, y) => {
    const a = encodeKey(x), b = encodeKey(y);
    for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i];
    return a.length - b.length;
  });
  assert.deepEqual(sorted.map((k) => decodeKey(encodeKey(k))), [
    ["a"],
    ["a", ""],
    ["a", "\u0000"],
    ["a", "b"],
    ["ab"],
    ["\ufeffa"],
    [-1e308],
    [-1],
    [-5e-324],
    [-0],
    [0],
    [5e-324],
    [0.5],
    [3],
    [-(2n ** 63n)],
    [0n],
    [2n ** 63n - 1n],
  ]);
  assert.ok(Object.is(decodeKey(encodeKey([-0]))[0], -0));
});

Deno.test("kv: -0 is a key of its own, read back as -0, next to 0", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const kv = db.kv("signs");
  await kv.put([-0], "negative zero");
  await kv.put([0], "zero");
  await kv.put([-1], "minus one");
  assert.equal((await kv.get([-0]))!.value, "negative zero");
  assert.equal((await kv.get([0]))!.value, "zero");
  assert.ok(Object.is((await kv.get([-0]))!.key[0], -0));
  const listed = await Array.fromAsync(kv.list());
  assert.deepEqual(listed.map((e) => e.key), [[-1], [-0], [0]]);
  assert.ok(Object.is(listed[1].key[0], -0) && Object.is(listed[2].key[0], 0));
  assert.deepEqual((await kv.getMany([[0], [-0]])).map((e) => e?.value), ["zero", "negative zero"]);
  assert.equal(await kv.count({ prefix: [-0] }), 1);
  assert.equal(await kv.delete([-0]), true);
  assert.equal((await kv.get([0]))!.value, "zero");
});

/** Values that MessagePack would change or that have no exact form, and where they are named. */
const REFUSED_VALUES: [label: string, value: () => unknown, message: RegExp][] = [
  ["undefined", () => undefined, /: value is undefined, which would read back as null/],
  ["an undefined property", () => ({ a: undefined, b: 1 }), /: value\.a is undefined/],
  ["an undefined item", () => [1, undefined], /: value\[1\] is undefined/],
  // deno-lint-ignore no-sparse-arrays
  ["an array hole", () => [1, , 3], /: value\[1\] is a hole in the array/],
  [
    "a deep lone surrogate",
    () => ({ a: { b: [0, 1, "\udc00x"] } }),
    /: value\.a\.b\[2\] is a string with a lone UTF-16 surrogate/,
  ],
  [
    "a lone surrogate in a key",
    () => ({ list: [{ "\ud800k": 1 }] }),
    /: value\.list\[0\] has a key with a lone UTF-16 surrogate \("\\ud800k"\)/,
  ],
  [
    "an array with another property",
    () => ({ a: Object.assign([1, 2], { extra: "x" }) }),
    /: value\.a has the property "extra" besides its items, which would not be stored/,
  ],
  [
    "an array with a hole and another property",
    () => Object.assign([1, , 3], { x: 1 }),
    /: value has the property "x" besides its items/,
  ],
  [
    "an array with a symbol key",
    () => Object.assign([1], { [Symbol("s")]: 1 }),
    /: value has a symbol key, which cannot be stored/,
  ],
  [
    "a Proxy of a Uint8Array",
    () => ({ b: new Proxy(new Uint8Array(2), {}) }),
    /: value\.b is a Proxy of a Uint8Array .*store the Uint8Array itself/,
  ],
  ["a Date", () => ({ when: new Date(0) }), /: value\.when is an instance of Date, which is not/],
  ["a Map", () => new Map([["a", 1]]), /: value is an instance of Map, which is not storable/],
  ["a Set", () => [new Set()], /: value\[0\] is an instance of Set/],
  [
    "a class instance",
    () =>
      new (class Point {
        x = 1;
      })(),
    /: value is an instance of Point/,
  ],
  [
    "an object with a custom prototype",
    () => Object.create({ a: 1 }),
    /: value is an object with a custom prototype/,
  ],
  [
    "an Array subclass",
    () => new (class List extends Array {})(),
    /: value is an instance of List \(an Array subclass\)/,
  ],
  ["a Uint16Array", () => new Uint16Array(1), /: value is an instance of Uint16Array/],
  ["an ArrayBuffer", () => new ArrayBuffer(1), /: value is an instance of ArrayBuffer/],
  ["a function", () => ({ f: () => 1 }), /: value\.f is a function, which is not storable/],
  ["a symbol", () => [Symbol("s")], /: value\[0\] is a symbol, which is not storable/],
  ["a symbol key", () => ({ [Symbol("s")]: 1 }), /: value has a symbol key/],
  [
    "a bigint beyond 64 bits",
    () => ({ n: 2n ** 64n }),
    /: value\.n is the bigint 18446744073709551616/,
  ],
  [
    "nesting deeper than 32 levels",
    () => JSON.parse("[".repeat(33) + "]".repeat(33)),
    /: value(\[0\]){32} nests deeper than 32 levels$/,
  ],
  [
    "a cycle",
    () => {
      const o: Record<string, unknown> = {};
      o.self = o;
      return o;
    },
    /: value(\.self){32} nests deeper than 32 levels$/,
  ],
];

Deno.test("kv: put and atomic().set refuse values that would not read back exactly, naming where", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const kv = db.kv("strict");
  for (const [label, value, message] of REFUSED_VALUES) {
    const refused = (e: unknown): boolean =>
      e instanceof SqliteError && e.code === "INVALID_PARAM" &&
      e.message.startsWith("Invalid key-value value: ") && message.test(e.message);
    await assert.rejects(kv.put("k", value()), refused, label);
    assert.throws(() => kv.atomic().set("k", value()), refused, label);
  }
  assert.equal(await kv.count(), 0);
  assert.deepEqual(await Array.fromAsync(kv.list()), []);
});

Deno.test("kv: edge values that can be stored come back exactly", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const kv = db.kv("edges");
  const nullProto = Object.assign(Object.create(null), { a: 1, constructor: "c" });
  const values: [unknown, unknown][] = [
    [NaN, NaN],
    [Infinity, Infinity],
    [-Infinity, -Infinity],
    [2n ** 64n - 1n, 2n ** 64n - 1n],
    ["a\u0000b 😀", "a\u0000b 😀"],
    [new Uint8Array([1, 2, 3]).subarray(1), new Uint8Array([2, 3])],
    [{ "": 1, "a-b": [null, false], hasOwnProperty: 0 }, {
      "": 1,
      "a-b": [null, false],
      hasOwnProperty: 0,
    }],
    [nullProto, { a: 1, constructor: "c" }], // a null-prototype object reads back as a plain one
    // An own __proto__ key (JSON.parse makes them) reads back as an own property.
    [
      JSON.parse('{"__proto__": {"isAdmin": true}, "name": "x"}'),
      JSON.parse(
        '{"__proto__": {"isAdmin": true}, "name": "x"}',
      ),
    ],
    [{ "a-b": JSON.parse('{"__proto__": 1}') }, { "a-b": JSON.parse('{"__proto__": 1}') }],
    [JSON.parse("[".repeat(32) + "]".repeat(32)), JSON.parse("[".repeat(32) + "]".repeat(32))],
  ];
  for (let i = 0; i < values.length; i++) await kv.put(["v", i], values[i][0]);
  for (let i = 0; i < values.length; i++) {
    assert.deepEqual((await kv.get(["v", i]))!.value, values[i][1], `value ${i}`);
  }
});

Deno.test("kv: a stored value or key that does not decode is KV_CORRUPT naming the entry; delete clears it", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const kv = db.kv("c");
  await kv.put("good", 1);
  // Rows written by SQL directly: not MessagePack, TEXT instead of a BLOB.
  for (const [key, value] of [["bad", new Uint8Array([0xc1])], ["text", "abc"]]) {
    await db.run(
      "INSERT INTO netsqlite_kv (collection, key, value, version) VALUES ('c', ?, ?, 100)",
      [encodeKey([key as string]), value as Uint8Array | string],
    );
  }
  const corrupt = (key: string, detail: RegExp) => (e: unknown): boolean =>
    e instanceof SqliteError && e.code === "KV_CORRUPT" &&
    e.message.startsWith(`Cannot read key-value entry in collection "c" under key ["${key}"]: `) &&
    detail.test(e.message);
  await assert.rejects(kv.get("bad"), corrupt("bad", /the stored value does not decode: /));
  await assert.rejects(
    kv.get("text"),
    corrupt("text", /the stored value is TEXT, not a MessagePack BLOB$/),
  );
  await assert.rejects(kv.getMany(["good", "bad"]), corrupt("bad", /does not decode/));
  await assert.rejects(Array.fromAsync(kv.list()), corrupt("bad", /does not decode/));
  assert.deepEqual((await kv.get("good"))!.value, 1);
  for (const key of ["bad", "text"]) assert.equal(await kv.delete(key), true);
  assert.deepEqual((await Array.fromAsync(kv.list())).map((e) => e.key), [["good"]]);
  // A key that is not this encoding (0xff starts no part).
  await db.run(
    "INSERT INTO netsqlite_kv (collection, key, value, version) VALUES ('c', x'ff01', x'01', 101)",
  );
  await assert.rejects(
    Array.fromAsync(kv.list()),
    (e: unknown) =>
      e instanceof SqliteError && e.code === "KV_CORRUPT" &&
      e.message ===
        `Cannot read key-value entry in collection "c" with key x'ff01': the key is malformed: it holds an unknown part type 0xff`,
  );
});

Deno.test("kv: versions never go back when SQL deletes tombstones or entries (no ABA)", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const accounts = db.kv("accounts");
  await accounts.put(["other"], 1);
  const v1 = await accounts.put(["alice"], { balance: 100 });
  const seen = (await accounts.get(["alice"]))!;
  assert.equal(seen.version, v1);
  await accounts.delete(["alice"]);
  // Purging tombstones (as the README allows) must not let versions repeat.
  assert.equal((await db.run("DELETE FROM netsqlite_kv WHERE value IS NULL")).changes, 1);
  const v2 = await accounts.put(["alice"], { balance: 0 });
  assert.ok(v2 > v1 + 1, `re-created at ${v2}, deleted entry was ${v1}, its tombstone ${v1 + 1}`);
  await assert.rejects(
    accounts.put(["alice"], { balance: 100 }, { ifVersion: seen.version }),
    (e: SqliteError) => e instanceof KvConflictError && e.code === "KV_CONFLICT",
  );
  await assert.rejects(
    accounts.atomic().check(["alice"], seen.version).set(["alice"], 1).commit(),
    (e: SqliteError) => e.code === "KV_CONFLICT",
  );
  assert.deepEqual((await accounts.get(["alice"]))!.value, { balance: 0 });
  // Deleting the newest entry by SQL (or everything) does not lower the next version either.
  await db.run("DELETE FROM netsqlite_kv WHERE version = ?", [v2]);
  const v3 = await accounts.put(["bob"], 1);
  assert.equal(v3, v2 + 1);
  await db.run("DELETE FROM netsqlite_kv");
  const { versions } = await accounts.atomic().set(["carol"], 1).commit();
  assert.deepEqual(versions, [v3 + 1]);
  // The bookkeeping row is not a rowid table, so change feeds do not report it.
  const [meta] = await db.values<[string]>(
    "SELECT sql FROM sqlite_master WHERE name = 'netsqlite_kv_meta'",
  );
  assert.match(meta[0], /WITHOUT ROWID/);
});

Deno.test("kv: a database from the previous release gets the version bookkeeping on the first write", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  // The previous release's layout: the table and its index only.
  await db.exec(`CREATE TABLE netsqlite_kv (
    collection TEXT NOT NULL, key BLOB NOT NULL, value BLOB, version INTEGER NOT NULL,
    UNIQUE (collection, key));
  CREATE INDEX netsqlite_kv_version ON netsqlite_kv (version);`);
  await db.run(
    "INSERT INTO netsqlite_kv VALUES ('old', ?, NULL, 7), ('old', ?, x'01', 5)",
    [encodeKey(["gone"]), encodeKey(["kept"])],
  );
  const old = db.kv("old");
  assert.deepEqual(await old.get("kept"), { key: ["kept"], value: 1, version: 5 });
  assert.equal(await old.put("new", 2), 8);
  const names = await db.values<[string]>(
    "SELECT name FROM sqlite_master WHERE name LIKE 'netsqlite_kv%' ORDER BY name",
  );
  assert.deepEqual(names.flat(), [
    "netsqlite_kv",
    "netsqlite_kv_deleted",
    "netsqlite_kv_meta",
    "netsqlite_kv_version",
  ]);
  await db.run("DELETE FROM netsqlite_kv WHERE version = 8");
  assert.equal(await old.put("again", 3), 9);
});

Deno.test("kv: getMany is one snapshot, over one statement's keys and beyond", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const c = db.kv("s");
  for (const n of [1000, 40_000]) {
    // A writer moves one token between the first and the last key.
    await c.atomic().set([0], "TOKEN").delete([n - 1]).commit();
    const keys = Array.from({ length: n }, (_, i) => [i]);
    let stop = false;
    let moves = 0;
    const writer = (async () => {
      let at = 0;
      while (!stop) {
        const to = at === 0 ? n - 1 : 0;
        await c.atomic().delete([at]).set([to], "TOKEN").commit();
        at = to;
        moves++;
      }
    })();
    let reads = 0;
    const seen = new Set<number>();
    try {
      const until = performance.now() + 1000;
      while (performance.now() < until || reads < 3) {
        const entries = await c.getMany(keys);
        assert.equal(entries.length, n);
        const at = entries.flatMap((e, i) => e === null ? [] : [i]);
        assert.equal(at.length, 1, `torn read with ${n} keys: token at ${at.join(", ")}`);
        seen.add(at[0]);
        reads++;
      }
    } finally {
      stop = true;
      await writer;
    }
    assert.ok(moves > 0, `writer moved the token ${moves} times`);
    await c.delete([0]);
    await c.delete([n - 1]);
  }
});

Deno.test("kv: list({ limit }) and getMany over values too large for one reply stream instead", async () => {
  await using srv = await startServer({ maxResultBytes: 64 * 1024 });
  await using db = await srv.client();
  const c = db.kv("big");
  const value = new Uint8Array(20_000).fill(7);
  for (let i = 0; i < 10; i++) await c.put(["k", i], value);
  // The same statement through SQL is refused as too large for one reply.
  await assert.rejects(
    db.values("SELECT value FROM netsqlite_kv"),
    (e: SqliteError) => e.code === "RESULT_TOO_LARGE",
  );
  const listed = [];
  for await (const e of c.list({ prefix: ["k"], limit: 10, reverse: true })) listed.push(e);
  assert.deepEqual(listed.map((e) => e.key), Array.from({ length: 10 }, (_, i) => ["k", 9 - i]));
  assert.ok(listed.every((e) => (e.value as Uint8Array).length === 20_000));
  const many = await c.getMany(Array.from({ length: 11 }, (_, i) => ["k", i]));
  assert.deepEqual(many.map((e) => e === null ? null : (e.value as Uint8Array).length), [
    ...Array(10).fill(20_000),
    null,
  ]);
  // Inside a transaction too.
  const inTx = await db.transaction((tx) =>
    tx.kv("big").getMany([["k", 0], ["k", 1], ["k", 2], ["k", 3], ["k", 4]])
  );
  assert.equal(inTx.filter((e) => e !== null).length, 5);
});

Deno.test("kv: entries too large even streamed fail with RESULT_TOO_LARGE advice a kv user can follow", async () => {
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-kv-" });
  try {
    const database = `${dir}/kv.db`;
    {
      // Written through a server whose frames take them...
      await using srv = await startServer({ database });
      await using db = await srv.client();
      for (let i = 0; i < 3; i++) await db.kv("big").put(["k", i], new Uint8Array(40_000));
    }
    // ...and read through one whose frames are smaller than one entry.
    await using srv = await startServer({ database, maxFrameSize: 32 * 1024 });
    await using db = await srv.client();
    const c = db.kv("big");
    const check = (e: SqliteError): boolean => {
      assert.equal(e.code, "RESULT_TOO_LARGE");
      assert.match(e.message, /^Key-value entries of collection "big" are too large to read: /);
      assert.match(e.message, /read fewer entries at a time, or raise the server's maxFrameSize$/);
      assert.doesNotMatch(e.message, /iterate\(\)/);
      return true;
    };
    await assert.rejects(async () => {
      for await (const _ of c.list({ limit: 3 })) { /* consume */ }
    }, check);
    await assert.rejects(async () => {
      for await (const _ of c.list()) { /* consume */ }
    }, check);
    await assert.rejects(c.getMany([["k", 0], ["k", 1], ["k", 2]]), check);
    await assert.rejects(c.get(["k", 0]), check);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("kv: entries that each fit a frame stream whatever their total, with frames smaller than a chunk", async () => {
  await using srv = await startServer({ maxFrameSize: 32 * 1024 });
  await using db = await srv.client();
  const c = db.kv("big");
  // Three entries of 20,000 bytes: two would not fit one 32 KiB frame.
  for (let i = 0; i < 3; i++) await c.put(["k", i], new Uint8Array(20_000).fill(i + 1));
  for (let round = 0; round < 5; round++) {
    const many = await c.getMany([["k", 0], ["k", 1], ["k", 2]]);
    assert.deepEqual(many.map((e) => (e!.value as Uint8Array)[19_999]), [1, 2, 3]);
    const listed: number[] = [];
    for await (const e of c.list()) listed.push((e.value as Uint8Array)[0]);
    assert.deepEqual(listed, [1, 2, 3]);
  }
});

Deno.test("kv: get() of a value larger than one reply streams it (as put() accepted it)", async () => {
  await using srv = await startServer({ maxResultBytes: 64 * 1024 });
  await using db = await srv.client();
  const c = db.kv("big");
  const value = new Uint8Array(200_000).map((_, i) => i % 251);
  const version = await c.put(["k"], value);
  const e = await c.get<Uint8Array>(["k"]);
  assert.ok(e !== null);
  assert.equal(e.version, version);
  assert.deepEqual(e.value, value);
  // Inside a transaction too, and an absent key is still null.
  const inTx = await db.transaction((tx) => tx.kv("big").get<Uint8Array>(["k"]));
  assert.equal(inTx!.value.length, 200_000);
  assert.equal(await c.get(["absent"]), null);
});

Deno.test("kv: atomic versions line up with the puts and deletes added (null: absent key)", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const kv = db.kv("v");
  const va = await kv.put("a", 1);
  const { versions } = await kv.atomic().delete("nope").set("b", 2)
    .delete("a").delete("a").commit();
  assert.equal(versions.length, 4);
  assert.equal(versions[0], null);
  assert.equal(
    versions[1],
    (await db.values<[number]>(
      "SELECT version FROM netsqlite_kv WHERE collection = 'v' AND value IS NOT NULL",
    ))[0][0],
  );
  assert.ok(versions[2]! > versions[1]! && versions[1]! > va);
  assert.equal(versions[3], null); // already deleted by the operation before it
  assert.equal(await kv.get("a"), null);
  assert.equal((await kv.get("b"))!.version, versions[1]);
});

Deno.test("kv: atomic checks all see the state before the operation, wherever added", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const kv = db.kv("c");
  const vb = await kv.put("b", 1);
  // A check after a set of the same key still compares with the version before it.
  const { versions } = await kv.atomic().set("b", 3).check("b", vb).set("n", 1).check("n", null)
    .commit();
  assert.equal((await kv.get("b"))!.version, versions[0]);
  assert.equal((await kv.get("n"))!.value, 1);
  // A check that holds only after the operation's own change fails: nothing written.
  await assert.rejects(
    kv.atomic().set("b", 4).set("x", 1).check("b", versions[0]! + 2).commit(),
    (e: SqliteError) => e.code === "KV_CONFLICT" && /\(it is at /.test(e.message),
  );
  await assert.rejects(kv.atomic().delete("b").check("b", null).commit(), KvConflictError);
  assert.equal((await kv.get("b"))!.value, 3);
  assert.equal(await kv.get("x"), null);
});
