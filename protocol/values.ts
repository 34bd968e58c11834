/**
 * The value mapping between JavaScript, the wire and SQLite.
 *
 * | JavaScript            | wire (MessagePack) | SQLite                         |
 * | --------------------- | ------------------ | ------------------------------ |
 * | `null`                | nil                | NULL                           |
 * | safe integer `number` | int                | INTEGER                        |
 * | other finite `number` | float64            | REAL (`-0` and ±Infinity too)  |
 * | `bigint` (64-bit)     | int64              | INTEGER                        |
 * | `boolean`             | bool               | INTEGER 1 / 0                  |
 * | `string` without NUL  | str                | TEXT                           |
 * | `Uint8Array`          | bin                | BLOB                           |
 *
 * Everything else is refused by {@link invalidReason}: `undefined`, `NaN`,
 * strings containing NUL (SQLite's C API would cut them) or a lone UTF-16
 * surrogate (UTF-8 cannot hold it), `Date`,
 * `ArrayBuffer`, other typed arrays, plain objects, arrays, symbols and
 * functions.
 *
 * @module
 */

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

/**
 * Explains why `value` cannot be bound as a statement parameter without being
 * changed, or returns `undefined` when it can.
 *
 * @example
 * ```ts
 * import { invalidReason } from "./values.ts";
 * if (invalidReason("a\0b") === undefined) throw new Error("NUL must be refused");
 * if (invalidReason(42) !== undefined) throw new Error("42 is fine");
 * ```
 */
export function invalidReason(value: unknown): string | undefined {
  switch (typeof value) {
    case "number":
      return value !== value ? "NaN cannot be stored (SQLite would store NULL)" : undefined;
    case "string":
      if (value.includes("\0")) {
        return "string contains a NUL character (SQLite would cut it there); store it as a Uint8Array";
      }
      return value.isWellFormed()
        ? undefined
        : "string contains a lone UTF-16 surrogate, which UTF-8 cannot represent";
    case "bigint":
      return value < INT64_MIN || value > INT64_MAX
        ? `bigint ${value} is outside SQLite's 64-bit INTEGER range`
        : undefined;
    case "boolean":
      return undefined;
    case "undefined":
      return "undefined is not a value: pass null for NULL";
    case "object":
      if (value === null || value instanceof Uint8Array) return undefined;
      if (value instanceof Date) return "Date is not a SQLite type: pass a string or a number";
      if (value instanceof ArrayBuffer || ArrayBuffer.isView(value)) {
        return `${value.constructor.name} is not supported: pass a Uint8Array for a BLOB`;
      }
      return `${
        Array.isArray(value) ? "array" : "object"
      } is not a SQLite value: pass null, a number, bigint, boolean, string or Uint8Array`;
    default:
      return `${typeof value} is not a SQLite value`;
  }
}

/** Names parameter `key` of a statement for error messages: `1` or `":name"`. */
export function paramLabel(key: number | string): string {
  return typeof key === "number" ? String(key + 1) : `"${key}"`;
}

/**
 * Checks every parameter and returns a message naming the first one that
 * cannot be stored exactly, or `undefined` when all can.
 */
export function invalidParamsMessage(params: unknown): string | undefined {
  if (params === null || params === undefined) return undefined;
  if (Array.isArray(params)) {
    for (let i = 0; i < params.length; i++) {
      const reason = invalidReason(params[i]);
      if (reason !== undefined) return `Cannot bind parameter ${paramLabel(i)}: ${reason}`;
    }
    return undefined;
  }
  if (typeof params === "object" && !(params instanceof Uint8Array) && !(params instanceof Date)) {
    for (const key in params) {
      const reason = invalidReason((params as Record<string, unknown>)[key]);
      if (reason !== undefined) return `Cannot bind parameter ${paramLabel(key)}: ${reason}`;
    }
    return undefined;
  }
  return "Cannot bind parameters: pass an array (positional) or an object (named)";
}
