/**
 * The hard bound on replies unsent on all connections: past `maxUnsentBytes`
 * plus one largest reply, a connection with nothing unsent waits too (first
 * come first served), so clients that each pipeline big results and never
 * read cannot make the server hold one more reply per connection. Waiting
 * connections go on as replies are written or their holders close.
 */

import assert from "node:assert/strict";
import { MessageEncoder } from "../protocol/codec.ts";
import { decodeMsgpack } from "../protocol/msgpack.ts";
import { Op } from "../protocol/messages.ts";
import { startServer, within } from "./_helpers.ts";

const KIB = 1024;
const MIB = 1024 * KIB;
/** Largest result (R), the budget at its minimum (R + 4 MiB), and a reply near R. */
const R = 8 * MIB;
const MAX = R + 4 * MIB;
const REPLY = 8_000_000;
/** Reads in the background at once: requests in flight past one more count as R each. */
const BACKGROUND = 1;
/** The bound the server keeps to: MAX + (BACKGROUND + 2) × R (see Session#overUnsentBudget). */
const BOUND = MAX + (BACKGROUND + 2) * R;

class Raw {
  #buf = new Uint8Array(0);
  constructor(readonly conn: Deno.UnixConn) {}

  static async open(path: string, admin = false): Promise<Raw> {
    const raw = new Raw(await Deno.connect({ transport: "unix", path }));
    await raw.write(frame([Op.Hello, 1, admin ? { version: 1, admin: true } : { version: 1 }]));
    await raw.read();
    return raw;
  }

  async write(bytes: Uint8Array): Promise<void> {
    for (let off = 0; off < bytes.length;) off += await this.conn.write(bytes.subarray(off));
  }

  async read(): Promise<unknown> {
    for (;;) {
      if (this.#buf.length >= 4) {
        const n = new DataView(this.#buf.buffer, this.#buf.byteOffset).getUint32(0);
        if (this.#buf.length >= 4 + n) {
          const payload = this.#buf.slice(4, 4 + n);
          this.#buf = this.#buf.slice(4 + n);
          return decodeMsgpack(payload);
        }
      }
      const bytes = new Uint8Array(MIB);
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

function queries(sql: string, count: number, first = 2): Uint8Array {
  const e = new MessageEncoder(1 << 30);
  for (let i = 0; i < count; i++) e.append([Op.Query, first + i, sql, null, null]);
  return e.take();
}

let statsId = 1000;
async function queriesRun(admin: Raw): Promise<number> {
  const id = statsId++;
  await admin.write(frame([Op.Stats, id]));
  const reply = await admin.read() as [number, number, { requests: Record<string, number> }];
  assert.equal(reply[0], id);
  return reply[2].requests.query ?? 0;
}

/** The count of queries run once it stays put (the server ran all it will). */
async function settled(admin: Raw): Promise<number> {
  let ran = -1;
  for (let i = 0; i < 200; i++) {
    await new Promise((resolve) => setTimeout(resolve, 150));
    const now = await queriesRun(admin);
    if (now === ran) return now;
    ran = now;
  }
  throw new Error("the queries run never settled");
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Eight clients that each pipeline `n` results of about R and read none. */
async function hogs(path: string, n: number): Promise<Raw[]> {
  const out: Raw[] = [];
  for (let i = 0; i < 8; i++) {
    const raw = await Raw.open(path);
    out.push(raw);
    await raw.write(queries(`SELECT randomblob(${REPLY}) AS b`, n));
  }
  return out;
}

Deno.test({
  name: "unsent cap: clients that read nothing hold at most max + a few largest replies",
  async fn() {
    await using srv = await startServer({
      maxResultBytes: R,
      maxUnsentBytes: MAX,
      maxBackgroundReads: BACKGROUND,
      writeStallTimeout: 0,
    });
    const path = (srv.connectOptions as { path: string }).path;
    const admin = await Raw.open(path, true);
    const good = await Raw.open(path);
    const held: Raw[] = [];
    try {
      held.push(...await hogs(path, 3));
      const ran = await settled(admin);
      // Each query that ran made a reply of about R; the sockets took at most
      // about 1 MiB of each connection's. Before the hard bound each of the
      // eight ran at least one (nothing unsent): 9 × 8 MB and more.
      const made = ran * REPLY;
      assert.ok(
        made <= BOUND + held.length * MIB,
        `${ran} queries (${made} bytes of replies) ran for clients that read nothing`,
      );
      // A client with nothing unsent waits while the server is past the bound...
      await good.write(queries("SELECT 1 AS one", 1, 50));
      const answer = good.read();
      assert.equal(await within(answer, 300), "timeout");
      // Two hogs read their replies: connections waiting in line run theirs.
      const drained = Promise.all(
        held.slice(0, 2).map(async (h) => {
          for (let i = 0; i < 3; i++) {
            const r = await h.read() as [number, number, [string[], Uint8Array[][]]];
            assert.equal(r[0], 2 + i);
            assert.equal(r[2][1][0][0].length, REPLY);
          }
        }),
      );
      drained.catch(() => {}); // (awaited below; a failure before that ends the test anyway)
      let after = ran;
      for (let i = 0; i < 100 && after <= ran; i++) {
        await delay(100);
        after = await queriesRun(admin);
      }
      assert.ok(after > ran, `no waiting query ran once the budget freed (${after})`);
      // The other hogs close: every one waiting goes on, the readers get all their replies.
      for (const h of held.slice(2)) h.close();
      const r = await within(answer, 10_000) as [number, number, [string[], number[][]]];
      assert.equal(r[0], 50);
      assert.deepEqual(r[2][1], [[1]]);
      assert.notEqual(await within(drained, 10_000), "timeout");
      await good.write(queries("SELECT 2 AS two", 1, 51));
      const r2 = await within(good.read(), 5_000) as [number, number, [string[], number[][]]];
      assert.equal(r2[0], 51);
    } finally {
      for (const h of held) h.close();
      good.close();
      admin.close();
    }
  },
});

Deno.test({
  name:
    "unsent cap: connections waiting for room go on once the write-stall timeout closes the holders",
  async fn() {
    await using srv = await startServer({
      maxResultBytes: R,
      maxUnsentBytes: MAX,
      maxBackgroundReads: BACKGROUND,
      writeStallTimeout: 1000,
    });
    const path = (srv.connectOptions as { path: string }).path;
    const admin = await Raw.open(path, true);
    const good = await Raw.open(path);
    const held: Raw[] = [];
    try {
      held.push(...await hogs(path, 2));
      await delay(200);
      await good.write(queries("SELECT 1 AS one", 1, 50));
      // The hogs are closed (write stall) in turn; the waiting client is answered.
      const r = await within(good.read(), 20_000) as [number, number, [string[], number[][]]];
      assert.equal(r[0], 50);
      assert.deepEqual(r[2][1], [[1]]);
      assert.ok(await queriesRun(admin) >= 2);
    } finally {
      for (const h of held) h.close();
      good.close();
      admin.close();
    }
  },
});
