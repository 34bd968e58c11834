/**
 * MessagePack codec for protocol messages. {@link MessageEncoder} writes
 * whole frames (4-byte big-endian length, then the MessagePack value) into
 * one growing buffer, so many replies leave in a single socket write.
 *
 * @module
 */

import { createError, ErrorCode, type NetsqliteError } from "./errors.ts";
import { MsgpackDecoder, MsgpackWriter } from "./msgpack.ts";
import { beginFrame, endFrame } from "../transport/frame_writer.ts";

/** Kept small: every connection has one; it grows for large messages and shrinks back. */
const INITIAL_BUFFER = 4 * 1024;
/** A buffer grown past this (by a large message) is dropped once its bytes are taken. */
const LARGE_BUFFER = 64 * INITIAL_BUFFER;

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

  /**
   * Removes everything appended after the first `size` bytes and returns it
   * (a copy: whole frames when `size` is where one began), for
   * {@link appendFrames}.
   */
  cut(size: number): Uint8Array {
    const w = this.#w;
    if (size < 0 || size >= w.pos) return new Uint8Array(0);
    const tail = w.bytes.slice(size, w.pos);
    w.pos = size;
    return tail;
  }

  /** Appends whole frames encoded before (part of what {@link cut} returned). */
  appendFrames(frames: Uint8Array): void {
    const w = this.#w;
    w.ensure(frames.length);
    w.bytes.set(frames, w.pos);
    w.pos += frames.length;
  }

  /**
   * Returns every frame appended so far and empties the buffer: a copy, or
   * the buffer itself when it grew for large messages (it is not kept for
   * the small ones after them) and they fill at least half of it. The
   * caller may keep what it gets: the encoder writes into a fresh buffer.
   */
  take(): Uint8Array {
    const w = this.#w;
    const bytes = w.bytes;
    const pos = w.pos;
    if (bytes.length <= LARGE_BUFFER) {
      w.pos = 0;
      return bytes.slice(0, pos);
    }
    // Copying megabytes costs more than a fresh small buffer.
    w.reset(INITIAL_BUFFER);
    return 2 * pos >= bytes.length ? bytes.subarray(0, pos) : bytes.slice(0, pos);
  }
}

/**
 * Decodes one frame payload into a message. A server bounds the values one
 * request may hold (see `MsgpackDecoder`); a client's decoder has no bound.
 */
export class MessageDecoder {
  readonly #msgpack: MsgpackDecoder;

  /** @param maxValues Most MessagePack values one payload may hold (default: no bound). */
  constructor(maxValues: number = Number.POSITIVE_INFINITY) {
    this.#msgpack = new MsgpackDecoder(maxValues);
  }

  /** The bound on values per payload. */
  get maxValues(): number {
    return this.#msgpack.maxValues;
  }

  /**
   * MessagePack values in the payload last decoded (every array item, map
   * key and value; a byte array counts as 8).
   */
  get values(): number {
    return this.#msgpack.values;
  }

  /**
   * @throws {SqliteError} `BAD_REQUEST` when the payload is not exactly one
   *   valid MessagePack value (see `msgpack.ts`); a receiver closes the
   *   connection then, as the stream cannot be trusted. But for a payload
   *   valid as far as it was read that holds more than {@link maxValues}
   *   values (the error's `cause` is a `TooManyValuesError`): a server
   *   refuses that request alone, named by {@link head}.
   */
  decode(payload: Uint8Array): unknown {
    try {
      return this.#msgpack.decode(payload);
    } catch (err) {
      throw badFrame(err);
    }
  }

  /**
   * The first `n` items of the array `payload` holds, or `null` (see
   * `MsgpackDecoder.head`): what a request refused for its values still says.
   */
  head(payload: Uint8Array, n: number): unknown[] | null {
    return this.#msgpack.head(payload, n);
  }
}

function badFrame(err: unknown): NetsqliteError {
  return createError(ErrorCode.BadRequest, `Cannot decode frame: ${(err as Error).message}`, {
    cause: err,
  });
}
