/**
 * The netsqlite client: an async API in better-sqlite3's vocabulary (close to
 * `@db/sqlite`'s; README: Coming from @db/sqlite), talking to a netsqlite
 * server over a Unix socket or TCP.
 * A {@link Client} is a small pool of connections (see {@link connect}).
 *
 * @example
 * ```ts
 * import { serve } from "@netsqlite/netsqlite/server";
 * import { connect } from "@netsqlite/netsqlite/client";
 * const dir = await Deno.makeTempDir();
 * await using server = await serve({ database: `${dir}/app.db`, path: `${dir}/app.sock` });
 * await using db = await connect({ path: `${dir}/app.sock` });
 * await db.exec("CREATE TABLE kv (k TEXT PRIMARY KEY, v)");
 * await db.run("INSERT INTO kv VALUES (?, ?)", ["answer", 42]);
 * const row = await db.get<{ v: number }>("SELECT v FROM kv WHERE k = ?", ["answer"]);
 * if (row?.v !== 42) throw new Error("expected 42");
 * ```
 *
 * @module
 */

import type { HelloReply } from "./protocol/messages.ts";
import type { PooledConnection } from "./client/connection.ts";
import type { Link } from "./client/link.ts";
import { withCallerFrames } from "./client/_caller_stack.ts";
import { connectOrStart } from "./client/autostart.ts";
import { openFinding } from "./client/_lock_owner.ts";
import { type ConnectOptions, resolveConnectOptions } from "./client/options.ts";
import { Pool } from "./client/pool.ts";
import { Queryable } from "./client/queryable.ts";
import { callOptions, checkArgCount } from "./client/_calls.ts";
import { RESERVE, ReservedConnection, type ReserveOptions } from "./client/reserved.ts";
import {
  openSubscription,
  SUBSCRIBE,
  type SubscribeOptions,
  subscribeOptions,
  type Subscription,
} from "./client/subscribe.ts";
import { ConnectionError, ErrorCode, SqliteError } from "./protocol/errors.ts";

export type { ConnectOptions } from "./client/options.ts";
export type { AutostartOptions } from "./client/autostart.ts";
export type { TlsClientOptions } from "./transport/connect.ts";
export type { CallOptions } from "./protocol/messages.ts";
export type { Row, SqlValue } from "./client/rows.ts";
export {
  type BatchOptions,
  type BatchResult,
  type BatchStatement,
  type BatchStatementsOf,
  type BindParams,
  type BindParamsOf,
  type BindValue,
  type ExecOptions,
  type IterateOptions,
  Queryable,
  type RunResult,
  Transaction,
  type TransactionOptions,
} from "./client/queryable.ts";
export { ReservedConnection, type ReserveOptions } from "./client/reserved.ts";
export { Statement } from "./client/statement.ts";
export {
  AbortError,
  ConnectionError,
  ErrorCode,
  type ErrorCodeValue,
  ProtocolError,
  SqliteError,
} from "./protocol/errors.ts";
export type { HelloReply, ServerLimits } from "./protocol/messages.ts";
export { channelSocketPath, defaultSocketPath } from "./transport/address.ts";
export {
  type ChangeEvent,
  type KvChangeEvent,
  type LaggedEvent,
  type SubscribeOptions,
  Subscription,
  type TableChangeEvent,
} from "./client/subscribe.ts";
export {
  KvAtomic,
  KvCollection,
  type KvCommitResult,
  KvConflictError,
  type KvEntry,
  type KvKey,
  type KvKeyPart,
  type KvListOptions,
  type KvPutOptions,
  type KvRange,
} from "./client/kv.ts";

/**
 * Connects to a netsqlite server: opens the first connection of the
 * client's pool and completes the handshake; further connections (up to
 * `max`) open when concurrent calls need them.
 *
 * @param options Where the server is; `connect()` alone uses the default
 *   socket of `./netsqlite.db`. When nothing answers at a database's default
 *   socket, the client tries the Unix socket its server records in the
 *   database's lock file, if it may read that file without asking.
 * @returns a connected client.
 * @throws {TypeError} / {RangeError} for a bad option, naming it.
 * @throws {ConnectionError} when nothing answers at the address.
 * @throws {ProtocolError} `PROTOCOL_VERSION` when the server speaks another version.
 * @example
 * ```ts
 * import { serve } from "@netsqlite/netsqlite/server";
 * import { connect } from "@netsqlite/netsqlite";
 * const dir = await Deno.makeTempDir();
 * await using server = await serve({ database: `${dir}/a.db`, path: `${dir}/a.sock` });
 * await using db = await connect({ path: `${dir}/a.sock`, max: 2 }); // or { hostname, port }
 * console.log(db.serverInfo.server); // "netsqlite <version>"
 * ```
 */
export async function connect(options: ConnectOptions = {}): Promise<Client> {
  const config = await resolveConnectOptions(options);
  let opened: [Link, HelloReply];
  try {
    opened = config.autostart === null ? await openFinding(config) : await connectOrStart(config);
  } catch (err) {
    throw withCallerFrames(err);
  }
  return new Client(new Pool(config, opened[0], opened[1]));
}

/**
 * A client: a pool of up to `max` connections to one server.
 *
 * - Plain calls (`run`, `query`, ...) share the connections no one reserved.
 *   Calls issued in one synchronous run of code without awaiting each other
 *   go to one connection and run in the order issued; a call issued after an
 *   earlier call settled runs after it (and sees its writes). Calls issued
 *   from different ticks without awaiting each other have no order between
 *   them: they may run on different connections.
 * - {@link transaction} runs its function on a connection of its own; only
 *   statements through its `tx` run inside the transaction.
 * - {@link reserve} hands out a connection for code that sends
 *   `BEGIN`/`COMMIT` itself.
 * - With `max > 1`, transaction-control statements (`BEGIN`, `COMMIT`,
 *   `ROLLBACK`, `SAVEPOINT`, `RELEASE`, `END`) sent through the client itself
 *   are refused with `SqliteError` `TX_CONTROL` before anything is sent:
 *   other callers' statements would fall into that transaction. With
 *   `max: 1` the client is one connection owned by its caller, and they run;
 *   there, plain calls made from inside `transaction()`'s function join the
 *   transaction, at the level of their caller (beside a nested transaction
 *   that another branch opened they wait for it, as `tx`'s calls do), and
 *   calls from elsewhere wait for it.
 *
 * When a connection is lost, its pending requests reject with
 * `ConnectionError`, and its next call reopens it — unless a transaction was
 * open on it: then the server has rolled it back, and calls on that
 * connection fail with `ConnectionError` until the application sends
 * `ROLLBACK` (answered at once), so no statement meant for the lost
 * transaction ever runs in autocommit. `transaction()` does this by itself.
 *
 * @example
 * ```ts
 * import { serve } from "@netsqlite/netsqlite/server";
 * import { connect } from "@netsqlite/netsqlite";
 * const dir = await Deno.makeTempDir();
 * await using server = await serve({ database: `${dir}/a.db`, path: `${dir}/a.sock` });
 * await using db = await connect({ path: `${dir}/a.sock` });
 * await db.exec("CREATE TABLE t (x)");
 * // Calls made together share a connection and run in order; a transaction has its own.
 * const tx = db.transaction(async (tx) => {
 *   await tx.run("INSERT INTO t VALUES (1)");
 * });
 * const outside = db.query("SELECT * FROM t"); // does not see the uncommitted row
 * await tx;
 * if ((await outside).length !== 0) throw new Error("saw an uncommitted row");
 * if ((await db.query("SELECT * FROM t")).length !== 1) throw new Error("expected the committed row");
 * ```
 */
export class Client extends Queryable {
  readonly #pool: Pool;
  readonly #feeds = new Set<Subscription>();
  /** Aborted by {@link close}: the change feeds still opening (connecting, handshaking, subscribing). */
  readonly #feedsOpening = new Set<AbortController>();

  /** @internal Use {@link connect}. */
  constructor(pool: Pool) {
    super({
      connection: (writes?: boolean, cursor?: boolean, alone?: boolean) =>
        pool.shared(writes, cursor, alone),
      exclusive: async (fn, signal) => {
        // Called from inside the fn of one of this client's open transaction()s
        // (followed across awaits): nest in it as a savepoint, as
        // better-sqlite3's db.transaction() inside a transaction does. (With
        // max > 1 a connection of its own would wait for the writer that very
        // transaction holds; with max: 1 it would wait for itself.)
        const own = pool.callerTransaction() ?? pool.callerScopeConnection();
        if (own !== null) return await fn(own);
        let conn: PooledConnection;
        try {
          conn = await pool.reserve(signal, true);
        } catch (err) {
          // max: 1, a raw BEGIN sent before (not awaited) was found open while
          // waiting: nest in it, as when it was awaited.
          const raw = pool.callerTransaction();
          if (raw !== null && err instanceof SqliteError && err.code === ErrorCode.TxControl) {
            return await fn(raw);
          }
          throw err;
        }
        try {
          return await fn(conn);
        } finally {
          pool.release(conn);
        }
      },
      earlier: () => pool.burstSettled(),
      issued: (answer: Promise<unknown>) => pool.noteCall(answer),
      refusesTxControl: pool.max > 1,
      ownWriter: pool.ownWriter,
    });
    this.#pool = pool;
  }

  /** What the server reported in the handshake: versions and limits. */
  get serverInfo(): HelloReply {
    return this.#pool.info;
  }

  /**
   * True while a plain call on the client would run inside a transaction,
   * which is only possible with `max: 1`: after a raw `BEGIN`, or from inside
   * `transaction(fn)` (whose plain calls join it), and while such a
   * transaction lost with its connection awaits its `ROLLBACK`; see
   * {@link ReservedConnection.inTransaction}. False once the client is
   * closed (the server rolled the transaction back; nothing can be sent).
   */
  get inTransaction(): boolean {
    return !this.#pool.closed && this.#pool.sharedInTransaction;
  }

  /** Most connections this client opens. */
  get max(): number {
    return this.#pool.max;
  }

  /** Connections opened so far (they open lazily, up to {@link max}). */
  get connections(): number {
    return this.#pool.size;
  }

  /** True once {@link close} was called. */
  get closed(): boolean {
    return this.#pool.closed;
  }

  /**
   * Takes a connection for the caller alone until {@link ReservedConnection.release}
   * (or `await using`): for code that issues `BEGIN`/`COMMIT` itself. Waits
   * while all `max` connections are reserved or busy: at most the
   * `acquireTimeout` connect option, and until `options.signal` aborts.
   *
   * @param options An abort signal for the wait.
   * @returns the reserved connection (see {@link ReservedConnection} for an example).
   * @throws {ConnectionError} when the client is closed, or `ACQUIRE_TIMEOUT`.
   * @throws {AbortError} when `options.signal` aborted the wait.
   * @throws {TypeError} for an option other than `signal`, a `signal` that is
   *   no `AbortSignal`, options that are not a plain object, or a second argument.
   */
  async reserve(options?: ReserveOptions | null): Promise<ReservedConnection> {
    checkArgCount(RESERVE, arguments.length);
    const { signal } = callOptions(RESERVE, options);
    let conn: PooledConnection;
    try {
      conn = await this.#pool.reserve(signal);
    } catch (err) {
      throw withCallerFrames(err);
    }
    return new ReservedConnection(this.#pool, conn);
  }

  /**
   * Subscribes to committed changes (a change feed) on a connection of its
   * own: every row change of the chosen tables and every change of the
   * chosen key-value collections, in commit order, only after commit, never
   * for rolled-back work. Needs a server on the FFI engine.
   *
   * @param options The tables and key-value collections to follow, whether
   *   events carry values, where to resume (`since`), and a `signal` that
   *   ends the feed.
   * @returns the subscription: an async iterable of events; close it (or
   *   `await using`) when done.
   * @example
   * ```ts ignore
   * await using feed = await db.subscribe({ tables: ["orders"], values: true });
   * for await (const e of feed) {
   *   if (e.type === "lagged") break; // resume with subscribe({ since: e.resumeFrom })
   *   console.log(e.commitSeq, e.table, e.op, e.rowid, e.value);
   * }
   * ```
   *
   * @throws {SqliteError} `FEED_UNSUPPORTED` when the server runs node:sqlite,
   *   `FEED_GAP` when the server no longer holds a change after `since` that
   *   the feed takes (its tables and collections), or `since` is from
   *   before the server's restart.
   * @throws {AbortError} when `options.signal` aborted before the feed opened
   *   (what was opened is closed; later, aborting it ends the feed).
   * @throws {TypeError} for an option it does not take (a misspelt `tables`
   *   would follow every table), options that are not a plain object, or a
   *   second argument; nothing is opened.
   */
  async subscribe(options?: SubscribeOptions | null): Promise<Subscription> {
    checkArgCount(SUBSCRIBE, arguments.length);
    const checked = subscribeOptions(options);
    if (this.#pool.closed) throw new ConnectionError("Client is closed");
    const opening = new AbortController();
    this.#feedsOpening.add(opening);
    let sub: Subscription;
    // Set when the feed ends: it may end before it is returned (a replay
    // that lags at once, CHANGE_TOO_LARGE, its signal), and is not kept then.
    let ended = false;
    try {
      sub = await openSubscription(
        this.#pool.config,
        checked,
        (s) => {
          ended = true;
          this.#feeds.delete(s);
        },
        (info) => this.#pool.refuses(info),
        opening.signal,
      );
    } catch (err) {
      // Closed while it opened: not a failure of the server's, whatever the link saw.
      if (this.#pool.closed) throw new ConnectionError("Client is closed");
      throw err;
    } finally {
      this.#feedsOpening.delete(opening);
    }
    if (this.#pool.closed) {
      // close() ran while the feed was opening (it only closes the feeds it
      // sees): the feed would outlive its client. Close it, as close() would
      // have, and fail as any call made after close().
      await sub[Symbol.asyncDispose]();
      throw new ConnectionError("Client is closed");
    }
    if (!ended) this.#feeds.add(sub);
    return sub;
  }

  /**
   * Closes every connection (change feeds included). Pending requests reject
   * with `ConnectionError`; open transactions are rolled back by the server.
   * The client is closed at once, awaited or not: calls made after it fail
   * with `ConnectionError` "Client is closed", unsent. Idempotent.
   *
   * @returns once every connection is closed.
   */
  async close(): Promise<void> {
    // The pool is closed at once (before any await): `closed` is true, and a
    // call made after `close()`, awaited or not, fails unsent.
    const pool = this.#pool.close();
    for (const opening of this.#feedsOpening) {
      opening.abort(new ConnectionError("Client is closed"));
    }
    const feeds = [...this.#feeds].map((f) => f[Symbol.asyncDispose]());
    await Promise.all([...feeds, pool]);
  }

  /** Same as {@link Client.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
