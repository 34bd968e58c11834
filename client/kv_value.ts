/**
 * Values of key-value collections: what may be stored, and its MessagePack
 * encoding in the `value` column.
 *
 * A value is stored exactly or refused. Storable: `null`, booleans, numbers
 * (`-0`, `NaN` and ±Infinity included), bigints from -2^63 to 2^64-1,
 * strings without lone UTF-16 surrogates, `Uint8Array` (a Node `Buffer` too,
 * read back as a plain `Uint8Array`), arrays without holes and plain objects
 * (prototype `Object.prototype` or `null`) with string keys, nested at most
 * {@link MAX_DEPTH} levels. Everything else is refused
 * with `INVALID_PARAM` naming where it sits in the value (`value.a.b[2]`):
 * `undefined` (MessagePack would turn it into `null` or drop the property),
 * array holes and properties of arrays other than their items, symbol
 * keys, lone surrogates in strings or keys (UTF-8 cannot hold them), a
 * `Uint8Array` whose bytes are gone (detached), and other kinds (`Date`,
 * `Map`, `Set`, class instances, `Uint8Array` subclasses other than
 * `Buffer`, functions, symbols, other typed arrays).
 *
 * A stored value that does not decode (written by SQL directly) is reported
 * as `KV_CORRUPT`, naming the collection and key.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { decodeMsgpack, MAX_DEPTH, MsgpackWriter } from "../protocol/msgpack.ts";
import { SqliteError } from "../protocol/errors.ts";
import { describeKind, invalidReason, isPlainObject } from "../protocol/values.ts";

/** Code of the error raised for a stored entry that cannot be read back. */
export const KV_CORRUPT = "KV_CORRUPT";

const UINT64_MAX = (1n << 64n) - 1n;
const INT64_MIN = -(1n << 63n);
const IDENTIFIER = /^[A-Za-z_$][\w$]*$/;

/** Why a value cannot be stored, thrown inside {@link ownKvValue} and caught by its caller. */
class Unstorable {
  constructor(readonly reason: string) {}
}

/**
 * `value` as read once, for encoding: containers are copied (arrays, and
 * plain objects into null-prototype ones), each item and property read once
 * and checked as read, so that a getter or a Proxy cannot give the encoder
 * something other than what was checked. Scalars and `Uint8Array`s are
 * returned as they are.
 *
 * @param value The value, or a part of it.
 * @param path Where `value` sits: `value` for the whole one.
 * @param depth Containers above `value`.
 * @throws {Unstorable} naming the place inside it that cannot be stored exactly.
 */
function ownKvValue(value: unknown, path = "value", depth = 0): unknown {
  switch (typeof value) {
    case "number":
    case "boolean":
      return value;
    case "string":
      if (value.isWellFormed()) return value;
      throw new Unstorable(
        `${path} is a string with a lone UTF-16 surrogate, which UTF-8 cannot represent`,
      );
    case "bigint":
      if (value >= INT64_MIN && value <= UINT64_MAX) return value;
      throw new Unstorable(`${path} is the bigint ${value}, outside 64 bits (-2^63 to 2^64-1)`);
    case "undefined":
      throw new Unstorable(
        `${path} is undefined, which would read back as null or not at all: ` +
          "use null, or leave the property out",
      );
    case "object": {
      if (value === null) return null;
      if (value instanceof Uint8Array) {
        const reason = invalidBytes(value, path);
        if (reason !== undefined) throw new Unstorable(reason);
        return value;
      }
      if (depth >= MAX_DEPTH) throw new Unstorable(`${path} nests deeper than ${MAX_DEPTH} levels`);
      if (Array.isArray(value)) return ownArray(value, path, depth);
      if (isPlainObject(value)) return ownObject(value, path, depth);
      throw new Unstorable(
        `${path} is ${describeKind(value)}, which is not storable: ` +
          "store null, a boolean, number, bigint, string, Uint8Array, array or plain object",
      );
    }
    default:
      throw new Unstorable(`${path} is a ${typeof value}, which is not storable`);
  }
}

/**
 * Why a `Uint8Array` (or an object that claims to be one) cannot be stored,
 * or `undefined` when it can: a plain `Uint8Array` or a Node `Buffer` (read
 * back as a plain `Uint8Array` of the same bytes) whose bytes are there.
 */
function invalidBytes(value: Uint8Array, path: string): string | undefined {
  if (!ArrayBuffer.isView(value)) {
    return `${path} is a Proxy of a Uint8Array (or an object made from its prototype), ` +
      "which is not storable: store the Uint8Array itself";
  }
  const proto = Object.getPrototypeOf(value);
  if (proto !== Uint8Array.prototype && proto !== Buffer.prototype) {
    const name = (value.constructor as { name?: unknown } | undefined)?.name;
    return `${path} is ${
      typeof name === "string" && name !== "" ? `an instance of ${name}` : "a Uint8Array"
    } (a Uint8Array subclass), which would read back as a plain Uint8Array without its class ` +
      "or properties: store new Uint8Array(bytes), or an object holding the bytes and the rest";
  }
  // A view whose bytes are gone reports length 0 (encoding it would throw).
  const gone = value.length === 0 ? invalidReason(value) : undefined;
  return gone === undefined ? undefined : `${path} is not storable: ${gone}`;
}

function ownArray(array: unknown[], path: string, depth: number): unknown[] {
  if (Object.getPrototypeOf(array) !== Array.prototype) {
    const name = (array.constructor as { name?: unknown } | undefined)?.name;
    throw new Unstorable(
      `${path} is ${
        typeof name === "string" && name !== "" ? `an instance of ${name}` : "an array"
      }` +
        " (an Array subclass), which would read back as a plain array",
    );
  }
  const n = array.length;
  // Own enumerable keys: the n indexes first, then any other property (which
  // MessagePack would drop); fewer with holes.
  const keys = Object.keys(array);
  if (keys.length !== n || (n > 0 && keys[n - 1] !== String(n - 1))) {
    const extra = keys.find((k) => !isIndex(k));
    if (extra !== undefined) {
      throw new Unstorable(
        `${path} has the property ${
          JSON.stringify(extra)
        } besides its items, which would not be stored: store an object`,
      );
    }
  }
  const symbols = Object.getOwnPropertySymbols(array);
  if (symbols.some((s) => Object.prototype.propertyIsEnumerable.call(array, s))) {
    throw new Unstorable(`${path} has a symbol key, which cannot be stored`);
  }
  const copy: unknown[] = new Array(n);
  for (let i = 0; i < n; i++) {
    if (!(i in array)) {
      throw new Unstorable(
        `${path}[${i}] is a hole in the array, which would read back as null: fill it`,
      );
    }
    copy[i] = ownKvValue(array[i], `${path}[${i}]`, depth + 1);
  }
  return copy;
}

/** True for an array index key (`"0"`, `"17"`). */
function isIndex(key: string): boolean {
  return /^(?:0|[1-9]\d*)$/.test(key) && Number(key) < 2 ** 32 - 1;
}

function ownObject(object: object, path: string, depth: number): Record<string, unknown> {
  const symbols = Object.getOwnPropertySymbols(object);
  if (symbols.some((s) => Object.prototype.propertyIsEnumerable.call(object, s))) {
    throw new Unstorable(`${path} has a symbol key, which cannot be stored`);
  }
  // Null prototype: a "__proto__" key is a property like any other.
  const copy: Record<string, unknown> = Object.create(null);
  for (const key of Object.keys(object)) {
    if (!key.isWellFormed()) {
      throw new Unstorable(
        `${path} has a key with a lone UTF-16 surrogate (${
          JSON.stringify(key)
        }), which UTF-8 cannot represent`,
      );
    }
    const at = IDENTIFIER.test(key) ? `${path}.${key}` : `${path}[${JSON.stringify(key)}]`;
    copy[key] = ownKvValue((object as Record<string, unknown>)[key], at, depth + 1);
  }
  return copy;
}

/**
 * Encodes a value for the `value` column, as read once (see {@link ownKvValue}).
 *
 * @throws {SqliteError} `INVALID_PARAM` for a value that cannot be stored
 *   exactly, naming where inside it.
 */
export function encodeKvValue(value: unknown): Uint8Array {
  let own: unknown;
  try {
    own = ownKvValue(value);
  } catch (err) {
    if (!(err instanceof Unstorable)) throw err;
    throw new SqliteError("INVALID_PARAM", `Invalid key-value value: ${err.reason}`);
  }
  const w = new MsgpackWriter(64);
  w.write(own);
  return w.bytes.slice(0, w.pos);
}

/**
 * Decodes a stored `value` column.
 *
 * @param stored The column as read.
 * @param where Names the entry for the error: collection and key.
 * @throws {SqliteError} `KV_CORRUPT` when it is not a value this module wrote.
 */
export function decodeKvValue(stored: unknown, where: () => string): unknown {
  if (!(stored instanceof Uint8Array)) {
    throw corrupt(where(), `the stored value is ${describeStored(stored)}, not a MessagePack BLOB`);
  }
  try {
    return decodeMsgpack(stored);
  } catch (err) {
    throw corrupt(
      where(),
      `the stored value does not decode: ${err instanceof Error ? err.message : String(err)}`,
      err,
    );
  }
}

/** The error for a stored entry that cannot be read back (code `KV_CORRUPT`). */
export function corrupt(where: string, detail: string, cause?: unknown): SqliteError {
  return new SqliteError(
    KV_CORRUPT,
    `Cannot read key-value entry ${where}: ${detail}`,
    undefined,
    cause === undefined ? undefined : { cause },
  );
}

function describeStored(stored: unknown): string {
  if (typeof stored === "string") return "TEXT";
  if (typeof stored === "number" || typeof stored === "bigint") return "a number";
  return describeKind(stored);
}
