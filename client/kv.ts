/**
 * Key-value collections over SQL: `db.kv(name)`. Every operation is an
 * ordinary SQL statement on one table, so it runs wherever SQL runs (inside
 * `transaction()` with other statements, on a reserved connection), with
 * the same durability and isolation, and SQL can read the data.
 *
 * Layout (created on first use):
 *
 * ```sql
 * CREATE TABLE netsqlite_kv (
 *   collection TEXT NOT NULL,  -- the name given to db.kv(name)
 *   key BLOB NOT NULL,         -- order-preserving tuple encoding (kv_key.ts)
 *   value BLOB,                -- MessagePack; NULL marks a deleted key (tombstone)
 *   version INTEGER NOT NULL,  -- global sequence: max(version) + 1 at each put/delete
 *   UNIQUE (collection, key)   -- the index for get, prefix and range scans
 * );
 * CREATE INDEX netsqlite_kv_version ON netsqlite_kv (version);
 * -- the highest version of any row ever deleted (kept by a trigger), so that
 * -- versions never go back when tombstones or entries are removed by SQL
 * CREATE TABLE netsqlite_kv_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
 * CREATE TRIGGER netsqlite_kv_deleted AFTER DELETE ON netsqlite_kv ...;
 * ```
 *
 * A delete keeps the key with a NULL value and a new version, so that change
 * feeds can name the deleted key. A version is one more than the largest
 * version in the table or ever deleted from it, so versions never go back,
 * whatever rows SQL removes.
 *
 * @module
 */

import { ErrorCode, SqliteError } from "../protocol/errors.ts";
import { describeKind } from "../protocol/values.ts";
import { type BindValue, callOptions, type CallShape, checkArgCount } from "./_calls.ts";
import type { Queryable } from "./queryable.ts";
import {
  decodeKey,
  encodeKey,
  keyLabel,
  type KvKey,
  type KvKeyPart,
  prefixEnd,
  readKey,
  toKey,
} from "./kv_key.ts";
import { decodeKvValue, encodeKvValue } from "./kv_value.ts";

export type { KvKey, KvKeyPart } from "./kv_key.ts";

/** Where a collection's statements run: a client, reserved connection or transaction. */
export type KvSql = Queryable;

/** The table's DDL (idempotent). */
export const KV_SCHEMA = `CREATE TABLE IF NOT EXISTS netsqlite_kv (
  collection TEXT NOT NULL,
  key BLOB NOT NULL,
  value BLOB,
  version INTEGER NOT NULL,
  UNIQUE (collection, key)
);
CREATE INDEX IF NOT EXISTS netsqlite_kv_version ON netsqlite_kv (version);
CREATE TABLE IF NOT EXISTS netsqlite_kv_meta (
  name TEXT PRIMARY KEY,
  value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS netsqlite_kv_deleted AFTER DELETE ON netsqlite_kv BEGIN
  INSERT INTO netsqlite_kv_meta (name, value) VALUES ('max_deleted_version', old.version)
    ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value);
END;`;

/** An entry as read: key, value and its version. */
export interface KvEntry<T = unknown> {
  /** The key, always as a tuple. */
  key: KvKeyPart[];
  /** The value exactly as put. */
  value: T;
  /** Version of the last put (a global, increasing sequence). */
  version: number;
}

/** Options of `put()`. */
export interface KvPutOptions {
  /**
   * Put only if the key's current version is this one; `null`: only if the
   * key does not exist. Otherwise `KV_CONFLICT` is thrown and nothing changes.
   */
  ifVersion?: number | null;
}

/** Options of `list()` and `count()`: keys starting with `prefix`, within [`start`, `end`). */
export interface KvRange {
  /** Keys whose leading parts equal these (the prefix key itself included). */
  prefix?: KvKey | string;
  /** Smallest key listed (inclusive). */
  start?: KvKey | string;
  /** Keys listed are smaller than this one (exclusive). */
  end?: KvKey | string;
}

/** Options of `list()`. */
export interface KvListOptions extends KvRange {
  /** Most entries yielded. */
  limit?: number;
  /** Largest key first. @default {false} */
  reverse?: boolean;
}

/** Thrown when a version check (`ifVersion`, `atomic().check()`) fails: nothing was written. */
export class KvConflictError extends SqliteError {
  /**
   * Builds the error (the collection raises it; code `KV_CONFLICT`).
   *
   * @param message What did not match.
   */
  constructor(message: string) {
    super("KV_CONFLICT", message);
    this.name = "KvConflictError";
  }
}

/** Listings with a `limit` up to this are fetched in one query; others through a cursor. */
const SMALL_LIST = 1000;

async function* toAsync<T>(rows: T[]): AsyncGenerator<T> {
  yield* rows;
}

/**
 * The next version: one more than the largest in the table or ever deleted
 * from it (`netsqlite_kv_meta`, kept by the delete trigger). Computed inside
 * the writing statement, so the single writer orders them.
 */
const NEXT_VERSION = "(SELECT max(" +
  "coalesce((SELECT max(version) FROM netsqlite_kv), 0), " +
  "coalesce((SELECT value FROM netsqlite_kv_meta WHERE name = 'max_deleted_version'), 0)" +
  ") + 1)";

/**
 * Keys read by one `getMany()` statement: SQLite's default parameter limit
 * (SQLITE_MAX_VARIABLE_NUMBER, 32766; builds may allow more) less the
 * collection name's.
 */
const KEYS_PER_QUERY = 32765;

/** A key-value collection's call with `args` and `options` (see `CallShape`). */
function kvCall(
  name: string,
  args: readonly string[],
  options: CallShape["options"] = [],
  extraHint?: string,
): CallShape {
  return { name: `KvCollection.${name}`, args, options, extraHint };
}

const PUT = kvCall("put()", ["key", "value", "options"], ["ifVersion"]);
const GET = kvCall("get()", ["key"]);
const GET_MANY = kvCall("getMany()", ["keys"], [], "pass every key in the one array");
const DELETE = kvCall("delete()", ["key"]);
const LIST = kvCall(
  "list()",
  ["options"],
  ["prefix", "start", "end", "limit", "reverse"],
  "pass limit and reverse in the one options object, with prefix, start and end",
);
const COUNT = kvCall("count()", ["range"], ["prefix", "start", "end"]);
/** `KvAtomic`'s calls: a third argument to `set()` would be Deno KV's `{ expireIn }`, ignored. */
const ATOMIC_SET: CallShape = {
  name: "KvAtomic.set()",
  args: ["key", "value"],
  options: [],
  extraHint: "an atomic operation takes no options (entries do not expire)",
};
const ATOMIC_CHECK: CallShape = { name: "KvAtomic.check()", args: ["key", "version"], options: [] };
const ATOMIC_DELETE: CallShape = { name: "KvAtomic.delete()", args: ["key"], options: [] };

/** A named key-value collection; see the module doc for its storage. */
export class KvCollection {
  readonly #sql: KvSql;
  readonly #name: string;

  /**
   * Opens the collection `name`; use `db.kv(name)` rather than this.
   *
   * @param sql Where statements run (a client, reserved connection or transaction).
   * @param name The collection's name.
   * @throws {SqliteError} `INVALID_PARAM` for a name that is not a non-empty
   *   string without NUL or lone UTF-16 surrogates.
   */
  constructor(sql: KvSql, name: string) {
    const reason = invalidCollectionName(name);
    if (reason !== undefined) {
      throw new SqliteError("INVALID_PARAM", `Invalid key-value collection name: ${reason}`);
    }
    this.#sql = sql;
    this.#name = name;
  }

  /** The collection's name. */
  get name(): string {
    return this.#name;
  }

  /**
   * Stores `value` under `key`.
   *
   * @returns the new version.
   * @throws {KvConflictError} when `ifVersion` does not match.
   * @throws {SqliteError} `INVALID_PARAM` for a key or value that cannot be stored
   *   exactly, or an `ifVersion` that is neither a safe integer nor `null`.
   * @throws {TypeError} for an option other than `ifVersion` (a misspelt one
   *   would make the put unconditional), options that are not a plain object,
   *   or an argument past them; nothing is written.
   */
  async put(key: KvKey | string, value: unknown, options?: KvPutOptions | null): Promise<number> {
    checkArgCount(PUT, arguments.length);
    // (Checked by putSql: INVALID_PARAM, as check()'s version.)
    const ifVersion = callOptions(PUT, options).ifVersion as number | null | undefined;
    const k = encodeKey(toKey(key));
    const v = encodeKvValue(value);
    const version = await putSql(this.#sql, this.#name, k, v, ifVersion);
    if (version === null) throw conflict(key, ifVersion);
    return version;
  }

  /**
   * The entry under `key`, or `null`.
   *
   * @throws {TypeError} for a second argument (it takes no options).
   */
  async get<T = unknown>(key: KvKey | string): Promise<KvEntry<T> | null> {
    checkArgCount(GET, arguments.length);
    const k = encodeKey(toKey(key));
    // A value larger than one reply (`maxResultBytes`) streams through a cursor, as in getMany.
    const rows = await orEmpty(
      readAll<[Uint8Array, number]>(
        this.#sql,
        this.#name,
        "SELECT value, version FROM netsqlite_kv WHERE collection = ? AND key = ? AND value IS NOT NULL",
        [this.#name, k],
      ),
      [],
    );
    if (rows.length === 0) return null;
    const parts = decodeKey(k);
    return { key: parts, value: this.#decode(rows[0][0], parts) as T, version: rows[0][1] };
  }

  /**
   * The entries under `keys`, in the same order (`null` where absent), from
   * one snapshot: up to 32765 keys are one statement; more are read in one
   * transaction (which, on the shared pool, holds the writer while it reads).
   *
   * @throws {TypeError} for `keys` that are not an array, or a second argument.
   */
  async getMany<T = unknown>(keys: readonly (KvKey | string)[]): Promise<(KvEntry<T> | null)[]> {
    checkArgCount(GET_MANY, arguments.length);
    if (!Array.isArray(keys)) {
      throw new TypeError(
        "Invalid KvCollection.getMany() call: expected an array of keys, got " +
          (keys === undefined ? "undefined" : describeKind(keys)) +
          (typeof keys === "string" ? " (one key: pass [key], or use get())" : ""),
      );
    }
    const encoded = keys.map((k) => encodeKey(toKey(k)));
    const found = new Map<string, [Uint8Array, Uint8Array, number]>();
    const read = async (q: KvSql): Promise<void> => {
      for (let i = 0; i < encoded.length; i += KEYS_PER_QUERY) {
        const chunk = encoded.slice(i, i + KEYS_PER_QUERY);
        const rows = await orEmpty(
          readAll<[Uint8Array, Uint8Array, number]>(
            q,
            this.#name,
            `SELECT key, value, version FROM netsqlite_kv WHERE collection = ? AND value IS NOT NULL ` +
              `AND key IN (${chunk.map(() => "?").join(", ")})`,
            [this.#name, ...chunk],
          ),
          [],
        );
        for (const r of rows) found.set(hex(r[0]), r);
      }
    };
    if (encoded.length <= KEYS_PER_QUERY) await read(this.#sql);
    else await this.#sql.transaction(read);
    return encoded.map((k) => {
      const r = found.get(hex(k));
      if (r === undefined) return null;
      const parts = decodeKey(r[0]);
      return { key: parts, value: this.#decode(r[1], parts) as T, version: r[2] };
    });
  }

  /**
   * Deletes `key`.
   *
   * @returns true when the key existed.
   */
  async delete(key: KvKey | string): Promise<boolean> {
    checkArgCount(DELETE, arguments.length);
    const k = encodeKey(toKey(key));
    return (await deleteSql(this.#sql, this.#name, k)) !== null;
  }

  /**
   * Entries in key order (or reverse), from one snapshot. With a `limit` up
   * to 1000, or when the range holds no more, they come in one query;
   * otherwise through a server cursor, in chunks, so memory stays bounded on
   * both sides whatever the range's size.
   *
   * @throws {TypeError} when iterating starts, for an option it does not take
   *   (a misspelt `reverse` or `prefix` would list otherwise), options that
   *   are not a plain object, a `limit` other than an integer from 0 to 2^53 − 1, a
   *   `reverse` other than a boolean, or a second argument.
   * @throws {SqliteError} `INVALID_PARAM` for a `prefix`, `start` or `end`
   *   that is not a key.
   */
  async *list<T = unknown>(options?: KvListOptions | null): AsyncGenerator<KvEntry<T>> {
    checkArgCount(LIST, arguments.length);
    const opts = callOptions(LIST, options);
    const { where, params } = rangeOf(this.#name, opts as KvRange);
    const limit = opts.limit;
    const select = `SELECT key, value, version FROM netsqlite_kv WHERE ${where} ` +
      `ORDER BY key ${opts.reverse ? "DESC" : "ASC"}`;
    const sql = select + (limit !== undefined ? ` LIMIT ${limit}` : "");
    // A small listing is one buffered query: a `limit` up to SMALL_LIST, or
    // a range found to hold no more (one more row asked for tells). A larger
    // one streams through a server cursor (a connection holds at most
    // `maxCursors`), the statement run again whole, so still one snapshot;
    // and so does a small one whose values are too large for one reply.
    type Row = [Uint8Array, Uint8Array, number];
    let rows: AsyncIterable<Row> | null = null;
    const small = limit !== undefined && limit <= SMALL_LIST;
    try {
      const got = await this.#sql.values<Row>(
        small ? sql : `${select} LIMIT ${SMALL_LIST + 1}`,
        params,
      );
      if (small || got.length <= SMALL_LIST) rows = toAsync(got);
    } catch (err) {
      if (isMissingTable(err)) return;
      if (!isTooLarge(err)) throw err;
    }
    rows ??= this.#sql.iterate<Row>(sql, params, { arrays: true });
    try {
      for await (const r of rows) {
        const key = readKey(r[0], this.#name);
        yield { key, value: this.#decode(r[1], key) as T, version: r[2] };
      }
    } catch (err) {
      if (!isMissingTable(err)) throw tooLargeForKv(err, this.#name);
    }
  }

  /**
   * Number of entries (within a prefix or range).
   *
   * @throws {TypeError} for a key other than `prefix`, `start` and `end`, a
   *   range that is not a plain object, or a second argument.
   */
  async count(range?: KvRange | null): Promise<number> {
    checkArgCount(COUNT, arguments.length);
    const { where, params } = rangeOf(this.#name, callOptions(COUNT, range) as KvRange);
    const rows = await this.#values<[number]>(
      `SELECT count(*) FROM netsqlite_kv WHERE ${where}`,
      params,
    );
    return rows.length === 0 ? 0 : rows[0][0];
  }

  /** Starts an atomic operation: checks, puts and deletes committed all or nothing. */
  atomic(): KvAtomic {
    return new KvAtomic(this.#sql, this.#name);
  }

  #decode(stored: unknown, key: KvKeyPart[]): unknown {
    return decodeKvValue(
      stored,
      () => `in collection ${JSON.stringify(this.#name)} under key ${keyLabel(key)}`,
    );
  }

  #values<T extends unknown[]>(sql: string, params: BindValue[]): Promise<T[]> {
    return orEmpty(this.#sql.values<T>(sql, params), []);
  }
}

/** Result of {@link KvAtomic.commit}. */
export interface KvCommitResult {
  /**
   * One entry per put or delete, in the order they were added (checks have
   * none): the key's new version, or `null` for a delete of a key that was
   * absent (nothing was written for it).
   */
  versions: (number | null)[];
}

type Mutation =
  | { kind: "check"; key: KvKey; version: number | null }
  | { kind: "put"; key: KvKey; value: Uint8Array }
  | { kind: "delete"; key: KvKey };

/**
 * Checks, puts and deletes applied in one transaction (a savepoint inside
 * an open one): every check holds and every change is made, or nothing is.
 */
export class KvAtomic {
  readonly #sql: KvSql;
  readonly #name: string;
  readonly #ops: Mutation[] = [];

  /** @internal */
  constructor(sql: KvSql, name: string) {
    this.#sql = sql;
    this.#name = name;
  }

  /**
   * Requires `key` to be at `version` (`null`: absent) before the operation:
   * all checks are evaluated first, against the state before any of its
   * changes, wherever they were added (as in Deno KV).
   *
   * @throws {SqliteError} `INVALID_PARAM` for a version that is neither a
   *   safe integer nor `null` (as `put()`'s `ifVersion`).
   * @throws {TypeError} for a third argument.
   */
  check(key: KvKey | string, version: number | null): this {
    checkArgCount(ATOMIC_CHECK, arguments.length);
    const k = toKey(key);
    if (version !== null) checkVersion("check() version", version);
    this.#ops.push({ kind: "check", key: k, version });
    return this;
  }

  /**
   * Puts `value` under `key`.
   *
   * @throws {TypeError} for a third argument (Deno KV's `{ expireIn }`: it takes no options).
   */
  set(key: KvKey | string, value: unknown): this {
    checkArgCount(ATOMIC_SET, arguments.length);
    this.#ops.push({ kind: "put", key: toKey(key), value: encodeKvValue(value) });
    return this;
  }

  /**
   * Deletes `key` (no error when absent).
   *
   * @throws {TypeError} for a second argument.
   */
  delete(key: KvKey | string): this {
    checkArgCount(ATOMIC_DELETE, arguments.length);
    this.#ops.push({ kind: "delete", key: toKey(key) });
    return this;
  }

  /**
   * Applies the operation as it is at this call (checks and changes added
   * later are not part of it; a later `commit()` applies them too).
   *
   * @throws {KvConflictError} when a check fails: nothing was written.
   * @throws {TypeError} for an argument (it takes none).
   */
  async commit(): Promise<KvCommitResult> {
    if (arguments.length > 0) {
      throw new TypeError(
        `Invalid KvAtomic.commit() call: it takes no arguments, got ${arguments.length}`,
      );
    }
    // The operation as it is now: a check or change added while this commit
    // waits for its transaction is not part of it.
    const ops = [...this.#ops];
    const name = this.#name;
    return await this.#sql.transaction(async (tx) => {
      // Every check against the state before the operation (as Deno KV
      // does), wherever it was added; then the changes in order.
      for (const op of ops) {
        if (op.kind !== "check") continue;
        const rows = await orEmpty(
          tx.values<[number]>(
            "SELECT version FROM netsqlite_kv WHERE collection = ? AND key = ? AND value IS NOT NULL",
            [name, encodeKey(op.key)],
          ),
          [],
        );
        const current = rows.length === 0 ? null : rows[0][0];
        if (current !== op.version) throw conflict(op.key, op.version, current);
      }
      const versions: (number | null)[] = [];
      for (const op of ops) {
        if (op.kind === "check") continue;
        const k = encodeKey(op.key);
        if (op.kind === "put") {
          versions.push((await putSql(tx, name, k, op.value, undefined))!);
        } else {
          versions.push(await deleteSql(tx, name, k));
        }
      }
      return { versions };
    });
  }
}

async function putSql(
  sql: KvSql,
  name: string,
  key: Uint8Array,
  value: Uint8Array,
  ifVersion: number | null | undefined,
): Promise<number | null> {
  let stmt: string;
  let params: BindValue[];
  if (ifVersion === undefined) {
    stmt = `INSERT INTO netsqlite_kv (collection, key, value, version) ` +
      `SELECT ?, ?, ?, ${NEXT_VERSION} WHERE true ` +
      `ON CONFLICT (collection, key) DO UPDATE SET value = excluded.value, version = excluded.version ` +
      `RETURNING version`;
    params = [name, key, value];
  } else if (ifVersion === null) {
    stmt = `INSERT INTO netsqlite_kv (collection, key, value, version) ` +
      `SELECT ?, ?, ?, ${NEXT_VERSION} WHERE true ` +
      `ON CONFLICT (collection, key) DO UPDATE SET value = excluded.value, version = excluded.version ` +
      `WHERE netsqlite_kv.value IS NULL RETURNING version`;
    params = [name, key, value];
  } else {
    checkVersion("ifVersion", ifVersion);
    stmt = `UPDATE netsqlite_kv SET value = ?, version = ${NEXT_VERSION} ` +
      `WHERE collection = ? AND key = ? AND version = ? AND value IS NOT NULL RETURNING version`;
    params = [value, name, key, ifVersion];
  }
  const rows = await withTable(sql, (q) => q.values<[number]>(stmt, params));
  return rows.length === 0 ? null : rows[0][0];
}

async function deleteSql(sql: KvSql, name: string, key: Uint8Array): Promise<number | null> {
  const rows = await withTable(sql, (q) =>
    q.values<[number]>(
      `UPDATE netsqlite_kv SET value = NULL, version = ${NEXT_VERSION} ` +
        `WHERE collection = ? AND key = ? AND value IS NOT NULL RETURNING version`,
      [name, key],
    ));
  return rows.length === 0 ? null : rows[0][0];
}

/**
 * Refuses a version that no entry can have (`ifVersion`, `check()`): the
 * same `INVALID_PARAM` for both, rather than a conflict that can never clear.
 */
function checkVersion(what: string, version: unknown): void {
  if (!Number.isSafeInteger(version)) {
    throw new SqliteError(
      "INVALID_PARAM",
      `Invalid ${what}: expected an integer or null, got ${describeVersion(version)}`,
    );
  }
}

function describeVersion(version: unknown): string {
  if (typeof version === "number" || version === undefined) return String(version);
  if (typeof version === "string") return `the string ${JSON.stringify(version)}`;
  if (typeof version === "bigint") return `the bigint ${version}n`;
  return describeKind(version);
}

/**
 * Why `name` cannot name a collection, or `undefined` when it can: a
 * non-empty string that the `collection` column stores exactly (no NUL,
 * which SQLite's C API would cut; no lone UTF-16 surrogate, which UTF-8
 * cannot hold).
 */
export function invalidCollectionName(name: unknown): string | undefined {
  if (typeof name !== "string") {
    return `expected a non-empty string, got ${
      name === undefined ? "undefined" : describeKind(name)
    }`;
  }
  if (name === "") return 'expected a non-empty string, got ""';
  if (name.includes("\0")) {
    return `${JSON.stringify(name)} contains a NUL character, which a collection name cannot hold`;
  }
  if (!name.isWellFormed()) {
    return `${
      JSON.stringify(name)
    } contains a lone UTF-16 surrogate, which UTF-8 (and so the collection column) cannot hold`;
  }
  return undefined;
}

function rangeOf(name: string, range: KvRange): { where: string; params: BindValue[] } {
  const conds = ["collection = ?", "value IS NOT NULL"];
  const params: BindValue[] = [name];
  if (range.prefix !== undefined) {
    const p = encodeKey(toKey(range.prefix, "prefix"));
    conds.push("key >= ?", "key < ?");
    params.push(p, prefixEnd(p));
  }
  if (range.start !== undefined) {
    conds.push("key >= ?");
    params.push(encodeKey(toKey(range.start, "start key")));
  }
  if (range.end !== undefined) {
    conds.push("key < ?");
    params.push(encodeKey(toKey(range.end, "end key")));
  }
  return { where: conds.join(" AND "), params };
}

function conflict(
  key: KvKey | string,
  expected: number | null | undefined,
  current?: number | null,
): KvConflictError {
  const k = keyLabel(key);
  const want = expected === null ? "absent" : `at version ${expected}`;
  const now = current === undefined
    ? ""
    : current === null
    ? " (it is absent)"
    : ` (it is at ${current})`;
  return new KvConflictError(`Key-value check failed: key ${k} is not ${want}${now}`);
}

function hex(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += x.toString(16).padStart(2, "0");
  return s;
}

/** Runs a write; when the table does not exist yet, creates it and runs the write again. */
async function withTable<T>(sql: KvSql, fn: (q: KvSql) => Promise<T>): Promise<T> {
  try {
    return await fn(sql);
  } catch (err) {
    if (!isMissingTable(err)) throw err;
  }
  await sql.exec(KV_SCHEMA);
  return await fn(sql);
}

/**
 * The rows of a read as arrays: one buffered query, or, when its result is
 * too large for one reply, the same statement through a server cursor (one
 * statement either way, so one snapshot).
 */
async function readAll<T extends unknown[]>(
  sql: KvSql,
  name: string,
  stmt: string,
  params: BindValue[],
): Promise<T[]> {
  try {
    return await sql.values<T>(stmt, params);
  } catch (err) {
    if (!isTooLarge(err)) throw err;
  }
  const rows: T[] = [];
  try {
    for await (const r of sql.iterate<T>(stmt, params, { arrays: true })) rows.push(r);
  } catch (err) {
    throw tooLargeForKv(err, name);
  }
  return rows;
}

/**
 * A result too large even when streamed (entries larger than the server's
 * frame) as advice a key-value user can follow; other errors as they are.
 */
function tooLargeForKv(err: unknown, name: string): unknown {
  if (!isTooLarge(err)) return err;
  const detail = (err as SqliteError).message.replace(/: use iterate\(\) for large results$/, "");
  return new SqliteError(
    ErrorCode.ResultTooLarge,
    `Key-value entries of collection ${JSON.stringify(name)} are too large to read: ${detail}; ` +
      "read fewer entries at a time, or raise the server's maxFrameSize",
    undefined,
    { cause: err },
  );
}

function isTooLarge(err: unknown): boolean {
  return err instanceof SqliteError && err.code === ErrorCode.ResultTooLarge;
}

/** Runs a read; a table that does not exist yet reads as empty (`empty`). */
async function orEmpty<T>(read: Promise<T>, empty: T): Promise<T> {
  try {
    return await read;
  } catch (err) {
    if (isMissingTable(err)) return empty;
    throw err;
  }
}

function isMissingTable(err: unknown): boolean {
  // The table, or the meta table a database from an earlier release lacks.
  return err instanceof SqliteError &&
    /no such table: (?:main\.)?netsqlite_kv(?:_meta)?\b/.test(err.message);
}
