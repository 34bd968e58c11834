/**
 * The ORM adapters' rule for a `ConnectionError` that says a call of their
 * transaction may have run (`mayHaveRun` true: it was sent, and the
 * connection ended before its answer came): when the connection took the
 * transaction with it, nothing of that call stays applied (the server rolls
 * back the transaction of a connection that ends), so the error says
 * `mayHaveRun` false, with the original as `cause`, as the client's
 * `transaction()` does (see `lostWithConnection`). Shared by the Kysely and
 * Drizzle adapters, for their `BEGIN` and the calls made inside their
 * transactions.
 *
 * @module
 */

import { ConnectionError, type ReservedConnection } from "../client.ts";
import { reservedConnections } from "../client/pool.ts";
import { lostWithConnection } from "../client/_tx_undo.ts";

/**
 * The error of a call that failed with `err` on `tx`, the connection of an
 * ORM's transaction (`null`: none was open): when `err` is a
 * `ConnectionError` saying the call may have run and the transaction was
 * lost with the connection before anything could commit it, the loss
 * (`CONNECTION_CLOSED`, `mayHaveRun` false, `err` as `cause`; see
 * `lostWithConnection`), which is true of the call too: its effects went
 * with the transaction the server rolled back. Decided at once, before the
 * ORM's `ROLLBACK`, which ends that state. Else `err` as it is.
 */
export function lostIn(tx: ReservedConnection | null, err: unknown): unknown {
  if (tx === null || !(err instanceof ConnectionError) || !err.mayHaveRun) return err;
  const conn = reservedConnections.get(tx);
  return conn === undefined ? err : lostWithConnection(conn, err);
}

/**
 * The error of an ORM transaction's `BEGIN` that failed with `err`: when
 * `err` is a `ConnectionError` saying it may have run, the same error with
 * `mayHaveRun` false (same `code`, `err` as `cause`). A `BEGIN` that ran on
 * a connection that then ended opened a transaction that ended with it (the
 * server rolls it back), and nothing else of the transaction was sent, so
 * nothing of it stays applied: retrying the whole transaction is safe. The
 * client cannot tell the loss from the connection's transaction state here
 * (as {@link lostIn} does): no answer said the transaction was open. Else
 * `err` as it is.
 */
export function lostAtBegin(err: unknown): unknown {
  if (!(err instanceof ConnectionError) || !err.mayHaveRun) return err;
  return new ConnectionError(
    `Connection was lost while the transaction was beginning (${err.message}); had its BEGIN ` +
      "run, the transaction ended with the connection, which the server rolled back: nothing " +
      "of it stays applied; retry the whole transaction",
    { code: err.code, cause: err, mayHaveRun: false },
  );
}
