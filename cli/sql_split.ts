/**
 * Statement completeness and splitting for the shell, after SQLite's own
 * `sqlite3_complete()`: a statement ends at a `;` that is not inside a
 * string, a quoted identifier or a comment, and a `CREATE TRIGGER` ends only
 * at `; END;` (so the `;` inside its `BEGIN ... END` body do not end it).
 *
 * Pure: text in, statements out, no I/O.
 *
 * @module
 */

/** Token classes of the completeness state machine (as in sqlite3_complete). */
const Tok = {
  Semi: 0,
  Ws: 1,
  Other: 2,
  Explain: 3,
  Create: 4,
  Temp: 5,
  Trigger: 6,
  End: 7,
} as const;

/**
 * States: 0 nothing yet, 1 at a statement boundary, 2 inside a statement,
 * 3 after EXPLAIN, 4 after CREATE [TEMP], 5 inside a trigger, 6 after `;` in
 * a trigger, 7 after `; END` in a trigger.
 */
const TRANS: readonly (readonly number[])[] = [
  /*             SEMI WS OTHER EXPLAIN CREATE TEMP TRIGGER END */
  /* 0 none    */ [1, 0, 2, 3, 4, 2, 2, 2],
  /* 1 start   */ [1, 1, 2, 3, 4, 2, 2, 2],
  /* 2 normal  */ [1, 2, 2, 2, 2, 2, 2, 2],
  /* 3 explain */ [1, 3, 3, 2, 4, 2, 2, 2],
  /* 4 create  */ [1, 4, 2, 2, 2, 4, 5, 2],
  /* 5 trigger */ [6, 5, 5, 5, 5, 5, 5, 5],
  /* 6 semi    */ [6, 6, 5, 5, 5, 5, 5, 7],
  /* 7 end     */ [1, 7, 5, 5, 5, 5, 5, 5],
];

const KEYWORDS: Readonly<Record<string, number>> = {
  CREATE: Tok.Create,
  TEMP: Tok.Temp,
  TEMPORARY: Tok.Temp,
  TRIGGER: Tok.Trigger,
  END: Tok.End,
  EXPLAIN: Tok.Explain,
};

function isIdChar(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) ||
    c === 0x5f || c === 0x24 || c >= 0x80;
}

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0c || c === 0x0d;
}

/**
 * Reads one token at `i`. Returns `[token, end]`, or `null` when the token
 * may continue past the end of the text (an open string, quoted identifier
 * or comment, or a word or `-`/`/` touching the end).
 */
function readToken(sql: string, i: number, atEof: boolean): [number, number] | null {
  const c = sql.charCodeAt(i);
  const n = sql.length;
  if (c === 0x3b) return [Tok.Semi, i + 1];
  if (isSpace(c)) return [Tok.Ws, i + 1];
  if (c === 0x2f) { // '/'
    if (i + 1 >= n) return atEof ? [Tok.Other, n] : null;
    if (sql.charCodeAt(i + 1) !== 0x2a) return [Tok.Other, i + 1];
    const end = sql.indexOf("*/", i + 2);
    if (end === -1) return atEof ? [Tok.Ws, n] : null;
    return [Tok.Ws, end + 2];
  }
  if (c === 0x2d) { // '-'
    if (i + 1 >= n) return atEof ? [Tok.Other, n] : null;
    if (sql.charCodeAt(i + 1) !== 0x2d) return [Tok.Other, i + 1];
    const eol = sql.indexOf("\n", i + 2);
    if (eol === -1) return atEof ? [Tok.Ws, n] : null;
    return [Tok.Ws, eol + 1];
  }
  if (c === 0x5b) { // '[' ... ']'
    const end = sql.indexOf("]", i + 1);
    if (end === -1) return atEof ? [Tok.Other, n] : null;
    return [Tok.Other, end + 1];
  }
  if (c === 0x27 || c === 0x22 || c === 0x60) { // ' " `: a doubled quote stays inside
    const q = sql[i];
    let j = i + 1;
    while (true) {
      const end = sql.indexOf(q, j);
      if (end === -1) return atEof ? [Tok.Other, n] : null;
      if (sql[end + 1] === q) {
        j = end + 2;
        continue;
      }
      if (end + 1 >= n && !atEof) return null; // the next chunk may begin with the doubling quote
      return [Tok.Other, end + 1];
    }
  }
  if (isIdChar(c)) {
    let j = i + 1;
    while (j < n && isIdChar(sql.charCodeAt(j))) j++;
    if (j >= n && !atEof) return null;
    const word = j - i <= 9 ? sql.slice(i, j).toUpperCase() : "";
    return [KEYWORDS[word] ?? Tok.Other, j];
  }
  return [Tok.Other, i + 1];
}

/**
 * Accumulates SQL text (a line at a time, or any chunks) and hands back each
 * statement as soon as it is complete, the terminating `;` included.
 * Statements holding nothing but blanks, comments and `;` are dropped.
 *
 * @example
 * ```ts
 * import { SqlSplitter } from "./sql_split.ts";
 * const s = new SqlSplitter();
 * const done = s.push("SELECT ';'; SELECT 2");
 * if (done.length !== 1 || done[0] !== "SELECT ';';") throw new Error("wrong split");
 * if (s.flush() !== "SELECT 2") throw new Error("wrong rest");
 * ```
 */
export class SqlSplitter {
  #text = "";
  /** Where scanning resumes: the start of the first token not yet classified. */
  #pos = 0;
  #state = 0;
  /** True once the pending statement holds a token other than blanks, comments, `;`. */
  #content = false;

  /**
   * True when nothing but blanks and finished comments is pending: the shell
   * shows its first prompt then, and a line starting with `.` is a dot command.
   */
  get isEmpty(): boolean {
    return !this.#content && this.#pos >= this.#text.length;
  }

  /** The text of the statement still incomplete. */
  get pending(): string {
    return this.#text;
  }

  /**
   * Adds text; returns the statements it completed, in order.
   *
   * @param chunk More SQL text (lines keep their `\n`).
   * @returns complete statements, each ending with its `;`.
   */
  push(chunk: string): string[] {
    this.#text += chunk;
    return this.#scan(false);
  }

  /**
   * Ends the input: returns what is left if it holds a statement (run it as
   * is; SQLite reports it if it is truly incomplete), else `null`. Resets.
   */
  flush(): string | null {
    this.#scan(true);
    const rest = this.#content ? this.#text : null;
    this.reset();
    return rest;
  }

  /** Drops everything pending (Ctrl-C at the prompt). */
  reset(): void {
    this.#text = "";
    this.#pos = 0;
    this.#state = 0;
    this.#content = false;
  }

  #scan(atEof: boolean): string[] {
    const out: string[] = [];
    const sql = this.#text;
    let start = 0;
    let i = this.#pos;
    while (i < sql.length) {
      const t = readToken(sql, i, atEof);
      if (t === null) break;
      const [tok, end] = t;
      this.#state = TRANS[this.#state][tok];
      if (tok !== Tok.Ws && tok !== Tok.Semi) this.#content = true;
      i = end;
      if (!this.#content) start = i; // a statement starts at its first token
      if (this.#state === 1) {
        // A `;` ended the statement (for a trigger: the `;` of `; END ;`).
        if (this.#content) out.push(sql.slice(start, i));
        start = i;
        this.#content = false;
        this.#state = 0;
      }
    }
    this.#text = sql.slice(start);
    this.#pos = i - start;
    if (!this.#content && this.#pos >= this.#text.length) {
      // Only blanks and comments left: forget them.
      this.#text = "";
      this.#pos = 0;
    }
    return out;
  }
}

/**
 * Splits a script into statements; a last statement without `;` is kept.
 *
 * @param sql Any number of statements.
 * @returns each statement's text (terminating `;` included when present).
 */
export function splitStatements(sql: string): string[] {
  const s = new SqlSplitter();
  const out = s.push(sql);
  const rest = s.flush();
  if (rest !== null) out.push(rest);
  return out;
}

/**
 * True when `sql` ends with a complete statement, as `sqlite3_complete()`
 * decides: the shell asks for more lines until it is.
 *
 * @param sql SQL text.
 * @returns whether nothing is left pending after the last `;`.
 */
export function isComplete(sql: string): boolean {
  const s = new SqlSplitter();
  return s.push(sql).length > 0 && s.isEmpty;
}
