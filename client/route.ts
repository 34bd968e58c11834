/**
 * The private interface between the client's public classes (`Client`,
 * `ReservedConnection`, `Transaction`, `Statement`) and the connections they
 * use. Not exported from `mod.ts`.
 *
 * @module
 */

import { type ErrorCode, SqliteError } from "../protocol/errors.ts";
import type { PooledConnection } from "./connection.ts";
import type { OwnWriter } from "./_own_writer.ts";

/** How a query API object reaches a connection. */
export interface Route {
  /**
   * The connection for the next call (the shared pool may make it wait);
   * `writes` when the call may wait for the server's writer (see `readsOnly`);
   * `cursor` when it opens a cursor (the shared pool prefers a connection
   * with room for one: see `Pool.shared`); `alone` when the call waited for
   * the earlier calls of its burst ({@link earlier}): the shared pool then
   * neither joins it to the burst under way (another's) nor starts one.
   */
  connection(
    writes?: boolean,
    cursor?: boolean,
    alone?: boolean,
  ): PooledConnection | Promise<PooledConnection>;
  /**
   * Runs `fn` with a connection of its own for its whole duration: the shared
   * pool reserves one (`signal` aborts the wait for it) and releases it
   * after; a reserved route uses its own.
   */
  exclusive<T>(fn: (conn: PooledConnection) => Promise<T>, signal?: AbortSignal): Promise<T>;
  /**
   * On the shared pool, during a burst (calls issued in one synchronous run):
   * settles once the calls of the burst issued so far (those told to
   * {@link issued}) were answered, for a call that chooses its connection
   * later (`iterate()`, when iterating starts) yet must see their writes;
   * else `null`. Calls issued after it are not waited for.
   */
  earlier?(): Promise<void> | null;
  /**
   * On the shared pool: notes a call just issued (in the run of code that
   * got its {@link connection}) by its answer, for {@link earlier}.
   */
  issued?(answer: Promise<unknown>): void;
  /** True on a shared pool of more than one connection: raw BEGIN/COMMIT is refused. */
  readonly refusesTxControl: boolean;
  /**
   * True on a `transaction()` handle: statements that would begin or end its
   * transaction (`BEGIN`, `COMMIT`, `END`, `ROLLBACK` without `TO`, or a
   * savepoint named like `transaction()`'s own) are refused.
   */
  readonly refusesTxEnd?: boolean;
  /**
   * The client's guard against waiting for its own transaction (explains a
   * `BUSY_TIMEOUT` that did); on the shared pool and reserved connections.
   */
  readonly ownWriter?: OwnWriter;
}

/** Why a fixed route no longer takes calls: its message, and the code it fails with. */
export interface Ended {
  /** The error's message. */
  message: string;
  /** `TX_ENDED` (a `transaction()` handle) or `RELEASED` (a reserved connection). */
  code: typeof ErrorCode.TxEnded | typeof ErrorCode.Released;
}

/** A route bound to one connection while `active()` returns `null`. */
export function fixedRoute(
  conn: PooledConnection,
  active: () => Ended | null,
  ownWriter?: OwnWriter,
): Route {
  return {
    ownWriter,
    connection(): PooledConnection | Promise<PooledConnection> {
      const ended = active();
      return ended === null ? conn : Promise.reject(endedError(ended));
    },
    exclusive<T>(fn: (c: PooledConnection) => Promise<T>): Promise<T> {
      const ended = active();
      return ended === null ? fn(conn) : Promise.reject(endedError(ended));
    },
    refusesTxControl: false,
  };
}

/**
 * The error of a call through a route that ended: a programming error, so a
 * `SqliteError` with its own code, not a `ConnectionError` that retry logic
 * would take for a connection failure. Nothing was sent.
 */
export function endedError(ended: Ended): SqliteError {
  return new SqliteError(ended.code, ended.message);
}
