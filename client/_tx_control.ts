/**
 * Finds transaction-control statements (`BEGIN`, `COMMIT`, `END`,
 * `ROLLBACK`, `SAVEPOINT`, `RELEASE`) in SQL text, so the shared pool can
 * refuse them before they are sent, and the ones that would begin or end the
 * transaction of a `transaction()` handle, which refuses those. Skips
 * comments, quoted strings and identifiers, and the bodies of
 * `CREATE TRIGGER ... BEGIN ... END`.
 *
 * @module
 */

import { scan, type Token } from "../protocol/sql_lexer.ts";

const TX_WORDS = new Set(["begin", "commit", "end", "rollback", "savepoint", "release"]);
/** Matches wherever the text holds one of {@link TX_WORDS}, in any case (and more). */
const MAY_HOLD_TX_WORD = new RegExp([...TX_WORDS].join("|"), "i");

/**
 * Returns the first transaction-control keyword that starts a statement of
 * `sql` (upper case), or `null`. With `script` false only the first
 * statement is looked at (the server refuses a second one in
 * `run`/`query`/`prepare` anyway), which costs a few characters per call.
 */
export function findTxControl(sql: string, script = true): string | null {
  return findStatement(sql, script, (head) => head[0].text.toUpperCase());
}

/**
 * The prefix of the savepoint names `transaction()` uses for its nested
 * levels (`netsqlite_sp1`, ...); compared case-insensitively, as SQLite does.
 */
export const RESERVED_SAVEPOINT = "netsqlite_";

/** A statement a `transaction()` handle refuses, and why (see {@link findTxEnd}). */
export interface TxEnd {
  /** The statement's leading words, upper case (`COMMIT`, `ROLLBACK`, `RELEASE netsqlite_sp1`). */
  statement: string;
  /** True for a savepoint named like `transaction()`'s own ({@link RESERVED_SAVEPOINT}). */
  reserved: boolean;
}

/**
 * Returns the first statement of `sql` that would begin or end the
 * transaction of a `transaction()` handle, or `null`: `BEGIN`, `COMMIT`,
 * `END`, `ROLLBACK` without `TO` (`ROLLBACK TRANSACTION [name]` included),
 * and `SAVEPOINT`, `RELEASE` or `ROLLBACK TO` naming a savepoint in
 * `transaction()`'s own namespace ({@link RESERVED_SAVEPOINT}): releasing
 * a nested transaction's savepoint (or rolling back past it) would end it
 * early, so the statements that follow would escape its rollback. Other
 * `SAVEPOINT`, `RELEASE` and `ROLLBACK TO` statements are allowed; with
 * `ends`, the ones met before a refused statement (or in all of `sql`) that
 * release or roll back to such a savepoint are added there (`RELEASE s`,
 * `ROLLBACK TO s`), which is how `transaction()` tells what ended a nested
 * level's savepoint with them (see `client/_tx_undo.ts`). With `script`
 * false only the first statement is looked at.
 */
export function findTxEnd(sql: string, script = true, ends?: string[]): TxEnd | null {
  let found: TxEnd | null = null;
  findStatement(sql, script, (head) => {
    const word = head[0].text;
    if (word === "begin" || word === "commit" || word === "end") {
      found = { statement: word.toUpperCase(), reserved: false };
      return found.statement;
    }
    let rest = head.slice(1);
    if (word === "rollback") {
      // ROLLBACK [TRANSACTION [name]] [TO [SAVEPOINT] name]
      const to = rest.findIndex((t) => t.kind === "word" && t.text === "to");
      if (to === -1 || to > 2) {
        found = { statement: "ROLLBACK", reserved: false };
        return found.statement;
      }
      rest = rest.slice(to + 1);
    }
    // SAVEPOINT name | RELEASE [SAVEPOINT] name | ROLLBACK ... TO [SAVEPOINT] name
    if (word !== "savepoint" && rest.length > 1 && isWord(rest[0], "savepoint")) {
      rest = rest.slice(1);
    }
    const name = rest[0];
    if (name === undefined || name.kind === "punct" || name.kind === "param") return null;
    const verb = word === "rollback" ? "ROLLBACK TO" : word.toUpperCase();
    if (!name.text.toLowerCase().startsWith(RESERVED_SAVEPOINT)) {
      if (word !== "savepoint") ends?.push(`${verb} ${name.text}`);
      return null;
    }
    found = { statement: `${verb} ${name.text}`, reserved: true };
    return found.statement;
  }, 6);
  return found;
}

/**
 * True when a statement of `sql` may commit the transaction open where it
 * runs: `COMMIT`, `END`, or a `RELEASE` of a savepoint not in
 * `transaction()`'s namespace ({@link RESERVED_SAVEPOINT}), which commits a
 * transaction that its `SAVEPOINT` began. With `script` false only the first
 * statement is looked at.
 */
export function mayCommit(sql: string, script = true): boolean {
  return findStatement(sql, script, (head) => {
    const word = head[0].text;
    if (word === "commit" || word === "end") return word;
    if (word !== "release") return null;
    const name = head.length > 2 && isWord(head[1], "savepoint") ? head[2] : head[1];
    if (name === undefined || name.kind === "punct" || name.kind === "param") return word;
    return name.text.toLowerCase().startsWith(RESERVED_SAVEPOINT) ? null : word;
  }, 3) !== null;
}

function isWord(t: Token, text: string): boolean {
  return t.kind === "word" && t.text === text;
}

/**
 * Scans the statements of `sql` that begin with a transaction-control word;
 * `judge` gets each one's first `width` tokens (fewer at a `;` or the end)
 * and returns what to report, or `null` to go on.
 */
function findStatement(
  sql: string,
  script: boolean,
  judge: (head: readonly Token[]) => string | null,
  width = 1,
): string | null {
  // A script none of whose text could be such a word is not scanned: a search costs a tenth of
  // a scan (a script of 400,000 statements held the caller's event loop 60 ms).
  if (script && !MAY_HOLD_TX_WORD.test(sql)) return null;
  let found: string | null = null;
  let head: Token[] | null = null; // a transaction-control statement's first tokens
  const decide = (): boolean => {
    found = judge(head!);
    head = null;
    return found === null && script;
  };
  let atStart = true;
  let first = ""; // first word of the current statement
  let trigger = false;
  let depth = 0; // BEGIN/CASE ... END nesting inside a trigger
  scan(sql, (t) => {
    if (head !== null) {
      if (t.kind !== "semicolon") {
        head.push(t);
        return head.length < width || decide();
      }
      if (!decide()) return false;
    }
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
        head = [t];
        return head.length < width || decide();
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
  if (head !== null) decide();
  return found;
}
