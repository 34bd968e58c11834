/**
 * MessagePack codec for protocol messages. {@link MessageEncoder} writes
 * whole frames (4-byte big-endian length, then the MessagePack value) into
 * one growing buffer, so many replies leave in a single socket write.
 *
 * @module
 */

// An inline specifier, so the module also loads when imported by path from
// another project (no import map needed).
// deno-lint-ignore no-import-prefix
import { Decoder, Encoder } from "npm:@msgpack/msgpack@^3.1.3";
import { ErrorCode, ProtocolError } from "./errors.ts";

/** The internals of `@msgpack/msgpack`'s Encoder that framing needs. */
interface EncoderInternals {
  pos: number;
  bytes: Uint8Array;
  view: DataView;
  doEncode(object: unknown, depth: number): void;
  ensureBufferSizeToWrite(size: number): void;
  encodeNumber(n: number): void;
  encodeNumberAsFloat(n: number): void;
}

/** Kept small: every connection has one; it grows for large messages and shrinks back. */
const INITIAL_BUFFER = 4 * 1024;

/**
 * Appends framed MessagePack messages to an internal buffer; {@link take}
 * hands out everything appended so far as one `Uint8Array`.
 *
 * Integers travel as MessagePack integers, bigints as 64-bit integers, other
 * numbers (and `-0`, so that its sign survives) as float64.
 */
export class MessageEncoder {
  readonly #maxFrameSize: number;
  readonly #enc: EncoderInternals;

  /** @param maxFrameSize Largest payload one frame may carry. */
  constructor(maxFrameSize: number) {
    this.#maxFrameSize = maxFrameSize;
    const enc = new Encoder({ useBigInt64: true, initialBufferSize: INITIAL_BUFFER }) as unknown;
    const internals = enc as EncoderInternals;
    const encodeNumber = internals.encodeNumber;
    internals.encodeNumber = function (this: EncoderInternals, n: number): void {
      if (n === 0 && 1 / n < 0) this.encodeNumberAsFloat(n);
      else encodeNumber.call(this, n);
    };
    this.#enc = internals;
  }

  /** Bytes appended and not yet taken. */
  get size(): number {
    return this.#enc.pos;
  }

  /**
   * Appends one frame holding `message`.
   *
   * @param limit Largest payload allowed for this message; at most `maxFrameSize`.
   * @returns the payload size, or -1 (with nothing appended) when the payload
   *   would exceed the limit.
   * @throws {Error} when `message` holds a value MessagePack cannot encode;
   *   nothing is appended then.
   */
  append(message: unknown, limit: number = this.#maxFrameSize): number {
    const enc = this.#enc;
    const start = enc.pos;
    try {
      enc.ensureBufferSizeToWrite(4);
      enc.pos += 4;
      enc.doEncode(message, 1);
    } catch (err) {
      enc.pos = start;
      throw err;
    }
    const length = enc.pos - start - 4;
    if (length > limit || length > this.#maxFrameSize) {
      enc.pos = start;
      return -1;
    }
    enc.view.setUint32(start, length);
    return length;
  }

  /** Drops everything appended after the first `size` bytes. */
  truncate(size: number): void {
    if (size >= 0 && size < this.#enc.pos) this.#enc.pos = size;
  }

  /** Returns a copy of every frame appended so far and empties the buffer. */
  take(): Uint8Array {
    const enc = this.#enc;
    const out = enc.bytes.slice(0, enc.pos);
    enc.pos = 0;
    if (enc.bytes.length > 64 * INITIAL_BUFFER) {
      // Do not keep a huge buffer alive after one large message.
      enc.bytes = new Uint8Array(INITIAL_BUFFER);
      enc.view = new DataView(enc.bytes.buffer);
    }
    return out;
  }
}

/** Decodes one frame payload into a message. */
export class MessageDecoder {
  readonly #dec = new Decoder({ useBigInt64: true });

  /**
   * @throws {ProtocolError} `BAD_REQUEST` when the payload is not exactly one
   *   valid MessagePack value.
   */
  decode(payload: Uint8Array): unknown {
    try {
      return this.#dec.decode(payload);
    } catch (err) {
      throw new ProtocolError(
        ErrorCode.BadRequest,
        `Cannot decode frame: ${(err as Error).message}`,
        { cause: err },
      );
    }
  }
}
