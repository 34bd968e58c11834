/**
 * protocol/msgpack.ts against @msgpack/msgpack, an independent
 * implementation: the same bytes for every format boundary, values that
 * survive the trip in both directions, and the same verdict on malformed
 * input except where msgpack.ts is documented to be stricter (invalid UTF-8,
 * extension types, non-string map keys, deep nesting).
 */

import assert from "node:assert/strict";
import { Decoder, Encoder } from "npm:@msgpack/msgpack@^3.1.3";
import { decodeMsgpack, MAX_DEPTH, MsgpackError, MsgpackWriter } from "../protocol/msgpack.ts";
import { testSeed, withSeed } from "./_seed.ts";

/** The library configured as the protocol used it: bigints as 64-bit integers. */
const lib = {
  encoder: new Encoder({ useBigInt64: true }),
  decoder: new Decoder({ useBigInt64: true }),
  encode(v: unknown): Uint8Array {
    return this.encoder.encode(v);
  },
  decode(b: Uint8Array): unknown {
    return this.decoder.decode(b);
  },
};

function encode(v: unknown): Uint8Array {
  const w = new MsgpackWriter(16);
  w.write(v);
  return w.bytes.slice(0, w.pos);
}

/** Deterministic PRNG (mulberry32). */
function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (n: number) => Math.floor(next() * n),
    pick: <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)],
  };
}
type Rng = ReturnType<typeof rng>;

/** Fixed; NETSQLITE_SEED (or NETSQLITE_MSGPACK_SEED) runs other seeds (tests/_seed.ts). */
const SEED = testSeed(20261130, "NETSQLITE_MSGPACK_SEED");

const INTS = [
  0,
  1,
  127,
  128,
  255,
  256,
  65535,
  65536,
  2 ** 31 - 1,
  2 ** 31,
  2 ** 32 - 1,
  -1,
  -32,
  -33,
  -128,
  -129,
  -32768,
  -32769,
  -(2 ** 31),
];
const TEXTS = [
  "",
  "a",
  "SELECT 1",
  "é",
  "€",
  "\u{1F600}",
  "ab\u{10FFFF}cd",
  "mixed é€\u{1F600} text",
];

function randomString(r: Rng, long = false): string {
  const length = r.pick([0, 1, 5, 31, 32, 33, 63, 64, 65, 255, 256, 300, long ? 70000 : 2]);
  let s = "";
  while (s.length < length) s += r.pick(["a", "Z", "0", " ", "é", "€", "\u{1F600}", "\0", "~"]);
  return s;
}

function randomValue(r: Rng, depth = 0): unknown {
  switch (r.int(depth > 1 ? 8 : 10)) {
    case 0:
      return null;
    case 1:
      return r.next() < 0.5;
    case 2:
      return r.pick(INTS);
    case 3:
      return r.pick([
        0.5,
        -0,
        NaN,
        Infinity,
        -Infinity,
        1e308,
        5e-324,
        2 ** 40,
        2 ** 53 - 1,
        -(2 ** 53),
      ]);
    case 4:
      return r.pick([0n, 5n, -5n, 2n ** 63n - 1n, -(2n ** 63n), 2n ** 64n - 1n]);
    case 5:
    case 6:
      return randomString(r, depth === 0);
    case 7:
      return new Uint8Array(r.pick([0, 1, 255, 256, 70000])).map(() => r.int(256));
    case 8:
      return Array.from(
        { length: r.pick(depth === 0 ? [0, 1, 15, 16, 17, 300] : [0, 1, 2, 15, 16]) },
        () => randomValue(r, depth + 1),
      );
    default: {
      const o: Record<string, unknown> = {};
      for (let i = r.pick([0, 1, 15, 16, 20]); i > 0; i--) {
        o[Array.from(randomString(r)).slice(0, 8).join("") + i] = randomValue(r, depth + 1);
      }
      return o;
    }
  }
}

/** Asserts `actual` is `expected`; `-0` may have become 0 when `loseZeroSign` (the library's encoding). */
function sameValue(actual: unknown, expected: unknown, path = "value", loseZeroSign = false): void {
  const same = (a: unknown, e: unknown, p: string) => sameValue(a, e, p, loseZeroSign);
  if (typeof expected === "number" && Number.isNaN(expected)) {
    assert.ok(Number.isNaN(actual), `${path}: expected NaN, got ${String(actual)}`);
  } else if (typeof expected === "number") {
    if (loseZeroSign && Object.is(expected, -0)) expected = 0;
    assert.ok(Object.is(actual, expected), `${path}: expected ${expected}, got ${String(actual)}`);
  } else if (Array.isArray(expected)) {
    assert.ok(Array.isArray(actual), `${path}: expected an array`);
    assert.equal(actual.length, expected.length, `${path}: length`);
    expected.forEach((v, i) => same(actual[i], v, `${path}[${i}]`));
  } else if (expected instanceof Uint8Array) {
    assert.ok(actual instanceof Uint8Array, `${path}: expected a Uint8Array`);
    assert.deepEqual([...actual], [...expected], path);
  } else if (expected !== null && typeof expected === "object") {
    assert.equal(typeof actual, "object", path);
    const a = actual as Record<string, unknown>;
    const e = expected as Record<string, unknown>;
    assert.deepEqual(Object.keys(a).sort(), Object.keys(e).sort(), `${path}: keys`);
    for (const k of Object.keys(e)) same(a[k], e[k], `${path}.${k}`);
  } else {
    assert.equal(actual, expected, path);
  }
}

Deno.test("msgpack: every format boundary encodes to the library's bytes", () => {
  const values: unknown[] = [
    null,
    true,
    false,
    ...INTS,
    0.5,
    NaN,
    Infinity,
    1e308,
    2 ** 32, // beyond 32 bits: float64 (keeps its type: a number), as the library does
    2 ** 53 - 1,
    -(2 ** 31) - 1,
    0n,
    2n ** 64n - 1n,
    -1n,
    -(2n ** 63n),
    ...TEXTS,
    ...[31, 32, 63, 64, 255, 256, 65535, 65536].map((n) => "x".repeat(n)),
    ...[31, 32, 63, 64, 255, 256].map((n) => "é".repeat(n)),
    ...[0, 255, 256, 65535, 65536].map((n) => new Uint8Array(n).fill(7)),
    ...[0, 15, 16, 65535, 65536].map((n) => new Array(n).fill(1)),
    {},
    { a: 1, b: [2, "c"] },
    Object.fromEntries(Array.from({ length: 16 }, (_, i) => [`k${i}`, i])),
  ];
  for (const v of values) {
    const ours = encode(v);
    const theirs = lib.encode(v);
    assert.deepEqual(ours, theirs, `bytes of ${String(v).slice(0, 40)}`);
    sameValue(decodeMsgpack(theirs), v);
  }
  // -0 is the one difference: the library sends it as the integer 0.
  assert.deepEqual([...encode(-0)], [0xcb, 0x80, 0, 0, 0, 0, 0, 0, 0]);
});

Deno.test(`msgpack: random values survive ours→library and library→ours (seed ${SEED})`, () =>
  withSeed(SEED, () => {
    const r = rng(SEED);
    for (let i = 0; i < 300; i++) {
      const v = randomValue(r);
      sameValue(lib.decode(encode(v)), v, `ours→library #${i}`);
      sameValue(decodeMsgpack(lib.encode(v)), v, `library→ours #${i}`, true);
    }
  }));

Deno.test("msgpack: numbers and bigints keep their type", () => {
  for (const n of [5, 2 ** 40, -(2 ** 40), 2 ** 53 - 1, 1.5]) {
    assert.equal(typeof decodeMsgpack(encode(n)), "number");
  }
  for (const n of [5n, 0n, -1n, 2n ** 53n + 1n]) {
    const back = decodeMsgpack(encode(n));
    assert.equal(typeof back, "bigint");
    assert.equal(back, n);
  }
  assert.ok(Object.is(decodeMsgpack(encode(-0)), -0));
});

Deno.test("msgpack: decoded byte arrays are copies, not views of the payload", () => {
  const payload = encode([new Uint8Array([1, 2, 3]), "x"]);
  const [bin] = decodeMsgpack(payload) as [Uint8Array];
  assert.equal(bin.byteOffset, 0);
  assert.equal(bin.buffer.byteLength, 3);
  payload.fill(0);
  assert.deepEqual([...bin], [1, 2, 3]);
});

Deno.test("msgpack: a lone surrogate encodes as U+FFFD, as TextEncoder does", () => {
  // The last is long enough (> 65536 units) to be measured before encoding.
  for (
    const s of ["a\ud800b", "\udc00", "x".repeat(100) + "\ud800", "é\ud800😀\udc00".repeat(20000)]
  ) {
    assert.equal(decodeMsgpack(encode(s)), new TextDecoder().decode(new TextEncoder().encode(s)));
  }
});

Deno.test(`msgpack: long strings of mixed widths, written into a small buffer, are the bytes TextEncoder gives and decode back (seed ${SEED})`, () =>
  withSeed(SEED, () => {
    // The writer gives a long string one byte a unit first, then encodes what did not fit after
    // it: the split may fall anywhere, before a 2-, 3- or 4-byte character or a lone surrogate.
    const r = rng(SEED);
    const pieces = ["a", "é", "✓", "😀", "\ud800", "\udc00", "\ufffd", "\u0000"];
    for (let i = 0; i < 60; i++) {
      const n = 64 + r.int(i < 50 ? 3000 : 150_000);
      const ascii = r.int(n);
      let s = "x".repeat(ascii);
      while (s.length < n) s += r.pick(pieces);
      const bytes = encode(s);
      const utf8 = new TextEncoder().encode(s);
      assert.deepEqual(bytes.subarray(bytes.length - utf8.length), utf8, `#${i}: ${n} units`);
      assert.deepEqual(lib.decode(bytes), new TextDecoder().decode(utf8), `#${i}`);
      assert.equal(decodeMsgpack(bytes), new TextDecoder().decode(utf8), `#${i}`);
    }
  }));

Deno.test("msgpack: a string holding U+FFFD decodes as it is, long or short; invalid UTF-8 beside one is refused", () => {
  for (const s of ["\ufffd", "a\ufffdb", "\ufffd".repeat(5000), "x".repeat(70_000) + "\ufffd"]) {
    assert.equal(decodeMsgpack(encode(s)), s);
  }
  const bad = [0xd9, 70, 0xef, 0xbf, 0xbd, ...new Array(66).fill(0x61), 0xc3];
  assert.throws(() => decodeMsgpack(new Uint8Array(bad)), /Invalid UTF-8/);
});

Deno.test("msgpack: undefined encodes as nil, and map entries holding undefined are left out", () => {
  assert.equal(decodeMsgpack(encode(undefined)), null);
  assert.deepEqual(decodeMsgpack(encode({ a: 1, b: undefined })), { a: 1 });
  assert.deepEqual(decodeMsgpack(encode([undefined])), [null]);
});

Deno.test("msgpack: values of other kinds are refused with MsgpackError", () => {
  const bad: unknown[] = [
    Symbol("s"),
    () => 1,
    new Date(0),
    new Map(),
    new ArrayBuffer(2),
    new Uint16Array(2),
    2n ** 64n,
    -(2n ** 63n) - 1n,
    [[new Date(0)]],
  ];
  for (const v of bad) assert.throws(() => encode(v), MsgpackError, String(v));
  let deep: unknown = 1;
  for (let i = 0; i < MAX_DEPTH; i++) deep = [deep];
  assert.equal(decodeMsgpack(encode(deep)) !== undefined, true);
  assert.throws(() => encode([deep]), /Nesting deeper than 32/);
});

Deno.test("msgpack: malformed payloads are refused with MsgpackError", () => {
  const cases: [string, number[], RegExp][] = [
    ["empty", [], /^Empty: 0 bytes, where one MessagePack value is due$/],
    ["0xc1", [0xc1], /0xc1 is never used/],
    ["fixext", [0xd4, 0x01, 0x02], /Extension types/],
    ["timestamp ext", [0xd6, 0xff, 0, 0, 0, 0], /Extension types/],
    ["ext8", [0xc7, 0x01, 0x05, 0x00], /Extension types/],
    ["two values", [0x01, 0x02], /1 byte\(s\) left over/],
    ["array of 3 with 1", [0x93, 0x01], /Truncated/],
    ["array32 of 2^32-1", [0xdd, 0xff, 0xff, 0xff, 0xff, 0x02], /array of 4294967295 items in 1/],
    ["map32 of 2^32-1", [0xdf, 0xff, 0xff, 0xff, 0xff, 0x02], /map of 4294967295 entries/],
    ["str8 of 200 with 2", [0xd9, 200, 0x61, 0x62], /Truncated/],
    ["bin32 of 2^32-1", [0xc6, 0xff, 0xff, 0xff, 0xff], /Truncated/],
    ["float64 cut", [0xcb, 0, 0, 0], /Truncated/],
    ["invalid UTF-8, short", [0xa2, 0xff, 0xfe], /Invalid UTF-8/],
    ["invalid UTF-8, long", [0xd9, 70, ...new Array(69).fill(0x61), 0xc3], /Invalid UTF-8/],
    ["overlong UTF-8", [0xa2, 0xc0, 0x80], /Invalid UTF-8/],
    ["UTF-8 surrogate", [0xa3, 0xed, 0xa0, 0x80], /Invalid UTF-8/],
    ["integer map key", [0x81, 0x01, 0x02], /Map key is a number/],
    ["nested too deep", [...new Array(MAX_DEPTH + 1).fill(0x91), 0x01], /Nesting deeper/],
  ];
  for (const [name, bytes, message] of cases) {
    assert.throws(() => decodeMsgpack(new Uint8Array(bytes)), (err: unknown) => {
      assert.ok(err instanceof MsgpackError, `${name}: ${String(err)}`);
      assert.match((err as Error).message, message, name);
      return true;
    });
  }
});

Deno.test("msgpack: a __proto__ map key decodes to an own property, not the prototype", () => {
  const key = [0xa9, ...new TextEncoder().encode("__proto__")];
  for (const value of [[0x01], [0xc4, 0x01, 0x07], [0x81, 0xa1, 0x61, 0xc3]]) {
    const o = decodeMsgpack(new Uint8Array([0x82, ...key, ...value, 0xa1, 0x62, 0x02])) as object;
    assert.equal(Object.getPrototypeOf(o), Object.prototype);
    assert.deepEqual(Object.keys(o), ["__proto__", "b"]);
    assert.deepEqual(
      Object.getOwnPropertyDescriptor(o, "__proto__")!.value,
      decodeMsgpack(new Uint8Array(value)),
    );
  }
});

Deno.test("msgpack: every truncation of a valid payload is refused", () => {
  const payload = encode([
    1,
    "text é",
    new Uint8Array(300),
    { a: [2n ** 60n, -0, null] },
    "x".repeat(100),
  ]);
  for (let n = 0; n < payload.length; n++) {
    assert.throws(() => decodeMsgpack(payload.subarray(0, n)), MsgpackError, `cut at ${n}`);
  }
});

Deno.test(`msgpack: on random bytes ours accepts only what the library decodes the same (seed ${SEED})`, () =>
  withSeed(SEED, () => {
    const r = rng(SEED ^ 0x5bd1e995);
    let accepted = 0;
    for (let i = 0; i < 5000; i++) {
      // Mutate a valid payload, or make one from nothing.
      let bytes: Uint8Array;
      if (r.next() < 0.7) {
        bytes = encode(randomValue(r, 1)).slice();
        for (let k = 1 + r.int(3); k > 0 && bytes.length > 0; k--) {
          bytes[r.int(bytes.length)] = r.int(256);
        }
      } else {
        bytes = new Uint8Array(1 + r.int(24)).map(() => r.int(256));
      }
      let ours: unknown, oursError: unknown = null;
      try {
        ours = decodeMsgpack(bytes);
      } catch (err) {
        oursError = err;
      }
      if (oursError !== null) {
        assert.ok(oursError instanceof MsgpackError, String(oursError));
        continue;
      }
      accepted++;
      sameValue(ours, lib.decode(bytes), `payload ${[...bytes.subarray(0, 32)]}`);
    }
    assert.ok(accepted > 100, `only ${accepted} random payloads were valid`);
  }));
