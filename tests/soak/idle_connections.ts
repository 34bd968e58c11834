/**
 * Idle connections: a netsqlite server running as its own process holds
 * many (default 1000) idle client connections, in several rounds. In each
 * round a new client must still be served promptly while they are held,
 * every held connection must still answer, and once they are closed the
 * server's open file descriptors must be back at the baseline count, but for
 * the reader connections the engine keeps after reads that ran in the
 * background (on a loaded machine; bounded, see {@link unsettledFds}). A
 * failure lists the descriptors that were not there at the baseline.
 *
 * Memory: the RSS is sampled at the baseline, while holding and after
 * closing. The server gives memory back after disconnects (server/memory.ts):
 * with the flags of `deno task serve` (`--allow-ffi`, `--expose-gc`) within
 * about a second of the last round; with `--allow-ffi` alone once V8's memory
 * reducer has run (10–40 s). After the last round the RSS must come back
 * within max(8 MiB, 20% of the first round's growth) of the baseline
 * (`strictRss`, on by default), waiting up to `settleMs`. Also, repeated
 * rounds must reuse the memory: the held RSS may grow by at most
 * max(16 MiB, 75% of the first round's growth) per further round, where
 * memory never reused would add the whole first-round growth each time.
 *
 * The connections are held in this process when its file-descriptor limit
 * allows, otherwise spread over child processes (this file run with
 * `--hold`). Deno raises its soft limit to the hard limit at startup, so
 * the limits read from /proc are the ones that count; nothing is raised here.
 *
 * Run: `deno run -A tests/soak/idle_connections.ts [--count 1000] [--cycles 4] [--holders N]
 * [--server-flags="-A"] [--lenient-rss]`.
 * Import: {@link runIdleConnections}.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { type Client, connect, type ConnectOptions } from "../../client.ts";
import { SERVE_TASK_FLAGS, type ServerProcess, startServerProcess } from "../_helpers.ts";
import { LineReader, rssOf, withTimeout } from "./soak.ts";

/** How far above its baseline the server's heap (anonymous RSS) may be after the last round. */
export const ANON_SLACK_BYTES = 4 * 1024 * 1024;

/** Options of {@link runIdleConnections}. */
export interface IdleOptions {
  /** Idle connections to hold. @default {1000} */
  count?: number;
  /**
   * Times to open and close them all: later rounds show whether the memory
   * of closed connections is reused. @default {4}
   */
  cycles?: number;
  /**
   * Child processes to hold them in; 0 holds them in this process. By
   * default: 0 when this process's file-descriptor limit allows, else enough
   * children.
   */
  holders?: number;
  /**
   * Longest acceptable time for a new client to connect, read, write and
   * read back while the others are held, in ms.
   * @default {2000}
   */
  promptMs?: number;
  /**
   * How long to wait for the descriptors (every round) and the RSS (last
   * round) to come back after closing, in ms.
   * @default {60000}
   */
  settleMs?: number;
  /**
   * Require the RSS after the last round to be back within the slack of the
   * baseline (see the module notes); otherwise it is only reported.
   * @default {true}
   */
  strictRss?: boolean;
  /** `deno run` flags of the server process. @default {those of `deno task serve`} */
  serverFlags?: string[];
  /** Print progress lines. @default {false} */
  verbose?: boolean;
}

/** One round of opening, using and closing the connections. */
export interface IdleCycle {
  /** Time to open every connection, in ms. */
  openMs: number;
  /** Time for a new client to connect and get its first reply while the others are held, in ms. */
  newClientFirstReplyMs: number;
  /** ...and to connect, read, write and read back, in ms. */
  newClientMs: number;
  /** Time for every held connection to answer a query, in ms. */
  heldPingMs: number;
  /** Held connections that answered. */
  heldAnswered: number;
  /** Server RSS while holding (the larger of two samples). */
  heldBytes: number;
  /** Server RSS after closing and waiting `afterWaitMs`. */
  afterBytes: number;
  /** The anonymous part of the server's RSS while holding and after closing. */
  heldAnonBytes: number;
  afterAnonBytes: number;
  afterWaitMs: number;
  /** Server file descriptors while holding and after closing. */
  heldFds: number;
  afterFds: number;
  /** The descriptors after closing by kind (see {@link unsettledFds}). */
  afterFdCensus: FdCensus;
  /** Why they were not back where they should be ({@link unsettledFds}), or `null`. */
  fdProblem: string | null;
  /** When `afterFds` is above the baseline: what the extra descriptors are. */
  extraFds?: string;
}

/** What {@link runIdleConnections} measured. */
export interface IdleReport {
  count: number;
  /** Child processes that held the connections (0: this process). */
  holders: number;
  /** Open-file limits of this process and of the server. */
  fdLimit: { self: number; server: number };
  promptMs: number;
  strictRss: boolean;
  serverFlags: string[];
  rss: {
    /** The server after serving one client, idle. */
    baselineBytes: number;
    /** While holding, first round. */
    heldBytes: number;
    /** After closing, last round. */
    afterBytes: number;
    /** The anonymous part (heap, stacks; without mapped files) of the three. */
    baselineAnonBytes: number;
    heldAnonBytes: number;
    afterAnonBytes: number;
    /** max(8 MiB, 20% of the first round's growth). */
    slackBytes: number;
    /** True when `afterBytes` <= baseline + slack. */
    nearBaseline: boolean;
    /**
     * Growth allowed per repeated round: max(16 MiB, 75% of the first
     * round's growth). Memory of closed connections that is never reused
     * would add about the whole first-round growth per round; the runtime's
     * lazily collected heap adds less and less (measured: +60%, +30%, +10%).
     */
    perRoundAllowanceBytes: number;
  };
  fds: { baseline: number; baselineCensus: FdCensus };
  cycles: IdleCycle[];
  failures: string[];
  ok: boolean;
}

const SELF = fileURLToPath(new URL(import.meta.url));
const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const MiB = 1024 * 1024;
/** Descriptors a process needs besides the connections it holds. */
const FD_RESERVE = 128;

/** The soft limit on open files of a process, from /proc; `Infinity` for "unlimited". */
export function fdLimitOf(pid: number | "self"): number {
  const text = Deno.readTextFileSync(`/proc/${pid}/limits`);
  const m = /^Max open files\s+(\S+)/m.exec(text);
  if (m === null) throw new Error(`No "Max open files" in /proc/${pid}/limits`);
  return m[1] === "unlimited" ? Infinity : Number(m[1]);
}

/** Number of open file descriptors of a process. */
export function fdCountOf(pid: number): number {
  let n = 0;
  for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) n++;
  return n;
}

/**
 * What each open descriptor of a process refers to, by descriptor number:
 * `socket:[inode]`, `pipe:[inode]`, `anon_inode:[eventfd]`, a file's path.
 * A descriptor closed while the directory is read is left out.
 */
export function fdTargetsOf(pid: number): Map<number, string> {
  const targets = new Map<number, string>();
  for (const entry of Deno.readDirSync(`/proc/${pid}/fd`)) {
    try {
      targets.set(Number(entry.name), Deno.readLinkSync(`/proc/${pid}/fd/${entry.name}`));
    } catch { /* closed meanwhile */ }
  }
  return targets;
}

/** Unix sockets of a process's network namespace by inode: `unix stream connected /path`. */
function unixSocketsOf(pid: number): Map<string, string> {
  const kinds: Record<string, string> = { "0001": "stream", "0002": "dgram", "0005": "seqpacket" };
  const states: Record<string, string> = {
    "01": "unconnected",
    "02": "connecting",
    "03": "connected",
    "04": "disconnecting",
  };
  const sockets = new Map<string, string>();
  try {
    for (const line of Deno.readTextFileSync(`/proc/${pid}/net/unix`).split("\n").slice(1)) {
      // Num RefCount Protocol Flags Type St Inode [Path]
      const [, , , flags, type, st, inode, path] = line.trim().split(/\s+/);
      if (inode === undefined) continue;
      const state = flags === "00010000" ? "listening" : states[st] ?? `state ${st}`;
      sockets.set(inode, ["unix", kinds[type] ?? `type ${type}`, state, path].join(" ").trim());
    }
  } catch { /* no /proc/PID/net: the inode alone */ }
  return sockets;
}

/**
 * The descriptors a process has now that it did not have at `baseline`
 * (same number and target), described for a failure message: a count by
 * kind, then each one (at most `max`), sockets with their kind and state.
 */
export function describeExtraFds(
  pid: number,
  baseline: Map<number, string>,
  now: Map<number, string> = fdTargetsOf(pid),
  max = 12,
): string {
  const extra = [...now].filter(([fd, target]) => baseline.get(fd) !== target);
  if (extra.length === 0) return "no descriptor that was not there at the baseline";
  const sockets = extra.some(([, t]) => t.startsWith("socket:")) ? unixSocketsOf(pid) : new Map();
  const kindOf = (target: string): string =>
    /^(socket|pipe|anon_inode):/.test(target)
      ? target.replace(/:\[\d+\]$/, "")
      : target.replace(/^.*\//, "");
  const counts = new Map<string, number>();
  for (const [, t] of extra) counts.set(kindOf(t), (counts.get(kindOf(t)) ?? 0) + 1);
  const summary = [...counts].map(([k, n]) => `${n} x ${k}`).join(", ");
  const each = extra.slice(0, max).map(([fd, t]) => {
    const inode = /^socket:\[(\d+)\]$/.exec(t)?.[1];
    const socket = inode === undefined ? undefined : sockets.get(inode);
    return `${fd} -> ${t}${socket === undefined ? "" : ` (${socket})`}`;
  });
  const more = extra.length > max ? `, ... ${extra.length - max} more` : "";
  return `${extra.length} new: ${summary} [${each.join(", ")}${more}]`;
}

/**
 * Reader connections the engine keeps open for reuse after a read that ran
 * in the background (`#returnReader` in engine/engine.ts keeps up to four).
 */
export const IDLE_READERS_KEPT = 4;

/** A process's descriptors by what they refer to. */
export interface FdCensus {
  /** All of them. */
  total: number;
  /** The database file, its `-wal` and its `-shm`. */
  database: number;
  wal: number;
  shm: number;
  /** Everything else: sockets, pipes, event descriptors, other files. */
  other: number;
}

/** Counts `targets` (from {@link fdTargetsOf}) by kind; `database` is the database's real path. */
export function fdCensus(targets: Map<number, string>, database: string): FdCensus {
  const c: FdCensus = { total: targets.size, database: 0, wal: 0, shm: 0, other: 0 };
  for (const target of targets.values()) {
    if (target === database) c.database++;
    else if (target === `${database}-wal`) c.wal++;
    else if (target === `${database}-shm`) c.shm++;
    else c.other++;
  }
  return c;
}

/**
 * Why the server's descriptors after closing every connection are not back
 * where they should be, or `null` when they are.
 *
 * Everything but the database's files (the connections' sockets above all)
 * must be back at the baseline count. The database's files may stay above
 * it by what the engine keeps on purpose after reads that ran in the
 * background (a loaded machine pauses the server in the middle of a read,
 * the read is then sent to the background on a reader connection of its
 * own; this happens to a few reads, or to every read of a statement that
 * once ran far past its budget inline, see `#read` in
 * engine/engine_session.ts):
 * - up to {@link IDLE_READERS_KEPT} idle reader connections, each with a
 *   descriptor of the database and one of its `-wal`;
 * - one descriptor of the database per further reader that was open at the
 *   same time: SQLite does not close a connection's database descriptor
 *   while another connection of the process holds a POSIX lock on the file
 *   (closing any descriptor would drop them all), and every connection in
 *   WAL mode holds one while open; it reuses these descriptors for the next
 *   read-only connections instead. So they are as many as the most readers
 *   ever open at once (a measured high-water mark, not a growth per round:
 *   30 reads at once left 30, then 20 and 30 more left 30, 40 left 40) and
 *   at most one per connection (a connection has one request running at a
 *   time).
 */
export function unsettledFds(now: FdCensus, base: FdCensus, connections: number): string | null {
  if (now.other > base.other) {
    return `${now.other - base.other} descriptors other than the database's files above the ` +
      `baseline (${base.other})`;
  }
  if (now.shm > base.shm) return `${now.shm} descriptors of the -shm file, baseline ${base.shm}`;
  const readers = now.wal - base.wal;
  if (readers > IDLE_READERS_KEPT) {
    return `${readers} reader connections more than at the baseline (-wal descriptors ` +
      `${base.wal} -> ${now.wal}), where the engine keeps at most ${IDLE_READERS_KEPT}`;
  }
  const database = now.database - base.database;
  if (database < readers || database > connections + 1) {
    return `${database} descriptors of the database file more than at the baseline, with ` +
      `${Math.max(0, readers)} reader connections kept (expected between them and ${
        connections + 1
      })`;
  }
  return null;
}

/** Opens `n` connections, `chunk` at a time. */
async function openMany(options: ConnectOptions, n: number, chunk = 100): Promise<Client[]> {
  const clients: Client[] = [];
  try {
    for (let i = 0; i < n; i += chunk) {
      const size = Math.min(chunk, n - i);
      const opened = await Promise.allSettled(
        Array.from({ length: size }, () => connect(options)),
      );
      for (const r of opened) if (r.status === "fulfilled") clients.push(r.value);
      const failed = opened.find((r) => r.status === "rejected");
      if (failed !== undefined) throw (failed as PromiseRejectedResult).reason;
    }
  } catch (err) {
    await Promise.all(clients.map((c) => c.close()));
    throw err;
  }
  return clients;
}

/** Asks every client `SELECT 1`; returns how many answered 1. */
async function ping(clients: Client[]): Promise<number> {
  const answers = await Promise.allSettled(
    clients.map((c) => c.get<{ x: number }>("SELECT 1 AS x")),
  );
  return answers.filter((a) => a.status === "fulfilled" && a.value?.x === 1).length;
}

/** Holds connections somewhere: in this process or in a child. */
interface Holder {
  ping(): Promise<number>;
  close(): Promise<void>;
}

function inProcessHolder(clients: Client[]): Holder {
  return {
    ping: () => ping(clients),
    close: async () => void await Promise.all(clients.map((c) => c.close())),
  };
}

/** Starts `idle_connections.ts --hold` and waits until it holds `n` connections. */
async function childHolder(options: ConnectOptions, n: number): Promise<Holder> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SELF, "--hold", String(n), "--connect", JSON.stringify(options)],
    cwd: ROOT,
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = new LineReader(child.stdout);
  const stdin = child.stdin.getWriter();
  const enc = new TextEncoder();
  let ended = false;
  const end = async () => {
    if (ended) return;
    ended = true;
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
    await stdin.close().catch(() => {});
    await lines.cancel();
    await child.status;
  };
  const ask = async (command: string, answer: string): Promise<string> => {
    await stdin.write(enc.encode(`${command}\n`));
    const line = await withTimeout(lines.next(), 60_000, `holder ${command}`);
    if (line === null || !line.startsWith(answer)) {
      throw new Error(`holder answered ${JSON.stringify(line)} to ${command}`);
    }
    return line;
  };
  try {
    const line = await withTimeout(lines.next(), 60_000, "holder start");
    if (line !== `held ${n}`) throw new Error(`holder did not start: ${JSON.stringify(line)}`);
  } catch (err) {
    await end();
    throw err;
  }
  return {
    ping: async () => Number((await ask("ping", "pinged ")).split(" ")[1]),
    close: async () => {
      try {
        await ask("close", "closed");
        await stdin.close();
        const status = await child.status;
        if (status.code !== 0) throw new Error(`holder exited ${status.code}`);
      } finally {
        await end();
      }
    },
    [Symbol.asyncDispose]: end,
  } as Holder & AsyncDisposable;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Opens `count` idle connections to a server process, checks that a new
 * client is served promptly and the held ones still answer, closes them and
 * waits for the server's descriptors and RSS to come back; `cycles` times.
 *
 * @throws {Error} when a limit makes the test impossible (the server's
 *   descriptor limit below `count` + 128) or a holder fails.
 */
export async function runIdleConnections(options: IdleOptions = {}): Promise<IdleReport> {
  const count = options.count ?? 1000;
  const cycles = options.cycles ?? 4;
  const promptMs = options.promptMs ?? 2000;
  const settleMs = options.settleMs ?? 60_000;
  const strictRss = options.strictRss ?? true;
  const serverFlags = options.serverFlags ?? SERVE_TASK_FLAGS;
  const log = options.verbose ? (msg: string) => console.log(msg) : () => {};
  if (!Number.isInteger(count) || count < 1) throw new RangeError(`Invalid count: ${count}`);
  if (!Number.isInteger(cycles) || cycles < 1) throw new RangeError(`Invalid cycles: ${cycles}`);
  const selfLimit = fdLimitOf("self");
  const needed = (n: number) => Math.ceil(count / Math.max(1, n - FD_RESERVE));
  let holders = options.holders ?? (selfLimit >= count + FD_RESERVE ? 0 : needed(selfLimit));
  if (!Number.isInteger(holders) || holders < 0) {
    throw new RangeError(`Invalid holders: ${holders}`);
  }
  // Each child has this process's limit too.
  if (holders > 0 && Math.ceil(count / holders) + FD_RESERVE > selfLimit) {
    holders = needed(selfLimit);
  }

  await using server: ServerProcess = await startServerProcess({ denoFlags: serverFlags });
  const pid = server.child.pid;
  const serverLimit = fdLimitOf(pid);
  if (serverLimit < count + FD_RESERVE) {
    throw new Error(
      `The server's open-file limit is ${serverLimit}: too low to hold ${count} connections ` +
        `(needs about ${count + FD_RESERVE}); raise the hard limit (ulimit -Hn) before running`,
    );
  }
  log(`server: ${server.banner}; fd limits: self ${selfLimit}, server ${serverLimit}`);

  // Baseline: the server after serving one client, idle again.
  {
    await using db = await server.client();
    await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
    await db.run("INSERT INTO t (v) VALUES ('warm-up')");
  }
  await sleep(500);
  const baselineBytes = rssOf(pid);
  const baselineAnonBytes = rssOf(pid, "anon");
  // The fewest of a few samples: a descriptor the server holds for a moment
  // (the warm-up client's socket not yet closed, on a loaded machine) is
  // not part of the baseline.
  let baselineTargets = fdTargetsOf(pid);
  for (let i = 0; i < 5; i++) {
    await sleep(100);
    const targets = fdTargetsOf(pid);
    if (targets.size < baselineTargets.size) baselineTargets = targets;
  }
  const baselineFds = baselineTargets.size;
  const database = Deno.realPathSync(server.database);
  const baselineCensus = fdCensus(baselineTargets, database);
  log(`baseline: RSS ${mib(baselineBytes)}, ${baselineFds} fds`);

  const rounds: IdleCycle[] = [];
  let slackBytes = 8 * MiB;
  for (let cycle = 1; cycle <= cycles; cycle++) {
    const round = await idleCycle(server, count, holders);
    rounds.push(round);
    if (cycle === 1) slackBytes = Math.max(8 * MiB, 0.2 * (round.heldBytes - baselineBytes));
    log(
      `round ${cycle}: opened ${count} in ${round.openMs} ms, RSS ${mib(round.heldBytes)}, ` +
        `${round.heldFds} fds; new client ${round.newClientMs} ms; ` +
        `${round.heldAnswered} answered in ${round.heldPingMs} ms`,
    );
    // Wait for the descriptors, and for the RSS to come back near the
    // baseline: after the last round up to settleMs; between rounds a few
    // seconds at most, so that a round does not start while the server is
    // still releasing the last one's memory (under load that takes longer,
    // and each round's held RSS would then count the previous one's as
    // growth), while memory that is never released still shows as growth.
    const t0 = performance.now();
    const last = cycle === cycles;
    const rssWaitMs = last ? settleMs : Math.min(settleMs, 5_000);
    let bytes = rssOf(pid), anonBytes = rssOf(pid, "anon"), targets = fdTargetsOf(pid);
    let census = fdCensus(targets, database);
    let problem = unsettledFds(census, baselineCensus, count);
    for (;;) {
      const waited = performance.now() - t0;
      const fdsPending = problem !== null && waited < settleMs;
      // (The heap too, after the last round: the RSS may be within its slack
      // while the heap is not yet back within ANON_SLACK_BYTES.)
      const rssPending = (bytes > baselineBytes + slackBytes ||
        (last && anonBytes > baselineAnonBytes + ANON_SLACK_BYTES)) && waited < rssWaitMs;
      if (!fdsPending && !rssPending) break;
      await sleep(250);
      bytes = rssOf(pid);
      anonBytes = rssOf(pid, "anon");
      targets = fdTargetsOf(pid);
      census = fdCensus(targets, database);
      problem = unsettledFds(census, baselineCensus, count);
    }
    round.afterBytes = bytes;
    round.afterAnonBytes = anonBytes;
    round.afterFds = census.total;
    round.afterFdCensus = census;
    round.fdProblem = problem;
    if (census.total > baselineFds) {
      round.extraFds = describeExtraFds(pid, baselineTargets, targets);
      log(`round ${cycle}: descriptors kept: ${round.extraFds}`);
    }
    round.afterWaitMs = Math.round(performance.now() - t0);
    log(
      `round ${cycle}: closed; RSS ${
        mib(bytes)
      } after ${round.afterWaitMs} ms, ${census.total} fds`,
    );
  }
  const afterBytes = rounds[rounds.length - 1].afterBytes;
  const report: IdleReport = {
    count,
    holders,
    fdLimit: { self: selfLimit, server: serverLimit },
    promptMs,
    strictRss,
    serverFlags,
    rss: {
      baselineBytes,
      heldBytes: rounds[0].heldBytes,
      afterBytes,
      baselineAnonBytes,
      heldAnonBytes: rounds[0].heldAnonBytes,
      afterAnonBytes: rounds[rounds.length - 1].afterAnonBytes,
      slackBytes: Math.round(slackBytes),
      nearBaseline: afterBytes <= baselineBytes + slackBytes,
      perRoundAllowanceBytes: Math.round(
        Math.max(16 * MiB, 0.75 * (rounds[0].heldBytes - baselineBytes)),
      ),
    },
    fds: { baseline: baselineFds, baselineCensus },
    cycles: rounds,
    failures: [],
    ok: false,
  };
  report.failures = checkIdle(report);
  report.ok = report.failures.length === 0;
  return report;
}

/** Opens, uses and closes `count` connections once. */
async function idleCycle(
  server: ServerProcess,
  count: number,
  holders: number,
): Promise<IdleCycle> {
  const pid = server.child.pid;
  const held: (Holder & Partial<AsyncDisposable>)[] = [];
  let closed = false;
  try {
    const t0 = performance.now();
    if (holders === 0) {
      held.push(inProcessHolder(await openMany(server.connectOptions, count)));
    } else {
      for (let i = 0; i < holders; i++) {
        const n = Math.floor((count * (i + 1)) / holders) - Math.floor((count * i) / holders);
        held.push(await childHolder(server.connectOptions, n));
      }
    }
    const openMs = Math.round(performance.now() - t0);
    await sleep(1000);
    const heldBytes1 = rssOf(pid);
    const heldFds = fdCountOf(pid);

    // A new client while the others are held.
    const c0 = performance.now();
    let newClientFirstReplyMs: number, newClientMs: number;
    {
      await using db = await server.client();
      const one = await db.get<{ x: number }>("SELECT 1 AS x");
      newClientFirstReplyMs = Math.round(performance.now() - c0);
      if (one?.x !== 1) throw new Error(`new client read ${JSON.stringify(one)}`);
      const { lastInsertRowid } = await db.run("INSERT INTO t (v) VALUES ('new client')");
      const back = await db.get<{ v: string }>("SELECT v FROM t WHERE id = ?", [lastInsertRowid]);
      newClientMs = Math.round(performance.now() - c0);
      if (back?.v !== "new client") throw new Error(`new client read back ${JSON.stringify(back)}`);
    }

    const p0 = performance.now();
    const heldAnswered = (await Promise.all(held.map((h) => h.ping()))).reduce((a, b) => a + b, 0);
    const heldPingMs = Math.round(performance.now() - p0);
    const heldBytes = Math.max(heldBytes1, rssOf(pid));
    const heldAnonBytes = rssOf(pid, "anon");

    await Promise.all(held.map((h) => h.close()));
    closed = true;
    return {
      openMs,
      newClientFirstReplyMs,
      newClientMs,
      heldPingMs,
      heldAnswered,
      heldBytes,
      afterBytes: 0,
      heldAnonBytes,
      afterAnonBytes: 0,
      afterWaitMs: 0,
      heldFds,
      afterFds: 0,
      afterFdCensus: { total: 0, database: 0, wal: 0, shm: 0, other: 0 },
      fdProblem: null,
    };
  } finally {
    if (!closed) await Promise.all(held.map((h) => h.close().catch(() => {})));
    for (const h of held) await h[Symbol.asyncDispose]?.();
  }
}

/** The checks of an idle-connections run, as failure messages. */
export function checkIdle(r: IdleReport): string[] {
  const f: string[] = [];
  const first = r.cycles[0];
  r.cycles.forEach((c, i) => {
    const round = `round ${i + 1}`;
    if (c.heldFds < r.fds.baseline + r.count) {
      f.push(`${round}: server held ${c.heldFds} fds, expected >= ${r.fds.baseline} + ${r.count}`);
    }
    if (c.newClientMs > r.promptMs) {
      f.push(`${round}: a new client took ${c.newClientMs} ms (limit ${r.promptMs})`);
    }
    if (c.heldAnswered !== r.count) {
      f.push(`${round}: only ${c.heldAnswered}/${r.count} held connections answered`);
    }
    if (c.fdProblem !== null) {
      f.push(
        `${round}: server has ${c.afterFds} fds ${c.afterWaitMs} ms after closing, baseline ` +
          `${r.fds.baseline}: ${c.fdProblem}; ${c.extraFds ?? "none listed"}`,
      );
    }
  });
  const last = r.cycles[r.cycles.length - 1];
  const allowed = (r.cycles.length - 1) * r.rss.perRoundAllowanceBytes;
  if (last.heldBytes - first.heldBytes > allowed) {
    f.push(
      `holding ${r.count} connections again and again took the server from ` +
        `${mib(first.heldBytes)} to ${mib(last.heldBytes)} over ${r.cycles.length} rounds ` +
        `(allowed +${mib(allowed)}): the memory of closed connections is not reused`,
    );
  }
  const peak = Math.max(...r.cycles.map((c) => c.heldBytes));
  if (r.rss.afterBytes > peak + r.rss.slackBytes) {
    f.push(`server RSS grew to ${mib(r.rss.afterBytes)} after closing (held peak ${mib(peak)})`);
  }
  if (r.strictRss && !r.rss.nearBaseline) {
    f.push(
      `server RSS ${mib(r.rss.afterBytes)} after closing, above baseline ` +
        `${mib(r.rss.baselineBytes)} + ${mib(r.rss.slackBytes)}`,
    );
  }
  return f;
}

function mib(bytes: number): string {
  return `${(bytes / MiB).toFixed(1)} MiB`;
}

/** A human-readable report. */
export function formatIdleReport(r: IdleReport): string {
  const { rss } = r;
  const lines = [
    `netsqlite idle connections: ${r.count} held ${
      r.holders === 0 ? "in-process" : `by ${r.holders} child processes`
    }, ${r.cycles.length} rounds (fd limits: self ${r.fdLimit.self}, server ${r.fdLimit.server}; ` +
    `server run with ${r.serverFlags.join(" ")})`,
    ...r.cycles.map((c, i) =>
      `  round ${i + 1}: opened in ${c.openMs} ms; new client while held: first reply ` +
      `${c.newClientFirstReplyMs} ms, connect+read+write+read ${c.newClientMs} ms ` +
      `(limit ${r.promptMs}); held answering ${c.heldAnswered}/${r.count} in ${c.heldPingMs} ms; ` +
      `server RSS held ${mib(c.heldBytes)}, after ${mib(c.afterBytes)} (${c.afterWaitMs} ms ` +
      `after closing); fds ${r.fds.baseline} -> ${c.heldFds} -> ${c.afterFds}` +
      (c.afterFds > r.fds.baseline
        ? ` (database ${c.afterFdCensus.database}, -wal ${c.afterFdCensus.wal}: readers kept)`
        : "")
    ),
    `  server RSS: baseline ${mib(rss.baselineBytes)}, held ${mib(rss.heldBytes)} ` +
    `(+${mib(rss.heldBytes - rss.baselineBytes)}), after ${mib(rss.afterBytes)}; ` +
    `back within ${mib(rss.slackBytes)} of the baseline: ${rss.nearBaseline ? "yes" : "no"}` +
    (r.strictRss ? "" : " (not required: --lenient-rss)"),
    `  server anonymous RSS (heap, stacks): baseline ${mib(rss.baselineAnonBytes)}, held ` +
    `${mib(rss.heldAnonBytes)}, after ${mib(rss.afterAnonBytes)}`,
    `  server RSS held by round: ${r.cycles.map((c) => mib(c.heldBytes)).join(", ")} ` +
    `(allowed growth after round 1: ${mib(rss.perRoundAllowanceBytes)} per round)`,
  ];
  for (const f of r.failures) lines.push(`  FAILED: ${f}`);
  lines.push(r.ok ? "RESULT: ok" : "RESULT: FAILED");
  return lines.join("\n");
}

/** `--hold N --connect JSON`: hold N connections; answer `ping` and `close` on stdin. */
async function hold(n: number, options: ConnectOptions): Promise<number> {
  const clients = await openMany(options, n);
  console.log(`held ${clients.length}`);
  const lines = new LineReader(Deno.stdin.readable);
  for (let line; (line = await lines.next()) !== null;) {
    if (line.trim() === "ping") {
      console.log(`pinged ${await ping(clients)}`);
    } else if (line.trim() === "close") {
      await Promise.all(clients.map((c) => c.close()));
      console.log("closed");
      return 0;
    }
  }
  return 1; // The parent went away.
}

const USAGE = "Usage: deno run -A tests/soak/idle_connections.ts [--count N] [--cycles N] " +
  "[--holders N] [--prompt-ms MS] [--server-flags=FLAGS] [--lenient-rss]";

async function main(): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: Deno.args,
      strict: true,
      options: {
        count: { type: "string", default: "1000" },
        holders: { type: "string" },
        "prompt-ms": { type: "string", default: "2000" },
        cycles: { type: "string", default: "4" },
        "lenient-rss": { type: "boolean", default: false },
        "server-flags": { type: "string" },
        hold: { type: "string" },
        connect: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (err) {
    console.error(`idle_connections: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (values.hold !== undefined) {
    return await hold(Number(values.hold), JSON.parse(values.connect ?? "{}") as ConnectOptions);
  }
  const report = await runIdleConnections({
    count: Number(values.count),
    holders: values.holders === undefined ? undefined : Number(values.holders),
    promptMs: Number(values["prompt-ms"]),
    cycles: Number(values.cycles),
    strictRss: !values["lenient-rss"],
    serverFlags: values["server-flags"]?.split(/\s+/).filter((w) => w !== ""),
    verbose: true,
  });
  console.log(formatIdleReport(report));
  return report.ok ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main());
