/**
 * One worker process of the soak test (tests/soak/soak.ts): it holds a share
 * of the connections and runs a seeded mixed workload on each of them until
 * the duration is over, then prints what it saw as one JSON line.
 *
 * Protocol with the parent: the configuration is the first argument (JSON);
 * the worker opens its connections and prints `{"type":"ready",...}`, waits
 * for a line `go` on stdin, runs, closes every connection and prints
 * `{"type":"report",...}` ({@link WorkerReport}). Nothing else goes to stdout.
 *
 * Each connection loops: pick an operation by weight, run it, think for a
 * random 0–2×`thinkMs` ms. Operations:
 *
 * - reads: a point read of an account and of an acknowledged ledger row (it
 *   must be there), a range of acknowledged ledger ids (all must be there,
 *   no rolled-back id may be), the accounts total (must never change), the
 *   same total through `iterate()`;
 * - writes: an autocommit insert into the append-only ledger, a batch of
 *   inserts, a `transaction()` transfer between two accounts (read, then
 *   write back computed balances, plus a ledger row naming the transfer);
 * - deliberate errors, which must fail with exactly the expected code: a
 *   duplicate id (`SQLITE_CONSTRAINT_PRIMARYKEY`), a batch whose last
 *   statement repeats an id (nothing of it may remain), a NULL amount
 *   (`SQLITE_CONSTRAINT_NOTNULL`), a transfer that throws (rolled back), a
 *   transfer whose nested savepoint fails (only the savepoint is undone);
 * - deliberate disconnects: close the connection and open a new one; open a
 *   transaction, write in it and close the connection (the server must roll
 *   it back); and, every `reconnectEveryMs` per worker, a request timeout:
 *   a second client with `requestTimeout` writes while this one holds the
 *   writer, gets `REQUEST_TIMEOUT`, and its next call must reconnect.
 *
 * Anything else that fails is an unexpected error, except `BUSY_TIMEOUT`,
 * which is counted on its own.
 *
 * @module
 */

import { type Client, connect, type ConnectOptions } from "../../client.ts";
import { ConnectionError, ErrorCode, SqliteError } from "../../protocol/errors.ts";
import { prng } from "../_bytes.ts";
export { prng } from "../_bytes.ts";

/** What the parent tells a worker (first command-line argument, JSON). */
export interface WorkerConfig {
  /** Worker number, 0-based. */
  worker: number;
  /** Where the server is. */
  connect: ConnectOptions;
  /** Global numbers of the connections ("slots") this worker holds. */
  slots: number[];
  /** Seed of the workload; each slot derives its own PRNG from it. */
  seed: number;
  /** How long to run after `go`, in ms. */
  durationMs: number;
  /** Mean think time between two operations of one connection, in ms. */
  thinkMs: number;
  /** Number of accounts (ids 1..accounts). */
  accounts: number;
  /** Sum of all balances, which no committed transfer changes. */
  total: number;
  /** Period of the request-timeout reconnect scenario per worker; 0 = never. */
  reconnectEveryMs: number;
}

/** Latency of one operation kind. */
export interface LatencyStat {
  count: number;
  totalMs: number;
  maxMs: number;
}

/** A failure nobody provoked. */
export interface UnexpectedError {
  worker: number;
  slot: number;
  op: string;
  name: string;
  code: string;
  message: string;
}

/** What one worker saw; printed as the last stdout line. */
/** Event counts a worker reports and the soak report sums up. */
export interface SoakCounts {
  transfersCommitted: number;
  /** Deliberately provoked errors by code. */
  deliberateErrors: Record<string, number>;
  disconnects: number;
  abandonedTransactions: number;
  rolledBackTransactions: number;
  /** Request-timeout scenarios whose client reconnected and was served. */
  reconnects: number;
  busyTimeouts: number;
  busyTimeoutsByOp: Record<string, number>;
  unexpectedCount: number;
  /** The first few unexpected errors. */
  unexpected: UnexpectedError[];
}

export interface WorkerReport extends SoakCounts {
  type: "report";
  worker: number;
  connections: number;
  /** Time to open this worker's connections, in ms. */
  connectMs: number;
  /** Length of the run (go to last operation finished), in ms. */
  elapsedMs: number;
  /** Completed operations by kind (deliberate failures included). */
  ops: Record<string, number>;
  latency: Record<string, LatencyStat>;
  /** Acknowledged ledger ids as inclusive ranges `[first, last]`, ascending. */
  acked: [number, number][];
  ackedCount: number;
  /** Ledger ids written in a transaction, batch or statement that was rolled back. */
  absent: number[];
  /** Ledger ids whose outcome cannot be known (the request timed out). */
  unknownOutcome: number[];
}

/** Ledger ids of slot `s` are `(s + 1) * ID_SPACE + seq`. */
export const ID_SPACE = 1_000_000_000;

/** Schema the parent creates before the workers start. */
export const SCHEMA = `
  CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
  CREATE TABLE ledger (
    id INTEGER PRIMARY KEY,
    slot INTEGER NOT NULL,
    kind TEXT NOT NULL,
    src INTEGER,
    dst INTEGER,
    amount INTEGER NOT NULL,
    note TEXT NOT NULL
  );
`;

const INSERT_LEDGER =
  "INSERT INTO ledger (id, slot, kind, src, dst, amount, note) VALUES (?, ?, ?, ?, ?, ?, ?)";

/** Request timeout of the reconnect scenario's second client, in ms. */
const RECONNECT_REQUEST_TIMEOUT = 40;
/** How long a worker waits for its connections to finish after the duration. */
const GRACE_MS = 20_000;
const MAX_SAMPLES = 20;

const WEIGHTS: [string, number][] = [
  ["pointAccount", 18],
  ["pointLedger", 12],
  ["rangeLedger", 10],
  ["sumAccounts", 6],
  ["iterateAccounts", 2],
  ["insert", 22],
  ["batch", 8],
  ["transfer", 14],
  ["duplicateInsert", 2],
  ["failedBatch", 1],
  ["notNullInsert", 1],
  ["rollbackTransfer", 1],
  ["savepointError", 1],
  ["disconnect", 1],
  ["abandonTransaction", 0.5],
];
const WEIGHT_SUM = WEIGHTS.reduce((a, [, w]) => a + w, 0);

/** A broken invariant seen by a read or a write. */
class InvariantError extends Error {
  readonly code = "INVARIANT";
  constructor(message: string) {
    super(message);
    this.name = "InvariantError";
  }
}

/** Thrown inside a transfer on purpose, to roll it back. */
class DeliberateRollback extends Error {
  constructor() {
    super("deliberate rollback");
    this.name = "DeliberateRollback";
  }
}

interface Slot {
  index: number;
  client: Client;
  rnd: () => number;
  seq: number;
  /** Acknowledged ledger ids, ascending. */
  acked: number[];
  absent: Set<number>;
}

/** Runs the workload of one worker; used by {@link main}. */
export class Worker {
  readonly #config: WorkerConfig;
  readonly #report: WorkerReport;
  #slots: Slot[] = [];
  #deadline = 0;
  #nextReconnectAt = Infinity;
  #reconnectBusy = false;
  readonly #rnd: () => number;

  constructor(config: WorkerConfig) {
    this.#config = config;
    this.#rnd = prng(config.seed * 7919 + config.worker);
    this.#report = {
      type: "report",
      worker: config.worker,
      connections: config.slots.length,
      connectMs: 0,
      elapsedMs: 0,
      ops: {},
      latency: {},
      acked: [],
      ackedCount: 0,
      absent: [],
      unknownOutcome: [],
      transfersCommitted: 0,
      deliberateErrors: {},
      disconnects: 0,
      abandonedTransactions: 0,
      rolledBackTransactions: 0,
      reconnects: 0,
      busyTimeouts: 0,
      busyTimeoutsByOp: {},
      unexpectedCount: 0,
      unexpected: [],
    };
  }

  /** Opens every connection of this worker, 50 at a time. */
  async open(): Promise<void> {
    const started = performance.now();
    const { slots, seed } = this.#config;
    for (let i = 0; i < slots.length; i += 50) {
      const chunk = slots.slice(i, i + 50);
      const clients = await Promise.all(
        chunk.map(() => connect({ ...this.#config.connect, max: 1 })),
      );
      chunk.forEach((index, j) =>
        this.#slots.push({
          index,
          client: clients[j],
          rnd: prng(seed * 100_003 + index),
          seq: 0,
          acked: [],
          absent: new Set(),
        })
      );
    }
    this.#report.connectMs = Math.round(performance.now() - started);
  }

  /** Runs until the duration is over; returns false when connections hung past the grace time. */
  async run(): Promise<boolean> {
    const started = performance.now();
    this.#deadline = started + this.#config.durationMs;
    if (this.#config.reconnectEveryMs > 0) {
      this.#nextReconnectAt = started + this.#config.reconnectEveryMs * (0.25 + this.#rnd());
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const finished = await Promise.race([
      Promise.all(this.#slots.map((s) => this.#loop(s))).then(() => true),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), this.#config.durationMs + GRACE_MS);
      }),
    ]);
    clearTimeout(timer);
    this.#report.elapsedMs = Math.round(performance.now() - started);
    if (!finished) {
      this.#unexpected(-1, "run", new Error(`connections still busy ${GRACE_MS} ms after the end`));
    }
    return finished;
  }

  /** Closes every connection and returns the report. */
  async close(): Promise<WorkerReport> {
    await Promise.all(this.#slots.map((s) => s.client.close()));
    const r = this.#report;
    const ids = this.#slots.flatMap((s) => s.acked).sort((a, b) => a - b);
    r.ackedCount = ids.length;
    r.acked = toRanges(ids);
    r.absent = this.#slots.flatMap((s) => [...s.absent]).sort((a, b) => a - b);
    return r;
  }

  /** The report so far (used when connections hang). */
  get report(): WorkerReport {
    return this.#report;
  }

  async #loop(s: Slot): Promise<void> {
    while (performance.now() < this.#deadline) {
      let op: string;
      if (!this.#reconnectBusy && performance.now() >= this.#nextReconnectAt) {
        op = "requestTimeoutReconnect";
        this.#reconnectBusy = true;
      } else {
        op = pick(s.rnd());
      }
      const t0 = performance.now();
      try {
        await this.#op(op, s);
        this.#count(op, performance.now() - t0);
      } catch (err) {
        this.#count(op, performance.now() - t0);
        await this.#failed(s, op, err);
      } finally {
        if (op === "requestTimeoutReconnect") {
          this.#reconnectBusy = false;
          this.#nextReconnectAt = performance.now() + this.#config.reconnectEveryMs;
        }
      }
      const think = s.rnd() * 2 * this.#config.thinkMs;
      if (think >= 1) await sleep(think);
    }
  }

  #op(op: string, s: Slot): Promise<void> {
    switch (op) {
      case "pointAccount":
        return this.#pointAccount(s);
      case "pointLedger":
        return this.#pointLedger(s);
      case "rangeLedger":
        return this.#rangeLedger(s);
      case "sumAccounts":
        return this.#sumAccounts(s);
      case "iterateAccounts":
        return this.#iterateAccounts(s);
      case "insert":
        return this.#insert(s);
      case "batch":
        return this.#batch(s);
      case "transfer":
        return this.#transfer(s, "commit");
      case "duplicateInsert":
        return this.#duplicateInsert(s);
      case "failedBatch":
        return this.#failedBatch(s);
      case "notNullInsert":
        return this.#notNullInsert(s);
      case "rollbackTransfer":
        return this.#transfer(s, "rollback");
      case "savepointError":
        return this.#transfer(s, "savepoint");
      case "disconnect":
        return this.#disconnect(s);
      case "abandonTransaction":
        return this.#abandonTransaction(s);
      case "requestTimeoutReconnect":
        return this.#requestTimeoutReconnect(s);
      default:
        throw new Error(`unknown op ${op}`);
    }
  }

  // ---- reads ---------------------------------------------------------------

  async #pointAccount(s: Slot): Promise<void> {
    const id = this.#account(s);
    const row = await s.client.get<{ balance: number }>(
      "SELECT balance FROM accounts WHERE id = ?",
      [id],
    );
    if (row === undefined || !Number.isInteger(row.balance) || row.balance < 0) {
      throw new InvariantError(`account ${id}: bad row ${JSON.stringify(row)}`);
    }
  }

  async #pointLedger(s: Slot): Promise<void> {
    if (s.acked.length === 0) return this.#pointAccount(s);
    const id = s.acked[Math.floor(s.rnd() * s.acked.length)];
    const row = await s.client.get<{ id: number; slot: number }>(
      "SELECT id, slot, kind, amount FROM ledger WHERE id = ?",
      [id],
    );
    if (row?.id !== id || row.slot !== s.index) {
      throw new InvariantError(`acknowledged ledger id ${id} read back as ${JSON.stringify(row)}`);
    }
  }

  async #rangeLedger(s: Slot): Promise<void> {
    if (s.acked.length === 0) return this.#sumAccounts(s);
    const end = Math.floor(s.rnd() * s.acked.length);
    const start = Math.max(0, end - Math.floor(s.rnd() * 50));
    const lo = s.acked[start], hi = s.acked[end];
    const ids = (await s.client.values<[number]>(
      "SELECT id FROM ledger WHERE id BETWEEN ? AND ? ORDER BY id",
      [lo, hi],
    )).map((r) => r[0]);
    const got = new Set(ids);
    for (let i = start; i <= end; i++) {
      if (!got.has(s.acked[i])) {
        throw new InvariantError(`acknowledged ledger id ${s.acked[i]} missing from a range read`);
      }
    }
    for (const id of ids) {
      if (s.absent.has(id)) throw new InvariantError(`rolled-back ledger id ${id} is visible`);
    }
    for (let i = 1; i < ids.length; i++) {
      if (ids[i - 1] >= ids[i]) throw new InvariantError("range read not in ascending order");
    }
  }

  async #sumAccounts(s: Slot): Promise<void> {
    const row = await s.client.get<{ total: number; n: number }>(
      "SELECT sum(balance) AS total, count(*) AS n FROM accounts",
    );
    if (row?.total !== this.#config.total || row.n !== this.#config.accounts) {
      throw new InvariantError(
        `accounts read as ${JSON.stringify(row)}, expected total ${this.#config.total} over ` +
          `${this.#config.accounts} accounts`,
      );
    }
  }

  async #iterateAccounts(s: Slot): Promise<void> {
    let total = 0, n = 0;
    for await (
      const row of s.client.iterate<{ balance: number }>(
        "SELECT id, balance FROM accounts ORDER BY id",
      )
    ) {
      total += row.balance;
      n++;
    }
    if (total !== this.#config.total || n !== this.#config.accounts) {
      throw new InvariantError(`iterate() saw total ${total} over ${n} accounts`);
    }
  }

  // ---- writes --------------------------------------------------------------

  async #insert(s: Slot): Promise<void> {
    const id = this.#nextId(s);
    const r = await s.client.run(INSERT_LEDGER, [id, s.index, "insert", null, null, 1, note(s)]);
    if (r.changes !== 1 || r.lastInsertRowid !== id) {
      throw new InvariantError(`insert of ${id} reported ${JSON.stringify(r)}`);
    }
    s.acked.push(id);
  }

  async #batch(s: Slot): Promise<void> {
    const k = 2 + Math.floor(s.rnd() * 5);
    const ids = Array.from({ length: k }, () => this.#nextId(s));
    const results = await s.client.batch<{ n: number }>([
      ...ids.map((id) => ({
        sql: INSERT_LEDGER,
        params: [id, s.index, "batch", null, null, 1, note(s)],
      })),
      {
        sql: "SELECT count(*) AS n FROM ledger WHERE id BETWEEN ? AND ?",
        params: [ids[0], ids[k - 1]],
      },
    ]);
    if (
      results.length !== k + 1 || results.slice(0, k).some((r) => r.changes !== 1) ||
      results[k].rows[0]?.n !== k
    ) {
      throw new InvariantError(`batch of ${k} inserts returned ${JSON.stringify(results)}`);
    }
    s.acked.push(...ids);
  }

  /**
   * A read-modify-write transfer: read both balances, write back computed
   * values and a ledger row. `rollback` throws at the end; `savepoint` also
   * runs a nested transaction that fails on a duplicate id.
   */
  async #transfer(s: Slot, mode: "commit" | "rollback" | "savepoint"): Promise<void> {
    const [src, dst] = this.#twoAccounts(s);
    const id = this.#nextId(s);
    const want = 1 + Math.floor(s.rnd() * 100);
    try {
      await s.client.transaction(async (tx) => {
        const rows = await tx.values<[number, number]>(
          "SELECT id, balance FROM accounts WHERE id IN (?, ?)",
          [src, dst],
        );
        const a = rows.find((r) => r[0] === src)?.[1];
        const b = rows.find((r) => r[0] === dst)?.[1];
        if (a === undefined || b === undefined) {
          throw new InvariantError(`transfer read ${JSON.stringify(rows)}`);
        }
        const amount = Math.min(a, want);
        const results = await Promise.all([
          tx.run("UPDATE accounts SET balance = ? WHERE id = ?", [a - amount, src]),
          tx.run("UPDATE accounts SET balance = ? WHERE id = ?", [b + amount, dst]),
          tx.run(INSERT_LEDGER, [id, s.index, "transfer", src, dst, amount, note(s)]),
        ]);
        if (results.some((r) => r.changes !== 1)) {
          throw new InvariantError(`transfer writes reported ${JSON.stringify(results)}`);
        }
        if (!tx.inTransaction) throw new InvariantError("transfer: no transaction open");
        if (mode === "savepoint") {
          await this.#expectError(
            tx.transaction((inner) =>
              inner.run(INSERT_LEDGER, [id, s.index, "transfer", src, dst, 0, "dup"])
            ),
            "SQLITE_CONSTRAINT_PRIMARYKEY",
          );
          if (!tx.inTransaction) throw new InvariantError("savepoint error ended the transaction");
        }
        if (mode === "rollback") throw new DeliberateRollback();
      }, { behavior: "immediate" });
    } catch (err) {
      if (!(err instanceof DeliberateRollback)) throw err;
      s.absent.add(id);
      this.#report.rolledBackTransactions++;
      return;
    }
    if (mode === "rollback") throw new InvariantError("transaction() swallowed a rollback");
    s.acked.push(id);
    this.#report.transfersCommitted++;
  }

  // ---- deliberate errors ---------------------------------------------------

  async #duplicateInsert(s: Slot): Promise<void> {
    if (s.acked.length === 0) await this.#insert(s);
    const id = s.acked[Math.floor(s.rnd() * s.acked.length)];
    await this.#expectError(
      s.client.run(INSERT_LEDGER, [id, s.index, "insert", null, null, 1, "dup"]),
      "SQLITE_CONSTRAINT_PRIMARYKEY",
    );
  }

  async #failedBatch(s: Slot): Promise<void> {
    const a = this.#nextId(s), b = this.#nextId(s);
    const row = (id: number) => ({
      sql: INSERT_LEDGER,
      params: [id, s.index, "batch", null, null, 1, note(s)],
    });
    const err = await this.#expectError(
      s.client.batch([row(a), row(b), row(a)]),
      "SQLITE_CONSTRAINT_PRIMARYKEY",
    );
    if (!/Batch statement 3 of 3/.test(err.message)) {
      throw new InvariantError(`failed batch message does not name statement 3: ${err.message}`);
    }
    s.absent.add(a);
    s.absent.add(b);
  }

  async #notNullInsert(s: Slot): Promise<void> {
    const id = this.#nextId(s);
    await this.#expectError(
      s.client.run(INSERT_LEDGER, [id, s.index, "insert", null, null, null, note(s)]),
      "SQLITE_CONSTRAINT_NOTNULL",
    );
    s.absent.add(id);
  }

  /** Awaits `p`, which must reject with a `SqliteError` of `code`. */
  async #expectError(
    p: Promise<unknown>,
    code: string,
  ): Promise<SqliteError | ConnectionError> {
    let err: unknown;
    try {
      await p;
    } catch (e) {
      err = e;
    }
    if (err === undefined) throw new InvariantError(`expected ${code}, but the call succeeded`);
    if (!(err instanceof SqliteError || err instanceof ConnectionError) || err.code !== code) {
      throw err;
    }
    this.#report.deliberateErrors[code] = (this.#report.deliberateErrors[code] ?? 0) + 1;
    return err;
  }

  // ---- deliberate disconnects ----------------------------------------------

  async #disconnect(s: Slot): Promise<void> {
    await s.client.close();
    s.client = await connect({ ...this.#config.connect, max: 1 });
    this.#report.disconnects++;
    const row = await s.client.get<{ one: number }>("SELECT 1 AS one");
    if (row?.one !== 1) throw new InvariantError(`new connection answered ${JSON.stringify(row)}`);
  }

  /** Writes inside a transaction, then closes the connection without committing. */
  async #abandonTransaction(s: Slot): Promise<void> {
    const [src, dst] = this.#twoAccounts(s);
    const id = this.#nextId(s);
    const c = s.client;
    s.absent.add(id);
    await c.exec("BEGIN IMMEDIATE");
    try {
      await c.run(INSERT_LEDGER, [id, s.index, "transfer", src, dst, 1000, "abandoned"]);
      await c.run("UPDATE accounts SET balance = balance + 1000 WHERE id = ?", [dst]);
      if (!c.inTransaction) throw new InvariantError("abandoned transaction is not open");
    } finally {
      await c.close();
      s.client = await connect({ ...this.#config.connect, max: 1 });
    }
    this.#report.abandonedTransactions++;
  }

  /**
   * This slot holds the writer in a transaction while a second client with a
   * short `requestTimeout` writes: its write must fail with `REQUEST_TIMEOUT`
   * (the server cannot run it inside another's transaction), and its next
   * call must reconnect and be served.
   */
  async #requestTimeoutReconnect(s: Slot): Promise<void> {
    // Connecting, too, must answer within the 40 ms timeout, which a loaded
    // machine may miss (with node:sqlite another client's statement holds
    // the server meanwhile): retry for up to 5 s, as for the read below.
    const connectBy = performance.now() + 5000;
    let r: Awaited<ReturnType<typeof connect>>;
    for (;;) {
      try {
        r = await connect({ ...this.#config.connect, requestTimeout: RECONNECT_REQUEST_TIMEOUT });
        break;
      } catch (err) {
        const timedOut = err instanceof ConnectionError && err.code === ErrorCode.RequestTimeout;
        if (!timedOut || performance.now() > connectBy) throw err;
      }
    }
    try {
      const id = this.#nextId(s);
      const lateId = this.#nextId(s);
      await s.client.transaction(async (tx) => {
        await tx.run(INSERT_LEDGER, [id, s.index, "insert", null, null, 1, "held"]);
        const late = r.run(INSERT_LEDGER, [lateId, s.index, "insert", null, null, 1, "late"]);
        await this.#expectError(late, ErrorCode.RequestTimeout);
      }, { behavior: "immediate" });
      s.acked.push(id);
      // The write was sent: it may yet run after the commit, or be dropped.
      this.#report.unknownOutcome.push(lateId);
      // The next call reconnects. Its own 40 ms timeout may be missed on a
      // loaded machine (the whole suite shares two cores); each retry
      // reconnects again, for up to 5 s.
      const giveUpAt = performance.now() + 5000;
      for (;;) {
        try {
          const row = await r.get<{ n: number }>("SELECT count(*) AS n FROM accounts");
          if (row?.n !== this.#config.accounts) {
            throw new InvariantError(`reconnected client read ${JSON.stringify(row)}`);
          }
          break;
        } catch (err) {
          const timedOut = err instanceof ConnectionError && err.code === ErrorCode.RequestTimeout;
          if (!timedOut || performance.now() > giveUpAt) throw err;
        }
      }
      this.#report.reconnects++;
    } finally {
      await r.close();
    }
  }

  // ---- bookkeeping ---------------------------------------------------------

  async #failed(s: Slot, op: string, err: unknown): Promise<void> {
    if (err instanceof SqliteError && err.code === ErrorCode.BusyTimeout) {
      this.#report.busyTimeouts++;
      this.#report.busyTimeoutsByOp[op] = (this.#report.busyTimeoutsByOp[op] ?? 0) + 1;
      return;
    }
    this.#unexpected(s.index, op, err);
    if (err instanceof ConnectionError) {
      // Start afresh: the client may be waiting for a ROLLBACK of a lost transaction.
      await s.client.close();
      try {
        s.client = await connect({ ...this.#config.connect, max: 1 });
      } catch (e) {
        this.#unexpected(s.index, "reconnect", e);
      }
    }
  }

  #unexpected(slot: number, op: string, err: unknown): void {
    const r = this.#report;
    r.unexpectedCount++;
    if (r.unexpected.length < MAX_SAMPLES) {
      const e = err as { name?: string; code?: string; message?: string };
      r.unexpected.push({
        worker: this.#config.worker,
        slot,
        op,
        name: String(e?.name ?? typeof err),
        code: String(e?.code ?? ""),
        message: String(e?.message ?? err),
      });
    }
  }

  #count(op: string, ms: number): void {
    const r = this.#report;
    r.ops[op] = (r.ops[op] ?? 0) + 1;
    const l = r.latency[op] ??= { count: 0, totalMs: 0, maxMs: 0 };
    l.count++;
    l.totalMs += ms;
    if (ms > l.maxMs) l.maxMs = ms;
  }

  #nextId(s: Slot): number {
    return (s.index + 1) * ID_SPACE + ++s.seq;
  }

  #account(s: Slot): number {
    return 1 + Math.floor(s.rnd() * this.#config.accounts);
  }

  #twoAccounts(s: Slot): [number, number] {
    const a = this.#account(s);
    let b = this.#account(s);
    if (b === a) b = a % this.#config.accounts + 1;
    return [a, b];
  }
}

function pick(x: number): string {
  let at = x * WEIGHT_SUM;
  for (const [op, w] of WEIGHTS) {
    if (at < w) return op;
    at -= w;
  }
  return WEIGHTS[0][0];
}

function note(s: Slot): string {
  return "n".repeat(8 + Math.floor(s.rnd() * 120));
}

function toRanges(ids: number[]): [number, number][] {
  const out: [number, number][] = [];
  for (const id of ids) {
    const last = out[out.length - 1];
    if (last !== undefined && last[1] + 1 === id) last[1] = id;
    else out.push([id, id]);
  }
  return out;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Reads stdin until a line `go`; false when stdin ends first. */
async function waitForGo(): Promise<boolean> {
  const reader = Deno.stdin.readable.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  try {
    while (!text.split("\n").some((l) => l.trim() === "go")) {
      const { value, done } = await reader.read();
      if (done) return false;
      text += value;
    }
    return true;
  } finally {
    reader.releaseLock();
  }
}

async function main(): Promise<number> {
  const config = JSON.parse(Deno.args[0] ?? "null") as WorkerConfig | null;
  if (config === null) {
    console.error("usage: soak_worker.ts '<WorkerConfig JSON>' (started by tests/soak/soak.ts)");
    return 2;
  }
  const worker = new Worker(config);
  await worker.open();
  console.log(JSON.stringify({ type: "ready", worker: config.worker }));
  if (!(await waitForGo())) return 3;
  const finished = await worker.run();
  if (!finished) {
    console.log(JSON.stringify(worker.report));
    return 1;
  }
  console.log(JSON.stringify(await worker.close()));
  return 0;
}

if (import.meta.main) Deno.exit(await main());
