/**
 * Checks decoded wire parameters against the value mapping in
 * `protocol/values.ts` and turns them into binding arguments: booleans
 * become 1 / 0, and anything that cannot be stored exactly is refused with
 * `INVALID_PARAM` naming the parameter.
 *
 * @module
 */

import { ErrorCode, SqliteError } from "../protocol/errors.ts";
import { invalidReason, paramLabel } from "../protocol/values.ts";
import type { BindArgs, SqlValue } from "./binding/binding.ts";

const NO_ARGS: readonly SqlValue[] = [];

/**
 * Checks `params` (converting booleans in place) and returns them as
 * binding arguments: positional (an array) or named (a plain object). How
 * many a statement takes is the binding's check (its parameter count, which
 * the SQLite library's SQLITE_MAX_VARIABLE_NUMBER bounds), made before any
 * value is bound.
 *
 * @throws {SqliteError} `INVALID_PARAM` naming the first bad parameter.
 */
export function bindArgs(params: unknown): BindArgs {
  if (params === null || params === undefined) return NO_ARGS;
  if (Array.isArray(params)) {
    for (let i = 0; i < params.length; i++) params[i] = bindValue(params[i], i);
    return params as SqlValue[];
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
    return named as Record<string, SqlValue>;
  }
  throw new SqliteError(
    ErrorCode.BadRequest,
    "Cannot bind parameters: expected an array (positional) or a map (named)",
  );
}

function bindValue(v: unknown, key: number | string): SqlValue {
  switch (typeof v) {
    case "number":
      if (v === v) return v;
      break;
    case "boolean":
      return v ? 1 : 0;
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
