/**
 * Starting a server on demand: when nothing answers at a client's Unix
 * socket, start `server.ts` of this module as a detached process serving the
 * database there, and retry until it answers. When many clients do this at
 * once each may start a server, but only one can take the database's lock
 * (`server/lock.ts`); the others exit, and every client ends up connected to
 * the one that won. A started server that exits because the lock is still
 * held (by a server shutting down, or one that is starting) is started again
 * after a pause; one that exits for another reason fails the connect at once
 * with the reason it printed. A server listens before it opens the database:
 * one that closes the client's connection unanswered (it could not open the
 * database) is waited for and its reason reported the same way; one still
 * opening it when `autostart.timeout` runs out is stopped, not left behind,
 * but never one that has begun serving (others may use it): the stop is a
 * signal that only a server not yet serving dies of (`STOP_SIGNAL`).
 *
 * @module
 */

import { ConnectionError, ErrorCode } from "../protocol/errors.ts";
import type { HelloReply } from "../protocol/messages.ts";
import type { Link } from "./link.ts";
import { openLink } from "./connection.ts";
import type { ConnectConfig } from "./options.ts";
import { type Address, formatAddress } from "../transport/address.ts";
import { isNotRunning } from "../transport/connect.ts";
import { databaseIdentity, openOwner, ownerAddress, unlessOtherDatabase } from "./_lock_owner.ts";

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

/** True when server flags `args` give a token (`--token`, `--token-file`, `--no-token`). */
function givesToken(args: readonly string[]): boolean {
  return args.some((a) => /^--(no-)?token(-file)?(=|$)/.test(a));
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

/**
 * The `server.ts` of this module, as autostart runs it; computed when a
 * server is started, not at load: a CommonJS bundle of the npm build has no
 * `import.meta.url`, and `new URL()` of a relative path throws without one.
 *
 * @throws {TypeError} where the module has no `server.ts` beside it (the npm
 *   build ships the client only) or its own URL is unknown (a CommonJS bundle).
 */
async function serverModule(): Promise<string> {
  const base: unknown = import.meta.url;
  const url = typeof base === "string" && base !== "" ? new URL("../server.ts", base) : null;
  if (url !== null && url.protocol !== "file:") return url.href; // JSR, or served over http(s)
  // Only a missing file is refused here: `deno run` reports any other problem itself.
  const missing = url === null ||
    await Deno.stat(url).then(() => false, (err) => err instanceof Deno.errors.NotFound);
  if (!missing) return url.href;
  throw new TypeError(
    'Invalid option "autostart": this copy of the client has no server to start' +
      (url === null
        ? ""
        : ` (no "${decodeURIComponent(url.pathname)}": the npm build ships the client only)`) +
      "; start the server yourself (deno run -A server.ts in a checkout, or netsqlite serve), " +
      "or import the client from JSR or a checkout, which have server.ts",
  );
}

/**
 * Refuses to start a server from a program built with `deno compile`: there
 * `Deno.execPath()` is that program, not `deno`, so the server's command line
 * (`run ... server.ts --db ...`) would start the program again instead.
 *
 * @param standalone `Deno.build.standalone`: the program was built with `deno compile`.
 * @throws {TypeError} when `standalone`, saying to start the server another way.
 */
export function refuseCompiled(standalone: boolean): void {
  if (!standalone) return;
  throw new TypeError(
    'Invalid option "autostart": this program was built with deno compile, where ' +
      "Deno.execPath() is the program itself, not deno, so it cannot start a server; start " +
      "the server yourself before the program connects (netsqlite serve, or deno task serve " +
      "in a checkout), or run the program with deno run",
  );
}

/** Most servers one autostart starts (each after the one before exited on the lock). */
const MAX_STARTS = 6;
/** Pause before starting again after a server exited on the lock, in ms; doubles each time. */
const FIRST_RESTART_PAUSE = 250;
/** Longest pause before starting again, in ms. */
const MAX_RESTART_PAUSE = 2000;
/** Longest wait for a started server to exit after it closed a connection unanswered, in ms. */
const EXIT_WAIT = 1000;
/**
 * The signal that stops a started server still opening its database: its
 * default action ends the process at once, and `server.ts` ignores it from
 * the moment it serves (before it can answer any hello), so a server that may
 * have answered another client is never stopped by it. The kernel decides
 * when it delivers the signal: no window between a check and the stop.
 */
const STOP_SIGNAL: Deno.Signal = "SIGUSR2";
/** Longest wait for a started server to exit after `STOP_SIGNAL`, in ms. */
const STOP_WAIT = 500;
/** Longest last try to connect to a started server that ignored `STOP_SIGNAL` (it serves), in ms. */
const LAST_TRY = 1000;
/** Bytes of a started server's stderr kept from its start, and as many from its end. */
const STDERR_KEEP = 2048;
/**
 * What the server prints when another server holds the database's lock
 * (`DatabaseLockedError` of `server/lock.ts`): starting again can help.
 */
const LOCKED_TEXT = "another server owns ";

/**
 * Opens the client's first connection; when no server listens at
 * `config.addr`, starts one and retries until it answers or
 * `autostart.timeout` passes (each try bounded by `connectTimeout` and by the
 * time left). A started server that exits on the database's lock is started
 * again after a pause (at most `MAX_STARTS` in all), unless the lock's owner
 * listens at another address: then a client on the database's default
 * socket connects to the owner's Unix socket (and sets `config.addr` to it,
 * for the pool's later connections), and one given a path or channel (or
 * meeting an owner on TCP) fails, naming the owner's address. A started
 * server that exits for another reason ends the wait at once, with what it
 * printed. When the server listens but closes the connection unanswered (it
 * failed to open the database), the client waits for its exit to say why. A
 * started server that still opens its database when the client gives up is
 * stopped; one that has begun serving by then is tried once more (up to
 * `LAST_TRY`) and left running either way. A server that answers but serves
 * another database than `autostart.database` (its real path) is refused.
 *
 * @param config The client's options, with `autostart`; its `addr` is
 *   replaced by the lock owner's socket when the client connected there.
 * @returns the connection and the server's hello reply.
 * @throws {TypeError} when the address is not a Unix socket or `database` is missing.
 * @throws {ConnectionError} when a started server exited for another reason
 *   than the lock (with the last lines it printed), none answered in time, or
 *   the server serves another database.
 */
export async function connectOrStart(config: ConnectConfig): Promise<[Link, HelloReply]> {
  const addr = config.addr;
  const options = config.autostart;
  if (addr.transport !== "unix") {
    throw new TypeError('Invalid option "autostart": it needs a Unix socket (path or channel)');
  }
  const database = options?.database;
  if (typeof database !== "string" || database === "") {
    throw new TypeError('Invalid option "autostart": expected { database: "<file>" }');
  }
  const timeout = options!.timeout ?? 15000;
  const deadline = performance.now() + timeout;
  /** One connection attempt to `at`, bounded by `connectTimeout` and the time left. */
  const attempt = (at: Address = addr): Promise<[Link, HelloReply]> => {
    const left = Math.max(1, Math.ceil(deadline - performance.now()));
    const ms = config.connectTimeout === 0 ? left : Math.min(config.connectTimeout, left);
    return openLink({ ...config, addr: at, connectTimeout: ms });
  };
  /**
   * The connection, unless its server serves another database than ours (a
   * server found running: another app's on the same channel or path).
   */
  const checked = async (
    opened: [Link, HelloReply],
    at: Address = addr,
  ): Promise<[Link, HelloReply]> => {
    const ours = await databaseIdentity(database);
    return await unlessOtherDatabase(
      opened,
      ours,
      (theirs) =>
        `Cannot autostart a server for "${database}" on ${formatAddress(at)}: the server there ` +
        `serves "${theirs}", not "${ours}": give this database its own path or channel`,
    );
  };
  const first = await attempt().then((ok) => ({ ok }), (err: unknown) => ({ err }));
  if ("ok" in first) return await checked(first.ok);
  if (!isNotRunning(first.err)) throw first.err;
  if (typeof Deno === "undefined") {
    throw new TypeError(
      'Invalid option "autostart": starting a server needs Deno; start it yourself',
    );
  }
  refuseCompiled(Deno.build.standalone);
  const args = [
    "run",
    ...SERVER_FLAGS,
    await serverModule(),
    "--db",
    database,
    "--socket",
    addr.path,
    // A client without a token starts a server without one, whatever
    // NETSQLITE_TOKEN this process's environment (which the server inherits)
    // holds, unless its own flags give the server one.
    ...(config.token === null && !givesToken(options!.args ?? []) ? ["--no-token"] : []),
    ...(options!.args ?? []),
  ];
  // NETSQLITE_AUTOSTARTED: the server closes the files it inherited from this
  // process beyond stdin, stdout and stderr (it outlives this process).
  const env: Record<string, string> = config.token === null
    ? { NETSQLITE_AUTOSTARTED: "1" }
    : { NETSQLITE_AUTOSTARTED: "1", NETSQLITE_TOKEN: config.token };
  const fail = (detail: string, cause: unknown): ConnectionError =>
    new ConnectionError(
      `Cannot autostart a server for "${database}" on ${formatAddress(addr)}: ${detail}`,
      { cause },
    );
  let child = new StartedServer(args, env);
  let starts = 1;
  let restartAt = Infinity;
  let restartPause = FIRST_RESTART_PAUSE;
  let pause = 20;
  try {
    for (;;) {
      await new Promise((resolve) => setTimeout(resolve, pause));
      pause = Math.min(pause * 1.5, 200);
      const tried = await attempt().then((ok) => ({ ok }), (err: unknown) => ({ err }));
      if ("ok" in tried) return await checked(tried.ok);
      const failure = tried.err;
      if (!isNotRunning(failure)) {
        // A server listens: one that answered (AUTH, PROTOCOL_VERSION, ...) decides.
        if (!unanswered(failure)) throw failure;
        // It closed the connection, or did not answer in time: a server still
        // opening its database (ours, or a racing client's) or one that failed
        // to. Ours says why when it exits.
        await child.exited(Math.min(EXIT_WAIT, deadline - performance.now()));
        if (child.exitCode === null && performance.now() < deadline) continue;
      }
      const now = performance.now();
      if (child.exitCode !== null && restartAt === Infinity) {
        const reason = await child.reason();
        if (!reason.includes(LOCKED_TEXT)) {
          // Starting again would fail the same way; a racing client's server
          // may answer by now, else the reason is the answer.
          const again = await attempt().then((ok) => ({ ok }), (err: unknown) => ({ err }));
          if ("ok" in again) return await checked(again.ok);
          if (!isNotRunning(again.err) && !unanswered(again.err)) throw again.err;
          throw fail(
            `the server started exited with code ${child.exitCode}` +
              (reason === "" ? " and printed nothing" : `: ${quoteReason(reason)}`),
            failure,
          );
        }
        const owner = lockOwner(reason);
        // A live server of this database (of its real file: the lock is that file's) may listen
        // elsewhere, so starting again cannot help. A client on the default socket wants the
        // database's server wherever it listens (one started with --socket, or by an earlier
        // release on the default socket of another name of the file): it connects there, and
        // so do the pool's later connections. An explicit path or channel stays the client's
        // address: it is told where the server is.
        const found = owner === null ? null : ownerAddress(owner.socket, addr.path, database);
        if (found !== null && "elsewhere" in found) {
          throw fail(
            `the server started exited with code ${child.exitCode}: ${quoteReason(reason)}; ` +
              found.elsewhere,
            failure,
          );
        }
        if (found !== null) {
          const opened = await openOwner(config, found.there, attempt, checked);
          if ("ok" in opened) return opened.ok;
          if (!isNotRunning(opened.err) && !unanswered(opened.err)) throw opened.err;
          // It does not answer yet (starting) or any more (shutting down): as below.
        }
        // The lock's owner is starting (it will answer) or shutting down (it
        // will be gone): start again later if nothing answers by then.
        if (starts < MAX_STARTS) {
          restartAt = now + restartPause;
          restartPause = Math.min(restartPause * 2, MAX_RESTART_PAUSE);
        }
      }
      if (now > deadline) {
        const which = starts === 1 ? "the server started" : `the last of ${starts} servers started`;
        if (child.exitCode === null && !await child.stopUnlessServing()) {
          // It ignored the stop: it serves by now, and other clients may use
          // it (as the wait ended, the database opened). Leave it running;
          // a last try may reach it.
          const late = await openLink({ ...config, connectTimeout: LAST_TRY })
            .then((ok) => ({ ok }), (err: unknown) => ({ err }));
          if ("ok" in late) return await checked(late.ok);
          if (child.exitCode === null) {
            throw fail(
              `none answered within ${timeout} ms (${which} began serving as the wait ended, ` +
                `and is left running for the clients it may serve; it did not answer a last try ` +
                `within ${LAST_TRY} ms)`,
              late.err,
            );
          }
        }
        let last: string;
        if (child.stopped) {
          // It died of the stop: it was still opening its database, and a
          // server answers no one before that.
          const printed = await child.reason(STOP_WAIT);
          last = ` (${which} ` +
            (unanswered(failure)
              ? "listened but did not answer, and was stopped: is the database locked by " +
                "another process? The server waits for it up to --busy-timeout"
              : "was not listening yet, and was stopped") +
            (printed === "" ? "" : `; it printed ${quoteReason(printed)}`) + ")";
        } else {
          last = ` (${which} exited with code ${child.exitCode}: ` +
            `${quoteReason(await child.reason())})`;
        }
        throw fail(
          `none answered within ${timeout} ms${last}; start it by hand to see why: ` +
            "deno task serve",
          failure,
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
    // A server started here that still runs is either the one this client
    // connected to (it serves, and ignores the signal) or one not needed: one
    // racing clients' servers beat to the lock, or started again while another
    // was starting, that may still be starting (its modules load slowly on a
    // busy machine) when the clients connect to the winner. Left running, it
    // would meet the lock free once the winner stopped, and serve on, unasked.
    child.stopIfStarting();
    await child.detach();
  }
}

/**
 * The pid and address of the server that owns the database's lock, from a
 * started server's `another server owns <db> (pid N, socket S)` (perhaps followed by `; its
 * socket file is not there ...`), or `null`
 * when the reason does not name them.
 */
function lockOwner(reason: string): { pid: number; socket: string } | null {
  const line = reason.split(" / ").find((l) => l.includes(LOCKED_TEXT)) ?? "";
  const m = /\bpid (\d+), socket ((?:unix|tcp):.+?)\)(?:; its socket file is not there.*)?$/
    .exec(line);
  return m === null ? null : { pid: Number(m[1]), socket: m[2] };
}

/**
 * True when `err` says a server listens but closed the connection before
 * its handshake reply, or gave none within the connect timeout.
 */
function unanswered(err: unknown): boolean {
  return err instanceof ConnectionError && !isNotRunning(err) &&
    (err.code === ErrorCode.ConnectionClosed || err.code === ErrorCode.RequestTimeout);
}

/**
 * Starts `deno` with `args`, detached. Without `--allow-run` for it, Deno's
 * `NotCapable` is raised again saying what autostart needs: the flag names
 * the resolved path Deno checks, which a symbolic link (npm's `/usr/bin/deno`)
 * is not.
 */
function spawnServer(args: string[], env: Record<string, string>): Deno.ChildProcess {
  const deno = Deno.execPath();
  try {
    return new Deno.Command(deno, {
      args,
      env,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
      detached: true,
    }).spawn();
  } catch (err) {
    if (!(err instanceof Deno.errors.NotCapable)) throw err;
    throw new Deno.errors.NotCapable(
      `Cannot autostart a server: running "${deno}" needs --allow-run (plain, or ` +
        `--allow-run=${deno}, the real path Deno checks; --allow-run=deno fails where deno is ` +
        `a symbolic link): ${err.message}`,
      { cause: err },
    );
  }
}

/**
 * A server process started by autostart: detached (its own session, not
 * waited for), stdout discarded, stderr read into a bounded buffer until it
 * exits or the client stops listening (`detach()`); a server that keeps
 * running then writes to a closed pipe, which Deno ignores.
 */
class StartedServer {
  readonly #child: Deno.ChildProcess;
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  readonly #drained: Promise<void>;
  #exitCode: number | null = null;
  #stopped = false;
  #head: Uint8Array = new Uint8Array(0);
  #tail: Uint8Array = new Uint8Array(0);
  #dropped = false;

  constructor(args: string[], env: Record<string, string>) {
    const child = spawnServer(args, env);
    child.status.then((s) => {
      this.#stopped = s.signal === STOP_SIGNAL;
      this.#exitCode = s.code;
    }, () => {});
    child.unref();
    this.#child = child;
    this.#reader = child.stderr.getReader();
    this.#drained = this.#drain();
  }

  /** The exit code, or `null` while running (or not yet known). */
  get exitCode(): number | null {
    return this.#exitCode;
  }

  /** True when the process ended on `STOP_SIGNAL` (see `stopUnlessServing()`). */
  get stopped(): boolean {
    return this.#stopped;
  }

  /** Waits until the process has exited, at most `ms`. */
  async exited(ms: number): Promise<void> {
    if (this.#exitCode !== null || ms <= 0) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.#child.status.catch(() => {}),
      new Promise((resolve) => timer = setTimeout(resolve, ms)),
    ]);
    clearTimeout(timer);
    // The exit code is set by a handler of the same promise: let it run.
    await Promise.resolve();
  }

  /**
   * Sends `STOP_SIGNAL`: a server still opening its database ends at once, one
   * that serves ignores it. Returns whether the process has exited (within
   * `STOP_WAIT`); `false` also where the signal cannot be sent (Windows).
   */
  async stopUnlessServing(): Promise<boolean> {
    try {
      this.#child.kill(STOP_SIGNAL);
    } catch {
      // Exited meanwhile, or no such signal here: it is left running.
    }
    await this.exited(STOP_WAIT);
    return this.#exitCode !== null;
  }

  /**
   * Sends `STOP_SIGNAL` to a process still running, without waiting: when the
   * client is done with it (connected elsewhere, or gave up), a server still
   * starting ends, one that serves ignores it.
   */
  stopIfStarting(): void {
    if (this.#exitCode !== null) return;
    try {
      this.#child.kill(STOP_SIGNAL);
    } catch {
      // Exited meanwhile, or no such signal here: it is left running.
    }
  }

  /**
   * What the process printed on stderr (start and end, bounded), once it has
   * all been read, or what was read after `ms` (a process that still runs).
   */
  async reason(ms = Infinity): Promise<string> {
    if (ms === Infinity) {
      await this.#drained;
    } else {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([this.#drained, new Promise((r) => timer = setTimeout(r, ms))]);
      clearTimeout(timer);
    }
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
