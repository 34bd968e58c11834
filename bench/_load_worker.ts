/**
 * Load worker process for `bench/load.ts`. It is driven over stdin/stdout
 * with one JSON message per line:
 *
 * - `{"type":"run","spec":{...}}`: connect/prepare, then answer `{"type":"ready"}`;
 * - `{"type":"go"}`: run the warm-up and the measured window, answer
 *   `{"type":"result",...}` and close the connections;
 * - `{"type":"exit"}` or end of stdin: exit.
 *
 * Kinds of run: `netsqlite` (the client under test), `inproc` (node:sqlite in
 * this process on its own temp file, a synchronous tight loop) and `echo` (raw
 * socket round trips against `_echo_server.ts`).
 *
 * @module
 */

import type { DatabaseSync, StatementSync } from "node:sqlite";
import { type Client, connect, type ConnectOptions } from "../client.ts";
import { Histogram, type HistogramData } from "./_histogram.ts";
import { buildFixture, randomId, randomRangeStart, rowParams, SQL } from "./_server.ts";
import { connectEcho, type EchoAddress, EchoClient, pipelinedEcho } from "./_echo_client.ts";

/** Workloads of the load generator. */
export type Workload = "point-read" | "point-write" | "range-100" | "mixed";

/** What one worker runs in one scenario. */
export interface RunSpec {
  kind: "netsqlite" | "inproc" | "echo";
  workload: Workload;
  /** netsqlite: where the server is. */
  connect?: ConnectOptions;
  /** echo: where the echo server is. */
  echo?: EchoAddress;
  /** inproc: PRAGMA synchronous of the private database. */
  synchronous?: "full" | "normal";
  /**
   * inproc reads: run the whole loop inside one read transaction, so no
   * statement pays SQLite's per-transaction WAL locking (fcntl/fstat calls).
   */
  readTx?: boolean;
  /** Connections (clients) opened by this worker. */
  connections: number;
  /** Requests kept in flight per connection. */
  inflight: number;
  warmupMs: number;
  durationMs: number;
  /** Seed for the sequence numbers of inserted rows. */
  seq: number;
}

/** What a worker reports after a run. */
export interface RunResult {
  type: "result";
  /** Operations completed inside the measured window. */
  ops: number;
  /** Operations completed in all, warm-up and overrun included. */
  opsTotal: number;
  errors: number;
  firstError?: string;
  /** Measured window, ms. */
  windowMs: number;
  hist: HistogramData;
}

const encoder = new TextEncoder();
function send(msg: unknown): void {
  Deno.stdout.writeSync(encoder.encode(JSON.stringify(msg) + "\n"));
}

async function* lines(): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let pending = "";
  for await (const chunk of Deno.stdin.readable) {
    pending += decoder.decode(chunk, { stream: true });
    let nl;
    while ((nl = pending.indexOf("\n")) !== -1) {
      yield pending.slice(0, nl);
      pending = pending.slice(nl + 1);
    }
  }
}

type Op = (c: Client) => Promise<unknown>;

function netsqliteOp(workload: Workload, seq: { n: number }): Op {
  const read: Op = async (c) => {
    const row = await c.get(SQL.pointRead, [randomId()]);
    if (row === undefined) throw new Error("point read found no row");
  };
  const write: Op = (c) => c.run(SQL.insert, rowParams(seq.n++));
  switch (workload) {
    case "point-read":
      return read;
    case "point-write":
      return write;
    case "range-100":
      return async (c) => {
        const rows = await c.query(SQL.range100, [randomRangeStart()]);
        if (rows.length !== 100) throw new Error(`range read returned ${rows.length} rows`);
      };
    case "mixed":
      return (c) => Math.random() < 0.1 ? write(c) : read(c);
  }
}

function inprocOp(workload: Workload, db: DatabaseSync, seq: { n: number }): () => unknown {
  const get: StatementSync = db.prepare(SQL.pointRead);
  const range: StatementSync = db.prepare(SQL.range100);
  const insert: StatementSync = db.prepare(SQL.insert);
  const read = () => get.get(randomId());
  const write = () => insert.run(...rowParams(seq.n++));
  switch (workload) {
    case "point-read":
      return read;
    case "point-write":
      return write;
    case "range-100":
      return () => range.all(randomRangeStart());
    case "mixed":
      return () => Math.random() < 0.1 ? write() : read();
  }
}

class Recorder {
  readonly hist = new Histogram();
  ops = 0;
  opsTotal = 0;
  errors = 0;
  firstError: string | undefined;
  readonly start: number;
  readonly end: number;

  constructor(spec: RunSpec) {
    this.start = performance.now() + spec.warmupMs;
    this.end = this.start + spec.durationMs;
  }

  /** Records an operation that completed at `now`; false once the window is over. */
  done(latencyMs: number, now: number, error?: unknown): boolean {
    this.opsTotal++;
    if (now >= this.start && now <= this.end) {
      if (error === undefined) {
        this.ops++;
        this.hist.recordMs(latencyMs);
      } else {
        this.errors++;
        this.firstError ??= String((error as Error)?.message ?? error);
      }
    }
    return now < this.end;
  }

  result(spec: RunSpec): RunResult {
    return {
      type: "result",
      ops: this.ops,
      opsTotal: this.opsTotal,
      errors: this.errors,
      firstError: this.firstError,
      windowMs: spec.durationMs,
      hist: this.hist.toJSON(),
    };
  }
}

interface Prepared {
  run(): Promise<RunResult>;
  close(): Promise<void>;
}

async function prepare(spec: RunSpec): Promise<Prepared> {
  const seq = { n: spec.seq };
  if (spec.kind === "netsqlite") {
    const clients: Client[] = [];
    for (let i = 0; i < spec.connections; i++) {
      clients.push(await connect({ ...spec.connect!, max: 1 }));
    }
    const op = netsqliteOp(spec.workload, seq);
    await op(clients[0]); // fail before "ready" if the setup is broken
    return {
      async run() {
        const rec = new Recorder(spec);
        const lane = async (c: Client) => {
          for (let more = true; more;) {
            const t0 = performance.now();
            let error: unknown;
            try {
              await op(c);
            } catch (err) {
              error = err ?? new Error("unknown error");
            }
            const t1 = performance.now();
            more = rec.done(t1 - t0, t1, error);
          }
        };
        const lanes: Promise<void>[] = [];
        for (const c of clients) for (let i = 0; i < spec.inflight; i++) lanes.push(lane(c));
        await Promise.all(lanes);
        return rec.result(spec);
      },
      async close() {
        await Promise.all(clients.map((c) => c.close()));
      },
    };
  }
  if (spec.kind === "echo") {
    const conns: Deno.Conn[] = [];
    for (let i = 0; i < spec.connections; i++) conns.push(await connectEcho(spec.echo!));
    return {
      async run() {
        const rec = new Recorder(spec);
        let stop = false;
        await Promise.all(conns.map(async (conn) => {
          if (spec.inflight === 1) {
            const echo = new EchoClient(conn);
            for (let more = true; more;) {
              const t0 = performance.now();
              await echo.roundTrip();
              const t1 = performance.now();
              more = rec.done(t1 - t0, t1);
            }
          } else {
            await pipelinedEcho(conn, spec.inflight, () => stop, (ms, now) => {
              if (!rec.done(ms, now)) stop = true;
            });
          }
        }));
        return rec.result(spec);
      },
      close() {
        for (const c of conns) {
          try {
            c.close();
          } catch { /* closed */ }
        }
        return Promise.resolve();
      },
    };
  }
  // In-process node:sqlite: one connection, a synchronous tight loop.
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-bench-inproc-" });
  const db = buildFixture(`${dir}/inproc.db`, { synchronous: spec.synchronous });
  const op = inprocOp(spec.workload, db, seq);
  op();
  return {
    run() {
      if (spec.readTx) db.exec("BEGIN");
      const rec = new Recorder(spec);
      for (let more = true; more;) {
        const t0 = performance.now();
        let error: unknown;
        try {
          op();
        } catch (err) {
          error = err ?? new Error("unknown error");
        }
        const t1 = performance.now();
        more = rec.done(t1 - t0, t1, error);
      }
      if (spec.readTx) db.exec("COMMIT");
      return Promise.resolve(rec.result(spec));
    },
    async close() {
      db.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

async function main(): Promise<void> {
  let current: Prepared | null = null;
  for await (const line of lines()) {
    if (line.trim() === "") continue;
    const msg = JSON.parse(line) as { type: string; spec?: RunSpec };
    try {
      if (msg.type === "run") {
        current = await prepare(msg.spec!);
        send({ type: "ready" });
      } else if (msg.type === "go") {
        const result = await current!.run();
        await current!.close();
        current = null;
        send(result);
      } else if (msg.type === "exit") {
        break;
      }
    } catch (err) {
      send({ type: "error", message: String((err as Error)?.stack ?? err) });
      await current?.close().catch(() => {});
      current = null;
    }
  }
  await current?.close().catch(() => {});
}

if (import.meta.main) {
  await main();
  Deno.exit(0);
}
