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

import { MessageDecoder, MessageEncoder } from "./protocol/codec.ts";
import {
  ConnectionError,
  ErrorCode,
  errorFromWire,
  ProtocolError,
  SqliteError,
  type WireError,
} from "./protocol/errors.ts";
import {
  type BatchItemPayload,
  CONNECTION_ERROR_ID,
  type HelloReply,
  Op,
  type PreparePayload,
  PROTOCOL_VERSION,
  type QueryPayload,
  type RunPayload,
  Status,
} from "./protocol/messages.ts";
import { invalidParamsMessage } from "./protocol/values.ts";
import {
  type Address,
  DEFAULT_DATABASE,
  defaultSocketPath,
  formatAddress,
  HAS_UNIX_SOCKETS,
} from "./transport/address.ts";
import { connectTo } from "./transport/connect.ts";
import { FrameChannel } from "./transport/frame_channel.ts";
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
}

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
  const addr = await resolveAddress(options);
  const maxFrameSize = options.maxFrameSize ?? DEFAULT_MAX_FRAME_SIZE;
  const conn = await connectTo(addr);
  const client = new Client(conn, addr, maxFrameSize);
  try {
    await client._handshake();
  } catch (err) {
    client.close();
    throw err;
  }
  return client;
}

async function resolveAddress(options: ConnectOptions): Promise<Address> {
  if (options.port !== undefined || options.hostname !== undefined) {
    return { transport: "tcp", hostname: options.hostname ?? "127.0.0.1", port: options.port ?? 0 };
  }
  if (options.path !== undefined) return { transport: "unix", path: options.path };
  const database = options.database ?? DEFAULT_DATABASE;
  if (HAS_UNIX_SOCKETS) return { transport: "unix", path: defaultSocketPath(database) };
  const announced = defaultSocketPath(database).replace(/\.sock$/, ".port");
  const port = Number(await Deno.readTextFile(announced).catch(() => "NaN"));
  if (!Number.isInteger(port)) {
    throw new ConnectionError(`Cannot find the server of ${database}: no port in ${announced}`);
  }
  return { transport: "tcp", hostname: "127.0.0.1", port };
}

interface Pending {
  resolve(payload: unknown): void;
  reject(err: Error): void;
}

/**
 * A connection to a netsqlite server. Requests may be issued concurrently;
 * they run on the server in the order issued and are pipelined on the wire.
 */
export class Client {
  readonly #addr: Address;
  readonly #encoder: MessageEncoder;
  readonly #decoder = new MessageDecoder();
  readonly #channel: FrameChannel;
  readonly #pending = new Map<number, Pending>();
  readonly #reading: Promise<void>;
  #nextId = 1;
  #flushQueued = false;
  #inTransaction = false;
  #txDepth = 0;
  #closed: ConnectionError | null = null;
  #info: HelloReply | null = null;

  /** @internal Use {@link connect}. */
  constructor(conn: Deno.Conn, addr: Address, maxFrameSize: number) {
    this.#addr = addr;
    this.#encoder = new MessageEncoder(maxFrameSize);
    this.#channel = new FrameChannel(conn, maxFrameSize, this.#encoder, {
      onFrame: (payload) => this.#onFrame(payload),
      onReadEnd: () => {},
      onDrain: () => {},
    });
    this.#reading = this.#channel.readLoop().then(
      () => this.#fail(new ConnectionError(`Connection to ${formatAddress(addr)} was closed`)),
      (err) => this.#fail(err),
    );
  }

  /** @internal Sends the hello request and stores the server's answer. */
  async _handshake(): Promise<void> {
    try {
      this.#info = await this.#request(Op.Hello, { version: PROTOCOL_VERSION }) as HelloReply;
    } catch (err) {
      throw (err as Error).cause instanceof ProtocolError ? (err as Error).cause : err;
    }
  }

  /** What the server reported in the handshake: versions and limits. */
  get serverInfo(): HelloReply {
    return this.#info!;
  }

  /** True while this connection has a transaction open on the server. */
  get inTransaction(): boolean {
    return this.#inTransaction;
  }

  /** True once the connection is closed or lost. */
  get closed(): boolean {
    return this.#closed !== null;
  }

  /**
   * Runs a script of zero or more statements, without parameters.
   *
   * @throws {SqliteError} from the first failing statement; earlier ones stay applied.
   */
  async exec(sql: string): Promise<void> {
    await this.#request(Op.Exec, sql);
  }

  /**
   * Runs one statement and reports what it changed.
   *
   * @throws {SqliteError}
   */
  async run(sql: string, params?: BindParams): Promise<RunResult> {
    const [changes, lastInsertRowid] = await this.#request(Op.Run, sql, params) as RunPayload;
    return { changes, lastInsertRowid };
  }

  /**
   * Runs one statement and returns every row as an object.
   *
   * @throws {SqliteError}
   */
  async query<T = Row>(sql: string, params?: BindParams): Promise<T[]> {
    const [columns, rows] = await this.#request(Op.Query, sql, params) as QueryPayload;
    return toObjects(columns, rows) as T[];
  }

  /**
   * Runs one statement and returns every row as an array of values.
   *
   * @throws {SqliteError}
   */
  async values<T extends unknown[] = SqlValue[]>(sql: string, params?: BindParams): Promise<T[]> {
    const [, rows] = await this.#request(Op.Query, sql, params) as QueryPayload;
    return rows as T[];
  }

  /**
   * Runs one statement and returns its first row, or `undefined`.
   *
   * @throws {SqliteError}
   */
  async get<T = Row>(sql: string, params?: BindParams): Promise<T | undefined> {
    const [columns, rows] = await this.#request(Op.Query, sql, params) as QueryPayload;
    return rows.length === 0 ? undefined : toObject(columns, rows[0]) as T;
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
    const results = await this.#request(Op.Batch, items) as BatchItemPayload[];
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
      if (depth === 0 && this.#inTransaction) await this.exec("ROLLBACK").catch(() => {});
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
    const [handle, columns] = await this.#request(Op.Prepare, sql) as PreparePayload;
    return new Statement(this, handle, sql, columns);
  }

  /**
   * Closes the connection. Pending requests reject with `ConnectionError`;
   * an open transaction is rolled back by the server. Idempotent.
   */
  close(): Promise<void> {
    this.#fail(new ConnectionError("Connection was closed by the client"));
    return this.#reading;
  }

  /** Same as {@link Client.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** @internal Sends one request and resolves with its reply payload. */
  _send(op: number, a: unknown, b?: unknown): Promise<unknown> {
    return this.#request(op, a, b);
  }

  #request(op: number, a: unknown, b?: unknown): Promise<unknown> {
    if (this.#closed !== null) return Promise.reject(this.#closed);
    if (b !== undefined && b !== null) {
      const problem = invalidParamsMessage(b);
      if (problem !== undefined) {
        return Promise.reject(new SqliteError(ErrorCode.InvalidParam, problem));
      }
    }
    const id = this.#nextId;
    this.#nextId = id === 0xffffffff ? 1 : id + 1;
    let size: number;
    try {
      size = this.#encoder.append(b === undefined ? [op, id, a] : [op, id, a, b]);
    } catch (err) {
      return Promise.reject(
        new SqliteError(ErrorCode.BadRequest, `Cannot encode request: ${(err as Error).message}`),
      );
    }
    if (size === -1) {
      return Promise.reject(
        new SqliteError(ErrorCode.FrameTooLarge, "Request exceeds the maximum frame size"),
      );
    }
    const promise = new Promise<unknown>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
    });
    if (!this.#flushQueued) {
      this.#flushQueued = true;
      queueMicrotask(() => {
        this.#flushQueued = false;
        this.#channel.flush();
      });
    }
    return promise;
  }

  #onFrame(payload: Uint8Array): void {
    const reply = this.#decoder.decode(payload) as [number, number, unknown];
    if (!Array.isArray(reply) || typeof reply[0] !== "number" || typeof reply[1] !== "number") {
      throw new ProtocolError(
        ErrorCode.BadRequest,
        "Cannot read reply: expected [id, status, payload]",
      );
    }
    const [id, status, body] = reply;
    if (id === CONNECTION_ERROR_ID) {
      const wire = body as WireError;
      throw new ProtocolError(String(wire?.code), `Server closed the connection: ${wire?.message}`);
    }
    const pending = this.#pending.get(id);
    if (pending === undefined) return;
    this.#pending.delete(id);
    this.#inTransaction = (status & Status.InTransaction) !== 0;
    if ((status & Status.Error) !== 0) pending.reject(errorFromWire(body as WireError));
    else pending.resolve(body);
  }

  #fail(err: unknown): void {
    if (this.#closed === null) {
      this.#closed = err instanceof ConnectionError ? err : new ConnectionError(
        `Connection to ${formatAddress(this.#addr)} failed: ${(err as Error).message}`,
        { cause: err, code: (err as { code?: string }).code },
      );
      this.#inTransaction = false;
    }
    this.#channel.close();
    const failure = this.#closed;
    for (const p of this.#pending.values()) p.reject(failure);
    this.#pending.clear();
  }
}

/** A statement prepared on the server, run with different parameters. */
export class Statement {
  readonly #client: Client;
  readonly #handle: number;
  readonly #columns: string[];
  /** The SQL text. */
  readonly sql: string;

  /** @internal Use {@link Client.prepare}. */
  constructor(client: Client, handle: number, sql: string, columns: string[]) {
    this.#client = client;
    this.#handle = handle;
    this.sql = sql;
    this.#columns = columns;
  }

  /** Result column names (empty for statements that return no rows). */
  get columns(): readonly string[] {
    return this.#columns;
  }

  /** Runs the statement and returns every row as an object. */
  async all<T = Row>(params?: BindParams): Promise<T[]> {
    const [columns, rows] = await this.#client._send(
      Op.Query,
      this.#handle,
      params,
    ) as QueryPayload;
    return toObjects(columns, rows) as T[];
  }

  /** Runs the statement and returns its first row, or `undefined`. */
  async get<T = Row>(params?: BindParams): Promise<T | undefined> {
    const [columns, rows] = await this.#client._send(
      Op.Query,
      this.#handle,
      params,
    ) as QueryPayload;
    return rows.length === 0 ? undefined : toObject(columns, rows[0]) as T;
  }

  /** Runs the statement and returns rows as arrays. */
  async values<T extends unknown[] = SqlValue[]>(params?: BindParams): Promise<T[]> {
    const [, rows] = await this.#client._send(Op.Query, this.#handle, params) as QueryPayload;
    return rows as T[];
  }

  /** Runs the statement and reports what it changed. */
  async run(params?: BindParams): Promise<RunResult> {
    const [changes, lastInsertRowid] = await this.#client._send(
      Op.Run,
      this.#handle,
      params,
    ) as RunPayload;
    return { changes, lastInsertRowid };
  }

  /** Frees the statement on the server. */
  async finalize(): Promise<void> {
    await this.#client._send(Op.Finalize, this.#handle);
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
