/**
 * Server-wide memory bounds against single clients that hold memory on the
 * server: change feeds queued for connections that never read, prepared
 * statements never finalized, partly sent frames. Each bound is configured
 * small here; the defaults are in README "Limits".
 */

import assert from "node:assert/strict";
import { openLink } from "../client/connection.ts";
import type { Link } from "../client/link.ts";
import { resolveConnectOptions } from "../client/options.ts";
import { Connection } from "../engine/connection.ts";
import { loadSqlite } from "../engine/binding/load.ts";
import { EventKind, Op } from "../protocol/messages.ts";
import { startServer, within } from "./_helpers.ts";
import { frame, Raw } from "./_raw.ts";

const ffi = Deno.env.get("NETSQLITE_ENGINE") !== "node";

/** Events of one link, by subscription: changes' rowids, and the `LAGGED` resume point. */
interface Feeds {
  rowids: Map<number, number[]>;
  lagged: Map<number, number>;
}

function listen(link: Link): Feeds {
  const feeds: Feeds = { rowids: new Map(), lagged: new Map() };
  link.onEvent = (payload) => {
    const [sub, kind, data] = payload as [number, number, unknown];
    if (kind === EventKind.Lagged) {
      feeds.lagged.set(sub, data as number);
      return;
    }
    const list = feeds.rowids.get(sub) ?? [];
    for (const c of data as unknown[][]) list.push(Number(c[4]));
    feeds.rowids.set(sub, list);
  };
  return feeds;
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

async function close(...links: Link[]): Promise<void> {
  for (const link of links) {
    link.fail(new Error("test done"));
    await link.ended;
  }
}

const range = (from: number, to: number): number[] =>
  Array.from({ length: to - from + 1 }, (_, i) => from + i);

/**
 * Two feeds (on one connection, or on two) with a `buffer` of 1000 see one
 * commit of 40 rows while at most 50 changes may be queued: the first
 * queues 40, the second 10 and then lags; resuming it with `since` gets
 * the other 30 without a gap.
 */
async function twoFeedsShareTheQueue(oneConnection: boolean): Promise<void> {
  await using srv = await startServer(
    oneConnection ? { maxQueuedChangesPerConnection: 50 } : { maxQueuedChanges: 50 },
  );
  const config = await resolveConnectOptions(srv.connectOptions);
  const [a] = await openLink(config);
  const b = oneConnection ? a : (await openLink(config))[0];
  const [w] = await openLink(config);
  try {
    // Subscription numbers are per connection: one map per connection.
    const ofA = listen(a);
    const ofB = oneConnection ? ofA : listen(b);
    await w.request(Op.Exec, ["CREATE TABLE t (id INTEGER PRIMARY KEY)"]);
    const first = (await a.request(Op.Subscribe, [{ tables: ["t"], buffer: 1000 }]))[0] as number;
    const second = (await b.request(Op.Subscribe, [{ tables: ["t"], buffer: 1000 }]))[0] as number;
    await w.request(Op.Run, [
      "INSERT INTO t (id) WITH RECURSIVE c(v) AS (SELECT 1 UNION ALL SELECT v + 1 FROM c LIMIT 40) " +
      "SELECT v FROM c",
      null,
      null,
    ]);
    await until("the second feed to lag", () => ofB.lagged.has(second));
    await until("the first feed's 40 rows", () => ofA.rowids.get(first)?.length === 40);
    assert.deepEqual(ofA.rowids.get(first), range(1, 40));
    assert.deepEqual(ofB.rowids.get(second), range(1, 10));
    assert.equal(ofA.lagged.has(first), false);
    // The documented resume: since = the last change yielded, no gap, no duplicate.
    const third = (await b.request(Op.Subscribe, [{
      tables: ["t"],
      since: ofB.lagged.get(second),
    }]))[0] as number;
    await until("the resumed feed's 30 rows", () => ofB.rowids.get(third)?.length === 30);
    assert.deepEqual(ofB.rowids.get(third), range(11, 40));
  } finally {
    await close(...new Set([a, b, w]));
  }
}

Deno.test({
  name: "bounds: the feeds of one connection share maxQueuedChangesPerConnection, then LAGGED",
  ignore: !ffi,
  fn: () => twoFeedsShareTheQueue(true),
});

Deno.test({
  name: "bounds: feeds on all connections share maxQueuedChanges, then LAGGED",
  ignore: !ffi,
  fn: () => twoFeedsShareTheQueue(false),
});

const serverFull = (err: unknown): boolean => {
  assert.equal((err as { code?: string }).code, "BAD_REQUEST");
  assert.match(
    (err as Error).message,
    /^Too many prepared statements on the server: \d+ on all connections, holding \d+ characters of SQL \(at most \d+, \d+\); finalize\(\) the ones no longer needed/,
  );
  return true;
};

Deno.test({
  name: "bounds: prepared statements on all connections share maxPrepared; finalize makes room",
  async fn() {
    await using srv = await startServer({ maxPrepared: 3 });
    const config = await resolveConnectOptions(srv.connectOptions);
    const [a] = await openLink(config);
    const [b] = await openLink(config);
    try {
      const [h1] = await a.request(Op.Prepare, ["SELECT 1 AS x"]);
      await a.request(Op.Prepare, ["SELECT 2 AS x"]);
      await b.request(Op.Prepare, ["SELECT 3 AS x"]);
      await assert.rejects(b.request(Op.Prepare, ["SELECT 4 AS x"]), serverFull);
      await a.request(Op.Finalize, [h1]);
      const [h4] = await b.request(Op.Prepare, ["SELECT 4 AS x"]);
      assert.deepEqual(await b.request(Op.Query, [h4, null, null]), [["x"], [[4]]]);
      // A connection that closes gives back what it held.
      await close(a);
      for (let i = 0;; i++) {
        // The server notices the disconnect shortly after.
        try {
          await b.request(Op.Prepare, ["SELECT 5 AS x"]);
          break;
        } catch (err) {
          if (i === 200) throw err;
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      }
      await assert.rejects(b.request(Op.Prepare, ["SELECT 6 AS x"]), serverFull);
    } finally {
      await close(a, b);
    }
  },
});

Deno.test({
  name: "bounds: prepared SQL on all connections shares maxPreparedText",
  async fn() {
    await using srv = await startServer({ maxPreparedText: 100 });
    const config = await resolveConnectOptions(srv.connectOptions);
    const [a] = await openLink(config);
    const [b] = await openLink(config);
    try {
      const sql = (n: number): string => `SELECT ${n} AS x /*${"-".repeat(40)}*/`; // 58 characters
      const [h1] = await a.request(Op.Prepare, [sql(1)]);
      await assert.rejects(b.request(Op.Prepare, [sql(2)]), serverFull);
      // Running by SQL text is not limited.
      assert.deepEqual(await b.request(Op.Query, [sql(2), null, null]), [["x"], [[2]]]);
      await a.request(Op.Finalize, [h1]);
      await b.request(Op.Prepare, [sql(2)]);
    } finally {
      await close(a, b);
    }
  },
});

Deno.test({
  name: "bounds: a connection's statement cache holds at most cacheText characters of SQL",
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "netsqlite-bounds-" });
    const sqlite = loadSqlite({ engine: ffi ? "ffi" : "node" });
    const conn = new Connection(sqlite, `${dir}/c.db`, {
      readOnly: false,
      timeout: 1000,
      cacheSize: 256,
      cacheText: 120,
    });
    try {
      const sql = (n: number): string => `SELECT ${n} AS x /*${"-".repeat(40)}*/`; // 58 characters
      conn.prepare(sql(1));
      conn.prepare(sql(2));
      assert.deepEqual(conn.cached, { statements: 2, text: 116 });
      conn.prepare(sql(3)); // the oldest goes
      assert.deepEqual(conn.cached, { statements: 2, text: 116 });
      assert.equal(conn.peek(sql(1)), undefined);
      assert.notEqual(conn.peek(sql(3)), undefined);
      // A statement longer than the bound is cached alone.
      const long = `SELECT 4 AS x /*${"-".repeat(200)}*/`;
      const p = conn.prepare(long);
      assert.deepEqual(conn.cached, { statements: 1, text: long.length });
      p.stmt.bind([]);
      assert.deepEqual(p.stmt.all(), [[4]]);
    } finally {
      conn.close();
      sqlite.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "bounds: incomplete frames on all connections share maxPartialFrameBytes",
  async fn() {
    const mib = 1024 * 1024;
    await using srv = await startServer({ maxFrameSize: mib, maxPartialFrameBytes: 1.5 * mib });
    const path = (srv.connectOptions as { path: string }).path;
    const a = await Raw.open(path);
    const b = await Raw.open(path);
    try {
      // A query of almost 1 MiB, sent in two parts.
      const big = (id: number): Uint8Array =>
        frame([Op.Query, id, `SELECT ${id} AS x /*${"-".repeat(mib - 100)}*/`, null, null]);
      const first = big(2);
      await a.write(first.subarray(0, 700 * 1024));
      // Wait until the server holds A's part: a ping on B goes through behind it.
      await b.write(frame([Op.Query, 2, "SELECT 1 AS x", null, null]));
      assert.deepEqual(await b.read(), [2, 0, [["x"], [[1]]]]);
      // B's incomplete frame would take the server past 1.5 MiB: B is closed.
      const second = big(3);
      await b.write(second.subarray(0, 900 * 1024)).catch(() => {});
      const reply = await b.read() as [number, number, { code: string; message: string }];
      assert.equal(reply[2].code, "FRAME_TOO_LARGE");
      assert.match(
        reply[2].message,
        /incomplete frames on all connections would hold more than 1572864 bytes/,
      );
      assert.equal(await b.read(), "EOF");
      // A completes its frame and is answered.
      await a.write(first.subarray(700 * 1024));
      assert.deepEqual(await a.read(), [2, 0, [["x"], [[2]]]]);
    } finally {
      a.conn.close();
      b.conn.close();
    }
  },
});
