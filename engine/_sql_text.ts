/**
 * Lexical helpers on SQL text. node:sqlite crashes the process when asked to
 * run a statement prepared from text that holds no statement (only blanks,
 * comments or semicolons), so the engine checks with {@link hasStatement}
 * before every prepare.
 *
 * @module
 */

/**
 * True when `sql`, from index `from` on, holds anything other than white
 * space, `--` and `/* *\/` comments and semicolons.
 */
export function hasStatement(sql: string, from = 0): boolean {
  let i = from;
  const n = sql.length;
  while (i < n) {
    const c = sql.charCodeAt(i);
    if (c === 0x20 || c === 0x0a || c === 0x09 || c === 0x0d || c === 0x0c || c === 0x3b) {
      i++;
    } else if (c === 0x2d && sql.charCodeAt(i + 1) === 0x2d) {
      const eol = sql.indexOf("\n", i + 2);
      if (eol === -1) return false;
      i = eol + 1;
    } else if (c === 0x2f && sql.charCodeAt(i + 1) === 0x2a) {
      const end = sql.indexOf("*/", i + 2);
      if (end === -1) return false;
      i = end + 2;
    } else {
      return true;
    }
  }
  return false;
}

/**
 * SQL text as tokens: words, quoted names and strings (quotes kept), and
 * single other characters; blanks and comments dropped. Enough to find the
 * statement's keywords, not a full SQL lexer.
 */
export function sqlTokens(sql: string): string[] {
  const tokens: string[] = [];
  let i = 0;
  const n = sql.length;
  while (i < n) {
    const c = sql[i];
    if (/\s/.test(c)) {
      i++;
    } else if (c === "-" && sql[i + 1] === "-") {
      const eol = sql.indexOf("\n", i + 2);
      i = eol === -1 ? n : eol + 1;
    } else if (c === "/" && sql[i + 1] === "*") {
      const end = sql.indexOf("*/", i + 2);
      i = end === -1 ? n : end + 2;
    } else if (c === "'" || c === '"' || c === "`" || c === "[") {
      const close = c === "[" ? "]" : c;
      let j = i + 1;
      for (;;) {
        const k = sql.indexOf(close, j);
        if (k === -1) {
          j = n;
          break;
        }
        // A doubled quote is one quote inside (not for [names]).
        if (close !== "]" && sql[k + 1] === close) {
          j = k + 2;
          continue;
        }
        j = k + 1;
        break;
      }
      tokens.push(sql.slice(i, j));
      i = j;
    } else if (/[\p{L}\p{N}_$]/u.test(c)) {
      let j = i + 1;
      while (j < n && /[\p{L}\p{N}_$]/u.test(sql[j])) j++;
      tokens.push(sql.slice(i, j));
      i = j;
    } else {
      tokens.push(c);
      i++;
    }
  }
  return tokens;
}

/** The tokens of `sql` (see {@link sqlTokens}) without the semicolons before its statement. */
export function statementTokens(sql: string): string[] {
  const tokens = sqlTokens(sql);
  let i = 0;
  while (tokens[i] === ";") i++;
  return i === 0 ? tokens : tokens.slice(i);
}
