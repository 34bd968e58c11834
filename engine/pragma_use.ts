/**
 * Which PRAGMAs only read, and where a read of one may run: on a read
 * connection (its answer is the database's, the same on every connection of
 * the file once committed) or on the writer alone (its answer is a setting
 * or state of the connection that runs it). `connection.ts` classifies
 * statements by it; cluster mode (`dqlite/_sql_shape.ts`) tells a reading
 * PRAGMA from a writing one by the same list.
 *
 * @module
 */

import { foldCase, statementTokens } from "./_sql_text.ts";

/**
 * PRAGMAs that only report, whatever their argument (which names what to
 * report on: `table_info(t)`, `integrity_check(10)`): they read the schema,
 * the file or the library, never set anything.
 */
export const QUERY_PRAGMAS: readonly string[] = [
  "collation_list",
  "compile_options",
  "database_list",
  "foreign_key_check",
  "foreign_key_list",
  "function_list",
  "index_info",
  "index_list",
  "index_xinfo",
  "integrity_check",
  "module_list",
  "pragma_list",
  "quick_check",
  "table_info",
  "table_list",
  "table_xinfo",
];

/**
 * Settings stored in the database file (its header or schema): read without
 * a value (`PRAGMA user_version`), a read connection answers what the
 * writer's would once committed. (`journal_mode` is WAL in the file; the
 * server sets it. Per-connection settings and states are not here:
 * `foreign_keys`, which the server turns on for the writer alone,
 * `data_version`, which counts other connections' commits (see
 * {@link COUNTER_PRAGMAS}), `cache_size`,
 * `busy_timeout`, `max_page_count`, ...)
 */
export const FILE_SETTINGS: readonly string[] = [
  "application_id",
  "auto_vacuum",
  "encoding",
  "freelist_count",
  "journal_mode",
  "page_count",
  "page_size",
  "schema_version",
  "user_version",
];

/**
 * A counter of the connection that reads it: `data_version` changes when
 * another connection commits. Every client's commits are the writer's own,
 * so the writer's would never change for them: the shared read connection
 * answers it (it sees the writer's commits and other programs' alike), also
 * inside a transaction and while TEMP objects exist, for the plain statement
 * ({@link isDataVersionRead}).
 */
export const COUNTER_PRAGMAS: readonly string[] = ["data_version"];

/** PRAGMAs that act (checkpoint, vacuum, analyze, free memory) even without a value. */
export const ACTING_PRAGMAS: readonly string[] = [
  "incremental_vacuum",
  "optimize",
  "shrink_memory",
  "wal_checkpoint",
];

/**
 * Where a PRAGMA runs: `reader` (it only reads what every connection of the
 * file answers alike), `writer` (it only reads, but a setting or state of
 * the connection that runs it: the writer's is the one that counts),
 * `write` (it sets or does something).
 */
export type PragmaUse = "reader" | "writer" | "write";

const query = new Set(QUERY_PRAGMAS);
const fileSettings = new Set(FILE_SETTINGS);
const acting = new Set(ACTING_PRAGMAS);
const counters = new Set(COUNTER_PRAGMAS);

/**
 * Where `PRAGMA name` (given `arg`, as SQLite's authorizer passes it: the
 * value after `=` or in parentheses, `null` without one) may run.
 *
 * @param name The PRAGMA's name (any case).
 * @param arg Its argument or value, or `null`.
 * @returns see {@link PragmaUse}.
 * @example
 * ```ts
 * import { pragmaUse } from "./pragma_use.ts";
 * if (pragmaUse("user_version", null) !== "reader") throw new Error("a file setting");
 * if (pragmaUse("user_version", "5") !== "write") throw new Error("sets it");
 * if (pragmaUse("table_info", "t") !== "reader") throw new Error("reads by its argument");
 * if (pragmaUse("foreign_keys", null) !== "writer") throw new Error("a connection's setting");
 * ```
 */
export function pragmaUse(name: string, arg: string | null): PragmaUse {
  const n = name.toLowerCase();
  if (query.has(n)) return "reader";
  if (arg !== null || acting.has(n)) return "write";
  return fileSettings.has(n) || counters.has(n) ? "reader" : "writer";
}

/**
 * True when `sql` reads `data_version` and nothing else: plainly
 * (`PRAGMA data_version`, `PRAGMA main.data_version`) or table-valued
 * (`SELECT data_version FROM pragma_data_version`, `SELECT *` too, the
 * table maybe `main.` and `()`), which the shared read connection answers
 * wherever the session's other statements run (see {@link COUNTER_PRAGMAS}):
 * answered by another connection (a cursor's, the writer in a transaction),
 * it would count another connection's view of the commits.
 *
 * @param sql One statement's text.
 * @returns whether it is that read.
 * @example
 * ```ts
 * import { isDataVersionRead } from "./pragma_use.ts";
 * if (!isDataVersionRead("pragma Main.DATA_VERSION;")) throw new Error("the plain read");
 * if (!isDataVersionRead("SELECT * FROM pragma_data_version")) throw new Error("table-valued");
 * if (isDataVersionRead("PRAGMA data_version = 3")) throw new Error("not a read");
 * ```
 */
export function isDataVersionRead(sql: string): boolean {
  // (Asked of every statement: long text, or text without the name, is not it.)
  if (sql.length > 256 || !DATA_VERSION.test(sql)) return false;
  // Names folded; anything else (strings, numbers, punctuation) kept apart by a prefix.
  const words = statementTokens(sql).filter((t) => t.kind !== "semicolon")
    .map((t) => t.kind === "word" || t.kind === "name" ? foldCase(t.text) : `${t.kind}:${t.text}`);
  if (words[0] === "pragma") {
    if (words.length === 2) return words[1] === "data_version";
    return words.length === 4 && words[1] === "main" && words[2] === "punct:." &&
      words[3] === "data_version";
  }
  if (words[0] !== "select" || (words[1] !== "data_version" && words[1] !== "punct:*")) {
    return false;
  }
  let i = words[2] === "from" ? 3 : -1;
  if (i < 0) return false;
  if (words[i] === "main" && words[i + 1] === "punct:.") i += 2;
  if (words[i++] !== "pragma_data_version") return false;
  if (words[i] === "punct:(" && words[i + 1] === "punct:)") i += 2;
  return i === words.length;
}

const DATA_VERSION = /data_version/i;
