/**
 * SQLite's C API constants the bindings use, fixed by SQLite's ABI
 * (<https://sqlite.org/c3ref/constlist.html>).
 *
 * @module
 */

/** Primary result codes (`SQLITE_OK` ...) that the bindings test for. */
export const Result = {
  OK: 0,
  ERROR: 1,
  BUSY: 5,
  LOCKED: 6,
  NOMEM: 7,
  INTERRUPT: 9,
  MISUSE: 21,
  AUTH: 23,
  RANGE: 25,
  ROW: 100,
  DONE: 101,
} as const;

/** `sqlite3_open_v2()` flags. */
export const OpenFlag = {
  READONLY: 0x00000001,
  READWRITE: 0x00000002,
  CREATE: 0x00000004,
  /**
   * Multi-thread mode: no mutex on the connection (each call skips a lock);
   * one thread at a time may use it, which the binding enforces.
   */
  NOMUTEX: 0x00008000,
  /** Serialized threading mode: the connection has its own mutex. */
  FULLMUTEX: 0x00010000,
  /** Extended result codes from the start (SQLite 3.37+, ignored before). */
  EXRESCODE: 0x02000000,
} as const;

/** Fundamental datatypes returned by `sqlite3_column_type()`. */
export const ColumnType = {
  INTEGER: 1,
  FLOAT: 2,
  TEXT: 3,
  BLOB: 4,
  NULL: 5,
} as const;

/**
 * Authorizer action codes (`sqlite3_set_authorizer()`), also the operation
 * codes of `sqlite3_update_hook()` (INSERT, DELETE, UPDATE).
 */
export const Auth = {
  CREATE_INDEX: 1,
  CREATE_TABLE: 2,
  CREATE_TEMP_INDEX: 3,
  CREATE_TEMP_TABLE: 4,
  CREATE_TEMP_TRIGGER: 5,
  CREATE_TEMP_VIEW: 6,
  CREATE_TRIGGER: 7,
  CREATE_VIEW: 8,
  DELETE: 9,
  DROP_INDEX: 10,
  DROP_TABLE: 11,
  DROP_TEMP_INDEX: 12,
  DROP_TEMP_TABLE: 13,
  DROP_TEMP_TRIGGER: 14,
  DROP_TEMP_VIEW: 15,
  DROP_TRIGGER: 16,
  DROP_VIEW: 17,
  INSERT: 18,
  PRAGMA: 19,
  READ: 20,
  SELECT: 21,
  TRANSACTION: 22,
  UPDATE: 23,
  ATTACH: 24,
  DETACH: 25,
  ALTER_TABLE: 26,
  REINDEX: 27,
  ANALYZE: 28,
  CREATE_VTABLE: 29,
  DROP_VTABLE: 30,
  FUNCTION: 31,
  SAVEPOINT: 32,
  RECURSIVE: 33,
} as const;

/** Authorizer return values. */
export const AuthResult = {
  OK: 0,
  DENY: 1,
  IGNORE: 2,
} as const;

/** `sqlite3_wal_checkpoint_v2()` modes. */
export const CheckpointMode = {
  passive: 0,
  full: 1,
  restart: 2,
  truncate: 3,
} as const;

/** `sqlite3_db_status()` verbs used here. */
export const DbStatus = {
  /** 1 while deferred foreign key constraints are unresolved, else 0. */
  DEFERRED_FKS: 10,
} as const;

/** `sqlite3_db_config()` verbs used here (each takes `int onoff, int *pRes`). */
export const DbConfig = {
  /**
   * Defensive mode: ordinary SQL may not deliberately corrupt the file (no writes to
   * a virtual table's shadow tables, `writable_schema`, `journal_mode=OFF`, ...).
   */
  DEFENSIVE: 1010,
  /** Double-quoted string literals in DML statements (SELECT, INSERT, …). */
  DQS_DML: 1013,
  /** Double-quoted string literals in DDL statements (CREATE TABLE, CREATE INDEX, …). */
  DQS_DDL: 1014,
} as const;
