/**
 * Typed access to `node:sqlite`. Deno's bundled declarations lack several
 * runtime members (`setAuthorizer`, `setReturnArrays`, `readBigInts`, ...);
 * they are declared here once and nowhere else.
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";

/** Values node:sqlite binds and returns. */
export type SqlValue = null | number | bigint | string | Uint8Array;

/** Result of `StatementSync.run()`. */
export interface RunInfo {
  changes: number | bigint;
  lastInsertRowid: number | bigint;
}

/** Column metadata from `StatementSync.columns()`. */
export interface ColumnInfo {
  name: string;
}

/** The parts of `StatementSync` the engine uses, including undeclared ones. */
export interface Statement {
  readonly sourceSQL: string;
  all(...params: unknown[]): unknown[];
  run(...params: unknown[]): RunInfo;
  iterate(...params: unknown[]): IterableIterator<unknown>;
  columns(): ColumnInfo[];
  setReturnArrays(enabled: boolean): void;
  setReadBigInts(enabled: boolean): void;
}

/** Authorizer callback: action code and up to four string arguments. */
export type Authorizer = (
  action: number,
  arg1: string | null,
  arg2: string | null,
  dbName: string | null,
  trigger: string | null,
) => number;

/** The parts of `DatabaseSync` the engine uses, including undeclared ones. */
export interface Database {
  readonly isTransaction: boolean;
  exec(sql: string): void;
  prepare(sql: string): Statement;
  setAuthorizer(callback: Authorizer | null): void;
  close(): void;
}

/** Options for {@link openDatabase}. */
export interface OpenOptions {
  readOnly: boolean;
  /** SQLite's own busy timeout (file locks held by other processes), in ms. */
  timeout: number;
}

/** Opens a database file with node:sqlite. */
export function openDatabase(path: string, options: OpenOptions): Database {
  const db = new DatabaseSync(path, {
    readOnly: options.readOnly,
    timeout: options.timeout,
    enableForeignKeyConstraints: true,
  });
  return db as unknown as Database;
}

/** SQLite authorizer action codes and return value (fixed by SQLite's C API). */
export const Auth = {
  OK: 0,
  DENY: 1,
  CREATE_TEMP_INDEX: 3,
  DELETE: 9,
  INSERT: 18,
  UPDATE: 23,
  CREATE_TEMP_VIEW: 6,
  DROP_TEMP_INDEX: 12,
  DROP_TEMP_VIEW: 15,
  READ: 20,
  SELECT: 21,
  TRANSACTION: 22,
  ATTACH: 24,
  FUNCTION: 31,
  SAVEPOINT: 32,
  RECURSIVE: 33,
} as const;
