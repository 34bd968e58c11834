/**
 * Incremental parser for length-prefixed frames: a 4-byte big-endian length,
 * then that many payload bytes (written by `frame_writer.ts`). It does no I/O and may be fed any split of
 * the byte stream, down to one byte at a time.
 *
 * @module
 */

import { ErrorCode, ProtocolError } from "../protocol/errors.ts";
import { DEFAULT_MAX_FRAME_SIZE, FRAME_HEADER_SIZE, readFrameLength } from "./frame_writer.ts";

export { DEFAULT_MAX_FRAME_SIZE, FRAME_HEADER_SIZE } from "./frame_writer.ts";

/**
 * Bytes held on all connections of a server for one purpose, and the most
 * they may: incomplete frames (a connection that needs more for its
 * incomplete frame is refused, `FRAME_TOO_LARGE`, so that many connections
 * each sending most of a large frame and stalling cannot exhaust the
 * server's memory), or requests read whole and waiting for their turn.
 */
export class ByteBudget {
  /** Most bytes held on all connections. */
  readonly max: number;
  /** Bytes held now. */
  used = 0;

  /** @param max Most bytes held on all connections. */
  constructor(max: number) {
    this.max = max;
  }
}

/**
 * Reassembles frames from chunks of a byte stream.
 *
 * Chunks passed to {@link FrameReader.push} are owned by the reader from then
 * on: returned frames may be views into them, so the caller must not reuse a
 * chunk's memory.
 *
 * @example
 * ```ts
 * import { FrameReader } from "./frame_reader.ts";
 * const reader = new FrameReader(1024);
 * reader.push(new Uint8Array([0, 0, 0, 2, 7]));
 * if (reader.next() !== undefined) throw new Error("frame is not complete yet");
 * reader.push(new Uint8Array([9]));
 * const frame = reader.next();
 * if (frame?.length !== 2 || frame[1] !== 9) throw new Error("wrong frame");
 * ```
 */
export class FrameReader {
  #maxFrameSize: number;
  #buf: Uint8Array = new Uint8Array(0);
  #start = 0;
  #end = 0;
  /** True when #buf was allocated here, so bytes past #end may be written. */
  #owned = false;
  readonly #budget: ByteBudget | null;

  /**
   * @param maxFrameSize Largest payload accepted; a larger announced length
   *   throws before any memory is allocated for it.
   * @param budget Shared bound on the bytes incomplete frames hold (the
   *   buffers allocated here), or `null` for none.
   */
  constructor(
    maxFrameSize: number = DEFAULT_MAX_FRAME_SIZE,
    budget: ByteBudget | null = null,
  ) {
    this.#maxFrameSize = maxFrameSize;
    this.#budget = budget;
  }

  /** Bytes of buffers allocated here (counted against the budget). */
  get held(): number {
    return this.#owned ? this.#buf.length : 0;
  }

  /** Gives back the buffer allocated here (the connection closed). */
  release(): void {
    this.#adopt(new Uint8Array(0), false);
    this.#start = this.#end = 0;
  }

  /**
   * Checks, before it is allocated, that a buffer of `capacity` bytes
   * replacing the current one fits in the budget.
   *
   * @throws {ProtocolError} `FRAME_TOO_LARGE` when it does not.
   */
  #check(capacity: number): void {
    const b = this.#budget;
    if (b === null || capacity <= this.held || b.used - this.held + capacity <= b.max) return;
    throw new ProtocolError(
      ErrorCode.FrameTooLarge,
      `Cannot read frame: incomplete frames on all connections would hold more than ` +
        `${b.max} bytes (maxPartialFrameBytes); send large frames when the server is ` +
        "less loaded, or smaller ones",
    );
  }

  /** Makes `buf` the buffer, counting what was allocated here against the budget. */
  #adopt(buf: Uint8Array, owned: boolean): void {
    if (this.#budget !== null) this.#budget.used += (owned ? buf.length : 0) - this.held;
    this.#buf = buf;
    this.#owned = owned;
  }

  /** Largest payload accepted from the next frame on. */
  get maxFrameSize(): number {
    return this.#maxFrameSize;
  }

  set maxFrameSize(bytes: number) {
    this.#maxFrameSize = bytes;
  }

  /** Bytes received but not yet returned as part of a frame. */
  get buffered(): number {
    return this.#end - this.#start;
  }

  /** Adds bytes from the stream. */
  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    const pending = this.#end - this.#start;
    if (pending === 0) {
      this.#adopt(chunk, false);
      this.#start = 0;
      this.#end = chunk.length;
      return;
    }
    if (this.#owned && this.#buf.length - this.#end >= chunk.length) {
      this.#buf.set(chunk, this.#end);
      this.#end += chunk.length;
      return;
    }
    // Grow into a fresh buffer: earlier frames may still be views of the old one.
    let capacity = Math.max(64, (pending + chunk.length) * 2);
    if (pending >= FRAME_HEADER_SIZE) {
      const announced = FRAME_HEADER_SIZE + this.#announcedLength();
      if (announced <= this.#maxFrameSize + FRAME_HEADER_SIZE) {
        capacity = Math.max(pending + chunk.length, Math.min(capacity, announced));
      }
    }
    this.#check(capacity);
    const next = new Uint8Array(capacity);
    next.set(this.#buf.subarray(this.#start, this.#end), 0);
    next.set(chunk, pending);
    this.#adopt(next, true);
    this.#start = 0;
    this.#end = pending + chunk.length;
  }

  /**
   * Copies the bytes of an incomplete frame out of the last chunk pushed,
   * so that the caller may reuse that chunk's memory (the read loop reads
   * into one buffer again and again). Frames returned before stay views of
   * the chunk: use them before reusing it.
   */
  detach(): void {
    if (this.#owned || this.#end === this.#start) return;
    this.#check(this.#end - this.#start);
    const pending = this.#buf.slice(this.#start, this.#end);
    this.#adopt(pending, true);
    this.#start = 0;
    this.#end = pending.length;
  }

  /**
   * Returns the next complete frame's payload, or `undefined` when more bytes
   * are needed.
   *
   * @throws {ProtocolError} `FRAME_TOO_LARGE` when the announced length
   *   exceeds `maxFrameSize`; the stream cannot be resynchronised after that.
   */
  next(): Uint8Array | undefined {
    const available = this.#end - this.#start;
    if (available < FRAME_HEADER_SIZE) return undefined;
    const length = this.#announcedLength();
    if (length > this.#maxFrameSize) {
      throw new ProtocolError(
        ErrorCode.FrameTooLarge,
        `Cannot read frame: length ${length} exceeds maxFrameSize ${this.#maxFrameSize}`,
      );
    }
    if (available - FRAME_HEADER_SIZE < length) return undefined;
    const begin = this.#start + FRAME_HEADER_SIZE;
    this.#start = begin + length;
    if (this.#start === this.#end) {
      // Release the caller's chunk, or the buffer allocated here, once fully consumed.
      const frame = this.#buf.subarray(begin, begin + length);
      this.#adopt(new Uint8Array(0), false);
      this.#start = this.#end = 0;
      return frame;
    }
    return this.#buf.subarray(begin, begin + length);
  }

  #announcedLength(): number {
    return readFrameLength(this.#buf, this.#start);
  }
}
