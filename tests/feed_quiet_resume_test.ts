/**
 * A filtered feed resumes however many changes of other tables and
 * collections the server's ring let go since its `since`: `FEED_GAP` only
 * when a change it would get was let go (or the `since` is from before a
 * restart). Before, a quiet feed (its tables rarely change) could not
 * resume once 10 000 other changes had been committed after the last one
 * it got, although it had missed none. Also: the ring's byte bound
 * (`changeFeedValueBytes`) counts the table and collection names it holds.
 * Real servers and `subscribe()` clients; feeds need the FFI engine (on
 * node:sqlite they are refused, `changes_test.ts`).
 */

import assert from "node:assert/strict";
import type { ChangeEvent, Client } from "../client.ts";
import type { SqliteError } from "../protocol/errors.ts";
import { startServer, takeEvents, within } from "./_helpers.ts";

const ffi = Deno.env.get("NETSQLITE_ENGINE") !== "node";

/** The server keeps this many changes for resuming (`CHANGE_FEED_CAPACITY`). */
const RING = 10_000;

/** Inserts `n` rows into `busy`, in one statement (`n` changes). */
async function busy(db: Client, n: number): Promise<void> {
  await db.run(
    "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?) " +
      "INSERT INTO busy (id) SELECT NULL FROM c",
    [n],
  );
}

/** The `seq` of a change event. */
function seqOf(e: ChangeEvent): number {
  assert.notEqual(e.type, "lagged", JSON.stringify(e));
  return e.type === "lagged" ? -1 : e.seq;
}

/** Table, op and rowid of a table change event. */
function rowOf(e: ChangeEvent): [string, string, unknown] {
  assert.equal(e.type, "table", JSON.stringify(e));
  return e.type === "table" ? [e.table, e.op, e.rowid] : ["", "", null];
}

/** True for a FEED_GAP whose message matches `re`. */
function gap(re: RegExp): (e: SqliteError) => boolean {
  return (e) => {
    assert.equal(e.code, "FEED_GAP", e.message);
    assert.match(e.message, re);
    return true;
  };
}

async function setUp(db: Client): Promise<void> {
  await db.exec("CREATE TABLE quiet (id INTEGER PRIMARY KEY, n TEXT)");
  await db.exec("CREATE TABLE busy (id INTEGER PRIMARY KEY)");
}

Deno.test({
  name:
    "feed quiet resume: a filtered feed resumes after 10,001+ changes to other tables and gets exactly its own",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    await setUp(db);
    let since: number;
    {
      await using feed = await db.subscribe({ tables: ["quiet"] });
      await db.run("INSERT INTO quiet (id, n) VALUES (1, 'one')");
      const [e] = await takeEvents(feed, 1);
      assert.deepEqual(rowOf(e), ["quiet", "insert", 1]);
      since = seqOf(e);
    }
    // While the feed is away: 5,000 other changes, one of its own, 5,001
    // others (its own is still held), one more of its own.
    await busy(db, 5_000);
    await db.run("INSERT INTO quiet (id, n) VALUES (2, 'two')");
    await busy(db, 5_001);
    await db.run("UPDATE quiet SET n = 'one!' WHERE id = 1");
    // The ring moved past `since`: a feed of every table, or of busy too, missed changes.
    await assert.rejects(db.subscribe({ since }), gap(/oldest change held/));
    await assert.rejects(db.subscribe({ tables: ["quiet", "busy"], since }), gap(/let go/));
    // The quiet feed missed none of its own: it resumes, and gets exactly them.
    await using again = await db.subscribe({ tables: ["QUIET"], since });
    assert.equal(again.startSeq, since);
    const got = await takeEvents(again, 2);
    assert.deepEqual(got.map(rowOf), [["quiet", "insert", 2], ["quiet", "update", 1]]);
    assert.deepEqual(got.map(seqOf), [since + 5_001, since + RING + 3]);
    // Then live changes, no duplicate.
    await db.run("INSERT INTO quiet (id, n) VALUES (3, 'three')");
    const [live] = await takeEvents(again, 1);
    assert.deepEqual(rowOf(live), ["quiet", "insert", 3]);
    assert.equal(seqOf(live), since + RING + 4);
    // A feed of a table with no change at all resumes from there too, and is quiet.
    await using none = await db.subscribe({ tables: ["nothing"], since });
    assert.equal(await within(none.next(), 200), "timeout");
  },
});

Deno.test({
  name: "feed quiet resume: still FEED_GAP when one of the feed's own changes was let go",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    await setUp(db);
    let since: number;
    {
      await using feed = await db.subscribe({ tables: ["quiet"] });
      await db.run("INSERT INTO quiet (id, n) VALUES (1, 'one')");
      since = seqOf((await takeEvents(feed, 1))[0]);
    }
    await db.run("INSERT INTO quiet (id, n) VALUES (2, 'two')"); // since + 1
    await busy(db, RING); // lets go of since + 1
    await assert.rejects(
      db.subscribe({ tables: ["quiet"], since }),
      gap(new RegExp(`change ${since + 1} .*let go`)),
    );
    await assert.rejects(db.subscribe({ tables: ["main.Quiet"], since }), gap(/let go/));
    // From after that change, nothing of its own was let go.
    await using again = await db.subscribe({ tables: ["quiet"], since: since + 1 });
    await db.run("INSERT INTO quiet (id, n) VALUES (3, 'three')");
    const [e] = await takeEvents(again, 1);
    assert.deepEqual(rowOf(e), ["quiet", "insert", 3]);
    assert.equal(seqOf(e), since + RING + 2);
  },
});

Deno.test({
  name:
    "feed quiet resume: key-value collections resume alike; kv: true counts every collection's changes let go",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    await setUp(db);
    let since: number;
    {
      await using feed = await db.subscribe({ kv: ["quiet"] });
      await db.kv("quiet").put(["a"], 1);
      since = seqOf((await takeEvents(feed, 1))[0]);
    }
    await db.kv("noisy").put(["x"], 0);
    await busy(db, RING);
    await db.kv("quiet").put(["a"], 2);
    await db.kv("quiet").delete(["a"]);
    await assert.rejects(db.subscribe({ kv: true, since }), gap(/let go/));
    await assert.rejects(db.subscribe({ kv: ["quiet", "noisy"], since }), gap(/let go/));
    await assert.rejects(db.subscribe({ kv: ["quiet"], tables: ["busy"], since }), gap(/let go/));
    await using again = await db.subscribe({ kv: ["quiet"], tables: ["quiet"], since });
    const got = await takeEvents(again, 2);
    assert.deepEqual(
      got.map((e) => e.type === "kv" ? [e.collection, e.op, e.key] : e),
      [["quiet", "update", ["a"]], ["quiet", "delete", ["a"]]],
    );
    assert.deepEqual(got.map(seqOf), [since + RING + 2, since + RING + 3]);
  },
});

Deno.test({
  name: "feed quiet resume: a filtered feed with values resumes with its rows' values",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    await setUp(db);
    // Another feed with values stays open, so values are read throughout.
    await using keep = await db.subscribe({ tables: ["nothing"], values: true });
    let since: number;
    {
      await using feed = await db.subscribe({ tables: ["quiet"], values: true });
      await db.run("INSERT INTO quiet (id, n) VALUES (1, 'one')");
      since = seqOf((await takeEvents(feed, 1))[0]);
    }
    await busy(db, 5_000);
    await db.run("INSERT INTO quiet (id, n) VALUES (2, 'two')");
    await busy(db, 5_001);
    await using again = await db.subscribe({ tables: ["quiet"], values: true, since });
    const [e] = await takeEvents(again, 1);
    assert.equal(
      e.type === "table" && JSON.stringify(e.value),
      JSON.stringify({ id: 2, n: "two" }),
    );
    assert.equal(seqOf(e), since + 5_001);
    void keep;
  },
});

Deno.test({
  name:
    "feed quiet resume: a values feed that went away resumes with values after 10,001+ other changes (within the value window)",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    await setUp(db);
    let since: number;
    {
      // The only feed with values; closing its connection ends it resumably.
      await using feed = await db.subscribe({ tables: ["quiet"], values: true });
      await db.run("INSERT INTO quiet (id, n) VALUES (1, 'one')");
      since = seqOf((await takeEvents(feed, 1))[0]);
    }
    await busy(db, RING + 1);
    await db.run("INSERT INTO quiet (id, n) VALUES (2, 'two')");
    await using again = await db.subscribe({ tables: ["quiet"], values: true, since });
    const [e] = await takeEvents(again, 1);
    assert.equal(
      e.type === "table" && JSON.stringify(e.value),
      JSON.stringify({ id: 2, n: "two" }),
    );
    assert.equal(seqOf(e), since + RING + 2);
  },
});

Deno.test({
  name: "feed quiet resume: a since from before a restart still fails with FEED_GAP",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    const database = srv.database;
    let since: number;
    {
      await using db = await srv.client();
      await setUp(db);
      await using feed = await db.subscribe({ tables: ["quiet"] });
      await db.run("INSERT INTO quiet (id, n) VALUES (1, 'one')");
      since = seqOf((await takeEvents(feed, 1))[0]);
    }
    await srv.server.shutdown();
    await using again = await startServer({ database });
    await using db = await again.client();
    await using feed = await db.subscribe({ tables: ["busy"] });
    await busy(db, RING + 1);
    await assert.rejects(
      db.subscribe({ tables: ["quiet"], since }),
      gap(/none from before its restart/),
    );
    // The first position of the new server's feed resumes.
    await using from = await db.subscribe({ tables: ["quiet"], since: feed.startSeq });
    assert.equal(from.startSeq, feed.startSeq);
  },
});

Deno.test({
  name:
    "feed quiet resume: the ring's byte bound counts table names; a feed of other tables resumes past them",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer({ changeFeedValueBytes: 1024 * 1024 });
    await using db = await srv.client();
    await setUp(db);
    const long = "n".repeat(100_000); // 200 KB a change, counted as a string's
    await db.exec(`CREATE TABLE "${long}" (id INTEGER PRIMARY KEY)`);
    await using feed = await db.subscribe({});
    const start = feed.startSeq;
    await db.run("INSERT INTO quiet (id, n) VALUES (1, 'one')");
    for (let i = 1; i <= 10; i++) await db.run(`INSERT INTO "${long}" (id) VALUES (?)`, [i]);
    const events = await takeEvents(feed, 11);
    const last = seqOf(events[10]);
    assert.equal(last, start + 11);
    // Ten changes naming a 100,000-character table are 2 MB: the ring let the oldest go.
    await assert.rejects(db.subscribe({ since: start + 1 }), gap(/oldest change held/));
    await using recent = await db.subscribe({ since: last - 3 });
    assert.deepEqual((await takeEvents(recent, 3)).map(seqOf), [last - 2, last - 1, last]);
    // A feed of quiet, from after its change, missed nothing.
    await using quiet = await db.subscribe({ tables: ["quiet"], since: start + 1 });
    await db.run("INSERT INTO quiet (id, n) VALUES (2, 'two')");
    assert.deepEqual(rowOf((await takeEvents(quiet, 1))[0]), ["quiet", "insert", 2]);
  },
});

Deno.test({
  name:
    "feed quiet resume: the record of names let go is bounded; past it a resume from before the oldest forgotten fails",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer({ changeFeedValueBytes: 1024 * 1024 });
    await using db = await srv.client();
    await setUp(db);
    // Five tables whose 250,000-character names count 500 KB each: the ring
    // holds two of their changes, the record of names let go two of theirs
    // (at most 1 MiB of names): the fifth change makes it forget quiet's
    // change (since) and table a's (since + 1).
    const names = ["a", "b", "c", "d", "e"].map((c) => c.repeat(250_000));
    for (const n of names) await db.exec(`CREATE TABLE "${n}" (id INTEGER PRIMARY KEY)`);
    await using feed = await db.subscribe({ tables: ["quiet"] });
    await db.run("INSERT INTO quiet (id, n) VALUES (1, 'one')");
    const since = seqOf((await takeEvents(feed, 1))[0]);
    for (const n of names) await db.run(`INSERT INTO "${n}" (id) VALUES (1)`);
    // From before what it forgot, the server cannot tell whether quiet's
    // changes were let go: FEED_GAP, as for an unfiltered feed.
    await assert.rejects(db.subscribe({ tables: ["quiet"], since }), gap(/oldest change held/));
    await assert.rejects(db.subscribe({ tables: [names[1]], since: since + 1 }), gap(/let go/));
    // From there on it knows: the changes let go were of tables b and c.
    await using again = await db.subscribe({ tables: ["quiet"], since: since + 1 });
    await db.run("INSERT INTO quiet (id, n) VALUES (2, 'two')");
    assert.deepEqual(rowOf((await takeEvents(again, 1))[0]), ["quiet", "insert", 2]);
  },
});

Deno.test({
  name: "feed quiet resume: node:sqlite refuses a filtered resume as any feed (FEED_UNSUPPORTED)",
  ignore: ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    await setUp(db);
    await busy(db, RING + 1);
    await assert.rejects(
      db.subscribe({ tables: ["quiet"], since: 1 }),
      (e: SqliteError) => e.code === "FEED_UNSUPPORTED",
    );
    assert.deepEqual(await db.query("SELECT count(*) AS n FROM busy"), [{ n: RING + 1 }]);
  },
});
