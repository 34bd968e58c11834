/**
 * A connection handed out by `Client.reserve()` for one caller alone, for
 * code that issues `BEGIN`/`COMMIT` itself (ORM adapters, migrations).
 *
 * @module
 */

import type { PooledConnection } from "./connection.ts";
import { type Pool, reservedConnections } from "./pool.ts";
import { Queryable } from "./queryable.ts";
import { type Ended, fixedRoute } from "./route.ts";
import { ErrorCode } from "../protocol/errors.ts";
import type { CallShape } from "./_calls.ts";

const RELEASED: Ended = {
  message: "Reserved connection was released: calls through it are refused (reserve another)",
  code: ErrorCode.Released,
};

/** Options of `Client.reserve()`. */
export interface ReserveOptions {
  /**
   * Aborts the wait for a free connection: `reserve()` rejects with
   * `AbortError`, as a call does (a connection handed over later goes back
   * to the pool).
   */
  signal?: AbortSignal | null;
}

/** `Client.reserve(options)`, for `checkArgCount` and `callOptions`. */
export const RESERVE: CallShape = {
  name: "reserve()",
  args: ["options"],
  options: ["signal"],
};

/**
 * A dedicated connection: every statement sent through it runs on it, in
 * order, and nothing else does, so raw `BEGIN`/`COMMIT`/`SAVEPOINT` work as on
 * a single connection. Give it back with {@link release} (or `await using`);
 * if a transaction is still open then, the connection is closed (the server
 * rolls the transaction back) instead of returning to the pool.
 *
 * @example
 * ```ts
 * import { serve } from "@netsqlite/netsqlite/server";
 * import { connect } from "@netsqlite/netsqlite/client";
 * const dir = await Deno.makeTempDir();
 * await using server = await serve({ database: `${dir}/a.db`, path: `${dir}/a.sock` });
 * await using db = await connect({ path: `${dir}/a.sock` });
 * await db.exec("CREATE TABLE t (x)");
 * {
 *   await using conn = await db.reserve();
 *   await conn.exec("BEGIN");
 *   await conn.run("INSERT INTO t VALUES (1)");
 *   await conn.exec("COMMIT");
 * }
 * if ((await db.values("SELECT x FROM t"))[0][0] !== 1) throw new Error("not committed");
 * ```
 */
export class ReservedConnection extends Queryable {
  readonly #pool: Pool;
  readonly #conn: PooledConnection;
  #released = false;

  /** @internal Use `Client.reserve()`. */
  constructor(pool: Pool, conn: PooledConnection) {
    super(fixedRoute(conn, () => this.#released ? RELEASED : null, pool.ownWriter));
    this.#pool = pool;
    this.#conn = conn;
    reservedConnections.set(this, conn);
  }

  /**
   * True while this connection has a transaction open on the server, or one
   * lost with its connection awaits its `ROLLBACK` (every call but `ROLLBACK`
   * fails then), so that `if (r.inTransaction) await r.exec("ROLLBACK")`
   * clears either. False once released, and once the client is closed: the
   * server rolls back the transaction of a closed connection, and nothing
   * (a `ROLLBACK` neither) can be sent any more, so an ORM that rolls back
   * only what is still open lets the error that ended the transaction
   * through rather than the `ROLLBACK`'s "Client is closed".
   */
  get inTransaction(): boolean {
    return !this.#released && !this.#pool.closed &&
      (this.#conn.inTransaction || this.#conn.lostTransaction);
  }

  /** True once {@link release} was called. */
  get released(): boolean {
    return this.#released;
  }

  /** Gives the connection back to the pool. Idempotent; later calls fail with `SqliteError` `RELEASED`. */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#pool.release(this.#conn);
  }

  /** Same as {@link release}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    this.release();
    return Promise.resolve();
  }
}
