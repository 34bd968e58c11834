/**
 * MessagePack for the values the protocol carries: nil, booleans, numbers,
 * bigints, strings, byte arrays, arrays and string-keyed maps. Nothing else
 * (no extension types, no timestamps).
 *
 * Written for this protocol instead of a general library because every
 * query result passes through it: a 100-row result of four columns encodes
 * in about a third and decodes in about half the time `@msgpack/msgpack`
 * takes (measured in `bench/codec_bench.ts`). Tests check it against that
 * library (`tests/msgpack_test.ts`).
 *
 * Rules, the same on both sides:
 * - Numbers and bigints keep their type. A number that is an integer within
 *   32 bits travels in the smallest integer format; any other number
 *   (including larger safe integers, exact in float64, and `-0`, so that its
 *   sign survives) as float64. A bigint travels as int64 (negative) or
 *   uint64, and those formats decode as bigints; a bigint outside both
 *   ranges cannot be encoded.
 * - Strings are UTF-8; invalid UTF-8 does not decode.
 * - A decoded byte array is a copy, never a view of the frame.
 * - A {@link MsgpackDecoder} may be given a bound on the values one payload
 *   holds (a server's requests): it counts them as it reads each container's
 *   length, and refuses a container that would pass the bound before
 *   allocating its items.
 *
 * @module
 */

/** A payload that is not exactly one valid MessagePack value of the kinds above. */
export class MsgpackError extends Error {
  override name = "MsgpackError";
}

/**
 * A valid payload, as far as it was read, that holds more values than its
 * {@link MsgpackDecoder} allows.
 */
export class TooManyValuesError extends MsgpackError {
  override name = "TooManyValuesError";

  /** @param limit The decoder's bound ({@link MsgpackDecoder.maxValues}). */
  constructor(readonly limit: number, message: string) {
    super(message);
  }
}

const UINT64_MAX = (1n << 64n) - 1n;
const INT64_MIN = -(1n << 63n);
/** Deepest nesting encoded or decoded (protocol messages use 4 levels). */
export const MAX_DEPTH = 32;

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
/**
 * Decodes what {@link utf8Decoder} would, 2–8 times faster (Deno 2.9), but
 * replaces invalid bytes with U+FFFD: its result is taken only when it holds
 * no U+FFFD (see `Decoder.#utf8`).
 */
const lenientUtf8Decoder = new TextDecoder("utf-8", { ignoreBOM: true });

/** Strings shorter than this are encoded and decoded by hand; longer ones by the platform. */
const SHORT_STRING = 64;
/** For each length below {@link SHORT_STRING}, an array of that many character codes. */
const CODES: number[][] = Array.from({ length: SHORT_STRING }, (_, n) => new Array(n).fill(0));

/**
 * A value encoded beforehand (a query's rows, see `rows_encoder.ts`):
 * {@link MsgpackWriter.write} copies its bytes as they are.
 */
export class Encoded {
  /**
   * @param bytes Exactly one MessagePack value.
   * @param count Its item count when it is an array (for logs), else 0.
   */
  constructor(readonly bytes: Uint8Array, readonly count: number) {}
}

/**
 * Room a {@link MsgpackWriter} grown for one large value keeps past it: for
 * the rest of its message and a few small ones after it.
 */
export const GROWTH_HEADROOM = 64 * 1024;

/** Appends MessagePack values to a growing buffer. */
export class MsgpackWriter {
  bytes: Uint8Array;
  view: DataView;
  pos = 0;

  constructor(initialSize: number) {
    this.bytes = new Uint8Array(initialSize);
    this.view = new DataView(this.bytes.buffer);
  }

  /**
   * Makes room for `n` more bytes: the buffer doubles, or when that is not
   * enough (one large value) grows at once to what is needed and
   * {@link GROWTH_HEADROOM} more, so that the bytes written after the value
   * do not make it copy the value again.
   */
  ensure(n: number): void {
    const need = this.pos + n;
    if (need <= this.bytes.length) return;
    const doubled = this.bytes.length * 2;
    const bytes = new Uint8Array(need <= doubled ? doubled : need + GROWTH_HEADROOM);
    bytes.set(this.bytes.subarray(0, this.pos));
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer);
  }

  /** Replaces the buffer with a fresh one of `size` bytes (contents dropped). */
  reset(size: number): void {
    this.bytes = new Uint8Array(size);
    this.view = new DataView(this.bytes.buffer);
    this.pos = 0;
  }

  /**
   * Appends `value`.
   *
   * @throws {MsgpackError} for a value of another kind, a bigint outside 64
   *   bits, or nesting deeper than {@link MAX_DEPTH}; the buffer may hold a
   *   partial value then (callers reset `pos`).
   */
  write(value: unknown, depth = 0): void {
    switch (typeof value) {
      case "number":
        return this.#number(value);
      case "string":
        return this.#string(value);
      case "object":
        if (value === null) return this.#byte(0xc0);
        // A byte array nests nothing: allowed where a string is, as the reader allows it.
        if (value instanceof Uint8Array) return this.#binary(value);
        if (depth >= MAX_DEPTH) throw new MsgpackError(`Nesting deeper than ${MAX_DEPTH} levels`);
        if (Array.isArray(value)) return this.#array(value, depth + 1);
        if (value instanceof Encoded) return this.#raw(value.bytes);
        if (isPlainObject(value)) return this.#map(value as Record<string, unknown>, depth + 1);
        throw new MsgpackError(`Cannot encode ${Object.prototype.toString.call(value)}`);
      case "bigint":
        return this.#bigint(value);
      case "boolean":
        return this.#byte(value ? 0xc3 : 0xc2);
      case "undefined":
        return this.#byte(0xc0);
      default:
        throw new MsgpackError(`Cannot encode a ${typeof value}`);
    }
  }

  /** Appends nil. */
  nil(): void {
    this.#byte(0xc0);
  }

  /** Appends a number (as {@link write} does) or a bigint. */
  number(n: number | bigint): void {
    if (typeof n === "number") this.#number(n);
    else this.#bigint(n);
  }

  /** Appends a string. */
  string(s: string): void {
    this.#string(s);
  }

  /** Appends a byte array. */
  binary(b: Uint8Array): void {
    this.#binary(b);
  }

  /**
   * Appends the header of a byte array of `n` bytes and returns the room for
   * them, a view of the buffer to fill at once (before anything else is
   * appended or the buffer is taken): bytes copied there from elsewhere (a
   * blob in SQLite's memory) need no array of their own first.
   */
  binaryRoom(n: number): Uint8Array {
    if (n > 0xffffffff) throw new MsgpackError(`Byte array of ${n} bytes is too long`);
    return this.#room(n, n < 0x100 ? 2 : n < 0x10000 ? 3 : 5, 0xc4);
  }

  /**
   * As {@link binaryRoom}, for a string of `n` bytes of UTF-8, which the
   * caller makes sure are valid (they are sent as they are).
   */
  stringRoom(n: number): Uint8Array {
    if (n > 0xffffffff) throw new MsgpackError(`String of ${n} bytes is too long`);
    if (n < 32) {
      this.ensure(1 + n);
      this.bytes[this.pos++] = 0xa0 | n;
      const at = this.pos;
      this.pos += n;
      return this.bytes.subarray(at, at + n);
    }
    return this.#room(n, n < 0x100 ? 2 : n < 0x10000 ? 3 : 5, 0xd9);
  }

  /** Appends the header of a str/bin value (`type8` for its 8-bit length form) and keeps `n` bytes. */
  #room(n: number, header: number, type8: number): Uint8Array {
    this.ensure(header + n);
    const start = this.pos;
    const at = start + header;
    this.#sized(type8, start, n, header);
    return this.bytes.subarray(at, at + n);
  }

  /** Appends the header of an array of `n` items; the items follow. */
  arrayHeader(n: number): void {
    this.#length(n, 0x90, 0xdc);
  }

  #raw(b: Uint8Array): void {
    this.ensure(b.length);
    this.bytes.set(b, this.pos);
    this.pos += b.length;
  }

  #byte(b: number): void {
    this.ensure(1);
    this.bytes[this.pos++] = b;
  }

  #number(n: number): void {
    this.ensure(9);
    const bytes = this.bytes;
    let p = this.pos;
    if (!Number.isInteger(n) || n >= 0x100000000 || n < -0x80000000 || (n === 0 && 1 / n < 0)) {
      bytes[p] = 0xcb;
      this.view.setFloat64(p + 1, n);
      this.pos = p + 9;
      return;
    }
    if (n >= 0) {
      if (n < 0x80) {
        bytes[p++] = n;
      } else if (n < 0x100) {
        bytes[p++] = 0xcc;
        bytes[p++] = n;
      } else if (n < 0x10000) {
        bytes[p] = 0xcd;
        this.view.setUint16(p + 1, n);
        p += 3;
      } else {
        bytes[p] = 0xce;
        this.view.setUint32(p + 1, n);
        p += 5;
      }
    } else if (n >= -0x20) {
      bytes[p++] = n & 0xff;
    } else if (n >= -0x80) {
      bytes[p] = 0xd0;
      this.view.setInt8(p + 1, n);
      p += 2;
    } else if (n >= -0x8000) {
      bytes[p] = 0xd1;
      this.view.setInt16(p + 1, n);
      p += 3;
    } else {
      bytes[p] = 0xd2;
      this.view.setInt32(p + 1, n);
      p += 5;
    }
    this.pos = p;
  }

  #bigint(n: bigint): void {
    if (n < INT64_MIN || n > UINT64_MAX) {
      throw new MsgpackError(`bigint ${n} does not fit in 64 bits`);
    }
    this.ensure(9);
    if (n >= 0n) {
      this.bytes[this.pos] = 0xcf;
      this.view.setBigUint64(this.pos + 1, n);
    } else {
      this.bytes[this.pos] = 0xd3;
      this.view.setBigInt64(this.pos + 1, n);
    }
    this.pos += 9;
  }

  #string(s: string): void {
    const n = s.length;
    if (n < 32) {
      // Short ASCII (most column values): the length is known, so the
      // header goes first and nothing moves afterwards.
      this.ensure(1 + n);
      const bytes = this.bytes;
      let p = this.pos + 1;
      let i = 0;
      for (; i < n; i++) {
        const c = s.charCodeAt(i);
        if (c >= 0x80) break;
        bytes[p++] = c;
      }
      if (i === n) {
        bytes[this.pos] = 0xa0 | n;
        this.pos = p;
        return;
      }
    }
    if (n < SHORT_STRING) {
      // At most 3 bytes per UTF-16 unit; a 1-byte header fits up to 31 bytes,
      // str8 up to 255: write the bytes after a str8 header, then fix it.
      this.ensure(2 + 3 * n);
      const bytes = this.bytes;
      const start = this.pos;
      let p = start + 2;
      for (let i = 0; i < n; i++) {
        let c = s.charCodeAt(i);
        if (c < 0x80) {
          bytes[p++] = c;
        } else if (c < 0x800) {
          bytes[p++] = 0xc0 | (c >> 6);
          bytes[p++] = 0x80 | (c & 0x3f);
        } else {
          if (c >= 0xd800 && c <= 0xdbff && i + 1 < n) {
            const d = s.charCodeAt(i + 1);
            if (d >= 0xdc00 && d <= 0xdfff) {
              i++;
              c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
              bytes[p++] = 0xf0 | (c >> 18);
              bytes[p++] = 0x80 | ((c >> 12) & 0x3f);
              bytes[p++] = 0x80 | ((c >> 6) & 0x3f);
              bytes[p++] = 0x80 | (c & 0x3f);
              continue;
            }
          }
          // A lone surrogate becomes U+FFFD, as TextEncoder does.
          if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd;
          bytes[p++] = 0xe0 | (c >> 12);
          bytes[p++] = 0x80 | ((c >> 6) & 0x3f);
          bytes[p++] = 0x80 | (c & 0x3f);
        }
      }
      const length = p - start - 2;
      if (length < 32) {
        bytes[start] = 0xa0 | length;
        bytes.copyWithin(start + 1, start + 2, p);
        this.pos = p - 1;
      } else {
        bytes[start] = 0xd9;
        bytes[start + 1] = length;
        this.pos = p;
      }
      return;
    }
    // Long strings: encode after a str32 header, then shrink the header.
    // Room for one byte a unit first (ASCII, the common case, is then never
    // measured); what did not fit is given 3 bytes a unit, or measured when
    // very long, and encoded after it.
    const start = this.pos;
    this.ensure(5 + n);
    const first = utf8Encoder.encodeInto(s, this.bytes.subarray(start + 5));
    let written = first.written;
    if (first.read < n) {
      const rest = s.slice(first.read); // (encodeInto never splits a surrogate pair)
      this.pos = start + 5 + written; // kept by ensure()
      this.ensure(rest.length > 0x10000 ? utf8Length(rest) : 3 * rest.length);
      this.pos = start;
      written += utf8Encoder.encodeInto(rest, this.bytes.subarray(start + 5 + written)).written;
    }
    this.#sized(0xd9, start, written, 5);
  }

  /**
   * Writes the header of a str/bin/array-like value whose `length` bytes were
   * already placed at `start + reserved`, moving them if the header is shorter.
   */
  #sized(type8: number, start: number, length: number, reserved: number): void {
    const bytes = this.bytes;
    let header: number;
    if (length < 0x100) {
      bytes[start] = type8;
      bytes[start + 1] = length;
      header = 2;
    } else if (length < 0x10000) {
      bytes[start] = type8 + 1;
      this.view.setUint16(start + 1, length);
      header = 3;
    } else {
      bytes[start] = type8 + 2;
      this.view.setUint32(start + 1, length);
      header = 5;
    }
    if (header !== reserved) {
      bytes.copyWithin(start + header, start + reserved, start + reserved + length);
    }
    this.pos = start + header + length;
  }

  #binary(b: Uint8Array): void {
    const n = b.length;
    if (n > 0xffffffff) throw new MsgpackError(`Byte array of ${n} bytes is too long`);
    this.ensure(5 + n);
    const start = this.pos;
    const header = n < 0x100 ? 2 : n < 0x10000 ? 3 : 5;
    this.bytes.set(b, start + header);
    this.#sized(0xc4, start, n, header);
  }

  #length(n: number, fix: number, type16: number): void {
    this.ensure(5);
    if (n < 16) {
      this.bytes[this.pos++] = fix | n;
    } else if (n < 0x10000) {
      this.bytes[this.pos] = type16;
      this.view.setUint16(this.pos + 1, n);
      this.pos += 3;
    } else {
      this.bytes[this.pos] = type16 + 1;
      this.view.setUint32(this.pos + 1, n);
      this.pos += 5;
    }
  }

  #array(a: unknown[], depth: number): void {
    const n = a.length;
    this.#length(n, 0x90, 0xdc);
    for (let i = 0; i < n; i++) this.write(a[i], depth);
  }

  #map(o: Record<string, unknown>, depth: number): void {
    const keys = Object.keys(o).filter((k) => o[k] !== undefined);
    this.#length(keys.length, 0x80, 0xde);
    for (const k of keys) {
      this.#string(k);
      this.write(o[k], depth);
    }
  }
}

/** UTF-8 length of `s` (a lone surrogate counts as U+FFFD, 3 bytes). */
function utf8Length(s: string): number {
  let length = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) {
      length += 1;
      continue;
    }
    // 3 bytes for one unit; a surrogate pair is 4 bytes for two units.
    length += 2;
    const d = s.charCodeAt(i + 1);
    if (c >= 0xd800 && c <= 0xdbff && d >= 0xdc00 && d <= 0xdfff) i++;
  }
  return length;
}

function isPlainObject(value: object): boolean {
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/**
 * Decodes exactly one MessagePack value from `bytes`.
 *
 * @throws {MsgpackError} when `bytes` is empty, truncated, has bytes left
 *   over, holds an unsupported type (extensions, 0xc1), invalid UTF-8, a map
 *   key that is not a string or appears twice in its map, or nests deeper
 *   than {@link MAX_DEPTH}. A
 *   `__proto__` key becomes an own property (as `JSON.parse` makes it).
 */
export function decodeMsgpack(bytes: Uint8Array): unknown {
  return readWhole(new Reader(bytes, Number.POSITIVE_INFINITY));
}

function readWhole(r: Reader): unknown {
  // A zero-length frame: say so, rather than that a byte is missing at offset 0.
  if (r.bytes.length === 0) {
    throw new MsgpackError("Empty: 0 bytes, where one MessagePack value is due");
  }
  const value = r.value(0);
  if (r.pos !== r.bytes.length) {
    throw new MsgpackError(`${r.bytes.length - r.pos} byte(s) left over after the value`);
  }
  return value;
}

/**
 * What a byte array counts for in {@link MsgpackDecoder.values}: each is a
 * buffer of its own, which Deno makes about ten times slower than any other
 * value (measured: a million empty byte arrays, 2 MiB on the wire, took 2.8
 * s and 378 MiB to decode; a million empty maps 0.22 s and a million short
 * strings 0.5 s).
 */
export const BYTE_ARRAY_VALUES = 8;

/**
 * Decodes payloads as {@link decodeMsgpack} does, counting the values each
 * holds: the value itself, every array item, and every map key and map value
 * (so `[1, {a: []}]` holds 5), a byte array counting as
 * {@link BYTE_ARRAY_VALUES}. Decoding costs time and memory per value (an
 * empty map, one byte on the wire, takes 64 bytes decoded), so the count
 * bounds what a payload costs where its size does not: 1 MiB of empty maps
 * is a million objects.
 */
export class MsgpackDecoder {
  /** Values in the payload last decoded whole. */
  values = 0;

  /** @param maxValues Most values one payload may hold (default: no bound). */
  constructor(readonly maxValues: number = Number.POSITIVE_INFINITY) {}

  /**
   * Decodes exactly one MessagePack value from `bytes`.
   *
   * @throws {TooManyValuesError} as soon as a container's length would take
   *   the count past {@link maxValues}, before its items are allocated.
   * @throws {MsgpackError} as {@link decodeMsgpack} does.
   */
  decode(bytes: Uint8Array): unknown {
    const r = new Reader(bytes, this.maxValues);
    const value = readWhole(r);
    this.values = r.values;
    return value;
  }

  /**
   * The first `n` items (or all, when fewer) of the array `bytes` begins
   * with, each decoded within {@link maxValues}; the rest is not read. A
   * request refused for its size still names its op and id this way.
   *
   * @returns `null` when `bytes` does not begin with an array, or those items
   *   cannot be decoded (or hold too many values).
   */
  head(bytes: Uint8Array, n: number): unknown[] | null {
    const r = new Reader(bytes, this.maxValues);
    try {
      return r.head(n);
    } catch (err) {
      if (err instanceof MsgpackError) return null;
      throw err;
    }
  }
}

class Reader {
  readonly bytes: Uint8Array;
  readonly #maxValues: number;
  #view: DataView | null = null;
  pos = 0;
  /**
   * Values met so far: the outer one, each container's items as its length
   * is read, and the rest of each byte array's weight before it is copied.
   */
  values = 1;

  constructor(bytes: Uint8Array, maxValues: number) {
    this.bytes = bytes;
    this.#maxValues = maxValues;
  }

  /** Reads an array's header and its first `n` items (see {@link MsgpackDecoder.head}). */
  head(n: number): unknown[] | null {
    const b = this.bytes[this.#need(1)];
    const length = b >= 0x90 && b < 0xa0
      ? b & 0x0f
      : b === 0xdc
      ? this.#u16()
      : b === 0xdd
      ? this.#u32()
      : -1;
    if (length < 0) return null;
    const items = [];
    for (let i = 0; i < Math.min(n, length); i++) {
      if (this.values >= this.#maxValues) throw this.#tooMany(1, "an array item");
      this.values++;
      items.push(this.value(1));
    }
    return items;
  }

  /** The error for `n` more values, past the bound, announced by `what`. */
  #tooMany(n: number, what: string): TooManyValuesError {
    return new TooManyValuesError(
      this.#maxValues,
      `More than ${this.#maxValues} values: ${what} before offset ${this.pos} would make ` +
        `${this.values + n}`,
    );
  }

  /** Made when first needed: most requests hold no multi-byte number. */
  get view(): DataView {
    const b = this.bytes;
    return this.#view ??= new DataView(b.buffer, b.byteOffset, b.byteLength);
  }

  #need(n: number): number {
    const p = this.pos;
    if (p + n > this.bytes.length) {
      throw new MsgpackError(
        `Truncated: ${n} byte(s) needed at offset ${p}, ${this.bytes.length - p} left`,
      );
    }
    this.pos = p + n;
    return p;
  }

  value(depth: number): unknown {
    const b = this.bytes[this.#need(1)];
    if (b < 0x80) return b;
    if (b >= 0xe0) return b - 0x100;
    if (b >= 0xa0 && b < 0xc0) return this.#string(b & 0x1f);
    if (b < 0x90) return this.#map(b & 0x0f, depth);
    if (b < 0xa0) return this.#array(b & 0x0f, depth);
    switch (b) {
      case 0xc0:
        return null;
      case 0xc2:
        return false;
      case 0xc3:
        return true;
      case 0xc4:
        return this.#binary(this.bytes[this.#need(1)]);
      case 0xc5:
        return this.#binary(this.#u16());
      case 0xc6:
        return this.#binary(this.#u32());
      case 0xca:
        return this.view.getFloat32(this.#need(4));
      case 0xcb:
        return this.view.getFloat64(this.#need(8));
      case 0xcc:
        return this.bytes[this.#need(1)];
      case 0xcd:
        return this.#u16();
      case 0xce:
        return this.#u32();
      case 0xcf:
        return this.view.getBigUint64(this.#need(8));
      case 0xd0:
        return (this.#u8() << 24) >> 24;
      case 0xd1:
        return (this.#u16() << 16) >> 16;
      case 0xd2:
        return this.#u32() | 0;
      case 0xd3:
        return this.view.getBigInt64(this.#need(8));
      case 0xd9:
        return this.#string(this.bytes[this.#need(1)]);
      case 0xda:
        return this.#string(this.#u16());
      case 0xdb:
        return this.#string(this.#u32());
      case 0xdc:
        return this.#array(this.#u16(), depth);
      case 0xdd:
        return this.#array(this.#u32(), depth);
      case 0xde:
        return this.#map(this.#u16(), depth);
      case 0xdf:
        return this.#map(this.#u32(), depth);
      case 0xc1:
        throw new MsgpackError("Type byte 0xc1 is never used");
      default:
        throw new MsgpackError(`Extension types are not supported (type byte 0x${b.toString(16)})`);
    }
  }

  // Integers read byte by byte: a DataView is made only for floats and int64.
  #u8(): number {
    return this.bytes[this.#need(1)];
  }

  #u16(): number {
    const b = this.bytes;
    const p = this.#need(2);
    return (b[p] << 8) | b[p + 1];
  }

  #u32(): number {
    const b = this.bytes;
    const p = this.#need(4);
    return b[p] * 0x1000000 + ((b[p + 1] << 16) | (b[p + 2] << 8) | b[p + 3]);
  }

  #binary(n: number): Uint8Array {
    const p = this.#need(n);
    if (this.values + BYTE_ARRAY_VALUES - 1 > this.#maxValues) {
      throw this.#tooMany(BYTE_ARRAY_VALUES - 1, "a byte array (counting as 8 values)");
    }
    this.values += BYTE_ARRAY_VALUES - 1;
    return this.bytes.slice(p, p + n);
  }

  #string(n: number): string {
    const p = this.#need(n);
    const bytes = this.bytes;
    if (n < SHORT_STRING) {
      // ASCII (the common case) by hand: cheaper than a decoder call. The
      // codes go through a plain array kept for each length, which `apply`
      // takes 2-3x faster than a typed array. (Not cut out of the payload
      // decoded once as Latin-1, which is faster still, because V8 would
      // keep that whole string alive as long as any value cut from it.)
      const codes = CODES[n];
      for (let i = 0; i < n; i++) {
        const c = bytes[p + i];
        if (c >= 0x80) return this.#utf8(p, n);
        codes[i] = c;
      }
      return String.fromCharCode.apply(null, codes);
    }
    return this.#utf8(p, n);
  }

  #utf8(p: number, n: number): string {
    const bytes = this.bytes.subarray(p, p + n);
    // Invalid UTF-8 would decode with a U+FFFD in it: only then is the strict
    // decoder asked (a U+FFFD the text holds is valid).
    const text = lenientUtf8Decoder.decode(bytes);
    if (!text.includes("\uFFFD")) return text;
    try {
      return utf8Decoder.decode(bytes);
    } catch {
      throw new MsgpackError(`Invalid UTF-8 in a string at offset ${p}`);
    }
  }

  #array(n: number, depth: number): unknown[] {
    if (depth >= MAX_DEPTH) throw new MsgpackError(`Nesting deeper than ${MAX_DEPTH} levels`);
    // Each item takes at least one byte: refuse impossible counts before allocating.
    if (n > this.bytes.length - this.pos) {
      throw new MsgpackError(
        `Truncated: an array of ${n} items in ${this.bytes.length - this.pos} byte(s)`,
      );
    }
    if (this.values + n > this.#maxValues) throw this.#tooMany(n, `an array of ${n} items`);
    this.values += n;
    const a = new Array(n);
    for (let i = 0; i < n; i++) a[i] = this.value(depth + 1);
    return a;
  }

  #map(n: number, depth: number): Record<string, unknown> {
    if (depth >= MAX_DEPTH) throw new MsgpackError(`Nesting deeper than ${MAX_DEPTH} levels`);
    if (2 * n > this.bytes.length - this.pos) {
      throw new MsgpackError(
        `Truncated: a map of ${n} entries in ${this.bytes.length - this.pos} byte(s)`,
      );
    }
    if (this.values + 2 * n > this.#maxValues) throw this.#tooMany(2 * n, `a map of ${n} entries`);
    this.values += 2 * n;
    const o: Record<string, unknown> = {};
    for (let i = 0; i < n; i++) {
      const key = this.value(depth + 1);
      if (typeof key !== "string") {
        throw new MsgpackError(`Map key is a ${typeOf(key)}, not a string`);
      }
      // Which of two values was meant cannot be known: refused, not the last taken silently.
      if (Object.hasOwn(o, key)) {
        // (A long key is named by its start: the message goes back to the client, and to the log.)
        const named = key.length > 64 ? `${key.slice(0, 64)}…` : key;
        throw new MsgpackError(`Map key ${JSON.stringify(named)} appears twice`);
      }
      const value = this.value(depth + 1);
      if (key === "__proto__") {
        // Assigned, it would set the prototype (Node.js, Bun): an own property, as JSON.parse makes.
        Object.defineProperty(o, key, {
          value,
          writable: true,
          enumerable: true,
          configurable: true,
        });
      } else {
        o[key] = value;
      }
    }
    return o;
  }
}

function typeOf(v: unknown): string {
  return v === null
    ? "nil"
    : v instanceof Uint8Array
    ? "byte array"
    : Array.isArray(v)
    ? "array"
    : typeof v;
}
