/**
 * Finds transaction-control statements (`BEGIN`, `COMMIT`, `END`,
 * `ROLLBACK`, `SAVEPOINT`, `RELEASE`) in SQL text, so the shared pool can
 * refuse them before they are sent. Skips comments, quoted strings and
 * identifiers, and the bodies of `CREATE TRIGGER ... BEGIN ... END`.
 *
 * @module
 */

const TX_WORDS = new Set(["BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE"]);

/**
 * Returns the first transaction-control keyword that starts a statement of
 * `sql`, or `null`. With `script` false only the first statement is looked
 * at (the server refuses a second one in `run`/`query`/`prepare` anyway),
 * which costs a few characters per call.
 */
export function findTxControl(sql: string, script = true): string | null {
  let i = 0;
  const n = sql.length;
  let atStart = true;
  let first = ""; // first word of the current statement
  let trigger = false;
  let depth = 0; // BEGIN/CASE ... END nesting inside a trigger
  while (i < n) {
    const c = sql[i];
    if (c === "-" && sql[i + 1] === "-") {
      const eol = sql.indexOf("\n", i + 2);
      i = eol === -1 ? n : eol + 1;
    } else if (c === "/" && sql[i + 1] === "*") {
      const end = sql.indexOf("*/", i + 2);
      i = end === -1 ? n : end + 2;
    } else if (c === "'" || c === '"' || c === "`" || c === "[") {
      const close = c === "[" ? "]" : c;
      let j = i + 1;
      for (; j < n; j++) {
        if (sql[j] === close) {
          if (close !== "]" && sql[j + 1] === close) j++;
          else break;
        }
      }
      i = j + 1;
      atStart = false;
    } else if (c === ";") {
      if (depth === 0) {
        atStart = true;
        first = "";
        trigger = false;
      }
      i++;
    } else if (/[A-Za-z_]/.test(c)) {
      let j = i + 1;
      while (j < n && /[A-Za-z0-9_$]/.test(sql[j])) j++;
      const word = sql.slice(i, j).toUpperCase();
      if (atStart) {
        if (TX_WORDS.has(word)) return word;
        if (!script) return null;
        first = word;
        atStart = false;
      } else if (first === "CREATE") {
        if (word === "TRIGGER") trigger = true;
        else if (trigger && (word === "BEGIN" || word === "CASE")) depth++;
        else if (trigger && word === "END" && depth > 0) depth--;
      }
      i = j;
    } else {
      if (c.trim() !== "") {
        if (!script && atStart) return null;
        atStart = false;
      }
      i++;
    }
  }
  return null;
}
