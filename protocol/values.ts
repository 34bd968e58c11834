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
 * surrogate (UTF-8 cannot hold it), a `Uint8Array` whose bytes are gone
 * (its `ArrayBuffer` detached, or the view out of bounds of a resizable one),
 * `Date`, `ArrayBuffer`, other typed arrays, plain objects, arrays, symbols and
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
      if (value === null) return undefined;
      if (value instanceof Uint8Array) {
        if (!ArrayBuffer.isView(value)) {
          return "a Proxy of a Uint8Array (or an object made from its prototype) is not a " +
            "Uint8Array: pass the Uint8Array itself";
        }
        // A view whose bytes are gone reports length 0: only then is there more to look at.
        return value.length === 0 ? bytesGone(value) : undefined;
      }
      if (value instanceof Date) return "Date is not a SQLite type: pass a string or a number";
      if (value instanceof ArrayBuffer || ArrayBuffer.isView(value)) {
        return `${value.constructor.name} is not supported: pass a Uint8Array for a BLOB`;
      }
      if (!Array.isArray(value) && !isPlainObject(value)) {
        // Name what it is: "object" alone misleads for `new String("a")` or a Map.
        const boxed = boxedType(value);
        if (boxed !== undefined) {
          return `${describeKind(value)} (a ${boxed} wrapped in an object) is not a SQLite ` +
            `value: pass the ${boxed} itself, its valueOf()`;
        }
        return `${describeKind(value)} is not a SQLite value: ${PASS_ONE_OF}`;
      }
      return `${Array.isArray(value) ? "array" : "object"} is not a SQLite value: ${PASS_ONE_OF}`;
    default:
      return `${typeof value} is not a SQLite value`;
  }
}

const PASS_ONE_OF = "pass null, a number, bigint, boolean, string or Uint8Array";

/** The wrappers of the primitives SQLite can take (`Object(Symbol())` is refused as any instance). */
const BOXES = [
  ["number", Number.prototype.valueOf],
  ["string", String.prototype.valueOf],
  ["boolean", Boolean.prototype.valueOf],
  ["bigint", BigInt.prototype.valueOf],
] as const;

/**
 * The primitive type `value` wraps when it is a primitive wrapper object
 * (`new String("a")`, `Object(1n)`), else `undefined`. Each `valueOf` throws
 * for anything but its own wrapper, whatever its prototype says.
 */
function boxedType(value: object): string | undefined {
  for (const [type, valueOf] of BOXES) {
    try {
      (valueOf as (this: unknown) => unknown).call(value);
      return type;
    } catch {
      // not this kind of wrapper
    }
  }
  return undefined;
}

/**
 * Why the bytes of `value`, an empty-looking `Uint8Array`, cannot be read, or
 * `undefined` when it is really empty: its `ArrayBuffer` detached (transferred
 * by `structuredClone(..., { transfer })`, `postMessage` or `transfer()`), or
 * the view out of bounds of a resizable `ArrayBuffer` that shrank below it.
 * Encoding either would throw.
 */
function bytesGone(value: Uint8Array): string | undefined {
  const buffer = value.buffer as ArrayBuffer;
  if (buffer.detached !== true) {
    try {
      value.at(0); // throws for a view whose bytes are gone
      return undefined;
    } catch {
      // Out of bounds of a resizable buffer; or detached where `detached` is
      // missing (Node 20), and then its maxByteLength is 0.
      if (buffer.maxByteLength > 0) {
        return "Uint8Array is out of bounds of its ArrayBuffer (resized smaller than the view)";
      }
    }
  }
  return "Uint8Array's ArrayBuffer is detached (transferred): its bytes are gone";
}

/** Names parameter `key` of a statement for error messages: `1` or `":name"`. */
export function paramLabel(key: number | string): string {
  return typeof key === "number" ? String(key + 1) : `"${key}"`;
}

/**
 * Checks every parameter and returns a message naming the first one that
 * cannot be stored exactly, or `undefined` when all can.
 *
 * Parameters are `null`/`undefined` (none), an array (positional) or a plain
 * object (named: its prototype is `Object.prototype` or `null`; its own
 * enumerable string keys are the names). Anything else is refused, as is a
 * named parameter called `__proto__`.
 *
 * @example
 * ```ts
 * import { invalidParamsMessage } from "./values.ts";
 * if (invalidParamsMessage({ a: 1 }) !== undefined) throw new Error("a plain object is fine");
 * if (invalidParamsMessage(new Map()) === undefined) throw new Error("a Map must be refused");
 * ```
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
  if (typeof params !== "object" || !isPlainObject(params)) return paramsKindMessage(params);
  for (const key of Object.keys(params)) {
    if (key === "__proto__") {
      return `Cannot bind parameter "__proto__": a named parameter cannot be called __proto__`;
    }
    // A name is sent as UTF-8 text too: a lone surrogate would arrive as
    // U+FFFD (and could then name another parameter), a NUL would cut it.
    if (!key.isWellFormed() || key.includes("\0")) {
      return `Cannot bind parameter ${JSON.stringify(key)}: its name contains ` +
        (key.includes("\0")
          ? "a NUL character"
          : "a lone UTF-16 surrogate, which UTF-8 cannot represent") +
        "; no SQL parameter can have that name";
    }
    const reason = invalidReason((params as Record<string, unknown>)[key]);
    if (reason !== undefined) return `Cannot bind parameter ${paramLabel(key)}: ${reason}`;
  }
  return undefined;
}

/** Refuses parameters that are neither an array nor a plain object, saying what they are. */
export function paramsKindMessage(params: unknown): string {
  return "Cannot bind parameters: pass an array (positional) or a plain object (named), got " +
    describeKind(params);
}

/** True for an object whose prototype is `Object.prototype` or `null`. */
export function isPlainObject(value: object): boolean {
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/**
 * Names what kind of value `value` is, for error messages: `a number`,
 * `a plain object`, `an instance of Map`, `an object with a custom prototype`.
 */
export function describeKind(value: unknown): string {
  if (value === null) return "null";
  if (typeof value !== "object") return `a ${typeof value}`;
  if (Array.isArray(value)) return "an array";
  const proto = Object.getPrototypeOf(value);
  if (proto === Object.prototype || proto === null) return "a plain object";
  const ctor = Object.hasOwn(proto, "constructor") ? proto.constructor : undefined;
  if (typeof ctor !== "function" || ctor.name === "") return "an object with a custom prototype";
  return `an instance of ${ctor.name}`;
}
