/**
 * A client of a dqlite cluster: finds the leader, opens a database on it,
 * and runs statements there.
 *
 * ```ts ignore
 * const cluster = new DqliteCluster(["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]);
 * await using db = await cluster.open("app");
 * await db.exec("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v)");
 * const { lastInsertId } = await db.exec("INSERT INTO t(v) VALUES (?)", ["x"]);
 * const { columns, rows } = await db.query("SELECT id, v FROM t WHERE id = ?", [lastInsertId]);
 * ```
 *
 * A {@link DqliteDatabase} talks to one leader over one connection; see
 * `database.ts` for what happens when the leader changes.
 *
 * @module
 */

import { type ConnOptions, DqliteConn, expectResponse, parseAddress } from "./conn.ts";
import { DqliteDatabase } from "./database.ts";
import { DqliteErrorCode, LeaderError } from "./errors.ts";
import { encodeClient, encodeCluster, encodeLeader, type NodeInfo } from "./wire.ts";

export { DqliteDatabase } from "./database.ts";
export type { ExecResult, Params, QueryOptions, QueryResult } from "./database.ts";
export { DqliteStatement } from "./statement.ts";

/** Options of {@link DqliteCluster}. */
export interface DqliteClusterOptions {
  /**
   * Time allowed to find a leader (asking every node in turn, again and
   * again) before failing with `NO_LEADER`, in ms.
   * @default 10000
   */
  leaderTimeout?: number;
  /**
   * Time allowed for one TCP connect, in ms.
   * @default 2000
   */
  connectTimeout?: number;
  /**
   * Time allowed between a request and each message of its answer, in ms;
   * past it the connection is dropped and the request fails with `LEADER_LOST`.
   * @default 30000
   */
  requestTimeout?: number;
  /**
   * How long a statement refused with `SQLITE_BUSY` (another connection on
   * the leader holds the write lock; dqlite sets no busy timeout of its own)
   * is tried again before the error is returned, in ms. `SQLITE_BUSY` means
   * the statement did not run, so trying again cannot apply it twice. 0
   * returns the error at once.
   * @default 5000
   */
  busyTimeout?: number;
  /**
   * Largest message accepted from a node, in bytes (a row set arrives in
   * messages of about 4 KiB, but one large value makes one large message).
   * @default 268435456
   */
  maxMessageBytes?: number;
}

interface ClusterConfig extends ConnOptions {
  leaderTimeout: number;
  busyTimeout: number;
}

function resolveOptions(options: DqliteClusterOptions): ClusterConfig {
  const config: ClusterConfig = {
    leaderTimeout: options.leaderTimeout ?? 10_000,
    connectTimeout: options.connectTimeout ?? 2_000,
    requestTimeout: options.requestTimeout ?? 30_000,
    maxMessageBytes: options.maxMessageBytes ?? 256 * 1024 * 1024,
    busyTimeout: options.busyTimeout ?? 5_000,
  };
  for (const [key, value] of Object.entries(config)) {
    if (!Number.isFinite(value) || value < 0 || (value === 0 && key !== "busyTimeout")) {
      throw new RangeError(`Invalid option ${key}: ${value} (expected a positive number)`);
    }
  }
  return config;
}

const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A dqlite cluster, known by the addresses of some or all of its nodes. */
export class DqliteCluster {
  readonly #nodes: readonly string[];
  readonly #config: ClusterConfig;
  readonly #open = new Set<DqliteDatabase>();
  #lastLeader: string | null = null;
  #clientId = 0n;

  /**
   * @param nodes Node addresses (`host:port`, as the nodes were started with `-d`/`--db`).
   * @param options Timeouts and limits.
   * @throws {TypeError} for an empty list or a malformed address.
   */
  constructor(nodes: readonly string[], options: DqliteClusterOptions = {}) {
    if (nodes.length === 0) throw new TypeError("Invalid dqlite node list: it is empty");
    for (const node of nodes) parseAddress(node);
    this.#nodes = [...nodes];
    this.#config = resolveOptions(options);
  }

  /** The node addresses given to the constructor. */
  get nodes(): readonly string[] {
    return this.#nodes;
  }

  /** The leader found last, or null before the first discovery. */
  get lastLeader(): string | null {
    return this.#lastLeader;
  }

  /**
   * Connects to the leader and registers as a client: asks each node in turn
   * which node leads (LEADER request), follows the answer, and retries with
   * a short pause until `leaderTimeout`.
   *
   * @throws {LeaderError} `NO_LEADER` when no leader was found in time.
   */
  async connectLeader(): Promise<DqliteConn> {
    const deadline = performance.now() + this.#config.leaderTimeout;
    let lastError: unknown;
    for (let round = 0;; round++) {
      const candidates = this.#lastLeader === null
        ? [...this.#nodes]
        : [this.#lastLeader, ...this.#nodes.filter((n) => n !== this.#lastLeader)];
      const asked = new Set<string>();
      while (candidates.length > 0) {
        const address = candidates.shift()!;
        if (asked.has(address)) continue;
        asked.add(address);
        let conn: DqliteConn | null = null;
        try {
          conn = await DqliteConn.connect(address, this.#config);
          const answer = expectResponse(await conn.call(encodeLeader()), "server", address);
          if (answer.address === address) {
            expectResponse(await conn.call(encodeClient(++this.#clientId)), "welcome", address);
            this.#lastLeader = address;
            return conn;
          }
          conn.close();
          // Ask the node it names next (it may not be in our list).
          if (answer.address !== "") candidates.unshift(answer.address);
        } catch (err) {
          conn?.close();
          lastError = err;
        }
      }
      this.#lastLeader = null;
      if (performance.now() >= deadline) {
        throw new LeaderError(
          DqliteErrorCode.NoLeader,
          `No dqlite leader found among ${
            this.#nodes.map((n) => `"${n}"`).join(", ")
          } within leaderTimeout ${this.#config.leaderTimeout} ms`,
          false,
          undefined,
          lastError === undefined ? undefined : { cause: lastError },
        );
      }
      await delay(Math.min(50 * (round + 1), 250));
    }
  }

  /**
   * The current leader's address (discovery as in {@link connectLeader}).
   *
   * @throws {LeaderError} `NO_LEADER`.
   */
  async leader(): Promise<string> {
    const conn = await this.connectLeader();
    conn.close();
    return conn.address;
  }

  /**
   * The cluster's members as the leader knows them (id, address, role).
   *
   * @throws {LeaderError} `NO_LEADER`, or `LEADER_LOST` if the leader fails meanwhile.
   */
  async members(): Promise<NodeInfo[]> {
    const conn = await this.connectLeader();
    try {
      return expectResponse(await conn.call(encodeCluster(1)), "servers", conn.address).nodes;
    } finally {
      conn.close();
    }
  }

  /**
   * Opens database `name` on the leader (created on first use), over a
   * connection of its own.
   *
   * @throws {LeaderError} `NO_LEADER` when no leader is found in time.
   * @throws {SqliteError} `CONNECTION_CLOSED` when {@link close} ran meanwhile.
   */
  async open(name: string): Promise<DqliteDatabase> {
    if (name === "" || name.includes("\0") || name.includes("/")) {
      throw new TypeError(`Invalid dqlite database name "${name}"`);
    }
    const db = new DqliteDatabase(
      () => this.connectLeader(),
      name,
      this.#config.busyTimeout,
      () => this.#open.delete(db),
    );
    // Registered before connecting, so that close() meanwhile closes it (its
    // connection, once made, is closed too, and open() rejects).
    this.#open.add(db);
    try {
      await db.connect();
    } catch (err) {
      db.close();
      throw err;
    }
    return db;
  }

  /** Closes every database opened through this cluster. Idempotent. */
  close(): void {
    for (const db of [...this.#open]) db.close();
  }
}
