/**
 * Review of 2026-12-07's merged changes: a `--readonly` server of a
 * rollback-journal database whose read meets another program's EXCLUSIVE
 * lock waits for it in the background (FFI). Pipelined requests behind the
 * waiting one keep their order; each waiting request gets its own
 * `--busy-timeout`, however late it joined the shared wait; a connection
 * closed while its read waits leaves the server serving.
 */

import assert from "node:assert/strict";
import { SqliteError } from "../mod.ts";
import { Encoded } from "../protocol/msgpack.ts";
import { holdExclusive, rollbackJournalDb, startServer, takeEvents, within } from "./_helpers.ts";
import { frame, Raw } from "./_raw.ts";

const ffi = (Deno.env.get("NETSQLITE_ENGINE") ?? "ffi") !== "node";

Deno.test({
  name:
    "review today3: requests pipelined behind a read waiting for another program's lock are answered after it, in order",
  ignore: !ffi,
  async fn() {
    await using journal = await rollbackJournalDb();
    const { database } = journal;
    await using srv = await startServer({ database, readonly: true, logLevel: "error" });
    await using a = await srv.client();
    assert.deepEqual(await a.values("SELECT count(*) FROM t"), [[1]]);
    const holder = await holdExclusive(database);
    try {
      const order: string[] = [];
      const note = <T>(what: string, p: Promise<T>) =>
        p.then((v) => {
          order.push(what);
          return v;
        });
      const first = note("first", a.values("SELECT count(*) FROM t"));
      const second = note("second", a.values("SELECT max(a) FROM t"));
      const third = note("third", a.values("SELECT 42"));
      const fourth = note("fourth", a.values("SELECT min(a) FROM t"));
      assert.equal(await within(first, 300), "timeout");
      assert.equal(await within(third, 50), "timeout");
      await holder.release();
      assert.deepEqual(
        await Promise.all([first, second, third, fourth]),
        [[[2]], [[2]], [[42]], [[1]]],
      );
      assert.deepEqual(order, ["first", "second", "third", "fourth"]);
    } finally {
      await holder.release();
    }
  },
});

Deno.test({
  name:
    "review today3: a read that joins the shared wait for another program's lock late still waits its own --busy-timeout",
  ignore: !ffi,
  async fn() {
    await using journal = await rollbackJournalDb();
    const { database } = journal;
    await using srv = await startServer({
      database,
      readonly: true,
      busyTimeout: 1_000,
      logLevel: "error",
    });
    await using a = await srv.client();
    await using b = await srv.client();
    const holder = await holdExclusive(database);
    try {
      const early = a.values("SELECT count(*) FROM t").then(() => null, (err) => err);
      await new Promise((r) => setTimeout(r, 700));
      const t0 = performance.now();
      const late = await b.values("SELECT count(*) FROM t").then(() => null, (err) => err);
      const took = performance.now() - t0;
      assert.ok(late instanceof SqliteError, String(late));
      assert.equal(late.code, "SQLITE_BUSY", late.message);
      // It says it waited the busy timeout, 1000 ms: it did (not 300 ms).
      assert.ok(took >= 900 && took < 2_500, `the late read failed after ${took} ms`);
      const e = await early;
      assert.equal(e?.code, "SQLITE_BUSY", String(e));
    } finally {
      await holder.release();
    }
    assert.deepEqual(await a.values("SELECT count(*) FROM t"), [[2]]);
    assert.deepEqual(await b.values("SELECT count(*) FROM t"), [[2]]);
  },
});

Deno.test({
  name:
    "review today3: a connection closed while its reads wait for another program's lock, then the server shut down while another waits",
  ignore: !ffi,
  async fn() {
    await using journal = await rollbackJournalDb();
    const { database } = journal;
    await using srv = await startServer({ database, readonly: true, logLevel: "error" });
    const a = await srv.client();
    await using b = await srv.client();
    await using c = await srv.client();
    const holder = await holdExclusive(database);
    try {
      const gone = a.values("SELECT count(*) FROM t").then(() => null, (err) => err);
      const gone2 = a.values("SELECT 1").then(() => null, (err) => err);
      const waiting = b.values("SELECT count(*) FROM t");
      assert.equal(await within(waiting, 300), "timeout");
      await a.close();
      assert.ok((await gone) instanceof Error);
      assert.ok((await gone2) instanceof Error);
      // The server goes on: the other waiting read is answered once the lock is released.
      await holder.release();
      assert.deepEqual(await waiting, [[2]]);
      // Waiting again, then shut down: answered, nothing left armed.
      const holder2 = await holdExclusive(database);
      try {
        const last = c.values("SELECT count(*) FROM t").then(() => null, (err) => err);
        assert.equal(await within(last, 300), "timeout");
        const t0 = performance.now();
        await srv.server.shutdown();
        const err = await last;
        assert.ok(err instanceof Error, String(err));
        assert.ok(performance.now() - t0 < 4_000);
      } finally {
        await holder2.release();
      }
    } finally {
      await holder.release();
    }
  },
});

Deno.test("review today3: a map holding a long key twice is refused with a message that does not echo all of it", async () => {
  await using srv = await startServer({ logLevel: "error" });
  {
    await using raw = await Raw.open(srv.connectOptions.path!);
    // {k: 1, k: 2}, k 1 MiB of "x": str32 keys.
    const key = new Uint8Array(1 + 4 + (1 << 20)).fill(0x78);
    key[0] = 0xdb;
    new DataView(key.buffer).setUint32(1, 1 << 20);
    const map = new Uint8Array(1 + 2 * (key.length + 1));
    map.set([0x82]);
    map.set(key, 1);
    map[1 + key.length] = 0x01;
    map.set(key, 2 + key.length);
    map[2 + 2 * key.length] = 0x02;
    await raw.write(frame([2, 2, "SELECT :k", new Encoded(map, 0), null]));
    const reply = await raw.read(5000) as [number, number, { code: string; message: string }];
    assert.equal(reply[0], 0, JSON.stringify(reply).slice(0, 200));
    assert.equal(reply[2].code, "BAD_REQUEST");
    assert.match(reply[2].message, /Map key "x+…?" appears twice/);
    assert.ok(reply[2].message.length < 1_000, `message of ${reply[2].message.length} characters`);
  }
  await using c = await srv.client();
  assert.deepEqual(await c.values("SELECT 1"), [[1]]);
});

Deno.test({
  name:
    "review today3: with changeFeedValueBytes 0 (no values kept) a table feed still resumes: names of usual length are not counted against it",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer({ changeFeedValueBytes: 0 });
    await using db = await srv.client();
    await db.exec("CREATE TABLE t (a)");
    let since: number;
    {
      await using feed = await db.subscribe({ tables: ["t"] });
      await db.run("INSERT INTO t VALUES (0)");
      const [e] = await takeEvents(feed, 1);
      since = (e as { seq: number }).seq;
    }
    for (let i = 1; i <= 3; i++) await db.run("INSERT INTO t VALUES (?)", [i]);
    await using again = await db.subscribe({ tables: ["t"], since });
    const got = await takeEvents(again, 3);
    assert.deepEqual(got.map((e) => (e as { seq: number }).seq), [since + 1, since + 2, since + 3]);
    // A name past 128 characters still counts (two bytes each): its changes are let go.
    const long = "n".repeat(129);
    await db.exec(`CREATE TABLE "${long}" (a)`);
    const head = since + 3;
    for (let i = 1; i <= 3; i++) await db.run(`INSERT INTO "${long}" VALUES (?)`, [i]);
    await assert.rejects(
      db.subscribe({ tables: [long], since: head }),
      (err: SqliteError) => err.code === "FEED_GAP" && /let go/.test(err.message),
    );
  },
});

Deno.test({
  name:
    "review today3: cancelling a read waiting for another program's lock lets the request pipelined behind it wait in turn, answered once",
  ignore: !ffi,
  async fn() {
    await using journal = await rollbackJournalDb();
    const { database } = journal;
    await using srv = await startServer({ database, readonly: true, logLevel: "error" });
    await using a = await srv.client();
    const holder = await holdExclusive(database);
    try {
      const abort = new AbortController();
      const first = a.values("SELECT count(*) FROM t", [], { signal: abort.signal }).then(
        () => null,
        (err) => err,
      );
      const second = a.values("SELECT max(a) FROM t");
      const third = a.values("SELECT min(a) FROM t", [], { timeout: 400 }).then(
        () => null,
        (err) => err,
      );
      assert.equal(await within(second, 200), "timeout");
      abort.abort();
      const err = await first;
      assert.equal(err?.code, "ABORTED", String(err));
      // The second waits now; the third, behind it, times out at its own deadline
      // (its clock starts when its turn comes: after the second).
      assert.equal(await within(second, 300), "timeout");
      await holder.release();
      assert.deepEqual(await second, [[2]]);
      const late = await third;
      assert.equal(late, null, String(late));
      assert.deepEqual(await a.values("SELECT count(*) FROM t"), [[2]]);
    } finally {
      await holder.release();
    }
  },
});

Deno.test({
  name:
    "review today3: exec (BEGIN, a script) meeting another program's lock as it takes the writer waits for it, and keeps no writer when it fails",
  ignore: !ffi,
  async fn() {
    await using journal = await rollbackJournalDb();
    const { database } = journal;
    await using srv = await startServer({
      database,
      readonly: true,
      busyTimeout: 600,
      logLevel: "error",
    });
    await using a = await srv.client();
    await using b = await srv.client();
    assert.deepEqual(await a.values("SELECT count(*) FROM t"), [[1]]);
    // Released before the busy timeout: the BEGIN and the script wait, then run.
    let holder = await holdExclusive(database);
    try {
      const begin = a.exec("BEGIN");
      const script = b.exec("SELECT 1; SELECT 2");
      assert.equal(await within(begin, 200), "timeout");
      await holder.release();
      await begin;
      assert.deepEqual(await a.values("SELECT count(*) FROM t"), [[2]]);
      await a.exec("COMMIT"); // (the script waits for the writer the transaction holds)
      await script;
    } finally {
      await holder.release();
    }
    // Held past the busy timeout: SQLITE_BUSY, and the writer is not kept
    // by the failed request (before: another client's exec then waited
    // --busy-timeout for it, "held by session 1", and failed).
    holder = await holdExclusive(database);
    try {
      const failed = await a.exec("SELECT 1").then(() => null, (err) => err);
      assert.equal(failed?.code, "SQLITE_BUSY", String(failed));
    } finally {
      await holder.release();
    }
    const t0 = performance.now();
    await b.exec("SELECT 1");
    assert.ok(performance.now() - t0 < 300, `b waited ${performance.now() - t0} ms`);
    await a.exec("SELECT 1");
  },
});
