/**
 * Writing length-prefixed frames: a 4-byte big-endian payload length, then
 * the payload. {@link FrameReader} (`frame_reader.ts`) reads what this writes;
 * these two files are the only code that knows the header.
 *
 * The payload is produced in place by the caller (e.g. a MessagePack writer)
 * into a growable buffer: {@link beginFrame} reserves the header,
 * {@link endFrame} fills it in, or takes the frame back when it is too large.
 *
 * @module
 */

/** Size of the length prefix in bytes. */
export const FRAME_HEADER_SIZE = 4;

/** Default and hard upper bound for one frame's payload: 64 MiB. */
export const DEFAULT_MAX_FRAME_SIZE = 64 * 1024 * 1024;

/** A growable byte buffer frames are written into. */
export interface FrameBuffer {
  /** Next write position. */
  pos: number;
  /** Makes room for `n` more bytes at `pos`. */
  ensure(n: number): void;
  /** View of the current buffer (valid after {@link ensure}). */
  readonly view: DataView;
}

/**
 * Reserves a frame header at the buffer's position.
 *
 * @returns where the frame starts, for {@link endFrame}.
 */
export function beginFrame(buf: FrameBuffer): number {
  const start = buf.pos;
  buf.ensure(FRAME_HEADER_SIZE);
  buf.pos += FRAME_HEADER_SIZE;
  return start;
}

/**
 * Completes the frame begun at `start`: writes its payload length.
 *
 * @param limit Largest payload allowed.
 * @returns the payload length, or -1 when it exceeds `limit` (the frame is
 *   then removed and the buffer's position is back at `start`).
 */
export function endFrame(buf: FrameBuffer, start: number, limit: number): number {
  const length = buf.pos - start - FRAME_HEADER_SIZE;
  if (length > limit) {
    buf.pos = start;
    return -1;
  }
  buf.view.setUint32(start, length);
  return length;
}

/** Reads the payload length announced by the header at `at`. */
export function readFrameLength(bytes: Uint8Array, at: number): number {
  return ((bytes[at] << 24) >>> 0) + (bytes[at + 1] << 16) + (bytes[at + 2] << 8) + bytes[at + 3];
}
