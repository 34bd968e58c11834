/**
 * Opens a client connection to a Unix socket or TCP address, with TLS when
 * asked: with `Deno.connect` under Deno, with `node:net`/`node:tls` under
 * Node.js and Bun.
 *
 * @module
 */

import { ConnectionError, ErrorCode } from "../protocol/errors.ts";
import {
  type Address,
  databaseOfDefaultSocket,
  formatAddress,
  resolvedPathTooLong,
  socketPathTooLong,
} from "./address.ts";
import type { ByteStream } from "./byte_stream.ts";
import { envGet, IS_BUN, IS_DENO, readTextFile } from "./_runtime.ts";
import { foreignOwner, runtimeDirAbove } from "./_runtime_dir.ts";
import { unsafeSocketDir } from "./socket_dir.ts";

/** TLS settings of a client connection. */
export interface TlsClientOptions {
  /**
   * Certificates (PEM) of the authorities to trust besides the runtime's own,
   * e.g. the server's own self-signed certificate: they add to the
   * authorities trusted without them, under Deno, Node.js and Bun alike.
   * @default {none: only the runtime's root authorities, Mozilla's under Deno
   *   (the system's with `DENO_TLS_CA_STORE=system`), Node.js's own snapshot
   *   under Node.js (with `NODE_EXTRA_CA_CERTS`)}
   */
  caCerts?: string[];
}

/**
 * Connects to `addr`; TCP connections (TLS ones included) have Nagle's
 * algorithm disabled and keepalive enabled.
 *
 * @param addr Where the server listens.
 * @param tls Connect with TLS (TCP only); `null` for plain connections.
 * @param timeout ms for the TCP connection and the TLS handshake together;
 *   0 = none. On expiry the socket is closed.
 * @param signal Aborting it gives the attempt up as expiry does (the socket
 *   is closed; one that opens later is closed at once) and rejects with its
 *   reason when that is an `Error` (e.g. a client closed meanwhile).
 * @returns the connection (a `Deno.Conn` under Deno).
 * @throws {TypeError} when TLS is asked for a Unix socket.
 * @throws {ConnectionError} naming the address when a Unix socket path is
 *   longer than the system allows (107 bytes on Linux, 103 on macOS), before
 *   trying; when nothing answers there
 *   (code `CONNECTION_CLOSED`), when the TLS handshake fails, or (code
 *   `REQUEST_TIMEOUT`) when `timeout` expires first.
 */
export async function connectTo(
  addr: Address,
  tls: TlsClientOptions | null = null,
  timeout = 0,
  signal?: AbortSignal,
): Promise<ByteStream> {
  if (addr.transport === "unix" && tls !== null) {
    throw new TypeError("TLS is for TCP: a Unix socket connection cannot use it");
  }
  const where = `${formatAddress(addr)}${tls !== null ? " with TLS" : ""}`;
  if (addr.transport === "unix") {
    // Refused before trying: Deno's refusal is obscure ("path must be shorter than SUN_LEN"),
    // and Node.js cuts the path to fit and tries that socket (ENOENT at best).
    const tooLong = socketPathTooLong(addr.path);
    if (tooLong !== null) {
      throw new ConnectionError(
        `Cannot connect to ${where}: ${tooLong}; connect to a shorter path (a shorter ` +
          "$XDG_RUNTIME_DIR or TMPDIR for a default socket), see README Troubleshooting",
      );
    }
    // Nothing is sent (a token least of all) through a directory another user controls.
    const unsafe = await unsafeSocketDir(addr.path);
    if (unsafe !== null) throw new ConnectionError(`Cannot connect to ${where}: ${unsafe}`);
  }
  const attempt = new Attempt();
  const timer = timeout > 0 ? setTimeout(() => attempt.expire(), timeout) : undefined;
  const onAbort = (): void => attempt.expire(abortReason(signal!, where));
  signal?.addEventListener("abort", onAbort, { once: true });
  if (signal?.aborted) onAbort();
  try {
    for (let pause = 1, paused = 0;; pause = Math.min(2 * pause, 64)) {
      let refused: unknown;
      try {
        return IS_DENO
          ? await connectDeno(addr, tls, attempt)
          : await connectNode(addr, tls, attempt);
      } catch (err) {
        // A Unix socket whose listen backlog is full refuses at once
        // (EAGAIN): a burst of clients larger than the server's handshake
        // limit plus the backlog. Those ahead are served in turn; try again.
        if (!mayBeBacklogFull(err, addr) || attempt.expired || paused >= BACKLOG_RETRY_MS) {
          throw err;
        }
        refused = err;
      }
      await new Promise((resolve) => setTimeout(resolve, pause));
      paused += pause;
      // Told after the pause: Bun reports a burst's refusals before its connections.
      if (!isBacklogFull(refused, addr)) throw refused;
    }
  } catch (err) {
    if (attempt.cancelled !== null) throw attempt.cancelled;
    if (attempt.expired) {
      throw new ConnectionError(
        `Cannot connect to ${where}: ${attempt.stage} did not complete within ${timeout} ms ` +
          "(connectTimeout)",
        { code: ErrorCode.RequestTimeout },
      );
    }
    const tooLong = addr.transport === "unix" ? resolvedPathTooLong(addr.path, err) : null;
    throw new ConnectionError(
      `Cannot connect to ${where}: ${tooLong ?? failureReason(err)}${
        tooLong !== null ? "" : hint(err, addr, tls !== null)
      }`,
      { cause: err },
    );
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
  }
}

/** The error an attempt given up by `signal` rejects with. */
function abortReason(signal: AbortSignal, where: string): Error {
  return signal.reason instanceof Error
    ? signal.reason
    : new ConnectionError(`Cannot connect to ${where}: the attempt was aborted`);
}

/**
 * The reason of a failed connection on one line (the system's error: a
 * `ConnectionError`'s `cause`). OpenSSL's messages under
 * Node.js and Bun (`80AC…:error:0A00010B:SSL routines:…:wrong version
 * number:…/ssl3_record.c:350:` and a newline; `error:100000f7:SSL
 * routines:OPENSSL_internal:WRONG_VERSION_NUMBER`) are cut to their reason
 * (`wrong version number`); the error itself stays the `cause`. Node.js's
 * `AggregateError` (a host name with several addresses, each tried and
 * failed: `localhost` as `::1` and `127.0.0.1`) has an empty message: its
 * errors' reasons are given instead, joined by `; `.
 */
export function failureReason(err: unknown): string {
  const errors = (err as { errors?: unknown } | null)?.errors;
  if (err instanceof Error && err.message === "" && Array.isArray(errors) && errors.length > 0) {
    return errors.map(failureReason).join("; ");
  }
  const text = err instanceof Error ? err.message : String(err);
  const openssl = /(?:^|\s)(?:[0-9A-F]+:)?error:[0-9A-F]+:[^:\n]*:[^:\n]*:([^:\n]+)/i.exec(text);
  const reason = openssl === null ? text : openssl[1].replaceAll("_", " ").toLowerCase();
  return reason.replace(/\s+/g, " ").trim();
}

/** `err.code` of Node.js and Bun for a certificate the client does not trust. */
const UNTRUSTED = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
]);

/** What a failed connection most likely means, for the message. */
function hint(err: unknown, addr: Address, tls: boolean): string {
  if (isAbsent(err)) return notRunningHint(addr);
  if (addr.transport === "unix" && isRefused(err)) return runtimeDirHint(addr.path);
  if (!tls) return "";
  const text = String(err);
  const code = (err as { code?: unknown } | null)?.code;
  // Deno: "received corrupt message of type InvalidContentType"; Node.js: "wrong version number"
  // (ERR_SSL_WRONG_VERSION_NUMBER); Bun: "WRONG_VERSION_NUMBER", with the same code.
  if (
    code === "ERR_SSL_WRONG_VERSION_NUMBER" ||
    /corrupt message|InvalidContentType|wrong[ _]version[ _]number/i.test(text)
  ) {
    return " (the server does not speak TLS: connect without the tls option, or start the " +
      "server with --tls-cert and --tls-key)";
  }
  // Deno (rustls): a caCerts entry whose base64 is not a certificate fails startTls with
  // "invalid peer certificate: BadEncoding" (before any handshake); Bun: an entry holding no
  // certificate makes tls.connect() throw "Invalid CA" (code ERR_BORINGSSL).
  if (/BadEncoding/.test(text) || (code === "ERR_BORINGSSL" && /Invalid CA/i.test(text))) {
    return " (a certificate given in tls: { caCerts } (CLI: --tls-ca FILE) does not decode: " +
      "check that it holds whole PEM certificates)";
  }
  // Deno (rustls): CaUsedAsEndEntity; Node.js (OpenSSL) names no such case apart.
  if (/CaUsedAsEndEntity/.test(text)) {
    return " (the server's certificate is marked as a CA, as `openssl req -x509` makes it by " +
      "default: make it with -addext basicConstraints=critical,CA:FALSE, see README " +
      "Security and lifecycle)";
  }
  // Deno (rustls): "certificate not valid for name" (NotValidForName); Node.js and Bun:
  // "Hostname/IP does not match certificate's altnames", code ERR_TLS_CERT_ALTNAME_INVALID.
  if (
    code === "ERR_TLS_CERT_ALTNAME_INVALID" ||
    /not valid for name|NotValidForName|does not match certificate's altnames/i.test(text)
  ) {
    const host = addr.transport === "tcp" ? addr.hostname : "";
    return ` (the server's certificate does not name "${host}": connect with a host name the ` +
      "certificate names, or make it with -addext subjectAltName=IP:ADDRESS,DNS:NAME listing " +
      "the names clients use, see README Security and lifecycle)";
  }
  // Deno (rustls): "certificate expired: verification time ..., but certificate is not valid
  // after ..." (Expired), "certificate not valid yet" (NotValidYet); Node.js and Bun:
  // "certificate has expired", "certificate is not yet valid", with their codes.
  if (code === "CERT_HAS_EXPIRED" || /certificate expired|certificate has expired/i.test(text)) {
    return " (the server's certificate has expired: renew it on the server (--tls-cert) and " +
      "restart it, or check this machine's clock, see README Troubleshooting)";
  }
  if (code === "CERT_NOT_YET_VALID" || /not valid yet|not yet valid|NotValidYet/i.test(text)) {
    return " (the server's certificate is not valid yet: check the clocks of this machine and " +
      "of the one that made the certificate, see README Troubleshooting)";
  }
  // Deno: UnknownIssuer; BadSignature when a certificate given names the server's issuer
  // but has another key (a self-signed certificate made again); Node.js and Bun: "unable
  // to verify the first certificate", "self-signed certificate", "unable to get local
  // issuer certificate", with their codes.
  if (
    (typeof code === "string" && UNTRUSTED.has(code)) ||
    /UnknownIssuer|BadSignature|self[- ]signed certificate|unable to get local issuer|unable to verify the first certificate/i
      .test(text)
  ) {
    return " (the client does not trust the server's certificate: pass the certificate that " +
      "signed it in tls: { caCerts: [pem] }, or --tls-ca FILE to the CLI)";
  }
  return "";
}

/**
 * What a connection refused or finding no socket at `addr` most likely means,
 * for the message: ` (is the server running? ...)`; for the default socket
 * of a database, naming that database and where its server may be instead.
 * A socket path given explicitly (`connect({ path })`, `--socket`) gets
 * only the question: the advice about default sockets is not about it.
 *
 * @param note More advice, put before the closing parenthesis.
 */
export function notRunningHint(addr: Address, note = ""): string {
  if (addr.transport === "tcp") {
    return " (is the server running, listening on that address and port? Start it with " +
      `--tcp HOST:PORT${note})`;
  }
  const database = databaseOfDefaultSocket(addr.path);
  if (database === undefined) return `${runtimeDirHint(addr.path)} (is the server running?${note})`;
  return `${
    runtimeDirHint(addr.path)
  } (is the server of "${database}" running? Each database file has ` +
    "its own default socket: " +
    "start the server for the file the client names, connect({ database }) to the file the " +
    `server serves, or pass the path it printed${note})`;
}

/**
 * `; XDG_RUNTIME_DIR is "/run/user/0", which belongs to uid 0, not to this
 * user (uid 1001): ...; unset it ...` when the Unix socket `path` is a
 * default one (in `$XDG_RUNTIME_DIR/netsqlite`) and the runtime directory is
 * known to be another user's: the variable was most likely inherited from
 * that user (`su` keeps it), so the client looks where this user's server
 * does not listen (and may not look). Else nothing.
 */
function runtimeDirHint(path: string): string {
  const dir = runtimeDirAbove(path, true);
  const whose = dir === null ? null : foreignOwner(dir);
  if (whose === null) return "";
  return `; XDG_RUNTIME_DIR is "${dir!.runtime}"${whose}; unset it or set it to this user's ` +
    "own, or give the socket path in connect({ path })";
}

/** One connection attempt: its current stage, and what closes it when its time is up. */
class Attempt {
  stage = "the connection";
  expired = false;
  /** Set when the attempt was given up (not timed out): what it rejects with. */
  cancelled: Error | null = null;
  readonly #aborter = new AbortController();
  #onExpire: (() => void) | null = null;
  #rejectWait: ((err: Error) => void) | null = null;

  /**
   * Ends the attempt: closes what is open, stops what is awaited.
   *
   * @param cancelled Given when the attempt is given up rather than timed out.
   */
  expire(cancelled: Error | null = null): void {
    if (this.expired) return;
    this.cancelled = cancelled;
    this.expired = true;
    this.#aborter.abort();
    this.#onExpire?.();
    this.#rejectWait?.(new Error("timed out"));
  }

  /** Aborted on expiry, for operations that take a signal. */
  get signal(): AbortSignal {
    return this.#aborter.signal;
  }

  /**
   * Waits for `opening` (which cannot be cancelled), or for expiry: a socket
   * that opens after expiry is closed at once.
   */
  wait<T extends { close(): void }>(opening: Promise<T>): Promise<T> {
    if (this.expired) {
      closeLate(opening);
      return Promise.reject(new Error("timed out"));
    }
    return new Promise<T>((resolve, reject) => {
      this.#rejectWait = (err) => {
        closeLate(opening);
        reject(err);
      };
      opening.then(resolve, reject).finally(() => this.#rejectWait = null);
    });
  }

  /** Runs `close` on expiry while the stage lasts (until `release`). */
  closeOnExpiry(close: () => void): () => void {
    this.#onExpire = close;
    if (this.expired) close();
    return () => this.#onExpire = null;
  }
}

function closeLate<T extends { close(): void }>(opening: Promise<T>): Promise<T> {
  opening.then((conn) => conn.close(), () => {});
  return opening;
}

/** How long, in ms at most, a connection to a Unix socket whose backlog is full is tried again. */
const BACKLOG_RETRY_MS = 3000;

/**
 * True when `err` may be a Unix socket's refusal because its listen backlog is full: the
 * system's `EAGAIN`, or under Bun `ECONNREFUSED`, which Bun reports for both a full backlog and a
 * socket nothing listens on (a killed server's): {@link isBacklogFull} tells them apart.
 */
function mayBeBacklogFull(err: unknown, addr: Address): boolean {
  if (addr.transport !== "unix") return false;
  const code = (err as { code?: unknown })?.code;
  return code === "EAGAIN" || (IS_BUN && code === "ECONNREFUSED");
}

/**
 * True when `err` is a Unix socket's refusal because its listen backlog is full: `EAGAIN`, or
 * under Bun `ECONNREFUSED` while this process holds a connection to that socket (a server
 * accepted it there and has not closed it: a killed server's connections end with it, so the
 * retries stop and the refusal is reported). A burst of clients of one process overflowing the
 * backlog is tried again as under Node.js and Deno.
 */
function isBacklogFull(err: unknown, addr: Address): boolean {
  if (!mayBeBacklogFull(err, addr) || addr.transport !== "unix") return false;
  return (err as { code?: unknown }).code === "EAGAIN" ||
    (openUnixSockets.get(addr.path) ?? 0) > 0;
}

/** Connections of this process open to each Unix socket path, counted under Bun only. */
const openUnixSockets = new Map<string, number>();

/** Counts `socket`, connecting to the Unix socket `path`, in {@link openUnixSockets} while open. */
function countWhileOpen(path: string, socket: import("node:net").Socket): void {
  socket.once("connect", () => {
    openUnixSockets.set(path, (openUnixSockets.get(path) ?? 0) + 1);
    socket.once("close", () => {
      const left = (openUnixSockets.get(path) ?? 1) - 1;
      if (left > 0) openUnixSockets.set(path, left);
      else openUnixSockets.delete(path);
    });
  });
}

/** True when `err` says nothing listens at the address (so a server may be started there). */
export function isNotRunning(err: unknown): boolean {
  return isAbsent((err as Error)?.cause);
}

/**
 * True when `err` (a `ConnectionError` of {@link connectTo}) says the system
 * refused this user the Unix socket (permission denied: a socket another
 * user made, one of mode 0000, a directory above it this user may not
 * enter): something is there, but not for this user.
 */
export function isDenied(err: unknown): boolean {
  return isRefused((err as Error)?.cause);
}

/**
 * For a connection to the Unix socket `path` that the system refused
 * ({@link isDenied}): what that most likely means (an `XDG_RUNTIME_DIR`
 * inherited from another user), then `note` (more advice, starting with
 * `; `) in parentheses; `""` when there is neither.
 */
export function deniedHint(path: string, note = ""): string {
  return runtimeDirHint(path) + (note === "" ? "" : ` (${note.replace(/^; /, "")})`);
}

/** True when `err` is a refusal of the system: this user may not reach the socket. */
function isRefused(err: unknown): boolean {
  if (IS_DENO) return err instanceof Deno.errors.PermissionDenied;
  const code = (err as { code?: unknown })?.code;
  return code === "EACCES" || code === "EPERM";
}

function isAbsent(err: unknown): boolean {
  if (IS_DENO) {
    return err instanceof Deno.errors.NotFound || err instanceof Deno.errors.ConnectionRefused;
  }
  const code = (err as { code?: unknown })?.code;
  return code === "ENOENT" || code === "ECONNREFUSED";
}

async function connectDeno(
  addr: Address,
  tls: TlsClientOptions | null,
  attempt: Attempt,
): Promise<Deno.Conn> {
  if (addr.transport === "unix") {
    return await attempt.wait(Deno.connect({ transport: "unix", path: addr.path }));
  }
  attempt.stage = "the TCP connection";
  const tcp = await Deno.connect({
    hostname: addr.hostname,
    port: addr.port,
    signal: attempt.signal,
  });
  tcp.setNoDelay(true);
  // Notices a server whose host vanished while no request waits (after the
  // system's keepalive idle time); requestTimeout bounds a request's wait.
  tcp.setKeepAlive(true);
  if (tls !== null) {
    // Deno.connectTls could set neither option: without TCP_NODELAY a request
    // over 16 KiB (two TLS records) or several in flight wait 40 ms or more
    // for the server's delayed ACK.
    let conn: Deno.TlsConn;
    try {
      conn = await Deno.startTls(tcp, { hostname: addr.hostname, caCerts: tls.caCerts });
    } catch (err) {
      // startTls takes the TCP resource even when it fails (a caCerts entry that does
      // not decode): closing it again throws "Bad resource ID", hiding `err`.
      try {
        tcp.close();
      } catch {
        // already closed by startTls
      }
      throw err;
    }
    attempt.stage = "the TLS handshake";
    // Known limit (Deno 2.9): closing a TLS connection during its handshake
    // drops it, but the socket stays open until the peer closes it or answers.
    const release = attempt.closeOnExpiry(() => conn.close());
    try {
      await conn.handshake();
    } catch (err) {
      // An untrusted certificate must not leave the socket open.
      if (!attempt.expired) conn.close();
      throw err;
    } finally {
      release();
    }
    return conn;
  }
  return tcp;
}

async function connectNode(
  addr: Address,
  tls: TlsClientOptions | null,
  attempt: Attempt,
): Promise<ByteStream> {
  const { NodeSocketStream } = await import("./_node_socket.ts");
  const net = await import("node:net");
  if (tls !== null && addr.transport === "tcp") {
    const nodeTls = await import("node:tls");
    const socket = nodeTls.connect({
      host: addr.hostname,
      port: addr.port,
      servername: net.isIP(addr.hostname) === 0 ? addr.hostname : undefined,
      ca: tls.caCerts === undefined ? undefined : await trustedWith(tls.caCerts),
    });
    attempt.stage = "the TCP connection and TLS handshake";
    await opened(socket, "secureConnect", attempt);
    socket.setNoDelay(true);
    socket.setKeepAlive(true);
    return new NodeSocketStream(socket);
  }
  const socket = addr.transport === "unix"
    ? net.createConnection({ path: addr.path })
    : net.createConnection({ host: addr.hostname, port: addr.port });
  if (addr.transport === "unix" && IS_BUN) countWhileOpen(addr.path, socket);
  if (addr.transport === "tcp") attempt.stage = "the TCP connection";
  await opened(socket, "connect", attempt);
  if (addr.transport === "tcp") {
    socket.setNoDelay(true);
    socket.setKeepAlive(true);
  }
  return new NodeSocketStream(socket);
}

/** The authorities Node.js or Bun trusts by default, read once: see {@link trustedWith}. */
let defaultAuthorities: Promise<string[]> | undefined;

/**
 * The authorities (PEM) a Node.js or Bun TLS connection given `caCerts`
 * trusts: the runtime's default ones and `caCerts`, as `Deno.connectTls` adds
 * `caCerts` to its roots. Node's `ca` option replaces the defaults instead,
 * so they are passed with it: `tls.getCACertificates("default")` where it
 * exists (Node.js 22.15, 23.8 and later: the bundled ones, those of
 * `NODE_EXTRA_CA_CERTS`, and the system's with `--use-system-ca`), else
 * `tls.rootCertificates` (the bundled ones) and the certificates of the file
 * `NODE_EXTRA_CA_CERTS` names, which the runtime adds to its defaults at
 * startup (a file that cannot be read adds none, as the runtime warns and
 * goes on).
 *
 * @param caCerts The client's `tls.caCerts`.
 * @returns the defaults, then `caCerts`.
 */
export async function trustedWith(caCerts: readonly string[]): Promise<string[]> {
  defaultAuthorities ??= (async () => {
    const nodeTls: {
      getCACertificates?: (type: "default") => string[];
      rootCertificates: readonly string[];
    } = await import("node:tls");
    if (typeof nodeTls.getCACertificates === "function") {
      return nodeTls.getCACertificates("default");
    }
    const extra = envGet("NODE_EXTRA_CA_CERTS");
    const extraPems = extra === undefined || extra === ""
      ? []
      : await readTextFile(extra).then(pemCertificates, () => []);
    return [...nodeTls.rootCertificates, ...extraPems];
  })();
  return [...await defaultAuthorities, ...caCerts];
}

/** The PEM certificates in `text` (a bundle), each with its BEGIN and END lines. */
function pemCertificates(text: string): string[] {
  return text.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
}

function opened(
  socket: import("node:net").Socket,
  event: "connect" | "secureConnect",
  attempt: Attempt,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const release = attempt.closeOnExpiry(() => {
      socket.off("error", onError);
      socket.destroy();
      reject(new Error("timed out"));
    });
    const onError = (err: Error): void => {
      release();
      socket.destroy();
      reject(err);
    };
    socket.once("error", onError);
    socket.once(event, () => {
      release();
      socket.off("error", onError);
      resolve();
    });
  });
}
