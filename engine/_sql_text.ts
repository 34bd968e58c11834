/**
 * What the engine reads from SQL text itself (see `protocol/sql_lexer.ts`).
 * node:sqlite crashes the process when asked to run a statement prepared
 * from text that holds no statement (only blanks, comments or semicolons),
 * so the engine checks with {@link hasStatement} before every prepare.
 *
 * @module
 */

import { scan, type Token } from "../protocol/sql_lexer.ts";

/**
 * True when `sql`, from index `from` on, holds anything other than white
 * space, `--` and `/* *\/` comments and semicolons.
 */
export function hasStatement(sql: string, from = 0): boolean {
  let found = false;
  scan(sql, (t) => !(found = t.kind !== "semicolon"), from);
  return found;
}

/** The tokens of `sql`'s first statement and what follows it, without the semicolons before it. */
export function statementTokens(sql: string): Token[] {
  const tokens: Token[] = [];
  scan(sql, (t) => {
    if (tokens.length > 0 || t.kind !== "semicolon") tokens.push(t);
    return true;
  });
  return tokens;
}

/** True when the first word of `sql`'s first statement is `word` (lower case). */
export function startsWith(sql: string, word: string): boolean {
  let found = false;
  scan(sql, (t) => {
    if (t.kind === "semicolon") return true;
    found = t.kind === "word" && t.text === word;
    return false;
  });
  return found;
}

/**
 * A statement's text without what follows its last token: the `;` that ends
 * it and a trailing comment, which SQLite accepts unterminated
 * (`SELECT 1 /* note`) and which would swallow text appended to it (as in
 * `SELECT * FROM (<statement>) LIMIT 0`). Linear in the text.
 */
export function statementBody(sql: string): string {
  let end = 0;
  scan(sql, (t) => {
    if (t.kind !== "semicolon") end = t.end;
    return true;
  });
  return sql.slice(0, end);
}

/**
 * `name` with ASCII letters in lower case: how SQLite compares identifiers
 * (table, column and savepoint names). Other letters are not folded: `Ä`
 * and `ä` name different tables, where `toLowerCase()` would make them one.
 */
export function foldCase(name: string): string {
  return name.replace(/[A-Z]+/g, (s) => s.toLowerCase());
}

/**
 * The shape of an `INSERT` (or `REPLACE`) with no `SELECT` in it, from
 * index `from` to `end` of `sql`: its tokens with every literal (string,
 * number, blob) written `?`, so that `INSERT INTO t VALUES (1, 'a')` and
 * `INSERT INTO t VALUES (2, 'b')` have one shape. `null` for any other
 * statement, and for an insert that calls a function among its values. A script's statements are prepared one by one, so a write's
 * speed cannot be learned from its prepared statement, as for a statement
 * run again; such an insert does the same work whatever its values (its
 * triggers aside), and its shape stands for it.
 */
export function insertShape(sql: string, from: number, end: number): string | null {
  const parts: string[] = [];
  let plain = true;
  let values = false; // past the VALUES keyword
  let word = ""; // the previous token, when a word
  scan(sql, (t) => {
    if (t.at >= end) return false;
    if (t.kind === "semicolon") return parts.length === 0;
    if (
      parts.length === 0 && !(t.kind === "word" && (t.text === "insert" || t.text === "replace"))
    ) {
      return plain = false;
    }
    if (t.kind === "word" && t.text === "select") return plain = false;
    // A function call among the values does work its literals decide (`zeroblob(1e9)`).
    if (values && t.kind === "punct" && t.text === "(" && word !== "" && word !== "conflict") {
      return plain = false;
    }
    if (t.kind === "word" && t.text === "values") values = true;
    word = t.kind === "word" && t.text !== "values" ? t.text : "";
    parts.push(
      t.kind === "string" || t.kind === "number" ? "?" : t.kind === "name" ? `"${t.text}"` : t.text,
    );
    return true;
  }, from);
  return plain && parts.length > 0 ? parts.join(" ") : null;
}

/**
 * The transaction's end that `sql`'s first statement is, read from its
 * tokens alone: `"ROLLBACK"` for `ROLLBACK [TRANSACTION [name]]`, `"COMMIT"`
 * for `COMMIT` or `END` (likewise), with where the text after it begins;
 * `null` for any other statement (`ROLLBACK TO` included). For where no
 * connection is free to classify a statement on (a `:memory:` database
 * has no reader, and its writer may be another session's).
 */
export function plainTxEnd(sql: string): ["ROLLBACK" | "COMMIT", number] | null {
  const tokens: Token[] = [];
  let end = sql.length;
  scan(sql, (t) => {
    if (t.kind === "semicolon") {
      if (tokens.length === 0) return true;
      end = t.end;
      return false;
    }
    tokens.push(t);
    return tokens.length <= 3;
  });
  const [first, second, third] = tokens;
  if (tokens.length === 0 || tokens.length > 3 || first.kind !== "word") return null;
  if (second !== undefined && !(second.kind === "word" && second.text === "transaction")) {
    return null;
  }
  // (`TRANSACTION name`: a name SQLite reads and ignores, never `TO`.)
  if (
    third !== undefined &&
    (third.kind === "word" ? third.text === "to" : third.kind !== "name" && third.kind !== "string")
  ) {
    return null;
  }
  if (first.text === "rollback") return ["ROLLBACK", end];
  if (first.text === "commit" || first.text === "end") return ["COMMIT", end];
  return null;
}
