/**
 * Streaming a statement's rows through a server cursor.
 *
 * @module
 */

import { AbortError, ConnectionError, ErrorCode, SqliteError } from "../protocol/errors.ts";
import {
  type CallOptions,
  Op,
  type Replies,
  type StatementRef,
  type WireParams,
} from "../protocol/messages.ts";
import { type CheckedOptions, wireOptions } from "./_calls.ts";
import { type CursorHold, NO_CURSOR, type PooledConnection } from "./connection.ts";
import { abortable } from "./link.ts";
import { type RowMaker, rowMaker } from "./rows.ts";

/** Options of `iterate()`. */
export interface IterateOptions extends CallOptions {
  /** Yield rows as arrays of values instead of objects. @default {false} */
  arrays?: boolean;
}

/** An open cursor, as far as its iterator's collection needs to know. */
interface OpenCursor {
  conn: PooledConnection | null;
  hold: CursorHold | null;
  id: number | null;
  at: number;
}

/**
 * Iterators dropped unfinished (`await db.iterate(sql).next()`, then
 * forgotten) close their cursor and end their connection's hold once
 * collected: else the connection would stay busy, out of `reserve()`'s and
 * `transaction()`'s reach, until the server's cursor idle timeout.
 */
const droppedCursors = new FinalizationRegistry<OpenCursor>((c) => {
  const { conn, hold, id, at } = c;
  hold?.release();
  if (conn !== null && id !== null && conn.generation === at && conn.open) {
    conn.request(Op.CloseCursor, [id], undefined, at).catch(() => {});
  }
});

/**
 * Opens a cursor on `connection` and yields its rows, asking for the next
 * chunk while the current one is consumed (one chunk of credit). The cursor
 * opens when iterating starts, with `params` as they are then (callers pass
 * their own copy, checked and with its bytes copied at their call, see
 * `ownParams` and `ownBytes`). `writes`: the statement may wait for the
 * server's writer (see `waitsForWriter`). `onColumns` is told the result
 * column names once the cursor opened.
 *
 * A cursor opened inside a transaction ends with it, as on the server: once
 * the connection's transaction has ended (COMMIT, ROLLBACK, the end of
 * `transaction()`'s function, rolled back by the server, or ended by an
 * `exec` script that began another, which the reply's `TxEnded` status bit
 * tells), the next pull fails with `CURSOR_CLOSED` at once, without
 * yielding the rows already received. Lost with the connection, it fails
 * as the other calls of that transaction do, with `ConnectionError`: its
 * `next` in flight's error, else the lost transaction's.
 */
export function cursorRows(
  connection: PooledConnection | Promise<PooledConnection>,
  ref: StatementRef,
  params: WireParams,
  options: CheckedOptions | undefined,
  writes: boolean,
  generation?: number,
  onColumns?: (columns: string[]) => void,
): AsyncGenerator<unknown> {
  const open: OpenCursor = { conn: null, hold: null, id: null, at: 0 };
  const rows = openCursor(open, connection, ref, params, options, writes, generation, onColumns);
  droppedCursors.register(rows, open, open);
  return rows;
}

async function* openCursor(
  open: OpenCursor,
  connection: PooledConnection | Promise<PooledConnection>,
  ref: StatementRef,
  params: WireParams,
  options: CheckedOptions | undefined,
  writes: boolean,
  generation?: number,
  onColumns?: (columns: string[]) => void,
): AsyncGenerator<unknown> {
  // Held in the same run of code as chosen: no other caller may take it in between.
  const signal = options?.signal;
  // A wait for a connection of the pool ends when the signal aborts, as any call's does.
  const conn = connection instanceof Promise ? await abortable(connection, signal) : connection;
  const hold = open.hold = conn.hold();
  open.conn = conn;
  try {
    const [id, columns] = await conn.request(
      Op.Iterate,
      [ref, params, wireOptions(options)],
      signal,
      generation,
      writes,
    );
    onColumns?.(columns);
    // (A ROLLBACK answered without a cursor: it returns no rows.)
    if (id === NO_CURSOR) return;
    const at = conn.generation; // the cursor lives on the link that answered
    // The transaction the cursor was opened in (the request that opened it), or 0.
    const tx = conn.inTransaction ? conn.txOpenedBy : 0;
    const txEnded = (): boolean =>
      tx !== 0 && (conn.generation !== at || !conn.inTransaction || conn.txOpenedBy !== tx);
    hold.bind();
    open.id = id;
    open.at = at;
    const arrays = options?.arrays === true;
    let make: RowMaker | undefined;
    // The next chunk is asked for ahead of use; should the consumer stop
    // iterating without ending the loop, its failure (a closed client) is
    // nobody's to handle: it must not surface as an unhandled rejection.
    const ahead = () => {
      const next = conn.request(Op.Next, [id], signal, at);
      next.catch(() => {});
      return next;
    };
    let pending: Promise<Replies[typeof Op.Next]> | null = ahead();
    // Why the cursor's transaction ended: the connection's loss (the error of
    // the `next` in flight, else of any call there), or COMMIT or ROLLBACK.
    const ended = async (): Promise<Error> => {
      if (!conn.lostInside(at, tx)) return cursorTxEnded(id);
      if (pending !== null) {
        const err = await pending.then(() => null, (e: unknown) => e);
        if (err instanceof ConnectionError) return err;
      }
      return conn.lostTransactionError();
    };
    try {
      while (pending !== null) {
        if (txEnded()) throw await ended();
        const [rows, done]: Replies[typeof Op.Next] = await pending;
        hold.touch();
        pending = done ? null : ahead();
        for (let i = 0; i < rows.length; i++) {
          // Rows already received are not yielded once the signal aborted, or
          // once the transaction the cursor was opened in ended.
          if (signal?.aborted) {
            throw new AbortError("Call was aborted by its signal", { cause: signal.reason });
          }
          if (txEnded()) throw await ended();
          yield arrays ? rows[i] : (make ??= rowMaker(columns, Infinity))(rows[i]);
        }
      }
    } finally {
      if (pending !== null) {
        pending.catch(() => {});
        conn.request(Op.CloseCursor, [id], undefined, at).catch(() => {});
      }
    }
  } finally {
    hold.release();
    droppedCursors.unregister(open);
  }
}

/** The error of a pull from a cursor whose transaction ended (the server's words). */
function cursorTxEnded(id: number): SqliteError {
  return new SqliteError(
    ErrorCode.CursorClosed,
    `Cursor ${id} was closed when its transaction ended (COMMIT, ROLLBACK, or rolled back by ` +
      "the server): a cursor opened inside a transaction lasts until the transaction ends; " +
      "read it to the end before COMMIT, or open it outside the transaction",
  );
}
