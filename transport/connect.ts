/**
 * Opens a client connection to a Unix socket or TCP address, with TLS when asked.
 *
 * @module
 */

import { ConnectionError } from "../protocol/errors.ts";
import { type Address, formatAddress } from "./address.ts";

/** TLS settings of a client connection. */
export interface TlsClientOptions {
  /**
   * Certificates (PEM) of the authorities to trust, e.g. the server's own
   * self-signed certificate.
   * @default {the system's trusted authorities}
   */
  caCerts?: string[];
}

/**
 * Connects to `addr`; TCP connections have Nagle's algorithm disabled.
 *
 * @param addr Where the server listens.
 * @param tls Connect with TLS (TCP only); `null` for plain connections.
 * @throws {ConnectionError} naming the address when nothing answers there
 *   (code `CONNECTION_CLOSED`), or when the TLS handshake fails.
 */
export async function connectTo(
  addr: Address,
  tls: TlsClientOptions | null = null,
): Promise<Deno.Conn> {
  try {
    if (addr.transport === "unix") {
      if (tls !== null) {
        throw new TypeError("TLS is for TCP: a Unix socket connection cannot use it");
      }
      return await Deno.connect({ transport: "unix", path: addr.path });
    }
    if (tls !== null) {
      const conn = await Deno.connectTls({
        hostname: addr.hostname,
        port: addr.port,
        caCerts: tls.caCerts,
      });
      try {
        await conn.handshake();
      } catch (err) {
        conn.close();
        throw err;
      }
      return conn;
    }
    const conn = await Deno.connect({ hostname: addr.hostname, port: addr.port });
    conn.setNoDelay(true);
    return conn;
  } catch (err) {
    if (err instanceof TypeError) throw err;
    throw new ConnectionError(
      `Cannot connect to ${formatAddress(addr)}${tls !== null ? " with TLS" : ""}: ` +
        (err as Error).message +
        (err instanceof Deno.errors.NotFound || err instanceof Deno.errors.ConnectionRefused
          ? " (is the server running? start it with `deno task serve`)"
          : ""),
      { cause: err },
    );
  }
}

/** True when `err` says nothing listens at the address (so a server may be started there). */
export function isNotRunning(err: unknown): boolean {
  const cause = (err as Error)?.cause;
  return cause instanceof Deno.errors.NotFound || cause instanceof Deno.errors.ConnectionRefused;
}
