/**
 * Error codes and error classes shared by the transport, the protocol, the
 * server and the client: the one module that defines them.
 *
 * Every failure carries a stable string `code`: either one of the
 * {@link ErrorCode} values below, or the name of a SQLite (extended) result
 * code, such as `SQLITE_CONSTRAINT_UNIQUE`. Each code belongs to exactly one
 * error class ({@link errorClassOf}); {@link createError} builds the right one,
 * so a code never reaches an application as two different classes.
 *
 * | class             | codes                                                                  |
 * | ----------------- | ---------------------------------------------------------------------- |
 * | `SqliteError`     | `SQLITE_*`, and request failures that leave the connection usable:    |
 * |                   | `BAD_REQUEST`, `INVALID_PARAM`, `BUSY_TIMEOUT`, `TX_TIMEOUT`,          |
 * |                   | `TX_ABORTED`, `STATEMENT_TIMEOUT`, `RESULT_TOO_LARGE`,                 |
 * |                   | `UNKNOWN_STATEMENT`, `DATABASE_MOVED`,                                 |
 * |                   | `CURSOR_CLOSED`, `TX_CONTROL`, `SHUTTING_DOWN`, `INTERNAL`,            |
 * |                   | and the client's own `TX_ENDED`, `TX_NESTED_RUNNING`,                  |
 * |                   | `TX_UNDO_FAILED`, `RELEASED`                                           |
 * | `ConnectionError` | `CONNECTION_CLOSED`, `REQUEST_TIMEOUT`, `ACQUIRE_TIMEOUT`              |
 * | `ProtocolError`   | `FRAME_TOO_LARGE`, `FRAME_TIMEOUT`, `PROTOCOL_VERSION`, `AUTH`,        |
 * |                   | `TOO_MANY_CONNECTIONS`                                                 |
 * | `AbortError`      | `ABORTED`                                                              |
 *
 * @module
 */

/**
 * Stable error codes that do not come from SQLite itself; compare an
 * error's `code` with them.
 *
 * @example
 * ```ts
 * import { serve } from "@netsqlite/netsqlite/server";
 * import { connect, ErrorCode, SqliteError } from "@netsqlite/netsqlite";
 * const dir = await Deno.makeTempDir();
 * await using server = await serve({ database: `${dir}/a.db`, path: `${dir}/a.sock` });
 * await using db = await connect({ path: `${dir}/a.sock` });
 * try {
 *   await db.run("SELECT ?", [new Date() as never]); // a Date cannot be stored exactly
 *   throw new Error("expected a refusal");
 * } catch (err) {
 *   if (!(err instanceof SqliteError) || err.code !== ErrorCode.InvalidParam) throw err;
 * }
 * ```
 */
export const ErrorCode = {
  /** The request was malformed: wrong types, unknown op, missing fields, empty SQL. */
  BadRequest: "BAD_REQUEST",
  /** A parameter cannot be stored exactly (NUL in a string, NaN, Date, ...). */
  InvalidParam: "INVALID_PARAM",
  /** A frame is larger than the receiver's `maxFrameSize`. */
  FrameTooLarge: "FRAME_TOO_LARGE",
  /** A connection sent no hello, or stalled inside a frame, for too long. */
  FrameTimeout: "FRAME_TIMEOUT",
  /** The peer speaks a protocol version this side does not, or another protocol (TLS, HTTP). */
  ProtocolVersion: "PROTOCOL_VERSION",
  /** A write waited longer than the server's busy timeout for the writer. */
  BusyTimeout: "BUSY_TIMEOUT",
  /** The transaction was rolled back because it sat idle past its lease. */
  TxTimeout: "TX_TIMEOUT",
  /**
   * An earlier statement's error made SQLite roll the transaction back
   * (`INSERT OR ROLLBACK`, `RAISE(ROLLBACK)`, a write stopped or cancelled):
   * the statement did not run, and none will until the transaction is ended
   * with `ROLLBACK` (PostgreSQL's 25P02). The earlier error, which has its
   * own code, is named in the message.
   */
  TxAborted: "TX_ABORTED",
  /** The statement ran past its deadline and was stopped. */
  StatementTimeout: "STATEMENT_TIMEOUT",
  /** A buffered result grew beyond the server's `maxResultBytes`. */
  ResultTooLarge: "RESULT_TOO_LARGE",
  /**
   * A TEXT value read from the database is not valid UTF-8 (the FFI engine;
   * it would come back changed): read it as `CAST(col AS BLOB)` or `hex(col)`.
   */
  InvalidUtf8: "INVALID_UTF8",
  /** A prepared statement handle is unknown or was finalized. */
  UnknownStatement: "UNKNOWN_STATEMENT",
  /**
   * A cursor opened inside a transaction was closed when the transaction
   * ended, or a cursor idled past the server's cursor idle timeout.
   */
  CursorClosed: "CURSOR_CLOSED",
  /**
   * A transaction-control statement (`BEGIN`, `COMMIT`, `SAVEPOINT`, ...) was
   * sent through a client's shared pool: use `transaction()` or `reserve()`.
   */
  TxControl: "TX_CONTROL",
  /**
   * (Client-side; nothing was sent.) A call through the `tx` of a
   * `transaction(fn)` whose `fn` has already settled: the transaction has
   * ended. A programming error, not a connection failure: retrying it does
   * not help.
   */
  TxEnded: "TX_ENDED",
  /**
   * (Client-side.) The `fn` of a `transaction(fn)` settled while a
   * transaction nested in it (`tx.transaction()`) was still running, most
   * likely one started without `await`: the transaction was rolled back,
   * the nested one's work with it, since committing would keep work that
   * the nested `fn` could still undo by throwing. Calls through the nested
   * one's `tx` fail with `TX_ENDED` from then on.
   */
  TxNestedRunning: "TX_NESTED_RUNNING",
  /**
   * (Client-side.) A nested `transaction()` level could not undo its work:
   * its `ROLLBACK TO` failed, most often because a statement inside it
   * released or rolled back to a savepoint opened before it (`RELEASE
   * mine`), which ends the level's savepoint too. That level rejects with
   * it; the level it is nested in can no longer commit: its calls fail with
   * it, and it is rolled back when its function settles (rejecting with it
   * when the function resolved). A level nested in a transaction begun
   * outside `transaction()` (raw `BEGIN`, an ORM's) rolls that whole
   * transaction back at once. Also: a call through a `tx` whose transaction
   * ended under it (a `RELEASE` of the savepoint that began a raw
   * transaction commits it), not sent.
   */
  TxUndoFailed: "TX_UNDO_FAILED",
  /**
   * (Client-side; nothing was sent.) A call through a `ReservedConnection`
   * after its `release()`. A programming error, not a connection failure.
   */
  Released: "RELEASED",
  /**
   * The client did not get an answer within its request timeout (or its
   * connect timeout): the connection was closed after sending `cancel` for
   * the calls in flight; one the server had already started may still have
   * run (`ConnectionError.mayHaveRun`).
   */
  RequestTimeout: "REQUEST_TIMEOUT",
  /**
   * No connection of the client's pool became free within its
   * `acquireTimeout` (client-side; nothing was sent).
   */
  AcquireTimeout: "ACQUIRE_TIMEOUT",
  /**
   * The connection could not be made, is closed, or was lost
   * (`ConnectionError.mayHaveRun` tells whether the call may have run).
   */
  ConnectionClosed: "CONNECTION_CLOSED",
  /** The call was aborted through its `AbortSignal` (or cancelled by a `cancel` request). */
  Aborted: "ABORTED",
  /** The server is shutting down. */
  ShuttingDown: "SHUTTING_DOWN",
  /**
   * The database file, or its `-wal` or `-shm` file, was removed, renamed or
   * replaced while the server was serving it: the server refuses writes
   * from then on (reads go on, but for those that need a connection of their
   * own, and all of them once another program opened the database after a
   * `-wal` or `-shm` went) and must be restarted. A write that noticed it
   * after it ran went into the file the path no longer names, and is not
   * reported as succeeded.
   */
  DatabaseMoved: "DATABASE_MOVED",
  /** The client presented no token, or a wrong one (connection-level; the connection is closed). */
  Auth: "AUTH",
  /**
   * The server already serves its `--max-connections` connections
   * (connection-level; the connection is closed).
   */
  TooManyConnections: "TOO_MANY_CONNECTIONS",
  /** The server runs read-only (`--readonly`) and the statement would write. */
  ReadOnly: "READONLY",
  /** The server's policy refuses the statement: ATTACH, extension loading, an unsafe PRAGMA. */
  Forbidden: "FORBIDDEN",
  /** An unexpected failure inside the server; the connection stays usable. */
  Internal: "INTERNAL",
} as const;

/**
 * One of the {@link ErrorCode} values.
 *
 * @example
 * ```ts
 * import { ErrorCode, type ErrorCodeValue } from "@netsqlite/netsqlite";
 * const retryable: ErrorCodeValue[] = [ErrorCode.BusyTimeout, ErrorCode.TxTimeout];
 * if (!retryable.includes("BUSY_TIMEOUT")) throw new Error("expected BUSY_TIMEOUT");
 * ```
 */
export type ErrorCodeValue = typeof ErrorCode[keyof typeof ErrorCode];

/** The error payload sent on the wire. */
export interface WireError {
  /** Stable code: an {@link ErrorCode} value or a SQLite result code name. */
  code: string;
  /** Human-readable message, usually SQLite's own. */
  message: string;
  /** SQLite's numeric extended result code, when SQLite produced the error. */
  sqliteCode?: number;
  /**
   * `ABORTED` only: how many statements of a script (`exec`) ran, and stay
   * applied, before it was stopped outside a transaction; absent when
   * nothing was applied, or for a script stopped inside an open transaction
   * (what it ran is in that transaction; the message says how much).
   */
  ran?: number;
  /**
   * Whether the request may have been applied, when the server knows: true
   * (outcome unknown), false (it was not); absent when the server does not
   * say (see {@link SqliteError.mayHaveRun}). With `ABORTED`, only true: the
   * statement stopped (after the `ran` before it) may have been applied (see
   * {@link AbortError.mayHaveRun}).
   */
  mayHaveRun?: boolean;
  /**
   * Connection-level `SHUTTING_DOWN` only: the id of a request still running
   * as the connection closed, which may have partly run; absent when none was.
   */
  running?: number;
}

/**
 * A request failed and the connection stays usable: SQLite refused the
 * statement (`SQLITE_*`, with `sqliteCode`), or netsqlite refused or stopped
 * it (`BAD_REQUEST`, `INVALID_PARAM`, `BUSY_TIMEOUT`, `TX_TIMEOUT`, `TX_ABORTED`,
 * `STATEMENT_TIMEOUT`, `RESULT_TOO_LARGE`, `UNKNOWN_STATEMENT`, `CURSOR_CLOSED`,
 * `TX_CONTROL`, `SHUTTING_DOWN`, `DATABASE_MOVED`, `INTERNAL`; the client's `TX_ENDED`,
 * `TX_NESTED_RUNNING`, `TX_UNDO_FAILED`, `RELEASED`), as better-sqlite3 raises its own checks as
 * `SqliteError` too.
 *
 * @example
 * ```ts
 * import { SqliteError } from "@netsqlite/netsqlite/client";
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
   * True when the request may have been applied (outcome unknown: check
   * before retrying a write), false when it was not (safe to retry), as the
   * message says. Set on a failed commit: a `COMMIT` (or the `RELEASE`
   * ending a transaction), a batch's, a script's, an autocommit write's and
   * a group commit's; true after an I/O error that may have come once the
   * commit was written (`SQLITE_IOERR_FSYNC`, `SQLITE_IOERR_SHMSIZE`, ...),
   * false after one before (`SQLITE_FULL`, `SQLITE_IOERR_WRITE`, a
   * constraint). In cluster mode also on `LEADER_LOST`, `NOT_LEADER`,
   * `NO_LEADER`, `STATEMENT_TIMEOUT` and a pooled connection's `BUSY_TIMEOUT`. `undefined` on every other error
   * (what it names did not happen), and from servers that do not say.
   */
  readonly mayHaveRun: boolean | undefined;
  /**
   * Set when a change feed ended at a change it could not deliver
   * (`CHANGE_TOO_LARGE`, `KV_CORRUPT`): that change's `seq`, the `since`
   * that resumes the feed after it (`subscribe({ since: resumeFrom })`;
   * `resumeFrom - 1` meets it again). Absent on every other error.
   */
  declare readonly resumeFrom?: number;

  /**
   * Creates an error of SQLite or of the server's checks.
   *
   * @param code Stable string code.
   * @param message What went wrong.
   * @param sqliteCode SQLite's numeric extended result code, if any.
   * @param options Standard error options (`cause`), `mayHaveRun` and `resumeFrom`.
   */
  constructor(
    code: string,
    message: string,
    sqliteCode?: number,
    options?: ErrorOptions & { mayHaveRun?: boolean; resumeFrom?: number },
  ) {
    super(message, options);
    this.name = "SqliteError";
    this.code = code;
    this.sqliteCode = sqliteCode;
    this.mayHaveRun = options?.mayHaveRun;
    // (Set only when given: other errors keep their own properties as they were.)
    if (options?.resumeFrom !== undefined) {
      (this as { resumeFrom?: number }).resumeFrom = options.resumeFrom;
    }
  }
}

/**
 * The connection to the server could not be made, was closed, or was lost
 * (`CONNECTION_CLOSED`), or was closed because a reply did not come within
 * `requestTimeout` (`REQUEST_TIMEOUT`). `ACQUIRE_TIMEOUT`: no connection of
 * the client's pool became free within `acquireTimeout`; the call was not
 * sent.
 *
 * {@link ConnectionError.mayHaveRun} says whether the call may have run: a
 * call sent and left unanswered when its connection ended may or may not
 * have run on the server (a write may have been committed), and its message
 * says so; a call never sent (`Cannot connect to ...`, a connection already
 * lost with `reconnect: false`, `ACQUIRE_TIMEOUT`), or cancelled by
 * `close()` and acknowledged by the server as not run, surely did not.
 *
 * @example
 * ```ts
 * import { connect, ConnectionError } from "@netsqlite/netsqlite";
 * const dir = await Deno.makeTempDir();
 * try {
 *   await connect({ path: `${dir}/nobody-listens.sock` });
 *   throw new Error("expected no server");
 * } catch (err) {
 *   if (!(err instanceof ConnectionError) || err.code !== "CONNECTION_CLOSED") throw err;
 *   if (err.mayHaveRun) throw new Error("nothing was sent");
 * }
 * ```
 */
export class ConnectionError extends Error {
  /** Stable string code: `CONNECTION_CLOSED`, `REQUEST_TIMEOUT` or `ACQUIRE_TIMEOUT`. */
  readonly code: string;
  /**
   * True when the call was sent and its connection ended before the answer
   * came: it may or may not have run (retry only an idempotent write, or
   * check first). False when the call was not sent, or the server answered
   * that it did not run it.
   */
  readonly mayHaveRun: boolean;

  /**
   * Creates a connection error.
   *
   * @param message What went wrong.
   * @param options Standard error options (`cause`), an optional code
   *   (default `CONNECTION_CLOSED`), and whether the call may have run
   *   (default `false`).
   */
  constructor(
    message: string,
    options?: ErrorOptions & { code?: string; mayHaveRun?: boolean },
  ) {
    super(message, options);
    this.name = "ConnectionError";
    this.code = options?.code ?? ErrorCode.ConnectionClosed;
    this.mayHaveRun = options?.mayHaveRun ?? false;
  }
}

/**
 * A frame broke the protocol's limits or versions: a frame above
 * `maxFrameSize` (`FRAME_TOO_LARGE`), a stalled frame (`FRAME_TIMEOUT`), an
 * incompatible protocol version (`PROTOCOL_VERSION`). When the peer did it,
 * the connection is closed; a request the client refuses to send because it
 * would exceed the server's `maxFrameSize` leaves the connection usable.
 *
 * @example
 * ```ts
 * import { serve } from "@netsqlite/netsqlite/server";
 * import { connect, ProtocolError } from "@netsqlite/netsqlite";
 * const dir = await Deno.makeTempDir();
 * await using server = await serve({ database: `${dir}/a.db`, path: `${dir}/a.sock`, maxFrameSize: 4096 });
 * await using db = await connect({ path: `${dir}/a.sock` });
 * const big = new Uint8Array(8192);
 * await db.run("SELECT ?", [big]).then(
 *   () => { throw new Error("expected FRAME_TOO_LARGE"); },
 *   (err) => { if (!(err instanceof ProtocolError) || err.code !== "FRAME_TOO_LARGE") throw err; },
 * );
 * await db.run("SELECT 1"); // the connection stays usable
 * ```
 */
export class ProtocolError extends Error {
  /** Stable string code, e.g. `FRAME_TOO_LARGE` or `PROTOCOL_VERSION`. */
  readonly code: string;

  /**
   * Creates a protocol error.
   *
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

/**
 * The call was aborted through the `signal` of its options (code `ABORTED`).
 * The promise rejects at once; the client sends `cancel` so the server drops
 * the request if it has not run yet. Whether a write already ran is unknown.
 * Also the error of a call a server shutting down stopped while it ran:
 * {@link AbortError.ran} statements of its script stay applied (0: nothing;
 * `undefined` when the server did not say: an abort by the call's own signal),
 * and, in cluster mode, {@link AbortError.mayHaveRun} is true when the
 * statement stopped may have been applied all the same.
 * Its `name` is `"AbortError"`, as for `fetch()`; `cause` is the signal's reason.
 *
 * @example
 * ```ts
 * import { serve } from "@netsqlite/netsqlite/server";
 * import { AbortError, connect } from "@netsqlite/netsqlite";
 * const dir = await Deno.makeTempDir();
 * await using server = await serve({ database: `${dir}/a.db`, path: `${dir}/a.sock` });
 * await using db = await connect({ path: `${dir}/a.sock` });
 * const signal = AbortSignal.abort(new Error("user left"));
 * await db.query("SELECT 1", [], { signal }).then(
 *   () => { throw new Error("expected an abort"); },
 *   (err) => { if (!(err instanceof AbortError) || err.code !== "ABORTED") throw err; },
 * );
 * ```
 */
export class AbortError extends Error {
  /** Always `ABORTED`. */
  readonly code: string = ErrorCode.Aborted;
  /**
   * How many statements of a script (`exec`) the server had run, and kept
   * applied, when it stopped the script; 0 when nothing of the call stays
   * applied (a script stopped inside a transaction: what it ran is rolled
   * back when the connection closes);
   * `undefined` when unknown (the call's own signal aborted it: the client
   * rejected at once, whatever the server had run by then).
   */
  readonly ran: number | undefined;
  /**
   * True when the statement the server stopped (after the {@link ran} before
   * it) may have been applied all the same: in cluster mode, a write outside
   * a transaction, which a dqlite node runs to its end (the message ends in
   * `outcome unknown: ...`). `undefined` otherwise: what the server stopped
   * was undone.
   */
  readonly mayHaveRun: true | undefined;

  /**
   * Creates an abort error.
   *
   * @param message What was aborted.
   * @param options Standard error options (`cause`: the signal's reason), and
   *   how many statements of a script ran before it was stopped (unknown
   *   when left out), and whether the one stopped may have been applied.
   */
  constructor(message: string, options?: ErrorOptions & { ran?: number; mayHaveRun?: boolean }) {
    super(message, options);
    this.name = "AbortError";
    this.ran = options?.ran;
    this.mayHaveRun = options?.mayHaveRun === true ? true : undefined;
  }
}

/** The error classes of netsqlite. */
export type NetsqliteError = SqliteError | ConnectionError | ProtocolError | AbortError;

/** Which class raises a code: see the table in this module's documentation. */
export function errorClassOf(
  code: string,
): typeof SqliteError | typeof ConnectionError | typeof ProtocolError | typeof AbortError {
  switch (code) {
    case ErrorCode.ConnectionClosed:
    case ErrorCode.RequestTimeout:
    case ErrorCode.AcquireTimeout:
      return ConnectionError;
    case ErrorCode.FrameTooLarge:
    case ErrorCode.FrameTimeout:
    case ErrorCode.ProtocolVersion:
    case ErrorCode.Auth:
    case ErrorCode.TooManyConnections:
      return ProtocolError;
    case ErrorCode.Aborted:
      return AbortError;
    default:
      return SqliteError;
  }
}

/**
 * Builds the error of the one class that raises `code`.
 *
 * @example
 * ```ts
 * import { ConnectionError, createError } from "./errors.ts";
 * const err = createError("REQUEST_TIMEOUT", "No reply within 200 ms");
 * if (!(err instanceof ConnectionError)) throw new Error("wrong class");
 * ```
 */
export function createError(
  code: string,
  message: string,
  options?: ErrorOptions & { sqliteCode?: number; ran?: number; mayHaveRun?: boolean },
): NetsqliteError {
  const cls = errorClassOf(code);
  if (cls === ConnectionError) return new ConnectionError(message, { cause: options?.cause, code });
  if (cls === ProtocolError) return new ProtocolError(code, message, options);
  if (cls === AbortError) return new AbortError(message, options);
  return new SqliteError(code, message, options?.sqliteCode, options);
}

/** Builds the error a client raises for a wire error payload. */
export function errorFromWire(wire: WireError): NetsqliteError {
  const ran = wire?.ran;
  return createError(String(wire?.code), String(wire?.message), {
    sqliteCode: wire?.sqliteCode,
    // The server says how many ran; absent: none did.
    ran: Number.isSafeInteger(ran) && ran! > 0 ? ran : 0,
    mayHaveRun: typeof wire?.mayHaveRun === "boolean" ? wire.mayHaveRun : undefined,
  });
}

/** Characters of an error message kept when the whole would not fit a frame. */
export const ERROR_MESSAGE_CUT = 4096;

/**
 * `wire` with its message cut to {@link ERROR_MESSAGE_CUT} characters (never
 * inside a surrogate pair), saying so: for an error quoting a huge part of
 * its request (SQLite echoes the token it stumbled on) that would not fit a
 * frame. Code and numbers are kept.
 *
 * @example
 * ```ts
 * import { shortWireError } from "./errors.ts";
 * const cut = shortWireError({ code: "SQLITE_ERROR", message: `near "${"x".repeat(9000)}"` });
 * if (cut.message.length > 4200 || !cut.message.endsWith("characters)")) throw new Error(cut.message);
 * ```
 */
export function shortWireError(wire: WireError): WireError {
  const { message } = wire;
  if (message.length <= ERROR_MESSAGE_CUT) return wire;
  let end = ERROR_MESSAGE_CUT;
  const last = message.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--;
  return {
    ...wire,
    message: `${message.slice(0, end)}… (message cut from ${message.length} characters)`,
  };
}

/** The wire payload for an error raised on the server. */
export function toWireError(err: unknown): WireError {
  if (
    err instanceof SqliteError && (err.sqliteCode !== undefined || err.mayHaveRun !== undefined)
  ) {
    const wire: WireError = { code: err.code, message: err.message };
    if (err.sqliteCode !== undefined) wire.sqliteCode = err.sqliteCode;
    if (err.mayHaveRun !== undefined) wire.mayHaveRun = err.mayHaveRun;
    return wire;
  }
  if (err instanceof AbortError && (err.ran ?? 0) + (err.mayHaveRun ? 1 : 0) > 0) {
    const wire: WireError = { code: err.code, message: err.message };
    if (err.ran !== undefined && err.ran > 0) wire.ran = err.ran;
    if (err.mayHaveRun) wire.mayHaveRun = true;
    return wire;
  }
  if (
    err instanceof SqliteError || err instanceof ProtocolError || err instanceof ConnectionError ||
    err instanceof AbortError
  ) {
    return { code: err.code, message: err.message };
  }
  return { code: ErrorCode.Internal, message: `Internal error: ${(err as Error)?.message ?? err}` };
}
