/**
 * Replies waiting for clients: the server-wide bound on bytes not yet
 * written to sockets (`maxUnsentBytes`), the write-stall timeout
 * (`writeStallTimeout`), and turns between connections that pipeline
 * many requests. Each bound is configured small here; the defaults are in
 * README "Limits".
 */

import assert from "node:assert/strict";
import { MessageEncoder } from "../protocol/codec.ts";
import { decodeMsgpack } from "../protocol/msgpack.ts";
import { Op } from "../protocol/messages.ts";
import { resolveServeOptions } from "../server/options.ts";
import { startServer, within } from "./_helpers.ts";

const KIB = 1024;
const MIB = 1024 * KIB;

/** A raw client: writes bytes as given, reads whole frames (as slowly as asked). */
class Raw {
  #buf = new Uint8Array(0);
  constructor(readonly conn: Deno.UnixConn) {}

  static async open(path: string): Promise<Raw> {
    const raw = new Raw(await Deno.connect({ transport: "unix", path }));
    await raw.write(frame([Op.Hello, 1, { version: 1 }]));
    await raw.read();
    return raw;
  }

  async write(bytes: Uint8Array): Promise<void> {
    for (let off = 0; off < bytes.length;) off += await this.conn.write(bytes.subarray(off));
  }

  /** The next frame decoded, or `"EOF"`; reads at most `chunk` bytes at a time. */
  async read(chunk = 64 * KIB, pauseMs = 0): Promise<unknown> {
    for (;;) {
      if (this.#buf.length >= 4) {
        const n = new DataView(this.#buf.buffer, this.#buf.byteOffset).getUint32(0);
        if (this.#buf.length >= 4 + n) {
          const payload = this.#buf.slice(4, 4 + n);
          this.#buf = this.#buf.slice(4 + n);
          return decodeMsgpack(payload);
        }
      }
      if (pauseMs > 0) await new Promise((resolve) => setTimeout(resolve, pauseMs));
      const bytes = new Uint8Array(chunk);
      const n = await this.conn.read(bytes).catch(() => null);
      if (n === null) return "EOF";
      const next = new Uint8Array(this.#buf.length + n);
      next.set(this.#buf);
      next.set(bytes.subarray(0, n), this.#buf.length);
      this.#buf = next;
    }
  }

  close(): void {
    try {
      this.conn.close();
    } catch {
      // Closed by the server already.
    }
  }
}

function frame(msg: unknown): Uint8Array {
  const e = new MessageEncoder(1 << 30);
  e.append(msg);
  return e.take();
}

/** `count` query frames with ids from `first` on, as one buffer. */
function queries(sql: string, count: number, first = 2): Uint8Array {
  const e = new MessageEncoder(1 << 30);
  for (let i = 0; i < count; i++) e.append([Op.Query, first + i, sql, null, null]);
  return e.take();
}

type Stats = { requests: Record<string, number>; connections: { open: number } };

async function stats(raw: Raw, id: number): Promise<Stats> {
  await raw.write(frame([Op.Stats, id]));
  const reply = await raw.read() as [number, number, Stats];
  assert.equal(reply[0], id);
  return reply[2];
}

async function until(what: string, ok: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const r = await within(
    (async () => {
      while (!await ok()) await new Promise((resolve) => setTimeout(resolve, 20));
    })(),
    ms,
  );
  if (r === "timeout") throw new Error(`Timed out waiting for ${what}`);
}

Deno.test({
  name: "replies: unsent replies on all connections share maxUnsentBytes, a reading client goes on",
  async fn() {
    const reply = 100 * KIB;
    const budget = 5 * MIB;
    await using srv = await startServer({ maxResultBytes: 256 * KIB, maxUnsentBytes: budget });
    const path = (srv.connectOptions as { path: string }).path;
    const good = await Raw.open(path);
    const stalled: Raw[] = [];
    const perConnection = 60;
    try {
      // Six clients pipeline 60 replies of 100 KB each (6 MB) and read none.
      for (let i = 0; i < 6; i++) {
        const raw = await Raw.open(path);
        stalled.push(raw);
        await raw.write(queries(`SELECT randomblob(${reply}) AS b`, perConnection));
      }
      // Wait until the server ran all it will: the count of queries stays put.
      let ran = -1;
      let id = 1000;
      await until("the stalled clients' queries to stop", async () => {
        await new Promise((resolve) => setTimeout(resolve, 150));
        const now = (await stats(good, id++)).requests.query ?? 0;
        const settled = now === ran;
        ran = now;
        return settled;
      });
      // The replies the server made and could not write: within the budget,
      // plus one reply per connection started under it, plus what the
      // sockets took (at most about 1 MiB each on Linux and macOS). Without
      // the bound each connection runs to 4 MiB of replies: 24 MiB and more.
      const made = ran * (reply + 20);
      assert.ok(
        made <= budget + 6 * (reply + MIB),
        `${ran} queries (${made} bytes of replies) ran for clients that do not read`,
      );
      assert.ok(ran >= budget / reply, `only ${ran} queries ran: the budget was not used`);
      // A client that reads its replies still gets answers, one by one.
      for (let i = 0; i < 5; i++) {
        await good.write(queries(`SELECT randomblob(${reply}) AS b`, 1, 100 + i));
        const r = await good.read() as [number, number, [string[], Uint8Array[][]]];
        assert.equal(r[0], 100 + i);
        assert.equal(r[2][1][0][0].length, reply);
      }
      // The stalled clients read at last: every reply comes, in order.
      for (const raw of stalled) {
        for (let i = 0; i < perConnection; i++) {
          const r = await raw.read() as [number, number, [string[], Uint8Array[][]]];
          assert.equal(r[0], 2 + i);
          assert.equal(r[2][1][0][0].length, reply);
        }
      }
    } finally {
      good.close();
      for (const raw of stalled) raw.close();
    }
  },
});

Deno.test({
  name: "replies: a client that reads nothing for writeStallTimeout is closed, a slow one is not",
  async fn() {
    await using srv = await startServer({ writeStallTimeout: 1000, txIdleTimeout: 0 });
    const path = (srv.connectOptions as { path: string }).path;
    const setup = await Raw.open(path);
    const stalled = await Raw.open(path);
    const slow = await Raw.open(path);
    try {
      await setup.write(frame([Op.Exec, 2, "CREATE TABLE t (x)"]));
      await setup.read();
      // Inside a transaction, the stalled client asks for 8 MB it never reads.
      await stalled.write(frame([Op.Exec, 2, "BEGIN; INSERT INTO t VALUES (1)"]));
      assert.equal((await stalled.read() as unknown[])[0], 2);
      await stalled.write(queries("SELECT zeroblob(1000000) AS b", 8, 3));
      // The slow client asks for 3 MB and reads 64 KiB every 50 ms (~1.3 MB/s): ~2.5 s.
      // (The server sees progress only once the socket's buffer, ~200 KiB on
      // Linux, has room again: here every ~0.2 s.)
      await slow.write(queries("SELECT zeroblob(1000000) AS b", 3));
      const slowReads = (async () => {
        for (let i = 0; i < 3; i++) {
          const r = await slow.read(64 * KIB, 50) as [number, number, [string[], Uint8Array[][]]];
          assert.equal(r[0], 2 + i);
          assert.equal(r[2][1][0][0].length, 1_000_000);
        }
      })();
      // The stalled connection is closed (~1 s) and its transaction rolled back.
      await until("the stalled connection to close", async () => {
        const s = await stats(setup, 50);
        return s.connections.open === 2;
      }, 5000);
      await setup.write(frame([Op.Exec, 60, "BEGIN IMMEDIATE; INSERT INTO t VALUES (2); COMMIT"]));
      assert.equal((await setup.read() as unknown[])[1], 0);
      await setup.write(queries("SELECT count(*) AS n FROM t", 1, 61));
      assert.deepEqual(await setup.read(), [61, 0, [["n"], [[1]]]]);
      await slowReads;
    } finally {
      setup.close();
      stalled.close();
      slow.close();
    }
  },
});

Deno.test({
  name: "replies: a connection that pipelines many requests takes turns with the others",
  async fn() {
    await using srv = await startServer({});
    const path = (srv.connectOptions as { path: string }).path;
    const flooder = await Raw.open(path);
    const other = await Raw.open(path);
    try {
      // About 0.2 ms each (a recursive count), 3000 of them sent at once.
      const total = 3000;
      const sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c " +
        "WHERE x < 2000) SELECT count(*) AS n FROM c";
      await flooder.write(queries(sql, total));
      let got = 0;
      let first = (): void => {};
      const started = new Promise<void>((resolve) => first = resolve);
      const reading = (async () => {
        for (; got < total; got++) {
          const r = await flooder.read() as [number, number, [string[], number[][]]];
          assert.deepEqual(r, [2 + got, 0, [["n"], [[2000]]]]);
          if (got === 0) first();
        }
      })();
      await started;
      // Sent while the flood runs: answered after a turn of it, not after all of it.
      await other.write(queries("SELECT 1 AS one", 1));
      assert.deepEqual(await other.read(), [2, 0, [["one"], [[1]]]]);
      const when = got;
      await reading;
      assert.ok(when < total / 2, `answered after ${when} of ${total} pipelined requests`);
    } finally {
      flooder.close();
      other.close();
    }
  },
});

Deno.test("replies: maxUnsentBytes is at least the largest query result + 4 MiB", () => {
  const base = { database: ":memory:", path: "/tmp/unused.sock", maxResultBytes: MIB };
  assert.equal(resolveServeOptions(base).maxUnsentBytes, 256 * MIB);
  assert.equal(resolveServeOptions(base).writeStallTimeout, 60_000);
  assert.equal(resolveServeOptions({ ...base, maxUnsentBytes: 5 * MIB }).maxUnsentBytes, 5 * MIB);
  assert.throws(
    () => resolveServeOptions({ ...base, maxUnsentBytes: 5 * MIB - 1 }),
    (e: Error) =>
      e instanceof RangeError &&
      e.message.startsWith('Invalid option "maxUnsentBytes": 5242879 is below 5242880'),
  );
  assert.throws(() => resolveServeOptions({ ...base, writeStallTimeout: -1 }), RangeError);
});
