/**
 * Crash durability: writers hammer a netsqlite server running as its own
 * process, the server is SIGKILLed at a random moment, restarted on the same
 * database, and the database is checked:
 *
 * - every write the server acknowledged (its promise resolved) is present;
 * - no transaction is half visible (each carries a group id and its row count);
 * - `PRAGMA integrity_check` says `ok`.
 *
 * Besides those writers, which keep one call in flight and stop at the crash,
 * reconnecting writers (`--pipelined`, in this process) send bursts of
 * several calls at once on their connections and go on through every kill and
 * restart of the run, recording what each write came to: resolved, rejected
 * with `mayHaveRun: false`, or with `mayHaveRun: true`. After the last restart
 * every resolved write must be present and no write rejected as not run.
 *
 * Run: `deno task test:crash --trials 20 --seed 1 [--writers 4] [--pipelined 2]
 * [--synchronous full] [--client-processes]` (each one-call writer its own `deno run` process).
 * Import: {@link runCrashTrials}.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type Client, connect } from "../../client.ts";
import { ConnectionError, SqliteError } from "../../protocol/errors.ts";
import { type ServerProcess, startServerProcess } from "../_helpers.ts";
import { type WriterProcess, writerProcess } from "./_crash_writer_process.ts";
import { prng } from "../_bytes.ts";
export { prng } from "../_bytes.ts";

/** Options of {@link runCrashTrials}. */
export interface CrashOptions {
  /** Kill-and-restart rounds. @default {20} */
  trials?: number;
  /** Seed of the PRNG that picks kill delays and write mixes. @default {1} */
  seed?: number;
  /** Concurrent writer connections. @default {4} */
  writers?: number;
  /**
   * Reconnecting writers that pipeline bursts of calls through all trials
   * (see {@link PipelinedReport}), in this process also with `clientProcesses`; 0 for none.
   * @default {2}
   */
  pipelined?: number;
  /** The server's `--synchronous` mode. @default {"full"} */
  synchronous?: "full" | "normal";
  /** Print a line per trial. @default {false} */
  verbose?: boolean;
  /**
   * Run each writer as its own `deno run` process (tests/fixtures/crash_writer.ts),
   * as users run clients, instead of in this process. @default {false}
   */
  clientProcesses?: boolean;
}

/** A transaction that left rows of some but not all of its statements. */
export interface PartialTransaction {
  trial: number;
  group: number;
  rowsFound: number;
  rowsWritten: number;
}

/** What one trial saw. */
export interface TrialReport {
  trial: number;
  /** Delay between starting the writers and the SIGKILL, in ms. */
  killAfterMs: number;
  /** Autocommit inserts acknowledged in this trial. */
  ackedRows: number;
  /** Multi-row transactions acknowledged in this trial. */
  ackedTransactions: number;
  /** Writes that failed with BUSY_TIMEOUT (expected under load; not acknowledged). */
  busyTimeouts: number;
  /** Errors other than the connection loss and BUSY_TIMEOUT: each one is a finding. */
  unexpectedErrors: string[];
  /** Rows in the table after the restart (all trials so far). */
  rowsAfterRestart: number;
  /** Acknowledged autocommit rows (ids, of any trial so far) missing after the restart. */
  lostRows: number[];
  /** Acknowledged transactions (group ids, of any trial so far) missing or incomplete. */
  lostTransactions: number[];
  /** Transactions whose rows are only partly present. */
  partial: PartialTransaction[];
  /** What `PRAGMA integrity_check` returned (`ok` when sound). */
  integrity: string;
}

/** Summary of {@link runCrashTrials}. */
export interface Report {
  trials: number;
  seed: number;
  writers: number;
  synchronous: "full" | "normal";
  /** Acknowledged autocommit inserts, all trials. */
  ackedRows: number;
  /** Acknowledged multi-row transactions, all trials. */
  ackedTransactions: number;
  /** Acknowledged writes (rows + transactions) found missing in any check. */
  lostWrites: number;
  /** Partly visible transactions found in any check. */
  partialTransactions: number;
  /** Checks whose integrity_check was not `ok`. */
  integrityFailures: number;
  /** Unexpected writer errors, all trials (see {@link TrialReport.unexpectedErrors}). */
  unexpectedErrors: number;
  durationMs: number;
  perTrial: TrialReport[];
  /** The reconnecting writers' writes, checked after the last restart. */
  pipelined: PipelinedReport;
}

/**
 * What a reconnecting writer's write came to: resolved; rejected with
 * `mayHaveRun` false (`notRun`) or true; rejected with a `SqliteError` that
 * does not say (`unsaid`, e.g. `BUSY_TIMEOUT`: what it names did not happen);
 * or rejected with something else (`unexpected`, a finding).
 */
export type Outcome = "resolved" | "notRun" | "mayHaveRun" | "unsaid" | "unexpected";

/** The reconnecting writers' writes, as checked after the last restart. */
export interface PipelinedReport {
  /** Reconnecting writers (each one client, up to 2 connections). */
  writers: number;
  /** Writes by outcome. */
  resolved: number;
  notRun: number;
  mayHaveRun: number;
  unsaid: number;
  /** Writes rejected with `mayHaveRun` true found applied (the others found absent). */
  mayHaveRunApplied: number;
  /**
   * Of `notRun`, those not refused at connect (no server listening) but
   * rejected once their connection was lost: queued and never sent, or a
   * `transaction()` the server rolled back.
   */
  notRunLost: number;
  /** Rejections by outcome and code, e.g. `notRun CONNECTION_CLOSED (connection lost)` → count. */
  codes: Record<string, number>;
  /** Resolved writes (first row id) not wholly present after the last restart. */
  lostResolved: number[];
  /** Writes rejected as not run (`notRun`, `unsaid`) with rows present after the last restart. */
  presentNotRun: number[];
  /** Rejections that are neither `ConnectionError` nor `SqliteError`. */
  unexpected: string[];
}

/** First row id of the reconnecting writers (far above the one-call writers' ids). */
const PIPELINED_BASE = 1_000_000_000_000;
/** Id range of each reconnecting writer. */
const PIPELINED_SPAN = 1_000_000_000;

/** One write of a reconnecting writer: `size` rows from id `grp`, all with that `grp`. */
interface PipelinedWrite {
  grp: number;
  size: number;
  outcome: Outcome | "pending";
  code?: string;
}

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    writer INTEGER NOT NULL,
    trial INTEGER NOT NULL,
    grp INTEGER,
    grp_size INTEGER,
    payload TEXT NOT NULL
  );
  CREATE INDEX IF NOT EXISTS items_grp ON items(grp);
`;

const INSERT =
  "INSERT INTO items (id, writer, trial, grp, grp_size, payload) VALUES (?, ?, ?, ?, ?, ?)";

/** What all writers acknowledged, across trials. */
export interface Ledger {
  nextId: number;
  nextGroup: number;
  ackedIds: Set<number>;
  /** group id → row count */
  ackedGroups: Map<number, number>;
}

/** What the writers of one trial counted. */
export interface WriterCounts {
  rows: number;
  txs: number;
  busy: number;
  unexpected: string[];
}

/**
 * One writer: autocommit inserts, batches and BEGIN/COMMIT transactions,
 * until its connection dies. Records what the server acknowledged in
 * `ledger` (and calls `onAck` right after each acknowledgement).
 */
export async function writer(
  client: Client,
  w: number,
  trial: number,
  ledger: Ledger,
  rnd: () => number,
  counts: WriterCounts,
  onAck?: (kind: "row" | "tx", id: number, size: number) => void,
): Promise<void> {
  const payload = (n: number) => "x".repeat(50 + Math.floor(rnd() * n));
  for (;;) {
    const pick = rnd();
    try {
      if (pick < 0.5) {
        const id = ledger.nextId++;
        await client.run(INSERT, [id, w, trial, null, null, payload(400)]);
        ledger.ackedIds.add(id);
        counts.rows++;
        onAck?.("row", id, 1);
        continue;
      }
      const group = ledger.nextGroup++;
      const size = 2 + Math.floor(rnd() * 5);
      const rows = Array.from({ length: size }, () => {
        const id = ledger.nextId++;
        return [id, w, trial, group, size, payload(2000)];
      });
      if (pick < 0.75) {
        await client.batch(rows.map((params) => ({ sql: INSERT, params })));
      } else {
        await client.exec("BEGIN IMMEDIATE");
        try {
          for (const params of rows) await client.run(INSERT, params);
          await client.exec("COMMIT");
        } catch (err) {
          if (!(err instanceof ConnectionError)) await client.exec("ROLLBACK").catch(() => {});
          throw err;
        }
      }
      ledger.ackedGroups.set(group, size);
      counts.txs++;
      onAck?.("tx", group, size);
    } catch (err) {
      // The crash: the writer stops.
      if (err instanceof ConnectionError) return;
      // Waiting for the writer behind other writers' transactions: not acknowledged,
      // not a durability question; go on.
      if (err instanceof SqliteError && err.code === "BUSY_TIMEOUT") {
        counts.busy++;
        continue;
      }
      // Anything else is a finding: record it and stop this writer.
      counts.unexpected.push(
        err instanceof SqliteError
          ? `writer ${w}: ${err.code}: ${err.message}`
          : `writer ${w}: ${String(err)}`,
      );
      return;
    }
  }
}

/** What a rejection says of its write. */
function classify(err: unknown): { outcome: Outcome; code: string } {
  if (err instanceof ConnectionError) {
    // Refused at connect (no server listening): surely not run, but not the interesting case.
    const where = /^Cannot (re)?connect/.test(err.message) ? "at connect" : "connection lost";
    return { outcome: err.mayHaveRun ? "mayHaveRun" : "notRun", code: `${err.code} (${where})` };
  }
  if (err instanceof SqliteError) {
    const outcome = err.mayHaveRun === undefined
      ? "unsaid"
      : err.mayHaveRun
      ? "mayHaveRun"
      : "notRun";
    return { outcome, code: err.code };
  }
  return { outcome: "unexpected", code: String(err) };
}

/**
 * One reconnecting writer: until `stop()`, sends a burst of 2–6 writes
 * at once (autocommit inserts, batches, `transaction()`s), waits for all of
 * them and records each one's outcome in `writes`; through the server's
 * kills and restarts (its client reconnects on the next call).
 */
async function pipelinedWriter(
  client: Client,
  w: number,
  trial: () => number,
  rnd: () => number,
  writes: PipelinedWrite[],
  stop: () => boolean,
): Promise<void> {
  let next = PIPELINED_BASE + w * PIPELINED_SPAN;
  while (!stop()) {
    const burst = 2 + Math.floor(rnd() * 5);
    const calls: Promise<void>[] = [];
    let failed = false;
    for (let i = 0; i < burst; i++) {
      const pick = rnd();
      const size = pick < 0.4 ? 1 : 2 + Math.floor(rnd() * 4);
      const grp = next;
      next += size;
      const rows = Array.from(
        { length: size },
        (_, k) => [grp + k, 1000 + w, trial(), grp, size, "p".repeat(50 + Math.floor(rnd() * 400))],
      );
      const write: PipelinedWrite = { grp, size, outcome: "pending" };
      writes.push(write);
      const call = size === 1
        ? client.run(INSERT, rows[0])
        : pick < 0.6
        ? client.batch(rows.map((params) => ({ sql: INSERT, params })))
        : client.transaction(async (tx) => {
          for (const params of rows) await tx.run(INSERT, params);
        }, { behavior: "immediate" });
      calls.push(call.then(() => {
        write.outcome = "resolved";
      }, (err) => {
        Object.assign(write, classify(err));
        failed = true;
      }));
    }
    await Promise.all(calls);
    // The server is down or restarting: retry soon, without spinning.
    if (failed) await waitFor(25);
  }
}

/** Checks the reconnecting writers' writes against the database. */
async function checkPipelined(
  db: Client,
  writers: number,
  writes: PipelinedWrite[],
): Promise<PipelinedReport> {
  const found = new Map<number, number>();
  for (
    const [grp, n] of await db.values<[number, number]>(
      "SELECT grp, count(*) FROM items WHERE grp >= ? GROUP BY grp",
      [PIPELINED_BASE],
    )
  ) {
    found.set(grp, n);
  }
  const report: PipelinedReport = {
    writers,
    resolved: 0,
    notRun: 0,
    mayHaveRun: 0,
    unsaid: 0,
    mayHaveRunApplied: 0,
    notRunLost: 0,
    codes: {},
    lostResolved: [],
    presentNotRun: [],
    unexpected: [],
  };
  for (const wr of writes) {
    const n = found.get(wr.grp) ?? 0;
    if (wr.outcome === "pending") {
      report.unexpected.push(`write ${wr.grp}: never settled`);
      continue;
    }
    if (wr.outcome !== "resolved") {
      const key = `${wr.outcome} ${wr.code}`;
      report.codes[key] = (report.codes[key] ?? 0) + 1;
    }
    switch (wr.outcome) {
      case "resolved":
        report.resolved++;
        if (n !== wr.size) report.lostResolved.push(wr.grp);
        break;
      case "notRun":
      case "unsaid":
        report[wr.outcome]++;
        if (wr.outcome === "notRun" && !wr.code?.endsWith("(at connect)")) report.notRunLost++;
        if (n !== 0) report.presentNotRun.push(wr.grp);
        break;
      case "mayHaveRun":
        report.mayHaveRun++;
        if (n !== 0) report.mayHaveRunApplied++;
        break;
      case "unexpected":
        report.unexpected.push(`write ${wr.grp}: ${wr.code}`);
        break;
    }
  }
  return report;
}

async function waitFor(ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Delays the kill until the trial has at least one acknowledged row and one
 * acknowledged transaction to lose (a loaded machine may have acknowledged
 * nothing 50 ms in), for at most 5 s.
 */
async function untilAcknowledged(counts: () => { rows: number; txs: number }): Promise<void> {
  const giveUpAt = performance.now() + 5000;
  while (performance.now() < giveUpAt) {
    const c = counts();
    if (c.rows > 0 && c.txs > 0) return;
    await waitFor(5);
  }
}

/**
 * Runs `trials` rounds of: start server process, write concurrently, SIGKILL
 * the server after a random 50–400 ms (later if nothing was acknowledged by
 * then), restart it on the same database and
 * check every acknowledged write, transaction atomicity and integrity.
 */
export async function runCrashTrials(options: CrashOptions = {}): Promise<Report> {
  const trials = options.trials ?? 20;
  const seed = options.seed ?? 1;
  const writers = options.writers ?? 4;
  const pipelined = options.pipelined ?? 2;
  const synchronous = options.synchronous ?? "full";
  if (!Number.isInteger(trials) || trials < 1) throw new RangeError(`Invalid trials: ${trials}`);
  if (!Number.isInteger(seed)) throw new RangeError(`Invalid seed: ${seed}`);
  if (!Number.isInteger(writers) || writers < 1) {
    throw new RangeError(`Invalid writers: ${writers}`);
  }
  if (!Number.isInteger(pipelined) || pipelined < 0) {
    throw new RangeError(`Invalid pipelined: ${pipelined}`);
  }
  if (synchronous !== "full" && synchronous !== "normal") {
    throw new TypeError(`Invalid synchronous: ${synchronous}`);
  }
  const started = performance.now();
  const rnd = prng(seed);
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-crash-" });
  const database = `${dir}/crash.db`;
  const args = ["--synchronous", synchronous];
  const ledger: Ledger = { nextId: 1, nextGroup: 1, ackedIds: new Set(), ackedGroups: new Map() };
  const perTrial: TrialReport[] = [];
  // The reconnecting writers: started in the first trial, stopped after the last kill.
  const pipeClients: Client[] = [];
  const pipeWrites: PipelinedWrite[] = [];
  let pipeRunning: Promise<void>[] = [];
  let pipeStop = false;
  let currentTrial = 1;
  const stopPipelined = async () => {
    pipeStop = true;
    await Promise.all(pipeRunning);
    pipeRunning = [];
    await Promise.all(pipeClients.splice(0).map((c) => c.close()));
  };
  let pipeReport: PipelinedReport | undefined;
  try {
    for (let trial = 1; trial <= trials; trial++) {
      currentTrial = trial;
      const killAfterMs = 50 + Math.floor(rnd() * 351);
      const counts: WriterCounts = { rows: 0, txs: 0, busy: 0, unexpected: [] };

      // Write until the server is killed.
      {
        await using server = await startServerProcess({ dir, database, args });
        if (trial === 1) {
          {
            await using db = await server.client();
            await db.exec(SCHEMA);
          }
          for (let w = 0; w < pipelined; w++) {
            // Up to 2 connections, each with several calls in flight.
            pipeClients.push(await connect({ ...server.connectOptions, max: 2 }));
          }
          pipeRunning = pipeClients.map((c, w) =>
            pipelinedWriter(
              c,
              w,
              () => currentTrial,
              prng(seed * 1000 + 900 + w),
              pipeWrites,
              () => pipeStop,
            )
          );
        }
        if (options.clientProcesses) {
          await writeFromProcesses(server, writers, trial, seed, killAfterMs, ledger, counts);
        } else {
          const clients: Client[] = [];
          try {
            // No reconnecting: a writer stops at the first sign of the crash.
            for (let w = 0; w < writers; w++) {
              clients.push(await connect({ ...server.connectOptions, reconnect: false, max: 1 }));
            }
            const running = clients.map((c, w) =>
              writer(c, w, trial, ledger, prng(seed * 1000 + trial * 16 + w), counts)
            );
            await waitFor(killAfterMs);
            await untilAcknowledged(() => counts);
            await server.kill();
            await Promise.all(running);
          } finally {
            await Promise.all(clients.map((c) => c.close()));
          }
        }
      }

      // After the last kill, the reconnecting writers stop (their calls fail fast while
      // no server listens), so that the last check sees each write's outcome.
      if (trial === trials) await stopPipelined();

      // Restart on the same database and check.
      {
        await using server = await startServerProcess({ dir, database, args });
        await using db = await server.client();
        if (trial === trials) pipeReport = await checkPipelined(db, pipelined, pipeWrites);
        const integrity = (await db.values<[string]>("PRAGMA integrity_check"))
          .map((r) => r[0]).join("; ");
        const present = new Set(
          (await db.values<[number]>("SELECT id FROM items WHERE grp IS NULL")).map((r) => r[0]),
        );
        const groups = new Map<number, { found: number; size: number }>();
        for (
          const [grp, found, size] of await db.values<[number, number, number]>(
            "SELECT grp, count(*), max(grp_size) FROM items WHERE grp IS NOT NULL GROUP BY grp",
          )
        ) {
          groups.set(grp, { found, size });
        }
        const [[total]] = await db.values<[number]>("SELECT count(*) FROM items");
        const lostRows = [...ledger.ackedIds].filter((id) => !present.has(id));
        const lostTransactions = [...ledger.ackedGroups].filter(([g, size]) =>
          groups.get(g)?.found !== size
        ).map(([g]) => g);
        const partial: PartialTransaction[] = [];
        for (const [group, { found, size }] of groups) {
          if (found !== size) partial.push({ trial, group, rowsFound: found, rowsWritten: size });
        }
        const report: TrialReport = {
          trial,
          killAfterMs,
          ackedRows: counts.rows,
          ackedTransactions: counts.txs,
          busyTimeouts: counts.busy,
          unexpectedErrors: counts.unexpected,
          rowsAfterRestart: total,
          lostRows,
          lostTransactions,
          partial,
          integrity,
        };
        perTrial.push(report);
        if (options.verbose) console.log(formatTrial(report));
      }
    }
  } finally {
    await stopPipelined();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  return {
    trials,
    seed,
    writers,
    synchronous,
    ackedRows: sum(perTrial.map((t) => t.ackedRows)),
    ackedTransactions: sum(perTrial.map((t) => t.ackedTransactions)),
    lostWrites: sum(perTrial.map((t) => t.lostRows.length + t.lostTransactions.length)),
    partialTransactions: sum(perTrial.map((t) => t.partial.length)),
    integrityFailures: perTrial.filter((t) => t.integrity !== "ok").length,
    unexpectedErrors: sum(perTrial.map((t) => t.unexpectedErrors.length)),
    durationMs: Math.round(performance.now() - started),
    perTrial,
    pipelined: pipeReport!,
  };
}

/**
 * One trial's writing phase with every writer in its own process: starts them,
 * waits until all are connected, kills the server after `killAfterMs`, then
 * reads what each writer was acknowledged from its output.
 */
async function writeFromProcesses(
  server: ServerProcess,
  writers: number,
  trial: number,
  seed: number,
  killAfterMs: number,
  ledger: Ledger,
  counts: WriterCounts,
): Promise<void> {
  // Disjoint id and group ranges per writer process.
  const span = 1_000_000;
  const procs: WriterProcess[] = [];
  try {
    for (let w = 0; w < writers; w++) {
      procs.push(
        await writerProcess({
          connectOptions: server.connectOptions,
          w,
          trial,
          seed: seed * 1000 + trial * 16 + w,
          idBase: ledger.nextId + w * span,
          groupBase: ledger.nextGroup + w * span,
        }),
      );
    }
    await waitFor(killAfterMs);
    await untilAcknowledged(() => {
      const acked = procs.map((p) => p.acked());
      return { rows: sum(acked.map((a) => a.rows)), txs: sum(acked.map((a) => a.txs)) };
    });
    await server.kill();
    for (const p of procs) {
      const out = await p.finish();
      for (const id of out.rows) ledger.ackedIds.add(id);
      for (const [g, size] of out.txs) ledger.ackedGroups.set(g, size);
      counts.rows += out.rows.length;
      counts.txs += out.txs.length;
      counts.busy += out.busy;
      counts.unexpected.push(...out.unexpected);
    }
  } finally {
    for (const p of procs) await p[Symbol.asyncDispose]();
  }
  ledger.nextId += writers * span;
  ledger.nextGroup += writers * span;
}

function sum(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0);
}

/** One line describing a trial. */
export function formatTrial(t: TrialReport): string {
  return `trial ${t.trial}: killed after ${t.killAfterMs} ms; acked ${t.ackedRows} rows, ` +
    `${t.ackedTransactions} transactions; ${t.rowsAfterRestart} rows after restart; ` +
    `lost ${t.lostRows.length} rows, ${t.lostTransactions.length} transactions; ` +
    `${t.partial.length} partial; ${t.busyTimeouts} busy timeouts; ` +
    `${t.unexpectedErrors.length} unexpected errors; integrity ${t.integrity}`;
}

/** Whether the run found nothing wrong. */
export function passed(r: Report): boolean {
  const p = r.pipelined;
  return r.lostWrites === 0 && r.partialTransactions === 0 && r.integrityFailures === 0 &&
    r.unexpectedErrors === 0 && p.lostResolved.length === 0 && p.presentNotRun.length === 0 &&
    p.unexpected.length === 0;
}

/** A human-readable report. */
export function formatReport(r: Report): string {
  const lines = [
    `crash durability: ${r.trials} trials, seed ${r.seed}, ${r.writers} writers, ` +
    `synchronous=${r.synchronous}, ${r.durationMs} ms`,
    `  acknowledged: ${r.ackedRows} autocommit rows, ${r.ackedTransactions} transactions`,
    `  lost acknowledged writes: ${r.lostWrites}`,
    `  partial transactions: ${r.partialTransactions}`,
    `  integrity failures: ${r.integrityFailures}`,
    `  unexpected writer errors: ${r.unexpectedErrors}`,
  ];
  const p = r.pipelined;
  lines.push(
    `  reconnecting pipelined writers: ${p.writers}; writes resolved ${p.resolved}, ` +
      `rejected with mayHaveRun false ${p.notRun} (${p.notRunLost} on a lost connection), ` +
      `with mayHaveRun true ${p.mayHaveRun} ` +
      `(${p.mayHaveRunApplied} applied), not saying ${p.unsaid}`,
    `  resolved writes lost: ${p.lostResolved.length}; ` +
      `not-run writes present: ${p.presentNotRun.length}; unexpected: ${p.unexpected.length}`,
  );
  for (const [key, n] of Object.entries(p.codes).sort()) lines.push(`    ${key}: ${n}`);
  if (p.lostResolved.length > 0) lines.push(`  lost resolved: ${p.lostResolved.join(", ")}`);
  if (p.presentNotRun.length > 0) {
    lines.push(`  present though not run: ${p.presentNotRun.join(", ")}`);
  }
  for (const e of p.unexpected) lines.push(`  pipelined unexpected: ${e}`);
  for (const t of r.perTrial) {
    lines.push(`  ${formatTrial(t)}`);
    if (t.lostRows.length > 0) lines.push(`  trial ${t.trial} lost rows: ${t.lostRows.join(", ")}`);
    if (t.lostTransactions.length > 0) {
      lines.push(`  trial ${t.trial} lost transactions: ${t.lostTransactions.join(", ")}`);
    }
    for (const p of t.partial) {
      lines.push(`  trial ${t.trial} partial group ${p.group}: ${p.rowsFound}/${p.rowsWritten}`);
    }
    if (t.integrity !== "ok") lines.push(`  trial ${t.trial} integrity: ${t.integrity}`);
    for (const e of t.unexpectedErrors) lines.push(`  trial ${t.trial} unexpected: ${e}`);
  }
  lines.push(passed(r) ? "RESULT: ok" : "RESULT: FAILED");
  return lines.join("\n");
}

async function main(): Promise<number> {
  let options: CrashOptions;
  try {
    const { values } = parseArgs({
      args: Deno.args,
      strict: true,
      options: {
        trials: { type: "string", default: "20" },
        seed: { type: "string", default: "1" },
        writers: { type: "string", default: "4" },
        pipelined: { type: "string", default: "2" },
        synchronous: { type: "string", default: "full" },
        "client-processes": { type: "boolean", default: false },
        help: { type: "boolean", short: "h" },
      },
    });
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    options = {
      trials: Number(values.trials),
      seed: Number(values.seed),
      writers: Number(values.writers),
      pipelined: Number(values.pipelined),
      synchronous: values.synchronous as "full" | "normal",
      clientProcesses: values["client-processes"],
      verbose: true,
    };
  } catch (err) {
    console.error(`crash_durability: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  let report: Report;
  try {
    report = await runCrashTrials(options);
  } catch (err) {
    if (!(err instanceof RangeError || err instanceof TypeError)) throw err;
    console.error(`crash_durability: ${err.message}\n${USAGE}`);
    return 2;
  }
  console.log(formatReport(report));
  return passed(report) ? 0 : 1;
}

const USAGE = "Usage: deno task test:crash [--trials N] [--seed N] [--writers N] [--pipelined N] " +
  "[--synchronous full|normal] [--client-processes]";

if (import.meta.main) Deno.exit(await main());
