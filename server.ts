/**
 * The netsqlite server: owns one SQLite database and serves it to many
 * processes over a Unix socket (or TCP).
 *
 * Run it: `deno task serve`, or `deno run -A server.ts --help`.
 *
 * @example
 * ```ts
 * import { serve } from "@netsqlite/netsqlite/server";
 * import { connect } from "@netsqlite/netsqlite/client";
 * const dir = await Deno.makeTempDir();
 * await using server = await serve({ database: `${dir}/app.db`, path: `${dir}/app.sock` });
 * await using db = await connect({ path: `${dir}/app.sock` });
 * const row = await db.get<{ one: number }>("SELECT 1 AS one");
 * if (row?.one !== 1) throw new Error("unexpected answer");
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { flagError, joinValues } from "./cli/args.ts";
import { isAbsolute, resolve } from "node:path";
import { Engine } from "./engine/engine.ts";
import type { EngineLike } from "./engine/engine_api.ts";
import { DqliteEngine } from "./engine/dqlite/engine.ts";
import { loadSqlite, unreadEnvironmentWarning } from "./engine/binding/load.ts";
import { describeDqsObjects } from "./engine/dqs_check.ts";
import {
  accessError,
  isWalDatabase,
  openError,
  removeDatabaseCreated,
  removeWalFilesCreated,
  staleWalError,
  WAL_HINT,
  walFilesBefore,
} from "./server/open_error.ts";
import { denoVersionProblem } from "./server/deno_version.ts";
import { type HelloReply, PROTOCOL_VERSION } from "./protocol/messages.ts";
import { ErrorCode, ProtocolError } from "./protocol/errors.ts";
import { describeMemoryRelease, type MemoryRelease, MemoryReleaser } from "./server/memory.ts";
import { Session } from "./server/session.ts";
import { resolveServeOptions, type ServeConfig, type ServeOptions } from "./server/options.ts";
import {
  absoluteAddress,
  type Address,
  formatAddress,
  parseHostPort,
} from "./transport/address.ts";
import {
  listen,
  type Listener,
  removeSocketFile,
  TlsListener,
  unreachableSocketWarning,
} from "./transport/listen.ts";
import { ByteBudget } from "./transport/frame_reader.ts";
import { UnixSocketListener } from "./transport/unix_socket_listener.ts";
import { VERSION } from "./version.ts";
import {
  isLoopback,
  MIN_NETWORK_TOKEN_LENGTH,
  readTokenFile,
  TOKEN_ENV,
  tokenFileWarning,
} from "./server/auth.ts";
import { DatabaseLock, isNoSpace, LockFileAccessError, lockPath } from "./server/lock.ts";
import { Logger, printLine } from "./server/log.ts";
import { closeInheritedFiles } from "./server/inherited_files.ts";
import {
  absolutePaths,
  leaveStarterDirectory,
  serverDirectory,
} from "./server/starter_directory.ts";
import { FileSizeSignal } from "./server/file_size_limit.ts";
import { ServerStats } from "./server/stats.ts";
import {
  ADMIN_RESERVED_CONNECTIONS,
  type FdBudget,
  fdBudget,
  openFileCount,
  readOpenFileLimit,
} from "./server/connection_limit.ts";
import type { SessionServices } from "./server/session.ts";

export type { DqliteOptions, ServeOptions } from "./server/options.ts";
export type { LogLevel } from "./server/log.ts";
export { ListenError } from "./transport/listen.ts";
export type { Address, TcpAddress, UnixAddress } from "./transport/address.ts";
export type { EngineChoice } from "./engine/binding/load.ts";
export type { TlsServerOptions } from "./transport/listen.ts";
export type { MemoryRelease } from "./server/memory.ts";
export { DatabaseLockedError } from "./server/lock.ts";

/** Options of {@link Server.shutdown}. */
export interface ShutdownOptions {
  /**
   * How long to let transactions and queued writes finish before rolling
   * back what is left, in ms. New connections are refused meanwhile.
   * @default {0}
   */
  graceMs?: number;
}

export { VERSION };

/**
 * A running server, returned by {@link serve}.
 *
 * @example
 * ```ts
 * import { serve } from "@netsqlite/netsqlite/server";
 * const dir = await Deno.makeTempDir();
 * const server = await serve({ database: `${dir}/a.db`, hostname: "127.0.0.1", port: 0 });
 * if (server.addr.transport !== "tcp" || server.addr.port === 0) throw new Error("expected a port");
 * await server.shutdown();
 * await server.finished; // already settled
 * ```
 */
export interface Server {
  /** The address the server listens on (with the real port for TCP port 0). */
  readonly addr: Address;
  /** Resolves once the server has stopped and the database is closed. */
  readonly finished: Promise<void>;
  /**
   * How memory is given back after connections close (depends on
   * permissions and V8 flags), and how often it was: a snapshot.
   */
  readonly memoryRelease: MemoryRelease;
  /** The SQLite binding the server runs on: engine, library file, version, limitations. */
  readonly sqlite: SqliteInfo;
  /** Stops accepting, closes every connection (rolling back their transactions), closes the database. */
  shutdown(): Promise<void>;
  /**
   * Stops accepting, lets writes in progress finish within `graceMs`, closes
   * every connection (rolling back their transactions), checkpoints the WAL,
   * closes the database, removes the socket file and releases the database lock.
   */
  shutdown(options?: ShutdownOptions): Promise<void>;
  /** Same as {@link Server.shutdown}. */
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * Opens the database and starts serving it.
 *
 * @param options Database, address and limits; see {@link ServeOptions}.
 * @returns the running server once it listens.
 * @throws {TypeError | RangeError} on invalid options.
 * @throws {TypeError} when listening on a non-loopback TCP address without a token.
 * @throws {DatabaseLockedError} when another server owns the database.
 * @throws {ListenError} when the address is taken by a live server.
 * @throws {SqliteError} when the database cannot be opened.
 * @throws {Error} when Deno is older than the README's minimum (2.9).
 * @example
 * ```ts
 * import { serve } from "@netsqlite/netsqlite/server";
 * import { connect } from "@netsqlite/netsqlite";
 * const dir = await Deno.makeTempDir();
 * const server = await serve({ database: `${dir}/app.db`, path: `${dir}/app.sock` });
 * console.log(`serving on ${server.addr.transport}`, server.sqlite.version);
 * await using db = await connect({ path: `${dir}/app.sock` });
 * await db.exec("CREATE TABLE t (x)");
 * await db.close();
 * await server.shutdown({ graceMs: 1000 });
 * ```
 */
export async function serve(options: ServeOptions = {}): Promise<Server> {
  const tooOld = denoVersionProblem(Deno.version.deno);
  if (tooOld !== null) throw new Error(tooOld);
  const config = resolveServeOptions(options);
  if (config.dqlite !== null) return await serveCluster(config);
  // From before the first write: past the file size limit, a write fails instead of killing us.
  const fileSize = new FileSizeSignal(new Logger(config.logLevel));
  try {
    return await serveFile(config, fileSize);
  } catch (err) {
    fileSize.close();
    throw err;
  }
}

/** {@link serve} of a database file (or `:memory:`). */
async function serveFile(config: ServeConfig, fileSize: FileSizeSignal): Promise<Server> {
  const database = config.database;
  const readonly = config.engine.policy.readonly;
  if (readonly && database !== ":memory:" && !existsFile(database)) {
    throw new TypeError(`Cannot serve "${database}" read-only: the file does not exist`);
  }
  // Lock first, then claim the socket, then open (or create) the database: a
  // start refused for its lock or its socket leaves no file behind.
  const lock = takeLock(config);
  if (lock?.warning) new Logger(config.logLevel).warn(lock.warning);
  const budget = drawFdBudget(config);
  let listener: Listener;
  try {
    listener = await listen(config.address, { socketMode: config.socketMode, tls: config.tls });
  } catch (err) {
    lock?.release(true);
    throw err;
  }
  let engine = undefined as Engine | undefined;
  try {
    const existed = database !== ":memory:" && existsFile(database);
    const denied = existed ? accessError(database, readonly) : null;
    if (denied !== null) throw denied;
    // A restored file with the old database's WAL beside it: SQLite would mix the two.
    const stale = existed ? staleWalError(database) : null;
    if (stale !== null) throw stale;
    if (existed) lock?.lockDatabaseFile(database);
    // NETSQLITE_ENGINE and NETSQLITE_SQLITE_LIB, when they may not be read, are not ignored silently.
    const unread = unreadEnvironmentWarning(config.sqlite);
    if (unread !== null) new Logger(config.logLevel).warn(unread);
    const sqlite = loadSqlite(config.sqlite);
    const walFiles = walFilesBefore(database);
    try {
      engine = new Engine({
        ...config.engine,
        maxOpenCursors: budget.cursors,
        maxBackgroundReads: budget.backgroundReads,
      }, sqlite);
    } catch (err) {
      sqlite.close();
      removeWalFilesCreated(database, walFiles);
      // A first start leaves no file it created that holds nothing (a full disk, say).
      if (!existed) removeDatabaseCreated(database);
      throw openError(err, database, readonly, config.engine.busyTimeout);
    }
    if (!existed && database !== ":memory:") lock?.lockDatabaseFile(database);
    warnDoubleQuotedStrings(engine, config);
  } catch (err) {
    try {
      listener.close();
    } catch {
      // Already closed.
    }
    removeSocketFile(listener);
    await engine?.close(); // before the lock: closing its descriptor drops SQLite's locks
    lock?.release(true);
    throw err;
  }
  return new RunningServer(config, engine!, listener, lock, budget, fileSize);
}

/**
 * Logs the schema objects that need the double-quoted string literals the
 * engine refuses; and, at `info`, how the database's files are checked.
 */
function warnDoubleQuotedStrings(engine: Engine, config: ServeConfig): void {
  const { objects, skipped } = engine.doubleQuotedStrings;
  const log = new Logger(config.logLevel);
  const checks = engine.fileChecks;
  if (checks !== null) log.info(checks);
  if (objects.length > 0) log.warn(describeDqsObjects(objects));
  if (skipped !== null) {
    log.warn(`could not check the schema for double-quoted string literals: ${skipped}`);
  }
}

/** Cluster mode: the engine runs statements on a dqlite leader; no file, no lock. */
async function serveCluster(config: ServeConfig): Promise<Server> {
  const d = config.dqlite!;
  const e = config.engine;
  const engine = await DqliteEngine.open({
    nodes: d.nodes,
    database: d.database,
    poolSize: d.poolSize,
    leaderTimeout: d.leaderTimeout,
    busyTimeout: e.busyTimeout,
    txIdleTimeout: e.txIdleTimeout,
    txTimeout: e.txTimeout,
    statementTimeout: e.statementTimeout,
    maxResultBytes: e.maxResultBytes,
    maxCursors: e.maxCursors,
    maxFrameSize: config.maxFrameSize,
    maxStatements: e.maxStatements,
    maxPrepared: e.maxPrepared,
    maxPreparedText: e.maxPreparedText,
    allowUnsafePragmas: e.policy.allowUnsafePragmas,
  });
  let listener: Listener;
  try {
    listener = await listen(config.address, { socketMode: config.socketMode, tls: config.tls });
  } catch (err) {
    await engine.close();
    throw err;
  }
  return new RunningServer(
    config,
    engine,
    listener,
    null,
    drawFdBudget(config),
    null,
  );
}

/**
 * Shares the open-file limit (`server/connection_limit.ts`), less the
 * descriptors this process has open now (counted where it can be).
 */
function drawFdBudget(config: ServeConfig): FdBudget {
  const limit = readOpenFileLimit();
  return fdBudget(config.maxConnections, limit, config.maxHandshakes, {
    inUse: openFileCount(limit),
    backgroundReads: config.engine.maxBackgroundReads,
  });
}

/**
 * The database's identity in the hello reply: the real path of its file
 * (opened by now), so that a client can tell a server for another database.
 */
function databaseIdentity(database: string): string {
  if (database === ":memory:") return database;
  try {
    return Deno.realPathSync(database);
  } catch {
    return resolve(database);
  }
}

/** Takes the database's lock; `null` for `:memory:`, or read-only beside a file we cannot write. */
function takeLock(config: ServeConfig): DatabaseLock | null {
  if (config.database === ":memory:") return null;
  try {
    // The socket's absolute path: a second server or a client may run in another directory.
    return DatabaseLock.acquire(config.database, formatAddress(absoluteAddress(config.address)));
  } catch (err) {
    if (err instanceof LockFileAccessError) {
      // Another user's lock file, not held (or not known to be): not the directory's fault.
      if (!config.engine.policy.readonly) throw err;
      console.error(
        `netsqlite: cannot use the lock file "${err.path}" (${err.reason}): serving read-only ` +
          "without the one-server lock",
      );
      return null;
    }
    const denied = err instanceof Deno.errors.PermissionDenied ||
      err instanceof Deno.errors.NotCapable || (err as { code?: string }).code === "EROFS";
    if (!denied) throw err;
    const lock = lockPath(config.database);
    const detail = (err as Error).message.replace(/: open '[^']*'$/, "");
    if (!config.engine.policy.readonly) {
      if (err instanceof Deno.errors.NotCapable) throw err; // names the missing --allow-write
      const advice = isWalDatabase(config.database)
        ? `make the directory writable by this user (${WAL_HINT})`
        : "make the directory writable by this user, or serve the database with --readonly";
      throw new Deno.errors.PermissionDenied(
        `Cannot serve "${config.database}": cannot create its lock file "${lock}" (${detail}): ` +
          advice,
        { cause: err },
      );
    }
    console.error(
      `netsqlite: cannot create "${lock}" (${detail}): serving read-only without the one-server lock`,
    );
    return null;
  }
}

function existsFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/** What {@link Server.sqlite} reports: the SQLite binding a server runs on. */
export interface SqliteInfo {
  /** `"ffi"` or `"node"` (single file), `"dqlite"` (cluster mode). */
  readonly engine: "ffi" | "node" | "dqlite";
  /** The library file loaded, `"node:sqlite"`, or the dqlite nodes and database. */
  readonly library: string;
  /** SQLite's version. */
  readonly version: string;
  /** What this engine cannot do, one sentence each (empty for ffi). */
  readonly limitations: readonly string[];
}

/**
 * The start-up line naming the engine, library and SQLite version, followed
 * by one indented line for each thing the fallback engine loses.
 *
 * @param info What {@link Server.sqlite} reports.
 * @returns the text, e.g. `engine ffi (libsqlite3.so.0, SQLite 3.46.1)`.
 * @example
 * ```ts
 * import { describeEngine } from "@netsqlite/netsqlite/server";
 * const line = describeEngine({ engine: "ffi", library: "libsqlite3.so.0", version: "3.46.1", limitations: [] });
 * if (line !== "engine ffi (libsqlite3.so.0, SQLite 3.46.1)") throw new Error(line);
 * ```
 */
export function describeEngine(info: SqliteInfo): string {
  const head = `engine ${info.engine} (${info.library}, SQLite ${info.version})`;
  if (info.limitations.length === 0) return head;
  return `${head}; compared with the FFI engine:\n` +
    info.limitations.map((l) => `  - ${l}`).join("\n");
}

class RunningServer implements Server {
  readonly addr: Address;
  readonly sqlite: SqliteInfo;
  readonly finished: Promise<void>;
  readonly #memory: MemoryReleaser;
  readonly #engine: EngineLike;
  readonly #listener: Listener;
  readonly #sessions = new Set<Session>();
  readonly #hello: HelloReply;
  readonly #config: ServeConfig;
  readonly #lock: DatabaseLock | null;
  readonly #fileSize: FileSizeSignal | null;
  /** Identity of the socket file this server created, or `null` (TCP). */
  #stopping: Promise<void> | null = null;
  #graceMs = 0;
  /** Connections served at once (`--max-connections`, within the open-file limit). */
  readonly #maxConnections: number;
  /** Connections waiting for their hello at once (within the open-file limit). */
  readonly #maxHandshakes: number;
  /** Connections refused since the last log line about them, and when that was. */
  #refused = 0;
  #refusedReported = -Infinity;
  /** Writes the line for refusals held back, a second after the last one written. */
  #refusedTimer: ReturnType<typeof setTimeout> | null = null;
  /** Connections served (hello accepted); each holds a connection slot. */
  readonly #admitted = new Set<Session>();
  /** Of {@link #admitted}: the admin sessions (hello `admin: true`). */
  readonly #admins = new Set<Session>();
  /** Connections waiting for their hello, and the address they count against (or `null`). */
  readonly #handshaking = new Map<Session, string | null>();
  /** Resolved when a handshake slot frees while the accept loop waits for one. */
  #slotFreed: (() => void) | null = null;
  /** Per non-loopback TCP address: its connections waiting for their hello. */
  readonly #handshakingFrom = new Map<string, number>();
  readonly #services: SessionServices;
  readonly #stats: ServerStats;

  constructor(
    config: ServeConfig,
    engine: EngineLike,
    listener: Listener,
    lock: DatabaseLock | null,
    budget: FdBudget,
    fileSize: FileSizeSignal | null,
  ) {
    this.#config = config;
    this.#engine = engine;
    this.#listener = listener;
    const { engine: kind, library, version, limitations } = engine.sqlite;
    this.sqlite = { engine: kind, library, version, limitations };
    this.#lock = lock;
    this.#fileSize = fileSize;
    const la = listener.addr;
    this.addr = la.transport === "unix"
      ? { transport: "unix", path: (la as Deno.UnixAddr).path }
      : {
        transport: "tcp",
        hostname: (la as Deno.NetAddr).hostname,
        port: (la as Deno.NetAddr).port,
      };
    this.#hello = {
      version: PROTOCOL_VERSION,
      server: `netsqlite ${VERSION}`,
      sqliteVersion: engine.sqliteVersion,
      limits: {
        maxFrameSize: config.maxFrameSize,
        busyTimeout: config.engine.busyTimeout,
        txIdleTimeout: config.engine.txIdleTimeout,
        statementTimeout: config.engine.statementTimeout,
        maxResultBytes: config.engine.maxResultBytes,
        maxCursors: config.engine.maxCursors,
        frameTimeout: config.frameTimeout,
        cursorIdleTimeout: config.cursorIdleTimeout,
      },
      database: config.dqlite !== null
        ? `dqlite:${config.dqlite.database}`
        : databaseIdentity(config.database),
    };
    try {
      lock?.record(formatAddress(absoluteAddress(this.addr)));
    } catch (err) {
      if (!isNoSpace(err)) throw err;
      // Warned at the start (DatabaseLock.acquire): the lock is held without its record.
    }
    if (config.announceFile !== null && this.addr.transport === "tcp") {
      Deno.writeTextFileSync(config.announceFile, String(this.addr.port));
    }
    const log = new Logger(config.logLevel);
    this.#services = {
      stats: this.#stats = new ServerStats(engine, config.database, this.#hello.server),
      log,
      slowMs: config.slowMs,
      partialFrames: new ByteBudget(config.maxPartialFrameBytes),
      // Requests read and waiting for their turn: as much again, apart.
      queuedRequests: new ByteBudget(config.maxPartialFrameBytes),
      maxRequestValues: config.maxRequestValues,
      unsentReplies: new ByteBudget(config.maxUnsentBytes),
      writeStallTimeout: config.writeStallTimeout,
      helloTimeout: config.helloTimeout,
      cursorIdleTimeout: config.cursorIdleTimeout,
      admit: (session) => this.#admit(session),
    };
    if (engine instanceof Engine) engine.onLog = (level, message) => log.log(level, message);
    if (listener instanceof UnixSocketListener) listener.onSocketReplaced = (m) => log.warn(m);
    if (listener instanceof TlsListener) {
      if (listener.certificateWarning !== null) log.warn(listener.certificateWarning);
      // Port scans, HTTP requests and clients without TLS or that distrust the certificate.
      listener.onHandshakeFailure = (peer, reason) =>
        log.warnThrottled(
          "tls handshake",
          `closed the connection of ${peer.hostname}:${peer.port}: TLS handshake failed: ${reason}`,
          1000,
          peer.hostname,
        );
    }
    engine.onLeaseExpired = (id, why) => {
      log.warn(
        why === "age"
          ? `lease expired: session ${id} kept its transaction open for ` +
            `${config.engine.txTimeout} ms (--tx-timeout): rolled back`
          : `lease expired: session ${id} left its transaction idle for ` +
            `${config.engine.txIdleTimeout} ms (--tx-idle-timeout): rolled back`,
      );
      for (const s of this.#admitted) if (s.id === id) s.leaseExpired();
    };
    this.#memory = new MemoryReleaser({ enabled: config.releaseMemory });
    this.#maxConnections = budget.connections;
    this.#maxHandshakes = budget.handshakes;
    this.#stats.maxConnections = budget.connections;
    this.#stats.reservedConnections = ADMIN_RESERVED_CONNECTIONS;
    if (budget.warning !== null) log.warn(budget.warning);
    const gate = config.tokenGate;
    if (
      gate !== null && gate.length < MIN_NETWORK_TOKEN_LENGTH && this.addr.transport === "tcp" &&
      !isLoopback(this.addr.hostname)
    ) {
      log.warn(
        `the token is ${gate.length} characters long, on ${formatAddress(this.addr)}: ` +
          `use at least ${MIN_NETWORK_TOKEN_LENGTH} random characters (openssl rand -hex 32) ` +
          "on a network address",
      );
    }
    if (gate === null && this.addr.transport === "unix" && (config.socketMode & 0o002) !== 0) {
      // Connecting to a Unix socket takes write permission on it.
      log.warn(
        `the socket ${formatAddress(this.addr)} is writable by every user (--socket-mode ` +
          `${config.socketMode.toString(8)}) and no token is set: any local user can connect ` +
          "and read or change the whole database; set a token (--token-file or NETSQLITE_TOKEN; " +
          "serve({ token })), or use --socket-mode 660 and a trusted group",
      );
    }
    if (this.addr.transport === "unix") {
      // A group (or everyone) let in by the socket's mode, kept out by a directory above it.
      const unreachable = unreachableSocketWarning(this.addr.path, config.socketMode);
      if (unreachable !== null) log.warn(unreachable);
    }
    if (
      gate !== null && config.tls === null && this.addr.transport === "tcp" &&
      !isLoopback(this.addr.hostname)
    ) {
      log.warn(
        `without TLS the token and all data cross the network in clear text, on ` +
          `${formatAddress(this.addr)} (--tls-cert/--tls-key, serve({ tls }))`,
      );
    }
    this.finished = this.#acceptLoop();
  }

  /**
   * A hello was accepted: the session takes a connection slot, or is told
   * the server is full. Either way it no longer holds a handshake slot.
   *
   * An ordinary session is served while fewer than `--max-connections`
   * ordinary ones are; an admin session (hello `admin: true`) also takes one
   * of the {@link ADMIN_RESERVED_CONNECTIONS} slots beyond. Neither is
   * served once `--max-connections` plus those are open in all.
   */
  #admit(session: Session): ProtocolError | null {
    this.#endHandshake(session);
    const all = this.#admitted.size;
    const ordinary = all - this.#admins.size;
    if (
      all >= this.#maxConnections + ADMIN_RESERVED_CONNECTIONS ||
      (!session.admin && ordinary >= this.#maxConnections)
    ) {
      return this.#tooMany(session.admin, ordinary);
    }
    this.#admitted.add(session);
    if (session.admin) this.#admins.add(session);
    return null;
  }

  /** Frees `session`'s handshake slot, if it holds one. */
  #endHandshake(session: Session): void {
    if (!this.#handshaking.has(session)) return;
    const from = this.#handshaking.get(session)!;
    this.#handshaking.delete(session);
    this.#slotFreed?.();
    this.#slotFreed = null;
    if (from === null) return;
    const n = this.#handshakingFrom.get(from)! - 1;
    if (n === 0) this.#handshakingFrom.delete(from);
    else this.#handshakingFrom.set(from, n);
  }

  /** "N connections are waiting", in the singular for 1. */
  #waitingForHello(): string {
    const n = this.#maxHandshakes;
    return n === 1 ? "1 connection is waiting" : `${n} connections are waiting`;
  }

  /**
   * Why a new connection from `from` (a non-loopback TCP address, or `null`)
   * gets no handshake slot, or `null` when it does.
   */
  #noHandshakeSlot(from: string | null): string | null {
    const c = this.#config;
    if (this.#handshaking.size >= this.#maxHandshakes) {
      return `${this.#waitingForHello()} for their hello (--max-handshakes)`;
    }
    if (from !== null && (this.#handshakingFrom.get(from) ?? 0) >= c.maxHandshakesPerAddress) {
      return `${c.maxHandshakesPerAddress} connections from ${from} are waiting for their ` +
        "hello (--max-handshakes-per-address)";
    }
    return null;
  }

  /**
   * The refusal of a connection over `--max-connections` (an admin session:
   * over the slots kept for admin sessions too), with `ordinary` ordinary
   * sessions open; logged once a second at most: refusals within a second
   * of a line are counted in the next, written a second after it (a timer),
   * so that the last of a burst is logged too.
   */
  #tooMany(admin: boolean, ordinary: number): ProtocolError {
    const max = this.#maxConnections;
    const admins = this.#admins.size;
    const reserve = `${ADMIN_RESERVED_CONNECTIONS} more kept for admin sessions`;
    const connections = countConnections;
    this.#refused++;
    this.#stats.refused++;
    const wait = this.#refusedReported + 1000 - performance.now();
    if (wait <= 0) this.#reportRefused();
    else if (this.#refusedTimer === null) {
      this.#refusedTimer = setTimeout(() => {
        this.#refusedTimer = null;
        this.#reportRefused();
      }, wait);
      Deno.unrefTimer(this.#refusedTimer);
    }
    const ofThem = admins === 1 ? "1 of them an admin session" : `${admins} of them admin sessions`;
    const message = admin
      ? "Cannot start admin session: the server already serves " +
        `${connections(ordinary + admins)}, ${ofThem} (--max-connections ${max}, and ` +
        `${reserve}); close some, or raise the limit`
      : ordinary >= max
      ? `Cannot start session: the server already serves ${connections(max)} ` +
        "(--max-connections); close some, or raise the limit"
      : `Cannot start session: the server already serves ${connections(ordinary + admins)}, ` +
        `${ofThem} (--max-connections ${max}, and ${reserve}); close some, or raise the limit`;
    return new ProtocolError(ErrorCode.TooManyConnections, message);
  }

  /** Logs the refusals not yet logged (see {@link #tooMany}), with the connections open now. */
  #reportRefused(): void {
    if (this.#refusedTimer !== null) clearTimeout(this.#refusedTimer);
    this.#refusedTimer = null;
    if (this.#refused === 0) return;
    const admins = this.#admins.size;
    const ordinary = this.#admitted.size - admins;
    const sessions = (n: number): string => `${n} admin session${n === 1 ? "" : "s"}`;
    this.#services.log.warn(
      `refused ${countConnections(this.#refused)}: ${countConnections(ordinary)} open ` +
        `(--max-connections ${this.#maxConnections})` +
        (admins > 0
          ? ` and ${sessions(admins)} (${ADMIN_RESERVED_CONNECTIONS} more kept for admin sessions)`
          : ""),
    );
    this.#refused = 0;
    this.#refusedReported = performance.now();
  }

  get memoryRelease(): MemoryRelease {
    return this.#memory.snapshot();
  }

  /** Waits until a handshake slot frees, or the server begins to stop. */
  #handshakeSlot(): Promise<void> {
    this.#services.log.warnThrottled(
      "handshakes",
      `accepting no new connection for now: ${this.#waitingForHello()} for their hello ` +
        "(--max-handshakes); new ones wait in the listen backlog",
      1000,
    );
    return new Promise((resolve) => this.#slotFreed = resolve);
  }

  async #acceptLoop(): Promise<void> {
    const served = new Set<Promise<void>>();
    let lastReport = 0;
    while (this.#stopping === null) {
      if (this.#handshaking.size >= this.#maxHandshakes) {
        // Every handshake slot is taken: accept no more until one frees (a
        // hello answered or timed out, within --hello-timeout). New
        // connections wait in the system's listen backlog meanwhile, instead
        // of being accepted only to be closed: a burst of local clients
        // larger than the limit is served in turn.
        await this.#handshakeSlot();
        continue;
      }
      let conn: Deno.Conn;
      try {
        conn = await this.#listener.accept();
      } catch (err) {
        if (this.#stopping !== null) break; // shutdown() closed the listener
        // A connection reset (or aborted) before it was accepted: that one is
        // gone, the next may be taken at once. (Backing off for it let a
        // client that connects and resets, a port scanner, pause accepting
        // 50 ms each time: 60 of them kept a new client waiting 3 s.)
        if (isLostBeforeAccept(err)) continue;
        // Out of file descriptors: report (at most once a second), back off
        // briefly, keep serving.
        if (performance.now() - lastReport > 1000) {
          lastReport = performance.now();
          this.#services.log.error(`cannot accept a connection: ${(err as Error).message}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
        continue;
      }
      const remote = conn.remoteAddr;
      const from = remote.transport === "tcp" && !isLoopback(remote.hostname)
        ? remote.hostname
        : null;
      const full = this.#noHandshakeSlot(from);
      if (full !== null) {
        // Closed at once, unanswered: answering would need the very buffers
        // and timers that this limit keeps unauthenticated peers from taking.
        this.#stats.dropped++;
        this.#services.log.warnThrottled(
          "handshakes",
          `closed a connection from ${peerLabel(remote)} at once: ${full}`,
          1000,
          from ?? undefined,
        );
        try {
          conn.close();
        } catch {
          // Reset by the peer already.
        }
        continue;
      }
      // Plain TCP; a TLS listener sets both itself (transport/tls_listener.ts).
      if ("setNoDelay" in conn) {
        try {
          (conn as Deno.TcpConn).setNoDelay(true);
          // Notices a peer whose host vanished (after the system's keepalive
          // idle time: 2 hours by default on Linux, net.ipv4.tcp_keepalive_time).
          (conn as Deno.TcpConn).setKeepAlive(true);
        } catch {
          // Reset by its peer already (macOS fails these with EINVAL then;
          // Linux does not): the session meets the end of its stream.
        }
      }
      const session = new Session(
        conn,
        this.#engine,
        this.#hello,
        this.#config.tokenGate,
        this.#services,
      );
      this.#handshaking.set(session, from);
      if (from !== null) {
        this.#handshakingFrom.set(from, (this.#handshakingFrom.get(from) ?? 0) + 1);
      }
      this.#sessions.add(session);
      this.#memory.opened();
      const done = session.serve().finally(() => {
        this.#sessions.delete(session);
        this.#endHandshake(session);
        this.#admitted.delete(session);
        this.#admins.delete(session);
        served.delete(done);
        this.#memory.closed();
      });
      served.add(done);
    }
    const graceEnd = performance.now() + this.#graceMs;
    await this.#letWorkFinish(this.#graceMs);
    // Statements still running are given a moment more, so that none that
    // commits goes unanswered; then the engine's close stops what remains.
    // Change feeds send what was committed meanwhile, and for what remains
    // of the grace period.
    const feedMs = Math.max(SHUTDOWN_ANSWER_MS, graceEnd - performance.now());
    const writesDone = () => this.#engine.idle;
    await Promise.all(
      [...this.#sessions].map((s) => s.shutdown(SHUTDOWN_ANSWER_MS, feedMs, writesDone)),
    );
    await Promise.all(served);
    this.#reportRefused(); // and its timer cleared
    this.#services.log.close(); // writes the throttled lines still held back
    await this.#memory.close();
    await this.#engine.close();
    await this.#cleanupFiles();
    this.#lock?.release();
    this.#fileSize?.close();
  }

  /**
   * Waits up to `ms` until no transaction is open, no write waits or awaits
   * its commit, and no cursor is open (one outside a transaction reads its
   * snapshot to the end as a transaction gets to commit).
   */
  async #letWorkFinish(ms: number): Promise<void> {
    if (ms <= 0) return;
    const done = () => this.#engine.idle && ![...this.#sessions].some((s) => s.cursors > 0);
    const end = performance.now() + ms;
    for (let left = ms; left > 0; left = end - performance.now()) {
      if (done()) {
        // One more turn of the event loop, so replies just produced are written out.
        await new Promise((resolve) => setTimeout(resolve, 10));
        if (done()) return;
      }
      await new Promise((resolve) => setTimeout(resolve, Math.min(10, left)));
    }
  }

  /**
   * Removes the announce file and the socket file, the latter only while it
   * is still the one this server created (same device and inode): another
   * server may have replaced it during the shutdown (the listener was
   * closed, so it looked stale), or after someone deleted it. Closing the
   * listener left the file in place (transport/unix_socket_listener.ts).
   */
  async #cleanupFiles(): Promise<void> {
    const announce = this.#config.announceFile;
    if (announce !== null) await Deno.remove(announce).catch(() => {});
    removeSocketFile(this.#listener);
  }

  shutdown(options: ShutdownOptions = {}): Promise<void> {
    if (this.#stopping === null) {
      this.#graceMs = options.graceMs ?? 0;
      this.#stopping = this.finished;
      this.#slotFreed?.(); // an accept loop waiting for a handshake slot
      try {
        this.#listener.close();
      } catch {
        // Already closed.
      }
    }
    return this.#stopping;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.shutdown();
  }
}

/** A peer's address for the log. */
function peerLabel(a: Deno.Addr): string {
  return a.transport === "tcp" ? `${a.hostname}:${a.port}` : "a local process";
}

/**
 * After the grace period of a shutdown, how long each connection's running
 * statement and held group commit may still take to finish and be answered
 * before the engine stops them (ms); its change feeds may send for as long,
 * or for what remains of the grace period when longer.
 */
const SHUTDOWN_ANSWER_MS = 2000;

const HELP = `netsqlite server ${VERSION}: share one SQLite database between processes

Usage: deno run -A server.ts [options]   (the server module alone, or deno task serve)
       netsqlite serve [options]          (the netsqlite command, or deno task cli serve)

Options:
  --db PATH               database file, created if absent (default ./netsqlite.db)
  --socket PATH           Unix socket to listen on (default: per user and database,
                          under $XDG_RUNTIME_DIR/netsqlite/ or <tmpdir>/netsqlite-<uid>/)
  --tcp HOST:PORT         listen on TCP instead (port 0 picks a free port); an address
                          other than loopback (127.x.x.x, ::1, localhost) requires a token
  --channel NAME          listen on the per-user socket of a named channel, which
                          connect({ channel: NAME }) finds
  --socket-mode MODE      octal permissions of the socket file (default 600, owner only);
                          660 lets the socket's group read and change the database
  --token SECRET          clients must present SECRET (connect({ token })); visible in
                          \`ps\`: prefer NETSQLITE_TOKEN or --token-file
  --token-file PATH       read the token from PATH (one line)
  --no-token              serve without a token even when NETSQLITE_TOKEN is set
                          (what autostart passes for a client without a token)
  --tls-cert PATH         serve TCP with TLS: certificate chain (PEM)
  --tls-key PATH          ... and its private key (PEM)
  --readonly              open the database read-only: writes fail with READONLY
  --allow-attach          let clients ATTACH/DETACH files and VACUUM INTO (refused by default)
  --allow-unsafe-pragmas  let clients set PRAGMAs that change durability, safety or the
                          shared connection (synchronous, journal_mode, foreign_keys, ...)
  --allow-double-quoted-strings
                          accept SQLite's "text" literals in double quotes (its legacy
                          default), for a database whose triggers, views, CHECKs or
                          indexes use them; refused by default (the start-up log names
                          such objects)
  --grace-ms MS           on SIGINT/SIGTERM/SIGHUP, let transactions and queued writes finish
                          this long before rolling back (default 5000), and change feeds
                          send what was committed; a second signal exits at once
  --synchronous MODE      full (default; acknowledged writes survive power loss) or normal
  --busy-timeout MS       how long a write waits for the writer (default 5000)
  --journal-size-limit BYTES
                          cut the WAL file back to this size when it starts over after a
                          checkpoint, if it grew larger; -1 = never (default 67108864)
  --tx-idle-timeout MS    roll back a transaction idle this long; 0 = never (default 10000)
  --tx-timeout MS         roll back a transaction open this long, however busy; 0 = never
                          (default)
  --statement-timeout MS  deadline of every statement (node engine: checked between rows of
                          recursive queries and cursors only) (default 30000)
  --max-result-bytes N    largest buffered query result (default 67108864); use iterate()
  --max-frame-size BYTES  largest request or reply (default 67108864)
  --max-request-values N  MessagePack values one request may hold (array items, map keys
                          and values; a byte array counts 8); one more is refused with
                          BAD_REQUEST: split the batch (at least 1024; default 1048576)
  --frame-timeout MS      close a connection inside an incomplete frame when no byte of it
                          arrived for MS (default 10000)
  --hello-timeout MS      close a new connection that has not sent its hello (and token)
                          within MS (default 3000, or --frame-timeout when lower)
  --max-connections N     connections served at once, counted from their accepted hello
                          (default 10000, fewer when the open-file limit is lower); one more
                          is refused with TOO_MANY_CONNECTIONS
  --max-handshakes N      connections waiting for their hello at once (default 1024, fewer
                          when the open-file limit is lower); past it no new connection is
                          accepted until one frees: new ones wait in the listen backlog
  --max-handshakes-per-address N
                          ... of them from one TCP address other than loopback (default 64);
                          one more from that address is closed at once, unanswered
  --max-cursors N         cursors one connection may hold open at once (default 16); one
                          more fails with BAD_REQUEST
  --cursor-idle-timeout MS
                          close a cursor not advanced (no next) for MS, releasing its read
                          snapshot; 0 = never (default 1800000)
  --write-stall-timeout MS
                          close a connection whose client read none of its waiting replies
                          for MS, rolling back its transaction; 0 = never (default 60000)
  --max-unsent-bytes N    replies not yet written to clients, on all connections together;
                          past it a connection with replies unsent runs no further request
                          until its client read them; one with nothing unsent still starts one,
                          so the worst case adds --max-connections x --max-result-bytes
                          (default 268435456)
  --engine auto|ffi|node  SQLite binding: ffi (system libsqlite3, needs --allow-ffi), node
                          (node:sqlite, built in), auto = ffi when a library loads
                          (default: $NETSQLITE_ENGINE, else auto)
  --log-level LEVEL       error, warn (default), info (connections, maintenance) or debug
                          (every request); one line per event on standard error
  --slow-ms MS            log statements slower than MS with duration, rows and the first
                          200 characters of SQL (never parameters); 0 = off (default)
  --backup-dir DIR        let clients have the server write backups and VACUUM INTO
                          copies as new files under DIR (netsqlite backup/vacuum --into);
                          refused without it
  --sqlite-lib PATH       libsqlite3 file for the ffi engine (default: $NETSQLITE_SQLITE_LIB,
                          else libsqlite3.so.0 / libsqlite3.dylib / sqlite3.dll)
  --dqlite HOST:PORT,...  cluster mode: run statements on the leader of the dqlite cluster
                          with these nodes (--db then only names the default socket)
  --dqlite-db NAME        the dqlite database name (required with --dqlite)
  --version, -V           show the version
  --help                  show this help
`;

/** The options of `netsqlite serve`, as `parseArgs` takes them. */
const SERVE_FLAGS = {
  db: { type: "string" },
  socket: { type: "string" },
  tcp: { type: "string" },
  synchronous: { type: "string" },
  "busy-timeout": { type: "string" },
  "journal-size-limit": { type: "string" },
  "tx-idle-timeout": { type: "string" },
  "tx-timeout": { type: "string" },
  "max-frame-size": { type: "string" },
  "max-request-values": { type: "string" },
  "statement-timeout": { type: "string" },
  "max-result-bytes": { type: "string" },
  "frame-timeout": { type: "string" },
  "max-connections": { type: "string" },
  "hello-timeout": { type: "string" },
  "max-handshakes": { type: "string" },
  "max-handshakes-per-address": { type: "string" },
  "max-cursors": { type: "string" },
  "cursor-idle-timeout": { type: "string" },
  "write-stall-timeout": { type: "string" },
  "max-unsent-bytes": { type: "string" },
  engine: { type: "string" },
  "sqlite-lib": { type: "string" },
  channel: { type: "string" },
  "socket-mode": { type: "string" },
  token: { type: "string" },
  "token-file": { type: "string" },
  "no-token": { type: "boolean" },
  "tls-cert": { type: "string" },
  "tls-key": { type: "string" },
  readonly: { type: "boolean" },
  "allow-attach": { type: "boolean" },
  "allow-unsafe-pragmas": { type: "boolean" },
  "allow-double-quoted-strings": { type: "boolean" },
  "grace-ms": { type: "string" },
  "log-level": { type: "string" },
  "slow-ms": { type: "string" },
  "backup-dir": { type: "string" },
  dqlite: { type: "string" },
  "dqlite-db": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/**
 * Parses the server's command-line arguments into {@link ServeOptions}.
 *
 * @param args Arguments as `deno run server.ts` receives them (see `--help`).
 * @returns the options, or `"help"` for `--help`/`-h`.
 * @throws {TypeError} for an unknown flag or a bad value, naming it.
 * @example
 * ```ts
 * import { parseServeArgs } from "@netsqlite/netsqlite/server";
 * const options = parseServeArgs(["--db", "app.db", "--tcp", "127.0.0.1:7878"]);
 * if (options === "help" || options.database !== "app.db" || options.port !== 7878) {
 *   throw new Error("unexpected options");
 * }
 * ```
 */
export function parseServeArgs(args: string[]): ServeOptions | "help" {
  // A value may start with `-` (`--slow-ms -3` reaches the range check).
  const joined = joinValues(args, SERVE_FLAGS);
  const { values } = (() => {
    try {
      return parseArgs({ args: joined, strict: true, options: SERVE_FLAGS });
    } catch (err) {
      throw flagError(err, joined, SERVE_FLAGS);
    }
  })();
  if (values.help) return "help";
  const options: ServeOptions = {
    database: values.db,
    path: values.socket,
    synchronous: values.synchronous as ServeOptions["synchronous"],
    busyTimeout: numberArg("--busy-timeout", values["busy-timeout"]),
    journalSizeLimit: numberArg("--journal-size-limit", values["journal-size-limit"]),
    txIdleTimeout: numberArg("--tx-idle-timeout", values["tx-idle-timeout"]),
    txTimeout: numberArg("--tx-timeout", values["tx-timeout"]),
    maxFrameSize: numberArg("--max-frame-size", values["max-frame-size"]),
    maxRequestValues: numberArg("--max-request-values", values["max-request-values"]),
    statementTimeout: numberArg("--statement-timeout", values["statement-timeout"]),
    maxResultBytes: numberArg("--max-result-bytes", values["max-result-bytes"]),
    frameTimeout: numberArg("--frame-timeout", values["frame-timeout"]),
    maxConnections: numberArg("--max-connections", values["max-connections"]),
    helloTimeout: numberArg("--hello-timeout", values["hello-timeout"]),
    maxHandshakes: numberArg("--max-handshakes", values["max-handshakes"]),
    maxHandshakesPerAddress: numberArg(
      "--max-handshakes-per-address",
      values["max-handshakes-per-address"],
    ),
    maxCursors: numberArg("--max-cursors", values["max-cursors"]),
    cursorIdleTimeout: numberArg("--cursor-idle-timeout", values["cursor-idle-timeout"]),
    writeStallTimeout: numberArg("--write-stall-timeout", values["write-stall-timeout"]),
    maxUnsentBytes: numberArg("--max-unsent-bytes", values["max-unsent-bytes"]),
    engine: values.engine as ServeOptions["engine"],
    sqliteLib: values["sqlite-lib"],
    channel: values.channel,
    socketMode: modeArg(values["socket-mode"]),
    token: tokenArg(values.token, values["token-file"], values["no-token"] === true),
    readonly: values.readonly,
    allowAttach: values["allow-attach"],
    allowUnsafePragmas: values["allow-unsafe-pragmas"],
    allowDoubleQuotedStrings: values["allow-double-quoted-strings"],
    graceMs: numberArg("--grace-ms", values["grace-ms"]),
    logLevel: values["log-level"] as ServeOptions["logLevel"],
    slowMs: numberArg("--slow-ms", values["slow-ms"]),
    backupDir: values["backup-dir"],
  };
  if ((values.dqlite === undefined) !== (values["dqlite-db"] === undefined)) {
    throw new TypeError("Invalid options: --dqlite and --dqlite-db go together");
  }
  if (values.dqlite !== undefined && values["dqlite-db"] !== undefined) {
    options.dqlite = {
      nodes: values.dqlite.split(",").map((n) => n.trim()).filter((n) => n !== ""),
      database: values["dqlite-db"],
    };
  }
  const cert = values["tls-cert"];
  const key = values["tls-key"];
  if ((cert === undefined) !== (key === undefined)) {
    throw new TypeError("Invalid options: --tls-cert and --tls-key go together");
  }
  if (cert !== undefined && key !== undefined) {
    options.tls = { cert: readPem("--tls-cert", cert), key: readPem("--tls-key", key) };
  }
  if (values.tcp !== undefined) {
    const { hostname, port } = parseHostPort(values.tcp);
    options.hostname = hostname;
    options.port = port;
  }
  return options;
}

function modeArg(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^0?[0-7]{3}$/.test(text)) {
    throw new TypeError(`Invalid --socket-mode "${text}": expected octal permissions, e.g. 660`);
  }
  return parseInt(text, 8);
}

/**
 * The token from --token, --token-file or NETSQLITE_TOKEN, in that order;
 * none with --no-token (NETSQLITE_TOKEN is then not read).
 */
function tokenArg(
  token: string | undefined,
  file: string | undefined,
  noToken: boolean,
): string | undefined {
  if (token !== undefined && file !== undefined) {
    throw new TypeError("Invalid options: give --token or --token-file, not both");
  }
  if (noToken) {
    if (token !== undefined || file !== undefined) {
      throw new TypeError(
        `Invalid options: give --no-token alone, not with --${
          token !== undefined ? "token" : "token-file"
        }`,
      );
    }
    return undefined;
  }
  if (token !== undefined) {
    if (token === "") throw new TypeError("Invalid --token: expected a non-empty secret");
    if (token.includes("\uFFFD")) {
      // What an argument's bytes that are not UTF-8 become: the token would
      // silently be another one.
      throw new TypeError(
        "Invalid --token: it holds U+FFFD, the replacement character bytes that are not UTF-8 " +
          `become in an argument; give the token as UTF-8 (or in --token-file or ${TOKEN_ENV})`,
      );
    }
    return token;
  }
  if (file !== undefined) return readTokenFile(file);
  let env: string | undefined;
  try {
    env = Deno.env.get(TOKEN_ENV);
  } catch (err) {
    if (err instanceof Deno.errors.NotCapable || err instanceof Deno.errors.PermissionDenied) {
      // Not a bad argument: the variable cannot be looked at, and serving without the token it
      // may hold would open the database to anyone who can connect.
      throw new Deno.errors.NotCapable(
        `Cannot read ${TOKEN_ENV} (the token, when neither --token nor --token-file is ` +
          `given): ${(err as Error).message}`,
        { cause: err },
      );
    }
    // Deno refuses a value that is not UTF-8, quoting it: the secret is not repeated here.
    if (!(err instanceof Deno.errors.InvalidData)) throw err;
    throw new TypeError(
      `Invalid ${TOKEN_ENV}: it is not valid UTF-8; set it to the token as UTF-8`,
    );
  }
  if (env === "") {
    // As `--token ''`: an empty secret is a mistake (a variable left blank), not "no token".
    throw new TypeError(
      `Invalid ${TOKEN_ENV}: it is set but empty; set it to the token, or unset it to serve ` +
        "without one",
    );
  }
  return env;
}

function readPem(flag: string, path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch (err) {
    throw new TypeError(`Cannot read ${flag} "${path}": ${(err as Error).message}`, { cause: err });
  }
}

/**
 * An integer flag's value: decimal digits only, with an optional `-` (so a
 * negative value reaches the range check, which names the range). `0x10`,
 * `1e3`, `1.5` and blanks are refused rather than read as numbers.
 */
function numberArg(flag: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^-?\d+$/.test(text)) {
    throw new TypeError(`Invalid ${flag} "${text}": expected a whole number in decimal digits`);
  }
  return Number(text);
}

/** The value of `flag` in `args` (`--flag V` or `--flag=V`), or `undefined`. */
function flagValue(args: readonly string[], flag: string): string | undefined {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--") break;
    if (args[i] === flag) return args[i + 1];
    if (args[i].startsWith(`${flag}=`)) return args[i].slice(flag.length + 1);
  }
  return undefined;
}

/** Flags whose option has another name. */
const FLAG_OF_OPTION: Readonly<Record<string, string>> = {
  database: "--db",
  path: "--socket",
  tls: "--tls-cert",
};

/**
 * `Invalid option "statementTimeout": ...` as `Invalid --statement-timeout: ...`
 * when the value came from that flag on the command line; other options it
 * names, as flags (`"path"` as `--socket`, `"hostname"/"port"` as `--tcp`).
 */
function flagInMessage(message: string, args: readonly string[]): string {
  if (!message.startsWith("Invalid option")) return message;
  const m = /^Invalid option "(\w+)"/.exec(message);
  let head = "";
  if (m !== null) {
    const flag = FLAG_OF_OPTION[m[1]] ??
      `--${m[1].replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
    const given = args.some((a) => a === flag || a.startsWith(`${flag}=`));
    head = given ? `Invalid ${flag}` : m[0];
    message = message.slice(m[0].length);
  }
  return head + message.replace(/"hostname"\/"port"/g, "--tcp").replace(
    /"(path|channel|readonly|dqlite)"/g,
    (_, name: string) => FLAG_OF_OPTION[name] ?? `--${name}`,
  );
}

/** Why `dir` cannot take backups (it is missing, or not a directory), or `null`. */
function backupDirProblem(dir: string): string | null {
  try {
    if (Deno.statSync(dir).isDirectory) return null;
    return "it is not a directory";
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return "the directory does not exist; create it first";
    return (err as Error).message;
  }
}

/** `database` for the start-up line: a relative path with its absolute one, `a.db (/abs/a.db)`. */
function withAbsolutePath(database: string): string {
  if (database === ":memory:" || isAbsolute(database)) return database;
  return `${database} (${resolve(database)})`;
}

/**
 * The server's command line: parses `args`, serves until SIGINT/SIGTERM/SIGHUP.
 *
 * @param args Command-line arguments (see `--help`).
 * @returns the exit status: 0, 1 when the server cannot start, 2 on bad arguments.
 * @example
 * ```ts
 * import { main } from "@netsqlite/netsqlite/server";
 * if (await main(["--version"]) !== 0) throw new Error("--version failed"); // prints `netsqlite <version>`
 * ```
 */
export async function main(args: string[] = Deno.args): Promise<number> {
  // A server autostart started outlives its starter: the files that process inherited (a
  // parent's extra pipe, which then would never end for the parent) are not the server's.
  if (autostarted()) closeInheritedFiles();
  if (args.length === 1 && (args[0] === "--version" || args[0] === "-V")) {
    console.log(`netsqlite ${VERSION}`);
    return 0;
  }
  let options;
  try {
    options = parseServeArgs(args);
  } catch (err) {
    if (err instanceof Deno.errors.NotCapable || err instanceof Deno.errors.PermissionDenied) {
      // A permission the arguments need (--allow-env for NETSQLITE_TOKEN): not a bad argument.
      console.error(`netsqlite: ${err.message}`);
      return 1;
    }
    // One line: the help would push it out of sight (or out of a log). A mistake in the options
    // themselves (unknown, missing value) says where they are listed, as bench/load.ts does.
    const code = (err as { code?: unknown }).code;
    const options = typeof code === "string" && code.startsWith("ERR_PARSE_ARGS_");
    console.error(
      `netsqlite: ${(err as Error).message}${options ? " (--help lists the options)" : ""}`,
    );
    return 2;
  }
  if (options === "help") {
    console.log(HELP);
    return 0;
  }
  // A server autostart started leaves its starter's directory once it serves: the paths it uses
  // from then on are made absolute now, against that directory.
  let moveTo: string | null = null;
  const leaving = autostarted();
  if (leaving) options = absolutePaths(options);
  try {
    // The options' own checks (ranges, choices, combinations) are bad arguments too.
    const config = resolveServeOptions(options);
    if (leaving) moveTo = serverDirectory(config.database);
  } catch (err) {
    if (err instanceof Deno.errors.NotCapable) {
      // A permission the default socket needs (--allow-sys=uid): not a bad argument.
      console.error(`netsqlite: ${err.message}`);
      return 1;
    }
    if (!(err instanceof TypeError || err instanceof RangeError)) throw err;
    console.error(`netsqlite: ${flagInMessage(err.message, args)}`);
    return 2;
  }
  const backupDir = options.backupDir;
  const unusable = typeof backupDir === "string" ? backupDirProblem(backupDir) : null;
  if (unusable !== null) {
    // Else the server would start and refuse every backup.
    console.error(`netsqlite: Cannot use --backup-dir "${backupDir}": ${unusable}`);
    return 1;
  }
  // SIGHUP (a closed terminal or SSH session, or `kill -HUP` meant as a
  // reload: there is nothing to reload) shuts down as gracefully as SIGTERM,
  // instead of Deno's default of exiting on the spot; unless the server was
  // started ignoring it (`nohup`). Deno, once it listens for any signal,
  // catches SIGHUP too and exits on it when nobody listens: a listener that
  // does nothing keeps it ignored.
  const hangUpIgnored = startedIgnoringHangUp();
  const ignoreHangUp = (): void => {};
  if (hangUpIgnored) Deno.addSignalListener("SIGHUP", ignoreHangUp);
  const endIgnoringHangUp = (): void => {
    if (hangUpIgnored) Deno.removeSignalListener("SIGHUP", ignoreHangUp);
  };
  const signals: Deno.Signal[] = Deno.build.os === "windows"
    ? ["SIGINT"]
    : hangUpIgnored
    ? ["SIGINT", "SIGTERM"]
    : ["SIGINT", "SIGTERM", "SIGHUP"];
  // A signal while the server starts (its lock, socket and database being
  // claimed) stops it once serve() is done, so that it leaves no file behind
  // (Deno's default action would exit on the spot, leaving them).
  const start = startSignals(signals);
  let server: Server;
  try {
    server = await serve(options);
  } catch (err) {
    start.remove();
    endIgnoringHangUp();
    console.error(`netsqlite: ${flagInMessage((err as Error).message, args)}`);
    return start.signal === null ? 1 : 128 + SIGNAL_NUMBERS[start.signal];
  }
  // Autostart stops a server it started and gave up on with SIGUSR2
  // (client/autostart.ts), whose default action ends the process: until here,
  // while the database opens. From here on, before any hello can be answered
  // (no await since serve() returned), a server others may use ignores it.
  const ignoreStop = (): void => {
    console.error(
      "netsqlite: SIGUSR2 ignored: serving (autostart stops only a server still opening)",
    );
  };
  if (Deno.build.os !== "windows") Deno.addSignalListener("SIGUSR2", ignoreStop);
  if (start.signal !== null) {
    // Signalled while starting: stop before serving anyone (the start's
    // handlers stay until the end, a second signal exiting at once).
    await server.shutdown();
    start.remove();
    endIgnoringHangUp();
    if (Deno.build.os !== "windows") Deno.removeSignalListener("SIGUSR2", ignoreStop);
    printLine("netsqlite: stopped");
    return 128 + SIGNAL_NUMBERS[start.signal];
  }
  const graceMs = options.graceMs ?? 5000;
  let signalledAt = -1;
  const handlers = new Map<Deno.Signal, () => void>();
  for (const sig of signals) {
    const onSignal = () => {
      if (signalledAt >= 0) {
        // One signal can arrive twice: a terminal's Ctrl-C reaches the whole
        // process group, and `deno task` forwards it to us as well. Only a
        // second signal sent on purpose (later) exits at once. (Counted from
        // the end of the first one's handling, the shutdown's start: that
        // delays the second's handling, as a loaded machine does.)
        if (performance.now() - signalledAt < SAME_SIGNAL_MS) return;
        printLine(`netsqlite: ${sig} again: exiting at once`, "stderr");
        Deno.exit(128 + SIGNAL_NUMBERS[sig as "SIGINT" | "SIGTERM" | "SIGHUP"]);
      }
      signalledAt = performance.now();
      printLine(
        `netsqlite: ${sig}: shutting down (waiting up to ${graceMs} ms for writes in progress; ` +
          "signal again to exit at once)",
      );
      server.shutdown({ graceMs });
      signalledAt = performance.now();
    };
    handlers.set(sig, onSignal);
    Deno.addSignalListener(sig, onSignal);
  }
  start.remove(); // after the handlers above are in place: no moment without one
  const db = options.dqlite
    ? `dqlite database "${options.dqlite.database}"`
    : withAbsolutePath(options.database ?? "netsqlite.db");
  const tls = options.tls ? " with TLS" : "";
  const on = formatAddress(absoluteAddress(server.addr));
  printLine(`netsqlite ${VERSION} serving ${db} on ${on}${tls}`);
  printLine(`netsqlite: ${describeMemoryRelease(server.memoryRelease)}`);
  printLine(`netsqlite: ${describeEngine(server.sqlite)}`);
  if (hangUpIgnored) {
    printLine(
      "netsqlite: SIGHUP ignored, as it was when the server started (nohup): a hang-up does not " +
        "stop the server; SIGINT or SIGTERM does",
    );
  }
  if (options.allowDoubleQuotedStrings) {
    printLine(
      'netsqlite: double-quoted string literals accepted ("x" is text where no column x)',
    );
  }
  const tokenFile = flagValue(args, "--token-file");
  const tooOpen = tokenFile === undefined ? null : tokenFileWarning(tokenFile);
  if (tooOpen !== null) new Logger(options.logLevel).warn(tooOpen);
  // Every relative path given has been used or made absolute by now.
  if (moveTo !== null) leaveStarterDirectory(moveTo);
  await server.finished;
  for (const [sig, onSignal] of handlers) Deno.removeSignalListener(sig, onSignal);
  endIgnoringHangUp();
  if (Deno.build.os !== "windows") Deno.removeSignalListener("SIGUSR2", ignoreStop);
  if (signalledAt >= 0) printLine("netsqlite: stopped");
  return 0;
}

/** The signal handlers of a start, and the first signal they caught. */
interface StartSignals {
  /** The first signal received while starting, or `null`. */
  readonly signal: "SIGINT" | "SIGTERM" | "SIGHUP" | null;
  /** Removes the handlers (idempotent). */
  remove(): void;
}

/**
 * Handles `signals` while the server starts: the first is noted (the start
 * goes on, then the server stops before serving and exits 128 + n), a second
 * one sent on purpose (later than {@link SAME_SIGNAL_MS}: see `main`) exits at once.
 */
function startSignals(signals: Deno.Signal[]): StartSignals {
  const handlers = new Map<Deno.Signal, () => void>();
  let at = -1;
  const state: { signal: StartSignals["signal"]; remove(): void } = {
    signal: null,
    remove(): void {
      for (const [sig, onSignal] of handlers) Deno.removeSignalListener(sig, onSignal);
      handlers.clear();
    },
  };
  for (const sig of signals) {
    const onSignal = (): void => {
      const name = sig as "SIGINT" | "SIGTERM" | "SIGHUP";
      if (state.signal !== null) {
        if (performance.now() - at < SAME_SIGNAL_MS) return;
        printLine(`netsqlite: ${sig} again: exiting at once`, "stderr");
        Deno.exit(128 + SIGNAL_NUMBERS[name]);
      }
      state.signal = name;
      at = performance.now();
      printLine(
        `netsqlite: ${sig} while starting: stopping once the start is done (the database may be ` +
          "opening; signal again to exit at once)",
      );
      at = performance.now(); // as in main: from the end of the first one's handling
    };
    handlers.set(sig, onSignal);
    Deno.addSignalListener(sig, onSignal);
  }
  return state;
}

/**
 * Whether the process started with SIGHUP ignored, as `nohup` starts it (bit
 * 0 of `SigIgn` in /proc/self/status, Linux). Listening for a signal replaces
 * that disposition, so the server stopped at the very hang-up nohup was meant
 * to let it survive. False where that cannot be read (other systems, no read
 * permission: never asked at a prompt).
 */
function startedIgnoringHangUp(): boolean {
  const status = "/proc/self/status";
  if (Deno.build.os !== "linux") return false;
  try {
    if (Deno.permissions.querySync({ name: "read", path: status }).state !== "granted") {
      return false;
    }
    const m = /^SigIgn:\s*([0-9a-fA-F]+)\s*$/m.exec(Deno.readTextFileSync(status));
    return m !== null && (BigInt(`0x${m[1]}`) & 1n) === 1n;
  } catch {
    return false;
  }
}

/**
 * A repeat of a shutdown signal within this many ms (of the first one's
 * handling) is the same signal delivered twice, not a second one.
 */
const SAME_SIGNAL_MS = 300;

/** Numbers of the signals the CLI shuts down on (exit code 128 + n when signalled twice). */
const SIGNAL_NUMBERS = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 } as const;

/**
 * True in a server started by `connect({ autostart })`, which marks it with
 * `NETSQLITE_AUTOSTARTED=1` in its environment (client/autostart.ts).
 */
function autostarted(): boolean {
  try {
    return Deno.env.get("NETSQLITE_AUTOSTARTED") === "1";
  } catch {
    return false; // no --allow-env
  }
}

if (import.meta.main) Deno.exit(await main());

/** "N connections", in the singular for 1 (`--max-connections 1` is allowed). */
function countConnections(n: number): string {
  return `${n} connection${n === 1 ? "" : "s"}`;
}

/**
 * True for an accept that failed for that connection alone: its peer reset
 * or aborted it while it waited in the listen backlog (Deno's accept then
 * fails reading its address, `ENOTCONN`).
 */
function isLostBeforeAccept(err: unknown): boolean {
  return err instanceof Deno.errors.NotConnected ||
    err instanceof Deno.errors.ConnectionAborted || err instanceof Deno.errors.ConnectionReset;
}
