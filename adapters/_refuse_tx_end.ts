/**
 * The ORM adapters' guard for raw transaction control sent from inside the
 * ORM's transaction callback: the same rules as a `transaction()` handle
 * (`findTxEnd`), so a user's `COMMIT` cannot end the transaction while the
 * callback goes on (its later statements would escape the rollback).
 *
 * @module
 */

import { ErrorCode, SqliteError } from "../client.ts";
import { findTxControl, findTxEnd } from "../client/_tx_control.ts";

/**
 * Throws `SqliteError` `TX_CONTROL` when a statement of `sql` would begin or
 * end the transaction (`BEGIN`, `COMMIT`, `END`, `ROLLBACK` without `TO`),
 * before anything is sent. Savepoints of any name stay allowed: the
 * adapters' transactions run on a reserved connection, not in a
 * `transaction()` handle, so its reserved savepoint names mean nothing here.
 *
 * @param sql The statement(s) the user sends.
 * @param where Where it was sent (`db.transaction()`), for the message.
 * @param how What to use instead, for the message.
 * @param script Look at every statement of `sql`, not only the first.
 */
export function refuseTxEnd(sql: string, where: string, how: string, script = false): void {
  if (typeof sql !== "string") return;
  const found = findTxEnd(sql, script);
  if (found === null || found.reserved) return;
  throw new SqliteError(
    ErrorCode.TxControl,
    `Cannot run "${found.statement}" inside ${where}: ${how}`,
  );
}

/**
 * True when the (first) statement of `sql` is a savepoint command:
 * `SAVEPOINT name`, `RELEASE [SAVEPOINT] name` or
 * `ROLLBACK [TRANSACTION] TO [SAVEPOINT] name`, of any name. Such a
 * statement writes nothing to the database: a read only transaction
 * (Kysely's `setAccessMode("read only")`) allows it.
 *
 * @param sql The statement the user sends.
 */
export function isSavepointCommand(sql: string): boolean {
  const word = findTxControl(sql, false);
  if (word === "SAVEPOINT" || word === "RELEASE") return true;
  if (word !== "ROLLBACK") return false;
  // ROLLBACK without TO ends the transaction; findTxEnd reports it (not as reserved).
  const end = findTxEnd(sql, false);
  return end === null || end.reserved;
}
