/**
 * Opens a client connection to a Unix socket or TCP address.
 *
 * @module
 */

import { ConnectionError } from "../protocol/errors.ts";
import { type Address, formatAddress } from "./address.ts";

/**
 * Connects to `addr`; TCP connections have Nagle's algorithm disabled.
 *
 * @throws {ConnectionError} naming the address when nothing answers there.
 */
export async function connectTo(addr: Address): Promise<Deno.Conn> {
  try {
    if (addr.transport === "unix") {
      return await Deno.connect({ transport: "unix", path: addr.path });
    }
    const conn = await Deno.connect({ hostname: addr.hostname, port: addr.port });
    conn.setNoDelay(true);
    return conn;
  } catch (err) {
    throw new ConnectionError(
      `Cannot connect to ${formatAddress(addr)}: ${(err as Error).message}` +
        (err instanceof Deno.errors.NotFound || err instanceof Deno.errors.ConnectionRefused
          ? " (is the server running? start it with `deno task serve`)"
          : ""),
      { cause: err },
    );
  }
}
