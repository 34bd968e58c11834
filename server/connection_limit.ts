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

/**
 * Descriptors kept for everything else: the listener, standard streams, the
 * writer's and the shared reader's files, idle readers, the WAL watch.
 */
export const FD_BASE = 64;
/** Descriptors an open cursor holds. */
export const FDS_PER_CURSOR = 2;

/**
 * This process's limit on open files (Linux: `/proc/self/limits`; Deno
 * raises it to the hard limit at start), or `null` where it cannot be read.
 */
export function openFileLimit(): number | null {
  const path = "/proc/self/limits";
  try {
    // Without read permission for it, say "unknown" rather than prompt.
    if (Deno.permissions.querySync({ name: "read", path }).state !== "granted") return null;
    const text = Deno.readTextFileSync(path);
    const m = /^Max open files\s+(\d+)/m.exec(text);
    return m === null ? null : Number(m[1]);
  } catch {
    return null; // another system, or no permission to read it
  }
}

/** What {@link fdBudget} grants. */
export interface FdBudget {
  /** Connections served at once. */
  connections: number;
  /** Connections waiting for their hello at once (each holds a descriptor too). */
  handshakes: number;
  /** Cursors open at once, on all connections. */
  cursors: number;
  /** Why fewer connections than configured are served, or `null`. */
  lowered: string | null;
}

/**
 * Shares the open-file limit: an eighth of it (at most
 * {@link MAX_OPEN_CURSORS}, at least 16) for cursors, up to a quarter of
 * the rest (at least 16) for connections waiting for their hello, up to
 * `handshakes`, the rest but {@link FD_BASE} for connections, up to
 * `configured`.
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
  fileLimit: number | null = openFileLimit(),
  handshakes = 0,
): FdBudget {
  if (fileLimit === null) {
    return { connections: configured, handshakes, cursors: MAX_OPEN_CURSORS, lowered: null };
  }
  const usable = Math.max(fileLimit - FD_BASE, 32);
  const cursors = Math.min(MAX_OPEN_CURSORS, Math.max(16, Math.floor(usable / 8)));
  const left = Math.max(usable - FDS_PER_CURSOR * cursors, 16);
  const waiting = Math.min(handshakes, Math.max(16, Math.floor(left / 4)));
  const room = Math.max(left - waiting, 16);
  if (configured <= room && waiting === handshakes) {
    return { connections: configured, handshakes, cursors, lowered: null };
  }
  const connections = Math.min(configured, room);
  return {
    connections,
    handshakes: waiting,
    cursors,
    lowered: `serving at most ${connections} connections (--max-connections ${configured}), ` +
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
