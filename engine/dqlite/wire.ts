/**
 * dqlite's wire protocol (version 1), as bytes: pure encoders of requests and
 * decoders of responses, no I/O.
 *
 * A connection starts with one word (8 bytes, little endian) holding the
 * protocol version. Then every message is an 8-byte header — body size in
 * words (u32), type (u8), schema version (u8), two unused bytes — and a body
 * of whole words. Strings are UTF-8, NUL-terminated, zero-padded to a word;
 * blobs are a u64 length and the bytes, zero-padded to a word.
 *
 * Parameters travel as a tuple: a u8 count, one u8 type per value, padding to
 * a word, then the values. Rows travel as tuples with 4-bit types (two per
 * byte, padded to a word) and end with a marker word: `0xee…ee` (more rows
 * follow in the next message) or `0xff…ff` (done).
 *
 * A FAILURE answering a QUERY or QUERY_SQL whose statement failed while it
 * ran (integer overflow, malformed JSON, a value too big, not authorized…)
 * is not the plain `code, message` body: dqlite 1.11 writes the failure into
 * the buffer the row set was being encoded in, so its body is that partial
 * row set (column count, column names, any rows already encoded, no end
 * marker) followed by the code and the message. {@link decodeResponse} reads
 * both forms, and returns the rows of the second as the failure's `partial`
 * (the rows the statement returned before it failed); what it cannot read
 * exactly, trailing bytes included, is a `DQLITE_PROTOCOL` error.
 *
 * Value mapping (what {@link decodeResponse} returns for a row value):
 * INTEGER → `number` within ±(2^53 − 1), else `bigint`; FLOAT → `number`;
 * TEXT → `string` (invalid UTF-8 is refused with `INVALID_UTF8`); BLOB →
 * `Uint8Array`; NULL → `null`. dqlite retypes values by the column's declared
 * type: in a `DATETIME`/`DATE`/`TIMESTAMP` column an integer arrives as
 * UNIXTIME and a text as ISO8601, in a `BOOLEAN` column an integer arrives as
 * BOOLEAN. These are returned as the value SQLite stored: UNIXTIME and BOOLEAN
 * as the integer (not reduced to 0/1, not turned into a date), ISO8601 as the
 * string — except that dqlite sends a NULL in such a column as an empty
 * ISO8601 string, so an empty ISO8601 string is returned as `null` (a stored
 * `''` in a `DATETIME` column reads back as `null`).
 *
 * @module
 */

import { ProtocolError, SqliteError } from "../../protocol/errors.ts";
import { invalidReason, paramLabel } from "../../protocol/values.ts";
import type { SqlValue } from "../binding/binding.ts";
import { invalidUtf8Message } from "../binding/_errors.ts";
import { DqliteErrorCode, nulInSql } from "./errors.ts";

/** The protocol version this client speaks. */
export const PROTOCOL_VERSION = 1;
/** Size of a word, of the header and of the handshake, in bytes. */
export const WORD = 8;
/** Largest number of parameters schema 0 can carry (u8 count). */
export const MAX_PARAMS = 255;

/** Request types. */
export const RequestType = {
  Leader: 0,
  Client: 1,
  Heartbeat: 2,
  Open: 3,
  Prepare: 4,
  Exec: 5,
  Query: 6,
  Finalize: 7,
  ExecSql: 8,
  QuerySql: 9,
  Interrupt: 10,
  Add: 12,
  Assign: 13,
  Remove: 14,
  Dump: 15,
  Cluster: 16,
  Transfer: 17,
  Describe: 18,
  Weight: 19,
} as const;

/** Response types. */
export const ResponseType = {
  Failure: 0,
  Server: 1,
  Welcome: 2,
  Servers: 3,
  Db: 4,
  Stmt: 5,
  Result: 6,
  Rows: 7,
  Empty: 8,
  Files: 9,
  Metadata: 10,
} as const;

/** Value type codes of tuples. */
export const ValueType = {
  Integer: 1,
  Float: 2,
  Text: 3,
  Blob: 4,
  Null: 5,
  UnixTime: 9,
  Iso8601: 10,
  Boolean: 11,
} as const;

/** A node's role in the cluster. */
export const NodeRole = { Voter: 0, StandBy: 1, Spare: 2 } as const;

/** A decoded message header. */
export interface Header {
  /** Body size in words. */
  words: number;
  /** Message type. */
  type: number;
  /** Schema version of the body. */
  schema: number;
}

/** One node of the cluster, as a CLUSTER request returns it. */
export interface NodeInfo {
  /** Raft id. */
  id: bigint;
  /** `host:port` the node serves on. */
  address: string;
  /** {@link NodeRole} value. */
  role: number;
}

/**
 * The rows a query's FAILURE carries: those the statement returned before
 * it failed, in that message (see the module doc).
 */
export interface PartialRows {
  /** Column names. */
  columns: string[];
  /** The rows before the failure, or before the first row holding a value not decoded exactly. */
  rows: SqlValue[][];
  /** Set when a row held a value that could not be decoded exactly (`INVALID_UTF8`): it comes first. */
  error?: SqliteError;
}

/** A decoded response. */
export type Response =
  | { type: "failure"; code: number; message: string; partial?: PartialRows }
  | { type: "server"; id: bigint; address: string }
  | { type: "welcome"; heartbeatTimeout: number }
  | { type: "servers"; nodes: NodeInfo[] }
  | { type: "db"; id: number }
  | { type: "stmt"; db: number; id: number; params: number }
  | { type: "result"; lastInsertId: number | bigint; rowsAffected: number }
  | {
    type: "rows";
    columns: string[];
    rows: SqlValue[][];
    more: boolean;
    /** Set when a value could not be decoded exactly (`INVALID_UTF8`); the caller throws it. */
    error?: SqliteError;
    /** With `error`: the index in `rows` of the first row holding such a value. */
    errorAt?: number;
  }
  | { type: "empty" };

/** A decoded FAILURE. */
export type FailureResponse = Extract<Response, { type: "failure" }>;

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
/** For failure messages only (text for people, not a value): invalid bytes become U+FFFD. */
const lenientDecoder = new TextDecoder("utf-8", { ignoreBOM: true });

function protocolError(message: string): ProtocolError {
  return new ProtocolError(DqliteErrorCode.Protocol, message);
}

/** Pads `n` up to a whole number of words. */
function pad(n: number): number {
  return (n + 7) & ~7;
}

/** A growing little-endian body buffer. */
class Writer {
  #buf = new Uint8Array(64);
  #view = new DataView(this.#buf.buffer);
  #len = 0;

  #room(n: number): void {
    if (this.#len + n <= this.#buf.length) return;
    let size = this.#buf.length * 2;
    while (size < this.#len + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.#buf.subarray(0, this.#len));
    this.#buf = next;
    this.#view = new DataView(next.buffer);
  }

  u8(v: number): void {
    this.#room(1);
    this.#buf[this.#len++] = v;
  }

  u32(v: number): void {
    this.#room(4);
    this.#view.setUint32(this.#len, v, true);
    this.#len += 4;
  }

  u64(v: bigint | number): void {
    this.#room(8);
    this.#view.setBigUint64(this.#len, BigInt(v), true);
    this.#len += 8;
  }

  i64(v: bigint): void {
    this.#room(8);
    this.#view.setBigInt64(this.#len, v, true);
    this.#len += 8;
  }

  f64(v: number): void {
    this.#room(8);
    this.#view.setFloat64(this.#len, v, true);
    this.#len += 8;
  }

  /** Zero bytes up to the next word boundary (the buffer is zero-filled). */
  align(): void {
    const to = pad(this.#len);
    this.#room(to - this.#len);
    this.#len = to;
  }

  text(s: string): void {
    const bytes = encoder.encode(s);
    this.#room(pad(bytes.length + 1));
    this.#buf.set(bytes, this.#len);
    this.#len += bytes.length + 1;
    this.align();
  }

  blob(b: Uint8Array): void {
    this.u64(b.length);
    this.#room(pad(b.length));
    this.#buf.set(b, this.#len);
    this.#len += b.length;
    this.align();
  }

  /** The message: header (type, schema) and the body written so far. */
  message(type: number, schema = 0): Uint8Array {
    this.align();
    const out = new Uint8Array(WORD + this.#len);
    const view = new DataView(out.buffer);
    view.setUint32(0, this.#len / WORD, true);
    out[4] = type;
    out[5] = schema;
    out.set(this.#buf.subarray(0, this.#len), WORD);
    return out;
  }
}

/**
 * The handshake word: the protocol version, u64 little endian.
 *
 * @example
 * ```ts
 * import { encodeHandshake } from "./wire.ts";
 * if (encodeHandshake().join() !== "1,0,0,0,0,0,0,0") throw new Error("bad handshake");
 * ```
 */
export function encodeHandshake(): Uint8Array {
  const out = new Uint8Array(WORD);
  out[0] = PROTOCOL_VERSION;
  return out;
}

/** LEADER: which node does this node believe is the leader. */
export function encodeLeader(): Uint8Array {
  const w = new Writer();
  w.u64(0);
  return w.message(RequestType.Leader);
}

/** CLIENT: registers the client with id `id` (answered by WELCOME). */
export function encodeClient(id: bigint | number): Uint8Array {
  const w = new Writer();
  w.u64(id);
  return w.message(RequestType.Client);
}

/** OPEN: opens database `name` on this connection (flags and VFS are ignored by dqlite). */
export function encodeOpen(name: string, flags = 0, vfs = ""): Uint8Array {
  const w = new Writer();
  w.text(name);
  w.u64(flags);
  w.text(vfs);
  return w.message(RequestType.Open);
}

/**
 * PREPARE: prepares the first statement of `sql` on database `db`.
 *
 * @throws {SqliteError} `BAD_REQUEST` for SQL containing a NUL character,
 *   `INVALID_PARAM` for one UTF-8 cannot carry (a lone surrogate).
 */
export function encodePrepare(db: number, sql: string): Uint8Array {
  const w = new Writer();
  w.u64(db);
  w.text(checkSql(sql));
  return w.message(RequestType.Prepare);
}

/** EXEC: runs prepared statement `stmt` with `params`. */
export function encodeExec(db: number, stmt: number, params: readonly unknown[]): Uint8Array {
  const w = new Writer();
  w.u32(db);
  w.u32(stmt);
  writeParams(w, params);
  return w.message(RequestType.Exec);
}

/** QUERY: runs prepared statement `stmt` with `params`, returning rows. */
export function encodeQuery(db: number, stmt: number, params: readonly unknown[]): Uint8Array {
  const w = new Writer();
  w.u32(db);
  w.u32(stmt);
  writeParams(w, params);
  return w.message(RequestType.Query);
}

/** FINALIZE: releases prepared statement `stmt`. */
export function encodeFinalize(db: number, stmt: number): Uint8Array {
  const w = new Writer();
  w.u32(db);
  w.u32(stmt);
  return w.message(RequestType.Finalize);
}

/**
 * EXEC_SQL: runs every statement of `sql`; `params` bind to the first one.
 *
 * @throws {SqliteError} `INVALID_PARAM` for a value the protocol cannot carry exactly,
 *   `BAD_REQUEST` for SQL containing a NUL character.
 */
export function encodeExecSql(db: number, sql: string, params: readonly unknown[]): Uint8Array {
  const w = new Writer();
  w.u64(db);
  w.text(checkSql(sql));
  writeParams(w, params);
  return w.message(RequestType.ExecSql);
}

/**
 * QUERY_SQL: runs the first statement of `sql` with `params`, returning rows.
 *
 * @throws {SqliteError} `INVALID_PARAM` for a value the protocol cannot carry exactly,
 *   `BAD_REQUEST` for SQL containing a NUL character.
 */
export function encodeQuerySql(db: number, sql: string, params: readonly unknown[]): Uint8Array {
  const w = new Writer();
  w.u64(db);
  w.text(checkSql(sql));
  writeParams(w, params);
  return w.message(RequestType.QuerySql);
}

/** INTERRUPT: stops the row set being streamed on database `db` (answered by EMPTY). */
export function encodeInterrupt(db: number): Uint8Array {
  const w = new Writer();
  w.u64(db);
  return w.message(RequestType.Interrupt);
}

/** CLUSTER: lists the nodes (format 1: id, address and role). */
export function encodeCluster(format = 1): Uint8Array {
  const w = new Writer();
  w.u64(format);
  return w.message(RequestType.Cluster);
}

/**
 * Refuses SQL that dqlite would cut at a NUL character (`BAD_REQUEST`, as
 * the single-file engines refuse it), or that UTF-8 cannot carry.
 */
function checkSql(sql: string): string {
  if (sql.includes("\0")) throw nulInSql();
  if (!sql.isWellFormed()) {
    throw new SqliteError(
      DqliteErrorCode.InvalidParam,
      "Cannot send SQL: it contains a lone UTF-16 surrogate, which UTF-8 cannot represent",
    );
  }
  return sql;
}

function invalidParam(index: number, reason: string): SqliteError {
  return new SqliteError(
    DqliteErrorCode.InvalidParam,
    `Cannot bind parameter ${paramLabel(index)}: ${reason}`,
  );
}

/**
 * Writes the parameter tuple (schema 0): u8 count, u8 types, padding, values.
 * Nothing at all when there are no parameters (dqlite reads that as none).
 */
function writeParams(w: Writer, params: readonly unknown[]): void {
  if (params.length === 0) return;
  if (params.length > MAX_PARAMS) {
    throw new SqliteError(
      DqliteErrorCode.InvalidParam,
      `Cannot bind ${params.length} parameters: dqlite's protocol carries at most ${MAX_PARAMS}`,
    );
  }
  const types = params.map((v, i) => {
    const reason = invalidReason(v);
    if (reason !== undefined) throw invalidParam(i, reason);
    return paramType(v);
  });
  w.u8(params.length);
  for (const t of types) w.u8(t);
  w.align();
  for (let i = 0; i < params.length; i++) {
    const v = params[i];
    switch (types[i]) {
      case ValueType.Integer:
        w.i64(
          typeof v === "bigint" ? v : typeof v === "boolean" ? (v ? 1n : 0n) : BigInt(v as number),
        );
        break;
      case ValueType.Float:
        w.f64(v as number);
        break;
      case ValueType.Text:
        w.text(v as string);
        break;
      case ValueType.Blob:
        w.blob(v as Uint8Array);
        break;
      default:
        w.u64(0);
    }
  }
}

/** The tuple type of a (valid) parameter; booleans bind as INTEGER 0/1. */
function paramType(v: unknown): number {
  switch (typeof v) {
    case "number":
      return Number.isSafeInteger(v) && !Object.is(v, -0) ? ValueType.Integer : ValueType.Float;
    case "bigint":
    case "boolean":
      return ValueType.Integer;
    case "string":
      return ValueType.Text;
    default:
      return v === null ? ValueType.Null : ValueType.Blob;
  }
}

/**
 * Reads a message header.
 *
 * @example
 * ```ts
 * import { decodeHeader } from "./wire.ts";
 * const h = decodeHeader(new Uint8Array([2, 0, 0, 0, 6, 0, 0, 0]));
 * if (h.words !== 2 || h.type !== 6) throw new Error("bad header");
 * ```
 */
export function decodeHeader(bytes: Uint8Array): Header {
  if (bytes.length < WORD) throw protocolError(`Cannot read header: ${bytes.length} bytes`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, WORD);
  return { words: view.getUint32(0, true), type: bytes[4], schema: bytes[5] };
}

/** A bounds-checked little-endian reader over a message body. */
class Reader {
  readonly #bytes: Uint8Array;
  readonly #view: DataView;
  #pos = 0;

  constructor(bytes: Uint8Array) {
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  get remaining(): number {
    return this.#bytes.length - this.#pos;
  }

  /** The read position, in bytes from the start of the body. */
  get pos(): number {
    return this.#pos;
  }

  #need(n: number, what: string): void {
    if (this.#pos + n > this.#bytes.length) {
      throw protocolError(
        `Cannot read ${what}: ${n} bytes needed at offset ${this.#pos} of ${this.#bytes.length}`,
      );
    }
  }

  peek(): number {
    this.#need(1, "byte");
    return this.#bytes[this.#pos];
  }

  u32(): number {
    this.#need(4, "u32");
    const v = this.#view.getUint32(this.#pos, true);
    this.#pos += 4;
    return v;
  }

  u64(): bigint {
    this.#need(8, "u64");
    const v = this.#view.getBigUint64(this.#pos, true);
    this.#pos += 8;
    return v;
  }

  i64(): bigint {
    this.#need(8, "i64");
    const v = this.#view.getBigInt64(this.#pos, true);
    this.#pos += 8;
    return v;
  }

  f64(): number {
    this.#need(8, "float");
    const v = this.#view.getFloat64(this.#pos, true);
    this.#pos += 8;
    return v;
  }

  bytes(n: number): Uint8Array {
    this.#need(n, "bytes");
    const out = this.#bytes.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    return out;
  }

  text(): string {
    const end = this.#bytes.indexOf(0, this.#pos);
    if (end === -1) throw protocolError(`Cannot read text at offset ${this.#pos}: no NUL`);
    const raw = this.#bytes.subarray(this.#pos, end);
    this.#pos = pad(end + 1);
    if (this.#pos > this.#bytes.length) throw protocolError("Cannot read text: padding missing");
    try {
      return decoder.decode(raw);
    } catch (cause) {
      throw new SqliteError(
        DqliteErrorCode.InvalidText,
        `Cannot decode text: ${raw.length} bytes are not valid UTF-8 (read it as a BLOB with CAST)`,
        undefined,
        { cause },
      );
    }
  }

  /** Moves past a text without decoding it. */
  skipText(): void {
    const end = this.#bytes.indexOf(0, this.#pos);
    if (end === -1) throw protocolError(`Cannot read text at offset ${this.#pos}: no NUL`);
    this.#pos = pad(end + 1);
    if (this.#pos > this.#bytes.length) throw protocolError("Cannot read text: padding missing");
  }

  blob(): Uint8Array {
    const n = this.u64();
    if (n > BigInt(this.remaining)) throw protocolError(`Cannot read blob: length ${n} too large`);
    const len = Number(n);
    const out = this.bytes(len).slice();
    this.#pos = pad(this.#pos);
    if (this.#pos > this.#bytes.length) throw protocolError("Cannot read blob: padding missing");
    return out;
  }

  skip(n: number): void {
    this.#need(n, "padding");
    this.#pos += n;
  }
}

/** int64 → `number` when exactly representable (within ±(2^53 − 1)), else `bigint`. */
export function intValue(v: bigint): number | bigint {
  return v >= -9007199254740991n && v <= 9007199254740991n ? Number(v) : v;
}

/**
 * Decodes a response body of type `type`.
 *
 * @throws {ProtocolError} `DQLITE_PROTOCOL` when the body is malformed or the type unknown.
 * A row value that is TEXT but not valid UTF-8 does not throw: the rows
 * response carries `error` (`INVALID_UTF8`) for the caller to throw once the
 * row set is read to its end.
 */
export function decodeResponse(type: number, body: Uint8Array): Response {
  if (type === ResponseType.Failure) return decodeFailure(body);
  if (type === ResponseType.Rows) return decodeRows(new Reader(body));
  const r = new Reader(body);
  const response = decodeFixed(type, r);
  if (r.remaining !== 0) {
    throw protocolError(
      `Cannot decode ${response.type} response: ${r.remaining} bytes after its end`,
    );
  }
  return response;
}

/** Decodes the responses of fixed layout (not FAILURE, not ROWS). */
function decodeFixed(type: number, r: Reader): Response {
  switch (type) {
    case ResponseType.Server:
      return { type: "server", id: r.u64(), address: r.text() };
    case ResponseType.Welcome:
      return { type: "welcome", heartbeatTimeout: Number(r.u64()) };
    case ResponseType.Servers: {
      const n = Number(r.u64());
      const nodes: NodeInfo[] = [];
      for (let i = 0; i < n; i++) {
        nodes.push({ id: r.u64(), address: r.text(), role: Number(r.u64()) });
      }
      return { type: "servers", nodes };
    }
    case ResponseType.Db: {
      const id = r.u32();
      r.u32();
      return { type: "db", id };
    }
    case ResponseType.Stmt: {
      const db = r.u32();
      const id = r.u32();
      return { type: "stmt", db, id, params: Number(r.u64()) };
    }
    case ResponseType.Result: {
      // last_insert_id is SQLite's signed rowid sent as u64.
      const lastInsertId = intValue(BigInt.asIntN(64, r.u64()));
      return { type: "result", lastInsertId, rowsAffected: Number(r.u64()) };
    }
    case ResponseType.Empty:
      r.u64(); // one unused word
      return { type: "empty" };
    default:
      throw protocolError(`Cannot decode response: unknown type ${type}`);
  }
}

/**
 * The failure `code, message` when it fills `body` from word offset `at` to
 * the end exactly (message NUL-terminated, zero padding to the end) and its
 * code is at most `maxCode`, else null.
 */
function failureAt(
  body: Uint8Array,
  at: number,
  maxCode = 2n ** 64n - 1n,
): FailureResponse | null {
  const textStart = at + WORD;
  if (textStart >= body.length) return null;
  const code = new DataView(body.buffer, body.byteOffset + at, WORD).getBigUint64(0, true);
  if (code > maxCode) return null;
  const nul = body.indexOf(0, textStart);
  if (nul === -1 || pad(nul + 1) !== body.length) return null;
  for (let i = nul + 1; i < body.length; i++) if (body[i] !== 0) return null;
  return {
    type: "failure",
    code: Number(code & 0xffffffffn),
    message: lenientDecoder.decode(body.subarray(textStart, nul)),
  };
}

/**
 * Decodes a FAILURE body: `code, message`, or, for a query that failed while
 * it ran, the partial row set dqlite had encoded, then `code, message` (see
 * the module doc). The rows come back as the failure's `partial`: those
 * before the first row holding a value that cannot be decoded exactly (its
 * error is `partial.error` then); none when a column name cannot be decoded.
 *
 * The two forms cannot be confused: a partial row set is followed by the
 * code and message, so its first column name never ends the body; and a
 * row cannot pass for the failure, because the code word that follows it
 * (an SQLite result code, below 2^32) holds zero bytes, which the message
 * (no NUL before its end) cannot.
 */
function decodeFailure(body: Uint8Array): Response {
  const plain = failureAt(body, 0);
  if (plain !== null) return plain;
  const r = new Reader(body);
  const n = Number(r.u64());
  if (n === 0 || n > 32767) {
    throw protocolError(`Cannot decode failure: ${n} columns before its code`);
  }
  const columns: string[] = [];
  let named = true;
  for (let i = 0; i < n; i++) {
    try {
      columns.push(r.text());
    } catch (err) {
      if (!(err instanceof SqliteError)) throw err; // (a ProtocolError is not one)
      named = false; // (read past: the rows cannot be returned without their names)
    }
  }
  const headerBytes = pad(Math.ceil(n / 2));
  const types = new Uint8Array(n);
  const rows: SqlValue[][] = [];
  let error: SqliteError | undefined;
  while (r.remaining > 0) {
    const failure = failureAt(body, r.pos, 0xffffffffn);
    if (failure !== null) {
      if (!named) return failure;
      const partial: PartialRows = error === undefined
        ? { columns, rows }
        : { columns, rows, error };
      return { ...failure, partial };
    }
    const read = readRow(r, n, headerBytes, types, named ? columns : undefined);
    error ??= read.error;
    if (error === undefined) rows.push(read.row);
  }
  throw protocolError("Cannot decode failure: no code and message after the partial rows");
}

const MARK_PART = 0xee;
const MARK_DONE = 0xff;

function decodeRows(r: Reader): Response {
  const n = Number(r.u64());
  if (n === 0 || n > 32767) throw protocolError(`Cannot decode rows: ${n} columns`);
  const columns: string[] = [];
  for (let i = 0; i < n; i++) columns.push(r.text());
  const headerBytes = pad(Math.ceil(n / 2));
  const types = new Uint8Array(n);
  const rows: SqlValue[][] = [];
  let error: SqliteError | undefined;
  let errorAt = 0;
  for (;;) {
    const first = r.peek();
    if (first === MARK_PART || first === MARK_DONE) {
      const mark = r.u64();
      if (mark !== 0xeeeeeeeeeeeeeeeen && mark !== 0xffffffffffffffffn) {
        throw protocolError(`Cannot decode rows: bad end marker 0x${mark.toString(16)}`);
      }
      if (r.remaining !== 0) throw protocolError("Cannot decode rows: bytes after the end marker");
      const more = first === MARK_PART;
      return error === undefined
        ? { type: "rows", columns, rows, more }
        : { type: "rows", columns, rows, more, error, errorAt };
    }
    const { row, error: rowError } = readRow(r, n, headerBytes, types, columns);
    if (error === undefined && rowError !== undefined) {
      error = rowError;
      errorAt = rows.length;
    }
    rows.push(row);
  }
}

/**
 * Reads one row (type header, then the values). A value that cannot be
 * decoded exactly (`INVALID_UTF8`) is read past and returned as `error`
 * (naming its column, from `columns` when given), with null in its place,
 * so that the message is consumed whole.
 */
function readRow(
  r: Reader,
  n: number,
  headerBytes: number,
  types: Uint8Array,
  columns?: readonly string[],
): { row: SqlValue[]; error?: SqliteError } {
  const header = r.bytes(headerBytes);
  for (let i = 0; i < n; i++) {
    const b = header[i >> 1];
    types[i] = i & 1 ? b >> 4 : b & 0x0f;
  }
  const row: SqlValue[] = new Array(n);
  let error: SqliteError | undefined;
  for (let i = 0; i < n; i++) {
    try {
      row[i] = readValue(r, types[i]);
    } catch (err) {
      if (!(err instanceof SqliteError)) throw err;
      error ??= columns === undefined ? err : invalidColumn(columns[i], err);
      row[i] = null;
    }
  }
  return error === undefined ? { row } : { row, error };
}

/** `INVALID_UTF8` naming column `name`, as the single-file engine words it. */
function invalidColumn(name: string, cause: SqliteError): SqliteError {
  return new SqliteError(
    cause.code,
    invalidUtf8Message(name),
    undefined,
    { cause },
  );
}

function readValue(r: Reader, type: number): SqlValue {
  switch (type) {
    case ValueType.Integer:
    case ValueType.UnixTime:
    case ValueType.Boolean:
      return intValue(r.i64());
    case ValueType.Float:
      return r.f64();
    case ValueType.Text:
      return r.text();
    case ValueType.Iso8601: {
      const s = r.text();
      return s === "" ? null : s;
    }
    case ValueType.Blob:
      return r.blob();
    case ValueType.Null:
      r.skip(8);
      return null;
    default:
      throw protocolError(`Cannot decode row: unknown value type ${type}`);
  }
}
