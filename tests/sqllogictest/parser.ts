/**
 * Parser for SQLite's sqllogictest script format.
 *
 * A script is a list of records separated by blank lines; lines starting
 * with `#` before a record are comments. Records:
 *
 * - `statement ok` / `statement error`, then the SQL on the following lines;
 * - `query <types> <sort> [label]`, then the SQL, then `----` and the
 *   expected values (one per line, or one `N values hashing to <md5>` line);
 * - `hash-threshold N` and `halt`.
 *
 * Any record may be preceded by `skipif <engine>` / `onlyif <engine>` lines
 * (text after the engine name is a comment).
 *
 * @module
 */

/** A `skipif` / `onlyif` line in front of a record. */
export interface Condition {
  kind: "skipif" | "onlyif";
  /** Engine name, e.g. `sqlite`, `mysql`, `mssql`. */
  engine: string;
}

interface RecordBase {
  /** 1-based line number of the record's command line (`statement`, `query`, ...). */
  line: number;
  /** Conditions written before the record, in order. */
  conditions: Condition[];
}

/** `statement ok` / `statement error`. */
export interface StatementRecord extends RecordBase {
  type: "statement";
  /** Whether the statement must succeed or fail. */
  expect: "ok" | "error";
  /** SQL text (lines joined with `\n`). */
  sql: string;
}

/** Sort mode of a query record. */
export type SortMode = "nosort" | "rowsort" | "valuesort";

/** `query <types> <sort> [label]`. */
export interface QueryRecord extends RecordBase {
  type: "query";
  /** One letter per result column: `T`, `I` or `R`. */
  types: string;
  sort: SortMode;
  /** Label whose hash must agree with other queries of the same label. */
  label: string | null;
  /** SQL text (lines joined with `\n`). */
  sql: string;
  /**
   * Expected result lines after `----`; `null` when the record has no `----`
   * (its result is not checked, except against its label).
   */
  expected: string[] | null;
}

/** `hash-threshold N`: results with more than N values are compared by hash. */
export interface HashThresholdRecord extends RecordBase {
  type: "hash-threshold";
  threshold: number;
}

/** `halt`: stop running the script (subject to its conditions). */
export interface HaltRecord extends RecordBase {
  type: "halt";
}

/** Any record of a script. */
export type SltRecord = StatementRecord | QueryRecord | HashThresholdRecord | HaltRecord;

/** A parsed script. */
export interface Script {
  /** Name used in messages (usually the file path). */
  name: string;
  records: SltRecord[];
}

/** A malformed script. */
export class SltParseError extends Error {
  /**
   * @param name Script name.
   * @param line 1-based line number.
   * @param message What is wrong.
   */
  constructor(name: string, line: number, message: string) {
    super(`${name}:${line}: ${message}`);
    this.name = "SltParseError";
  }
}

const SORT_MODES = new Set<string>(["nosort", "rowsort", "valuesort"]);

/** Splits a command line into tokens, dropping a trailing `#` comment. */
function tokens(line: string): string[] {
  const out: string[] = [];
  for (const t of line.trim().split(/\s+/)) {
    if (t.startsWith("#")) break;
    if (t !== "") out.push(t);
  }
  return out;
}

/**
 * Parses sqllogictest text.
 *
 * @param text Script text (LF or CRLF line ends).
 * @param name Name used in error messages.
 * @throws {SltParseError} on an unknown or malformed record.
 */
export function parseScript(text: string, name = "<script>"): Script {
  const lines = text.split(/\r?\n/);
  const records: SltRecord[] = [];
  let i = 0;
  const blank = (s: string) => s.trim() === "";
  while (i < lines.length) {
    // Skip blank lines and comments between records.
    if (blank(lines[i]) || lines[i].startsWith("#")) {
      i++;
      continue;
    }
    const conditions: Condition[] = [];
    let head = tokens(lines[i]);
    while (head[0] === "skipif" || head[0] === "onlyif") {
      if (head.length < 2) throw new SltParseError(name, i + 1, `${head[0]} without an engine`);
      conditions.push({ kind: head[0], engine: head[1] });
      i++;
      // Comments may sit between a condition and its record.
      while (i < lines.length && lines[i].startsWith("#")) i++;
      if (i >= lines.length || blank(lines[i])) {
        throw new SltParseError(name, i, "condition not followed by a record");
      }
      head = tokens(lines[i]);
    }
    const line = i + 1;
    i++;
    // The body: every following line up to the next blank line.
    const body: string[] = [];
    while (i < lines.length && !blank(lines[i])) body.push(lines[i++]);
    switch (head[0]) {
      case "statement": {
        if (head[1] !== "ok" && head[1] !== "error") {
          throw new SltParseError(name, line, `expected "statement ok" or "statement error"`);
        }
        if (body.length === 0) throw new SltParseError(name, line, "statement without SQL");
        records.push({
          type: "statement",
          line,
          conditions,
          expect: head[1],
          sql: body.join("\n"),
        });
        break;
      }
      case "query": {
        const types = head[1];
        if (types === undefined || !/^[TIR]+$/.test(types)) {
          throw new SltParseError(name, line, `bad column types "${types ?? ""}"`);
        }
        const sort = head[2] ?? "nosort";
        if (!SORT_MODES.has(sort)) throw new SltParseError(name, line, `bad sort mode "${sort}"`);
        const sep = body.indexOf("----");
        const sqlLines = sep === -1 ? body : body.slice(0, sep);
        if (sqlLines.length === 0) throw new SltParseError(name, line, "query without SQL");
        records.push({
          type: "query",
          line,
          conditions,
          types,
          sort: sort as SortMode,
          label: head[3] ?? null,
          sql: sqlLines.join("\n"),
          expected: sep === -1 ? null : body.slice(sep + 1),
        });
        break;
      }
      case "hash-threshold": {
        const threshold = Number(head[1]);
        if (!Number.isInteger(threshold) || threshold < 0) {
          throw new SltParseError(name, line, `bad hash-threshold "${head[1] ?? ""}"`);
        }
        records.push({ type: "hash-threshold", line, conditions, threshold });
        break;
      }
      case "halt":
        records.push({ type: "halt", line, conditions });
        break;
      default:
        throw new SltParseError(name, line, `unknown record "${lines[line - 1].trim()}"`);
    }
  }
  return { name, records };
}

/**
 * True when a record's conditions let it run on `engine`: no `skipif` names
 * the engine, and every `onlyif` does.
 */
export function appliesTo(record: SltRecord, engine = "sqlite"): boolean {
  for (const c of record.conditions) {
    if (c.kind === "skipif" && c.engine === engine) return false;
    if (c.kind === "onlyif" && c.engine !== engine) return false;
  }
  return true;
}
