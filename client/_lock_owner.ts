/**
 * The server a database's lock file names, and how a client on the
 * database's default socket reaches it when nothing answers there. A server
 * records its pid and address in `<real path of the db>.lock`
 * (`server/lock.ts`) whatever socket it listens on, so a client that asked
 * for the database rather than for a socket can find a server that listens
 * elsewhere: one started with `--socket`, by an earlier release under a
 * linked name, or with another `XDG_RUNTIME_DIR` (a desktop session against
 * an ssh login, or one inherited from another user through `su`, whose
 * socket refuses this user). `connect({ database })` reads the lock file (only where it
 * may without asking for a permission); autostart learns the owner from what
 * a server it started printed on finding the lock taken. Both connect through
 * {@link openOwner}, only where that asks for no permission either (Deno's
 * prompt, on a terminal, would stop a program that never meant to ask).
 *
 * @module
 */

import { readFileSync, statSync } from "node:fs";
import { basename, dirname, isAbsolute, join, resolve } from "node:path";
import { ConnectionError, ErrorCode } from "../protocol/errors.ts";
import type { HelloReply } from "../protocol/messages.ts";
import {
  type Address,
  defaultSocketPath,
  formatAddress,
  type UnixAddress,
  withoutPrompt,
} from "../transport/address.ts";
import {
  deniedHint,
  failureReason,
  isDenied,
  isNotRunning,
  notRunningHint,
} from "../transport/connect.ts";
import { realPathUnprompted } from "../transport/_real_path.ts";
import { granted, IS_DENO, userId } from "../transport/_runtime.ts";
import type { Link } from "./link.ts";
import { openLink } from "./connection.ts";
import type { ConnectConfig } from "./options.ts";

/** The owner of a database's lock, as its lock file records it. */
export interface LockOwner {
  /** Its process id, as recorded. */
  pid: string;
  /** Where it listens: `unix:<absolute path>` or `tcp:<host>:<port>`. */
  socket: string;
}

/** What the lock file of a database says, as far as this client may know. */
export type LockFile =
  & {
    /** The lock file: `<real path of the database>.lock`. */
    path: string;
  }
  & (
    /** The owner it records, or `null`: no file, an empty one (no owner), or no record in it. */
    | { owner: LockOwner | null }
    /**
     * Why it was not read (no permission granted: never asked for; a file not to trust),
     * and how to let the client read it (`""` when only the user can tell).
     */
    | { unread: string; allow: string }
  );

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

/**
 * The database as a server serving `database` names it in its hello:
 * `":memory:"` as is (a server's own in-memory database, no file), else its
 * real path ({@link realOrResolved}).
 */
export async function databaseIdentity(database: string): Promise<string> {
  return database === ":memory:" ? database : await realOrResolved(database);
}

/**
 * Reads the lock file of `database` (`<real path>.lock`) without asking for
 * any permission: under Deno only when reading it is already granted. A file
 * that is not this user's, or that others may write, is not read (it could
 * send the client, and its token, to another user's socket).
 */
export async function readLockFile(database: string): Promise<LockFile> {
  let real: string;
  try {
    real = realPathUnprompted(database);
  } catch {
    real = resolve(database); // may not be read here: the name given stands for itself
  }
  const path = `${real}.lock`;
  if (IS_DENO && Deno.permissions.querySync({ name: "read", path }).state !== "granted") {
    return { path, unread: "no read access to it was granted", allow: `--allow-read=${path}` };
  }
  let info: { uid: number | null; mode: number | null };
  let text: string;
  try {
    // A record is some 60 bytes: anything but a small regular file (a FIFO would block the
    // read, a huge file fill memory) is not a lock record.
    const kind = IS_DENO ? await Deno.stat(path) : statSync(path);
    const regular = typeof kind.isFile === "function" ? kind.isFile() : kind.isFile;
    if (!regular || kind.size > 4096) {
      return { path, unread: "it is not a lock record (a small regular file)", allow: "" };
    }
    if (IS_DENO) {
      info = kind as Deno.FileInfo;
      text = await Deno.readTextFile(path);
    } else {
      info = statSync(path);
      text = readFileSync(path, "utf8");
    }
  } catch (err) {
    const code = (err as { code?: unknown } | null)?.code;
    if ((IS_DENO && err instanceof Deno.errors.NotFound) || code === "ENOENT") {
      return { path, owner: null };
    }
    return { path, unread: failureReason(err), allow: "" };
  }
  let uid: number | null;
  try {
    if (IS_DENO && Deno.permissions.querySync({ name: "sys", kind: "uid" }).state !== "granted") {
      throw new Error("not granted"); // and not asked for
    }
    uid = userId();
  } catch {
    return {
      path,
      unread: "its owner cannot be compared with this user's id",
      allow: "--allow-sys=uid",
    };
  }
  if (uid !== null && info.uid !== null && info.uid !== uid) {
    return {
      path,
      unread: `it belongs to uid ${info.uid}, not to this user (uid ${uid})`,
      allow: "",
    };
  }
  if (info.mode !== null && (info.mode & 0o022) !== 0) {
    const mode = (info.mode & 0o777).toString(8).padStart(4, "0");
    return { path, unread: `other users may write it (mode ${mode})`, allow: "" };
  }
  try {
    const o = JSON.parse(text) as { pid?: unknown; socket?: unknown };
    if (typeof o?.socket !== "string") return { path, owner: null };
    return { path, owner: { pid: String(o.pid ?? "unknown"), socket: o.socket } };
  } catch {
    return { path, owner: null }; // empty: released, or being written
  }
}

/**
 * Where a client on the socket `path` finds the lock's owner, recorded at
 * `socket`: `null` when that is not known to be another address
 * ({@link listensElsewhere}); `{ there }`, its Unix socket, when `path` is the
 * default socket of `database` (the client asked for the database, not for
 * a socket); else `{ elsewhere }`, what to tell a client given a path or
 * channel of its own (which other processes may use to meet it), or meeting
 * an owner on TCP.
 */
export function ownerAddress(
  socket: string,
  path: string,
  database: string,
): { there: UnixAddress } | { elsewhere: string } | null {
  if (!listensElsewhere(socket, path)) return null;
  if (socket.startsWith("unix:") && isDefaultSocket(path, database)) {
    return { there: { transport: "unix", path: socket.slice("unix:".length) } };
  }
  return {
    elsewhere: socket.startsWith("unix:")
      ? `connect with { path: "${socket.slice("unix:".length)}" } to use that server`
      : `connect to that server at ${socket}`,
  };
}

/**
 * The Deno permission flags a connection to the Unix socket `path` needs and
 * this process was not granted, as `--allow-read=<path>`, `--allow-write=<path>`
 * and `--allow-net=unix:<path>` (Deno 2.9's `Deno.connect` checks all three);
 * none outside Deno. Only asks what is granted, never for a permission: on a
 * terminal `Deno.connect` would stop at Deno's prompt for one not granted.
 */
function ungrantedSocketAccess(path: string): string[] {
  const descriptors: [Deno.PermissionDescriptor, string][] = [
    [{ name: "read", path }, `--allow-read=${path}`],
    [{ name: "write", path }, `--allow-write=${path}`],
    [{ name: "net", host: `unix:${path}` }, `--allow-net=unix:${path}`],
  ];
  return descriptors.filter(([descriptor]) => !granted(descriptor)).map(([, flag]) => flag);
}

/**
 * What of the socket was not granted, for a message: `no read or write access
 * to it was granted` for `missing` flags as {@link ungrantedSocketAccess}
 * names them.
 */
function notGranted(missing: string[]): string {
  const kinds = missing.map((flag) => flag.slice("--allow-".length, flag.indexOf("=")));
  return `no ${kinds.join(" or ")} access to it was granted`;
}

/**
 * Opens a connection to the lock owner's socket `there` with `open`, checks
 * it with `check` (that the server serves the client's database), and on
 * success makes `there` the client's address (`config.addr`), for the pool's
 * later connections. Where connecting would ask for a permission (Deno's
 * prompt, on a terminal) it does not try: it throws `refused(missing)`.
 *
 * @param refused The error when permissions `missing` (flags, as
 *   {@link ungrantedSocketAccess} names them) were not granted.
 * @returns the connection, or why `open` failed.
 * @throws what `check` throws; `refused(missing)`, by default a
 *   {@link ConnectionError} naming the socket and the flags.
 */
export async function openOwner(
  config: ConnectConfig,
  there: UnixAddress,
  open: (at: Address) => Promise<[Link, HelloReply]>,
  check: (opened: [Link, HelloReply], at: Address) => Promise<[Link, HelloReply]>,
  refused: (missing: string[]) => Error = (missing) =>
    new ConnectionError(
      `Cannot connect to ${formatAddress(there)}, where the database's lock file says its ` +
        `server listens: ${notGranted(missing)}, and connecting would ask for it; run the ` +
        `client with ${missing.join(" ")}`,
    ),
): Promise<{ ok: [Link, HelloReply] } | { err: unknown }> {
  const missing = ungrantedSocketAccess(there.path);
  if (missing.length > 0) throw refused(missing);
  const found = await open(there).then((ok) => ({ ok }), (err: unknown) => ({ err }));
  if ("err" in found) return found;
  const opened = await check(found.ok, there);
  config.addr = there;
  return { ok: opened };
}

/**
 * The connection, unless its server serves another database than `ours`
 * (its identity, {@link databaseIdentity}); then the connection is closed
 * and the error `refusal(theirs)` thrown.
 */
export async function unlessOtherDatabase(
  [link, info]: [Link, HelloReply],
  ours: string,
  refusal: (theirs: string) => string,
): Promise<[Link, HelloReply]> {
  if (info.database === undefined || info.database === ours) return [link, info];
  const err = new ConnectionError(refusal(info.database), { code: ErrorCode.ConnectionClosed });
  link.fail(err);
  await link.ended;
  throw err;
}

/**
 * Opens a client's first connection (`openLink`); when nothing answers at
 * the default socket of `config.database`, or the system refuses this user
 * that socket (permission denied: another user's socket, or a runtime
 * directory inherited from another user; not this database's server for
 * this user in any case), reads the database's lock file
 * ({@link readLockFile}) and, when it names a Unix socket elsewhere,
 * connects there (the server must serve the database) and makes it the
 * client's address. A client given a path, channel or host is left alone.
 *
 * @param hello As `openLink`'s: `admin: true` for an admin session.
 * @returns the connection and the server's hello reply.
 * @throws {ConnectionError} naming both sockets when neither answers; naming
 *   the lock file when it may not be read or names a server on TCP; what
 *   `openLink` throws otherwise (the default socket's refusal too when the
 *   lock file names no other socket).
 */
export async function openFinding(
  config: ConnectConfig,
  hello: { admin?: boolean } = {},
): Promise<[Link, HelloReply]> {
  try {
    return await openLink(config, hello);
  } catch (err) {
    const database = config.database;
    if (database === null || config.addr.transport !== "unix") throw err;
    // Nothing there, or something this user may not use: either way not a server for this
    // client, and the lock file (this user's own, see readLockFile) says where the database's is.
    const denied = isDenied(err);
    if (!denied && !isNotRunning(err)) throw err;
    const addr = config.addr;
    const lock = await readLockFile(database);
    /** The error naming the default socket, and the owner's socket when that was tried too. */
    const failed = (
      note: string,
      also?: { at: Address; err: unknown; pid: string },
    ): ConnectionError => {
      const first = (err as Error).cause;
      const second = (also?.err as Error | undefined)?.cause ?? also?.err;
      const tried = also === undefined ? "" : `, nor to ${formatAddress(also.at)}, the socket ` +
        `the database's lock file "${lock.path}" names (pid ${also.pid}): ` +
        failureReason(second);
      // Refused at the default socket, the owner's not tried: no "is the server running?".
      const hint = denied && also === undefined
        ? deniedHint(addr.path, note)
        : notRunningHint(addr, note);
      return new ConnectionError(
        `Cannot connect to ${formatAddress(addr)}: ${failureReason(first)}${tried}${hint}`,
        { cause: also === undefined ? first : second },
      );
    };
    if ("unread" in lock) {
      throw failed(
        `; a running server records its socket in the lock file "${lock.path}", which this ` +
          `client did not read (${lock.unread}): pass that socket in connect({ path })` +
          (lock.allow === "" ? "" : `, or run the client with ${lock.allow}`),
      );
    }
    if (lock.owner === null) throw err;
    const found = ownerAddress(lock.owner.socket, addr.path, database);
    if (found === null) throw err; // its own socket: starting, or gone (a stale record)
    if ("elsewhere" in found) {
      throw failed(
        `; the lock file "${lock.path}" says the server (pid ${lock.owner.pid}) listens at ` +
          `${lock.owner.socket}: ${found.elsewhere}`,
      );
    }
    const ours = lock.path.slice(0, -".lock".length);
    const pid = lock.owner.pid;
    const opened = await openOwner(
      config,
      found.there,
      (at) => openLink({ ...config, addr: at }, hello),
      (opened, at) =>
        unlessOtherDatabase(
          opened,
          ours,
          (theirs) =>
            `Cannot connect to ${formatAddress(addr)}: ${failureReason((err as Error).cause)}; ` +
            `the server at ${formatAddress(at)}, which the lock file "${lock.path}" names, ` +
            `serves "${theirs}", not "${ours}"`,
        ),
      (missing) =>
        failed(
          `; the lock file "${lock.path}" says the server (pid ${pid}) listens at ` +
            `${formatAddress(found.there)}, which this client did not connect to (${
              notGranted(missing)
            }, and connecting would ask for it): run the client with ${missing.join(" ")}`,
        ),
    );
    if ("ok" in opened) return opened.ok;
    const again = opened.err;
    if (isNotRunning(again)) {
      throw failed("", { at: found.there, err: again, pid: lock.owner.pid });
    }
    if (!(again instanceof ConnectionError)) throw again; // the server answered (AUTH, ...)
    // Not permitted, timed out, closed unanswered: said of the owner's socket, with why it was tried.
    const atDefault = denied
      ? `the default socket ${formatAddress(addr)} refusing this user`
      : `nothing answering at the default socket ${formatAddress(addr)}`;
    throw new ConnectionError(
      `${again.message}; tried as the socket the lock file "${lock.path}" names (pid ` +
        `${lock.owner.pid}), ${atDefault} (${failureReason((err as Error).cause)})`,
      { code: again.code, cause: again.cause ?? again },
    );
  }
}

/**
 * True when the lock's owner, at `socket` (`unix:<path>` or `tcp:<host>:<port>`
 * as its lock file records it), is known to listen at another address than
 * the Unix socket `path`. Paths are compared absolute, through the real path
 * of their directory (a symbolic link to the same directory is the same
 * socket). A relative path (as servers of earlier versions recorded a relative
 * --socket) is relative to a directory nobody knows: not known to be another
 * address, so the client waits for that server as for one on its own socket.
 */
export function listensElsewhere(socket: string, path: string): boolean {
  if (!socket.startsWith("unix:")) return true;
  const owner = socket.slice("unix:".length);
  if (!isAbsolute(owner)) return false;
  return canonicalSocket(owner) !== canonicalSocket(path);
}

/**
 * True when `path` is the default socket of `database` (the client was given
 * neither a path nor a channel, or the path it would have used anyway).
 */
export function isDefaultSocket(path: string, database: string): boolean {
  try {
    return resolve(path) === resolve(withoutPrompt(() => defaultSocketPath(database)));
  } catch {
    return false; // no default socket can be worked out here (no --allow-sys=uid)
  }
}

/**
 * `path` absolute, its directory's symbolic links resolved (the socket itself
 * may be absent); never asking for a permission: a directory that may not be
 * read stands for itself.
 */
function canonicalSocket(path: string): string {
  const absolute = resolve(path);
  let dir: string;
  try {
    dir = realPathUnprompted(dirname(absolute));
  } catch {
    dir = dirname(absolute);
  }
  return join(dir, basename(absolute));
}
