/**
 * The server's cluster mode: statements run on the leader of a dqlite
 * cluster instead of a local file, behind the same sessions, protocol and
 * client API. See {@link DqliteEngine}; one client's requests run in
 * {@link DqliteEngineSession}.
 *
 * @module
 */

import { BufferedRows } from "../buffered_rows.ts";
import { PreparedBudget } from "../handles.ts";
import type { LeaseEnd } from "../writer_queue.ts";
import type { SqliteError } from "../../protocol/errors.ts";
import type { ClusterInfo, EngineInfo, EngineLike } from "../engine_api.ts";
import { DqliteCluster } from "./cluster.ts";
import { DqliteEngineSession } from "./engine_session.ts";
import { DatabasePool } from "./pool.ts";

export { DqliteEngineSession } from "./engine_session.ts";

/** Settings of a {@link DqliteEngine}; every field is required. */
export interface DqliteEngineConfig {
  /** Node addresses (`host:port`), some or all of the cluster's. */
  nodes: readonly string[];
  /** The dqlite database name (created on first use). */
  database: string;
  /** Most connections to the leader at once (sessions in a transaction hold one each). */
  poolSize: number;
  /** How long to look for a leader before `NO_LEADER`, in ms. */
  leaderTimeout: number;
  /** How long a request waits for a free connection, or retries `SQLITE_BUSY`, in ms. */
  busyTimeout: number;
  /** Idle time after which an open transaction is rolled back, in ms (0 = never). */
  txIdleTimeout: number;
  /** Age at which an open transaction is rolled back however busy, in ms (0 = never). */
  txTimeout?: number;
  /** Deadline of a statement (stops a row set being received), in ms. */
  statementTimeout: number;
  /** Largest buffered result (also cursors: they buffer), in bytes. */
  maxResultBytes: number;
  /** Cursors one session may hold open at once. */
  maxCursors: number;
  /** Largest frame a reply may take (cursor chunks are cut to fit it), in bytes. */
  maxFrameSize?: number;
  /** Prepared statements one session may hold at once (default `MAX_HANDLES`). */
  maxStatements?: number;
  /** Prepared statements all sessions may hold at once (default `MAX_PREPARED`). */
  maxPrepared?: number;
  /** SQL text all sessions' prepared statements may hold (default `MAX_PREPARED_TEXT`). */
  maxPreparedText?: number;
  /** Let clients set PRAGMAs of the shared connections and of durability. */
  allowUnsafePragmas: boolean;
}

/** What cluster mode cannot do as the single-file engine does. */
export const DQLITE_LIMITATIONS: readonly string[] = [
  "each write is a Raft commit on a quorum of nodes",
  "cursors buffer the whole result (up to maxResultBytes)",
  "a statement past its deadline fails at once, but the node runs it to its end (an " +
  "autocommit write may still commit)",
  "columns declared BOOLEAN, DATETIME, DATE or TIMESTAMP, writes with RETURNING, VACUUM, " +
  "TEMP objects and ATTACH are refused",
];

/**
 * Runs statements on a dqlite cluster's leader over a pool of connections
 * ({@link DatabasePool}). A leader change fails the requests running on the
 * old leader with a `LeaderError`; the pool then drops its idle connections,
 * so the next request finds the new leader.
 */
export class DqliteEngine implements EngineLike {
  readonly #config: DqliteEngineConfig;
  readonly #cluster: DqliteCluster;
  readonly #version: string;
  readonly #sessions = new Set<DqliteEngineSession>();
  readonly #running = new Set<Promise<unknown>>();
  #closed = false;
  /** @internal */
  readonly _pool: DatabasePool;
  /** Cluster mode has no server-side maintenance requests (dqlite snapshots and replicates). */
  readonly maintenance: null = null;
  /** Cluster mode has no change feed (no update hook over dqlite's wire protocol). */
  readonly changes: null = null;
  #nextSessionId = 1;
  /** Called with the session number whose idle transaction was rolled back. */
  onLeaseExpired: ((session: number, why: LeaseEnd) => void) | null = null;

  /** Sessions waiting for a connection of the pool (none wait for a local writer). */
  get waiting(): number {
    return 0;
  }

  /** Cluster mode has no shared writer connection, so no TEMP object on one. */
  get tempObjects(): readonly string[] {
    return [];
  }

  /** Cluster mode has no group commit: every write is its own Raft commit. */
  get groupCommits(): { groups: number; writes: number; largest: number } {
    return { groups: 0, writes: 0, largest: 0 };
  }

  private constructor(
    config: DqliteEngineConfig,
    cluster: DqliteCluster,
    pool: DatabasePool,
    version: string,
  ) {
    this.#config = config;
    this.prepared = new PreparedBudget(config.maxPrepared, config.maxPreparedText);
    this.bufferedRows = new BufferedRows(config.maxResultBytes);
    this.#cluster = cluster;
    this._pool = pool;
    this.#version = version;
  }

  /**
   * Finds the leader, opens the database on it and reads SQLite's version.
   *
   * @throws {LeaderError} `NO_LEADER` when no node names a leader within `leaderTimeout`.
   */
  static async open(config: DqliteEngineConfig): Promise<DqliteEngine> {
    const cluster = new DqliteCluster(config.nodes, {
      leaderTimeout: config.leaderTimeout,
      busyTimeout: config.busyTimeout,
    });
    const pool = new DatabasePool(cluster, config.database, config.poolSize, config.busyTimeout);
    try {
      const db = await pool.acquire();
      try {
        const { rows } = await db.query("SELECT sqlite_version()");
        return new DqliteEngine(config, cluster, pool, String(rows[0][0]));
      } finally {
        pool.release(db);
      }
    } catch (err) {
      pool.close();
      cluster.close();
      throw err;
    }
  }

  /** Prepared-statement handles held by every session, and the most they may. */
  readonly prepared: PreparedBudget;

  /** Bytes every session's cursors hold (they buffer their rows), and the most they may. */
  readonly bufferedRows: BufferedRows;

  /** The resolved configuration. */
  get config(): Readonly<DqliteEngineConfig> {
    return this.#config;
  }

  /** Engine kind, nodes and database, SQLite version of the leader, limitations. */
  get sqlite(): EngineInfo {
    return {
      engine: "dqlite",
      library: `dqlite ${this.#config.nodes.join(",")}, database "${this.#config.database}"`,
      version: this.#version,
      limitations: DQLITE_LIMITATIONS,
    };
  }

  /**
   * The database, nodes, the leader found last (not asked again: an idle
   * server may name a leader that has since died) and the connections open
   * now, for `stats` (cheap: nothing is asked).
   */
  get cluster(): ClusterInfo {
    return {
      database: this.#config.database,
      nodes: this.#config.nodes,
      leader: this.#cluster.lastLeader,
      connections: this._pool.open,
      poolSize: this.#config.poolSize,
    };
  }

  /** SQLite's version on the leader found at start. */
  get sqliteVersion(): string {
    return this.#version;
  }

  /** True when no request runs and no session holds a transaction. */
  get idle(): boolean {
    if (this.#running.size > 0) return false;
    for (const s of this.#sessions) if (s.inTransaction) return false;
    return true;
  }

  /** Opens a session; `wake` and `onCommit` are never called (nothing waits as `BLOCKED`). */
  openSession(
    _wake: () => void,
    _onCommit?: (error: SqliteError | null) => void,
  ): DqliteEngineSession {
    const s = new DqliteEngineSession(this, this.#nextSessionId++);
    this.#sessions.add(s);
    return s;
  }

  /** Closes every session (rolling back transactions), waits for running requests, closes the connections. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const s of [...this.#sessions]) s.close();
    while (this.#running.size > 0) await Promise.allSettled([...this.#running]);
    this._pool.close();
    this.#cluster.close();
  }

  /** Tracks a request until it settles. @internal */
  _track<T>(work: Promise<T>): Promise<T> {
    const tracked = work.finally(() => this.#running.delete(tracked));
    this.#running.add(tracked);
    return tracked;
  }

  /** A request met a leader change: idle connections point at the old leader. @internal */
  _leaderChanged(): void {
    this._pool.dropIdle();
  }

  /** @internal */
  _forget(s: DqliteEngineSession): void {
    this.#sessions.delete(s);
  }
}
