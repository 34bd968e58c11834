/**
 * One connection of a client's pool: opened lazily, reopened after a loss
 * (unless a transaction was open on it), and counted while busy so the pool
 * knows which connections are idle.
 *
 * @module
 */

import { ConnectionError, ErrorCode, SqliteError } from "../protocol/errors.ts";
import type { HelloReply, Replies, Requests, ServerLimits } from "../protocol/messages.ts";
import { Op } from "../protocol/messages.ts";
import { formatAddress } from "../transport/address.ts";
import { connectTo } from "../transport/connect.ts";
import { leadingVerb, scan } from "../protocol/sql_lexer.ts";
import { abortable, Link, type ReplyOp, unsentError } from "./link.ts";
import type { ConnectConfig } from "./options.ts";
import { snapshot } from "./_snapshot.ts";
import { mayCommit } from "./_tx_control.ts";
import { setTimeoutAfterStall } from "./_stall_grace.ts";

/** What a connection tells its pool. */
export interface ConnectionEvents {
  /** The connection has no request in flight and no cursor open. */
  onIdle(conn: PooledConnection): void;
  /**
   * A reopen's handshake completed: the error to refuse the connection
   * with (it serves another database), or `null` to take it.
   */
  refuses(info: HelloReply): ConnectionError | null;
  /** A handshake completed (first open or a reopen). */
  onOpen(info: HelloReply): void;
  /** An open link ended. */
  onLost(conn: PooledConnection, failure: ConnectionError): void;
  /** The last request in flight that may wait for the writer was answered. */
  onUnblocked(conn: PooledConnection): void;
  /** The first request after {@link PooledConnection.handing} was set was sent. */
  onHanded(conn: PooledConnection): void;
}

/**
 * Whether a request may wait for the server's writer (so that calls
 * pipelined behind it would wait too): writes, and queries and cursors whose
 * SQL ({@link readsOnly}) does not surely only read. A prepared statement's
 * handle counts as a write: a `Statement` knows its SQL and says (the
 * `writes` argument of {@link PooledConnection.request}).
 */
export function waitsForWriter(op: ReplyOp, ref: unknown): boolean {
  switch (op) {
    case Op.Query:
    case Op.Iterate:
      return typeof ref !== "string" || !readsOnly(ref);
    case Op.Run:
    case Op.Exec:
    case Op.Batch:
    case Op.Checkpoint:
    case Op.Vacuum:
      return true;
    default:
      return false;
  }
}

/**
 * True when `sql` surely does not wait for the server's writer: it begins
 * with `SELECT`, `VALUES` or `EXPLAIN`; or with `WITH` and, after its common
 * table expressions, `SELECT` or `VALUES`; or it is a `PRAGMA` that only
 * reads: no `= value`, and no `(argument)` unless the pragma reads by it
 * ({@link READ_PRAGMAS_WITH_ARG}), and none of {@link ACTING_PRAGMAS}.
 * Anything else counts as a possible write (routing only: the server decides).
 */
export function readsOnly(sql: string): boolean {
  const { first, main } = leadingVerb(sql);
  if (first === "pragma") return pragmaReads(sql);
  if (first === "with") return main === "select" || main === "values";
  return first === "select" || first === "values" || first === "explain";
}

/** For a `PRAGMA` statement: true when it only reads (see {@link readsOnly}). */
function pragmaReads(sql: string): boolean {
  /** Its name (the last word before `(`, `=` or the end). */
  let name = "";
  let arg = false;
  let assigns = false;
  let first = true;
  scan(sql, (t) => {
    if (first) { // the word PRAGMA
      first = false;
      return true;
    }
    if (t.kind === "semicolon") return false;
    if (t.kind === "punct" && t.text === "=") {
      assigns = true;
      return false;
    }
    if (t.kind === "punct" && t.text === "(") {
      arg = true;
      return false;
    }
    if (t.kind === "word" || t.kind === "name") name = t.text.toLowerCase();
    return true;
  });
  if (assigns || ACTING_PRAGMAS.has(name)) return false;
  return !arg || READ_PRAGMAS_WITH_ARG.has(name);
}

/** PRAGMAs that act (checkpoint, vacuum, analyze, free memory) even without a value. */
const ACTING_PRAGMAS: ReadonlySet<string> = new Set([
  "wal_checkpoint",
  "optimize",
  "incremental_vacuum",
  "shrink_memory",
]);

/** PRAGMAs whose `(argument)` names what to read, not a value to set. */
const READ_PRAGMAS_WITH_ARG: ReadonlySet<string> = new Set([
  "table_info",
  "table_xinfo",
  "table_list",
  "index_info",
  "index_xinfo",
  "index_list",
  "foreign_key_list",
  "foreign_key_check",
  "integrity_check",
  "quick_check",
]);

/**
 * Opens a link and completes the handshake, within `config.connectTimeout`
 * (TCP connection, TLS handshake and handshake reply together).
 *
 * @param hello `admin: true` asks for an admin session (maintenance requests only).
 * @param signal Aborting it gives the opening up at once, at any stage: the
 *   socket is closed (one still connecting is closed once it opens), and
 *   the call rejects with a `ConnectionError` made of the signal's reason
 *   when that is one (e.g. the client closed meanwhile).
 * @throws {ConnectionError} `REQUEST_TIMEOUT` when the time is up (the
 *   socket is closed), else what connecting or the handshake throws.
 */
export async function openLink(
  config: ConnectConfig,
  hello: { admin?: boolean } = {},
  signal?: AbortSignal,
): Promise<[Link, HelloReply]> {
  const ms = config.connectTimeout;
  const deadline = performance.now() + ms;
  const conn = await connectTo(config.addr, config.tls, ms, signal);
  const link = new Link(conn, config.addr, config.maxFrameSize, config.requestTimeout);
  failOnAbort(link, config.addr, signal);
  // A grace after the client's own stall: a handshake reply that came meanwhile is read first.
  const clear = ms > 0
    ? setTimeoutAfterStall(
      () => {
        link.fail(
          new ConnectionError(
            `Cannot connect to ${formatAddress(config.addr)}: no handshake reply within ${ms} ms ` +
              "(connectTimeout): the connection was closed",
            { code: ErrorCode.RequestTimeout },
          ),
        );
      },
      Math.max(0, deadline - performance.now()),
      ms,
    )
    : () => {};
  try {
    return [link, await link.hello(config.token, hello)];
  } catch (err) {
    link.fail(err);
    await link.ended;
    throw err;
  } finally {
    clear();
  }
}

/**
 * Ends `link` (during its handshake) when `signal` aborts, with the
 * signal's reason when that is a `ConnectionError`.
 */
function failOnAbort(
  link: Link,
  addr: ConnectConfig["addr"],
  signal: AbortSignal | undefined,
): void {
  if (signal === undefined) return;
  const onAbort = (): void => {
    link.fail(
      signal.reason instanceof ConnectionError
        ? signal.reason
        : new ConnectionError(`Cannot connect to ${formatAddress(addr)}: the attempt was aborted`),
    );
  };
  if (signal.aborted) return onAbort();
  signal.addEventListener("abort", onAbort, { once: true });
  link.ended.then(() => signal.removeEventListener("abort", onAbort));
}

/**
 * How long closing waits for the replies to the `cancel` it sends for the
 * requests in flight, in ms (a request not started is answered at once).
 */
export const CLOSE_CANCEL_MS = 100;

/** Margin past the server's cursor idle timeout after which a cursor's hold lapses, in ms. */
const CURSOR_IDLE_MARGIN_MS = 1000;
/** Open cursors per connection when the server does not say (its default `maxCursors`). */
const DEFAULT_MAX_CURSORS = 16;

/**
 * What keeps a connection busy while a cursor is open on it: released when
 * the iterator finishes, or lapsing when the cursor died on the server.
 */
export interface CursorHold {
  /** The connection's generation the cursor lives on; `null` until it opened. */
  generation: number | null;
  /** The transaction it was opened in ({@link PooledConnection.txOpenedBy}), or 0. */
  txOpenedBy: number;
  /** `performance.now()` when it was last advanced. */
  usedAt: number;
  /** Notes that the cursor opened (call when `iterate` was answered). */
  bind(): void;
  /** Notes that the cursor was advanced (call when a `next` was answered). */
  touch(): void;
  /** Ends the hold. Idempotent. */
  release(): void;
}

/** A lazily opened, reopenable connection of a pool. */
export class PooledConnection {
  readonly #config: ConnectConfig;
  readonly #events: ConnectionEvents;
  #link: Link | null;
  #opening: Promise<void> | null = null;
  /** Gives {@link #opening} up (see {@link close}). */
  #openAborter: AbortController | null = null;
  #generation: number;
  /** The server's session number of the open link (from its hello), if it says. */
  #session: number | null = null;
  #lostTransaction = false;
  /** Why the link of {@link #lostTransaction} ended (named by its errors). */
  #lostTxFailure: ConnectionError | null = null;
  /**
   * Why the links of earlier generations ended, by generation (the last
   * {@link KEPT_FAILURES}): a cursor or handle of one fails with it.
   */
  readonly #failures = new Map<number, ConnectionError>();
  /**
   * Handles of `ROLLBACK`/`COMMIT` prepared while {@link #lostTransaction}
   * (by `generation:handle`): running one ends that state.
   */
  #endingHandles = new Map<string, TxEnd>();
  /**
   * A COMMIT just ended {@link #lostTransaction} (failing): a ROLLBACK sent
   * next succeeds as a no-op (as ORMs send one after any failed COMMIT), as
   * the server does after a transaction it rolled back itself.
   */
  #commitRefused = false;
  #judged: Link | null = null;
  /** A link closed by the guard: its transaction was nobody's, so nothing needs a ROLLBACK. */
  #guarded: Link | null = null;
  #closed = false;
  /** Requests waiting for the link to open (the link counts the rest). */
  #other = 0;
  /** Open cursors (see {@link hold}). */
  readonly #holds = new Set<CursorHold>();
  /**
   * Cursors the pool chose this connection for that have not taken their
   * hold yet (see {@link claimCursor}).
   */
  #cursorClaims = 0;
  /** The server's `maxCursors` (open cursors per connection), from its hello. */
  maxCursors = DEFAULT_MAX_CURSORS;
  /** The server's `cursorIdleTimeout` in ms, from its hello (0: none, or not said). */
  cursorIdleTimeout = 0;
  /** The server's `txIdleTimeout` (an idle transaction's lease) in ms, from its hello (0: none). */
  txIdleTimeout = 0;
  /** Of {@link #other}: the requests waiting for the link to open. */
  #unsent = 0;
  /** Called once no request is in flight (see {@link settled}). */
  #onSettled: (() => void)[] = [];
  /** True while handed out by `reserve()` or `transaction()`. */
  reserved = false;
  /**
   * The helper whose transaction is open here and which ends it itself (an
   * outermost `transaction()`, from its `BEGIN`'s answer until it settles;
   * an ORM adapter's transaction), else `null` (none, or a raw `BEGIN`): a
   * transaction lost with the link is then that helper's to roll back, so
   * its errors advise retrying the transaction, not sending `ROLLBACK`.
   */
  txOwner: object | null = null;
  /** Open `transaction()` levels on this connection (savepoint depth). */
  txDepth = 0;
  /**
   * Set by the pool when it hands the connection to a waiting call: the next
   * request sent clears it and tells the pool ({@link ConnectionEvents.onHanded}).
   */
  handing = false;
  /** Requests in flight that may wait for the writer (see {@link mayBlock}). */
  #blocking = 0;
  /** Requests in flight that may commit a transaction (see {@link #mayCommit}). */
  #committing = 0;
  /** The link that ended while a request that may have committed its transaction was in flight. */
  #commitLost: Link | null = null;
  /** Handles (`generation:handle`) of statements prepared here that may commit a transaction. */
  readonly #committingHandles = new Set<string>();

  /**
   * @param config Resolved connect options.
   * @param events Pool callbacks.
   * @param link An already opened link, or `null` to open on first use.
   * @param session The server's session number of `link` (its hello says).
   */
  constructor(
    config: ConnectConfig,
    events: ConnectionEvents,
    link: Link | null = null,
    session: number | null = null,
  ) {
    this.#config = config;
    this.#events = events;
    this.#link = link;
    this.#session = session;
    this.#generation = link === null ? 0 : 1;
    if (link !== null) this.#watch(link);
  }

  /**
   * Closes a shared connection of a pool of several on which a statement
   * the client did not recognise as transaction control left a transaction
   * open (e.g. hidden in an `exec` script): the server rolls it back, and
   * the requests queued behind it fail instead of running inside it.
   */
  #guard = (): Error | null => {
    if (this.reserved || this.#config.max === 1) return null;
    this.#guarded = this.#link;
    return new SqliteError(
      ErrorCode.TxControl,
      "A statement opened a transaction on the client's shared pool: its connection was " +
        "closed and the transaction rolled back; use transaction() or reserve()",
    );
  };

  /** Changes each time the connection is (re)opened: handles and cursors die with it. */
  get generation(): number {
    return this.#generation;
  }

  /** The server's session number of this connection (`null` before it opened, or from older servers). */
  get session(): number | null {
    return this.#session;
  }

  /** Requests in flight plus open cursors. */
  get busy(): number {
    const link = this.#link;
    return (link === null ? 0 : link.pending) + this.#other + this.#liveHolds() +
      this.#cursorClaims;
  }

  /** True while a request that may wait for the server's writer is in flight here. */
  get mayBlock(): boolean {
    return this.#blocking > 0;
  }

  /**
   * True while a transaction was lost with the link and its `ROLLBACK` was
   * not sent yet: every call but `ROLLBACK` fails until then.
   */
  get lostTransaction(): boolean {
    if (this.#lostTransaction) return true;
    const link = this.#link;
    return link !== null && link.failure !== null && this.#judged !== link &&
      ((link.inTransaction && this.#guarded !== link) || this.txDepth > 0);
  }

  /** True while the link is up and the server reports an open transaction on it. */
  get inTransaction(): boolean {
    const link = this.#link;
    return link !== null && link.failure === null && link.inTransaction;
  }

  /**
   * True while a transaction is open, or was lost with the link and its
   * `ROLLBACK` was not sent yet: the connection must not be shared then.
   */
  get holdsTransaction(): boolean {
    const link = this.#link;
    return this.inTransaction || this.#lostTransaction || this.txDepth > 0 ||
      (link !== null && link.failure !== null && this.#judged !== link && this.#guarded !== link &&
        link.inTransaction);
  }

  /**
   * For a cursor opened on link `generation` inside the transaction that
   * request `tx` ({@link txOpenedBy}) opened: true when that link was lost
   * with the transaction still open on it (not ended by `COMMIT` or
   * `ROLLBACK` first), so its calls fail with `ConnectionError`.
   */
  lostInside(generation: number, tx: number): boolean {
    const link = this.#link;
    return generation === this.#generation && link !== null && link.failure !== null &&
      link.inTransaction && link.txOpenedBy === tx && this.#guarded !== link;
  }

  /** True when the link is up. */
  get open(): boolean {
    return this.#link !== null && this.#link.failure === null;
  }

  /**
   * Resolves once no request sent here is in flight (replied to, failed or
   * aborted); open cursors with no request out do not count.
   */
  settled(): Promise<void> {
    const link = this.#link;
    if ((link === null ? 0 : link.pending) + this.#unsent === 0) return Promise.resolve();
    return new Promise((resolve) => this.#onSettled.push(resolve));
  }

  /**
   * Marks the connection busy (an open cursor) until the hold is released,
   * or until the cursor is dead on the server though its iterator was never
   * finished (see {@link CursorHold}).
   */
  hold(): CursorHold {
    const h: CursorHold = {
      generation: null,
      txOpenedBy: 0,
      usedAt: 0,
      bind: () => {
        h.generation = this.#generation;
        h.txOpenedBy = this.txOpenedBy;
        h.usedAt = performance.now();
      },
      touch: () => h.usedAt = performance.now(),
      release: () => {
        if (this.#holds.delete(h)) this.#maybeIdle();
      },
    };
    this.#holds.add(h);
    if (this.#cursorClaims > 0) this.#cursorClaims--;
    return h;
  }

  /**
   * Counts a cursor the pool just chose this connection for, until the
   * cursor takes its {@link hold}, so that cursors chosen together see each
   * other in {@link cursorRoom} and {@link busy}. The cursor takes it in the
   * run of microtasks after the connection is there (opened, if it was being
   * opened): a claim still open when that run ends lapses (its cursor never
   * came: the open failed, or the call was refused).
   */
  claimCursor(): void {
    if (this.#cursorClaims++ > 0) return;
    const lapse = () =>
      setTimeout(() => {
        if (this.#cursorClaims === 0) return;
        this.#cursorClaims = 0;
        this.#maybeIdle();
      }, 0);
    if (this.#opening === null) lapse();
    else this.#opening.then(lapse, lapse);
  }

  /**
   * Takes `maxCursors`, `cursorIdleTimeout` and `txIdleTimeout` from the
   * server's hello (`limits`), on each link opened.
   */
  takeLimits(limits: ServerLimits): void {
    this.maxCursors = limits.maxCursors ?? DEFAULT_MAX_CURSORS;
    this.cursorIdleTimeout = limits.cursorIdleTimeout ?? 0;
    this.txIdleTimeout = limits.txIdleTimeout ?? 0;
  }

  /**
   * True while a cursor is open here (or chosen for it): it ends only when
   * its consumer's loop does, which may wait for calls made inside it.
   */
  get holdsCursor(): boolean {
    return this.#liveHolds() + this.#cursorClaims > 0;
  }

  /** True while fewer than the server's `maxCursors` cursors are open or claimed here. */
  get cursorRoom(): boolean {
    return this.#liveHolds() + this.#cursorClaims < this.maxCursors;
  }

  /**
   * The open cursors' holds still live, counted; dead ones are dropped: the
   * link they were opened on is gone, the transaction they were opened in
   * ended (the server closed them with it), or they were not advanced for
   * the server's `cursorIdleTimeout` (plus a second's margin: the server
   * closed them).
   */
  #liveHolds(): number {
    if (this.#holds.size === 0) return 0;
    const now = performance.now();
    const idleMs = this.cursorIdleTimeout;
    for (const h of this.#holds) {
      if (h.generation === null) continue; // not opened yet: its request counts too
      const dead = h.generation !== this.#generation || !this.open ||
        (h.txOpenedBy !== 0 && this.txOpenedBy !== h.txOpenedBy) ||
        (idleMs > 0 && now - h.usedAt > idleMs + CURSOR_IDLE_MARGIN_MS);
      if (dead) this.#holds.delete(h);
    }
    return this.#holds.size;
  }

  /**
   * When the first hold that only the server's cursor idle timeout ends
   * lapses (`performance.now()` time), or `null` when none would.
   */
  holdsLapseAt(): number | null {
    const idleMs = this.cursorIdleTimeout;
    if (idleMs <= 0 || this.#liveHolds() === 0) return null;
    let at: number | null = null;
    for (const h of this.#holds) {
      if (h.generation === null) continue;
      const t = h.usedAt + idleMs + CURSOR_IDLE_MARGIN_MS + 1;
      if (at === null || t < at) at = t;
    }
    return at;
  }

  /**
   * Sends one request, opening or reopening the link when allowed.
   *
   * @param generation When given, fail unless the link is still that one
   *   (for cursors and handles, which die with their connection).
   */
  request<O extends ReplyOp>(
    op: O,
    args: Requests[O],
    signal?: AbortSignal,
    generation?: number,
    writes: boolean = waitsForWriter(op, args[0]),
  ): Promise<Replies[O]> {
    const sent = this.#send(op, args, signal, generation);
    if (writes) {
      this.#blocking++;
      const done = (): void => {
        if (--this.#blocking === 0) this.#events.onUnblocked(this);
      };
      sent.then(done, done);
    }
    if (this.#mayCommit(op, args)) {
      this.#committing++;
      sent.then(() => this.#committing--, (err) => {
        this.#committing--;
        // Unless the server answered it, or it was never sent: it may have committed the
        // transaction (its answer lost with the link, or the call aborted by its signal while
        // the server ran it).
        const ranNot = (err instanceof SqliteError && err.mayHaveRun !== true) ||
          (err instanceof ConnectionError && !err.mayHaveRun);
        if (!ranNot) this.#commitLost = this.#link;
      });
    } else if (op === Op.Prepare && mayCommit(args[0] as string, false)) {
      sent.then((reply) => {
        const handle = (reply as Replies[typeof Op.Prepare])[0];
        this.#committingHandles.add(`${this.#generation}:${handle}`);
      }, () => {});
    } else if (op === Op.Finalize) {
      // Its statement is done with it, and the server never reuses a handle.
      this.#committingHandles.delete(`${generation ?? this.#generation}:${args[0]}`);
    }
    if (this.handing) {
      this.handing = false;
      this.#events.onHanded(this);
    }
    return sent;
  }

  /**
   * True when the request may commit the transaction open here: its SQL
   * (see `mayCommit`), or that of the statement prepared here that it runs.
   */
  #mayCommit<O extends ReplyOp>(op: O, args: Requests[O]): boolean {
    if (op === Op.Batch) {
      return (args as Requests[typeof Op.Batch])[0].some(([sql]) => mayCommit(sql, false));
    }
    if (!ENDS_BY_SQL.has(op) || op === Op.Prepare) return false;
    const ref = args[0];
    if (typeof ref === "string") return mayCommit(ref, op === Op.Exec);
    return typeof ref === "number" && this.#committingHandles.has(`${this.#generation}:${ref}`);
  }

  /**
   * True when the transaction open here was lost with the link, which the
   * server rolled back: the link's last answer left it open, and no request
   * that may have committed it was in flight when the link ended (see
   * {@link #mayCommit}). Until the `ROLLBACK` sent after it; never once the
   * client was closed (its calls say so).
   */
  get rolledBackWithLink(): boolean {
    const link = this.#link;
    return !this.#closed && this.lostTransaction && link !== null && link.failure !== null &&
      link.inTransaction && this.#guarded !== link && this.#committing === 0 &&
      this.#commitLost !== link;
  }

  /**
   * True when `err` is the error a request sent here on the current link
   * was rejected with, saying the call may have run (`mayHaveRun`): not
   * another connection's, nor another client's (see `lostWithConnection`).
   */
  raised(err: unknown): boolean {
    return this.#link?.raised(err) ?? false;
  }

  /**
   * Statements prepared here, not finalized, that may commit a transaction
   * (see {@link #mayCommit}); for tests.
   */
  get committingHandles(): number {
    return this.#committingHandles.size;
  }

  /** Requests sent on the current link so far (see {@link Link.sent}). */
  get sent(): number {
    return this.#link?.sent ?? 0;
  }

  /** The number (in {@link sent}) of the request that opened the transaction open now, or 0. */
  get txOpenedBy(): number {
    return this.#link?.txOpenedBy ?? 0;
  }

  #send<O extends ReplyOp>(
    op: O,
    args: Requests[O],
    signal: AbortSignal | undefined,
    generation: number | undefined,
  ): Promise<Replies[O]> {
    const link = this.#link;
    // A cursor or handle of a link that ended died with it: failed at once, with why that link
    // ended, never reconnecting (a new link would not know it). On the current link, unless a
    // transaction was lost with it (its calls fail as the transaction's, below) or the client
    // closed ("Client is closed").
    if (
      generation !== undefined &&
      (generation !== this.#generation ||
        (link !== null && link.failure !== null && !this.#closed && !this.lostTransaction))
    ) {
      return Promise.reject(this.#diedError(op, generation));
    }
    // Closed: nothing more is sent, also while the link stays up for the replies to the calls
    // close() cancelled (a call made then would run unasked for, a write committing).
    if (this.#closed) return Promise.reject(new ConnectionError("Client is closed"));
    if (link !== null && link.failure === null && !this.#lostTransaction && !this.#commitRefused) {
      return link.request(op, args, signal);
    }
    this.#other++;
    this.#unsent++;
    // Encoded once the link is open: with the arguments as they are now.
    const sent = this.#requestAfterLoss(op, snapshot(args), signal, generation).finally(() => {
      this.#other--;
      this.#unsent--;
      this.#maybeIdle();
    });
    return abortable(sent, signal);
  }

  /**
   * Opens the link of a connection created without one (or lost); no-op
   * while it is up. Concurrent calls share one attempt.
   *
   * @throws what opening throws (e.g. `TOO_MANY_CONNECTIONS`);
   *   `ConnectionError` when the server serves another database than the
   *   one the pool first connected to.
   */
  connect(): Promise<void> {
    if (this.#link !== null && this.#link.failure === null) return Promise.resolve();
    if (this.#opening !== null) return this.#opening;
    if (this.#closed) return Promise.reject(new ConnectionError("Client is closed"));
    const aborter = new AbortController();
    this.#openAborter = aborter;
    return this.#opening = openLink(this.#config, {}, aborter.signal).then(async ([link, info]) => {
      if (this.#closed) {
        link.fail(new ConnectionError("Connection was closed by the client"));
        await link.ended;
        throw new ConnectionError("Client is closed");
      }
      const refusal = this.#events.refuses(info);
      if (refusal !== null) {
        link.fail(refusal);
        await link.ended;
        throw refusal;
      }
      const lost = this.#link?.failure ?? null;
      if (lost !== null) {
        this.#failures.set(this.#generation, lost);
        // Oldest first: Map keeps insertion order.
        if (this.#failures.size > KEPT_FAILURES) {
          this.#failures.delete(this.#failures.keys().next().value!);
        }
      }
      this.#link = link;
      this.#committingHandles.clear();
      this.#session = info.session ?? null;
      this.takeLimits(info.limits);
      this.#generation++;
      this.#watch(link);
      this.#events.onOpen(info);
    }).finally(() => {
      this.#opening = null;
      this.#openAborter = null;
    });
  }

  #maybeIdle(): void {
    if (this.#onSettled.length > 0) {
      const link = this.#link;
      if ((link === null ? 0 : link.pending) + this.#unsent === 0) {
        for (const resolve of this.#onSettled.splice(0)) resolve();
      }
    }
    if (this.busy === 0) this.#events.onIdle(this);
  }

  /**
   * Closes the link; pending requests reject with `ConnectionError`. A link
   * still opening is given up at once (its socket closed), and the calls
   * waiting for it fail with "Client is closed". Idempotent.
   */
  async close(message = "Connection was closed by the client"): Promise<void> {
    this.#closed = true;
    this.#openAborter?.abort(new ConnectionError("Client is closed"));
    await this.#opening?.catch(() => {});
    const link = this.#link;
    if (link === null) return;
    await link.cancelPending(message, CLOSE_CANCEL_MS);
    link.fail(new ConnectionError(message));
    await link.ended;
  }

  #watch(link: Link): void {
    link.guard = this.#guard;
    link.onIdle = () => this.#maybeIdle();
    link.ended.then(() => {
      if (!this.#closed && link === this.#link) this.#events.onLost(this, link.failure!);
    });
  }

  /** A call on a missing or lost link: open, or refuse while a lost transaction is unacknowledged. */
  async #requestAfterLoss<O extends ReplyOp>(
    op: O,
    args: Requests[O],
    signal: AbortSignal | undefined,
    generation: number | undefined,
  ): Promise<Replies[O]> {
    if (this.#closed) throw new ConnectionError("Client is closed");
    const lost = this.#link;
    if (lost !== null && lost.failure !== null && this.#judged !== lost) {
      this.#judged = lost;
      if ((lost.inTransaction && this.#guarded !== lost) || this.txDepth > 0) {
        this.#lostTransaction = true;
        this.#lostTxFailure = lost.failure;
      }
    }
    let ending: TxEnd | null = null;
    if (this.#commitRefused && RUNS_SQL.has(op)) {
      ending = this.#endingOf(op, args);
      if (ending !== "ROLLBACK" || op !== Op.Prepare) this.#commitRefused = false;
      if (ending === "ROLLBACK" && op !== Op.Prepare) {
        this.#endingHandles.clear();
        return rolledBack(op);
      }
      if (ending !== "ROLLBACK") {
        ending = null;
        this.#endingHandles.clear();
      }
    }
    if (this.#lostTransaction) {
      ending = this.#endingOf(op, args);
      // A ROLLBACK or COMMIT prepares on a new link: running its handle ends the state as below.
      if (op !== Op.Prepare || ending === null) {
        if (ending === "ROLLBACK") {
          this.#endLostTransaction();
          return rolledBack(op);
        }
        const err = this.lostTransactionError();
        if (ending === "COMMIT") {
          // Handles of ROLLBACK prepared meanwhile stay: one run right after is a no-op too.
          this.#lostTransaction = false;
          this.#commitRefused = true;
        }
        throw err;
      }
    }
    if (lost !== null && lost.failure !== null && !this.#config.reconnect) {
      throw unsentError(lost.failure);
    }
    if (this.#link === null || this.#link.failure !== null) {
      try {
        await this.connect();
      } catch (err) {
        if (this.#closed) throw new ConnectionError("Client is closed");
        throw err;
      }
      if (this.#closed) throw new ConnectionError("Client is closed");
    }
    if (generation !== undefined && generation !== this.#generation) {
      throw this.#diedError(op, generation);
    }
    if (ending === null) return this.#link!.request(op, args, signal);
    const reply = await this.#link!.request(op, args, signal);
    const handle = (reply as Replies[typeof Op.Prepare])[0];
    if (this.#lostTransaction || this.#commitRefused) {
      this.#endingHandles.set(`${this.#generation}:${handle}`, ending);
    }
    return reply;
  }

  /**
   * How the call ends a transaction: by its SQL ({@link ENDS_BY_SQL}), or by
   * the handle of one prepared to ({@link ENDS_BY_HANDLE}), whichever
   * request carries it (`run`, `exec`, `query`, `get`, `values`,
   * `iterate`, a prepared statement's `run`, `all`, `get`, `values` or
   * `iterate`).
   */
  #endingOf<O extends ReplyOp>(op: O, args: Requests[O]): TxEnd | null {
    const ref = args[0];
    if (typeof ref === "string") return ENDS_BY_SQL.has(op) ? txEndOf(ref) : null;
    if (typeof ref !== "number" || !ENDS_BY_HANDLE.has(op)) return null;
    return this.#endingHandles.get(`${this.#generation}:${ref}`) ?? null;
  }

  #endLostTransaction(): void {
    this.#lostTransaction = false;
    this.#lostTxFailure = null;
    this.#commitRefused = false;
    this.#endingHandles.clear();
  }

  /**
   * The error of a call on this connection lost inside a transaction, until
   * `ROLLBACK` is sent there (nothing was sent: `mayHaveRun` false): it names
   * why the link ended (its `cause`), and advises sending `ROLLBACK` unless a
   * helper that rolls back itself holds the transaction ({@link txOwner}).
   */
  lostTransactionError(): ConnectionError {
    const link = this.#link;
    const failure = link !== null && link.failure !== null && this.#judged !== link
      ? link.failure
      : this.#lostTxFailure ?? link?.failure ?? null;
    return lostTransactionError(failure, this.txOwner !== null);
  }

  /**
   * The error of a request for a cursor or handle of the link of
   * `generation`, which ended: it names why, as a call not sent there.
   */
  #diedError(op: ReplyOp, generation: number): ConnectionError {
    const what = op === Op.Next || op === Op.CloseCursor
      ? "the cursor"
      : "the prepared statement's handle";
    const failure = generation === this.#generation
      ? this.#link?.failure ?? null
      : this.#failures.get(generation) ?? null;
    if (failure === null) return new ConnectionError(`Connection was lost: ${what} died with it`);
    return unsentError(failure, `the call was not sent: ${what} died with the connection`);
  }
}

/** How many ended links' failures a connection keeps (see `PooledConnection`'s `#failures`). */
const KEPT_FAILURES = 8;

/**
 * The error of a call on a connection lost inside a transaction, until the
 * application sends `ROLLBACK` there (nothing was sent: `mayHaveRun` false).
 *
 * @param failure Why the link ended (the error's `cause`, named in its message), if known.
 * @param helper The transaction was a helper's that rolls back itself
 *   (`transaction()`, an ORM's): advise retrying it, not sending `ROLLBACK`.
 */
function lostTransactionError(
  failure: ConnectionError | null,
  helper: boolean,
): ConnectionError {
  const why = failure === null ? "" : ` (${failure.message})`;
  const advice = helper
    ? "retry the whole transaction"
    : "send ROLLBACK, then retry the whole transaction";
  return new ConnectionError(
    `Connection was lost inside a transaction${why}, which the server rolled back: ${advice}`,
    failure === null ? {} : { cause: failure },
  );
}

/** Requests that run SQL: the first after a refused COMMIT ends {@link PooledConnection}'s grace for a ROLLBACK. */
const RUNS_SQL: ReadonlySet<number> = new Set([
  Op.Exec,
  Op.Query,
  Op.Run,
  Op.Batch,
  Op.Prepare,
  Op.Iterate,
]);

/** Requests whose SQL text may end a transaction (a `ROLLBACK` or `COMMIT` prepares as one). */
const ENDS_BY_SQL: ReadonlySet<number> = new Set([
  Op.Exec,
  Op.Run,
  Op.Query,
  Op.Iterate,
  Op.Prepare,
]);

/** Requests that run a prepared handle, which may end a transaction. */
const ENDS_BY_HANDLE: ReadonlySet<number> = new Set([Op.Run, Op.Query, Op.Iterate]);

/**
 * The cursor id of an `iterate` answered without a cursor: no rows, nothing
 * to ask for or close (the server numbers its cursors from 1).
 */
export const NO_CURSOR = 0;

/**
 * The reply to a `ROLLBACK` the connection answers itself, as the server
 * answers one that ends a transaction it rolled back: nothing ran, no rows.
 */
function rolledBack<O extends ReplyOp>(op: O): Replies[O] {
  const reply = op === Op.Run
    ? [0, 0]
    : op === Op.Query
    ? [[], []]
    : op === Op.Iterate
    ? [NO_CURSOR, []]
    : null;
  return reply as Replies[O];
}

/** How a statement ends a transaction (`END` is `COMMIT`). */
type TxEnd = "ROLLBACK" | "COMMIT";

/**
 * `"ROLLBACK"` when `sql` is `ROLLBACK [TRANSACTION]` alone (not `ROLLBACK
 * TO`), `"COMMIT"` when it begins with `COMMIT` or `END`, else `null`.
 */
function txEndOf(sql: string): TxEnd | null {
  let first: string | null = null;
  let transaction = false; // ROLLBACK TRANSACTION
  let ended = false; // a semicolon came
  let alone = true; // nothing else came after ROLLBACK
  scan(sql, (t) => {
    if (first === null) {
      first = t.kind === "word" ? t.text : "";
      return first === "rollback";
    }
    if (t.kind === "semicolon") ended = true;
    else if (!ended && !transaction && t.kind === "word" && t.text === "transaction") {
      transaction = true;
    } else alone = false;
    return alone;
  });
  if (first === "commit" || first === "end") return "COMMIT";
  return first === "rollback" && alone ? "ROLLBACK" : null;
}
