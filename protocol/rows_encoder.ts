/**
 * Encodes a query's rows straight into MessagePack as SQLite steps through
 * them (`Stmt.allInto` in `engine/binding`), instead of building an array
 * per row and encoding those afterwards. The result, an {@link Encoded}
 * array of row arrays, is copied into the reply as it is: the bytes are the
 * same as encoding the arrays would give.
 *
 * @module
 */

import { Encoded, MsgpackWriter } from "./msgpack.ts";

/** Room left before the rows for the array header, written once they are counted. */
const HEADER = 5;
/** Initial buffer; one larger than {@link KEEP} is dropped after use. */
const INITIAL = 16 * 1024;
const KEEP = 1024 * 1024;

/** Receives rows value by value (a `RowSink`) and hands them out as one {@link Encoded}. */
export class RowsEncoder {
  readonly #w = new MsgpackWriter(INITIAL);
  #count = 0;

  /** Starts a new result, dropping anything written before. */
  begin(): void {
    this.#w.pos = HEADER;
    this.#count = 0;
  }

  /** Bytes written since {@link begin} (the rows, header excluded). */
  get size(): number {
    return this.#w.pos - HEADER;
  }

  /** A row of `length` values follows. */
  row(length: number): void {
    this.#count++;
    this.#w.arrayHeader(length);
  }

  /** NULL. */
  nil(): void {
    this.#w.nil();
  }

  /** An INTEGER (a bigint only beyond ±(2^53 − 1)). */
  integer(value: number | bigint): void {
    this.#w.number(value);
  }

  /** A REAL. */
  real(value: number): void {
    this.#w.number(value);
  }

  /** A TEXT. */
  text(value: string): void {
    this.#w.string(value);
  }

  /** A BLOB. */
  blob(value: Uint8Array): void {
    this.#w.binary(value);
  }

  /** The rows written since {@link begin}, as one MessagePack array (a copy). */
  finish(): Encoded {
    const w = this.#w;
    const n = this.#count;
    const end = w.pos;
    // The header goes right before the rows: 1, 3 or 5 bytes.
    const start = n < 16 ? HEADER - 1 : n < 0x10000 ? HEADER - 3 : 0;
    w.pos = start;
    w.arrayHeader(n);
    const encoded = new Encoded(w.bytes.slice(start, end), n);
    if (w.bytes.length > KEEP) w.reset(INITIAL);
    this.begin();
    return encoded;
  }
}
