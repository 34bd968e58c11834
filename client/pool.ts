/**
 * A client's connections. Opened lazily up to `max`. Plain calls share the
 * connections nobody reserved; `reserve()` (and `transaction()`) take one
 * for themselves.
 *
 * Dispatch of a plain call ({@link Pool.shared}):
 * 1. every call issued in one synchronous run of code (before the caller's
 *    next `await` or tick) goes to the connection the first of them got, so
 *    a burst of calls issued without awaiting runs in the order issued (a
 *    call that may wait for the writer joining a burst on the last
 *    connection free of such calls follows, with the rest of the burst,
 *    once the burst's calls there were answered, on the connection rule 4's
 *    `#behindWrites` gives: see `#writeJoins`; a read cursor that would be
 *    past the server's `maxCursors` there follows once they were answered,
 *    on a connection with room for it: see `#forCursor`). An `iterate()`,
 *    whose connection is chosen when iterating starts, first waits for the
 *    calls of its burst issued before it (not after) to be answered,
 *    wherever they went (see {@link Pool.burstSettled}), then takes its
 *    connection by rules 2 to 5, joining no burst (one under way then was
 *    issued after it);
 * 2. otherwise an idle connection (nothing in flight, no cursor open);
 * 3. otherwise a lost connection, reopened, or a new one while fewer than
 *    `max` are open: either is opened before the call is sent on it. Should
 *    the server refuse it as full (`TOO_MANY_CONNECTIONS`), it leaves the
 *    pool, the call goes on by the next rules when another connection can
 *    take it (and the pool opens no other for {@link FULL_PAUSE_MS}), else
 *    the pool tries again for a moment ({@link FULL_RETRIES} times), then
 *    the call fails with that error;
 * 4. otherwise the unreserved connection with the fewest calls in flight
 *    among those with no call in flight that may wait for the writer (see
 *    `PooledConnection.mayBlock`): a call pipelined behind one would wait
 *    as long (with `max: 1`, the one connection whatever it carries); while
 *    a `reserve()` made before the call waits, the next least busy one, if
 *    any, so that the one it may take becomes idle; a
 *    read cursor takes these rules among the connections with room for it
 *    (under `maxCursors`), and when only connections carrying such calls
 *    have room, goes behind them rather than where the server refuses it
 *    (see `#pickForCursor`);
 *    before rules 2 to 4, a call that may itself wait for the writer goes
 *    behind such calls when taking another connection would leave none
 *    free of them (`#behindWrites`), also when it waited (rule 5): they use
 *    at most `max` − 1 connections, so a read always finds one;
 * 5. otherwise (every connection reserved, or carrying such a call; with
 *    `max: 1` also while a `reserve()` or `transaction()` made before it
 *    waits for the connection, unless a raw `BEGIN` or a cursor is open
 *    there) the call waits in the pool, first come first served, and goes
 *    to the first connection that rules 2 to 4 give it.
 *
 * Waiting for a connection (rules 3 and 5, and `reserve()`) ends after the
 * `acquireTimeout` option with `ConnectionError` `ACQUIRE_TIMEOUT`, or when
 * the caller's signal aborts; nothing was sent then.
 *
 * @module
 */

import {
  AbortError,
  ConnectionError,
  ErrorCode,
  ProtocolError,
  SqliteError,
} from "../protocol/errors.ts";
import type { HelloReply } from "../protocol/messages.ts";
import { type ConnectionEvents, PooledConnection } from "./connection.ts";
import { abortable, type Link, unsentError } from "./link.ts";
import { OwnWriter } from "./_own_writer.ts";
import { copyError } from "./_caller_stack.ts";
import { callerScope, transactionContext, turnOf } from "./_tx_order.ts";
import { type Ended, endedError } from "./route.ts";
import type { ConnectConfig } from "./options.ts";
import { formatAddress } from "../transport/address.ts";

/** Why a call that waited to join a transaction that then ended is refused. */
const JOINED_TX_ENDED: Ended = {
  message: "Transaction has ended: this call, made inside its function, waited for a " +
    "transaction nested beside it, and the transaction settled meanwhile without it",
  code: ErrorCode.TxEnded,
};

// Defined with the order of transactions on a connection (see `_tx_order.ts`); re-exported for
// the ORM adapters.
export { transactionContext, type TransactionScope } from "./_tx_order.ts";

/**
 * The pooled connection behind each `ReservedConnection`, so that the ORM adapters can run their
 * transactions (on a reserved connection) as this pool's `transaction()`s: in
 * {@link transactionContext}, with that connection as the scope's. Filled by `ReservedConnection`.
 * @internal
 */
export const reservedConnections: WeakMap<object, PooledConnection> = new WeakMap();

type Waiter = {
  resolve(conn: PooledConnection | Promise<PooledConnection>): void;
  reject(err: Error): void;
  /** A plain call that may wait for the writer (served by {@link Pool.shared}'s rule for them). */
  writes: boolean;
  /** With `max: 1`: the connection's {@link PooledConnection.sent} when the wait began. */
  sentAtWait: number;
  /** Order of arrival among all waiters of the pool (first come, first served). */
  seq: number;
};

/** How long a pool stays at its size after the server refused a connection as full, in ms. */
export const FULL_PAUSE_MS = 1000;
/** Attempts to open a connection the server refuses as full, when no other can serve the call. */
export const FULL_RETRIES = 10;
/** Pause between those attempts, in ms. */
const FULL_RETRY_MS = 25;

type Fallback = (() => PooledConnection | Promise<PooledConnection>) | null;

function serverFull(err: unknown): boolean {
  return err instanceof ProtocolError && err.code === ErrorCode.TooManyConnections;
}

/** No connections (shared, never changed). */
const NONE: readonly PooledConnection[] = Object.freeze([]);

/** The connections of one client. */
export class Pool implements ConnectionEvents {
  readonly #config: ConnectConfig;
  readonly #conns: PooledConnection[] = [];
  #info: HelloReply;
  /** The database the server served at the first handshake that named it. */
  #database: string | undefined;
  #burst: PooledConnection | Promise<PooledConnection> | null = null;
  /**
   * During a synchronous run of code that dispatched a plain call: the
   * answers of its calls noted so far (see {@link noteCall}); else `null`.
   */
  #runCalls: Promise<unknown>[] | null = null;
  /** Settles once the first {@link #runCovered} of {@link #runCalls} were answered. */
  #runAnswered: Promise<void> | null = null;
  #runCovered = 0;
  #reserveWaiters: Waiter[] = [];
  #sharedWaiters: Waiter[] = [];
  /** Waiters enqueued so far (their {@link Waiter.seq}). */
  #arrivals = 0;
  /** The waiter behind each promise {@link #enqueue} returned, to take it out when given up. */
  readonly #waiterOf = new WeakMap<Promise<PooledConnection>, Waiter>();
  /**
   * For each promise {@link #open} returned to a `reserve()`: gives it up
   * (its caller gave up its wait), taking out the wait its refusal as full
   * fell back to, if any.
   */
  readonly #openGiveUp = new WeakMap<Promise<PooledConnection>, () => void>();
  /** Ends the pauses between attempts to open a connection refused as full (see {@link #open}). */
  readonly #fullPauses = new Set<() => void>();
  #failure: ConnectionError | null = null;
  #closed = false;
  /** Connections being opened before use (new, or reopened), and what their caller gets. */
  readonly #opening = new Map<PooledConnection, Promise<PooledConnection>>();
  /** Connections of {@link #opening} opened for a plain call (not for a `reserve()`). */
  readonly #openingShared = new Set<PooledConnection>();
  /** `performance.now()` before which the pool does not grow: the server said it was full. */
  #fullUntil = 0;
  /** Connections handed to a waiting call that has not sent its first request yet. */
  readonly #handing = new Set<PooledConnection>();
  /** Ends {@link #handing} should the call never send (an `iterate()` never consumed). */
  #handingTimer: ReturnType<typeof setTimeout> | undefined;
  /**
   * While callers wait: serves them again when the first cursor hold that
   * only the server's cursor idle timeout ends lapses (an iterator dropped
   * unfinished keeps its connection busy until then, or until collected).
   */
  #lapseTimer: ReturnType<typeof setTimeout> | undefined;

  /** Guards calls on the shared pool against waiting for this client's own transaction. */
  readonly ownWriter: OwnWriter = new OwnWriter({
    callerTransaction: () => this.ownTransactionOfCaller(),
    inTransaction: () => this.inTransaction(),
  });

  /** The resolved connect options. */
  get config(): ConnectConfig {
    return this.#config;
  }

  /**
   * @param config Resolved connect options.
   * @param link The first connection, already open.
   * @param info Its handshake reply.
   */
  constructor(config: ConnectConfig, link: Link, info: HelloReply) {
    this.#config = config;
    this.#info = info;
    this.#database = info.database;
    const first = new PooledConnection(config, this, link, info.session ?? null);
    first.takeLimits(info.limits);
    this.#conns.push(first);
  }

  /** Most connections. */
  get max(): number {
    return this.#config.max;
  }

  /** Connections created so far (open, opening, or lost and reopenable). */
  get size(): number {
    return this.#conns.length;
  }

  /** The last handshake reply received. */
  get info(): HelloReply {
    return this.#info;
  }

  /** True once {@link close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * True while a plain call made here would run inside a transaction (only
   * possible with `max: 1`): the shared connection holds one (a raw
   * `BEGIN`), or the caller is inside `transaction(fn)`, which it joins.
   */
  get sharedInTransaction(): boolean {
    const own = this.callerTransaction();
    if (own !== null) return own.inTransaction || own.lostTransaction;
    return this.#conns.some((c) => !c.reserved && (c.inTransaction || c.lostTransaction));
  }

  /**
   * The connection for a plain call (see the module doc for the rule);
   * `writes` when the call may wait for the server's writer; `cursor` when
   * it opens a cursor (see {@link #forCursor}); `alone` for a call that
   * neither joins the burst under way nor starts one (an `iterate()` that
   * waited for the earlier calls of its own burst: a burst under way when
   * it resumes is another's, issued after it).
   */
  shared(
    writes = false,
    cursor = false,
    alone = false,
  ): PooledConnection | Promise<PooledConnection> {
    if (this.#closed) return Promise.reject(new ConnectionError("Client is closed"));
    if (this.#failure !== null) return Promise.reject(unsentError(this.#failure));
    if (this.#config.max === 1) {
      const own = this.callerTransaction();
      if (own !== null) {
        // Joins it at the caller's level, as a call through that level's tx: it waits while
        // a transaction nested there by another branch is open (inside that one's savepoint,
        // its ROLLBACK TO would undo this call after it was acknowledged), or until the
        // caller's transaction ended; then it is dispatched again.
        const wait = turnOf(own, undefined, () => this.callerTransaction() === own);
        if (wait === null) return own;
        // Made from inside a transaction()'s fn (not beside a raw BEGIN): if that transaction
        // ended while the call waited, it was rolled back or committed without the call, which
        // must not then run on its own in autocommit (as a call through its tx is refused).
        const inFn = callerScope(own) !== undefined;
        return wait.then(() => {
          if (this.callerTransaction() === own) return own; // its turn, at once (no re-queue)
          if (inFn) throw endedError(JOINED_TX_ENDED);
          return this.shared(writes);
        });
      }
    }
    if (this.#burst !== null && !alone) {
      if (writes && this.#config.max > 1) {
        const burst = this.#burst;
        const before = this.burstSettled();
        this.#burst = burst instanceof Promise
          ? burst.then((c) => this.#writeJoins(c, before))
          : this.#writeJoins(burst, before);
      }
      const joined = this.#burst;
      // A failed wait rejects each call with an error of its own (see withCallerFrames).
      const c = joined instanceof Promise
        ? joined.catch((err) => Promise.reject(err instanceof Error ? copyError(err) : err))
        : joined;
      return cursor ? this.#forCursor(c, writes, this.burstSettled()) : c;
    }
    // Calls that wait are served in turn: a newcomer does not pass them.
    const c = (this.#sharedWaiters.length === 0 ? this.#pickFor(writes, cursor) : null) ??
      this.#enqueue(this.#sharedWaiters, writes);
    // A call that waits gives up after acquireTimeout (its signal is the call's own).
    const picked = c instanceof Promise ? this.#bounded(c, undefined, () => {}) : c;
    if (alone) return picked;
    this.#burst = picked;
    if (this.#runCalls === null) {
      // One microtask ends the run: the burst, and the calls noted in it.
      this.#runCalls = [];
      queueMicrotask(() => {
        this.#burst = null;
        this.#runCalls = null;
        this.#runAnswered = null;
        this.#runCovered = 0;
      });
    }
    return picked;
  }

  /**
   * Notes a plain call just issued on the shared pool, by its answer (which
   * settles once it was answered, failed, or was given up): a later
   * {@link burstSettled} of the same run waits for it. Called in the run of
   * code that got the call's connection from {@link shared}.
   */
  noteCall(answer: Promise<unknown>): void {
    this.#runCalls?.push(answer);
  }

  /**
   * The connection for a cursor joining a burst on `c`: `c`, unless it
   * already holds the server's `maxCursors` cursors (those just chosen for
   * it counted: see `PooledConnection.claimCursor`), where one more would
   * fail. Then, once the burst's calls issued before it were answered
   * (`before`, see {@link noteCall}: the cursor still sees their writes)
   * and no request is in flight on `c`, the connection the rules give a cursor ({@link #pickFor}): a burst of
   * cursors (`Promise.all` over many `iterate()` loops) spreads over the
   * pool instead of failing past `maxCursors`.
   */
  #forCursor(
    c: PooledConnection | Promise<PooledConnection>,
    writes: boolean,
    before: Promise<void> | null,
  ): PooledConnection | Promise<PooledConnection> {
    if (c instanceof Promise) return c.then((conn) => this.#forCursor(conn, writes, before));
    if (c.cursorRoom || this.#config.max === 1) return claimed(c);
    return afterBurst(c, before).then(() =>
      this.#pickFor(writes, true) ??
        this.#bounded(this.#enqueue(this.#sharedWaiters, writes), undefined, () => {})
    );
  }

  /**
   * {@link #pickShared}, for a cursor (`cursor`) among the connections with
   * room for one first ({@link #pickForCursor}); when none has, among all,
   * as for any call (the server then refuses the cursor past its
   * `maxCursors`).
   */
  #pickFor(
    writes: boolean,
    cursor: boolean,
  ): PooledConnection | Promise<PooledConnection> | null {
    return (cursor ? this.#pickForCursor(writes) : null) ?? this.#pickShared(writes);
  }

  /**
   * For a cursor that reads: {@link #pickShared}'s rules among the
   * connections with room for one more cursor (`PooledConnection.cursorRoom`,
   * which counts the cursors chosen for a connection and not yet opened
   * there, one being opened included), the one chosen claimed for it. When
   * the only ones with room carry a call that may wait for the writer (or
   * were just handed to a waiting call), the least busy of them: the cursor
   * waits behind that call (for the writer, at most the server's busy
   * timeout) rather than going where the server would refuse it, unless
   * one of the client's connections is in a transaction (that call may be
   * waiting for it: a write issued by other code while a `transaction()`'s
   * `fn`, which opens this cursor, holds the writer). `null`
   * when no unreserved connection has room and none can be opened (the
   * server then refuses the cursor: reserved connections' room does not
   * count, nor is it waited for, as the caller's own reservation or cursors
   * may be what holds it), or for a cursor that may wait for the writer
   * (the rules for those apply) or with `max: 1`.
   */
  #pickForCursor(writes: boolean): PooledConnection | Promise<PooledConnection> | null {
    if (writes || this.#config.max === 1) return null;
    let best: PooledConnection | null = null;
    let lost: PooledConnection | null = null;
    let opening: PooledConnection | null = null;
    /** The least busy connection with room behind a call that may wait for the writer. */
    let behind: PooledConnection | null = null;
    for (const c of this.#conns) {
      if (c.reserved || !c.cursorRoom) continue;
      if (this.#opening.has(c)) {
        opening ??= c;
        continue;
      }
      if (!c.open && !c.holdsTransaction && c.busy === 0) {
        lost ??= c;
        continue;
      }
      if (c.handing || c.mayBlock) {
        if (behind === null || c.busy < behind.busy) behind = c;
        continue;
      }
      if (c.busy === 0) return claimed(c);
      if (best === null || c.busy < best.busy) best = c;
    }
    const fallback = () => this.#pickShared(writes) ?? this.#enqueue(this.#sharedWaiters, writes);
    if (lost === null && this.#mayGrow(best === null && opening === null)) lost = this.#create();
    if (lost !== null) {
      const opened = this.#open(lost, false, fallback);
      lost.claimCursor(); // (once it is opening: the claim lasts until it is open)
      return opened;
    }
    if (best !== null) return claimed(best);
    if (opening !== null) {
      opening.claimCursor();
      return this.#opening.get(opening)!;
    }
    // Not while one of the client's own connections is in a transaction: the call it would
    // wait for may be waiting for that very transaction (a write made by other code while
    // `fn` runs), whose `fn` may be waiting for this cursor; the server's refusal comes at once.
    if (behind === null || this.inTransaction().length > 0) return null;
    return claimed(behind);
  }

  /**
   * During a burst: settles once every call of it issued so far (see
   * {@link noteCall}) was answered, wherever it went, and whether its
   * connection was open, being opened or waited for; `null` when none was
   * issued yet (or outside a burst). Calls issued after this one are not
   * waited for.
   */
  burstSettled(): Promise<void> | null {
    const calls = this.#runCalls;
    if (calls === null || calls.length === 0) return null;
    if (this.#runCovered < calls.length) {
      // (Built on demand, each call once: most runs have no iterate() to wait.)
      const more = Promise.allSettled(calls.slice(this.#runCovered)).then(ignore);
      const before = this.#runAnswered;
      this.#runAnswered = before === null ? more : Promise.all([before, more]).then(ignore);
      this.#runCovered = calls.length;
    }
    return this.#runAnswered;
  }

  /**
   * The connection for a call that may wait for the writer joining a burst
   * on `conn`: `conn`, unless that would leave no connection free of such
   * calls while another already carries them. Then the call and the rest of
   * its burst follow once the burst's calls before it were answered
   * (`before`, see {@link noteCall}) and no request is in flight on `conn`,
   * on the connection the rule for writes
   * gives (so the burst's order holds, and a read still finds a connection).
   */
  #writeJoins(
    conn: PooledConnection,
    before: Promise<void> | null,
  ): PooledConnection | Promise<PooledConnection> {
    if (conn.mayBlock || conn.reserved || !this.#conns.includes(conn)) return conn;
    if (this.#behindWrites() === null) return conn;
    return afterBurst(conn, before).then(() =>
      this.#pickShared(true) ??
        this.#bounded(this.#enqueue(this.#sharedWaiters, true), undefined, () => {})
    );
  }

  /**
   * With `max: 1`, the connection of the `transaction()` whose function
   * makes the current call (followed through awaits), else `null`: there,
   * plain calls on the client join that transaction, as on the single
   * connection of old, instead of waiting for it to end (which would never
   * happen). Also the connection itself while a raw `BEGIN` is open on it:
   * everything sent on the client runs inside that transaction, and a
   * `transaction()` nests in it as a savepoint (as better-sqlite3's does).
   * {@link shared} orders such a call at its caller's level (see `turnOf`).
   */
  callerTransaction(): PooledConnection | null {
    if (this.#config.max !== 1) return null;
    // The innermost transaction still open around the caller (a timer left
    // by a nested transaction that ended belongs to the one around it).
    let scope = transactionContext.getStore();
    while (scope !== undefined && !scope.active) scope = scope.parent;
    const only = this.#conns[0];
    if (scope !== undefined && scope.conn === only && only.reserved) return only;
    return only !== undefined && !only.reserved && only.inTransaction ? only : null;
  }

  /**
   * With `max` > 1: the connection of the caller's innermost open
   * `transaction()` (its `fn`, followed across awaits) when it is one of this
   * pool's and its `BEGIN` succeeded; else `null`. A plain call made there
   * runs on another connection, outside that transaction (see `OwnWriter`).
   * With `max: 1` plain calls join the transaction instead.
   */
  ownTransactionOfCaller(): PooledConnection | null {
    if (this.#config.max === 1) return null;
    let scope = transactionContext.getStore();
    while (scope !== undefined && !scope.active) scope = scope.parent;
    if (scope === undefined) return null;
    const conn = scope.conn;
    return conn.reserved && conn.inTransaction && this.#conns.includes(conn) ? conn : null;
  }

  /**
   * The connection of the caller's innermost open `transaction()` (its `fn`,
   * followed across awaits) when it is one of this pool's, whatever `max`;
   * else `null`. A `transaction()` called on the client from there nests in
   * it (see `Client`).
   */
  callerScopeConnection(): PooledConnection | null {
    let scope = transactionContext.getStore();
    while (scope !== undefined && !scope.active) scope = scope.parent;
    if (scope === undefined) return null;
    const conn = scope.conn;
    return conn.reserved && this.#conns.includes(conn) ? conn : null;
  }

  /** This pool's connections inside a transaction now (`transaction()`, or `BEGIN` on a reserved one). */
  inTransaction(): readonly PooledConnection[] {
    let found: PooledConnection[] | null = null;
    for (const c of this.#conns) if (c.inTransaction) (found ??= []).push(c);
    return found ?? NONE;
  }

  /**
   * Takes a connection for one caller alone, waiting for one if all are
   * taken: at most `acquireTimeout` ms (then `ACQUIRE_TIMEOUT`), and not
   * after `signal` aborts (then `AbortError`). A connection that arrives
   * after the caller gave up goes back to the pool. Called in a burst, it
   * first waits for the burst's calls issued before it to be answered
   * ({@link burstSettled}; `signal` ends that wait too), so the caller's
   * calls on the connection see their writes; for a bare `reserve()` (not
   * `begins`: a `transaction()`'s) not while one of the client's
   * connections is in a transaction, which those calls may be waiting for.
   * With `max: 1` it waits for the one connection to be idle instead, as
   * before (a raw `BEGIN` sent while it waits is not nested in).
   */
  reserve(signal?: AbortSignal, begins = false): Promise<PooledConnection> {
    if (signal?.aborted) return Promise.reject(abortError(signal));
    // Issued in a burst: the burst's calls issued before it run first (README: Order), as its
    // caller's next calls on the reserved connection must see their writes. Not for a bare
    // reserve() while one of the client's connections is in a transaction: an earlier write may be
    // waiting for that transaction, whose holder may be waiting for this reservation (a
    // transaction()'s BEGIN waits for that writer anyway, so `begins` always waits). With
    // `max: 1` the reservation already waits for the one connection to be idle, in its turn.
    const before = this.#config.max === 1
      ? null
      : begins || this.inTransaction().length === 0
      ? this.burstSettled()
      : null;
    const take = (): Promise<PooledConnection> =>
      signal?.aborted
        ? Promise.reject(abortError(signal))
        : this.#bounded(this.#reserve(), signal, (conn) => this.release(conn));
    return before === null ? take() : abortable(before, signal).then(take);
  }

  #reserve(): Promise<PooledConnection> {
    if (this.#closed) return Promise.reject(new ConnectionError("Client is closed"));
    if (this.#failure !== null) return Promise.reject(unsentError(this.#failure));
    const only = this.#conns[0];
    if (this.#config.max === 1 && only !== undefined && !only.reserved && only.holdsTransaction) {
      // Waiting would never end: the transaction is its caller's to finish.
      return Promise.reject(rawTransactionOpen());
    }
    if (this.callerTransaction() !== null) {
      return Promise.reject(
        new SqliteError(
          ErrorCode.TxControl,
          "Cannot reserve the client's only connection (max: 1) from inside its own " +
            "transaction(): it would wait for itself",
        ),
      );
    }
    if (this.#reserveWaiters.length === 0) {
      const c = this.#tryReserve();
      if (c !== null) return Promise.resolve(c);
    }
    const own = this.#ownReservations();
    if (own !== null) {
      return Promise.reject(
        new SqliteError(
          ErrorCode.TxControl,
          `Cannot reserve a connection from inside the client's own transaction(): ${own} of ` +
            `its ${this.#config.max} connections (max) ${own === 1 ? "is" : "are"} reserved by ` +
            "that transaction, and " +
            "reserve() leaves one for plain calls, so it would wait for the transaction to end; " +
            "query through tx, or connect with a larger max",
        ),
      );
    }
    return this.#enqueue(this.#reserveWaiters);
  }

  /**
   * A connection for a `reserve()` now, or `null`: an idle one, reopened
   * first if lost, else a new one while fewer than `max` are open (past a
   * refusal too: no connection of this client is free to take) — provided
   * one other connection stays for plain calls (see {@link #leavesOneForReads}).
   */
  #tryReserve(): PooledConnection | Promise<PooledConnection> | null {
    // Refused a new connection: one that went idle meanwhile, or the next one to.
    const waitForOne = (): PooledConnection | Promise<PooledConnection> => {
      const idle = this.#idle();
      if (idle?.open && this.#leavesOneForReads(idle)) return this.#take(idle);
      return this.#enqueue(this.#reserveWaiters);
    };
    const idle = this.#idle();
    if (idle !== undefined && this.#leavesOneForReads(idle)) {
      if (!idle.open) return this.#open(idle, true, waitForOne); // lost: reopened first
      return this.#take(idle);
    }
    if (this.#mayGrow(true) && this.#leavesOneForReads(null)) {
      return this.#open(this.#create(), true, waitForOne);
    }
    return null;
  }

  /**
   * With `max` > 1: true when, `taking` (or a new connection, for `null`)
   * reserved, one connection would remain that a plain read can use without
   * waiting behind a call that may wait for the writer: unreserved and
   * (open and free of such calls, or lost, or being opened) or yet to be
   * opened. So `reserve()` and `transaction()` hold at most `max` − 1
   * connections, and a plain call made inside `transaction(fn)` always finds
   * one: taking the last would leave it waiting for a connection the
   * transaction itself holds, or behind writes that wait for its writer.
   */
  #leavesOneForReads(taking: PooledConnection | null): boolean {
    if (this.#config.max === 1) return true;
    let free = this.#config.max - this.#conns.length - (taking === null ? 1 : 0);
    for (const c of this.#conns) {
      if (c === taking || c.reserved) continue;
      if (!(c.open && c.mayBlock)) free++;
    }
    return free > 0;
  }

  /**
   * When the caller is inside the `fn` of this client's own `transaction()`
   * and every connection `reserve()` may hold (`max` − 1) is reserved by
   * that transaction or those it is nested in: how many, as a reservation
   * would wait for it to end, which it never would while `fn` awaits it.
   * Else `null`.
   */
  #ownReservations(): number | null {
    if (this.#config.max === 1) return null;
    const mine = new Set<PooledConnection>();
    for (let scope = transactionContext.getStore(); scope !== undefined; scope = scope.parent) {
      if (scope.active) mine.add(scope.conn);
    }
    if (mine.size === 0) return null;
    const reserved = this.#conns.filter((c) => c.reserved);
    if (reserved.length < this.#config.max - 1 || reserved.some((c) => !mine.has(c))) return null;
    return reserved.length;
  }

  /**
   * Gives a reserved connection back. One left inside a transaction is
   * closed (the server rolls the transaction back) rather than shared. With
   * requests still in flight (a `COMMIT` returned, not awaited), the
   * connection is judged once they were answered: their replies are theirs
   * to report, and a `COMMIT` that succeeded leaves no transaction.
   */
  release(conn: PooledConnection): void {
    if (!conn.reserved) return;
    if (this.#closed) return;
    if (conn.busy > 0) conn.settled().then(() => this.#giveBack(conn));
    else this.#giveBack(conn);
  }

  #giveBack(conn: PooledConnection): void {
    if (this.#closed) return;
    if (conn.holdsTransaction) {
      this.#remove(conn);
      conn.close("Reserved connection was released inside a transaction").catch(() => {});
      if (this.#reserveWaiters.length > 0 || this.#sharedWaiters.length > 0) {
        // (The server may still count the closed one: opening retries a moment.)
        this.#open(this.#create(), false, null).then((c) => this.#handOver(c), (err) => {
          if (this.#conns.length > 0) return; // the others' release serves the waiters
          for (const w of [...this.#reserveWaiters, ...this.#sharedWaiters]) {
            w.reject(err instanceof Error ? copyError(err) : err);
          }
          this.#reserveWaiters = [];
          this.#sharedWaiters = [];
        });
      }
      return;
    }
    this.#handOver(conn);
  }

  /** Closes every connection; waiting callers reject. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const w of [...this.#reserveWaiters, ...this.#sharedWaiters]) {
      w.reject(new ConnectionError("Client is closed"));
    }
    this.#reserveWaiters = [];
    this.#sharedWaiters = [];
    clearTimeout(this.#handingTimer);
    clearTimeout(this.#lapseTimer);
    for (const end of [...this.#fullPauses]) end();
    await Promise.all(this.#conns.map((c) => c.close()));
  }

  /** @internal */
  onIdle(conn: PooledConnection): void {
    if (conn.reserved || this.#closed) return;
    if (this.#reserveWaiters.length === 0) {
      if (this.#sharedWaiters.length > 0) this.#serve();
      return;
    }
    if (conn.holdsTransaction && this.#config.max === 1 && this.#conns[0] === conn) {
      // A raw BEGIN sent before they began to wait is open now: for them
      // waiting would never end (transaction() then nests in it, see
      // Client). Those that waited before it was sent wait for its end.
      const opener = conn.txOpenedBy;
      const after = (w: Waiter) => opener !== 0 && w.sentAtWait >= opener;
      for (const w of this.#reserveWaiters.filter(after)) w.reject(rawTransactionOpen());
      this.#reserveWaiters = this.#reserveWaiters.filter((w) => !after(w));
      if (this.#sharedWaiters.length > 0) this.#serve();
      return;
    }
    if (conn.holdsTransaction || conn.handing || !this.#conns.includes(conn)) return;
    this.#serve();
  }

  /** @internal */
  onUnblocked(conn: PooledConnection): void {
    if (!conn.reserved && this.#waiting) this.#serve();
  }

  /** @internal */
  onHanded(conn: PooledConnection): void {
    this.#handing.delete(conn);
    if (this.#handing.size === 0) {
      clearTimeout(this.#handingTimer);
      this.#handingTimer = undefined;
    }
    // After the rest of the handed call's burst was sent (same microtask run).
    if (this.#waiting) queueMicrotask(() => this.#serve());
  }

  /** @internal */
  refuses(info: HelloReply): ConnectionError | null {
    const first = this.#database;
    if (first === undefined || info.database === undefined || info.database === first) {
      this.#database ??= info.database;
      return null;
    }
    return new ConnectionError(
      `Cannot reconnect to ${formatAddress(this.#config.addr)}: the server there now serves ` +
        `"${info.database}", not "${first}" as when this client connected; connect a new ` +
        "client to use that database",
    );
  }

  /** @internal */
  onOpen(info: HelloReply): void {
    this.#info = info;
  }

  /** @internal */
  onLost(_conn: PooledConnection, failure: ConnectionError): void {
    // Calls made after this were not sent, nor are those waiting (see #serve).
    if (!this.#config.reconnect) this.#failure ??= failure;
    // Else its cursors died with it: a caller waiting for it may take it now.
    if (this.#waiting) queueMicrotask(() => this.#serve());
  }

  /**
   * `waiting`, given up after `acquireTimeout` ms (`ACQUIRE_TIMEOUT`) or when
   * `signal` aborts (`AbortError`); a connection it brings after that goes
   * to `late` (a waiter given up is also taken out of its queue).
   */
  #bounded(
    waiting: Promise<PooledConnection>,
    signal: AbortSignal | undefined,
    late: (conn: PooledConnection) => void,
  ): Promise<PooledConnection> {
    const ms = this.#config.acquireTimeout;
    if (ms === 0 && signal === undefined) return waiting;
    return new Promise((resolve, reject) => {
      let done = false;
      const finish = (): void => {
        done = true;
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
      };
      const giveUp = (err: Error): void => {
        if (done) return;
        finish();
        this.#giveUp(waiting);
        reject(err);
      };
      const onAbort = (): void => giveUp(abortError(signal!));
      const timer = ms === 0 ? undefined : setTimeout(() => {
        const waiter = this.#waiterOf.get(waiting);
        const max = this.#config.max;
        // A reservation also waits while taking one would leave no connection for plain calls.
        const why = max > 1 && waiter !== undefined && this.#reserveWaiters.includes(waiter)
          ? `reserve() and transaction() hold at most ${max - 1} of its ${max} (max − 1: one ` +
            "is left for plain calls), and those are reserved or busy"
          : max === 1
          ? "its one connection (max: 1) is reserved or busy"
          : `all ${max} are reserved or busy`;
        giveUp(
          new ConnectionError(
            `No connection of the client's pool became free within acquireTimeout (${ms} ms): ` +
              why,
            { code: ErrorCode.AcquireTimeout },
          ),
        );
      }, ms);
      signal?.addEventListener("abort", onAbort, { once: true });
      waiting.then((conn) => {
        if (done) return late(conn);
        finish();
        resolve(conn);
      }, (err) => {
        if (done) return;
        finish();
        reject(err);
      });
    });
  }

  /**
   * Takes the wait behind `waiting` (a promise {@link #enqueue} or {@link #open}
   * returned) out of the pool, its caller having given it up.
   */
  #giveUp(waiting: Promise<PooledConnection>): void {
    this.#openGiveUp.get(waiting)?.();
    const waiter = this.#waiterOf.get(waiting);
    if (waiter === undefined) return;
    for (const queue of [this.#reserveWaiters, this.#sharedWaiters]) {
      const i = queue.indexOf(waiter);
      if (i !== -1) queue.splice(i, 1);
    }
    // Calls that waited behind it (max: 1) may go now.
    if (this.#waiting) queueMicrotask(() => this.#serve());
    else this.#watchLapses();
  }

  /**
   * The connection for a plain call, or `null` when it must wait: every
   * open connection carries a call that may wait for the writer (a read
   * pipelined behind it would wait as long), or was just handed to a call
   * not sent yet. With `max: 1` the one connection always serves, unless a
   * `reserve()` that arrived before the call (`arrival`, a waiter's
   * {@link Waiter.seq}; a new call: after all) waits for it; with `max` > 1
   * such a waiting `reserve()` makes the call pass over the least busy
   * connection, which it may take, for the next least busy.
   */
  #pickShared(
    writes = false,
    arrival = Infinity,
  ): PooledConnection | Promise<PooledConnection> | null {
    const single = this.#config.max === 1;
    if (writes && !single) {
      const joined = this.#behindWrites();
      if (joined !== null) return joined;
    }
    let best: PooledConnection | null = null;
    /** The next least busy after `best`. */
    let next: PooledConnection | null = null;
    let lost: PooledConnection | null = null;
    let opening: Promise<PooledConnection> | undefined;
    for (const c of this.#conns) {
      if (c.reserved) continue;
      const o = this.#opening.get(c);
      if (o !== undefined) {
        opening ??= o;
        continue;
      }
      // A lost connection is reopened before use, unless a transaction was
      // lost with it: its calls must fail until the client sends ROLLBACK.
      if (!c.open && !c.holdsTransaction && c.busy === 0) {
        lost ??= c;
        continue;
      }
      if (c.handing) continue;
      if (c.busy === 0) return c;
      if (c.mayBlock && !single) continue;
      if (best === null || c.busy < best.busy) {
        next = best;
        best = c;
      } else if (next === null || c.busy < next.busy) next = c;
    }
    const fallback = () => this.#pickShared(writes) ?? this.#enqueue(this.#sharedWaiters, writes);
    if (lost !== null) return this.#open(lost, false, fallback);
    if (this.#mayGrow(best === null && opening === undefined)) {
      return this.#open(this.#create(), false, fallback);
    }
    // With max: 1, a call does not pass a reserve() or transaction() that waits for the one
    // connection to be idle (it would never be, while calls kept coming): it waits behind it.
    // Not when a transaction is open there (a raw BEGIN's, whose calls must go on to end it),
    // nor a cursor (whose loop may be what makes the call: the cursor would never end).
    if (best !== null && this.#reserveWaiters.some((w) => w.seq < arrival)) {
      if (single) return best.holdsTransaction || best.holdsCursor ? best : null;
      // With max > 1, it leaves the least busy connection that the reservation may take to
      // become idle, while another can take the call (it never waits for a reservation).
      if (next !== null && best.open && this.#leavesOneForReads(best)) return next;
    }
    if (best !== null) return best;
    if (opening !== undefined && single) return opening;
    return null;
  }

  /**
   * For a call that may wait for the writer: the least busy connection
   * already carrying such calls, when taking another connection would leave
   * none that a read could use without waiting behind one (open and free of
   * them, or yet to be opened); else `null`. So calls that wait for the
   * writer use at most `max` − 1 of the unreserved connections, and reads
   * always find one (a plain read made inside `transaction(fn)` would
   * otherwise wait behind writes that wait for that very transaction). A
   * connection being opened counts as carrying them.
   */
  #behindWrites(): PooledConnection | Promise<PooledConnection> | null {
    let free = Math.max(0, this.#config.max - this.#conns.length);
    let best: PooledConnection | null = null;
    let opening: Promise<PooledConnection> | undefined;
    for (const c of this.#conns) {
      if (c.reserved || c.handing) continue;
      const o = this.#opening.get(c);
      if (o !== undefined) {
        // (One opened for a plain call: another opened may go to a reserve().)
        if (this.#openingShared.has(c)) opening ??= o;
      } else if (!c.open) {
        if (!c.holdsTransaction && c.busy === 0) free++;
      } else if (!c.mayBlock) {
        free++;
      } else if (best === null || c.busy < best.busy) {
        best = c;
      }
    }
    return free > 1 ? null : best ?? opening ?? null;
  }

  /** True while a plain call or a `reserve()` waits. */
  get #waiting(): boolean {
    return this.#sharedWaiters.length > 0 || this.#reserveWaiters.length > 0;
  }

  /**
   * Serves waiting callers, first come first served among those that can be
   * served now: a waiting plain call goes to the connection
   * {@link #pickShared} gives it, a waiting `reserve()` takes the one
   * {@link #tryReserve} gives; the earlier of the two queues' heads goes
   * first, the other when the earlier cannot be served yet.
   */
  #serve(): void {
    while (this.#waiting && !this.#closed) {
      if (this.#failure !== null) {
        // (reconnect: false) Every call fails now, as one made after: none can be served.
        const waiters = [...this.#reserveWaiters, ...this.#sharedWaiters];
        this.#reserveWaiters = [];
        this.#sharedWaiters = [];
        for (const w of waiters) w.reject(unsentError(this.#failure));
        break;
      }
      const r = this.#reserveWaiters[0];
      const s = this.#sharedWaiters[0];
      const served = s === undefined || (r !== undefined && r.seq < s.seq)
        ? this.#serveReserve() || (s !== undefined && this.#serveShared())
        : this.#serveShared() || (r !== undefined && this.#serveReserve());
      if (!served) break;
    }
    this.#watchLapses();
  }

  /** Arms {@link #lapseTimer} while callers wait on connections held by cursors; else clears it. */
  #watchLapses(): void {
    clearTimeout(this.#lapseTimer);
    this.#lapseTimer = undefined;
    if (!this.#waiting || this.#closed) return;
    let at: number | null = null;
    for (const c of this.#conns) {
      const t = c.holdsLapseAt();
      if (t !== null && (at === null || t < at)) at = t;
    }
    if (at === null) return;
    this.#lapseTimer = setTimeout(() => {
      this.#lapseTimer = undefined;
      this.#serve();
    }, Math.max(0, at - performance.now()));
    unrefTimer(this.#lapseTimer);
  }

  /** Serves the first waiting plain call when a connection can take it. */
  #serveShared(): boolean {
    const first = this.#sharedWaiters[0];
    const c = this.#pickShared(first.writes, first.seq);
    if (c === null) return false;
    const waiter = this.#sharedWaiters.shift()!;
    if (!(c instanceof Promise)) this.#markHanding(c);
    waiter.resolve(c);
    return true;
  }

  /** Serves the first waiting `reserve()` when a connection can be reserved. */
  #serveReserve(): boolean {
    const c = this.#tryReserve();
    if (c === null) return false;
    this.#reserveWaiters.shift()!.resolve(c);
    return true;
  }

  /** Marks `conn` as handed to a call that did not send yet (see {@link PooledConnection.handing}). */
  #markHanding(conn: PooledConnection): void {
    conn.handing = true;
    this.#handing.add(conn);
    this.#handingTimer ??= setTimeout(() => {
      this.#handingTimer = undefined;
      for (const c of this.#handing) c.handing = false;
      this.#handing.clear();
      this.#serve();
    }, 0);
  }

  /** Waits in `queue` for a connection handed over by a release. */
  #enqueue(queue: Waiter[], writes = false): Promise<PooledConnection> {
    let waiter!: Waiter;
    const sentAtWait = this.#conns[0]?.sent ?? 0;
    const waiting = new Promise<PooledConnection>((resolve, reject) => {
      waiter = { resolve, reject, writes, sentAtWait, seq: this.#arrivals++ };
    });
    queue.push(waiter);
    this.#waiterOf.set(waiting, waiter);
    this.#watchLapses();
    return waiting;
  }

  /** A connection nobody reserved that has nothing in flight (and is not being opened). */
  #idle(): PooledConnection | undefined {
    return this.#conns.find((c) =>
      !c.reserved && c.busy === 0 && !c.handing && !c.holdsTransaction && !this.#opening.has(c)
    );
  }

  /** Reserves `conn` for a `reserve()` caller. */
  #take(conn: PooledConnection): PooledConnection {
    conn.reserved = true;
    if (this.#burst === conn) this.#burst = null;
    return conn;
  }

  /**
   * True while fewer than `max` connections are open, and the server did
   * not just refuse one as full (unless `needed`: no other could serve).
   */
  #mayGrow(needed = false): boolean {
    if (this.#conns.length >= this.#config.max) return false;
    return needed || performance.now() >= this.#fullUntil;
  }

  /**
   * Opens `conn` (new, or lost) before anything is sent on it. When the
   * server refuses it as full, `conn` leaves the pool; if another open,
   * unreserved connection could serve instead, the caller gets `fallback()`
   * (that one, or a wait for it), else the opening is tried again a few
   * times, then fails with the refusal.
   */
  #open(conn: PooledConnection, reserved: boolean, fallback: Fallback): Promise<PooledConnection> {
    conn.reserved = reserved;
    /** Set once its caller gave the wait up: it then falls back to no wait (see {@link #giveUp}). */
    let givenUp = false;
    let fellBack: Promise<PooledConnection> | null = null;
    const opened: Promise<PooledConnection> = (async () => {
      for (let attempt = 1;; attempt++) {
        try {
          await conn.connect();
        } catch (err) {
          if (this.#closed) {
            // close() gave the opening up: its calls fail as any call made after.
            this.#remove(conn);
            throw new ConnectionError("Client is closed");
          }
          const full = serverFull(err);
          const elsewhere = fallback !== null &&
            this.#conns.some((c) => c !== conn && !c.reserved && c.open);
          if (full && !elsewhere && attempt < FULL_RETRIES && !givenUp) {
            await this.#fullPause();
            if (!this.#closed) continue;
            // close() ended the pause: its calls fail at once, as any call made after.
            this.#remove(conn);
            throw new ConnectionError("Client is closed");
          }
          this.#remove(conn);
          if (!full || !elsewhere || givenUp) throw err;
          this.#fullUntil = performance.now() + FULL_PAUSE_MS;
          const next = fallback!();
          if (next instanceof Promise) fellBack = next;
          return next;
        }
        if (this.#closed) throw new ConnectionError("Client is closed");
        // Its opener's calls go first; waiting calls may follow once they were sent.
        if (!reserved) this.#markHanding(conn);
        return conn;
      }
    })().finally(() => {
      this.#opening.delete(conn);
      this.#openingShared.delete(conn);
      if (this.#waiting) this.#serve();
    });
    this.#opening.set(conn, opened);
    if (fallback !== null) this.#openingShared.add(conn);
    // A reserve()'s (its caller alone waits for it; a plain call's may be shared by others): the
    // wait it fell back to (a refusal as full) would otherwise stay queued after its caller gave
    // up, holding back later reservations until a connection frees.
    if (reserved) {
      this.#openGiveUp.set(opened, () => {
        givenUp = true;
        if (fellBack !== null) this.#giveUp(fellBack);
      });
    }
    return opened;
  }

  /** The pause between attempts to open a connection refused as full; `close()` ends it. */
  #fullPause(): Promise<void> {
    return new Promise((resolve) => {
      const end = (): void => {
        clearTimeout(timer);
        this.#fullPauses.delete(end);
        resolve();
      };
      const timer = setTimeout(end, FULL_RETRY_MS);
      this.#fullPauses.add(end);
    });
  }

  /**
   * Puts a connection just freed back into the shared set and serves the
   * waiting callers (a waiting `reserve()` may take it at once).
   */
  #handOver(conn: PooledConnection): void {
    conn.reserved = false;
    this.#serve();
  }

  #create(): PooledConnection {
    const conn = new PooledConnection(this.#config, this);
    // The server's limits as last told, until its own hello (cursors claimed while it opens).
    conn.takeLimits(this.#info.limits);
    this.#conns.push(conn);
    return conn;
  }

  #remove(conn: PooledConnection): void {
    const i = this.#conns.indexOf(conn);
    if (i !== -1) this.#conns.splice(i, 1);
  }
}

/** Lets the process exit while only `timer` is pending (Deno and Node alike). */
function unrefTimer(timer: ReturnType<typeof setTimeout>): void {
  if (typeof timer === "number") {
    (globalThis as { Deno?: { unrefTimer(id: number): void } }).Deno?.unrefTimer(timer);
  } else (timer as { unref?: () => void }).unref?.();
}

/** `reserve()` with `max: 1` while a raw `BEGIN` is open on the one connection. */
export function rawTransactionOpen(): SqliteError {
  return new SqliteError(
    ErrorCode.TxControl,
    "Cannot reserve the client's only connection (max: 1): a transaction begun with " +
      "BEGIN is open on it; COMMIT or ROLLBACK it first",
  );
}

/** The error of a wait for a connection aborted by its signal, as for any call. */
function abortError(signal: AbortSignal): AbortError {
  return new AbortError("Call was aborted by its signal", { cause: signal.reason });
}

/**
 * Settles once the calls noted before (`before`, see `Pool.noteCall`) were
 * answered, and then no request is in flight on `conn` (the cursors of the
 * burst opened there meanwhile, which are not noted, included).
 */
function afterBurst(conn: PooledConnection, before: Promise<void> | null): Promise<void> {
  return before === null ? conn.settled() : before.then(() => conn.settled());
}

/** Does nothing (a settled promise's value or error, not needed). */
function ignore(): void {}

/** `c`, claimed for a cursor once it is there (see `PooledConnection.claimCursor`). */
function claimed(
  c: PooledConnection | Promise<PooledConnection>,
): PooledConnection | Promise<PooledConnection> {
  if (c instanceof Promise) {
    return c.then((conn) => {
      conn.claimCursor();
      return conn;
    });
  }
  c.claimCursor();
  return c;
}
