/**
 * protocol/rows_encoder.ts: rows encoded value by value, as `Stmt.allInto`
 * writes them, give exactly the bytes of encoding the row arrays, for every
 * value kind and every array header size; `Encoded` is copied verbatim.
 */

import assert from "node:assert/strict";
import { decodeMsgpack, Encoded, MsgpackWriter } from "../protocol/msgpack.ts";
import { RowsEncoder } from "../protocol/rows_encoder.ts";

type Value = null | number | bigint | string | Uint8Array;

function encode(v: unknown): Uint8Array {
  const w = new MsgpackWriter(16);
  w.write(v);
  return w.bytes.slice(0, w.pos);
}

/** Feeds `rows` to a RowsEncoder the way a binding does. */
function viaSink(enc: RowsEncoder, rows: Value[][]): Encoded {
  enc.begin();
  for (const row of rows) {
    enc.row(row.length);
    for (const v of row) {
      if (v === null) enc.nil();
      else if (typeof v === "string") enc.text(v);
      else if (typeof v === "bigint") enc.integer(v);
      else if (typeof v === "number") {
        if (Number.isInteger(v) && !Object.is(v, -0)) enc.integer(v);
        else enc.real(v);
      } else enc.blob(v);
    }
  }
  return enc.finish();
}

const VALUES: Value[] = [
  null,
  0,
  127,
  128,
  -32,
  -33,
  65535,
  65536,
  2 ** 31 - 1,
  -(2 ** 31),
  2 ** 40,
  -(2 ** 53 - 1),
  -0,
  1.5,
  Infinity,
  2n ** 63n - 1n,
  -(2n ** 63n),
  "",
  "héllo 😀",
  "x".repeat(31),
  "y".repeat(32),
  "z".repeat(300),
  "é".repeat(70_000),
  new Uint8Array(0),
  new Uint8Array([0, 255]),
  new Uint8Array(70_000).fill(7),
];

Deno.test("RowsEncoder gives the bytes of encoding the row arrays, for every value kind", () => {
  const enc = new RowsEncoder();
  const rows = VALUES.map((v, i) => [i, v, VALUES[(i * 7) % VALUES.length]]);
  const encoded = viaSink(enc, rows);
  assert.deepEqual(encoded.bytes, encode(rows));
  assert.equal(encoded.count, rows.length);
  assert.deepEqual(decodeMsgpack(encoded.bytes), rows); // -0, bigints, blobs kept
});

Deno.test("RowsEncoder writes 1-, 3- and 5-byte array headers (0, 15, 16, 65,535, 65,536 rows)", () => {
  const enc = new RowsEncoder();
  for (const n of [0, 1, 15, 16, 65_535, 65_536]) {
    const rows = Array.from({ length: n }, (_, i) => [i]);
    const encoded = viaSink(enc, rows);
    assert.deepEqual(encoded.bytes, encode(rows), `${n} rows`);
    assert.equal(encoded.count, n);
  }
});

Deno.test("RowsEncoder.size counts the rows' bytes and begin() starts afresh", () => {
  const enc = new RowsEncoder();
  enc.begin();
  assert.equal(enc.size, 0);
  enc.row(2);
  enc.text("abc");
  enc.nil();
  assert.equal(enc.size, 1 + 4 + 1);
  enc.begin(); // an abandoned result (an error mid-way) leaves nothing behind
  enc.row(1);
  enc.integer(5);
  assert.deepEqual(enc.finish().bytes, encode([[5]]));
});

Deno.test("MsgpackWriter copies an Encoded value verbatim inside a message", () => {
  const inner = encode([[1, "a"], [2, "b"]]);
  const w = new MsgpackWriter(4);
  w.write([7, 0, [["id", "name"], new Encoded(inner, 2)]]);
  const bytes = w.bytes.slice(0, w.pos);
  assert.deepEqual(bytes, encode([7, 0, [["id", "name"], [[1, "a"], [2, "b"]]]]));
});

Deno.test("RowsEncoder results stay intact while later ones are written (several slabs, a large one, an abandoned one)", () => {
  const enc = new RowsEncoder();
  const kept: [Encoded, Value[][]][] = [];
  for (let i = 0; i < 3000; i++) {
    if (i === 1500) {
      enc.begin(); // abandoned half-way (an error), then a fresh result
      enc.row(1);
      enc.text("lost");
    }
    const n = i === 700 ? 5000 : i % 7;
    const rows: Value[][] = Array.from({ length: n }, (_, r) => [i, `row ${r} of ${i}`, r * 0.5]);
    kept.push([viaSink(enc, rows), rows]);
  }
  for (const [encoded, rows] of kept) {
    assert.deepEqual(encoded.bytes, encode(rows));
    assert.equal(encoded.count, rows.length);
  }
});
