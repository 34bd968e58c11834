/**
 * Finds transaction-control statements (`BEGIN`, `COMMIT`, `END`,
 * `ROLLBACK`, `SAVEPOINT`, `RELEASE`) in SQL text, so the shared pool can
 * refuse them before they are sent. Skips comments, quoted strings and
 * identifiers, and the bodies of `CREATE TRIGGER ... BEGIN ... END`.
 *
 * @module
 */

import { scan } from "../protocol/sql_lexer.ts";

const TX_WORDS = new Set(["begin", "commit", "end", "rollback", "savepoint", "release"]);

/**
 * Returns the first transaction-control keyword that starts a statement of
 * `sql` (upper case), or `null`. With `script` false only the first
 * statement is looked at (the server refuses a second one in
 * `run`/`query`/`prepare` anyway), which costs a few characters per call.
 */
export function findTxControl(sql: string, script = true): string | null {
  let found: string | null = null;
  let atStart = true;
  let first = ""; // first word of the current statement
  let trigger = false;
  let depth = 0; // BEGIN/CASE ... END nesting inside a trigger
  scan(sql, (t) => {
    if (t.kind === "semicolon") {
      if (depth === 0) {
        atStart = true;
        first = "";
        trigger = false;
      }
      return true;
    }
    if (atStart) {
      atStart = false;
      if (t.kind !== "word") return script;
      if (TX_WORDS.has(t.text)) {
        found = t.text.toUpperCase();
        return false;
      }
      first = t.text;
      return script;
    }
    if (first === "create" && t.kind === "word") {
      if (t.text === "trigger") trigger = true;
      else if (trigger && (t.text === "begin" || t.text === "case")) depth++;
      else if (trigger && t.text === "end" && depth > 0) depth--;
    }
    return true;
  });
  return found;
}
