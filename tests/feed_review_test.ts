/**
 * Change feeds, after a review: a replaying feed that waits for room on
 * the server's queue goes on when another connection frees it (no commit
 * needed); a subscription's iterator bounds the bytes of values it
 * buffers for a slow consumer, as it bounds their number; a filter that
 * selects nothing is refused. The feeds need the FFI engine; checks made before that are
 * tested on both engines.
 */

import assert from "node:assert/strict";
import { openLink } from "../client/connection.ts";
import type { Link } from "../client/link.ts";
import { resolveConnectOptions } from "../client/options.ts";
import { type ChangeEvent, connect, type KvChangeEvent } from "../client.ts";
import type { SqliteError } from "../protocol/errors.ts";
import { EventKind, Op, type SubscribeRequest } from "../protocol/messages.ts";
import { MAX_SUBSCRIBE_QUEUED_BYTES, type SubscribeOptions } from "../client/subscribe.ts";
import { delay, serverStats, startServer, statsUntil, takeEvents, within } from "./_helpers.ts";
import { frame, Raw } from "./_raw.ts";

const ffi = Deno.env.get("NETSQLITE_ENGINE") !== "node";
const MB = 1024 * 1024;

/** The rowids of the changes `link` receives, by subscription. */
function rowidsOf(link: Link): Map<number, number[]> {
  const seen = new Map<number, number[]>();
  link.onEvent = (payload) => {
    const [sub, kind, data] = payload as [number, number, unknown];
    if (kind !== EventKind.Changes) return;
    const list = seen.get(sub) ?? [];
    for (const c of data as unknown[][]) list.push(Number(c[4]));
    seen.set(sub, list);
  };
  return seen;
}

async function until(what: string, ok: () => boolean, ms = 10_000): Promise<void> {
  const r = await within(
    (async () => {
      while (!ok()) await delay(5);
    })(),
    ms,
  );
  if (r === "timeout") throw new Error(`Timed out waiting for ${what}`);
}

Deno.test({
  name:
    "subscribe({ since }): a replay waiting for the server's queue goes on when another connection frees it, without a commit",
  ignore: !ffi,
  async fn() {
    // Room for 5 queued changes on the whole server.
    await using srv = await startServer({ maxQueuedChanges: 5 });
    const config = await resolveConnectOptions(srv.connectOptions);
    const [w] = await openLink(config);
    const [b] = await openLink(config);
    const raw = await Raw.open((srv.connectOptions as { path: string }).path);
    try {
      await w.request(Op.Exec, ["CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)"]);
      // A subscriber that reads nothing after its reply: its output fills
      // (rows of 1 MiB), then its feed holds the server's 5 queued changes.
      await raw.write(frame([Op.Subscribe, 2, { tables: ["t"], values: true }]));
      const reply = await raw.read(10_000) as [number, number, [number, number]];
      assert.equal(reply[1], 0, JSON.stringify(reply));
      const start = reply[2][1];
      for (let i = 0; i < 16; i++) {
        await w.request(Op.Run, ["INSERT INTO t (b) VALUES (zeroblob(?))", [MB], null]);
      }
      await statsUntil(
        srv.connectOptions,
        (r) => r.feeds?.queuedChanges === 5,
        "the server's queue is full",
      );
      // A feed resumed from before the rows: no room to replay into.
      const seen = rowidsOf(b);
      const [sub] = await b.request(Op.Subscribe, [{ tables: ["t"], since: start }]);
      await delay(300);
      assert.deepEqual(seen.get(sub) ?? [], [], "nothing replayed while the queue is full");
      // The other subscriber goes away, its queue with it: the replay goes on
      // at once, though nothing more is committed.
      await raw[Symbol.asyncDispose]();
      await until("the replay", () => (seen.get(sub)?.length ?? 0) === 16, 5_000);
      assert.deepEqual(seen.get(sub), Array.from({ length: 16 }, (_, i) => i + 1));
    } finally {
      await raw[Symbol.asyncDispose]();
      for (const link of [w, b]) {
        link.fail(new Error("test done"));
        await link.ended;
      }
    }
  },
});

Deno.test({
  name:
    "Subscription with values buffers at most MAX_SUBSCRIBE_QUEUED_BYTES of values for a slow consumer, then lagged; resume continues",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)");
    const rows = Math.ceil(MAX_SUBSCRIBE_QUEUED_BYTES / MB) + 16;
    await using feed = await db.subscribe({ tables: ["t"], values: true });
    // Nothing is read while the rows (1 MiB each) are committed and arrive.
    for (let i = 0; i < rows; i++) await db.run("INSERT INTO t (b) VALUES (zeroblob(?))", [MB]);
    // The iterator, never read, lags once it holds 64 MiB of values, and
    // closes the feed's connection (it held every row before: 451 MB for
    // 400 rows of 1 MB).
    await statsUntil(
      srv.connectOptions,
      (r) => r.connections.open - (r.connections.admin ?? 0) === 1,
      "the iterator lagged and closed the feed's connection",
      30_000,
    );
    const got: number[] = [];
    let resumeFrom: number | null = null;
    while (resumeFrom === null && got.length < rows) {
      const r = await within(feed.next(), 5_000);
      assert.ok(r !== "timeout" && !r.done, `an event after ${got.length} rows`);
      const e = r.value;
      if (e.type === "lagged") resumeFrom = e.resumeFrom;
      else {
        assert.equal(e.type, "table");
        if (e.type === "table") {
          assert.equal((e.value?.b as Uint8Array).length, MB);
          got.push(Number(e.rowid));
        }
      }
    }
    assert.ok(resumeFrom !== null, `lagged (got ${got.length} of ${rows} rows)`);
    assert.ok(got.length * MB <= MAX_SUBSCRIBE_QUEUED_BYTES, `${got.length} rows buffered`);
    assert.ok(got.length >= MAX_SUBSCRIBE_QUEUED_BYTES / MB - 1, `${got.length} rows buffered`);
    assert.deepEqual(got, Array.from({ length: got.length }, (_, i) => i + 1));
    // Resuming gets the rest, without a gap.
    await using again = await db.subscribe({ tables: ["t"], since: resumeFrom });
    const rest = await takeEvents(again, rows - got.length);
    assert.deepEqual(
      rest.map((e) => e.type === "table" ? Number(e.rowid) : e.type),
      Array.from({ length: rows - got.length }, (_, i) => got.length + i + 1),
    );
  },
});

Deno.test("subscribe() refuses a filter that selects nothing (tables: [], kv: [], kv: false) with INVALID_PARAM, client and server", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const refused = (what: RegExp) => (e: SqliteError) =>
    e.code === "INVALID_PARAM" && what.test(e.message) &&
    /leave (tables|kv) out: with (kv|tables) given, the feed reports only what/.test(e.message);
  const cases: [SubscribeRequest, RegExp][] = [
    [{ tables: [] }, /^Invalid tables: expected at least one table name, got an empty list/],
    [{ tables: [], kv: ["c"] }, /^Invalid tables: expected at least one table name/],
    [{ kv: [] }, /^Invalid kv: expected at least one collection name, or true, got an empty list/],
    [{ tables: ["t"], kv: [] }, /^Invalid kv: expected at least one collection name/],
    [{ kv: false }, /^Invalid kv: expected a list of collection names or true, got false/],
    [{ tables: ["t"], kv: false }, /^Invalid kv: expected a list of collection names or true/],
  ];
  // The client refuses them before it connects (so on either engine) ...
  for (const [options, what] of cases) {
    await assert.rejects(
      db.subscribe(options as SubscribeOptions),
      refused(what),
      JSON.stringify(options),
    );
  }
  // ... and so does the server (either engine: before it looks for the feed).
  const [link] = await openLink(await resolveConnectOptions(srv.connectOptions));
  try {
    for (const [options, what] of cases) {
      await assert.rejects(link.request(Op.Subscribe, [options]), refused(what));
    }
  } finally {
    link.fail(new Error("test done"));
    await link.ended;
  }
  assert.deepEqual(await db.values("SELECT 1"), [[1]]);
});

Deno.test({
  name:
    "subscribe(): resynchronising as the README says (read in a transaction) sees a transaction open when capture started, which no feed reports",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using other = await srv.client();
    await using db = await srv.client();
    await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
    // Another client's transaction is open when the first feed of the
    // server starts capturing: its changes are not reported.
    await other.exec("BEGIN");
    await other.run("INSERT INTO t (v) VALUES ('open at subscribe')");
    await using feed = await db.subscribe({ tables: ["t"], values: true });
    // A plain read right after subscribing misses it (it is not committed yet) ...
    assert.deepEqual(await db.values("SELECT v FROM t"), []);
    // ... a read in a transaction waits for it to end, and sees it.
    const read = db.transaction((tx) => tx.values("SELECT v FROM t"));
    assert.equal(await within(read, 300), "timeout", "the read waits for the open transaction");
    await other.exec("COMMIT");
    assert.deepEqual(await read, [["open at subscribe"]]);
    // Later commits are reported, applied over what was read; that one is not.
    await other.run("INSERT INTO t (v) VALUES ('later')");
    const [e] = await takeEvents(feed, 1);
    assert.ok(e.type === "table");
    assert.deepEqual([e.op, e.rowid, e.value], ["insert", 2, { id: 2, v: "later" }]);
  },
});

Deno.test({
  name:
    "subscribe({ kv }): puts of one key by several clients in one group commit are one change (one per key per commit)",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    const clients = await Promise.all(
      Array.from({ length: 8 }, () => connect({ ...srv.connectOptions, max: 1 })),
    );
    try {
      await using feed = await clients[0].subscribe({ kv: ["c"], values: true });
      // Until the puts of several clients share a commit (group commit).
      let puts = 0;
      for (let round = 0; round < 100; round++) {
        await Promise.all(clients.map((c, i) => c.kv("c").put("k", `${round}:${i}`)));
        puts += clients.length;
        if ((await serverStats(srv.connectOptions)).groupCommit.largest >= 2) break;
      }
      // The feed up to the last put.
      const last = (await clients[0].kv("c").get("k"))!.version;
      const events: ChangeEvent[] = [];
      while (events.at(-1)?.type !== "kv" || (events.at(-1) as KvChangeEvent).version !== last) {
        events.push(...await takeEvents(feed, 1));
      }
      assert.ok(events.length < puts, `${events.length} changes for ${puts} puts`);
      // One change per key per commit: no two share a commitSeq.
      const commits = events.map((e) => e.type === "kv" ? e.commitSeq : -1);
      assert.equal(new Set(commits).size, commits.length);
      assert.ok(!commits.includes(-1));
    } finally {
      for (const c of clients) await c.close();
    }
  },
});
