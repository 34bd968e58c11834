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
import { ListenError } from "./listen_error.ts";
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
    throw new ListenError(`Cannot listen on unix:${path}: ${(err as Error).message}`, {
      cause: err,
    });
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
 * Removes the Unix socket file of `listener` if it is still the one it
 * created (same device and inode); does nothing for TCP. Never throws.
 */
export function removeSocketFile(listener: Listener): void {
  if (listener instanceof UnixSocketListener) listener.removeFile();
}
