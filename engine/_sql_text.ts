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
