/**
 * Whether the per-user socket directory ({@link defaultSocketDir}) can be
 * trusted. It lives in a shared place (`/tmp` when `XDG_RUNTIME_DIR` is
 * unset), so another user could create it first, writable by them, then
 * swap the server's socket for their own and read the hello (the token) of
 * every client that follows. Server and client both refuse a directory that
 * is not a real directory owned by the user and closed to others' writes, as
 * ssh-agent and tmux do.
 *
 * @module
 */

import { lstat } from "node:fs/promises";
import { basename, dirname } from "node:path";
import { tmpdir } from "node:os";
import { defaultSocketDir } from "./address.ts";
import { IS_WINDOWS, userId } from "./_runtime.ts";

/**
 * Why the directory of socket `path` must not be used, or `null` when it is
 * fine, absent, not the per-user directory (a path the user chose is theirs
 * to judge), or cannot be examined (no permission: nothing to judge by).
 */
export async function unsafeSocketDir(path: string): Promise<string | null> {
  const dir = dirname(path);
  if (IS_WINDOWS || !isDefaultSocketDir(dir)) return null;
  let info: { isDirectory(): boolean; isSymbolicLink(): boolean; uid: number; mode: number };
  try {
    info = await lstat(dir);
  } catch {
    return null;
  }
  let uid: number | null = null;
  try {
    uid = userId();
  } catch {
    // No --allow-sys=uid: the owner cannot be compared; the mode still can.
  }
  const fix = "another user may have made it to intercept connections: remove it, set " +
    "XDG_RUNTIME_DIR, or give the socket path explicitly";
  if (info.isSymbolicLink() || !info.isDirectory()) {
    return `the socket directory ${dir} is not a directory but a link or a file; ${fix}`;
  }
  if (uid !== null && info.uid !== uid) {
    return `the socket directory ${dir} belongs to uid ${info.uid}, not to this user (uid ${uid}); ${fix}`;
  }
  if ((info.mode & 0o022) !== 0) {
    const mode = (info.mode & 0o777).toString(8).padStart(4, "0");
    return `the socket directory ${dir} is writable by other users (mode ${mode}); ${fix}`;
  }
  return null;
}

/**
 * True when `dir` is the per-user socket directory; without the uid (no
 * `--allow-sys=uid`) any `<tmpdir>/netsqlite-<uid>` counts, and without
 * access to the environment (no `--allow-env`: the temp directory is not
 * known) any `netsqlite-<uid>`, so that it is still judged (by its mode)
 * and a client given its socket path needs no more permissions than that.
 */
function isDefaultSocketDir(dir: string): boolean {
  try {
    return dir === defaultSocketDir();
  } catch {
    // No uid or no environment: judged by its name below.
  }
  if (!/^netsqlite-\d+$/.test(basename(dir))) return false;
  try {
    return dirname(dir) === tmpdir();
  } catch {
    return true;
  }
}
