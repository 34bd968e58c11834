/**
 * The server's Unix socket, claimed so that one server never takes or
 * removes another's.
 *
 * Deno's `UnixListener.close()` unlinks the path it listened on, by name:
 * a server that stops would remove the socket of another server that
 * replaced its file meanwhile. So the server listens in a private `0700`
 * directory beside the real path (`.<name>.<pid>.<random>.tmp/s`), secures
 * the socket there (no other user can reach it before its `chmod`, whatever
 * the umask), notes its device and inode, and renames it onto the real path,
 * which also replaces a stale socket in one atomic step. The private
 * directory stays, empty, until the listener is closed: closing unlinks the
 * name it was bound to, `<temp>/s`, which then lies in a directory only this
 * server's user may change (had it been removed, another user could put a
 * symlink of that name in a shared directory such as `/tmp` and have the
 * unlink follow it). It keeps the set-group-ID bit it inherits, so that the
 * socket takes the directory's group as it would beside it. The server
 * removes the real path itself at exit, only while it is still its own file.
 *
 * Checking for a live server and renaming over a stale socket happen under
 * an advisory lock (`flock`) on the directory, so two netsqlite servers
 * starting together on one path cannot both take it: the second finds the
 * first listening. Under that lock a server that has claimed its path also
 * removes the private directories that killed servers left behind
 * ({@link removeLeftoverTemporaries}).
 *
 * @module
 */

import { dirname } from "node:path";
import { granted, userId } from "./_runtime.ts";
import { MAX_SOCKET_PATH_BYTES, resolvedPathTooLong, socketPathTooLong } from "./address.ts";
import {
  removeLeftoverTemporaries,
  removePrivateDir,
  TEMPORARY_SOCKET,
  temporaryName,
} from "./_temporary_socket.ts";
import { ListenError } from "./listen_error.ts";
import type { Listener } from "./tls_listener.ts";

export { MAX_SOCKET_PATH_BYTES };

/** How long a start waits for another server's claim of the directory (ms). */
const DIR_LOCK_WAIT_MS = 2000;

/** How often a listener checks that its socket file is still there (ms). */
export const SOCKET_CHECK_MS = 1000;

/**
 * A listening Unix socket whose file the server removes only while it is its own.
 *
 * Every {@link SOCKET_CHECK_MS} it checks (`lstat`) that its file is still at
 * its path: deleted (by hand, or by a cleaner of `/tmp`), no new client could
 * ever connect, so it listens again on a new socket file there (the old one
 * stops; connections already made go on). Another file in its place is left
 * alone, and reported once through {@link onSocketReplaced}.
 */
export class UnixSocketListener implements Listener {
  #inner: Deno.Listener;
  readonly #addr: Deno.UnixAddr;
  #fileId: string | null;
  #mode: number;
  #timer: ReturnType<typeof setInterval> | undefined;
  /** The identity of the other file last reported in the socket's place. */
  #reported: string | null = null;
  /** How many times the socket was made again (names its socket in the private directory). */
  #generation = 0;
  /**
   * Told when the socket file was deleted and made again (`replacement`
   * `null`), or when another file took its place (it is left there).
   */
  onSocketReplaced: ((message: string) => void) | null = null;
  /** The private directory, locked through this handle, until it is removed. */
  #privateDir: { path: string; handle: Deno.FsFile } | null;
  /** `accept()` calls in progress: each keeps Deno's listener (and its unlink) alive. */
  #accepting = 0;
  #closed = false;

  /**
   * @param inner The listener (on the temporary name, or on `path` itself).
   * @param path The socket's real path.
   * @param fileId Identity of the socket file ({@link socketFileId}).
   * @param privateDir The private directory `inner` listens in and its
   *   locked handle, removed once `inner` is closed.
   */
  constructor(
    inner: Deno.Listener,
    path: string,
    fileId: string | null,
    privateDir: { path: string; handle: Deno.FsFile } | null = null,
    mode = 0o600,
  ) {
    this.#inner = inner;
    this.#addr = { transport: "unix", path };
    this.#fileId = fileId;
    this.#privateDir = privateDir;
    this.#mode = mode;
    if (fileId !== null) {
      const timer = setInterval(() => this.#checkFile(), SOCKET_CHECK_MS);
      Deno.unrefTimer(timer);
      this.#timer = timer;
    }
  }

  /** Makes the socket again when its file is gone; reports another file in its place. */
  #checkFile(): void {
    if (this.#closed) return;
    let id: string | null;
    try {
      const info = Deno.lstatSync(this.#addr.path);
      id = info.ino === null ? null : `${info.dev}:${info.ino}`;
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) {
        this.#relisten();
        return;
      }
      return; // cannot be examined now (a directory made unreadable): tried again later
    }
    if (id === null || id === this.#fileId || id === this.#reported) return;
    this.#reported = id;
    this.onSocketReplaced?.(
      `the socket file unix:${this.#addr.path} was replaced by another file: left as it is; ` +
        "new clients cannot reach this server there (restart it, or remove that file: the " +
        "server then makes its socket again)",
    );
  }

  /** Why the socket file could not be made again at the last try, as reported (`null`: it was). */
  #failing: string | null = null;

  /** Listens on a new socket file at the path (the old one was deleted). */
  #relisten(): void {
    const path = this.#addr.path;
    const dir = this.#privateDir?.path ?? null;
    // In the private directory under a name of its own (closing the old listener unlinks its name).
    const bound = dir === null ? path : `${dir}/${TEMPORARY_SOCKET}${++this.#generation}`;
    let inner: Deno.Listener;
    try {
      inner = bindSocket(path, bound, this.#mode, dir === null);
      if (bound !== path) Deno.renameSync(bound, path);
    } catch (err) {
      // Said once per error (a full disk may last): the check repeats every second.
      const why = (err as Error).message;
      if (why === this.#failing) return;
      this.#failing = why;
      this.onSocketReplaced?.(
        `the socket file unix:${path} was deleted, and could not be made again: ${why}; ` +
          `tried again every ${SOCKET_CHECK_MS} ms (said again only if the error changes)`,
      );
      return;
    }
    this.#failing = null;
    const old = this.#inner;
    this.#inner = inner;
    this.#fileId = socketFileId(path);
    this.#reported = null;
    try {
      old.close(); // a pending accept() goes on with the new listener
    } catch {
      // Closed already.
    }
    this.onSocketReplaced?.(
      `the socket file unix:${path} was deleted while the server ran: made it again`,
    );
  }

  /** The socket's real path (not the temporary name it was created under). */
  get addr(): Deno.UnixAddr {
    return this.#addr;
  }

  /** Device and inode of the socket file as created, `dev:ino`, or `null` when unknown. */
  get fileId(): string | null {
    return this.#fileId;
  }

  /** The next connection, its `localAddr` the socket's real path. */
  async accept(): Promise<Deno.Conn> {
    this.#accepting++;
    let conn: Deno.Conn;
    try {
      for (;;) {
        const inner = this.#inner;
        try {
          conn = await inner.accept();
          break;
        } catch (err) {
          // The socket was made again meanwhile: accept on the new one.
          if (this.#closed || inner === this.#inner) throw err;
        }
      }
    } finally {
      this.#accepting--;
      this.#removePrivateDirOnceClosed();
    }
    Object.defineProperty(conn, "localAddr", { value: this.#addr });
    return conn;
  }

  /**
   * Stops listening. The socket file stays (connecting to it is refused)
   * until {@link removeFile}. The private directory is removed once Deno
   * has let go of the listener (at once, or when a pending `accept()`
   * ends: only then does Deno unlink the name it was bound to).
   */
  close(): void {
    clearInterval(this.#timer);
    try {
      this.#inner.close();
    } finally {
      this.#closed = true;
      this.#removePrivateDirOnceClosed();
    }
  }

  #removePrivateDirOnceClosed(): void {
    if (!this.#closed || this.#accepting > 0 || this.#privateDir === null) return;
    const { path, handle } = this.#privateDir;
    this.#privateDir = null;
    try {
      Deno.removeSync(path); // empty: the socket was renamed away (a symlink is not followed)
    } catch {
      // Not empty, or gone: left to the leftovers' removal.
    }
    handle.close();
  }

  /**
   * Removes the socket file if it is still the one this listener created:
   * another server may have replaced it (a stale-looking socket, once this
   * listener closed, or a file deleted by hand). Never throws.
   */
  removeFile(): void {
    removeSocketFile(this.#addr.path, this.#fileId);
  }
}

/**
 * Listens on the Unix socket `path`, replacing a stale socket file (one
 * nobody answers on) and making it `mode`. The directory must exist.
 *
 * @throws {ListenError} when a live server answers there, the path is not a
 *   socket, another user's socket is there, or the system refuses.
 */
export async function listenUnix(path: string, mode: number): Promise<UnixSocketListener> {
  checkSocketPathLength(path);
  const dirLock = await lockDir(dirname(path));
  try {
    await checkNoLiveServer(path);
    const temp = temporaryName(path);
    const listener = temp === null
      ? await listenInPlace(path, mode)
      : await listenPrivately(path, temp, mode);
    if (dirLock !== null) await removeLeftoverTemporaries(path);
    return listener;
  } finally {
    dirLock?.close();
  }
}

/**
 * Listens on `<temp>/`{@link TEMPORARY_SOCKET} inside the private directory
 * `temp` (made `0700`, set-group-ID if it inherits that), makes the socket
 * `mode` there, and renames it onto `path`: no other user can reach the
 * socket before its mode is set, whatever the umask. The private directory
 * is kept, locked, for the listener to remove once closed; it is removed at
 * once when this fails.
 */
async function listenPrivately(
  path: string,
  temp: string,
  mode: number,
): Promise<UnixSocketListener> {
  const bound = `${temp}/${TEMPORARY_SOCKET}`;
  let handle: Deno.FsFile | null = null;
  try {
    await Deno.mkdir(temp, { mode: 0o700 });
    // The umask may have taken bits away (never added any). A set-group-ID
    // bit inherited from the socket's directory is kept (a chmod without it
    // clears it), so that the socket gets the directory's group.
    const made = (await Deno.lstat(temp)).mode ?? 0;
    if ((made & 0o777) !== 0o700) await Deno.chmod(temp, 0o700 | (made & 0o2000));
    handle = await lockPrivateDir(temp);
  } catch (err) {
    handle?.close();
    await Deno.remove(temp).catch(() => {});
    throw new ListenError(`Cannot listen on unix:${path}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  try {
    const inner = bindSocket(path, bound, mode);
    const id = socketFileId(bound);
    try {
      await Deno.rename(bound, path);
    } catch (err) {
      inner.close(); // unlinks the socket in the private directory
      throw new ListenError(`Cannot listen on unix:${path}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    return new UnixSocketListener(inner, path, id, { path: temp, handle }, mode);
  } catch (err) {
    handle.close();
    await removePrivateDir(temp).catch(() => {});
    throw err;
  }
}

/**
 * The private directory `temp`, opened and locked (shared) for as long as
 * the listener keeps it: a server removing leftovers
 * ({@link removeLeftoverTemporaries}) skips a locked one, even where it
 * cannot see this process (another pid namespace).
 */
async function lockPrivateDir(temp: string): Promise<Deno.FsFile> {
  const handle = await Deno.open(temp, { read: true });
  try {
    await handle.tryLock(false);
  } catch {
    // No flock here: the pid in the name still tells.
  }
  return handle;
}

/**
 * Listens on `path` itself, after removing a stale socket there: for a
 * directory so long that no private one fits ({@link temporaryName}). With
 * `--allow-sys` (all of it: Deno has no narrower grant for it) the umask is
 * tightened for the `listen` so that the socket is born no more open than
 * `mode`; without, it has the umask's permissions until its `chmod`.
 */
async function listenInPlace(path: string, mode: number): Promise<UnixSocketListener> {
  await Deno.remove(path).catch(() => {}); // stale, if anything
  const inner = bindSocket(path, path, mode, true);
  return new UnixSocketListener(inner, path, socketFileId(path), null, mode);
}

/**
 * Listens on `bound` (the socket's path, or its private name) and makes
 * it `mode`.
 *
 * @param tightenUmask Narrow the umask to `mode` for the `listen` when allowed.
 * @throws {ListenError} when the system refuses; for `path` itself, in use
 *   means another server took it.
 */
function bindSocket(
  path: string,
  bound: string,
  mode: number,
  tightenUmask = false,
): Deno.Listener {
  let inner: Deno.Listener;
  // Only bits `mode` lacks are added to the umask, and it is restored before
  // anything else of this process runs on this thread.
  const previous = tightenUmask && granted({ name: "sys", kind: "umask" }) ? Deno.umask() : null;
  try {
    if (previous !== null) Deno.umask(previous | (0o777 & ~mode));
    inner = Deno.listen({ transport: "unix", path: bound });
  } catch (err) {
    if (err instanceof Deno.errors.AddrInUse && bound === path) throw liveServer(path);
    const why = resolvedPathTooLong(bound, err) ?? (err as Error).message;
    throw new ListenError(`Cannot listen on unix:${path}: ${why}`, { cause: err });
  } finally {
    if (previous !== null) Deno.umask(previous);
  }
  try {
    Deno.chmodSync(bound, mode);
  } catch (err) {
    inner.close();
    throw new ListenError(`Cannot secure unix:${path}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return inner;
}

/**
 * Throws unless `path` is absent or a stale socket: a live server answers
 * there, it is no socket, or it cannot be examined.
 */
async function checkNoLiveServer(path: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return;
    throw new ListenError(`Cannot listen on unix:${path}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (!info.isSocket) {
    throw new ListenError(`Cannot listen on unix:${path}: the path exists and is not a socket`);
  }
  try {
    const probe = await Deno.connect({ transport: "unix", path });
    probe.close();
  } catch (err) {
    if (err instanceof Deno.errors.ConnectionRefused || err instanceof Deno.errors.NotFound) {
      return; // stale: nobody answers
    }
    if (err instanceof Deno.errors.PermissionDenied) throw notOurs(path, info, err);
    throw new ListenError(`Cannot listen on unix:${path}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  throw liveServer(path);
}

function liveServer(path: string): ListenError {
  return new ListenError(
    `Cannot listen on unix:${path}: another server is already listening there`,
  );
}

/** The socket at `path` refused this user's connect: whether anyone listens cannot be told. */
function notOurs(path: string, info: Deno.FileInfo, cause: unknown): ListenError {
  let me: number | null = null;
  try {
    me = userId();
  } catch {
    // No --allow-sys=uid: cannot compare owners.
  }
  const mode = ((info.mode ?? 0) & 0o777).toString(8).padStart(4, "0");
  const what = me !== null && info.uid === me
    ? `the socket there (mode ${mode}) does not let this user connect (permission denied): ` +
      "remove it or choose another path"
    : `a socket of another user${
      info.uid === null ? "" : ` (uid ${info.uid})`
    } is there (permission denied): choose another path`;
  return new ListenError(`Cannot listen on unix:${path}: ${what}`, { cause });
}

/**
 * An exclusive advisory lock on `dir`, taken within {@link DIR_LOCK_WAIT_MS};
 * `null` when it cannot be opened or locked (no read permission, a file
 * system without `flock`, a holder that does not let go): the claim then
 * goes ahead unserialised.
 */
async function lockDir(dir: string): Promise<Deno.FsFile | null> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(dir, { read: true });
  } catch {
    return null;
  }
  try {
    const end = performance.now() + DIR_LOCK_WAIT_MS;
    let pause = 2;
    for (;;) {
      if (await file.tryLock(true)) return file;
      if (performance.now() >= end) break;
      await new Promise((resolve) => setTimeout(resolve, pause));
      pause = Math.min(pause * 2, 50);
    }
  } catch {
    // No flock here.
  }
  file.close();
  return null;
}

/**
 * Throws unless `path` fits in `sun_path` ({@link MAX_SOCKET_PATH_BYTES}).
 *
 * @throws {ListenError} naming the limit and what to shorten.
 */
export function checkSocketPathLength(path: string): void {
  const tooLong = socketPathTooLong(path);
  if (tooLong === null) return;
  throw new ListenError(
    `Cannot listen on unix:${path}: ${tooLong}; choose a shorter --socket ` +
      "path (or a shorter $XDG_RUNTIME_DIR / TMPDIR for the default one)",
  );
}

/**
 * Identity (device and inode) of the file at `path`.
 *
 * @returns `dev:ino`, or `null` when the file cannot be examined.
 */
function socketFileId(path: string): string | null {
  try {
    const info = Deno.lstatSync(path);
    return info.ino === null ? null : `${info.dev}:${info.ino}`;
  } catch {
    return null;
  }
}

/**
 * Removes the socket file at `path` if it is still the one identified by
 * `id` ({@link socketFileId}). Without an identity (no inode numbers) it
 * removes the file. Never throws.
 */
function removeSocketFile(path: string, id: string | null): void {
  if (id !== null && socketFileId(path) !== id) return;
  try {
    Deno.removeSync(path);
  } catch {
    // Already gone.
  }
}
