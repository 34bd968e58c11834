/**
 * Calls through a client's shared pool that wait for the writer held by a
 * transaction on one of the same client's own connections: the porting trap
 * of better-sqlite3 code that uses `db` (or a statement prepared on `db`)
 * inside `db.transaction(fn)`. With `max` > 1 such a call runs on another
 * connection, so a write waits for the very transaction whose `fn` awaits it.
 *
 * - A call that surely takes the writer, made from inside `fn` (followed
 *   across awaits) while the transaction is open, fails at once with
 *   `TX_CONTROL` instead of waiting out the busy timeout ({@link OwnWriter.check}).
 * - Any other call that fails with `BUSY_TIMEOUT` while a transaction of this
 *   client held the writer from before the call until its failure gets a
 *   message that says so ({@link OwnWriter.watch}).
 *
 * @module
 */

import { ErrorCode, SqliteError } from "../protocol/errors.ts";
import { scan } from "../protocol/sql_lexer.ts";
import type { PooledConnection } from "./connection.ts";

/** What the pool tells about its own transactions (see `Pool`). */
export interface OwnTransactions {
  /**
   * The connection of the caller's innermost open `transaction()` of this
   * client, when a write on another connection would surely wait for it
   * (`max` > 1, a server that gives a transaction the writer at `BEGIN`);
   * else `null`.
   */
  callerTransaction(): PooledConnection | null;
  /** This client's connections inside a transaction now. */
  inTransaction(): PooledConnection[];
}

/** One transaction open on a connection: the same one while all three hold. */
interface Mark {
  conn: PooledConnection;
  generation: number;
  openedBy: number;
}

const ADVICE = "inside transaction(fn), query through tx (tx.prepare / tx.run), not through " +
  "the client or statements prepared on it";

/** The guard of one client's shared pool. */
export class OwnWriter {
  readonly #pool: OwnTransactions;

  /** @param pool The client's pool. */
  constructor(pool: OwnTransactions) {
    this.#pool = pool;
  }

  /**
   * Throws `TX_CONTROL` when the call would wait for the caller's own
   * transaction: made from inside its `fn` while it is open, and surely
   * taking the writer (`sql` `null`: a script or batch, which always do).
   * `what` names the call in the message ("write through the client").
   */
  check(sql: string | null, what: string): void {
    if (sql !== null && !surelyWrites(sql)) return;
    if (this.#pool.callerTransaction() === null) return;
    throw new SqliteError(
      ErrorCode.TxControl,
      `Cannot ${what} from inside the client's own transaction(): the transaction holds ` +
        "the writer, and this call would run on another connection of the client and wait " +
        `for it until BUSY_TIMEOUT; ${ADVICE}`,
    );
  }

  /**
   * Notes the client's transactions open now (call before sending); the
   * returned function turns a `BUSY_TIMEOUT` error into one that names
   * this client's own transaction as the holder, when one of them stayed
   * open from then until the failure (it held the writer all along).
   */
  watch(): (err: unknown) => unknown {
    const marks: Mark[] = this.#pool.inTransaction().map((conn) => ({
      conn,
      generation: conn.generation,
      openedBy: conn.txOpenedBy,
    }));
    if (marks.length === 0) return same;
    return (err) => {
      if (!(err instanceof SqliteError) || err.code !== ErrorCode.BusyTimeout) return err;
      const held = marks.some((m) =>
        m.conn.inTransaction && m.conn.generation === m.generation &&
        m.conn.txOpenedBy === m.openedBy
      );
      if (!held) return err;
      const message = err.message.replace(
        /held by session (\d+): /,
        `held by this client's own transaction (session $1): ${ADVICE}, or await the ` +
          "transaction before writing; ",
      );
      if (message === err.message) return err;
      return new SqliteError(err.code, message, err.sqliteCode, { cause: err });
    };
  }
}

function same(err: unknown): unknown {
  return err;
}

/** First words of statements that always write (SQLite never runs them read-only). */
const WRITES: ReadonlySet<string> = new Set([
  "insert",
  "update",
  "delete",
  "replace",
  "create",
  "drop",
  "alter",
]);

/** First words of the statement after the common table expressions of a `WITH`. */
const CTE_END: ReadonlySet<string> = new Set([
  "select",
  "values",
  "insert",
  "update",
  "delete",
  "replace",
]);

/**
 * True when `sql` surely writes, so the server runs it on the writer:
 * `INSERT`, `UPDATE`, `DELETE`, `REPLACE` (also after `WITH`), `CREATE`,
 * `DROP`, `ALTER`. False for anything else, also statements that may write.
 */
export function surelyWrites(sql: string): boolean {
  let first = "";
  let depth = 0;
  let main = "";
  scan(sql, (t) => {
    if (first === "") {
      first = t.kind === "word" ? t.text : "?";
      return first === "with";
    }
    if (t.kind === "semicolon") return false;
    if (t.kind === "punct" && t.text === "(") depth++;
    else if (t.kind === "punct" && t.text === ")") depth--;
    else if (depth === 0 && t.kind === "word" && CTE_END.has(t.text)) {
      main = t.text;
      return false;
    }
    return true;
  });
  return WRITES.has(first === "with" ? main : first);
}
