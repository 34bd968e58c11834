/**
 * The server's event log: one line per event on standard error, each
 * `TIME LEVEL netsqlite: what happened`, filtered by `--log-level`:
 *
 * - `error`: the server cannot do its work (accept failures), `INTERNAL`
 *   error replies, storage errors (a full disk, I/O errors, a damaged file);
 * - `warn` (the default): authentication failures, expired transaction
 *   leases, timeouts, failed maintenance, slow statements (`--slow-ms`);
 * - `info`: connections opened and closed, maintenance done;
 * - `debug`: every request with its duration.
 *
 * SQL is logged only for slow statements, cut to its first 200 characters;
 * parameters are never logged. Control characters in a message (client
 * text: SQL, file names) are escaped, so an event is always one line.
 *
 * @module
 */

/** How much the server logs. */
export type LogLevel = "error" | "warn" | "info" | "debug";

/** The levels, most severe first. */
export const LOG_LEVELS: readonly LogLevel[] = ["error", "warn", "info", "debug"];

/** Characters of SQL a slow-statement line shows at most. */
export const SQL_SHOWN = 200;

/**
 * Prints `line` on standard output (`console.log`), or standard error, as
 * the server's messages outside the event log (start-up lines, signals,
 * `stopped`) are: a line that cannot be written (into a full disk) is
 * lost, never thrown, so that a signal still shuts the server down.
 */
export function printLine(line: string, to: "stdout" | "stderr" = "stdout"): void {
  try {
    if (to === "stdout") console.log(line);
    else console.error(line);
  } catch {
    // Lost: nothing else can be done with it.
  }
}

/** Writes event lines at or above a level. */
export class Logger {
  readonly #rank: number;
  readonly #write: (line: string) => void;
  /** Per kind of throttled warning: when one was last written, and how many were held back since. */
  readonly #throttled = new Map<string, Throttled>();
  /** Set by {@link close}: held-back lines are written at once from then on. */
  #closed = false;
  /** Lines that could not be written (standard error into a full disk, say), and why. */
  #lost = 0;
  #lostReason = "";

  /**
   * @param level Least severe level written.
   * @param write Where a line goes (default: standard error).
   */
  constructor(level: LogLevel = "warn", write: (line: string) => void = (l) => console.error(l)) {
    this.#rank = LOG_LEVELS.indexOf(level);
    this.#write = write;
  }

  /** True when lines of `level` are written (check before building costly ones). */
  enabled(level: LogLevel): boolean {
    return LOG_LEVELS.indexOf(level) <= this.#rank;
  }

  /**
   * Writes `message` at `level`, if enabled, as one line: its control
   * characters are escaped (see {@link escapeForLog}), so that text a client
   * sent (a file name, SQL, an error message quoting either) can neither
   * start a line of its own nor reach the terminal as a control sequence.
   */
  log(level: LogLevel, message: string): void {
    if (!this.enabled(level)) return;
    const time = new Date().toISOString();
    // A line that cannot be written (the log's file on a full disk) is
    // counted, never thrown: the server serves on, and the next line
    // written says how many were lost.
    try {
      if (this.#lost > 0) {
        const n = this.#lost;
        this.#write(
          `${time} error netsqlite: ${n} log line${n === 1 ? "" : "s"} could not be written ` +
            `(${escapeForLog(this.#lostReason)})`,
        );
        this.#lost = 0;
      }
      this.#write(`${time} ${level.padEnd(5)} netsqlite: ${escapeForLog(message)}`);
    } catch (err) {
      this.#lost++;
      this.#lostReason = err instanceof Error ? err.message : String(err);
    }
  }

  /** {@link log} at `error`. */
  error(message: string): void {
    this.log("error", message);
  }

  /** {@link log} at `warn`. */
  warn(message: string): void {
    this.log("warn", message);
  }

  /**
   * {@link warn}, at most once per `intervalMs` for each `kind`, so that a
   * flood (a client retrying a wrong token, a port scanner) cannot flood
   * the log: a line held back is counted in the next one written, and
   * when no other such line comes by the end of the interval, the last one
   * held back is written then, counting the others. With
   * `peer` (the remote address the line is about), the next line also says
   * from how many distinct addresses those came, naming the
   * {@link PEERS_NAMED} most frequent (for fail2ban-style blocking).
   */
  warnThrottled(kind: string, message: string, intervalMs = 1000, peer?: string): void {
    this.logThrottled("warn", kind, message, intervalMs, peer);
  }

  /** {@link log} at `level`, at most once per `intervalMs` for each `kind` (see {@link warnThrottled}). */
  logThrottled(
    level: LogLevel,
    kind: string,
    message: string,
    intervalMs = 1000,
    peer?: string,
  ): void {
    if (!this.enabled(level)) return;
    const now = performance.now();
    const key = `${level} ${kind}`;
    const last = this.#throttled.get(key);
    if (last !== undefined && now - last.at < intervalMs && !this.#closed) {
      last.held++;
      last.latest = message;
      last.latestPeer = peer;
      if (peer !== undefined) {
        const peers = last.peers ??= new Map();
        const n = peers.get(peer);
        if (n !== undefined) peers.set(peer, n + 1);
        else if (peers.size < PEERS_TRACKED) peers.set(peer, 1);
      }
      // Held back: written by the next such line, or when the interval ends
      // if none comes (an unref'd timer: it keeps no process alive).
      if (last.timer === undefined) {
        last.timer = setTimeout(() => {
          last.timer = undefined;
          this.#writeHeld(last);
        }, Math.max(0, last.at + intervalMs - now));
        Deno.unrefTimer(last.timer);
      }
      return;
    }
    if (last?.timer !== undefined) clearTimeout(last.timer);
    this.#throttled.set(key, {
      level,
      at: now,
      held: 0,
      peers: null,
      latest: "",
      latestPeer: undefined,
      timer: undefined,
    });
    this.#writeCounting(level, message, last?.held ?? 0, last?.peers ?? null);
  }

  /**
   * Writes the last line held back of a kind, counting the others held back
   * with it, and starts the kind's next interval.
   */
  #writeHeld(t: Throttled): void {
    if (t.held === 0) return;
    const peers = t.peers;
    const peer = t.latestPeer;
    if (peers !== null && peer !== undefined) {
      // The line written is not one of those it counts.
      const n = peers.get(peer);
      if (n === 1) peers.delete(peer);
      else if (n !== undefined) peers.set(peer, n - 1);
    }
    const held = t.held - 1;
    t.at = performance.now();
    t.held = 0;
    t.peers = null;
    this.#writeCounting(t.level, t.latest, held, peers);
  }

  /** Writes `message`, with how many like it were held back (from which peers). */
  #writeCounting(
    level: LogLevel,
    message: string,
    held: number,
    peers: Map<string, number> | null,
  ): void {
    if (held === 0) return this.log(level, message);
    this.log(
      level,
      `${message} (and ${held} more like it since the last such line${describePeers(peers)})`,
    );
  }

  /**
   * Writes the lines still held back (see {@link warnThrottled}) and stops
   * their timers; throttled lines logged after this are written at once.
   * The server calls it when it has stopped.
   */
  close(): void {
    this.#closed = true;
    for (const t of this.#throttled.values()) {
      if (t.timer !== undefined) clearTimeout(t.timer);
      t.timer = undefined;
      this.#writeHeld(t);
    }
  }

  /** {@link log} at `info`. */
  info(message: string): void {
    this.log("info", message);
  }

  /** {@link log} at `debug`. */
  debug(message: string): void {
    this.log("debug", message);
  }
}

/** A kind of throttled line: when one was last written, and those held back since. */
interface Throttled {
  level: LogLevel;
  at: number;
  held: number;
  peers: Map<string, number> | null;
  /** The last line held back, and its peer: written if no other such line comes. */
  latest: string;
  latestPeer: string | undefined;
  /** Writes the held-back lines when the interval ends. */
  timer: ReturnType<typeof setTimeout> | undefined;
}

/** Distinct addresses a throttled line counts; more are counted as "or more". */
export const PEERS_TRACKED = 1024;
/** Addresses a throttled line names, most frequent first. */
export const PEERS_NAMED = 3;

/** `, from 2 addresses: 10.0.0.5 ×40, 10.0.0.6 ×2`, or `""` without addresses. */
function describePeers(peers: Map<string, number> | null): string {
  if (peers === null || peers.size === 0) return "";
  const top = [...peers].sort((a, b) => b[1] - a[1]).slice(0, PEERS_NAMED);
  const count = peers.size >= PEERS_TRACKED ? `${PEERS_TRACKED} or more` : String(peers.size);
  const named = top.map(([p, n]) => `${p} ×${n}`).join(", ");
  return `, from ${count} address${peers.size === 1 ? "" : "es"}: ${named}` +
    (peers.size > PEERS_NAMED ? ", ..." : "");
}

/** The characters {@link escapeForLog} escapes: C0 controls, DEL, C1 controls, U+2028 and U+2029. */
// deno-lint-ignore no-control-regex
const CONTROL = /[\x00-\x1f\x7f-\x9f\u2028\u2029]/g;

/** Short escapes, as JavaScript and JSON write them. */
const SHORT_ESCAPES: Readonly<Record<string, string>> = {
  "\t": "\\t",
  "\n": "\\n",
  "\r": "\\r",
};

/**
 * `text` with every character that could end a log line or act on a
 * terminal written as an escape: `\n`, `\r` and `\t`, other C0 controls,
 * DEL and C1 controls as `\xHH` (ESC as `\x1b`, NEL as `\x85`), and the
 * line and paragraph separators as `\u2028` and `\u2029`. Everything else
 * (a backslash too) is left as it is.
 */
export function escapeForLog(text: string): string {
  return text.replace(
    CONTROL,
    (c) =>
      SHORT_ESCAPES[c] ??
        (c.charCodeAt(0) <= 0xff
          ? `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`
          : `\\u${c.charCodeAt(0).toString(16)}`),
  );
}

/**
 * SQL as a slow-statement line shows it: white space runs folded to one
 * space, cut to {@link SQL_SHOWN} characters (with `…` when cut).
 */
export function sqlForLog(sql: string): string {
  const flat = sql.replace(/\s+/g, " ").trim();
  return flat.length <= SQL_SHOWN ? flat : `${flat.slice(0, SQL_SHOWN)}…`;
}

/**
 * Checks a `--log-level` value.
 *
 * @throws {TypeError} when it is not one of {@link LOG_LEVELS}.
 */
export function parseLogLevel(value: unknown): LogLevel {
  if (typeof value === "string" && (LOG_LEVELS as readonly string[]).includes(value)) {
    return value as LogLevel;
  }
  throw new TypeError(
    `Invalid option "logLevel": expected one of ${LOG_LEVELS.join(", ")}, got "${String(value)}"`,
  );
}
