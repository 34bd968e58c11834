/**
 * Turns decoded wire parameters into node:sqlite bind arguments, following
 * the value mapping in `protocol/values.ts`: safe integers and booleans
 * become bigint (so they bind as INTEGER), and anything that cannot be
 * stored exactly is refused with `INVALID_PARAM` naming the parameter.
 *
 * @module
 */

import { ErrorCode, SqliteError } from "../protocol/errors.ts";
import { invalidReason, paramLabel } from "../protocol/values.ts";

const NO_ARGS: unknown[] = [];

/** SQLite's default SQLITE_MAX_VARIABLE_NUMBER. */
const MAX_PARAMS = 32766;

/**
 * Converts `params` in place and returns the argument list for
 * `StatementSync.all()`/`run()`.
 *
 * @throws {SqliteError} `INVALID_PARAM` naming the first bad parameter.
 */
export function bindArgs(params: unknown): unknown[] {
  if (params === null || params === undefined) return NO_ARGS;
  if (Array.isArray(params)) {
    if (params.length > MAX_PARAMS) {
      throw new SqliteError(
        ErrorCode.InvalidParam,
        `Cannot bind ${params.length} parameters: SQLite takes at most ${MAX_PARAMS}`,
      );
    }
    for (let i = 0; i < params.length; i++) params[i] = bindValue(params[i], i);
    return params;
  }
  if (typeof params === "object" && isPlainObject(params)) {
    const named = params as Record<string, unknown>;
    for (const key in named) {
      if (key.includes("\0")) {
        throw new SqliteError(
          ErrorCode.InvalidParam,
          `Cannot bind parameter ${paramLabel(key)}: its name contains a NUL character`,
        );
      }
      named[key] = bindValue(named[key], key);
    }
    return [named];
  }
  throw new SqliteError(
    ErrorCode.BadRequest,
    "Cannot bind parameters: expected an array (positional) or a map (named)",
  );
}

function bindValue(v: unknown, key: number | string): unknown {
  switch (typeof v) {
    case "number":
      if (Number.isSafeInteger(v) && !(v === 0 && 1 / v < 0)) return BigInt(v);
      if (v === v) return v;
      break;
    case "boolean":
      return v ? 1n : 0n;
    case "string":
      if (!v.includes("\0") && v.isWellFormed()) return v;
      break;
    case "object":
      if (v === null || v instanceof Uint8Array) return v;
      break;
    case "bigint":
      if (invalidReason(v) === undefined) return v;
      break;
  }
  throw new SqliteError(
    ErrorCode.InvalidParam,
    `Cannot bind parameter ${paramLabel(key)}: ${invalidReason(v) ?? "unsupported value"}`,
  );
}

function isPlainObject(o: object): boolean {
  const proto = Object.getPrototypeOf(o);
  return proto === Object.prototype || proto === null;
}
