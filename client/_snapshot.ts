/**
 * Copies of request arguments. Statement parameters are read once, when the
 * call is made ({@link readParams}): that copy is checked and sent, so a
 * value that changes between two reads (a getter, a Proxy) cannot be
 * checked as one value and sent as another. A request that waits before it
 * is encoded (for a free connection, or for one to open, and `iterate()`
 * until its first `next()`) also owns its bytes ({@link ownBytes}, and
 * {@link snapshot} for any arguments): what the caller changes after the
 * call (reusing its parameters array, filling a buffer again) must not reach
 * what is sent.
 *
 * @module
 */

import { invalidReason, isPlainObject } from "../protocol/values.ts";

/**
 * Statement parameters read once: a copy of an array (its length and each
 * element read once) or of a plain object (its own enumerable properties,
 * each one's value read once), `null` for none (`null` or `undefined`).
 * The values are those read, a `Uint8Array` included (its bytes are not
 * copied: see {@link ownBytes}). Anything else is not parameters:
 * `undefined` (the caller refuses it).
 *
 * @param params What the caller passed as parameters.
 * @returns the copy, to check and then send.
 */
export function readParams(
  params: unknown,
): unknown[] | Record<string, unknown> | null | undefined {
  if (params === null || params === undefined) return null;
  if (typeof params !== "object") return undefined;
  if (Array.isArray(params)) {
    const n = params.length;
    const out = new Array(n);
    for (let i = 0; i < n; i++) out[i] = params[i];
    return out;
  }
  if (!isPlainObject(params)) return undefined;
  // Own enumerable properties, each read once, as data properties (a key
  // `__proto__` too, which the check refuses by name).
  return { ...params };
}

/**
 * Replaces, in place, each `Uint8Array` in `args` with a copy of its bytes,
 * looking into arrays and plain objects: for a request that waits before it
 * is encoded. `args` must be the client's own (built for the request, with
 * parameters from {@link readParams}, already checked).
 *
 * @param args Request arguments, or parameters.
 */
export function ownBytes(args: unknown): void {
  if (typeof args !== "object" || args === null) return;
  if (Array.isArray(args)) {
    for (let i = 0; i < args.length; i++) {
      const v = args[i];
      if (v instanceof Uint8Array) args[i] = new Uint8Array(v);
      else ownBytes(v);
    }
    return;
  }
  if (!isPlainObject(args)) return;
  const o = args as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    const v = o[key];
    if (v instanceof Uint8Array) {
      Object.defineProperty(o, key, { value: new Uint8Array(v) });
    } else {
      ownBytes(v);
    }
  }
}

/**
 * A copy of `value` that later changes to `value` cannot reach: arrays and
 * plain objects are copied, deeply, and the bytes of a `Uint8Array` too.
 * Other values are returned as they are (strings, numbers, and kinds the
 * parameter check refuses, a `Uint8Array` whose bytes are gone included, so
 * that checking the copy gives the same verdict as checking the original).
 *
 * @param value Request arguments, parameters, or one value.
 * @returns the copy.
 */
export function snapshot<T>(value: T): T {
  if (typeof value !== "object" || value === null) return value;
  if (Array.isArray(value)) {
    const n = value.length;
    const out = new Array(n);
    for (let i = 0; i < n; i++) out[i] = snapshot(value[i]);
    return out as T;
  }
  // A real Uint8Array (a Buffer too); not a Proxy of one, which the check refuses.
  if (value instanceof Uint8Array && ArrayBuffer.isView(value)) {
    return invalidReason(value) === undefined ? new Uint8Array(value) as T : value;
  }
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return value;
  const out: Record<string, unknown> = Object.create(proto);
  for (const key of Object.keys(value)) {
    const v = snapshot((value as Record<string, unknown>)[key]);
    if (key === "__proto__") {
      Object.defineProperty(out, key, {
        value: v,
        enumerable: true,
        writable: true,
        configurable: true,
      });
    } else {
      out[key] = v;
    }
  }
  return out as T;
}
