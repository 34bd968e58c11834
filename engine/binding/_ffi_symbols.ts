/**
 * The C surface of SQLite that the FFI binding calls, as data for
 * `Deno.dlopen`: one entry per C function, each parameter commented with its
 * C declaration. Every `sqlite3_int64` is `"i64"` (Deno returns a number
 * when it is a safe integer, else a bigint), so no change count or rowid is
 * cut. Requires SQLite 3.37 or later (`sqlite3_changes64`).
 *
 * @module
 */

/** Symbols loaded from libsqlite3. */
export const symbols = {
  sqlite3_libversion: {
    parameters: [],
    result: "pointer",
  },
  sqlite3_open_v2: {
    parameters: [
      "buffer", // const char *filename (UTF-8, NUL-terminated)
      "buffer", // sqlite3 **ppDb
      "i32", // int flags
      "pointer", // const char *zVfs
    ],
    result: "i32",
  },
  sqlite3_close_v2: {
    parameters: [
      "pointer", // sqlite3 *db
    ],
    result: "i32",
  },
  sqlite3_extended_result_codes: {
    parameters: [
      "pointer", // sqlite3 *db
      "i32", // int onoff
    ],
    result: "i32",
  },
  /**
   * `int sqlite3_db_config(sqlite3 *db, int op, ...)` for the options that
   * take `(int onoff, int *pRes)`, called only with `onoff` 0 or 1 and
   * `pRes` NULL. Deno FFI has no variadic calls, and ABIs differ on where
   * variadic arguments go: in the next registers (x86-64 SysV, Windows x64,
   * AAPCS64 on Linux) or on the stack (Apple arm64). The declaration passes
   * `onoff` and `pRes` in both places: right after `op`, then again as the
   * ninth and tenth arguments, past the eight argument registers of every
   * supported ABI (x86-64 SysV has six, Windows x64 four, arm64 eight), each
   * 8 bytes where Apple's callee reads its first two variadic slots. The
   * padding between them is NULL. The callee reads the pair from wherever
   * its ABI puts variadic arguments; the rest are ignored (the caller pops
   * them).
   */
  sqlite3_db_config_int: {
    name: "sqlite3_db_config",
    parameters: [
      "pointer", // sqlite3 *db
      "i32", // int op
      "i64", // int onoff (register-passed variadic)
      "pointer", // int *pRes (register-passed variadic): NULL
      "pointer", // padding: NULL
      "pointer", // padding: NULL
      "pointer", // padding: NULL
      "pointer", // padding: NULL
      "i64", // int onoff (stack-passed variadic, Apple arm64): same value
      "pointer", // int *pRes (stack-passed variadic, Apple arm64): NULL
    ],
    result: "i32",
  },
  sqlite3_busy_timeout: {
    parameters: [
      "pointer", // sqlite3 *db
      "i32", // int ms
    ],
    result: "i32",
  },
  sqlite3_errmsg: {
    parameters: [
      "pointer", // sqlite3 *db
    ],
    result: "pointer",
  },
  sqlite3_errstr: {
    parameters: [
      "i32", // int rc
    ],
    result: "pointer",
  },
  sqlite3_extended_errcode: {
    parameters: [
      "pointer", // sqlite3 *db
    ],
    result: "i32",
  },
  sqlite3_system_errno: {
    parameters: [
      "pointer", // sqlite3 *db
    ],
    result: "i32",
  },
  sqlite3_get_autocommit: {
    parameters: [
      "pointer", // sqlite3 *db
    ],
    result: "i32",
  },
  sqlite3_changes64: {
    parameters: [
      "pointer", // sqlite3 *db
    ],
    result: "i64",
  },
  sqlite3_total_changes64: {
    parameters: [
      "pointer", // sqlite3 *db
    ],
    result: "i64",
  },
  sqlite3_last_insert_rowid: {
    parameters: [
      "pointer", // sqlite3 *db
    ],
    result: "i64",
  },
  sqlite3_set_last_insert_rowid: {
    parameters: [
      "pointer", // sqlite3 *db
      "i64", // sqlite3_int64
    ],
    result: "void",
  },
  sqlite3_limit: {
    parameters: [
      "pointer", // sqlite3 *db
      "i32", // int id
      "i32", // int newVal
    ],
    result: "i32",
  },
  sqlite3_interrupt: {
    parameters: [
      "pointer", // sqlite3 *db
    ],
    result: "void",
  },
  sqlite3_progress_handler: {
    parameters: [
      "pointer", // sqlite3 *db
      "i32", // int nOps
      "function", // int (*xProgress)(void *)
      "pointer", // void *pArg
    ],
    result: "void",
  },
  sqlite3_set_authorizer: {
    parameters: [
      "pointer", // sqlite3 *db
      "function", // int (*xAuth)(void *, int, const char *, const char *, const char *, const char *)
      "pointer", // void *pUserData
    ],
    result: "i32",
  },
  sqlite3_update_hook: {
    parameters: [
      "pointer", // sqlite3 *db
      "function", // void (*xUpdate)(void *, int, const char *, const char *, sqlite3_int64)
      "pointer", // void *pArg
    ],
    result: "pointer",
  },
  /**
   * Absent unless SQLite was built with `SQLITE_ENABLE_PREUPDATE_HOOK` (the
   * Debian and Ubuntu packages are): `null` then, and `Db.onRowidChange()`
   * answers false.
   */
  sqlite3_preupdate_hook: {
    parameters: [
      "pointer", // sqlite3 *db
      // void (*xPreUpdate)(void *pCtx, sqlite3 *db, int op, char const *zDb,
      //   char const *zName, sqlite3_int64 iKey1, sqlite3_int64 iKey2)
      "function",
      "pointer", // void *pCtx
    ],
    result: "pointer",
    optional: true,
  },
  /** With the preupdate hook (absent without it): a column of the row as it was. */
  sqlite3_preupdate_old: {
    parameters: [
      "pointer", // sqlite3 *db
      "i32", // int iColumn
      "buffer", // sqlite3_value **ppValue
    ],
    result: "i32",
    optional: true,
  },
  /** With the preupdate hook (absent without it): a column of the row as it will be. */
  sqlite3_preupdate_new: {
    parameters: [
      "pointer", // sqlite3 *db
      "i32", // int iColumn
      "buffer", // sqlite3_value **ppValue
    ],
    result: "i32",
    optional: true,
  },
  sqlite3_value_type: {
    parameters: ["pointer"], // sqlite3_value *
    result: "i32",
  },
  sqlite3_value_int64: {
    parameters: ["pointer"], // sqlite3_value *
    result: "i64",
  },
  sqlite3_value_double: {
    parameters: ["pointer"], // sqlite3_value *
    result: "f64",
  },
  sqlite3_value_text: {
    parameters: ["pointer"], // sqlite3_value * (returns const unsigned char *)
    result: "pointer",
  },
  sqlite3_value_blob: {
    parameters: ["pointer"], // sqlite3_value * (returns const void *)
    result: "pointer",
  },
  sqlite3_value_bytes: {
    parameters: ["pointer"], // sqlite3_value *
    result: "i32",
  },
  sqlite3_exec: {
    parameters: [
      "pointer", // sqlite3 *db
      "buffer", // const char *sql (UTF-8, NUL-terminated)
      "pointer", // int (*callback)(void *, int, char **, char **)
      "pointer", // void *pArg
      "pointer", // char **errmsg
    ],
    result: "i32",
  },
  sqlite3_prepare_v3: {
    parameters: [
      "pointer", // sqlite3 *db
      "pointer", // const char *zSql
      "i32", // int nByte
      "u32", // unsigned int prepFlags
      "buffer", // sqlite3_stmt **ppStmt
      "buffer", // const char **pzTail
    ],
    result: "i32",
  },
  sqlite3_sql: {
    parameters: [
      "pointer", // sqlite3_stmt *pStmt
    ],
    result: "pointer",
  },
  sqlite3_stmt_readonly: {
    parameters: [
      "pointer", // sqlite3_stmt *pStmt
    ],
    result: "i32",
  },
  sqlite3_stmt_busy: {
    parameters: [
      "pointer", // sqlite3_stmt *pStmt
    ],
    result: "i32",
  },
  sqlite3_finalize: {
    parameters: [
      "pointer", // sqlite3_stmt *pStmt
    ],
    result: "i32",
  },
  sqlite3_reset: {
    parameters: [
      "pointer", // sqlite3_stmt *pStmt
    ],
    result: "i32",
  },
  sqlite3_clear_bindings: {
    parameters: [
      "pointer", // sqlite3_stmt *pStmt
    ],
    result: "i32",
  },
  sqlite3_step: {
    parameters: [
      "pointer", // sqlite3_stmt *pStmt
    ],
    result: "i32",
  },
  /** `sqlite3_step` on a background thread (`Stmt.stepInBackground()`). */
  sqlite3_step_nb: {
    name: "sqlite3_step",
    parameters: [
      "pointer", // sqlite3_stmt *pStmt
    ],
    result: "i32",
    nonblocking: true,
  },
  sqlite3_bind_parameter_count: {
    parameters: [
      "pointer", // sqlite3_stmt *pStmt
    ],
    result: "i32",
  },
  sqlite3_bind_parameter_name: {
    parameters: [
      "pointer", // sqlite3_stmt *pStmt
      "i32", // int (1-based)
    ],
    result: "pointer", // const char * (UTF-8), NULL for ? and unused indexes
  },
  sqlite3_bind_null: {
    parameters: [
      "pointer", // sqlite3_stmt *pStmt
      "i32", // int i
    ],
    result: "i32",
  },
  /** For integers within 32 bits: a fast call (an `i64` taking a number is not one). */
  sqlite3_bind_int: {
    parameters: [
      "pointer", // sqlite3_stmt *pStmt
      "i32", // int i
      "i32", // int value
    ],
    result: "i32",
  },
  sqlite3_bind_int64: {
    parameters: [
      "pointer", // sqlite3_stmt *pStmt
      "i32", // int i
      "i64", // sqlite3_int64 value
    ],
    result: "i32",
  },
  sqlite3_bind_double: {
    parameters: [
      "pointer", // sqlite3_stmt *pStmt
      "i32", // int i
      "f64", // double value
    ],
    result: "i32",
  },
  sqlite3_bind_text: {
    parameters: [
      "pointer", // sqlite3_stmt *pStmt
      "i32", // int i
      "buffer", // const char *value (UTF-8)
      "i32", // int nBytes
      "isize", // void (*xDel)(void *): SQLITE_TRANSIENT (-1)
    ],
    result: "i32",
  },
  sqlite3_bind_blob: {
    parameters: [
      "pointer", // sqlite3_stmt *pStmt
      "i32", // int i
      "buffer", // const void *value
      "i32", // int nBytes
      "isize", // void (*xDel)(void *): SQLITE_TRANSIENT (-1)
    ],
    result: "i32",
  },
  sqlite3_bind_zeroblob: {
    parameters: [
      "pointer", // sqlite3_stmt *pStmt
      "i32", // int i
      "i32", // int nBytes
    ],
    result: "i32",
  },
  sqlite3_stmt_status: {
    parameters: [
      "pointer", // sqlite3_stmt *pStmt
      "i32", // int op (SQLITE_STMTSTATUS_REPREPARE: 5)
      "i32", // int resetFlg
    ],
    result: "i32",
  },
  sqlite3_column_count: {
    parameters: [
      "pointer", // sqlite3_stmt *pStmt
    ],
    result: "i32",
  },
  sqlite3_column_name: {
    parameters: [
      "pointer", // sqlite3_stmt *pStmt
      "i32", // int iCol
    ],
    result: "pointer",
  },
  sqlite3_column_type: {
    parameters: [
      "pointer", // sqlite3_stmt *pStmt
      "i32", // int iCol
    ],
    result: "i32",
  },
  sqlite3_column_int64: {
    parameters: [
      "pointer", // sqlite3_stmt *pStmt
      "i32", // int iCol
    ],
    result: "i64",
  },
  sqlite3_column_double: {
    parameters: [
      "pointer", // sqlite3_stmt *pStmt
      "i32", // int iCol
    ],
    result: "f64",
  },
  sqlite3_column_text: {
    parameters: [
      "pointer", // sqlite3_stmt *pStmt
      "i32", // int iCol
    ],
    result: "pointer",
  },
  sqlite3_column_blob: {
    parameters: [
      "pointer", // sqlite3_stmt *pStmt
      "i32", // int iCol
    ],
    result: "pointer",
  },
  sqlite3_column_bytes: {
    parameters: [
      "pointer", // sqlite3_stmt *pStmt
      "i32", // int iCol
    ],
    result: "i32",
  },
  sqlite3_db_status: {
    parameters: [
      "pointer", // sqlite3 *db
      "i32", // int op
      "buffer", // int *pCur
      "buffer", // int *pHiwtr
      "i32", // int resetFlg
    ],
    result: "i32",
  },
  sqlite3_wal_checkpoint_v2: {
    parameters: [
      "pointer", // sqlite3 *db
      "buffer", // const char *zDb
      "i32", // int eMode
      "buffer", // int *pnLog
      "buffer", // int *pnCkpt
    ],
    result: "i32",
  },
  sqlite3_backup_init: {
    parameters: [
      "pointer", // sqlite3 *pDest
      "buffer", // const char *zDestName
      "pointer", // sqlite3 *pSource
      "buffer", // const char *zSourceName
    ],
    result: "pointer",
  },
  /**
   * `sqlite3_backup_step` on a background thread (`Db.backup()`): it reads
   * the source, writes the copy and, at its last step, syncs it.
   */
  sqlite3_backup_step_nb: {
    name: "sqlite3_backup_step",
    parameters: [
      "pointer", // sqlite3_backup *p
      "i32", // int nPage
    ],
    result: "i32",
    nonblocking: true,
  },
  sqlite3_backup_remaining: {
    parameters: [
      "pointer", // sqlite3_backup *p
    ],
    result: "i32",
  },
  sqlite3_backup_pagecount: {
    parameters: [
      "pointer", // sqlite3_backup *p
    ],
    result: "i32",
  },
  /** `sqlite3_backup_finish` on a background thread: unfinished, it rolls the copy back. */
  sqlite3_backup_finish_nb: {
    name: "sqlite3_backup_finish",
    parameters: [
      "pointer", // sqlite3_backup *p
    ],
    result: "i32",
    nonblocking: true,
  },
} as const satisfies Deno.ForeignLibraryInterface;

/** The loaded library's functions. */
export type Symbols = Deno.DynamicLibrary<typeof symbols>["symbols"];
