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

  /**
   * @param maxFrameSize Largest payload accepted; a larger announced length
   *   throws before any memory is allocated for it.
   */
  constructor(maxFrameSize: number = DEFAULT_MAX_FRAME_SIZE) {
    this.#maxFrameSize = maxFrameSize;
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
      this.#buf = chunk;
      this.#start = 0;
      this.#end = chunk.length;
      this.#owned = false;
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
    const next = new Uint8Array(capacity);
    next.set(this.#buf.subarray(this.#start, this.#end), 0);
    next.set(chunk, pending);
    this.#buf = next;
    this.#start = 0;
    this.#end = pending + chunk.length;
    this.#owned = true;
  }

  /**
   * Copies the bytes of an incomplete frame out of the last chunk pushed,
   * so that the caller may reuse that chunk's memory (the read loop reads
   * into one buffer again and again). Frames returned before stay views of
   * the chunk: use them before reusing it.
   */
  detach(): void {
    if (this.#owned || this.#end === this.#start) return;
    const pending = this.#buf.slice(this.#start, this.#end);
    this.#buf = pending;
    this.#start = 0;
    this.#end = pending.length;
    this.#owned = true;
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
    if (this.#start === this.#end && !this.#owned) {
      // Release the caller's chunk once fully consumed.
      const frame = this.#buf.subarray(begin, begin + length);
      this.#buf = new Uint8Array(0);
      this.#start = this.#end = 0;
      return frame;
    }
    return this.#buf.subarray(begin, begin + length);
  }

  #announcedLength(): number {
    return readFrameLength(this.#buf, this.#start);
  }
}
