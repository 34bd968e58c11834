/**
 * A netsqlite client running as its own `deno run` process
 * (tests/fixtures/client_process.ts), as users run clients, driven from a test:
 * `await using p = await spawnClientProcess(srv.connectOptions)`, then
 * `await p.run(sql, params)` etc. Requests may overlap; each resolves with the
 * child's result or rejects with a {@link RemoteError} carrying the child's
 * error `name`, `code` and `message`.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import type { ConnectOptions, RunResult } from "../client.ts";

const FIXTURE = fileURLToPath(new URL("./fixtures/client_process.ts", import.meta.url));

/** An error raised in the client process, with its `code` (e.g. `TX_TIMEOUT`). */
export class RemoteError extends Error {
  /** The stable error code, when the error had one. */
  readonly code: string | undefined;
  /** The class name of the error in the child (e.g. `SqliteError`). */
  readonly remoteName: string;
  constructor(e: { name: string; code?: string; message: string }) {
    super(e.message);
    this.name = "RemoteError";
    this.code = e.code;
    this.remoteName = e.name;
  }
}

function toJson(_key: string, v: unknown): unknown {
  if (typeof v === "bigint") return { $bigint: v.toString() };
  if (v instanceof Uint8Array) return { $bytes: btoa(String.fromCharCode(...v)) };
  return v;
}

function fromJson(_key: string, v: unknown): unknown {
  if (v !== null && typeof v === "object") {
    const o = v as Record<string, unknown>;
    if (typeof o.$bigint === "string") return BigInt(o.$bigint);
    if (typeof o.$bytes === "string") {
      return Uint8Array.from(atob(o.$bytes), (c) => c.charCodeAt(0));
    }
  }
  return v;
}

type Params = unknown[] | Record<string, unknown>;
type CallOptions = { timeout?: number };

/** A client in another process. */
export interface ClientProcess extends AsyncDisposable {
  readonly pid: number;
  exec(sql: string): Promise<void>;
  run(sql: string, params?: Params, options?: CallOptions): Promise<RunResult>;
  query<T = Record<string, unknown>>(sql: string, params?: Params): Promise<T[]>;
  get<T = Record<string, unknown>>(sql: string, params?: Params): Promise<T | null>;
  values<T extends unknown[] = unknown[]>(sql: string, params?: Params): Promise<T[]>;
  batch(statements: { sql: string; params?: Params }[]): Promise<RunResult[]>;
  inTransaction(): Promise<boolean>;
  /** `times` read-modify-write increments of `c.n`, each in `transaction()`. */
  increment(times: number, behavior?: "deferred" | "immediate" | "exclusive"): Promise<number>;
  /** A deferred transaction: read `c.n`, wait `ms`, write `n + 1`; resolves with it. */
  bumpSlow(ms: number): Promise<number>;
  /** SIGKILLs the process and waits for it. */
  kill(): Promise<Deno.CommandStatus>;
}

/** How long a client process may take to exit once its stdin is closed. */
const EXIT_LIMIT_MS = 5000;

/**
 * Starts a client process connected to `options` and waits until it is connected.
 *
 * @throws {Error} When the process exits or fails before it is ready.
 */
export async function spawnClientProcess(options: ConnectOptions): Promise<ClientProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", FIXTURE, JSON.stringify(options)],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const stdin = child.stdin.getWriter();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const waiting = new Map<number, { resolve(v: unknown): void; reject(e: unknown): void }>();
  let buffered = "";
  let ready!: () => void;
  let failed!: (e: Error) => void;
  const readyP = new Promise<void>((res, rej) => [ready, failed] = [res, rej]);
  const reading = (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += value;
      let nl;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (line === '"ready"') {
          ready();
          continue;
        }
        const msg = JSON.parse(line, fromJson);
        const w = waiting.get(msg.id);
        waiting.delete(msg.id);
        if (msg.ok) w?.resolve(msg.value);
        else w?.reject(new RemoteError(msg.error));
      }
    }
    const gone = new Error(`Client process ${child.pid} ended`);
    failed(gone);
    for (const w of waiting.values()) w.reject(gone);
    waiting.clear();
  })();
  try {
    await readyP;
  } catch (err) {
    await child.status;
    await reading;
    throw err;
  }
  let nextId = 1;
  const call = <T>(op: string, ...args: unknown[]): Promise<T> => {
    const id = nextId++;
    const p = new Promise<T>((resolve, reject) =>
      waiting.set(id, { resolve: resolve as (v: unknown) => void, reject })
    );
    stdin.write(new TextEncoder().encode(JSON.stringify({ id, op, args }, toJson) + "\n"))
      .catch((err) => {
        waiting.get(id)?.reject(err);
        waiting.delete(id);
      });
    return p;
  };
  let status: Promise<Deno.CommandStatus> | null = null;
  const kill = () => {
    if (status === null) {
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
      status = child.status.then(async (s) => {
        await stdin.close().catch(() => {});
        await reading;
        return s;
      });
    }
    return status;
  };
  return {
    pid: child.pid,
    exec: (sql) => call("exec", sql),
    run: (sql, params, options) => call("run", sql, params, options),
    query: (sql, params) => call("query", sql, params),
    get: (sql, params) => call("get", sql, params),
    values: (sql, params) => call("values", sql, params),
    batch: (statements) => call("batch", statements),
    inTransaction: () => call("inTransaction"),
    increment: (times, behavior = "immediate") => call("increment", times, behavior),
    bumpSlow: (ms) => call("bumpSlow", ms),
    kill,
    async [Symbol.asyncDispose]() {
      if (status !== null) {
        await status;
        return;
      }
      // Close stdin: the child finishes what it started, closes its client and exits.
      await stdin.close().catch(() => {});
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<"late">((r) => timer = setTimeout(r, EXIT_LIMIT_MS, "late"));
      const ended = await Promise.race([child.status, late]);
      clearTimeout(timer);
      if (ended === "late") await kill();
      else await reading;
    },
  };
}
