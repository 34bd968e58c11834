/**
 * The byte stream a {@link FrameChannel} reads and writes: the three methods
 * of `Deno.Conn` it uses, so a `Deno.Conn` is one as it is (no wrapper on
 * Deno's path), and a `node:net` socket becomes one through
 * `transport/_node_socket.ts` under Node.js and Bun.
 *
 * @module
 */

/** A full-duplex byte stream: a connected socket. */
export interface ByteStream {
  /**
   * Reads into `buffer`.
   *
   * @param buffer Where the bytes go.
   * @returns how many bytes were read, or `null` at the end of the stream.
   */
  read(buffer: Uint8Array): Promise<number | null>;
  /**
   * Writes some or all of `bytes`.
   *
   * @param bytes What to send; it is not reused until the promise settles.
   * @returns how many bytes were written.
   */
  write(bytes: Uint8Array): Promise<number>;
  /** Closes the stream; a pending read resolves with `null`. */
  close(): void;
}
