/**
 * Errors of the dqlite client. Every failure is a {@link SqliteError} with a
 * stable `code`: SQLite's own result code name when a node's SQLite refused
 * the statement (e.g. `SQLITE_CONSTRAINT_UNIQUE`), or one of
 * {@link DqliteErrorCode} for what only a cluster can do wrong.
 *
 * @module
 */

import { ErrorCode, SqliteError } from "../../protocol/errors.ts";
import { resultCodeName } from "../_result_codes.ts";

/** Stable codes of failures that come from the cluster rather than from SQLite. */
export const DqliteErrorCode = {
  /**
   * The node is not (or no longer) the leader and did nothing with the
   * request (dqlite's `SQLITE_IOERR_NOT_LEADER`). Retrying on the new leader
   * is safe for a statement outside a transaction.
   */
  NotLeader: "NOT_LEADER",
  /**
   * The leader was lost while the request ran: dqlite's
   * `SQLITE_IOERR_LEADERSHIP_LOST`, or the connection broke after the request
   * was sent. The outcome is unknown: a write may or may not be committed
   * (Raft may still commit the entry under the next leader). Any open
   * transaction is gone.
   */
  LeaderLost: "LEADER_LOST",
  /** No node named a leader within the discovery timeout. */
  NoLeader: "NO_LEADER",
  /**
   * A node sent TEXT that is not valid UTF-8; refused rather than altered,
   * with the code the single-file FFI engine uses (`INVALID_UTF8`).
   */
  InvalidText: ErrorCode.InvalidUtf8,
  /** The connection is closed (by {@link close}, or after an earlier loss). */
  ConnectionClosed: ErrorCode.ConnectionClosed,
  /** A parameter cannot be sent exactly over dqlite's wire protocol. */
  InvalidParam: ErrorCode.InvalidParam,
  /** A node broke the wire protocol (malformed or unexpected message). */
  Protocol: "DQLITE_PROTOCOL",
} as const;

/**
 * The error for SQL text containing a NUL character (dqlite would cut it
 * there): `BAD_REQUEST`, with the single-file engines' message.
 */
export function nulInSql(): SqliteError {
  return new SqliteError(
    ErrorCode.BadRequest,
    "Cannot prepare statement: SQL text contains a NUL character",
  );
}

/** dqlite's extended code: `SQLITE_IOERR | (40 << 8)`, "not leader". */
export const SQLITE_IOERR_NOT_LEADER = 10 | (40 << 8);
/** dqlite's extended code: `SQLITE_IOERR | (41 << 8)`, "leadership lost". */
export const SQLITE_IOERR_LEADERSHIP_LOST = 10 | (41 << 8);
/** Legacy (pre-1.0 servers) value of {@link SQLITE_IOERR_NOT_LEADER}. */
const LEGACY_NOT_LEADER = 10 | (32 << 8);
/** Legacy value of {@link SQLITE_IOERR_LEADERSHIP_LOST}. */
const LEGACY_LEADERSHIP_LOST = 10 | (33 << 8);

/**
 * A request failed because of the cluster's leadership, not because of the
 * statement: `code` is `NOT_LEADER`, `LEADER_LOST` or `NO_LEADER`.
 * `retryable` is always true: the next request discovers the leader again.
 * `maybeApplied` tells whether a write may have been committed anyway
 * (never retry such a write blindly: it could run twice).
 *
 * @example
 * ```ts
 * import { LeaderError } from "./errors.ts";
 * const err = new LeaderError("NOT_LEADER", "Node \"127.0.0.1:9002\" is not the leader", false);
 * if (!err.retryable || err.maybeApplied) throw new Error("unexpected flags");
 * ```
 */
export class LeaderError extends SqliteError {
  /** Always true: a later request may succeed on the (new) leader. */
  readonly retryable: true = true;
  /** True when the request may have taken effect (outcome unknown). */
  readonly maybeApplied: boolean;

  /**
   * @param code `NOT_LEADER`, `LEADER_LOST` or `NO_LEADER`.
   * @param message What went wrong.
   * @param maybeApplied Whether the request may have taken effect.
   * @param sqliteCode dqlite's extended result code, when a node sent one.
   * @param options Standard error options (`cause`).
   */
  constructor(
    code: string,
    message: string,
    maybeApplied: boolean,
    sqliteCode?: number,
    options?: ErrorOptions,
  ) {
    super(code, message, sqliteCode, { ...options, mayHaveRun: maybeApplied });
    this.name = "LeaderError";
    this.maybeApplied = maybeApplied;
  }
}

/**
 * Builds the error for a FAILURE response: dqlite's leadership codes become a
 * {@link LeaderError}, everything else a {@link SqliteError} named after
 * SQLite's extended result code.
 *
 * @param code The failure's code (an SQLite extended result code).
 * @param message The failure's message (SQLite's, usually).
 * @param address The node that answered, for the message.
 * @returns The error to throw.
 */
export function failureError(code: number, message: string, address: string): SqliteError {
  if (code === SQLITE_IOERR_NOT_LEADER || code === LEGACY_NOT_LEADER) {
    return new LeaderError(
      DqliteErrorCode.NotLeader,
      `Node "${address}" is not the leader: ${message}`,
      false,
      code,
    );
  }
  if (code === SQLITE_IOERR_LEADERSHIP_LOST || code === LEGACY_LEADERSHIP_LOST) {
    return new LeaderError(
      DqliteErrorCode.LeaderLost,
      `Node "${address}" lost leadership during the request: ${message}`,
      true,
      code,
    );
  }
  if (code === 100) {
    // SQLITE_ROW from EXEC: the statement returns rows (dqlite ran it up to its first row).
    return new SqliteError(
      ErrorCode.BadRequest,
      `Cannot exec a statement that returns rows: use query() (${message})`,
    );
  }
  if (code === 0) {
    // dqlite answers an empty statement with code 0, "empty statement".
    return new SqliteError(ErrorCode.BadRequest, `Cannot run the SQL: ${message}`);
  }
  if (code === 1 && message === "not an error") {
    // QUERY on a statement without result columns: dqlite refuses it before running it.
    return new SqliteError(
      ErrorCode.BadRequest,
      "Cannot query a statement that returns no columns: use exec()",
      code,
    );
  }
  return new SqliteError(resultCodeName(code), message, code);
}
