/**
 * A graceful shutdown (SIGTERM to a `deno run server.ts` process) sends a
 * subscriber that lags what was committed before it stopped: the changes
 * still queued for its feed, and those of a feed that overflowed its
 * `buffer` (read from the change log's ring instead of ending with
 * `LAGGED`), every one once and in order, before the feed ends with
 * `SHUTTING_DOWN`; no resume is needed (the restarted server could not
 * resume it: `FEED_GAP`). A subscriber that reads nothing holds the
 * shutdown a bounded time. The subscriber is a raw connection that stops
 * reading its socket (as a busy or stopped client process does), so that
 * the server holds the changes once its output to it is full (4 MiB,
 * `HIGH_WATER`: 1 KiB rows, so about 4 000 changes). FFI engine only
 * (feeds).
 */

import assert from "node:assert/strict";
import { ErrorCode } from "../protocol/errors.ts";
import { EventKind, Op, Status } from "../protocol/messages.ts";
import { decodeMsgpack } from "../protocol/msgpack.ts";
import { type ServerProcess, startServerProcess, statsUntil } from "./_helpers.ts";
import { frame, Raw } from "./_raw.ts";

const ffi = Deno.env.get("NETSQLITE_ENGINE") !== "node";

/** What a raw subscriber read until the server closed its connection. */
interface Read {
  /** `[seq, rowid]` of each change, in the order received. */
  changes: [number, number][];
  /** The `LAGGED` event's `resumeFrom`, if one came. */
  lagged: number | null;
  /** The code of the connection error that ended it, if one came. */
  error: string | null;
}

/** Reads the connection's frames until the server closes it. */
async function readToEnd(raw: Raw, sub: number): Promise<Read> {
  const read: Read = { changes: [], lagged: null, error: null };
  let buf = new Uint8Array(1 << 16);
  let start = 0;
  let end = 0;
  for (;;) {
    while (end - start >= 4) {
      const n = new DataView(buf.buffer, start).getUint32(0);
      if (end - start < 4 + n) break;
      const msg = decodeMsgpack(buf.slice(start + 4, start + 4 + n));
      start += 4 + n;
      const [id, status, payload] = msg as [number, number, unknown];
      assert.equal(id, 0, `unexpected reply ${JSON.stringify(msg)}`);
      if (status === Status.Error) {
        read.error = (payload as { code: string }).code;
        continue;
      }
      assert.equal(status, Status.Event);
      const [feed, kind, data] = payload as [number, number, unknown];
      assert.equal(feed, sub);
      if (kind === EventKind.Lagged) read.lagged = data as number;
      else for (const c of data as unknown[][]) read.changes.push([c[0] as number, Number(c[4])]);
    }
    buf.copyWithin(0, start, end);
    end -= start;
    start = 0;
    if (end === buf.length) {
      const bigger = new Uint8Array(buf.length * 2);
      bigger.set(buf);
      buf = bigger;
    }
    const n = await raw.conn.read(buf.subarray(end)).catch(() => null);
    if (n === null) return read;
    end += n;
  }
}

/** Waits until the server refuses connections: its shutdown has begun. */
async function untilRefused(path: string): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    try {
      const c = await Deno.connect({ transport: "unix", path });
      c.close();
    } catch {
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error("the server went on accepting connections after SIGTERM");
}

/**
 * Subscribes a raw connection to `t` (with `buffer`, if given), commits
 * `rows` rows of 1 KiB in one transaction, and waits until the server
 * holds some of them queued for the subscriber, which reads nothing.
 */
async function lagging(srv: ServerProcess, rows: number, buffer?: number): Promise<{
  raw: Raw;
  sub: number;
  head: number;
}> {
  const path = (srv.connectOptions as { path: string }).path;
  const raw = await Raw.open(path);
  const db = await srv.client();
  try {
    await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)");
    const options = { tables: ["t"], values: true, ...(buffer === undefined ? {} : { buffer }) };
    await raw.write(frame([Op.Subscribe, 2, options]));
    const reply = await raw.read(10_000) as [number, number, [number, number]];
    assert.equal(reply[1], Status.Ok, JSON.stringify(reply));
    await db.run(
      "INSERT INTO t (b) WITH RECURSIVE c(v) AS (SELECT 1 UNION ALL SELECT v + 1 FROM c " +
        "LIMIT ?) SELECT randomblob(1024) FROM c",
      [rows],
    );
    // The output to the subscriber is full: the rest waits in its feed's queue.
    await statsUntil(
      srv.connectOptions,
      (r) => (r.feeds?.queuedChanges ?? 0) > 0,
      "changes queued for the subscriber",
    );
    const [sub, head] = reply[2];
    return { raw, sub, head };
  } finally {
    await db.close();
  }
}

/**
 * SIGTERM while the subscriber lags; then it reads its feed to the end.
 * Feeds send for what remains of the grace period: a long one here, so
 * that a loaded machine has time to move the 6 MiB or so.
 */
async function stopWhileLagging(rows: number, buffer?: number): Promise<void> {
  await using srv = await startServerProcess({ args: ["--grace-ms", "30000"] });
  const { raw, sub, head } = await lagging(srv, rows, buffer);
  await using _raw = raw;
  srv.child.kill("SIGTERM");
  await untilRefused((srv.connectOptions as { path: string }).path);
  const read = await readToEnd(raw, sub);
  assert.equal((await srv.child.status).code, 0);
  assert.equal(read.lagged, null);
  assert.equal(read.error, ErrorCode.ShuttingDown);
  assert.equal(read.changes.length, rows, "every committed change, once");
  assert.deepEqual(read.changes, Array.from({ length: rows }, (_, i) => [head + 1 + i, i + 1]));
}

Deno.test({
  name:
    "feed shutdown: SIGTERM sends a lagging subscriber the changes queued for it, in order, then SHUTTING_DOWN",
  ignore: !ffi,
  fn: () => stopWhileLagging(6000),
});

Deno.test({
  name:
    "feed shutdown: a feed past its buffer at SIGTERM sends the rest from the ring instead of LAGGED",
  ignore: !ffi,
  // One commit of 7000 rows: 5000 queued (the feed overflowed at once), the
  // rest in the ring; about 4 000 fill the output, so the feed still holds some.
  fn: () => stopWhileLagging(7000, 5000),
});

Deno.test({
  name: "feed shutdown: a subscriber that reads nothing holds SIGTERM's shutdown a bounded time",
  ignore: !ffi,
  async fn() {
    await using srv = await startServerProcess({ args: ["--grace-ms", "3000"] });
    const { raw } = await lagging(srv, 6000);
    await using _raw = raw;
    const began = performance.now();
    srv.child.kill("SIGTERM");
    assert.equal((await srv.child.status).code, 0);
    const ms = performance.now() - began;
    // Feeds send for the grace period (3 s; at least the 2 s given to
    // requests still running), then the last frame gets 1 s: the server
    // exits after about 4 s, far below this bound (and far above a
    // subscriber that read what it was sent).
    assert.ok(ms < 20_000, `shutdown took ${ms} ms`);
  },
});
