/**
 * Names of SQLite's primary and extended result codes, so that every SQLite
 * failure reaches the client with a stable string code.
 *
 * @module
 */

const PRIMARY: Record<number, string> = {
  1: "SQLITE_ERROR",
  2: "SQLITE_INTERNAL",
  3: "SQLITE_PERM",
  4: "SQLITE_ABORT",
  5: "SQLITE_BUSY",
  6: "SQLITE_LOCKED",
  7: "SQLITE_NOMEM",
  8: "SQLITE_READONLY",
  9: "SQLITE_INTERRUPT",
  10: "SQLITE_IOERR",
  11: "SQLITE_CORRUPT",
  12: "SQLITE_NOTFOUND",
  13: "SQLITE_FULL",
  14: "SQLITE_CANTOPEN",
  15: "SQLITE_PROTOCOL",
  16: "SQLITE_EMPTY",
  17: "SQLITE_SCHEMA",
  18: "SQLITE_TOOBIG",
  19: "SQLITE_CONSTRAINT",
  20: "SQLITE_MISMATCH",
  21: "SQLITE_MISUSE",
  22: "SQLITE_NOLFS",
  23: "SQLITE_AUTH",
  24: "SQLITE_FORMAT",
  25: "SQLITE_RANGE",
  26: "SQLITE_NOTADB",
  27: "SQLITE_NOTICE",
  28: "SQLITE_WARNING",
};

/** Extended codes: primary code + (n << 8). */
const EXTENDED: Record<number, string> = {
  [1 | (1 << 8)]: "SQLITE_ERROR_MISSING_COLLSEQ",
  [1 | (2 << 8)]: "SQLITE_ERROR_RETRY",
  [1 | (3 << 8)]: "SQLITE_ERROR_SNAPSHOT",
  [5 | (1 << 8)]: "SQLITE_BUSY_RECOVERY",
  [5 | (2 << 8)]: "SQLITE_BUSY_SNAPSHOT",
  [5 | (3 << 8)]: "SQLITE_BUSY_TIMEOUT",
  [6 | (1 << 8)]: "SQLITE_LOCKED_SHAREDCACHE",
  [6 | (2 << 8)]: "SQLITE_LOCKED_VTAB",
  [8 | (1 << 8)]: "SQLITE_READONLY_RECOVERY",
  [8 | (2 << 8)]: "SQLITE_READONLY_CANTLOCK",
  [8 | (3 << 8)]: "SQLITE_READONLY_ROLLBACK",
  [8 | (4 << 8)]: "SQLITE_READONLY_DBMOVED",
  [8 | (5 << 8)]: "SQLITE_READONLY_CANTINIT",
  [8 | (6 << 8)]: "SQLITE_READONLY_DIRECTORY",
  [10 | (1 << 8)]: "SQLITE_IOERR_READ",
  [10 | (2 << 8)]: "SQLITE_IOERR_SHORT_READ",
  [10 | (3 << 8)]: "SQLITE_IOERR_WRITE",
  [10 | (4 << 8)]: "SQLITE_IOERR_FSYNC",
  [10 | (10 << 8)]: "SQLITE_IOERR_DELETE",
  [10 | (12 << 8)]: "SQLITE_IOERR_NOMEM",
  [10 | (13 << 8)]: "SQLITE_IOERR_ACCESS",
  [10 | (15 << 8)]: "SQLITE_IOERR_LOCK",
  [11 | (1 << 8)]: "SQLITE_CORRUPT_VTAB",
  [14 | (1 << 8)]: "SQLITE_CANTOPEN_NOTEMPDIR",
  [14 | (2 << 8)]: "SQLITE_CANTOPEN_ISDIR",
  [14 | (3 << 8)]: "SQLITE_CANTOPEN_FULLPATH",
  [19 | (1 << 8)]: "SQLITE_CONSTRAINT_CHECK",
  [19 | (2 << 8)]: "SQLITE_CONSTRAINT_COMMITHOOK",
  [19 | (3 << 8)]: "SQLITE_CONSTRAINT_FOREIGNKEY",
  [19 | (4 << 8)]: "SQLITE_CONSTRAINT_FUNCTION",
  [19 | (5 << 8)]: "SQLITE_CONSTRAINT_NOTNULL",
  [19 | (6 << 8)]: "SQLITE_CONSTRAINT_PRIMARYKEY",
  [19 | (7 << 8)]: "SQLITE_CONSTRAINT_TRIGGER",
  [19 | (8 << 8)]: "SQLITE_CONSTRAINT_UNIQUE",
  [19 | (9 << 8)]: "SQLITE_CONSTRAINT_VTAB",
  [19 | (10 << 8)]: "SQLITE_CONSTRAINT_ROWID",
  [19 | (11 << 8)]: "SQLITE_CONSTRAINT_PINNED",
  [19 | (12 << 8)]: "SQLITE_CONSTRAINT_DATATYPE",
  [23 | (1 << 8)]: "SQLITE_AUTH_USER",
};

/**
 * Returns the symbolic name of a SQLite result code, falling back to the
 * primary code's name for extended codes not listed here.
 */
export function resultCodeName(code: number): string {
  return EXTENDED[code] ?? PRIMARY[code & 0xff] ?? `SQLITE_UNKNOWN_${code}`;
}
