/**
 * Key encoding of key-value collections: a key is a tuple of parts
 * (strings, numbers, bigints), encoded into bytes whose byte order
 * (SQLite compares BLOBs with `memcmp`) is the tuple order. A prefix of a
 * tuple encodes to a byte prefix of its encoding, so a prefix scan is one
 * range of an index.
 *
 * Encoding of each part (after FoundationDB's tuple layer):
 * - string: `0x02`, its UTF-8 bytes with `0x00` written as `0x00 0xFF`, then `0x00`;
 * - number: `0x21`, then 8 bytes of its IEEE 754 float64, big-endian, with the
 *   sign bit flipped for positive numbers and every bit flipped for negative
 *   ones (so byte order is numeric order; `-0` is a key of its own, just
 *   below `0`);
 * - bigint: `0x23`, then 8 bytes of its value plus 2^63, big-endian (int64 range).
 *
 * Parts of different types order by type: strings, then numbers, then bigints.
 *
 * @module
 */

import { SqliteError } from "../protocol/errors.ts";
import { describeKind } from "../protocol/values.ts";
import { corrupt } from "./kv_value.ts";

/** One part of a key. */
export type KvKeyPart = string | number | bigint;

/** A key: a tuple of parts (a single string is shorthand for a one-part tuple). */
export type KvKey = readonly KvKeyPart[];

const STRING = 0x02;
const NUMBER = 0x21;
const BIGINT = 0x23;
const INT64_MIN = -(1n << 63n);
const INT64_MAX = (1n << 63n) - 1n;

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * Normalises a key argument (`"a"` → `["a"]`) and checks its parts: a copy,
 * each part read once, so that the caller's array changed later (a key
 * array reused in a loop of `atomic().set()`) or a getter does not change
 * the key checked.
 */
export function toKey(key: KvKey | string, what = "key"): KvKey {
  if (typeof key === "string") key = [key];
  if (!Array.isArray(key)) throw invalidKey(`expected a ${what} as a string or an array`);
  const parts = Array.from(key as KvKey);
  for (const part of parts) checkPart(part, what);
  return parts;
}

function checkPart(part: unknown, what: string): void {
  if (typeof part === "string") {
    if (!part.isWellFormed()) throw invalidKey(`${what} holds a string with a lone surrogate`);
  } else if (typeof part === "number") {
    if (!Number.isFinite(part)) throw invalidKey(`${what} holds the number ${String(part)}`);
  } else if (typeof part === "bigint") {
    if (part < INT64_MIN || part > INT64_MAX) {
      throw invalidKey(`${what} holds the bigint ${part}, outside int64`);
    }
  } else {
    const got = part === undefined ? "undefined" : describeKind(part);
    throw invalidKey(`${what} parts must be strings, numbers or bigints, got ${got}`);
  }
}

function invalidKey(detail: string): SqliteError {
  return new SqliteError("INVALID_PARAM", `Invalid key-value key: ${detail}`);
}

/** Encodes a checked key (see the module doc). */
export function encodeKey(key: KvKey): Uint8Array {
  const out: number[] = [];
  for (const part of key) {
    if (typeof part === "string") {
      out.push(STRING);
      for (const b of utf8.encode(part)) {
        out.push(b);
        if (b === 0) out.push(0xff);
      }
      out.push(0);
    } else if (typeof part === "number") {
      const view = new DataView(new ArrayBuffer(8));
      view.setFloat64(0, part);
      const bytes = new Uint8Array(view.buffer);
      if (bytes[0] & 0x80) { for (let i = 0; i < 8; i++) bytes[i] ^= 0xff; }
      else bytes[0] ^= 0x80;
      out.push(NUMBER, ...bytes);
    } else {
      const view = new DataView(new ArrayBuffer(8));
      view.setBigUint64(0, BigInt(part) - INT64_MIN);
      out.push(BIGINT, ...new Uint8Array(view.buffer));
    }
  }
  return new Uint8Array(out);
}

/**
 * Decodes a key written by {@link encodeKey}.
 *
 * @param bytes The encoded key.
 * @param collection Named in the error, when known.
 * @throws {SqliteError} `KV_CORRUPT` for bytes that are not such a key
 *   (written by SQL directly).
 */
export function decodeKey(bytes: Uint8Array, collection?: string): KvKeyPart[] {
  const badKey = (detail: string): SqliteError => malformed(bytes, collection, detail);
  const parts: KvKeyPart[] = [];
  let i = 0;
  while (i < bytes.length) {
    const tag = bytes[i++];
    if (tag === STRING) {
      const buf: number[] = [];
      for (;;) {
        if (i >= bytes.length) throw badKey("it ends inside a string");
        const b = bytes[i++];
        if (b !== 0) {
          buf.push(b);
        } else if (bytes[i] === 0xff) {
          buf.push(0);
          i++;
        } else break;
      }
      try {
        parts.push(utf8Decoder.decode(new Uint8Array(buf)));
      } catch {
        throw badKey("it holds a string that is not UTF-8");
      }
    } else if (tag === NUMBER || tag === BIGINT) {
      if (i + 8 > bytes.length) throw badKey("it ends inside a number");
      const b = bytes.slice(i, i + 8);
      i += 8;
      const view = new DataView(b.buffer);
      if (tag === BIGINT) {
        parts.push(view.getBigUint64(0) + INT64_MIN);
      } else {
        if (b[0] & 0x80) b[0] ^= 0x80;
        else for (let j = 0; j < 8; j++) b[j] ^= 0xff;
        parts.push(view.getFloat64(0));
      }
    } else {
      throw badKey(`it holds an unknown part type 0x${tag.toString(16)}`);
    }
  }
  return parts;
}

/**
 * Decodes a stored `key` column of collection `collection`.
 *
 * @throws {SqliteError} `KV_CORRUPT` when it is not a key {@link encodeKey} wrote.
 */
export function readKey(stored: unknown, collection: string): KvKeyPart[] {
  if (!(stored instanceof Uint8Array)) {
    throw corrupt(
      `in collection ${JSON.stringify(collection)}`,
      `a stored key is ${typeof stored === "string" ? "TEXT" : typeof stored}, not a BLOB`,
    );
  }
  return decodeKey(stored, collection);
}

/** Writes a key for messages: `["user", 42, 7n, -0]`. */
export function keyLabel(key: KvKey | string): string {
  const parts = typeof key === "string" ? [key] : key;
  return `[${
    parts.map((p) =>
      typeof p === "string"
        ? JSON.stringify(p)
        : typeof p === "bigint"
        ? `${p}n`
        : Object.is(p, -0)
        ? "-0"
        : String(p)
    ).join(", ")
  }]`;
}

function malformed(bytes: Uint8Array, collection: string | undefined, detail: string): SqliteError {
  let hex = "";
  for (const b of bytes.subarray(0, 64)) hex += b.toString(16).padStart(2, "0");
  const where = collection === undefined ? "" : `in collection ${JSON.stringify(collection)} `;
  return corrupt(
    `${where}with key x'${hex}'${bytes.length > 64 ? "..." : ""}`,
    `the key is malformed: ${detail}`,
  );
}

/** The smallest byte string greater than every key that starts with `prefix`. */
export function prefixEnd(prefix: Uint8Array): Uint8Array {
  const end = new Uint8Array(prefix.length + 1);
  end.set(prefix);
  end[prefix.length] = 0xff; // no part starts with 0xff
  return end;
}
