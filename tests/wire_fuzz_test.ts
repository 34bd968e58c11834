/**
 * Seeded, bounded fuzzing of the wire path of a real server (in-process and
 * as a separate process), on the engine NETSQLITE_ENGINE selects: random
 * bytes, frames of random MessagePack, valid requests with hand-encoded odd
 * values in their fields (extension types, invalid UTF-8 and CESU-8
 * surrogates, uint64 past 2^63, -0, NaN, float32, huge announced lengths,
 * deep nesting, duplicate map keys, unknown ops, huge parameter lists, maps
 * as parameters), and streams split at every byte boundary. After each case:
 * every reply is `[id, status, payload]` with a known, non-`INTERNAL` error
 * code; the bad connection either answers a trailing valid query correctly
 * or ends with one connection-level error; a fresh connection answers; the
 * canary table is intact; the server process is alive.
 *
 * A second part sends values through the real client and checks each comes
 * back exactly (per the mapping in protocol/values.ts) or is refused with
 * `INVALID_PARAM` saying why.
 *
 * The seed is fixed (tests/_seed.ts); `NETSQLITE_SEED=<n>` runs another, and
 * `NETSQLITE_WIRE_FUZZ_CASES=<n>` more cases (a longer run by hand).
 */

import assert from "node:assert/strict";
import { decodeMsgpack, Encoded, MsgpackWriter } from "../protocol/msgpack.ts";
import { ErrorCode } from "../protocol/errors.ts";
import { invalidReason } from "../protocol/values.ts";
import { startServer, startServerProcess } from "./_helpers.ts";
import { concat, prng } from "./_bytes.ts";
import { testSeed, withSeed } from "./_seed.ts";
import type { Client } from "../client.ts";
import type { BindValue } from "../client/_calls.ts";

const SEED = testSeed(0x77697265);
const CASES = Number(Deno.env.get("NETSQLITE_WIRE_FUZZ_CASES") || 300);
const MAX_FRAME_SIZE = 1 << 20;
const KNOWN_CODES = new Set<string>(Object.values(ErrorCode));
const PROTOCOL_MD = Deno.readTextFileSync(new URL("../PROTOCOL.md", import.meta.url));

/** An error code the protocol names: the client's own, one PROTOCOL.md lists, or `SQLITE_*`. */
function documented(code: unknown): boolean {
  return typeof code === "string" && (KNOWN_CODES.has(code) || /^SQLITE_[A-Z_]+$/.test(code) ||
    (/^[A-Z_]+$/.test(code) && PROTOCOL_MD.includes(`| \`${code}\``)));
}
const CONNECTION_CODES = new Set(["BAD_REQUEST", "FRAME_TOO_LARGE", "PROTOCOL_VERSION"]);
const CANARY_ROWS = 50;
/** Ids the fuzzed requests use stay below this; the trailing ping takes it. */
const PING_ID = 0x7fff0000;

// ---- randomness ----------------------------------------------------------------

class Rng {
  readonly #next: () => number;
  constructor(seed: number) {
    this.#next = prng(seed);
  }
  next(): number {
    return this.#next();
  }
  int(n: number): number {
    return Math.floor(this.#next() * n);
  }
  chance(p: number): boolean {
    return this.#next() < p;
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

// ---- encoding ------------------------------------------------------------------

const h = (s: string) => new Uint8Array(s.match(/../g)!.map((b) => parseInt(b, 16)));
/** Raw MessagePack bytes placed as they are inside an encoded value. */
const raw = (hex: string | Uint8Array) => new Encoded(typeof hex === "string" ? h(hex) : hex, 0);

function encode(value: unknown): Uint8Array {
  const w = new MsgpackWriter(256);
  w.write(value);
  return w.bytes.slice(0, w.pos);
}

function frame(payload: Uint8Array, announced = payload.length): Uint8Array {
  const out = new Uint8Array(4 + payload.length);
  new DataView(out.buffer).setUint32(0, announced >>> 0);
  out.set(payload, 4);
  return out;
}

const HELLO = frame(encode([0, 1, { version: 1 }]));
const PING = frame(encode([2, PING_ID, "SELECT 40 + 2 AS x", null, null]));

/** Odd MessagePack values, as raw bytes: each is one whole value. */
const ODD: readonly string[] = [
  "d401ff", // fixext 1
  "d5000102", // fixext 2
  "d6ff00000000", // timestamp 32
  "c70301010203", // ext 8
  "c1", // never used
  "a2c328", // invalid UTF-8
  "a3eda080", // CESU-8 lone high surrogate
  "a3edbfbf", // CESU-8 lone low surrogate
  "a6eda0bdedb880", // CESU-8 surrogate pair
  "a2c080", // overlong NUL
  "a4f4908080", // beyond U+10FFFF
  "a3efbbbf", // BOM alone
  "a3efbfbd", // U+FFFD itself (valid)
  "a100", // NUL
  "cfffffffffffffffff", // uint64 max
  "cf8000000000000000", // 2^63
  "cf0000000000000005", // 5 as uint64
  "d38000000000000000", // int64 min
  "d3ffffffffffffffff", // -1 as int64
  "cb8000000000000000", // -0.0
  "ca80000000", // -0.0 float32
  "cb7ff8000000000000", // NaN
  "cb7ff0000000000001", // signalling NaN
  "cbfff8000000000000", // -NaN
  "ca7fc00000", // NaN float32
  "ca7f800000", // Infinity float32
  "cb7ff0000000000000", // Infinity
  "ca3dcccccd", // 0.1 float32
  "cb0000000000000001", // smallest subnormal
  "cb4340000000000000", // 2^53 as float64
  "cb43e0000000000000", // 2^63 as float64
  "cb3ff0000000000000", // 1.0 as float64
  "dcffff", // array16 announcing 65535 items
  "ddffffffff", // array32 announcing 2^32-1 items
  "dd00000000", // empty array32
  "dfffffffff", // map32 announcing 2^32-1 entries
  "dbffffffff", // str32 announcing 4 GiB
  "c6ffffffff", // bin32 announcing 4 GiB
  "c600000000", // empty bin32
  "d9", // str8 with no length
  "cd01", // uint16 cut short
  "820161016162", // map with int key
  "82a16101a16102", // {a: 1, a: 2}: duplicate key
  "81a95f5f70726f746f5f5f01", // {__proto__: 1}
  "81a0c0", // {"": nil}
  "90", // []
  "80", // {}
  "c0",
  "c3",
  "c2",
];

/** The {@link ODD} values that are valid MessagePack for a request. */
const VALID_ODD = ODD.filter((hex) => {
  try {
    decodeMsgpack(h(hex));
    return true;
  } catch {
    return false;
  }
});

function deep(depth: number, leaf = "c0"): string {
  return "91".repeat(depth) + leaf;
}

/** A random value for a request field: JS values, odd raw bytes, nesting. */
function oddValue(r: Rng, depth = 0): unknown {
  switch (r.int(depth > 1 ? 7 : 10)) {
    case 0:
    case 1:
    case 2:
      // Mostly values a request may hold, so that later frames and the session's state are reached.
      return raw(r.chance(0.25) ? r.pick(ODD) : r.pick(VALID_ODD));
    case 3:
      return r.pick([null, true, false, 0, -1, 1.5, 2 ** 32, -(2 ** 31) - 1, 2 ** 53, -0, 1e308]);
    case 4:
      return r.pick([2n ** 63n - 1n, -(2n ** 63n), 2n ** 64n - 1n, 2n ** 53n]);
    case 5:
      return r.pick(["", "SELECT 1", "a\0b", "x".repeat(r.int(100)), "\u{1F600}", "?", ":a"]);
    case 6:
      return r.bytes(r.int(20));
    case 7:
      return raw(deep(20 + r.int(20), r.pick(ODD)));
    case 8:
      return Array.from({ length: r.int(4) }, () => oddValue(r, depth + 1));
    default: {
      const o: Record<string, unknown> = {};
      for (let i = r.int(3); i > 0; i--) {
        o[r.pick(["a", ":a", "timeout", "first", "foreignKeys", "version", "1"])] = oddValue(
          r,
          depth + 1,
        );
      }
      return o;
    }
  }
}

/** SQL the fuzzed requests may run: never touching the canary table. */
const SQLS = [
  "SELECT ?",
  "SELECT ?1, ?2",
  "SELECT :a",
  "SELECT $a, @b",
  "SELECT typeof(?)",
  "CREATE TABLE IF NOT EXISTS fz (a, b)",
  "INSERT INTO fz VALUES (?, ?)",
  "SELECT * FROM fz LIMIT 5",
  "BEGIN",
  "COMMIT",
  "ROLLBACK",
  "",
  ";",
  "SELECT 1 /* open",
];

const OPS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 20, 21, 23, 0, 13, 19, 25, 255, -1, 1.5];

/** A request `[op, id, ...]` with random (often odd) fields. */
function oddRequest(r: Rng, id: number): unknown[] {
  const op = r.chance(0.85) ? r.pick([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]) : r.pick(OPS);
  const sql = r.chance(0.8) ? r.pick(SQLS) : oddValue(r);
  let params: unknown;
  switch (r.int(8)) {
    case 0:
      params = null;
      break;
    case 1:
      params = Array.from({ length: r.int(4) }, () => oddValue(r));
      break;
    case 2:
      params = { a: oddValue(r), b: oddValue(r) };
      break;
    case 3: // huge parameter lists
      params = new Array(r.pick([100, 32766, 32767, 40000, 250_000])).fill(null);
      break;
    case 4:
      params = raw(r.pick(ODD));
      break;
    case 5: // params as a map for `?` parameters, duplicate names
      params = raw(r.pick(["81a131c3", "82a161c3a161c2", "81a13100", "81a3c328c3"]));
      break;
    default:
      params = [oddValue(r)];
  }
  const opts = r.chance(0.7) ? null : r.chance(0.5) ? { timeout: oddValue(r) } : oddValue(r);
  let msg: unknown[];
  if (op === 4) {
    msg = [op, id, r.chance(0.7) ? [[sql, params], [r.pick(SQLS), null]] : oddValue(r), opts];
  } else if (op === 10) {
    const unsent = r.chance(0.5) ? [r.pick(OPS), sql, params] : oddValue(r);
    msg = [op, id, r.chance(0.5) ? id - 1 : r.chance(0.5) ? id + 1 : oddValue(r), unsent];
  } else if (op === 8 || op === 9 || op === 6) {
    msg = [op, id, r.chance(0.5) ? r.int(4) : oddValue(r)];
  } else {
    msg = [op, id, sql, params, opts];
  }
  // Sometimes cut arguments off or add extra ones.
  if (r.chance(0.1)) msg.length = 2 + r.int(msg.length - 2);
  if (r.chance(0.1)) msg.push(oddValue(r));
  return msg;
}

/** A weird envelope: odd op/id values. */
function oddEnvelope(r: Rng): Uint8Array {
  const id = r.pick<unknown>([
    0,
    -1,
    2 ** 32,
    1.5,
    "1",
    null,
    raw("cf0000000000000003"),
    raw("cfffffffffffffffff"),
    raw("cb4008000000000000"), // 3.0
    raw("cb8000000000000000"),
  ]);
  return encode([r.pick(OPS), id, "SELECT 1", null, null]);
}

/** One fuzz case: the bytes sent after the hello (or instead of it). */
interface Case {
  kind: string;
  bytes: Uint8Array;
  /** Whether the hello precedes the bytes. */
  hello: boolean;
}

function makeCase(r: Rng): Case {
  const roll = r.int(100);
  if (roll < 5) {
    return { kind: "random-bytes", bytes: r.bytes(1 + r.int(64)), hello: r.chance(0.5) };
  }
  if (roll < 12) return { kind: "random-frame", bytes: frame(r.bytes(r.int(64))), hello: true };
  if (roll < 20) {
    // A frame of random MessagePack made of odd values.
    const payload = concat([h("9" + (1 + r.int(6)).toString(16)), encode(oddValue(r))]);
    return { kind: "random-msgpack", bytes: frame(payload), hello: r.chance(0.9) };
  }
  if (roll < 25) return { kind: "odd-envelope", bytes: frame(oddEnvelope(r)), hello: true };
  if (roll < 30) {
    const announced = r.pick([0, 1, MAX_FRAME_SIZE + 1, 2 ** 31, 2 ** 32 - 1]);
    return { kind: "length", bytes: frame(encode([2, 2, "SELECT 1"]), announced), hello: true };
  }
  if (roll < 34) {
    const depth = r.pick([30, 31, 32, 33, 100, 5000]);
    return { kind: "nesting", bytes: frame(h("9402" + "02" + deep(depth))), hello: true };
  }
  if (roll < 37) {
    // A hello with odd fields.
    const opts = r.chance(0.5) ? { version: oddValue(r), token: oddValue(r) } : oddValue(r);
    return { kind: "odd-hello", bytes: frame(encode([0, 1, opts])), hello: false };
  }
  const frames: Uint8Array[] = [];
  for (let n = 1 + r.int(6), id = 2; n > 0; n--, id++) {
    frames.push(frame(encode(oddRequest(r, id))));
  }
  return { kind: "odd-request", bytes: concat(frames), hello: true };
}

// ---- reading replies -----------------------------------------------------------

type Reply = [number, number, unknown];

/** Reads reply frames until EOF or until `until` says stop; fails after `ms` without progress. */
async function readReplies(
  conn: Deno.UnixConn,
  until: (reply: Reply) => boolean,
  ms = 10_000,
): Promise<{ replies: Reply[]; eof: boolean }> {
  const replies: Reply[] = [];
  let pending: Uint8Array = new Uint8Array(0);
  const buf = new Uint8Array(64 * 1024);
  for (;;) {
    while (pending.length >= 4) {
      const len = new DataView(pending.buffer, pending.byteOffset).getUint32(0);
      if (pending.length < 4 + len) break;
      const msg = decodeMsgpack(pending.subarray(4, 4 + len));
      pending = pending.slice(4 + len);
      assert.ok(Array.isArray(msg) && msg.length === 3, `reply not [id, status, payload]`);
      replies.push(msg as Reply);
      if (until(msg as Reply)) return { replies, eof: false };
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const n = await Promise.race([
      conn.read(buf).catch(() => null),
      new Promise<"hang">((res) => timer = setTimeout(() => res("hang"), ms)),
    ]);
    clearTimeout(timer);
    if (n === "hang") {
      throw new Error(`no reply and no EOF within ${ms} ms (after ${replies.length} replies)`);
    }
    if (n === null) {
      assert.equal(pending.length, 0, "a reply cut short before EOF");
      return { replies, eof: true };
    }
    pending = concat([pending, buf.subarray(0, n)]);
  }
}

/** Checks every reply is well formed and typed; returns the connection-level error, if any. */
function checkReplies(replies: Reply[], eof: boolean): string | null {
  let fatal: string | null = null;
  for (const [id, status, payload] of replies) {
    assert.equal(fatal, null, "a reply after the connection-level error");
    assert.ok(Number.isInteger(id) && id >= 0, `reply id ${id}`);
    assert.ok(Number.isInteger(status) && status >= 0 && status < 16, `status ${status}`);
    if (status & 1) {
      const e = payload as { code?: unknown; message?: unknown };
      assert.ok(e !== null && typeof e === "object", `error payload ${JSON.stringify(payload)}`);
      assert.equal(typeof e.message, "string", "error without a message");
      assert.ok(documented(e.code), `undocumented error code ${String(e.code)}`);
      assert.notEqual(e.code, "INTERNAL", `INTERNAL: ${e.message}`);
      assert.ok((e.message as string).length > 0, "empty error message");
      if (id === 0) {
        assert.ok(CONNECTION_CODES.has(e.code as string), `connection-level ${e.code}`);
        fatal = e.code as string;
      }
    }
  }
  if (fatal !== null) assert.ok(eof, "connection-level error without closing");
  return fatal;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<boolean> {
  try {
    for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
    return true;
  } catch {
    return false; // the server closed first; read what it sent
  }
}

/** Sends `bytes` (in two writes when `split` is given), then the ping; returns what came back. */
async function exchange(
  path: string,
  bytes: Uint8Array,
  split?: number,
  halfClose = false,
): Promise<{ replies: Reply[]; fatal: string | null; eof: boolean }> {
  const conn = await Deno.connect({ transport: "unix", path });
  try {
    if (split === undefined) {
      await writeAll(conn, concat([bytes, PING]));
    } else if (await writeAll(conn, bytes.subarray(0, split))) {
      await new Promise((r) => setTimeout(r, 1));
      await writeAll(conn, concat([bytes.subarray(split), PING]));
    }
    // Random bytes may leave a frame incomplete, the ping inside it: end the stream there.
    if (halfClose) await conn.closeWrite().catch(() => {});
    const { replies, eof } = await readReplies(conn, ([id]) => id === PING_ID);
    const fatal = checkReplies(replies, eof);
    if (fatal === null && !(halfClose && eof)) {
      // No connection-level error: the connection still works, and answers the ping right.
      const ping = replies.at(-1)!;
      assert.equal(ping[0], PING_ID, `connection ended without an error (${replies.length})`);
      const body = ping[2] as [string[], unknown[][]];
      if ((ping[1] & 1) === 0) {
        assert.deepEqual(body, [["x"], [[42]]], "the ping's answer");
      } else {
        // Only a transaction left aborted or a statement timing out may refuse it.
        const code = (ping[2] as { code: string }).code;
        assert.ok(["TX_ABORTED", "BUSY_TIMEOUT"].includes(code), `ping refused: ${code}`);
      }
    }
    return { replies, fatal, eof };
  } finally {
    try {
      conn.close();
    } catch { /* closed */ }
  }
}

/** A fresh connection answers, and the canary table holds exactly its rows. */
async function checkHealthy(path: string): Promise<void> {
  const conn = await Deno.connect({ transport: "unix", path });
  try {
    const q = frame(
      encode([2, 2, "SELECT count(*), sum(k), group_concat(v, '') FROM canary", null, null]),
    );
    await writeAll(conn, concat([HELLO, q]));
    const { replies } = await readReplies(conn, ([id]) => id === 2, 10_000);
    assert.equal(replies.length, 2);
    assert.equal(replies[0][1] & 1, 0, `hello refused: ${JSON.stringify(replies[0])}`);
    assert.deepEqual(replies[1][2], [
      ["count(*)", "sum(k)", "group_concat(v, '')"],
      [[CANARY_ROWS, (CANARY_ROWS * (CANARY_ROWS + 1)) / 2, CANARY_TEXT]],
    ]);
  } finally {
    conn.close();
  }
}

const CANARY_TEXT = Array.from({ length: CANARY_ROWS }, (_, i) => `v${i + 1}`).join("");

async function makeCanary(client: Client): Promise<void> {
  await client.exec("CREATE TABLE canary (k INTEGER PRIMARY KEY, v TEXT NOT NULL)");
  for (let k = 1; k <= CANARY_ROWS; k++) {
    await client.run("INSERT INTO canary VALUES (?, ?)", [k, `v${k}`]);
  }
}

function hex(b: Uint8Array): string {
  return Array.from(b.subarray(0, 400), (x) => x.toString(16).padStart(2, "0")).join("") +
    (b.length > 400 ? `...(+${b.length - 400})` : "");
}

/** Runs the seeded cases and the split streams against the server on `path`. */
async function fuzzWire(path: string, seed: number, alive: () => boolean): Promise<string> {
  const r = new Rng(seed);
  const kinds = new Map<string, number>();
  const codes = new Map<string, number>();
  for (let i = 0; i < CASES; i++) {
    const c = makeCase(r);
    kinds.set(c.kind, (kinds.get(c.kind) ?? 0) + 1);
    const bytes = c.hello ? concat([HELLO, c.bytes]) : c.bytes;
    try {
      const { replies } = await exchange(path, bytes, undefined, c.kind === "random-bytes");
      for (const [, status, p] of replies) {
        const code = status & 1 ? (p as { code: string }).code : "ok";
        codes.set(code, (codes.get(code) ?? 0) + 1);
      }
      assert.ok(alive(), "server process exited");
      if (i % 5 === 0 || i === CASES - 1) await checkHealthy(path);
    } catch (err) {
      throw new Error(
        `case ${i} (${c.kind}) failed: ${(err as Error).message}\n  bytes ${hex(bytes)}`,
        { cause: err },
      );
    }
  }
  // Streams split at every byte boundary answer as they do whole.
  const streams = [
    concat([HELLO, frame(encode([2, 2, "SELECT ?1 AS a", [raw("cb8000000000000000")], null]))]),
    concat([HELLO, frame(encode([3, 2, "SELECT ?", [raw("cb7ff8000000000000")]]))]),
    concat([HELLO, frame(encode([2, 2, "SELECT :a AS a", raw("82a161c3a161c2")]))]),
    concat([HELLO, frame(h("9302a3eda080"))]),
    concat([HELLO, frame(h("9302d401ff"))]),
    concat([HELLO, frame(encode([2, 2, "SELECT 1"]), 2 ** 31)]),
  ];
  /** What each stream must end with: its connection-level error, or none. */
  const FATAL = [null, null, "BAD_REQUEST", "BAD_REQUEST", "BAD_REQUEST", "FRAME_TOO_LARGE"];
  for (const [s, stream] of streams.entries()) {
    const whole = await exchange(path, stream);
    assert.equal(whole.fatal, FATAL[s], `stream ${s}: connection-level error`);
    const shape = (x: { replies: Reply[]; fatal: string | null }) =>
      JSON.stringify(
        x.replies.map(([id, st, p]) => [
          id,
          st,
          st & 1 ? (p as { code: string }).code : id === 1 ? "hello" : p,
        ]),
        (_k, v) => typeof v === "bigint" ? `${v}n` : Object.is(v, -0) ? "-0" : v,
      );
    for (let at = 1; at < stream.length; at++) {
      const part = await exchange(path, stream, at);
      assert.equal(shape(part), shape(whole), `stream ${s} split at ${at}: ${hex(stream)}`);
    }
    assert.ok(alive(), "server process exited");
  }
  await checkHealthy(path);
  return `${CASES} cases ${JSON.stringify(Object.fromEntries(kinds))}; replies ` +
    JSON.stringify(Object.fromEntries(codes));
}

Deno.test("wire fuzz: an in-process server answers every bad input with a typed error and loses nothing", () =>
  withSeed(SEED, async () => {
    // A low maxRequestValues: the huge parameter lists are refused by their count, request alone.
    await using srv = await startServer({
      maxFrameSize: MAX_FRAME_SIZE,
      busyTimeout: 2000,
      maxRequestValues: 20_000,
    });
    {
      await using c = await srv.client();
      await makeCanary(c);
    }
    console.log(await fuzzWire(srv.connectOptions.path!, SEED, () => true));
  }));

Deno.test("wire fuzz: a server process answers every bad input with a typed error and loses nothing", () =>
  withSeed(SEED, async () => {
    await using srv = await startServerProcess({
      args: ["--max-frame-size", String(MAX_FRAME_SIZE), "--busy-timeout", "2000"],
    });
    let exited = false;
    srv.child.status.then(() => exited = true);
    {
      await using c = await srv.client();
      await makeCanary(c);
    }
    console.log(await fuzzWire(srv.connectOptions.path!, SEED ^ 0x5a5a5a5a, () => !exited));
    assert.equal(exited, false, "server process exited");
  }));

// ---- values through the real client --------------------------------------------

const VALUES = Number(Deno.env.get("NETSQLITE_WIRE_FUZZ_VALUES") || 600);

/** A random string from code units of every kind (lone surrogates and NUL included, rarely). */
function randomString(r: Rng): string {
  const n = r.chance(0.05)
    ? r.pick([31, 32, 63, 64, 65, 255, 256, 65535, 65536, 70_000])
    : r.int(80);
  const units: number[] = [];
  const mode = r.int(6);
  while (units.length < n) {
    const k = mode === 0 ? 0 : r.int(100);
    if (k < 60) units.push(0x20 + r.int(0x5f));
    else if (k < 70) units.push(0x80 + r.int(0x780));
    else if (k < 80) units.push(0x800 + r.int(0xd800 - 0x800));
    else if (k < 88) {
      const cp = 0x10000 + r.int(0x100000);
      units.push(0xd800 + ((cp - 0x10000) >> 10), 0xdc00 + ((cp - 0x10000) & 0x3ff));
    } else if (k < 93) units.push(0xe000 + r.int(0x2000));
    else if (k < 96) units.push(r.pick([0xfffd, 0xfeff, 0xffff, 0xfffe, 0x7f, 0x80]));
    else if (k < 98.5) units.push(r.pick([0, 0xd800, 0xdbff, 0xdc00, 0xdfff, 0x1]));
    else units.push(r.int(0x10000));
  }
  let s = "";
  for (let i = 0; i < units.length; i += 4096) {
    s += String.fromCharCode(...units.slice(i, i + 4096));
  }
  return s;
}

function randomNumber(r: Rng): number {
  switch (r.int(5)) {
    case 0: {
      const b = r.bytes(8);
      return new DataView(b.buffer).getFloat64(0);
    }
    case 1:
      return r.pick([
        0,
        -0,
        1,
        -1,
        0.5,
        Infinity,
        -Infinity,
        NaN,
        Number.MAX_VALUE,
        -Number.MAX_VALUE,
        Number.MIN_VALUE,
        -Number.MIN_VALUE,
        2 ** 31,
        2 ** 31 - 1,
        -(2 ** 31),
        -(2 ** 31) - 1,
        2 ** 32,
        2 ** 32 - 1,
        2 ** 53,
        2 ** 53 - 1,
        -(2 ** 53),
        -(2 ** 53) + 1,
        2 ** 63,
        -(2 ** 63),
        2 ** 64,
        1e20,
        2.2250738585072014e-308,
        0.1,
        1 / 3,
      ]);
    case 2:
      return r.int(2 ** 32) - 2 ** 31;
    case 3:
      return (r.next() - 0.5) * 2 ** r.int(80);
    default:
      return Math.floor((r.next() - 0.5) * 2 ** 54);
  }
}

function randomBigint(r: Rng): bigint {
  switch (r.int(3)) {
    case 0:
      return r.pick([
        0n,
        -1n,
        2n ** 63n - 1n,
        -(2n ** 63n),
        2n ** 63n,
        -(2n ** 63n) - 1n,
        2n ** 64n - 1n,
        2n ** 53n,
        2n ** 53n - 1n,
        -(2n ** 53n) + 1n,
        -(2n ** 53n),
        2n ** 100n,
      ]);
    case 1: {
      const b = r.bytes(8);
      return new DataView(b.buffer).getBigInt64(0);
    }
    default:
      return BigInt(r.int(2 ** 31)) - 2n ** 30n;
  }
}

function randomBytes(r: Rng): Uint8Array {
  const n = r.chance(0.05) ? r.pick([255, 256, 65535, 65536, 100_000]) : r.int(40);
  switch (r.int(4)) {
    case 0: {
      // A view into the middle of a larger buffer.
      const big = r.bytes(n + 20);
      const off = r.int(10);
      return big.subarray(off, off + n);
    }
    case 1: {
      const shared = new Uint8Array(new SharedArrayBuffer(n));
      shared.set(r.bytes(n));
      return shared;
    }
    default:
      return r.bytes(n);
  }
}

function randomJsValue(r: Rng): unknown {
  const k = r.int(100);
  if (k < 25) return randomNumber(r);
  if (k < 40) return randomBigint(r);
  if (k < 70) return randomString(r);
  if (k < 85) return randomBytes(r);
  if (k < 90) return r.pick([null, true, false]);
  return r.pick<() => unknown>([
    () => undefined,
    () => new Date(0),
    () => ({}),
    () => [1],
    () => new Int8Array(2),
    () => new Uint8ClampedArray(2),
    () => new Number(1),
    () => new String("a"),
    () => Symbol("s"),
    () => new ArrayBuffer(2),
    () => new DataView(new ArrayBuffer(2)),
  ])();
}

/** What the client must read back for `v` (value, SQLite type), per protocol/values.ts. */
function expectedBack(v: unknown): [unknown, string] {
  if (v === null) return [null, "null"];
  if (typeof v === "boolean") return [v ? 1 : 0, "integer"];
  if (typeof v === "number") {
    return [v, Number.isSafeInteger(v) && !Object.is(v, -0) ? "integer" : "real"];
  }
  if (typeof v === "bigint") {
    const safe = v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER);
    return [safe ? Number(v) : v, "integer"];
  }
  if (typeof v === "string") return [v, "text"];
  return [new Uint8Array(v as Uint8Array), "blob"];
}

function same(got: unknown, want: unknown): boolean {
  if (want instanceof Uint8Array) {
    return got instanceof Uint8Array && got.length === want.length &&
      got.every((b, i) => b === want[i]);
  }
  return Object.is(got, want);
}

function show(v: unknown): string {
  if (typeof v === "string") {
    return `string(${v.length}) ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + "…" : v)}`;
  }
  if (typeof v === "bigint") return `${v}n`;
  if (typeof v === "number") return Object.is(v, -0) ? "-0" : String(v);
  if (v instanceof Uint8Array) return `Uint8Array(${v.length}) ${hex(v.subarray(0, 20))}`;
  if (typeof v === "symbol") return v.toString();
  return Object.prototype.toString.call(v);
}

/** Sends `v` through one client path; returns [value, type] read back. */
async function roundTrip(
  c: Client,
  path: number,
  value: unknown,
  key: number,
): Promise<[unknown, string]> {
  // Values of every kind, those the types refuse included: the run-time checks are under test.
  const v = value as BindValue;
  switch (path) {
    case 0: {
      const [[value, type]] = await c.values("SELECT ?1, typeof(?1)", [v]);
      return [value, type as string];
    }
    case 1: {
      await c.run("INSERT INTO vals (k, x) VALUES (:k, :x)", { k: key, x: v });
      const [[value, type]] = await c.values("SELECT x, typeof(x) FROM vals WHERE k = ?", [key]);
      return [value, type as string];
    }
    case 2: {
      const [, rows] = await c.batch([
        { sql: "INSERT INTO vals (k, x) VALUES (?, ?)", params: [key, v] },
        { sql: "SELECT x, typeof(x) FROM vals WHERE k = ?", params: [key] },
      ]);
      const row = rows.rows[0] as Record<string, unknown>;
      return [row.x, row["typeof(x)"] as string];
    }
    default: {
      for await (const row of c.iterate("SELECT ?1 AS v, typeof(?1) AS t", [v])) {
        return [(row as Record<string, unknown>).v, (row as Record<string, unknown>).t as string];
      }
      throw new Error("no row");
    }
  }
}

Deno.test("wire fuzz: every value the client sends comes back exactly or is refused saying why", () =>
  withSeed(SEED, async () => {
    await using srv = await startServer();
    await using c = await srv.client();
    await c.exec("CREATE TABLE vals (k INTEGER PRIMARY KEY, x)");
    const r = new Rng(SEED ^ 0x1234567);
    const problems: string[] = [];
    let stored = 0, refused = 0;
    for (let i = 0; i < VALUES; i++) {
      const v = randomJsValue(r);
      const path = r.int(4);
      const reason = invalidReason(v);
      let got: [unknown, string] | undefined;
      let error: { code?: string; message?: string } | undefined;
      try {
        got = await roundTrip(c, path, v, i + 1);
      } catch (err) {
        error = err as { code?: string; message?: string };
      }
      const what = `value ${i} (path ${path}) ${show(v)}`;
      if (reason !== undefined) {
        refused++;
        if (error?.code !== "INVALID_PARAM" || !error.message?.includes(reason)) {
          problems.push(
            `${what}: expected INVALID_PARAM (${reason}), got ` +
              (error ? `${error.code}: ${error.message}` : `stored as ${show(got![0])}`),
          );
        }
        continue;
      }
      if (error !== undefined) {
        problems.push(`${what}: refused: ${error.code}: ${error.message}`);
        continue;
      }
      stored++;
      const [want, type] = expectedBack(v);
      if (!same(got![0], want) || got![1] !== type) {
        problems.push(`${what}: came back as ${show(got![0])} (${got![1]}), expected ${type}`);
      }
    }
    console.log(`values: ${stored} stored exactly, ${refused} refused`);
    assert.deepEqual(problems, []);
    assert.ok(
      stored > VALUES / 2 && refused >= VALUES / 20,
      `${stored} stored, ${refused} refused`,
    );
  }));
