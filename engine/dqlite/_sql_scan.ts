/**
 * Lexical checks on SQL text that the dqlite client needs because dqlite does
 * not report them: whether a statement opens or closes a transaction, and
 * whether it holds `RETURNING` (a write that returns rows aborts a dqlite
 * 1.11 node).
 *
 * @module
 */

/** Calls `onWord` with each bare word of `sql` (outside literals, quoted names and comments). */
function scanWords(sql: string, onWord: (word: string) => boolean): void {
  const n = sql.length;
  let i = 0;
  while (i < n) {
    const c = sql[i];
    if (c === "'" || c === '"' || c === "`") {
      const end = sql.indexOf(c, i + 1);
      // A doubled quote inside is an escaped quote: the scan resumes after it.
      i = end === -1 ? n : end + 1;
    } else if (c === "[") {
      const end = sql.indexOf("]", i + 1);
      i = end === -1 ? n : end + 1;
    } else if (c === "-" && sql[i + 1] === "-") {
      const end = sql.indexOf("\n", i + 2);
      i = end === -1 ? n : end + 1;
    } else if (c === "/" && sql[i + 1] === "*") {
      const end = sql.indexOf("*/", i + 2);
      i = end === -1 ? n : end + 2;
    } else if (/[A-Za-z_]/.test(c)) {
      let j = i + 1;
      while (j < n && /[A-Za-z0-9_$]/.test(sql[j])) j++;
      if (!onWord(sql.slice(i, j).toLowerCase())) return;
      i = j;
    } else {
      i++;
    }
  }
}

/**
 * How the first statement of `sql` changes the transaction state:
 * `"begin"` for BEGIN and SAVEPOINT, `"end"` for COMMIT, END and ROLLBACK
 * (not `ROLLBACK TO`), `"none"` otherwise.
 *
 * @example
 * ```ts
 * import { txEffect } from "./_sql_scan.ts";
 * if (txEffect("/* x *\/ begin immediate") !== "begin") throw new Error("begin");
 * if (txEffect("ROLLBACK TO sp") !== "none") throw new Error("rollback to");
 * ```
 */
export function txEffect(sql: string): "begin" | "end" | "none" {
  const words: string[] = [];
  scanWords(sql, (w) => {
    words.push(w);
    return words.length < 3;
  });
  switch (words[0]) {
    case "begin":
    case "savepoint":
      return "begin";
    case "commit":
    case "end":
      return "end";
    case "rollback": {
      const next = words[1] === "transaction" ? words[2] : words[1];
      return next === "to" ? "none" : "end";
    }
    default:
      return "none";
  }
}

/**
 * True when `sql` holds the bare word RETURNING (outside literals, quoted
 * names and comments).
 *
 * @example
 * ```ts
 * import { writesRows } from "./_sql_scan.ts";
 * if (!writesRows("INSERT INTO t VALUES (1) RETURNING id")) throw new Error("missed");
 * if (writesRows("SELECT 'returning'")) throw new Error("literal");
 * ```
 */
export function writesRows(sql: string): boolean {
  let found = false;
  scanWords(sql, (w) => {
    found = w === "returning";
    return !found;
  });
  return found;
}
