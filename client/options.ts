/**
 * `connect()` options and their resolution into a fully-filled, validated
 * {@link ConnectConfig}, once (as `server/options.ts` does for `serve()`).
 *
 * @module
 */

import { ConnectionError } from "../protocol/errors.ts";
import type { AutostartOptions } from "./autostart.ts";
import { realOrResolved } from "./_lock_owner.ts";
import type { TlsClientOptions } from "../transport/connect.ts";
import {
  type Address,
  channelSocketPath,
  DEFAULT_DATABASE,
  defaultPortFile,
  defaultSocketPath,
  HAS_UNIX_SOCKETS,
  withoutPrompt,
} from "../transport/address.ts";
import { DEFAULT_MAX_FRAME_SIZE } from "../transport/frame_writer.ts";
import { readTextFile } from "../transport/_runtime.ts";
import { resolve } from "node:path";
import { refuseUnknownOptions, shownOption } from "../protocol/option_names.ts";

/**
 * Longest token a server accepts, in UTF-8 bytes (server/auth.ts
 * `MAX_TOKEN_BYTES`, kept apart so that the client does not load the server's modules).
 */
export const MAX_TOKEN_BYTES = 1024;

/** Default `connectTimeout` when no `requestTimeout` is set, in ms (as PostgreSQL clients' 10 s). */
export const DEFAULT_CONNECT_TIMEOUT = 10_000;

/**
 * Options of `connect()`: where the server is (a Unix socket `path`, a TCP
 * `hostname`/`port`, a `channel`, or the default socket of `database`),
 * the pool size and timeouts. Every option has a default.
 *
 * @example
 * ```ts
 * import { serve } from "@netsqlite/netsqlite/server";
 * import { connect, type ConnectOptions } from "@netsqlite/netsqlite";
 * const dir = await Deno.makeTempDir();
 * await using server = await serve({ database: `${dir}/a.db`, hostname: "127.0.0.1", port: 0 });
 * if (server.addr.transport !== "tcp") throw new Error("expected TCP");
 * const options: ConnectOptions = {
 *   hostname: server.addr.hostname,
 *   port: server.addr.port,
 *   max: 2, // connections in the pool
 *   requestTimeout: 10_000, // ms without a reply before the connection is closed
 * };
 * await using db = await connect(options);
 * if (db.max !== 2) throw new Error("expected max 2");
 * ```
 */
export interface ConnectOptions {
  /** Unix socket path of the server. @default {the default socket of `database`} */
  path?: string;
  /**
   * TCP host of the server: a name or an address; an IPv6 address with or without its brackets
   * (`::1` or `[::1]`, as `new URL("tcp://[::1]:7878").hostname` gives it).
   * @default {"127.0.0.1" when `port` is set}
   */
  hostname?: string;
  /** TCP port of the server (1..65535); required with `hostname`. */
  port?: number;
  /**
   * Database whose default socket to use when neither `path` nor `port` nor
   * `channel` is given; when nothing answers there, the Unix socket its
   * server records in the database's lock file (`<db>.lock`), where the
   * client may read that file without asking for a permission. With
   * `autostart`, it must name the same file as `autostart.database` (or be
   * left out).
   * @default {autostart.database, else "netsqlite.db"}
   */
  database?: string;
  /** Largest frame payload accepted from the server, in bytes. @default {67108864} */
  maxFrameSize?: number;
  /**
   * Milliseconds to wait for a reply before the request rejects with
   * `REQUEST_TIMEOUT` and its connection is closed (so no late reply can be
   * mistaken, and the server rolls back an open transaction); 0 = wait forever.
   * @default {0}
   */
  requestTimeout?: number;
  /**
   * Milliseconds to open a connection (the first one, and each reopened
   * one): the TCP connection, the TLS handshake and the server's handshake
   * reply together. On expiry the socket is closed and the call rejects with
   * `ConnectionError` `REQUEST_TIMEOUT` (no request was sent); 0 = wait forever.
   * The handshake reply is also bounded by `requestTimeout`.
   * @default {requestTimeout when set, else 10000}
   */
  connectTimeout?: number;
  /**
   * Reopen a lost connection on its next call, unless a transaction was open
   * on it (see `Client`). With `false`, once a connection is lost every call
   * of the client fails with that `ConnectionError`.
   * @default {true}
   */
  reconnect?: boolean;
  /**
   * Most connections the client opens (lazily, when calls need them).
   * `transaction()` and `reserve()` take one each; plain calls share the
   * rest. `1` is a single connection on which raw `BEGIN`/`COMMIT` is allowed
   * and calls made from inside `transaction()`'s function join that transaction.
   * @default {4}
   */
  max?: number;
  /**
   * Milliseconds a call, `transaction()` or `reserve()` waits for a
   * connection of the pool (all reserved or busy, or one opening) before it
   * rejects with `ConnectionError` `ACQUIRE_TIMEOUT`, nothing sent; 0 = wait
   * forever (a call's `signal` still ends the wait).
   * @default {0}
   */
  acquireTimeout?: number;
  /** Secret to present in the handshake, when the server requires one. @default {null} */
  token?: string | null;
  /**
   * Connect over TLS (TCP only), trusting `caCerts` (PEM) besides the
   * runtime's root authorities, or with `true` those alone (as `{}`).
   * `false`/`null` = plain.
   * @default {null, plain TCP}
   */
  tls?: TlsClientOptions | boolean | null;
  /** Connect to the per-user socket of this named channel (see `serve({ channel })`). */
  channel?: string;
  /**
   * When no server answers at the Unix socket, start one (a detached
   * `server.ts` process serving `database`) and wait until it answers.
   * Needs `--allow-run`. @default {undefined, no autostart}
   */
  autostart?: AutostartOptions;
}

/** {@link ConnectOptions} resolved: every field filled in and checked. */
export interface ConnectConfig {
  /** Where the server is. */
  addr: Address;
  /**
   * The database whose default socket `addr` is (given neither `path`,
   * `channel` nor a host), or `null`: when nothing answers there, its lock
   * file may name the server's socket.
   */
  database: string | null;
  /** Largest frame payload accepted. */
  maxFrameSize: number;
  /** ms without a reply before a connection is closed; 0 = none. */
  requestTimeout: number;
  /** ms to open a connection (TCP, TLS, handshake reply); 0 = none. */
  connectTimeout: number;
  /** Reopen lost connections. */
  reconnect: boolean;
  /** Most connections. */
  max: number;
  /** ms a caller waits for a connection of the pool; 0 = forever. */
  acquireTimeout: number;
  /** Secret presented in the hello, or `null`. */
  token: string | null;
  /** TLS settings for TCP, or `null`. */
  tls: TlsClientOptions | null;
  /** Start a server when none answers (first connection only), or `null`. */
  autostart: AutostartOptions | null;
}

const KNOWN: readonly string[] = [
  "path",
  "hostname",
  "port",
  "database",
  "maxFrameSize",
  "requestTimeout",
  "connectTimeout",
  "reconnect",
  "max",
  "acquireTimeout",
  "token",
  "tls",
  "channel",
  "autostart",
];

/**
 * Checks `connect()` options and fills in defaults. Without `path` or
 * `port`, the default socket of `database` is used (on Windows: the port
 * announced in the file beside it, read here).
 *
 * @throws {TypeError} for an unknown option or a value of the wrong type.
 * @throws {RangeError} for a number out of range.
 * @throws {ConnectionError} on Windows when no server announced a port.
 */
export async function resolveConnectOptions(options: ConnectOptions = {}): Promise<ConnectConfig> {
  if (typeof options !== "object" || options === null || Array.isArray(options)) {
    throw new TypeError(`Invalid options: expected an object, got ${String(options)}`);
  }
  refuseUnknownOptions(options, KNOWN, "connect()");
  for (const key of ["path", "hostname", "database", "channel"] as const) {
    const v = options[key];
    if (v !== undefined && (typeof v !== "string" || v === "")) {
      throw new TypeError(
        `Invalid option "${key}": expected a non-empty string, got ${shownOption(v)}`,
      );
    }
  }
  const tcp = options.port !== undefined || options.hostname !== undefined;
  if (tcp && options.path !== undefined) {
    throw new TypeError(
      'Invalid options: give either "path" (Unix socket) or "hostname"/"port" (TCP)',
    );
  }
  if (options.hostname !== undefined && options.port === undefined) {
    throw new TypeError('Invalid options: "hostname" needs a "port"');
  }
  const reconnect = options.reconnect ?? true;
  if (typeof reconnect !== "boolean") {
    throw new TypeError(
      `Invalid option "reconnect": expected a boolean, got ${shownOption(reconnect)}`,
    );
  }
  const requestTimeout = integer("requestTimeout", options.requestTimeout ?? 0, 0, 2 ** 31 - 1);
  const config = {
    maxFrameSize: integer(
      "maxFrameSize",
      options.maxFrameSize ?? DEFAULT_MAX_FRAME_SIZE,
      1024,
      DEFAULT_MAX_FRAME_SIZE,
    ),
    requestTimeout,
    connectTimeout: integer(
      "connectTimeout",
      options.connectTimeout ?? (requestTimeout > 0 ? requestTimeout : DEFAULT_CONNECT_TIMEOUT),
      0,
      2 ** 31 - 1,
    ),
    reconnect,
    max: integer("max", options.max ?? 4, 1, 1024),
    acquireTimeout: integer("acquireTimeout", options.acquireTimeout ?? 0, 0, 2 ** 31 - 1),
    token: options.token ?? null,
    tls: tlsOption(options.tls, tcp),
    autostart: options.autostart ?? null,
  };
  const autostartDatabase = await autostartOption(options.autostart, options.database);
  if (config.token !== null && typeof config.token !== "string") {
    throw new TypeError(
      `Invalid option "token": expected a string, got ${shownOption(config.token)}`,
    );
  }
  if (config.token === "") {
    // A server never has an empty token (`--token ''` and an empty NETSQLITE_TOKEN
    // are refused), and autostart would pass it on as NETSQLITE_TOKEN="".
    throw new TypeError(
      'Invalid option "token": it is empty; pass the server\'s token, or leave the option out ' +
        "(or null) to connect without one",
    );
  }
  if (config.token !== null) {
    if (!config.token.isWellFormed()) {
      // As SQL and values with one: sent, it would be U+FFFD, another token.
      throw new TypeError(
        'Invalid option "token": it has a lone UTF-16 surrogate, which UTF-8 cannot represent ' +
          "(it would be sent as U+FFFD, another token)",
      );
    }
    const bytes = new TextEncoder().encode(config.token).length;
    if (bytes > MAX_TOKEN_BYTES) {
      // The server would close the connection on the too large hello (FRAME_TOO_LARGE).
      throw new TypeError(
        `Invalid option "token": ${bytes} bytes is longer than a server accepts ` +
          `(${MAX_TOKEN_BYTES}, UTF-8)`,
      );
    }
  }
  let addr: Address;
  let database: string | null = null;
  if (tcp) {
    addr = {
      transport: "tcp",
      // `[::1]` as `::1`: Node.js and Bun look a bracketed address up as a name (ENOTFOUND).
      hostname: options.hostname?.replace(/^\[([^\]]*:[^\]]*)\]$/, "$1") ?? "127.0.0.1",
      port: integer("port", options.port, 1, 65535),
    };
  } else if (options.path !== undefined) {
    addr = { transport: "unix", path: options.path };
  } else if (options.channel !== undefined && HAS_UNIX_SOCKETS) {
    // Worked out without a prompt for what it reads (env, uid): a missing flag is named instead.
    const channel = options.channel;
    addr = { transport: "unix", path: withoutPrompt(() => channelSocketPath(channel)) };
  } else {
    // The server autostart starts listens on the default socket of its database.
    const file = options.database ?? autostartDatabase ?? DEFAULT_DATABASE;
    if (HAS_UNIX_SOCKETS) {
      addr = { transport: "unix", path: withoutPrompt(() => defaultSocketPath(file)) };
      database = file;
    } else {
      const announced = withoutPrompt(() => defaultPortFile(file));
      const port = Number(await readTextFile(announced).catch(() => "NaN"));
      if (!Number.isInteger(port)) {
        throw new ConnectionError(`Cannot find the server of ${file}: no port in ${announced}`);
      }
      addr = { transport: "tcp", hostname: "127.0.0.1", port };
    }
  }
  return { addr, database, ...config };
}

/**
 * Checks `autostart` and returns its database, or `null` without autostart.
 *
 * @throws {TypeError} when it is not `{ database: "<file>" }`, or when
 *   `database` (the option of `connect()`) names another file.
 */
async function autostartOption(
  autostart: unknown,
  database: string | undefined,
): Promise<string | null> {
  if (autostart === undefined || autostart === null) return null;
  const file = (autostart as { database?: unknown }).database;
  if (typeof autostart !== "object" || typeof file !== "string" || file === "") {
    throw new TypeError('Invalid option "autostart": expected { database: "<file>" }');
  }
  if (database !== undefined && !await sameFile(database, file)) {
    throw new TypeError(
      `Invalid options: "database" is "${database}" but "autostart.database" is "${file}", ` +
        'another file: give the database once, in "autostart.database"',
    );
  }
  return file;
}

/**
 * True when `a` and `b` name the same database: the same absolute or real
 * path, or both `":memory:"` (which is no file: `./:memory:` is one).
 */
async function sameFile(a: string, b: string): Promise<boolean> {
  if (a === ":memory:" || b === ":memory:") return a === b;
  return resolve(a) === resolve(b) || await realOrResolved(a) === await realOrResolved(b);
}

/** TLS option names of other clients, and what to use instead. */
const TLS_HINTS: Record<string, string> = {
  ca: 'use "caCerts" (an array of PEM strings)',
  rootCerts: 'use "caCerts" (an array of PEM strings)',
  cert: "client certificates are not supported (the server authenticates clients by token)",
  key: "client certificates are not supported (the server authenticates clients by token)",
  rejectUnauthorized: "the server's certificate is always verified: trust its CA with caCerts",
  servername: "the certificate must name the host given in hostname",
};

/** Checks `tls`: `true` = TLS with the bundled roots; only `caCerts` inside. */
function tlsOption(tls: unknown, tcp: boolean): TlsClientOptions | null {
  if (tls === undefined || tls === null || tls === false) return null;
  if (tls !== true && (typeof tls !== "object" || Array.isArray(tls))) {
    throw new TypeError(
      `Invalid option "tls": expected true or an object { caCerts?: string[] }, got ${
        shownOption(tls)
      }`,
    );
  }
  if (!tcp) {
    throw new TypeError('Invalid option "tls": TLS is for TCP: give "hostname"/"port"');
  }
  if (tls === true) return {};
  const settings = tls as Record<string, unknown>;
  for (const key of Object.keys(settings)) {
    if (key !== "caCerts") {
      throw new TypeError(
        `Invalid option "tls.${key}": not a TLS option (known: caCerts)` +
          (key in TLS_HINTS ? `: ${TLS_HINTS[key]}` : ""),
      );
    }
  }
  const caCerts = settings.caCerts;
  if (caCerts === undefined) return {};
  const expected = 'Invalid option "tls.caCerts": expected a non-empty array of PEM strings';
  if (!Array.isArray(caCerts) || caCerts.length === 0) {
    throw new TypeError(`${expected}, got ${Array.isArray(caCerts) ? "[]" : kind(caCerts)}`);
  }
  const bad = caCerts.findIndex((pem) => typeof pem !== "string" || pem === "");
  if (bad !== -1) {
    throw new TypeError(`${expected}: element ${bad} is ${kind(caCerts[bad])}`);
  }
  return { caCerts: [...caCerts] };
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

/** What a value is, without its content (a certificate or key is not printed). */
function kind(v: unknown): string {
  if (v === null) return "null";
  if (typeof v === "string") return v === "" ? "an empty string" : "a string";
  if (typeof v === "object") return `an object (${v.constructor?.name ?? "null prototype"})`;
  return `a ${typeof v}`;
}
