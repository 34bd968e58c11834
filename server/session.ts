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
  CONNECTION_ERROR_ID,
  type HelloReply,
  Op,
  PROTOCOL_VERSION,
  Status,
} from "../protocol/messages.ts";
import { BLOCKED, type Engine, type EngineSession } from "../engine/engine.ts";
import { FrameChannel } from "../transport/frame_channel.ts";

const HIGH_WATER = 4 * 1024 * 1024;
const MAX_QUEUED = 4096;

type Request = unknown[];

/** Serves one client connection. */
export class Session {
  readonly #channel: FrameChannel;
  readonly #encoder: MessageEncoder;
  readonly #decoder = new MessageDecoder();
  readonly #engine: EngineSession;
  readonly #hello: HelloReply;
  #queue: Request[] = [];
  #head = 0;
  #handshaken = false;
  #pumping = false;

  /**
   * @param conn The accepted connection.
   * @param engine The engine to run requests on.
   * @param hello The handshake reply to send.
   */
  constructor(conn: Deno.Conn, engine: Engine, hello: HelloReply) {
    const max = hello.limits.maxFrameSize;
    this.#encoder = new MessageEncoder(max);
    this.#hello = hello;
    this.#engine = engine.openSession(() => this.#pump());
    this.#channel = new FrameChannel(conn, max, this.#encoder, {
      onFrame: (payload) => this.#onFrame(payload),
      onReadEnd: () => this.#pump(),
      onDrain: () => this.#pump(),
    });
  }

  /** Serves until the client leaves; never rejects. */
  async serve(): Promise<void> {
    try {
      await this.#channel.readLoop();
    } catch (err) {
      await this.#fatal(err);
    } finally {
      this.close();
    }
  }

  /** Closes the connection and rolls back its transaction. Idempotent. */
  close(): void {
    this.#engine.close();
    this.#channel.close();
    this.#queue = [];
    this.#head = 0;
  }

  #onFrame(payload: Uint8Array): void {
    const msg = this.#decoder.decode(payload);
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
    const opts = msg[2] as { version?: unknown } | undefined;
    if (msg[0] !== Op.Hello || typeof opts !== "object" || opts === null) {
      throw new ProtocolError(
        ErrorCode.BadRequest,
        "Cannot start session: first request must be hello",
      );
    }
    if (opts.version !== PROTOCOL_VERSION) {
      throw new ProtocolError(
        ErrorCode.ProtocolVersion,
        `Cannot start session: client speaks protocol ${String(opts.version)}, ` +
          `server speaks ${PROTOCOL_VERSION}`,
      );
    }
    this.#handshaken = true;
    this.#encoder.append([msg[1], Status.Ok, this.#hello]);
  }

  /** Runs queued requests in order until one must wait or output backs up. */
  #pump(): void {
    if (this.#pumping || this.#channel.closed) return;
    this.#pumping = true;
    try {
      const q = this.#queue;
      while (this.#head < q.length) {
        if (this.#encoder.size >= HIGH_WATER) break;
        const req = q[this.#head];
        let result: unknown;
        try {
          result = this.#dispatch(req);
        } catch (err) {
          this.#replyError(req[1] as number, err);
          q[this.#head++] = undefined as unknown as Request;
          continue;
        }
        if (result === BLOCKED) break;
        q[this.#head++] = undefined as unknown as Request;
        this.#reply(req[1] as number, result);
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
    } finally {
      this.#pumping = false;
    }
    this.#channel.flush();
  }

  #dispatch(req: Request): unknown {
    const s = this.#engine;
    switch (req[0]) {
      case Op.Query:
        return s.query(sqlOrHandle(req[2]), params(req[3]));
      case Op.Run:
        return s.run(sqlOrHandle(req[2]), params(req[3]));
      case Op.Exec:
        return s.exec(sqlText(req[2]));
      case Op.Batch:
        return s.batch(batchItems(req[2]));
      case Op.Prepare:
        return s.prepare(sqlText(req[2]));
      case Op.Finalize:
        return s.finalize(handle(req[2]));
      default:
        throw badRequest(`Unknown op ${String(req[0])}`);
    }
  }

  #reply(id: number, payload: unknown): void {
    const status = this.#engine.inTransaction ? Status.InTransaction : Status.Ok;
    if (this.#encoder.append([id, status, payload]) === -1) {
      this.#replyError(
        id,
        new SqliteError(
          ErrorCode.ResultTooLarge,
          `Result exceeds maxFrameSize ${this.#hello.limits.maxFrameSize} bytes: ` +
            "select fewer rows or columns",
        ),
      );
    }
  }

  #replyError(id: number, err: unknown): void {
    const status = Status.Error | (this.#engine.inTransaction ? Status.InTransaction : 0);
    this.#encoder.append([id, status, toWireError(err)]);
  }

  /** Answers a protocol violation with a connection-level error. */
  async #fatal(err: unknown): Promise<void> {
    if (this.#channel.closed) return;
    this.#encoder.append([CONNECTION_ERROR_ID, Status.Error, toWireError(err)]);
    // A client that does not read gets one second, then the socket closes.
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.#channel.drain(),
      new Promise<void>((resolve) => timer = setTimeout(resolve, 1000)),
    ]);
    clearTimeout(timer);
  }
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
