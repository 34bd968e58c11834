/**
 * FrameReader: reassembly of length-prefixed frames from any split of the
 * byte stream, and refusal of oversized frames before allocation.
 */

import assert from "node:assert/strict";
import {
  DEFAULT_MAX_FRAME_SIZE,
  FRAME_HEADER_SIZE,
  FrameReader,
} from "../transport/frame_reader.ts";
import { ErrorCode, ProtocolError } from "../protocol/errors.ts";
import { concat, prng } from "./_bytes.ts";
import { testSeed, withSeed } from "./_seed.ts";

/** Fixed; NETSQLITE_SEED runs other seeds (tests/_seed.ts). */
const SEED = testSeed(1);

/** Encodes one frame: 4-byte big-endian length, then the payload. */
function frame(payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(FRAME_HEADER_SIZE + payload.length);
  new DataView(out.buffer).setUint32(0, payload.length);
  out.set(payload, FRAME_HEADER_SIZE);
  return out;
}

/** Payload of `length` bytes whose content depends on `tag`. */
function payload(length: number, tag: number): Uint8Array {
  const p = new Uint8Array(length);
  for (let i = 0; i < length; i++) p[i] = (i * 31 + tag * 7 + 1) & 0xff;
  return p;
}

/** Drains every complete frame, copying each one. */
function drain(reader: FrameReader): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let f; (f = reader.next()) !== undefined;) out.push(f.slice());
  return out;
}

/** A header announcing `length` bytes. */
function header(length: number): Uint8Array {
  const h = new Uint8Array(4);
  new DataView(h.buffer).setUint32(0, length);
  return h;
}

Deno.test("FrameReader.push() reassembles a frame split at every byte", () => {
  const reader = new FrameReader(1024);
  const body = payload(300, 1);
  const bytes = frame(body);
  const got: Uint8Array[] = [];
  for (let i = 0; i < bytes.length; i++) {
    reader.push(bytes.slice(i, i + 1));
    const f = reader.next();
    if (i < bytes.length - 1) {
      assert.equal(f, undefined, `frame must not be complete after ${i + 1} bytes`);
      assert.equal(reader.buffered, i + 1);
    } else {
      assert.ok(f !== undefined);
      got.push(f.slice());
    }
  }
  assert.deepEqual(got, [body]);
  assert.equal(reader.buffered, 0);
  assert.equal(reader.next(), undefined);
});

Deno.test("FrameReader.push() reassembles several frames fed one byte at a time", () => {
  const reader = new FrameReader(1024);
  const bodies = [payload(5, 1), payload(0, 2), payload(70, 3), payload(1, 4), payload(200, 5)];
  const bytes = concat(bodies.map(frame));
  const got: Uint8Array[] = [];
  for (let i = 0; i < bytes.length; i++) {
    reader.push(bytes.slice(i, i + 1));
    got.push(...drain(reader));
  }
  assert.deepEqual(got, bodies);
  assert.equal(reader.buffered, 0);
});

Deno.test("FrameReader.push() reassembles frames from seeded random splits", () => {
  for (let seed = SEED; seed < SEED + 40; seed++) {
    const rand = prng(seed);
    const bodies: Uint8Array[] = [];
    for (let i = 0; i < 30; i++) {
      const r = rand();
      const len = r < 0.1 ? 0 : r < 0.6 ? Math.floor(rand() * 20) : Math.floor(rand() * 3000);
      bodies.push(payload(len, seed * 100 + i));
    }
    const bytes = concat(bodies.map(frame));
    const reader = new FrameReader(4096);
    const got: Uint8Array[] = [];
    for (let at = 0; at < bytes.length;) {
      const n = Math.min(bytes.length - at, 1 + Math.floor(rand() * 700));
      reader.push(bytes.slice(at, at + n));
      at += n;
      got.push(...drain(reader));
    }
    assert.equal(got.length, bodies.length, `seed ${seed}: frame count`);
    assert.deepEqual(got, bodies, `seed ${seed}: frame contents`);
    assert.equal(reader.buffered, 0, `seed ${seed}: nothing left over (NETSQLITE_SEED=${SEED})`);
  }
});

Deno.test("FrameReader.next() returns every frame of a chunk holding several frames, in order", () => {
  const reader = new FrameReader(1024);
  const bodies = [payload(3, 1), payload(10, 2), payload(1, 3)];
  // Plus the first two bytes of a fourth frame's header.
  const partial = frame(payload(4, 4));
  reader.push(concat([...bodies.map(frame), partial.slice(0, 2)]));
  assert.deepEqual(reader.next()?.slice(), bodies[0]);
  assert.deepEqual(reader.next()?.slice(), bodies[1]);
  assert.deepEqual(reader.next()?.slice(), bodies[2]);
  assert.equal(reader.next(), undefined);
  assert.equal(reader.buffered, 2);
  reader.push(partial.slice(2));
  assert.deepEqual(reader.next()?.slice(), payload(4, 4));
  assert.equal(reader.next(), undefined);
  assert.equal(reader.buffered, 0);
});

Deno.test("FrameReader.next() returns an empty payload for a zero-length frame", () => {
  const reader = new FrameReader(1024);
  reader.push(new Uint8Array([0, 0, 0, 0]));
  const f = reader.next();
  assert.ok(f instanceof Uint8Array);
  assert.equal(f.length, 0);
  assert.equal(reader.next(), undefined);
  assert.equal(reader.buffered, 0);

  // Zero-length frames between others, header split across pushes.
  reader.push(new Uint8Array([0, 0]));
  assert.equal(reader.next(), undefined);
  reader.push(new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 42]));
  assert.deepEqual(drain(reader), [new Uint8Array(0), new Uint8Array(0), new Uint8Array([42])]);
});

Deno.test("FrameReader.next() waits for the whole header and payload", () => {
  const reader = new FrameReader(1024);
  reader.push(new Uint8Array([0, 0, 0]));
  assert.equal(reader.next(), undefined);
  reader.push(new Uint8Array([3, 1, 2]));
  assert.equal(reader.next(), undefined);
  assert.equal(reader.buffered, 6);
  reader.push(new Uint8Array(0)); // Empty chunks change nothing.
  assert.equal(reader.buffered, 6);
  reader.push(new Uint8Array([3]));
  assert.deepEqual(reader.next()?.slice(), new Uint8Array([1, 2, 3]));
});

Deno.test("FrameReader.next() throws FRAME_TOO_LARGE for an announced 2 GiB frame from the header alone", () => {
  const reader = new FrameReader(1024);
  reader.push(header(2 ** 31));
  assert.throws(
    () => reader.next(),
    (err: unknown) => {
      assert.ok(err instanceof ProtocolError);
      assert.equal(err.code, ErrorCode.FrameTooLarge);
      assert.equal(err.code, "FRAME_TOO_LARGE");
      assert.match(err.message, /length 2147483648 exceeds maxFrameSize 1024/);
      return true;
    },
  );
  // Nothing was allocated for the payload: only the 4 header bytes are held.
  assert.equal(reader.buffered, 4);
});

Deno.test("FrameReader.push() does not allocate an oversized frame's announced length", () => {
  const reader = new FrameReader(1024);
  // Header split in two, then payload bytes: growth must stay near what was
  // received, never the 4 GiB announced (which would throw RangeError or OOM).
  reader.push(new Uint8Array([0xff, 0xff]));
  reader.push(new Uint8Array([0xff, 0xff]));
  for (let i = 0; i < 64; i++) reader.push(new Uint8Array(1000));
  assert.equal(reader.buffered, 4 + 64_000);
  assert.throws(
    () => reader.next(),
    (err: unknown) =>
      err instanceof ProtocolError && err.code === "FRAME_TOO_LARGE" &&
      /length 4294967295 exceeds/.test(err.message),
  );
});

Deno.test("FrameReader.next() accepts a frame of exactly maxFrameSize and refuses one byte more", () => {
  const ok = new FrameReader(100);
  ok.push(frame(payload(100, 9)));
  assert.deepEqual(ok.next()?.slice(), payload(100, 9));

  const tooBig = new FrameReader(100);
  tooBig.push(header(101));
  assert.throws(
    () => tooBig.next(),
    (e: unknown) => (e as ProtocolError).code === "FRAME_TOO_LARGE",
  );
});

Deno.test("FrameReader() defaults maxFrameSize to 64 MiB", () => {
  assert.equal(DEFAULT_MAX_FRAME_SIZE, 64 * 1024 * 1024);
  const reader = new FrameReader();
  reader.push(header(DEFAULT_MAX_FRAME_SIZE));
  assert.equal(reader.next(), undefined, "64 MiB is allowed, just not complete yet");
  const over = new FrameReader();
  over.push(header(DEFAULT_MAX_FRAME_SIZE + 1));
  assert.throws(() => over.next(), (e: unknown) => (e as ProtocolError).code === "FRAME_TOO_LARGE");
});

Deno.test("FrameReader.next() keeps returned frames intact after more pushes", () =>
  withSeed(SEED + 6, () => {
    const reader = new FrameReader(1 << 20);
    const rand = prng(SEED + 6);
    const held: { frame: Uint8Array; expected: Uint8Array }[] = [];
    const bodies: Uint8Array[] = [];
    for (let i = 0; i < 200; i++) bodies.push(payload(Math.floor(rand() * 500), i));
    const bytes = concat(bodies.map(frame));
    let k = 0;
    for (let at = 0; at < bytes.length;) {
      // Mix of tiny and large chunks, so the reader both appends in place and regrows.
      const n = Math.min(
        bytes.length - at,
        rand() < 0.5 ? 1 + Math.floor(rand() * 8) : 1 + Math.floor(rand() * 2000),
      );
      reader.push(bytes.slice(at, at + n));
      at += n;
      for (let f; (f = reader.next()) !== undefined;) {
        held.push({ frame: f, expected: bodies[k++] }); // keep the view, not a copy
      }
    }
    assert.equal(held.length, bodies.length);
    for (let i = 0; i < held.length; i++) {
      assert.deepEqual(
        held[i].frame.slice(),
        held[i].expected,
        `frame ${i} changed after later pushes`,
      );
    }
  }));

Deno.test("FrameReader.next() leaves a partially consumed buffer's frames intact when growing", () => {
  const reader = new FrameReader(1 << 20);
  const a = payload(10, 1);
  const b = payload(5000, 2);
  const bFrame = frame(b);
  // One chunk: frame A complete, then the first bytes of B.
  reader.push(concat([frame(a), bFrame.slice(0, 7)]));
  const gotA = reader.next();
  assert.ok(gotA !== undefined);
  assert.equal(reader.next(), undefined);
  // Growing the buffer and appending B's remaining bytes in pieces must not touch A.
  for (let at = 7; at < bFrame.length; at += 333) reader.push(bFrame.slice(at, at + 333));
  const gotB = reader.next();
  assert.deepEqual(gotA.slice(), a);
  assert.deepEqual(gotB?.slice(), b);
  // A third frame arriving after B was handed out leaves B alone too.
  reader.push(frame(payload(3000, 3)));
  assert.deepEqual(reader.next()?.slice(), payload(3000, 3));
  assert.deepEqual(gotB?.slice(), b);
  assert.deepEqual(gotA.slice(), a);
});

Deno.test("FrameReader.detach() copies an incomplete frame out of a chunk the caller then reuses", () => {
  const reader = new FrameReader();
  const first = frame(new Uint8Array([1, 2, 3]));
  const second = frame(new Uint8Array([4, 5, 6, 7]));
  const stream = concat([first, second]);
  // One reused read buffer: the first frame and half of the second arrive.
  const buf = new Uint8Array(64);
  const cut = first.length + 5;
  buf.set(stream.subarray(0, cut));
  reader.push(buf.subarray(0, cut));
  assert.deepEqual(reader.next(), new Uint8Array([1, 2, 3]));
  assert.equal(reader.next(), undefined);
  reader.detach();
  buf.fill(0xee); // the next read overwrites the buffer
  buf.set(stream.subarray(cut));
  reader.push(buf.subarray(0, stream.length - cut));
  assert.deepEqual(reader.next(), new Uint8Array([4, 5, 6, 7]));
  assert.equal(reader.buffered, 0);
  reader.detach(); // nothing pending: nothing to copy
  assert.equal(reader.next(), undefined);
});
