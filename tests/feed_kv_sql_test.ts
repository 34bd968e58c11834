/**
 * Change feeds and key-value entries that SQL changes directly: entries
 * deleted by SQL (with WHERE, without, by a trigger, by REPLACE), moved to
 * another collection or key, deleted in the transaction that then reuses
 * their rowid for a new key; all reported by collection and key, one event
 * per key per commit, nothing from rolled-back work; and the binding's
 * `onRowChanging()` that names them. The feed needs the FFI engine (the
 * node engine refuses it, see `changes_test.ts`).
 */

import assert from "node:assert/strict";
import type { ChangeEvent, Client, Subscription } from "../client.ts";
import { encodeKey } from "../client/kv_key.ts";
import { startServer, takeEvents } from "./_helpers.ts";
import { loadSqlite } from "../engine/binding/load.ts";
import type { RowChanging } from "../engine/binding/binding.ts";

const ffi = Deno.env.get("NETSQLITE_ENGINE") !== "node";

/** An event as `[op, collection, key, value]` (`[op, table, rowid]` for a table row). */
function shape(e: ChangeEvent): unknown[] {
  if (e.type === "kv") {
    return "value" in e ? [e.op, e.collection, e.key, e.value] : [e.op, e.collection, e.key];
  }
  if (e.type === "table") return [e.op, e.table, e.rowid];
  return [e.type];
}

/**
 * The events of the next commits up to and including a put of `marker` in
 * collection `coll` (which each feed given must see), as {@link shape}s.
 */
async function until(
  db: Client,
  coll: string,
  marker: string,
  ...feeds: Subscription[]
): Promise<unknown[][][]> {
  await db.kv(coll).put(marker, 0);
  const out: unknown[][][] = [];
  for (const feed of feeds) {
    const seen: unknown[][] = [];
    for (;;) {
      const [e] = await takeEvents(feed, 1);
      if (e.type === "kv" && e.collection === coll && e.key[0] === marker) break;
      seen.push(shape(e));
    }
    out.push(seen);
  }
  return out;
}

function key(k: string): Uint8Array {
  return encodeKey([k]);
}

Deno.test({
  name: "feed: key-value entries deleted by SQL are reported deleted, by collection and key",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    const c = db.kv("c");
    await c.put("x", 1);
    await c.put("y", 2);
    await c.put("gone", 3);
    await c.delete("gone"); // a tombstone
    await db.kv("o").put("z", 4);
    await using onlyC = await db.subscribe({ kv: ["c", "m"], values: true });
    await using all = await db.subscribe();
    const r = await db.run("DELETE FROM netsqlite_kv WHERE collection = ?", ["c"]);
    assert.equal(r.changes, 3);
    const [seenC, seenAll] = await until(db, "m", "m1", onlyC, all);
    // The tombstone SQL removed was reported when its key was deleted: not again.
    assert.deepEqual(seenC, [["delete", "c", ["x"]], ["delete", "c", ["y"]]]);
    assert.deepEqual(seenAll, seenC);
    // A delete carries the version the entry had (SQL gave it no new one).
    const vw = await c.put("w", 5);
    await db.run("DELETE FROM netsqlite_kv WHERE collection = 'c' AND key = ?", [key("w")]);
    const [put, del] = await takeEvents(onlyC, 2);
    assert.deepEqual([put, del].map(shape), [["insert", "c", ["w"], 5], ["delete", "c", ["w"]]]);
    assert.equal(del.type === "kv" && del.version, vw);
    // The whole store wiped by SQL, without WHERE: each live key (the
    // table's trigger makes SQLite delete row by row).
    await c.put("v", 6);
    await db.run("DELETE FROM netsqlite_kv");
    assert.equal(await c.count(), 0);
    const [afterC, afterAll] = await until(db, "m", "m2", onlyC, all);
    assert.deepEqual(afterC, [
      ["insert", "c", ["v"], 6],
      ["delete", "m", ["m1"]],
      ["delete", "c", ["v"]],
    ]);
    assert.deepEqual(afterAll, [
      ["insert", "c", ["w"]],
      ["delete", "c", ["w"]],
      ["insert", "c", ["v"]],
      ["delete", "o", ["z"]],
      ["delete", "m", ["m1"]],
      ["delete", "c", ["v"]],
    ]);
  },
});

Deno.test({
  name:
    "feed: SQL that leaves a tombstone a tombstone (updated in place, or moved) reports nothing: its key was never live",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    const c = db.kv("c");
    await c.put("t", 1);
    await c.delete("t"); // a tombstone
    await using feed = await db.subscribe({ kv: ["c", "m"] });
    await db.run(
      "UPDATE netsqlite_kv SET collection = collection WHERE collection = 'c' AND key = ?",
      [
        key("t"),
      ],
    );
    await db.run("UPDATE netsqlite_kv SET key = ? WHERE collection = 'c' AND key = ?", [
      key("moved"),
      key("t"),
    ]);
    const [seen] = await until(db, "m", "m1", feed);
    assert.deepEqual(seen, []);
    // A tombstone revived by SQL is a live entry again: reported.
    await db.run(
      "UPDATE netsqlite_kv SET value = (SELECT value FROM netsqlite_kv WHERE collection = 'm') " +
        "WHERE collection = 'c' AND key = ?",
      [key("moved")],
    );
    const [revived] = await until(db, "m", "m2", feed);
    assert.deepEqual(revived, [["update", "c", ["moved"]]]);
  },
});

Deno.test({
  name:
    "feed: a key deleted by SQL in the transaction that puts a new key on its rowid: delete and insert",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    const c = db.kv("c");
    await c.put("a", "kept");
    await c.put("z", "old");
    await using feed = await db.subscribe({ kv: ["c"], values: true });
    const [[maxRowid]] = await db.values<[number]>("SELECT max(rowid) FROM netsqlite_kv");
    await db.transaction(async (tx) => {
      await tx.run("DELETE FROM netsqlite_kv WHERE rowid = (SELECT max(rowid) FROM netsqlite_kv)");
      await tx.kv("c").put("fresh", "new value");
    });
    // SQLite gave the new key the freed rowid.
    assert.deepEqual(
      await db.values("SELECT rowid FROM netsqlite_kv WHERE key = ?", [key("fresh")]),
      [[maxRowid]],
    );
    const events = await takeEvents(feed, 2);
    assert.deepEqual(events.map(shape), [
      ["delete", "c", ["z"]],
      ["insert", "c", ["fresh"], "new value"],
    ]);
    const [e1, e2] = events;
    assert.equal(e1.type === "kv" && e2.type === "kv" && e1.commitSeq === e2.commitSeq, true);
    assert.equal(e1.type === "kv" && e2.type === "kv" && e2.seq === e1.seq + 1, true);
    // The other way round in one transaction: a put, then SQL deletes that key.
    await db.transaction(async (tx) => {
      await tx.kv("c").put("a", "changed");
      await tx.run("DELETE FROM netsqlite_kv WHERE collection = 'c' AND key = ?", [key("a")]);
      await tx.kv("c").put("brief", 1); // a key that lives and dies in the transaction
      await tx.run("DELETE FROM netsqlite_kv WHERE collection = 'c' AND key = ?", [key("brief")]);
    });
    const [again] = await until(db, "c", "m", feed);
    assert.deepEqual(again, [["delete", "c", ["a"]]]);
  },
});

Deno.test({
  name: "feed: key-value entries SQL moves to another collection or key leave the old one",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    const c = db.kv("c");
    await c.put("a", 1);
    await c.put("b", 2);
    await c.put("t", 3);
    await c.delete("t"); // a tombstone moves too
    await using onlyC = await db.subscribe({ kv: ["c", "m"], values: true });
    await using onlyN = await db.subscribe({ kv: ["n", "m"], values: true });
    await using all = await db.subscribe();
    await db.run("UPDATE netsqlite_kv SET collection = 'n' WHERE collection = 'c'");
    const [seenC, seenN, seenAll] = await until(db, "m", "m1", onlyC, onlyN, all);
    assert.deepEqual(seenC, [["delete", "c", ["a"]], ["delete", "c", ["b"]]]);
    assert.deepEqual(seenN, [
      ["insert", "n", ["a"], 1],
      ["insert", "n", ["b"], 2],
      // The tombstone moved too, but its key held no value before nor after: nothing.
    ]);
    assert.deepEqual(seenAll, [
      ["delete", "c", ["a"]],
      ["insert", "n", ["a"]],
      ["delete", "c", ["b"]],
      ["insert", "n", ["b"]],
    ]);
    // A key renamed onto one that was deleted (its tombstone replaced), and back.
    await db.run("UPDATE OR REPLACE netsqlite_kv SET key = ? WHERE collection = 'n' AND key = ?", [
      key("t"),
      key("a"),
    ]);
    const [renamed] = await until(db, "m", "m2", onlyN);
    // (REPLACE deletes the tombstone before the row takes its key.)
    assert.deepEqual(renamed, [["update", "n", ["t"], 1], ["delete", "n", ["a"]]]);
  },
});

Deno.test({
  name:
    "feed: key-value entries replaced by SQL (INSERT OR REPLACE) are updates; a trigger's deletes are seen",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    const c = db.kv("c");
    await c.put("r", 1);
    await c.put("s", 2);
    await db.exec(
      "CREATE TABLE purge (collection TEXT); " +
        "CREATE TRIGGER purging AFTER INSERT ON purge BEGIN " +
        "DELETE FROM netsqlite_kv WHERE collection = new.collection; END",
    );
    await using feed = await db.subscribe({ kv: ["c"], values: true });
    await using all = await db.subscribe();
    // 0x07: MessagePack 7; a new rowid, the old row deleted by REPLACE.
    await db.run(
      "INSERT OR REPLACE INTO netsqlite_kv (collection, key, value, version) " +
        "VALUES ('c', ?, x'07', 1000000)",
      [key("r")],
    );
    assert.deepEqual((await c.get("r"))?.value, 7);
    await db.run("INSERT INTO purge VALUES ('c')");
    const [seen, seenAll] = await until(db, "c", "m", feed, all);
    // (The trigger's DELETE goes in rowid order: REPLACE gave r a new one.)
    assert.deepEqual(seen, [
      ["update", "c", ["r"], 7],
      ["delete", "c", ["s"]],
      ["delete", "c", ["r"]],
    ]);
    assert.deepEqual(seenAll, [
      ["update", "c", ["r"]],
      ["insert", "purge", 1],
      ["delete", "c", ["s"]],
      ["delete", "c", ["r"]],
    ]);
  },
});

Deno.test({
  name: "feed: key-value entries SQL deleted in rolled-back work are not reported",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    const c = db.kv("c");
    await c.put("a", 1);
    await c.put("b", 2);
    await c.put("d", 4);
    await using feed = await db.subscribe({ kv: ["c"] });
    await assert.rejects(
      db.transaction(async (tx) => {
        await tx.run("DELETE FROM netsqlite_kv WHERE collection = 'c'");
        throw new Error("no");
      }),
      /no/,
    );
    await db.transaction(async (tx) => {
      await assert.rejects(
        tx.transaction(async (inner) => {
          await inner.run("DELETE FROM netsqlite_kv WHERE key = ?", [key("a")]);
          throw new Error("inner");
        }),
        /inner/,
      );
      await tx.exec("SAVEPOINT s1");
      await tx.run("UPDATE netsqlite_kv SET collection = 'elsewhere' WHERE key = ?", [key("b")]);
      await tx.exec("ROLLBACK TO s1");
      await tx.exec("RELEASE s1");
      await tx.run("DELETE FROM netsqlite_kv WHERE key = ?", [key("b")]);
    });
    // A statement failing half way: the delete it made before is undone.
    const hex = Array.from(key("d"), (b) => b.toString(16).padStart(2, "0")).join("");
    await db.exec(
      `CREATE TRIGGER stop BEFORE DELETE ON netsqlite_kv WHEN old.key = x'${hex}' ` +
        "BEGIN SELECT raise(ABORT, 'stop'); END",
    );
    await assert.rejects(db.run("DELETE FROM netsqlite_kv WHERE collection = 'c'"), /stop/);
    await db.exec("DROP TRIGGER stop");
    // Tombstones purged by SQL: their keys were reported deleted already.
    await c.put("t", 3);
    await c.delete("t");
    await db.run("DELETE FROM netsqlite_kv WHERE value IS NULL");
    const [seen] = await until(db, "c", "m", feed);
    assert.deepEqual(seen, [["delete", "c", ["b"]], ["insert", "c", ["t"]], ["delete", "c", [
      "t",
    ]]]);
    assert.deepEqual((await Array.fromAsync(c.list())).map((e) => e.key), [["a"], ["d"], ["m"]]);
  },
});

Deno.test({
  name:
    "Db.onRowChanging() reports a table's inserts, updates and deletes (REPLACE's too) with values before and after",
  ignore: !ffi,
  fn() {
    const sqlite = loadSqlite({ engine: "ffi" });
    const db = sqlite.open(":memory:", { readOnly: false, busyTimeout: 0 });
    try {
      if (!db.onRowChanging("w", null)) return; // (a libsqlite3 built without the preupdate hook)
      db.exec("CREATE TABLE w (k TEXT UNIQUE, v); CREATE TABLE other (x)");
      const seen: unknown[] = [];
      const onRow = (r: RowChanging) =>
        seen.push([
          r.op,
          r.rowid,
          r.newRowid,
          r.op === "insert" ? null : [r.before(0), r.nullBefore(1) ? "NULL" : r.before(1)],
          r.op === "delete" ? null : [r.after(0), r.after(1)],
        ]);
      assert.equal(db.onRowChanging("w", onRow), true);
      db.exec(
        "INSERT INTO w VALUES ('a', x'01'), ('b', NULL); INSERT INTO other VALUES (1); " +
          `UPDATE w SET k = 'c', v = ${2n ** 60n} WHERE k = 'a'; ` +
          "INSERT OR REPLACE INTO w VALUES ('b', 2.5); DELETE FROM w WHERE k = 'c'",
      );
      // With onRowidChange(), which shares the hook: each gets its own, and keeps it alone.
      const moves: unknown[] = [];
      assert.equal(db.onRowidChange((c) => moves.push([c.table, c.oldRowid, c.newRowid])), true);
      db.exec("UPDATE other SET rowid = 10; UPDATE w SET v = 3 WHERE k = 'b'");
      assert.equal(db.onRowChanging("w", null), true);
      db.exec("UPDATE other SET rowid = 11; DELETE FROM w");
      assert.equal(db.onRowidChange(null), true);
      db.exec("UPDATE other SET rowid = 12");
      assert.deepEqual(moves, [["other", 1, 10], ["other", 10, 11]]);
      assert.deepEqual(seen, [
        ["insert", 1, 1, null, ["a", new Uint8Array([1])]],
        ["insert", 2, 2, null, ["b", null]],
        ["update", 1, 1, ["a", new Uint8Array([1])], ["c", 2n ** 60n]],
        ["delete", 2, 2, ["b", "NULL"], null], // (REPLACE: no update hook call)
        ["insert", 3, 3, null, ["b", 2.5]],
        ["delete", 1, 1, ["c", 2n ** 60n], null],
        ["update", 3, 3, ["b", 2.5], ["b", 3]],
      ]);
    } finally {
      db.close();
      sqlite.close();
    }
  },
});

Deno.test("NodeSqlite names no changing rows: it has no preupdate hook", () => {
  const sqlite = loadSqlite({ engine: "node" });
  const db = sqlite.open(":memory:", { readOnly: false, busyTimeout: 0 });
  try {
    assert.equal(db.onRowChanging("w", () => {}), false);
    assert.equal(db.onRowChanging("w", null), false);
  } finally {
    db.close();
    sqlite.close();
  }
});
