/**
 * A framed, full-duplex channel over a {@link ByteStream} (a `Deno.Conn`, or
 * a `node:net` socket under Node.js and Bun), used by both the client
 * and the server. Reading hands complete frame payloads to a callback; writing
 * sends whatever an {@link Outbox} has gathered, one write at a time, so
 * replies produced together leave in one syscall.
 *
 * @module
 */

import type { ByteStream } from "./byte_stream.ts";
import { type ByteBudget, FrameReader } from "./frame_reader.ts";

/** A source of bytes to send, e.g. a `MessageEncoder`. */
export interface Outbox {
  /** Bytes waiting to be sent. */
  readonly size: number;
  /** Returns and clears the waiting bytes. */
  take(): Uint8Array;
}

/** Callbacks of a {@link FrameChannel}. */
export interface ChannelHandler {
  /**
   * One complete frame payload arrived. It is a view of the read buffer,
   * valid only during the call (the next read reuses the memory): decode
   * it, do not keep it.
   */
  onFrame(payload: Uint8Array): void;
  /** Every frame of the last read has been handed to `onFrame`. */
  onReadEnd(): void;
  /** The outbox was written out completely. */
  onDrain(): void;
  /**
   * One batch taken from the outbox was written whole: {@link
   * FrameChannel.unwritten} went down (a server counts its unsent bytes).
   */
  onWritten?(): void;
  /**
   * Output waits to be sent and no byte of it was taken by the peer for
   * {@link FrameChannel.writeStallTimeout} ms (checked by one timer at most
   * per channel); the channel is left open for the handler to close.
   */
  onWriteStall?(): void;
}

/** Read buffer of an idle connection; a connection that fills it gets the large one. */
const READ_SIZE_SMALL = 4 * 1024;
/** Read buffer of a busy connection: a frame being completed may hold up to this much more. */
export const READ_SIZE_LARGE = 64 * 1024;

/** Reads frames from and writes an outbox to one connection. */
export class FrameChannel {
  readonly #conn: ByteStream;
  readonly #frames: FrameReader;
  readonly #outbox: Outbox;
  readonly #handler: ChannelHandler;
  #writing = false;
  #pendingWrite: Promise<void> | null = null;
  #closed = false;
  #readFailed = false;
  #resumeRead: (() => void) | null = null;
  #paused = false;
  /** Set by {@link discardInput}. */
  #discarding = false;
  /** Bytes of the batch being written, counted whole until it is written whole. */
  #unwritten = 0;
  /** When the write in progress began or last made progress (`performance.now()`). */
  #progressAt = 0;
  #stallTimer: ReturnType<typeof setTimeout> | undefined;
  /**
   * Calls `onWriteStall` once output waited this long, in ms, without the
   * peer taking a byte of it (0: never). Progress, however slow, restarts
   * the wait.
   */
  writeStallTimeout = 0;
  /**
   * Whether a read that fills the small buffer moves to the large one. A
   * server turns it off until the peer is authenticated, so that a peer
   * not let in cannot make it hold 64 KiB per connection.
   */
  largeReads = true;

  /**
   * @param conn The connection; the channel closes it.
   * @param maxFrameSize Largest frame payload accepted.
   * @param outbox Where outgoing bytes are gathered.
   * @param handler Frame and drain callbacks.
   * @param budget Shared bound on the bytes incomplete frames hold, or `null`.
   */
  constructor(
    conn: ByteStream,
    maxFrameSize: number,
    outbox: Outbox,
    handler: ChannelHandler,
    budget: ByteBudget | null = null,
  ) {
    this.#conn = conn;
    this.#frames = new FrameReader(maxFrameSize, budget);
    this.#outbox = outbox;
    this.#handler = handler;
  }

  /** Largest frame payload accepted from the next frame on (e.g. raised after a handshake). */
  set maxFrameSize(bytes: number) {
    this.#frames.maxFrameSize = bytes;
  }

  /** True once {@link close} was called or the connection failed. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * True when the read loop ended on a read error rather than at the end of
   * the stream: the connection was reset (a killed peer with unread data, a
   * vanished host found by keepalive) or a TLS stream was cut short. Such a
   * peer is gone; one whose stream simply ended may only have closed its
   * sending side.
   */
  get readFailed(): boolean {
    return this.#readFailed;
  }

  /** True while part of a frame has arrived and the rest has not. */
  get partial(): boolean {
    return this.#frames.buffered > 0;
  }

  /** True while reading is paused by {@link pauseReading}. */
  get paused(): boolean {
    return this.#paused;
  }

  /** True while a write is in progress. */
  get writing(): boolean {
    return this.#writing;
  }

  /**
   * Bytes taken from the outbox and not yet written whole: the batch being
   * written, which stays in memory until its last byte is sent.
   */
  get unwritten(): number {
    return this.#unwritten;
  }

  /**
   * Reads until the peer closes, the connection fails or {@link close} is
   * called. Errors thrown by `onFrame` (such as `FRAME_TOO_LARGE` from the
   * frame reader) end the loop and are rethrown; the bytes of a next frame read with the bad
   * one are dropped.
   *
   * @returns when the stream ended; rejects with a frame or handler error.
   */
  async readLoop(): Promise<void> {
    let buf = new Uint8Array(READ_SIZE_SMALL);
    while (!this.#closed) {
      if (this.#paused) {
        await new Promise<void>((resolve) => this.#resumeRead = resolve);
        if (this.#closed) break;
      }
      let n: number | null;
      try {
        n = await this.#conn.read(buf);
      } catch {
        // Reset by the peer, or closed under us: the stream ended, in an error.
        if (!this.#closed) this.#readFailed = true;
        n = null;
      }
      if (n === null || this.#closed) {
        // The stream ended: an incomplete frame can never complete. Its bytes
        // are dropped (no longer {@link partial}, out of the budget), so that
        // no frame timeout runs for it while the requests received whole
        // are still run and answered.
        this.#frames.release();
        break;
      }
      if (this.#discarding) continue;
      // Frames are views of `buf`, handled (decoded) before the next read
      // reuses it; only an incomplete frame's bytes are copied out.
      this.#frames.push(buf.subarray(0, n));
      try {
        for (let frame; (frame = this.#frames.next()) !== undefined;) {
          this.#handler.onFrame(frame);
          if (this.#closed) return;
        }
      } catch (err) {
        // No frame after a bad one is read: what arrived of the next is
        // dropped (no longer {@link partial}, its bytes out of the budget).
        this.#frames.release();
        throw err;
      }
      this.#frames.detach();
      if (n === buf.length && buf.length < READ_SIZE_LARGE && this.largeReads) {
        buf = new Uint8Array(READ_SIZE_LARGE);
      }
      this.#handler.onReadEnd();
    }
  }

  /**
   * Hands no further frame to `onFrame` (nor any error of the frames
   * after it): the bytes still read are dropped, an incomplete frame's
   * included. A server does so once it sent its last frame, a
   * connection-level error, after which nothing is answered. The
   * connection is still read, so that closing it with bytes unread does not
   * reset it (over TCP) before the peer read that frame.
   */
  discardInput(): void {
    this.#discarding = true;
    this.#frames.release();
  }

  /** Stops reading after the current chunk until {@link resumeReading}. */
  pauseReading(): void {
    this.#paused = true;
  }

  /** Resumes a paused read loop. */
  resumeReading(): void {
    this.#paused = false;
    const resume = this.#resumeRead;
    this.#resumeRead = null;
    resume?.();
  }

  /** Starts sending the outbox if no write is in progress. */
  flush(): void {
    if (this.#writing || this.#closed || this.#outbox.size === 0) return;
    this.#writing = true;
    this.#pendingWrite = this.#writeLoop();
  }

  /** Sends the outbox and resolves once it was written (or the write failed). */
  async drain(): Promise<void> {
    this.flush();
    if (this.#pendingWrite !== null) await this.#pendingWrite;
  }

  async #writeLoop(): Promise<void> {
    const stallMs = this.writeStallTimeout;
    try {
      if (stallMs > 0) {
        this.#progressAt = performance.now();
        if (this.#stallTimer === undefined) this.#armStallTimer(stallMs);
      }
      while (this.#outbox.size > 0 && !this.#closed) {
        const bytes = this.#outbox.take();
        this.#unwritten = bytes.length;
        for (let off = 0; off < bytes.length;) {
          off += await this.#conn.write(off === 0 ? bytes : bytes.subarray(off));
          if (stallMs > 0) this.#progressAt = performance.now();
        }
        this.#unwritten = 0;
        this.#handler.onWritten?.();
      }
    } catch {
      this.#unwritten = 0;
      this.close(); // The peer is gone; the read loop will end too.
      return;
    } finally {
      this.#writing = false;
    }
    this.#handler.onDrain();
  }

  /**
   * Checks for a stalled write in `ms`: one timer per channel, left to run
   * out rather than cleared after every write (it re-arms only while a
   * write is in progress).
   */
  #armStallTimer(ms: number): void {
    this.#stallTimer = setTimeout(() => {
      this.#stallTimer = undefined;
      if (!this.#writing || this.#closed) return;
      const idle = performance.now() - this.#progressAt;
      if (idle >= ms) this.#handler.onWriteStall?.();
      else this.#armStallTimer(Math.max(1, Math.ceil(ms - idle)));
    }, ms);
  }

  /** Closes the connection. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#stallTimer);
    this.#stallTimer = undefined;
    this.#frames.release();
    try {
      this.#conn.close();
    } catch {
      // Already closed by the peer.
    }
    this.resumeReading();
  }
}
