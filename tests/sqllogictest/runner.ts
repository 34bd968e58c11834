/**
 * Runs parsed sqllogictest scripts against an {@link Executor} and checks the
 * results the way SQLite's own sqllogictest driver prints them:
 *
 * - `I` columns: `%lld` of `sqlite3_column_int64` (reals truncate toward
 *   zero and clamp to 64 bits; text gives its leading integer, else 0);
 * - `R` columns: `%.3f` of `sqlite3_column_double`, with SQLite's printf
 *   (at most 16 significant digits);
 * - `T` columns: the text of the value (reals as SQLite renders them);
 *   an empty string prints `(empty)`, bytes outside `' '..'~'` print `@`;
 * - `NULL` prints `NULL` in every column type.
 *
 * Three executors are provided: one over a live netsqlite {@link Client}
 * (rotating each record over the client's query and statement paths), one
 * directly on a `node:sqlite` `DatabaseSync`, and one directly on a
 * connection of the project's SQLite binding (the FFI library in-process).
 * All return values the same way (integers as numbers when safe, else
 * bigint), so results format alike.
 *
 * @module
 */

import { createHash } from "node:crypto";
import type { DatabaseSync } from "node:sqlite";
import type { Client } from "../../client.ts";
import type { Db } from "../../engine/binding/binding.ts";
import { scan } from "../../protocol/sql_lexer.ts";
import { appliesTo, type QueryRecord, type Script, type StatementRecord } from "./parser.ts";

/** Which record an executor call is for. */
export interface CallInfo {
  /** Index of the record in `script.records`. */
  index: number;
  /** How many records of the same kind (statement or query) the script ran before this one. */
  ordinal: number;
}

/** A query's rows, as arrays of values in column order. */
export interface QueryOutput {
  rows: unknown[][];
  /** Result column names, where the executor knows them (the references do). */
  columns?: string[];
}

/** What a script runs on. */
export interface Executor {
  /** Runs a statement (or script); rejects when it fails. */
  exec(sql: string, call: CallInfo): Promise<void>;
  /** Runs one query and returns its rows. */
  query(sql: string, call: CallInfo): Promise<QueryOutput>;
  /**
   * The name of the API path the record goes through, and whether the call
   * must settle before the next record is issued (a path that sends more
   * than one request, the later ones after a reply, would otherwise let
   * later records overtake it). Without this method: `"direct"`, no wait.
   */
  route?(kind: "statement" | "query", sql: string, call: CallInfo): Route;
  /** Settles what the calls left running (finalizing statements); called once at the end. */
  finish?(): Promise<void>;
}

/** How one record is run: see {@link Executor.route}. */
export interface Route {
  path: string;
  waits: boolean;
}

/**
 * The client's ways to run a query. Every one returns every row:
 * - `values`: `client.values(sql)`;
 * - `query`: `client.query(sql)`, rows as objects;
 * - `iterate`: `client.iterate(sql, undefined, { arrays: true })`, a server cursor;
 * - `prepare.values`: `client.prepare(sql)`, then `statement.values()`;
 * - `prepare.all`: `client.prepare(sql)`, then `statement.all()`, rows as objects;
 * - `batch`: `client.batch([{ sql }], { arrays: true })`, a one-statement transaction.
 */
export const QUERY_PATHS = [
  "values",
  "query",
  "iterate",
  "prepare.values",
  "prepare.all",
  "batch",
] as const;

/** A way to run a query: see {@link QUERY_PATHS}. */
export type QueryPath = typeof QUERY_PATHS[number];

/**
 * The client's ways to run a statement: `client.run(sql)`, `client.exec(sql)`,
 * `client.batch([{ sql }])`. Scripts (several statements) and transaction
 * control always go through `exec()`: `run()` and `batch()` take one
 * statement, and a batch is a transaction of its own.
 */
export const STATEMENT_PATHS = ["run", "exec", "batch"] as const;

/** A way to run a statement: see {@link STATEMENT_PATHS}. */
export type StatementPath = typeof STATEMENT_PATHS[number];

/** Paths that send a request only after a reply (`prepare`) or read in chunks (cursors). */
const WAITING_PATHS: ReadonlySet<string> = new Set(["iterate", "prepare.values", "prepare.all"]);

/** Options of {@link clientExecutor}. */
export interface ClientExecutorOptions {
  /**
   * Query paths to rotate over, in order: the n-th query of a script takes
   * `query[(n + offset) % query.length]`. @default {QUERY_PATHS}
   */
  query?: readonly QueryPath[];
  /** Statement paths to rotate over, likewise. @default {STATEMENT_PATHS} */
  statement?: readonly StatementPath[];
  /** Where the rotation starts. @default {0} */
  offset?: number;
  /**
   * The result column names of the query at a record index, from the
   * reference run: rows read as objects (`query`, `prepare.all`) are turned
   * back into arrays in this order.
   */
  columns?: (index: number) => string[] | undefined;
}

/**
 * Marks a value the client did not give: a column missing from an object
 * row, or a key the columns do not have (it then makes the row wider).
 */
function missing(what: string): string {
  return `<${what}>`;
}

/**
 * Rows read as objects, as arrays in the reference's column order. A column
 * named twice reads the object's one value (the last column of that name,
 * as documented). A missing column or an unknown key shows as a `<...>`
 * value, so such rows differ from the reference's; without reference
 * columns the values come in key order.
 */
export function objectsToRows(
  objects: readonly Record<string, unknown>[],
  columns: readonly string[] | undefined,
): unknown[][] {
  if (columns === undefined) return objects.map((o) => Object.values(o));
  const names = new Set(columns);
  return objects.map((o) => {
    const row = columns.map((c) => Object.hasOwn(o, c) ? o[c] : missing(`no key "${c}"`));
    for (const k of Object.keys(o)) if (!names.has(k)) row.push(missing(`extra key "${k}"`));
    return row;
  });
}

/** How many statements `sql` holds, and whether one is transaction control. */
export function statementShape(sql: string): { statements: number; txControl: boolean } {
  let statements = 0;
  let txControl = false;
  let atStart = true;
  let first = "";
  let trigger = false;
  let depth = 0; // BEGIN/CASE ... END nesting inside CREATE TRIGGER
  scan(sql, (t) => {
    if (t.kind === "semicolon") {
      if (depth === 0) {
        atStart = true;
        trigger = false;
      }
      return true;
    }
    if (atStart) {
      atStart = false;
      statements++;
      first = t.kind === "word" ? t.text : "";
      if (TX_WORDS.has(first)) txControl = true;
      return true;
    }
    if (first === "create" && t.kind === "word") {
      if (t.text === "trigger") trigger = true;
      else if (trigger && (t.text === "begin" || t.text === "case")) depth++;
      else if (trigger && t.text === "end" && depth > 0) depth--;
    }
    return true;
  });
  return { statements, txControl };
}

const TX_WORDS = new Set(["begin", "commit", "end", "rollback", "savepoint", "release"]);

/**
 * An executor over a live netsqlite client. Each query takes the next of
 * the client's read paths ({@link QUERY_PATHS}) in turn, each statement the
 * next of {@link STATEMENT_PATHS}, so that every path runs its share of a
 * script. Paths that send one request run pipelined; `iterate` and the
 * prepared statements run alone (see {@link Executor.route}).
 */
export function clientExecutor(client: Client, options: ClientExecutorOptions = {}): Executor {
  const queryPaths = options.query ?? QUERY_PATHS;
  const statementPaths = options.statement ?? STATEMENT_PATHS;
  const offset = options.offset ?? 0;
  const columns = options.columns ?? (() => undefined);
  const finalizing: Promise<unknown>[] = [];

  const queryPath = (call: CallInfo): QueryPath =>
    queryPaths[(call.ordinal + offset) % queryPaths.length];
  const statementPath = (sql: string, call: CallInfo): StatementPath => {
    const shape = statementShape(sql);
    if (shape.statements !== 1 || shape.txControl) return "exec";
    return statementPaths[(call.ordinal + offset) % statementPaths.length];
  };

  return {
    route(kind, sql, call) {
      const path = kind === "query" ? queryPath(call) : statementPath(sql, call);
      return { path, waits: WAITING_PATHS.has(path) };
    },
    async exec(sql, call) {
      switch (statementPath(sql, call)) {
        case "run":
          await client.run(sql);
          return;
        case "exec":
          await client.exec(sql);
          return;
        case "batch":
          await client.batch([{ sql }]);
          return;
      }
    },
    async query(sql, call) {
      switch (queryPath(call)) {
        case "values":
          return { rows: await client.values(sql) };
        case "query":
          return { rows: objectsToRows(await client.query(sql), columns(call.index)) };
        case "iterate": {
          const rows: unknown[][] = [];
          for await (const row of client.iterate<unknown[]>(sql, undefined, { arrays: true })) {
            rows.push(row);
          }
          return { rows };
        }
        case "prepare.values":
        case "prepare.all": {
          const stmt = await client.prepare(sql);
          try {
            return queryPath(call) === "prepare.values"
              ? { rows: await stmt.values() }
              : { rows: objectsToRows(await stmt.all(), columns(call.index)) };
          } finally {
            // Sent now, before the next record; its reply is awaited by finish().
            finalizing.push(stmt.finalize());
          }
        }
        case "batch": {
          const [result] = await client.batch<unknown[]>([{ sql }], { arrays: true });
          return { rows: result.rows };
        }
      }
    },
    async finish() {
      await Promise.all(finalizing.splice(0));
    },
  };
}

/** The members of node:sqlite's statement that Deno's declarations lack. */
interface ArrayStatement {
  all(): unknown[];
  columns(): { name: string }[];
  setReturnArrays(enabled: boolean): void;
  setReadBigInts(enabled: boolean): void;
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** A bigint within ±(2^53 - 1) as a number; any other value unchanged. */
export function normalizeValue(v: unknown): unknown {
  return typeof v === "bigint" && v <= MAX_SAFE && v >= -MAX_SAFE ? Number(v) : v;
}

/**
 * An executor directly on node:sqlite. Integers are read exactly (as
 * bigint) and then given as numbers when safe, like netsqlite's values.
 */
export function directExecutor(db: DatabaseSync): Executor {
  return {
    exec(sql) {
      try {
        db.exec(sql);
        return Promise.resolve();
      } catch (err) {
        return Promise.reject(err);
      }
    },
    query(sql) {
      try {
        const stmt = db.prepare(sql) as unknown as ArrayStatement;
        stmt.setReturnArrays(true);
        stmt.setReadBigInts(true);
        const rows = stmt.all() as unknown[][];
        for (const row of rows) {
          for (let i = 0; i < row.length; i++) row[i] = normalizeValue(row[i]);
        }
        return Promise.resolve({ rows, columns: stmt.columns().map((c) => c.name) });
      } catch (err) {
        return Promise.reject(err);
      }
    },
  };
}

/**
 * An executor directly on a connection of the project's SQLite binding
 * (`engine/binding/`), in this process: with the FFI implementation, the
 * very library a server on the FFI engine runs. The binding gives integers
 * as numbers when safe, else bigint, like netsqlite's values.
 */
export function bindingExecutor(db: Db): Executor {
  return {
    exec(sql) {
      try {
        db.exec(sql);
        return Promise.resolve();
      } catch (err) {
        return Promise.reject(err);
      }
    },
    query(sql) {
      try {
        const stmt = db.prepare(sql);
        if (stmt === null) return Promise.resolve({ rows: [], columns: [] });
        try {
          stmt.bind([]);
          const rows = stmt.all();
          return Promise.resolve({ rows, columns: stmt.columnNames() });
        } finally {
          stmt.finalize();
        }
      } catch (err) {
        return Promise.reject(err);
      }
    },
  };
}

// ---- value formatting -------------------------------------------------------

const INT64_MAX = (1n << 63n) - 1n;
const INT64_MIN = -(1n << 63n);
const TWO_63 = 2 ** 63;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Decimal digits of `r > 0` the way SQLite's `sqlite3Fp2Convert10` makes
 * them for 18 digits: `r * 10^p` rounded half-up to an integer, where `p`
 * comes from SQLite's estimate of the decimal exponent (so 18 or 19 digits).
 * Computed exactly here, where SQLite uses 96-bit powers of ten: checked
 * against SQLite 3.53 for random doubles, `%.3f` agrees below 1e20 and the
 * text form between 1e-10 and 1e20; beyond, near-ties may differ in the last
 * digit.
 */
function fpDigits(r: number): { z: string; exp: number } {
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, r);
  const bits = view.getBigUint64(0);
  let e = Number((bits >> 52n) & 0x7ffn);
  let m = bits & 0xfffffffffffffn;
  if (e === 0) {
    const nn = 64 - m.toString(2).length; // leading zeros of the subnormal mantissa
    m <<= BigInt(nn);
    e = -1074 - nn;
  } else {
    m = (m << 11n) | (1n << 63n);
    e -= 1086;
  }
  const p = 17 - (((e + 63) * 78913) >> 18);
  let num = m, den = 1n;
  if (e >= 0) num <<= BigInt(e);
  else den <<= BigInt(-e);
  if (p >= 0) num *= 10n ** BigInt(p);
  else den *= 10n ** BigInt(-p);
  return { z: ((2n * num + den) / (2n * den)).toString(), exp: -p };
}

/** Adds one unit in the last place of a digit string. */
function incrementDigits(z: string): string {
  return (BigInt(z) + 1n).toString().padStart(z.length, "0");
}

/**
 * SQLite's `sqlite3FpDecode(r, iRound, mxRound)` for a finite non-zero `d`:
 * significant digits `z` (no trailing zeros) and the position `iDP` of the
 * decimal point (`d = 0.z * 10^iDP`).
 */
function fpDecode(d: number, iRound: number, mxRound: number): { z: string; iDP: number } {
  const r = Math.abs(d);
  const conv = fpDigits(r);
  let z = conv.z;
  let n = z.length;
  let iDP = n + conv.exp;
  if (iRound <= 0) {
    iRound = iDP - iRound;
    if (iRound === 0 && z[0] >= "5") {
      iRound = 1;
      z = "0" + z;
      n++;
      iDP++;
    }
  }
  if (iRound > 0 && (iRound < n || n > mxRound)) {
    if (iRound > mxRound) iRound = mxRound;
    if (iRound === 17) {
      // Prefer a shorter form when it reads back as the same double.
      if (z[15] === "9" && z[14] === "9") {
        let jj = 14;
        while (jj > 0 && z[jj - 1] === "9") jj--;
        const v2 = jj === 0 ? 1n : BigInt(z.slice(0, jj)) + 1n;
        if (Number(`${v2}e${conv.exp + n - jj}`) === r) iRound = jj + 1;
      } else if (iDP >= n || (z[15] === "0" && z[14] === "0" && z[13] === "0")) {
        let jj = 13;
        while (jj > 1 && z[jj - 1] === "0") jj--;
        if (Number(`${z.slice(0, jj)}e${conv.exp + n - jj}`) === r) iRound = jj + 1;
      }
    }
    const up = z[iRound] >= "5";
    z = z.slice(0, iRound);
    if (up) {
      const inc = incrementDigits(z);
      if (inc.length > z.length) iDP++;
      z = inc;
    }
  }
  return { z: z.replace(/0+$/, ""), iDP };
}

/**
 * SQLite's text for a REAL (`CAST(x AS TEXT)`, `sqlite3_column_text`):
 * `printf("%!.17g")`, which gives up to 17 significant digits, fewer when
 * they read back as the same double.
 */
export function realToText(d: number): string {
  if (Number.isNaN(d)) return "NaN";
  if (d === Infinity) return "Inf";
  if (d === -Infinity) return "-Inf";
  if (d === 0) return "0.0";
  const sign = d < 0 ? "-" : "";
  const { z, iDP } = fpDecode(d, 17, 26);
  const x = iDP - 1; // decimal exponent of the first digit
  if (x < -4 || x > 16) {
    const ax = Math.abs(x);
    const e = `e${x < 0 ? "-" : "+"}${ax < 10 ? "0" : ""}${ax}`;
    return `${sign}${z[0]}.${z.slice(1) || "0"}${e}`;
  }
  if (iDP <= 0) return `${sign}0.${"0".repeat(-iDP)}${z}`;
  return `${sign}${z.slice(0, iDP).padEnd(iDP, "0")}.${z.slice(iDP) || "0"}`;
}

/**
 * SQLite's `printf('%.3f', d)`: rounded half-up to 3 decimals, but to at
 * most 16 significant digits (so large values end in zeros).
 */
export function formatReal3(d: number): string {
  if (Number.isNaN(d)) return "NaN";
  if (d === Infinity) return "Inf";
  if (d === -Infinity) return "-Inf";
  if (d === 0) return "0.000";
  const sign = d < 0 ? "-" : "";
  const { z, iDP } = fpDecode(d, -3, 16);
  const digit = (k: number) => (k >= 0 && k < z.length ? z[k] : "0");
  let int = "";
  for (let k = 0; k < iDP; k++) int += digit(k);
  let frac = "";
  for (let k = iDP; k < iDP + 3; k++) frac += digit(k);
  return `${sign}${int || "0"}.${frac}`;
}

/** The bytes SQLite would give for a text or blob value. */
function bytesOf(v: string | Uint8Array): Uint8Array {
  return typeof v === "string" ? encoder.encode(v) : v;
}

/** `sqlite3Atoi64` on text: leading blanks, a sign, digits; clamps to 64 bits. */
function textToInt64(bytes: Uint8Array): bigint {
  let i = 0;
  while (i < bytes.length && (bytes[i] === 0x20 || (bytes[i] >= 0x09 && bytes[i] <= 0x0d))) i++;
  let neg = false;
  if (bytes[i] === 0x2d || bytes[i] === 0x2b) neg = bytes[i++] === 0x2d;
  let n = 0n;
  while (i < bytes.length && bytes[i] >= 0x30 && bytes[i] <= 0x39) {
    n = n * 10n + BigInt(bytes[i++] - 0x30);
    if (n > INT64_MAX + 1n) break;
  }
  if (neg) n = -n;
  return n > INT64_MAX ? INT64_MAX : n < INT64_MIN ? INT64_MIN : n;
}

/** `sqlite3AtoF` on text: the longest leading number, else 0. */
function textToReal(bytes: Uint8Array): number {
  const m = /^[ \t\n\v\f\r]*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)/.exec(
    decoder.decode(bytes),
  );
  return m === null ? 0 : Number(m[1]);
}

/** `(i64)r` with SQLite's clamping. */
function realToInt64(d: number): bigint {
  if (Number.isNaN(d)) return 0n;
  if (d <= -TWO_63) return INT64_MIN;
  if (d >= TWO_63) return INT64_MAX;
  return BigInt(Math.trunc(d));
}

/** True when a JavaScript value stands for an SQLite INTEGER (not a REAL). */
function isIntegerValue(v: number): boolean {
  return Number.isSafeInteger(v) && !Object.is(v, -0);
}

const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;

/** Formats one value for a column of type `T`, `I` or `R`. */
export function formatValue(v: unknown, type: string): string {
  if (v === null || v === undefined) return "NULL";
  switch (type) {
    case "I":
      if (typeof v === "bigint") return String(v);
      if (typeof v === "number") return isIntegerValue(v) ? String(v) : String(realToInt64(v));
      if (typeof v === "boolean") return v ? "1" : "0";
      if (typeof v === "string" || v instanceof Uint8Array) return String(textToInt64(bytesOf(v)));
      break;
    case "R":
      if (typeof v === "number") return formatReal3(v);
      if (typeof v === "bigint") return formatReal3(Number(v));
      if (typeof v === "boolean") return formatReal3(v ? 1 : 0);
      if (typeof v === "string" || v instanceof Uint8Array) {
        return formatReal3(textToReal(bytesOf(v)));
      }
      break;
    case "T": {
      // Printable ASCII prints as it is (the common case, quick for long text).
      if (typeof v === "string" && v !== "" && PRINTABLE_ASCII.test(v)) return v;
      let bytes: Uint8Array;
      if (typeof v === "string" || v instanceof Uint8Array) {
        bytes = bytesOf(v);
        const nul = bytes.indexOf(0);
        if (nul !== -1) bytes = bytes.subarray(0, nul); // C strings end at NUL
      } else if (typeof v === "number") {
        bytes = encoder.encode(isIntegerValue(v) ? String(v) : realToText(v));
      } else if (typeof v === "bigint") {
        bytes = encoder.encode(String(v));
      } else if (typeof v === "boolean") {
        bytes = encoder.encode(v ? "1" : "0");
      } else {
        break;
      }
      if (bytes.length === 0) return "(empty)";
      let out = "";
      for (const b of bytes) out += b < 0x20 || b > 0x7e ? "@" : String.fromCharCode(b);
      return out;
    }
  }
  throw new TypeError(`Cannot format ${typeof v} value for a column of type "${type}"`);
}

/** Formats a query's rows and orders the values by the sort mode; the values, flattened. */
export function formatRows(rows: unknown[][], types: string, sort: string): string[] {
  const formatted = rows.map((row) => row.map((v, i) => formatValue(v, types[i] ?? "T")));
  if (sort === "rowsort") {
    formatted.sort((a, b) => {
      for (let i = 0; i < Math.min(a.length, b.length); i++) {
        if (a[i] !== b[i]) return a[i] < b[i] ? -1 : 1;
      }
      return a.length - b.length;
    });
  }
  const values = formatted.flat();
  if (sort === "valuesort") values.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return values;
}

/** MD5 (lower-case hex) of every value followed by a newline. */
export function hashValues(values: readonly string[]): string {
  const h = createHash("md5");
  for (const v of values) h.update(v + "\n");
  return h.digest("hex");
}

// ---- running ----------------------------------------------------------------

/** Outcome of one statement or query record. */
export interface RecordResult {
  /** Index of the record in `script.records`. */
  index: number;
  /** Line of the record's command. */
  line: number;
  kind: "statement" | "query";
  sql: string;
  /** The API path the record went through (see {@link Executor.route}); unset when skipped. */
  path?: string;
  status: "pass" | "fail" | "skip";
  /** Why it failed or was skipped. */
  message?: string;
  /** Whether the engine ran the SQL without error (unset when skipped). */
  succeeded?: boolean;
  /** The engine's error message, when it failed. */
  error?: string;
  /** Raw rows returned by a query. */
  rows?: unknown[][];
  /** Result column names, where the executor gives them. */
  columns?: string[];
  /** Formatted, sorted values of a query. */
  values?: string[];
  /** MD5 of `values`. */
  hash?: string;
}

/** Outcome of a whole script. */
export interface RunReport {
  name: string;
  /** Statement and query records in the script. */
  records: number;
  passed: number;
  failed: number;
  /** Records not run: conditions exclude the engine, or after `halt`. */
  skipped: number;
  /** One result per statement/query record, in script order. */
  results: RecordResult[];
}

/** Options of {@link runScript}. */
export interface RunOptions {
  /** Engine name matched by `skipif` / `onlyif`. @default {"sqlite"} */
  engine?: string;
  /**
   * How many requests may be outstanding at once. The executor must run
   * requests in the order issued (netsqlite's client does). @default {1}
   */
  pipeline?: number;
}

type Settled =
  | { ok: true; rows: unknown[][] | null; columns?: string[] }
  | { ok: false; error: string };

function settle(p: Promise<QueryOutput | void>): Promise<Settled> {
  return p.then(
    (out) => ({ ok: true, rows: out?.rows ?? null, columns: out?.columns }),
    (err) => ({ ok: false, error: (err as Error)?.message ?? String(err) }),
  );
}

/**
 * Runs a script and checks every record.
 *
 * Requests are issued in script order, up to `pipeline` at a time (a
 * record whose route `waits` settles before the next is issued); results
 * are checked in order afterwards (labels compare hashes across records).
 */
export async function runScript(
  script: Script,
  executor: Executor,
  options: RunOptions = {},
): Promise<RunReport> {
  const engine = options.engine ?? "sqlite";
  const window = Math.max(1, options.pipeline ?? 1);
  const results: RecordResult[] = [];
  interface Planned {
    record: StatementRecord | QueryRecord;
    result: RecordResult;
    threshold: number;
    call: CallInfo;
    outcome?: Promise<Settled>;
  }
  const planned: Planned[] = [];
  let threshold = 0;
  let halted = false;
  let statements = 0;
  let queries = 0;
  for (let index = 0; index < script.records.length; index++) {
    const record = script.records[index];
    const applies = !halted && appliesTo(record, engine);
    if (record.type === "halt") {
      if (applies) halted = true;
      continue;
    }
    if (record.type === "hash-threshold") {
      if (applies) threshold = record.threshold;
      continue;
    }
    const result: RecordResult = {
      index,
      line: record.line,
      kind: record.type,
      sql: record.sql,
      status: "skip",
    };
    results.push(result);
    if (!applies) {
      result.message = halted ? "after halt" : `not for ${engine}`;
      continue;
    }
    const ordinal = record.type === "query" ? queries++ : statements++;
    planned.push({ record, result, threshold, call: { index, ordinal } });
  }

  // Issue requests in order, keeping at most `window` outstanding.
  const inFlight: Promise<Settled>[] = [];
  for (const p of planned) {
    if (inFlight.length >= window) await inFlight.shift();
    const route = executor.route?.(p.record.type, p.record.sql, p.call) ??
      { path: "direct", waits: false };
    p.result.path = route.path;
    p.outcome = settle(
      p.record.type === "query"
        ? executor.query(p.record.sql, p.call)
        : executor.exec(p.record.sql, p.call),
    );
    inFlight.push(p.outcome);
    if (route.waits) await p.outcome;
  }
  await executor.finish?.();

  // Check in order.
  const labels = new Map<string, string>();
  for (const p of planned) {
    const outcome = await p.outcome!;
    const r = p.result;
    r.succeeded = outcome.ok;
    if (!outcome.ok) r.error = outcome.error;
    if (p.record.type === "statement") {
      const wantOk = p.record.expect === "ok";
      if (outcome.ok === wantOk) {
        r.status = "pass";
      } else {
        r.status = "fail";
        r.message = wantOk ? `statement failed: ${r.error}` : "statement succeeded, expected error";
      }
      continue;
    }
    checkQuery(p.record, r, outcome, p.threshold, labels);
  }

  let passed = 0, failed = 0, skipped = 0;
  for (const r of results) {
    if (r.status === "pass") passed++;
    else if (r.status === "fail") failed++;
    else skipped++;
  }
  return { name: script.name, records: results.length, passed, failed, skipped, results };
}

const HASH_LINE = /^(\d+) values hashing to ([0-9a-f]{32})$/;

function checkQuery(
  record: QueryRecord,
  r: RecordResult,
  outcome: Settled,
  threshold: number,
  labels: Map<string, string>,
): void {
  if (!outcome.ok) {
    r.status = "fail";
    r.message = `query failed: ${outcome.error}`;
    return;
  }
  const rows = outcome.rows ?? [];
  r.rows = rows;
  if (outcome.columns !== undefined) r.columns = outcome.columns;
  const width = record.types.length;
  const bad = rows.find((row) => row.length !== width);
  if (bad !== undefined) {
    r.status = "fail";
    r.message = `query returned ${bad.length} columns, types "${record.types}" say ${width}`;
    return;
  }
  const values = formatRows(rows, record.types, record.sort);
  const hash = hashValues(values);
  r.values = values;
  r.hash = hash;
  const problems: string[] = [];
  if (record.expected !== null) {
    const m = record.expected.length === 1 ? HASH_LINE.exec(record.expected[0].trim()) : null;
    if (m !== null) {
      const got = `${values.length} values hashing to ${hash}`;
      if (Number(m[1]) !== values.length || m[2] !== hash) {
        problems.push(`expected "${record.expected[0].trim()}", got "${got}"`);
      }
    } else {
      // Values listed one per line. (Over the threshold SQLite's driver would
      // print the hash line instead; a correct listing is accepted too.)
      const expected = record.expected.map((l) => l.trimEnd());
      if (expected.length !== values.length || expected.some((v, i) => v !== values[i])) {
        const shown = values.length > Math.max(threshold, 8) && threshold > 0
          ? `${values.length} values hashing to ${hash}`
          : JSON.stringify(values);
        problems.push(`expected ${JSON.stringify(expected)}, got ${shown}`);
      }
    }
  }
  if (record.label !== null) {
    const earlier = labels.get(record.label);
    if (earlier === undefined) labels.set(record.label, hash);
    else if (earlier !== hash) {
      problems.push(`label ${record.label}: hash ${hash} differs from earlier ${earlier}`);
    }
  }
  if (problems.length === 0) {
    r.status = "pass";
  } else {
    r.status = "fail";
    r.message = problems.join("; ");
  }
}
