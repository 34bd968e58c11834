/**
 * Opens the server's listener. For a Unix socket it creates the directory
 * (0700), replaces a stale socket file left by a crashed server, refuses to
 * start when a live server already answers there, and makes the socket 0600
 * (or the mode asked for). For TCP it can listen with TLS.
 *
 * @module
 */

import { dirname } from "node:path";
import { type Address, formatAddress } from "./address.ts";
import { unsafeSocketDir } from "./socket_dir.ts";
import { type Listener, TlsListener } from "./tls_listener.ts";

export type { Listener } from "./tls_listener.ts";

/**
 * The server could not listen on its address: a live server holds it, or
 * the system refused (permissions, a port in use).
 *
 * @example
 * ```ts
 * import { ListenError, serve } from "@netsqlite/netsqlite/server";
 * const dir = await Deno.makeTempDir();
 * await using first = await serve({ database: `${dir}/a.db`, path: `${dir}/a.sock` });
 * try {
 *   await serve({ database: `${dir}/b.db`, path: `${dir}/a.sock` }); // the socket is taken
 *   throw new Error("expected ListenError");
 * } catch (err) {
 *   if (!(err instanceof ListenError)) throw err;
 * }
 * ```
 */
export class ListenError extends Error {
  /**
   * Creates the error.
   *
   * @param message What went wrong.
   * @param options Error options (`cause`).
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ListenError";
  }
}

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
 *   is not a socket, or the address cannot be bound.
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
  await makeSocketDir(dirname(path), mode);
  const unsafe = await unsafeSocketDir(path);
  if (unsafe !== null) throw new ListenError(`Cannot listen on unix:${path}: ${unsafe}`);
  await removeStaleSocket(path);
  let listener: Deno.Listener;
  try {
    listener = Deno.listen({ transport: "unix", path });
  } catch (err) {
    throw new ListenError(`Cannot listen on unix:${path}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  try {
    await Deno.chmod(path, mode);
  } catch (err) {
    listener.close();
    throw new ListenError(`Cannot secure unix:${path}: ${(err as Error).message}`, { cause: err });
  }
  return listener;
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

/** Removes `path` if it is a socket nobody answers on. */
async function removeStaleSocket(path: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return;
    throw err;
  }
  if (!info.isSocket) {
    throw new ListenError(`Cannot listen on unix:${path}: the path exists and is not a socket`);
  }
  try {
    const probe = await Deno.connect({ transport: "unix", path });
    probe.close();
  } catch (err) {
    if (err instanceof Deno.errors.ConnectionRefused || err instanceof Deno.errors.NotFound) {
      await Deno.remove(path).catch(() => {});
      return;
    }
    throw err;
  }
  throw new ListenError(
    `Cannot listen on unix:${path}: another server is already listening there`,
  );
}

/**
 * The longest Unix socket path in bytes: `sun_path` less its final NUL,
 * 107 on Linux, 103 on macOS and the BSDs.
 */
export const MAX_SOCKET_PATH_BYTES: number =
  Deno.build.os === "darwin" || Deno.build.os === "freebsd" || Deno.build.os === "netbsd" ||
    Deno.build.os === "solaris"
    ? 103
    : 107;

function checkSocketPathLength(path: string): void {
  const bytes = new TextEncoder().encode(path).length;
  if (bytes <= MAX_SOCKET_PATH_BYTES) return;
  throw new ListenError(
    `Cannot listen on unix:${path}: the path is ${bytes} bytes long, and a Unix socket path ` +
      `may have at most ${MAX_SOCKET_PATH_BYTES} on ${Deno.build.os}; choose a shorter --socket ` +
      "path (or a shorter $XDG_RUNTIME_DIR / TMPDIR for the default one)",
  );
}

/**
 * Identity (device and inode) of the socket file at `path`, taken right
 * after listening, so that {@link removeSocketFile} removes only that file.
 *
 * @returns `dev:ino`, or `null` when the file cannot be examined.
 */
export function socketFileId(path: string): string | null {
  try {
    const info = Deno.lstatSync(path);
    return info.ino === null ? null : `${info.dev}:${info.ino}`;
  } catch {
    return null;
  }
}

/**
 * Removes the socket file at `path` if it is still the one identified by
 * `id` ({@link socketFileId}): a server that stops must not remove the
 * socket of another server that has replaced it meanwhile. Without an
 * identity (no inode numbers) it removes the file. Never throws.
 */
export function removeSocketFile(path: string, id: string | null): void {
  if (id !== null && socketFileId(path) !== id) return;
  try {
    Deno.removeSync(path);
  } catch {
    // Already gone.
  }
}
