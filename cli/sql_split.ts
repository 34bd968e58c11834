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
 * A token the text so far ends inside, carried over to the next chunk: a string or quoted
 * identifier (`closing`: its last character so far is the quote, which a next one would double),
 * a comment (`star`: a block comment's last character so far is `*`), a `[...]` identifier, a
 * word (its first {@link WORD_KEPT} characters), or a `-` or `/` that may begin a comment.
 */
type Open =
  | { kind: "quote"; quote: string; closing: boolean }
  | { kind: "block"; star: boolean }
  | { kind: "line" }
  | { kind: "bracket" }
  | { kind: "word"; word: string }
  | { kind: "dash" }
  | { kind: "slash" };

/** Characters of a word kept to tell a keyword (the longest, `TEMPORARY`, has 9). */
const WORD_KEPT = 10;

function wordToken(word: string): number {
  return word.length <= 9 ? KEYWORDS[word.toUpperCase()] ?? Tok.Other : Tok.Other;
}

/** The class of a token the text ends inside: what it is when no more text comes. */
function tokenAtEnd(open: Open): number {
  switch (open.kind) {
    case "block":
    case "line":
      return Tok.Ws;
    case "word":
      return wordToken(open.word);
    default:
      return Tok.Other;
  }
}

/**
 * Accumulates SQL text (a line at a time, or any chunks) and hands back each
 * statement as soon as it is complete, the terminating `;` included.
 * Statements holding nothing but blanks, comments and `;` are dropped.
 *
 * Each chunk is scanned once: a token cut by the end of a chunk (a string or
 * comment over many lines) is carried on, not read again from its start, so
 * a statement of any number of lines costs time in proportion to its length.
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
  /** The pending statement's text before the chunk being scanned, from its first token. */
  #parts: string[] = [];
  /** The token the text so far ends inside, if any. */
  #open: Open | null = null;
  #state = 0;
  /** True once the pending statement holds a token other than blanks, comments, `;`. */
  #content = false;
  /** The chunk being scanned, and where the pending statement's text starts in it. */
  #chunk = "";
  #from = 0;
  #out: string[] = [];

  /**
   * True when nothing but blanks and finished comments is pending: the shell
   * shows its first prompt then, and a line starting with `.` is a dot command.
   */
  get isEmpty(): boolean {
    return !this.#content && this.#open === null;
  }

  /** The text of the statement still incomplete. */
  get pending(): string {
    return this.#parts.join("");
  }

  /**
   * Adds text; returns the statements it completed, in order.
   *
   * @param chunk More SQL text (lines keep their `\n`).
   * @returns complete statements, each ending with its `;`.
   */
  push(chunk: string): string[] {
    this.#chunk = chunk;
    this.#from = 0;
    this.#out = [];
    this.#scan();
    if (this.#from < chunk.length) this.#parts.push(chunk.slice(this.#from));
    this.#chunk = "";
    const out = this.#out;
    this.#out = [];
    return out;
  }

  /**
   * Ends the input: returns what is left if it holds a statement (run it as
   * is; SQLite reports it if it is truly incomplete), else `null`. Resets.
   */
  flush(): string | null {
    if (this.#open !== null) {
      const tok = tokenAtEnd(this.#open);
      this.#open = null;
      this.#token(tok, 0);
    }
    const rest = this.#content ? this.#parts.join("") : null;
    this.reset();
    return rest;
  }

  /** Drops everything pending (Ctrl-C at the prompt). */
  reset(): void {
    this.#parts = [];
    this.#open = null;
    this.#state = 0;
    this.#content = false;
  }

  /** A token of class `tok` ended at `end` of the chunk: a statement may end or start there. */
  #token(tok: number, end: number): void {
    this.#state = TRANS[this.#state][tok];
    if (tok !== Tok.Ws && tok !== Tok.Semi) this.#content = true;
    if (this.#state === 1) {
      // A `;` ended the statement (for a trigger: the `;` of `; END ;`).
      if (this.#content) {
        this.#out.push(this.#parts.join("") + this.#chunk.slice(this.#from, end));
      }
      this.#content = false;
      this.#state = 0;
    }
    if (!this.#content) {
      // A statement starts at its first token: blanks, comments and `;` before it are dropped.
      this.#parts = [];
      this.#from = end;
    }
  }

  #scan(): void {
    const sql = this.#chunk;
    const n = sql.length;
    let i = 0;
    while (true) {
      const open = this.#open;
      if (open !== null) {
        const end = this.#carryOn(open, i);
        if (end === -1) return; // the chunk ends inside the token
        i = end;
        continue;
      }
      if (i >= n) return;
      const c = sql.charCodeAt(i);
      if (c === 0x3b) this.#token(Tok.Semi, ++i);
      else if (isSpace(c)) this.#token(Tok.Ws, ++i);
      else if (c === 0x2f) { // '/'
        this.#open = { kind: "slash" };
        i++;
      } else if (c === 0x2d) { // '-'
        this.#open = { kind: "dash" };
        i++;
      } else if (c === 0x5b) { // '['
        this.#open = { kind: "bracket" };
        i++;
      } else if (c === 0x27 || c === 0x22 || c === 0x60) { // ' " `
        this.#open = { kind: "quote", quote: sql[i], closing: false };
        i++;
      } else if (isIdChar(c)) this.#open = { kind: "word", word: "" };
      else this.#token(Tok.Other, ++i);
    }
  }

  /**
   * Reads on in the open token from `i`: returns where it ended (the token
   * counted and closed), or -1 when the chunk ends inside it.
   */
  #carryOn(open: Open, i: number): number {
    const sql = this.#chunk;
    const n = sql.length;
    const ended = (tok: number, end: number): number => {
      this.#open = null;
      this.#token(tok, end);
      return end;
    };
    switch (open.kind) {
      case "quote": {
        // A doubled quote stays inside.
        while (true) {
          if (open.closing) {
            if (i >= n) return -1;
            if (sql[i] !== open.quote) return ended(Tok.Other, i);
            open.closing = false;
            i++;
          }
          const end = sql.indexOf(open.quote, i);
          if (end === -1) return -1;
          open.closing = true;
          i = end + 1;
        }
      }
      case "block": {
        if (open.star && i < n && sql[i] === "/") return ended(Tok.Ws, i + 1);
        const end = sql.indexOf("*/", i);
        if (end !== -1) return ended(Tok.Ws, end + 2);
        if (i < n) open.star = sql[n - 1] === "*";
        return -1;
      }
      case "line": {
        const end = sql.indexOf("\n", i);
        return end === -1 ? -1 : ended(Tok.Ws, end + 1);
      }
      case "bracket": {
        const end = sql.indexOf("]", i);
        return end === -1 ? -1 : ended(Tok.Other, end + 1);
      }
      case "word": {
        let j = i;
        while (j < n && isIdChar(sql.charCodeAt(j))) j++;
        if (open.word.length < WORD_KEPT) {
          open.word += sql.slice(i, Math.min(j, i + WORD_KEPT - open.word.length));
        }
        return j >= n ? -1 : ended(wordToken(open.word), j);
      }
      case "dash":
      case "slash": {
        if (i >= n) return -1;
        const second = open.kind === "dash" ? "-" : "*";
        if (sql[i] !== second) return ended(Tok.Other, i);
        this.#open = open.kind === "dash" ? { kind: "line" } : { kind: "block", star: false };
        return i + 1;
      }
    }
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
