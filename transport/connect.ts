/**
 * Opens a client connection to a Unix socket or TCP address, with TLS when
 * asked: with `Deno.connect` under Deno, with `node:net`/`node:tls` under
 * Node.js and Bun.
 *
 * @module
 */

import { ConnectionError } from "../protocol/errors.ts";
import { type Address, formatAddress } from "./address.ts";
import type { ByteStream } from "./byte_stream.ts";
import { IS_DENO } from "./_runtime.ts";

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
 * @returns the connection (a `Deno.Conn` under Deno).
 * @throws {TypeError} when TLS is asked for a Unix socket.
 * @throws {ConnectionError} naming the address when nothing answers there
 *   (code `CONNECTION_CLOSED`), or when the TLS handshake fails.
 */
export async function connectTo(
  addr: Address,
  tls: TlsClientOptions | null = null,
): Promise<ByteStream> {
  if (addr.transport === "unix" && tls !== null) {
    throw new TypeError("TLS is for TCP: a Unix socket connection cannot use it");
  }
  try {
    return IS_DENO ? await connectDeno(addr, tls) : await connectNode(addr, tls);
  } catch (err) {
    throw new ConnectionError(
      `Cannot connect to ${formatAddress(addr)}${tls !== null ? " with TLS" : ""}: ` +
        (err as Error).message +
        (isAbsent(err) ? " (is the server running? start it with `deno task serve`)" : ""),
      { cause: err },
    );
  }
}

/** True when `err` says nothing listens at the address (so a server may be started there). */
export function isNotRunning(err: unknown): boolean {
  return isAbsent((err as Error)?.cause);
}

function isAbsent(err: unknown): boolean {
  if (IS_DENO) {
    return err instanceof Deno.errors.NotFound || err instanceof Deno.errors.ConnectionRefused;
  }
  const code = (err as { code?: unknown })?.code;
  return code === "ENOENT" || code === "ECONNREFUSED";
}

async function connectDeno(addr: Address, tls: TlsClientOptions | null): Promise<Deno.Conn> {
  if (addr.transport === "unix") {
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
      conn.close(); // an untrusted certificate must not leave the socket open
      throw err;
    }
    return conn;
  }
  const conn = await Deno.connect({ hostname: addr.hostname, port: addr.port });
  conn.setNoDelay(true);
  return conn;
}

async function connectNode(addr: Address, tls: TlsClientOptions | null): Promise<ByteStream> {
  const { NodeSocketStream } = await import("./_node_socket.ts");
  const net = await import("node:net");
  if (tls !== null && addr.transport === "tcp") {
    const nodeTls = await import("node:tls");
    const socket = nodeTls.connect({
      host: addr.hostname,
      port: addr.port,
      servername: net.isIP(addr.hostname) === 0 ? addr.hostname : undefined,
      ca: tls.caCerts,
    });
    await opened(socket, "secureConnect");
    socket.setNoDelay(true);
    return new NodeSocketStream(socket);
  }
  const socket = addr.transport === "unix"
    ? net.createConnection({ path: addr.path })
    : net.createConnection({ host: addr.hostname, port: addr.port });
  await opened(socket, "connect");
  if (addr.transport === "tcp") socket.setNoDelay(true);
  return new NodeSocketStream(socket);
}

function opened(
  socket: import("node:net").Socket,
  event: "connect" | "secureConnect",
): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => {
      socket.destroy();
      reject(err);
    };
    socket.once("error", onError);
    socket.once(event, () => {
      socket.off("error", onError);
      resolve();
    });
  });
}
