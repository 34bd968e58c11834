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
/** Results are written one after another into a slab of this size... */
const SLAB = 64 * 1024;
/** ...while at least this much of it is left; then a new slab starts. */
const MIN_ROOM = 4 * 1024;

/**
 * Receives rows value by value (a `RowSink`) and hands them out as one
 * {@link Encoded}. Results are written one after another into a shared
 * slab and handed out as views of it, never copied: a slab is not written
 * again once a result was taken from it (a new one starts when it is
 * full), so each view stays valid for as long as it is kept.
 */
export class RowsEncoder {
  readonly #w = new MsgpackWriter(SLAB);
  /** Where the current result begins (its header room), or -1 between results. */
  #start = -1;
  #count = 0;

  /** Starts a new result, dropping one left unfinished (after an error). */
  begin(): void {
    const w = this.#w;
    if (this.#start !== -1) w.pos = this.#start;
    else if (w.bytes.length - w.pos < MIN_ROOM) w.reset(SLAB);
    this.#start = w.pos;
    w.ensure(HEADER);
    w.pos += HEADER;
    this.#count = 0;
  }

  /** Bytes written since {@link begin} (the rows, header excluded). */
  get size(): number {
    return this.#w.pos - this.#start - HEADER;
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

  /** A BLOB of `length` bytes, to copy into the view returned at once. */
  blobRoom(length: number): Uint8Array {
    return this.#w.binaryRoom(length);
  }

  /** A TEXT of `length` bytes of valid UTF-8, to copy into the view returned at once. */
  textRoom(length: number): Uint8Array {
    return this.#w.stringRoom(length);
  }

  /** The rows written since {@link begin}, as one MessagePack array. */
  finish(): Encoded {
    const w = this.#w;
    const n = this.#count;
    const end = w.pos;
    // The header goes right before the rows: 1, 3 or 5 bytes.
    const at = this.#start + (n < 16 ? HEADER - 1 : n < 0x10000 ? HEADER - 3 : 0);
    w.pos = at;
    w.arrayHeader(n);
    w.pos = end;
    this.#start = -1;
    const encoded = new Encoded(w.bytes.subarray(at, end), n);
    // A slab grown for one large result is not kept for the small ones after it.
    if (w.bytes.length > SLAB) w.reset(SLAB);
    return encoded;
  }
}
