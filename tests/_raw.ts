/**
 * A raw protocol client for tests: writes bytes exactly as given (whole
 * frames, parts of frames, garbage), reads whole reply frames.
 */

import assert from "node:assert/strict";
import { MessageEncoder } from "../protocol/codec.ts";
import { decodeMsgpack } from "../protocol/msgpack.ts";
import { Op } from "../protocol/messages.ts";

/** A raw client: writes bytes as given, reads whole frames; `open` says hello. */
export class Raw implements AsyncDisposable {
  #buf = new Uint8Array(0);
  /** Bytes handed to the socket so far (the server read all but its buffers' worth). */
  written = 0;
  constructor(readonly conn: Deno.UnixConn) {}

  static async open(path: string): Promise<Raw> {
    const raw = new Raw(await Deno.connect({ transport: "unix", path }));
    await raw.write(frame([Op.Hello, 1, { version: 1 }]));
    const hello = await raw.read() as [number, number];
    assert.equal(hello[1], 0, JSON.stringify(hello));
    return raw;
  }

  async write(bytes: Uint8Array): Promise<void> {
    for (let off = 0; off < bytes.length;) {
      const n = await this.conn.write(bytes.subarray(off));
      off += n;
      this.written += n;
    }
  }

  /** The next frame decoded, or `"EOF"`; with `ms`, fails when none came by then. */
  read(ms?: number): Promise<unknown> {
    if (ms === undefined) return this.#read();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`No frame within ${ms} ms`)), ms);
    });
    return Promise.race([this.#read(), late]).finally(() => clearTimeout(timer));
  }

  async #read(): Promise<unknown> {
    for (;;) {
      if (this.#buf.length >= 4) {
        const n = new DataView(this.#buf.buffer, this.#buf.byteOffset).getUint32(0);
        if (this.#buf.length >= 4 + n) {
          const payload = this.#buf.slice(4, 4 + n);
          this.#buf = this.#buf.slice(4 + n);
          return decodeMsgpack(payload);
        }
      }
      const chunk = new Uint8Array(65536);
      const n = await this.conn.read(chunk).catch(() => null);
      if (n === null) return "EOF";
      const next = new Uint8Array(this.#buf.length + n);
      next.set(this.#buf);
      next.set(chunk.subarray(0, n), this.#buf.length);
      this.#buf = next;
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    try {
      this.conn.close();
    } catch {
      // Closed by the server.
    }
    return Promise.resolve();
  }
}

export function frame(msg: unknown): Uint8Array {
  const e = new MessageEncoder(1 << 30);
  e.append(msg);
  return e.take();
}
