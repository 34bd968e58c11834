/**
 * Change feeds hold values within byte bounds: the ring keeps at most
 * `changeFeedValueBytes` of values for resuming (older ones are let go, and
 * a resume asking for them fails with `FEED_GAP`), lets go of all of them
 * when the last feed with values unsubscribes, and a feed queues at most
 * `maxQueuedValueBytesPerConnection` of values before `LAGGED`. The
 * engine's counts are read from `stats` (`feeds`). FFI engine only (feeds).
 */

import assert from "node:assert/strict";
import { openLink } from "../client/connection.ts";
import type { Link } from "../client/link.ts";
import { resolveConnectOptions } from "../client/options.ts";
import type { SqliteError } from "../protocol/errors.ts";
import { EventKind, Op, type StatsReport } from "../protocol/messages.ts";
import { startServer, within } from "./_helpers.ts";

const ffi = Deno.env.get("NETSQLITE_ENGINE") !== "node";
const KB = 1024;

/** Events of one link by subscription: changes as [seq, rowid, value bytes], and LAGGED. */
interface Seen {
  changes: Map<number, [number, number, number][]>;
  lagged: Map<number, number>;
}

function listen(link: Link): Seen {
  const seen: Seen = { changes: new Map(), lagged: new Map() };
  link.onEvent = (payload) => {
    const [sub, kind, data] = payload as [number, number, unknown];
    if (kind === EventKind.Lagged) {
      seen.lagged.set(sub, data as number);
      return;
    }
    const list = seen.changes.get(sub) ?? [];
    for (const c of data as unknown[][]) {
      const row = c[8] as { b?: Uint8Array } | null;
      list.push([c[0] as number, Number(c[4]), row?.b?.length ?? 0]);
    }
    seen.changes.set(sub, list);
  };
  return seen;
}

async function until(what: string, ok: () => boolean, ms = 10_000): Promise<void> {
  const r = await within(
    (async () => {
      while (!ok()) await new Promise((resolve) => setTimeout(resolve, 5));
    })(),
    ms,
  );
  if (r === "timeout") throw new Error(`Timed out waiting for ${what}`);
}

async function feeds(link: Link): Promise<NonNullable<StatsReport["feeds"]>> {
  const r = await link.request(Op.Stats, []);
  assert.ok(r.feeds !== undefined, "stats has feeds");
  return r.feeds;
}

async function insertBlobs(w: Link, n: number, size: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    await w.request(Op.Run, ["INSERT INTO t (b) VALUES (?)", [new Uint8Array(size).fill(i)], null]);
  }
}

async function close(...links: Link[]): Promise<void> {
  for (const link of links) {
    link.fail(new Error("test done"));
    await link.ended;
  }
}

const gap = (e: SqliteError): boolean => e.code === "FEED_GAP" && /let go/.test(e.message);

Deno.test({
  name: "feed memory: the ring holds at most changeFeedValueBytes of values; older resume FEED_GAP",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer({ changeFeedValueBytes: 1024 * KB });
    const config = await resolveConnectOptions(srv.connectOptions);
    const [a] = await openLink(config);
    const [w] = await openLink(config);
    try {
      const seen = listen(a);
      await w.request(Op.Exec, ["CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)"]);
      const [sub, start] = await a.request(Op.Subscribe, [{ tables: ["t"], values: true }]);
      await insertBlobs(w, 20, 200 * KB);
      await until("20 changes", () => seen.changes.get(sub)?.length === 20);
      // The live feed got every value.
      assert.deepEqual(seen.changes.get(sub)!.map((c) => c[2]), Array(20).fill(200 * KB));
      const f = await feeds(w);
      assert.ok(f.heldValueBytes <= 1024 * KB, `held ${f.heldValueBytes}`);
      assert.ok(f.heldValueBytes >= 800 * KB, `held ${f.heldValueBytes}`); // the newest four or five
      const ofW = listen(w);
      // Resuming with values from the start needs values let go: FEED_GAP.
      await assert.rejects(w.request(Op.Subscribe, [{ values: true, since: start }]), gap);
      // Without values it resumes; from the last three changes, with values too.
      const [bare] = await w.request(Op.Subscribe, [{ tables: ["t"], since: start }]);
      const recent = start + 17;
      const [withValues] = await w.request(Op.Subscribe, [{ values: true, since: recent }]);
      await until(
        "the resumed feeds",
        () => ofW.changes.get(bare)?.length === 20 && ofW.changes.get(withValues)?.length === 3,
      );
      assert.deepEqual(ofW.changes.get(withValues)!.map((c) => c[2]), Array(3).fill(200 * KB));
      assert.deepEqual(
        ofW.changes.get(bare)!.map((c) => c[1]),
        Array.from({ length: 20 }, (_, i) => i + 1),
      );
    } finally {
      await close(a, w);
    }
  },
});

Deno.test({
  name:
    "feed memory: values are let go when the last feed with values unsubscribes; kept a while after a disconnect",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    const config = await resolveConnectOptions(srv.connectOptions);
    const [a] = await openLink(config);
    const [b] = await openLink(config);
    const [w] = await openLink(config);
    try {
      const seen = listen(a);
      listen(b);
      await w.request(Op.Exec, ["CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)"]);
      const [sub, start] = await a.request(Op.Subscribe, [{ tables: ["t"], values: true }]);
      await insertBlobs(w, 5, 100 * KB);
      await until("5 changes", () => seen.changes.get(sub)?.length === 5);
      assert.ok((await feeds(w)).heldValueBytes >= 500 * KB);
      // A client that unsubscribes will not resume: the values are let go at once.
      await a.request(Op.Unsubscribe, [sub]);
      assert.equal((await feeds(w)).heldValueBytes, 0);
      await assert.rejects(w.request(Op.Subscribe, [{ values: true, since: start }]), gap);
      // With no feed wanting values, none are read.
      await insertBlobs(w, 2, 100 * KB);
      assert.equal((await feeds(w)).heldValueBytes, 0);
      // A feed with values whose connection is lost may resume: values go on
      // being held (for the value window, 30 s by default).
      const [sub2] = await b.request(Op.Subscribe, [{ tables: ["t"], values: true }]);
      assert.ok(sub2 > 0);
      await close(b);
      await insertBlobs(w, 3, 100 * KB);
      assert.ok((await feeds(w)).heldValueBytes >= 300 * KB);
    } finally {
      await close(a, w);
    }
  },
});

Deno.test({
  name:
    "feed memory: a feed queues at most maxQueuedValueBytesPerConnection of values, then LAGGED; resume continues",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer({ maxQueuedValueBytesPerConnection: 1024 * KB });
    const config = await resolveConnectOptions(srv.connectOptions);
    const [a] = await openLink(config);
    const [w] = await openLink(config);
    try {
      const seen = listen(a);
      await w.request(Op.Exec, ["CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)"]);
      const [sub] = await a.request(Op.Subscribe, [{ tables: ["t"], values: true }]);
      // One commit of 10 rows of 300 KiB: queued at once, before any is sent.
      await w.request(Op.Run, [
        "INSERT INTO t (b) WITH RECURSIVE c(v) AS (SELECT 1 UNION ALL SELECT v + 1 FROM c LIMIT 10) " +
        "SELECT zeroblob(300 * 1024) FROM c",
        null,
        null,
      ]);
      await until("the feed to lag", () => seen.lagged.has(sub));
      const got = seen.changes.get(sub)!;
      assert.deepEqual(got.map((c) => c[1]), [1, 2, 3]); // 3 x 300 KiB fit in 1 MiB
      assert.equal(seen.lagged.get(sub), got[2][0]);
      assert.equal((await feeds(w)).queuedValueBytes, 0);
      // Resuming goes on without a gap, a bounded part at a time.
      let since = seen.lagged.get(sub)!;
      const rows: number[] = got.map((c) => c[1]);
      while (rows.length < 10) {
        const [next] = await a.request(Op.Subscribe, [{ tables: ["t"], values: true, since }]);
        // It lags again, or (read fast enough) sends the rest: either way its rows so far are in.
        const rest = 10 - rows.length;
        await until(
          "the resumed feed to lag or send the rest",
          () => seen.lagged.has(next) || (seen.changes.get(next)?.length ?? 0) >= rest,
        );
        const more = seen.changes.get(next) ?? [];
        assert.ok(more.length > 0, "a resumed feed sends at least one change before it lags");
        for (const c of more) rows.push(c[1]);
        if (rows.length >= 10) break;
        since = seen.lagged.get(next)!;
      }
      assert.deepEqual(rows, Array.from({ length: 10 }, (_, i) => i + 1));
    } finally {
      await close(a, w);
    }
  },
});
