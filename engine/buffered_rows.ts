/**
 * The bytes of rows the server holds for cursors it cannot stream (no
 * reader to stream from on a single file; every cursor in cluster mode):
 * at most {@link BUFFERED_CURSOR_RESULTS} × `maxResultBytes` together, so
 * that clients opening many such cursors cannot exhaust the server's memory.
 *
 * @module
 */

import { ErrorCode, SqliteError } from "../protocol/errors.ts";
import type { SqlValue } from "./binding/binding.ts";
import { rowBytes } from "./binding/_errors.ts";

/** All buffered cursors' rows may hold this many `maxResultBytes` at once. */
export const BUFFERED_CURSOR_RESULTS = 4;

/** Room reserved for one buffered cursor's rows ({@link BufferedRows.reserve}). */
export interface BufferedRoom {
  /** Bytes its rows may take: at most `maxResultBytes`. */
  bytes: number;
  /** Bytes other buffered cursors held when it was reserved. */
  held: number;
  /** Bytes all buffered cursors may hold. */
  total: number;
}

/** The server's count of buffered cursors' bytes. */
export class BufferedRows {
  readonly #maxResultBytes: number;
  #held = 0;

  constructor(maxResultBytes: number) {
    this.#maxResultBytes = maxResultBytes;
  }

  /**
   * Reserves room for a cursor's rows (until {@link release}d): at most
   * `maxResultBytes`, less when other cursors hold the rest.
   *
   * @throws {SqliteError} `BAD_REQUEST` when buffered cursors hold all the bytes they may.
   */
  reserve(): BufferedRoom {
    const total = BUFFERED_CURSOR_RESULTS * this.#maxResultBytes;
    const held = this.#held;
    if (held >= total) {
      throw new SqliteError(
        ErrorCode.BadRequest,
        `Too many rows buffered for cursors on the server: open cursors hold ${held} of the ` +
          `${total} bytes ${HOLDERS} may hold (${BUFFERED_CURSOR_RESULTS} × --max-result-bytes); ` +
          "close cursors or read them to the end, or retry later",
      );
    }
    const bytes = Math.min(this.#maxResultBytes, total - held);
    this.#held += bytes;
    return { bytes, held, total };
  }

  /** Gives back `bytes` of reserved room. */
  release(bytes: number): void {
    this.#held -= bytes;
  }
}

const HOLDERS = "cursors the server cannot stream";

/** Bytes `rows` hold, as `maxResultBytes` counts them. */
export function rowsBytes(rows: readonly SqlValue[][]): number {
  let n = 0;
  for (const row of rows) n += rowBytes(row);
  return n;
}

/**
 * `err`, a `RESULT_TOO_LARGE` of a cursor whose room was less than
 * `maxResultBytes` (other cursors held the rest), as what it is: the
 * server's buffered rows are full. `null` for any other error.
 */
export function bufferedFull(
  err: unknown,
  room: BufferedRoom,
  maxResultBytes: number,
  why: string,
): SqliteError | null {
  if (!(err instanceof SqliteError) || err.code !== ErrorCode.ResultTooLarge) return null;
  if (room.bytes >= maxResultBytes) return null;
  return new SqliteError(
    ErrorCode.BadRequest,
    `Too many rows buffered for cursors on the server: this cursor's rows exceed the ` +
      `${room.bytes} bytes left of the ${room.total} ${HOLDERS} may hold (open cursors hold ` +
      `${room.held}); ${why}. Close cursors or read them to the end, or retry later`,
    undefined,
    { cause: err, mayHaveRun: err.mayHaveRun },
  );
}
