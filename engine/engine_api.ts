/**
 * What the server (`server.ts`, `server/session.ts`) needs of an engine, so
 * that it runs unchanged on the single-file {@link Engine} or on a dqlite
 * cluster (`engine/dqlite/engine.ts`).
 *
 * The session surface is taken from the single-file engine's
 * {@link EngineSession}, so both engines answer every request with the same
 * argument and reply types: a value, a promise of one, a thrown
 * `SqliteError`, or {@link BLOCKED}.
 *
 * @module
 */

import type { LeaseEnd } from "./writer_queue.ts";
import type { SqliteError } from "../protocol/errors.ts";
import type { Engine, EngineSession } from "./engine.ts";

export { BLOCKED } from "./engine_session.ts";
/** Tells background steps that a request started (see `binding/_timer_turn.ts`). */
export { noteWork } from "./binding/_timer_turn.ts";
export type { Planned, Reply } from "./engine_session.ts";

/**
 * One client's view of an engine, as the server's session uses it. What
 * ends a transaction whose write was cancelled after it ran
 * (`writeMark`, `wroteInTransactionSince`, `cancelWrites`), what tells
 * whether a request cancelled before it ran would have written
 * (`wouldWrite`), `txEnds` (transactions ended inside an `exec` script),
 * `waitsForLock` (a request blocked for another program's lock, not for the
 * writer) and `resultTooLarge` are optional.
 */
export type SessionLike =
  & Partial<
    Pick<
      EngineSession,
      | "writeMark"
      | "wroteInTransactionSince"
      | "cancelWrites"
      | "wouldWrite"
      | "txEnds"
      | "waitsForLock"
    >
  >
  & {
    /**
     * The `RESULT_TOO_LARGE` of a `query` or `batch` reply that the server
     * found past `maxBytes` once encoded, in the engine's words (cluster
     * mode: iterate() buffers too, so it is not advised); when absent, the
     * single-file engine's, which advises iterate().
     */
    resultTooLarge?(maxBytes: number, call: "query" | "batch"): SqliteError;
  }
  & Pick<
    EngineSession,
    | "awaitingCommit"
    | "inTransaction"
    | "exec"
    | "query"
    | "run"
    | "batch"
    | "prepare"
    | "finalize"
    | "openCursor"
    | "nextCursor"
    | "closeCursor"
    | "cancel"
    | "stopWaiting"
    | "close"
    | "id"
    | "cursorCount"
    | "statementSql"
  >;

/** What runs the statements: engine kind, library and version, for the banner and hello. */
export interface EngineInfo {
  /** `"ffi"`, `"node"` (single file) or `"dqlite"` (cluster). */
  readonly engine: "ffi" | "node" | "dqlite";
  /** The library file loaded, `"node:sqlite"`, or the dqlite nodes. */
  readonly library: string;
  /** SQLite's version. */
  readonly version: string;
  /** What this engine cannot do, one sentence each. */
  readonly limitations: readonly string[];
}

/** What a cluster-mode engine tells `stats` about its cluster. */
export interface ClusterInfo {
  /** The dqlite database name. */
  readonly database: string;
  /** The node addresses the server was given. */
  readonly nodes: readonly string[];
  /** The leader found last, or null while none is known. */
  readonly leader: string | null;
  /** Connections to the leader open now (idle or lent). */
  readonly connections: number;
  /** The most connections to the leader open at once. */
  readonly poolSize: number;
}

/** An engine as the server uses it. */
export interface EngineLike
  extends
    Pick<Engine, "idle" | "sqliteVersion" | "close" | "waiting" | "groupCommits" | "tempObjects"> {
  /**
   * Server-side maintenance (checkpoint, vacuum, integrity, backup), or
   * `null` where the engine has none (cluster mode).
   */
  readonly maintenance: Engine["maintenance"] | null;
  /** {@link Engine.lockWaiting}; absent where the engine has no such wait (cluster mode). */
  readonly lockWaiting?: number;
  /** Committed changes for change feeds, or `null` where the engine cannot capture them. */
  readonly changes: Engine["changes"];
  /** Called with the session number whose transaction's idle lease ran out (for the log). */
  onLeaseExpired: ((session: number, why: LeaseEnd) => void) | null;
  /** Engine kind, library, version and limitations. */
  readonly sqlite: EngineInfo;
  /** The cluster, in cluster mode (absent on the single-file engine). */
  readonly cluster?: ClusterInfo;
  /**
   * Opens a session. `wake` is called when a session that got `BLOCKED`
   * should retry; `onCommit` when its writes held for a group commit are
   * durable (or failed).
   */
  openSession(
    wake: () => void,
    onCommit?: (error: SqliteError | null) => void,
  ): SessionLike;
}
