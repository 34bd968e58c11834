/**
 * Copies of request arguments for requests that wait before they are
 * encoded (for a free connection, or for one to open): what the caller
 * changes after the call (reusing its parameters array, filling a buffer
 * again) must not reach what is sent.
 *
 * @module
 */

/**
 * A copy of `value` that later changes to `value` cannot reach: arrays and
 * plain objects are copied, deeply, and the bytes of a `Uint8Array` too.
 * Other values are returned as they are (strings, numbers, and kinds the
 * parameter check refuses, so that checking the copy gives the same verdict
 * as checking the original).
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
    return new Uint8Array(value) as T;
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
