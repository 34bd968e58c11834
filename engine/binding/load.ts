/**
 * Chooses and loads a {@link Sqlite} implementation: the system's
 * libsqlite3 through FFI, or node:sqlite.
 *
 * @module
 */

import { SqliteError } from "../../protocol/errors.ts";
import { symbols } from "./_ffi_symbols.ts";
import type { Sqlite } from "./binding.ts";
import { FfiSqlite } from "./ffi.ts";
import { NodeSqlite } from "./node.ts";
import { pinLibrary } from "./_pin.ts";
import { mappedFilePath } from "./_libc.ts";

/** Which implementation to load. */
export type EngineChoice = "auto" | "ffi" | "node";

/** Options of {@link loadSqlite}. */
export interface LoadOptions {
  /**
   * `ffi`: libsqlite3 through `Deno.dlopen` (needs `--allow-ffi`), failing
   * when it cannot load; `node`: node:sqlite; `auto`: FFI when a library
   * loads, else node:sqlite (whose `limitations` then begin with why FFI was
   * not used). A library named explicitly (`library`, or
   * `NETSQLITE_SQLITE_LIB`) makes `auto` mean `ffi`: it is used or loading fails.
   *
   * @default env `NETSQLITE_ENGINE`, else `"auto"`
   */
  engine?: EngineChoice;
  /**
   * The library file or name to load.
   *
   * @default env `NETSQLITE_SQLITE_LIB`, else the platform's usual names
   *   (`libsqlite3.so.0`, `libsqlite3.so`; `libsqlite3.dylib`;
   *   `sqlite3.dll`, `winsqlite3.dll`)
   */
  library?: string;
  /**
   * Open every connection with SQLite's double-quoted string literals on
   * (its legacy default): for databases whose schema holds them (see
   * {@link Sqlite.doubleQuotedStrings}).
   * @default {false}
   */
  doubleQuotedStrings?: boolean;
}

/** The error code when the FFI engine was asked for and cannot load. */
export const LOAD_FAILED = "SQLITE_LIBRARY_NOT_LOADED";

/**
 * Loads SQLite as `options` (or the environment) say.
 *
 * @example
 * ```ts
 * import { loadSqlite } from "./load.ts";
 * const sqlite = loadSqlite({ engine: "node" });
 * const db = sqlite.open(":memory:", { readOnly: false, busyTimeout: 0 });
 * const stmt = db.prepare("SELECT 40 + 2")!;
 * if (stmt.all()[0][0] !== 42) throw new Error("wrong answer");
 * db.close();
 * ```
 *
 * @throws {SqliteError} `SQLITE_LIBRARY_NOT_LOADED` when `engine` is `ffi`
 *   and no library loads, naming every file tried and why.
 * @throws {TypeError} for an unknown engine name.
 */
export function loadSqlite(options: LoadOptions = {}): Sqlite {
  const chosen = options.engine ?? engineFromEnv();
  const dqs = options.doubleQuotedStrings ?? false;
  if (chosen === "node") return new NodeSqlite(dqs);
  if (chosen !== "ffi" && chosen !== "auto") {
    throw new TypeError(`Unknown SQLite engine "${chosen}": expected "auto", "ffi" or "node"`);
  }
  const named = explicitLibrary(options.library);
  const engine = named === null ? chosen : "ffi";
  const tried: string[] = [];
  const permitted = ffiAllowed();
  if (!permitted) {
    tried.push(`FFI is not permitted (run with --allow-ffi${UNSCOPED})`);
  } else {
    for (const name of libraryCandidates(options.library)) {
      try {
        const lib = Deno.dlopen(name, symbols);
        // A background step may outlive the isolate: keep its code mapped (see _pin.ts).
        pinLibrary(name);
        const path = loadedPath(name, lib.symbols.sqlite3_libversion());
        return new FfiSqlite(lib.symbols, path, () => lib.close(), dqs);
      } catch (err) {
        tried.push(`"${name}": ${dlopenReason(err)}`);
      }
    }
  }
  if (engine === "auto") return withFallbackReason(new NodeSqlite(dqs), tried.join("; "));
  if (!permitted) {
    // A permission problem: which library file is beside the point.
    throw new SqliteError(
      LOAD_FAILED,
      `Cannot load SQLite through FFI: FFI is not permitted: run with --allow-ffi${UNSCOPED}, ` +
        "or use --engine node",
    );
  }
  const hint = named === null
    ? "set --sqlite-lib or NETSQLITE_SQLITE_LIB to a libsqlite3 file, or use --engine node"
    : `the library was named by ${named}: fix the path, or use --engine node`;
  throw new SqliteError(
    LOAD_FAILED,
    `Cannot load SQLite through FFI: ${tried.join("; ")} (${hint})`,
  );
}

/**
 * Why `Deno.dlopen` failed, once: Deno repeats its prefix (`Could not open
 * library: Could not open library: /x.so: cannot open shared object file`).
 */
function dlopenReason(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.replace(/^(Could not open library: )(?:Could not open library: )+/, "$1");
}

/** Where an explicit library comes from (`--sqlite-lib`, `NETSQLITE_SQLITE_LIB`), or `null`. */
function explicitLibrary(library: string | undefined): string | null {
  if (library !== undefined && library !== "") return "--sqlite-lib (sqliteLib)";
  const fromEnv = readEnv("NETSQLITE_SQLITE_LIB");
  return fromEnv !== undefined && fromEnv !== "" ? "NETSQLITE_SQLITE_LIB" : null;
}

/** node:sqlite chosen by `auto`: its limitations begin with why FFI was not used. */
function withFallbackReason(sqlite: NodeSqlite, why: string): NodeSqlite {
  Object.defineProperty(sqlite, "limitations", {
    value: [`FFI not used: ${why}`, ...sqlite.limitations],
    enumerable: true,
  });
  return sqlite;
}

/** The library names tried in order: the given one, else env, else the platform's usual names. */
export function libraryCandidates(library?: string): string[] {
  if (library !== undefined && library !== "") return [library];
  const fromEnv = readEnv("NETSQLITE_SQLITE_LIB");
  if (fromEnv !== undefined && fromEnv !== "") return [fromEnv];
  switch (Deno.build.os) {
    case "darwin":
      return ["libsqlite3.dylib", "/usr/lib/libsqlite3.dylib"];
    case "windows":
      return ["sqlite3.dll", "winsqlite3.dll"];
    default:
      return ["libsqlite3.so.0", "libsqlite3.so"];
  }
}

/**
 * The full path of the loaded library, as the dynamic loader found it
 * (`dladdr` on the version string it returns; symlinks resolved where they
 * may be read), else from `/proc/self/maps` (Linux, `--allow-all`), else
 * `name`. A name with a slash is shown as given.
 */
function loadedPath(name: string, versionString: Deno.PointerValue): string {
  if (name.includes("/")) return name;
  const found = mappedFilePath(versionString);
  if (found !== null) return realPath(found);
  if (Deno.build.os !== "linux") return name;
  try {
    if (Deno.permissions.querySync({ name: "read", path: "/proc/self/maps" }).state !== "granted") {
      return name;
    }
    for (const line of Deno.readTextFileSync("/proc/self/maps").split("\n")) {
      const path = line.slice(line.indexOf("/"));
      // The mapped file is the symlink's target: libsqlite3.so.0 -> libsqlite3.so.0.8.6.
      if (line.includes("/") && path.slice(path.lastIndexOf("/") + 1).startsWith(name)) return path;
    }
  } catch {
    // fall through (Deno reads /proc/self only under --allow-all)
  }
  return name;
}

/** `path` with its symlinks resolved (libsqlite3.so.0 -> libsqlite3.so.0.8.6), else as given. */
function realPath(path: string): string {
  try {
    if (Deno.permissions.querySync({ name: "read", path }).state !== "granted") return path;
    return Deno.realPathSync(path);
  } catch {
    return path;
  }
}

function engineFromEnv(): EngineChoice {
  const v = readEnv("NETSQLITE_ENGINE");
  if (v === undefined || v === "") return "auto";
  if (v === "auto" || v === "ffi" || v === "node") return v;
  throw new TypeError(
    `Unknown SQLite engine "${v}" in NETSQLITE_ENGINE: expected auto, ffi or node`,
  );
}

/**
 * Why a path after `--allow-ffi` is not enough: Deno lets `dlopen` load the
 * named file but refuses the pointer functions (`UnsafePointerView`) the
 * binding reads SQLite's strings and blobs with.
 */
const UNSCOPED =
  " for all files: with --allow-ffi=PATH Deno refuses the pointer functions the binding needs";

function ffiAllowed(): boolean {
  try {
    return Deno.permissions.querySync({ name: "ffi" }).state === "granted";
  } catch {
    return false;
  }
}

/** What each variable {@link loadSqlite} reads chooses, and the flag and option that choose it instead. */
const ENV_VARIABLES = {
  NETSQLITE_ENGINE: ["engine", "--engine", "engine"],
  NETSQLITE_SQLITE_LIB: ["library", "--sqlite-lib", "sqliteLib"],
} as const;

/**
 * A warning naming the environment variables {@link loadSqlite} would read
 * with `options` and may not: `NETSQLITE_ENGINE` when no engine is given,
 * `NETSQLITE_SQLITE_LIB` when no library is and the engine may be `ffi`, when
 * env access to them is not granted. Without it they count as unset: one
 * an operator set would be ignored with no word. A variable denied on
 * purpose (`--deny-env`) is not named: that was the operator's choice.
 * Never prompts.
 *
 * @returns one line, or `null` when every variable consulted may be read.
 * @example
 * ```ts
 * import { unreadEnvironmentWarning } from "./load.ts";
 * // Both chosen explicitly: no variable is consulted.
 * if (unreadEnvironmentWarning({ engine: "ffi", library: "libsqlite3.so.0" }) !== null) {
 *   throw new Error("expected no warning");
 * }
 * ```
 */
export function unreadEnvironmentWarning(options: LoadOptions = {}): string | null {
  const unread: (keyof typeof ENV_VARIABLES)[] = [];
  let engine: string | undefined = options.engine;
  if (engine === undefined) {
    if (notGranted("NETSQLITE_ENGINE")) unread.push("NETSQLITE_ENGINE");
    else engine = readEnv("NETSQLITE_ENGINE");
  }
  if (engine !== "node" && !options.library && notGranted("NETSQLITE_SQLITE_LIB")) {
    unread.push("NETSQLITE_SQLITE_LIB");
  }
  if (unread.length === 0) return null;
  const one = unread.length === 1;
  const [what, flag, option] = [0, 1, 2].map((i) => unread.map((v) => ENV_VARIABLES[v][i]));
  return `could not read ${unread.join(" and ")} (env access not granted): the ` +
    `${what.join(" and ")} ${one ? "is" : "are"} chosen as if ${one ? "it were" : "they were"} ` +
    `unset; to use ${one ? "it" : "them"} run with --allow-env=${unread.join(",")} (or ` +
    `--allow-env), or give ${flag.join(" and ")} (serve({ ${option.join(", ")} }))`;
}

/** True when env access to `name` is neither granted nor denied on purpose (no prompt). */
function notGranted(name: string): boolean {
  try {
    return Deno.permissions.querySync({ name: "env", variable: name }).state === "prompt";
  } catch {
    return false;
  }
}

/** An environment variable, or undefined when unset or not permitted (no prompt). */
function readEnv(name: string): string | undefined {
  try {
    if (Deno.permissions.querySync({ name: "env", variable: name }).state !== "granted") {
      return undefined;
    }
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}
