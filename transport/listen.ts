/**
 * Opens the server's listener. For a Unix socket it creates the directory
 * (0700), replaces a stale socket file left by a crashed server, refuses to
 * start when a live server already answers there, and makes the socket 0600
 * (or the mode asked for). For TCP it can listen with TLS.
 *
 * @module
 */

import { dirname, resolve } from "node:path";
import { type Address, formatAddress } from "./address.ts";
import { ListenError } from "./listen_error.ts";
import { foreignOwner, runtimeDir, runtimeDirAbove } from "./_runtime_dir.ts";
import { granted } from "./_runtime.ts";
import { unsafeSocketDir } from "./socket_dir.ts";
import { type Listener, TlsListener } from "./tls_listener.ts";
import { checkSocketPathLength, listenUnix, UnixSocketListener } from "./unix_socket_listener.ts";

export { ListenError } from "./listen_error.ts";
export { type Listener, TlsListener } from "./tls_listener.ts";
export { MAX_SOCKET_PATH_BYTES } from "./unix_socket_listener.ts";

/** Certificate chain and private key, PEM-encoded, for a TLS listener. */
export interface TlsServerOptions {
  /** Certificate chain (PEM). */
  cert: string;
  /** Private key (PEM). */
  key: string;
}

/** Options of {@link listen}. */
export interface ListenOptions {
  /** Permission bits of a Unix socket file. @default {0o600} */
  socketMode?: number;
  /** Listen with TLS (TCP only). @default {null} */
  tls?: TlsServerOptions | null;
}

/**
 * Listens on `addr`. TCP connections (TLS ones included) get TCP_NODELAY
 * and keepalive: plain ones from the server as it accepts them, TLS ones
 * from the {@link TlsListener}.
 *
 * @throws {ListenError} when another server answers on the socket, the path
 *   is not a socket, the socket's directory cannot be created, or the address
 *   cannot be bound.
 */
export async function listen(addr: Address, options: ListenOptions = {}): Promise<Listener> {
  const tls = options.tls ?? null;
  if (addr.transport === "tcp") {
    try {
      if (tls !== null) {
        // Deno checks the certificate and key (and that they match) as it
        // listens; node:tls under Deno only at the first handshake.
        Deno.listenTls({ hostname: addr.hostname, port: 0, ...tls }).close();
      }
      const tcp = Deno.listen({ transport: "tcp", hostname: addr.hostname, port: addr.port });
      return tls === null ? tcp : new TlsListener(tcp, tls.cert, tls.key);
    } catch (err) {
      throw new ListenError(`Cannot listen on ${formatAddress(addr)}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }
  if (tls !== null) throw new ListenError("Cannot use TLS on a Unix socket: TLS is for TCP");
  const mode = options.socketMode ?? 0o600;
  const path = addr.path;
  checkSocketPathLength(path);
  try {
    await makeSocketDir(dirname(path), mode);
  } catch (err) {
    throw new ListenError(
      `Cannot listen on unix:${path}: ${(err as Error).message}${runtimeDirHint(path, err)}`,
      { cause: err },
    );
  }
  const unsafe = await unsafeSocketDir(path);
  if (unsafe !== null) throw new ListenError(`Cannot listen on unix:${path}: ${unsafe}`);
  return await listenUnix(path, mode);
}

/**
 * Creates the socket's directory if absent: 0700, plus search permission
 * (x) for the group or others when the socket mode grants them access, since
 * they could not reach the socket otherwise. An existing directory is left as it is.
 */
async function makeSocketDir(dir: string, socketMode: number): Promise<void> {
  try {
    await Deno.stat(dir);
    return;
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  const dirMode = 0o700 | (socketMode & 0o070 ? 0o010 : 0) | (socketMode & 0o007 ? 0o001 : 0);
  await Deno.mkdir(dir, { recursive: true, mode: dirMode });
  await Deno.chmod(dir, dirMode); // the umask may have taken bits away
}

/**
 * `; XDG_RUNTIME_DIR is "/run/user/0", which belongs to uid 0, ...` when the
 * socket `path` lies under `$XDG_RUNTIME_DIR` and `err` is a refusal: the
 * variable was most likely inherited from another user (`su` keeps it),
 * whose runtime directory no one else may enter. Else nothing.
 */
function runtimeDirHint(path: string, err: unknown): string {
  if (!(err instanceof Deno.errors.PermissionDenied)) return "";
  const dir = runtimeDirAbove(path, false);
  if (dir === null) return "";
  const whose = foreignOwner(dir) ?? ", which this user may not use";
  return `; XDG_RUNTIME_DIR is "${dir.runtime}"${whose}; unset it or set it to this user's own, ` +
    "or give the socket path explicitly (--socket)";
}

/**
 * Why a group or other users that `socketMode` lets connect to the socket
 * at `path` cannot reach it, or `null`: connecting takes search permission
 * (x) on every directory above the socket, and an existing directory is
 * left as it is (`$XDG_RUNTIME_DIR` is always `0700`; so is a socket
 * directory an earlier start made for a mode without group access). The
 * group is the socket's (the server's primary group, or the directory's
 * when that is set-group-ID); a directory of another group takes the
 * others' x for them. The file system's root and directories that cannot be
 * examined are not judged.
 *
 * @param path The socket file, once it exists.
 * @param socketMode Its permission bits (`--socket-mode`).
 * @returns the warning, naming the directories and what to do.
 */
export function unreachableSocketWarning(path: string, socketMode: number): string | null {
  const group = (socketMode & 0o060) !== 0;
  const others = (socketMode & 0o006) !== 0;
  if (Deno.build.os === "windows" || (!group && !others)) return null;
  let gid: number | null;
  try {
    if (!granted({ name: "read", path })) return null;
    gid = Deno.statSync(path).gid;
  } catch {
    return null;
  }
  const runtime = runtimeDir();
  const blocked: string[] = [];
  const fixable: string[] = [];
  for (let dir = dirname(resolve(path)); dir !== dirname(dir); dir = dirname(dir)) {
    let info: Deno.FileInfo;
    try {
      if (!granted({ name: "read", path: dir })) continue;
      info = Deno.statSync(dir);
    } catch {
      continue;
    }
    if (info.mode === null) return null;
    const groupBit = info.gid === gid ? 0o010 : 0o001;
    const shut = (group && (info.mode & groupBit) === 0) || (others && (info.mode & 0o001) === 0);
    if (!shut) continue;
    blocked.unshift(`${dir} (mode ${(info.mode & 0o777).toString(8).padStart(4, "0")})`);
    if (dir !== runtime) fixable.unshift(dir);
  }
  if (blocked.length === 0) return null;
  const [who, bit] = others ? ["other users", "o+x"] : [`the socket's group (gid ${gid})`, "g+x"];
  const one = blocked.length === 1;
  return `--socket-mode ${socketMode.toString(8)} lets ${who} connect to unix:${path}, but ` +
    `they cannot reach it: ${blocked.join(", ")} ${one ? "does" : "do"} not let them search ` +
    `${one ? "it" : "them"}; give --socket a path in a directory they can reach` +
    (fixable.length === 0 ? "" : `, or chmod ${bit} ${fixable.join(" ")}`) +
    (fixable.length === blocked.length ? "" : ` (XDG_RUNTIME_DIR, ${runtime}, is private to its ` +
      "user by design: leave it so)");
}

/**
 * Removes the Unix socket file of `listener` if it is still the one it
 * created (same device and inode); does nothing for TCP. Never throws.
 */
export function removeSocketFile(listener: Listener): void {
  if (listener instanceof UnixSocketListener) listener.removeFile();
}
