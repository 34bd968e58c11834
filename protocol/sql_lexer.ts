/**
 * SQL text as SQLite's tokenizer sees it, enough to find a statement's
 * keywords: words, quoted names, string literals, parameters, numbers,
 * punctuation and semicolons, with blanks and comments skipped. The one
 * lexer of the project: the client finds transaction control with it
 * (`client/_tx_control.ts`), the engine its policy's keywords
 * (`engine/_sql_text.ts`), cluster mode what dqlite does not report
 * (`engine/dqlite/_sql_scan.ts`).
 *
 * It is not a parser: multi-character operators come as single characters,
 * and a blob literal (`x'00'`) as the word `x` and a string.
 *
 * @module
 */

/** The kinds of {@link Token}. */
export type TokenKind = "word" | "name" | "string" | "param" | "number" | "punct" | "semicolon";

/** One token of SQL text. */
export interface Token {
  kind: TokenKind;
  /**
   * - `word`: a bare word, lowercased (keywords and bare names are
   *   case-insensitive; `sql.slice(at, end)` has it as written);
   * - `name`: a quoted name (`"a"`, `` `a` ``, `[a]`), unquoted;
   * - `string`: a string literal (`'a'`), unquoted;
   * - `param`: a parameter as written (`?`, `?3`, `:a`, `@a`, `$a`, `#a`,
   *   and SQLite's TCL-style `$a::b` and `$a(x)` after any of the four);
   * - `number`: a number as written (with any letters glued to it);
   * - `punct`, `semicolon`: the character.
   */
  text: string;
  /** Offset of the token in the SQL text. */
  at: number;
  /** Offset just past the token. */
  end: number;
}

/**
 * Calls `onToken` with each token of `sql` from offset `from` on, in order;
 * stops when `onToken` returns false. An unterminated quote or comment runs
 * to the end of the text.
 *
 * @example
 * ```ts
 * import { scan } from "./sql_lexer.ts";
 * const kinds: string[] = [];
 * scan("SELECT 'it''s' -- note\n, \"a\"\"b\", :x;", (t) => {
 *   kinds.push(`${t.kind}:${t.text}`);
 *   return true;
 * });
 * if (kinds.join(" ") !== `word:select string:it's punct:, name:a"b punct:, param::x semicolon:;`) {
 *   throw new Error(kinds.join(" "));
 * }
 * ```
 */
export function scan(sql: string, onToken: (token: Token) => boolean, from = 0): void {
  const n = sql.length;
  let i = from;
  while (i < n) {
    const c = sql.charCodeAt(i);
    let token: Token;
    // Blanks, and a byte-order mark, which SQLite's tokenizer skips as a blank too.
    if (c === 0x20 || (c >= 0x09 && c <= 0x0d) || c === 0xfeff) {
      i++;
      continue;
    } else if (c === 0x2d && sql.charCodeAt(i + 1) === 0x2d) { // --
      const eol = sql.indexOf("\n", i + 2);
      i = eol === -1 ? n : eol + 1;
      continue;
    } else if (c === 0x2f && sql.charCodeAt(i + 1) === 0x2a) { // /*
      const close = sql.indexOf("*/", i + 2);
      i = close === -1 ? n : close + 2;
      continue;
    } else if (c === 0x27 || c === 0x22 || c === 0x60) { // ' " `
      token = quoted(sql, i, sql[i], c === 0x27 ? "string" : "name");
    } else if (c === 0x5b) { // [
      const close = sql.indexOf("]", i + 1);
      const end = close === -1 ? n : close + 1;
      token = { kind: "name", text: sql.slice(i + 1, close === -1 ? n : close), at: i, end };
    } else if (c === 0x3b) {
      token = { kind: "semicolon", text: ";", at: i, end: i + 1 };
    } else if (c === 0x3f) { // ?NNN
      let j = i + 1;
      while (j < n && isDigit(sql.charCodeAt(j))) j++;
      token = { kind: "param", text: sql.slice(i, j), at: i, end: j };
    } else if ((c === 0x3a || c === 0x40 || c === 0x24 || c === 0x23) && isParam(sql, i)) {
      const j = paramEnd(sql, i);
      token = { kind: "param", text: sql.slice(i, j), at: i, end: j };
    } else if (isWordStart(c)) {
      const j = wordEnd(sql, i + 1);
      token = { kind: "word", text: sql.slice(i, j).toLowerCase(), at: i, end: j };
    } else if (isDigit(c) || (c === 0x2e && isDigit(sql.charCodeAt(i + 1)))) {
      // 1, 1.5, .5, 1e5, 0x1F: digits, dots and the letters glued to them.
      let j = i + 1;
      while (j < n && (isWordPart(sql.charCodeAt(j)) || sql.charCodeAt(j) === 0x2e)) j++;
      token = { kind: "number", text: sql.slice(i, j), at: i, end: j };
    } else {
      token = { kind: "punct", text: sql[i], at: i, end: i + 1 };
    }
    if (!onToken(token)) return;
    i = token.end;
  }
}

/** The tokens of `sql` (see {@link scan}). */
export function tokenize(sql: string): Token[] {
  const tokens: Token[] = [];
  scan(sql, (t) => {
    tokens.push(t);
    return true;
  });
  return tokens;
}

/** A quoted string or name from offset `at`; a doubled quote inside is one quote. */
function quoted(sql: string, at: number, quote: string, kind: "string" | "name"): Token {
  let text = "";
  let from = at + 1;
  for (;;) {
    const close = sql.indexOf(quote, from);
    if (close === -1) {
      return { kind, text: text + sql.slice(from), at, end: sql.length };
    }
    text += sql.slice(from, close);
    if (sql[close + 1] !== quote) return { kind, text, at, end: close + 1 };
    text += quote;
    from = close + 2;
  }
}

/**
 * True when the `:`, `@`, `$` or `#` at `at` begins a parameter: a name
 * character follows, before or after any `::` pairs (`$::a`). Else SQLite
 * refuses the character; it is read as punctuation.
 */
function isParam(sql: string, at: number): boolean {
  let j = at + 1;
  while (sql.charCodeAt(j) === 0x3a && sql.charCodeAt(j + 1) === 0x3a) j += 2;
  return isWordPart(sql.charCodeAt(j));
}

/**
 * The end of the parameter at `at`, as SQLite's tokenizer finds it after
 * any of the four prefixes: name characters (`$` among them: `:a$b` is one
 * name) and `::` pairs (TCL style, `$a::b`), then, after a name character,
 * one `(...)` suffix (`$a(x)`) up to its `)`. A blank before the `)` ends
 * the token there: SQLite refuses such text.
 */
function paramEnd(sql: string, at: number): number {
  const n = sql.length;
  let named = false;
  let j = at + 1;
  while (j < n) {
    const c = sql.charCodeAt(j);
    if (isWordPart(c)) {
      named = true;
      j++;
    } else if (c === 0x3a && sql.charCodeAt(j + 1) === 0x3a) { // ::
      j += 2;
    } else {
      if (c === 0x28 && named) { // (
        j++;
        while (j < n && !isBlankOrNul(sql.charCodeAt(j)) && sql.charCodeAt(j) !== 0x29) j++;
        if (sql.charCodeAt(j) === 0x29) j++; // )
      }
      break;
    }
  }
  return j;
}

/** SQLite's blanks (`sqlite3Isspace`), and the NUL that ends its text. */
function isBlankOrNul(c: number): boolean {
  return c === 0x20 || (c >= 0x09 && c <= 0x0d) || c === 0;
}

function wordEnd(sql: string, from: number): number {
  let j = from;
  while (j < sql.length && isWordPart(sql.charCodeAt(j))) j++;
  return j;
}

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

/** Letters, `_`, and every character beyond ASCII, as SQLite's tokenizer has it. */
function isWordStart(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || c === 0x5f || c >= 0x80;
}

function isWordPart(c: number): boolean {
  return isWordStart(c) || isDigit(c) || c === 0x24;
}

/** The words that may begin a `WITH`'s main statement, at depth 0 after its common table expressions. */
const WITH_MAIN: ReadonlySet<string> = new Set([
  "select",
  "values",
  "insert",
  "update",
  "delete",
  "replace",
]);

/**
 * What statement `sql` begins with: `first`, its first word (`"?"` when it
 * begins with something else); for a `WITH`, `main`, the first of
 * `select`, `values`, `insert`, `update`, `delete`, `replace` at depth 0
 * after its common table expressions (`""` when none comes before the end
 * or a `;`). `replace` may also name a common table expression (SQLite takes
 * it as a name where a name fits); the others are reserved words.
 *
 * @example
 * ```ts
 * import { leadingVerb } from "./sql_lexer.ts";
 * const v = leadingVerb("WITH x(a) AS (SELECT 1) INSERT INTO t SELECT a FROM x");
 * if (v.first !== "with" || v.main !== "insert") throw new Error("wrong verb");
 * ```
 */
export function leadingVerb(sql: string): { first: string; main: string } {
  let first = "";
  let depth = 0;
  let main = "";
  scan(sql, (t) => {
    if (first === "") {
      first = t.kind === "word" ? t.text : "?";
      return first === "with";
    }
    if (t.kind === "semicolon") return false;
    if (t.kind === "punct" && t.text === "(") depth++;
    else if (t.kind === "punct" && t.text === ")") depth--;
    else if (depth === 0 && t.kind === "word" && WITH_MAIN.has(t.text)) {
      main = t.text;
      return false;
    }
    return true;
  });
  return { first, main };
}

/** Statements with result columns: `SELECT`, `VALUES`, `EXPLAIN ...`. */
const READERS: ReadonlySet<string> = new Set(["select", "values", "explain"]);

/**
 * Statements without result columns, unless a `RETURNING` clause gives them
 * some. Not `PRAGMA` (with or without a value, some return a row and some
 * none).
 */
const NO_COLUMNS: ReadonlySet<string> = new Set([
  "insert",
  "update",
  "delete",
  "replace",
  "create",
  "drop",
  "alter",
  "begin",
  "commit",
  "end",
  "rollback",
  "savepoint",
  "release",
  "analyze",
  "reindex",
  "vacuum",
  "attach",
  "detach",
]);

/**
 * What statement `sql` returns, from its text alone: `"rows"` when it
 * surely has result columns (`SELECT`, `VALUES`, `EXPLAIN`, `WITH ...
 * SELECT`), `"changes"` when it surely has none (`INSERT`, `UPDATE`,
 * `DELETE`, `REPLACE`, `WITH ... INSERT|UPDATE|DELETE`, DDL, transaction
 * control, `VACUUM`, ...: without the word `returning` anywhere in its
 * text, a string or comment included: when in doubt, say nothing), else
 * `null` (a `PRAGMA`, a `RETURNING`, text it cannot place): the prepared
 * statement's columns tell then. A `WITH` whose main statement may be
 * `REPLACE` is left to them too (see {@link leadingVerb}). The Kysely
 * adapter and the CLI's shell use it to spare a `prepare` round trip.
 *
 * @example
 * ```ts
 * import { resultShape } from "./sql_lexer.ts";
 * if (resultShape("INSERT INTO t VALUES (1)") !== "changes") throw new Error("changes");
 * if (resultShape("DELETE FROM t RETURNING *") !== null) throw new Error("unknown");
 * if (resultShape("WITH x AS (SELECT 1) SELECT * FROM x") !== "rows") throw new Error("rows");
 * ```
 */
export function resultShape(sql: string): "rows" | "changes" | null {
  const { first, main } = leadingVerb(sql);
  if (first === "with" && main === "replace") return null;
  const statement = first === "with" ? main : first;
  if (READERS.has(statement)) return "rows";
  if (NO_COLUMNS.has(statement) && !/returning/i.test(sql)) return "changes";
  return null;
}
