/**
 * How many connections, cursors and background reads the server serves at
 * once, within the process's open-file limit: a connection holds one
 * descriptor, an open cursor and a background read two each (their reader
 * connection's database and WAL files). Past the limit the server could not
 * even accept a connection to tell its client why (the client would hang
 * until its request timeout), and SQLite could not open the files it needs.
 *
 * @module
 */

import { MAX_OPEN_CURSORS } from "../engine/engine.ts";
import { MAX_BACKGROUND_READS } from "../engine/reader_line.ts";
import { getOpenFileLimit, openLibc } from "../engine/binding/_libc.ts";

/**
 * Connection slots kept beyond `--max-connections` for admin sessions (hello
 * `admin: true`: the CLI's `stats`, `checkpoint`, `backup`, `integrity`,
 * `vacuum`), so that an operator can look at and maintain a full server, as
 * PostgreSQL's `superuser_reserved_connections`. Their descriptors come out
 * of {@link FD_RESERVE}.
 */
export const ADMIN_RESERVED_CONNECTIONS = 2;

/** Descriptors an open cursor holds (a background read's reader too). */
export const FDS_PER_CURSOR = 2;

/**
 * Descriptors the server opens besides those already open when it draws its
 * budget ({@link openFileCount}) and those of connections, cursors and
 * background reads: the listener (1); the engine's own files (10: the
 * writer's and the shared reader's database, WAL and shared-memory files,
 * the WAL watch; 7 measured on Linux); the 4 readers kept idle (8); the
 * admin sessions' slots ({@link ADMIN_RESERVED_CONNECTIONS}); a maintenance
 * connection and the copy it writes (4); and 3 to spare.
 */
export const FD_RESERVE = 1 + 10 + 4 * FDS_PER_CURSOR + ADMIN_RESERVED_CONNECTIONS + 4 + 3;

/**
 * Descriptors taken to be open at start when they cannot be counted: the
 * standard streams, the runtime's own (its event loop, its caches: about 24
 * measured under Deno 2 on Linux) and the lock file, with some room.
 */
export const FD_IN_USE_GUESS = 36;

/**
 * Descriptors that minimal service needs beyond {@link FD_RESERVE}: one
 * connection, one waiting for its hello, one cursor and one background read.
 */
export const FD_MINIMAL_SERVICE = 1 + 1 + 2 * FDS_PER_CURSOR;

/** Limits above which open descriptors are not counted (it would take too long, and matter little). */
const COUNT_UP_TO = 65536;

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

/**
 * How many descriptors this process has open now, below `limit`: the
 * entries of `/proc/self/fd` (Linux; Deno reads it only under
 * `--allow-all`), else `fcntl(fd, F_GETFD)` through FFI on each descriptor
 * below the limit (Linux and macOS, `--allow-ffi`). `null` when neither
 * works, or the limit is above 65,536 (or unknown): there a count matters
 * little, and counting would take too long.
 */
export function openFileCount(limit: number | string | null = readOpenFileLimit()): number | null {
  if (typeof limit !== "number" || !(limit <= COUNT_UP_TO)) return null;
  const os = Deno.build.os;
  if (os === "linux") {
    try {
      // One entry is the directory being read.
      return [...Deno.readDirSync("/proc/self/fd")].length - 1;
    } catch {
      // Deno wants --allow-all for /proc/self
    }
  }
  if (os !== "linux" && os !== "darwin") return null;
  // int fcntl(int fd, int cmd, ...): F_GETFD takes no third argument.
  const libc = openLibc({ fcntl: { parameters: ["i32", "i32"], result: "i32" } });
  if (libc === null) return null;
  try {
    const F_GETFD = 1;
    let open = 0;
    for (let fd = 0; fd < limit; fd++) if (libc.symbols.fcntl(fd, F_GETFD) !== -1) open++;
    return open;
  } finally {
    libc.close();
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
  /** Reads run in the background at once, each on a reader of its own. */
  backgroundReads: number;
  /**
   * What to warn of at start: why fewer connections than configured are
   * served, that the limit is too low to serve at all, or that it is
   * unknown; `null` when none of these.
   */
  warning: string | null;
}

/** What else {@link fdBudget} takes into account. */
export interface FdBudgetOptions {
  /**
   * Descriptors open when the budget is drawn ({@link openFileCount}), or
   * `null` (the default) for {@link FD_IN_USE_GUESS}.
   */
  inUse?: number | null;
  /** Background reads configured (`maxBackgroundReads`). @default {MAX_BACKGROUND_READS} */
  backgroundReads?: number;
}

/**
 * Shares the open-file limit, less the descriptors open at start and
 * {@link FD_RESERVE}: a 32nd of it for background reads (up to
 * `backgroundReads`), an eighth for cursors (at most
 * {@link MAX_OPEN_CURSORS}), up to a quarter of the rest for connections
 * waiting for their hello (up to `handshakes`), the rest for connections (up
 * to `configured`); at least one each, and a warning that says so plainly
 * when the limit does not leave room even for that. A limit that could not
 * be read (`null`, or why not) bounds nothing, and the warning says so.
 *
 * @example
 * ```ts
 * import { fdBudget } from "./connection_limit.ts";
 * const { connections, cursors } = fdBudget(10000, 1024, 0, { inUse: 36 });
 * if (connections !== 688 || cursors !== 120) throw new Error(`${connections}, ${cursors}`);
 * ```
 */
export function fdBudget(
  configured: number,
  fileLimit: number | string | null = readOpenFileLimit(),
  handshakes = 0,
  options: FdBudgetOptions = {},
): FdBudget {
  const backgroundConfigured = options.backgroundReads ?? MAX_BACKGROUND_READS;
  if (fileLimit === null || typeof fileLimit === "string") {
    const why = fileLimit === null ? "" : ` (${fileLimit})`;
    return {
      connections: configured,
      handshakes,
      cursors: MAX_OPEN_CURSORS,
      backgroundReads: backgroundConfigured,
      warning: `the open-file limit (ulimit -n) is unknown${why}: connections and cursors ` +
        "are not fitted to it, and past it new connections wait for their connect timeout " +
        "and cursors fail to open",
    };
  }
  const inUse = options.inUse ?? FD_IN_USE_GUESS;
  const usable = fileLimit - inUse - FD_RESERVE;
  const share = (n: number, max: number) => Math.min(max, Math.max(1, Math.floor(n)));
  const backgroundReads = share(usable / 32, backgroundConfigured);
  const cursors = share(usable / 8, MAX_OPEN_CURSORS);
  const left = usable - FDS_PER_CURSOR * (cursors + backgroundReads);
  const waiting = share(left / 4, handshakes);
  const connections = share(left - waiting, configured);
  const granted = { connections, handshakes: waiting, cursors, backgroundReads };
  const counted = options.inUse == null ? "" : `, ${inUse} of them in use at start`;
  if (usable < FD_MINIMAL_SERVICE) {
    const least = inUse + FD_RESERVE + FD_MINIMAL_SERVICE;
    return {
      ...granted,
      warning: `the open-file limit is ${fileLimit} (ulimit -n)${counted}: too low to serve ` +
        `clients (the server's own files take about ${FD_RESERVE} more, each connection one ` +
        "and each cursor two): connections and cursors will fail for want of descriptors; " +
        `raise it to 1024 or more (ulimit -n 1024), ${least} at the very least`,
    };
  }
  if (connections === configured && waiting === handshakes) return { ...granted, warning: null };
  const reads = backgroundReads === backgroundConfigured
    ? ""
    : `, ${backgroundReads} background read${backgroundReads === 1 ? "" : "s"}`;
  return {
    ...granted,
    warning: `serving at most ${connections} connection${connections === 1 ? "" : "s"} ` +
      `(--max-connections ${configured}), ` +
      `${waiting} waiting for their hello (--max-handshakes ${handshakes})${reads} and ` +
      `${cursors} open cursor${cursors === 1 ? "" : "s"}: the open-file limit is ` +
      `${fileLimit} (ulimit -n)${counted}`,
  };
}
