/**
 * Starting a server on demand: when nothing answers at a client's Unix
 * socket, start `server.ts` of this module as a detached process serving the
 * database there, and retry until it answers. When many clients do this at
 * once each may start a server, but only one can take the database's lock
 * (`server/lock.ts`); the others exit, and every client ends up connected to
 * the one that won. A started server that exits because the lock is still
 * held (by a server shutting down, or one that is starting) is started again
 * after a pause; one that exits for another reason fails the connect at once
 * with the reason it printed.
 *
 * @module
 */

import { ConnectionError } from "../protocol/errors.ts";
import { type Address, formatAddress } from "../transport/address.ts";
import { isNotRunning } from "../transport/connect.ts";
import { IS_DENO } from "../transport/_runtime.ts";
import { resolve } from "node:path";

/**
 * Options of `connect({ autostart })`: start a server for `database` when
 * none answers at the Unix socket (Deno only; needs `--allow-run`).
 *
 * @example
 * ```ts ignore
 * import { connect } from "@netsqlite/netsqlite";
 * // The first process to connect starts the server; the others find it running.
 * await using db = await connect({ path: "/tmp/app.sock", autostart: { database: "app.db" } });
 * ```
 */
export interface AutostartOptions {
  /** Database the started server serves (created if absent). */
  database: string;
  /**
   * How long to wait for a server to answer, in ms, over all the servers
   * started (a server that exits because another still holds the database's
   * lock is started again, up to 6 times). A server that exits for another
   * reason fails the connect at once, with what it printed.
   * @default {15000}
   */
  timeout?: number;
  /** More `server.ts` flags, e.g. `["--busy-timeout", "1000"]`. @default {[]} */
  args?: string[];
}

/**
 * The real path of `path` (symbolic links resolved), as a server reports its
 * database in its hello; the absolute path when it does not exist (or may not
 * be read).
 */
export async function realOrResolved(path: string): Promise<string> {
  try {
    if (IS_DENO) return await Deno.realPath(path);
    const { realpath } = await import("node:fs/promises");
    return await realpath(path);
  } catch {
    return resolve(path);
  }
}

/** Deno permissions the started server runs with (those of `deno task serve`). */
const SERVER_FLAGS = [
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-net",
  "--allow-sys=uid",
  "--allow-ffi",
  "--v8-flags=--expose-gc",
  "--no-prompt",
];

const SERVER_MODULE = new URL("../server.ts", import.meta.url).href;

/** Most servers one autostart starts (each after the one before exited on the lock). */
const MAX_STARTS = 6;
/** Pause before starting again after a server exited on the lock, in ms; doubles each time. */
const FIRST_RESTART_PAUSE = 250;
/** Longest pause before starting again, in ms. */
const MAX_RESTART_PAUSE = 2000;
/** Bytes of a started server's stderr kept from its start, and as many from its end. */
const STDERR_KEEP = 2048;
/**
 * What the server prints when another server holds the database's lock
 * (`DatabaseLockedError` of `server/lock.ts`): starting again can help.
 */
const LOCKED_TEXT = "another server owns ";

/**
 * Runs `attempt`; when it fails because no server listens at `addr`, starts
 * one and retries `attempt` until it succeeds or `options.timeout` passes. A
 * started server that exits on the database's lock is started again after a
 * pause (at most `MAX_STARTS` in all); one that exits for another reason
 * ends the wait at once.
 *
 * @param attempt One connection attempt, with its handshake.
 * @param addr The Unix socket the server should listen on.
 * @param options Database and timeout.
 * @param token Token the server should require (passed in its environment,
 *   not on its command line), or `null`.
 * @returns what `attempt` returned.
 * @throws {TypeError} when `addr` is not a Unix socket or `database` is missing.
 * @throws {ConnectionError} when a started server exited for another reason
 *   than the lock (with the last lines it printed), or none answered in time.
 */
export async function connectOrStart<T>(
  attempt: () => Promise<T>,
  addr: Address,
  options: AutostartOptions,
  token: string | null,
): Promise<T> {
  if (addr.transport !== "unix") {
    throw new TypeError('Invalid option "autostart": it needs a Unix socket (path or channel)');
  }
  const { database } = options;
  if (typeof database !== "string" || database === "") {
    throw new TypeError('Invalid option "autostart": expected { database: "<file>" }');
  }
  const timeout = options.timeout ?? 15000;
  try {
    return await attempt();
  } catch (err) {
    if (!isNotRunning(err)) throw err;
  }
  if (typeof Deno === "undefined") {
    throw new TypeError(
      'Invalid option "autostart": starting a server needs Deno; start it yourself',
    );
  }
  const args = [
    "run",
    ...SERVER_FLAGS,
    SERVER_MODULE,
    "--db",
    database,
    "--socket",
    addr.path,
    ...(options.args ?? []),
  ];
  const env: Record<string, string> = token === null ? {} : { NETSQLITE_TOKEN: token };
  const fail = (detail: string, cause: unknown): ConnectionError =>
    new ConnectionError(
      `Cannot autostart a server for "${database}" on ${formatAddress(addr)}: ${detail}`,
      { cause },
    );
  const deadline = performance.now() + timeout;
  let child = new StartedServer(args, env);
  let starts = 1;
  let restartAt = Infinity;
  let restartPause = FIRST_RESTART_PAUSE;
  let pause = 20;
  try {
    for (;;) {
      await new Promise((resolve) => setTimeout(resolve, pause));
      pause = Math.min(pause * 1.5, 200);
      let notRunning: unknown;
      try {
        return await attempt();
      } catch (err) {
        if (!isNotRunning(err)) throw err;
        notRunning = err;
      }
      const now = performance.now();
      if (child.exitCode !== null && restartAt === Infinity) {
        const reason = await child.reason();
        if (!reason.includes(LOCKED_TEXT)) {
          // Starting again would fail the same way; a racing client's server
          // may answer by now, else the reason is the answer.
          try {
            return await attempt();
          } catch (err) {
            if (!isNotRunning(err)) throw err;
          }
          throw fail(
            `the server started exited with code ${child.exitCode}` +
              (reason === "" ? " and printed nothing" : `: ${quoteReason(reason)}`),
            notRunning,
          );
        }
        // The lock's owner is starting (it will answer) or shutting down (it
        // will be gone): start again later if nothing answers by then.
        if (starts < MAX_STARTS) {
          restartAt = now + restartPause;
          restartPause = Math.min(restartPause * 2, MAX_RESTART_PAUSE);
        }
      }
      if (now > deadline) {
        const exited = child.exitCode === null
          ? ""
          : ` (the last of ${starts} servers started exited with code ${child.exitCode}` +
            `: ${quoteReason(await child.reason())})`;
        throw fail(
          `none answered within ${timeout} ms${exited}; start it by hand to see why: ` +
            "deno task serve",
          notRunning,
        );
      }
      if (now >= restartAt) {
        await child.detach();
        child = new StartedServer(args, env);
        starts++;
        restartAt = Infinity;
        pause = 20;
      }
    }
  } finally {
    await child.detach();
  }
}

/**
 * A server process started by autostart: detached (its own session, not
 * waited for), stdout discarded, stderr read into a bounded buffer until it
 * exits or the client stops listening (`detach()`); a server that keeps
 * running then writes to a closed pipe, which Deno ignores.
 */
class StartedServer {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  readonly #drained: Promise<void>;
  #exitCode: number | null = null;
  #head: Uint8Array = new Uint8Array(0);
  #tail: Uint8Array = new Uint8Array(0);
  #dropped = false;

  constructor(args: string[], env: Record<string, string>) {
    const child = new Deno.Command(Deno.execPath(), {
      args,
      env,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
      detached: true,
    }).spawn();
    child.status.then((s) => this.#exitCode = s.code, () => {});
    child.unref();
    this.#reader = child.stderr.getReader();
    this.#drained = this.#drain();
  }

  /** The exit code, or `null` while running (or not yet known). */
  get exitCode(): number | null {
    return this.#exitCode;
  }

  /** What the process printed on stderr (start and end, bounded), once it has all been read. */
  async reason(): Promise<string> {
    await this.#drained;
    return pickReason(
      new TextDecoder().decode(this.#head) + (this.#dropped ? "\n" : "") +
        new TextDecoder().decode(this.#tail),
    );
  }

  /** Stops reading stderr (closing the client's end of the pipe). Idempotent. */
  async detach(): Promise<void> {
    await this.#reader.cancel().catch(() => {});
    await this.#drained;
  }

  async #drain(): Promise<void> {
    try {
      for (;;) {
        const { done, value } = await this.#reader.read();
        if (done) return;
        this.#keep(value);
      }
    } catch {
      // Cancelled, or the pipe broke: what was read is all there is.
    }
  }

  #keep(chunk: Uint8Array): void {
    const room = STDERR_KEEP - this.#head.length;
    if (room > 0) {
      this.#head = concat(this.#head, chunk.subarray(0, room));
      chunk = chunk.subarray(room);
    }
    if (chunk.length === 0) return;
    const tail = concat(this.#tail, chunk);
    if (tail.length > STDERR_KEEP) this.#dropped = true;
    this.#tail = tail.slice(Math.max(0, tail.length - STDERR_KEEP));
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/**
 * The lines of a server's stderr that say why it stopped: its own
 * `netsqlite: ...` lines and Deno's `error: ...` lines (the last 3), else the
 * last 3 lines; without the help text that follows a bad flag.
 */
function pickReason(text: string): string {
  const lines = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== "");
  const own = lines.filter((l) => /^(netsqlite|error):/i.test(l));
  return (own.length > 0 ? own : lines).slice(-3).join(" / ");
}

/** `reason` quoted for an error message, at most 1000 characters. */
function quoteReason(reason: string): string {
  if (reason === "") return "nothing on stderr";
  const cut = reason.length > 1000 ? `${reason.slice(0, 1000)}...` : reason;
  return JSON.stringify(cut);
}
