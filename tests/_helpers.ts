/**
 * Test helpers: start real servers (in-process or as a separate process) on
 * fresh temp sockets or ports, and clean them up with `await using`.
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { connect, type ConnectOptions, SqliteError } from "../client.ts";
import { serve, type ServeOptions, type Server } from "../server.ts";
import type { ChangeEvent, Client, Subscription } from "../client.ts";
import { openLink } from "../client/connection.ts";
import type { Link } from "../client/link.ts";
import { resolveConnectOptions } from "../client/options.ts";
import { Op, type StatsReport } from "../protocol/messages.ts";
import { libraryCandidates, loadSqlite } from "../engine/binding/load.ts";

/** Resolves after `ms` milliseconds. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Races `promise` against a timer and clears the timer either way, so no timer
 * is left armed when the test ends (the op sanitizer fails a test that leaves
 * one). Resolves with `"timeout"` when the timer wins.
 */
export async function within<T>(promise: Promise<T>, ms: number): Promise<T | "timeout"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<"timeout">((resolve) => timer = setTimeout(resolve, ms, "timeout"));
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/** Asserts that `promise` rejects with `SqliteError` `code` and a message matching `message`. */
export async function refused(
  promise: Promise<unknown>,
  code: string,
  message: RegExp,
): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof SqliteError, String(err));
    assert.equal(err.code, code);
    assert.match(err.message, message);
    return true;
  });
}

/** Runs `fn` and returns its error (which must be a SqliteError) and how long it took, in ms. */
export async function timedFailure(fn: () => Promise<unknown>): Promise<[SqliteError, number]> {
  const started = performance.now();
  try {
    await fn();
  } catch (err) {
    assert.ok(err instanceof SqliteError, String(err));
    return [err, performance.now() - started];
  }
  assert.fail("expected an error");
}

/** The next `n` events of `sub` (fewer when it ends); throws after `ms`. */
export async function takeEvents(
  sub: Subscription,
  n: number,
  ms = 10_000,
): Promise<ChangeEvent[]> {
  const out: ChangeEvent[] = [];
  const reading = (async () => {
    while (out.length < n) {
      const r = await sub.next();
      if (r.done) break;
      out.push(r.value);
    }
  })();
  if (await within(reading, ms) === "timeout") {
    throw new Error(`Timed out with ${out.length} of ${n} events`);
  }
  return out;
}

/** A temp directory removed on dispose. */
export async function tempDir(): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix: "netsqlite-test-" });
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(path, { recursive: true }).catch(() => {});
    },
  };
}

/**
 * The rows of `sql` read from the database file at `path` directly
 * (node:sqlite, read-only), as arrays of values: a copy checked apart from
 * the server that made it.
 */
export function rowsOf(path: string, sql: string): unknown[][] {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    return db.prepare(sql).all().map((r) => Object.values(r as Record<string, unknown>));
  } finally {
    db.close();
  }
}

/**
 * Runs the test script `url` (a file beside the tests) in a child with
 * `--expose-gc` (for checks of what garbage collection frees) and returns its
 * standard output; fails with its standard error when it does not exit 0.
 */
export async function runWithGc(url: URL): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--v8-flags=--expose-gc", fileURLToPath(url)],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout);
}

/** True when `path` names anything (a dangling symbolic link too). */
export function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/** True while process `pid` exists (Linux: its `/proc` entry). */
export function alive(pid: number): boolean {
  try {
    Deno.lstatSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/**
 * Sends SIGTERM to process `pid` and waits until it is gone: at most 10 s,
 * then it throws, or with `kill`, sends SIGKILL. Nothing when it is gone.
 */
export async function stopPid(pid: number, kill = false): Promise<void> {
  try {
    Deno.kill(pid, "SIGTERM");
  } catch {
    return;
  }
  const deadline = performance.now() + 10000;
  while (alive(pid)) {
    if (performance.now() > deadline) {
      if (!kill) throw new Error(`Timed out waiting for process ${pid} to stop`);
      Deno.kill(pid, "SIGKILL");
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Marks the line by which {@link inEnv}'s child hands back its result. */
const IN_ENV_RESULT = "--- inEnv result ---";

/**
 * Calls the function `name` exported by `module` (a URL: mostly the calling
 * test file's `import.meta.url`) with `args`, in a child `deno eval` whose environment is
 * this process's with `env` applied (`undefined` unsets a variable), and
 * resolves with what the function returned (through JSON). Rejects with the
 * child's output when it fails (an assertion inside it, say).
 *
 * Tests use this, never `Deno.env.set()` or `Deno.env.delete()`:
 * `deno test --parallel` runs every test file in this one process, so a
 * variable one test changed would be seen, for as long as it stayed changed,
 * by the tests of the files running beside it (tests/no_env_mutation_test.ts
 * keeps it so). Importing a test file in the child registers no test:
 * `Deno.test` does nothing outside `deno test`; what the file does as it is
 * imported still runs there, with the environment under test.
 */
export async function inEnv<T = unknown>(
  env: Record<string, string | undefined>,
  module: string,
  name: string,
  ...args: unknown[]
): Promise<T> {
  const childEnv = Deno.env.toObject();
  for (const [key, value] of Object.entries(env)) {
    if (value === undefined) delete childEnv[key];
    else childEnv[key] = value;
  }
  const code = `const fn = (await import(${JSON.stringify(module)}))[${JSON.stringify(name)}];
if (typeof fn !== "function") throw new Error(${JSON.stringify(`${module} exports no ${name}()`)});
const result = await fn(...${JSON.stringify(args)});
console.log(${JSON.stringify(IN_ENV_RESULT)});
console.log(JSON.stringify(result ?? null));`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    clearEnv: true,
    env: childEnv,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  const stdout = text.decode(out.stdout);
  const at = stdout.lastIndexOf(`${IN_ENV_RESULT}\n`);
  if (out.code !== 0 || at < 0) {
    throw new Error(
      `${name}() in a child with ${JSON.stringify(env)} failed (exit code ${out.code}):\n` +
        `${text.decode(out.stderr)}${stdout}`,
    );
  }
  return JSON.parse(stdout.slice(at + IN_ENV_RESULT.length + 1)) as T;
}

/** What {@link sqliteFromEnvironment} tells. */
export interface SqliteFromEnvironment {
  /** The engine `loadSqlite()` loaded, or null when it threw. */
  engine: string | null;
  /** `libraryCandidates()`. */
  candidates: string[];
  /** `libraryCandidates("/x/lib.so")`. */
  explicit: string[];
  /** What `loadSqlite()` threw, or null. */
  error: { name: string; code?: string; message: string } | null;
}

/**
 * What `loadSqlite()` and `libraryCandidates()` make of this process's
 * environment, for tests/binding_test.ts to call in a child with the
 * environment under test ({@link inEnv}). It lives here because that file
 * loads SQLite as it is imported, which a bad `NETSQLITE_SQLITE_LIB` stops.
 */
export function sqliteFromEnvironment(): SqliteFromEnvironment {
  const candidates = libraryCandidates();
  const explicit = libraryCandidates("/x/lib.so");
  try {
    return { engine: loadSqlite().engine, candidates, explicit, error: null };
  } catch (err) {
    const { name, code, message } = err as Error & { code?: string };
    return { engine: null, candidates, explicit, error: { name, code, message } };
  }
}

/** An in-process server on a fresh temp database and socket (or TCP port 0). */
export interface TestServer extends AsyncDisposable {
  server: Server;
  dir: string;
  database: string;
  /** Options that reach this server with `connect()`. */
  connectOptions: ConnectOptions;
  /** Opens a new client connection. */
  client(): Promise<Client>;
}

/** Starts an in-process server; `transport: "tcp"` listens on 127.0.0.1:0. */
export async function startServer(
  options: ServeOptions & { transport?: "unix" | "tcp" } = {},
): Promise<TestServer> {
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-test-" });
  const database = options.database ?? `${dir}/test.db`;
  const { transport, ...rest } = options;
  const server = await serve(
    transport === "tcp"
      ? { database, hostname: "127.0.0.1", port: 0, ...rest }
      : { database, path: `${dir}/test.sock`, ...rest },
  );
  const addr = server.addr;
  const connectOptions: ConnectOptions = addr.transport === "unix"
    ? { path: addr.path }
    : { hostname: addr.hostname, port: addr.port };
  return {
    server,
    dir,
    database,
    connectOptions,
    // One connection, as most tests (raw BEGIN/COMMIT) expect; pool tests connect themselves.
    client: () => connect({ ...connectOptions, max: 1 }),
    async [Symbol.asyncDispose]() {
      await server.shutdown();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/** A server running as a separate `deno run server.ts` process. */
export interface ServerProcess extends AsyncDisposable {
  child: Deno.ChildProcess;
  dir: string;
  database: string;
  connectOptions: ConnectOptions;
  /** The line the server printed when it started listening. */
  banner: string;
  /** The line after it, saying how the server gives memory back. */
  memoryLine: string;
  client(): Promise<Client>;
  /** Sends SIGKILL and waits for the process to end. */
  kill(): Promise<void>;
}

const SERVER_TS = fileURLToPath(new URL("../server.ts", import.meta.url));

/**
 * The Deno flags of `deno task serve` (permissions and V8 flags), read from
 * deno.json so tests run the server the way users do.
 */
export const SERVE_TASK_FLAGS: string[] = (() => {
  const config = JSON.parse(
    Deno.readTextFileSync(new URL("../deno.json", import.meta.url)),
  ) as { tasks: { serve: string } };
  const words = config.tasks.serve.split(/\s+/);
  if (words[0] !== "deno" || words[1] !== "run" || words[words.length - 1] !== "server.ts") {
    throw new Error(`Unexpected serve task: ${config.tasks.serve}`);
  }
  return words.slice(2, -1);
})();

/**
 * Runs `deno run -A server.ts` with `args` plus `--db`/`--socket` in a fresh
 * temp dir (unless `dir`/`database` are given), and waits for its banner.
 */
export async function startServerProcess(
  options: {
    args?: string[];
    transport?: "unix" | "tcp";
    dir?: string;
    database?: string;
    /** Flags for `deno run` before server.ts. @default {["-A"]} */
    denoFlags?: string[];
    /** Variables added to the server's environment. */
    env?: Record<string, string>;
  } = {},
): Promise<ServerProcess> {
  const ownDir = options.dir === undefined;
  const dir = options.dir ?? await Deno.makeTempDir({ prefix: "netsqlite-test-" });
  const database = options.database ?? `${dir}/test.db`;
  const where = options.transport === "tcp"
    ? ["--tcp", "127.0.0.1:0"]
    : ["--socket", `${dir}/test.sock`];
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...(options.denoFlags ?? ["-A"]),
      SERVER_TS,
      "--db",
      database,
      ...where,
      ...(options.args ?? []),
    ],
    env: options.env,
    stdout: "piped",
    stderr: "inherit",
    stdin: "null",
  }).spawn();
  const { text, drained } = await readStdoutUntil(child, /\n.*\n/);
  const [banner, memoryLine = ""] = text.split("\n");
  const m = /on (unix:(\S+)|tcp:(\S+):(\d+))/.exec(banner);
  if (!m) {
    child.kill("SIGKILL");
    await child.status;
    await drained;
    throw new Error(`Server process did not start: ${JSON.stringify(text)}`);
  }
  const connectOptions: ConnectOptions = m[2] !== undefined
    ? { path: m[2] }
    : { hostname: m[3], port: Number(m[4]) };
  let ended = false;
  const kill = async () => {
    if (ended) return;
    ended = true;
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
    await child.status;
    await drained;
  };
  return {
    child,
    dir,
    database,
    connectOptions,
    banner: banner.trim(),
    memoryLine: memoryLine.trim(),
    // One connection, as most tests (raw BEGIN/COMMIT) expect; pool tests connect themselves.
    client: () => connect({ ...connectOptions, max: 1 }),
    kill,
    async [Symbol.asyncDispose]() {
      await kill();
      if (ownDir) await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/**
 * Reads a child's stdout until `marker` appears or matches (or the stream ends), then
 * keeps draining it in the background so the child never blocks on a full
 * pipe. Await `drained` after the child has exited.
 */
export async function readStdoutUntil(
  child: Deno.ChildProcess,
  marker: string | RegExp,
): Promise<{ text: string; drained: Promise<void> }> {
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  const found = () => typeof marker === "string" ? text.includes(marker) : marker.test(text);
  while (!found()) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
  }
  const drained = (async () => {
    while (!(await reader.read()).done) { /* discard */ }
  })();
  return { text, drained };
}

/**
 * Another program writing `database` directly (tests/_lock_holder.ts): holds
 * its write lock once this resolves (taken by `sql`, when given); `release()`
 * commits, and waits for the program to exit (a second call does nothing).
 */
export async function holdWriteLock(
  database: string,
  sql?: string,
): Promise<{ release(): Promise<void> }> {
  const holder = fileURLToPath(new URL("./_lock_holder.ts", import.meta.url));
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", holder, database, ...(sql === undefined ? [] : [sql])],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const { drained } = await readStdoutUntil(child, "locked");
  const stdin = child.stdin.getWriter();
  let released = false;
  return {
    async release() {
      if (released) return;
      released = true;
      await stdin.write(new TextEncoder().encode("go\n"));
      await stdin.close();
      const { code } = await child.status;
      await drained;
      if (code !== 0) throw new Error(`the lock holder exited with code ${code}`);
    },
  };
}

/**
 * Another program holding `database`'s EXCLUSIVE lock (in rollback-journal
 * mode, readers are kept out too) with one row inserted into `t`, until
 * `release()` commits it (see {@link holdWriteLock}).
 */
export function holdExclusive(database: string): Promise<{ release(): Promise<void> }> {
  return holdWriteLock(database, "BEGIN EXCLUSIVE; INSERT INTO t VALUES (2)");
}

/**
 * A rollback-journal database with table `t` holding one row, in a fresh
 * directory (removed at disposal).
 */
export async function rollbackJournalDb(): Promise<{ database: string } & AsyncDisposable> {
  const dir = await tempDir();
  const database = `${dir.path}/ro.db`;
  const seed = new DatabaseSync(database);
  seed.exec("PRAGMA journal_mode = DELETE; CREATE TABLE t (a); INSERT INTO t VALUES (1)");
  seed.close();
  return { database, [Symbol.asyncDispose]: () => dir[Symbol.asyncDispose]() };
}

/** The error `p` rejected with (fails when it resolved, or with another error than a SqliteError). */
export async function rejection(p: Promise<unknown>): Promise<SqliteError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof SqliteError, String(err));
    return err;
  }
  assert.fail("expected a rejection");
}

/**
 * Opens a transaction on `db` that SQLite then rolls back
 * (`INSERT OR ROLLBACK`): TX_ABORTED. Needs a table `t (a INTEGER PRIMARY
 * KEY, b UNIQUE)` without rows 100 and 101.
 */
export async function abortTransaction(db: Client): Promise<void> {
  await db.exec("BEGIN");
  await db.run("INSERT INTO t VALUES (100, 'x')");
  const err = await rejection(db.run("INSERT OR ROLLBACK INTO t VALUES (101, 'x')"));
  assert.equal(err.code, "SQLITE_CONSTRAINT_UNIQUE", err.message);
  assert.equal((await rejection(db.run("SELECT 1"))).code, "TX_ABORTED");
}

/**
 * Asserts that of `results` (one per client, from `Promise.allSettled`) only
 * the one at index `bad` was rejected, with error code `code`. Returns how
 * many were fulfilled. `round` names the attempt in messages.
 */
export function onlyOneRejected(
  results: PromiseSettledResult<unknown>[],
  bad: number,
  code: string,
  round: number,
): number {
  let kept = 0;
  for (const [i, r] of results.entries()) {
    const what = `round ${round}, client ${i}: ${JSON.stringify(r).slice(0, 200)}`;
    if (i === bad) {
      assert.equal(r.status, "rejected", what);
      assert.equal((r as PromiseRejectedResult).reason.code, code, what);
    } else {
      assert.equal(r.status, "fulfilled", what);
      kept++;
    }
  }
  return kept;
}

/** The server's `stats` report, read on a connection of its own. */
export async function serverStats(options: ConnectOptions): Promise<StatsReport> {
  const [link] = await openLink(await resolveConnectOptions(options));
  try {
    return await link.request(Op.Stats, []) as StatsReport;
  } finally {
    link.fail(new Error("stats read"));
    await link.ended;
  }
}

/**
 * Asks the server for its `stats` report, on an admin session of its own (a
 * full server still accepts one), every 10 ms until `until(report)` holds,
 * and returns that report: how a test knows that the server has seen
 * something (a request queued for the writer, a connection closed), where a
 * fixed pause guesses and loses on a loaded machine. Throws, naming `what`
 * and the last report's part `until` looked at, after `ms`.
 */
export async function statsUntil(
  options: ConnectOptions,
  until: (report: StatsReport) => boolean,
  what: string,
  ms = 10_000,
): Promise<StatsReport> {
  const [link] = await openLink(await resolveConnectOptions(options), { admin: true });
  try {
    const deadline = performance.now() + ms;
    for (;;) {
      const report = await link.request(Op.Stats, []) as StatsReport;
      if (until(report)) return report;
      if (performance.now() > deadline) {
        const { connections, writer } = report;
        throw new Error(
          `Timed out after ${ms} ms waiting until ${what}: ` +
            JSON.stringify({ connections, writer }),
        );
      }
      await delay(10);
    }
  } finally {
    link.fail(new Error("stats read"));
    await link.ended;
  }
}

/** Reads `it` to its end; returns the rows read and the error that ended it, if any. */
export async function drain<T>(it: AsyncIterable<T>): Promise<{ rows: T[]; error: unknown }> {
  const rows: T[] = [];
  try {
    for await (const row of it) rows.push(row);
  } catch (error) {
    return { rows, error };
  }
  return { rows, error: null };
}

/** Runs a command as user and group `nobody` (65534) with no other groups: util-linux `setpriv`. */
export const asNobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];

/** Whether {@link asNobody} works here: Linux, as root, with `setpriv` installed. */
export const canRunAsNobody = Deno.build.os === "linux" && Deno.uid() === 0 && (() => {
  try {
    return new Deno.Command(asNobody[0], { args: [...asNobody.slice(1), "true"] }).outputSync()
      .success;
  } catch {
    return false;
  }
})();

/** Whether {@link onTerminal} can make a terminal here (Linux, util-linux `script`, bash). */
export const canUseTerminal: boolean = (() => {
  try {
    return Deno.build.os === "linux" && Deno.statSync("/usr/bin/script").isFile &&
      Deno.statSync("/bin/bash").isFile;
  } catch {
    return false;
  }
})();

/** How long a command on a terminal may take before it is killed (a prompt waits forever), in ms. */
export const TERMINAL_LIMIT_MS = 30_000;

/**
 * Runs `command` (a program and its arguments, e.g. `deno run <flags>
 * <script>`) on a terminal made by util-linux `script`, as a user would:
 * Deno's permission prompts allowed (give no `--no-prompt`), standard input
 * open and nothing typed, so a prompt waits until the command is killed
 * after {@link TERMINAL_LIMIT_MS}. Its environment is HOME, PATH and
 * DENO_DIR of this process (those set) and `env`, nothing else (test files
 * running beside the caller set variables such as XDG_RUNTIME_DIR for a
 * while); `script` runs the command with $SHELL, here bash. Returns what the
 * terminal showed (lines end in `\r\n`) and whether it was killed.
 */
export async function onTerminal(
  command: string[],
  env: Record<string, string> = {},
): Promise<{ screen: string; killed: boolean }> {
  const quoted = (text: string): string => `'${text.replaceAll("'", `'\\''`)}'`;
  const passed: Record<string, string> = {};
  for (const key of ["HOME", "PATH", "DENO_DIR"]) {
    const value = Deno.env.get(key);
    if (value !== undefined) passed[key] = value;
  }
  const child = new Deno.Command("script", {
    args: ["-qefc", command.map(quoted).join(" "), "/dev/null"],
    clearEnv: true,
    env: { ...passed, ...env, SHELL: "/bin/bash", TERM: "xterm", NO_COLOR: "1" },
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let killed = false;
  const timer = setTimeout(() => {
    killed = true;
    child.kill("SIGKILL");
  }, TERMINAL_LIMIT_MS);
  // Standard input stays open, and nothing is written to it.
  const out = await child.output().finally(async () => {
    clearTimeout(timer);
    await child.stdin.close().catch(() => {});
  });
  const text = new TextDecoder();
  return { screen: text.decode(out.stdout) + text.decode(out.stderr), killed };
}

/**
 * A protocol connection (hello done) to the server of `options`, for
 * requests the client API does not make; disposing of it fails and ends it.
 */
export async function openTestLink(options: ConnectOptions): Promise<Link & AsyncDisposable> {
  const [l] = await openLink(await resolveConnectOptions(options));
  return Object.assign(l, {
    async [Symbol.asyncDispose]() {
      l.fail(new Error("test done"));
      await l.ended;
    },
  });
}
