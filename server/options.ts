/**
 * Server options: what users pass, and the validated, fully-filled
 * configuration the server runs with.
 *
 * @module
 */

import {
  type Address,
  channelSocketPath,
  DEFAULT_DATABASE,
  defaultPortFile,
  defaultSocketPath,
  formatAddress,
  HAS_UNIX_SOCKETS,
} from "../transport/address.ts";
import { resolve } from "node:path";
import { DEFAULT_MAX_FRAME_SIZE } from "../transport/frame_reader.ts";
import { READ_SIZE_LARGE } from "../transport/frame_channel.ts";
import { HIGH_WATER } from "./session.ts";
import { type EngineConfig, JOURNAL_SIZE_LIMIT } from "../engine/engine.ts";
import { MAX_HANDLES, MAX_PREPARED, MAX_PREPARED_TEXT } from "../engine/handles.ts";
import { MAX_BACKGROUND_READS } from "../engine/reader_line.ts";
import {
  CHANGE_FEED_VALUE_BYTES,
  MAX_QUEUED_CHANGES,
  MAX_QUEUED_CHANGES_PER_CONNECTION,
  MAX_QUEUED_VALUE_BYTES,
  MAX_QUEUED_VALUE_BYTES_PER_CONNECTION,
} from "../engine/change_log.ts";
import type { EngineChoice, LoadOptions } from "../engine/binding/load.ts";
import { isLoopback, TokenGate } from "./auth.ts";
import { type LogLevel, parseLogLevel } from "./log.ts";
import type { TlsServerOptions } from "../transport/listen.ts";
import { refuseUnknownOptions, shownOption } from "../protocol/option_names.ts";

/** Time a new connection has for its hello, in ms, unless `frameTimeout` is lower. */
export const DEFAULT_HELLO_TIMEOUT = 3000;
/**
 * Default bound on the MessagePack values of one request: far above what one
 * statement binds (SQLite takes at most 32,766 parameters), and a batch of
 * about 100,000 statements of 7 parameters (0.27 s of decoding).
 */
export const DEFAULT_MAX_REQUEST_VALUES = 1_048_576;

/**
 * Options of {@link serve}: the database, where to listen (a Unix socket by
 * default, or TCP), and the server's limits. Every option has a default.
 *
 * @example
 * ```ts
 * import { serve, type ServeOptions } from "@netsqlite/netsqlite/server";
 * const dir = await Deno.makeTempDir();
 * const options: ServeOptions = {
 *   database: `${dir}/app.db`,
 *   hostname: "127.0.0.1",
 *   port: 0, // the system picks a free port: see server.addr
 *   busyTimeout: 2000,
 *   txIdleTimeout: 5000,
 * };
 * await using server = await serve(options);
 * if (server.addr.transport !== "tcp") throw new Error("expected TCP");
 * ```
 */
export interface ServeOptions {
  /**
   * Database file, created if absent. A relative path is resolved against
   * the working directory once, at start: the server keeps serving that file
   * if the process changes directory later.
   * @default {"netsqlite.db"}
   */
  database?: string;
  /**
   * Unix socket path to listen on.
   * @default {the per-user, per-database path from `defaultSocketPath()`}
   */
  path?: string;
  /** Listen on TCP at this host instead of a Unix socket. @default {"127.0.0.1" when `port` is set} */
  hostname?: string;
  /** Listen on TCP at this port (0 picks a free one) instead of a Unix socket. */
  port?: number;
  /**
   * `full`: an acknowledged write survives power loss. `normal`: it survives
   * a crash of the server but not of the machine.
   * @default {"full"}
   */
  synchronous?: "full" | "normal";
  /** How long a write waits for the writer before `BUSY_TIMEOUT`, in ms. @default {5000} */
  busyTimeout?: number;
  /**
   * Size in bytes the WAL file is cut back to when it starts over after a
   * complete checkpoint, if it grew larger (`PRAGMA journal_size_limit` of
   * the writer; clients may not set it); -1 keeps it as large as it grew.
   * @default {67108864}
   */
  journalSizeLimit?: number;
  /** Idle time after which an open transaction is rolled back, in ms; 0 = never. @default {10000} */
  txIdleTimeout?: number;
  /**
   * Age at which an open transaction is rolled back however busy it is, in
   * ms; 0 = never. A transaction holds the writer: without it, a client
   * sending a statement now and then keeps every other writer waiting.
   * @default {0}
   */
  txTimeout?: number;
  /** Largest frame payload accepted or sent, in bytes. @default {67108864} */
  maxFrameSize?: number;
  /**
   * MessagePack values one request may hold: every array item, map key and
   * map value counts (a batch statement `[sql, [p1, p2]]` is 5 with its
   * place in the list). Decoding costs time and memory per value (an empty
   * map takes 1 byte on the wire and 64 decoded; a byte array counts 8), so
   * a request past it is refused with `BAD_REQUEST` as soon as a length read
   * says so, before its items are built; the connection stays usable.
   * Requests within the default take up to about 0.5 s to decode (measured:
   * a batch of 100,000 statements of 7 parameters 0.27 s), during which the
   * server serves no one: lower it where that matters (to 1024 at least).
   * @default {1048576}
   */
  maxRequestValues?: number;
  /** Statements kept prepared per SQLite connection. @default {256} */
  statementCacheSize?: number;
  /**
   * Deadline of a statement the server can stop (recursive queries; for
   * cursors: stepping time summed over chunks), in ms; a call's `timeout` option overrides it.
   * @default {30000}
   */
  statementTimeout?: number;
  /** Largest buffered result (`query()`), in bytes, before `RESULT_TOO_LARGE`. @default {67108864} */
  maxResultBytes?: number;
  /** Cursors one connection may hold open at once. @default {16} */
  maxCursors?: number;
  /**
   * Reads run in the background at once (FFI engine: reads outside a
   * transaction that ran past the 2 ms inline budget), each on a reader
   * connection of its own; more wait in line, first come first served,
   * within their deadline (`STATEMENT_TIMEOUT`) and cancellable.
   * @default {16}
   */
  maxBackgroundReads?: number;
  /**
   * Prepared statements one connection may hold at once (and 16 Mi
   * characters of their SQL); one more fails with `BAD_REQUEST`. The
   * client finalizes statements it drops, once they are collected.
   * @default {10000}
   */
  maxStatements?: number;
  /**
   * Prepared statements all connections may hold together; one more fails
   * with `BAD_REQUEST` (finalize some), so that many connections each within
   * `maxStatements` cannot exhaust the server's memory.
   * @default {1000000}
   */
  maxPrepared?: number;
  /**
   * Characters (UTF-16 code units) of SQL all connections' prepared
   * statements may hold together; past it `prepare` fails with `BAD_REQUEST`.
   * @default {268435456 (256 Mi)}
   */
  maxPreparedText?: number;
  /**
   * Changes the server's change feeds may hold queued, on all connections,
   * for clients that have not read them yet; a feed that would queue more
   * ends with `LAGGED` (resume with `since`), as one past its `buffer` does.
   * @default {1000000}
   */
  maxQueuedChanges?: number;
  /**
   * Changes the feeds of one connection may hold queued together, for a
   * client that has not read them yet; past it a feed ends with `LAGGED`.
   * @default {100000}
   */
  maxQueuedChangesPerConnection?: number;
  /**
   * Bytes of values (approximately: blobs, strings as UTF-16) the server's
   * change feeds may hold queued, on all connections, for feeds with
   * `values: true` whose clients have not read them yet; past it a feed
   * ends with `LAGGED` (a change larger than this alone is queued when
   * nothing else is).
   * @default {268435456 (256 Mi)}
   */
  maxQueuedValueBytes?: number;
  /**
   * Bytes of values the feeds of one connection may hold queued together;
   * past it a feed ends with `LAGGED`.
   * @default {67108864 (64 Mi)}
   */
  maxQueuedValueBytesPerConnection?: number;
  /**
   * Bytes of values the server keeps with its last changes, so that a feed
   * with values can resume with `since`; past it the oldest are let go (a
   * resume with values before them fails with `FEED_GAP`). It bounds the
   * key-value keys and the table and collection names of more than 128
   * characters the server keeps with those changes too (past it the oldest
   * changes are let go whole).
   * @default {67108864 (64 Mi)}
   */
  changeFeedValueBytes?: number;
  /**
   * How long a connection inside an incomplete frame may send no byte before
   * it is closed with `FRAME_TIMEOUT`, in ms: any byte restarts the wait,
   * so a large frame over a slow link is not cut off while its bytes flow
   * (a stall, not the whole frame's time, is bounded; the hello's whole time
   * is bounded by {@link helloTimeout}).
   * @default {10000}
   */
  frameTimeout?: number;
  /**
   * How long a new connection has to complete its hello (with its token)
   * before it is closed with `FRAME_TIMEOUT`, in ms. Until then it holds a
   * handshake slot ({@link maxHandshakes}), not a connection slot.
   * @default {3000, or frameTimeout when that is lower}
   */
  helloTimeout?: number;
  /**
   * Connections that may be waiting for their hello at once; past it the
   * server accepts no new connection until one frees (they wait in the
   * system's listen backlog). These do not count against
   * {@link maxConnections}: only a connection whose hello (and token) was
   * accepted takes a connection slot.
   * @default {1024}
   */
  maxHandshakes?: number;
  /**
   * Connections from one TCP address (not loopback, not a Unix socket) that
   * may be waiting for their hello at once; one more is closed at once. A
   * client pool opens up to its `max` connections together, so keep this at
   * least the largest pool behind one address (a NAT).
   * @default {64}
   */
  maxHandshakesPerAddress?: number;
  /**
   * A cursor not advanced (no `next`) for this long is closed and its read
   * snapshot released, so that a client that vanished cannot keep
   * checkpoints from truncating the WAL; its next `next` fails with
   * `CURSOR_CLOSED`. The server sees a `next` per chunk (up to 1024 rows or
   * about 64 KiB): a consumer slower than this per chunk needs more. In ms;
   * 0 = never.
   * @default {1800000 (30 minutes)}
   */
  cursorIdleTimeout?: number;
  /**
   * Bytes that incomplete frames may hold on all connections together: a
   * connection whose incomplete frame needs more is closed with
   * `FRAME_TOO_LARGE`, so that many connections each sending most of a large
   * frame and stalling cannot exhaust the server's memory. At least
   * `maxFrameSize` + 128 KiB (a frame being completed holds up to one read of
   * 64 KiB more). Requests read whole and waiting for their turn are bounded
   * by as much again, apart, each counted as decoded: its frame's bytes plus
   * 64 per value (see {@link maxRequestValues}).
   * @default {1 GiB, or 4 × maxFrameSize when larger}
   */
  maxPartialFrameBytes?: number;
  /**
   * Bytes of replies not yet written to sockets, on all connections
   * together. While they are past it, a connection with replies unsent
   * (its client is slow to read them, or does not read) starts no further
   * request until its client read them; one with nothing unsent still
   * starts its next, so a client that keeps up always progresses. Each
   * connection holds at most 4 MiB of replies besides, plus one reply
   * started under the bound: in the worst case the server holds this much
   * plus one largest reply per connection (a query's `maxResultBytes`, or
   * `maxFrameSize` for other replies), each until its client reads or
   * `writeStallTimeout` closes it. At least the largest query result
   * (`maxResultBytes`, or `maxFrameSize` when lower) + 4 MiB.
   * @default {268435456 (256 MiB), or that minimum when larger}
   */
  maxUnsentBytes?: number;
  /**
   * A connection whose client took no byte of the replies waiting for it
   * for this long is closed, its transaction rolled back, as for a client
   * gone; the server logs it (`write stall`, with the bytes unsent). Any
   * progress restarts the wait: a client that reads slowly but steadily is
   * not closed. In ms; 0 = never.
   * @default {60000}
   */
  writeStallTimeout?: number;
  /**
   * Connections served at once. One more is answered with a
   * `TOO_MANY_CONNECTIONS` error at its handshake and closed; the others go
   * on. Where the open-file limit can be read (Linux), connections and
   * cursors share it (`server/connection_limit.ts`): the server says so at
   * start when that serves fewer.
   * @default {10000}
   */
  maxConnections?: number;
  /**
   * Give memory back to the operating system after connections close
   * (`malloc_trim` through FFI when `--allow-ffi` is granted on glibc; a full
   * collection after a wave of disconnects when `gc` is exposed). See
   * `server/memory.ts`.
   * @default {true}
   */
  releaseMemory?: boolean;
  /**
   * Which SQLite binding runs the database: `ffi` (the system's libsqlite3
   * through `Deno.dlopen`; needs `--allow-ffi`), `node` (node:sqlite, built
   * in, needs nothing; statements cannot be stopped or moved off the main
   * thread), or `auto` (FFI when a library loads, else node).
   * @default {env `NETSQLITE_ENGINE`, else "auto"}
   */
  engine?: EngineChoice;
  /**
   * The libsqlite3 file for the FFI binding.
   * @default {env `NETSQLITE_SQLITE_LIB`, else the platform's usual names}
   */
  sqliteLib?: string;
  /**
   * Listen on the named channel's socket (see `channelSocketPath()`), which
   * `connect({ channel })` of the same user finds; instead of `path`/`port`.
   */
  channel?: string;
  /**
   * Permission bits of the Unix socket file. Wider than 0o600 lets other
   * users (of the group, or everyone) connect, read and change the database.
   * @default {0o600}
   */
  socketMode?: number;
  /**
   * Secret every client must present in its hello (`connect({ token })`);
   * a wrong or missing one gets `AUTH` and a closed connection. Required to
   * listen on a TCP address that is not loopback.
   * @default {null, no token}
   */
  token?: string | null;
  /** Serve TCP with TLS: certificate chain and private key, PEM text. @default {null} */
  tls?: TlsServerOptions | null;
  /**
   * Open the database read-only: writes fail with `READONLY`. The file must exist.
   * @default {false}
   */
  readonly?: boolean;
  /** Let clients run ATTACH, DETACH and VACUUM INTO. @default {false} */
  allowAttach?: boolean;
  /**
   * Let clients set the PRAGMAs that change durability, safety or the shared
   * connection's settings (see `engine/policy.ts`).
   * @default {false}
   */
  allowUnsafePragmas?: boolean;
  /**
   * Accept SQLite's double-quoted string literals (`"x"` read as the text
   * 'x' where no column `x` exists) on every connection, as the sqlite3
   * shell and most drivers do: for a database whose triggers, views, CHECK
   * constraints or indexes were written with them. Off, such triggers and
   * views fail when they run and every `ALTER TABLE … RENAME` fails; the
   * server names those objects in a warning at start.
   * @default {false}
   */
  allowDoubleQuotedStrings?: boolean;
  /**
   * How long a shutdown by signal waits for transactions and queued writes
   * to finish before rolling back what is left, in ms.
   * @default {5000}
   */
  graceMs?: number;
  /**
   * What the server logs on standard error: `error`, `warn`, `info`
   * (connections, maintenance) or `debug` (every request). See `server/log.ts`.
   * @default {"warn"}
   */
  logLevel?: LogLevel;
  /**
   * Log (at `warn`) statements slower than this, in ms, with duration, rows
   * and the first 200 characters of SQL, never parameters; 0 = none.
   * @default {0}
   */
  slowMs?: number;
  /**
   * Directory under which clients may have the server write backups and
   * `VACUUM INTO` copies (`backup`, `vacuum --into`): new files only, no
   * path leaving it. `null` refuses them.
   * @default {null}
   */
  backupDir?: string | null;
  /**
   * Cluster mode: run statements on the leader of a dqlite cluster instead
   * of a local file (`database` then only names the default socket).
   * @default {null, the single-file engine}
   */
  dqlite?: DqliteOptions | null;
}

/** Options of cluster mode ({@link ServeOptions.dqlite}). */
export interface DqliteOptions {
  /** Addresses (`host:port`) of some or all of the cluster's nodes. */
  nodes: readonly string[];
  /** The dqlite database name (created on first use). */
  database: string;
  /**
   * Most connections to the leader at once; a session in a transaction holds one.
   * @default {64}
   */
  poolSize?: number;
  /**
   * How long to look for a leader (at start, and after a leader change) before `NO_LEADER`, in ms.
   * @default {10000}
   */
  leaderTimeout?: number;
}

/** Resolved cluster-mode settings. */
export interface DqliteConfig {
  /** Node addresses. */
  nodes: string[];
  /** The dqlite database name. */
  database: string;
  /** Most connections to the leader at once. */
  poolSize: number;
  /** Leader discovery timeout, in ms. */
  leaderTimeout: number;
}

/** The resolved server configuration. */
export interface ServeConfig {
  /** Where to listen. */
  address: Address;
  /** Engine settings. */
  engine: EngineConfig;
  /** Largest frame payload, in bytes. */
  maxFrameSize: number;
  /** MessagePack values one request may hold. */
  maxRequestValues: number;
  /** Idle time allowed inside a partly received frame, in ms. */
  frameTimeout: number;
  /** Time a new connection has for its hello, in ms. */
  helloTimeout: number;
  /** Connections waiting for their hello at once, at most. */
  maxHandshakes: number;
  /** ... of them from one non-loopback TCP address. */
  maxHandshakesPerAddress: number;
  /** Time a cursor may go without `next` before it is closed, in ms (0 = never). */
  cursorIdleTimeout: number;
  /** Bytes incomplete frames may hold on all connections. */
  maxPartialFrameBytes: number;
  /** Bytes of replies not yet written to sockets, on all connections (see the option). */
  maxUnsentBytes: number;
  /** Close a connection whose client read no reply byte for this long, in ms (0 = never). */
  writeStallTimeout: number;
  /** Connections served at once; more are refused at their handshake. */
  maxConnections: number;
  /** Whether the TCP port is announced in a file (Windows default). */
  announceFile: string | null;
  /** Whether memory is given back after connections close. */
  releaseMemory: boolean;
  /** Which SQLite binding to load, and from where. */
  sqlite: LoadOptions;
  /** The database file: an absolute path (or `:memory:`). */
  database: string;
  /** Permission bits of the Unix socket file. */
  socketMode: number;
  /** Checks client tokens; `null` when none is required. */
  tokenGate: TokenGate | null;
  /** TLS certificate and key, or `null`. */
  tls: TlsServerOptions | null;
  /** Grace period of a shutdown by signal, in ms. */
  graceMs: number;
  /** What the server logs. */
  logLevel: LogLevel;
  /** Slow-statement threshold, in ms (0 = none). */
  slowMs: number;
  /** Cluster mode, or `null` for the single-file engine. */
  dqlite: DqliteConfig | null;
}

/**
 * Every {@link ServeOptions} name (the type checker keeps it complete): any
 * other is refused, as `connect()` refuses one it does not know, rather than
 * silently ignored (a misspelt limit would leave its default in force).
 */
const KNOWN: Readonly<Record<keyof ServeOptions, true>> = {
  database: true,
  path: true,
  hostname: true,
  port: true,
  synchronous: true,
  busyTimeout: true,
  journalSizeLimit: true,
  txIdleTimeout: true,
  txTimeout: true,
  maxFrameSize: true,
  maxRequestValues: true,
  statementCacheSize: true,
  statementTimeout: true,
  maxResultBytes: true,
  maxCursors: true,
  maxBackgroundReads: true,
  maxStatements: true,
  maxPrepared: true,
  maxPreparedText: true,
  maxQueuedChanges: true,
  maxQueuedChangesPerConnection: true,
  maxQueuedValueBytes: true,
  maxQueuedValueBytesPerConnection: true,
  changeFeedValueBytes: true,
  frameTimeout: true,
  helloTimeout: true,
  maxHandshakes: true,
  maxHandshakesPerAddress: true,
  cursorIdleTimeout: true,
  maxPartialFrameBytes: true,
  maxUnsentBytes: true,
  writeStallTimeout: true,
  maxConnections: true,
  releaseMemory: true,
  engine: true,
  sqliteLib: true,
  channel: true,
  socketMode: true,
  token: true,
  tls: true,
  readonly: true,
  allowAttach: true,
  allowUnsafePragmas: true,
  allowDoubleQuotedStrings: true,
  graceMs: true,
  logLevel: true,
  slowMs: true,
  backupDir: true,
  dqlite: true,
};

/** Every {@link DqliteOptions} name. */
const KNOWN_DQLITE: Readonly<Record<keyof DqliteOptions, true>> = {
  nodes: true,
  database: true,
  poolSize: true,
  leaderTimeout: true,
};

/** Names of the command line's flags (and other servers' options) that are other options here. */
const OTHER_NAMES: Readonly<Record<string, string>> = {
  db: '"database"',
  file: '"database"',
  filename: '"database"',
  socket: '"path"',
  host: '"hostname"',
  tcp: '"hostname" and "port"',
  tlsCert: '"tls" ({ cert, key })',
  tlsKey: '"tls" ({ cert, key })',
  tokenFile: '"token" (the secret itself)',
};

/**
 * Validates `options` and fills in defaults.
 *
 * @throws {TypeError} on an unknown option, a value of the wrong type or an unknown choice.
 * @throws {RangeError} on a number out of range.
 */
export function resolveServeOptions(options: ServeOptions = {}): ServeConfig {
  if (typeof options !== "object" || options === null || Array.isArray(options)) {
    throw new TypeError(`Invalid options: expected an object, got ${shownOption(options)}`);
  }
  refuseUnknownOptions(options, Object.keys(KNOWN), "serve()", "", OTHER_NAMES);
  const dqlite = resolveDqlite(options);
  const given = options.database ??
    (dqlite === null ? DEFAULT_DATABASE : `dqlite-${dqlite.database}.db`);
  if (typeof given !== "string" || given === "") {
    throw new TypeError(
      `Invalid option "database": expected a file path, got ${shownOption(given)}`,
    );
  }
  if (given.startsWith("file:")) {
    throw new TypeError(
      `Invalid option "database": "${given}" is a URI; give the file's path (SQLite URI ` +
        "filenames are not supported: the server opens, locks and checks the file by its path)",
    );
  }
  // Resolved once: SQLite opens readers, and the server checks and locks the
  // file, by this path for as long as it serves, whatever the working directory.
  const database = given === ":memory:" ? given : resolve(given);
  const synchronous = options.synchronous ?? "full";
  if (synchronous !== "full" && synchronous !== "normal") {
    throw new TypeError(
      `Invalid option "synchronous": expected "full" or "normal", got "${String(synchronous)}"`,
    );
  }
  for (const key of ["path", "hostname"] as const) {
    const v = options[key];
    if (v !== undefined && (typeof v !== "string" || v === "")) {
      throw new TypeError(
        `Invalid option "${key}": expected a non-empty string, got ${shownOption(v)}`,
      );
    }
  }
  const tcp = options.port !== undefined || options.hostname !== undefined;
  const places = [tcp, options.path !== undefined, options.channel !== undefined];
  if (places.filter(Boolean).length > 1) {
    throw new TypeError(
      'Invalid options: give either "path" (Unix socket) or "hostname"/"port" (TCP) ' +
        'or "channel", not several',
    );
  }
  const path = options.channel !== undefined ? channelSocketPath(options.channel) : options.path;
  let address: Address;
  let announceFile: string | null = null;
  if (tcp) {
    address = {
      transport: "tcp",
      hostname: options.hostname ?? "127.0.0.1",
      port: integer("port", options.port ?? 0, 0, 65535),
    };
  } else if (HAS_UNIX_SOCKETS || (options.path !== undefined && options.channel === undefined)) {
    address = { transport: "unix", path: path ?? defaultSocketPath(database) };
  } else {
    address = { transport: "tcp", hostname: "127.0.0.1", port: 0 };
    announceFile = path ?? defaultPortFile(database);
  }
  const token = options.token ?? null;
  if (token !== null && typeof token !== "string") {
    throw new TypeError(`Invalid option "token": expected a string, got ${typeof token}`);
  }
  const tokenGate = token === null ? null : new TokenGate(token);
  if (address.transport === "tcp" && !isLoopback(address.hostname) && tokenGate === null) {
    throw new TypeError(
      `Cannot listen on ${formatAddress(address)} without a token: ` +
        "anyone who can reach that address could read and change the database. " +
        "Set a token (--token, NETSQLITE_TOKEN or --token-file; serve({ token })), " +
        "ideally with TLS (--tls-cert/--tls-key), or listen on 127.0.0.1",
    );
  }
  const tls = options.tls ?? null;
  if (tls !== null) {
    if (address.transport !== "tcp") {
      throw new TypeError('Invalid option "tls": TLS is for TCP; give "hostname"/"port" too');
    }
    if (typeof tls.cert !== "string" || typeof tls.key !== "string") {
      throw new TypeError('Invalid option "tls": expected { cert, key } as PEM text');
    }
  }
  const socketMode = integer("socketMode", options.socketMode ?? 0o600, 0, 0o777);
  if ((socketMode & 0o600) !== 0o600) {
    throw new RangeError(
      `Invalid option "socketMode": 0${
        socketMode.toString(8)
      } must let the owner read and write (0600)`,
    );
  }
  const flags = {} as Record<"readonly" | "allowAttach" | "allowUnsafePragmas", boolean>;
  for (const key of ["readonly", "allowAttach", "allowUnsafePragmas"] as const) {
    const v = options[key] ?? false;
    if (typeof v !== "boolean") {
      throw new TypeError(`Invalid option "${key}": expected a boolean, got ${shownOption(v)}`);
    }
    flags[key] = v;
  }
  const doubleQuotedStrings = options.allowDoubleQuotedStrings ?? false;
  if (typeof doubleQuotedStrings !== "boolean") {
    throw new TypeError(
      `Invalid option "allowDoubleQuotedStrings": expected a boolean, got ${
        String(doubleQuotedStrings)
      }`,
    );
  }
  const releaseMemory = options.releaseMemory === undefined ? true : options.releaseMemory;
  if (typeof releaseMemory !== "boolean") {
    throw new TypeError(
      `Invalid option "releaseMemory": expected a boolean, got ${shownOption(releaseMemory)}`,
    );
  }
  const engine = options.engine;
  if (engine !== undefined && engine !== "auto" && engine !== "ffi" && engine !== "node") {
    throw new TypeError(
      `Invalid option "engine": expected "auto", "ffi" or "node", got "${String(engine)}"`,
    );
  }
  const sqliteLib = options.sqliteLib;
  if (sqliteLib !== undefined && (typeof sqliteLib !== "string" || sqliteLib === "")) {
    throw new TypeError(
      `Invalid option "sqliteLib": expected a file path, got ${shownOption(sqliteLib)}`,
    );
  }
  const backupDir = options.backupDir ?? null;
  if (backupDir !== null && (typeof backupDir !== "string" || backupDir === "")) {
    throw new TypeError(
      `Invalid option "backupDir": expected a directory path, got ${shownOption(backupDir)}`,
    );
  }
  if (dqlite !== null && doubleQuotedStrings) {
    throw new TypeError(
      'Invalid options: "allowDoubleQuotedStrings" is not supported in cluster mode ("dqlite")',
    );
  }
  if (dqlite !== null && flags.readonly) {
    throw new TypeError('Invalid options: "readonly" is not supported in cluster mode ("dqlite")');
  }
  const frameTimeout = integer("frameTimeout", options.frameTimeout ?? 10000, 1, 2 ** 31 - 1);
  const maxFrameSize = integer(
    "maxFrameSize",
    options.maxFrameSize ?? DEFAULT_MAX_FRAME_SIZE,
    1024,
    2 ** 31 - 1,
  );
  const maxResultBytes = integer(
    "maxResultBytes",
    options.maxResultBytes ?? 64 * 1024 * 1024,
    1,
    2 ** 31 - 1,
  );
  return {
    dqlite,
    address,
    announceFile,
    logLevel: parseLogLevel(options.logLevel ?? "warn"),
    slowMs: integer("slowMs", options.slowMs ?? 0, 0, 2 ** 31 - 1),
    releaseMemory,
    sqlite: { engine, library: sqliteLib, doubleQuotedStrings },
    database,
    socketMode,
    tokenGate,
    tls,
    graceMs: integer("graceMs", options.graceMs ?? 5000, 0, 2 ** 31 - 1),
    maxFrameSize,
    maxRequestValues: integer(
      "maxRequestValues",
      options.maxRequestValues ?? DEFAULT_MAX_REQUEST_VALUES,
      1024,
      2 ** 31 - 1,
    ),
    frameTimeout,
    helloTimeout: integer(
      "helloTimeout",
      options.helloTimeout ?? Math.min(DEFAULT_HELLO_TIMEOUT, frameTimeout),
      1,
      2 ** 31 - 1,
    ),
    maxHandshakes: integer("maxHandshakes", options.maxHandshakes ?? 1024, 1, 1e6),
    maxHandshakesPerAddress: integer(
      "maxHandshakesPerAddress",
      options.maxHandshakesPerAddress ?? 64,
      1,
      1e6,
    ),
    cursorIdleTimeout: integer(
      "cursorIdleTimeout",
      options.cursorIdleTimeout ?? 1_800_000,
      0,
      2 ** 31 - 1,
    ),
    // At least one largest frame plus two reads: less would refuse a single
    // client's pipelined frames (each read adds up to READ_SIZE_LARGE bytes).
    maxPartialFrameBytes: partialFrameBytes(options.maxPartialFrameBytes, maxFrameSize),
    maxUnsentBytes: unsentBytes(options.maxUnsentBytes, Math.min(maxResultBytes, maxFrameSize)),
    writeStallTimeout: integer(
      "writeStallTimeout",
      options.writeStallTimeout ?? 60_000,
      0,
      2 ** 31 - 1,
    ),
    maxConnections: integer("maxConnections", options.maxConnections ?? 10000, 1, 1e6),
    engine: {
      path: database,
      synchronous,
      maxFrameSize,
      busyTimeout: integer("busyTimeout", options.busyTimeout ?? 5000, 0, 2 ** 31 - 1),
      journalSizeLimit: integer(
        "journalSizeLimit",
        options.journalSizeLimit ?? JOURNAL_SIZE_LIMIT,
        -1,
        Number.MAX_SAFE_INTEGER,
      ),
      txIdleTimeout: integer("txIdleTimeout", options.txIdleTimeout ?? 10000, 0, 2 ** 31 - 1),
      txTimeout: integer("txTimeout", options.txTimeout ?? 0, 0, 2 ** 31 - 1),
      statementCacheSize: integer("statementCacheSize", options.statementCacheSize ?? 256, 1, 1e6),
      statementTimeout: integer(
        "statementTimeout",
        options.statementTimeout ?? 30000,
        1,
        2 ** 31 - 1,
      ),
      maxResultBytes,
      // A huge value is refused before it is built; a value a little larger
      // than a frame still gets RESULT_TOO_LARGE's advice, and rows written
      // by other programs up to 256 MiB stay readable and updatable.
      maxValueBytes: Math.min(1e9, Math.max(2 * maxFrameSize, 256 * 1024 * 1024)),
      maxCursors: integer("maxCursors", options.maxCursors ?? 16, 1, 1e6),
      maxBackgroundReads: integer(
        "maxBackgroundReads",
        options.maxBackgroundReads ?? MAX_BACKGROUND_READS,
        1,
        1e5,
      ),
      maxStatements: integer("maxStatements", options.maxStatements ?? MAX_HANDLES, 1, 1e7),
      maxPrepared: integer("maxPrepared", options.maxPrepared ?? MAX_PREPARED, 1, 1e9),
      maxPreparedText: integer(
        "maxPreparedText",
        options.maxPreparedText ?? MAX_PREPARED_TEXT,
        1,
        2 ** 40,
      ),
      maxQueuedChanges: integer(
        "maxQueuedChanges",
        options.maxQueuedChanges ?? MAX_QUEUED_CHANGES,
        1,
        1e9,
      ),
      maxQueuedChangesPerConnection: integer(
        "maxQueuedChangesPerConnection",
        options.maxQueuedChangesPerConnection ?? MAX_QUEUED_CHANGES_PER_CONNECTION,
        1,
        1e9,
      ),
      maxQueuedValueBytes: integer(
        "maxQueuedValueBytes",
        options.maxQueuedValueBytes ?? MAX_QUEUED_VALUE_BYTES,
        0,
        2 ** 50,
      ),
      maxQueuedValueBytesPerConnection: integer(
        "maxQueuedValueBytesPerConnection",
        options.maxQueuedValueBytesPerConnection ?? MAX_QUEUED_VALUE_BYTES_PER_CONNECTION,
        0,
        2 ** 50,
      ),
      changeFeedValueBytes: integer(
        "changeFeedValueBytes",
        options.changeFeedValueBytes ?? CHANGE_FEED_VALUE_BYTES,
        0,
        2 ** 50,
      ),
      policy: flags,
      backupDir,
    },
  };
}

function resolveDqlite(options: ServeOptions): DqliteConfig | null {
  const d = options.dqlite ?? null;
  if (d === null) return null;
  if (typeof d !== "object") {
    throw new TypeError('Invalid option "dqlite": expected { nodes, database }');
  }
  refuseUnknownOptions(d, Object.keys(KNOWN_DQLITE), "dqlite", "dqlite.");
  const nodes = d.nodes;
  if (!Array.isArray(nodes) || nodes.length === 0) {
    throw new TypeError('Invalid option "dqlite.nodes": expected a non-empty list of "host:port"');
  }
  for (const n of nodes) {
    if (typeof n !== "string" || !/^[^\s:]+:\d+$|^\[[^\]]+\]:\d+$/.test(n)) {
      throw new TypeError(`Invalid option "dqlite.nodes": "${String(n)}" is not "host:port"`);
    }
  }
  const name = d.database;
  if (typeof name !== "string" || name === "" || name.includes("/") || name.includes("\0")) {
    throw new TypeError(
      `Invalid option "dqlite.database": expected a name without "/", got ${shownOption(name)}`,
    );
  }
  return {
    nodes: [...nodes],
    database: name,
    poolSize: integer("dqlite.poolSize", d.poolSize ?? 64, 1, 10000),
    leaderTimeout: integer("dqlite.leaderTimeout", d.leaderTimeout ?? 10000, 1, 2 ** 31 - 1),
  };
}

/** `maxPartialFrameBytes`: at least one largest frame and two reads (see its option). */
function partialFrameBytes(value: number | undefined, maxFrameSize: number): number {
  const min = maxFrameSize + 2 * READ_SIZE_LARGE;
  if (typeof value === "number" && Number.isInteger(value) && value < min) {
    throw new RangeError(
      `Invalid option "maxPartialFrameBytes": ${value} is below ${min}, maxFrameSize ` +
        `(${maxFrameSize}) + 128 KiB: a frame being read holds up to one 64 KiB read more; ` +
        "raise it or lower maxFrameSize",
    );
  }
  return integer(
    "maxPartialFrameBytes",
    value ?? Math.max(2 ** 30, 4 * maxFrameSize),
    min,
    2 ** 53 - 1,
  );
}

/**
 * `maxUnsentBytes`: at least one largest query result (`largest`) and a
 * connection's 4 MiB of replies (see its option).
 */
function unsentBytes(value: number | undefined, largest: number): number {
  const min = largest + HIGH_WATER;
  if (typeof value === "number" && Number.isInteger(value) && value < min) {
    throw new RangeError(
      `Invalid option "maxUnsentBytes": ${value} is below ${min}, the largest query result ` +
        `(${largest}, maxResultBytes or maxFrameSize when lower) + 4 MiB: one connection ` +
        "gathers up to 4 MiB of replies and one more reply; raise it or lower maxResultBytes",
    );
  }
  return integer("maxUnsentBytes", value ?? Math.max(256 * 1024 * 1024, min), min, 2 ** 53 - 1);
}

function integer(name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== "number" || !Number.isInteger(value)) {
    throw new TypeError(`Invalid option "${name}": expected an integer, got ${shownOption(value)}`);
  }
  if (value < min || value > max) {
    throw new RangeError(`Invalid option "${name}": ${value} is outside ${min}..${max}`);
  }
  return value;
}
