/**
 * Leaving the working directory of the process that started the server. A
 * server started by `connect({ autostart })` outlives its starter, like any
 * daemon: kept as its working directory, the starter's directory (a project
 * checkout, a temporary directory, a removable disk) could not be unmounted,
 * on Windows not even deleted, and if deleted, would go on as a nameless one.
 *
 * Every path the server was given relative to that directory must keep its
 * meaning: those it opens only while starting (the database, `--sqlite-lib`,
 * `--tls-cert`, `--tls-key`, `--token-file`) are read before it moves; those
 * it uses for as long as it runs (its socket file, checked every second and
 * removed at exit; `--backup-dir`, resolved at each backup) are made
 * absolute before it starts.
 *
 * @module
 */

import { dirname, parse, resolve } from "node:path";
import type { ServeOptions } from "./options.ts";

/**
 * `options` with the relative paths the server uses after its start made
 * absolute against the current working directory: its Unix socket (under
 * the permissions autostart gives the server, `--allow-write` rather than
 * `-A`, Deno binds a relative one by its absolute path anyway, so no socket
 * that worked before gets too long here), `backupDir`, and a `sqliteLib`
 * given as a path.
 *
 * @param options The options, as parsed from the command line.
 */
export function absolutePaths(options: ServeOptions): ServeOptions {
  const out: ServeOptions = { ...options };
  if (typeof out.path === "string" && out.path !== "") out.path = resolve(out.path);
  if (typeof out.backupDir === "string" && out.backupDir !== "") {
    out.backupDir = resolve(out.backupDir);
  }
  // A bare name (`libsqlite3.so.0`) is looked up by the system's loader, not in this directory.
  if (typeof out.sqliteLib === "string" && /[/\\]/.test(out.sqliteLib)) {
    out.sqliteLib = resolve(out.sqliteLib);
  }
  return out;
}

/**
 * The directory a started server moves to: its database's (which it holds
 * files in already, so it pins no other; a relative name in an `ATTACH` or
 * `VACUUM INTO` lands beside the database, the same for every client), or,
 * for `:memory:`, the root.
 *
 * @param database The database, an absolute path (`ServeConfig.database`) or `:memory:`.
 */
export function serverDirectory(database: string): string {
  return database === ":memory:" ? parse(resolve(".")).root : dirname(database);
}

/**
 * Changes the working directory to `dir`.
 *
 * @returns whether it did (it may have been removed meanwhile, or be unreadable).
 */
export function leaveStarterDirectory(dir: string): boolean {
  try {
    Deno.chdir(dir);
    return true;
  } catch {
    return false; // it stays where it was: no worse than before
  }
}
