/**
 * How many connections and cursors the server serves at once, within the
 * process's open-file limit: a connection holds one descriptor, an open
 * cursor two (its reader connection's database and WAL files). Past the
 * limit the server could not even accept a connection to tell its client
 * why (the client would hang until its request timeout), and SQLite could
 * not open the files it needs.
 *
 * @module
 */

import { MAX_OPEN_CURSORS } from "../engine/engine.ts";
import { getOpenFileLimit } from "../engine/binding/_libc.ts";

/**
 * Descriptors kept for everything else: the listener, standard streams, the
 * writer's and the shared reader's files, idle readers, the WAL watch.
 */
export const FD_BASE = 64;
/** Descriptors an open cursor holds. */
export const FDS_PER_CURSOR = 2;

/**
 * This process's limit on open files (Deno raises it to the hard limit at
 * start): `getrlimit` through FFI (`--allow-ffi`), else `/proc/self/limits`
 * (Linux; Deno reads it only under `--allow-all`). `Infinity` when
 * unlimited, `null` where it cannot be read.
 */
export function openFileLimit(): number | null {
  const limit = readOpenFileLimit();
  return typeof limit === "string" ? null : limit;
}

/** The open-file limit, or why it cannot be read (see {@link openFileLimit}). */
export function readOpenFileLimit(): number | string {
  const os = Deno.build.os;
  if (os === "windows") return Infinity; // sockets are handles there, not C descriptors
  const fromLibc = getOpenFileLimit();
  if (fromLibc !== null) return fromLibc;
  const path = "/proc/self/limits";
  try {
    // Without read permission for it, say "unknown" rather than prompt.
    if (Deno.permissions.querySync({ name: "read", path }).state === "granted") {
      const m = /^Max open files\s+(\d+|unlimited)/m.exec(Deno.readTextFileSync(path));
      if (m !== null) return m[1] === "unlimited" ? Infinity : Number(m[1]);
    }
  } catch {
    // another system, or no permission to read it (Deno wants --allow-all for /proc/self)
  }
  return os === "linux" || os === "darwin"
    ? "getrlimit() needs --allow-ffi, and /proc/self/limits --allow-all"
    : `not read on ${os}`;
}

/** What {@link fdBudget} grants. */
export interface FdBudget {
  /** Connections served at once. */
  connections: number;
  /** Connections waiting for their hello at once (each holds a descriptor too). */
  handshakes: number;
  /** Cursors open at once, on all connections. */
  cursors: number;
  /**
   * What to warn of at start: why fewer connections than configured are
   * served, or that the open-file limit is unknown; `null` when neither.
   */
  warning: string | null;
}

/**
 * Shares the open-file limit: an eighth of it (at most
 * {@link MAX_OPEN_CURSORS}, at least 16) for cursors, up to a quarter of
 * the rest (at least 16) for connections waiting for their hello, up to
 * `handshakes`, the rest but {@link FD_BASE} for connections, up to
 * `configured`. A limit that could not be read (`null`, or why not) bounds
 * nothing, and the warning says so.
 *
 * @example
 * ```ts
 * import { fdBudget } from "./connection_limit.ts";
 * const { connections, cursors } = fdBudget(10000, 1024);
 * if (connections !== 720 || cursors !== 120) throw new Error(`${connections}, ${cursors}`);
 * ```
 */
export function fdBudget(
  configured: number,
  fileLimit: number | string | null = readOpenFileLimit(),
  handshakes = 0,
): FdBudget {
  if (fileLimit === null || typeof fileLimit === "string") {
    const why = fileLimit === null ? "" : ` (${fileLimit})`;
    return {
      connections: configured,
      handshakes,
      cursors: MAX_OPEN_CURSORS,
      warning: `the open-file limit (ulimit -n) is unknown${why}: connections and cursors ` +
        "are not fitted to it, and past it new connections wait for their connect timeout " +
        "and cursors fail to open",
    };
  }
  const usable = Math.max(fileLimit - FD_BASE, 32);
  const cursors = Math.min(MAX_OPEN_CURSORS, Math.max(16, Math.floor(usable / 8)));
  const left = Math.max(usable - FDS_PER_CURSOR * cursors, 16);
  const waiting = Math.min(handshakes, Math.max(16, Math.floor(left / 4)));
  const room = Math.max(left - waiting, 16);
  if (configured <= room && waiting === handshakes) {
    return { connections: configured, handshakes, cursors, warning: null };
  }
  const connections = Math.min(configured, room);
  return {
    connections,
    handshakes: waiting,
    cursors,
    warning: `serving at most ${connections} connections (--max-connections ${configured}), ` +
      `${waiting} waiting for their hello (--max-handshakes ${handshakes}) and ${cursors} ` +
      `open cursors: the open-file limit is ${fileLimit} (ulimit -n)`,
  };
}

/**
 * Connection slots kept beyond `--max-connections` for admin sessions (hello
 * `admin: true`: the CLI's `stats`, `checkpoint`, `backup`, `integrity`,
 * `vacuum`), so that an operator can look at and maintain a full server, as
 * PostgreSQL's `superuser_reserved_connections`. Their descriptors come out
 * of {@link FD_BASE}.
 */
export const ADMIN_RESERVED_CONNECTIONS = 2;
