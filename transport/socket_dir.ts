/**
 * Whether the per-user socket directory (`defaultSocketDir()`) can be
 * trusted. It lives in a shared place (`/tmp` when `XDG_RUNTIME_DIR` is
 * unset), so another user could create it first, writable by them, then
 * swap the server's socket for their own and read the hello (the token) of
 * every client that follows. Server and client both refuse a directory that
 * is not a real directory owned by the user and closed to others' writes, as
 * ssh-agent and tmux do.
 *
 * Nothing here asks for a permission: a client needs only read and write
 * access to its socket (and `--allow-net`), and on a terminal Deno would
 * stop at a prompt for anything more. What may not be looked at without
 * asking is not looked at.
 *
 * @module
 */

import { lstat } from "node:fs/promises";
import { basename, dirname } from "node:path";
import { defaultSocketDirUnprompted, tempDirUnprompted } from "./address.ts";
import { granted, IS_WINDOWS, userId } from "./_runtime.ts";

/**
 * Why the directory of socket `path` must not be used, or `null` when it is
 * fine, absent, or not the per-user directory (a path the user chose is
 * theirs to judge). Each check is made where it needs no permission that is
 * not granted, and skipped otherwise (never decided another way), so that
 * the verdict depends on what was granted only by what could be looked at:
 * the directory (with read access to it) must be a real directory, the
 * user's (with `--allow-sys=uid`), closed to others' writes; the socket
 * (with read access to it, which connecting needs anyway, and the uid) must
 * be the user's or root's: another user's socket in this user's directory
 * is refused, as that user's directory would be. Root's is no intruder: in
 * a directory closed to others only root or the user can make one (a
 * server run with sudo, say), and root can do anything anyway.
 */
export async function unsafeSocketDir(path: string): Promise<string | null> {
  const dir = dirname(path);
  if (IS_WINDOWS || !isDefaultSocketDir(dir)) return null;
  const uid = granted({ name: "sys", kind: "uid" }) ? userIdOrNull() : null;
  // A path given explicitly is in this directory too: the way out is a socket elsewhere.
  const fix = (which: string): string =>
    "another user may have made it to intercept connections: remove it, or use a socket " +
    `outside ${which} (give another path explicitly, or set XDG_RUNTIME_DIR to move the default)`;
  if (granted({ name: "read", path: dir })) {
    const unsafe = await unsafeDir(dir, uid, fix("that directory"));
    if (unsafe !== null) return unsafe;
  }
  if (uid === null || !granted({ name: "read", path })) return null;
  const owner = await lstat(path).then((info) => info.uid, () => null);
  if (owner === null || owner === uid || owner === 0) return null;
  return `the socket ${path} belongs to uid ${owner}, not to this user (uid ${uid}); ` +
    fix("its directory");
}

/** Why socket directory `dir` must not be used, or `null`; `uid` is the user's, if known. */
async function unsafeDir(dir: string, uid: number | null, fix: string): Promise<string | null> {
  let info: { isDirectory(): boolean; isSymbolicLink(): boolean; uid: number; mode: number };
  try {
    info = await lstat(dir);
  } catch {
    return null;
  }
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
 * True when `dir` is the per-user socket directory. Where that cannot be
 * worked out without asking for a permission, any `<tmpdir>/netsqlite-<uid>`
 * counts (without the uid, any `netsqlite-<number>`; without the temp
 * directory, one anywhere), so that it is still judged and a client given
 * its socket path needs no more permissions than that: judging a directory
 * that is not the user's own default refuses only what is unsafe anyway.
 */
function isDefaultSocketDir(dir: string): boolean {
  const known = defaultSocketDirUnprompted();
  if (known !== null) return dir === known;
  const uid = granted({ name: "sys", kind: "uid" }) ? userIdOrNull() : null;
  const name = basename(dir);
  if (uid !== null ? name !== `netsqlite-${uid}` : !/^netsqlite-\d+$/.test(name)) return false;
  const tmp = tempDirUnprompted();
  return tmp === null || dirname(dir) === tmp;
}

/** The user id, `null` where there is none or it may not be read. */
function userIdOrNull(): number | null {
  try {
    return userId();
  } catch {
    return null;
  }
}
