/**
 * After a stall of the server's own (its process stopped with SIGSTOP, as a
 * debugger, a paused VM or a long GC pause would), the limits a client has
 * to meet give a grace of min(limit, 1 s) before they are enforced: what the
 * client sent meanwhile (a COMMIT, a cursor's next, a hello, the rest of a
 * frame) is read first (README, "After a stall"). Then, if the client really
 * stays idle, the limit is enforced. `--tx-timeout` is wall-clock: it is
 * enforced at once.
 *
 * The server runs as its own process (so that it can be stopped); the
 * cluster cases also run the pool and a dqlite connection in this process,
 * with a busy loop standing for the stall.
 */

import assert from "node:assert/strict";
import { decode, encode } from "npm:@msgpack/msgpack@^3.1.3";
import { type Client, SqliteError } from "../client.ts";
import { openLink } from "../client/connection.ts";
import type { Link } from "../client/link.ts";
import { resolveConnectOptions } from "../client/options.ts";
import { Op } from "../protocol/messages.ts";
import { ErrorCode } from "../protocol/errors.ts";
import { DqliteCluster } from "../engine/dqlite/cluster.ts";
import { DatabasePool } from "../engine/dqlite/pool.ts";
import { DemoCluster, DQLITE_DEMO } from "./_dqlite_nodes.ts";
import {
  delay,
  type ServerProcess,
  serverStats,
  startServerProcess,
  statsUntil,
  within,
} from "./_helpers.ts";

/** How long the server is stopped: well past each limit under test (300–500 ms). */
const STOP_MS = 1200;

/**
 * Stops the server's process for {@link STOP_MS}, runs `meanwhile` (the
 * client acts while the server cannot), then lets it go on. Resolves with
 * the time (`performance.now()`) just before it was let go on.
 */
async function stopped(
  srv: ServerProcess,
  meanwhile: () => unknown = () => {},
): Promise<number> {
  let resumed = 0;
  srv.child.kill("SIGSTOP");
  try {
    meanwhile();
    await delay(STOP_MS);
  } finally {
    // Taken first: the server cannot have gone on before.
    resumed = performance.now();
    srv.child.kill("SIGCONT");
  }
  return resumed;
}

/** The code `p` rejects with (a resolution fails the test). */
async function rejection(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return (err as { code?: string }).code ?? String(err);
  }
  assert.fail("expected a rejection");
}

/** "ok" when `p` resolves, else its error's code (a handler at once: no unhandled rejection). */
function outcome(p: Promise<unknown>): Promise<string> {
  return p.then(() => "ok", (err) => (err as { code?: string }).code ?? String(err));
}

async function writer(srv: ServerProcess): Promise<Client> {
  const c = await srv.client();
  await c.exec("CREATE TABLE IF NOT EXISTS t(x)");
  await c.exec("BEGIN IMMEDIATE");
  await c.run("INSERT INTO t VALUES (1)");
  return c;
}

Deno.test("After a stall: a COMMIT sent while the server was stopped past --tx-idle-timeout commits", async () => {
  await using srv = await startServerProcess({ args: ["--tx-idle-timeout", "400"] });
  const c = await writer(srv);
  try {
    let commit!: Promise<unknown>;
    await stopped(srv, () => commit = c.exec("COMMIT"));
    await commit; // was: TX_TIMEOUT, the lease ended as the server went on
    assert.deepEqual(await c.values("SELECT count(*) FROM t"), [[1]]);
  } finally {
    await c.close();
  }
});

Deno.test("After a stall: a transaction left idle is rolled back after a grace of min(--tx-idle-timeout, 1 s)", async () => {
  await using srv = await startServerProcess({ args: ["--tx-idle-timeout", "500"] });
  const c = await writer(srv);
  const other = await srv.client();
  try {
    await stopped(srv);
    const resumed = performance.now();
    // The other client's write waits for the writer, which the lease's end frees.
    await other.run("INSERT INTO t VALUES (2)");
    const ms = performance.now() - resumed;
    assert.ok(ms >= 400 && ms < 3000, `the writer was freed ${ms.toFixed(0)} ms after the stall`);
    assert.equal(await rejection(c.exec("COMMIT")), ErrorCode.TxTimeout);
    assert.deepEqual(await other.values("SELECT x FROM t"), [[2]]);
  } finally {
    await other.close();
    await c.close();
  }
});

Deno.test("After a stall: --tx-timeout is wall-clock, a transaction open past it is rolled back at once", async () => {
  await using srv = await startServerProcess({
    args: ["--tx-timeout", "600", "--tx-idle-timeout", "60000"],
  });
  const c = await writer(srv);
  try {
    let commit!: Promise<unknown>;
    await stopped(srv, () => commit = c.exec("COMMIT"));
    assert.equal(await rejection(commit), ErrorCode.TxTimeout);
    assert.deepEqual(await c.values("SELECT count(*) FROM t"), [[0]]);
  } finally {
    await c.close();
  }
});

Deno.test("After a stall: a write waiting for the writer gets it when the holder committed during the stall (--busy-timeout)", async () => {
  // The write's wait (400 ms) starts as the server reads it, after `sent`:
  // stopped sooner than 350 ms after `sent`, with stats showing the write
  // waiting, the server was stopped while it waited. A trial in which this
  // process itself stalled (a loaded machine) and stopped it later proves
  // nothing, and is tried again.
  for (let trial = 1;; trial++) {
    await using srv = await startServerProcess({ args: ["--busy-timeout", "400"] });
    const c = await writer(srv);
    const waiting = await srv.client();
    try {
      const sent = performance.now();
      const write = outcome(waiting.run("INSERT INTO t VALUES (2)"));
      await statsUntil(
        srv.connectOptions,
        (s) => s.writer.waiting === 1 || performance.now() - sent >= 350,
        "the write waits for the writer",
      );
      let stoppedAt = 0;
      let commit!: Promise<unknown>;
      await stopped(srv, () => {
        stoppedAt = performance.now();
        commit = c.exec("COMMIT");
      });
      await commit;
      const result = await write;
      const ms = stoppedAt - sent;
      if (ms >= 350 && trial < 5) continue;
      assert.ok(ms < 350, `every trial stalled: the last was stopped ${ms.toFixed(0)} ms after`);
      assert.equal(result, "ok"); // was: BUSY_TIMEOUT, the wait ended before the COMMIT was read
      assert.deepEqual(await c.values("SELECT x FROM t ORDER BY x"), [[1], [2]]);
      break;
    } finally {
      await waiting.close();
      await c.close();
    }
  }
});

/** A protocol-level link to `srv`, for cursor requests one at a time. */
async function link(srv: ServerProcess): Promise<Link & AsyncDisposable> {
  const [l] = await openLink(await resolveConnectOptions(srv.connectOptions));
  return Object.assign(l, {
    async [Symbol.asyncDispose]() {
      l.fail(new Error("test done"));
      await l.ended;
    },
  });
}

/** Opens a cursor over 5,000 rows and reads its first chunk; returns its id and the next row due. */
async function openCursor(l: Link): Promise<{ id: number; due: number }> {
  await l.request(Op.Exec, [
    "CREATE TABLE n(i);" +
    "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 5000) " +
    "INSERT INTO n SELECT i FROM c",
  ]);
  const [id] = await l.request(Op.Iterate, ["SELECT i FROM n ORDER BY i", null, null]);
  const [rows, done] = await l.request(Op.Next, [id]);
  assert.equal(done, false);
  assert.deepEqual(rows[0], [1]);
  return { id, due: rows.length + 1 };
}

Deno.test("After a stall: a cursor advanced while the server was stopped past --cursor-idle-timeout goes on", async () => {
  await using srv = await startServerProcess({ args: ["--cursor-idle-timeout", "400"] });
  await using l = await link(srv);
  const { id, due } = await openCursor(l);
  let next!: Promise<[unknown[][], boolean]>;
  await stopped(srv, () => next = l.request(Op.Next, [id]));
  const [rows, done] = await next; // was: CURSOR_CLOSED, closed as the server went on
  assert.equal(done, false);
  assert.deepEqual(rows[0], [due]);
});

Deno.test("After a stall: a cursor left idle is closed after a grace of min(--cursor-idle-timeout, 1 s)", async () => {
  // The grace (500 ms) starts after the server went on, so after `resumed`:
  // a next answered sooner than 450 ms after it came within the grace,
  // where it must find the cursor open. A trial in which this process
  // itself stalled (a loaded machine) and the next came later proves
  // nothing, and is tried again.
  for (let trial = 1;; trial++) {
    await using srv = await startServerProcess({ args: ["--cursor-idle-timeout", "500"] });
    await using l = await link(srv);
    const { id, due } = await openCursor(l);
    const resumed = await stopped(srv);
    // The server answers again: it went on, past its timer that fired late.
    await serverStats(srv.connectOptions);
    const next = await l.request(Op.Next, [id]).then((r) => r, (e) => e);
    const ms = performance.now() - resumed;
    if (ms >= 450 && trial < 5) continue;
    assert.ok(
      ms < 450,
      `every trial stalled: the last next was answered ${ms.toFixed(0)} ms after`,
    );
    // Within the grace: still open.
    assert.ok(Array.isArray(next), `${next} (${ms.toFixed(0)} ms after the stall)`);
    assert.deepEqual(next[0][0], [due]);
    // Idle past the limit: closed.
    await statsUntil(srv.connectOptions, (s) => s.cursors === 0, "the idle cursor is closed");
    const err = await l.request(Op.Next, [id]).then(() => null, (e) => e);
    assert.ok(err instanceof SqliteError, String(err));
    assert.equal(err.code, ErrorCode.CursorClosed);
    assert.match(err.message, /not advanced for 500 ms \(--cursor-idle-timeout\)/);
    break;
  }
});

/** A frame holding one MessagePack value. */
function frame(value: unknown): Uint8Array {
  const payload = encode(value);
  const out = new Uint8Array(4 + payload.length);
  new DataView(out.buffer).setUint32(0, payload.length);
  out.set(payload, 4);
  return out;
}

const HELLO = frame([Op.Hello, 1, { version: 1 }]);

/** Reads one frame from `conn` (its only one: the rest of the read is dropped), or null at EOF. */
async function readFrame(conn: Deno.Conn): Promise<unknown[] | null> {
  let got = new Uint8Array(0);
  const buf = new Uint8Array(64 * 1024);
  for (;;) {
    if (got.length >= 4) {
      const n = new DataView(got.buffer, got.byteOffset).getUint32(0);
      if (got.length >= 4 + n) return decode(got.subarray(4, 4 + n)) as unknown[];
    }
    const r = await conn.read(buf).catch(() => null);
    if (r === null) return null;
    const next = new Uint8Array(got.length + r);
    next.set(got);
    next.set(buf.subarray(0, r), got.length);
    got = next;
  }
}

/** A raw connection to `srv`'s socket, closed on dispose. */
async function raw(srv: ServerProcess): Promise<Deno.Conn & AsyncDisposable> {
  const conn = await Deno.connect({ transport: "unix", path: srv.connectOptions.path! });
  return Object.assign(conn, {
    [Symbol.asyncDispose]: () => {
      try {
        conn.close();
      } catch { /* closed */ }
      return Promise.resolve();
    },
  });
}

/**
 * Why a hello test's trial proves nothing: the connection's hello timer
 * (`helloMs`) starts as the server accepts it, after `opened`, and stats
 * shows it accepted (`accepted`); a server stopped sooner than `helloMs - 50`
 * ms after `opened` was stopped before the timer was due. A trial in which
 * this process itself stalled (a loaded machine) and stopped it later proves
 * nothing: null when the trial counts, else why not.
 */
function helloTrialVoid(
  helloMs: number,
  opened: number,
  stoppedAt: number,
  accepted: boolean,
): string | null {
  const ms = stoppedAt - opened;
  if (ms >= helloMs - 50) return `the server was stopped ${ms.toFixed(0)} ms after the connect`;
  if (!accepted) return "stats did not show the connection accepted before the stop";
  return null;
}

/** Polls stats until the raw connection made at `opened` counts as handshaking, or `helloMs - 50` passed. */
async function accepted(srv: ServerProcess, opened: number, helloMs: number): Promise<boolean> {
  const report = await statsUntil(
    srv.connectOptions,
    (s) => s.connections.handshaking === 1 || performance.now() - opened >= helloMs - 50,
    "the connection is accepted",
  );
  return report.connections.handshaking === 1;
}

Deno.test("After a stall: a hello sent while the server was stopped past --hello-timeout is answered", async () => {
  for (let trial = 1;; trial++) {
    await using srv = await startServerProcess({ args: ["--hello-timeout", "300"] });
    const opened = performance.now();
    await using conn = await raw(srv);
    const seen = await accepted(srv, opened, 300); // its hello timer runs
    let stoppedAt = 0;
    // Caught: a trial that proves nothing may find the connection closed.
    let wrote!: Promise<unknown>;
    await stopped(srv, () => {
      stoppedAt = performance.now();
      wrote = conn.write(HELLO).catch((err) => err);
    });
    const reply = await within(readFrame(conn), 5000);
    await wrote;
    const wasted = helloTrialVoid(300, opened, stoppedAt, seen);
    if (wasted !== null && trial < 5) continue;
    assert.equal(wasted, null, `every trial wasted; the last: ${wasted}`);
    // Was: [0, 1, { code: "FRAME_TIMEOUT", message: "Closing connection: no hello within 300 ms ..." }]
    assert.ok(Array.isArray(reply), String(reply));
    assert.equal(reply[0], 1);
    assert.equal(reply[1], 0, JSON.stringify(reply));
    break;
  }
});

Deno.test("After a stall: a connection that stays silent is closed after a grace of min(--hello-timeout, 1 s)", async () => {
  for (let trial = 1;; trial++) {
    await using srv = await startServerProcess({ args: ["--hello-timeout", "400"] });
    const opened = performance.now();
    await using conn = await raw(srv);
    const seen = await accepted(srv, opened, 400); // its hello timer runs
    let stoppedAt = 0;
    await stopped(srv, () => stoppedAt = performance.now());
    const resumed = performance.now();
    const reply = await within(readFrame(conn), 5000);
    const ms = performance.now() - resumed;
    const wasted = helloTrialVoid(400, opened, stoppedAt, seen);
    if (wasted !== null && trial < 5) continue;
    assert.equal(wasted, null, `every trial wasted; the last: ${wasted}`);
    assert.ok(Array.isArray(reply), String(reply));
    assert.equal((reply[2] as { code: string }).code, "FRAME_TIMEOUT");
    assert.ok(ms >= 300 && ms < 3000, `closed ${ms.toFixed(0)} ms after the stall`);
    break;
  }
});

Deno.test("After a stall: a frame completed while the server was stopped past --frame-timeout is read", async () => {
  await using srv = await startServerProcess({ args: ["--frame-timeout", "300"] });
  await using conn = await raw(srv);
  await conn.write(HELLO);
  assert.equal((await readFrame(conn))?.[1], 0);
  const query = frame([Op.Query, 2, "SELECT 42 AS x", null, null]);
  await conn.write(query.subarray(0, 6));
  await delay(150); // read: the partial frame's timer runs
  await stopped(srv, () => conn.write(query.subarray(6)));
  const reply = await within(readFrame(conn), 5000);
  // Was: [0, 1, { code: "FRAME_TIMEOUT", message: "... a frame stayed incomplete for 300 ms ..." }]
  assert.deepEqual(reply, [2, 0, [["x"], [[42]]]]);
});

/** Holds the event loop for `ms`, as a stopped process would be held. */
function stall(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // busy: no timer, no I/O runs
  }
}

Deno.test({
  name: "After a stall: cluster mode (one dqlite-demo node)",
  ignore: DQLITE_DEMO === null,
  async fn(t) {
    await using nodes = await DemoCluster.start(1);
    const [node] = nodes.addresses;

    await t.step(
      "a COMMIT sent while the server was stopped past --tx-idle-timeout commits",
      async () => {
        await using srv = await startServerProcess({
          args: ["--dqlite", node, "--dqlite-db", "lease", "--tx-idle-timeout", "400"],
        });
        const c = await writer(srv);
        try {
          let commit!: Promise<unknown>;
          await stopped(srv, () => commit = c.exec("COMMIT"));
          await commit; // was: TX_TIMEOUT
          assert.deepEqual(await c.values("SELECT count(*) FROM t"), [[1]]);
        } finally {
          await c.close();
        }
      },
    );

    await t.step(
      "a write meeting SQLITE_BUSY gets through when the holder committed during the stall (--busy-timeout)",
      async () => {
        // As in the single-file case, a trial stopped 350 ms or more after
        // `sent` proves nothing, and is tried again (on a database of its
        // own): the retries' limit (400 ms) is armed at the write's first
        // BUSY, after `sent`. That BUSY shows in no stats: the server took
        // the write on a dqlite connection of its own (the pool's second,
        // stats shows), then a moment for the node's answer.
        for (let trial = 1;; trial++) {
          await using srv = await startServerProcess({
            args: ["--dqlite", node, "--dqlite-db", `busy${trial}`, "--busy-timeout", "400"],
          });
          const c = await writer(srv);
          const waiting = await srv.client();
          try {
            const sent = performance.now();
            const write = outcome(waiting.run("INSERT INTO t VALUES (2)"));
            await statsUntil(
              srv.connectOptions,
              (s) => s.cluster?.connections === 2 || performance.now() - sent >= 350,
              "the write has a connection of its own",
            );
            await delay(100); // it meets BUSY and tries again
            let stoppedAt = 0;
            let commit!: Promise<unknown>;
            await stopped(srv, () => {
              stoppedAt = performance.now();
              commit = c.exec("COMMIT");
            });
            await commit;
            const result = await write;
            const ms = stoppedAt - sent;
            if (ms >= 350 && trial < 5) continue;
            assert.ok(
              ms < 350,
              `every trial stalled: the last was stopped ${ms.toFixed(0)} ms after`,
            );
            assert.equal(result, "ok"); // was: BUSY_TIMEOUT
            assert.deepEqual(await c.values("SELECT x FROM t ORDER BY x"), [[1], [2]]);
            break;
          } finally {
            await waiting.close();
            await c.close();
          }
        }
      },
    );

    await t.step(
      "a pool wait past its busy timeout gets the connection given back after the stall",
      async () => {
        const cluster = new DqliteCluster([node]);
        const pool = new DatabasePool(cluster, "pool", 1, 200);
        try {
          const db = await pool.acquire();
          const waiting = pool.acquire();
          stall(500);
          // Given back after the stall (as a request read once the server runs again): the
          // wait's timer, due first, fires first.
          setTimeout(() => pool.release(db), 0);
          const got = await waiting; // was: BUSY_TIMEOUT
          assert.equal(got, db);
          pool.release(got);
        } finally {
          pool.close();
          cluster.close();
        }
      },
    );

    await t.step(
      "an answer that came during the stall is read, not taken for a lost leader",
      async () => {
        const cluster = new DqliteCluster([node], { requestTimeout: 300 });
        try {
          const db = await cluster.open("answer");
          // A query the node takes ~100 ms over: its answer arrives during the stall.
          const q = db.query(
            "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 300000) " +
              "SELECT count(*) FROM c",
          );
          await delay(20); // sent; the answer's timer runs
          stall(900);
          const r = await q; // was: LEADER_LOST "no answer within requestTimeout 300 ms"
          assert.deepEqual(r.rows, [[300000]]);
          db.close();
        } finally {
          cluster.close();
        }
      },
    );
  },
});
