/**
 * A change too large for one frame even without its value (its table's
 * name, or its key-value key, longer than `maxFrameSize` allows) was
 * skipped silently: the feed went on with the next change, the subscriber
 * never told one was lost. Now the server sends an event of kind 2 naming
 * it (position, table, rowid, size), and the client ends the feed with
 * `CHANGE_TOO_LARGE` after the changes before it; `resumeFrom` (and the
 * message) give the `since` that goes on after it. The feeds need the FFI
 * engine.
 */

import assert from "node:assert/strict";
import { connect, type KvChangeEvent, SqliteError, type TableChangeEvent } from "../client.ts";
import { serve } from "../server.ts";
import { startServer, statsUntil, takeEvents } from "./_helpers.ts";

const ffi = Deno.env.get("NETSQLITE_ENGINE") !== "node";

/** A table name longer than the smallest frame (1 KiB) holds. */
const LONG = "l".repeat(3000);

/** Creates `t`, a table of name {@link LONG}, and a trigger on `t` writing into it. */
async function prepare(database: string, dir: string): Promise<void> {
  // (With maxFrameSize 1 KiB, the SQL naming the table would not fit in a request.)
  await using server = await serve({ database, path: `${dir}/setup.sock` });
  await using db = await connect({ path: `${dir}/setup.sock` });
  await db.exec(
    `CREATE TABLE t (id INTEGER PRIMARY KEY, x);
     CREATE TABLE ${LONG} (id INTEGER PRIMARY KEY, x);
     CREATE TRIGGER t_copy AFTER INSERT ON t WHEN new.x = 'copy' BEGIN
       INSERT INTO ${LONG} (id, x) VALUES (new.id, new.x);
     END;`,
  );
  void server;
}

function tooLarge(seq: number, rowid: number, table: string): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof SqliteError, String(err));
    assert.equal(err.code, "CHANGE_TOO_LARGE");
    assert.equal(err.resumeFrom, seq);
    assert.match(err.message, new RegExp(`seq ${seq}\\b`));
    assert.match(err.message, new RegExp(`rowid ${rowid}\\b`));
    assert.match(err.message, new RegExp(`table "${table}`));
    assert.match(err.message, /\d+ bytes/);
    assert.match(err.message, new RegExp(`since: ${seq}\\b`));
    return true;
  };
}

for (const values of [false, true]) {
  Deno.test({
    name:
      `subscribe({ values: ${values} }): a change whose table name does not fit in a frame ends the feed with CHANGE_TOO_LARGE, resumable past it`,
    ignore: !ffi,
    async fn() {
      const dir = await Deno.makeTempDir({ prefix: "netsqlite-test-" });
      const database = `${dir}/big.db`;
      await prepare(database, dir);
      await using cleanup = { [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
      await using srv = await startServer({ database, maxFrameSize: 1024 });
      await using db = await srv.client();
      const feed = await db.subscribe({ values });
      await db.run("INSERT INTO t VALUES (1, 'a')");
      await db.run("INSERT INTO t VALUES (2, 'copy')"); // and into LONG
      await db.run("INSERT INTO t VALUES (3, 'b')");

      const [first, second] = await takeEvents(feed, 2) as TableChangeEvent[];
      assert.deepEqual([first.table, first.rowid], ["t", 1]);
      assert.deepEqual([second.table, second.rowid], ["t", 2]);
      // Was: rowid 3 of t, the change to LONG skipped without a word.
      await assert.rejects(feed.next(), tooLarge(second.seq + 1, 2, LONG.slice(0, 50)));
      assert.deepEqual(await feed.next(), { value: undefined, done: true });
      feed.close();
      // The server let the feed go: nothing of it stays queued.
      await statsUntil(
        srv.connectOptions,
        (r) => r.feeds?.queuedChanges === 0 && r.connections.open === 2,
        "the feed let go",
      );

      // Resumed past it: the next change, nothing lost, nothing repeated.
      await using again = await db.subscribe({ values, since: second.seq + 1 });
      const [third] = await takeEvents(again, 1) as TableChangeEvent[];
      assert.deepEqual([third.seq, third.table, third.rowid], [second.seq + 2, "t", 3]);
      if (values) assert.deepEqual(third.value, { id: 3, x: "b" });
      // Resumed before it: the same error again (it is not lost either way).
      const before = await db.subscribe({ values, since: second.seq });
      await assert.rejects(before.next(), tooLarge(second.seq + 1, 2, LONG.slice(0, 50)));
      before.close();
      void cleanup;
    },
  });
}

Deno.test({
  name:
    "subscribe({ kv }): a key-value change whose key does not fit in a frame ends the feed with CHANGE_TOO_LARGE",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer({ maxFrameSize: 1024 });
    await using db = await srv.client();
    const c = db.kv("c");
    await c.put(["small"], 1);
    await using feed = await db.subscribe({ kv: ["c"] });
    await c.put(["a"], 1);
    // A key longer than a request holds (so written by SQL), that decodes:
    // the string "kkk...", 1200 characters.
    await db.run(
      "INSERT INTO netsqlite_kv (collection, key, value, version) " +
        "SELECT 'c', CAST(x'02' || replace(hex(zeroblob(600)), '0', 'k') || x'00' AS BLOB), value, " +
        "(SELECT max(version) + 1 FROM netsqlite_kv) FROM netsqlite_kv WHERE collection = 'c' LIMIT 1",
    );
    assert.deepEqual(
      await db.values("SELECT length(key) FROM netsqlite_kv WHERE collection = 'c' ORDER BY key"),
      [[3], [1202], [7]],
    );
    await c.put(["b"], 2);
    const events = await takeEvents(feed, 1) as KvChangeEvent[];
    assert.deepEqual(events[0].key, ["a"]);
    // Was: the change to `key` skipped, the next event that of "b".
    await assert.rejects(feed.next(), (err) => {
      assert.ok(err instanceof SqliteError && err.code === "CHANGE_TOO_LARGE", String(err));
      assert.equal(err.resumeFrom, events[0].seq + 1);
      assert.match(err.message, /an insert in key-value collection "c" \(version \d+\)/);
      assert.match(err.message, /maxFrameSize \(1024\)/);
      return true;
    });
    await using again = await db.subscribe({ kv: ["c"], since: events[0].seq + 1 });
    const [b] = await takeEvents(again, 1) as KvChangeEvent[];
    assert.deepEqual([b.seq, b.key], [events[0].seq + 2, ["b"]]);
  },
});
