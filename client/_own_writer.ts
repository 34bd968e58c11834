/**
 * Calls through a client's shared pool that wait for the writer held by a
 * transaction on one of the same client's own connections: the porting trap
 * of better-sqlite3 code that uses `db` (or a statement prepared on `db`)
 * inside `db.transaction(fn)`. With `max` > 1 such a call runs on another
 * connection, outside the transaction, so a write waits for the very
 * transaction whose `fn` awaits it, until `BUSY_TIMEOUT`. That error then
 * names the client's own transaction and says to query through `tx`. The
 * same watch covers `iterate()`, a `transaction()`'s `BEGIN` and the calls of
 * a reserved connection, which may wait for such a transaction too.
 *
 * Failing such a write at once instead was weighed and left out: the client
 * cannot tell whether `fn` awaits it. A write sent from `fn` without being
 * awaited waits for the commit and then runs, outside the transaction (a
 * pattern the pool supports), so refusing it would not be certain to refuse
 * a self-wait only.
 *
 * @module
 */

import { ErrorCode, SqliteError } from "../protocol/errors.ts";
import type { PooledConnection } from "./connection.ts";

/** What the pool tells about its own transactions (see `Pool`). */
export interface OwnTransactions {
  /**
   * The connection of the caller's innermost open `transaction()` of this
   * client when a plain call from there runs on another connection
   * (`max` > 1); else `null`.
   */
  callerTransaction(): PooledConnection | null;
  /** This client's connections inside a transaction now. */
  inTransaction(): readonly PooledConnection[];
}

/** One transaction open on a connection: the same one while all three hold. */
interface Mark {
  conn: PooledConnection;
  generation: number;
  openedBy: number;
}

/** What to do, in the messages of both cases. */
const ADVICE = "inside transaction(fn), query through tx (tx.prepare / tx.run), not through " +
  "the client or statements prepared on it";

/** The watch over one client's shared pool. */
export class OwnWriter {
  readonly #pool: OwnTransactions;

  /** @param pool The client's pool. */
  constructor(pool: OwnTransactions) {
    this.#pool = pool;
  }

  /**
   * Notes the client's transactions open now (call before sending); the
   * returned function turns a `BUSY_TIMEOUT` error (or a `STATEMENT_TIMEOUT`
   * of a wait for the writer) into one that names
   * this client's own transaction as the writer's holder, when one of them
   * stayed open from then until the failure: a transaction holds the writer
   * from its `BEGIN` to its end, so it held it all along. Other errors pass
   * unchanged. `null` when none of the client's connections is in a
   * transaction (the usual case: nothing to note, nothing to explain).
   */
  watch(): ((err: unknown) => unknown) | null {
    const marks: Mark[] = this.#pool.inTransaction().map((conn) => ({
      conn,
      generation: conn.generation,
      openedBy: conn.txOpenedBy,
    }));
    if (marks.length === 0) return null;
    const caller = this.#pool.callerTransaction();
    return (err) => {
      // (A STATEMENT_TIMEOUT too, when the deadline came first: "Write waited ... held by".)
      if (!(err instanceof SqliteError)) return err;
      if (err.code !== ErrorCode.BusyTimeout && err.code !== ErrorCode.StatementTimeout) return err;
      // The session the server names must be that connection's (when the
      // server says which it is): a transaction the server ended (its lease)
      // lets another client's take the writer meanwhile.
      const named = Number(/held by session (\d+): /.exec(err.message)?.[1]);
      const held = marks.find((m) =>
        m.conn.inTransaction && m.conn.generation === m.generation &&
        m.conn.txOpenedBy === m.openedBy && (m.conn.session ?? named) === named
      );
      if (held === undefined) return err;
      const fromFn = held.conn === caller
        ? ", whose fn made this call: it ran on another connection of the client, outside the " +
          "transaction, and waited for it to end"
        : "";
      const message = err.message.replace(
        /held by session (\d+): /,
        `held by this client's own transaction (session $1)${fromFn}; ${ADVICE} (elsewhere, ` +
          "await the transaction before writing); ",
      );
      if (message === err.message) return err;
      return new SqliteError(err.code, message, err.sqliteCode, { cause: err });
    };
  }
}
