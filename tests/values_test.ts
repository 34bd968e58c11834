/**
 * The value mapping (protocol/values.ts), the parameter check at every
 * client entry point, and the MessagePack codec (protocol/codec.ts).
 */

import assert from "node:assert/strict";
import { invalidParamsMessage, invalidReason, paramLabel } from "../protocol/values.ts";
import { MessageDecoder, MessageEncoder } from "../protocol/codec.ts";
import { ErrorCode, SqliteError } from "../protocol/errors.ts";
import { FrameReader } from "../transport/frame_reader.ts";
import type { BindValue } from "../client/_calls.ts";
import { startServer } from "./_helpers.ts";

// ---- invalidReason -------------------------------------------------------

const REFUSED: [label: string, value: unknown, reason: RegExp][] = [
  ["undefined", undefined, /^undefined is not a value: pass null for NULL$/],
  ["NaN", NaN, /^NaN cannot be stored/],
  ["string with NUL", "a\0b", /string contains a NUL character.*Uint8Array/],
  ["string that is only NUL", "\0", /NUL character/],
  ["Date", new Date(0), /^Date is not a SQLite type/],
  [
    "ArrayBuffer",
    new ArrayBuffer(4),
    /^ArrayBuffer is not supported: pass a Uint8Array for a BLOB$/,
  ],
  ["Int8Array", new Int8Array(2), /^Int8Array is not supported: pass a Uint8Array/],
  ["Uint16Array", new Uint16Array(2), /^Uint16Array is not supported/],
  ["Float64Array", new Float64Array(1), /^Float64Array is not supported/],
  ["Uint8ClampedArray", new Uint8ClampedArray(1), /^Uint8ClampedArray is not supported/],
  ["DataView", new DataView(new ArrayBuffer(1)), /^DataView is not supported/],
  ["plain object", { a: 1 }, /^object is not a SQLite value: pass null, a number/],
  ["null-prototype object", Object.create(null), /^object is not a SQLite value/],
  ["Map", new Map(), /^an instance of Map is not a SQLite value: pass null, a number/],
  ["class instance", new (class Row {})(), /^an instance of Row is not a SQLite value: pass null/],
  [
    "String object",
    new String("a"),
    /^an instance of String \(a string wrapped in an object\) is not a SQLite value: pass the string itself, its valueOf\(\)$/,
  ],
  [
    "Number object",
    new Number(1),
    /^an instance of Number \(a number wrapped in an object\).*pass the number itself/,
  ],
  [
    "Boolean object",
    new Boolean(true),
    /^an instance of Boolean \(a boolean wrapped in an object\)/,
  ],
  ["BigInt object", Object(1n), /^an instance of BigInt \(a bigint wrapped in an object\)/],
  ["Symbol object", Object(Symbol("s")), /^an instance of Symbol is not a SQLite value: pass null/],
  ["array", [1, 2], /^array is not a SQLite value/],
  ["empty array", [], /^array is not a SQLite value/],
  ["symbol", Symbol("s"), /^symbol is not a SQLite value$/],
  ["function", () => 1, /^function is not a SQLite value$/],
  [
    "bigint 2^63",
    2n ** 63n,
    /^bigint 9223372036854775808 is outside SQLite's 64-bit INTEGER range$/,
  ],
  ["bigint -2^63-1", -(2n ** 63n) - 1n, /^bigint -9223372036854775809 is outside/],
  ["bigint 2^64", 2n ** 64n, /is outside SQLite's 64-bit INTEGER range/],
];

for (const [label, value, reason] of REFUSED) {
  Deno.test(`invalidReason() refuses ${label}`, () => {
    const r = invalidReason(value);
    assert.equal(typeof r, "string");
    assert.match(r!, reason);
  });
}

const ACCEPTED: [label: string, value: unknown][] = [
  ["null", null],
  ["zero", 0],
  ["negative zero", -0],
  ["a safe integer", 42],
  ["MAX_SAFE_INTEGER", Number.MAX_SAFE_INTEGER],
  ["2^53 as a number", 2 ** 53],
  ["a real", 1.5],
  ["Infinity", Infinity],
  ["-Infinity", -Infinity],
  ["Number.MIN_VALUE", Number.MIN_VALUE],
  ["bigint 0", 0n],
  ["bigint 2^63-1", 2n ** 63n - 1n],
  ["bigint -2^63", -(2n ** 63n)],
  ["true", true],
  ["false", false],
  ["an empty string", ""],
  ["unicode text with emoji", "héllo wörld 日本 🎉"],
  ["a Uint8Array with zero bytes", new Uint8Array([0, 1, 0])],
  ["an empty Uint8Array", new Uint8Array(0)],
  ["a Uint8Array view of a larger buffer", new Uint8Array(new ArrayBuffer(8), 2, 3)],
];

for (const [label, value] of ACCEPTED) {
  Deno.test(`invalidReason() accepts ${label}`, () => {
    assert.equal(invalidReason(value), undefined);
  });
}

Deno.test("invalidReason() refuses a Uint8Array whose bytes are gone, and only that", () => {
  const detached = new Uint8Array([1, 2]);
  structuredClone(detached.buffer, { transfer: [detached.buffer] });
  assert.match(invalidReason(detached)!, /^Uint8Array's ArrayBuffer is detached \(transferred\)/);
  const transferred = new Uint8Array([1, 2]);
  transferred.buffer.transfer();
  assert.match(invalidReason(transferred)!, /detached/);
  const b = new ArrayBuffer(8, { maxByteLength: 16 });
  const fixed = new Uint8Array(b, 2, 4);
  const tracking = new Uint8Array(b, 6);
  const trackingAtEnd = new Uint8Array(b, 8);
  assert.equal(invalidReason(fixed), undefined);
  assert.equal(invalidReason(tracking), undefined);
  assert.equal(invalidReason(trackingAtEnd), undefined); // in bounds, empty
  b.resize(4);
  for (const u of [fixed, tracking, trackingAtEnd]) {
    assert.match(invalidReason(u)!, /^Uint8Array is out of bounds of its ArrayBuffer/);
  }
  b.resize(16); // back in bounds: its bytes are there again
  assert.equal(invalidReason(fixed), undefined);
  assert.equal(invalidReason(trackingAtEnd), undefined);
  // Empty views of a SharedArrayBuffer, and at the end of a buffer, are fine.
  assert.equal(invalidReason(new Uint8Array(new SharedArrayBuffer(4), 4)), undefined);
  assert.equal(invalidReason(new Uint8Array(new ArrayBuffer(4), 4)), undefined);
  assert.match(invalidParamsMessage([1, detached])!, /^Cannot bind parameter 2: .*detached/);
  assert.match(
    invalidParamsMessage({ b: fixed.subarray(0, 0), a: detached })!,
    /^Cannot bind parameter "a": /,
  );
});

// A lone UTF-16 surrogate cannot be encoded as UTF-8: MessagePack sends it as
// U+FFFD, so SQLite stores "\ufffd" instead of what was bound. Like a NUL, it
// cannot be stored exactly and should be refused.
Deno.test("invalidReason() refuses a string with a lone surrogate, which cannot be stored exactly", () => {
  for (const s of ["\ud800", "a\udc00b", "x\ud83d"]) {
    assert.equal(typeof invalidReason(s), "string", `${JSON.stringify(s)} must be refused`);
  }
  // A proper surrogate pair (an emoji) is fine.
  assert.equal(invalidReason("\ud83c\udf89"), undefined);
});

// A parameter's name is sent as UTF-8 too: a lone surrogate in it arrived as
// U+FFFD and bound the parameter `:\ufffd`, which the caller never named.
Deno.test("A named parameter whose name holds a lone surrogate or a NUL is refused (INVALID_PARAM), never bound under another name", async () => {
  for (const key of ["\ud800", "a\udc00", ":x\ud83d"]) {
    assert.equal(
      invalidParamsMessage({ [key]: 1 }),
      `Cannot bind parameter ${JSON.stringify(key)}: its name contains a lone UTF-16 ` +
        "surrogate, which UTF-8 cannot represent; no SQL parameter can have that name",
    );
  }
  assert.equal(
    invalidParamsMessage({ "a\0b": 1 }),
    'Cannot bind parameter "a\\u0000b": its name contains a NUL character; no SQL parameter ' +
      "can have that name",
  );
  assert.equal(invalidParamsMessage({ "\ud83c\udf89": 1 }), undefined); // a pair is fine
  await using srv = await startServer();
  await using db = await srv.client();
  await assert.rejects(
    db.values("SELECT :\ufffd AS v", { "\ud800": 1 }),
    (err: unknown) => err instanceof SqliteError && err.code === ErrorCode.InvalidParam,
  );
  assert.deepEqual(await db.values("SELECT :\ufffd AS v", { "\ufffd": 1 }), [[1]]);
});

// ---- paramLabel / invalidParamsMessage ---------------------------------

Deno.test("paramLabel() names positional parameters from 1 and quotes named ones", () => {
  assert.equal(paramLabel(0), "1");
  assert.equal(paramLabel(9), "10");
  assert.equal(paramLabel("id"), '"id"');
  assert.equal(paramLabel("$id"), '"$id"');
});

Deno.test("invalidParamsMessage() accepts null, undefined, and valid arrays and objects", () => {
  assert.equal(invalidParamsMessage(null), undefined);
  assert.equal(invalidParamsMessage(undefined), undefined);
  assert.equal(invalidParamsMessage([]), undefined);
  assert.equal(invalidParamsMessage({}), undefined);
  assert.equal(
    invalidParamsMessage([null, 1, 1.5, 2n, true, "x", new Uint8Array([0])]),
    undefined,
  );
  assert.equal(
    invalidParamsMessage({ a: null, $b: 1, ":c": "x", "@d": new Uint8Array() }),
    undefined,
  );
});

Deno.test("invalidParamsMessage() names the first refused positional parameter from 1", () => {
  assert.equal(
    invalidParamsMessage([1, undefined, NaN]),
    "Cannot bind parameter 2: undefined is not a value: pass null for NULL",
  );
  assert.match(invalidParamsMessage([NaN])!, /^Cannot bind parameter 1: NaN cannot be stored/);
  assert.match(
    invalidParamsMessage([0, 0, 0, new Date()])!,
    /^Cannot bind parameter 4: Date is not a SQLite type/,
  );
  assert.match(
    invalidParamsMessage(["ok", 2n ** 63n])!,
    /^Cannot bind parameter 2: bigint 9223372036854775808 is outside/,
  );
});

Deno.test("invalidParamsMessage() names the first refused named parameter in quotes", () => {
  assert.match(
    invalidParamsMessage({ a: 1, b: "x\0y" })!,
    /^Cannot bind parameter "b": string contains a NUL character/,
  );
  assert.match(
    invalidParamsMessage({ $when: new Date() })!,
    /^Cannot bind parameter "\$when": Date is not a SQLite type/,
  );
  assert.match(
    invalidParamsMessage({ nested: { x: 1 } })!,
    /^Cannot bind parameter "nested": object is not a SQLite value/,
  );
});

Deno.test("invalidParamsMessage() refuses parameters that are neither array nor object, saying what they are", () => {
  const expected =
    "Cannot bind parameters: pass an array (positional) or a plain object (named), got ";
  assert.equal(invalidParamsMessage(5), expected + "a number");
  assert.equal(invalidParamsMessage("abc"), expected + "a string");
  assert.equal(invalidParamsMessage(true), expected + "a boolean");
  assert.equal(invalidParamsMessage(new Uint8Array(2)), expected + "an instance of Uint8Array");
  assert.equal(invalidParamsMessage(new Date()), expected + "an instance of Date");
});

Deno.test("invalidParamsMessage() refuses class instances, Maps and objects with a custom prototype", () => {
  const expected =
    "Cannot bind parameters: pass an array (positional) or a plain object (named), got ";
  class Params {
    a = 1;
  }
  assert.equal(invalidParamsMessage(new Params()), expected + "an instance of Params");
  assert.equal(invalidParamsMessage(new Map([["a", 1]])), expected + "an instance of Map");
  assert.equal(
    invalidParamsMessage(Object.create({ a: 1 })),
    expected + "an object with a custom prototype",
  );
});

Deno.test("invalidParamsMessage() accepts null-prototype objects and checks their values", () => {
  const params = Object.assign(Object.create(null), { a: 1, b: "x" });
  assert.equal(invalidParamsMessage(params), undefined);
  params.c = NaN;
  assert.match(invalidParamsMessage(params)!, /^Cannot bind parameter "c": NaN cannot be stored/);
});

Deno.test("invalidParamsMessage() refuses a named parameter called __proto__", () => {
  const body = JSON.parse('{"__proto__": "x", "a": 1}');
  assert.ok(Object.hasOwn(body, "__proto__"));
  assert.equal(
    invalidParamsMessage(body),
    'Cannot bind parameter "__proto__": a named parameter cannot be called __proto__',
  );
  // Also when its value would otherwise be refused, and when it is not the first key.
  assert.match(
    invalidParamsMessage(JSON.parse('{"a": 1, "__proto__": {}}'))!,
    /^Cannot bind parameter "__proto__": a named parameter cannot be called __proto__$/,
  );
});

// ---- parameters checked at every client entry point ---------------------

/** What every entry point that sends parameters must refuse, and how. */
const BAD_PARAMS: [label: string, params: () => unknown, message: RegExp][] = [
  [
    "an own __proto__ key",
    () => JSON.parse('{"__proto__": "x", "a": 1}'),
    /Cannot bind parameter "__proto__": a named parameter cannot be called __proto__$/,
  ],
  [
    "a class instance",
    () =>
      new (class Row {
        a = 1;
      })(),
    /plain object \(named\), got an instance of Row$/,
  ],
  ["a Map", () => new Map([["a", 1]]), /plain object \(named\), got an instance of Map$/],
  [
    "a String object as a value",
    () => ({ a: new String("x") }),
    /Cannot bind parameter "a": an instance of String \(a string wrapped in an object\) is not a SQLite value: pass the string itself, its valueOf\(\)$/,
  ],
  [
    "an inherited property",
    () => Object.create({ a: 1 }),
    /plain object \(named\), got an object with a custom prototype$/,
  ],
];

for (const [label, params, message] of BAD_PARAMS) {
  Deno.test(`client calls refuse params with ${label} (INVALID_PARAM) and the connection carries on`, async () => {
    await using srv = await startServer();
    await using db = await srv.client();
    await db.exec("CREATE TABLE t (a)");
    const p = params() as Record<string, BindValue>;
    const refused = (e: unknown): boolean =>
      e instanceof SqliteError && e.code === ErrorCode.InvalidParam && message.test(e.message);
    const sql = "SELECT :a";
    // A bystander call in the same burst as the refused one is not disturbed.
    const [before, bad, after] = await Promise.allSettled([
      db.values("SELECT 1"),
      db.values(sql, p),
      db.values("SELECT 3"),
    ]);
    assert.ok(bad.status === "rejected" && refused(bad.reason), String(bad.status));
    assert.deepEqual([before, after], [
      { status: "fulfilled", value: [[1]] },
      { status: "fulfilled", value: [[3]] },
    ]);
    await assert.rejects(db.run("INSERT INTO t VALUES (:a)", p), refused);
    await assert.rejects(db.query(sql, p), refused);
    await assert.rejects(db.get(sql, p), refused);
    await assert.rejects(Array.fromAsync(db.iterate(sql, p)), refused);
    await assert.rejects(
      db.batch([{ sql: "SELECT 1" }, { sql, params: p }]),
      (e: unknown) => refused(e) && /^Batch statement 2: /.test((e as Error).message),
    );
    const stmt = await db.prepare(sql);
    await assert.rejects(stmt.run(p), refused);
    await assert.rejects(stmt.all(p), refused);
    await assert.rejects(stmt.get(p), refused);
    await assert.rejects(stmt.values(p), refused);
    await assert.rejects(Array.fromAsync(stmt.iterate(p)), refused);
    // Inside a transaction: the refusal is the caller's to handle, the transaction goes on.
    const result = await db.transaction(async (tx) => {
      await tx.run("INSERT INTO t VALUES ('first')");
      await assert.rejects(tx.run("INSERT INTO t VALUES (:a)", p), refused);
      await assert.rejects(tx.values(sql, p), refused);
      await tx.run("INSERT INTO t VALUES ('second')");
      return "done";
    });
    assert.equal(result, "done");
    assert.deepEqual(await db.values("SELECT a FROM t ORDER BY rowid"), [["first"], ["second"]]);
    const reserved = await db.reserve();
    try {
      await assert.rejects(reserved.values(sql, p), refused);
      assert.deepEqual(await reserved.values("SELECT 4"), [[4]]);
    } finally {
      reserved.release();
    }
    await stmt.finalize();
  });
}

Deno.test("client calls bind null-prototype parameter objects", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const params = Object.assign(Object.create(null), { a: 1, b: "x" });
  assert.deepEqual(await db.values("SELECT :a, :b", params), [[1, "x"]]);
  const stmt = await db.prepare("SELECT :a, :b");
  assert.deepEqual(await stmt.values(params), [[1, "x"]]);
  assert.deepEqual(await db.batch([{ sql: "SELECT :a, :b", params }], { arrays: true }), [
    { changes: 0, lastInsertRowid: 0, rows: [[1, "x"]] },
  ]);
  await stmt.finalize();
});

// ---- MessageEncoder / MessageDecoder -----------------------------------

/** Encodes one message and decodes it back from the frame payload. */
function roundTrip(value: unknown): unknown {
  const enc = new MessageEncoder(1 << 20);
  const size = enc.append(value);
  const bytes = enc.take();
  assert.equal(bytes.length, size + 4);
  return new MessageDecoder().decode(bytes.subarray(4));
}

Deno.test("MessageEncoder keeps the sign of -0", () => {
  const out = roundTrip(-0);
  assert.ok(Object.is(out, -0), `expected -0, got ${String(out)}`);
  const arr = roundTrip([0, -0, [-0]]) as [number, number, number[]];
  assert.ok(Object.is(arr[0], 0));
  assert.ok(Object.is(arr[1], -0));
  assert.ok(Object.is(arr[2][0], -0));
});

Deno.test("MessageEncoder round-trips bigints as bigints", () => {
  for (const v of [0n, 5n, -5n, 2n ** 53n + 1n, -(2n ** 63n), 2n ** 63n - 1n, 2n ** 64n - 1n]) {
    const out = roundTrip(v);
    assert.equal(typeof out, "bigint", `${v} must stay a bigint`);
    assert.equal(out, v);
  }
});

Deno.test("MessageEncoder round-trips safe integers as numbers", () => {
  for (
    const v of [
      0,
      1,
      -1,
      127,
      128,
      255,
      256,
      -33,
      65535,
      65536,
      2 ** 31,
      -(2 ** 31) - 1,
      2 ** 32 - 1,
      2 ** 32,
      2 ** 40,
      -(2 ** 40),
      Number.MAX_SAFE_INTEGER,
      Number.MIN_SAFE_INTEGER,
    ]
  ) {
    const out = roundTrip(v);
    assert.equal(typeof out, "number", `${v} must stay a number`);
    assert.equal(out, v);
  }
});

Deno.test("MessageEncoder round-trips reals, infinities, strings, blobs, booleans and null", () => {
  const msg = [
    1.5,
    -2.25,
    1e300,
    Number.MIN_VALUE,
    2 ** 53,
    Infinity,
    -Infinity,
    "",
    "héllo 🎉 日本",
    new Uint8Array([0, 0, 255, 0]),
    new Uint8Array(0),
    true,
    false,
    null,
    { a: [1, "b"], c: null },
  ];
  const out = roundTrip(msg) as unknown[];
  assert.equal(out.length, msg.length);
  for (let i = 0; i < msg.length; i++) {
    if (typeof msg[i] === "number") assert.ok(Object.is(out[i], msg[i]), `item ${i}`);
    else assert.deepEqual(out[i], msg[i], `item ${i}`);
  }
  assert.ok(out[9] instanceof Uint8Array);
  assert.ok(out[10] instanceof Uint8Array);
  assert.ok(Number.isNaN(roundTrip(NaN)), "NaN itself survives the codec");
});

Deno.test("MessageEncoder.append() prefixes each frame with its big-endian payload length", () => {
  const enc = new MessageEncoder(1 << 20);
  const messages = [[1, 2, "x"], "a".repeat(300), new Uint8Array(70_000), null, [-0, 2n ** 60n]];
  const sizes = messages.map((m) => enc.append(m));
  assert.equal(enc.size, sizes.reduce((a, b) => a + b + 4, 0));
  const bytes = enc.take();
  assert.equal(enc.size, 0, "take() empties the buffer");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  for (let i = 0; i < messages.length; i++) {
    assert.equal(view.getUint32(at), sizes[i], `frame ${i} length prefix`);
    at += 4 + sizes[i];
  }
  assert.equal(at, bytes.length);
  // The same bytes parsed by FrameReader decode back to the messages.
  const reader = new FrameReader(1 << 20);
  reader.push(bytes);
  const dec = new MessageDecoder();
  const out: unknown[] = [];
  for (let f; (f = reader.next()) !== undefined;) out.push(dec.decode(f));
  assert.equal(out.length, messages.length);
  assert.deepEqual(out.slice(0, 4), messages.slice(0, 4));
  const last = out[4] as [number, bigint];
  assert.ok(Object.is(last[0], -0));
  assert.equal(last[1], 2n ** 60n);
});

Deno.test("MessageEncoder.append() returns -1 over maxFrameSize and appends nothing", () => {
  const enc = new MessageEncoder(1024);
  const first = enc.append([1, 2, "ok"]);
  assert.ok(first > 0);
  const before = enc.size;
  assert.equal(enc.append("x".repeat(2000)), -1);
  assert.equal(enc.size, before, "the oversized frame left nothing behind");
  // A payload of exactly maxFrameSize is allowed; one byte more is not.
  const exact = new Uint8Array(1024 - 3); // bin16 header is 3 bytes
  assert.equal(enc.append(exact), 1024);
  assert.equal(enc.append(new Uint8Array(1024 - 2)), -1);
  const bytes = enc.take();
  assert.equal(bytes.length, 4 + first + 4 + 1024);
  const reader = new FrameReader(1024);
  reader.push(bytes);
  const dec = new MessageDecoder();
  assert.deepEqual(dec.decode(reader.next()!), [1, 2, "ok"]);
  assert.deepEqual(dec.decode(reader.next()!), exact);
  assert.equal(reader.next(), undefined);
});

Deno.test("MessageEncoder.append() throws on unencodable values and appends nothing", () => {
  const enc = new MessageEncoder(1024);
  enc.append("keep");
  const before = enc.size;
  assert.throws(() => enc.append([1, Symbol("s")]), /Cannot encode/);
  assert.equal(enc.size, before);
  assert.throws(() => enc.append({ f: () => 1 }), /Cannot encode/);
  assert.equal(enc.size, before);
  const bytes = enc.take();
  assert.equal(new MessageDecoder().decode(bytes.subarray(4)), "keep");
});

Deno.test("MessageEncoder.take() returns a copy that later appends do not change", () => {
  const enc = new MessageEncoder(1 << 20);
  enc.append("first");
  const a = enc.take();
  const snapshot = a.slice();
  enc.append("second, longer than the first");
  enc.append(new Uint8Array(300_000)); // past the 256 KiB buffer, which take() then shrinks
  const b = enc.take();
  assert.deepEqual(a, snapshot);
  enc.append("third");
  const c = enc.take();
  assert.deepEqual(a, snapshot);
  const dec = new MessageDecoder();
  assert.equal(dec.decode(a.subarray(4)), "first");
  assert.equal(dec.decode(c.subarray(4)), "third");
  const reader = new FrameReader(1 << 20);
  reader.push(b);
  assert.equal(dec.decode(reader.next()!), "second, longer than the first");
  assert.equal((dec.decode(reader.next()!) as Uint8Array).length, 300_000);
});

Deno.test("MessageDecoder.decode() throws SqliteError BAD_REQUEST on malformed payloads", () => {
  const dec = new MessageDecoder();
  for (
    const bad of [
      new Uint8Array([0xc1]), // never-used type byte
      new Uint8Array([0x92, 0x01]), // array of 2 with one element
      new Uint8Array([]), // nothing at all
      new Uint8Array([0x01, 0x02]), // two values instead of one
    ]
  ) {
    assert.throws(
      () => dec.decode(bad),
      (err: unknown) => {
        assert.ok(err instanceof SqliteError, `bytes ${bad.join(",")}`);
        assert.equal(err.code, ErrorCode.BadRequest);
        assert.match(err.message, /^Cannot decode frame: /);
        return true;
      },
    );
  }
  // The decoder stays usable afterwards.
  assert.deepEqual(dec.decode(new Uint8Array([0x91, 0x07])), [7]);
});

Deno.test("a parameter left without a value is refused with INVALID_PARAM, not bound NULL", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (a, b)");
  const refused = (message: RegExp) => (err: unknown) => {
    assert.ok(err instanceof SqliteError, String(err));
    assert.equal(err.code, ErrorCode.InvalidParam);
    assert.match(err.message, message);
    return true;
  };
  await assert.rejects(
    db.run("INSERT INTO t VALUES (:a, :b)", { a: 1 }),
    refused(/^Missing value for parameter ":b": the parameters object has no "b" \(or ":b"\)$/),
  );
  await assert.rejects(
    db.run("INSERT INTO t VALUES (?, ?)", [1]),
    refused(/^Missing parameter values: the statement has 2 parameters, 1 was given$/),
  );
  await assert.rejects(db.values("SELECT ?"), refused(/has 1 parameter, 0 were given/));
  const stmt = await db.prepare("INSERT INTO t VALUES (@a, $b)");
  await assert.rejects(stmt.run({ b: 2 }), refused(/parameter "@a"/));
  await stmt.finalize();
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]]);
  // Every parameter given: as before.
  await db.run("INSERT INTO t VALUES (:a, :b)", { a: 1, b: null });
  assert.deepEqual(await db.values("SELECT a, b FROM t"), [[1, null]]);
});

Deno.test("a bare key binds the parameters of that name under every prefix; a prefixed key only its own", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  assert.deepEqual(await db.values("SELECT $a, @a, :a", { a: 1 }), [[1, 1, 1]]);
  assert.deepEqual(await db.values("SELECT :a, @b", { ":a": 1, "@b": 2 }), [[1, 2]]);
  assert.deepEqual(await db.values("SELECT ?2, ?1", { "?1": 1, "?2": 2 }), [[2, 1]]);
  assert.deepEqual(await db.values("SELECT :a, :a", { a: 7 }), [[7, 7]]);
  await assert.rejects(db.values("SELECT :a", { a: 1, bb: 2 }), { code: ErrorCode.InvalidParam });
});

Deno.test({
  name: "FFI engine: text with a NUL or a real U+FFFD in it comes back whole",
  ignore: Deno.env.get("NETSQLITE_ENGINE") === "node", // node:sqlite cuts text at a NUL (README)
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    const text = async (hex: string) => (await db.values(`SELECT CAST(x'${hex}' AS TEXT)`))[0][0];
    assert.equal(await text("efbfbd0041"), "\ufffd\u0000A");
    assert.equal(await text("610041"), "a\u0000A");
    assert.equal(await text("efbfbd"), "\ufffd");
    assert.equal(await text("c3a90041"), "\u00e9\u0000A");
  },
});

Deno.test("a positional list binds as many values as the statement has, up to the library's own limit", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  // Past SQLite's default SQLITE_MAX_VARIABLE_NUMBER (32,766), within Debian's (250,000).
  const n = 40_000;
  const sql = `SELECT count(*), sum(column1) FROM (VALUES ${new Array(n).fill("(?)").join(",")})`;
  const got = await db.values(sql, new Array(n).fill(1)).catch((e) => e);
  if (got instanceof SqliteError) {
    // A library built with the default limit refuses the SQL itself.
    assert.equal(got.code, "SQLITE_ERROR");
    assert.match(got.message, /too many SQL variables/);
  } else {
    assert.deepEqual(got, [[n, n]]);
  }
  // The form that names each index agrees.
  const named = Object.fromEntries(Array.from({ length: n }, (_, i) => [`?${i + 1}`, 1]));
  const numbered = `SELECT count(*) FROM (VALUES ${
    Array.from({ length: n }, (_, i) => `(?${i + 1})`).join(",")
  })`;
  const viaNames = await db.values(numbered, named).catch((e) => e);
  assert.equal(viaNames instanceof SqliteError, got instanceof SqliteError);
  // Too many values for the statement: refused before anything is bound.
  await assert.rejects(db.values("SELECT ?", [1, 2]), {
    code: ErrorCode.InvalidParam,
    message: /Too many parameter values: the statement has 1 parameter, 2 were given/,
  });
});
