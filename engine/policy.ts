/**
 * What clients may ask of the server's SQLite connections, as a pure
 * function over SQLite's authorizer arguments: configuration in, a refusal
 * (typed code and message) or `null` out. The engine installs it in the
 * authorizer of every connection while it prepares a client's statement;
 * while statements run, it is asked about reads, function calls and ATTACH
 * (SQLite preparing a statement again, a virtual table's own statements:
 * an FTS table reads its content table, which may be `sqlite_stmt`).
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
 *   `allowUnsafePragmas` (`FORBIDDEN`). Reading them stays allowed, and so
 *   does setting one to the value it already has, or `defer_foreign_keys`
 *   inside a transaction: such a refusal carries {@link Refusal.unless},
 *   which the connection decides after the prepare.
 * - `VACUUM`, `VACUUM INTO` (even with `allowAttach`), `PRAGMA incremental_vacuum`,
 *   `PRAGMA wal_checkpoint` and `PRAGMA optimize` when read-only (`READONLY`):
 *   SQLite's authorizer reports nothing for `VACUUM`, so the connection
 *   calls the check with {@link VACUUM_ACTION} for every `VACUUM` statement.
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
  /**
   * Set when the statement is permitted after all in a state only the
   * connection can see: then the authorizer lets it through and the
   * connection decides once it is prepared (see {@link PragmaCondition}).
   */
  unless?: PragmaCondition;
}

/**
 * When a refused `PRAGMA name = value` is harmless after all: it sets the
 * value the connection already has (read back with `PRAGMA schema.name` and
 * compared by {@link samePragmaValue}), or, with `inTransaction`, it runs
 * inside a transaction (SQLite resets `defer_foreign_keys` at every COMMIT
 * and ROLLBACK, so it cannot reach another client's statements).
 */
export interface PragmaCondition {
  /** The PRAGMA's name, lower case (one of the refused lists). */
  pragma: string;
  /** The schema it was given for (`main`, `temp`, ...), or `null`. */
  schema: string | null;
  /** The value as SQLite's authorizer passed it. */
  value: string;
  /** Also permitted while the connection is inside a transaction. */
  inTransaction: boolean;
}

/**
 * Not an authorizer code (SQLite's authorizer reports nothing for `VACUUM`):
 * the connection calls the check with it for every `VACUUM` statement, with
 * `arg2` `"INTO"` when it has an `INTO` clause, and `arg1` its target when
 * that is a plain string literal (else `null`).
 */
export const VACUUM_ACTION = 1000;

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

/** How a refusal names an ATTACH, DETACH or VACUUM INTO target that is no string literal. */
const NOT_LITERAL = "given by a parameter or an expression";

/** PRAGMAs that write the database even without a value (refused when read-only). */
const ACTING_PRAGMAS = new Set(["incremental_vacuum", "wal_checkpoint", "optimize"]);

/** PRAGMAs that write the database file when given a value (refused when read-only). */
const WRITING_PRAGMAS = new Set(["application_id", "user_version"]);

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
  return (action, arg1, arg2, dbName) => {
    if (action === Action.PRAGMA) {
      const name = arg1?.toLowerCase() ?? "";
      // With or without an argument, these write the database: incremental_vacuum
      // frees pages, wal_checkpoint copies the WAL back (when another process
      // wrote, it fails with SQLITE_IOERR_WRITE on a read-only file), optimize
      // may run ANALYZE.
      if (readonly && ACTING_PRAGMAS.has(name)) return readOnlyRefusal(`run PRAGMA ${name}`);
      if (arg2 === null || arg1 === null) return null; // reading a setting
      if (readonly && WRITING_PRAGMAS.has(name)) return readOnlyRefusal(`set PRAGMA ${name}`);
      if (allowUnsafePragmas) return null;
      const unless = { pragma: name, schema: dbName, value: arg2, inTransaction: false };
      const already = "; setting the value it already has is allowed";
      if (unsafe.has(name)) {
        return forbidden(
          `Cannot set PRAGMA ${name} to "${arg2}": it changes the durability or safety of the ` +
            `database for every client; the server sets it${already} (start it with ` +
            "--allow-unsafe-pragmas to permit)",
          unless,
        );
      }
      if (name === "defer_foreign_keys") {
        return forbidden(
          `Cannot set PRAGMA defer_foreign_keys to "${arg2}" outside a transaction: it would ` +
            "apply to the next client's write on the server's shared SQLite connection; set it " +
            "inside your transaction (SQLite resets it at COMMIT and ROLLBACK)",
          { ...unless, inTransaction: true },
        );
      }
      if (name === "busy_timeout") {
        // The common start-up line of apps and ORMs: what it asks for, the server does.
        return forbidden(
          `Cannot set PRAGMA busy_timeout to "${arg2}": the server waits for locks itself, for ` +
            "every client, up to its --busy-timeout (the FFI engine off its main thread: its " +
            `connection reports 0): drop the line${already} (start the server with ` +
            "--allow-unsafe-pragmas to permit)",
          unless,
        );
      }
      if (perConnection.has(name)) {
        return forbidden(
          `Cannot set PRAGMA ${name} to "${arg2}": it is a setting of the server's shared ` +
            `SQLite connection and would change every other client's statements${already} ` +
            "(start the server with --allow-unsafe-pragmas to permit)",
          unless,
        );
      }
      return null;
    }
    if (action === VACUUM_ACTION) {
      if (arg2 !== "INTO") return readonly ? readOnlyRefusal("VACUUM") : null;
      // It writes a new file: no write of a read-only server, --allow-attach or not.
      if (readonly) return readOnlyRefusal("VACUUM INTO");
      if (allowAttach) return null;
      const target = arg1 === null ? ` a file ${NOT_LITERAL}` : ` "${arg1}"`;
      return forbidden(
        `Cannot VACUUM INTO${target}: ATTACH, DETACH and VACUUM INTO ` +
          "would let clients open or create any file the server can (start the server with " +
          "--allow-attach to permit)",
      );
    }
    if (action === Action.ATTACH || action === Action.DETACH) {
      if (allowAttach) return null;
      // (A VACUUM INTO that slipped past VACUUM_ACTION attaches its target when it runs.)
      // SQLite passes the file (ATTACH) or name (DETACH) when it is a string
      // literal or a plain name, else NULL.
      const what = action === Action.DETACH
        ? `detach ${arg1 === null ? `a database ${NOT_LITERAL}` : `"${arg1}"`}`
        : `attach ${arg1 === null ? `a database file ${NOT_LITERAL}` : `"${arg1}"`}`;
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
    // The table-valued form runs PRAGMA optimize as it is read.
    if (readonly && action === Action.READ && arg1?.toLowerCase() === "pragma_optimize") {
      return readOnlyRefusal("run PRAGMA optimize");
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

function forbidden(message: string, unless?: PragmaCondition): Refusal {
  return unless === undefined
    ? { code: ErrorCode.Forbidden, message }
    : { code: ErrorCode.Forbidden, message, unless };
}

/** Boolean words SQLite's flag PRAGMAs read (`sqlite3GetBoolean`), as their values. */
const BOOLEAN_WORDS: Readonly<Record<string, bigint>> = {
  on: 1n,
  yes: 1n,
  true: 1n,
  off: 0n,
  no: 0n,
  false: 0n,
};

/** Named values of PRAGMAs whose reading answers a number. */
const NAMED_VALUES: Readonly<Record<string, Readonly<Record<string, bigint>>>> = {
  synchronous: { off: 0n, normal: 1n, full: 2n, extra: 3n },
  temp_store: { default: 0n, file: 1n, memory: 2n },
  auto_vacuum: { none: 0n, full: 1n, incremental: 2n },
  secure_delete: { ...BOOLEAN_WORDS, fast: 2n },
};

/** PRAGMAs that are plain on/off switches of the connection (SQLite's flag PRAGMAs). */
const FLAG_PRAGMAS = new Set([
  "automatic_index",
  "cell_size_check",
  "checkpoint_fullfsync",
  "count_changes",
  "defer_foreign_keys",
  "empty_result_callbacks",
  "foreign_keys",
  "full_column_names",
  "fullfsync",
  "ignore_check_constraints",
  "legacy_alter_table",
  "legacy_file_format",
  "query_only",
  "read_uncommitted",
  "recursive_triggers",
  "reverse_unordered_selects",
  "short_column_names",
  "trusted_schema",
  "writable_schema",
]);

/**
 * True when `PRAGMA pragma = requested` sets exactly the value that reading
 * the PRAGMA answered (`current`): `ON`, `TRUE`, `YES` and `1` are 1 for a
 * flag, `FULL` is 2 for `synchronous`, `WAL` is `wal` for `journal_mode`.
 * Only spellings SQLite reads the same way count: anything else (`+1`,
 * `0x1`, a word the PRAGMA does not know, a value SQLite would clamp) is
 * false, so that the statement stays refused.
 *
 * @param pragma The PRAGMA's name, lower case.
 * @param requested The value given, as SQLite's authorizer passed it.
 * @param current The one value that reading the PRAGMA answered.
 * @returns whether running the statement would leave the setting as it is.
 * @example
 * ```ts
 * import { samePragmaValue } from "./policy.ts";
 * if (!samePragmaValue("foreign_keys", "ON", 1)) throw new Error("ON is 1");
 * if (samePragmaValue("synchronous", "OFF", 2)) throw new Error("OFF is not FULL");
 * ```
 */
export function samePragmaValue(pragma: string, requested: string, current: unknown): boolean {
  const word = requested.toLowerCase();
  if (typeof current === "string") return word === current.toLowerCase();
  if (typeof current !== "number" && typeof current !== "bigint") return false;
  if (typeof current === "number" && !Number.isSafeInteger(current)) return false;
  let wanted: bigint | undefined;
  if (/^\d{1,18}$/.test(word)) wanted = BigInt(word);
  // Flags read a leading "-" as an unknown word (off); numeric PRAGMAs as a sign.
  else if (/^-\d{1,18}$/.test(word) && !FLAG_PRAGMAS.has(pragma)) wanted = BigInt(word);
  else wanted = (NAMED_VALUES[pragma] ?? (FLAG_PRAGMAS.has(pragma) ? BOOLEAN_WORDS : {}))[word];
  return wanted !== undefined && wanted === BigInt(current);
}

function readOnlyRefusal(what: string): Refusal {
  return {
    code: ErrorCode.ReadOnly,
    message: `Cannot ${what}: the server runs read-only (--readonly)`,
  };
}
