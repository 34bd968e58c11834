/**
 * Large values on their way out, copied as few times as they can be: a
 * MessagePack writer grown for one large value keeps room after it
 * (`ensure`), `MessageEncoder.take()` hands out a buffer grown for large
 * messages rather than a copy of it, and the FFI binding copies a large
 * TEXT or BLOB from SQLite's memory straight into the rows being encoded
 * (`binaryRoom`/`stringRoom`). The bytes stay those of encoding the values;
 * the round trips through a server run with `NETSQLITE_ENGINE=node` too.
 */

import assert from "node:assert/strict";
import { MessageEncoder } from "../protocol/codec.ts";
import { decodeMsgpack, GROWTH_HEADROOM, MsgpackWriter } from "../protocol/msgpack.ts";
import { RowsEncoder } from "../protocol/rows_encoder.ts";
import { SqliteError } from "../protocol/errors.ts";
import type { Sqlite, SqlValue } from "../engine/binding/binding.ts";
import { loadSqlite } from "../engine/binding/load.ts";
import { startServer } from "./_helpers.ts";
import { concat } from "./_bytes.ts";

function encode(v: unknown): Uint8Array {
  const w = new MsgpackWriter(16);
  w.write(v);
  return w.bytes.slice(0, w.pos);
}

/** One frame as `MessageEncoder` writes it: 4-byte big-endian length, then the value. */
function frame(v: unknown): Uint8Array {
  const payload = encode(v);
  const out = new Uint8Array(4 + payload.length);
  new DataView(out.buffer).setUint32(0, payload.length);
  out.set(payload, 4);
  return out;
}

/** `n` bytes that are not all alike, so that a misplaced copy shows. */
function bytes(n: number, seed = 1): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);
}

Deno.test("MsgpackWriter.binaryRoom() and stringRoom() write the bytes binary() and string() write, at each header size", () => {
  for (const n of [0, 1, 31, 32, 255, 256, 65_535, 65_536, 70_000]) {
    const b = bytes(n);
    const w = new MsgpackWriter(8);
    w.binaryRoom(n).set(b);
    assert.deepEqual(w.bytes.slice(0, w.pos), encode(b), `bin of ${n} bytes`);
    const s = "é".repeat(n >> 1) + "x".repeat(n & 1);
    const utf8 = new TextEncoder().encode(s);
    const t = new MsgpackWriter(8);
    t.stringRoom(utf8.length).set(utf8);
    assert.deepEqual(t.bytes.slice(0, t.pos), encode(s), `str of ${n} bytes`);
    assert.equal(decodeMsgpack(t.bytes.slice(0, t.pos)), s);
  }
});

Deno.test("MsgpackWriter grown for one large value keeps room after it: the writes after it do not copy it again", () => {
  const w = new MsgpackWriter(4096);
  w.write([1, "a"]);
  const big = bytes(1_000_000);
  w.binary(big);
  const grown = w.bytes;
  assert.ok(grown.length >= w.pos + GROWTH_HEADROOM, `${grown.length} bytes for ${w.pos}`);
  for (let i = 0; i < 100; i++) w.write({ id: i, rows: [[i, "x".repeat(100)]] });
  assert.equal(w.bytes, grown, "the buffer was replaced (its bytes copied) after the large value");
  // Doubling still serves values that come in many small pieces.
  const v = new MsgpackWriter(16);
  for (let i = 0; i < 1000; i++) v.write(i);
  assert.ok(v.bytes.length <= 2 * v.pos, `${v.bytes.length} bytes for ${v.pos}`);
  const head = encode([1, "a"]);
  const value = encode(big);
  assert.deepEqual(w.bytes.slice(0, head.length + value.length), concat([head, value]));
});

Deno.test("MessageEncoder.take() hands out a buffer grown for large messages, which later messages do not touch", () => {
  const enc = new MessageEncoder(64 * 1024 * 1024);
  // Frames in one take, one of them large: just past the size whose buffer is dropped (256 KiB).
  const small = (i: number) => [i, 0, [["x"], [[i, "small"]]]];
  const large = [9, 0, [["b"], [[bytes(256 * 1024 - 20, 7)]]]];
  for (const size of [256 * 1024 - 40, 256 * 1024, 256 * 1024 + 1, 3_000_000]) {
    const msg = [9, 0, [["b"], [[bytes(size, size)]]]];
    enc.append(small(1));
    enc.append(msg);
    enc.append(small(2));
    const expected = concat([frame(small(1)), frame(msg), frame(small(2))]);
    const out = enc.take();
    assert.deepEqual(out, expected, `a take holding a message of ${size} bytes`);
    if (size > 256 * 1024) {
      assert.ok(out.buffer.byteLength > out.length, "the grown buffer is handed out, not a copy");
    }
    assert.equal(enc.size, 0);
    // What follows goes into another buffer: `out` stays as it was taken.
    enc.append(large);
    enc.append(small(3));
    assert.deepEqual(enc.take(), concat([frame(large), frame(small(3))]));
    assert.deepEqual(out, expected, "a taken buffer was written again");
  }
  // A large message refused (past its limit) leaves a grown buffer little of
  // which is used: that little is copied, not the whole buffer handed out.
  enc.append(small(4));
  assert.equal(enc.append([5, 0, bytes(1_000_000)], 500_000), -1);
  const out = enc.take();
  assert.deepEqual(out, frame(small(4)));
  assert.equal(out.buffer.byteLength, out.length);
});

/** Counts the values written through {@link RowsEncoder.blobRoom} and `textRoom`. */
class CountingEncoder extends RowsEncoder {
  rooms = 0;

  override blobRoom(length: number): Uint8Array {
    this.rooms++;
    return super.blobRoom(length);
  }

  override textRoom(length: number): Uint8Array {
    this.rooms++;
    return super.textRoom(length);
  }
}

const ENGINES: Sqlite[] = [loadSqlite({ engine: "ffi" }), loadSqlite({ engine: "node" })];

for (const sqlite of ENGINES) {
  Deno.test(`Stmt.allInto() writes large TEXT and BLOB values as all() reads them [${sqlite.engine}]`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "netsqlite-big-" });
    const db = sqlite.open(`${dir}/test.db`, { readOnly: false, busyTimeout: 1000 });
    try {
      db.exec("CREATE TABLE v(x)");
      const insert = db.prepare("INSERT INTO v VALUES (?)")!;
      const values: SqlValue[] = [
        // Either side of the size copied straight from SQLite (1 KiB) and
        // of each header size.
        "x".repeat(1023),
        "x".repeat(1024),
        "é".repeat(600),
        "a\0b" + "c".repeat(2000),
        "\ufeff" + "y".repeat(2000),
        "\ufeff" + "z".repeat(2000) + "\0",
        "\ufffd".repeat(500),
        "😀".repeat(20_000),
        "w".repeat(70_000),
        bytes(1023),
        bytes(1024),
        bytes(65_536),
        bytes(300_000),
      ];
      for (const v of values) {
        insert.bind([v]);
        insert.run();
      }
      insert.finalize();
      const stmt = db.prepare("SELECT rowid, x, length(x) FROM v ORDER BY rowid")!;
      const rows = stmt.all();
      const out = new CountingEncoder();
      out.begin();
      assert.equal(stmt.allInto(out, 1e9), values.length);
      const encoded = out.finish();
      assert.deepEqual(encoded.bytes, encode(rows));
      // FFI copies the values of 1 KiB and more from SQLite's memory into the rows.
      assert.equal(out.rooms, sqlite.engine === "ffi" ? values.length - 2 : 0);
      // (node:sqlite cuts text at a NUL when reading it: README, SQLite engines.)
      const read = (decodeMsgpack(encoded.bytes) as SqlValue[][]).map((r) => r[1]);
      if (sqlite.engine === "node") {
        assert.equal(read[3], "a");
        assert.equal(read[5], "\ufeff" + "z".repeat(2000));
        read[3] = values[3];
        read[5] = values[5];
      }
      assert.deepEqual(read, values);
      stmt.finalize();

      // Large TEXT that is not UTF-8: FFI refuses it, as it refuses a short one,
      // and the rows written before it are dropped for the next result.
      db.exec(
        `CREATE TABLE bad(x); INSERT INTO bad VALUES ('ok'), ` +
          `(CAST(x'${"61".repeat(2000)}ff62' AS TEXT)), ` +
          `(CAST(x'${"61".repeat(2000)}eda080' AS TEXT))`,
      );
      for (const where of ["rowid <= 2", "rowid IN (1, 3)"]) {
        const bad = db.prepare(`SELECT x FROM bad WHERE ${where}`)!;
        out.begin();
        if (sqlite.engine === "ffi") {
          assert.throws(
            () => bad.allInto(out, 1e9),
            (err: unknown) =>
              err instanceof SqliteError && err.code === "INVALID_UTF8" &&
              /column "x"/.test(err.message),
          );
          assert.throws(
            () => bad.all(),
            (err: unknown) => (err as SqliteError).code === "INVALID_UTF8",
          );
        } else {
          bad.allInto(out, 1e9);
        }
        bad.finalize();
        const again = db.prepare("SELECT x FROM v WHERE rowid = 2")!;
        out.begin();
        again.allInto(out, 1e9);
        assert.deepEqual(out.finish().bytes, encode([[values[1]]]));
        again.finalize();
      }
    } finally {
      db.close();
      await Deno.remove(dir, { recursive: true });
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
  });
}

Deno.test("large values round trip through a server, alone and among small replies sent together", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  const text = "é".repeat(200_000) + "x";
  const cases: [string, SqlValue][] = [
    ["select zeroblob(300000)", new Uint8Array(300_000)],
    ["select printf('%.*c', 300000, 'x')", "x".repeat(300_000)],
    ["select cast(printf('%.*c', 200000, 'é') || 'x' as blob)", new TextEncoder().encode(text)],
    ["select printf('%.*c', 200000, 'é') || 'x'", text],
    ["select zeroblob(3000000)", new Uint8Array(3_000_000)],
  ];
  for (const [sql, value] of cases) {
    assert.deepEqual(await db.values(sql), [[value]], sql);
  }
  // Pipelined: small replies before and after each large one, sent in the same writes.
  const all = await Promise.all(
    cases.flatMap((
      [sql],
      i,
    ) => [db.values(`select ${i}`), db.values(sql), db.values("select 'z'")]),
  );
  assert.deepEqual(
    all,
    cases.flatMap(([, value], i) => [[[i]], [[value]], [["z"]]]),
  );
});
