/**
 * Sending one call: parameters checked before anything is sent, options
 * reduced to what the wire carries, and the request sent on the connection
 * a {@link Route} picks.
 *
 * @module
 */

import { ErrorCode, SqliteError } from "../protocol/errors.ts";
import type { Replies, Requests, WireCallOptions, WireParams } from "../protocol/messages.ts";
import {
  describeKind,
  invalidParamsMessage,
  isPlainObject,
  paramsKindMessage,
} from "../protocol/values.ts";
import { refuseUnknownOptions } from "../protocol/option_names.ts";
import { abortable, heldArgs, type ReplyOp } from "./link.ts";
import type { Route } from "./route.ts";
import { ownBytes, readParams } from "./_snapshot.ts";
import { type PooledConnection, waitsForWriter } from "./connection.ts";

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
    const held = heldArgs(op, args, signal);
    const send = (conn: PooledConnection) =>
      conn.request(op, held.take(), signal, undefined, writes);
    const stop = (err: unknown): never => {
      held.take(); // (stops watching the signal)
      throw err;
    };
    return abortable(c.then(send, stop), signal);
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

/**
 * An option a call may take: the query API's (`timeout`, `signal`, `arrays`,
 * `foreignKeys`), `transaction()`'s `behavior`, a key-value collection's
 * (`ifVersion`, `prefix`, `start`, `end`, `limit`, `reverse`) and
 * `subscribe()`'s (`tables`, `kv`, `values`, `since`, `buffer`, and `signal`).
 */
export type CallOptionName =
  | "timeout"
  | "signal"
  | "arrays"
  | "foreignKeys"
  | "behavior"
  | KvOptionName
  | SubscribeOptionName;

/** An option of a key-value collection's call (`put()`, `list()`, `count()`). */
type KvOptionName = "ifVersion" | "prefix" | "start" | "end" | "limit" | "reverse";

/** An option of `subscribe()` (besides `signal`). */
type SubscribeOptionName = "tables" | "kv" | "values" | "since" | "buffer";

/** How `transaction()` begins (its `behavior` option). */
export type TransactionBehavior = "deferred" | "immediate" | "exclusive";

/**
 * A call's options as checked by {@link callOptions}: each one read once,
 * of the right type, and present only when given (not `undefined`). Those
 * typed `unknown` are data the call checks itself, as it checks its other
 * arguments (a key, a version: `INVALID_PARAM`), or that the server checks
 * (`subscribe()`'s).
 */
export interface CheckedOptions {
  timeout?: number;
  signal?: AbortSignal;
  arrays?: boolean;
  foreignKeys?: boolean;
  behavior?: TransactionBehavior;
  limit?: number;
  reverse?: boolean;
  ifVersion?: unknown;
  prefix?: unknown;
  start?: unknown;
  end?: unknown;
  tables?: unknown;
  kv?: unknown;
  values?: unknown;
  since?: unknown;
  buffer?: unknown;
}

/**
 * What one call takes (of the query API, `transaction()`, `reserve()`,
 * `subscribe()`, a key-value collection's), for {@link checkArgCount} and
 * {@link callOptions}: its positional arguments and its option names.
 */
export interface CallShape {
  /** The call as messages name it: `"get()"`, `"Statement.get()"`, `"KvCollection.put()"`. */
  readonly name: string;
  /** Its positional arguments, the options last: `["sql", "params", "options"]`. */
  readonly args: readonly string[];
  /** The options it takes, in the order messages list them. */
  readonly options: readonly CallOptionName[];
  /** Said after the refusal of an argument too many, for a call without `params`. */
  readonly extraHint?: string;
  /** Said after the refusal of an array as the options: what it most likely was. */
  readonly arrayHint?: string;
  /**
   * The whole message refusing an option key it does not take, when there is
   * more to say than the names it takes (`exec()`: a named parameter, or
   * `timeout`); `undefined` for the plain refusal.
   */
  readonly unknownKey?: (key: string) => string | undefined;
  /** The whole message refusing an array as the options, instead of the plain one. */
  readonly arrayMessage?: string;
  /**
   * Said after the refusal of a value that is no object as the options: what
   * it most likely was (`exec()`: a parameter, spread as `@db/sqlite` takes it).
   */
  readonly valueHint?: string;
}

/** No options given: shared, never written. */
const NO_OPTIONS: CheckedOptions = Object.freeze({});

/**
 * Refuses a call given more positional arguments than it takes: silently
 * dropped, an extra argument (a second parameter array, parameters spread
 * after the first) would leave the call running without what the caller
 * meant.
 *
 * @param count The call's `arguments.length`.
 * @throws {TypeError} naming the call and the arguments it takes.
 */
export function checkArgCount(shape: CallShape, count: number): void {
  if (count <= shape.args.length) return;
  const params = shape.args.includes("params")
    ? ": pass the parameters in one array (positional) or plain object (named)"
    : shape.extraHint === undefined
    ? ""
    : `: ${shape.extraHint}`;
  throw new TypeError(
    `Invalid ${shape.name} call: it takes at most ${shape.args.length} argument` +
      `${shape.args.length === 1 ? "" : "s"} (${shape.args.join(", ")}), got ${count}${params}`,
  );
}

/**
 * Checks `batch()`'s statements: an array (`[]` too; each item is checked
 * by {@link checkBatchItem} as it is read). One statement object alone has no `length` and would read as an empty
 * batch, resolving to `[]` with nothing run; a string item would be refused
 * for an SQL of `undefined`.
 */
export function checkBatchStatements(
  statements: unknown,
): asserts statements is readonly unknown[] {
  if (!Array.isArray(statements)) {
    const one = typeof statements === "object" && statements !== null && "sql" in statements
      ? " (one statement: pass [{ sql, params }], or use run())"
      : "";
    throw new TypeError(
      "Invalid batch() call: expected an array of { sql, params } as statements, got " +
        `${statements === undefined ? "undefined" : describeKind(statements)}${one}`,
    );
  }
}

/** Checks one of `batch()`'s statements (`where`: "Batch statement 2: "): an object. */
export function checkBatchItem(
  item: unknown,
  where: string,
): asserts item is { sql: unknown; params?: unknown } {
  if (typeof item === "object" && item !== null && !Array.isArray(item)) return;
  throw new TypeError(
    `${where}expected { sql, params }, got ${
      item === undefined ? "undefined" : describeKind(item)
    }`,
  );
}

/**
 * Checks a call's options, the same way for every call: `undefined` or
 * `null` (none, as parameters take `null` for none), or a plain object
 * whose keys are among the call's options, each `undefined` or of its type
 * (`timeout` a positive number of ms, `Infinity` the longest the server
 * takes; `signal` an `AbortSignal`, or `null`, none; `arrays`,
 * `foreignKeys` and `reverse` booleans; `behavior` one of `transaction()`'s;
 * `limit` an integer >= 0; the others are checked by the call or the
 * server, see {@link CheckedOptions}). A key the call does not take is
 * refused rather than ignored: a misspelt `timeOut` would leave the call
 * without its deadline, a misspelt `ifVersion` would make a conditional
 * put unconditional, a misspelt `tables` would subscribe to every table.
 *
 * @param shape The call.
 * @param options What the caller passed as options.
 * @returns the options, each read once (what is checked is what is used).
 * @throws {TypeError} naming the call, and the option when one is wrong.
 */
export function callOptions(shape: CallShape, options: unknown): CheckedOptions {
  if (options === undefined || options === null) return NO_OPTIONS;
  const takes = `{ ${shape.options.join(", ")} }`;
  if (typeof options !== "object" || options === null) {
    throw new TypeError(
      `Invalid ${shape.name} options: expected ${takes}, got ${show(options)}` +
        (shape.valueHint === undefined ? "" : ` (${shape.valueHint})`),
    );
  }
  if (Array.isArray(options)) {
    throw new TypeError(
      shape.arrayMessage ??
        `Invalid ${shape.name} options: expected ${takes}, got an array` +
          (shape.arrayHint === undefined ? "" : ` (${shape.arrayHint})`),
    );
  }
  if (!isPlainObject(options)) {
    const signal = options instanceof AbortSignal && shape.options.includes("signal")
      ? " (pass a signal as { signal })"
      : "";
    throw new TypeError(
      `Invalid ${shape.name} options: expected a plain object ${takes}, got ` +
        describeKind(options) + signal,
    );
  }
  for (const key of Object.keys(options)) {
    if ((shape.options as readonly string[]).includes(key)) continue;
    const message = shape.unknownKey?.(key);
    if (message !== undefined) throw new TypeError(message);
    // Throws, naming the option most likely meant, or else those the call takes.
    refuseUnknownOptions({ [key]: true }, shape.options, shape.name);
  }
  const given = options as Record<CallOptionName, unknown>;
  const checked: CheckedOptions = {};
  for (const key of shape.options) {
    const value = given[key];
    // (`signal: null` is none, as in fetch()'s RequestInit.)
    if (value === undefined || (value === null && key === "signal")) continue;
    const problem = optionProblem(key, value);
    if (problem !== null) {
      throw new TypeError(`Invalid ${shape.name} option "${key}": ${problem}`);
    }
    (checked as Record<CallOptionName, unknown>)[key] = value;
  }
  return checked;
}

/** What is wrong with `value` as the option `key`, or `null`. */
function optionProblem(key: CallOptionName, value: unknown): string | null {
  switch (key) {
    case "timeout":
      // NaN fails `> 0`; the server takes Infinity as its longest deadline (2^31 − 1 ms).
      return typeof value === "number" && value > 0
        ? null
        : `expected a positive number of ms, got ${show(value)}`;
    case "signal":
      return value instanceof AbortSignal
        ? null
        : `expected an AbortSignal, got ${describeKind(value)}`;
    case "arrays":
    case "foreignKeys":
    case "reverse":
      return typeof value === "boolean" ? null : `expected a boolean, got ${show(value)}`;
    case "behavior":
      return value === "deferred" || value === "immediate" || value === "exclusive"
        ? null
        : `expected "deferred", "immediate" or "exclusive", got ${show(value)}`;
    case "limit":
      // Written into the SQL as a number: a safe integer's digits are the number itself.
      return Number.isSafeInteger(value) && (value as number) >= 0
        ? null
        : `expected an integer from 0 to 2^53 - 1, got ${show(value)}`;
    case "ifVersion":
    case "prefix":
    case "start":
    case "end":
    case "tables":
    case "kv":
    case "values":
    case "since":
    case "buffer":
      // Checked by the call (`INVALID_PARAM`, as the key or version it takes as an argument)
      // or by the server (`subscribe()`'s).
      return null;
  }
}

/** A value for a message: a primitive as written (a string quoted), an object by its kind. */
export function show(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "bigint") return `${value}n`;
  if (typeof value === "function" || (typeof value === "object" && value !== null)) {
    return describeKind(value);
  }
  return String(value);
}

/** The server's refusal of a named value the statement has no parameter for. */
const NO_SUCH_PARAMETER =
  /^Cannot bind parameter "[^"]*": the statement has no parameter of that name$|^Cannot bind a parameters object: the statement has positional parameters/;

/** The server's refusal of a call that sent no parameters to a statement that has some. */
const NONE_GIVEN = /^Missing parameter values: the statement has \d+ parameters?, 0 were given$/;

/**
 * A refusal of a call's parameters, with a hint when they are `null` for a
 * statement that has parameters (better-sqlite3's `stmt.get(null)` binds
 * NULL to its one `?`; here `null` parameters are none), or when they are
 * most likely the call's options passed in the parameters' place
 * (`db.query(sql, { timeout: 100 })`): a plain object whose keys are all
 * options of the call, refused because the statement has no parameter of
 * such a name or only positional ones (the server's `INVALID_PARAM`), or
 * because it holds an `AbortSignal` or `undefined`, which no parameter
 * takes (the client's). Other errors, and a statement that has such
 * parameters, are left as they are.
 *
 * @param err What the call failed with.
 * @param shape The call, whose options and arguments the hint names.
 * @param params What was passed as parameters (or their copy; `null` only when `null` was passed).
 * @returns `err`, or an `INVALID_PARAM` `SqliteError` with the hint, `err` its cause.
 */
export function optionsAsParams(err: unknown, shape: CallShape, params: unknown): unknown {
  if (!(err instanceof SqliteError) || err.code !== ErrorCode.InvalidParam) return err;
  if (params === null && NONE_GIVEN.test(err.message)) {
    return new SqliteError(
      err.code,
      `${err.message} (null parameters are none: to bind NULL, pass [null])`,
      err.sqliteCode,
      { cause: err },
    );
  }
  if (typeof params !== "object" || params === null || !isPlainObject(params)) return err;
  const keys = Object.keys(params);
  const options = shape.options as readonly string[];
  if (keys.length === 0 || !keys.every((key) => options.includes(key))) return err;
  // No parameter takes a signal, nor undefined (an option left unset).
  const unbindable = Object.values(params).some((v) => v instanceof AbortSignal || v === undefined);
  if (!unbindable && !NO_SUCH_PARAMETER.test(err.message)) return err;
  const args = shape.args.map((arg) =>
    arg === "params" ? "[]" : arg === "options" ? `{ ${keys.join(", ")} }` : arg
  );
  return new SqliteError(
    err.code,
    `${err.message} (options go after the parameters: ${shape.name.slice(0, -2)}(${
      args.join(", ")
    }))`,
    err.sqliteCode,
    { cause: err },
  );
}

/** Call options as sent: only what the server reads (the signal stays here). */
export function wireOptions(
  options: CheckedOptions | undefined,
  first = false,
): WireCallOptions | null {
  const timeout = options?.timeout;
  if (!first) return timeout === undefined ? null : { timeout };
  // get(): the server steps the statement once and sends the first row alone.
  return timeout === undefined ? { first } : { timeout, first };
}
