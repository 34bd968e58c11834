/**
 * Sending one call: parameters checked before anything is sent, options
 * reduced to what the wire carries, and the request sent on the connection
 * a {@link Route} picks.
 *
 * @module
 */

import { ErrorCode, SqliteError } from "../protocol/errors.ts";
import type {
  CallOptions,
  Replies,
  Requests,
  WireCallOptions,
  WireParams,
} from "../protocol/messages.ts";
import { describeKind, invalidParamsMessage, paramsKindMessage } from "../protocol/values.ts";
import { abortable, type ReplyOp } from "./link.ts";
import type { Route } from "./route.ts";
import { ownBytes, readParams } from "./_snapshot.ts";
import { waitsForWriter } from "./connection.ts";

/** A value a statement parameter may hold. */
export type BindValue = null | number | bigint | boolean | string | Uint8Array;

/** Statement parameters: positional (array) or named (object). */
export type BindParams = readonly BindValue[] | Readonly<Record<string, BindValue>>;

/**
 * The parameters `P` a call accepts, checked against their own type, as the
 * run time takes them: an array of {@link BindValue}, or an object each of
 * whose properties is one, also one typed by an interface
 * (`interface UserParams { name: string }`), which {@link BindParams}' index
 * signature alone refuses; or `null`, no parameters, as leaving them out. A
 * property of another type (`Date`, `undefined`, an object) is refused at
 * compile time, and so is an optional one (`name?: string`): absent, the
 * statement's parameter would have no value, and set, a statement without
 * that parameter refuses the key (both `INVALID_PARAM` at run time). So are
 * a scalar (`stmt.run(1)`: pass `[1]`) and a function, which the run time
 * refuses too. The run time takes only a plain object for named parameters:
 * an instance of a class whose properties are all {@link BindValue}s passes
 * this type and is refused with `INVALID_PARAM` (pass `{ ...instance }`).
 *
 * @example
 * ```ts
 * import type { BindParamsOf } from "@netsqlite/netsqlite";
 * interface UserParams { name: string; age: number }
 * function check<P extends BindParamsOf<P>>(params: P): P {
 *   return params;
 * }
 * const p: UserParams = { name: "ada", age: 36 };
 * if (check(p).age !== 36) throw new Error("expected 36");
 * ```
 */
export type BindParamsOf<P> =
  | readonly BindValue[]
  | null
  // A function's `apply`, `bind` and `call` are methods, not BindValues: these optional
  // properties refuse a function (a parameter of one of these names is fine). A conditional
  // type on `P` would make this type, the constraint of `P`, circular.
  | (
    & object
    & { readonly apply?: BindValue; readonly bind?: BindValue; readonly call?: BindValue }
    & { readonly [K in keyof P]-?: BindValue }
  );

/** Result of `run()`. */
export interface RunResult {
  /**
   * Rows changed by the statement: always a `number` (see {@link changesOf}),
   * as in better-sqlite3.
   */
  changes: number;
  /** Rowid of the last inserted row: a `bigint` beyond 2^53 − 1 (rowids are 64-bit). */
  lastInsertRowid: number | bigint;
}

/**
 * A reply's change count as a `number`, which holds every count a statement
 * can reach in practice exactly: SQLite counts one per row the statement
 * inserts, updates or deletes (not those of its triggers), and 2^53 of them
 * would take one statement decades (at ten million rows a second, 28
 * years; the server's statement timeout stops it after 30 s by default).
 * A server that reports more (a bug) gets an error, not a rounded count.
 */
export function changesOf(changes: number | bigint): number {
  if (typeof changes === "number") return changes;
  if (changes >= 0n && changes <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(changes);
  throw new SqliteError(
    ErrorCode.Internal,
    `Statement ran, but the server reported an impossible change count: ${changes} ` +
      "(above 2^53 - 1)",
  );
}

/**
 * Sends one request on the route's connection. `args` are the client's own
 * (parameters from {@link ownParams}); a request that has to wait for a
 * connection copies the bytes of their `Uint8Array`s now, so that what the
 * caller changes meanwhile is not sent.
 */
export function call<O extends ReplyOp>(
  route: Route,
  op: O,
  args: Requests[O],
  signal?: AbortSignal,
): Promise<Replies[O]> {
  // Classified once: where the pool sends it, and what its connection carries.
  const writes = waitsForWriter(op, args[0]);
  const c = route.connection(writes);
  if (c instanceof Promise) {
    ownBytes(args);
    return abortable(c.then((conn) => conn.request(op, args, signal, undefined, writes)), signal);
  }
  return c.request(op, args, signal, undefined, writes);
}

/**
 * The parameters of one call as sent: the caller's read once (see
 * `readParams`), and that copy checked, before anything is sent. Checking
 * and sending the same copy, a value read twice (a getter, a Proxy) cannot
 * pass the check as one value and be sent as another.
 *
 * @param params What the caller passed as parameters.
 * @param where Prefix for the message (`"Batch statement 2: "`).
 * @returns the copy to send (its `Uint8Array`s the caller's: a request that
 *   waits before it is encoded copies them, `ownBytes`).
 * @throws {SqliteError} `INVALID_PARAM` naming the first parameter that
 *   cannot be stored exactly, or saying what was passed instead of
 *   parameters.
 */
export function ownParams(params: unknown, where = ""): WireParams {
  const own = readParams(params);
  const problem = own === undefined ? paramsKindMessage(params) : invalidParamsMessage(own);
  if (problem !== undefined) throw new SqliteError(ErrorCode.InvalidParam, where + problem);
  return own as WireParams;
}

/**
 * Refuses, before anything is sent, SQL that is not a string, and SQL text
 * that is not well-formed UTF-16. Not a string: the wire's `query`, `run` and
 * `iterate` take a number in the SQL's place as a prepared statement's handle,
 * so `db.query(1)` would run whatever statement has handle 1 on the
 * connection; only a `Statement` sends handles. A lone surrogate has no
 * UTF-8 form, and the wire would carry U+FFFD in its place (the same string as
 * a parameter is refused too).
 *
 * @param where Prefix for the message (`"Batch statement 2: "`).
 * @throws {SqliteError} `BAD_REQUEST` when `sql` is not a string (the code the
 *   server gives SQL of a wrong type); `INVALID_PARAM` naming the surrogate's
 *   UTF-16 index.
 */
export function checkSql(sql: unknown, where = ""): asserts sql is string {
  if (typeof sql !== "string") {
    throw new SqliteError(
      ErrorCode.BadRequest,
      `${where}Cannot send SQL: expected a string, got ${
        sql === undefined ? "undefined" : describeKind(sql)
      } (a prepared statement runs through its Statement)`,
    );
  }
  if (sql.isWellFormed()) return;
  let i = 0;
  for (; i < sql.length; i++) {
    const c = sql.charCodeAt(i);
    if (c < 0xd800 || c > 0xdfff) continue;
    const d = c <= 0xdbff && i + 1 < sql.length ? sql.charCodeAt(i + 1) : 0;
    if (d < 0xdc00 || d > 0xdfff) break;
    i++;
  }
  const unit = sql.charCodeAt(i).toString(16).toUpperCase();
  throw new SqliteError(
    ErrorCode.InvalidParam,
    `${where}Cannot send SQL: it has a lone UTF-16 surrogate (U+${unit}) at index ${i}, ` +
      "which UTF-8 cannot represent",
  );
}

/** Call options as sent: only what the server reads (the signal stays here). */
export function wireOptions(
  options: CallOptions | undefined,
  first = false,
): WireCallOptions | null {
  const timeout = options?.timeout;
  if (!first) return timeout === undefined ? null : { timeout };
  // get(): the server steps the statement once and sends the first row alone.
  return timeout === undefined ? { first } : { timeout, first };
}
