/**
 * Key-value collections (`db.kv(name)`): exact values, versions and
 * `ifVersion`, atomic operations, ordered listing with prefix, range,
 * reverse and limit, and use inside `transaction()` with SQL.
 */

import assert from "node:assert/strict";
import { connect, KvConflictError } from "../client.ts";
import type { SqliteError } from "../protocol/errors.ts";
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
  assert.equal(versions.length, 2);
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
    [-1e308],
    [-1],
    [0],
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
    [-1e308],
    [-1],
    [0],
    [0.5],
    [3],
    [-(2n ** 63n)],
    [0n],
    [2n ** 63n - 1n],
  ]);
});
