/**
 * A statement prepared on the leader: see {@link DqliteStatement}.
 *
 * @module
 */

import { ErrorCode, SqliteError } from "../../protocol/errors.ts";
import { type DqliteConn, expectResponse } from "./conn.ts";
import type { DqliteDatabase, ExecResult, Params, QueryOptions, QueryResult } from "./database.ts";
import { positionalArgs } from "./_sql_scan.ts";
import { encodeExec, encodeFinalize, encodePrepare, encodeQuery } from "./wire.ts";

const noChange = (): ExecResult => ({ lastInsertId: 0, rowsAffected: 0, lastInsertIdBefore: 0 });
const noRows = (): QueryResult => ({ columns: [], rows: [] });

/**
 * A statement prepared on the leader. After a reconnection (new leader) it
 * is prepared again before its next use (preparing writes nothing).
 */
export class DqliteStatement {
  readonly #db: DqliteDatabase;
  readonly #sql: string;
  #id = -1;
  #params = 0;
  #generation = -1;
  #conn: DqliteConn | null = null;
  #finalized = false;

  /** @internal Use {@link DqliteDatabase.prepare}. */
  constructor(db: DqliteDatabase, sql: string) {
    this.#db = db;
    this.#sql = sql;
  }

  /** The SQL given to prepare. */
  get sql(): string {
    return this.#sql;
  }

  /** Number of parameters (`sqlite3_bind_parameter_count`). */
  get paramCount(): number {
    return this.#params;
  }

  /** @internal Prepares on the current connection unless done already. */
  async ensure(): Promise<void> {
    await this.#db.run(this.#sql, (conn) => this.#prepareOn(conn), null);
  }

  async #prepareOn(conn: DqliteConn): Promise<void> {
    if (this.#finalized) {
      throw new SqliteError(ErrorCode.UnknownStatement, "Statement is finalized");
    }
    if (this.#conn === conn && this.#generation === this.#db.generation) return;
    const r = expectResponse(await conn.call(encodePrepare(0, this.#sql)), "stmt", conn.address);
    this.#id = r.id;
    this.#params = r.params;
    this.#conn = conn;
    this.#generation = this.#db.generation;
  }

  /**
   * Runs the statement with `params` (EXEC request).
   *
   * @throws {SqliteError} as {@link DqliteDatabase.exec}.
   * @throws {LeaderError} `NOT_LEADER`, `LEADER_LOST` or `NO_LEADER`.
   */
  exec(params: Params = []): Promise<ExecResult> {
    return this.#db.run(this.#sql, async (conn) => {
      await this.#prepareOn(conn);
      const r = expectResponse(
        await this.#db.execCall(
          conn,
          encodeExec(0, this.#id, positionalArgs(this.#sql, params)),
          this.#sql,
        ),
        "result",
        conn.address,
      );
      return this.#db.noteExec(conn, r);
    }, noChange);
  }

  /**
   * Runs the statement with `params` and returns its rows (QUERY request).
   *
   * @throws {SqliteError} as {@link DqliteDatabase.query}.
   * @throws {LeaderError} `NOT_LEADER`, `LEADER_LOST` or `NO_LEADER`.
   */
  query(params: Params = [], options: QueryOptions = {}): Promise<QueryResult> {
    return this.#db.run(this.#sql, async (conn) => {
      await this.#prepareOn(conn);
      const args = positionalArgs(this.#sql, params);
      return await this.#db.rows(conn, encodeQuery(0, this.#id, args), options);
    }, noRows);
  }

  /** Releases the statement on the node (FINALIZE). Idempotent; never throws. */
  async finalize(): Promise<void> {
    if (this.#finalized) return;
    this.#finalized = true;
    const conn = this.#conn;
    if (conn === null || conn.closed || this.#generation !== this.#db.generation) return;
    try {
      await conn.call(encodeFinalize(0, this.#id));
    } catch {
      // The connection is gone: so is the statement.
    }
  }
}
