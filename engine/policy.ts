/**
 * What clients may ask of the server's SQLite connections, as a pure
 * function over SQLite's authorizer arguments: configuration in, a refusal
 * (typed code and message) or `null` out. The engine installs it in the
 * authorizer of every connection while it prepares a client's statement.
 *
 * Refused by default:
 * - writes of any kind when the server runs read-only (`READONLY`);
 * - `ATTACH`, `DETACH` and `VACUUM INTO` (they open or create any file the
 *   server can), unless `allowAttach` (`FORBIDDEN`);
 * - `load_extension()` and `fts3_tokenizer()` (which reads and sets code
 *   addresses), and reading `sqlite_stmt` (other clients' SQL), always
 *   (`FORBIDDEN`). (TEMP triggers and TEMP names that shadow a table need
 *   the schema: `connection.ts` refuses them.)
 * - setting a PRAGMA of {@link UNSAFE_PRAGMAS} (durability and file safety)
 *   or of {@link CONNECTION_PRAGMAS} (settings of the shared connection, which
 *   would change every other client's behaviour), unless
 *   `allowUnsafePragmas` (`FORBIDDEN`). Reading them stays allowed.
 *
 * @module
 */

import { ErrorCode } from "../protocol/errors.ts";

/** What the server lets clients do beyond plain reads and writes. */
export interface PolicyConfig {
  /** Refuse every write (the database is opened read-only). */
  readonly: boolean;
  /** Permit `ATTACH`, `DETACH` and `VACUUM INTO`. */
  allowAttach: boolean;
  /** Permit setting the PRAGMAs of {@link UNSAFE_PRAGMAS} and {@link CONNECTION_PRAGMAS}. */
  allowUnsafePragmas: boolean;
}

/** Why a statement was refused: a stable code and a message for the client. */
export interface Refusal {
  /** `READONLY` or `FORBIDDEN`. */
  code: typeof ErrorCode.ReadOnly | typeof ErrorCode.Forbidden;
  /** What was refused, why, and how to permit it. */
  message: string;
}

/** An authorizer-style check: SQLite's five authorizer arguments in, a refusal or `null` out. */
export type PolicyCheck = (
  action: number,
  arg1: string | null,
  arg2: string | null,
  dbName: string | null,
  trigger: string | null,
) => Refusal | null;

/**
 * PRAGMAs that change how safely the database file is written or read
 * (durability, journaling, locking, schema integrity): setting them is
 * refused unless `--allow-unsafe-pragmas`.
 */
export const UNSAFE_PRAGMAS: readonly string[] = [
  "auto_vacuum",
  "cell_size_check",
  "checkpoint_fullfsync",
  "data_store_directory",
  "default_cache_size",
  "fullfsync",
  "hard_heap_limit",
  "journal_mode",
  "journal_size_limit",
  "locking_mode",
  "max_page_count",
  "mmap_size",
  "page_size",
  "schema_version",
  "secure_delete",
  "soft_heap_limit",
  "synchronous",
  "temp_store_directory",
  "threads",
  "wal_autocheckpoint",
  "writable_schema",
];

/**
 * PRAGMAs that set state of the SQLite connection itself. Every client's
 * writes share the server's one writer connection, so setting one would
 * change what every other client's statements do: setting them is refused
 * unless `--allow-unsafe-pragmas`.
 */
export const CONNECTION_PRAGMAS: readonly string[] = [
  "analysis_limit",
  "automatic_index",
  "busy_timeout",
  "cache_size",
  "cache_spill",
  "case_sensitive_like",
  "count_changes",
  "defer_foreign_keys",
  "empty_result_callbacks",
  "encoding",
  "foreign_keys",
  "full_column_names",
  "ignore_check_constraints",
  "legacy_alter_table",
  "legacy_file_format",
  "query_only",
  "read_uncommitted",
  "recursive_triggers",
  "reverse_unordered_selects",
  "short_column_names",
  "temp_store",
  "trusted_schema",
];

/** PRAGMAs that write the database file when given a value (refused when read-only). */
const WRITING_PRAGMAS = new Set(["application_id", "user_version", "incremental_vacuum"]);

/** SQLite authorizer action codes used here (fixed by SQLite's C API). */
const Action = {
  PRAGMA: 19,
  READ: 20,
  SELECT: 21,
  TRANSACTION: 22,
  ATTACH: 24,
  DETACH: 25,
  FUNCTION: 31,
  SAVEPOINT: 32,
  RECURSIVE: 33,
} as const;

/** Actions that never change the database. */
const NON_WRITING = new Set<number>([
  Action.PRAGMA,
  Action.READ,
  Action.SELECT,
  Action.TRANSACTION,
  Action.ATTACH,
  Action.DETACH,
  Action.FUNCTION,
  Action.SAVEPOINT,
  Action.RECURSIVE,
]);

const unsafe = new Set(UNSAFE_PRAGMAS);
const perConnection = new Set(CONNECTION_PRAGMAS);

/**
 * Builds the check for `config`.
 *
 * @param config What to permit.
 * @returns a function to call from SQLite's authorizer.
 * @example
 * ```ts
 * import { createPolicy } from "./policy.ts";
 * const check = createPolicy({ readonly: false, allowAttach: false, allowUnsafePragmas: false });
 * if (check(19, "synchronous", "OFF", null, null)?.code !== "FORBIDDEN") throw new Error("must refuse");
 * if (check(19, "synchronous", null, null, null) !== null) throw new Error("reading is fine");
 * ```
 */
export function createPolicy(config: PolicyConfig): PolicyCheck {
  const { readonly, allowAttach, allowUnsafePragmas } = config;
  return (action, arg1, arg2) => {
    if (action === Action.PRAGMA) {
      if (arg2 === null || arg1 === null) return null; // reading a setting
      const name = arg1.toLowerCase();
      if (readonly && WRITING_PRAGMAS.has(name)) return readOnlyRefusal(`set PRAGMA ${name}`);
      if (allowUnsafePragmas) return null;
      if (unsafe.has(name)) {
        return forbidden(
          `Cannot set PRAGMA ${name}: it changes the durability or safety of the database ` +
            "for every client; the server sets it (start it with --allow-unsafe-pragmas to permit)",
        );
      }
      if (perConnection.has(name)) {
        return forbidden(
          `Cannot set PRAGMA ${name}: it is a setting of the server's shared SQLite connection ` +
            "and would change every other client's statements (start the server with " +
            "--allow-unsafe-pragmas to permit)",
        );
      }
      return null;
    }
    if (action === Action.ATTACH || action === Action.DETACH) {
      if (allowAttach) return null;
      // arg2 is "VACUUM INTO" when the engine checks a VACUUM INTO target (SQLite passes null).
      const verb = action === Action.DETACH ? "detach" : arg2 === "VACUUM INTO" ? arg2 : "attach";
      const what = `${verb} "${arg1 ?? ""}"`;
      return forbidden(
        `Cannot ${what}: ATTACH, DETACH and VACUUM INTO would let clients open or create any ` +
          "file the server can (start the server with --allow-attach to permit)",
      );
    }
    if (action === Action.FUNCTION) {
      const fn = arg2?.toLowerCase();
      if (fn === "load_extension") {
        return forbidden("Cannot call load_extension(): the server never loads extensions");
      }
      if (fn === "fts3_tokenizer") {
        return forbidden(
          "Cannot call fts3_tokenizer(): it reads and sets code addresses in the server process",
        );
      }
      return null;
    }
    if (action === Action.READ && arg1?.toLowerCase() === "sqlite_stmt") {
      return forbidden(
        "Cannot read sqlite_stmt: it shows the SQL of other clients' statements on the " +
          "server's shared connections",
      );
    }

    if (readonly && !NON_WRITING.has(action)) return readOnlyRefusal("write");
    return null;
  };
}

function forbidden(message: string): Refusal {
  return { code: ErrorCode.Forbidden, message };
}

function readOnlyRefusal(what: string): Refusal {
  return {
    code: ErrorCode.ReadOnly,
    message: `Cannot ${what}: the server runs read-only (--readonly)`,
  };
}
