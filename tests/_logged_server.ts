/**
 * A server as a child process whose log (stderr) the test reads, for the
 * tests of files changed under a running server (`database_file_test.ts`,
 * `wal_files_test.ts`).
 */

import { fileURLToPath } from "node:url";
import { type Client, connect, SqliteError } from "../mod.ts";
import { delay } from "./_helpers.ts";

const SERVER_TS = fileURLToPath(new URL("../server.ts", import.meta.url));

/** The engine the tests run on (`NETSQLITE_ENGINE=node`, else ffi). */
export const ENGINE: "ffi" | "node" = Deno.env.get("NETSQLITE_ENGINE") === "node" ? "node" : "ffi";

/** A server child process, and its log so far. */
export interface LoggedServer {
  child: Deno.ChildProcess;
  log(): string;
  done: Promise<void>;
}

/** Starts `server.ts` on `db` and `sock` (after `wrap`, e.g. setpriv), collecting its stderr. */
export function spawnServer(
  db: string,
  sock: string,
  extra: string[] = [],
  wrap: string[] = [],
): LoggedServer {
  const args = ["run", "-A", SERVER_TS, "--db", db, "--socket", sock, "--engine", ENGINE, ...extra];
  const [cmd, ...pre] = wrap.length > 0 ? [...wrap, Deno.execPath()] : [Deno.execPath()];
  const child = new Deno.Command(cmd, {
    args: [...pre, ...args],
    stdout: "null",
    stderr: "piped",
    stdin: "null",
    env: { HOME: "/tmp" },
  }).spawn();
  let text = "";
  const done = (async () => {
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) text += chunk;
  })();
  return { child, log: () => text, done };
}

/** Connects once the server listens (or fails when it exited). */
export async function connectWhenUp(
  sock: string,
  child: Deno.ChildProcess,
  max = 1,
): Promise<Client> {
  let exited = false;
  child.status.then(() => exited = true);
  for (let i = 0; i < 300 && !exited; i++) {
    try {
      const c = await connect({ path: sock, max });
      await c.get("SELECT 1");
      return c;
    } catch {
      await delay(50);
    }
  }
  throw new Error("the server did not start");
}

/** Ends the server with `signal` and returns its exit code. */
export async function stop(s: LoggedServer, signal: Deno.Signal = "SIGTERM"): Promise<number> {
  s.child.kill(signal);
  const { code } = await s.child.status;
  await s.done;
  return code;
}

/** The `SqliteError` `p` rejects with (anything else fails the test). */
export async function rejects(p: Promise<unknown>): Promise<SqliteError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof SqliteError) return err;
    throw err;
  }
  throw new Error("expected the call to fail");
}

/** Waits until `cond` holds (checked every 20 ms, at most `ms`); false if it never did. */
export async function until(cond: () => boolean, ms = 20_000): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; await delay(20)) {
    if (cond()) return true;
  }
  return cond();
}
