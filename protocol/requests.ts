/**
 * The server's side of the typed schema in `messages.ts`: checks a decoded
 * frame against it and normalises it for the engine. Every element a client
 * may send for an op is returned in {@link DecodedArgs}; the session spreads
 * those tuples into the engine's methods, so an element the engine does not
 * take is a type error.
 *
 * @module
 */

import { ErrorCode, SqliteError } from "./errors.ts";
import {
  type BatchItem,
  type CheckpointMode,
  type HelloRequest,
  Op,
  type StatementRef,
  type SubscribeRequest,
  type WireBatchOptions,
  type WireCallOptions,
  type WireParams,
} from "./messages.ts";

/** Arguments of each op as the engine takes them (options flattened to their fields). */
export interface DecodedArgs {
  /** `[sql, timeout]`: `timeout`, one deadline for the whole script */
  [Op.Exec]: [sql: string, timeout: number | undefined];
  /** `[sql or handle, params, timeout]` */
  [Op.Query]: [
    sql: StatementRef,
    params: WireParams | undefined,
    timeout: number | undefined,
    first: boolean,
  ];
  /** `[sql or handle, params, timeout]` */
  [Op.Run]: [sql: StatementRef, params: WireParams | undefined, timeout: number | undefined];
  /** `[items, options, timeout]` */
  [Op.Batch]: [
    items: BatchItem[],
    options: WireBatchOptions | null,
    timeout: number | undefined,
  ];
  /** `[sql]` */
  [Op.Prepare]: [sql: string];
  /** `[handle]` */
  [Op.Finalize]: [handle: number];
  /** `[sql or handle, params, timeout]` */
  [Op.Iterate]: [sql: StatementRef, params: WireParams | undefined, timeout: number | undefined];
  /** `[cursor]` */
  [Op.Next]: [cursor: number];
  /** `[cursor]` */
  [Op.CloseCursor]: [cursor: number];
  /** `[targetId, unsent]`: `unsent`, the request never sent, as `[op, targetId, ...args]` */
  [Op.Cancel]: [targetId: number, unsent: Envelope | null];
  /** `[]` */
  [Op.Stats]: [];
  /** `[mode]` */
  [Op.Checkpoint]: [mode: CheckpointMode];
  /** `[into]`: a server-side path, or `null` for VACUUM in place */
  [Op.Vacuum]: [into: string | null];
  /** `[]` */
  [Op.Integrity]: [];
  /** `[dest]`: a server-side path */
  [Op.Backup]: [dest: string];
  /** `[options]` */
  [Op.Subscribe]: [options: SubscribeRequest];
  /** `[subscription]` */
  [Op.Unsubscribe]: [subscription: number];
}

/** A checked request: its op, id and normalised arguments. */
export type DecodedRequest = {
  [K in keyof DecodedArgs]: { op: K; id: number; args: DecodedArgs[K] };
}[keyof DecodedArgs];

/** A request frame's envelope: `[op, id, ...args]` with a numeric op and a valid id. */
export type Envelope = [op: number, id: number, ...args: unknown[]];

/**
 * Returns `msg` as an {@link Envelope} when it is `[op, id, ...]` with a
 * numeric op and an id in 1..2^32-1, else `null`: such a frame cannot be
 * answered, so the connection is closed. An op, id or first argument that
 * arrived as a 64-bit MessagePack int (decoded as a bigint, as many
 * MessagePack libraries encode every integer) is converted to a number in
 * place: the first argument, when an integer, is always a control integer (a
 * statement handle, cursor, cancel target or subscription, never a SQL
 * value), and everything downstream (the session's cursor-idle and slow-log
 * bookkeeping included) then sees one kind of number.
 */
export function asEnvelope(msg: unknown): Envelope | null {
  if (!Array.isArray(msg)) return null;
  msg[0] = controlInt(msg[0]);
  msg[1] = controlInt(msg[1]);
  if (msg.length > 2) msg[2] = controlInt(msg[2]);
  return typeof msg[0] === "number" && isId(msg[1]) ? msg as Envelope : null;
}

/**
 * A control integer (op, id, handle, cursor, timeout, version, feed option)
 * as a number: a bigint (how 64-bit MessagePack ints decode) within
 * ±(2^53 − 1) becomes a number; any other value is returned unchanged, for
 * the check that follows to refuse. Never applied to SQL parameter values,
 * which keep their type.
 */
export function controlInt(v: unknown): unknown {
  return typeof v === "bigint" && v >= -MAX_SAFE && v <= MAX_SAFE ? Number(v) : v;
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/**
 * Checks the `hello` request's payload.
 *
 * @throws {SqliteError} `BAD_REQUEST` when it is not `[0, id, {version: integer}]`
 *   (within ±(2^53 − 1), as every control integer).
 */
export function decodeHello(msg: Envelope): HelloRequest {
  const opts = msg[2] as { version?: unknown; token?: unknown; admin?: unknown } | undefined;
  if (msg[0] !== Op.Hello) throw badRequest("Cannot start session: first request must be hello");
  if (typeof opts !== "object" || opts === null || Array.isArray(opts)) {
    throw badRequest(
      `Cannot start session: hello must carry {version: integer}, got ${typeName(opts)}`,
    );
  }
  const version = controlInt(opts.version);
  // A control integer: a float that is none, or past 2^53 − 1, is no version.
  if (typeof version !== "number" || !Number.isSafeInteger(version)) {
    throw badRequest(
      `Cannot start session: hello must carry {version: integer}, got ${typeName(version)}`,
    );
  }
  if (opts.token !== undefined && opts.token !== null && typeof opts.token !== "string") {
    throw badRequest("Cannot start session: hello token must be a string");
  }
  if (opts.admin !== undefined && opts.admin !== null && typeof opts.admin !== "boolean") {
    throw badRequest("Cannot start session: hello admin must be a boolean");
  }
  const hello: HelloRequest = { version };
  if (typeof opts.token === "string") hello.token = opts.token;
  if (opts.admin === true) hello.admin = true;
  return hello;
}

/**
 * Checks a request against the schema and normalises its arguments.
 *
 * @throws {SqliteError} `BAD_REQUEST` naming what is wrong (unknown op, wrong types).
 */
export function decodeRequest(msg: Envelope): DecodedRequest {
  const id = msg[1];
  switch (msg[0]) {
    case Op.Exec:
      if (msg[3] !== undefined && msg[3] !== null) {
        throw badRequest(
          "Cannot run exec: it takes no parameters (a script of zero or more statements); " +
            "send one statement with run or query to bind parameters",
        );
      }
      return { op: Op.Exec, id, args: [sqlText(msg[2]), timeoutOf(msg[4])] };
    case Op.Query:
      return { op: Op.Query, id, args: [...statementCall(msg), firstOnly(msg[4])] };
    case Op.Run:
      return { op: Op.Run, id, args: statementCall(msg) };
    case Op.Iterate:
      return { op: Op.Iterate, id, args: statementCall(msg) };
    case Op.Batch:
      return {
        op: Op.Batch,
        id,
        args: [batchItems(msg[2]), batchOptions(msg[3]), timeoutOf(msg[3])],
      };
    case Op.Prepare:
      if (msg[3] !== undefined && msg[3] !== null) {
        throw badRequest(
          "Cannot prepare: it takes no parameters; bind them when the handle runs " +
            "(query, run or iterate with the handle)",
        );
      }
      return { op: Op.Prepare, id, args: [sqlText(msg[2])] };
    case Op.Finalize:
      return { op: Op.Finalize, id, args: [handle(msg[2])] };
    case Op.Next:
      return { op: Op.Next, id, args: [handle(msg[2], "a cursor")] };
    case Op.CloseCursor:
      return { op: Op.CloseCursor, id, args: [handle(msg[2], "a cursor")] };
    case Op.Cancel: {
      const target = msg[2];
      if (!isId(target)) throw badRequest(`Expected the id of the request to cancel`);
      const unsent = Array.isArray(msg[3])
        ? asEnvelope([msg[3][0], target, ...msg[3].slice(1)])
        : null;
      return { op: Op.Cancel, id, args: [target as number, unsent] };
    }
    case Op.Stats:
      return { op: Op.Stats, id, args: [] };
    case Op.Checkpoint:
      return { op: Op.Checkpoint, id, args: [checkpointMode(msg[2])] };
    case Op.Vacuum: {
      const into = msg[2] ?? null;
      return { op: Op.Vacuum, id, args: [into === null ? null : path(into, "vacuum")] };
    }
    case Op.Integrity:
      return { op: Op.Integrity, id, args: [] };
    case Op.Backup:
      return { op: Op.Backup, id, args: [path(msg[2], "backup")] };
    case Op.Subscribe:
      return { op: Op.Subscribe, id, args: [subscribeOptions(msg[2])] };
    case Op.Unsubscribe:
      return { op: Op.Unsubscribe, id, args: [handle(msg[2], "a subscription")] };
    case Op.Hello:
      // (The session reads the first frame as its hello; a second is no request.)
      throw badRequest("Unexpected hello: this connection's hello was already accepted");
    default:
      throw badRequest(`Unknown op ${String(msg[0])}`);
  }
}

function statementCall(
  msg: Envelope,
): [StatementRef, WireParams | undefined, number | undefined] {
  return [sqlOrHandle(msg[2]), params(msg[3]), timeoutOf(msg[4])];
}

function isId(v: unknown): boolean {
  return typeof v === "number" && Number.isInteger(v) && v > 0 && v <= 0xffffffff;
}

function badRequest(message: string): SqliteError {
  return new SqliteError(ErrorCode.BadRequest, message);
}

function sqlText(v: unknown): string {
  if (typeof v !== "string") throw badRequest(`Expected SQL text, got ${typeName(v)}`);
  return v;
}

function sqlOrHandle(v: unknown): StatementRef {
  if (typeof v === "string" || (typeof v === "number" && Number.isSafeInteger(v))) return v;
  throw badRequest(`Expected SQL text or a statement handle, got ${typeName(v)}`);
}

/** A control integer naming `what` the op acts on (a statement handle, a cursor, a subscription). */
function handle(v: unknown, what = "a statement handle"): number {
  if (typeof v === "number" && Number.isSafeInteger(v)) return v;
  throw badRequest(`Expected ${what}, got ${typeName(v)}`);
}

function params(v: unknown): WireParams | undefined {
  if (v === undefined || v === null || typeof v === "object") return v as WireParams | undefined;
  throw badRequest(`Expected parameters as an array or a map, got ${typeName(v)}`);
}

/**
 * Longest deadline a timer holds (2^31 − 1 ms, about 24.8 days): a longer
 * one, `Infinity` included, is taken as this (a timer given more fires at once).
 */
const MAX_TIMEOUT = 2 ** 31 - 1;

function timeoutOf(v: unknown): number | undefined {
  if (v === undefined || v === null) return undefined;
  const t = timeoutValue((v as WireCallOptions).timeout);
  // Options must be a map: an array or a bin (options sent positionally)
  // would otherwise pass as no options, the deadline asked for lost.
  if (
    typeof v !== "object" || Array.isArray(v) || v instanceof Uint8Array ||
    (t !== undefined && (typeof t !== "number" || !(t > 0)))
  ) {
    throw badRequest("Expected call options {timeout?: positive number of ms}");
  }
  return t === undefined ? undefined : Math.min(t, MAX_TIMEOUT);
}

/** A `timeout` option as a number: a bigint of any size converts (past `MAX_TIMEOUT` it is capped). */
function timeoutValue(t: unknown): unknown {
  return typeof t === "bigint" ? Number(t) : t;
}

function firstOnly(v: unknown): boolean {
  if (v === undefined || v === null) return false;
  const first = (v as WireCallOptions).first;
  if (first !== undefined && typeof first !== "boolean") {
    throw badRequest("Expected call options {first?: boolean}");
  }
  return first === true;
}

function batchOptions(v: unknown): WireBatchOptions | null {
  if (v === undefined || v === null) return null;
  const { foreignKeys } = v as WireBatchOptions;
  const timeout = timeoutValue((v as WireBatchOptions).timeout);
  if (
    typeof v !== "object" || Array.isArray(v) ||
    Object.keys(v).some((k) => k !== "foreignKeys" && k !== "timeout") ||
    (foreignKeys !== undefined && typeof foreignKeys !== "boolean") ||
    (timeout !== undefined && (typeof timeout !== "number" || !(timeout > 0)))
  ) {
    throw badRequest(
      "Expected batch options {foreignKeys?: boolean, timeout?: positive number of ms}",
    );
  }
  return foreignKeys === undefined ? null : { foreignKeys };
}

function batchItems(v: unknown): BatchItem[] {
  if (!Array.isArray(v)) throw badRequest(`Expected a list of statements, got ${typeName(v)}`);
  for (let i = 0; i < v.length; i++) {
    const item = v[i];
    if (!Array.isArray(item) || typeof item[0] !== "string") {
      throw badRequest(`Batch statement ${i + 1}: expected [sql, params]`);
    }
    params(item[1]);
  }
  return v as BatchItem[];
}

const CHECKPOINT_MODES: readonly string[] = ["passive", "full", "restart", "truncate"];

function checkpointMode(v: unknown): CheckpointMode {
  if (v === undefined || v === null) return "passive";
  if (typeof v === "string" && CHECKPOINT_MODES.includes(v)) return v as CheckpointMode;
  throw badRequest(
    `Expected a checkpoint mode (${CHECKPOINT_MODES.join(", ")}), got ` +
      (typeof v === "string"
        ? JSON.stringify(v.length > 64 ? `${v.slice(0, 64)}…` : v)
        : typeName(v)),
  );
}

function path(v: unknown, op: string): string {
  const expected = `Expected the ${op} destination as a file path`;
  if (typeof v !== "string") throw badRequest(`${expected}, got ${typeName(v)}`);
  if (v === "") throw badRequest(`${expected}, got an empty string`);
  const nul = v.indexOf("\0");
  if (nul !== -1) {
    throw badRequest(
      `${expected}, got a string with a NUL character (\\0) at ${nul}: no file name can hold one`,
    );
  }
  return v;
}

function subscribeOptions(v: unknown): SubscribeRequest {
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw badRequest(`Expected subscribe options as a map, got ${typeName(v)}`);
  }
  const o = v as Record<string, unknown>;
  const names = (x: unknown, what: string): string[] | undefined => {
    if (x === undefined || x === null) return undefined;
    if (!Array.isArray(x) || !x.every((n) => typeof n === "string")) {
      throw badRequest(`Expected subscribe option "${what}" as a list of names`);
    }
    return x as string[];
  };
  const out: SubscribeRequest = {};
  const tables = names(o.tables, "tables");
  if (tables !== undefined) out.tables = tables;
  if (typeof o.kv === "boolean") out.kv = o.kv;
  else if (o.kv !== undefined && o.kv !== null) out.kv = names(o.kv, "kv");
  if (o.values !== undefined && o.values !== null) {
    if (typeof o.values !== "boolean") {
      throw badRequest(`Expected subscribe option "values" as a boolean`);
    }
    out.values = o.values;
  }
  for (const k of ["since", "buffer"] as const) {
    const n = controlInt(o[k]);
    if (n === undefined || n === null) continue;
    if (typeof n !== "number" || !Number.isSafeInteger(n) || n < 0 || (k === "buffer" && n < 1)) {
      const what = k === "buffer" ? "a positive" : "a non-negative";
      throw badRequest(`Expected subscribe option "${k}" as ${what} integer`);
    }
    out[k] = n;
  }
  return out;
}

function typeName(v: unknown): string {
  if (typeof v === "bigint") {
    return v >= -MAX_SAFE && v <= MAX_SAFE ? `integer ${v}` : `integer ${v} (beyond ±(2^53 − 1))`;
  }
  // A float64 past 2^53 is refused as a 64-bit int of that size is: it may
  // not be the integer the client meant.
  if (typeof v === "number" && Number.isInteger(v) && !Number.isSafeInteger(v)) {
    return `integer ${BigInt(v)} (beyond ±(2^53 − 1))`;
  }
  // A number that is no integer (1.5, NaN, Infinity) is named by its value:
  // "got number" would puzzle a client that sent a number where one is due.
  if (typeof v === "number" && !Number.isInteger(v)) return String(v);
  if (v === undefined) return "nothing";
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  // Named as MessagePack names them: "object" would puzzle a client written
  // in another language, which sent a bin or a map.
  if (v instanceof Uint8Array) return "bin";
  return typeof v === "object" ? "map" : typeof v;
}
