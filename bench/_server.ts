/**
 * Benchmark helpers: run the netsqlite server as a separate `deno run`
 * process on a fresh temp database, build the shared fixture table, and run
 * the raw echo server used as the transport floor.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { DatabaseSync } from "node:sqlite";
import type { ConnectOptions } from "../client.ts";

/** Rows in the fixture table. */
export const FIXTURE_ROWS = 10_000;

/** Schema of the fixture table, shared by every benchmark. */
export const SCHEMA =
  "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, value REAL NOT NULL, n INTEGER NOT NULL)";

/** SQL of the benchmarked statements, identical for netsqlite and in-process runs. */
export const SQL = {
  pointRead: "SELECT id, name, value, n FROM items WHERE id = ?",
  range100: "SELECT id, name, value, n FROM items WHERE id >= ? ORDER BY id LIMIT 100",
  insert: "INSERT INTO items (name, value, n) VALUES (?, ?, ?)",
} as const;

/** A deterministic ~20-character name for row `i`. */
export function rowName(i: number): string {
  return `item-${i.toString(36).padStart(6, "0")}-abcdefgh`;
}

/** Parameters of the `i`-th inserted row. */
export function rowParams(i: number): [string, number, number] {
  return [rowName(i), i * 1.25, i % 1000];
}

/** A random id of a fixture row (1..FIXTURE_ROWS). */
export function randomId(): number {
  return 1 + Math.floor(Math.random() * FIXTURE_ROWS);
}

/** A random first id of a 100-row range that lies inside the fixture. */
export function randomRangeStart(): number {
  return 1 + Math.floor(Math.random() * (FIXTURE_ROWS - 100));
}

/**
 * Creates the fixture in `path` with node:sqlite (WAL mode): table `items`
 * with `rows` rows. Call it before the server opens the file.
 */
export function buildFixture(
  path: string,
  options: { rows?: number; synchronous?: "full" | "normal" } = {},
): DatabaseSync {
  const rows = options.rows ?? FIXTURE_ROWS;
  const db = new DatabaseSync(path);
  db.exec("PRAGMA journal_mode = WAL");
  db.exec(`PRAGMA synchronous = ${(options.synchronous ?? "full").toUpperCase()}`);
  db.exec(SCHEMA);
  const insert = db.prepare("INSERT INTO items (id, name, value, n) VALUES (?, ?, ?, ?)");
  db.exec("BEGIN");
  for (let i = 1; i <= rows; i++) insert.run(i, ...rowParams(i));
  db.exec("COMMIT");
  return db;
}

/** Creates the fixture in `path` and closes the connection. */
export function writeFixture(path: string, rows = FIXTURE_ROWS): void {
  buildFixture(path, { rows }).close();
}

/** A netsqlite server running as a separate process. */
export interface BenchServer extends AsyncDisposable {
  /** Options that reach the server with `connect()`. */
  connectOptions: ConnectOptions;
  /** Transport the server listens on. */
  transport: "unix" | "tcp";
  /** `--synchronous` mode of the server. */
  synchronous: "full" | "normal";
  /** Temp directory holding the database (and the socket). */
  dir: string;
  /** Database file. */
  database: string;
  /** The banner line the server printed. */
  banner: string;
  /** Process id of the server. */
  pid: number;
  /**
   * Stops the server: SIGTERM (graceful; lets `--cpu-prof` write its
   * profile), SIGKILL after `graceMs`, then waits for the process and
   * removes the temp directory. Idempotent.
   */
  stop(graceMs?: number): Promise<void>;
  /** Sends SIGKILL without waiting (for synchronous `unload` handlers). */
  killSync(): void;
}

/** Options of {@link startServer}. */
export interface StartServerOptions {
  /** `unix` (socket in the temp dir) or `tcp` (127.0.0.1:0). @default {"unix"} */
  transport?: "unix" | "tcp";
  /** Server `--synchronous` mode. @default {"full"} */
  synchronous?: "full" | "normal";
  /** Fixture rows to create before the server starts (0: none). @default {FIXTURE_ROWS} */
  fixtureRows?: number;
  /** Extra `deno` flags placed before the script, e.g. `--cpu-prof`. */
  denoFlags?: string[];
  /** Extra server arguments. */
  serverArgs?: string[];
  /** The server module to run (another checkout's, to compare). @default {this checkout's server.ts} */
  serverTs?: string;
}

const SERVER_TS = fileURLToPath(new URL("../server.ts", import.meta.url));
const ECHO_TS = fileURLToPath(new URL("./_echo_server.ts", import.meta.url));

/**
 * Starts `deno run -A server.ts` on a fresh temp database holding the
 * fixture, and waits for its banner.
 */
export async function startServer(options: StartServerOptions = {}): Promise<BenchServer> {
  const transport = options.transport ?? "unix";
  const synchronous = options.synchronous ?? "full";
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-bench-" });
  const database = `${dir}/bench.db`;
  const rows = options.fixtureRows ?? FIXTURE_ROWS;
  if (rows > 0) writeFixture(database, rows);
  const where = transport === "tcp" ? ["--tcp", "127.0.0.1:0"] : ["--socket", `${dir}/bench.sock`];
  const args = [
    "run",
    ...(options.denoFlags ?? []),
    "-A",
    options.serverTs ?? SERVER_TS,
    "--db",
    database,
    ...where,
    "--synchronous",
    synchronous,
    ...(options.serverArgs ?? []),
  ];
  const proc = await spawnWithBanner(args, /on (unix:(\S+)|tcp:(\S+):(\d+))/);
  const m = proc.match;
  const connectOptions: ConnectOptions = m[2] !== undefined
    ? { path: m[2] }
    : { hostname: m[3], port: Number(m[4]) };
  const stop = async (graceMs = 5000) => {
    await proc.stop(graceMs);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  return {
    connectOptions,
    transport,
    synchronous,
    dir,
    database,
    banner: proc.banner,
    pid: proc.child.pid,
    stop,
    killSync: () => killSyncAndRemove(proc, dir),
    [Symbol.asyncDispose]: () => stop(),
  };
}

/** The raw echo server (see `_echo_server.ts`) running as a separate process. */
export interface EchoServer extends AsyncDisposable {
  /** Unix socket path it listens on. */
  path: string;
  /** TCP port it listens on (127.0.0.1). */
  port: number;
  /** Process id. */
  pid: number;
  /** Kills it, waits, removes its temp dir. Idempotent. */
  stop(): Promise<void>;
  /** Sends SIGKILL without waiting. */
  killSync(): void;
}

/** Starts the echo server on a Unix socket in a fresh temp dir. */
export async function startEchoServer(): Promise<EchoServer> {
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-echo-" });
  const path = `${dir}/echo.sock`;
  const proc = await spawnWithBanner(
    ["run", "-A", ECHO_TS, path],
    /echo listening on (\S+) tcp:127\.0\.0\.1:(\d+)/,
  );
  const stop = async () => {
    await proc.stop(2000);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  return {
    path,
    port: Number(proc.match[2]),
    pid: proc.child.pid,
    stop,
    killSync: () => killSyncAndRemove(proc, dir),
    [Symbol.asyncDispose]: stop,
  };
}

interface Spawned {
  child: Deno.ChildProcess;
  banner: string;
  match: RegExpExecArray;
  stop(graceMs: number): Promise<void>;
  killSync(): void;
}

/** Spawns `deno ...args`, waits for a stdout line matching `pattern`, keeps draining stdout. */
async function spawnWithBanner(args: string[], pattern: RegExp): Promise<Spawned> {
  const child = new Deno.Command(Deno.execPath(), {
    args,
    stdout: "piped",
    stderr: "inherit",
    // The echo server exits when its stdin closes, i.e. when we die.
    stdin: "piped",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let banner = "";
  while (!banner.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    banner += value;
  }
  const drained = (async () => {
    try {
      while (!(await reader.read()).done) { /* discard */ }
    } catch { /* stream closed */ }
  })();
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  const stdin = child.stdin.getWriter();
  let stopping: Promise<void> | null = null;
  const stop = (graceMs: number): Promise<void> => {
    stopping ??= (async () => {
      if (!exited) {
        try {
          child.kill("SIGTERM");
        } catch { /* already gone */ }
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          status,
          new Promise<void>((resolve) => timer = setTimeout(resolve, graceMs)),
        ]);
        clearTimeout(timer);
        if (!exited) {
          try {
            child.kill("SIGKILL");
          } catch { /* already gone */ }
        }
      }
      await status;
      await stdin.close().catch(() => {});
      await drained;
    })();
    return stopping;
  };
  const m = pattern.exec(banner);
  if (m === null) {
    await stop(0);
    throw new Error(`Process did not start (deno ${args.join(" ")}): ${JSON.stringify(banner)}`);
  }
  return {
    child,
    banner: banner.trim(),
    match: m,
    stop,
    killSync: () => {
      if (exited) return;
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
    },
  };
}

/** SIGKILLs a spawned process and removes its temp directory, synchronously. */
function killSyncAndRemove(proc: { killSync(): void }, dir: string): void {
  proc.killSync();
  try {
    Deno.removeSync(dir, { recursive: true });
  } catch { /* already gone */ }
}
