/**
 * Soak / load test: a netsqlite server running as its own process serves
 * many concurrent connections, held by several worker processes
 * (tests/soak/soak_worker.ts), that run a seeded mixed workload for a while:
 * point and range reads, autocommit inserts into an append-only ledger,
 * batches, read-modify-write transfers between accounts in `transaction()`,
 * deliberate constraint violations, disconnects, abandoned transactions and
 * request-timeout reconnects. The server's RSS is sampled every second.
 *
 * At the end it checks:
 *
 * - no unexpected error (deliberate ones came back with the right code), and
 *   no `BUSY_TIMEOUT` (counted apart; none is expected with default timeouts);
 * - every acknowledged ledger id is present, no rolled-back one is;
 * - the accounts still sum to their starting total, and each balance equals
 *   its start plus the transfers the ledger records for it;
 * - `PRAGMA integrity_check` says `ok`;
 * - the server's RSS grew by at most `maxRssGrowthBytes` over the second
 *   half of the run, or had levelled off by its end (at most a quarter of
 *   that over the last quarter), or was levelling off (the last quarter grew
 *   at most half as much as the third, and at most half the limit): memory
 *   stability. Short runs can only catch gross leaks; run a few minutes to
 *   see a trend.
 *
 * Run: `deno task soak --duration 60 [--connections 200] [--processes 4] [--seed 1]`.
 * Import: {@link runSoak}.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { type ServerProcess, startServerProcess } from "../_helpers.ts";
import {
  type LatencyStat,
  SCHEMA,
  type SoakCounts,
  type WorkerConfig,
  type WorkerReport,
} from "./soak_worker.ts";

/** Options of {@link runSoak}. */
export interface SoakOptions {
  /** How long the workload runs, in ms. @default {60000} */
  durationMs?: number;
  /** Concurrent client connections, spread over the worker processes. @default {200} */
  connections?: number;
  /** Worker processes holding the connections. @default {4} */
  processes?: number;
  /** Seed of the workload. @default {1} */
  seed?: number;
  /** Mean think time of a connection between two operations, in ms. @default {10} */
  thinkMs?: number;
  /** Accounts the transfers move money between. @default {100} */
  accounts?: number;
  /** The server's `--synchronous`. @default {"full"} */
  synchronous?: "full" | "normal";
  /** Period of the request-timeout reconnect scenario, per worker, in ms; 0 = never. @default {3000} */
  reconnectEveryMs?: number;
  /**
   * Largest RSS growth over the second half of the run that passes (or a
   * quarter of it over the last quarter). @default {32 MiB}
   */
  maxRssGrowthBytes?: number;
  /** Print progress lines. @default {false} */
  verbose?: boolean;
}

/** One RSS sample of the server process. */
export interface RssSample {
  /** ms since the workload started. */
  t: number;
  bytes: number;
}

/** Server memory over the run. */
export interface RssReport {
  /** Before any worker connected. */
  idleBytes: number;
  /** When the workload started (all connections open). */
  startBytes: number;
  peakBytes: number;
  /** Around the middle of the run (median of 3 samples). */
  midBytes: number;
  /** At the end of the run, before the workers disconnected (median of the last 3). */
  endBytes: number;
  /** `endBytes - midBytes`. */
  secondHalfGrowthBytes: number;
  /** Least-squares slope over the second half, in bytes per minute. */
  secondHalfSlopeBytesPerMin: number;
  /** `endBytes` minus the RSS three quarters into the run. */
  lastQuarterGrowthBytes: number;
  /** The RSS three quarters into the run minus `midBytes`. */
  thirdQuarterGrowthBytes: number;
  /** About a second after every worker disconnected. */
  afterCloseBytes: number;
  limitBytes: number;
  /**
   * Memory counts as stable when it grew at most `limitBytes` over the
   * second half, or had levelled off by the end (at most `limitBytes / 4`
   * over the last quarter), or was levelling off (its last quarter's growth
   * at most half its third quarter's and at most `limitBytes / 2`): the
   * runtime's heap grows for a while before it levels off, which on a short
   * or slow run (a loaded machine) reaches into the second half, whereas a
   * leak keeps growing at its rate to the end.
   */
  stable: boolean;
  samples: RssSample[];
}

/** Summary of {@link runSoak}. */
export interface SoakReport extends SoakCounts {
  durationMs: number;
  /** Length of the longest worker's run, in ms. */
  elapsedMs: number;
  connections: number;
  processes: number;
  seed: number;
  thinkMs: number;
  accounts: number;
  synchronous: "full" | "normal";
  /** Longest time a worker took to open its connections, in ms. */
  connectMs: number;
  opsTotal: number;
  opsPerSecond: number;
  ops: Record<string, number>;
  latency: Record<string, { count: number; meanMs: number; maxMs: number }>;
  /** Acknowledged ledger writes (ids). */
  acknowledged: number;
  /** Acknowledged ids missing from the database (first 20) and their count. */
  missing: number[];
  missingCount: number;
  /** Ids of rolled-back writes, and those found present (must be none). */
  rolledBack: number;
  rolledBackPresent: number[];
  /** Writes whose outcome cannot be known (timed out on purpose)... */
  unknownOutcome: number;
  /** ...and how many of them were found in the database. */
  unknownOutcomePresent: number;
  /** Ledger rows that are neither acknowledged nor of unknown outcome (first 20), and their count. */
  unaccounted: number[];
  unaccountedCount: number;
  ledgerRows: number;
  expectedTotal: number;
  actualTotal: number;
  accountRows: number;
  /** Accounts whose balance differs from start + ledgered transfers. */
  mismatchedAccounts: number[];
  integrity: string;
  rss: RssReport;
  /** CPU time the server used during the run, in seconds. */
  serverCpuSeconds: number;
  workerExitCodes: number[];
  /** Failed checks, in words; empty when the soak passed. */
  failures: string[];
  ok: boolean;
}

const WORKER_TS = fileURLToPath(new URL("./soak_worker.ts", import.meta.url));
const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const MiB = 1024 * 1024;
const INITIAL_BALANCE = 1000;

/**
 * Reads a process's resident set size from /proc, in bytes; 0 when gone.
 * `anon`: only its anonymous memory (heap, stacks), without the mapped
 * pages of the executable and libraries.
 */
export function rssOf(pid: number, part: "all" | "anon" = "all"): number {
  const field = part === "anon" ? "RssAnon" : "VmRSS";
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, "m")
      .exec(Deno.readTextFileSync(`/proc/${pid}/status`));
    return m === null ? 0 : Number(m[1]) * 1024;
  } catch {
    return 0;
  }
}

/** CPU time (user + system) a process used, in seconds, from /proc (assumes 100 ticks/s). */
export function cpuSecondsOf(pid: number): number {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return 0;
  }
}

/** Reads a child's output line by line. */
export class LineReader {
  readonly #reader: ReadableStreamDefaultReader<string>;
  #buf = "";
  #scanned = 0;
  #done = false;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  }

  /** The next line without its newline; `null` at the end. */
  async next(): Promise<string | null> {
    for (;;) {
      const i = this.#buf.indexOf("\n", this.#scanned);
      if (i !== -1) {
        const line = this.#buf.slice(0, i);
        this.#buf = this.#buf.slice(i + 1);
        this.#scanned = 0;
        return line;
      }
      this.#scanned = this.#buf.length;
      if (this.#done) {
        if (this.#buf === "") return null;
        const line = this.#buf;
        this.#buf = "";
        this.#scanned = 0;
        return line;
      }
      const { value, done } = await this.#reader.read();
      if (done) this.#done = true;
      else this.#buf += value;
    }
  }

  /** Every remaining line. */
  async rest(): Promise<string[]> {
    const lines: string[] = [];
    for (let line; (line = await this.next()) !== null;) lines.push(line);
    return lines;
  }

  /** Stops reading and releases the stream. */
  async cancel(): Promise<void> {
    this.#done = true;
    await this.#reader.cancel().catch(() => {});
  }
}

/** Rejects with a message when `p` takes longer than `ms`; clears its timer either way. */
export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Collects a stream as text, keeping the last `keep` characters. */
async function collect(stream: ReadableStream<Uint8Array>, keep = 16_384): Promise<string> {
  let text = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    text = (text + chunk).slice(-keep);
  }
  return text;
}

interface WorkerProcess {
  child: Deno.ChildProcess;
  lines: LineReader;
  stdin: WritableStreamDefaultWriter<Uint8Array>;
  stderr: Promise<string>;
  status: Deno.CommandStatus | null;
}

function spawnWorker(config: WorkerConfig): WorkerProcess {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", WORKER_TS, JSON.stringify(config)],
    cwd: ROOT,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  return {
    child,
    lines: new LineReader(child.stdout),
    stdin: child.stdin.getWriter(),
    stderr: collect(child.stderr),
    status: null,
  };
}

/** Kills (if still running) and awaits a worker, releasing its pipes. */
async function reap(w: WorkerProcess): Promise<void> {
  if (w.status === null) {
    try {
      w.child.kill("SIGKILL");
    } catch { /* already gone */ }
  }
  await w.stdin.close().catch(() => {});
  await w.lines.cancel();
  w.status = await w.child.status;
  await w.stderr;
}

/** Sums per-kind latency stats of the workers. */
function mergeLatency(reports: WorkerReport[]): SoakReport["latency"] {
  const all: Record<string, LatencyStat> = {};
  for (const r of reports) {
    for (const [op, l] of Object.entries(r.latency)) {
      const m = all[op] ??= { count: 0, totalMs: 0, maxMs: 0 };
      m.count += l.count;
      m.totalMs += l.totalMs;
      m.maxMs = Math.max(m.maxMs, l.maxMs);
    }
  }
  const out: SoakReport["latency"] = {};
  for (const [op, l] of Object.entries(all)) {
    out[op] = {
      count: l.count,
      meanMs: round(l.totalMs / Math.max(1, l.count), 2),
      maxMs: round(l.maxMs, 1),
    };
  }
  return out;
}

function addCounts(into: Record<string, number>, from: Record<string, number>): void {
  for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v;
}

function sum(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0);
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? 0 : s[Math.floor((s.length - 1) / 2)];
}

/** RSS figures of the run from its samples. */
function rssFigures(
  samples: RssSample[],
  durationMs: number,
  idleBytes: number,
  afterCloseBytes: number,
  limitBytes: number,
): RssReport {
  const run = samples.filter((s) => s.t <= durationMs + 500);
  const bytes = run.map((s) => s.bytes);
  /** Median of the 3 samples around `fraction` of the run. */
  const around = (fraction: number) => {
    const t = durationMs * fraction;
    let at = 0;
    for (let i = 1; i < run.length; i++) {
      if (Math.abs(run[i].t - t) < Math.abs(run[at].t - t)) at = i;
    }
    return median(bytes.slice(Math.max(0, at - 1), at + 2));
  };
  const midBytes = around(0.5);
  const endBytes = median(bytes.slice(-3));
  const lastQuarterGrowthBytes = endBytes - around(0.75);
  const thirdQuarterGrowthBytes = around(0.75) - midBytes;
  const secondHalfGrowthBytes = endBytes - midBytes;
  const half = run.filter((s) => s.t >= durationMs / 2);
  let slope = 0;
  if (half.length >= 2) {
    const mt = sum(half.map((s) => s.t)) / half.length;
    const mb = sum(half.map((s) => s.bytes)) / half.length;
    const num = sum(half.map((s) => (s.t - mt) * (s.bytes - mb)));
    const den = sum(half.map((s) => (s.t - mt) ** 2));
    slope = den === 0 ? 0 : (num / den) * 60_000;
  }
  return {
    idleBytes,
    startBytes: bytes[0] ?? 0,
    peakBytes: Math.max(0, ...bytes),
    midBytes,
    endBytes,
    secondHalfGrowthBytes,
    secondHalfSlopeBytesPerMin: Math.round(slope),
    lastQuarterGrowthBytes,
    thirdQuarterGrowthBytes,
    afterCloseBytes,
    limitBytes,
    stable: secondHalfGrowthBytes <= limitBytes || lastQuarterGrowthBytes <= limitBytes / 4 ||
      (lastQuarterGrowthBytes <= thirdQuarterGrowthBytes / 2 &&
        lastQuarterGrowthBytes <= limitBytes / 2),
    samples,
  };
}

/**
 * Runs the soak: server process, `processes` workers holding `connections`
 * connections, `durationMs` of mixed workload, then the checks.
 *
 * @returns the report; `ok` is false and `failures` says why when a check failed.
 * @throws {RangeError} on invalid options; `Error` when the server or a
 *   worker cannot be started.
 */
export async function runSoak(options: SoakOptions = {}): Promise<SoakReport> {
  const durationMs = options.durationMs ?? 60_000;
  const connections = options.connections ?? 200;
  const processes = options.processes ?? 4;
  const seed = options.seed ?? 1;
  const thinkMs = options.thinkMs ?? 10;
  const accounts = options.accounts ?? 100;
  const synchronous = options.synchronous ?? "full";
  const reconnectEveryMs = options.reconnectEveryMs ?? 3000;
  const limitBytes = options.maxRssGrowthBytes ?? 32 * MiB;
  const log = options.verbose ? (msg: string) => console.log(msg) : () => {};
  for (
    const [name, v, min] of [
      ["durationMs", durationMs, 1],
      ["connections", connections, 1],
      ["processes", processes, 1],
      ["accounts", accounts, 2],
      ["thinkMs", thinkMs, 0],
      ["reconnectEveryMs", reconnectEveryMs, 0],
    ] as const
  ) {
    if (!Number.isInteger(v) || v < min) throw new RangeError(`Invalid ${name}: ${v}`);
  }
  if (processes > connections) {
    throw new RangeError(`Invalid processes: ${processes} is more than ${connections} connections`);
  }
  if (!Number.isInteger(seed)) throw new RangeError(`Invalid seed: ${seed}`);
  if (!(limitBytes >= 0)) throw new RangeError(`Invalid maxRssGrowthBytes: ${limitBytes}`);
  if (synchronous !== "full" && synchronous !== "normal") {
    throw new RangeError(`Invalid synchronous: ${synchronous}`);
  }
  const total = accounts * INITIAL_BALANCE;

  const dir = await Deno.makeTempDir({ prefix: "netsqlite-soak-" });
  const workers: WorkerProcess[] = [];
  let server: ServerProcess | undefined;
  let sampler: ReturnType<typeof setInterval> | undefined;
  try {
    server = await startServerProcess({ dir, args: ["--synchronous", synchronous] });
    const pid = server.child.pid;
    log(`server: ${server.banner} (pid ${pid})`);
    {
      await using db = await server.client();
      await db.exec(SCHEMA);
      await db.run(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) " +
          "INSERT INTO accounts (id, balance) SELECT i, ? FROM n",
        [accounts, INITIAL_BALANCE],
      );
    }
    const idleBytes = rssOf(pid);

    for (let w = 0; w < processes; w++) {
      const from = Math.floor((connections * w) / processes);
      const to = Math.floor((connections * (w + 1)) / processes);
      workers.push(spawnWorker({
        worker: w,
        connect: server.connectOptions,
        slots: Array.from({ length: to - from }, (_, i) => from + i),
        seed,
        durationMs,
        thinkMs,
        accounts,
        total,
        reconnectEveryMs,
      }));
    }
    await withTimeout(
      Promise.all(workers.map(async (w) => {
        const line = await w.lines.next();
        if (line === null || JSON.parse(line).type !== "ready") {
          throw new Error(
            `soak worker did not get ready: ${JSON.stringify(line)}\n${await w.stderr}`,
          );
        }
      })),
      60_000,
      "opening the soak workers' connections",
    );
    log(`workers: ${processes} processes, ${connections} connections open`);

    const samples: RssSample[] = [];
    const t0 = performance.now();
    const cpu0 = cpuSecondsOf(pid);
    samples.push({ t: 0, bytes: rssOf(pid) });
    sampler = setInterval(() => {
      const t = Math.round(performance.now() - t0);
      const bytes = rssOf(pid);
      samples.push({ t, bytes });
      if (t % 10_000 < 1000) log(`  t=${Math.round(t / 1000)}s server RSS ${mib(bytes)}`);
    }, 1000);
    const go = new TextEncoder().encode("go\n");
    await Promise.all(workers.map(async (w) => {
      await w.stdin.write(go);
      await w.stdin.close();
    }));

    const reports = await withTimeout(
      Promise.all(workers.map(async (w) => {
        const lines = (await w.lines.rest()).filter((l) => l.trim() !== "");
        w.status = await w.child.status;
        const last = lines[lines.length - 1];
        try {
          const r = JSON.parse(last) as WorkerReport;
          if (r.type === "report") return r;
        } catch { /* reported below */ }
        throw new Error(
          `soak worker ${workers.indexOf(w)} exited ${w.status.code} without a report\n` +
            (await w.stderr),
        );
      })),
      durationMs + 90_000,
      "waiting for the soak workers' reports",
    );
    clearInterval(sampler);
    sampler = undefined;
    const serverCpuSeconds = round(cpuSecondsOf(pid) - cpu0, 2);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const afterCloseBytes = rssOf(pid);
    log("workers: done; checking the database");

    // ---- checks ------------------------------------------------------------
    await using db = await server.client();
    const integrity = (await db.values<[string]>("PRAGMA integrity_check"))
      .map((r) => r[0]).join("; ");
    const present = new Set<number>();
    for await (const row of db.iterate<{ id: number }>("SELECT id FROM ledger")) {
      present.add(row.id);
    }
    const missing: number[] = [];
    let missingCount = 0;
    for (const r of reports) {
      for (const [first, last] of r.acked) {
        for (let id = first; id <= last; id++) {
          if (!present.has(id)) {
            missingCount++;
            if (missing.length < 20) missing.push(id);
          }
        }
      }
    }
    const accounted = new Set<number>(reports.flatMap((r) => r.unknownOutcome));
    for (const r of reports) {
      for (const [first, last] of r.acked) for (let id = first; id <= last; id++) accounted.add(id);
    }
    const unaccountedAll = [...present].filter((id) => !accounted.has(id));
    const absent = reports.flatMap((r) => r.absent);
    const rolledBackPresent = absent.filter((id) => present.has(id));
    const balances = await db.values<[number, number]>("SELECT id, balance FROM accounts");
    const flows = new Map<number, number>();
    for (
      const [src, dst, amount] of await db.values<[number, number, number]>(
        "SELECT src, dst, sum(amount) FROM ledger WHERE kind = 'transfer' GROUP BY src, dst",
      )
    ) {
      flows.set(src, (flows.get(src) ?? 0) - amount);
      flows.set(dst, (flows.get(dst) ?? 0) + amount);
    }
    const mismatchedAccounts = balances
      .filter(([id, balance]) => balance !== INITIAL_BALANCE + (flows.get(id) ?? 0))
      .map(([id]) => id);
    const actualTotal = sum(balances.map((r) => r[1]));

    const ops: Record<string, number> = {};
    const deliberateErrors: Record<string, number> = {};
    const busyTimeoutsByOp: Record<string, number> = {};
    for (const r of reports) {
      addCounts(ops, r.ops);
      addCounts(deliberateErrors, r.deliberateErrors);
      addCounts(busyTimeoutsByOp, r.busyTimeoutsByOp);
    }
    const opsTotal = sum(Object.values(ops));
    const elapsedMs = Math.max(...reports.map((r) => r.elapsedMs));
    const rss = rssFigures(samples, durationMs, idleBytes, afterCloseBytes, limitBytes);
    const report: SoakReport = {
      durationMs,
      elapsedMs,
      connections,
      processes,
      seed,
      thinkMs,
      accounts,
      synchronous,
      connectMs: Math.max(...reports.map((r) => r.connectMs)),
      opsTotal,
      opsPerSecond: Math.round(opsTotal / (elapsedMs / 1000)),
      ops,
      latency: mergeLatency(reports),
      acknowledged: sum(reports.map((r) => r.ackedCount)),
      missing,
      missingCount,
      rolledBack: absent.length,
      rolledBackPresent,
      unknownOutcome: sum(reports.map((r) => r.unknownOutcome.length)),
      unknownOutcomePresent: reports.flatMap((r) =>
        r.unknownOutcome
      ).filter((id) => present.has(id))
        .length,
      ledgerRows: present.size,
      unaccounted: unaccountedAll.slice(0, 20),
      unaccountedCount: unaccountedAll.length,
      transfersCommitted: sum(reports.map((r) => r.transfersCommitted)),
      expectedTotal: total,
      actualTotal,
      accountRows: balances.length,
      mismatchedAccounts,
      deliberateErrors,
      disconnects: sum(reports.map((r) => r.disconnects)),
      abandonedTransactions: sum(reports.map((r) => r.abandonedTransactions)),
      rolledBackTransactions: sum(reports.map((r) => r.rolledBackTransactions)),
      reconnects: sum(reports.map((r) => r.reconnects)),
      busyTimeouts: sum(reports.map((r) => r.busyTimeouts)),
      busyTimeoutsByOp,
      unexpectedCount: sum(reports.map((r) => r.unexpectedCount)),
      unexpected: reports.flatMap((r) => r.unexpected).slice(0, 20),
      integrity,
      rss,
      serverCpuSeconds,
      workerExitCodes: workers.map((w) => w.status?.code ?? -1),
      failures: [],
      ok: false,
    };
    report.failures = checkSoak(report);
    report.ok = report.failures.length === 0;
    return report;
  } finally {
    if (sampler !== undefined) clearInterval(sampler);
    await Promise.all(workers.map(reap));
    await server?.kill();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** The checks of a soak, as failure messages (empty when all pass). */
export function checkSoak(r: SoakReport): string[] {
  const f: string[] = [];
  if (r.workerExitCodes.some((c) => c !== 0)) {
    f.push(`worker exit codes ${r.workerExitCodes.join(", ")} (expected all 0)`);
  }
  if (r.opsTotal === 0 || r.acknowledged === 0) f.push("no operation completed");
  if (r.unexpectedCount !== 0) f.push(`${r.unexpectedCount} unexpected errors`);
  if (r.busyTimeouts !== 0) {
    f.push(`${r.busyTimeouts} BUSY_TIMEOUT errors (none expected with default timeouts)`);
  }
  if (r.missingCount !== 0) {
    f.push(`${r.missingCount} acknowledged ledger ids missing, e.g. ${r.missing.join(", ")}`);
  }
  if (r.unaccountedCount !== 0) {
    f.push(
      `${r.unaccountedCount} ledger rows that no client was told were written, e.g. ` +
        r.unaccounted.join(", "),
    );
  }
  if (r.rolledBackPresent.length !== 0) {
    f.push(`rolled-back ledger ids present: ${r.rolledBackPresent.slice(0, 20).join(", ")}`);
  }
  if (r.actualTotal !== r.expectedTotal || r.accountRows !== r.accounts) {
    f.push(
      `accounts total ${r.actualTotal} over ${r.accountRows} rows ` +
        `(expected ${r.expectedTotal} over ${r.accounts})`,
    );
  }
  if (r.mismatchedAccounts.length !== 0) {
    f.push(`balances disagree with the ledger for accounts ${r.mismatchedAccounts.join(", ")}`);
  }
  if (r.integrity !== "ok") f.push(`integrity_check: ${r.integrity}`);
  if (!r.rss.stable) {
    f.push(
      `server RSS grew ${mib(r.rss.secondHalfGrowthBytes)} over the second half ` +
        `(limit ${mib(r.rss.limitBytes)}) and ${mib(r.rss.lastQuarterGrowthBytes)} over the ` +
        `last quarter (limit ${mib(r.rss.limitBytes / 4)}, or half the third quarter's ` +
        `${mib(r.rss.thirdQuarterGrowthBytes)} and at most ${mib(r.rss.limitBytes / 2)})`,
    );
  }
  return f;
}

function mib(bytes: number): string {
  return `${(bytes / MiB).toFixed(1)} MiB`;
}

function count(n: number): string {
  return n.toLocaleString("en-US");
}

/** A human-readable report. */
export function formatSoakReport(r: SoakReport): string {
  const ops = Object.entries(r.ops).sort((a, b) => b[1] - a[1]);
  const lat = (op: string) => {
    const l = r.latency[op];
    return l === undefined ? "" : ` (mean ${l.meanMs} ms, max ${l.maxMs} ms)`;
  };
  const lines = [
    `netsqlite soak: ${(r.elapsedMs / 1000).toFixed(1)} s, ${r.connections} connections over ` +
    `${r.processes} processes, seed ${r.seed}, think 0-${2 * r.thinkMs} ms, ` +
    `synchronous=${r.synchronous}, ${r.accounts} accounts`,
    `  connections opened in ${r.connectMs} ms (slowest worker)`,
    `  operations: ${count(r.opsTotal)} (${count(r.opsPerSecond)}/s)`,
    ...ops.map(([op, n]) => `    ${op.padEnd(24)} ${count(n).padStart(9)}${lat(op)}`),
    `  acknowledged ledger writes: ${count(r.acknowledged)}; missing: ${r.missingCount}` +
    (r.missing.length > 0 ? ` (e.g. ${r.missing.join(", ")})` : ""),
    `  rolled-back ledger writes: ${
      count(r.rolledBack)
    }; present: ${r.rolledBackPresent.length}; ` +
    `unknown outcome (timed out on purpose): ${r.unknownOutcome} (${r.unknownOutcomePresent} ` +
    `ran); ledger rows: ${count(r.ledgerRows)}, ${r.unaccountedCount} unaccounted for`,
    `  transfers committed: ${count(r.transfersCommitted)}; accounts total ${r.actualTotal} ` +
    `(expected ${r.expectedTotal}); accounts disagreeing with the ledger: ${r.mismatchedAccounts.length}`,
    `  deliberate errors: ${
      Object.entries(r.deliberateErrors).map(([c, n]) => `${c} ${count(n)}`).join(", ") || "none"
    }`,
    `  deliberate disconnects: ${r.disconnects} close+reopen, ${r.abandonedTransactions} ` +
    `abandoned transactions, ${r.rolledBackTransactions} rolled-back transactions, ` +
    `${r.reconnects} request-timeout reconnects`,
    `  BUSY_TIMEOUT: ${r.busyTimeouts}` +
    (r.busyTimeouts > 0 ? ` (${JSON.stringify(r.busyTimeoutsByOp)})` : ""),
    `  unexpected errors: ${r.unexpectedCount}`,
    ...r.unexpected.map((e) =>
      `    worker ${e.worker} slot ${e.slot} ${e.op}: ${e.name} ${e.code} ${e.message}`
    ),
    `  integrity_check: ${r.integrity}`,
    `  server RSS: idle ${mib(r.rss.idleBytes)}, start ${mib(r.rss.startBytes)}, ` +
    `peak ${mib(r.rss.peakBytes)}, mid ${mib(r.rss.midBytes)}, end ${mib(r.rss.endBytes)}, ` +
    `after clients left ${mib(r.rss.afterCloseBytes)}`,
    `  server RSS growth over the second half: ${mib(r.rss.secondHalfGrowthBytes)} ` +
    `(limit ${mib(r.rss.limitBytes)}; slope ${mib(r.rss.secondHalfSlopeBytesPerMin)}/min), ` +
    `over the third quarter: ${mib(r.rss.thirdQuarterGrowthBytes)}, ` +
    `over the last quarter: ${mib(r.rss.lastQuarterGrowthBytes)} ` +
    `(limit ${mib(r.rss.limitBytes / 4)}); stable: ${r.rss.stable ? "yes" : "NO"}`,
    `  server CPU: ${r.serverCpuSeconds.toFixed(1)} s (${
      Math.round((100 * r.serverCpuSeconds) / (r.elapsedMs / 1000))
    }% of one core)`,
  ];
  for (const f of r.failures) lines.push(`  FAILED: ${f}`);
  lines.push(r.ok ? "RESULT: ok" : "RESULT: FAILED");
  return lines.join("\n");
}

const USAGE = "Usage: deno task soak [--duration SECONDS] [--connections N] [--processes N] " +
  "[--seed N] [--think-ms MS] [--accounts N] [--synchronous full|normal] [--max-rss-growth-mib N]";

async function main(): Promise<number> {
  let options: SoakOptions;
  try {
    const { values } = parseArgs({
      args: Deno.args,
      strict: true,
      options: {
        duration: { type: "string", default: "60" },
        connections: { type: "string", default: "200" },
        processes: { type: "string", default: "4" },
        seed: { type: "string", default: "1" },
        "think-ms": { type: "string", default: "10" },
        accounts: { type: "string", default: "100" },
        synchronous: { type: "string", default: "full" },
        "max-rss-growth-mib": { type: "string", default: "32" },
        help: { type: "boolean", short: "h" },
      },
    });
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    options = {
      durationMs: Math.round(Number(values.duration) * 1000),
      connections: Number(values.connections),
      processes: Number(values.processes),
      seed: Number(values.seed),
      thinkMs: Number(values["think-ms"]),
      accounts: Number(values.accounts),
      synchronous: values.synchronous as "full" | "normal",
      maxRssGrowthBytes: Number(values["max-rss-growth-mib"]) * MiB,
      verbose: true,
    };
  } catch (err) {
    console.error(`soak: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  let report: SoakReport;
  try {
    report = await runSoak(options);
  } catch (err) {
    if (!(err instanceof RangeError)) throw err;
    console.error(`soak: ${err.message}\n${USAGE}`);
    return 2;
  }
  console.log(formatSoakReport(report));
  return report.ok ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main());
