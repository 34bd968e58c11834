/**
 * Opens the server's listener. For a Unix socket it creates the directory
 * (0700), replaces a stale socket file left by a crashed server, refuses to
 * start when a live server already answers there, and makes the socket 0600.
 *
 * @module
 */

import { dirname } from "node:path";
import { type Address, formatAddress } from "./address.ts";

/** The server could not listen on its address. */
export class ListenError extends Error {
  /** @param message What went wrong. @param options Error options. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ListenError";
  }
}

/**
 * Listens on `addr`.
 *
 * @throws {ListenError} when another server answers on the socket, the path
 *   is not a socket, or the address cannot be bound.
 */
export async function listen(addr: Address): Promise<Deno.Listener> {
  if (addr.transport === "tcp") {
    try {
      return Deno.listen({ transport: "tcp", hostname: addr.hostname, port: addr.port });
    } catch (err) {
      throw new ListenError(`Cannot listen on ${formatAddress(addr)}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }
  const path = addr.path;
  await Deno.mkdir(dirname(path), { recursive: true, mode: 0o700 });
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
    await Deno.chmod(path, 0o600);
  } catch (err) {
    listener.close();
    throw new ListenError(`Cannot secure unix:${path}: ${(err as Error).message}`, { cause: err });
  }
  return listener;
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
