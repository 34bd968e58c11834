/**
 * Error codes and error classes shared by the client and the server.
 *
 * Every failure that reaches a client carries a stable string `code`: either
 * one of the {@link ErrorCode} values below, or the name of the SQLite
 * (extended) result code, such as `SQLITE_CONSTRAINT_UNIQUE`.
 *
 * @module
 */

/** Stable error codes that do not come from SQLite itself. */
export const ErrorCode = {
  /** The request was malformed: wrong types, unknown op, missing fields. */
  BadRequest: "BAD_REQUEST",
  /** A parameter cannot be stored exactly (NUL in a string, NaN, Date, ...). */
  InvalidParam: "INVALID_PARAM",
  /** A frame announced a length above the receiver's `maxFrameSize`. */
  FrameTooLarge: "FRAME_TOO_LARGE",
  /** A connection sent no hello, or stalled inside a frame, for too long. */
  FrameTimeout: "FRAME_TIMEOUT",
  /** The peer speaks a protocol version this side does not. */
  ProtocolVersion: "PROTOCOL_VERSION",
  /** A write waited longer than the server's busy timeout for the writer. */
  BusyTimeout: "BUSY_TIMEOUT",
  /** The transaction was rolled back because it sat idle past its lease. */
  TxTimeout: "TX_TIMEOUT",
  /** The statement ran past its deadline and was stopped. */
  StatementTimeout: "STATEMENT_TIMEOUT",
  /** A buffered result grew beyond the server's `maxResultBytes`. */
  ResultTooLarge: "RESULT_TOO_LARGE",
  /** A prepared statement handle is unknown or was finalized. */
  UnknownStatement: "UNKNOWN_STATEMENT",
  /** The client did not get an answer within its request timeout. */
  RequestTimeout: "REQUEST_TIMEOUT",
  /** The connection is closed or was lost. */
  ConnectionClosed: "CONNECTION_CLOSED",
  /** The server is shutting down. */
  ShuttingDown: "SHUTTING_DOWN",
  /** The client presented no token, or a wrong one (connection-level; the connection is closed). */
  Auth: "AUTH",
  /** The server runs read-only (`--readonly`) and the statement would write. */
  ReadOnly: "READONLY",
  /** The server's policy refuses the statement: ATTACH, extension loading, an unsafe PRAGMA. */
  Forbidden: "FORBIDDEN",
  /** An unexpected failure inside the server; the connection stays usable. */
  Internal: "INTERNAL",
} as const;

/** One of the {@link ErrorCode} values. */
export type ErrorCodeValue = typeof ErrorCode[keyof typeof ErrorCode];

/** The error payload sent on the wire. */
export interface WireError {
  /** Stable code: an {@link ErrorCode} value or a SQLite result code name. */
  code: string;
  /** Human-readable message, usually SQLite's own. */
  message: string;
  /** SQLite's numeric extended result code, when SQLite produced the error. */
  sqliteCode?: number;
}

/**
 * A request failed: SQLite refused the statement, a parameter could not be
 * stored exactly, a limit or timeout was hit. The connection stays usable.
 *
 * @example
 * ```ts
 * import { SqliteError } from "./errors.ts";
 * const err = new SqliteError("SQLITE_CONSTRAINT_UNIQUE", "UNIQUE constraint failed: t.id", 2067);
 * if (err.code !== "SQLITE_CONSTRAINT_UNIQUE") throw new Error("wrong code");
 * ```
 */
export class SqliteError extends Error {
  /** Stable string code, e.g. `SQLITE_CONSTRAINT_UNIQUE` or `BUSY_TIMEOUT`. */
  readonly code: string;
  /** SQLite's numeric extended result code, when SQLite produced the error. */
  readonly sqliteCode: number | undefined;

  /**
   * @param code Stable string code.
   * @param message What went wrong.
   * @param sqliteCode SQLite's numeric extended result code, if any.
   * @param options Standard error options (`cause`).
   */
  constructor(code: string, message: string, sqliteCode?: number, options?: ErrorOptions) {
    super(message, options);
    this.name = "SqliteError";
    this.code = code;
    this.sqliteCode = sqliteCode;
  }
}

/**
 * The connection to the server could not be made, was closed, or was lost.
 * Every request pending on a lost connection rejects with this error.
 */
export class ConnectionError extends Error {
  /** Stable string code, `CONNECTION_CLOSED` unless stated otherwise. */
  readonly code: string;

  /**
   * @param message What went wrong.
   * @param options Standard error options (`cause`) and an optional code.
   */
  constructor(message: string, options?: ErrorOptions & { code?: string }) {
    super(message, options);
    this.name = "ConnectionError";
    this.code = options?.code ?? ErrorCode.ConnectionClosed;
  }
}

/**
 * The peer broke the protocol: a malformed frame, a frame above the size
 * limit, or an incompatible protocol version. The connection is closed.
 */
export class ProtocolError extends Error {
  /** Stable string code, e.g. `FRAME_TOO_LARGE` or `PROTOCOL_VERSION`. */
  readonly code: string;

  /**
   * @param code Stable string code.
   * @param message What went wrong.
   * @param options Standard error options (`cause`).
   */
  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ProtocolError";
    this.code = code;
  }
}

/** Builds the error a client throws for a wire error payload. */
export function errorFromWire(wire: WireError): SqliteError {
  return new SqliteError(wire.code, wire.message, wire.sqliteCode);
}
