/**
 * An ORM adapter's transaction as the client's pool sees it: a scope of the
 * pool's `transactionContext`, as the client's own `transaction()` opens, so
 * that the client's own calls made from the transaction's callback act as
 * they do inside `transaction(fn)`: with `max: 1` plain calls join the
 * transaction (instead of waiting forever for the connection it holds), a
 * `transaction()` nests in it as a savepoint (instead of waiting for the
 * writer it holds), and `reserve()` is refused with `TX_CONTROL` when it
 * would wait for it.
 *
 * @module
 */

import type { PooledConnection } from "../client/connection.ts";
import { reservedConnections, transactionContext, type TransactionScope } from "../client/pool.ts";
import { openTransactions } from "../client/_tx_order.ts";

/** A transaction scope of the pool for an adapter's transaction: inactive until {@link bind}. */
export class PoolScope implements TransactionScope {
  /** The transaction's connection (set by {@link bind}; read by the pool only while active). */
  conn!: PooledConnection;
  /** True from {@link bind} to {@link end}. */
  active = false;
  /** The transaction around the caller when the scope was made, if any. */
  readonly parent: TransactionScope | undefined = transactionContext.getStore();

  /** Binds the scope to the connection `reserved` (from `Client.reserve()`) and activates it. */
  bind(reserved: object): void {
    const conn = reservedConnections.get(reserved);
    if (conn === undefined) return; // another copy of the module: nothing to join
    this.conn = conn;
    this.active = true;
    // The adapter rolls its transaction back itself: a connection lost inside it says to
    // retry the transaction, not to send ROLLBACK (see PooledConnection.txOwner).
    conn.txOwner = this;
  }

  /**
   * For an adapter whose scope is not on the connection's stack of open
   * transactions (Kysely's), every client `transaction()` open there being
   * nested in its transaction: waits until none of them is still ending
   * (its function settled, its `RELEASE` or undo in flight; see
   * `nestedSettled`). An undo that fails rolls the whole transaction back,
   * so the adapter's `COMMIT` must not be sent before it ends (it would keep
   * that work), nor its `ROLLBACK` (that undo's own `ROLLBACK` would come
   * after it, stray). `null`, without waiting, when none is.
   */
  nestedSettled(): Promise<void> | null {
    const open = this.active ? openTransactions(this.conn) : undefined;
    if (open === undefined) return null;
    const settling = (): boolean => open.stack.some((s) => s.settling === true);
    if (!settling()) return null;
    return (async () => {
      while (settling()) await new Promise<void>((resolve) => open.ended.push(resolve));
    })();
  }

  /**
   * For an adapter whose scope is not on the connection's stack (Kysely's),
   * once its callback settled and after {@link nestedSettled}: ends every
   * client `transaction()` open on the connection, or waiting for its turn
   * there, all nested in its transaction (one left without `await`), as
   * `abandonNested` does for a `transaction()` level. They cannot be kept:
   * their savepoints end with this transaction, and their later statements
   * would run after its `COMMIT` or `ROLLBACK`, in autocommit. Their calls
   * are refused from now on (`TX_ENDED`), they send nothing more, and the
   * connection forgets them. Returns whether one was still running or
   * waiting: then the transaction must not commit, since that function
   * could still throw.
   */
  abandonNested(): boolean {
    const open = this.active ? openTransactions(this.conn) : undefined;
    if (open === undefined) return false;
    let running = false;
    for (const nested of open.stack.splice(0)) {
      if (nested.active) running = true;
      nested.active = false;
    }
    for (const waiting of open.waiting) {
      running = true;
      waiting.active = false;
    }
    if (!running) return false;
    // Their savepoints are gone with this transaction (the abandoned ones never restore it).
    this.conn.txDepth = 0;
    for (const wake of open.ended.splice(0)) wake(); // a waiting one finds itself ended
    return true;
  }

  /** Ends the scope: work the callback left behind (a timer) runs outside it. */
  end(): void {
    if (this.active && this.conn.txOwner === this) this.conn.txOwner = null;
    this.active = false;
  }
}
