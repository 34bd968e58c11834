/**
 * Where a server listens and a client connects: a Unix socket path or a TCP
 * host and port, and the default socket path for a database.
 *
 * @module
 */

import { statSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, isAbsolute, join, resolve } from "node:path";
import { envGet, IS_DENO, IS_WINDOWS, OS, userId } from "./_runtime.ts";
import { realPathUnprompted } from "./_real_path.ts";

/** A Unix socket address. */
export interface UnixAddress {
  /** Always `"unix"`. */
  transport: "unix";
  /** Socket file path. */
  path: string;
}

/** A TCP address. */
export interface TcpAddress {
  /** Always `"tcp"`. */
  transport: "tcp";
  /** Host name or IP address. */
  hostname: string;
  /** Port; 0 asks the system to pick one when listening. */
  port: number;
}

/** A Unix socket or TCP address. */
export type Address = UnixAddress | TcpAddress;

/**
 * The longest Unix socket path in bytes: `sun_path` less its final NUL,
 * 107 on Linux, 103 on macOS and the BSDs.
 */
export const MAX_SOCKET_PATH_BYTES: number =
  ["darwin", "freebsd", "netbsd", "openbsd", "solaris"].includes(OS) ? 103 : 107;

/** Length of `s` in UTF-8 bytes. */
export function byteLength(s: string): number {
  return new TextEncoder().encode(s).length;
}

/**
 * Why `path` cannot be a Unix socket's: `the path is 130 bytes long, and a
 * Unix socket path may have at most 107 on linux`; `null` when it fits
 * ({@link MAX_SOCKET_PATH_BYTES}). Deno refuses such a path, and Node.js
 * cuts it to fit and connects to that.
 */
export function socketPathTooLong(path: string): string | null {
  const bytes = byteLength(path);
  if (bytes <= MAX_SOCKET_PATH_BYTES) return null;
  return `the path is ${bytes} bytes long, and a Unix socket path may have at most ` +
    `${MAX_SOCKET_PATH_BYTES} on ${OS}`;
}

/**
 * Deno's refusal of a Unix socket path as too long ("path must be shorter
 * than SUN_LEN") explained, for a path that fits as given: run with narrower
 * permissions than `-A` (the `serve` task's), Deno binds and connects to a
 * relative path resolved against the working directory, which may not fit.
 * `null` for any other error.
 *
 * @example
 * ```ts
 * import { resolvedPathTooLong } from "./address.ts";
 * const err = new Error("path must be shorter than SUN_LEN");
 * const why = resolvedPathTooLong("s.sock", err);
 * if (why === null || !why.includes("resolved against the working directory")) {
 *   throw new Error(String(why));
 * }
 * ```
 */
export function resolvedPathTooLong(path: string, err: unknown): string | null {
  if (!(err instanceof Error) || !err.message.includes("SUN_LEN")) return null;
  const absolute = resolve(path);
  return `${
    socketPathTooLong(absolute) ?? "the path is too long"
  } (Deno uses it resolved against the working directory, ${absolute}, unless run with -A); ` +
    "choose a socket path that is shorter in full";
}

/** Database served when none is named: `./netsqlite.db`. */
export const DEFAULT_DATABASE = "netsqlite.db";

/** True where the client and server use Unix sockets (not on Windows). */
export const HAS_UNIX_SOCKETS: boolean = !IS_WINDOWS;

/**
 * The environment variables the per-user socket directory is worked out
 * from, in the order they are read (`TMPDIR`, `TMP`, `TEMP`: as `tmpdir()`
 * reads them, up to the first one set).
 */
const SOCKET_DIR_ENV = ["XDG_RUNTIME_DIR", "TMPDIR", "TMP", "TEMP"] as const;

/**
 * Directory that holds a user's default sockets: `$XDG_RUNTIME_DIR/netsqlite`
 * when that is set to an existing directory by an absolute path (a relative
 * one is ignored, as the XDG Base Directory Specification asks), else
 * `<tmpdir>/netsqlite-<uid>` (`<tmpdir>/netsqlite-<user name>` on Windows,
 * which has no uid).
 *
 * There is no fallback without the uid: a client run without `--allow-sys=uid`
 * would otherwise look in another directory than the server it means, and be
 * told the server is not running while it runs.
 *
 * @throws {Deno.errors.NotCapable} (whatever Deno throws) when the uid may not
 *   be read (no `--allow-sys=uid`) and `XDG_RUNTIME_DIR` is not set, naming
 *   `--allow-sys=uid` and the other ways out; also when one of
 *   `XDG_RUNTIME_DIR`, `TMPDIR`, `TMP`, `TEMP` may not be read, naming the
 *   one refused and `--allow-env=XDG_RUNTIME_DIR,TMPDIR,TMP,TEMP`.
 */
export function defaultSocketDir(): string {
  return socketDir("the per-user default socket directory");
}

/**
 * {@link defaultSocketDir}, or `null` where working it out needs a
 * permission that is not granted (Deno would ask for it at a prompt on a
 * terminal) or fails: never asks for a permission, never throws.
 */
export function defaultSocketDirUnprompted(): string | null {
  return unprompted(() => socketDir("the per-user default socket directory"));
}

/**
 * The temporary directory (`tmpdir()`, where the per-user socket directory
 * is made when `XDG_RUNTIME_DIR` is not used), or `null` where reading it
 * needs a permission that is not granted: never asks, never throws.
 */
export function tempDirUnprompted(): string | null {
  return unprompted(() => tempDir("the temporary directory"));
}

/** Set while {@link withoutPrompt} runs. */
let unpromptedNow = false;

/**
 * `fn()`, where any permission it needs to work out a socket directory
 * (env access to the variables, sys access to the uid, read access to
 * `XDG_RUNTIME_DIR`) and that is not granted fails it as Deno's
 * `--no-prompt` would, rather than asking for it at Deno's prompt (on a
 * terminal): a client asks the user nothing, it says which flags it needs.
 *
 * @throws what `fn` throws; for a permission not granted, the error
 *   {@link defaultSocketDir} documents (a `Deno.errors.NotCapable` naming the flags).
 */
export function withoutPrompt<T>(fn: () => T): T {
  const previous = unpromptedNow;
  unpromptedNow = true;
  try {
    return fn();
  } finally {
    unpromptedNow = previous;
  }
}

/** `fn()`, `null` where it fails, any permission it needs and is not granted failing it. */
function unprompted(fn: () => string): string | null {
  try {
    return withoutPrompt(fn);
  } catch {
    return null;
  }
}

/**
 * Throws, under {@link withoutPrompt}, when `permission` is not granted:
 * using it would ask for it at a prompt (on a terminal) or fail. The error
 * is the one Deno throws under `--no-prompt` (class and message), so that a
 * message built on it reads the same either way.
 */
function mayUse(permission: Deno.PermissionDescriptor): void {
  if (!unpromptedNow || !IS_DENO) return;
  if (Deno.permissions.querySync(permission).state !== "granted") {
    const what = permission.name === "env"
      ? permission.variable
      : permission.name === "sys"
      ? permission.kind
      : permission.name === "read"
      ? permission.path
      : undefined;
    throw new Deno.errors.NotCapable(
      `Requires ${permission.name} access${what === undefined ? "" : ` to "${what}"`}, run ` +
        `again with the --allow-${permission.name} flag`,
    );
  }
}

/** {@link defaultSocketDir}, its error naming `what` was being worked out. */
function socketDir(what: string): string {
  const runtime = env("XDG_RUNTIME_DIR", what);
  // A relative value is ignored, as the XDG Base Directory Specification asks: it would be
  // taken from each process's working directory, and a client elsewhere would miss the server.
  if (runtime && isAbsolute(runtime) && isDirectory(runtime, what)) {
    return join(runtime, "netsqlite");
  }
  const base = tempDir(what);
  let uid: number | null;
  try {
    mayUse({ name: "sys", kind: "uid" });
    uid = userId();
  } catch (err) {
    throw withMessage(
      err,
      `Cannot work out ${what}: its directory ${join(base, "netsqlite-<uid>")} needs ` +
        `the user id, and reading it needs --allow-sys=uid (${(err as Error).message}); run ` +
        "with --allow-sys=uid, set XDG_RUNTIME_DIR, or give the socket path explicitly",
    );
  }
  return join(base, `netsqlite-${uid ?? userName()}`);
}

/**
 * `tmpdir()`. Its variables are read here first (`TMPDIR`, `TMP`, `TEMP`,
 * up to the first one set, as `tmpdir()` reads them on Linux and macOS), so
 * that a refusal names the variable refused whatever Deno's message says.
 */
function tempDir(what: string): string {
  if (!IS_WINDOWS) {
    for (const name of SOCKET_DIR_ENV.slice(1)) {
      if (env(name, what)) break;
    }
  }
  try {
    return tmpdir();
  } catch (err) {
    const named = /env access to "([^"]+)"/.exec(String((err as Error)?.message));
    // Each variable was read above, so a --deny-env would have been said there.
    throw envError(err, named?.[1] ?? "TMPDIR", what, false);
  }
}

/** The environment variable `name`, its error (not allowed) naming `what` needs it. */
function env(name: string, what: string): string | undefined {
  // Asked before the read: a read Deno cannot prompt for (no terminal) turns
  // the variable's state to "denied", which is no --deny-env of the user's.
  const denied = deniedEnv(name);
  try {
    mayUse({ name: "env", variable: name });
    return envGet(name);
  } catch (err) {
    throw envError(err, name, what, denied);
  }
}

/** True when reading the variable `name` is denied (`--deny-env`); false when not known. */
function deniedEnv(name: string): boolean {
  try {
    return IS_DENO &&
      Deno.permissions.querySync({ name: "env", variable: name }).state === "denied";
  } catch {
    return false;
  }
}

/**
 * `err` of reading the variable `name`: what depends on it, every variable
 * to allow (a scoped `--allow-env` missing one is refused one variable at a
 * time), and, when `name` was `denied` before the read (`--deny-env`, which
 * `--allow-env` does not override), that too.
 */
function envError(err: unknown, name: string, what: string, denied: boolean): Error {
  return withMessage(
    err,
    `Cannot work out ${what}: its directory depends on the environment variables ` +
      `${SOCKET_DIR_ENV.join(", ")}, and reading ${name} was not allowed ` +
      `(${(err as Error).message}); run with --allow-env=${SOCKET_DIR_ENV.join(",")} (or ` +
      `--allow-env)${denied ? ` and without the --deny-env that denies ${name}` : ""}, or ` +
      "give the socket path explicitly",
  );
}

/**
 * False when `path` (the `XDG_RUNTIME_DIR`) is missing or not a directory:
 * then it is ignored (the server creates only `netsqlite` inside it, never
 * the runtime directory itself).
 *
 * @throws when it may not be examined (a client with `--allow-read` scoped
 *   elsewhere): guessing would put the client in another directory than the
 *   server, which can look.
 */
function isDirectory(path: string, what: string): boolean {
  try {
    mayUse({ name: "read", path });
    return statSync(path).isDirectory();
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (
      code === "ENOENT" || code === "ENOTDIR" || (IS_DENO && err instanceof Deno.errors.NotFound)
    ) {
      return false;
    }
    throw withMessage(
      err,
      `Cannot work out ${what}: XDG_RUNTIME_DIR is "${path}", which may not be examined ` +
        `(${(err as Error).message}); run with --allow-read=${path}, unset XDG_RUNTIME_DIR, ` +
        "or give the socket path explicitly",
    );
  }
}

/** `err` again, with `message` (same class, `err` as the cause), for permission errors. */
function withMessage(err: unknown, message: string): Error {
  const Class = err instanceof Error ? err.constructor as ErrorConstructor : Error;
  try {
    return new Class(message, { cause: err });
  } catch {
    return new Error(message, { cause: err });
  }
}

/**
 * Default socket path for `database`: one per user and per database file,
 * `<dir>/<name>-<hash>.sock`, the name and hash of the file's **real path**
 * (symbolic links of the file and of every directory above it resolved, as
 * the server's lock resolves them, also for a file not yet created), so
 * every name of one file leads to the one socket of its server. Where the
 * real path cannot be read (no `--allow-read` for it), the path made
 * absolute stands in: a client without that permission then finds the
 * server only by the file's real name. On Windows this names the file where
 * the server announces its TCP port instead.
 *
 * @throws {Deno.errors.NotCapable} as {@link defaultSocketDir} does, naming the database.
 * @example
 * ```ts
 * import { defaultSocketPath } from "@netsqlite/netsqlite/client";
 * const a = defaultSocketPath("/data/app.db");
 * if (a !== defaultSocketPath("/data/app.db")) throw new Error("must be stable");
 * if (a === defaultSocketPath("/other/app.db")) throw new Error("must differ per database");
 * ```
 */
export function defaultSocketPath(database: string = DEFAULT_DATABASE): string {
  const absolute = resolve(database);
  let real: string;
  try {
    real = realPathUnprompted(absolute);
  } catch {
    real = absolute; // may not be read here (no read permission granted), or a loop of links
  }
  const name = basename(real).replace(/\.[^.]*$/, "").replace(/[^A-Za-z0-9_-]/g, "_")
    .slice(0, 32);
  const dir = socketDir(`the default socket of "${absolute}"`);
  const path = join(dir, `${name}-${fnv1a(real)}.sock`);
  if (databasesBySocket.size < 1000) databasesBySocket.set(path, absolute);
  return path;
}

/** Default socket path → absolute database path, as worked out in this process (bounded). */
const databasesBySocket = new Map<string, string>();

/**
 * The database (absolute path) whose default socket is `path`, as
 * {@link defaultSocketPath} worked it out in this process, or `undefined`;
 * for messages.
 */
export function databaseOfDefaultSocket(path: string): string | undefined {
  return databasesBySocket.get(path);
}

/**
 * Socket path of the named channel `name`: `<dir>/channel-<name>.sock` in the
 * user's socket directory ({@link defaultSocketDir}), so `serve({ channel })`
 * and `connect({ channel })` of the same user meet there. On Windows this
 * names the file where the server announces its TCP port (`.port`).
 *
 * @throws {TypeError} when the name is not 1-64 letters, digits, `.`, `_` or `-`.
 * @throws {Deno.errors.NotCapable} as {@link defaultSocketDir} does.
 * @example
 * ```ts
 * import { channelSocketPath } from "@netsqlite/netsqlite/client";
 * if (!channelSocketPath("my-app").endsWith("channel-my-app.sock")) throw new Error("wrong path");
 * ```
 */
export function channelSocketPath(name: string): string {
  checkChannel(name);
  return join(
    socketDir(`the socket of channel "${name}"`),
    `channel-${name}.${HAS_UNIX_SOCKETS ? "sock" : "port"}`,
  );
}

/**
 * Checks a channel name (see {@link channelSocketPath}), `flag` naming it in
 * the error (`--channel` on a command line).
 *
 * @throws {TypeError} when the name is not 1-64 letters, digits, `.`, `_` or `-`.
 */
export function checkChannel(name: string, flag = "channel"): void {
  if (typeof name !== "string" || !/^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$/.test(name)) {
    throw new TypeError(
      `Invalid ${flag} "${String(name)}": expected 1-64 letters, digits, ".", "_" or "-"`,
    );
  }
}

/**
 * File in which a server without Unix sockets (Windows) announces its TCP
 * port: the default socket path of `database` with `.port` for `.sock`.
 */
export function defaultPortFile(database: string = DEFAULT_DATABASE): string {
  return defaultSocketPath(database).replace(/\.sock$/, ".port");
}

/** Formats an address for messages: `unix:/path` or `tcp:host:port`. */
export function formatAddress(addr: Address): string {
  return addr.transport === "unix"
    ? `unix:${addr.path}`
    : `tcp:${addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname}:${addr.port}`;
}

/**
 * `addr` with a relative Unix socket path made absolute (against the current
 * directory); TCP addresses as they are. For what other processes read: the
 * lock file, the start-up line, a second server's message. The server still
 * binds the path as given (an absolute one may exceed the socket path limit).
 *
 * @example
 * ```ts
 * import { absoluteAddress } from "./address.ts";
 * const a = absoluteAddress({ transport: "unix", path: "s.sock" });
 * if (a.transport !== "unix" || !a.path.startsWith("/")) throw new Error("expected an absolute path");
 * ```
 */
export function absoluteAddress(addr: Address): Address {
  return addr.transport === "unix" ? { transport: "unix", path: resolve(addr.path) } : addr;
}

/**
 * Parses `HOST:PORT` (IPv6 as `[::1]:PORT`).
 *
 * @throws {TypeError} when the text is not `HOST:PORT` with a port 0-65535.
 */
export function parseHostPort(text: string): TcpAddress {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    throw new TypeError(`Cannot parse address "${text}": expected HOST:PORT, e.g. 127.0.0.1:7878`);
  }
  return { transport: "tcp", hostname: m[1] ?? (m[2] || "127.0.0.1"), port };
}

function userName(): string {
  return (envGet("USERNAME") ?? envGet("USER") ?? "user").replace(/[^\w-]/g, "_");
}

function fnv1a(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, "0");
}
