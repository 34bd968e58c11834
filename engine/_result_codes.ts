/**
 * Names of SQLite's primary and extended result codes, so that every SQLite
 * failure reaches the client with a stable string code.
 *
 * @module
 */

/** Result codes the engine and server tell apart by number (their names are below). */
export const SQLITE_NOMEM = 7;
export const SQLITE_IOERR = 10;
export const SQLITE_FULL = 13;
export const SQLITE_IOERR_READ = 10 | (1 << 8);
export const SQLITE_IOERR_SHORT_READ = 10 | (2 << 8);
export const SQLITE_IOERR_WRITE = 10 | (3 << 8);
export const SQLITE_IOERR_SHMSIZE = 10 | (19 << 8);

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

/**
 * Extended codes: primary code + (n << 8). Every one in sqlite3.h of
 * SQLite 3.40, and those added since (IOERR_IN_PAGE, _BADKEY, _CODEC).
 */
const EXTENDED: Record<number, string> = {
  [1 | (1 << 8)]: "SQLITE_ERROR_MISSING_COLLSEQ",
  [1 | (2 << 8)]: "SQLITE_ERROR_RETRY",
  [1 | (3 << 8)]: "SQLITE_ERROR_SNAPSHOT",
  [4 | (2 << 8)]: "SQLITE_ABORT_ROLLBACK",
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
  [10 | (5 << 8)]: "SQLITE_IOERR_DIR_FSYNC",
  [10 | (6 << 8)]: "SQLITE_IOERR_TRUNCATE",
  [10 | (7 << 8)]: "SQLITE_IOERR_FSTAT",
  [10 | (8 << 8)]: "SQLITE_IOERR_UNLOCK",
  [10 | (9 << 8)]: "SQLITE_IOERR_RDLOCK",
  [10 | (10 << 8)]: "SQLITE_IOERR_DELETE",
  [10 | (11 << 8)]: "SQLITE_IOERR_BLOCKED",
  [10 | (12 << 8)]: "SQLITE_IOERR_NOMEM",
  [10 | (13 << 8)]: "SQLITE_IOERR_ACCESS",
  [10 | (14 << 8)]: "SQLITE_IOERR_CHECKRESERVEDLOCK",
  [10 | (15 << 8)]: "SQLITE_IOERR_LOCK",
  [10 | (16 << 8)]: "SQLITE_IOERR_CLOSE",
  [10 | (17 << 8)]: "SQLITE_IOERR_DIR_CLOSE",
  [10 | (18 << 8)]: "SQLITE_IOERR_SHMOPEN",
  [10 | (19 << 8)]: "SQLITE_IOERR_SHMSIZE",
  [10 | (20 << 8)]: "SQLITE_IOERR_SHMLOCK",
  [10 | (21 << 8)]: "SQLITE_IOERR_SHMMAP",
  [10 | (22 << 8)]: "SQLITE_IOERR_SEEK",
  [10 | (23 << 8)]: "SQLITE_IOERR_DELETE_NOENT",
  [10 | (24 << 8)]: "SQLITE_IOERR_MMAP",
  [10 | (25 << 8)]: "SQLITE_IOERR_GETTEMPPATH",
  [10 | (26 << 8)]: "SQLITE_IOERR_CONVPATH",
  [10 | (27 << 8)]: "SQLITE_IOERR_VNODE",
  [10 | (28 << 8)]: "SQLITE_IOERR_AUTH",
  [10 | (29 << 8)]: "SQLITE_IOERR_BEGIN_ATOMIC",
  [10 | (30 << 8)]: "SQLITE_IOERR_COMMIT_ATOMIC",
  [10 | (31 << 8)]: "SQLITE_IOERR_ROLLBACK_ATOMIC",
  [10 | (32 << 8)]: "SQLITE_IOERR_DATA",
  [10 | (33 << 8)]: "SQLITE_IOERR_CORRUPTFS",
  [10 | (34 << 8)]: "SQLITE_IOERR_IN_PAGE",
  [10 | (35 << 8)]: "SQLITE_IOERR_BADKEY",
  [10 | (36 << 8)]: "SQLITE_IOERR_CODEC",
  [11 | (1 << 8)]: "SQLITE_CORRUPT_VTAB",
  [11 | (2 << 8)]: "SQLITE_CORRUPT_SEQUENCE",
  [11 | (3 << 8)]: "SQLITE_CORRUPT_INDEX",
  [14 | (1 << 8)]: "SQLITE_CANTOPEN_NOTEMPDIR",
  [14 | (2 << 8)]: "SQLITE_CANTOPEN_ISDIR",
  [14 | (3 << 8)]: "SQLITE_CANTOPEN_FULLPATH",
  [14 | (4 << 8)]: "SQLITE_CANTOPEN_CONVPATH",
  [14 | (5 << 8)]: "SQLITE_CANTOPEN_DIRTYWAL",
  [14 | (6 << 8)]: "SQLITE_CANTOPEN_SYMLINK",
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
  [27 | (1 << 8)]: "SQLITE_NOTICE_RECOVER_WAL",
  [27 | (2 << 8)]: "SQLITE_NOTICE_RECOVER_ROLLBACK",
  [28 | (1 << 8)]: "SQLITE_WARNING_AUTOINDEX",
};

/**
 * Returns the symbolic name of a SQLite result code, falling back to the
 * primary code's name for extended codes not listed here.
 */
export function resultCodeName(code: number): string {
  return EXTENDED[code] ?? PRIMARY[code & 0xff] ?? `SQLITE_UNKNOWN_${code}`;
}
