/**
 * Seeded, bounded protocol fuzzing against a live server process: mutated
 * valid frames (bit flips, truncations, length-field changes, type swaps
 * inside the request array) and fully random frames over many raw
 * connections, while a well-behaved client keeps writing. The server runs in
 * its own process so that a crash is reported (with the seed and the bytes
 * that caused it) instead of taking the test runner down.
 *
 * The seed is fixed (tests/_seed.ts); run other seeds, or reproduce a failure, with
 * `NETSQLITE_SEED=<seed> deno test -A tests/fuzz_test.ts` (`NETSQLITE_FUZZ_SEED` still works).
 */

import assert from "node:assert/strict";
// An inline specifier, so the module also loads when imported by path from
// another project (no import map needed).
import { Decoder, encode, ExtData } from "npm:@msgpack/msgpack@^3.1.3";
import { decodeMsgpack } from "../protocol/msgpack.ts";
import { MAX_HELLO_FRAME } from "../server/session.ts";
import type { Client } from "../client.ts";
import { startServerProcess } from "./_helpers.ts";
import { concat } from "./_bytes.ts";
import { testSeed, withSeed } from "./_seed.ts";

/** At most this many frames are sent in total... */
const MAX_FRAMES = 2000;
/** ...and no new connection starts after this many ms. */
const MAX_MS = 10_000;
/** Raw connections open at once. */
const WORKERS = 8;
/** The server's maxFrameSize, small so that length mutations cross it often. */
const MAX_FRAME_SIZE = 65536;
/** Codes a connection-level (id 0) error may carry. */
const FATAL_CODES = new Set(["BAD_REQUEST", "FRAME_TOO_LARGE", "PROTOCOL_VERSION"]);

const delay = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The fuzzing seed: fixed, or NETSQLITE_SEED (NETSQLITE_FUZZ_SEED) for other runs. */
const FUZZ_SEED = testSeed(0x6e657473, "NETSQLITE_FUZZ_SEED");

// ---- randomness -------------------------------------------------------------------

/** Seeded PRNG (mulberry32) with helpers. */
class Rng {
  #a: number;
  constructor(seed: number) {
    this.#a = seed >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    this.#a = (this.#a + 0x6d2b79f5) >>> 0;
    let t = this.#a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.int(256);
    return out;
  }
}

// ---- frames -----------------------------------------------------------------------

function rawFrame(payload: Uint8Array, announced = payload.length): Uint8Array {
  const out = new Uint8Array(4 + payload.length);
  new DataView(out.buffer).setUint32(0, announced >>> 0);
  out.set(payload, 4);
  return out;
}

function encodeValue(value: unknown): Uint8Array {
  return encode(value, { useBigInt64: true });
}

function hex(bytes: Uint8Array, max = 512): string {
  const shown = Array.from(bytes.subarray(0, max), (b) => b.toString(16).padStart(2, "0"));
  return shown.join("") + (bytes.length > max ? `...(+${bytes.length - max} bytes)` : "");
}

/** A random MessagePack-encodable value, biased towards edge cases. */
function randomValue(r: Rng, depth = 0): unknown {
  switch (r.int(depth > 2 ? 9 : 12)) {
    case 0:
      return null;
    case 1:
      return r.chance(0.5);
    case 2:
      return r.pick([0, 1, -1, 127, 128, 255, 256, -32, -33, 65535, 2 ** 31, 2 ** 32, 2 ** 53 - 1]);
    case 3:
      return r.pick([2n ** 63n - 1n, -(2n ** 63n), 2n ** 64n - 1n, 2n ** 53n + 1n]);
    case 4:
      return r.pick([0.5, -0, NaN, Infinity, -Infinity, 1e308, 5e-324, 3.0]);
    case 5:
      return r.pick([
        "",
        "SELECT 1",
        "a\0b",
        "\0SELECT 1",
        "SELECT 1;\0",
        "\u{1F600}",
        "\uD800",
        "x".repeat(r.int(300)),
        "SELECT * FROM fz",
        "?",
        "BEGIN",
        "COMMIT",
      ]);
    case 6:
      return r.bytes(r.int(40));
    case 7:
      return new ExtData(r.int(256) - 128, r.bytes(r.int(20)));
    case 8:
      return new Date(r.int(2 ** 31) * 1000);
    case 9:
      return Array.from({ length: r.int(5) }, () => randomValue(r, depth + 1));
    case 10: {
      const o: Record<string, unknown> = {};
      for (let i = r.int(4); i > 0; i--) {
        o[r.pick(["a", ":a", "$b", "@c", "1", "", "version", "timeout", "constructor"])] =
          randomValue(r, depth + 1);
      }
      return o;
    }
    default:
      return { version: r.pick([1, 1, 2, "1", null]) };
  }
}

/** A well-formed request (never touching the well-behaved client's table). */
function validRequest(r: Rng, id: number): unknown[] {
  const n = r.int(1000);
  const choices: unknown[][] = [
    [1, id, "CREATE TABLE IF NOT EXISTS fz (a, b)"],
    [1, id, "INSERT INTO fz VALUES (1, 'x'); INSERT INTO fz VALUES (2, 'y')"],
    [1, id, r.pick(["BEGIN", "BEGIN IMMEDIATE", "COMMIT", "ROLLBACK", "SAVEPOINT s", "RELEASE s"])],
    [2, id, "SELECT ? AS a, ? AS b", [n, "two"]],
    [2, id, "SELECT * FROM fz WHERE a > ? LIMIT 20", [n % 3]],
    [2, id, "SELECT :x AS x, $y AS y", { x: 1.5, y: new Uint8Array([1, 2]) }],
    [2, id, "SELECT zeroblob(?) AS z", [r.int(2000)]],
    [2, id, "SELECT count(*) FROM fz"],
    [2, id, 1, [n]],
    [3, id, "INSERT INTO fz (a, b) VALUES (?, ?)", [n, r.bytes(8)]],
    [3, id, "UPDATE fz SET b = ? WHERE a = ?", ["z", n % 3]],
    [3, id, "DELETE FROM fz WHERE a = ?", [n % 5]],
    [4, id, [["INSERT INTO fz (a) VALUES (?)", [n]], ["SELECT count(*) FROM fz", null]]],
    [5, id, "SELECT a FROM fz WHERE a = ?"],
    [6, id, 1],
    [7, id, "SELECT * FROM fz", null],
    [8, id, 1],
    [9, id, 1],
    [0, id, { version: 1 }],
  ];
  return r.pick(choices);
}

/** Replaces one element (possibly nested) of `msg` with a value of another type. */
function typeSwap(r: Rng, msg: unknown[]): unknown[] {
  const out = structuredClone(msg) as unknown[];
  let target: unknown[] = out;
  // Sometimes descend into a nested array (params, batch items).
  for (let d = 0; d < 2; d++) {
    const nested = target.filter((v) => Array.isArray(v)) as unknown[][];
    if (nested.length === 0 || r.chance(0.5)) break;
    target = r.pick(nested);
  }
  const roll = r.next();
  if (target.length === 0 || roll < 0.1) target.push(randomValue(r));
  else if (roll < 0.2) target.splice(r.int(target.length), 1);
  else target[r.int(target.length)] = randomValue(r);
  return out;
}

const INTERESTING = [0x00, 0xff, 0x7f, 0x80, 0xc0, 0xc1, 0xc4, 0xd9, 0xdc, 0xdd, 0xde, 0xdf];

/** One frame's bytes and the name of the mutation that made it. */
interface Piece {
  bytes: Uint8Array;
  kind: string;
}

function mutatedFrame(r: Rng, id: number): Piece {
  const msg = validRequest(r, id);
  const payload = encodeValue(msg);
  const roll = r.int(100);
  if (roll < 12) return { bytes: rawFrame(payload), kind: "valid" };
  if (roll < 27) {
    const p = payload.slice();
    for (let i = 1 + r.int(4); i > 0; i--) p[r.int(p.length)] ^= 1 << r.int(8);
    return { bytes: rawFrame(p), kind: "bitflip" };
  }
  if (roll < 35) {
    const p = payload.slice();
    p[r.int(p.length)] = r.pick(INTERESTING);
    return { bytes: rawFrame(p), kind: "byteset" };
  }
  if (roll < 45) {
    const p = payload.subarray(0, r.int(payload.length));
    return { bytes: rawFrame(p), kind: "truncate" };
  }
  if (roll < 50) {
    // Length still announces the whole payload: the next frame's bytes fill it.
    const cut = r.int(payload.length);
    return { bytes: rawFrame(payload, payload.length).subarray(0, 4 + cut), kind: "truncate-raw" };
  }
  if (roll < 60) {
    const announced = r.pick([
      0,
      1,
      payload.length - 1,
      payload.length + 1,
      payload.length + r.int(100),
      MAX_FRAME_SIZE,
      MAX_FRAME_SIZE + 1,
      2 ** 31,
      2 ** 32 - 1,
      r.int(2 ** 32),
    ]);
    return { bytes: rawFrame(payload, Math.max(0, announced)), kind: "length" };
  }
  if (roll < 80) return { bytes: rawFrame(encodeValue(typeSwap(r, msg))), kind: "typeswap" };
  if (roll < 85) {
    const at = r.int(payload.length + 1);
    const p = r.chance(0.5)
      ? concat([payload.subarray(0, at), r.bytes(1 + r.int(8)), payload.subarray(at)])
      : concat([
        payload.subarray(0, at),
        payload.subarray(Math.min(payload.length, at + 1 + r.int(8))),
      ]);
    return { bytes: rawFrame(p), kind: "splice" };
  }
  if (roll < 88) {
    const depth = 1 + r.int(20_000);
    const p = concat([new Uint8Array(depth).fill(0x91), new Uint8Array([0xc0])]);
    return { bytes: rawFrame(p), kind: "nesting" };
  }
  if (roll < 95) return { bytes: rawFrame(r.bytes(r.int(200))), kind: "random-frame" };
  return { bytes: r.bytes(1 + r.int(64)), kind: "random-bytes" };
}

// ---- what the server will see -----------------------------------------------------

const decoder = new Decoder({ useBigInt64: true });

function isId(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v) && v > 0 && v <= 0xffffffff;
}

/** How the server will read a connection's byte stream. */
interface ServerView {
  /** Ids of the well-shaped requests it will accept, in order (hello first). */
  ids: number[];
  /** The accepted requests themselves, parallel to `ids`. */
  requests: unknown[][];
  /** Code of the connection-level error it must send, if any. */
  fatal: string | null;
}

/** Replays the server's framing, decoding and handshake rules over `stream`. */
function serverView(stream: Uint8Array): ServerView {
  const view = new DataView(stream.buffer, stream.byteOffset, stream.byteLength);
  const ids: number[] = [];
  const requests: unknown[][] = [];
  let handshaken = false;
  for (let at = 0; stream.length - at >= 4;) {
    const len = view.getUint32(at);
    // Before the hello is accepted, frames are held to MAX_HELLO_FRAME.
    const limit = handshaken ? MAX_FRAME_SIZE : Math.min(MAX_FRAME_SIZE, MAX_HELLO_FRAME);
    if (len > limit) return { ids, requests, fatal: "FRAME_TOO_LARGE" };
    if (stream.length - at - 4 < len) break;
    let msg: unknown;
    try {
      // The server's own decoder decides what is valid MessagePack (it is
      // checked against @msgpack/msgpack in msgpack_test.ts).
      msg = decodeMsgpack(stream.subarray(at + 4, at + 4 + len));
    } catch {
      return { ids, requests, fatal: "BAD_REQUEST" };
    }
    at += 4 + len;
    if (!Array.isArray(msg) || typeof msg[0] !== "number" || !isId(msg[1])) {
      return { ids, requests, fatal: "BAD_REQUEST" };
    }
    if (!handshaken) {
      const opts = msg[2];
      if (msg[0] !== 0 || typeof opts !== "object" || opts === null) {
        return { ids, requests, fatal: "BAD_REQUEST" };
      }
      const version = (opts as { version?: unknown }).version;
      if (typeof version !== "number") return { ids, requests, fatal: "BAD_REQUEST" };
      if (version !== 1) return { ids, requests, fatal: "PROTOCOL_VERSION" };
      handshaken = true;
    }
    ids.push(msg[1]);
    requests.push(msg);
  }
  return { ids, requests, fatal: null };
}

// ---- one fuzz connection ----------------------------------------------------------

interface Stats {
  frames: number;
  conns: number;
  kinds: Map<string, number>;
  codes: Map<string, number>;
  /** Requests answered with INTERNAL, and the message. */
  internal: string[];
}

function bump(m: Map<string, number>, k: string): void {
  m.set(k, (m.get(k) ?? 0) + 1);
}

/** Builds one connection's byte stream: a hello (sometimes mutated), then frames. */
function plan(
  r: Rng,
  stats: Stats,
  budget: number,
): { stream: Uint8Array; view: ServerView; frames: number } {
  const pieces: Uint8Array[] = [];
  let id = 1;
  if (r.chance(0.85)) pieces.push(rawFrame(encodeValue([0, id++, { version: 1 }])));
  else pieces.push(mutatedFrame(r, id++).bytes);
  const want = Math.min(budget, 1 + r.int(10));
  while (pieces.length < want) {
    const piece = mutatedFrame(r, id++);
    pieces.push(piece.bytes);
    bump(stats.kinds, piece.kind);
  }
  const stream = concat(pieces);
  return { stream, view: serverView(stream), frames: pieces.length };
}

/** Reads every frame until EOF or until the server is quiet for `quietMs`. */
async function collect(
  conn: Deno.UnixConn,
  quietMs: number | null,
): Promise<{ frames: unknown[]; partial: number; eof: boolean }> {
  const buf = new Uint8Array(64 * 1024);
  let pending: Uint8Array = new Uint8Array(0);
  const frames: unknown[] = [];
  let eof = false;
  const deadline = Date.now() + 10_000;
  for (;;) {
    const read = conn.read(buf).catch(() => null);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const wait = quietMs ?? Math.max(1, deadline - Date.now());
    const n = await Promise.race([
      read,
      new Promise<"quiet">((resolve) => timer = setTimeout(() => resolve("quiet"), wait)),
    ]);
    clearTimeout(timer);
    if (n === "quiet") {
      // Close under the pending read, then let it settle.
      conn.close();
      await read;
      if (quietMs === null) throw new Error("server did not close the connection within 10 s");
      break;
    }
    if (n === null) {
      eof = true;
      conn.close();
      break;
    }
    pending = concat([pending, buf.subarray(0, n)]);
    const view = new DataView(pending.buffer, pending.byteOffset, pending.byteLength);
    let at = 0;
    while (pending.length - at >= 4) {
      const len = view.getUint32(at);
      if (pending.length - at - 4 < len) break;
      frames.push(decoder.decode(pending.subarray(at + 4, at + 4 + len)));
      at += 4 + len;
    }
    pending = pending.slice(at);
  }
  return { frames, partial: pending.length, eof };
}

/**
 * Checks what one connection received against what the server saw: every
 * frame is a well-formed reply; replies answer the accepted requests in the
 * order sent (so they form a prefix of them); a connection-level error has
 * the expected code and is the last frame. After a half-close the server
 * reads everything, so the error comes iff the stream holds a fatal frame,
 * and no reply is cut short.
 */
function checkReplies(
  view: ServerView,
  got: { frames: unknown[]; partial: number; eof: boolean },
  halfClosed: boolean,
  stats: Stats,
): void {
  const answered: number[] = [];
  let fatal: string | null = null;
  for (const f of got.frames) {
    assert.equal(fatal, null, "a frame after the connection-level error");
    assert.ok(Array.isArray(f) && f.length === 3, `reply is not [id, status, payload]`);
    const [id, status, payload] = f as [unknown, unknown, any];
    assert.ok(typeof id === "number" && Number.isInteger(id) && id >= 0, `bad reply id ${id}`);
    assert.ok(typeof status === "number" && status >= 0 && status <= 3, `bad status ${status}`);
    if ((status & 1) === 1) {
      assert.equal(typeof payload?.code, "string", "error without a code");
      assert.equal(typeof payload?.message, "string", "error without a message");
      bump(stats.codes, payload.code);
    } else {
      bump(stats.codes, "ok");
    }
    if (id === 0) {
      assert.equal(status & 1, 1, "id 0 without the error bit");
      assert.ok(FATAL_CODES.has(payload.code), `connection-level error ${payload.code}`);
      assert.equal(payload.code, view.fatal, "connection-level error code");
      fatal = payload.code;
      continue;
    }
    const at = answered.length;
    assert.equal(id, view.ids[at], `reply ${at} answers id ${id}, expected ${view.ids[at]}`);
    if ((status & 1) === 1 && payload.code === "INTERNAL") {
      stats.internal.push(
        `${JSON.stringify(view.requests[at], replacer)} -> ${JSON.stringify(payload)}`,
      );
    }
    answered.push(id);
  }
  if (halfClosed) {
    assert.equal(got.eof, true);
    assert.equal(got.partial, 0, "a reply cut short");
    assert.equal(fatal, view.fatal, "connection-level error expected iff the stream is fatal");
    // Not asserted: that every request is answered. After EOF the server
    // drops writes still waiting for the writer (and what follows them).
  }
}

// ---- the test -----------------------------------------------------------------------

Deno.test("Session survives seeded protocol fuzzing: acknowledged writes kept, database intact", () =>
  withSeed(FUZZ_SEED, () => fuzz(FUZZ_SEED)));

async function fuzz(seed: number): Promise<void> {
  console.log(`fuzz seed ${seed} (reproduce with NETSQLITE_SEED=${seed})`);
  await using srv = await startServerProcess({
    args: [
      "--max-frame-size",
      String(MAX_FRAME_SIZE),
      "--tx-idle-timeout",
      "1000",
      "--busy-timeout",
      "4000",
    ],
  });
  const path = srv.connectOptions.path!;
  let exited: Deno.CommandStatus | null = null;
  const watch = srv.child.status.then((s) => exited = s);

  const good: Client = await srv.client();
  const acked = new Map<number, string>();
  const attempted = new Set<number>();
  let goodErrors = 0;
  let ackedWhileFuzzing = 0;
  const stats: Stats = {
    frames: 0,
    conns: 0,
    kinds: new Map(),
    codes: new Map(),
    internal: [],
  };
  let fuzzing = true;
  /** The last streams each worker sent, to report a crash. */
  const history = new Map<number, Uint8Array[]>();
  let failure: unknown = null;
  try {
    await good.exec("CREATE TABLE acked (k INTEGER PRIMARY KEY, v TEXT NOT NULL)");
    const started = Date.now();

    const writer = async () => {
      // Writes while the fuzzers run, and at least 30 in all.
      for (let k = 1; fuzzing || (acked.size < 30 && Date.now() - started < 2 * MAX_MS); k++) {
        attempted.add(k);
        try {
          if (k % 7 === 0) {
            attempted.add(k + 1);
            await good.batch([
              { sql: "INSERT INTO acked (k, v) VALUES (?, ?)", params: [k, `b${k}`] },
              { sql: "INSERT INTO acked (k, v) VALUES (?, ?)", params: [k + 1, `b${k + 1}`] },
            ]);
            acked.set(k, `b${k}`);
            acked.set(k + 1, `b${k + 1}`);
            k++;
          } else {
            const res = await good.run("INSERT INTO acked (k, v) VALUES (?, ?)", [k, `v${k}`]);
            assert.equal(res.changes, 1);
            acked.set(k, `v${k}`);
          }
          if (k % 25 === 0) {
            const [[n]] = await good.values("SELECT count(*) FROM acked");
            assert.equal(n, acked.size, "read-your-writes on the good client");
          }
        } catch (err) {
          // Waiting behind a fuzzer's transaction may time out; that write is
          // not acknowledged. Anything else is a failure.
          if ((err as { code?: string }).code !== "BUSY_TIMEOUT") throw err;
          goodErrors++;
        }
        await delay(2);
      }
    };

    const worker = async (w: number) => {
      const r = new Rng(seed + w * 0x9e3779b9);
      while (stats.frames < MAX_FRAMES && Date.now() - started < MAX_MS && exited === null) {
        const { stream, view, frames } = plan(r, stats, MAX_FRAMES - stats.frames);
        stats.frames += frames;
        stats.conns++;
        const recent = history.get(w) ?? [];
        recent.push(stream);
        history.set(w, recent.slice(-3));
        const halfClose = r.chance(0.7);
        const conn = await Deno.connect({ transport: "unix", path });
        let got;
        try {
          // Send in a few random pieces to vary how frames straddle reads.
          let at = 0;
          while (at < stream.length) {
            const end = r.chance(0.5) ? stream.length : at + 1 + r.int(stream.length - at);
            for (let off = at; off < end;) off += await conn.write(stream.subarray(off, end));
            at = end;
            if (r.chance(0.3)) await delay(1);
          }
          if (halfClose) await conn.closeWrite();
        } catch {
          // The server may close first (fatal error); read what it sent.
        }
        try {
          got = await collect(conn, halfClose ? null : 50);
        } catch (err) {
          try {
            conn.close();
          } catch { /* closed */ }
          throw new Error(`${(err as Error).message}; stream ${hex(stream)}`, { cause: err });
        }
        try {
          checkReplies(view, got, halfClose, stats);
        } catch (err) {
          throw new Error(
            `${(err as Error).message}\n  seed ${seed}, worker ${w}, half-close ${halfClose}\n` +
              `  stream ${hex(stream)}\n  replies ${JSON.stringify(got.frames, replacer)}`,
            { cause: err },
          );
        }
      }
    };
    const workers = Promise.allSettled(Array.from({ length: WORKERS }, (_, w) => worker(w)))
      .finally(() => {
        fuzzing = false;
        ackedWhileFuzzing = acked.size;
      });
    const [written, results] = await Promise.all([
      writer().then(() => null, (err) => err),
      workers,
    ]);
    for (const res of results) if (res.status === "rejected") throw res.reason;
    if (written !== null) throw written;
  } catch (err) {
    failure = err;
  } finally {
    fuzzing = false;
    await good.close();
  }
  // A crash is the finding that matters most: report it with what caused it.
  await Promise.race([watch, delay(300)]);
  if (exited !== null) {
    const streams = [...history].flatMap(([w, list]) =>
      list.map((s, i) => `  worker ${w}, ${list.length - i} ago: ${hex(s, Infinity)}`)
    ).join("\n");
    throw new Error(
      `server process exited during fuzzing (${JSON.stringify(exited)}); seed ${seed}; ` +
        `last streams of each worker:\n${streams}`,
      { cause: failure },
    );
  }
  if (failure !== null) throw failure;

  console.log(
    `fuzz: ${stats.frames} frames on ${stats.conns} connections; ` +
      `kinds ${JSON.stringify(Object.fromEntries(stats.kinds))}; ` +
      `replies ${JSON.stringify(Object.fromEntries(stats.codes))}; ` +
      `good client: ${acked.size} acknowledged writes, ${goodErrors} BUSY_TIMEOUT`,
  );
  assert.ok(stats.frames >= 200, `only ${stats.frames} frames were sent`);
  assert.ok(ackedWhileFuzzing >= 5, `only ${ackedWhileFuzzing} writes acknowledged while fuzzing`);
  assert.deepEqual(stats.internal, [], "the server answered INTERNAL (a server bug)");

  // The server still answers a new client; every acknowledged write is there.
  {
    await using fresh = await srv.client();
    assert.deepEqual(await fresh.values("SELECT 1 + 1"), [[2]]);
    const rows = await fresh.values<[number, string]>("SELECT k, v FROM acked ORDER BY k");
    const present = new Map(rows);
    for (const [k, v] of acked) assert.equal(present.get(k), v, `acknowledged write ${k} lost`);
    for (const k of present.keys()) assert.ok(attempted.has(k), `row ${k} was never written`);
    assert.deepEqual(await fresh.values("PRAGMA integrity_check"), [["ok"]]);
  }
  await srv.kill();
  await watch;
}

function replacer(_k: string, v: unknown): unknown {
  if (typeof v === "bigint") return `${v}n`;
  if (v instanceof Uint8Array) return `<bin ${v.length}>`;
  return v;
}
