/**
 * One client connection on the server: frames in, requests validated and run
 * in order on an {@link EngineSession}, replies gathered and written out.
 *
 * Backpressure: while more than `HIGH_WATER` bytes of replies wait for a slow
 * reader, or `MAX_QUEUED` requests wait to run, the session stops reading
 * from its socket, so a client that never reads cannot make the server
 * buffer without bound.
 *
 * Pipelining: when a read brings several requests, the replies to the first
 * half leave as soon as they are ready, while the second half runs, so the
 * client works on them instead of waiting for the whole batch (on two cores
 * this nearly doubles 64-in-flight reads; see README, "Concurrency model").
 *
 * @module
 */

import { MessageDecoder, MessageEncoder } from "../protocol/codec.ts";
import { Encoded, TooManyValuesError } from "../protocol/msgpack.ts";
import { scan } from "../protocol/sql_lexer.ts";
import {
  AbortError,
  ErrorCode,
  ProtocolError,
  shortWireError,
  SqliteError,
  toWireError,
  type WireError,
} from "../protocol/errors.ts";
import {
  ADMIN_OPS,
  CONNECTION_ERROR_ID,
  type HelloReply,
  Op,
  type OpCode,
  PROTOCOL_VERSION,
  RESULT_LIMITED_OPS,
  Status,
} from "../protocol/messages.ts";
import {
  asEnvelope,
  type DecodedRequest,
  decodeHello,
  decodeRequest,
  type Envelope,
} from "../protocol/requests.ts";
import {
  BLOCKED,
  type EngineLike,
  noteWork,
  type Planned,
  type SessionLike,
} from "../engine/engine_api.ts";
import type { EngineSession } from "../engine/engine_session.ts";
import { replyTooLarge, resultTooLarge } from "../engine/run.ts";
import { heldReplyError } from "../engine/group_commit.ts";
import { DeadlineTimer } from "../engine/deadline_timer.ts";
import { FrameChannel } from "../transport/frame_channel.ts";
import { FRAME_HEADER_SIZE, readFrameLength } from "../transport/frame_writer.ts";
import type { ByteBudget } from "../transport/frame_reader.ts";
import type { TokenGate } from "./auth.ts";
import { Logger, sqlForLog } from "./log.ts";
import { opName, type ServerStats, type SessionProbe } from "./stats.ts";

/** What a session reports to and logs with; shared by the server's sessions. */
export interface SessionServices {
  /** Counters for the `stats` request. */
  stats: ServerStats | null;
  /** The event log. */
  log: Logger;
  /** Log statements slower than this, in ms (0 = none). */
  slowMs: number;
  /** Bound on the bytes incomplete frames hold on all connections (`null`: none). */
  partialFrames?: ByteBudget | null;
  /**
   * Bound on the bytes of requests read but not yet started, on all
   * connections (`null`: none): past it a connection with requests waiting
   * stops reading until they ran (one without any always reads its next).
   * A request counts its frame's bytes plus an estimate of what its values
   * take decoded ({@link VALUE_BYTES}).
   */
  queuedRequests?: ByteBudget | null;
  /**
   * Most MessagePack values one request frame may hold (absent: no bound);
   * a request past it is refused alone with `BAD_REQUEST`, undecoded.
   */
  maxRequestValues?: number;
  /**
   * Bound on the bytes of replies not yet written to sockets, on all
   * connections (`null`: none): past it a connection with replies unsent
   * starts no further request until its client read them (one with nothing
   * unsent still starts its next, so a client that keeps up always
   * progresses).
   */
  unsentReplies?: ByteBudget | null;
  /**
   * Close a connection whose client took no byte of its waiting replies for
   * this long, in ms (0 or absent: never).
   */
  writeStallTimeout?: number;
  /** Time a new connection has for its hello, in ms (default: the hello's `frameTimeout`). */
  helloTimeout?: number;
  /** Close a cursor not advanced for this long, in ms (0 or absent: never). */
  cursorIdleTimeout?: number;
  /**
   * Called once a hello's token is accepted: takes a connection slot for
   * `session`, or returns why not (the server is full); absent: always admitted.
   */
  admit?: (session: Session) => ProtocolError | null;
}

const NO_SERVICES: SessionServices = { stats: null, log: new Logger("warn"), slowMs: 0 };

const TIMEOUT_CODES: ReadonlySet<string> = new Set([
  ErrorCode.BusyTimeout,
  ErrorCode.StatementTimeout,
  ErrorCode.TxTimeout,
]);
/** Requests whose failure is logged (`warn`), as their success is (`info`). */
const MAINTENANCE_OPS: ReadonlySet<OpCode> = new Set([
  Op.Checkpoint,
  Op.Vacuum,
  Op.Integrity,
  Op.Backup,
]);
/**
 * Requests answered by the session itself (not the engine's statements)
 * that wait for a group commit their connection awaits (see #dispatch).
 */
const WAIT_FOR_COMMIT: ReadonlySet<OpCode> = new Set([
  ...MAINTENANCE_OPS,
  Op.Stats,
  Op.Subscribe,
  Op.Unsubscribe,
]);
/**
 * SQLite's codes for a failing device or file (the primary code, any
 * extended one): logged at `error`, since every client's writes fail alike
 * until the operator acts, and no client's own doing caused them.
 */
const STORAGE_ERROR = /^SQLITE_(FULL|IOERR|CORRUPT)(?:_|$)/;
/** The I/O error a full device gives as the WAL-index grows, past its first 32 KiB. */
const SHM_FULL = "SQLITE_IOERR_SHMSIZE";
/** What the operator learns from a storage error's log line, by its primary code. */
const STORAGE_HINT = {
  FULL: "the device holding the database, or SQLite's temporary directory (large sorts, " +
    "VACUUM), is full: requests that need room fail until there is some, and go on by " +
    "themselves then",
  IOERR: "a read or write of the database's files failed (a full device, a file size limit " +
    "(ulimit -f), or the device itself: see the system log)",
  CORRUPT: "the database file is damaged: check it (netsqlite integrity) and restore from a " +
    "backup if needed",
} as const;
/** Slow-statement lines: at most ten a second, the next one counting those held back. */
const SLOW_LOG_INTERVAL_MS = 100;
import { ConnectionFeeds } from "./feeds.ts";
import { TurnScheduler, type TurnTaker } from "./turns.ts";

/**
 * Bytes of replies waiting for one client past which its connection runs no
 * further request (and stops reading) until the client read them.
 */
export const HIGH_WATER = 4 * 1024 * 1024;
/**
 * Largest frame read before the hello is accepted: a hello is about 40 bytes
 * plus its token (at most `MAX_TOKEN_BYTES`, 1 KiB), so an unauthenticated
 * peer cannot make the server hold more than this for it.
 */
export const MAX_HELLO_FRAME = 4 * 1024;
/**
 * What a request waiting in the queue is taken to hold, beyond its frame's
 * bytes, per MessagePack value as the decoder counts them (measured decoded:
 * an empty map 64 bytes, a one-item array 64 with its item, a byte array,
 * counted as 8 values, 210-380), so that `queuedRequests` bounds the memory
 * requests take decoded, not their size on the wire (1 MiB of empty maps is
 * 64 MiB).
 */
const VALUE_BYTES = 64;
/** Idled-out cursor ids remembered per connection, to say why their `next` fails. */
const IDLED_REMEMBERED = 256;
/**
 * Ids of requests that wrote inside the open transaction, remembered (the
 * most recent ones) so that a cancel naming one after it ran ends it.
 */
const TX_WRITES_REMEMBERED = 1024;
const MAX_QUEUED = 4096;
/** Open cursors whose SQL a connection keeps for the slow-statement log. */
const CURSOR_SQL_KEPT = 64;
/**
 * How often, in ms, the session checks whether a client that stopped sending
 * is gone altogether, while one of its requests runs.
 */
const GONE_CHECK_MS = 100;
/**
 * Longest run of queued requests in one turn, in ms: a connection that
 * pipelines thousands of requests then waits for its next turn (see
 * server/turns.ts), letting the others (and new requests arriving on their
 * sockets) go first. A turn given by the scheduler is at most what is left
 * of its round (`ROUND_MS`). The turn is given back through a timer,
 * the only way to let other sockets' data in here, and a timer costs 1-2 ms
 * of idle time: a connection that is alone in the scheduler's queue and
 * whose last yield let no other request run doubles its turn, up to
 * {@link MAX_TURN_MS}, so that a client pipelining alone keeps ~90 % of its
 * speed; it is back at {@link TURN_MS} as soon as another client is served.
 */
const TURN_MS = 2;
/** Longest turn of a connection that had no competition at its last yields, in ms. */
const MAX_TURN_MS = 16;
/** Requests started by all sessions together: tells a yielding session whether others ran. */
let requestsStarted = 0;
/** The turns of all the sessions of this process (one JS thread). */
const turns = new TurnScheduler();
/** At shutdown, how long a request stopped while it ran is given to answer, in ms. */
const STOP_WAIT_MS = 1000;

/**
 * A refused token is answered (and the connection closed) this long after
 * the hello (ms). The connection keeps its handshake slot meanwhile, so
 * guesses from one address are bounded by `--max-handshakes-per-address`
 * (64) per this delay: about 300 a second. Nothing else waits for it.
 */
export const AUTH_REFUSAL_DELAY_MS = 200;

type Request = Envelope;

/** Serves one client connection. */
export class Session implements SessionProbe {
  readonly #conn: Deno.Conn;
  readonly #channel: FrameChannel;
  readonly #encoder: MessageEncoder;
  /** Counts the values of each request, refusing those past `maxRequestValues`. */
  readonly #decoder: MessageDecoder;
  readonly #engine: SessionLike;
  readonly #hello: HelloReply;
  readonly #gate: TokenGate | null;
  readonly #peer: string;
  readonly #maintenance: EngineLike["maintenance"];
  readonly #queuedRequests: ByteBudget | null;
  readonly #unsentReplies: ByteBudget | null;
  /** This connection's share of `#unsentReplies.used`, as last counted. */
  #unsentCounted = 0;
  #queue: Request[] = [];
  /**
   * Sizes of `#queue`'s requests, index for index: frame bytes plus their
   * values' estimated decoded size ({@link VALUE_BYTES}).
   */
  #sizes: number[] = [];
  #head = 0;
  /** Sizes of the requests in `#queue` from `#head` on (counted in `queuedRequests` too). */
  #queuedBytes = 0;
  #handshaken = false;
  /** Set by a hello with `admin: true`: only {@link ADMIN_OPS} run. */
  #admin = false;
  #pumping = false;
  /** Set while this connection waits in {@link turns} for its next turn (it used up its turn). */
  #waitingTurn = false;
  /** `requestsStarted` when this connection last yielded its turn. */
  #yieldMark = 0;
  /** Turn of this connection alone, in ms: {@link TURN_MS}, longer while it has no competition. */
  #soloMs = TURN_MS;
  /** Length of the turn the scheduler gave, in ms, while it runs (else `null`: a turn at once). */
  #grantedMs: number | null = null;
  /** How the scheduler starts this connection's turn. */
  readonly #turnTaker: TurnTaker = { takeTurn: (ms, alone) => this.#takeTurn(ms, alone) };
  /** Resolved when the next turn began (or the connection closed). */
  #turnBegan: (() => void) | null = null;
  /** The partial-frame and hello limits (grace after the server's own stall: DeadlineTimer). */
  #frameTimer: DeadlineTimer | undefined;
  /**
   * When the last byte of an incomplete frame was read, or reading resumed
   * (`performance.now()`): `frameTimeout` counts from here.
   */
  #frameProgressAt = 0;
  #helloTimer: DeadlineTimer | undefined;
  /** Ends the wait before a refused token's answer early ({@link AUTH_REFUSAL_DELAY_MS}). */
  #refusalWaitEnd: (() => void) | null = null;
  /** Set after a protocol violation: nothing more is run or sent. */
  #dead = false;
  /** `--max-frame-size`, in force once the hello is accepted. */
  #maxFrameSize: number;
  /** Set when the server shuts down: nothing new is run, what runs is answered. */
  #stopping = false;
  /** True while the head request waits for the writer. */
  #blocked = false;
  /** The check for a client gone while its head request waits for the writer (see #watchGone). */
  #goneTimer: ReturnType<typeof setTimeout> | undefined;
  /** Settles when the head request, running in the background, is answered. */
  #inflight: Promise<void> | null = null;
  /**
   * Encoder size before the replies held for a group commit, and those
   * replies (`at`: where each one's frame begins).
   */
  #heldAt = -1;
  #held: { id: number; error?: unknown; at: number }[] = [];
  /** Resolved when held replies are released (see #awaitCommit). */
  #released: (() => void) | null = null;
  readonly #services: SessionServices;
  readonly #stats: ServerStats | null;
  /** When the last request was answered, within one run of `#pump` (else 0). */
  #answeredAt = 0;
  /** When the head request's turn began (`performance.now()`), 0 between requests. */
  #headStart = 0;
  /** When this session's open transaction was first seen, or 0. */
  #txSince = 0;
  #answered = 0;
  /** SQL of prepared handles, kept only for the slow-statement log. */
  #preparedSql: Map<number, string> | null = null;
  /** SQL of this connection's open cursors, by id (only with `--slow-ms`). */
  #cursorSql: Map<number, string> | null = null;
  #closedOnce = false;
  /** Resolved when the connection is closed (see {@link #closing}). */
  #onClosed: (() => void) | null = null;
  /** Change feeds of this connection (`subscribe`). */
  readonly #feeds: ConnectionFeeds;
  /** Set when the engine rolled back the open transaction (its lease ended). */
  #txEnded = false;
  /** `cursorIdleTimeout` (0: never); when each open cursor was last advanced. */
  readonly #cursorIdleMs: number;
  #cursorUse: Map<number, number> | null = null;
  #cursorTimer: DeadlineTimer | undefined;
  /** Cursors closed for idling, so that their next `next` says why. */
  #idled: Set<number> | null = null;
  /** The engine's write mark taken when the head request was dispatched. */
  #writeMark = 0;
  /**
   * Requests that wrote inside the open transaction (the most recent
   * {@link TX_WRITES_REMEMBERED}); emptied when it ends.
   */
  #txWrites: Set<number> | null = null;
  /** The request running in the background that the client cancelled, or 0. */
  #cancelledRunning = 0;
  /**
   * Requests cancelled before they ran (dropped from the queue, or never
   * sent by the client), keyed by the queued request that follows them:
   * when that one's turn comes, each that would have written inside the open
   * transaction ends it (see {@link #judge}).
   */
  #voids: Map<Request, Void[]> | null = null;
  /**
   * Such requests that no queued request follows yet: judged when the queue
   * runs dry (at once when nothing is queued or running), unless a request
   * arrives first and takes them.
   */
  #voidsAtEnd: Void[] | null = null;
  /**
   * How many requests {@link #voids} and {@link #voidsAtEnd} hold, and their
   * bytes (counted in `queuedRequests`): they count as queued requests do.
   */
  #voidCount = 0;
  #voidBytes = 0;
  /** Set while {@link #fatal} waits for the engine to wake this session (it pumped then). */
  #woken: (() => void) | null = null;
  /** Queued stand-ins for requests refused unread (too many values), with their error. */
  #refused: WeakMap<Request, SqliteError> | null = null;

  /**
   * @param conn The accepted connection.
   * @param engine The engine to run requests on.
   * @param hello The handshake reply to send.
   * @param gate Checks the token of the hello; `null` when none is required.
   */
  constructor(
    conn: Deno.Conn,
    engine: EngineLike,
    hello: HelloReply,
    gate: TokenGate | null = null,
    services: SessionServices = NO_SERVICES,
  ) {
    this.#conn = conn;
    this.#gate = gate;
    this.#services = services;
    this.#stats = services.stats;
    this.#maintenance = engine.maintenance;
    this.#peer = peerName(conn);
    const max = hello.limits.maxFrameSize;
    this.#encoder = new MessageEncoder(max);
    this.#hello = hello;
    this.#engine = engine.openSession(
      () => {
        // The engine wakes a waiter once and skips it unless it takes the
        // writer now: pump at once, also after a bad frame (#fatal).
        this.#pump();
        this.#wake();
      },
      (error) => this.#onCommit(error),
    );
    // Replies wait while a write of this session waits for its group commit.
    const encoder = this.#encoder;
    const session = this.#engine;
    const stats = this.#stats;
    const outbox = {
      get size(): number {
        return session.awaitingCommit ? 0 : encoder.size;
      },
      take: (): Uint8Array => {
        const bytes = encoder.take();
        if (stats !== null) stats.bytesOut += bytes.length;
        return bytes;
      },
    };
    stats?.opened(this);
    this.#cursorIdleMs = services.cursorIdleTimeout ?? 0;
    const helloMs = services.helloTimeout ?? hello.limits.frameTimeout;
    this.#helloTimer = new DeadlineTimer(() => {
      this.#helloTimer = undefined;
      this.#sendLast(
        new ProtocolError(
          ErrorCode.FrameTimeout,
          `Closing connection: no hello within ${helloMs} ms (--hello-timeout)`,
        ),
      );
    }, helloMs);
    // Until its hello is accepted (token checked), a client may send no
    // more than a hello needs: it cannot make the server buffer and decode
    // frames of up to --max-frame-size without being let in.
    this.#maxFrameSize = max;
    this.#queuedRequests = services.queuedRequests ?? null;
    this.#decoder = new MessageDecoder(services.maxRequestValues);
    this.#unsentReplies = services.unsentReplies ?? null;
    this.#channel = new FrameChannel(conn, Math.min(max, MAX_HELLO_FRAME), outbox, {
      onFrame: (payload) => this.#onFrame(payload),
      onReadEnd: () => {
        // Bytes of an incomplete frame arrived: its wait starts again.
        if (this.#channel.partial) this.#frameProgressAt = performance.now();
        this.#watchPartialFrame();
        this.#pump();
      },
      onDrain: () => {
        this.#countUnsent();
        this.#feeds.pump();
        this.#pump();
      },
      onWritten: () => this.#countUnsent(),
      onWriteStall: () => this.#writeStalled(),
    }, services.partialFrames ?? null);
    this.#channel.writeStallTimeout = services.writeStallTimeout ?? 0;
    // Until the hello is accepted, reads stay small (4 KiB), whatever the peer sends.
    this.#channel.largeReads = false;
    this.#feeds = new ConnectionFeeds(engine.changes, {
      send: (payload) =>
        this.#encoder.append(
          [CONNECTION_ERROR_ID, Status.Event, payload],
          this.#hello.limits.maxFrameSize,
        ) !== -1,
      // Not while replies are held for a group commit: nothing is written
      // until it ends (events wait queued, where the bounds above count them).
      room: () =>
        !this.#dead && !this.#channel.closed && this.#encoder.size < HIGH_WATER &&
        !this.#engine.awaitingCommit && !this.#overUnsentBudget(),
      flush: () => this.#channel.flush(),
    }, engine.sqlite.engine);
  }

  /** True once the hello (and its token) was accepted. */
  get handshaken(): boolean {
    return this.#handshaken;
  }

  /**
   * True when its hello asked for an admin session (`admin: true`): it may
   * take a slot kept for admin sessions, and runs only {@link ADMIN_OPS}.
   */
  get admin(): boolean {
    return this.#admin;
  }

  /**
   * The engine rolled back this session's open transaction (its lease
   * ended): `stats` no longer reports it as open, though the client must
   * still send ROLLBACK.
   */
  leaseExpired(): void {
    this.#txEnded = true;
  }

  /**
   * Serves until the client leaves; never rejects. After the client stops
   * sending (EOF), requests already received that need not wait for the
   * writer still run and are answered; writes still waiting for the writer
   * are dropped unrun, since nobody may be left to learn their outcome.
   */
  async serve(): Promise<void> {
    try {
      await this.#channel.readLoop();
      await this.#finish();
    } catch (err) {
      await this.#fatal(err);
    } finally {
      this.close();
    }
  }

  async #finish(): Promise<void> {
    if (this.#engine.inTransaction && !this.#mayEndTransaction()) {
      // The client stopped sending inside its transaction, and nothing it
      // sent can commit it: what still runs would be rolled back when the
      // connection closes. Stop it now rather than hold the writer until it
      // ends (a shell killed during a long statement), and answer the rest
      // unrun, for a client that only closed its sending side.
      const why = "the client stopped sending inside its transaction, and nothing it sent " +
        "could commit it: the transaction is rolled back";
      this.#stopping = true;
      this.#engine.cancel(new AbortError(`Stopped: ${why}`));
      while (this.#inflight !== null && !this.#channel.closed) await this.#inflight;
      const q = this.#queue;
      const unrun = new AbortError(`Not run: ${why}`);
      for (let i = this.#head; i < q.length; i++) this.#replyError(q[i][1], unrun);
      this.#dropQueue();
      this.#channel.flush();
      await this.#channel.drain();
      return;
    }
    while (!this.#channel.closed) {
      if (this.#stopping || this.#dead) {
        // The server stops (its shutdown, see {@link shutdown}, answers what
        // runs, sends the last frame and closes the connection), or a last
        // frame is being sent ({@link #sendLast}), which closes it. Nothing
        // more runs here, and going round would wait for nothing: a loop of
        // microtasks that starved the event loop, the shutdown's own timers
        // and writes included, so that the server never exited.
        await this.#closing();
        return;
      }
      await this.#nextTurn();
      this.#pump();
      if (this.#inflight !== null) {
        // A client gone altogether reads no reply: its running statement or
        // script is stopped (engine close), and nothing else runs.
        if (await this.#goneDuring(this.#inflight)) return;
        continue;
      }
      await this.#awaitCommit();
      await this.#channel.drain();
      if (this.#head >= this.#queue.length || this.#blocked) return;
    }
  }

  /**
   * Waits for `inflight` (which never rejects): false once it settled, true
   * as soon as the client is found gone altogether (checked at once, then
   * every {@link GONE_CHECK_MS}) while nothing it sent could commit a
   * transaction (see {@link #mayEndTransaction}).
   */
  async #goneDuring(inflight: Promise<void>): Promise<boolean> {
    let settled = false;
    const done = inflight.then(() => settled = true);
    for (;;) {
      if (!this.#mayEndTransaction() && await this.#peerGone()) return !settled;
      if (settled) return false;
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([done, new Promise<void>((r) => timer = setTimeout(r, GONE_CHECK_MS))]);
      clearTimeout(timer);
      if (settled) return false;
    }
  }

  /**
   * While the head request waits for the writer, checks every
   * {@link GONE_CHECK_MS} whether the client is gone altogether (see
   * {@link #peerGone}): then the connection closes, and what it queued is
   * dropped unrun, as at its end of stream (see {@link #finish}) — unless a
   * request queued may end its open transaction (see
   * {@link #mayEndTransaction}). The server reads that end only after every
   * request before it, and stops reading at `MAX_QUEUED` waiting: a client
   * closed or killed behind thousands of queued writes had them run once the
   * writer came free. (A Unix socket tells at once; over TCP a peer's FIN
   * is not told from a half-close: see #peerGone.)
   */
  #watchGone(): void {
    if (this.#goneTimer !== undefined || this.#dead) return;
    this.#goneTimer = setTimeout(async () => {
      this.#goneTimer = undefined;
      if (!this.#blocked || this.#dead || this.#channel.closed) return;
      if (!this.#mayEndTransaction() && await this.#peerGone()) {
        if (this.#blocked && !this.#dead) this.close();
        return;
      }
      this.#watchGone();
    }, GONE_CHECK_MS);
  }

  /**
   * True when the client closed its receiving side too (it is gone, not
   * half-closed): its stream ended in an error (a reset; over TLS, any end),
   * or a write of zero bytes fails. A Unix socket tells at once; TCP does
   * not (the peer's FIN looks like a half-close until data is sent).
   */
  async #peerGone(): Promise<boolean> {
    if (this.#channel.closed || this.#channel.readFailed) return true;
    try {
      await this.#conn.write(new Uint8Array(0));
      return false;
    } catch {
      return true;
    }
  }

  /**
   * True when a request received and not yet answered may end the open
   * transaction: a statement of its SQL (a prepared statement's, for a
   * handle) begins with COMMIT, END or RELEASE, or its SQL is of another type.
   */
  #mayEndTransaction(): boolean {
    const q = this.#queue;
    for (let i = this.#head; i < q.length; i++) {
      const [op, , sql] = q[i] as unknown as [number, number, unknown];
      if (op !== Op.Exec && op !== Op.Query && op !== Op.Run && op !== Op.Iterate) continue;
      const text = typeof sql === "number" ? this.#engine.statementSql(sql) : sql;
      if (typeof text !== "string" || mayEndTx(text)) return true;
    }
    return false;
  }

  /** Session number (the engine's). */
  get id(): number {
    return this.#engine.id;
  }

  /** When the head request began waiting for the writer, or 0. */
  get waitingSince(): number {
    // (A read waiting for another program's lock, on the FFI engine, waits for no writer.)
    return this.#blocked && this.#engine.waitsForLock !== true ? this.#headStart : 0;
  }

  /**
   * When this session's open transaction was first seen, or 0. A transaction
   * the engine ended (its lease expired) counts until the client's ROLLBACK.
   * One opened by the request still running (a script's `BEGIN; ...`) counts
   * from that request's start.
   */
  get transactionSince(): number {
    if (!this.#engine.inTransaction || this.#txEnded) return 0;
    return this.#txSince || this.#headStart;
  }

  /** Cursors open. */
  get cursors(): number {
    return this.#engine.cursorCount;
  }

  /** Resolves once the connection is closed ({@link close}). */
  #closing(): Promise<void> {
    if (this.#closedOnce) return Promise.resolve();
    return new Promise((resolve) => this.#onClosed = resolve);
  }

  /** Closes the connection and rolls back its transaction. Idempotent. */
  close(): void {
    if (!this.#closedOnce) {
      this.#closedOnce = true;
      this.#stats?.closed(this);
      if (this.#handshaken) {
        this.#services.log.info(
          `disconnect: session ${this.id} (${this.#peer}), ${this.#answered} ` +
            `request${this.#answered === 1 ? "" : "s"} answered`,
        );
      }
    }
    this.#frameTimer?.clear();
    this.#helloTimer?.clear();
    this.#cursorTimer?.clear();
    clearTimeout(this.#goneTimer);
    this.#goneTimer = undefined;
    this.#refusalWaitEnd?.();
    turns.leave(this.#turnTaker);
    this.#waitingTurn = false;
    this.#dead = true;
    this.#turnBegan?.();
    this.#turnBegan = null;
    this.#released?.();
    this.#wake();
    this.#feeds.close();
    this.#engine.close();
    this.#channel.close();
    this.#dropQueue();
    this.#countUnsent();
    const closed = this.#onClosed;
    this.#onClosed = null;
    closed?.();
  }

  /**
   * Brings this connection's share of the server-wide count of unsent reply
   * bytes up to date: the replies gathered and the batch being written
   * (nothing once the connection is closed).
   */
  #countUnsent(): void {
    const budget = this.#unsentReplies;
    if (budget === null) return;
    const now = this.#channel.closed ? 0 : this.#encoder.size + this.#channel.unwritten;
    budget.used += now - this.#unsentCounted;
    this.#unsentCounted = now;
  }

  /**
   * True when this connection has replies unsent while those of all
   * connections pass `unsentReplies`: it starts no request until its client
   * read them (see {@link SessionServices.unsentReplies}).
   */
  #overUnsentBudget(): boolean {
    const budget = this.#unsentReplies;
    if (budget === null) return false;
    this.#countUnsent();
    return this.#unsentCounted > 0 && budget.used > budget.max;
  }

  /**
   * The client took no byte of its replies for `writeStallTimeout` ms: the
   * connection is closed, as for a client gone (its transaction is rolled
   * back, its cursors closed).
   */
  #writeStalled(): void {
    if (this.#channel.closed) return;
    const ms = this.#channel.writeStallTimeout;
    const unsent = this.#encoder.size + this.#channel.unwritten;
    const tx = this.#engine.inTransaction ? "; its transaction is rolled back" : "";
    const who = this.#handshaken ? `session ${this.id} (${this.#peer})` : this.#peer;
    this.#services.log.warnThrottled(
      "write stall",
      `write stall: closed the connection of ${who}: ${unsent} bytes of replies wait for its ` +
        `client, which took none of them for ${ms} ms (--write-stall-timeout)${tx}`,
      1000,
      peerHost(this.#conn),
    );
    this.close();
  }

  /**
   * Ends the connection for a server shutdown: no further request starts;
   * the one running and writes held for a group commit finish (within `ms`)
   * and are answered; one still running then is stopped and answered
   * (`ABORTED`, with `ran` for a script stopped part-way); then a last
   * `SHUTTING_DOWN` frame tells the client that its requests without a reply
   * were not run (or were stopped and undone), naming as `running` one that
   * did not stop within {@link STOP_WAIT_MS}, and the connection closes.
   * Before that last frame its change feeds send what was committed (see
   * {@link #sendFeeds}), until `feedMs` after the call at the latest.
   *
   * @param feedMs How long after the call feeds may send (at least `ms` is
   *   sensible: they send once the running request ended).
   * @param writesDone True once no other connection may still commit (the
   *   engine is idle): until then feeds wait for more changes.
   */
  async shutdown(
    ms: number,
    feedMs: number = ms,
    writesDone: () => boolean = () => true,
  ): Promise<void> {
    if (this.#channel.closed || this.#dead) return this.close();
    const feedsUntil = performance.now() + feedMs;
    this.#stopping = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const finished = (async () => {
      while (this.#inflight !== null && !this.#channel.closed) await this.#inflight;
      await this.#awaitCommit();
    })();
    await Promise.race([
      finished,
      new Promise<void>((resolve) => timer = setTimeout(resolve, ms)),
    ]);
    clearTimeout(timer);
    let running: number | undefined;
    if (this.#inflight !== null && !this.#channel.closed) {
      // Still running: stopped now (a script between statements, a statement
      // in the background interrupted); its own reply says what of it ran.
      running = this.#queue[this.#head]?.[1] as number | undefined;
      const where = this.#engine.inTransaction
        ? " inside a transaction, which is rolled back as the connection closes"
        : "";
      this.#engine.cancel(
        new AbortError(
          `Server is shutting down: request ${running} was stopped while it ran${where}`,
        ),
      );
      await Promise.race([
        this.#inflight,
        new Promise<void>((resolve) => timer = setTimeout(resolve, STOP_WAIT_MS)),
      ]);
      clearTimeout(timer);
      if (this.#inflight === null) running = undefined;
    }
    await this.#sendFeeds(feedsUntil, writesDone);
    const last: WireError = {
      code: ErrorCode.ShuttingDown,
      message: "Server is shutting down: requests without a reply were not run, " +
        "or were stopped and undone" +
        (running === undefined ? "" : `, except request ${running}, which may have partly run`),
    };
    if (running !== undefined) last.running = running;
    await this.#sendLast(new ProtocolError(last.code, last.message), last);
  }

  /**
   * At shutdown, for a connection with change feeds: sends every change
   * committed for them (those queued, and those of the log's ring after
   * them: see `ConnectionFeeds.finish`) and waits until the socket took
   * them and `writesDone` says no other connection may still commit; until
   * `until` (`performance.now()`) at the latest, or until the connection ends.
   */
  async #sendFeeds(until: number, writesDone: () => boolean): Promise<void> {
    if (this.#feeds.size === 0) return;
    this.#feeds.finish();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, Math.max(0, until - performance.now()));
    });
    try {
      while (!this.#dead && !this.#channel.closed && performance.now() < until) {
        this.#feeds.pump();
        this.#channel.flush();
        const writing = this.#channel.unwritten > 0;
        if (!writing && this.#encoder.size === 0 && this.#feeds.sent && writesDone()) return;
        let tick: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          writing
            ? this.#channel.drain()
            : new Promise((resolve) => tick = setTimeout(resolve, 10)),
          late,
        ]);
        clearTimeout(tick);
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Logs why the server closes this connection (a protocol violation, a
   * refused token, a stalled frame): at most one line a second per code.
   */
  #logClosing(err: unknown): void {
    const code = (err as { code?: string }).code ?? ErrorCode.Internal;
    if (NOT_LOGGED_HERE.has(code)) return;
    const who = this.#handshaken ? `session ${this.id} (${this.#peer})` : this.#peer;
    this.#services.log.warnThrottled(
      `closing:${code}`,
      `closed the connection of ${who}: ${code}: ${(err as Error).message ?? String(err)}`,
      1000,
      peerHost(this.#conn),
    );
  }

  /**
   * Closes a connection that is inside an incomplete frame and from which no
   * byte arrived for `frameTimeout` ms (a stall, not a slow link: any byte
   * restarts the wait, as nginx's `client_body_timeout`). One timer per
   * connection, armed when a frame is left incomplete and left to run out
   * rather than cleared after every read: when it fires it re-arms itself
   * for what remains of the wait since the last byte, and does nothing when
   * no frame is incomplete any more.
   */
  #watchPartialFrame(): void {
    if (this.#channel.paused) {
      // While reading is paused by our own backpressure the client is not at
      // fault: the wait starts again when reading resumes.
      this.#frameTimer?.clear();
      this.#frameTimer = undefined;
    } else if (this.#frameTimer === undefined && this.#channel.partial && !this.#dead) {
      this.#frameProgressAt = performance.now();
      this.#armFrameTimer(this.#hello.limits.frameTimeout);
    }
  }

  /** Checks in `ms` whether no byte arrived for `frameTimeout` since {@link #frameProgressAt}. */
  #armFrameTimer(ms: number): void {
    const limit = this.#hello.limits.frameTimeout;
    this.#frameTimer = new DeadlineTimer(
      () => {
        this.#frameTimer = undefined;
        const channel = this.#channel;
        if (!channel.partial || channel.paused || channel.closed || this.#dead) return;
        const idle = performance.now() - this.#frameProgressAt;
        if (idle < limit) return this.#armFrameTimer(Math.max(1, Math.ceil(limit - idle)));
        this.#sendLast(
          new ProtocolError(
            ErrorCode.FrameTimeout,
            `Closing connection: no byte of an incomplete frame arrived for ${limit} ms ` +
              "(--frame-timeout)",
          ),
        );
      },
      ms,
      limit,
    );
  }

  #onFrame(payload: Uint8Array): void {
    if (this.#stats !== null) this.#stats.bytesIn += payload.length + 4;
    const decoder = this.#decoder;
    let msg: Envelope | null;
    let size: number;
    let refusal: SqliteError | null = null;
    try {
      msg = asEnvelope(decoder.decode(payload));
      size = payload.length + VALUE_BYTES * decoder.values;
    } catch (err) {
      if (!this.#handshaken || !((err as Error).cause instanceof TooManyValuesError)) throw err;
      // Well-formed as far as it was read, and read whole: only this request
      // is refused, in its turn, by a stand-in holding its op and id (and no
      // arguments, so that a cancel judges it as running nothing).
      msg = asEnvelope(decoder.head(payload, 2));
      msg?.push(null);
      size = 4 * VALUE_BYTES;
      refusal = tooManyValues(decoder.maxValues);
    }
    if (msg === null) {
      throw new SqliteError(
        ErrorCode.BadRequest,
        "Cannot read request: expected [op, id, ...args] with a numeric op and an integer id " +
          "from 1 to 4294967295 (2^32 − 1)",
      );
    }
    if (!this.#handshaken) return this.#onHello(msg);
    // Cancellation acts at receipt, ahead of the queue it is about (a
    // refused one, without its target, is dropped as any malformed cancel).
    if (msg[0] === Op.Cancel) return this.#cancel(msg, size);
    if (refusal !== null) (this.#refused ??= new WeakMap()).set(msg, refusal);
    if (this.#voidsAtEnd !== null) {
      (this.#voids ??= new Map()).set(msg, this.#voidsAtEnd);
      this.#voidsAtEnd = null;
    }
    this.#queue.push(msg);
    this.#sizes.push(size);
    this.#queuedBytes += size;
    if (this.#queuedRequests !== null) this.#queuedRequests.used += size;
    if (this.#queueFull()) this.#channel.pauseReading();
  }

  /**
   * True when this connection may read no more requests for now: it has
   * `MAX_QUEUED` waiting, or requests waiting while those of all connections
   * hold more bytes than `queuedRequests` allows. Requests cancelled before
   * they ran and not yet judged count as waiting: they are held only while a
   * request of the connection is queued or runs, so reading resumes when
   * those ran.
   */
  #queueFull(): boolean {
    const waiting = this.#queue.length - this.#head + this.#voidCount;
    if (waiting >= MAX_QUEUED) return true;
    const budget = this.#queuedRequests;
    return budget !== null && waiting > 0 && budget.used > budget.max;
  }

  /** The head request starts (or is answered at once): it leaves the queue. */
  #started(): void {
    this.#unqueued(this.#sizes[this.#head]);
    this.#queue[this.#head++] = undefined as unknown as Request;
  }

  #unqueued(bytes: number): void {
    this.#queuedBytes -= bytes;
    if (this.#queuedRequests !== null) this.#queuedRequests.used -= bytes;
  }

  /** Forgets every request not started (answered or abandoned by the caller). */
  #dropQueue(): void {
    if (this.#queuedRequests !== null) {
      this.#queuedRequests.used -= this.#queuedBytes + this.#voidBytes;
    }
    this.#queuedBytes = 0;
    this.#voidCount = 0;
    this.#voidBytes = 0;
    this.#queue = [];
    this.#sizes = [];
    this.#head = 0;
    this.#voids = null;
    this.#voidsAtEnd = null;
  }

  /**
   * Handles `cancel` (no reply of its own): a target still queued is removed
   * and answered `ABORTED`; the request now running (the head, waiting for
   * the writer) is handed to the engine to stop; anything else is ignored.
   * A target still queued, or never sent (the cancel carries it), ends the
   * open transaction when its turn would have come, should it have written
   * there ({@link #judge}). `size` is the cancel's frame bytes plus its
   * values' estimate, what a request never sent is charged until judged.
   */
  #cancel(msg: Request, size: number): void {
    let target: number;
    let unsent: Request | null;
    try {
      [target, unsent] = decodeRequest(msg).args as [number, Request | null];
    } catch {
      return; // A malformed cancel is dropped: it has no reply to carry an error.
    }
    if (unsent !== null) {
      this.#voidCount++;
      this.#voidBytes += size;
      if (this.#queuedRequests !== null) this.#queuedRequests.used += size;
      this.#voidBefore(undefined, [voidOf(unsent, size)]);
      if (this.#queueFull()) this.#channel.pauseReading();
      return;
    }
    const q = this.#queue;
    for (let i = this.#head; i < q.length; i++) {
      if (q[i][1] !== target) continue;
      if (i === this.#head && this.#inflight !== null) {
        // Running in the background: the engine stops it; its reply is the abort.
        // Should it finish first, having written in the transaction, it ends
        // the transaction when it is answered (#settle).
        this.#cancelledRunning = target;
        this.#engine.cancel(new AbortError(`Request ${target} was cancelled while it ran`));
        return;
      }
      // Queued, or at the head waiting for the writer: it never runs.
      if (i === this.#head && this.#blocked) this.#engine.stopWaiting();
      if (i === this.#head) this.#headStart = 0;
      const [dropped] = q.splice(i, 1);
      // Its bytes stay charged, as a void's, until it is judged.
      const bytes = this.#sizes.splice(i, 1)[0];
      this.#queuedBytes -= bytes;
      this.#voidCount++;
      this.#voidBytes += bytes;
      const before = this.#voids?.get(dropped);
      this.#voids?.delete(dropped);
      const dropping = voidOf(dropped, bytes);
      this.#voidBefore(q[i], before === undefined ? [dropping] : [...before, dropping]);
      const aborted = new AbortError(`Request ${target} was cancelled before it ran`);
      if (this.#engine.awaitingCommit) this.#hold(target, aborted);
      this.#replyError(target, aborted);
      this.#channel.flush();
      return;
    }
    // Answered already: a write it ran inside the open transaction ends it,
    // whichever engine ran it and however the race with the cancel went (the
    // client was told ABORTED, so none of the transaction may commit).
    if (this.#txWrites?.has(target) === true) this.#endTxForCancel(target);
  }

  /**
   * Notes requests cancelled before they ran (counted in {@link #voidCount}
   * already), to be judged when `next` (a queued request; `undefined`: none
   * yet) is dispatched; with no `next`, when the queue runs dry (at once if
   * nothing is queued or running).
   */
  #voidBefore(next: Request | undefined, voids: Void[]): void {
    if (next === undefined) {
      (this.#voidsAtEnd ??= []).push(...voids);
      this.#judgeAtEnd();
      return;
    }
    const map = this.#voids ??= new Map();
    const after = map.get(next);
    map.set(next, after === undefined ? voids : [...voids, ...after]);
  }

  /** Before `next` runs, judges the requests cancelled before they ran that preceded it. */
  #voided(next: Request): void {
    const voids = this.#voids?.get(next);
    if (voids === undefined) return;
    this.#voids!.delete(next);
    this.#judge(voids);
  }

  /**
   * Judges the requests cancelled before they ran that no queued request
   * follows, once their turn has come: nothing of this connection is queued
   * or running. (Nothing the client sent runs between then and the arrival
   * of its next request, so judging now is judging then; and a connection
   * that only sends such cancels keeps nothing of them.)
   */
  #judgeAtEnd(): void {
    const voids = this.#voidsAtEnd;
    if (voids === null || this.#head < this.#queue.length || this.#inflight !== null) return;
    this.#voidsAtEnd = null;
    this.#judge(voids);
  }

  /**
   * The requests cancelled before they ran take their turn, in order: the
   * first that would have written inside the open transaction (or may have:
   * with no way to tell, a statement counts) ends it, as a cancel of a write
   * that ran does. The client was told each was aborted, so none of the
   * transaction may commit. Their replies were sent (or, never sent, not
   * awaited); nothing of them runs. Their bytes are released.
   */
  #judge(voids: Void[]): void {
    let bytes = 0;
    for (const v of voids) bytes += v.bytes;
    this.#voidCount -= voids.length;
    this.#voidBytes -= bytes;
    if (this.#queuedRequests !== null) this.#queuedRequests.used -= bytes;
    if (this.#dead || this.#channel.closed) return;
    const engine = this.#engine;
    for (const { id, plan } of voids) {
      if (!engine.inTransaction) return;
      if (plan === null) continue;
      if (plan === MAY_WRITE) {
        // Sent without its SQL (too large for a frame): it may have written.
        this.#endTxForCancel(
          id,
          "was cancelled before it ran, and may have written inside the open transaction",
        );
        return;
      }
      if (engine.wouldWrite?.(plan) ?? true) {
        this.#endTxForCancel(
          id,
          "was cancelled before it ran, and would have written inside the open transaction",
        );
        return;
      }
    }
  }

  /**
   * Ends the open transaction because the client cancelled request `target`,
   * which wrote in it (or would have: `what` says which); returns the error
   * for `target`'s reply, or `null` when the transaction had ended meanwhile.
   */
  #endTxForCancel(
    target: number,
    what = "was cancelled after it wrote inside the open transaction",
  ): unknown {
    this.#txWrites = null;
    return this.#engine.cancelWrites?.(new AbortError(`Request ${target} ${what}`)) ?? null;
  }

  #onHello(msg: Request): void {
    const hello = decodeHello(msg);
    if (hello.version !== PROTOCOL_VERSION) {
      throw new ProtocolError(
        ErrorCode.ProtocolVersion,
        `Cannot start session: client speaks protocol ${hello.version}, ` +
          `server speaks ${PROTOCOL_VERSION}`,
      );
    }
    const refusal = this.#gate?.check(hello.token) ?? null;
    if (refusal !== null) {
      // Each reason its own throttled line: a count of wrong tokens (guesses)
      // does not include clients that sent none (misconfigured ones).
      const why = hello.token === undefined || hello.token === null
        ? "no token"
        : typeof hello.token === "string"
        ? "wrong token"
        : "a token that is not a string";
      this.#services.log.warnThrottled(
        `auth: ${why}`,
        `refused a connection from ${this.#peer}: ${why}`,
        1000,
        peerHost(this.#conn),
      );
      // No hello timeout while the refusal waits (AUTH_REFUSAL_DELAY_MS).
      this.#helloTimer?.clear();
      this.#helloTimer = undefined;
      throw new ProtocolError(ErrorCode.Auth, `Cannot start session: ${refusal}`);
    }
    this.#admin = hello.admin === true;
    const full = this.#services.admit?.(this) ?? null;
    if (full !== null) throw full;
    this.#handshaken = true;
    this.#stats?.admitted(this);
    this.#channel.maxFrameSize = this.#maxFrameSize;
    this.#channel.largeReads = true;
    this.#services.log.info(
      `connect: ${this.#admin ? "admin " : ""}session ${this.id} (${this.#peer})`,
    );
    this.#helloTimer?.clear();
    this.#encoder.append([msg[1], Status.Ok, { ...this.#hello, session: this.id }]);
  }

  /** Waits until this connection's next turn began, when it is waiting for one. */
  async #nextTurn(): Promise<void> {
    if (!this.#waitingTurn) return;
    await new Promise<void>((resolve) => this.#turnBegan = resolve);
  }

  /**
   * Ends this turn: the requests still queued run when the scheduler
   * ({@link turns}) gives this connection its next turn, after the
   * connections that waited before it and newly arrived requests (a timer,
   * as neither microtasks nor `setImmediate` let Deno poll sockets).
   */
  #yieldTurn(): void {
    this.#yieldMark = requestsStarted;
    this.#waitingTurn = true;
    turns.wait(this.#turnTaker);
  }

  /**
   * The scheduler's call: this connection's turn began. It runs for `ms`
   * (what is left of the round), or, `alone` in the queue, for its own turn,
   * which doubles while nobody else started a request since it yielded.
   */
  #takeTurn(ms: number, alone: boolean): void {
    this.#waitingTurn = false;
    this.#soloMs = alone && requestsStarted === this.#yieldMark
      ? Math.min(2 * this.#soloMs, MAX_TURN_MS)
      : TURN_MS;
    this.#grantedMs = alone ? this.#soloMs : Math.min(ms, TURN_MS);
    try {
      this.#pump();
    } finally {
      this.#grantedMs = null;
      const began = this.#turnBegan;
      this.#turnBegan = null;
      began?.();
    }
  }

  /**
   * Runs queued requests in order until one must wait, output backs up or
   * the turn has lasted {@link TURN_MS}.
   */
  #pump(): void {
    if (
      this.#pumping || this.#inflight !== null || this.#dead || this.#channel.closed ||
      this.#waitingTurn
    ) {
      if (!this.#pumping) this.#answeredAt = 0;
      return;
    }
    this.#pumping = true;
    try {
      const q = this.#queue;
      const turnStart = this.#head < q.length ? performance.now() : 0;
      // A turn at once (requests just arrived) is shorter while others wait.
      const turnMs = this.#grantedMs ?? Math.min(this.#soloMs, turns.inlineLeft);
      // With several requests waiting, the first half's replies are sent
      // once they are ready (-1: never early), the rest when the turn ends.
      const waiting = q.length - this.#head;
      let sendEarly = waiting < 2 ? -1 : waiting >> 1;
      // The head request waited for the writer (tried again now, it may be
      // answered without it: see below).
      let headWaited = this.#blocked;
      this.#blocked = false;
      while (this.#head < q.length && !this.#stopping) {
        // A request woken from the writer's line runs even past the bound on
        // replies: it started under it, and then waited. Held back, it would
        // lose its place in line (the engine skips a waiter that does not
        // take the writer when woken) to the writes queued behind it.
        const held = this.#encoder.size >= HIGH_WATER || this.#overUnsentBudget();
        if (held && !headWaited) break;
        if (this.#answeredAt - turnStart >= turnMs) {
          this.#yieldTurn();
          break;
        }
        const req = q[this.#head];
        requestsStarted++;
        noteWork(); // (background steps' forced timer turns: see _timer_turn.ts)
        // A request's turn begins when the one before it was answered (no
        // second clock read), or now when it is the first of this turn.
        if (this.#headStart === 0) this.#headStart = this.#answeredAt || performance.now();
        this.#writeMark = this.#engine.writeMark ?? 0;
        let result: unknown;
        try {
          result = this.#dispatch(req);
        } catch (err) {
          if (headWaited) this.#engine.stopWaiting();
          headWaited = false;
          this.#answeredOne(req, null, err);
          if (this.#engine.awaitingCommit) this.#hold(req[1] as number, err);
          this.#replyError(req[1] as number, err);
          this.#started();
          continue;
        }
        if (result === BLOCKED) {
          this.#blocked = true;
          this.#watchGone();
          break;
        }
        // A request that waited for the writer and is answered now (it took
        // the writer, or no longer needs it: TEMP tables it went through the
        // writer for are gone) no longer waits in the writer's line, where
        // it would keep its place and its busy timeout for the next write.
        if (headWaited) this.#engine.stopWaiting();
        headWaited = false;
        if (result instanceof Promise) {
          this.#inflight = this.#settle(req, result);
          break;
        }
        this.#started();
        this.#answeredOne(req, result, undefined);
        if (this.#engine.awaitingCommit) this.#hold(req[1] as number);
        this.#reply(req, result);
        if (--sendEarly === 0) this.#channel.flush();
      }
      if (this.#grantedMs === null && turnStart > 0 && this.#answeredAt > turnStart) {
        turns.charge(this.#answeredAt - turnStart);
      }
      if (this.#head === q.length) {
        q.length = 0;
        this.#sizes.length = 0;
        this.#head = 0;
        // Requests cancelled after every request received: their turn is now.
        if (this.#voidsAtEnd !== null && !this.#stopping) this.#judgeAtEnd();
      } else if (this.#head > 1024) {
        this.#queue = q.slice(this.#head);
        this.#sizes = this.#sizes.slice(this.#head);
        this.#head = 0;
      }
      if (this.#encoder.size < HIGH_WATER && !this.#queueFull()) {
        this.#channel.resumeReading();
      } else {
        this.#channel.pauseReading();
      }
      this.#watchPartialFrame();
    } finally {
      this.#pumping = false;
      this.#answeredAt = 0;
    }
    this.#countUnsent();
    this.#channel.flush();
  }

  /** Answers the head request once its background statement is done, then goes on. */
  async #settle(req: Request, result: Promise<unknown>): Promise<void> {
    let payload: unknown;
    let error: unknown = undefined;
    let failed = false;
    try {
      payload = await result;
    } catch (err) {
      failed = true;
      error = err;
    }
    this.#inflight = null;
    if (this.#dead || this.#channel.closed) return;
    if (this.#cancelledRunning === req[1]) {
      // Cancelled while it ran, but not stopped before it wrote (it finished
      // first): the write ends the transaction, as an interrupted one does.
      this.#cancelledRunning = 0;
      if (this.#engine.wroteInTransactionSince?.(this.#writeMark) === true) {
        const ended = this.#endTxForCancel(req[1] as number);
        if (ended !== null) {
          failed = true;
          error = keepRan(ended, error);
        }
      }
    }
    this.#started();
    this.#answeredOne(req, payload, failed ? error : undefined);
    if (failed) {
      if (this.#engine.awaitingCommit) this.#hold(req[1] as number, error);
      this.#replyError(req[1] as number, error);
    } else {
      if (this.#engine.awaitingCommit) this.#hold(req[1] as number);
      this.#reply(req, payload);
    }
    this.#pump();
  }

  /**
   * Counts an answered request (latency from the start of its turn), notes
   * the transaction's start, and logs timeouts and slow statements.
   */
  #answeredOne(req: Request, payload: unknown, error: unknown): void {
    const now = this.#answeredAt = performance.now();
    const ms = now - this.#headStart;
    this.#headStart = 0;
    this.#answered++;
    if (this.#engine.inTransaction) {
      if (this.#txEndedSinceReply) {
        // A script ended the transaction and began the one open now (`COMMIT;
        // BEGIN`): the writes of the one that ended are not this one's (a
        // late cancel of one of them must not end this one).
        this.#txWrites = null;
        this.#txSince = 0;
      }
      if (this.#txSince === 0) this.#txSince = now;
      if (this.#engine.wroteInTransactionSince?.(this.#writeMark) === true) {
        this.#noteTxWrite(req[1] as number);
      }
    } else {
      this.#txSince = 0;
      this.#txEnded = false;
      this.#txWrites = null;
    }
    if (this.#cursorIdleMs > 0) this.#noteCursor(req, payload, error, now);
    const stats = this.#stats;
    if (stats !== null) {
      stats.record(req[0], ms, now);
      if (error !== undefined) stats.errors++;
    }
    const { log, slowMs } = this.#services;
    if (slowMs > 0 && error === undefined) this.#notePrepared(req, payload);
    const logged = error !== undefined && this.#loggedError(req, error, ms);
    // At debug every request has its line, a slow one too (its slow line,
    // throttled, comes besides).
    if (log.enabled("debug")) {
      log.debug(`request: session ${this.id}, ${opName(req[0])}, ${ms.toFixed(3)} ms`);
    }
    if (!logged && slowMs > 0 && ms >= slowMs && typeof req[0] === "number" && req[0] < Op.Stats) {
      log.warnThrottled(
        "slow statement",
        `slow statement: session ${this.id}, ${opName(req[0])}, ` +
          describeSlow(req, payload, ms, this.#sqlOf(req)),
        SLOW_LOG_INTERVAL_MS,
      );
    }
  }

  /** Remembers that request `id` wrote inside the open transaction (the most recent ones). */
  #noteTxWrite(id: number): void {
    const ids = this.#txWrites ??= new Set();
    if (ids.size >= TX_WRITES_REMEMBERED) ids.delete(ids.values().next().value!);
    ids.add(id);
  }

  /**
   * Logs an error reply that an operator should see, each kind at most once a
   * second (one client cannot flood the log; the next line counts those held
   * back): `INTERNAL` and storage errors (a full disk, I/O errors, a damaged
   * file) at `error`, timeouts and failed maintenance at `warn`. True when it
   * logged the request (a timed-out request gets no slow line too).
   */
  #loggedError(req: Request, error: unknown, ms: number): boolean {
    const log = this.#services.log;
    const { code, message } = toWireError(error);
    if (code === ErrorCode.Internal) {
      log.logThrottled(
        "error",
        code,
        `internal error: session ${this.id}, ${opName(req[0])}: ${message}`,
      );
      return true;
    }
    if (TIMEOUT_CODES.has(code)) {
      log.warnThrottled(
        code,
        `timeout: session ${this.id}, ${opName(req[0])} after ${ms.toFixed(1)} ms: ${code}: ` +
          message,
      );
      return true;
    }
    if (MAINTENANCE_OPS.has(req[0] as OpCode)) {
      const what = opName(req[0]);
      log.warnThrottled(
        `${what} failed`,
        `${what} failed: session ${this.id}: ${code}: ${message}`,
      );
      return true;
    }
    const op = opName(req[0]);
    return this.#loggedStorageError(op, op, code, message);
  }

  /**
   * Logs a storage error (a full disk, an I/O error, a damaged file) of
   * `what` at `error`, each kind (`kind`, and the code) at most once a
   * second; true when `code` is one.
   */
  #loggedStorageError(kind: string, what: string, code: string, message: string): boolean {
    const storage = STORAGE_ERROR.exec(code);
    if (storage === null) return false;
    this.#services.log.logThrottled(
      "error",
      `storage ${kind} ${code}`,
      `storage error: session ${this.id}, ${what}: ${code}: ${message} ` +
        `(${STORAGE_HINT[code === SHM_FULL ? "FULL" : storage[1] as keyof typeof STORAGE_HINT]})`,
    );
    return true;
  }

  /**
   * Keeps when each open cursor was last advanced (only with
   * `cursorIdleTimeout`), and arms the timer that closes idle ones.
   */
  #noteCursor(req: Request, payload: unknown, error: unknown, now: number): void {
    const op = req[0];
    if (op !== Op.Iterate && op !== Op.Next && op !== Op.CloseCursor) return;
    const use = this.#cursorUse ??= new Map();
    if (op === Op.Iterate) {
      if (error !== undefined || !Array.isArray(payload)) return;
      use.set(payload[0] as number, now);
    } else {
      const id = req[2] as number;
      const done = error !== undefined || op === Op.CloseCursor ||
        (Array.isArray(payload) && payload[1] === true);
      if (done) use.delete(id);
      else if (use.has(id)) use.set(id, now);
    }
    if (use.size > 0 && this.#cursorTimer === undefined) this.#armCursorTimer(this.#cursorIdleMs);
  }

  #armCursorTimer(ms: number): void {
    this.#cursorTimer = new DeadlineTimer(
      () => {
        this.#cursorTimer = undefined;
        this.#closeIdleCursors();
      },
      ms,
      this.#cursorIdleMs,
    );
  }

  /**
   * Closes the cursors not advanced for `cursorIdleTimeout`, releasing their
   * read snapshots; re-arms for the next one due. A request running in the
   * background (maybe that cursor's `next`) defers the check a little.
   */
  #closeIdleCursors(): void {
    const use = this.#cursorUse;
    if (use === null || this.#dead || this.#channel.closed) return;
    const ms = this.#cursorIdleMs;
    if (this.#inflight !== null || this.#engine.awaitingCommit) {
      this.#armCursorTimer(Math.min(ms, 100));
      return;
    }
    const now = performance.now();
    let due = Infinity;
    for (const [id, at] of use) {
      if (now - at < ms) {
        due = Math.min(due, at + ms - now);
        continue;
      }
      use.delete(id);
      try {
        // (`idle`: one ended already, by its transaction's end, is left so,
        // and throws: that reason came first.)
        this.#engine.closeCursor(id, true);
      } catch {
        continue; // It ended already (its transaction ended): its next `next` says so.
      }
      const idled = this.#idled ??= new Set();
      if (idled.size >= IDLED_REMEMBERED) idled.delete(idled.values().next().value!);
      idled.add(id);
      this.#services.log.info(
        `cursor idle: session ${this.id}: cursor ${id} not advanced for ${ms} ms ` +
          "(--cursor-idle-timeout): closed",
      );
    }
    if (use.size > 0) this.#armCursorTimer(Math.max(1, Math.ceil(due)));
  }

  #idledError(id: number): SqliteError {
    return new SqliteError(
      ErrorCode.CursorClosed,
      `Cursor ${id} was closed: it was not advanced for ${this.#cursorIdleMs} ms ` +
        "(--cursor-idle-timeout), and its read snapshot released; open it again",
    );
  }

  /**
   * Remembers the SQL of prepared handles and of open cursors (only with
   * `--slow-ms`), for the slow-statement log.
   */
  #notePrepared(req: Request, payload: unknown): void {
    const op = req[0];
    if (op === Op.Prepare && Array.isArray(payload) && typeof req[2] === "string") {
      (this.#preparedSql ??= new Map()).set(payload[0] as number, req[2]);
    } else if (op === Op.Finalize && typeof req[2] === "number") {
      this.#preparedSql?.delete(req[2]);
    } else if (op === Op.Iterate && Array.isArray(payload)) {
      const sql = typeof req[2] === "string" ? req[2] : this.#preparedSql?.get(req[2] as number);
      if (sql === undefined) return;
      const cursors = this.#cursorSql ??= new Map();
      // Cursors read to their end are not closed by the client: keep the newest.
      if (cursors.size >= CURSOR_SQL_KEPT) cursors.delete(cursors.keys().next().value!);
      cursors.set(payload[0] as number, sql);
    } else if (op === Op.CloseCursor && typeof req[2] === "number") {
      this.#cursorSql?.delete(req[2]);
    }
  }

  /** The SQL a request names by number (a prepared handle, or a cursor for `next`), if known. */
  #sqlOf(req: Request): string | undefined {
    const [op, , arg] = req;
    if (typeof arg !== "number") return undefined;
    if (op === Op.Next || op === Op.CloseCursor) return this.#cursorSql?.get(arg);
    return op === Op.Query || op === Op.Run || op === Op.Iterate
      ? this.#preparedSql?.get(arg)
      : undefined;
  }

  /** Notes a reply that must wait for the group commit. */
  #hold(id: number, error?: unknown): void {
    const at = this.#encoder.size;
    if (this.#heldAt === -1) this.#heldAt = at;
    this.#held.push({ id, error, at });
  }

  /** Held writes became durable, or their group commit failed. */
  #onCommit(error: SqliteError | null): void {
    if (error !== null && this.#heldAt !== -1) {
      // (Replies held for it are not logged as they go out: their requests
      // were answered, as far as #loggedError knows.)
      const n = this.#held.length;
      this.#loggedStorageError(
        "group commit",
        `group commit (${n} write${n === 1 ? "" : "s"} of this session)`,
        error.code,
        error.message,
      );
      // Replace the held replies: successes become the commit's error, and
      // so do failures whose kept rows (OR FAIL) were lost with the group.
      this.#replaceHeld((h) => {
        // (A success counted as answered goes out as an error: count that too.)
        if (h.error === undefined && this.#stats !== null) this.#stats.errors++;
        this.#replyError(h.id, heldReplyError(h.error, error));
      });
    }
    this.#heldAt = -1;
    this.#held = [];
    const released = this.#released;
    this.#released = null;
    released?.();
    this.#feeds.pump(); // (events held back meanwhile)
    this.#pump();
  }

  /**
   * Answers each held reply anew with `answer` (which appends its one frame),
   * in place: frames appended among and after them that are not theirs (a
   * change feed's `LAGGED` end, appended whatever the room; a shutdown's
   * last frame) stay, in order.
   */
  #replaceHeld(answer: (h: { id: number; error?: unknown }) => void): void {
    const from = this.#heldAt;
    const tail = this.#encoder.cut(from);
    let at = 0; // in `tail`
    for (const h of this.#held) {
      const start = h.at - from;
      this.#encoder.appendFrames(tail.subarray(at, start));
      at = start + FRAME_HEADER_SIZE + readFrameLength(tail, start);
      answer(h);
    }
    this.#encoder.appendFrames(tail.subarray(at));
  }

  /** Waits until no reply is held for a group commit (it is imminent). */
  async #awaitCommit(): Promise<void> {
    while (this.#engine.awaitingCommit && !this.#channel.closed) {
      await new Promise<void>((resolve) => this.#released = resolve);
    }
  }

  /**
   * Runs one request. Each op's checked arguments ({@link DecodedRequest}) are
   * spread into the engine method whole, so none can be dropped on the way.
   */
  #dispatch(msg: Request): unknown {
    const s = this.#engine;
    if (this.#voids !== null) this.#voided(msg);
    if (this.#admin && !ADMIN_OPS.has(msg[0] as OpCode)) throw adminOnly(msg[0]);
    const refusal = this.#refused?.get(msg);
    if (refusal !== undefined) throw refusal;
    const req: DecodedRequest = decodeRequest(msg);
    // Behind a write of this session awaiting its group commit, the ops this
    // session answers itself wait for it, as the engine's requests do: held,
    // their reply would become the commit's error should it fail, though
    // what they did (a feed started or ended, a backup written) stands.
    if (s.awaitingCommit && WAIT_FOR_COMMIT.has(req.op)) return BLOCKED;
    switch (req.op) {
      case Op.Query:
        return s.query(...req.args);
      case Op.Run:
        return s.run(...req.args);
      case Op.Exec:
        return s.exec(...req.args);
      case Op.Batch:
        return s.batch(...req.args);
      case Op.Prepare:
        return s.prepare(...req.args);
      case Op.Finalize:
        return s.finalize(...req.args);
      case Op.Iterate:
        return s.openCursor(...req.args);
      case Op.Next:
        if (this.#idled?.has(req.args[0])) throw this.#idledError(req.args[0]);
        return s.nextCursor(...req.args);
      case Op.CloseCursor:
        if (this.#idled?.delete(req.args[0])) return null;
        return s.closeCursor(...req.args);
      case Op.Cancel:
        return null; // Handled at receipt; never queued.
      case Op.Stats:
        if (this.#stats === null) {
          throw new SqliteError(ErrorCode.BadRequest, "This server keeps no statistics");
        }
        return this.#stats.report();
      case Op.Checkpoint:
        return this.#logged(
          this.#maintain().checkpoint(s as EngineSession, ...req.args),
          "checkpoint",
        );
      case Op.Vacuum:
        return this.#logged(this.#maintain().vacuum(s as EngineSession, ...req.args), "vacuum");
      case Op.Integrity:
        return this.#logged(this.#maintain().integrity(), "integrity");
      case Op.Backup:
        return this.#logged(this.#maintain().backup(...req.args), "backup");
      case Op.Subscribe:
        return this.#feeds.subscribe(...req.args);
      case Op.Unsubscribe:
        return this.#feeds.unsubscribe(...req.args);
    }
  }

  /** The engine's maintenance, or the error saying this engine has none. */
  #maintain(): NonNullable<EngineLike["maintenance"]> {
    if (this.#maintenance === null) {
      throw new SqliteError(
        ErrorCode.BadRequest,
        "Maintenance requests (checkpoint, vacuum, integrity, backup) are not available in " +
          "cluster mode: dqlite replicates and snapshots the database itself",
      );
    }
    return this.#maintenance;
  }

  /** Logs (info) what a maintenance request did, once it is done. */
  #logged<T>(reply: T | Promise<T> | typeof BLOCKED, what: string): unknown {
    const log = this.#services.log;
    if (reply === BLOCKED || !log.enabled("info")) return reply;
    const note = (r: T) => {
      log.info(`${what}: session ${this.id}: ${JSON.stringify(r)}`);
      return r;
    };
    return reply instanceof Promise ? reply.then(note) : note(reply);
  }

  /**
   * Appends a success reply. A buffered result (`query`, `batch`) is held
   * to `maxResultBytes`, measured exactly as encoded; every reply is held to
   * `maxFrameSize`. The engine measures the rows of writes (RETURNING) and
   * of batches the same way before their changes stay (`RunLimits.reply`),
   * so this is their last guard only.
   */
  #reply(req: Request, payload: unknown): void {
    const id = req[1];
    const { maxResultBytes, maxFrameSize } = this.#hello.limits;
    const limited = RESULT_LIMITED_OPS.has(req[0] as OpCode) && maxResultBytes < maxFrameSize;
    const status = this.#status(Status.Ok);
    const limit = limited ? maxResultBytes : maxFrameSize;
    if (this.#encoder.append([id, status, payload], limit) !== -1) {
      this.#txEndsSent = this.#engine.txEnds ?? 0;
      return;
    }
    // Counted as answered already, it goes out as an error: count that too.
    if (this.#stats !== null) this.#stats.errors++;
    this.#replyError(
      id,
      limited
        ? this.#engine.resultTooLarge?.(maxResultBytes, req[0] === Op.Batch ? "batch" : "query") ??
          resultTooLarge(maxResultBytes)
        : req[0] === Op.Next
        ? this.#chunkTooLarge(req, payload as [unknown[] | Encoded, boolean], maxFrameSize)
        : replyTooLarge(maxFrameSize),
    );
  }

  /**
   * A cursor chunk too large for a frame: the cursor is closed (an error
   * ends the iteration, as with any other; the client's rows so far are
   * every row before the chunk), and the error says which rows. A chunk
   * stops before the row that would take it past its budget (`chunkBytesFor`
   * in engine/cursor.ts: at most a third of the frame, counting text as if
   * each character took three bytes), so a chunk that does not fit is one
   * row too large; the count of several rows is a last guard only.
   */
  #chunkTooLarge(
    req: Request,
    [rows]: [unknown[] | Encoded, boolean],
    maxFrameSize: number,
  ): SqliteError {
    const count = rows instanceof Encoded ? rows.count : rows.length;
    try {
      this.#engine.closeCursor(req[2] as number);
    } catch {
      // The chunk was the last one: the cursor is gone already.
    }
    return new SqliteError(
      ErrorCode.ResultTooLarge,
      count === 1
        ? `Cursor row exceeds maxFrameSize ${maxFrameSize} bytes: one row is larger than ` +
          "--max-frame-size allows, the cursor is closed (every row before it was sent); " +
          "select less of it (substr() on large values) or raise --max-frame-size"
        : `Cursor chunk of ${count} rows exceeds maxFrameSize ${maxFrameSize} bytes ` +
          "(each of its rows fits one): the cursor is closed; raise --max-frame-size",
    );
  }

  /**
   * A reply's status: `base`, with the transaction bit while one is open,
   * and `TxEnded` with it when an `exec` script ended a transaction since
   * the previous reply (and began the one open now: see `Status.TxEnded`).
   */
  #status(base: number): number {
    if (!this.#engine.inTransaction) return base;
    return base | Status.InTransaction | (this.#txEndedSinceReply ? Status.TxEnded : 0);
  }

  /** True when an `exec` script ended a transaction since the previous reply. */
  get #txEndedSinceReply(): boolean {
    return (this.#engine.txEnds ?? 0) !== this.#txEndsSent;
  }

  /** `txEnds` of the engine session as of the last reply sent (see {@link #status}). */
  #txEndsSent = 0;

  #replyError(id: number, err: unknown): void {
    const status = this.#status(Status.Error);
    this.#txEndsSent = this.#engine.txEnds ?? 0;
    const wire = toWireError(err);
    if (this.#encoder.append([id, status, wire]) !== -1) return;
    // Larger than a frame (it quotes a huge part of the request): cut, still answered.
    this.#encoder.append([id, status, shortWireError(wire)]);
  }

  /** Resolves whoever waits for the engine to wake this session ({@link #fatal}). */
  #wake(): void {
    const woken = this.#woken;
    this.#woken = null;
    woken?.();
  }

  /**
   * Waits, after a bad frame, until the engine wakes this session (which
   * pumped then: see the constructor): false then, true as soon as the
   * client is found gone altogether (checked at once, then every
   * {@link GONE_CHECK_MS}). The check cannot wait for the wake: a session
   * that does not take the writer when woken loses its place in line.
   */
  async #goneWhileBlocked(): Promise<boolean> {
    let woken = false;
    const wake = new Promise<void>((resolve) => this.#woken = resolve).then(() => woken = true);
    for (;;) {
      if (await this.#peerGone()) return true;
      if (woken) return false;
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([wake, new Promise<void>((r) => timer = setTimeout(r, GONE_CHECK_MS))]);
      clearTimeout(timer);
      if (woken) return false;
    }
  }

  /**
   * Answers a protocol violation with a connection-level error. Requests
   * that arrived before the bad frame run and are answered first, as they
   * would have been: one running in the background is waited for, one
   * waiting for the writer waits (up to the busy timeout), one behind
   * replies its client has not read yet waits for them to be written (up to
   * the write-stall timeout); nothing is sent after the error frame, and
   * no frame after the bad one is read (nor waited for: see
   * {@link FrameChannel.readLoop}). A client found gone altogether while a
   * write waits for the writer (see {@link #goneWhileBlocked}), or while a
   * request runs (see {@link #goneDuring}), is answered nothing more: what
   * runs is stopped and nothing that waited runs, as at its EOF.
   */
  async #fatal(err: unknown): Promise<void> {
    if (this.#channel.closed) return;
    this.#pump();
    while (this.#head < this.#queue.length && !this.#channel.closed && !this.#stopping) {
      if (this.#inflight !== null) {
        // A client gone altogether reads no reply: what runs is stopped (engine
        // close) and nothing else runs, as at its end of stream (see #finish).
        if (await this.#goneDuring(this.#inflight)) break;
      } else if (this.#waitingTurn) await this.#nextTurn();
      else if (this.#engine.awaitingCommit) await this.#awaitCommit();
      else if (this.#blocked) {
        if (await this.#goneWhileBlocked()) {
          this.#engine.stopWaiting();
          break;
        }
      } else if (this.#encoder.size >= HIGH_WATER || this.#overUnsentBudget()) {
        await this.#channel.drain();
      } else break;
      this.#pump();
    }
    this.#dead = true;
    if ((err as { code?: string }).code === ErrorCode.Auth) {
      await this.#refusalWait();
      if (this.#channel.closed) return;
    }
    await this.#awaitCommit();
    await this.#sendLast(this.#namedLimit(err));
  }

  /**
   * A `FRAME_TOO_LARGE` read error, naming the limit the frame met: the
   * bytes a client may send before its hello is accepted, or
   * `--max-frame-size` (the frame reader knows neither); other errors as
   * they are.
   */
  #namedLimit(err: unknown): unknown {
    if (!(err instanceof ProtocolError) || err.code !== ErrorCode.FrameTooLarge) return err;
    const which = this.#handshaken
      ? "(--max-frame-size)"
      : `(what a client may send before its hello is accepted; after it, ${this.#maxFrameSize})`;
    return new ProtocolError(err.code, `${err.message} ${which}`);
  }

  /** Waits {@link AUTH_REFUSAL_DELAY_MS}, or until the connection is closed (a shutdown). */
  async #refusalWait(): Promise<void> {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => this.#refusalWaitEnd?.(), AUTH_REFUSAL_DELAY_MS);
      this.#refusalWaitEnd = () => {
        clearTimeout(timer);
        this.#refusalWaitEnd = null;
        resolve();
      };
    });
  }

  /** Sends a connection-level error (`wire`: its payload) as the last frame, then closes. */
  async #sendLast(err: unknown, wire: WireError = toWireError(err)): Promise<void> {
    this.#dead = true;
    // Nothing follows this frame: no later frame is read, so none is answered
    // (a cancel's ABORTED) and none draws a second error (FRAME_TOO_LARGE).
    this.#channel.discardInput();
    this.#logClosing(err);
    if (this.#encoder.append([CONNECTION_ERROR_ID, Status.Error, wire]) === -1) {
      this.#encoder.append([CONNECTION_ERROR_ID, Status.Error, shortWireError(wire)]);
    }
    // A client that does not read gets one second, then the socket closes.
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.#channel.drain(),
      new Promise<void>((resolve) => timer = setTimeout(resolve, 1000)),
    ]);
    clearTimeout(timer);
    this.close();
  }
}

/** Connection-level errors the server's log does not repeat per connection. */
const NOT_LOGGED_HERE: ReadonlySet<string> = new Set([
  ErrorCode.ShuttingDown, // the server said it is shutting down
  ErrorCode.TooManyConnections, // counted and logged by the server, once a second
  ErrorCode.Auth, // logged where the token is refused
]);

/** The peer's host for a TCP connection (to count distinct peers), else `undefined`. */
/** The refusal of op `op` on an admin session: it runs only {@link ADMIN_OPS}. */
function adminOnly(op: unknown): SqliteError {
  const allowed = [...ADMIN_OPS].map(opName).join(", ");
  return new SqliteError(
    ErrorCode.Forbidden,
    `Cannot run ${opName(op)} on an admin session: admin sessions run only maintenance ` +
      `requests (${allowed}); open an ordinary connection for SQL`,
  );
}

function peerHost(conn: Deno.Conn): string | undefined {
  const a = conn.remoteAddr;
  return a.transport === "tcp" ? a.hostname : undefined;
}

/** Who is at the other end, for the log. */
function peerName(conn: Deno.Conn): string {
  const a = conn.remoteAddr;
  if (a.transport === "tcp" || a.transport === "udp") return `${a.hostname}:${a.port}`;
  return `a local process (${(conn.localAddr as Deno.UnixAddr).path ?? "unix socket"})`;
}

/** A slow request for the log: duration, rows, SQL (first 200 characters), never parameters. */
function describeSlow(req: Request, payload: unknown, ms: number, prepared?: string): string {
  const op = req[0];
  let rows = "";
  if (op === Op.Query && Array.isArray(payload)) {
    const r = payload[1] as unknown[] | Encoded;
    const n = r instanceof Encoded ? r.count : r.length;
    rows = n === 1 ? "1 row" : `${n} rows`;
  } else if (op === Op.Run && Array.isArray(payload)) rows = `${String(payload[0])} changed`;
  else if (op === Op.Batch && Array.isArray(payload)) {
    rows = payload.length === 1 ? "1 statement" : `${payload.length} statements`;
  }
  let sql: string;
  const arg = req[2];
  if (typeof arg === "string") sql = sqlForLog(arg);
  else if (prepared !== undefined) sql = sqlForLog(prepared);
  else if (typeof arg === "number") {
    sql = op === Op.Next || op === Op.CloseCursor
      ? `(cursor ${arg})`
      : `(prepared statement ${arg})`;
  } else if (op === Op.Batch && Array.isArray(arg)) {
    sql = sqlForLog(arg.map((i) => (Array.isArray(i) ? String(i[0]) : "")).join("; "));
  } else sql = `(op ${String(op)})`;
  return `${ms.toFixed(1)} ms${rows === "" ? "" : `, ${rows}`}: ${sql}`;
}

/** The error of a request refused for holding more than `limit` values. */
function tooManyValues(limit: number): SqliteError {
  return new SqliteError(
    ErrorCode.BadRequest,
    `Cannot run request: it holds more than ${limit} values (each array item, map key and map ` +
      "value counts, a byte array 8; the server's --max-request-values): split it, a batch into " +
      "several smaller batches",
  );
}

/**
 * SQL that may end a transaction: a statement of it begins with COMMIT, END
 * or RELEASE (conservative: a trigger body's `END` after a semicolon counts
 * too). An `END` elsewhere (`CASE ... END`) ends nothing: a long statement
 * with one, its client gone, is stopped as any other.
 */
function mayEndTx(sql: string): boolean {
  let found = false;
  let first = true;
  scan(sql, (t) => {
    if (t.kind === "semicolon") {
      first = true;
      return true;
    }
    if (first) found = t.kind === "word" && ENDS_TX.has(t.text);
    first = false;
    return !found;
  });
  return found;
}

const ENDS_TX = new Set(["commit", "end", "release"]);

/** Ops that run the client's SQL: a `cancel`'s `unsent` of one of them alone counts as a write. */
const SQL_OPS: ReadonlySet<number> = new Set([Op.Run, Op.Query, Op.Iterate, Op.Exec, Op.Batch]);

/** A cancelled request sent without its SQL: it counts as a write. */
const MAY_WRITE = "may write";

/**
 * A request cancelled before it ran (dropped from the queue, or never sent),
 * kept until judged (see `Session.#judge`) as what that needs: its id and
 * what it would run, not its parameters.
 */
interface Void {
  readonly id: number;
  /** Its SQL ({@link MAY_WRITE}: sent without it), or `null`: it runs none of the client's. */
  readonly plan: Planned | typeof MAY_WRITE | null;
  /** Its share of the queued-request bytes (`queuedRequests`) until judged. */
  readonly bytes: number;
}

/** `req`, cancelled before it ran, as kept until judged. */
function voidOf(req: Request, bytes: number): Void {
  const id = req[1] as number;
  if (req.length === 2 && SQL_OPS.has(req[0] as number)) return { id, plan: MAY_WRITE, bytes };
  return { id, plan: plannedOf(req), bytes };
}

/**
 * What request `req` would run, for the engine to tell whether it would
 * write (see `EngineSession.wouldWrite`), or `null` for one that runs no SQL
 * of the client's (or is malformed, and would have failed unrun).
 */
function plannedOf(req: Request): Planned | null {
  let decoded: DecodedRequest;
  try {
    decoded = decodeRequest(req);
  } catch {
    return null;
  }
  switch (decoded.op) {
    case Op.Run:
    case Op.Query:
    case Op.Iterate:
      return { statement: decoded.args[0] };
    case Op.Exec:
      return { script: decoded.args[0] };
    case Op.Batch:
      return { statements: decoded.args[0].map((item) => item[0]) };
    case Op.Next:
      return { cursor: decoded.args[0] };
    default:
      return null;
  }
}

/**
 * The reply of a script stopped by its cancel, which then ended the
 * transaction (`ended`, from `cancelWrites`): the statements the script ran
 * before it began that transaction (`stopped.ran`, see
 * `EngineSession#stoppedAfter`) stay applied, and the reply says so.
 */
function keepRan(ended: unknown, stopped: unknown): unknown {
  const ran = stopped instanceof AbortError ? stopped.ran ?? 0 : 0;
  if (ran === 0 || !(ended instanceof AbortError)) return ended;
  return new AbortError(
    `${ended.message} (the ${ran} statement(s) of the script before the BEGIN of that ` +
      "transaction ran and stay applied)",
    { cause: ended.cause, ran },
  );
}
