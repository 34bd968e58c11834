/**
 * Message shapes of the netsqlite protocol (see PROTOCOL.md).
 *
 * Requests are MessagePack arrays `[op, id, ...args]`; replies are
 * `[id, status, payload]`. Arrays rather than maps keep encoding cheap.
 *
 * @module
 */

/** Version of the protocol spoken by this library. */
export const PROTOCOL_VERSION = 1;

/** Operation codes: the first element of every request. */
export const Op = {
  Hello: 0,
  Exec: 1,
  Query: 2,
  Run: 3,
  Batch: 4,
  Prepare: 5,
  Finalize: 6,
  Iterate: 7,
  Next: 8,
  CloseCursor: 9,
} as const;

/** One of the {@link Op} values. */
export type OpCode = typeof Op[keyof typeof Op];

/**
 * Reply status: bit 0 set means the payload is an error, bit 1 set means the
 * connection is inside a transaction after this request.
 */
export const Status = {
  Ok: 0,
  Error: 1,
  InTransaction: 2,
} as const;

/** Id used for connection-level errors that answer no particular request. */
export const CONNECTION_ERROR_ID = 0;

/** Statement parameters: positional (array) or named (object). */
export type WireParams = unknown[] | Record<string, unknown> | null;

/** Limits and settings the server reports in its handshake reply. */
export interface ServerLimits {
  /** Largest frame payload the server accepts and sends, in bytes. */
  maxFrameSize: number;
  /** How long a write waits for the writer before `BUSY_TIMEOUT`, in ms. */
  busyTimeout: number;
  /** Idle lease of an open transaction before `TX_TIMEOUT`, in ms (0 = none). */
  txIdleTimeout: number;
  /** Default deadline of statements the server can stop, in ms. */
  statementTimeout: number;
  /** Largest buffered (`query`) result, in bytes. */
  maxResultBytes: number;
  /** Cursors one connection may hold open at once. */
  maxCursors: number;
  /** Idle time allowed inside a partly received frame, in ms. */
  frameTimeout: number;
}

/** Per-call options, the optional last element of query/run/iterate requests. */
export interface CallOptions {
  /** Statement deadline in ms, overriding the server's `statementTimeout`. */
  timeout?: number;
}

/** Payload of the server's handshake reply. */
export interface HelloReply {
  /** Protocol version the server speaks. */
  version: number;
  /** Server software and version, e.g. `netsqlite 0.1.0`. */
  server: string;
  /** Version of the SQLite library the server runs. */
  sqliteVersion: string;
  /** Limits in force on this server. */
  limits: ServerLimits;
}

/** `run` reply payload: `[changes, lastInsertRowid]`. */
export type RunPayload = [changes: number | bigint, lastInsertRowid: number | bigint];

/** `query` reply payload: `[columns, rows]`. */
export type QueryPayload = [columns: string[], rows: unknown[][]];

/** One `batch` result: `[changes, lastInsertRowid, columns, rows]`. */
export type BatchItemPayload = [
  changes: number | bigint,
  lastInsertRowid: number | bigint,
  columns: string[],
  rows: unknown[][],
];

/** `prepare` reply payload: `[handle, columns]`. */
export type PreparePayload = [handle: number, columns: string[]];
