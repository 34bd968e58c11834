/**
 * The ORM adapters' rule for a `ConnectionError` that says a call of their
 * transaction may have run (`mayHaveRun` true: it was sent, and the
 * connection ended before its answer came): when the connection took the
 * transaction with it, nothing of that call stays applied (the server rolls
 * back the transaction of a connection that ends), so the error says
 * `mayHaveRun` false, with the original as `cause`, as the client's
 * `transaction()` does (see `lostWithConnection`, and `lostAtBegin` for a
 * `BEGIN`, both in `client/_tx_undo.ts`). Shared by the Kysely and Drizzle
 * adapters, for their `BEGIN` and the calls made inside their transactions.
 *
 * @module
 */

import { ConnectionError, type ReservedConnection } from "../client.ts";
import { reservedConnections } from "../client/pool.ts";
import { lostWithConnection } from "../client/_tx_undo.ts";

export { lostAtBegin } from "../client/_tx_undo.ts";

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
