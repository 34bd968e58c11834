/**
 * The connection flags shared by `netsqlite shell` and the administration
 * commands: `--db`, `--socket`, `--channel`, `--tcp`, `--token` (default
 * `$NETSQLITE_TOKEN`) and `--tls-ca FILE`.
 *
 * @module
 */

import type { ConnectOptions } from "../client/options.ts";
import { checkChannel, parseHostPort } from "../transport/address.ts";

/** The `parseArgs` options of the connection flags. */
export const CONNECT_FLAGS = {
  db: { type: "string" },
  socket: { type: "string" },
  channel: { type: "string" },
  tcp: { type: "string" },
  token: { type: "string" },
  "tls-ca": { type: "string" },
} as const;

/** Help lines of the connection flags. */
export const CONNECT_FLAGS_HELP =
  `  --db PATH         the default socket of this database (default ./netsqlite.db)
  --socket PATH     this Unix socket
  --channel NAME    the server of this named channel (deno task serve --channel NAME)
  --tcp HOST:PORT   TCP
  --token SECRET    the server's token (default: $NETSQLITE_TOKEN)
  --tls-ca FILE     TLS with --tcp, trusting the CA certificate(s) in FILE (PEM)`;

/** The values of the connection flags as `parseArgs` returns them. */
export interface ConnectFlagValues {
  db?: string;
  socket?: string;
  channel?: string;
  tcp?: string;
  token?: string;
  "tls-ca"?: string;
}

/**
 * Turns the connection flags into client options. The token is `--token`,
 * else `NETSQLITE_TOKEN` when set and not empty.
 *
 * @param values The parsed flags.
 * @returns the connect options (without `max`).
 * @throws {TypeError} for more than one of `--db`, `--socket`, `--channel`, `--tcp`, an empty
 *   `--db` or `--socket`, an invalid `--channel` name, `--tls-ca` without `--tcp`, a CA file
 *   that cannot be read, or a token UTF-8 cannot carry unchanged.
 */
export function connectOptionsFromFlags(values: ConnectFlagValues): ConnectOptions {
  const given = [values.db, values.socket, values.channel, values.tcp]
    .filter((v) => v !== undefined).length;
  if (given > 1) throw new TypeError("Give at most one of --db, --socket, --channel and --tcp");
  // Checked here, so that a bad value is a bad argument (exit status 2) named by its flag.
  for (const flag of ["db", "socket"] as const) {
    if (values[flag] === "") throw new TypeError(`Invalid --${flag}: it is empty; expected a path`);
  }
  if (values.channel !== undefined) checkChannel(values.channel, "--channel");
  const connect: ConnectOptions = {};
  if (values.socket !== undefined) connect.path = values.socket;
  if (values.channel !== undefined) connect.channel = values.channel;
  if (values.db !== undefined) connect.database = values.db;
  if (values.tcp !== undefined) {
    const { hostname, port } = parseHostPort(values.tcp);
    connect.hostname = hostname;
    connect.port = port;
  }
  if (values.token?.includes("\uFFFD")) {
    // What an argument's bytes that are not UTF-8 become: the token sent would be another one.
    throw new TypeError(
      "Invalid --token: it holds U+FFFD, the replacement character bytes that are not UTF-8 " +
        "become in an argument; give the token as UTF-8 (or in NETSQLITE_TOKEN)",
    );
  }
  const token = values.token ?? envToken();
  if (token !== undefined && token !== "") connect.token = token;
  const ca = values["tls-ca"];
  if (ca !== undefined) {
    if (values.tcp === undefined) throw new TypeError("--tls-ca goes with --tcp HOST:PORT");
    connect.tls = { caCerts: [readCa(ca)] };
  }
  return connect;
}

function envToken(): string | undefined {
  let state: Deno.PermissionState;
  try {
    state = Deno.permissions.querySync({ name: "env", variable: "NETSQLITE_TOKEN" }).state;
  } catch {
    return undefined;
  }
  if (state !== "granted") return undefined;
  try {
    return Deno.env.get("NETSQLITE_TOKEN");
  } catch (err) {
    // Deno refuses a value that is not UTF-8, quoting it: the secret is not repeated here.
    if (!(err instanceof Deno.errors.InvalidData)) throw err;
    throw new TypeError(
      "Invalid NETSQLITE_TOKEN: it is not valid UTF-8; set it to the token as UTF-8",
    );
  }
}

function readCa(file: string): string {
  let text: string;
  try {
    text = Deno.readTextFileSync(file);
  } catch (err) {
    throw new TypeError(`Cannot read --tls-ca "${file}": ${(err as Error).message}`);
  }
  if (!text.includes("-----BEGIN CERTIFICATE-----")) {
    throw new TypeError(`Invalid --tls-ca "${file}": expected PEM certificates`);
  }
  return text;
}

/** API words in connection hints, and what the CLI calls them. */
const HINTS: readonly [RegExp, string][] = [
  [
    /connect\(\{ database \}\) to the file the server serves, or pass the path it printed/,
    "--db with the file the server serves, or --socket with the path it printed",
  ],
  [/connect\(\{ database \}\)/g, "--db"],
  [/in connect\(\{ path \}\)/g, "with --socket"],
  [/pass connect\(\{ token \}\)/g, "pass --token or set NETSQLITE_TOKEN"],
  [/connect\(\{ token \}\)/g, "--token (or NETSQLITE_TOKEN)"],
  [/connect without the tls option/g, "connect without --tls-ca"],
  [/in tls: \{ caCerts: \[pem\] \}, or --tls-ca FILE to the CLI/g, "with --tls-ca FILE"],
  // The server's refusal of backup and vacuum --into names the option of both ways to start it.
  [
    /start it with --backup-dir DIR \(serve\(\{ backupDir \}\)\)/g,
    "start it with --backup-dir DIR",
  ],
];

/**
 * An error message as the CLI shows it: the hints of the client library
 * (`connect({ token })`, `connect({ database })`, the `tls` option) and of
 * the server (`--backup-dir DIR (serve({ backupDir }))`) name the CLI's
 * flags alone.
 *
 * @example
 * ```ts
 * import { withFlagHints } from "./connect_flags.ts";
 * const m = withFlagHints("AUTH: the server requires a token: pass connect({ token })");
 * if (m !== "AUTH: the server requires a token: pass --token or set NETSQLITE_TOKEN") {
 *   throw new Error(m);
 * }
 * ```
 */
export function withFlagHints(message: string): string {
  for (const [api, flags] of HINTS) message = message.replace(api, flags);
  return message;
}
