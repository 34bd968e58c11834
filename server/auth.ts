/**
 * The shared secret a server may require in every client's hello: where it
 * comes from (`--token`, `NETSQLITE_TOKEN`, `--token-file`) and how a
 * presented token is checked (in constant time).
 *
 * @module
 */

import { createHash, timingSafeEqual } from "node:crypto";

/** Environment variable that holds the server's token when no flag gives one. */
export const TOKEN_ENV = "NETSQLITE_TOKEN";

/**
 * Longest token, in UTF-8 bytes: a hello frame before authentication may
 * hold at most 4 KiB (`MAX_HELLO_FRAME`), so that unauthenticated peers
 * cannot make the server hold much for them.
 */
export const MAX_TOKEN_BYTES = 1024;

/** Shorter tokens draw a warning on a TCP address other than loopback. */
export const MIN_NETWORK_TOKEN_LENGTH = 16;

/**
 * A token with a lone UTF-16 surrogate is refused: UTF-8 cannot hold one, so
 * it would be hashed (and a client would send it) as U+FFFD, and a token
 * other than the one given would be accepted.
 */
const LONE_SURROGATE = 'Invalid option "token": it has a lone UTF-16 surrogate, which UTF-8 ' +
  "cannot represent (it would become U+FFFD, another token)";

/** Checks the token a client presents in its hello. */
export class TokenGate {
  readonly #digest: Uint8Array;

  /**
   * @param token The secret clients must present; not empty, at most
   *   {@link MAX_TOKEN_BYTES}, well-formed UTF-16 (no lone surrogate).
   * @throws {TypeError} when the token is empty, too long, or has a lone surrogate.
   */
  constructor(token: string) {
    if (token === "") throw new TypeError('Invalid option "token": expected a non-empty string');
    if (!token.isWellFormed()) throw new TypeError(LONE_SURROGATE);
    const bytes = new TextEncoder().encode(token).length;
    if (bytes > MAX_TOKEN_BYTES) {
      throw new TypeError(
        `Invalid option "token": ${bytes} bytes is longer than ${MAX_TOKEN_BYTES} (UTF-8)`,
      );
    }
    this.#digest = sha256(token);
    this.length = token.length;
  }

  /** The token's length in characters (to warn about short ones). */
  readonly length: number;

  /**
   * Checks `presented` against the token. Both are hashed first, so the
   * comparison takes the same time whatever the presented length or content.
   *
   * @returns `null` when accepted, else why not (for the client and the log).
   * @example
   * ```ts
   * import { TokenGate } from "./auth.ts";
   * const gate = new TokenGate("s3cret");
   * if (gate.check("s3cret") !== null) throw new Error("must accept");
   * if (gate.check("wrong") === null || gate.check(undefined) === null) throw new Error("must refuse");
   * ```
   */
  check(presented: unknown): string | null {
    if (presented === undefined || presented === null) {
      return "the server requires a token: pass connect({ token })";
    }
    if (typeof presented !== "string") return "the token must be a string";
    return timingSafeEqual(sha256(presented), this.#digest) ? null : "wrong token";
  }
}

function sha256(text: string): Uint8Array {
  return createHash("sha256").update(text, "utf8").digest();
}

/**
 * Reads a token file: its content, which must be UTF-8, without the
 * trailing line break.
 *
 * @throws {TypeError} when the file cannot be read, is not valid UTF-8
 *   (decoding would put U+FFFD in place of the bytes that are not: another
 *   token than the file holds), or holds no token.
 */
export function readTokenFile(path: string): string {
  let text: string;
  let bytes: Uint8Array;
  try {
    bytes = Deno.readFileSync(path);
  } catch (err) {
    throw new TypeError(`Cannot read token file "${path}": ${(err as Error).message}`, {
      cause: err,
    });
  }
  try {
    // A leading byte order mark (some Windows editors write one) is not part of the token.
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch (err) {
    throw new TypeError(
      `Cannot use token file "${path}": it is not valid UTF-8 (write the token as UTF-8 text)`,
      { cause: err },
    );
  }
  const token = text.replace(/\r?\n$/, "");
  if (token === "") throw new TypeError(`Cannot use token file "${path}": it is empty`);
  return token;
}

/**
 * Why a token file is too open: a warning when its group or others may read
 * it (POSIX permissions), else `null` (also where permissions cannot be read).
 *
 * @example
 * ```ts
 * import { tokenFileWarning } from "./auth.ts";
 * const path = await Deno.makeTempFile();
 * await Deno.chmod(path, 0o644);
 * if (tokenFileWarning(path) === null) throw new Error("expected a warning");
 * await Deno.chmod(path, 0o600);
 * if (tokenFileWarning(path) !== null) throw new Error("expected none");
 * ```
 */
export function tokenFileWarning(path: string): string | null {
  let mode: number | null;
  try {
    mode = Deno.statSync(path).mode;
  } catch {
    return null;
  }
  if (mode === null || (mode & 0o044) === 0) return null;
  const who = (mode & 0o004) !== 0 ? "every user" : "its group";
  return `token file "${path}" is readable by ${who} (mode 0${(mode & 0o777).toString(8)}): ` +
    `anyone who reads it can read and change the database; chmod 600 "${path}"`;
}

/**
 * True for addresses only this machine can reach: `localhost`, 127.0.0.0/8
 * and `::1`.
 */
export function isLoopback(hostname: string): boolean {
  const h = hostname.toLowerCase().replace(/^\[|\]$/g, "");
  return h === "localhost" || h === "::1" || /^127\.\d+\.\d+\.\d+$/.test(h) ||
    /^::ffff:127\.\d+\.\d+\.\d+$/.test(h);
}
