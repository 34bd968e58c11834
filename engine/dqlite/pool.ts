/**
 * The connections of the server's cluster mode to the dqlite leader: see
 * {@link DatabasePool}.
 *
 * @module
 */

import { ErrorCode, SqliteError } from "../../protocol/errors.ts";
import type { DqliteCluster } from "./cluster.ts";
import type { DqliteDatabase } from "./database.ts";
import { DeadlineTimer } from "../deadline_timer.ts";

interface Waiter {
  resolve: (db: DqliteDatabase) => void;
  reject: (err: unknown) => void;
  onWait: ((queued: boolean) => void) | undefined;
  timer: DeadlineTimer;
}

/**
 * Connections to one database on the leader, lent for one request at a time
 * (a session in a transaction keeps its connection until the transaction
 * ends), so sessions share connections between requests and no two
 * requests ever interleave on one. At most `max` exist; a request that finds
 * none free waits up to `busyTimeout` ms, then fails with `BUSY_TIMEOUT`
 * (`mayHaveRun` false: nothing was sent).
 *
 * After a leader change every idle connection still points at the old
 * leader: {@link dropIdle} closes them, so the next request connects anew.
 * An idle connection whose node died is seen dead as soon as the node's end
 * closes (see `DqliteConn`), or once the cluster's leader watch leaves a
 * leader that stopped answering, or no longer leads (see `DqliteCluster`);
 * lent again, it connects to the new leader before anything is sent.
 */
export class DatabasePool {
  readonly #cluster: DqliteCluster;
  readonly #name: string;
  readonly #max: number;
  readonly #busyTimeout: number;
  readonly #idle: DqliteDatabase[] = [];
  readonly #waiters: Waiter[] = [];
  /** The databases made and not yet closed, idle or lent. */
  readonly #made = new Set<DqliteDatabase>();
  /** {@link #made}, and those being made: at most `max`. */
  #count = 0;
  #closed = false;

  /**
   * @param cluster The cluster to open connections on.
   * @param name The dqlite database name.
   * @param max Most connections open at once.
   * @param busyTimeout How long a request waits for a free connection, in ms.
   */
  constructor(cluster: DqliteCluster, name: string, max: number, busyTimeout: number) {
    this.#cluster = cluster;
    this.#name = name;
    this.#max = max;
    this.#busyTimeout = busyTimeout;
  }

  /**
   * Connections to a node open now, idle or lent. An idle one whose node
   * closed it (the node died, a leader change, a stopped read) is not
   * counted, though it stays in the pool until it is lent again, and then
   * connects anew.
   */
  get open(): number {
    let n = 0;
    for (const db of this.#made) if (db.connected) n++;
    return n;
  }

  /**
   * Lends a connection: an idle one, a new one, or the next one given back.
   *
   * @param onWait Called with what the request waits for: `true` for one
   *   given back (all `max` are lent), `false` for a new one being opened
   *   (called again should a wait for one given back turn into that).
   * @throws {SqliteError} `BUSY_TIMEOUT` after `busyTimeout` ms without one, `SHUTTING_DOWN`.
   * @throws {LeaderError} `NO_LEADER` when a new connection finds no leader.
   */
  async acquire(onWait?: (queued: boolean) => void): Promise<DqliteDatabase> {
    this.#checkOpen();
    const idle = this.#idle.pop();
    if (idle !== undefined) return idle;
    if (this.#count < this.#max) {
      this.#count++;
      onWait?.(false);
      try {
        const db = await this.#cluster.open(this.#name);
        this.#made.add(db);
        return db;
      } catch (err) {
        this.#count--;
        this.#wakeNext();
        throw err;
      }
    }
    onWait?.(true);
    return await new Promise<DqliteDatabase>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        onWait,
        // (A DeadlineTimer: a connection given back while the server was stopped still counts.)
        timer: new DeadlineTimer(() => {
          this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
          // Held by requests running (a long statement, a search for a new leader) or by
          // transactions: nothing of this request was sent.
          reject(
            new SqliteError(
              ErrorCode.BusyTimeout,
              `No connection to the dqlite leader was free within ${this.#busyTimeout} ms ` +
                `(--busy-timeout): all ${this.#max} in use (dqlite.poolSize), held by other ` +
                "requests or transactions (not applied: safe to retry)",
              undefined,
              { mayHaveRun: false },
            ),
          );
        }, this.#busyTimeout),
      };
      this.#waiters.push(waiter);
    });
  }

  /**
   * Takes back a lent connection; one left inside a transaction (or holding
   * a lost one) is closed instead, which makes the leader roll it back.
   */
  release(db: DqliteDatabase): void {
    if (this.#closed || db.inTransaction || db.transactionLost) {
      this.discard(db);
      return;
    }
    const waiter = this.#waiters.shift();
    if (waiter !== undefined) {
      waiter.timer.clear();
      waiter.resolve(db);
      return;
    }
    this.#idle.push(db);
  }

  /** Closes a lent connection (its transaction, if any, is rolled back by the leader). */
  discard(db: DqliteDatabase): void {
    db.close();
    this.#made.delete(db);
    this.#count--;
    this.#wakeNext();
  }

  /** Closes every idle connection (after a leader change: they point at the old leader). */
  dropIdle(): void {
    for (const db of this.#idle.splice(0)) {
      db.close();
      this.#made.delete(db);
      this.#count--;
    }
  }

  /** A waiter may open a connection now that one was closed. */
  #wakeNext(): void {
    const waiter = this.#waiters.shift();
    if (waiter === undefined) return;
    waiter.timer.clear();
    this.acquire(waiter.onWait).then(waiter.resolve, waiter.reject);
  }

  #checkOpen(): void {
    if (this.#closed) throw new SqliteError(ErrorCode.ShuttingDown, "Server is shutting down");
  }

  /** Closes idle connections and fails waiters; lent ones are closed when given back. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.dropIdle();
    for (const w of this.#waiters.splice(0)) {
      w.timer.clear();
      w.reject(new SqliteError(ErrorCode.ShuttingDown, "Server is shutting down"));
    }
  }
}
