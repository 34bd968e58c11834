/**
 * The server's statistics, answered by the `stats` request. Cheap on the
 * hot path: a request costs a few counter increments and one histogram
 * bucket (log-scale, four buckets per doubling) in the current one-second
 * slot of a one-minute ring; percentiles and rates are computed only when
 * a snapshot is asked for.
 *
 * @module
 */

import type { EngineLike } from "../engine/engine_api.ts";
import { walPaths } from "../engine/database_file.ts";
import { Op, type StatsReport } from "../protocol/messages.ts";

/** Op codes counted (larger ones share the last slot). */
const OPS = 32;
/** Histogram buckets: 0 for < 1 µs, then four per doubling of µs up to 2^30 µs. */
const BUCKETS = 1 + 4 * 30;
/** Seconds of history. */
const WINDOW = 60;
/**
 * TEMP objects the report lists, and the characters of each entry: any
 * client names them (and they outlive it), so that names of a megabyte
 * cannot make the report too large to send; `writer.tempCount` has them all.
 */
const TEMP_LISTED = 1000;
const TEMP_ENTRY_CHARS = 256;

/** `entry` cut to {@link TEMP_ENTRY_CHARS} with `…`, not inside a surrogate pair. */
function cutTempEntry(entry: string): string {
  if (entry.length <= TEMP_ENTRY_CHARS) return entry;
  const high = (entry.charCodeAt(TEMP_ENTRY_CHARS - 1) & 0xfc00) === 0xd800;
  return `${entry.slice(0, high ? TEMP_ENTRY_CHARS - 1 : TEMP_ENTRY_CHARS)}…`;
}

const OP_NAMES: string[] = (() => {
  const names: string[] = [];
  for (const [name, code] of Object.entries(Op)) names[code] = snake(name);
  return names;
})();

/** An op's name as `stats` and the log show it (`query`, `close_cursor`), or `op N`. */
export function opName(op: unknown): string {
  return (typeof op === "number" ? OP_NAMES[op] : undefined) ?? `op ${String(op)}`;
}

/** What a session reports about itself to a snapshot. */
export interface SessionProbe {
  /** Session number. */
  readonly id: number;
  /** When its current request began waiting for the writer (`performance.now()`), or 0. */
  readonly waitingSince: number;
  /** When its open transaction was first seen (`performance.now()`), or 0. */
  readonly transactionSince: number;
  /** Cursors it holds open. */
  readonly cursors: number;
  /** True for an admin session (hello `admin: true`; absent: false). */
  readonly admin?: boolean;
}

/** Counters and the one-minute latency histogram of one server. */
export class ServerStats {
  readonly #engine: EngineLike;
  readonly #database: string;
  /** The `-wal` file, where SQLite keeps it (beside the file a symbolic link names). */
  readonly #walPath: string;
  readonly #server: string;
  readonly #start = performance.now();
  /** Per slot: the second it holds, requests by op, latency histogram. */
  readonly #second = new Float64Array(WINDOW).fill(-1);
  readonly #counts: Uint32Array[] = [];
  readonly #hist: Uint32Array[] = [];
  #slot = 0;
  #current = -1;
  readonly #totals = new Float64Array(OPS);
  /** Connections served now (their hello was accepted). */
  open = 0;
  /** Connections accepted and waiting for their hello now. */
  handshaking = 0;
  /** Connections closed at once since start: too many were waiting for their hello. */
  dropped = 0;
  /** Connections accepted since start. */
  total = 0;
  /** Connections served at once, at most (0 when not set). */
  maxConnections = 0;
  /** Slots kept beyond {@link maxConnections} for admin sessions. */
  reservedConnections = 0;
  /** Of {@link open}: the admin sessions. */
  admin = 0;
  /** Connections refused since start: the server served its most already. */
  refused = 0;
  /** Bytes received. */
  bytesIn = 0;
  /** Bytes sent. */
  bytesOut = 0;
  /**
   * Error replies: requests answered with an error (`close_cursor`'s too),
   * and replies that became errors after their request ran (too large to
   * send, a cursor's chunk among them, which closes the cursor; a grouped
   * write rolled back with its group). Not counted: requests answered
   * `ABORTED` without running (cancelled, or left when a session stops),
   * which are not counted as requests either; and the server's own closing
   * of a cursor (idle, or after its chunk was too large), whose one failure
   * is that the cursor had ended already.
   */
  errors = 0;
  readonly #sessions = new Set<SessionProbe>();
  readonly #pending = new Set<SessionProbe>();

  /**
   * @param engine The engine, for writer, group-commit and maintenance
   *   figures, and in cluster mode the cluster's.
   * @param database The database file (unused in cluster mode: there is none).
   * @param server Server software and version.
   */
  constructor(engine: EngineLike, database: string, server: string) {
    this.#engine = engine;
    this.#database = database;
    this.#walPath = walPaths(database).wal;
    this.#server = server;
    for (let i = 0; i < WINDOW; i++) {
      this.#counts.push(new Uint32Array(OPS));
      this.#hist.push(new Uint32Array(BUCKETS));
    }
  }

  /**
   * A connection was accepted: it counts as handshaking until
   * {@link admitted}, and is probed until {@link closed}.
   */
  opened(probe: SessionProbe): void {
    this.handshaking++;
    this.total++;
    this.#sessions.add(probe);
    this.#pending.add(probe);
  }

  /** A connection's hello was accepted: it counts as open. */
  admitted(probe: SessionProbe): void {
    if (this.#pending.delete(probe)) {
      this.handshaking--;
      this.open++;
      if (probe.admin === true) this.admin++;
    }
  }

  /** A session closed. */
  closed(probe: SessionProbe): void {
    if (!this.#sessions.delete(probe)) return;
    if (this.#pending.delete(probe)) this.handshaking--;
    else {
      this.open--;
      if (probe.admin === true) this.admin--;
    }
  }

  /**
   * Counts one answered request.
   *
   * @param op Its op code.
   * @param ms Its latency, in ms.
   * @param now `performance.now()` when it was answered.
   */
  record(op: number, ms: number, now: number): void {
    const second = Math.floor(now / 1000);
    if (second !== this.#current) this.#rotate(second);
    const code = Number.isInteger(op) && op >= 0 && op < OPS ? op : OPS - 1;
    this.#counts[this.#slot][code]++;
    this.#totals[code]++;
    this.#hist[this.#slot][bucketOf(ms)]++;
  }

  #rotate(second: number): void {
    this.#current = second;
    this.#slot = second % WINDOW;
    if (this.#second[this.#slot] !== second) {
      this.#second[this.#slot] = second;
      this.#counts[this.#slot].fill(0);
      this.#hist[this.#slot].fill(0);
    }
  }

  /** A snapshot of everything, as the `stats` request answers it. */
  report(): StatsReport {
    const now = performance.now();
    const second = Math.floor(now / 1000);
    const uptime = (now - this.#start) / 1000;
    const span = Math.max(Math.min(uptime, WINDOW), 1e-3);
    const hist = new Float64Array(BUCKETS);
    const perOp = new Float64Array(OPS);
    for (let i = 0; i < WINDOW; i++) {
      const s = this.#second[i];
      if (s < 0 || s <= second - WINDOW || s > second) continue;
      const c = this.#counts[i];
      for (let op = 0; op < OPS; op++) perOp[op] += c[op];
      const h = this.#hist[i];
      for (let b = 0; b < BUCKETS; b++) hist[b] += h[b];
    }
    const requests: Record<string, number> = {};
    const rates: Record<string, number> = {};
    for (let op = 0; op < OPS; op++) {
      const name = OP_NAMES[op] ?? "other";
      if (this.#totals[op] > 0) requests[name] = this.#totals[op];
      if (perOp[op] > 0) rates[name] = round(perOp[op] / span);
    }
    let longestWait = 0;
    let cursors = 0;
    const transactions: { session: number; ageMs: number }[] = [];
    for (const p of this.#sessions) {
      if (p.waitingSince > 0) longestWait = Math.max(longestWait, now - p.waitingSince);
      if (p.transactionSince > 0) {
        transactions.push({ session: p.id, ageMs: round(now - p.transactionSince) });
      }
      cursors += p.cursors;
    }
    const engine = this.#engine;
    const cluster = engine.cluster ?? null;
    const mem = Deno.memoryUsage();
    return {
      server: this.#server,
      uptime: round(uptime),
      pid: Deno.pid,
      engine: engine.sqlite.engine,
      library: engine.sqlite.library,
      sqliteVersion: engine.sqliteVersion,
      // In cluster mode there is no local file: `database` only names the default socket.
      database: cluster === null ? this.#database : `dqlite:${cluster.database}`,
      cluster: cluster === null ? null : {
        database: cluster.database,
        nodes: [...cluster.nodes],
        leader: cluster.leader,
        connections: cluster.connections,
        poolSize: cluster.poolSize,
      },
      connections: {
        open: this.open,
        handshaking: this.handshaking,
        total: this.total,
        max: this.maxConnections,
        refused: this.refused,
        dropped: this.dropped,
        admin: this.admin,
        reserved: this.reservedConnections,
      },
      requests,
      rates,
      latency: summarize(hist),
      errors: this.errors,
      writer: {
        waiting: engine.waiting,
        longestWaitMs: round(longestWait),
        temp: engine.tempObjects.slice(0, TEMP_LISTED).map(cutTempEntry),
        tempCount: engine.tempObjects.length,
      },
      lockWaiting: engine.lockWaiting ?? 0,
      transactions,
      groupCommit: engine.groupCommits,
      cursors,
      bytes: { in: this.bytesIn, out: this.bytesOut },
      walBytes: cluster === null ? fileSize(this.#walPath) : null,
      dbBytes: cluster === null ? fileSize(this.#database) : null,
      memory: {
        rss: mem.rss,
        heapUsed: mem.heapUsed,
        heapTotal: mem.heapTotal,
        external: mem.external,
      },
      ...(engine.changes === null ? {} : {
        feeds: {
          heldValueBytes: engine.changes.heldValueBytes,
          queuedChanges: engine.changes.queued.used,
          queuedValueBytes: engine.changes.queued.usedBytes,
        },
      }),
      backups: engine.maintenance?.backups ?? [],
    };
  }
}

/** Histogram bucket of a latency in ms. */
export function bucketOf(ms: number): number {
  const us = ms * 1000;
  if (!(us >= 1)) return 0;
  const b = 1 + Math.floor(Math.log2(us) * 4);
  return b < BUCKETS ? b : BUCKETS - 1;
}

/** Upper bound of a bucket, in ms. */
export function bucketLimit(b: number): number {
  return b === 0 ? 0.001 : 2 ** (b / 4) / 1000;
}

function summarize(hist: Float64Array): StatsReport["latency"] {
  let count = 0;
  for (const n of hist) count += n;
  const at = (q: number): number => {
    if (count === 0) return 0;
    const rank = Math.ceil(q * count);
    let seen = 0;
    for (let b = 0; b < BUCKETS; b++) {
      seen += hist[b];
      if (seen >= rank) return round(bucketLimit(b));
    }
    return round(bucketLimit(BUCKETS - 1));
  };
  let max = 0;
  for (let b = BUCKETS - 1; b >= 0; b--) {
    if (hist[b] > 0) {
      max = round(bucketLimit(b));
      break;
    }
  }
  return { count, p50: at(0.5), p99: at(0.99), max };
}

function round(n: number): number {
  return Math.round(n * 1000) / 1000;
}

function fileSize(path: string): number {
  if (path.startsWith(":memory:")) return 0;
  try {
    return Deno.statSync(path).size;
  } catch {
    return 0;
  }
}

function snake(name: string): string {
  return name.replace(/[A-Z]/g, (c, i) => (i === 0 ? "" : "_") + c.toLowerCase());
}
