/**
 * MessagePack codec for protocol messages. {@link MessageEncoder} writes
 * whole frames (4-byte big-endian length, then the MessagePack value) into
 * one growing buffer, so many replies leave in a single socket write.
 *
 * @module
 */

import { createError, ErrorCode, type NetsqliteError } from "./errors.ts";
import { decodeMsgpack, MsgpackWriter } from "./msgpack.ts";
import { beginFrame, endFrame } from "../transport/frame_writer.ts";

/** Kept small: every connection has one; it grows for large messages and shrinks back. */
const INITIAL_BUFFER = 4 * 1024;

/**
 * Appends framed MessagePack messages to an internal buffer; {@link take}
 * hands out everything appended so far as one `Uint8Array`. Values map as
 * described in `msgpack.ts`.
 */
export class MessageEncoder {
  readonly #maxFrameSize: number;
  readonly #w = new MsgpackWriter(INITIAL_BUFFER);

  /** @param maxFrameSize Largest payload one frame may carry. */
  constructor(maxFrameSize: number) {
    this.#maxFrameSize = maxFrameSize;
  }

  /** Bytes appended and not yet taken. */
  get size(): number {
    return this.#w.pos;
  }

  /**
   * Appends one frame holding `message`.
   *
   * @param limit Largest payload allowed for this message; at most `maxFrameSize`.
   * @returns the payload size, or -1 (with nothing appended) when the payload
   *   would exceed the limit.
   * @throws {MsgpackError} when `message` holds a value this MessagePack
   *   cannot encode; nothing is appended then.
   */
  append(message: unknown, limit: number = this.#maxFrameSize): number {
    const w = this.#w;
    const start = beginFrame(w);
    try {
      w.write(message);
    } catch (err) {
      w.pos = start;
      throw err;
    }
    return endFrame(w, start, Math.min(limit, this.#maxFrameSize));
  }

  /** Drops everything appended after the first `size` bytes. */
  truncate(size: number): void {
    if (size >= 0 && size < this.#w.pos) this.#w.pos = size;
  }

  /** Returns a copy of every frame appended so far and empties the buffer. */
  take(): Uint8Array {
    const w = this.#w;
    const out = w.bytes.slice(0, w.pos);
    w.pos = 0;
    // Do not keep a huge buffer alive after one large message.
    if (w.bytes.length > 64 * INITIAL_BUFFER) w.reset(INITIAL_BUFFER);
    return out;
  }
}

/** Decodes one frame payload into a message. */
export class MessageDecoder {
  /**
   * @throws {SqliteError} `BAD_REQUEST` when the payload is not exactly one
   *   valid MessagePack value (see `msgpack.ts`); a receiver closes the
   *   connection then, as the stream cannot be trusted.
   */
  decode(payload: Uint8Array): unknown {
    try {
      return decodeMsgpack(payload);
    } catch (err) {
      throw badFrame(err);
    }
  }
}

function badFrame(err: unknown): NetsqliteError {
  return createError(ErrorCode.BadRequest, `Cannot decode frame: ${(err as Error).message}`, {
    cause: err,
  });
}
