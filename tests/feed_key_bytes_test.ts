/**
 * The change log's memory is bounded in bytes for key-value keys too, not
 * only for values: the ring that `subscribe({ since })` resumes from keeps
 * at most `changeFeedValueBytes` of keys (a change's key is held even for a
 * feed without values, and one long key put again and again is a copy per
 * change), letting go of the oldest changes past it, so a resume from
 * before them fails with `FEED_GAP` rather than the server holding 10 000
 * copies of the key. The feed needs the FFI engine; on the node engine the
 * key-value part runs (the keys are stored and listed) without a feed.
 */

import assert from "node:assert/strict";
import type { SqliteError } from "../protocol/errors.ts";
import { startServer, statsUntil, takeEvents } from "./_helpers.ts";
import { MAX_SUBSCRIBE_QUEUED_BYTES } from "../client/subscribe.ts";

const ffi = Deno.env.get("NETSQLITE_ENGINE") !== "node";
const KB = 1024;

Deno.test("feed key bytes: the ring holds at most changeFeedValueBytes of key-value keys; older resume FEED_GAP", async () => {
  await using srv = await startServer({ changeFeedValueBytes: 1024 * KB });
  await using db = await srv.client();
  const c = db.kv("big");
  const key = ["k".repeat(200 * KB)];
  // Without a feed (node engine), the long key is stored and read back as any other.
  await c.put(key, -1);
  assert.equal((await c.get(key))?.value, -1);
  if (!ffi) return;
  // A feed that takes none of these changes: capture starts all the same.
  await using other = await db.subscribe({ tables: ["none"] });
  await using live = await db.subscribe({ kv: ["big"] });
  const start = live.startSeq;
  for (let i = 0; i < 20; i++) await c.put(key, i);
  // The live feed gets each change, key included.
  const events = await takeEvents(live, 20);
  assert.deepEqual(events.map((e) => e.type === "kv" && e.key[0] === key[0]), Array(20).fill(true));
  const last = (events[19] as { seq: number }).seq;
  assert.equal(last, start + 20);
  // 20 keys of 200 KiB are 4 MiB: the ring let the oldest go, keeping about
  // 1 MiB of them (the newest four or five).
  await assert.rejects(
    db.subscribe({ kv: ["big"], since: start }),
    (e: SqliteError) => e.code === "FEED_GAP" && /oldest change held/.test(e.message),
  );
  await using recent = await db.subscribe({ kv: ["big"], since: last - 3 });
  const again = await takeEvents(recent, 3);
  assert.deepEqual(again.map((e) => (e as { seq: number }).seq), [last - 2, last - 1, last]);
  void other;
});

Deno.test({
  name:
    "feed key bytes: a feed queues at most maxQueuedValueBytesPerConnection of keys too, then LAGGED; resume continues",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer({ maxQueuedValueBytesPerConnection: 1024 * KB });
    await using db = await srv.client();
    await using feed = await db.subscribe({ kv: ["big"] }); // (without values)
    // One commit of 10 keys of 300 KiB: queued at once, before any is sent.
    const keys = Array.from({ length: 10 }, (_, i) => [String(i).repeat(300 * KB)]);
    await db.transaction(async (tx) => {
      for (const key of keys) await tx.kv("big").put(key, 0);
    });
    const got = await takeEvents(feed, 11);
    // 3 x 300 KiB of keys fit in 1 MiB; then the feed lagged.
    assert.deepEqual(got.map((e) => e.type), ["kv", "kv", "kv", "lagged"]);
    const seen = got.slice(0, 3).map((e) => (e as { key: string[] }).key[0]);
    assert.deepEqual(seen, keys.slice(0, 3).map((k) => k[0]));
    // Resuming goes on without a gap, a bounded part at a time.
    let since = (got[3] as { resumeFrom: number }).resumeFrom;
    while (seen.length < 10) {
      await using next = await db.subscribe({ kv: ["big"], since });
      for await (const e of next) {
        if (e.type === "lagged") {
          since = e.resumeFrom;
          break;
        }
        assert.equal(e.type, "kv");
        seen.push((e as { key: string[] }).key[0]);
        since = e.seq;
        if (seen.length === 10) break;
      }
    }
    assert.deepEqual(seen, keys.map((k) => k[0]));
  },
});

Deno.test({
  name:
    "feed key bytes: the client iterator buffers at most MAX_SUBSCRIBE_QUEUED_BYTES of keys for a consumer that does not read, then lagged",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    const key = ["k".repeat(1024 * KB)];
    await db.kv("big").put(key, 0);
    await using feed = await db.subscribe({ kv: ["big"] }); // (without values)
    const n = MAX_SUBSCRIBE_QUEUED_BYTES / (1024 * KB) + 6; // 70 changes of a 1 MiB key
    for (let i = 0; i < n; i++) await db.kv("big").put(key, i);
    // Nothing is read: the iterator ends the feed past its bound, closing its connection.
    await statsUntil(
      srv.connectOptions,
      (r) => r.connections.open - (r.connections.admin ?? 0) === 1,
      "the lagging feed's connection to close",
    );
    const got = await takeEvents(feed, n + 1);
    const last = got.at(-1)!;
    assert.equal(last.type, "lagged");
    const changes = got.slice(0, -1);
    assert.ok(changes.length >= 60 && changes.length < n, `${changes.length} changes buffered`);
    assert.equal(
      (last as { resumeFrom: number }).resumeFrom,
      (changes.at(-1) as { seq: number }).seq,
    );
  },
});
