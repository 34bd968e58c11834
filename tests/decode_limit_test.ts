/**
 * The bound on the values one request may hold (`maxRequestValues`): the
 * decoder counts them as it reads each container's length and refuses a
 * request past it before building its items, alone and in its turn, while
 * the connection and every other client go on. Raw frames on real servers.
 */

import assert from "node:assert/strict";
import {
  BYTE_ARRAY_VALUES,
  decodeMsgpack,
  MsgpackDecoder,
  MsgpackError,
  MsgpackWriter,
  TooManyValuesError,
} from "../protocol/msgpack.ts";
import { Op } from "../protocol/messages.ts";
import { DEFAULT_MAX_REQUEST_VALUES, resolveServeOptions } from "../server/options.ts";
import { parseServeArgs } from "../server.ts";
import { serverStats, startServer } from "./_helpers.ts";
import { frame, Raw } from "./_raw.ts";

type Reply = [number, number, { code: string; message: string } & unknown];

/** A frame around `payload`. */
function rawFrame(payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + payload.length);
  new DataView(out.buffer).setUint32(0, payload.length);
  out.set(payload, 4);
  return out;
}

function encode(value: unknown): Uint8Array {
  const w = new MsgpackWriter(64);
  w.write(value);
  return w.bytes.slice(0, w.pos);
}

/**
 * `[Op.Batch, id, [[sql] × n], ...extra]`: 1 + (3 + extra) + 2n values (the
 * outer array, its items, the list's items and each item's SQL).
 */
function batch(id: number, n: number, sql: string, ...extra: unknown[]): unknown[] {
  return [Op.Batch, id, Array.from({ length: n }, () => [sql]), ...extra];
}

function assertRefused(r: Reply, id: number, limit: number): void {
  assert.equal(r[0], id, JSON.stringify(r).slice(0, 300));
  assert.equal(r[1] & 1, 1, "an error reply");
  assert.equal(r[2].code, "BAD_REQUEST");
  assert.match(
    r[2].message,
    new RegExp(
      `^Cannot run request: it holds more than ${limit} values .*--max-request-values.*split`,
    ),
  );
}

Deno.test("MsgpackDecoder.decode() counts every array item, map key and map value", () => {
  // The array, its 4 items, the map's key and value: 7, the byte array counting 8: 14.
  const bytes = encode([1, { a: [] }, "x", new Uint8Array(2)]);
  const decoder = new MsgpackDecoder(14);
  assert.deepEqual(decoder.decode(bytes), [1, { a: [] }, "x", new Uint8Array(2)]);
  assert.equal(decoder.values, 7 + BYTE_ARRAY_VALUES - 1);
  assert.throws(
    () => new MsgpackDecoder(13).decode(bytes),
    (err: unknown) =>
      err instanceof TooManyValuesError && err.limit === 13 &&
      /a byte array \(counting as 8 values\)/.test(err.message),
  );
  // Unbounded by default, as decodeMsgpack() is.
  assert.deepEqual(new MsgpackDecoder().decode(bytes), decodeMsgpack(bytes));
});

Deno.test("MsgpackDecoder.decode() refuses a container announcing more than the bound before reading its items", () => {
  // An array32 of 2^20 nils: the header alone says it is too many.
  const n = 1 << 20;
  const bytes = new Uint8Array(5 + n).fill(0xc0);
  bytes.set([0xdd, 0x00, 0x10, 0x00, 0x00]);
  assert.throws(
    () => new MsgpackDecoder(1000).decode(bytes),
    (err: unknown) =>
      err instanceof TooManyValuesError &&
      /^More than 1000 values: an array of 1048576 items before offset 5 would make 1048577$/
        .test(err.message),
  );
  // A map's entries count twice (key and value).
  const map = encode({ a: 1, b: 2 });
  assert.equal(new MsgpackDecoder(5).decode(map) !== null, true);
  assert.throws(() => new MsgpackDecoder(4).decode(map), TooManyValuesError);
  // Truncation is still told apart: it is not a valid payload at all.
  assert.throws(
    () => new MsgpackDecoder(1000).decode(bytes.subarray(0, 1000)),
    (err: unknown) => err instanceof MsgpackError && !(err instanceof TooManyValuesError),
  );
});

Deno.test("MsgpackDecoder.head() reads the first items of an array and leaves the rest", () => {
  const bytes = encode(batch(7, 5000, "SELECT 1"));
  const decoder = new MsgpackDecoder(100);
  assert.throws(() => decoder.decode(bytes), TooManyValuesError);
  assert.deepEqual(decoder.head(bytes, 2), [Op.Batch, 7]);
  assert.equal(decoder.head(encode({ op: 4 }), 2), null);
  assert.deepEqual(decoder.head(encode([[1, 2, 3], 7, 8]), 2), [[1, 2, 3], 7]);
  // Items that themselves hold too many values: no head.
  assert.equal(new MsgpackDecoder(3).head(encode([[1, 2, 3], 7]), 2), null);
});

Deno.test("maxRequestValues defaults to 1048576, is read from --max-request-values and refuses less than 1024", () => {
  const base = { database: ":memory:", path: "/tmp/x.sock" };
  assert.equal(DEFAULT_MAX_REQUEST_VALUES, 1_048_576);
  assert.equal(resolveServeOptions(base).maxRequestValues, 1_048_576);
  const parsed = parseServeArgs(["--max-request-values", "5000"]);
  assert.notEqual(parsed, "help");
  assert.equal(resolveServeOptions({ ...base, ...(parsed as object) }).maxRequestValues, 5000);
  assert.throws(
    () => resolveServeOptions({ ...base, maxRequestValues: 1023 }),
    /^RangeError: Invalid option "maxRequestValues": 1023 is outside 1024\.\.2147483647$/,
  );
});

Deno.test("Session refuses a request of maxRequestValues + 1 values alone, in its turn, and runs one of exactly maxRequestValues", async () => {
  const limit = 1024;
  await using srv = await startServer({ maxRequestValues: limit });
  const path = (srv.connectOptions as { path: string }).path;
  await using raw = await Raw.open(path);
  await using good = await srv.client();
  await good.exec("CREATE TABLE t (x)");
  // 1 + 3 + 2 × 510 = 1024 values; with a nil for options, 1025.
  const atLimit = batch(4, 510, "INSERT INTO t VALUES (1)");
  const over = batch(2, 510, "INSERT INTO t VALUES (1)", null);
  const atBytes = frame(atLimit);
  const overBytes = frame(over);
  const counter = new MsgpackDecoder();
  counter.decode(atBytes.subarray(4));
  assert.equal(counter.values, limit);
  counter.decode(overBytes.subarray(4));
  assert.equal(counter.values, limit + 1);
  // Pipelined in one write: each is answered in order, under its own id.
  await raw.write(
    new Uint8Array([...overBytes, ...frame([Op.Query, 3, "SELECT 3 AS x"]), ...atBytes]),
  );
  assertRefused(await raw.read() as Reply, 2, limit);
  assert.deepEqual(await raw.read(), [3, 0, [["x"], [[3]]]]);
  const ran = await raw.read() as Reply;
  assert.equal(ran[0], 4);
  assert.equal(ran[1], 0, JSON.stringify(ran).slice(0, 300));
  assert.equal((ran[2] as unknown as unknown[]).length, 510);
  assert.deepEqual(await good.values("SELECT count(*) FROM t"), [[510]]);
  // Inside a transaction a refusal is one failed request: the transaction goes on.
  await raw.write(frame([Op.Exec, 5, "BEGIN; INSERT INTO t VALUES (2)"]));
  assert.deepEqual(await raw.read(), [5, 2, null]);
  await raw.write(frame(batch(6, 2000, "INSERT INTO t VALUES (3)")));
  const refused = await raw.read() as Reply;
  assertRefused(refused, 6, limit);
  assert.equal(refused[1] & 2, 2, "still inside the transaction");
  await raw.write(frame([Op.Exec, 7, "COMMIT"]));
  assert.deepEqual(await raw.read(), [7, 0, null]);
  assert.deepEqual(await good.values("SELECT x, count(*) FROM t GROUP BY x"), [[1, 510], [2, 1]]);
  // A request whose op or id cannot be read within the bound is no request.
  await raw.write(frame([Array.from({ length: 2000 }, () => 1), 8, "SELECT 1"]));
  const closing = await raw.read() as Reply;
  assert.equal(closing[0], 0);
  assert.equal(closing[2].code, "BAD_REQUEST");
  assert.match(closing[2].message, /expected \[op, id, \.\.\.args\]/);
  assert.equal(await raw.read(), "EOF");
  assert.deepEqual(await good.get("SELECT 1 AS x"), { x: 1 });
});

Deno.test("Session refuses a frame of millions of empty maps at once, and other clients wait for none of it", async () => {
  // [4, 5, [{}, {}, ...]]: one byte per map on the wire; decoded, 64 bytes each.
  const n = 16_000_000;
  const payload = new Uint8Array(8 + n).fill(0x80);
  payload.set([0x93, Op.Batch, 5, 0xdd, n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255]);
  await using srv = await startServer();
  const path = (srv.connectOptions as { path: string }).path;
  await using raw = await Raw.open(path);
  await using good = await srv.client();
  let stop = false;
  let slowest = 0;
  let probes = 0;
  const probing = (async () => {
    while (!stop) {
      const t0 = performance.now();
      assert.deepEqual(await good.get("SELECT 1 AS x"), { x: 1 });
      slowest = Math.max(slowest, performance.now() - t0);
      probes++;
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  const t0 = performance.now();
  await raw.write(rawFrame(payload));
  const reply = await raw.read() as Reply;
  const ms = performance.now() - t0;
  stop = true;
  await probing;
  assertRefused(reply, 5, DEFAULT_MAX_REQUEST_VALUES);
  // Decoded whole, these 16 M maps took seconds and GBs; refused at the list's header, nothing.
  assert.ok(ms < 3000, `refused after ${ms.toFixed(0)} ms`);
  assert.ok(slowest < 2000, `another client's SELECT 1 took ${slowest.toFixed(0)} ms (${probes})`);
  // The connection is still usable.
  await raw.write(frame([Op.Query, 6, "SELECT 6 AS x"]));
  assert.deepEqual(await raw.read(), [6, 0, [["x"], [[6]]]]);
});

Deno.test("Session counts a waiting request's values, not only its bytes, against the server's budget for waiting requests", async () => {
  // The budget (at its least: maxFrameSize + 128 KiB = 192 KiB) against frames
  // of ~29 KB on the wire holding 3,204 values (~234 KB estimated decoded).
  await using srv = await startServer({
    maxFrameSize: 64 * 1024,
    maxPartialFrameBytes: 64 * 1024 + 128 * 1024,
  });
  const path = (srv.connectOptions as { path: string }).path;
  await using holder = await srv.client();
  await holder.exec("BEGIN IMMEDIATE");
  await using raw = await Raw.open(path);
  const frames = Array.from(
    { length: 20 },
    (_, i) => frame(batch(10 + i, 1600, "SELECT 1 WHERE 0")),
  );
  const before = (await serverStats(srv.connectOptions)).bytes.in;
  // (Settles either way: an assertion failing below must not leave it dangling.)
  const sending = raw.write(new Uint8Array(frames.flatMap((f) => [...f]))).then(
    () => null,
    (err: unknown) => err,
  );
  await new Promise((r) => setTimeout(r, 500));
  const read = (await serverStats(srv.connectOptions)).bytes.in - before;
  // The first frame alone passes the budget: reading stops after the chunk it
  // came in (64 KiB: up to 3 frames). Counted by their bytes, 7 would fit.
  const framesRead = Math.floor(read / frames[0].length);
  assert.ok(framesRead <= 3, `the server read ${framesRead} waiting frames (${read} bytes)`);
  await holder.exec("COMMIT");
  assert.equal(await sending, null);
  for (let i = 0; i < frames.length; i++) {
    const r = await raw.read() as Reply;
    assert.deepEqual([r[0], r[1]], [10 + i, 0], JSON.stringify(r).slice(0, 300));
    assert.equal((r[2] as unknown as unknown[]).length, 1600);
  }
});
