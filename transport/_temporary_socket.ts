/**
 * The private directories a server listens in before renaming its socket
 * onto the real path, and the removal of those a killed server left behind.
 *
 * The socket is bound inside a directory of its own, `0700`, beside the real
 * path (same file system, so the rename works): `listen` creates the socket
 * file with the permissions the umask leaves, and until its `chmod` another
 * user could connect to it in a directory they may enter (a connection made
 * then survives the `chmod`). In the private directory nobody else reaches it.
 *
 * The directory stays, empty, until the server closes its listener: Deno's
 * `close()` unlinks the name the socket was bound to, and while the
 * directory is there only its owner can put anything at that name. The
 * server keeps it open with a shared `flock` meanwhile.
 *
 * A server killed (SIGKILL, power loss) between making that directory and
 * removing it leaves it behind (with its socket, before the rename; empty,
 * after). Each
 * name carries the pid of the process that made it, so a later server on
 * that directory can tell the leftovers of dead processes from a claim in
 * progress, and removes them while it holds the directory's lock (no
 * netsqlite server is then between its listen and its rename there); one
 * that another process holds locked (a live server this one cannot see, in
 * another pid namespace) is kept.
 * Earlier versions listened on the temporary name itself: a socket file of
 * that name is removed the same way.
 *
 * @module
 */

import { basename, dirname, resolve } from "node:path";
import { userId } from "./_runtime.ts";
import { byteLength, MAX_SOCKET_PATH_BYTES } from "./address.ts";

/**
 * A leftover of a process known to be dead is removed once it is this old
 * (ms): a claim takes milliseconds, and the margin spares a claim in progress
 * by a process this one cannot see (another pid namespace) that went ahead
 * without the directory's lock.
 */
export const DEAD_LEFTOVER_AGE_MS = 10_000;

/**
 * A leftover whose process cannot be checked (no `/proc`: macOS, the BSDs)
 * is removed once it is this old (ms).
 */
export const UNKNOWN_LEFTOVER_AGE_MS = 10 * 60_000;

/** The short name's prefix, for sockets whose own name leaves no room for the long one. */
const SHORT_PREFIX = ".nsq";

/** The socket's name inside its private directory. */
export const TEMPORARY_SOCKET = "s";

/** `<pid>.<8 hex digits>`, the part both forms share. */
const PID_RANDOM = /^([1-9][0-9]{0,9})\.[0-9a-f]{8}$/;

/**
 * A private directory beside `path` to listen in (as
 * `<directory>/`{@link TEMPORARY_SOCKET}) before renaming the socket to
 * `path`: `.<name>.<pid>.<random>.tmp`, or `.nsq<pid>.<random>` when the
 * socket's path in that is too long; `null` when even the short one's would
 * exceed {@link MAX_SOCKET_PATH_BYTES} (a very long directory and a very
 * short socket name).
 */
export function temporaryName(path: string): string | null {
  const dir = dirname(path);
  const random = Array.from(crypto.getRandomValues(new Uint8Array(4)), (b) => b.toString(16))
    .map((h) => h.padStart(2, "0")).join("");
  const tag = `${Deno.pid}.${random}`;
  for (const name of [`.${basename(path)}.${tag}.tmp`, `${SHORT_PREFIX}${tag}`]) {
    const temp = `${dir}/${name}`;
    // Deno binds a relative path as given, or resolved from the working directory (when not
    // run with -A: see resolvedPathTooLong): both must fit.
    const bound = `${temp}/${TEMPORARY_SOCKET}`;
    const fits = (p: string) => byteLength(p) <= MAX_SOCKET_PATH_BYTES;
    if (fits(bound) && fits(resolve(bound))) return temp;
  }
  return null;
}

/**
 * The pid in `name` if it is a temporary name for the socket named `socket`
 * in the same directory (either form), else `null`.
 */
export function temporaryNamePid(name: string, socket: string): number | null {
  let tag: string | null = null;
  const long = `.${socket}.`;
  if (name.startsWith(long) && name.endsWith(".tmp")) {
    tag = name.slice(long.length, -".tmp".length);
  } else if (name.startsWith(SHORT_PREFIX)) {
    tag = name.slice(SHORT_PREFIX.length);
  }
  const match = tag === null ? null : PID_RANDOM.exec(tag);
  return match === null ? null : Number(match[1]);
}

/**
 * Removes the private directories (and temporary sockets, of earlier
 * versions) that killed servers left beside `path`: names of either form
 * ({@link temporaryName}; the long one for this socket's name only), that
 * are directories holding nothing but their socket, or nothing, and not
 * locked by another process, or sockets (neither followed through a
 * symlink), owned by this user, and either of a process
 * known to be dead and at least
 * {@link DEAD_LEFTOVER_AGE_MS} old, or of a process that cannot be checked
 * and at least {@link UNKNOWN_LEFTOVER_AGE_MS} old. A live process's name is
 * kept. Call it only while holding the directory's lock. Never throws.
 *
 * @returns The names removed.
 */
export async function removeLeftoverTemporaries(path: string): Promise<string[]> {
  const dir = dirname(path);
  const socket = basename(path);
  const removed: string[] = [];
  let me: number | null;
  try {
    me = userId();
  } catch {
    return removed; // no --allow-sys=uid: owners cannot be compared
  }
  if (me === null) return removed;
  const procs = new ProcessTable();
  try {
    for await (const entry of Deno.readDir(dir)) {
      const pid = temporaryNamePid(entry.name, socket);
      if (pid === null || pid === Deno.pid) continue;
      const file = `${dir}/${entry.name}`;
      let info: Deno.FileInfo;
      try {
        info = await Deno.lstat(file);
      } catch {
        continue;
      }
      if (!(info.isSocket || info.isDirectory) || info.uid !== me || info.mtime === null) {
        continue;
      }
      const age = Date.now() - info.mtime.getTime();
      const alive = procs.alive(pid);
      const stale = alive === false
        ? age >= DEAD_LEFTOVER_AGE_MS
        : alive === null && age >= UNKNOWN_LEFTOVER_AGE_MS;
      if (!stale) continue;
      try {
        if (info.isDirectory) await removeUnlockedPrivateDir(file);
        else await Deno.remove(file);
        removed.push(entry.name);
      } catch {
        // Gone meanwhile, not ours to remove, a directory holding more, or
        // one a live server holds.
      }
    }
  } catch {
    // The directory cannot be listed: nothing to clean.
  }
  return removed;
}

/**
 * Removes the private directory `dir` as {@link removePrivateDir} does,
 * unless another process holds a lock on it (a live server's).
 *
 * @throws when it is locked or cannot be removed.
 */
async function removeUnlockedPrivateDir(dir: string): Promise<void> {
  const handle = await Deno.open(dir, { read: true });
  try {
    let locked: boolean;
    try {
      locked = await handle.tryLock(true);
    } catch {
      locked = true; // no flock here: the pid and the age tell
    }
    if (!locked) throw new Error(`${dir} is held by a live server`);
    await removePrivateDir(dir);
  } finally {
    handle.close();
  }
}

/**
 * Removes the private directory `dir` ({@link temporaryName}) and the
 * socket in it, if there is one; never anything else.
 *
 * @throws when `dir` cannot be removed (it holds another file, it is gone).
 */
export async function removePrivateDir(dir: string): Promise<void> {
  const socket = `${dir}/${TEMPORARY_SOCKET}`;
  try {
    if ((await Deno.lstat(socket)).isSocket) await Deno.remove(socket);
  } catch {
    // No socket there (renamed away, or never made).
  }
  await Deno.remove(dir);
}

/** Whether processes are alive, from `/proc` where there is one. */
class ProcessTable {
  #hasProc: boolean | undefined;

  /** `true` alive (or a zombie), `false` dead, `null` cannot tell. */
  alive(pid: number): boolean | null {
    if (pid === Deno.pid) return true;
    if (!this.#procMounted()) return null;
    try {
      Deno.lstatSync(`/proc/${pid}`);
      return true;
    } catch (err) {
      return err instanceof Deno.errors.NotFound ? false : null;
    }
  }

  /** Whether `/proc` shows this process, so that an absent pid means a dead one. */
  #procMounted(): boolean {
    if (this.#hasProc === undefined) {
      try {
        this.#hasProc = Deno.build.os === "linux" &&
          Deno.lstatSync(`/proc/${Deno.pid}`).isDirectory;
      } catch {
        this.#hasProc = false;
      }
    }
    return this.#hasProc;
  }
}
