/**
 * Change feeds as a consumer meets them (an audit): resuming with `since`
 * after a disconnect gets every change after it exactly once, or
 * `FEED_GAP` only when a change the feed would deliver is missing; a
 * `--readonly` server, whose feeds could report nothing, refuses them. The
 * feeds need the FFI engine; under `NETSQLITE_ENGINE=node` only the
 * refusal is tested (changes_test.ts).
 */

import assert from "node:assert/strict";
import { type ChangeEvent, connect } from "../client.ts";
import { SqliteError } from "../protocol/errors.ts";
import { startServer, takeEvents, tempDir } from "./_helpers.ts";

const ffi = Deno.env.get("NETSQLITE_ENGINE") !== "node";
const KB = 1024;

function rowOf(e: ChangeEvent): [string, unknown, unknown] {
  assert.equal(e.type, "table", JSON.stringify(e));
  return e.type === "table" ? [e.table, e.rowid, e.value] : ["", null, null];
}

/** The `seq` of a change event. */
function seqOf(e: ChangeEvent): number {
  assert.notEqual(e.type, "lagged", JSON.stringify(e));
  return e.type === "lagged" ? -1 : e.seq;
}

Deno.test({
  name:
    "feed consumer: a values feed resumes after other tables' values were let go (no FEED_GAP for changes it does not get)",
  ignore: !ffi,
  async fn() {
    // The ring holds 1 MiB of values: older ones are let go.
    await using srv = await startServer({ changeFeedValueBytes: 1024 * KB });
    await using db = await connect({ ...srv.connectOptions, max: 1 });
    await db.exec(
      "CREATE TABLE orders (id INTEGER PRIMARY KEY, v); CREATE TABLE blobs (id INTEGER PRIMARY KEY, b)",
    );
    const feed = await db.subscribe({ tables: ["orders"], values: true });
    await db.run("INSERT INTO orders VALUES (1, 'first')");
    const [first] = await takeEvents(feed, 1);
    assert.deepEqual(rowOf(first), ["orders", 1, { id: 1, v: "first" }]);
    feed.close(); // the consumer goes away, remembering first.seq
    // Meanwhile another table gets 1.6 MiB of values: the oldest are let go.
    for (let i = 1; i <= 4; i++) {
      await db.run("INSERT INTO blobs VALUES (?, zeroblob(400 * 1024))", [i]);
    }
    // A feed of blobs from there would miss values: refused.
    await assert.rejects(
      db.subscribe({ tables: ["blobs"], values: true, since: seqOf(first) }),
      (e: unknown) => e instanceof SqliteError && e.code === "FEED_GAP",
    );
    // The orders feed misses nothing: it resumes, and gets the next order exactly.
    await using again = await db.subscribe({
      tables: ["orders"],
      values: true,
      since: seqOf(first),
    });
    await db.run("INSERT INTO orders VALUES (2, 'second')");
    const [second] = await takeEvents(again, 1);
    assert.deepEqual(rowOf(second), ["orders", 2, { id: 2, v: "second" }]);
  },
});

Deno.test({
  name:
    "feed consumer: subscribe() on a --readonly server, where no client can change anything, is refused with FEED_UNSUPPORTED",
  ignore: !ffi,
  async fn() {
    await using dir = await tempDir();
    const database = `${dir.path}/ro.db`;
    {
      await using writable = await startServer({ database });
      await using db = await writable.client();
      await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)");
    }
    await using srv = await startServer({ database, readonly: true });
    await using db = await srv.client();
    await assert.rejects(db.subscribe({ tables: ["t"] }), (e: unknown) => {
      assert.ok(e instanceof SqliteError, String(e));
      assert.equal(e.code, "FEED_UNSUPPORTED");
      assert.match(e.message, /read-only \(--readonly\)/);
      return true;
    });
    // The connection is still usable.
    assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]]);
  },
});

Deno.test({
  name:
    "feed consumer: closing and resubscribing with since (the last seq seen, or startSeq before any) under a steady writer gets every change once, in order",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await connect({ ...srv.connectOptions, max: 2 });
    await db.exec(
      "CREATE TABLE a (id INTEGER PRIMARY KEY, v); CREATE TABLE b (id INTEGER PRIMARY KEY, v)",
    );
    // A consumer that saw nothing yet resumes from the feed's start.
    const quiet = await db.subscribe({ tables: ["a"], values: true });
    let since = quiet.startSeq;
    quiet.close();
    const N = 300;
    const expected: number[] = [];
    const writer = (async () => {
      for (let i = 1; i <= N; i++) {
        const t = i % 3 === 0 ? "b" : "a";
        if (i % 7 === 0) {
          // A rolled-back transaction: never reported.
          await db.transaction(async (tx) => {
            await tx.run(`INSERT INTO ${t} VALUES (?, ?)`, [i, i]);
            throw new Error("undo");
          }).catch(() => {});
        } else {
          await db.run(`INSERT INTO ${t} VALUES (?, ?)`, [i, i]);
          if (t === "a") expected.push(i);
        }
      }
    })();
    let writing = true;
    const written = writer.finally(() => writing = false);
    const got: number[] = [];
    let opened = 0;
    for (let round = 0; writing; round++) {
      const feed = await db.subscribe({ tables: ["a"], values: true, since, buffer: 5 });
      opened++;
      // Each round reads 1 to 12 changes, then goes away (break and close, or a lag).
      const take = 1 + round % 12;
      for (let n = 0; n < take;) {
        const r = await Promise.race([feed.next(), written.then(() => null)]);
        if (r === null) break; // the writer is done: the rest is read below
        assert.equal(r.done, false);
        const e = r.value as ChangeEvent;
        if (e.type === "lagged") {
          since = e.resumeFrom;
          break;
        }
        assert.equal(e.type === "table" && e.table, "a");
        const row = e.type === "table" ? e.value as { id: number; v: number } : null;
        assert.equal(row?.id, e.type === "table" ? e.rowid : null);
        got.push(row!.v);
        since = e.seq;
        n++;
      }
      feed.close();
    }
    await writer;
    // What is left after the writer ended.
    await using rest = await db.subscribe({ tables: ["a"], since });
    await db.run("INSERT INTO a VALUES (?, 'end')", [N + 1]);
    for (;;) {
      const [e] = await takeEvents(rest, 1);
      if (e.type === "table" && e.rowid === N + 1) break;
      got.push(e.type === "table" ? Number(e.rowid) : -1);
    }
    assert.deepEqual(got, expected);
    assert.ok(opened > 2, `resubscribed ${opened} times`);
  },
});
