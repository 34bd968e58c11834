/**
 * The real path of a database file, shared by the server's lock
 * (`server/lock.ts`, through `realDatabasePath` of `engine/database_file.ts`)
 * and the default socket (`address.ts`), so that every name of one file (a
 * symbolic link to it, or to a directory above it) leads to one lock and one
 * socket. Runs under Deno (its own file system calls, so the server sees
 * Deno's error classes) and under Node.js and Bun (`node:fs`), where the
 * client runs too.
 *
 * @module
 */

import { lstatSync, readlinkSync, realpathSync } from "node:fs";
import { basename, dirname, isAbsolute, join, resolve } from "node:path";
import { IS_DENO } from "./_runtime.ts";

/**
 * Called with a directory that does not exist (made absolute), and the
 * error that said so; returns its real path, or throws.
 */
export type MissingDirectory = (dir: string, cause: unknown) => string;

/** Most symbolic links followed by hand, as the system's limit (ELOOP) is about. */
const MAX_LINKS = 40;

/**
 * The real path of `path`: symbolic links resolved, of the file itself and
 * of every directory above it. A file that exists is resolved by the system
 * (`realpath`); for one not yet created, its directory is resolved and its
 * name joined to it; a symbolic link to a file not yet created is followed
 * by hand (a relative target from the link's real directory, as the system
 * does). `..` in `path` is resolved by name first, as `resolve()` does.
 *
 * @param path The path, relative to the current directory or absolute.
 * @param missing What to do when a directory on the way does not exist;
 *   by default its own real path by these same rules (that of the deepest
 *   directory above it that exists, the rest joined to it), so nothing
 *   need exist.
 * @returns the real path.
 * @throws the system's error when a path may not be examined (no read
 *   permission, Deno's `NotCapable` without `--allow-read`), or a loop of
 *   symbolic links; what `missing` throws.
 * @example
 * ```ts
 * import { realPath } from "./_real_path.ts";
 * const dir = Deno.realPathSync(await Deno.makeTempDir());
 * Deno.symlinkSync(dir, `${dir}/link`);
 * if (realPath(`${dir}/link/new/a.db`) !== `${dir}/new/a.db`) throw new Error("not resolved");
 * ```
 */
export function realPath(path: string, missing?: MissingDirectory): string {
  return resolveReal(resolve(path), missing, 0);
}

/**
 * {@link realPath}, but never asking the user for a permission: under Deno a
 * path it may not already read fails as without `--allow-read` (a client
 * works out its default socket without the database file's permission, and
 * must not stop at a prompt in a terminal for it).
 */
export function realPathUnprompted(path: string): string {
  const previous = unprompted;
  unprompted = true;
  try {
    return resolveReal(resolve(path), undefined, 0);
  } finally {
    unprompted = previous;
  }
}

/** Set while {@link realPathUnprompted} runs. */
let unprompted = false;

/** Throws, under {@link realPathUnprompted}, when reading `path` would need a prompt. */
function mayRead(path: string): void {
  if (!unprompted || !IS_DENO) return;
  if (Deno.permissions.querySync({ name: "read", path }).state !== "granted") {
    throw new Deno.errors.NotCapable(`No read access to "${path}" (not asked for)`);
  }
}

function resolveReal(path: string, missing: MissingDirectory | undefined, depth: number): string {
  const directory = (dir: string): string => {
    try {
      return systemRealPath(dir);
    } catch (err) {
      if (!isNotFound(err)) throw err;
      if (missing !== undefined) return missing(dir, err);
      if (depth >= MAX_LINKS || dirname(dir) === dir) throw err;
      return resolveReal(dir, undefined, depth + 1);
    }
  };
  for (let links = 0; links < MAX_LINKS; links++) {
    let link: boolean;
    try {
      link = isSymlink(path);
    } catch (err) {
      if (!isNotFound(err)) throw err;
      return join(directory(dirname(path)), basename(path));
    }
    if (!link) return systemRealPath(path);
    // A symbolic link, perhaps to a file not yet created: follow it by hand.
    const target = readLink(path);
    path = isAbsolute(target) ? target : resolve(directory(dirname(path)), target);
  }
  return systemRealPath(path); // throws: too many levels of symbolic links
}

function isSymlink(path: string): boolean {
  mayRead(path);
  return IS_DENO ? Deno.lstatSync(path).isSymlink : lstatSync(path).isSymbolicLink();
}

function readLink(path: string): string {
  mayRead(path);
  return IS_DENO ? Deno.readLinkSync(path) : readlinkSync(path);
}

function systemRealPath(path: string): string {
  mayRead(path);
  return IS_DENO ? Deno.realPathSync(path) : realpathSync.native(path);
}

/** True when `err` says a file or directory does not exist. */
function isNotFound(err: unknown): boolean {
  return (IS_DENO && err instanceof Deno.errors.NotFound) ||
    (err as { code?: unknown } | null)?.code === "ENOENT";
}
