/**
 * Starting a server on demand: when nothing answers at a client's Unix
 * socket, start `server.ts` of this module as a detached process serving the
 * database there, and retry until it answers. When many clients do this at
 * once each may start a server, but only one can take the database's lock
 * (`server/lock.ts`); the others exit, and every client ends up connected to
 * the one that won.
 *
 * @module
 */

import { ConnectionError } from "../protocol/errors.ts";
import { type Address, formatAddress } from "../transport/address.ts";
import { isNotRunning } from "../transport/connect.ts";

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
  /** How long to wait for the started server to answer, in ms. @default {15000} */
  timeout?: number;
  /** More `server.ts` flags, e.g. `["--busy-timeout", "1000"]`. @default {[]} */
  args?: string[];
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

/**
 * Runs `attempt`; when it fails because no server listens at `addr`, starts
 * one and retries `attempt` until it succeeds or `options.timeout` passes.
 *
 * @param attempt One connection attempt, with its handshake.
 * @param addr The Unix socket the server should listen on.
 * @param options Database and timeout.
 * @param token Token the server should require (passed in its environment,
 *   not on its command line), or `null`.
 * @returns what `attempt` returned.
 * @throws {TypeError} when `addr` is not a Unix socket or `database` is missing.
 * @throws {ConnectionError} when no server answered in time.
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
  const env: Record<string, string> = token === null ? {} : { NETSQLITE_TOKEN: token };
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...SERVER_FLAGS,
      SERVER_MODULE,
      "--db",
      database,
      "--socket",
      addr.path,
      ...(options.args ?? []),
    ],
    env,
    stdin: "null",
    stdout: "null",
    stderr: "null",
    detached: true,
  }).spawn();
  let exitCode: number | null = null;
  child.status.then((s) => exitCode = s.code, () => {});
  child.unref();
  const deadline = performance.now() + timeout;
  let pause = 20;
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, pause));
    pause = Math.min(pause * 1.5, 200);
    try {
      return await attempt();
    } catch (err) {
      if (!isNotRunning(err)) throw err;
      if (performance.now() > deadline) {
        throw new ConnectionError(
          `Cannot autostart a server for "${database}" on ${formatAddress(addr)}: ` +
            `none answered within ${timeout} ms` +
            (exitCode === null ? "" : ` (the server started exited with code ${exitCode})`) +
            "; start it by hand to see why: deno task serve",
          { cause: err },
        );
      }
    }
  }
}
