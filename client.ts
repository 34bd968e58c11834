/**
 * The netsqlite client: an async API in the vocabulary of better-sqlite3 and
 * `@db/sqlite`, talking to a netsqlite server over a Unix socket or TCP.
 *
 * @example
 * ```ts
 * import { serve } from "./server.ts";
 * import { connect } from "./client.ts";
 * const dir = await Deno.makeTempDir();
 * await using server = await serve({ database: `${dir}/app.db`, path: `${dir}/app.sock` });
 * await using db = await connect({ path: `${dir}/app.sock` });
 * await db.exec("CREATE TABLE kv (k TEXT PRIMARY KEY, v)");
 * await db.run("INSERT INTO kv VALUES (?, ?)", ["answer", 42]);
 * const row = await db.get<{ v: number }>("SELECT v FROM kv WHERE k = ?", ["answer"]);
 * if (row?.v !== 42) throw new Error("expected 42");
 * ```
 *
 * @module
 */

import { Link } from "./client/link.ts";
import { type AutostartOptions, connectOrStart } from "./client/autostart.ts";
import { ConnectionError, ErrorCode, SqliteError } from "./protocol/errors.ts";
import {
  type BatchItemPayload,
  type CallOptions,
  type HelloReply,
  Op,
  type PreparePayload,
  type QueryPayload,
  type RunPayload,
} from "./protocol/messages.ts";
import { invalidParamsMessage } from "./protocol/values.ts";
import {
  type Address,
  channelSocketPath,
  DEFAULT_DATABASE,
  defaultPortFile,
  defaultSocketPath,
  HAS_UNIX_SOCKETS,
} from "./transport/address.ts";
import { connectTo, type TlsClientOptions } from "./transport/connect.ts";
import { DEFAULT_MAX_FRAME_SIZE } from "./transport/frame_reader.ts";

/** A value a statement parameter may hold. */
export type BindValue = null | number | bigint | boolean | string | Uint8Array;

/** Statement parameters: positional (array) or named (object). */
export type BindParams = readonly BindValue[] | Readonly<Record<string, BindValue>>;

/** A value SQLite returns: integers beyond 2^53 come back as bigint. */
export type SqlValue = null | number | bigint | string | Uint8Array;

/** A row as an object keyed by column name. */
export type Row = Record<string, SqlValue>;

/** Result of {@link Client.run}. */
export interface RunResult {
  /** Rows changed by the statement. */
  changes: number | bigint;
  /** Rowid of the last inserted row. */
  lastInsertRowid: number | bigint;
}

/** One statement of {@link Client.batch}. */
export interface BatchStatement {
  /** SQL text of one statement. */
  sql: string;
  /** Its parameters. */
  params?: BindParams;
}

/** Result of one statement of {@link Client.batch}. */
export interface BatchResult<T = Row> extends RunResult {
  /** Rows the statement returned (empty for statements that return none). */
  rows: T[];
}

/** Options of {@link Client.transaction}. */
export interface TransactionOptions {
  /**
   * How the outermost transaction begins: `deferred`, `immediate` or
   * `exclusive`. netsqlite gives the transaction the writer either way.
   * @default {"deferred"}
   */
  behavior?: "deferred" | "immediate" | "exclusive";
}

/** Options of {@link connect}. */
export interface ConnectOptions {
  /** Unix socket path of the server. @default {the default socket of `database`} */
  path?: string;
  /** TCP host of the server. @default {"127.0.0.1" when `port` is set} */
  hostname?: string;
  /** TCP port of the server. */
  port?: number;
  /**
   * Database whose default socket to use when neither `path` nor `port` is given.
   * @default {"netsqlite.db"}
   */
  database?: string;
  /** Largest frame payload accepted from the server, in bytes. @default {67108864} */
  maxFrameSize?: number;
  /**
   * Milliseconds to wait for any reply before the request rejects with
   * `REQUEST_TIMEOUT` and the connection is closed (so no late reply can be
   * mistaken, and the server rolls back an open transaction); 0 = wait forever.
   * @default {0}
   */
  requestTimeout?: number;
  /**
   * Reconnect on the next call after the connection was lost, unless a
   * transaction was open (see {@link Client}).
   * @default {true}
   */
  reconnect?: boolean;
  /** Secret to present in the handshake, when the server requires one. @default {null} */
  token?: string | null;
  /** Connect over TLS (TCP only), trusting `caCerts`. @default {null, plain TCP} */
  tls?: TlsClientOptions | null;
  /** Connect to the per-user socket of this named channel (see `serve({ channel })`). */
  channel?: string;
  /**
   * When no server answers at the Unix socket, start one (a detached
   * `server.ts` process serving `database`) and wait until it answers.
   * Needs `--allow-run`. @default {undefined, no autostart}
   */
  autostart?: AutostartOptions;
}

export type { CallOptions } from "./protocol/messages.ts";
export type { AutostartOptions } from "./client/autostart.ts";
export type { TlsClientOptions } from "./transport/connect.ts";

/**
 * Connects to a netsqlite server and completes the handshake.
 *
 * @param options Where the server is; `connect()` alone uses the default
 *   socket of `./netsqlite.db`.
 * @returns a connected client.
 * @throws {ConnectionError} when nothing answers at the address.
 * @throws {ProtocolError} `PROTOCOL_VERSION` when the server speaks another version.
 */
export async function connect(options: ConnectOptions = {}): Promise<Client> {
  const config: LinkConfig = {
    addr: await resolveAddress(options),
    maxFrameSize: options.maxFrameSize ?? DEFAULT_MAX_FRAME_SIZE,
    requestTimeout: options.requestTimeout ?? 0,
    reconnect: options.reconnect ?? true,
    token: options.token ?? null,
    tls: options.tls ?? null,
  };
  if (!Number.isInteger(config.requestTimeout) || config.requestTimeout < 0) {
    throw new RangeError(
      `Invalid option "requestTimeout": expected a whole number of ms >= 0, got ${config.requestTimeout}`,
    );
  }
  const [link, info] = options.autostart === undefined
    ? await openLink(config)
    : await connectOrStart(() => openLink(config), config.addr, options.autostart, config.token);
  return new Client(config, link, info);
}

interface LinkConfig {
  addr: Address;
  maxFrameSize: number;
  requestTimeout: number;
  reconnect: boolean;
  token: string | null;
  tls: TlsClientOptions | null;
}

async function openLink(config: LinkConfig): Promise<[Link, HelloReply]> {
  const conn = await connectTo(config.addr, config.tls);
  const link = new Link(conn, config.addr, config.maxFrameSize, config.requestTimeout);
  try {
    return [link, await link.hello(config.token)];
  } catch (err) {
    link.fail(err);
    await link.ended;
    throw err;
  }
}

async function resolveAddress(options: ConnectOptions): Promise<Address> {
  if (options.port !== undefined || options.hostname !== undefined) {
    return { transport: "tcp", hostname: options.hostname ?? "127.0.0.1", port: options.port ?? 0 };
  }
  if (options.path !== undefined) return { transport: "unix", path: options.path };
  if (options.channel !== undefined && HAS_UNIX_SOCKETS) {
    return { transport: "unix", path: channelSocketPath(options.channel) };
  }
  const database = options.database ?? DEFAULT_DATABASE;
  if (HAS_UNIX_SOCKETS) return { transport: "unix", path: defaultSocketPath(database) };
  const announced = options.channel !== undefined
    ? channelSocketPath(options.channel)
    : defaultPortFile(database);
  const port = Number(await Deno.readTextFile(announced).catch(() => "NaN"));
  if (!Number.isInteger(port)) {
    throw new ConnectionError(`Cannot find the server of ${database}: no port in ${announced}`);
  }
  return { transport: "tcp", hostname: "127.0.0.1", port };
}

/**
 * A connection to a netsqlite server. Requests may be issued concurrently;
 * they run on the server in the order issued and are pipelined on the wire.
 *
 * When the connection is lost, pending requests reject with
 * `ConnectionError`. If no transaction was open, the next call reconnects.
 * If one was open, the server has rolled it back, and every call fails with
 * `ConnectionError` until the application sends `ROLLBACK` (answered at
 * once) — so no statement meant for the lost transaction ever runs on a new
 * connection in autocommit. `transaction()` does this by itself.
 */
export class Client {
  readonly #config: LinkConfig;
  #link: Link;
  #info: HelloReply;
  #reconnecting: Promise<void> | null = null;
  #generation = 0;
  #txDepth = 0;
  #lostTransaction = false;
  #judged: Link | null = null;
  #closedByUser = false;

  /** @internal Use {@link connect}. */
  constructor(config: LinkConfig, link: Link, info: HelloReply) {
    this.#config = config;
    this.#link = link;
    this.#info = info;
  }

  /** What the server reported in the handshake: versions and limits. */
  get serverInfo(): HelloReply {
    return this.#info;
  }

  /** True while this connection has a transaction open on the server. */
  get inTransaction(): boolean {
    return this.#link.failure === null && this.#link.inTransaction;
  }

  /** True once {@link close} was called. */
  get closed(): boolean {
    return this.#closedByUser;
  }

  /** @internal Changes each time the client reconnects (statement handles expire). */
  get _generation(): number {
    return this.#generation;
  }

  /**
   * Runs a script of zero or more statements, without parameters.
   *
   * @throws {SqliteError} from the first failing statement; earlier ones stay applied.
   */
  async exec(sql: string): Promise<void> {
    await this._call(Op.Exec, sql);
  }

  /**
   * Runs one statement and reports what it changed.
   *
   * @throws {SqliteError}
   */
  async run(sql: string, params?: BindParams, options?: CallOptions): Promise<RunResult> {
    const [changes, lastInsertRowid] = await this._call(Op.Run, sql, params, options) as RunPayload;
    return { changes, lastInsertRowid };
  }

  /**
   * Runs one statement and returns every row as an object. The whole result
   * is buffered; results above the server's `maxResultBytes` fail with
   * `RESULT_TOO_LARGE`: use {@link iterate} for those.
   *
   * @throws {SqliteError}
   */
  async query<T = Row>(sql: string, params?: BindParams, options?: CallOptions): Promise<T[]> {
    const [columns, rows] = await this._call(Op.Query, sql, params, options) as QueryPayload;
    return toObjects(columns, rows) as T[];
  }

  /**
   * Runs one statement and returns every row as an array of values.
   *
   * @throws {SqliteError}
   */
  async values<T extends unknown[] = SqlValue[]>(
    sql: string,
    params?: BindParams,
    options?: CallOptions,
  ): Promise<T[]> {
    const [, rows] = await this._call(Op.Query, sql, params, options) as QueryPayload;
    return rows as T[];
  }

  /**
   * Runs one statement and returns its first row, or `undefined`.
   *
   * @throws {SqliteError}
   */
  async get<T = Row>(
    sql: string,
    params?: BindParams,
    options?: CallOptions,
  ): Promise<T | undefined> {
    const [columns, rows] = await this._call(Op.Query, sql, params, options) as QueryPayload;
    return rows.length === 0 ? undefined : toObject(columns, rows[0]) as T;
  }

  /**
   * Streams a statement's rows: the server steps it a chunk at a time and
   * sends the next chunk only when asked, so memory stays bounded on both
   * sides whatever the result size. Leaving the loop early closes the cursor.
   *
   * @example
   * ```ts
   * import { serve } from "./server.ts";
   * import { connect } from "./client.ts";
   * const dir = await Deno.makeTempDir();
   * await using server = await serve({ database: `${dir}/a.db`, path: `${dir}/a.sock` });
   * await using db = await connect({ path: `${dir}/a.sock` });
   * let sum = 0;
   * const sql = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT 10000) SELECT x FROM n";
   * for await (const row of db.iterate<{ x: number }>(sql)) sum += row.x;
   * if (sum !== 50005000) throw new Error("wrong sum");
   * ```
   *
   * @throws {SqliteError} `STATEMENT_TIMEOUT` when one chunk takes longer
   *   than the statement timeout, or SQLite's error.
   */
  iterate<T = Row>(sql: string, params?: BindParams, options?: CallOptions): AsyncGenerator<T> {
    return this._cursor(sql, params, options) as AsyncGenerator<T>;
  }

  /**
   * Runs statements atomically, in one transaction: all take effect or none.
   *
   * @returns one result per statement, in order.
   * @throws {SqliteError} naming the failing statement; nothing was applied.
   */
  async batch<T = Row>(statements: readonly BatchStatement[]): Promise<BatchResult<T>[]> {
    const items = statements.map((s) => [s.sql, s.params ?? null]);
    for (let i = 0; i < statements.length; i++) {
      const problem = invalidParamsMessage(statements[i].params);
      if (problem !== undefined) {
        throw new SqliteError(ErrorCode.InvalidParam, `Batch statement ${i + 1}: ${problem}`);
      }
    }
    const results = await this._call(Op.Batch, items) as BatchItemPayload[];
    return results.map(([changes, lastInsertRowid, columns, rows]) => ({
      changes,
      lastInsertRowid,
      rows: toObjects(columns, rows) as T[],
    }));
  }

  /**
   * Runs `fn` inside a transaction: commits when it resolves, rolls back when
   * it throws (and rethrows), and returns its value. A nested call uses a
   * savepoint, so only the inner work is undone when the inner `fn` throws.
   *
   * While the transaction is open no other client's statement runs inside
   * it; their writes wait, their reads see the last committed state. Run
   * transactions one after another on one client: concurrent calls on the
   * same client share one connection and would nest.
   *
   * @param fn The work; it receives this client.
   * @param options How to begin.
   * @returns what `fn` resolved to.
   * @throws whatever `fn` threw, after rolling back; `SqliteError` when
   *   BEGIN or COMMIT fails (for example `BUSY_TIMEOUT` or `TX_TIMEOUT`).
   */
  async transaction<T>(
    fn: (tx: Client) => Promise<T>,
    options: TransactionOptions = {},
  ): Promise<T> {
    const behavior = options.behavior ?? "deferred";
    if (behavior !== "deferred" && behavior !== "immediate" && behavior !== "exclusive") {
      throw new TypeError(
        `Invalid option "behavior": expected "deferred", "immediate" or "exclusive", got "${
          String(behavior)
        }"`,
      );
    }
    const depth = this.#txDepth;
    const savepoint = `netsqlite_sp${depth}`;
    await this.exec(depth === 0 ? `BEGIN ${behavior.toUpperCase()}` : `SAVEPOINT ${savepoint}`);
    this.#txDepth++;
    let result: T;
    try {
      result = await fn(this);
    } catch (err) {
      this.#txDepth--;
      await this.exec(
        depth === 0 ? "ROLLBACK" : `ROLLBACK TO ${savepoint}; RELEASE ${savepoint}`,
      ).catch(() => {/* already ended by SQLite, the lease, or a lost connection */});
      throw err;
    }
    this.#txDepth--;
    try {
      await this.exec(depth === 0 ? "COMMIT" : `RELEASE ${savepoint}`);
    } catch (err) {
      if (depth === 0 && this.inTransaction) await this.exec("ROLLBACK").catch(() => {});
      throw err;
    }
    return result;
  }

  /**
   * Prepares a statement on the server; call {@link Statement.finalize} when done.
   *
   * @throws {SqliteError} when the SQL does not compile.
   */
  async prepare(sql: string): Promise<Statement> {
    const generation = this.#generation;
    const [handle, columns] = await this._call(Op.Prepare, sql) as PreparePayload;
    return new Statement(this, sql, handle, columns, generation);
  }

  /**
   * Closes the connection. Pending requests reject with `ConnectionError`;
   * an open transaction is rolled back by the server. Idempotent.
   */
  async close(): Promise<void> {
    this.#closedByUser = true;
    this.#link.fail(new ConnectionError("Connection was closed by the client"));
    await this.#link.ended;
    await this.#reconnecting?.catch(() => {});
    this.#link.fail(new ConnectionError("Connection was closed by the client"));
    await this.#link.ended;
  }

  /** Same as {@link Client.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** @internal Sends one request (reconnecting if allowed) and resolves with its payload. */
  _call(op: number, a: unknown, b?: unknown, c?: unknown): Promise<unknown> {
    const link = this.#link;
    if (link.failure === null && !this.#lostTransaction) return link.request(op, a, b, c);
    return this.#callAfterLoss(op, a, b, c);
  }

  /** @internal Opens a cursor and yields its rows, one chunk ahead at most. */
  async *_cursor(
    sql: string | number,
    params: BindParams | undefined,
    options: CallOptions | undefined,
    asArrays = false,
  ): AsyncGenerator<unknown> {
    const [id, columns] = await this._call(Op.Iterate, sql, params ?? null, options) as [
      number,
      string[],
    ];
    const link = this.#link;
    let pending: Promise<unknown> | null = link.request(Op.Next, id);
    try {
      while (pending !== null) {
        const [rows, done] = await pending as [unknown[][], boolean];
        // Ask for the next chunk while this one is consumed: one chunk of credit.
        pending = done ? null : link.request(Op.Next, id);
        for (let i = 0; i < rows.length; i++) yield asArrays ? rows[i] : toObject(columns, rows[i]);
      }
    } finally {
      if (pending !== null) {
        pending.catch(() => {});
        link.request(Op.CloseCursor, id).catch(() => {});
      }
    }
  }

  /** A call on a lost link: reconnect, or refuse while a lost transaction is unacknowledged. */
  async #callAfterLoss(op: number, a: unknown, b?: unknown, c?: unknown): Promise<unknown> {
    if (this.#closedByUser) throw new ConnectionError("Client is closed");
    const lost = this.#link;
    if (lost.failure !== null && this.#judged !== lost) {
      this.#judged = lost;
      if (lost.inTransaction || this.#txDepth > 0) this.#lostTransaction = true;
    }
    if (this.#lostTransaction) {
      const sql = typeof a === "string" && (op === Op.Exec || op === Op.Run) ? a : "";
      if (/^\s*ROLLBACK\s*;?\s*$/i.test(sql)) {
        this.#lostTransaction = false;
        return op === Op.Run ? [0, 0] : null;
      }
      if (/^\s*(COMMIT|END)\b/i.test(sql)) this.#lostTransaction = false;
      throw new ConnectionError(
        "Connection was lost inside a transaction, which the server rolled back: " +
          "send ROLLBACK, then retry the whole transaction",
      );
    }
    if (lost.failure !== null) {
      if (!this.#config.reconnect) throw lost.failure;
      this.#reconnecting ??= openLink(this.#config).then(([link, info]) => {
        this.#link = link;
        this.#info = info;
        this.#generation++;
      }).finally(() => this.#reconnecting = null);
      await this.#reconnecting;
    }
    return this.#link.request(op, a, b, c);
  }
}

/** A statement prepared on the server, run with different parameters. */
export class Statement {
  readonly #client: Client;
  #handle: number;
  #columns: string[];
  #generation: number;
  /** The SQL text. */
  readonly sql: string;

  /** @internal Use {@link Client.prepare}. */
  constructor(client: Client, sql: string, handle: number, columns: string[], generation: number) {
    this.#client = client;
    this.sql = sql;
    this.#handle = handle;
    this.#columns = columns;
    this.#generation = generation;
  }

  /** Result column names (empty for statements that return no rows). */
  get columns(): readonly string[] {
    return this.#columns;
  }

  /** Runs the statement and returns every row as an object. */
  async all<T = Row>(params?: BindParams, options?: CallOptions): Promise<T[]> {
    const [columns, rows] = await this.#call(Op.Query, params, options) as QueryPayload;
    return toObjects(columns, rows) as T[];
  }

  /** Runs the statement and returns its first row, or `undefined`. */
  async get<T = Row>(params?: BindParams, options?: CallOptions): Promise<T | undefined> {
    const [columns, rows] = await this.#call(Op.Query, params, options) as QueryPayload;
    return rows.length === 0 ? undefined : toObject(columns, rows[0]) as T;
  }

  /** Runs the statement and returns rows as arrays. */
  async values<T extends unknown[] = SqlValue[]>(
    params?: BindParams,
    options?: CallOptions,
  ): Promise<T[]> {
    const [, rows] = await this.#call(Op.Query, params, options) as QueryPayload;
    return rows as T[];
  }

  /** Runs the statement and reports what it changed. */
  async run(params?: BindParams, options?: CallOptions): Promise<RunResult> {
    const [changes, lastInsertRowid] = await this.#call(Op.Run, params, options) as RunPayload;
    return { changes, lastInsertRowid };
  }

  /** Streams the statement's rows; see {@link Client.iterate}. */
  async *iterate<T = Row>(params?: BindParams, options?: CallOptions): AsyncGenerator<T> {
    await this.#refresh();
    yield* this.#client._cursor(this.#handle, params, options) as AsyncGenerator<T>;
  }

  /** Frees the statement on the server. */
  async finalize(): Promise<void> {
    if (this.#generation !== this.#client._generation) return; // died with its connection
    await this.#client._call(Op.Finalize, this.#handle);
  }

  async #call(op: number, params?: BindParams, options?: CallOptions): Promise<unknown> {
    await this.#refresh();
    return this.#client._call(op, this.#handle, params ?? null, options);
  }

  /** Prepares again after a reconnect: handles belong to a connection. */
  async #refresh(): Promise<void> {
    if (this.#generation === this.#client._generation) return;
    const generation = this.#client._generation;
    const [handle, columns] = await this.#client._call(Op.Prepare, this.sql) as PreparePayload;
    this.#handle = handle;
    this.#columns = columns;
    this.#generation = generation;
  }
}

function toObject(columns: string[], row: unknown[]): Row {
  const o: Row = {};
  for (let i = 0; i < columns.length; i++) o[columns[i]] = row[i] as SqlValue;
  return o;
}

function toObjects(columns: string[], rows: unknown[][]): Row[] {
  const out = new Array<Row>(rows.length);
  for (let r = 0; r < rows.length; r++) out[r] = toObject(columns, rows[r]);
  return out;
}
