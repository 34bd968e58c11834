/**
 * Values on paths other than bound parameters, end to end on both engines:
 * double-quoted string literals, SQL text that is not well-formed UTF-16,
 * `?NNN` keys in a parameter object, and change-feed values too large for a
 * frame.
 */

import assert from "node:assert/strict";
import type { Client } from "../client.ts";
import { startServer, type TestServer } from "./_helpers.ts";

const ENGINES = ["ffi", "node"] as const;

/** A server on `engine` and one client, both closed by `await using`. */
async function open(
  engine: (typeof ENGINES)[number],
): Promise<{ db: Client; srv: TestServer } & AsyncDisposable> {
  const srv = await startServer({ engine, logLevel: "error" });
  const db = await srv.client();
  return {
    db,
    srv,
    async [Symbol.asyncDispose]() {
      await db.close();
      await srv[Symbol.asyncDispose]();
    },
  };
}

for (const engine of ENGINES) {
  Deno.test(`${engine}: a double-quoted name that is no column is refused in DML, not stored as text`, async () => {
    await using t = await open(engine);
    await t.db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, nick TEXT)");
    await t.db.run("INSERT INTO t(name, nick) VALUES ('ada', 'a')");
    await assert.rejects(
      () => t.db.run('UPDATE t SET nick = "nmae"'),
      (e: Error & { code?: string }) => {
        assert.equal(e.code, "SQLITE_ERROR");
        assert.match(e.message, /no such column: "?nmae"?/);
        return true;
      },
    );
    await assert.rejects(() => t.db.get('SELECT "nosuch" AS x FROM t'), /no such column/);
    assert.deepEqual(await t.db.get("SELECT nick FROM t"), { nick: "a" });
    // A double-quoted name that is a column still is one.
    assert.deepEqual(await t.db.get('SELECT "name" AS n FROM t'), { n: "ada" });
  });

  Deno.test(`${engine}: an object binds ?NNN by its key and refuses a statement with a ?`, async () => {
    await using t = await open(engine);
    const anonymous = (e: Error & { code?: string }) =>
      e.code === "INVALID_PARAM" && /pass an array$/.test(e.message);
    await assert.rejects(() => t.db.values("SELECT ?, ?", { "?1": 1 }), anonymous);
    await assert.rejects(
      () => t.db.values("SELECT ?2, :x, ?", { "?2": 2, x: 3, "?3": 4 }),
      anonymous,
    );
    assert.deepEqual(await t.db.values("SELECT ?2, :x, ?4", { "?2": 2, x: 3, "?4": 4 }), [[
      2,
      3,
      4,
    ]]);
    assert.deepEqual(
      await t.db.values("SELECT ?1, :x, ?3", { x: 1n << 60n, "?1": null, "?3": "c" }),
      [[
        null,
        1n << 60n,
        "c",
      ]],
    );
    // The same prepared statement, bound by array, then by object: nothing carries over.
    const st = await t.db.prepare("SELECT ?1, :a, ?3");
    assert.deepEqual(await st.values([1, 2, 3]), [[1, 2, 3]]);
    assert.deepEqual(await st.values({ a: 5, "?1": 4, "?3": 6 }), [[4, 5, 6]]);
    await assert.rejects(
      () => st.values({ a: 5, "?3": 6 }),
      (e: Error & { code?: string }) => e.code === "INVALID_PARAM" && /"\?1"/.test(e.message),
    );
    await st.finalize();
    await assert.rejects(
      () => t.db.values("SELECT ?1, ?2", { "?3": 1 }),
      (e: Error & { code?: string }) => e.code === "INVALID_PARAM",
    );
  });

  Deno.test(`${engine}: a double-quoted name that is no column is refused in DDL`, async () => {
    await using t = await open(engine);
    await t.db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)");
    await assert.rejects(() => t.db.exec('CREATE INDEX i ON t("nosuch")'), /no such column/);
    await assert.rejects(
      () => t.db.exec('CREATE TABLE u (a TEXT CHECK (a <> "x"))'),
      /no such column/,
    );
    assert.deepEqual(
      await t.db.query("SELECT name FROM sqlite_schema WHERE name IN ('i', 'u')"),
      [],
    );
  });
}

Deno.test("SQL text with a lone surrogate is refused with INVALID_PARAM before it is sent, on every call", async () => {
  await using t = await open("ffi");
  await t.db.exec("CREATE TABLE t (v TEXT)");
  const bad = "INSERT INTO t VALUES ('a\uD800b')";
  const refused = (where = "") => (e: Error & { code?: string }) => {
    assert.equal(e.code, "INVALID_PARAM");
    assert.equal(
      e.message,
      `${where}Cannot send SQL: it has a lone UTF-16 surrogate (U+D800) at index 24, ` +
        "which UTF-8 cannot represent",
    );
    return true;
  };
  await assert.rejects(() => t.db.run(bad), refused());
  await assert.rejects(() => t.db.exec(bad), refused());
  await assert.rejects(() => t.db.query(bad), refused());
  await assert.rejects(() => t.db.get(bad), refused());
  await assert.rejects(() => t.db.values(bad), refused());
  await assert.rejects(() => t.db.prepare(bad), refused());
  await assert.rejects(() => t.db.iterate(bad).next(), refused());
  await assert.rejects(
    () => t.db.batch([{ sql: "SELECT 1" }, { sql: bad }]),
    refused("Batch statement 2: "),
  );
  await assert.rejects(
    () => t.db.transaction((tx) => tx.run("SELECT '\uDC00'")),
    /lone UTF-16 surrogate \(U\+DC00\) at index 8/,
  );
  assert.deepEqual(await t.db.values("SELECT count(*) FROM t"), [[0]]);
  // A surrogate pair is well-formed: stored as its 4 UTF-8 bytes.
  await t.db.run("INSERT INTO t VALUES ('a\uD83D\uDE00b')");
  assert.deepEqual(await t.db.values("SELECT hex(v) FROM t"), [["61F09F988062"]]);
});

Deno.test({
  name: "a change whose value does not fit in a frame says so, unlike a row that was gone",
  // Change feeds need the FFI engine (node:sqlite refuses them: changes_test.ts).
  ignore: Deno.env.get("NETSQLITE_ENGINE") === "node",
}, async () => {
  await using srv = await startServer({ maxFrameSize: 1024 * 1024, logLevel: "error" });
  const db = await srv.client();
  try {
    await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v)");
    await using feed = await db.subscribe({ tables: ["t"], values: true });
    await db.run("INSERT INTO t(v) VALUES (zeroblob(1200000))");
    await db.run("INSERT INTO t(v) VALUES ('small')");
    // A row deleted before the feed reads it: value null, nothing omitted.
    await db.transaction(async (tx) => {
      await tx.run("INSERT INTO t(id, v) VALUES (9, 'gone')");
      await tx.run("DELETE FROM t WHERE id = 9");
    });
    const events: Record<string, unknown>[] = [];
    for await (const e of feed) {
      events.push(e as unknown as Record<string, unknown>);
      if (events.length === 4) break;
    }
    const pick = (e: Record<string, unknown>) => ({
      op: e.op,
      rowid: e.rowid,
      key: e.key,
      value: e.value,
      valueOmitted: e.valueOmitted,
    });
    assert.deepEqual(events.map(pick), [
      { op: "insert", rowid: 1, key: undefined, value: null, valueOmitted: "too_large" },
      {
        op: "insert",
        rowid: 2,
        key: undefined,
        value: { id: 2, v: "small" },
        valueOmitted: undefined,
      },
      { op: "insert", rowid: 9, key: undefined, value: null, valueOmitted: undefined },
      { op: "delete", rowid: 9, key: undefined, value: undefined, valueOmitted: undefined },
    ]);
    assert.equal("valueOmitted" in events[1], false);
    assert.deepEqual(await db.get("SELECT length(v) AS n FROM t WHERE id = 1"), { n: 1_200_000 });
  } finally {
    await db.close();
  }
});
