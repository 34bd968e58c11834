/**
 * A {@link ByteStream} on a `node:net` (or `node:tls`) socket, for runtimes
 * without `Deno` (Node.js, Bun). Incoming chunks are queued and handed out by
 * `read()`; past {@link HIGH_WATER} buffered bytes the socket is paused until
 * reads catch up, so a slow consumer does not buffer a whole result.
 *
 * @module
 */

import type { Socket } from "node:net";
import type { ByteStream } from "./byte_stream.ts";

const HIGH_WATER = 1024 * 1024;
/** Most bytes one {@link NodeSocketStream.write} hands to the socket. */
const WRITE_CHUNK = 64 * 1024;

/** A connected `node:net` socket seen as a {@link ByteStream}. */
export class NodeSocketStream implements ByteStream {
  readonly #socket: Socket;
  readonly #chunks: Uint8Array[] = [];
  #offset = 0;
  #buffered = 0;
  #ended = false;
  #error: Error | null = null;
  #wake: (() => void) | null = null;

  /** @param socket A connected socket; the stream owns it from now on. */
  constructor(socket: Socket) {
    this.#socket = socket;
    socket.on("data", (chunk: Uint8Array) => {
      this.#chunks.push(chunk);
      this.#buffered += chunk.length;
      if (this.#buffered > HIGH_WATER) socket.pause();
      this.#notify();
    });
    const end = (): void => {
      this.#ended = true;
      this.#notify();
    };
    socket.on("end", end);
    socket.on("close", end);
    // The read side sees the error once the bytes before it are read; writes reject on their own.
    socket.on("error", (err: Error) => {
      this.#error ??= err;
      end();
    });
  }

  /**
   * Reads into `buffer`.
   *
   * @returns how many bytes were read, or `null` at the end of the stream.
   * @throws the socket's error (e.g. `ECONNRESET`) once the bytes received
   *   before it were read.
   */
  async read(buffer: Uint8Array): Promise<number | null> {
    while (this.#chunks.length === 0) {
      if (this.#error !== null) throw this.#error;
      if (this.#ended) return null;
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
    let n = 0;
    while (n < buffer.length && this.#chunks.length > 0) {
      const chunk = this.#chunks[0];
      const take = Math.min(chunk.length - this.#offset, buffer.length - n);
      buffer.set(chunk.subarray(this.#offset, this.#offset + take), n);
      n += take;
      this.#offset += take;
      if (this.#offset === chunk.length) {
        this.#chunks.shift();
        this.#offset = 0;
      }
    }
    this.#buffered -= n;
    if (this.#buffered <= HIGH_WATER / 2 && this.#socket.isPaused()) this.#socket.resume();
    return n;
  }

  /**
   * Hands `bytes` to the socket. Resolves at once when the socket took them
   * without exceeding its buffer (they are a fresh copy nobody reuses), else
   * once it drained; a failure shows as the end of the stream on `read()`.
   * Writing no bytes (the server's check whether a client is gone) sends
   * nothing and only says whether the socket is still open: `node:tls` under
   * Deno fails an empty write with `EPERM` and destroys the socket.
   *
   * Takes at most {@link WRITE_CHUNK} bytes at a time and says how many, as
   * a TCP connection's write takes what the kernel accepts: a large reply
   * is handed over piece by piece, so the caller sees a client that reads it
   * slowly make progress (the server's `writeStallTimeout`) instead of
   * waiting for the whole of it to drain.
   */
  write(bytes: Uint8Array): Promise<number> {
    const socket = this.#socket;
    if (socket.destroyed) return Promise.reject(new Error("Socket is closed"));
    if (bytes.length === 0) return Promise.resolve(0);
    if (bytes.length > WRITE_CHUNK) bytes = bytes.subarray(0, WRITE_CHUNK);
    if (socket.write(bytes)) return Promise.resolve(bytes.length);
    return new Promise((resolve, reject) => {
      const done = (): void => {
        socket.off("drain", done);
        socket.off("close", done);
        if (socket.destroyed) reject(new Error("Socket is closed"));
        else resolve(bytes.length);
      };
      socket.on("drain", done);
      socket.on("close", done);
    });
  }

  /** @inheritdoc */
  close(): void {
    this.#ended = true;
    this.#error = null; // closed here: the end is ours, not an error
    this.#socket.destroy();
    this.#notify();
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }
}
