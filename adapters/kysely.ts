/**
 * Kysely on netsqlite: {@link NetsqliteDialect} is a Kysely `Dialect` whose
 * driver runs queries through a netsqlite {@link Client}, with SQLite's
 * adapter, introspector and query compiler. `kysely` is an optional peer
 * dependency: only this module imports it (importing `@netsqlite/netsqlite`
 * itself pulls it not in).
 *
 * - Every query, and every transaction from `begin` to `commit`/`rollback`
 *   (savepoints included), runs on a connection Kysely acquires with
 *   `Client.reserve()`, so transactions never mix with other callers' work.
 * - `numAffectedRows` and `insertId` are bigint, as Kysely expects.
 * - `stream()` reads through the server's cursor (`iterate()`), chunk by
 *   chunk, so memory stays bounded.
 *
 * @example
 * ```ts
 * import { serve } from "../server.ts";
 * import { connect } from "../client.ts";
 * import { NetsqliteDialect } from "./kysely.ts";
 * import { type Generated, Kysely } from "kysely";
 *
 * interface Database {
 *   person: { id: Generated<number>; name: string };
 * }
 * const dir = await Deno.makeTempDir();
 * await using server = await serve({ database: `${dir}/a.db`, path: `${dir}/a.sock` });
 * const client = await connect({ path: `${dir}/a.sock` });
 * const db = new Kysely<Database>({ dialect: new NetsqliteDialect({ client, closeClient: true }) });
 * await db.schema.createTable("person")
 *   .addColumn("id", "integer", (c) => c.primaryKey())
 *   .addColumn("name", "text", (c) => c.notNull())
 *   .execute();
 * const { insertId } = await db.insertInto("person").values({ name: "Ada" }).executeTakeFirstOrThrow();
 * const ada = await db.selectFrom("person").selectAll().where("id", "=", Number(insertId))
 *   .executeTakeFirst();
 * if (ada?.name !== "Ada") throw new Error("expected Ada");
 * await db.destroy(); // closes the client (closeClient: true)
 * ```
 *
 * @module
 */

import {
  type CompiledQuery,
  createQueryId,
  type DatabaseConnection,
  type DatabaseIntrospector,
  type Dialect,
  type DialectAdapter,
  type Driver,
  IdentifierNode,
  type Kysely,
  type QueryCompiler,
  type QueryResult,
  RawNode,
  SqliteAdapter,
  SqliteIntrospector,
  SqliteQueryCompiler,
} from "kysely";
import type { BindParams, Client, ReservedConnection, RunResult } from "../client.ts";

/** Options of {@link NetsqliteDialect}. */
export interface NetsqliteDialectConfig {
  /**
   * The client, or a function that connects one (called once, by Kysely's
   * first query).
   */
  client: Client | (() => Promise<Client>);
  /**
   * Close the client on `db.destroy()`.
   * @default {true when `client` is a function, else false}
   */
  closeClient?: boolean;
}

/**
 * A Kysely dialect for netsqlite: SQLite's SQL, run through a client.
 *
 * @example
 * ```ts
 * import { serve } from "../server.ts";
 * import { connect } from "../client.ts";
 * import { NetsqliteDialect } from "./kysely.ts";
 * import { Kysely, sql } from "kysely";
 * const dir = await Deno.makeTempDir();
 * await using server = await serve({ database: `${dir}/a.db`, path: `${dir}/a.sock` });
 * const db = new Kysely<Record<string, never>>({
 *   dialect: new NetsqliteDialect({ client: () => connect({ path: `${dir}/a.sock` }) }),
 * });
 * const { rows } = await sql<{ x: number }>`SELECT 6 * 7 AS x`.execute(db);
 * if (rows[0].x !== 42) throw new Error("expected 42");
 * await db.destroy();
 * ```
 */
export class NetsqliteDialect implements Dialect {
  readonly #config: NetsqliteDialectConfig;

  /**
   * Creates the dialect; nothing connects until Kysely's first query.
   *
   * @param config The client (or how to connect one).
   * @throws {TypeError} when `config.client` is neither a client nor a function.
   */
  constructor(config: NetsqliteDialectConfig) {
    const c = config?.client as unknown;
    if (typeof c !== "function" && (c === null || typeof c !== "object")) {
      throw new TypeError(
        'Invalid option "client": expected a netsqlite Client or a function returning one',
      );
    }
    this.#config = { ...config };
  }

  /**
   * Creates the driver Kysely runs queries with (called by Kysely).
   *
   * @returns the driver that runs queries through the client.
   */
  createDriver(): Driver {
    return new NetsqliteDriver(this.#config);
  }

  /**
   * Creates the query compiler (called by Kysely).
   *
   * @returns Kysely's SQLite query compiler.
   */
  createQueryCompiler(): QueryCompiler {
    return new SqliteQueryCompiler();
  }

  /**
   * Creates the adapter (called by Kysely).
   *
   * @returns Kysely's SQLite adapter.
   */
  createAdapter(): DialectAdapter {
    return new SqliteAdapter();
  }

  /**
   * Creates the schema introspector (called by Kysely).
   *
   * @param db The Kysely instance.
   * @returns Kysely's SQLite introspector.
   */
  createIntrospector(db: Kysely<any>): DatabaseIntrospector {
    return new SqliteIntrospector(db);
  }
}

/** The driver: one reserved client connection per acquired Kysely connection. */
class NetsqliteDriver implements Driver {
  readonly #config: NetsqliteDialectConfig;
  #client: Client | null = null;

  constructor(config: NetsqliteDialectConfig) {
    this.#config = config;
  }

  async init(): Promise<void> {
    const c = this.#config.client;
    this.#client = typeof c === "function" ? await c() : c;
  }

  async acquireConnection(): Promise<DatabaseConnection> {
    return new NetsqliteConnection(await this.#client!.reserve());
  }

  async beginTransaction(connection: DatabaseConnection): Promise<void> {
    await (connection as NetsqliteConnection).exec("BEGIN");
  }

  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    await (connection as NetsqliteConnection).exec("COMMIT");
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    await (connection as NetsqliteConnection).exec("ROLLBACK");
  }

  async savepoint(
    connection: DatabaseConnection,
    name: string,
    compileQuery: QueryCompiler["compileQuery"],
  ): Promise<void> {
    await connection.executeQuery(savepointQuery("savepoint", name, compileQuery));
  }

  async rollbackToSavepoint(
    connection: DatabaseConnection,
    name: string,
    compileQuery: QueryCompiler["compileQuery"],
  ): Promise<void> {
    await connection.executeQuery(savepointQuery("rollback to", name, compileQuery));
  }

  async releaseSavepoint(
    connection: DatabaseConnection,
    name: string,
    compileQuery: QueryCompiler["compileQuery"],
  ): Promise<void> {
    await connection.executeQuery(savepointQuery("release", name, compileQuery));
  }

  async releaseConnection(connection: DatabaseConnection): Promise<void> {
    // A connection released inside a transaction is closed, not reused (the server rolls back).
    (connection as NetsqliteConnection).release();
    await Promise.resolve();
  }

  async destroy(): Promise<void> {
    const close = this.#config.closeClient ?? typeof this.#config.client === "function";
    if (close) await this.#client?.close();
    this.#client = null;
  }
}

function savepointQuery(
  command: string,
  name: string,
  compileQuery: QueryCompiler["compileQuery"],
): CompiledQuery {
  const node = RawNode.createWithChildren([
    RawNode.createWithSql(`${command} `),
    IdentifierNode.create(name),
  ]);
  return compileQuery(node, createQueryId());
}

/** Query kinds that return rows only with a `returning` clause. */
const WRITES = new Set(["InsertQueryNode", "UpdateQueryNode", "DeleteQueryNode"]);

/** One Kysely connection: a reserved client connection. */
class NetsqliteConnection implements DatabaseConnection {
  readonly #conn: ReservedConnection;

  constructor(conn: ReservedConnection) {
    this.#conn = conn;
  }

  exec(sql: string): Promise<void> {
    return this.#conn.exec(sql);
  }

  release(): void {
    this.#conn.release();
  }

  async executeQuery<R>(compiled: CompiledQuery): Promise<QueryResult<R>> {
    const { sql } = compiled;
    const params = compiled.parameters as BindParams;
    const kind = compiled.query.kind;
    if (kind === "SelectQueryNode") return { rows: await this.#conn.query<R>(sql, params) };
    if (WRITES.has(kind) && !("returning" in compiled.query && compiled.query.returning)) {
      return changed(await this.#conn.run(sql, params), []);
    }
    if (WRITES.has(kind)) return { rows: await this.#conn.query<R>(sql, params) }; // returning
    if (kind !== "RawNode") return changed(await this.#conn.run(sql, params), []);
    // Raw SQL: rows when the statement has result columns (as better-sqlite3's
    // `reader`), else what it changed.
    const stmt = await this.#conn.prepare(sql);
    try {
      if (stmt.columns.length > 0) return { rows: await stmt.all<R>(params) };
      return changed(await stmt.run(params), []);
    } finally {
      stmt.finalize().catch(() => {/* the connection is gone; so is the statement */});
    }
  }

  async *streamQuery<R>(compiled: CompiledQuery, chunkSize = 100): AsyncIterableIterator<
    QueryResult<R>
  > {
    if (!Number.isInteger(chunkSize) || chunkSize < 1) {
      throw new RangeError(`Invalid chunkSize ${chunkSize}: expected a positive integer`);
    }
    let rows: R[] = [];
    const params = compiled.parameters as BindParams;
    for await (const row of this.#conn.iterate<R>(compiled.sql, params)) {
      rows.push(row);
      if (rows.length === chunkSize) {
        yield { rows };
        rows = [];
      }
    }
    if (rows.length > 0) yield { rows };
  }
}

function changed<R>(r: RunResult, rows: R[]): QueryResult<R> {
  return { numAffectedRows: BigInt(r.changes), insertId: BigInt(r.lastInsertRowid), rows };
}
