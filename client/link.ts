/**
 * One live client connection: sends requests (pipelined, coalesced into one
 * write per tick), matches replies to requests by id, enforces the optional
 * request timeout, and fails every pending request when the connection ends.
 *
 * @module
 */

import { MessageDecoder, MessageEncoder } from "../protocol/codec.ts";
import {
  ConnectionError,
  ErrorCode,
  errorFromWire,
  ProtocolError,
  SqliteError,
  type WireError,
} from "../protocol/errors.ts";
import {
  CONNECTION_ERROR_ID,
  type HelloReply,
  Op,
  PROTOCOL_VERSION,
  Status,
} from "../protocol/messages.ts";
import { invalidParamsMessage } from "../protocol/values.ts";
import { type Address, formatAddress } from "../transport/address.ts";
import { FrameChannel } from "../transport/frame_channel.ts";

interface Pending {
  resolve(payload: unknown): void;
  reject(err: Error): void;
  deadline: number;
}

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
  #timer: ReturnType<typeof setTimeout> | undefined;
  #nextId = 1;
  #flushQueued = false;
  #inTransaction = false;
  #failure: Error | null = null;

  /**
   * @param conn A fresh connection.
   * @param addr Its address, for messages.
   * @param maxFrameSize Largest frame accepted.
   * @param requestTimeout ms without a reply before the link is closed; 0 = none.
   */
  constructor(conn: Deno.Conn, addr: Address, maxFrameSize: number, requestTimeout: number) {
    this.#addr = addr;
    this.#requestTimeout = requestTimeout;
    this.#encoder = new MessageEncoder(maxFrameSize);
    this.#channel = new FrameChannel(conn, maxFrameSize, this.#encoder, {
      onFrame: (payload) => this.#onFrame(payload),
      onReadEnd: () => {},
      onDrain: () => {},
    });
    this.ended = this.#channel.readLoop().then(
      () => this.fail(new ConnectionError(`Connection to ${formatAddress(addr)} was closed`)),
      (err) => this.fail(err),
    );
  }

  /** Why the link ended, or `null` while it is up. */
  get failure(): Error | null {
    return this.#failure;
  }

  /** Whether the server reported an open transaction in its last reply. */
  get inTransaction(): boolean {
    return this.#inTransaction;
  }

  /**
   * Performs the handshake, presenting `token` when given.
   *
   * @throws {ProtocolError} `PROTOCOL_VERSION` on a version mismatch, `AUTH`
   *   when the server refuses the token.
   * @throws {ConnectionError} when the connection fails.
   */
  async hello(token: string | null = null): Promise<HelloReply> {
    const opts = token === null
      ? { version: PROTOCOL_VERSION }
      : { version: PROTOCOL_VERSION, token };
    try {
      return await this.request(Op.Hello, opts) as HelloReply;
    } catch (err) {
      const cause = (err as Error).cause;
      throw cause instanceof ProtocolError ? cause : err;
    }
  }

  /**
   * Sends `[op, id, ...args]` and resolves with the reply payload.
   *
   * @throws {SqliteError} the server's error, `INVALID_PARAM` for parameters
   *   that cannot be stored exactly (checked before sending).
   * @throws {ConnectionError} when the connection is or gets lost.
   */
  request(op: number, a: unknown, b?: unknown, c?: unknown): Promise<unknown> {
    if (this.#failure !== null) return Promise.reject(this.#failure);
    if (b !== undefined && b !== null) {
      const problem = invalidParamsMessage(b);
      if (problem !== undefined) {
        return Promise.reject(new SqliteError(ErrorCode.InvalidParam, problem));
      }
    }
    const id = this.#nextId;
    this.#nextId = id === 0xffffffff ? 1 : id + 1;
    let size: number;
    try {
      size = this.#encoder.append(
        c !== undefined
          ? [op, id, a, b ?? null, c]
          : b !== undefined
          ? [op, id, a, b]
          : [op, id, a],
      );
    } catch (err) {
      return Promise.reject(
        new SqliteError(ErrorCode.BadRequest, `Cannot encode request: ${(err as Error).message}`),
      );
    }
    if (size === -1) {
      return Promise.reject(
        new SqliteError(ErrorCode.FrameTooLarge, "Request exceeds the server's maxFrameSize"),
      );
    }
    const promise = new Promise<unknown>((resolve, reject) => {
      const deadline = this.#requestTimeout > 0 ? performance.now() + this.#requestTimeout : 0;
      this.#pending.set(id, { resolve, reject, deadline });
    });
    if (this.#requestTimeout > 0 && this.#timer === undefined) this.#armTimer(this.#requestTimeout);
    if (this.#pending.size === 1 && !this.#channel.writing) {
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
    return promise;
  }

  /** Ends the link, failing pending requests with `err`. Idempotent. */
  fail(err: unknown): void {
    if (this.#failure === null) {
      this.#failure = err instanceof ConnectionError ? err : new ConnectionError(
        `Connection to ${formatAddress(this.#addr)} failed: ${(err as Error).message}`,
        { cause: err, code: (err as { code?: string }).code },
      );
    }
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#channel.close();
    const failure = this.#failure;
    for (const p of this.#pending.values()) p.reject(failure);
    this.#pending.clear();
  }

  #onFrame(payload: Uint8Array): void {
    const reply = this.#decoder.decode(payload) as [number, number, unknown];
    if (!Array.isArray(reply) || typeof reply[0] !== "number" || typeof reply[1] !== "number") {
      throw new ProtocolError(
        ErrorCode.BadRequest,
        "Cannot read reply: expected [id, status, payload]",
      );
    }
    const [id, status, body] = reply;
    if (id === CONNECTION_ERROR_ID) {
      const wire = body as WireError;
      throw new ProtocolError(String(wire?.code), `Server closed the connection: ${wire?.message}`);
    }
    const pending = this.#pending.get(id);
    if (pending === undefined) return;
    this.#pending.delete(id);
    this.#inTransaction = (status & Status.InTransaction) !== 0;
    if ((status & Status.Error) !== 0) pending.reject(errorFromWire(body as WireError));
    else pending.resolve(body);
  }

  /** Checks the oldest pending request; requests are answered in order. */
  #armTimer(ms: number): void {
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      const oldest = this.#pending.values().next().value;
      if (oldest === undefined) return;
      const left = oldest.deadline - performance.now();
      if (left > 0) {
        this.#armTimer(left);
        return;
      }
      const timeout = new SqliteError(
        ErrorCode.RequestTimeout,
        `No reply from ${formatAddress(this.#addr)} within ${this.#requestTimeout} ms ` +
          "(requestTimeout): the connection was closed, and any transaction on it rolled back",
      );
      oldest.reject(timeout);
      this.fail(
        new ConnectionError(
          `Connection closed after a request timed out (${this.#requestTimeout} ms)`,
          {
            code: ErrorCode.RequestTimeout,
          },
        ),
      );
    }, ms);
  }
}
