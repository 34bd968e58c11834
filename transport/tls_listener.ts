/**
 * The server's TLS listener: plain TCP accepted with `Deno.listen`, each
 * connection given TCP_NODELAY and keepalive, then TLS through `node:tls`.
 *
 * `Deno.listenTls` hands out connections on which neither option can be set
 * (Deno 2.9's `TlsConn` has no `setNoDelay` nor `setKeepAlive`). Without
 * TCP_NODELAY, a reply spanning two TLS records (over 16 KiB) or several
 * replies in flight wait for the client's delayed ACK: 40–90 ms a round
 * trip on Linux. Without keepalive, a client whose host vanished holds its
 * connection slot for ever.
 *
 * @module
 */

import { X509Certificate } from "node:crypto";
import type { Socket } from "node:net";
import { Duplex } from "node:stream";
import * as tls from "node:tls";
import { NodeSocketStream } from "./_node_socket.ts";
import type { ByteStream } from "./byte_stream.ts";

/** What the server needs of a listener: a `Deno.Listener`, or a {@link TlsListener}. */
export interface Listener {
  /** The address listened on (the port chosen, for port 0). */
  readonly addr: Deno.Addr;
  /** The next connection; rejects once the listener is closed. */
  accept(): Promise<Deno.Conn>;
  /** Stops listening. */
  close(): void;
}

/** Receives the client's address and why its TLS handshake failed. */
export type HandshakeFailureHandler = (peer: Deno.NetAddr, reason: string) => void;

/** Accepts TCP connections and serves TLS on them, with TCP_NODELAY and keepalive set. */
export class TlsListener implements Listener {
  readonly #tcp: Deno.Listener<Deno.TcpConn>;
  readonly #context: tls.SecureContext;
  /**
   * Told of each connection whose TLS handshake failed (for the log): the
   * client's address and why. Not told of a connection that closed without
   * sending a byte (a port check), nor of one this side closed (the hello
   * timeout, a shutdown), which the server reports itself.
   */
  onHandshakeFailure: HandshakeFailureHandler | null = null;

  /**
   * Why clients will refuse (or soon refuse) the certificate, for a warning
   * at start: see {@link certificateWarning}. `null` when it is valid for a
   * while yet.
   */
  readonly certificateWarning: string | null;

  /**
   * @param tcp A TCP listener; this one closes it.
   * @param cert Certificate chain (PEM), already checked (e.g. by `Deno.listenTls`).
   * @param key Its private key (PEM).
   */
  constructor(tcp: Deno.Listener<Deno.TcpConn>, cert: string, key: string) {
    this.#tcp = tcp;
    this.#context = tls.createSecureContext({ cert, key });
    this.certificateWarning = certificateWarning(cert);
  }

  /** @inheritdoc */
  get addr(): Deno.Addr {
    return this.#tcp.addr;
  }

  /**
   * The next connection, at once: its TLS handshake runs as it is read, so
   * a peer that never completes it is bounded by the hello timeout and the
   * handshake slots like any other.
   */
  async accept(): Promise<Deno.Conn> {
    const conn = await this.#tcp.accept();
    try {
      conn.setNoDelay(true);
      conn.setKeepAlive(true);
    } catch {
      // Reset before we got to it: the first read ends the connection.
    }
    // The session uses a connection's read, write, close, remoteAddr and localAddr only.
    return new TlsServerConn(conn, this.#context, this.onHandshakeFailure) as unknown as Deno.Conn;
  }

  /** @inheritdoc */
  close(): void {
    this.#tcp.close();
  }
}

/**
 * One server-side TLS connection. The end of the client's stream reads as
 * an error, as `Deno.listenTls` reports it (`UnexpectedEof`) when no
 * close_notify came first: Deno's and Node.js's TLS clients close without
 * one, and `node:tls` under Deno does not say whether it came. So over TLS
 * a client that stopped sending is taken as gone, never as half-closed.
 */
class TlsServerConn implements ByteStream {
  readonly remoteAddr: Deno.NetAddr;
  readonly localAddr: Deno.NetAddr;
  readonly #conn: Deno.TcpConn;
  readonly #duplex: ConnDuplex;
  readonly #stream: NodeSocketStream;
  #closed = false;

  constructor(
    conn: Deno.TcpConn,
    context: tls.SecureContext,
    onFailure: HandshakeFailureHandler | null = null,
  ) {
    this.remoteAddr = conn.remoteAddr;
    this.localAddr = conn.localAddr;
    this.#conn = conn;
    const duplex = this.#duplex = new ConnDuplex(conn);
    const socket = new tls.TLSSocket(duplex as unknown as Socket, {
      isServer: true,
      secureContext: context,
    });
    if (onFailure !== null) {
      // The first of these before "secure" ends the handshake, failed.
      let settled = false;
      const failed = (err?: Error): void => {
        if (settled) return;
        settled = true;
        if (this.#closed) return; // closed here: the server says why itself
        const reason = handshakeFailure(duplex, err);
        if (reason !== null) onFailure(this.remoteAddr, reason);
      };
      socket.once("secure", () => settled = true);
      socket.once("error", failed);
      socket.once("end", () => failed());
      socket.once("close", () => failed());
    }
    // node:tls under Deno reads the duplex under it for as long as data comes, whether or not
    // its own reader is paused: decrypted data would pile up in the TLS socket without bound
    // while the session reads nothing (a client that never reads its replies). So the TCP
    // connection is read only while the TLS socket's reader is not paused (NodeSocketStream
    // pauses it past 1 MiB unread), and the client is held back by TCP, as over plain TCP.
    socket.on("pause", () => duplex.hold());
    socket.on("resume", () => duplex.release());
    this.#stream = new NodeSocketStream(socket);
  }

  /**
   * Reads decrypted bytes into `buffer`. The TCP connection is read with a
   * buffer no larger than the largest one asked for here (4 KiB to 64 KiB):
   * the session reads 4 KiB at a time until the hello is accepted, so a
   * peer not let in does not make the server hold 64 KiB for it.
   */
  async read(buffer: Uint8Array): Promise<number | null> {
    this.#duplex.growReads(buffer.length);
    const n = await this.#stream.read(buffer);
    if (n === null && !this.#closed) {
      throw new Deno.errors.UnexpectedEof("the client ended the TLS connection");
    }
    return n;
  }

  write(bytes: Uint8Array): Promise<number> {
    return this.#stream.write(bytes);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#stream.close();
    try {
      this.#conn.close();
    } catch {
      // Closed already, through the TLS socket.
    }
  }
}

/** A certificate that expires within this many days draws a warning at start. */
export const CERTIFICATE_EXPIRY_WARNING_DAYS = 14;

/**
 * What is wrong with the validity period of the server's certificate (the
 * first of the chain `pem`) at `now`: expired, not valid yet (clients refuse
 * it), or expiring within {@link CERTIFICATE_EXPIRY_WARNING_DAYS} days.
 *
 * @returns The warning, or `null` when it is valid for longer, or cannot be read.
 */
export function certificateWarning(pem: string, now: Date = new Date()): string | null {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(pem);
  } catch {
    return null; // Deno and node:tls accepted it: nothing to add.
  }
  const from = cert.validFromDate;
  const to = cert.validToDate;
  const which = `the TLS certificate (${
    cert.subject.replaceAll("\n", ", ")
  }; --tls-cert, serve({ tls }))`;
  if (now.getTime() > to.getTime()) {
    return `${which} expired on ${to.toISOString()}: clients refuse it (certificate expired); ` +
      "renew it and restart the server";
  }
  if (now.getTime() < from.getTime()) {
    return `${which} is not valid before ${from.toISOString()}: clients refuse it until then ` +
      "(certificate not valid yet); check this machine's clock, or make it again";
  }
  const days = (to.getTime() - now.getTime()) / 86_400_000;
  if (days < CERTIFICATE_EXPIRY_WARNING_DAYS) {
    const whole = Math.floor(days);
    const left = days < 1 ? "in less than a day" : `in ${whole} day${whole === 1 ? "" : "s"}`;
    return `${which} expires ${left}, on ${to.toISOString()}: renew it and restart the server ` +
      "(clients refuse an expired certificate)";
  }
  return null;
}

/**
 * Why a TLS handshake failed, from what the connection saw (`err`: the TLS
 * socket's error, if any), or `null` when the client sent nothing at all
 * before closing or resetting the connection (a port check, a health
 * probe), which is not worth a warning.
 */
function handshakeFailure(duplex: ConnDuplex, err: Error | undefined): string | null {
  if (!duplex.received) return null;
  if (duplex.notTls !== null) return duplex.notTls;
  if (err === undefined) return "the client closed the connection during the TLS handshake";
  // A client that rejects the certificate says so with an alert (unknown_ca, bad_certificate, ...).
  const distrust = /CertificateExpired|certificate expired/i.test(err.message)
    ? " (the client finds the server's certificate expired, or its own clock is wrong)"
    : /certificate|UnknownCA|unknown ca/i.test(err.message)
    ? " (the client does not trust the server's certificate)"
    : "";
  return `${err.message}${distrust}`;
}

/** Content type of a TLS handshake record, which a ClientHello is. */
const TLS_HANDSHAKE = 0x16;
/** A TLS 1.2 record holding a fatal decode_error alert. */
const DECODE_ERROR_ALERT = new Uint8Array([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32]);

/** First size of the buffer a TLS connection's TCP stream is read into. */
const READ_SIZE_SMALL = 4 * 1024;
/** Largest size it grows to. */
const READ_SIZE_LARGE = 64 * 1024;

/** A `Deno.TcpConn` as the Node.js duplex stream `node:tls` wraps. */
class ConnDuplex extends Duplex {
  readonly #conn: Deno.TcpConn;
  #pumping = false;
  #started = false;
  #readSize = READ_SIZE_SMALL;
  /** Whether the client sent any byte. */
  received = false;
  /** Why the connection was ended before a handshake: it was not TLS. */
  notTls: string | null = null;
  /** Set by {@link hold}: the pump waits before its next read of the connection. */
  #holding = false;
  /** Wakes the pump waiting in {@link hold}. */
  #released: (() => void) | null = null;

  constructor(conn: Deno.TcpConn) {
    super();
    this.#conn = conn;
  }

  /**
   * Reads the connection with a buffer of up to `bytes` (at most 64 KiB)
   * from the next read on; never shrinks.
   */
  growReads(bytes: number): void {
    this.#readSize = Math.max(this.#readSize, Math.min(bytes, READ_SIZE_LARGE));
  }

  /** Reads nothing more from the connection until {@link release}. */
  hold(): void {
    this.#holding = true;
  }

  /** Lets the pump read the connection again. */
  release(): void {
    this.#holding = false;
    const wake = this.#released;
    this.#released = null;
    wake?.();
  }

  override _read(): void {
    if (this.#pumping) return;
    this.#pumping = true;
    this.#pump();
  }

  async #pump(): Promise<void> {
    let buf = new Uint8Array(this.#readSize);
    let first = !this.#started;
    this.#started = true;
    for (;;) {
      if (this.#holding) await new Promise<void>((resolve) => this.#released = resolve);
      if (buf.length < this.#readSize) buf = new Uint8Array(this.#readSize);
      let n: number | null;
      try {
        n = await this.#conn.read(buf);
      } catch (err) {
        this.destroy(err as Error); // reset by the peer, or closed here
        return;
      }
      if (n === null) {
        this.push(null);
        return;
      }
      this.received = true;
      if (first && buf[0] !== TLS_HANDSHAKE) {
        // Not a TLS ClientHello (a plain netsqlite hello, say): answer with a
        // TLS alert, as Deno.listenTls does, so that the client can say the
        // server speaks TLS (node:tls under Deno would close without a word).
        const head = Array.from(buf.subarray(0, Math.min(n, 4)), hex).join(" ");
        this.notTls = `the client did not start a TLS handshake (its first bytes: ${head}): ` +
          "a client without TLS, or another protocol";
        await this.#conn.write(DECODE_ERROR_ALERT).catch(() => {});
        this.destroy(new Error(this.notTls));
        return;
      }
      first = false;
      if (!this.push(buf.slice(0, n))) {
        this.#pumping = false;
        return;
      }
    }
  }

  override _write(
    chunk: Uint8Array,
    _encoding: string,
    callback: (err?: Error | null) => void,
  ): void {
    this.#writeAll(chunk).then(() => callback(), callback);
  }

  async #writeAll(bytes: Uint8Array): Promise<void> {
    for (let off = 0; off < bytes.length;) {
      off += await this.#conn.write(off === 0 ? bytes : bytes.subarray(off));
    }
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.#conn.closeWrite().then(() => callback(), callback);
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.release(); // the pump's next read then ends, the connection closed
    try {
      this.#conn.close();
    } catch {
      // Closed already.
    }
    callback(err);
  }
}

/** A byte as two hexadecimal digits. */
function hex(byte: number): string {
  return byte.toString(16).padStart(2, "0");
}
