/**
 * One client connection on the server: frames in, requests validated and run
 * in order on an {@link EngineSession}, replies gathered and written out.
 *
 * Backpressure: while more than `HIGH_WATER` bytes of replies wait for a slow
 * reader, or `MAX_QUEUED` requests wait to run, the session stops reading
 * from its socket, so a client that never reads cannot make the server
 * buffer without bound.
 *
 * @module
 */

import { MessageDecoder, MessageEncoder } from "../protocol/codec.ts";
import { ErrorCode, ProtocolError, SqliteError, type WireError } from "../protocol/errors.ts";
import {
  type CallOptions,
  CONNECTION_ERROR_ID,
  type HelloReply,
  Op,
  PROTOCOL_VERSION,
  Status,
} from "../protocol/messages.ts";
import { resultTooLarge } from "../engine/run.ts";
import { BLOCKED, type Engine, type EngineSession } from "../engine/engine.ts";
import { FrameChannel } from "../transport/frame_channel.ts";
import type { TokenGate } from "./auth.ts";

const HIGH_WATER = 4 * 1024 * 1024;
const MAX_QUEUED = 4096;

type Request = unknown[];

/** Serves one client connection. */
export class Session {
  readonly #channel: FrameChannel;
  readonly #encoder: MessageEncoder;
  /** Decoding is synchronous, so every session shares one decoder. */
  static readonly #decoder = new MessageDecoder();
  readonly #engine: EngineSession;
  readonly #hello: HelloReply;
  readonly #gate: TokenGate | null;
  readonly #peer: string;
  #queue: Request[] = [];
  #head = 0;
  #handshaken = false;
  #pumping = false;
  #frameTimer: ReturnType<typeof setTimeout> | undefined;
  #helloTimer: ReturnType<typeof setTimeout> | undefined;
  /** Set after a protocol violation: nothing more is run or sent. */
  #dead = false;
  /** True while the head request waits for the writer. */
  #blocked = false;
  /** Settles when the head request, running in the background, is answered. */
  #inflight: Promise<void> | null = null;
  /** Encoder size before the replies held for a group commit, and those replies. */
  #heldAt = -1;
  #held: { id: number; error?: unknown }[] = [];
  /** Resolved when held replies are released (see #awaitCommit). */
  #released: (() => void) | null = null;

  /**
   * @param conn The accepted connection.
   * @param engine The engine to run requests on.
   * @param hello The handshake reply to send.
   * @param gate Checks the token of the hello; `null` when none is required.
   */
  constructor(conn: Deno.Conn, engine: Engine, hello: HelloReply, gate: TokenGate | null = null) {
    this.#gate = gate;
    this.#peer = peerName(conn);
    const max = hello.limits.maxFrameSize;
    this.#encoder = new MessageEncoder(max);
    this.#hello = hello;
    this.#engine = engine.openSession(
      () => this.#pump(),
      (error) => this.#onCommit(error),
    );
    // Replies wait while a write of this session waits for its group commit.
    const encoder = this.#encoder;
    const session = this.#engine;
    const outbox = {
      get size(): number {
        return session.awaitingCommit ? 0 : encoder.size;
      },
      take: (): Uint8Array => encoder.take(),
    };
    const helloMs = hello.limits.frameTimeout;
    this.#helloTimer = setTimeout(() => {
      this.#helloTimer = undefined;
      this.#sendLast(
        new ProtocolError(
          ErrorCode.FrameTimeout,
          `Closing connection: no hello within ${helloMs} ms (--frame-timeout)`,
        ),
      );
    }, helloMs);
    this.#channel = new FrameChannel(conn, max, outbox, {
      onFrame: (payload) => this.#onFrame(payload),
      onReadEnd: () => {
        this.#watchPartialFrame();
        this.#pump();
      },
      onDrain: () => this.#pump(),
    });
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
    while (!this.#channel.closed) {
      this.#pump();
      if (this.#inflight !== null) {
        await this.#inflight;
        continue;
      }
      await this.#awaitCommit();
      await this.#channel.drain();
      if (this.#head >= this.#queue.length || this.#blocked) return;
    }
  }

  /** Closes the connection and rolls back its transaction. Idempotent. */
  close(): void {
    clearTimeout(this.#frameTimer);
    clearTimeout(this.#helloTimer);
    this.#dead = true;
    this.#released?.();
    this.#engine.close();
    this.#channel.close();
    this.#queue = [];
    this.#head = 0;
  }

  /** Closes a connection that stalls inside a frame for `frameTimeout` ms. */
  #watchPartialFrame(): void {
    // While reading is paused by our own backpressure the client is not at fault.
    if (!this.#channel.partial || this.#channel.paused) {
      clearTimeout(this.#frameTimer);
      this.#frameTimer = undefined;
    } else if (this.#frameTimer === undefined) {
      const ms = this.#hello.limits.frameTimeout;
      this.#frameTimer = setTimeout(() => {
        this.#frameTimer = undefined;
        if (!this.#channel.partial || this.#dead) return;
        this.#sendLast(
          new ProtocolError(
            ErrorCode.FrameTimeout,
            `Closing connection: a frame stayed incomplete for ${ms} ms (--frame-timeout)`,
          ),
        );
      }, ms);
    }
  }

  #onFrame(payload: Uint8Array): void {
    const msg = Session.#decoder.decode(payload);
    if (!Array.isArray(msg) || typeof msg[0] !== "number" || !isId(msg[1])) {
      throw new ProtocolError(
        ErrorCode.BadRequest,
        "Cannot read request: expected [op, id, ...args] with a positive integer id",
      );
    }
    if (!this.#handshaken) return this.#onHello(msg);
    this.#queue.push(msg);
    if (this.#queue.length - this.#head >= MAX_QUEUED) this.#channel.pauseReading();
  }

  #onHello(msg: Request): void {
    const opts = msg[2] as { version?: unknown; token?: unknown } | undefined;
    if (msg[0] !== Op.Hello || typeof opts !== "object" || opts === null) {
      throw new ProtocolError(
        ErrorCode.BadRequest,
        "Cannot start session: first request must be hello",
      );
    }
    if (typeof opts.version !== "number") {
      throw new ProtocolError(
        ErrorCode.BadRequest,
        "Cannot start session: hello must carry {version: number}",
      );
    }
    if (opts.version !== PROTOCOL_VERSION) {
      throw new ProtocolError(
        ErrorCode.ProtocolVersion,
        `Cannot start session: client speaks protocol ${opts.version}, ` +
          `server speaks ${PROTOCOL_VERSION}`,
      );
    }
    const refusal = this.#gate?.check(opts.token) ?? null;
    if (refusal !== null) {
      console.error(`netsqlite: refused a connection from ${this.#peer}: ${refusal}`);
      throw new ProtocolError(ErrorCode.Auth, `Cannot start session: ${refusal}`);
    }
    this.#handshaken = true;
    clearTimeout(this.#helloTimer);
    this.#encoder.append([msg[1], Status.Ok, this.#hello]);
  }

  /** Runs queued requests in order until one must wait or output backs up. */
  #pump(): void {
    if (this.#pumping || this.#inflight !== null || this.#dead || this.#channel.closed) return;
    this.#pumping = true;
    try {
      const q = this.#queue;
      this.#blocked = false;
      while (this.#head < q.length) {
        if (this.#encoder.size >= HIGH_WATER) break;
        const req = q[this.#head];
        const limit = req[0] === Op.Query ? this.#hello.limits.maxResultBytes : undefined;
        let result: unknown;
        try {
          result = this.#dispatch(req);
        } catch (err) {
          if (this.#engine.awaitingCommit) this.#hold(req[1] as number, err);
          this.#replyError(req[1] as number, err);
          q[this.#head++] = undefined as unknown as Request;
          continue;
        }
        if (result === BLOCKED) {
          this.#blocked = true;
          break;
        }
        if (result instanceof Promise) {
          this.#inflight = this.#settle(req, result, limit);
          break;
        }
        q[this.#head++] = undefined as unknown as Request;
        if (this.#engine.awaitingCommit) this.#hold(req[1] as number);
        this.#reply(req[1] as number, result, limit);
      }
      if (this.#head === q.length) {
        q.length = 0;
        this.#head = 0;
      } else if (this.#head > 1024) {
        this.#queue = q.slice(this.#head);
        this.#head = 0;
      }
      if (this.#encoder.size < HIGH_WATER && this.#queue.length - this.#head < MAX_QUEUED) {
        this.#channel.resumeReading();
      } else {
        this.#channel.pauseReading();
      }
      this.#watchPartialFrame();
    } finally {
      this.#pumping = false;
    }
    this.#channel.flush();
  }

  /** Answers the head request once its background statement is done, then goes on. */
  async #settle(req: Request, result: Promise<unknown>, limit: number | undefined): Promise<void> {
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
    this.#queue[this.#head++] = undefined as unknown as Request;
    if (failed) {
      if (this.#engine.awaitingCommit) this.#hold(req[1] as number, error);
      this.#replyError(req[1] as number, error);
    } else {
      if (this.#engine.awaitingCommit) this.#hold(req[1] as number);
      this.#reply(req[1] as number, payload, limit);
    }
    this.#pump();
  }

  /** Notes a reply that must wait for the group commit. */
  #hold(id: number, error?: unknown): void {
    if (this.#heldAt === -1) this.#heldAt = this.#encoder.size;
    this.#held.push({ id, error });
  }

  /** Held writes became durable, or their group commit failed. */
  #onCommit(error: SqliteError | null): void {
    if (error !== null && this.#heldAt !== -1) {
      // Replace the held replies: successes become the commit's error.
      this.#encoder.truncate(this.#heldAt);
      for (const h of this.#held) this.#replyError(h.id, h.error ?? error);
    }
    this.#heldAt = -1;
    this.#held = [];
    const released = this.#released;
    this.#released = null;
    released?.();
    this.#pump();
  }

  /** Waits until no reply is held for a group commit (it is imminent). */
  async #awaitCommit(): Promise<void> {
    while (this.#engine.awaitingCommit && !this.#channel.closed) {
      await new Promise<void>((resolve) => this.#released = resolve);
    }
  }

  #dispatch(req: Request): unknown {
    const s = this.#engine;
    switch (req[0]) {
      case Op.Query:
        return s.query(sqlOrHandle(req[2]), params(req[3]), timeoutOf(req[4]));
      case Op.Run:
        return s.run(sqlOrHandle(req[2]), params(req[3]), timeoutOf(req[4]));
      case Op.Exec:
        return s.exec(sqlText(req[2]));
      case Op.Batch:
        return s.batch(batchItems(req[2]));
      case Op.Prepare:
        return s.prepare(sqlText(req[2]));
      case Op.Finalize:
        return s.finalize(handle(req[2]));
      case Op.Iterate:
        return s.openCursor(sqlOrHandle(req[2]), params(req[3]), timeoutOf(req[4]));
      case Op.Next:
        return s.nextCursor(handle(req[2]));
      case Op.CloseCursor:
        return s.closeCursor(handle(req[2]));
      default:
        throw badRequest(`Unknown op ${String(req[0])}`);
    }
  }

  #reply(id: number, payload: unknown, limit?: number): void {
    const status = this.#engine.inTransaction ? Status.InTransaction : Status.Ok;
    if (this.#encoder.append([id, status, payload], limit) !== -1) return;
    const maxFrameSize = this.#hello.limits.maxFrameSize;
    this.#replyError(
      id,
      limit !== undefined && limit < maxFrameSize ? resultTooLarge(limit) : new SqliteError(
        ErrorCode.ResultTooLarge,
        `Result exceeds maxFrameSize ${maxFrameSize} bytes: use iterate() for large results`,
      ),
    );
  }

  #replyError(id: number, err: unknown): void {
    const status = Status.Error | (this.#engine.inTransaction ? Status.InTransaction : 0);
    this.#encoder.append([id, status, toWireError(err)]);
  }

  /** Answers a protocol violation with a connection-level error. */
  async #fatal(err: unknown): Promise<void> {
    if (this.#channel.closed) return;
    // Requests that arrived before the bad frame run and are answered first;
    // nothing after the error frame.
    this.#pump();
    this.#dead = true;
    await this.#awaitCommit();
    await this.#sendLast(err);
  }

  /** Sends a connection-level error as the last frame, then closes. */
  async #sendLast(err: unknown): Promise<void> {
    this.#dead = true;
    this.#encoder.append([CONNECTION_ERROR_ID, Status.Error, toWireError(err)]);
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

/** Who is at the other end, for the log. */
function peerName(conn: Deno.Conn): string {
  const a = conn.remoteAddr;
  if (a.transport === "tcp" || a.transport === "udp") return `${a.hostname}:${a.port}`;
  return `a local process (${(conn.localAddr as Deno.UnixAddr).path ?? "unix socket"})`;
}

function toWireError(err: unknown): WireError {
  if (err instanceof SqliteError) {
    return err.sqliteCode === undefined
      ? { code: err.code, message: err.message }
      : { code: err.code, message: err.message, sqliteCode: err.sqliteCode };
  }
  if (err instanceof ProtocolError) return { code: err.code, message: err.message };
  return { code: ErrorCode.Internal, message: `Internal error: ${(err as Error)?.message ?? err}` };
}

function isId(v: unknown): boolean {
  return typeof v === "number" && Number.isInteger(v) && v > 0 && v <= 0xffffffff;
}

function badRequest(message: string): SqliteError {
  return new SqliteError(ErrorCode.BadRequest, message);
}

function sqlText(v: unknown): string {
  if (typeof v !== "string") throw badRequest(`Expected SQL text, got ${typeName(v)}`);
  return v;
}

function sqlOrHandle(v: unknown): string | number {
  if (typeof v === "string" || (typeof v === "number" && Number.isInteger(v))) return v;
  throw badRequest(`Expected SQL text or a statement handle, got ${typeName(v)}`);
}

function handle(v: unknown): number {
  if (typeof v === "number" && Number.isInteger(v)) return v;
  throw badRequest(`Expected a statement handle, got ${typeName(v)}`);
}

function params(v: unknown): unknown {
  if (v === undefined || v === null || typeof v === "object") return v;
  throw badRequest(`Expected parameters as an array or a map, got ${typeName(v)}`);
}

function timeoutOf(v: unknown): number | undefined {
  if (v === undefined || v === null) return undefined;
  const t = (v as CallOptions).timeout;
  if (typeof v !== "object" || (t !== undefined && (typeof t !== "number" || !(t > 0)))) {
    throw badRequest("Expected call options {timeout?: positive number of ms}");
  }
  return t;
}

function batchItems(v: unknown): [string, unknown][] {
  if (!Array.isArray(v)) throw badRequest(`Expected a list of statements, got ${typeName(v)}`);
  for (let i = 0; i < v.length; i++) {
    const item = v[i];
    if (!Array.isArray(item) || typeof item[0] !== "string") {
      throw badRequest(`Batch statement ${i + 1}: expected [sql, params]`);
    }
    params(item[1]);
  }
  return v as [string, unknown][];
}

function typeName(v: unknown): string {
  return v === null ? "null" : Array.isArray(v) ? "array" : typeof v;
}
