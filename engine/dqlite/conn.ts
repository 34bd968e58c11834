/**
 * One TCP connection to one dqlite node: the handshake, then strictly one
 * request at a time (dqlite serves a connection's requests in order and
 * refuses a second one while the first runs). A request answered by several
 * messages (a row set in parts) keeps the connection until its last part.
 *
 * A broken connection, or no answer within `requestTimeout`, closes the
 * connection and fails the request with {@link LeaderError} `LEADER_LOST`
 * (`maybeApplied` true once the request was sent: the node may have
 * committed it before it died).
 *
 * Between requests a read stays under way: dqlite sends nothing unsolicited,
 * so end of stream, an error or any byte while no request is out means the
 * node is gone (or broke the protocol), and the connection is closed at once
 * ({@link closed} turns true, {@link closedWhileIdle} says why). A request
 * then meets a closed connection before anything is sent: `LEADER_LOST` with
 * `maybeApplied` false, and its owner connects anew instead. The next
 * request's answer is read by that same read, so no byte is lost.
 *
 * A node that stops answering (hung, or behind a network that drops its
 * packets) is not seen by that read: the cluster's leader watch (see
 * `DqliteCluster`) then {@link DqliteConn.abandon}s its connections, which
 * fails a request waiting there with `LEADER_LOST` at once.
 *
 * @module
 */

import { ProtocolError } from "../../protocol/errors.ts";
import { DeadlineTimer } from "../deadline_timer.ts";
import { DqliteErrorCode, failureError, LeaderError } from "./errors.ts";
import {
  decodeHeader,
  decodeResponse,
  encodeHandshake,
  type Response,
  ResponseType,
  WORD,
} from "./wire.ts";

/** Options of {@link DqliteConn.connect}. */
export interface ConnOptions {
  /** Time allowed for the TCP connect, in ms. */
  connectTimeout: number;
  /** Time allowed between a request and each message of its answer, in ms. */
  requestTimeout: number;
  /** Largest message body accepted from the node, in bytes. */
  maxMessageBytes: number;
}

/** A received message: the decoded response and its body size. */
export interface Received {
  /** The decoded response. */
  response: Response;
  /** Body size in bytes. */
  bytes: number;
  /**
   * Set for a ROWS message past `maxMessageBytes` (a value of hundreds of
   * MiB): its body was read and discarded, `response` is rows with no
   * column and no row, whose `more` says whether messages of the row set
   * follow.
   */
  oversize?: true;
}

/** How a read ended: bytes (placed in the buffer), end of stream (null), or an error. */
type ReadEnd = { got: number | null } | { error: Error };

/** Splits `host:port`; IPv6 hosts in brackets (`[::1]:9001`). */
export function parseAddress(address: string): { hostname: string; port: number } {
  const m = /^\[?([^\]]*?)\]?:(\d{1,5})$/.exec(address);
  const port = m ? Number(m[2]) : NaN;
  if (!m || m[1] === "" || port < 1 || port > 65535) {
    throw new TypeError(`Invalid dqlite node address "${address}": expected host:port`);
  }
  return { hostname: m[1], port };
}

/** One connection to one dqlite node. */
export class DqliteConn {
  readonly #address: string;
  readonly #conn: Deno.TcpConn;
  readonly #options: ConnOptions;
  #buf = new Uint8Array(64 * 1024);
  #start = 0;
  #end = 0;
  #closed = false;
  /** Why the connection was found dead while idle, or null. */
  #idleDeath: string | null = null;
  #lock: Promise<void> = Promise.resolve();
  /** The read under way (into {@link #buf} at {@link #end}), or null. */
  #reading: Promise<ReadEnd> | null = null;
  /** True once a request was written since the last {@link #watch}: bytes are expected. */
  #asked = false;
  /** Callers inside {@link exclusive}, running or waiting. */
  #users = 0;
  /** Why {@link abandon} closed the connection, or null. */
  #abandoned: string | null = null;
  /** Called once, when the connection closes. */
  #onClose: (() => void) | null = null;

  private constructor(address: string, conn: Deno.TcpConn, options: ConnOptions) {
    this.#address = address;
    this.#conn = conn;
    this.#options = options;
  }

  /**
   * Connects to `address` (`host:port`) and sends the protocol version.
   * `signal` (besides `connectTimeout`) stops the TCP connect.
   *
   * @throws {LeaderError} `LEADER_LOST` (`maybeApplied` false) when the node cannot be reached.
   */
  static async connect(
    address: string,
    options: ConnOptions,
    signal?: AbortSignal,
  ): Promise<DqliteConn> {
    const { hostname, port } = parseAddress(address);
    let tcp: Deno.TcpConn;
    const stop = new AbortController();
    const timer = setTimeout(
      () => stop.abort(new Error(`no connection within ${options.connectTimeout} ms`)),
      options.connectTimeout,
    );
    const abort = (): void => stop.abort(signal!.reason);
    signal?.addEventListener("abort", abort);
    try {
      if (signal?.aborted) abort();
      tcp = await Deno.connect({ hostname, port, transport: "tcp", signal: stop.signal });
    } catch (cause) {
      throw new LeaderError(
        DqliteErrorCode.LeaderLost,
        `Cannot connect to dqlite node "${address}": ${(cause as Error).message}`,
        false,
        undefined,
        { cause },
      );
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", abort);
    }
    tcp.setNoDelay(true);
    const conn = new DqliteConn(address, tcp, options);
    await conn.#write(encodeHandshake(), false);
    conn.#watch();
    return conn;
  }

  /** The node's `host:port`. */
  get address(): string {
    return this.#address;
  }

  /**
   * True once closed: by {@link close}, after a failure, or when the node
   * closed it (or sent something unasked) while no request was out.
   */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Why the connection was closed while idle (no request out, so nothing
   * was lost with it), or null.
   */
  get closedWhileIdle(): string | null {
    return this.#idleDeath;
  }

  /**
   * True while no request uses the connection, nor waits for it (see
   * {@link exclusive}): closing it now loses nothing that was sent.
   */
  get idle(): boolean {
    return this.#users === 0;
  }

  /**
   * Runs `fn` with the connection to itself: requests from other callers wait.
   */
  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const previous = this.#lock;
    let release!: () => void;
    this.#lock = new Promise((resolve) => release = resolve);
    this.#users++;
    try {
      await previous;
      return await fn();
    } finally {
      this.#users--;
      this.#watch();
      release();
    }
  }

  /**
   * Sends one request and returns its (first) answer, waiting for it at
   * most `timeout` ms (default `requestTimeout`).
   */
  call(request: Uint8Array, timeout?: number): Promise<Received> {
    return this.exclusive(async () => {
      await this.send(request);
      return await this.receive(timeout);
    });
  }

  /**
   * Sends a request; call inside {@link exclusive}.
   *
   * @throws {LeaderError} `LEADER_LOST` when the connection is closed or breaks.
   */
  send(request: Uint8Array): Promise<void> {
    return this.#write(request, true);
  }

  async #write(bytes: Uint8Array, maybeApplied: boolean): Promise<void> {
    this.#checkOpen();
    if (maybeApplied) this.#asked = true;
    try {
      let off = 0;
      while (off < bytes.length) off += await this.#conn.write(bytes.subarray(off));
    } catch (cause) {
      throw this.#lost(`write failed: ${(cause as Error).message}`, maybeApplied, cause);
    }
  }

  /**
   * Reads the next message, waiting for it at most `timeout` ms (default
   * `requestTimeout`); call inside {@link exclusive}, after {@link send}.
   *
   * @throws {LeaderError} `LEADER_LOST` when the connection breaks or the node is silent.
   * @throws {ProtocolError} `DQLITE_PROTOCOL` for a malformed message (the connection is closed).
   */
  async receive(timeout = this.#options.requestTimeout): Promise<Received> {
    // (The request was sent: a connection closed since may have lost its answer.)
    if (this.#closed) throw this.#lost(this.#abandoned ?? "it was closed", true);
    let timer: DeadlineTimer | undefined;
    // (A DeadlineTimer: an answer that came while this server was stopped is read, not lost.)
    const late = new Promise<never>((_, reject) => {
      timer = new DeadlineTimer(() => {
        // (Not named `requestTimeout`: in cluster mode that reads as the client's option.)
        const what = timeout === this.#options.requestTimeout
          ? " (the longest the server waits for a dqlite node's reply)"
          : "";
        reject(this.#lost(`no answer within ${timeout} ms${what}`, true));
      }, timeout);
    });
    try {
      const header = decodeHeader(await Promise.race([this.#take(WORD), late]));
      const size = header.words * WORD;
      if (size > this.#options.maxMessageBytes && header.type === ResponseType.Rows) {
        // Read past it, keeping the connection in step (and a transaction on it): the caller
        // fails the query, and stops the row set when more follows.
        const marker = await Promise.race([this.#skip(size), late]);
        return {
          response: { type: "rows", columns: [], rows: [], more: marker[0] === 0xee },
          bytes: size,
          oversize: true,
        };
      }
      if (size > this.#options.maxMessageBytes) {
        this.close();
        throw new LeaderError(
          DqliteErrorCode.LeaderLost,
          `Message of ${size} bytes from "${this.#address}" exceeds maxMessageBytes ${this.#options.maxMessageBytes}`,
          true,
        );
      }
      const body = await Promise.race([this.#take(size), late]);
      try {
        return { response: decodeResponse(header.type, body), bytes: size };
      } catch (err) {
        if ((err as { code?: string }).code === DqliteErrorCode.Protocol) this.close();
        throw err;
      }
    } finally {
      timer?.clear();
    }
  }

  /** Consumes `n` bytes (at least a word) a MiB at a time; returns the last word. */
  async #skip(n: number): Promise<Uint8Array> {
    for (let left = n - WORD; left > 0;) {
      const k = Math.min(left, 1 << 20);
      await this.#take(k);
      left -= k;
    }
    return await this.#take(WORD);
  }

  /**
   * Reads until `n` bytes are buffered; returns a copy of them and consumes
   * them. A read already under way (the idle watch) is awaited first: its
   * bytes are the answer's first ones.
   */
  async #take(n: number): Promise<Uint8Array> {
    while (this.#end - this.#start < n) {
      if (this.#reading === null) {
        if (this.#buf.length - this.#start < n) {
          const next = new Uint8Array(Math.max(this.#buf.length, n * 2));
          next.set(this.#buf.subarray(this.#start, this.#end));
          this.#end -= this.#start;
          this.#start = 0;
          this.#buf = next;
        }
        this.#read();
      }
      const end = await this.#reading!;
      this.#reading = null;
      if (this.#abandoned !== null) throw this.#lost(this.#abandoned, true);
      if ("error" in end) {
        throw this.#lost(`read failed: ${end.error.message}`, true, end.error);
      }
      if (end.got === null) throw this.#lost("the node closed the connection", true);
      this.#end += end.got;
    }
    const out = this.#buf.slice(this.#start, this.#start + n);
    this.#start += n;
    if (this.#start === this.#end) this.#start = this.#end = 0;
    return out;
  }

  /** Starts a read into the buffer's free space; {@link #reading} is its end. */
  #read(): Promise<ReadEnd> {
    const reading = this.#conn.read(this.#buf.subarray(this.#end)).then(
      (got): ReadEnd => ({ got }),
      (error): ReadEnd => ({ error: error instanceof Error ? error : new Error(String(error)) }),
    );
    this.#reading = reading;
    return reading;
  }

  /**
   * Keeps a read under way while no request is out, so that the node's death
   * is seen before the next request is sent, not after. What that read gets
   * before a request is written can only mean a dead or broken connection:
   * it is closed. Once a request is written, the read is left to
   * {@link #take}, which reads the answer through it.
   */
  #watch(): void {
    if (this.#closed || this.#reading !== null) return;
    this.#asked = false;
    if (this.#start === this.#end) this.#start = this.#end = 0;
    if (this.#end === this.#buf.length) return; // unread bytes fill the buffer: left to #take
    const reading = this.#read();
    reading.then((end) => {
      if (this.#closed || this.#asked || this.#reading !== reading) return;
      this.#idleDeath = "error" in end
        ? `read failed while idle: ${end.error.message}`
        : end.got === null
        ? "the node closed it while idle"
        : `the node sent ${end.got} bytes unasked`;
      this.close();
    });
  }

  #checkOpen(): void {
    if (this.#closed) {
      const why = this.#idleDeath === null ? "" : `: ${this.#idleDeath}, nothing was sent`;
      throw new LeaderError(
        DqliteErrorCode.LeaderLost,
        `Connection to dqlite node "${this.#address}" is closed${why}`,
        false,
      );
    }
  }

  #lost(reason: string, maybeApplied: boolean, cause?: unknown): LeaderError {
    this.close();
    return new LeaderError(
      DqliteErrorCode.LeaderLost,
      `Connection to dqlite node "${this.#address}" lost: ${reason}`,
      maybeApplied,
      undefined,
      cause === undefined ? undefined : { cause },
    );
  }

  /**
   * Closes the connection because its node is taken for gone (`reason`:
   * it stopped answering and another node leads now): a request waiting
   * for its answer fails at once with `LEADER_LOST` (`maybeApplied` true)
   * naming `reason`; one not sent yet fails with `LEADER_LOST`
   * (`maybeApplied` false), and {@link closedWhileIdle} is `reason`.
   * Idempotent.
   */
  abandon(reason: string): void {
    if (this.#closed) return;
    this.#abandoned = reason;
    if (!this.#asked) this.#idleDeath = reason;
    this.close();
  }

  /** Calls `fn` once the connection is closed (at once if it is). */
  whenClosed(fn: () => void): void {
    if (this.#closed) fn();
    else this.#onClose = fn;
  }

  /** Closes the connection. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // Already closed by the peer.
    }
    const onClose = this.#onClose;
    this.#onClose = null;
    onClose?.();
  }
}

/**
 * Unwraps a response of the expected type.
 *
 * @throws {SqliteError} the node's FAILURE, as {@link failureError} builds it.
 * @throws {ProtocolError} `DQLITE_PROTOCOL` for a response of another type.
 */
export function expectResponse<T extends Response["type"]>(
  received: Received,
  type: T,
  address: string,
): Extract<Response, { type: T }> {
  const r = received.response;
  if (r.type === type) return r as Extract<Response, { type: T }>;
  if (r.type === "failure") throw failureError(r.code, r.message, address);
  throw new ProtocolError(
    DqliteErrorCode.Protocol,
    `Unexpected ${r.type} response from "${address}": expected ${type}`,
  );
}
