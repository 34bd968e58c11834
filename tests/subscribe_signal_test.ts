/**
 * `subscribe({ signal })`: every other call takes `{ signal }`, and
 * `subscribe()` refused it as an unknown option. Now an aborted signal
 * rejects `subscribe()` with `AbortError` before anything is opened (both
 * engines), aborting it while the feed opens rejects with `AbortError` and
 * closes what was opened, and aborting an open feed ends it: its pending
 * `next()` (or its next one) rejects with `AbortError`, later ones are done,
 * and the server lets the feed's connection go. The feed itself needs the
 * FFI engine.
 */

import assert from "node:assert/strict";
import { AbortError, connect, type TableChangeEvent } from "../client.ts";
import { startServer, statsUntil, takeEvents } from "./_helpers.ts";

const ffi = Deno.env.get("NETSQLITE_ENGINE") !== "node";

function abortedBy(reason: unknown): (err: unknown) => boolean {
  return (err) => {
    assert.ok(err instanceof AbortError, String(err));
    assert.equal(err.code, "ABORTED");
    assert.equal(err.cause, reason);
    return true;
  };
}

Deno.test("subscribe({ signal }) already aborted: AbortError, nothing opened", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 1 });
  await db.query("SELECT 1");
  const before = await statsUntil(srv.connectOptions, () => true, "stats");
  const reason = new Error("user left");
  await assert.rejects(
    db.subscribe({ tables: ["t"], signal: AbortSignal.abort(reason) }),
    abortedBy(reason),
  );
  const after = await statsUntil(srv.connectOptions, () => true, "stats");
  // (Each stats read opens one connection of its own.)
  assert.equal(after.connections.total, before.connections.total + 1);
  // `null` is no signal; a signal that is no AbortSignal is refused as for any call.
  await assert.rejects(
    db.subscribe({ signal: "no" as unknown as AbortSignal }),
    (err) => err instanceof TypeError && /subscribe\(\) option "signal"/.test(err.message),
  );
  if (!ffi) {
    await assert.rejects(db.subscribe({ signal: null }), { code: "FEED_UNSUPPORTED" });
  }
});

Deno.test("subscribe({ signal }) aborted while the feed opens: AbortError, connection closed", async () => {
  await using srv = await startServer();
  await using db = await connect(srv.connectOptions);
  const ac = new AbortController();
  const p = db.subscribe({ signal: ac.signal });
  const reason = new Error("changed my mind");
  ac.abort(reason);
  await assert.rejects(p, abortedBy(reason));
  // Open: the client's connection and the stats reader's; the feed's was closed.
  const r = await statsUntil(
    srv.connectOptions,
    (r) => r.connections.open === 2,
    "the feed's connection closed",
  );
  assert.ok(r.connections.total <= 3, JSON.stringify(r.connections));
});

Deno.test({
  name:
    "subscribe({ signal }) aborted once open: pending next() rejects with AbortError, then done; the server lets it go",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await connect({ ...srv.connectOptions, max: 1 });
    await db.exec("CREATE TABLE t (x)");
    const ac = new AbortController();
    const feed = await db.subscribe({ tables: ["t"], signal: ac.signal });
    await db.run("INSERT INTO t VALUES (1)");
    const [first] = await takeEvents(feed, 1) as TableChangeEvent[];
    assert.equal(first.rowid, 1);
    await statsUntil(srv.connectOptions, (r) => r.connections.open === 3, "feed and client open");

    const pending = feed.next();
    const second = feed.next();
    ac.abort();
    const reason = ac.signal.reason;
    await assert.rejects(pending, abortedBy(reason));
    assert.deepEqual(await second, { value: undefined, done: true });
    assert.deepEqual(await feed.next(), { value: undefined, done: true });
    // Its connection closed: the server holds no feed for it.
    await statsUntil(srv.connectOptions, (r) => r.connections.open === 2, "feed closed");
    await db.run("INSERT INTO t VALUES (2)");
    const report = await statsUntil(srv.connectOptions, () => true, "stats");
    assert.equal(report.feeds?.queuedChanges, 0);
    feed.close(); // idempotent
    await feed[Symbol.asyncDispose]();
  },
});

Deno.test({
  name:
    "subscribe({ signal }) aborted inside for await: the loop throws AbortError, changes buffered are dropped",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await connect({ ...srv.connectOptions, max: 1 });
    await db.exec("CREATE TABLE t (x)");
    const ac = new AbortController();
    await using feed = await db.subscribe({ tables: ["t"], signal: ac.signal });
    await db.exec("INSERT INTO t VALUES (1); INSERT INTO t VALUES (2); INSERT INTO t VALUES (3)");
    const seen: unknown[] = [];
    const reason = new Error("enough");
    await assert.rejects(
      (async () => {
        for await (const e of feed) {
          seen.push((e as TableChangeEvent).rowid);
          if (seen.length === 1) {
            // Let the other changes reach the iterator's buffer, then stop.
            await statsUntil(srv.connectOptions, () => true, "stats");
            ac.abort(reason);
          }
        }
      })(),
      abortedBy(reason),
    );
    assert.deepEqual(seen, [1]);
  },
});

Deno.test({
  name:
    "subscribe({ signal }): one signal for many feeds, each closed or aborted, leaves no listener or connection",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer({ maxConnections: 12 });
    await using db = await connect({ ...srv.connectOptions, max: 1 });
    await db.exec("CREATE TABLE t (x)");
    const ac = new AbortController();
    let listeners = 0;
    const add = ac.signal.addEventListener.bind(ac.signal);
    const remove = ac.signal.removeEventListener.bind(ac.signal);
    ac.signal.addEventListener = ((...args: Parameters<AbortSignal["addEventListener"]>) => {
      listeners++;
      add(...args);
    }) as AbortSignal["addEventListener"];
    ac.signal.removeEventListener = ((...args: Parameters<AbortSignal["removeEventListener"]>) => {
      listeners--;
      remove(...args);
    }) as AbortSignal["removeEventListener"];
    // Closed normally, 30 times (more than the server takes connections at once).
    for (let i = 0; i < 30; i++) {
      const feed = await db.subscribe({ tables: ["t"], signal: ac.signal });
      await feed[Symbol.asyncDispose]();
    }
    assert.equal(listeners, 0);
    // Aborted together: every feed ends, and the server takes as many again.
    const feeds = [];
    for (let i = 0; i < 8; i++) feeds.push(await db.subscribe({ signal: ac.signal }));
    ac.abort();
    for (const feed of feeds) await assert.rejects(feed.next(), abortedBy(ac.signal.reason));
    await statsUntil(srv.connectOptions, (r) => r.connections.open === 2, "feeds closed");
    assert.equal(listeners, 0);
    // (An aborted signal is refused at once; a fresh one opens 8 feeds again.)
    const again = new AbortController();
    for (let i = 0; i < 8; i++) feeds[i] = await db.subscribe({ signal: again.signal });
    await db.run("INSERT INTO t VALUES (1)");
    for (const feed of feeds) assert.equal((await takeEvents(feed, 1))[0].type, "table");
    again.abort();
    await statsUntil(srv.connectOptions, (r) => r.connections.open === 2, "feeds closed");
  },
});
