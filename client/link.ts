/**
 * One live client connection: sends typed requests (pipelined, coalesced
 * into one write per tick), matches replies to requests by id, enforces the
 * optional request timeout, sends `cancel` for aborted calls, and fails every
 * pending request when the connection ends.
 *
 * @module
 */

import { MessageDecoder, MessageEncoder } from "../protocol/codec.ts";
import {
  AbortError,
  ConnectionError,
  createError,
  ErrorCode,
  errorFromWire,
  ProtocolError,
  SqliteError,
  type WireError,
} from "../protocol/errors.ts";
import {
  CONNECTION_ERROR_ID,
  type HelloReply,
  type HelloRequest,
  Op,
  type OpCode,
  PROTOCOL_VERSION,
  type Replies,
  type Requests,
  Status,
} from "../protocol/messages.ts";
import { type Address, formatAddress } from "../transport/address.ts";
import type { ByteStream } from "../transport/byte_stream.ts";
import { FrameChannel } from "../transport/frame_channel.ts";
import { setTimeoutAfterStall } from "./_stall_grace.ts";

interface Pending {
  resolve(payload: unknown): void;
  reject(err: Error): void;
  deadline: number;
  done(): void;
  /** Its number among the requests sent ({@link Link.sent}). */
  seq: number;
  /** Bytes appended to the outbox before its frame (see {@link Link}'s `#appended`). */
  start: number;
}

/** Ops a client sends and awaits a reply for. */
export type ReplyOp = Exclude<OpCode, typeof Op.Cancel>;

/** A connected, framed request/reply channel to one server. */
export class Link {
  readonly #addr: Address;
  readonly #encoder: MessageEncoder;
  readonly #decoder = new MessageDecoder();
  readonly #channel: FrameChannel;
  readonly #pending = new Map<number, Pending>();
  readonly #requestTimeout: number;
  /** Resolves when the connection has ended and every request was failed. */
  readonly ended: Promise<void>;
  /** Disarms the armed timer (request timeout, or the wait after a failed write). */
  #disarmTimer: (() => void) | undefined;
  /** Largest request payload sent: ours until the handshake, then the server's too. */
  #sendLimit: number;
  /** Whose limit `#sendLimit` is, for messages: the server's, or the client's own option. */
  #sendLimitIsServers = false;
  #nextId = 1;
  #flushQueued = false;
  #inTransaction = false;
  #failure: ConnectionError | null = null;
  /** Set by {@link cancelPending}: an `ABORTED` reply then means the client closed. */
  #closing: string | null = null;
  /** Called once no request is pending (see {@link cancelPending}). */
  #drained: (() => void) | null = null;
  /** Id of the request a shutting-down server stopped without a reply (it may have run), else 0. */
  #running = 0;
  /** Id of the hello request until its reply arrived, else 0. */
  #helloId = 0;
  /** The hello carried a token (said when the peer turns out to speak TLS). */
  #helloToken = false;
  /** True once a frame was read whole (so a later oversized header is no first reply). */
  #framed = false;
  /** Bytes appended to the outbox since the link opened. */
  #appended = 0;
  /** Bytes the connection accepted (written) since the link opened. */
  #written = 0;
  /**
   * The first failed write, or `null`. Reading goes on after it, so that the
   * frames the server sent before it closed (its `SHUTTING_DOWN`) are read.
   */
  #writeError: Error | null = null;
  /**
   * Requests given up by their signal (rejected with `AbortError`, a
   * `cancel` sent) whose reply has not come yet, by id. The server may have
   * run one before it read the `cancel`: its reply, when it comes, still
   * tells whether a transaction is open (a `BEGIN` that ran), and a cursor
   * it opened (an `iterate`) is closed then, as nobody will read or close it.
   * They count in {@link pending}: the connection is not idle before the
   * server is done with them.
   */
  readonly #abandoned = new Map<number, { op: ReplyOp; seq: number; deadline: number }>();
  /** The errors saying a call may have run that requests here were rejected with (see {@link raised}). */
  readonly #mayHaveRun = new WeakSet<ConnectionError>();
  /**
   * Checked when a reply reports an open transaction: an error returned
   * fails that request and closes the link (the server rolls back), so no
   * later request runs inside a transaction nobody owns.
   */
  guard: (() => Error | null) | null = null;
  /** Called when the last pending request was answered (or aborted). */
  onIdle: (() => void) | null = null;
  /** Receives change-feed event frames (`[0, Status.Event, payload]`). */
  onEvent: ((payload: unknown) => void) | null = null;

  /**
   * @param conn A fresh connection.
   * @param addr Its address, for messages.
   * @param maxFrameSize Largest frame accepted.
   * @param requestTimeout ms without a reply before the link is closed; 0 = none.
   */
  constructor(conn: ByteStream, addr: Address, maxFrameSize: number, requestTimeout: number) {
    this.#addr = addr;
    this.#requestTimeout = requestTimeout;
    this.#encoder = new MessageEncoder(maxFrameSize);
    this.#sendLimit = maxFrameSize;
    this.#channel = new FrameChannel(this.#counted(conn), maxFrameSize, this.#encoder, {
      onFrame: (payload) => this.#onFrame(payload),
      onReadEnd: () => {},
      onDrain: () => {},
    });
    this.ended = this.#channel.readLoop().then(
      () => this.fail(new ConnectionError(`Connection to ${formatAddress(addr)} was closed`)),
      (err) => this.fail(err),
    );
  }

  /**
   * `conn` as the channel uses it: written bytes are counted, and a failed
   * write does not end the link at once. A peer that closed (a server
   * shutting down) makes the next write fail (EPIPE) while the frames it sent
   * before closing still wait to be read: closing the connection then would
   * drop them, its `SHUTTING_DOWN` frame included, and with it the word that
   * requests without a reply did not run. So the link stops writing and reads
   * on until the stream ends (within {@link WRITE_FAILED_READ_MS}).
   */
  #counted(conn: ByteStream): ByteStream {
    return {
      read: (buffer) => conn.read(buffer),
      write: async (bytes) => {
        if (this.#writeError === null) {
          try {
            const n = await conn.write(bytes);
            this.#written += n;
            return n;
          } catch (err) {
            this.#writeFailed(err as Error);
          }
        }
        return bytes.length; // Dropped: requests not written fail as not sent.
      },
      close: () => conn.close(),
    };
  }

  #writeFailed(err: Error): void {
    this.#writeError = err;
    if (this.#failure !== null) return;
    this.#disarmTimer?.();
    this.#disarmTimer = setTimeoutAfterStall(() => {
      this.#disarmTimer = undefined;
      this.fail(err);
    }, WRITE_FAILED_READ_MS);
  }

  /** Appends a frame to the outbox; returns its payload size, or -1 (see `MessageEncoder.append`). */
  #append(message: unknown[], limit?: number): number {
    const before = this.#encoder.size;
    const size = this.#encoder.append(message, limit);
    this.#appended += this.#encoder.size - before;
    return size;
  }

  /**
   * True when `err` is the `ConnectionError` a request sent on this link
   * was rejected with, saying the call may have run (`mayHaveRun`): the
   * same object, as the client's calls pass it on (see `withCallerFrames`).
   */
  raised(err: unknown): boolean {
    return err instanceof ConnectionError && this.#mayHaveRun.has(err);
  }

  /** Why the link ended, or `null` while it is up. */
  get failure(): ConnectionError | null {
    return this.#failure;
  }

  /** Whether the server reported an open transaction in its last reply. */
  get inTransaction(): boolean {
    return this.#inTransaction;
  }

  /** Requests sent so far. */
  get sent(): number {
    return this.#sent;
  }

  /**
   * The number (in {@link sent}) of the request whose reply first showed
   * the transaction open now; 0 when none is open.
   */
  get txOpenedBy(): number {
    return this.#txOpenedBy;
  }

  #sent = 0;
  #txOpenedBy = 0;

  /** Requests sent and not answered yet. */
  get pending(): number {
    return this.#pending.size + this.#abandoned.size;
  }

  /**
   * Performs the handshake, presenting `token` when given.
   *
   * @param token The server's secret, or `null`.
   * @param options `admin: true` asks for an admin session (see
   *   `HelloRequest.admin`): it runs only statistics and maintenance requests,
   *   and may take a slot the server keeps for admin sessions when it is full.
   * @throws {ProtocolError} `PROTOCOL_VERSION` on a version mismatch or when
   *   the peer speaks another protocol (TLS, HTTP, ...), `AUTH`
   *   when the server refuses the token, `TOO_MANY_CONNECTIONS` when it is full.
   * @throws {ConnectionError} when the connection fails.
   */
  async hello(
    token: string | null = null,
    options: { admin?: boolean } = {},
  ): Promise<HelloReply> {
    const opts: HelloRequest = { version: PROTOCOL_VERSION };
    if (token !== null) opts.token = token;
    this.#helloToken = token !== null;
    if (options.admin === true) opts.admin = true;
    this.#helloId = this.#nextId;
    try {
      const info = await this.request(Op.Hello, [opts]);
      const serverMax = info?.limits?.maxFrameSize;
      if (Number.isInteger(serverMax) && serverMax > 0) {
        // A request the server would refuse by closing the connection fails here instead.
        if (serverMax <= this.#sendLimit) {
          this.#sendLimit = serverMax;
          this.#sendLimitIsServers = true;
        }
      }
      return info;
    } catch (err) {
      const cause = (err as Error).cause;
      if (
        !this.#framed && cause instanceof ProtocolError && cause.code === ErrorCode.FrameTooLarge
      ) {
        // The first frame header of the reply announced an impossible length:
        // the peer is no netsqlite server (a netsqlite error frame is small).
        const header = announcedHeader(cause);
        if (header !== null) throw this.#notNetsqlite(header, cause);
      }
      throw cause instanceof ProtocolError ? this.#refused(cause) : err;
    } finally {
      this.#helloId = 0;
    }
  }

  /**
   * The server's refusal of the hello (`AUTH`, `TOO_MANY_CONNECTIONS`, a
   * protocol version, ...) naming the server's address, as the other connect
   * errors do, with its code kept; a wrong token says where it comes from.
   */
  #refused(err: ProtocolError): ProtocolError {
    const m = /^Cannot start (admin )?session: /.exec(err.message);
    if (m === null) return err;
    let detail = err.message.slice(m[0].length);
    if (err.code === ErrorCode.Auth && !detail.includes("connect({ token })")) {
      detail += ": check the token given in connect({ token })";
    }
    return new ProtocolError(
      err.code,
      `Cannot start ${m[1] ?? ""}session on ${formatAddress(this.#addr)}: ${detail}`,
      { cause: err },
    );
  }

  /**
   * The error for a peer whose first reply is not a netsqlite frame
   * (`header`: its first bytes).
   */
  #notNetsqlite(header: Uint8Array, cause: Error): ProtocolError {
    const where = `Cannot connect to ${formatAddress(this.#addr)}`;
    if ((header[0] === 0x15 || header[0] === 0x16) && header[1] === 0x03) {
      // A TLS record (alert 0x15 or handshake 0x16, version 0x03 ...). The
      // hello, token included, went out in plain before the reply came.
      const exposed = this.#helloToken
        ? "; the token was sent in clear text before the server's reply: treat it as exposed " +
          "and rotate it"
        : "";
      return new ProtocolError(
        ErrorCode.ProtocolVersion,
        `${where}: the server speaks TLS: pass tls: { caCerts } (CLI: --tls-ca)${exposed}`,
        { cause },
      );
    }
    return new ProtocolError(
      ErrorCode.ProtocolVersion,
      `${where}: the peer does not speak the netsqlite protocol: its first reply is not a ` +
        `hello reply (it begins with ${showBytes(header)})`,
      { cause },
    );
  }

  /**
   * Why a request was refused before sending: which limit (the server's, or
   * the client's own `maxFrameSize` option), its size, that nothing was sent,
   * and what to do.
   */
  #tooLargeMessage(): string {
    const limit = this.#sendLimit;
    const whose = this.#sendLimitIsServers
      ? `the server's maxFrameSize (${limit} bytes)`
      : `this client's maxFrameSize (${limit} bytes, a connect() option)`;
    const raise = this.#sendLimitIsServers
      ? "start the server with a larger --max-frame-size"
      : "connect with a larger maxFrameSize";
    return `Request exceeds ${whose}: nothing was sent; send less in one call ` +
      `(smaller values or fewer statements), or ${raise}`;
  }

  /**
   * Sends `[op, id, ...args]` and resolves with the reply payload.
   *
   * @param signal Aborting it rejects at once with `AbortError` and sends `cancel`.
   * @throws {SqliteError} the server's error.
   * @throws {ProtocolError} `FRAME_TOO_LARGE` when the request exceeds the
   *   server's `maxFrameSize` (nothing is sent; the connection stays usable).
   * @throws {ConnectionError} when the connection is or gets lost, or
   *   `REQUEST_TIMEOUT` closes it.
   * @throws {AbortError} when `signal` aborts first.
   */
  request<O extends ReplyOp>(op: O, args: Requests[O], signal?: AbortSignal): Promise<Replies[O]> {
    if (this.#failure !== null) return Promise.reject(unsentError(this.#failure));
    if (signal?.aborted) return this.#unsent(op, args, signal);
    const id = this.#nextId;
    this.#nextId = id === 0xffffffff ? 1 : id + 1;
    const start = this.#appended;
    let size: number;
    try {
      size = this.#append([op, id, ...args], this.#sendLimit);
    } catch (err) {
      return Promise.reject(
        new SqliteError(ErrorCode.BadRequest, `Cannot encode request: ${(err as Error).message}`),
      );
    }
    if (size === -1) {
      return Promise.reject(
        createError(ErrorCode.FrameTooLarge, this.#tooLargeMessage()),
      );
    }
    const promise = new Promise<Replies[O]>((resolve, reject) => {
      const deadline = this.#requestTimeout > 0 ? performance.now() + this.#requestTimeout : 0;
      let done = (): void => {};
      if (signal !== undefined) {
        const onAbort = (): void => {
          const p = this.#pending.get(id);
          if (p !== undefined) {
            this.#pending.delete(id);
            done();
            this.#abandoned.set(id, { op, seq: p.seq, deadline: p.deadline });
            reject(aborted(signal));
            this.#send([Op.Cancel, this.#takeId(), id]);
          }
        };
        signal.addEventListener("abort", onAbort, { once: true });
        done = () => signal.removeEventListener("abort", onAbort);
      }
      this.#pending.set(id, {
        resolve: resolve as (p: unknown) => void,
        reject,
        deadline,
        done,
        seq: ++this.#sent,
        start,
      });
    });
    if (
      this.#requestTimeout > 0 && this.#disarmTimer === undefined && this.#writeError === null
    ) this.#armTimer(this.#requestTimeout);
    this.#flush();
    return promise;
  }

  /**
   * Rejects a call whose signal aborted before it was sent. When the server
   * may be inside a transaction once it reads on (one is open, or requests
   * are pending), the call goes out inside a `cancel` of its own: it never
   * runs, and should it have written inside the open transaction, the
   * server ends that transaction (the caller was told it was aborted, so
   * nothing of the transaction may commit, as for a write cancelled once sent).
   */
  #unsent<O extends ReplyOp>(op: O, args: Requests[O], signal: AbortSignal): Promise<never> {
    if (this.#inTransaction || this.pending > 0) {
      const target = this.#takeId();
      const id = this.#takeId();
      // Within the server's maxFrameSize, as any request (a larger frame makes it close the
      // connection, shared with other callers): the whole request, else its SQL without
      // parameters (all the server judges by), else the op alone, which it counts as a write.
      for (const unsent of [[op, ...args], withoutParams(op, args), [op]]) {
        if (unsent === null) continue;
        let size: number;
        try {
          size = this.#append([Op.Cancel, id, target, unsent], this.#sendLimit);
        } catch {
          continue; // A parameter that cannot be encoded: the next form leaves it out.
        }
        if (size !== -1) {
          this.#flush();
          break;
        }
      }
    }
    return Promise.reject(aborted(signal));
  }

  /**
   * Before the client closes the link: sends `cancel` for every pending
   * request, so that one the server has not started (queued, or waiting for
   * the writer) never runs and is answered at once; waits for the replies
   * at most `ms` ms. A request cancelled so rejects with `ConnectionError`
   * `message` saying it did not run; one that ran gets its own reply.
   */
  async cancelPending(message: string, ms: number): Promise<void> {
    if (this.#failure !== null || this.#pending.size === 0) return;
    this.#closing = message;
    for (const id of this.#pending.keys()) {
      if (id !== this.#helloId) this.#send([Op.Cancel, this.#takeId(), id]);
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      new Promise<void>((resolve) => this.#drained = resolve),
      new Promise<void>((resolve) => timer = setTimeout(resolve, ms)),
      this.ended,
    ]);
    clearTimeout(timer);
    this.#drained = null;
  }

  /**
   * Ends the link, failing pending requests: each with `err` (a
   * `ConnectionError` made of it) saying that the call was sent and may or
   * may not have run (`mayHaveRun`), or with `sent(err)` when given; the
   * hello with `err` saying that no request was sent, and requests of which
   * no byte was written (a write failed first) saying that the call was not
   * sent. When none of them may have run and a transaction was open, their
   * messages add that it was rolled back. Later requests fail with `err`
   * saying the call was not sent. Idempotent.
   */
  fail(err: unknown, sent: (base: ConnectionError) => ConnectionError = sentError): void {
    if (this.#failure === null) {
      this.#failure = err instanceof ConnectionError ? err : new ConnectionError(
        `Connection to ${formatAddress(this.#addr)} failed: ${(err as Error).message}`,
        { cause: err },
      );
    }
    this.#disarmTimer?.();
    this.#disarmTimer = undefined;
    this.#channel.close();
    const failure = this.#failure!;
    // One error per call (withCallerFrames adds each caller's frames to its own).
    const errors: [Pending, ConnectionError][] = [];
    for (const [id, p] of this.#pending) {
      p.done();
      errors.push([
        p,
        id === this.#helloId
          ? unsentError(failure, "no request was sent")
          : id === this.#running
          ? sentError(failure, true)
          : this.#writeError !== null && p.start >= this.#written
          // Not a byte of it reached the connection: the server cannot have run it.
          ? unsentError(failure)
          : sent(failure),
      ]);
    }
    this.#pending.clear();
    this.#abandoned.clear();
    // None of them ran, and the connection is gone: so is its transaction.
    const rolledBack = this.#inTransaction && errors.every(([, e]) => !e.mayHaveRun);
    for (const [p, e] of errors) this.#reject(p, rolledBack ? rolledBackError(e) : e);
    this.onIdle?.();
  }

  /** Rejects `p` with `err`, noting one that says the call may have run (see {@link raised}). */
  #reject(p: Pending, err: Error): void {
    if (err instanceof ConnectionError && err.mayHaveRun) this.#mayHaveRun.add(err);
    p.reject(err);
  }

  #takeId(): number {
    const id = this.#nextId;
    this.#nextId = id === 0xffffffff ? 1 : id + 1;
    return id;
  }

  /** Sends a message that gets no reply (e.g. `cancel`). */
  #send(message: unknown[]): void {
    if (this.#failure !== null) return;
    if (this.#append(message) !== -1) this.#flush();
  }

  #flush(): void {
    if (this.#pending.size <= 1 && !this.#channel.writing) {
      // Nothing else in flight: send at once rather than a microtask later.
      this.#channel.flush();
    } else if (!this.#flushQueued) {
      // Requests issued together leave in one write.
      this.#flushQueued = true;
      queueMicrotask(() => {
        this.#flushQueued = false;
        this.#channel.flush();
      });
    }
  }

  #onFrame(payload: Uint8Array): void {
    this.#framed = true;
    let reply: [number, number, unknown] | undefined;
    try {
      reply = this.#decoder.decode(payload) as [number, number, unknown];
    } catch (err) {
      if (this.#helloId === 0) throw err;
    }
    const wellFormed = Array.isArray(reply) && typeof reply[0] === "number" &&
      typeof reply[1] === "number";
    if (this.#helloId !== 0 && (!wellFormed || !this.#pending.has(reply![0]))) {
      // Before the hello reply, only it or a connection-level error can come.
      if (!wellFormed || reply![0] !== CONNECTION_ERROR_ID) {
        const header = new Uint8Array(8);
        new DataView(header.buffer).setUint32(0, payload.length);
        header.set(payload.subarray(0, 4), 4);
        throw this.#notNetsqlite(
          header.subarray(0, 4 + Math.min(4, payload.length)),
          new Error("Unexpected first reply"),
        );
      }
    }
    if (!wellFormed) {
      throw new ConnectionError("Cannot read reply: expected [id, status, payload]");
    }
    const [id, status, body] = reply!;
    if (id === CONNECTION_ERROR_ID && (status & Status.Event) !== 0) {
      this.onEvent?.(body);
      return;
    }
    if (id === CONNECTION_ERROR_ID) {
      const running = (body as WireError | null)?.running;
      if (typeof running === "number") this.#running = running;
      const cause = errorFromWire(body as WireError);
      if (cause instanceof ProtocolError) throw cause;
      throw new ConnectionError(`Server closed the connection: ${cause.message}`, { cause });
    }
    const pending = this.#pending.get(id);
    const abandoned = pending === undefined ? this.#abandoned.get(id) : undefined;
    if (pending !== undefined) {
      this.#pending.delete(id);
      pending.done();
    } else if (abandoned !== undefined) {
      // Its caller was told it was aborted; what it did to the transaction state still counts.
      this.#abandoned.delete(id);
    } else return;
    const was = this.#inTransaction;
    this.#inTransaction = (status & Status.InTransaction) !== 0;
    if (!this.#inTransaction) this.#txOpenedBy = 0;
    // Opened by this request, or ended and begun again by its script (`COMMIT; BEGIN`).
    else if (!was || (status & Status.TxEnded) !== 0) {
      this.#txOpenedBy = (pending ?? abandoned)!.seq;
    }
    const refused = this.#inTransaction ? this.guard?.() ?? null : null;
    if (refused !== null) {
      if (pending !== undefined) this.#reject(pending, refused);
      throw new ConnectionError(`Connection closed: ${refused.message}`, { cause: refused });
    }
    if (pending === undefined) {
      if (abandoned!.op === Op.Iterate) this.#closeAbandoned(status, body);
    } else if ((status & Status.Error) !== 0) {
      const err = errorFromWire(body as WireError);
      if (this.#closing !== null && err instanceof AbortError) {
        // The server says how much of it ran: `ran` statements of a script stay applied, and
        // (cluster mode) the one it stopped may have been applied all the same.
        this.#reject(
          pending,
          err.mayHaveRun
            ? new ConnectionError(`${this.#closing}: ${err.message}`, {
              cause: err,
              mayHaveRun: true,
            })
            : (err.ran ?? 0) > 0
            ? new ConnectionError(
              `${this.#closing}: the call was stopped after ${err.ran} statement(s) of its ` +
                "script ran, which stay applied",
              { cause: err, mayHaveRun: true },
            )
            : new ConnectionError(`${this.#closing}: the call was cancelled and did not run`, {
              cause: err,
            }),
        );
      } else this.#reject(pending, err);
    } else pending.resolve(body);
    if (this.#pending.size === 0) {
      this.#drained?.();
      if (this.#abandoned.size === 0) this.onIdle?.();
    }
  }

  /**
   * The reply to an `iterate` whose caller gave up (see {@link #abandoned}):
   * closes the cursor it opened, which would otherwise stay open on the server
   * (a read snapshot held, and one of its `maxCursors`) until its cursor idle timeout.
   */
  #closeAbandoned(status: number, body: unknown): void {
    if ((status & Status.Error) !== 0 || !Array.isArray(body)) return;
    const cursor = body[0];
    if (typeof cursor === "number" && cursor !== 0) {
      this.request(Op.CloseCursor, [cursor]).catch(() => {});
    }
  }

  /**
   * Checks the oldest pending request; requests are answered in order. A
   * timer that fires late (this process did not run meanwhile: SIGSTOP, a
   * debugger, a long synchronous task) first gives a grace in which the
   * replies that arrived meanwhile are read (client/_stall_grace.ts): without
   * it, a reply the server sent in time was taken for none, the call failed
   * with `REQUEST_TIMEOUT` ("it may have run") and the connection was closed,
   * its transaction rolled back.
   */
  #armTimer(ms: number): void {
    this.#disarmTimer = setTimeoutAfterStall(
      () => {
        this.#disarmTimer = undefined;
        const oldest = this.#oldestDeadline();
        if (oldest === null) return;
        const left = oldest - performance.now();
        if (left > 0) {
          this.#armTimer(left);
          return;
        }
        this.#timeOut().catch(() => {});
      },
      ms,
      this.#requestTimeout,
    );
  }

  /**
   * The deadline of the oldest request without a reply, one given up by its
   * signal included (the connection is not idle before it is answered, see
   * {@link #abandoned}); `null` when none is out.
   */
  #oldestDeadline(): number | null {
    const pending = this.#pending.values().next().value;
    if (pending === undefined && this.#abandoned.size === 0) return null;
    let oldest = pending?.deadline ?? Infinity;
    // (Given up in any order, not in the order sent: the first is not the oldest.)
    for (const a of this.#abandoned.values()) oldest = Math.min(oldest, a.deadline);
    return oldest;
  }

  /**
   * Closes the link after a request timeout. First sends `cancel` for every
   * request in flight, without waiting for replies: a server that is slow
   * or stopped (SIGSTOP) reads the cancels before the end of the stream and
   * drops the requests it has not started, so a retry of one of them does
   * not run twice. A request it had started may still run.
   */
  async #timeOut(): Promise<void> {
    if (this.#failure !== null) return;
    const base = new ConnectionError(
      `No reply from ${formatAddress(this.#addr)} within ${this.#requestTimeout} ms ` +
        "(requestTimeout): the connection was closed, and any transaction open on it will be " +
        "rolled back by the server",
      { code: ErrorCode.RequestTimeout },
    );
    // From now on nothing else is sent: a request made meanwhile fails unsent.
    this.#failure = base;
    let queued = false;
    for (const id of this.#pending.keys()) {
      if (id !== this.#helloId && this.#append([Op.Cancel, this.#takeId(), id]) !== -1) {
        queued = true;
      }
    }
    if (queued) {
      // Written at once into an idle socket's buffer; a write stuck behind a
      // full buffer (a stopped server) is given up after CANCEL_WRITE_MS.
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        this.#channel.drain(),
        new Promise<void>((resolve) => timer = setTimeout(resolve, CANCEL_WRITE_MS)),
      ]);
      clearTimeout(timer);
    }
    this.fail(base, (failure) =>
      new ConnectionError(
        `${failure.message} (the call was cancelled, but if the server had already started it, ` +
          "it may have run)",
        { code: failure.code, cause: failure.cause, mayHaveRun: true },
      ));
  }
}

/**
 * After a write failed (the peer closed), how long the link reads on for the
 * frames the peer sent before closing, in ms; the stream normally ends at once.
 */
const WRITE_FAILED_READ_MS = 1000;

/** How long a request timeout waits for its `cancel` frames to be written, in ms. */
const CANCEL_WRITE_MS = 50;

/**
 * The error of a call sent on a link that ended (`failure`) before its
 * answer came: it may or may not have run, unless the server said, as it
 * closed the connection, that such calls did not run (`SHUTTING_DOWN`),
 * except the one it names as still `running`.
 */
export function sentError(failure: ConnectionError, running = false): ConnectionError {
  const cause = failure.cause;
  if (!running && cause instanceof SqliteError && cause.code === ErrorCode.ShuttingDown) {
    // "Server is shutting down: requests without a reply were not run, or were stopped and undone"
    return new ConnectionError(failure.message, { code: failure.code, cause, mayHaveRun: false });
  }
  return new ConnectionError(`${failure.message} (the call was sent: it may or may not have run)`, {
    code: failure.code,
    cause: failure.cause,
    mayHaveRun: true,
  });
}

/**
 * `err` (of a call that did not run) noting that the transaction open on
 * the connection, which ended, was rolled back with it.
 */
function rolledBackError(err: ConnectionError): ConnectionError {
  return new ConnectionError(
    `${err.message}; the transaction open on the connection was rolled back: nothing of it ` +
      "stays applied",
    { code: err.code, cause: err.cause, mayHaveRun: false },
  );
}

/**
 * The error of a call not sent because its link ended (`failure`): it did
 * not run.
 */
export function unsentError(
  failure: ConnectionError,
  note = "the call was not sent",
): ConnectionError {
  return new ConnectionError(`${failure.message} (${note})`, {
    code: failure.code,
    cause: failure.cause,
    mayHaveRun: false,
  });
}

/**
 * Rejects with `AbortError` as soon as `signal` aborts, for a call still
 * waiting for a connection (nothing was sent yet, so nothing is cancelled).
 */
export function abortable<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return p;
  if (signal.aborted) {
    p.catch(() => {});
    return Promise.reject(aborted(signal));
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => {
      p.catch(() => {});
      reject(aborted(signal));
    };
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/**
 * The arguments of a call waiting for a connection (`args`), for its request
 * once one comes ({@link HeldArgs.take}). Should `signal` abort first, the
 * call never runs (its request goes out at most inside a `cancel`, where the
 * server judges it by its SQL or handle alone), so its parameters are let go
 * at once rather than kept, with the bytes copied for them, for as long as
 * the pool makes it wait (with no `acquireTimeout`, until a connection frees).
 */
export function heldArgs<O extends ReplyOp>(
  op: O,
  args: Requests[O],
  signal: AbortSignal | undefined,
): HeldArgs<O> {
  if (signal === undefined) return keptArgs(args);
  // (No closure here names `args`: it would keep them.)
  let held = args;
  const drop = (): void => {
    held = withoutParamValues(op, held);
  };
  if (signal.aborted) drop();
  else signal.addEventListener("abort", drop, { once: true });
  return {
    take: () => {
      signal.removeEventListener("abort", drop);
      return held;
    },
  };
}

/** `args` as they are, for a call without a signal. */
function keptArgs<O extends ReplyOp>(args: Requests[O]): HeldArgs<O> {
  return { take: () => args };
}

/** See {@link heldArgs}. */
export interface HeldArgs<O extends ReplyOp> {
  /** The arguments to send; stops watching the signal. */
  take(): Requests[O];
}

/** `args` with no parameter values (`null`: none), for a request that will not run. */
function withoutParamValues<O extends ReplyOp>(op: O, args: Requests[O]): Requests[O] {
  switch (op) {
    case Op.Run:
    case Op.Query:
    case Op.Iterate:
      return [args[0], null, args[2]] as unknown as Requests[O];
    case Op.Batch: {
      const [items, options] = args as Requests[typeof Op.Batch];
      return [items.map(([sql]) => [sql, null]), options] as unknown as Requests[O];
    }
    default:
      return args;
  }
}

/**
 * Request `[op, ...args]` without its parameters, for a `cancel` to carry
 * ({@link Link}'s `#unsent`): the SQL of a statement call or of each batch
 * item; `null` for an op that has none to leave out.
 */
function withoutParams(op: ReplyOp, args: readonly unknown[]): unknown[] | null {
  switch (op) {
    case Op.Run:
    case Op.Query:
    case Op.Iterate:
      return [op, args[0]];
    case Op.Batch:
      return [op, (args[0] as readonly (readonly unknown[])[]).map((item) => [item[0]])];
    default:
      return null;
  }
}

function aborted(signal: AbortSignal): AbortError {
  return new AbortError("Call was aborted by its signal", { cause: signal.reason });
}

/**
 * The 4 header bytes behind a `FRAME_TOO_LARGE` from the frame reader
 * (recovered from the announced length in its message), or `null` when the
 * error came from elsewhere.
 */
function announcedHeader(err: ProtocolError): Uint8Array | null {
  const match = /^Cannot read frame: length (\d+) exceeds/.exec(err.message);
  if (match === null) return null;
  const length = Number(match[1]);
  if (!Number.isSafeInteger(length) || length > 0xffffffff) return null;
  const header = new Uint8Array(4);
  new DataView(header.buffer).setUint32(0, length);
  return header;
}

/** `"HTTP"` for printable bytes, else hex (`0x16 0x03 ...`). */
function showBytes(bytes: Uint8Array): string {
  const printable = bytes.length > 0 && bytes.every((b) => b >= 0x20 && b < 0x7f);
  if (printable) return `"${String.fromCharCode(...bytes)}"`;
  return [...bytes].map((b) => `0x${b.toString(16).padStart(2, "0")}`).join(" ");
}
