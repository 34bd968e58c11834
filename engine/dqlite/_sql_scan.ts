/**
 * Lexical checks on SQL text that the dqlite client needs because dqlite does
 * not report them: whether a statement opens or closes a transaction, and
 * whether it holds `RETURNING` (a write that returns rows aborts a dqlite
 * 1.11 node).
 *
 * @module
 */

import type { SqlValue } from "../binding/binding.ts";
import { missingValues, tooManyValues } from "../binding/_errors.ts";
import { NamedParams, parameterNames } from "../binding/_params.ts";
import { scan, type Token } from "../../protocol/sql_lexer.ts";

/** How a script changes the transaction state (see {@link txEffect}). */
export interface TxEffect {
  /** Effect of the last statement that has one: BEGIN/SAVEPOINT → `"begin"`, COMMIT/END/ROLLBACK → `"end"`. */
  last: "begin" | "end" | "none";
  /** True when any statement of the script ends a transaction. */
  ends: boolean;
  /** True when a statement of the script is RELEASE (which ends a transaction SAVEPOINT opened). */
  releases: boolean;
  /** The last statement that opens a transaction: `"begin"` (BEGIN), `"savepoint"`, or null. */
  opener: "begin" | "savepoint" | null;
  /** The name of the first SAVEPOINT of the script (lowercased), or null. */
  savepoint: string | null;
  /** The names the script's RELEASE statements release (lowercased). */
  released: string[];
}

/** The effect of SQL that neither opens nor ends a transaction (a fresh object). */
export function noTxEffect(): TxEffect {
  return {
    last: "none",
    ends: false,
    releases: false,
    opener: null,
    savepoint: null,
    released: [],
  };
}

/**
 * How the statements of `sql` change the transaction state: BEGIN and
 * SAVEPOINT open a transaction; COMMIT, END and ROLLBACK (not `ROLLBACK TO`)
 * end it. RELEASE counts as neither (it ends the transaction only when it
 * releases the outermost savepoint of one SAVEPOINT opened: the caller asks
 * the node, see `releases`; `savepoint` and `released` name the savepoints
 * opened and released). The body of CREATE TRIGGER is skipped.
 *
 * @example
 * ```ts
 * import { txEffect } from "./_sql_scan.ts";
 * if (txEffect("/* x *\/ begin immediate").last !== "begin") throw new Error("begin");
 * if (txEffect("ROLLBACK TO sp").last !== "none") throw new Error("rollback to");
 * if (!txEffect("INSERT INTO t VALUES (1); COMMIT").ends) throw new Error("commit");
 * if (txEffect('RELEASE SAVEPOINT "Sp"').released[0] !== "sp") throw new Error("release");
 * ```
 */
export function txEffect(sql: string): TxEffect {
  const tokens: Token[] = [];
  scan(sql, (t) => {
    if (t.kind === "word" || t.kind === "semicolon" || t.kind === "name") tokens.push(t);
    return true;
  });
  const effect = noTxEffect();
  let i = 0;
  while (i < tokens.length) {
    if (tokens[i].kind === "semicolon") {
      i++;
      continue;
    }
    const words: string[] = [];
    let j = i;
    while (j < tokens.length && tokens[j].kind !== "semicolon") {
      // A quoted name as SQLite compares savepoint names: ignoring case; a quoted word is
      // no keyword.
      const t = tokens[j++];
      words.push(t.kind === "name" ? `"${t.text.toLowerCase()}` : t.text);
    }
    if (words[0] === "create" && words.slice(1, 4).includes("trigger")) {
      // The body holds statements ended by semicolons, then END: skip to "; END".
      while (
        j < tokens.length &&
        !(tokens[j].kind === "semicolon" && tokens[j + 1]?.kind === "word" &&
          tokens[j + 1].text === "end" &&
          (j + 2 === tokens.length || tokens[j + 2].kind === "semicolon"))
      ) j++;
      i = j + 2;
      continue;
    }
    const next = words[1] === "transaction" ? words[2] : words[1];
    const kind = words[0] === "begin" || words[0] === "savepoint"
      ? "begin"
      : words[0] === "commit" || words[0] === "end" || (words[0] === "rollback" && next !== "to")
      ? "end"
      : "none";
    if (kind !== "none") effect.last = kind;
    if (kind === "end") effect.ends = true;
    if (kind === "begin") effect.opener = words[0] === "begin" ? "begin" : "savepoint";
    // A savepoint's name: the word after SAVEPOINT, RELEASE or RELEASE SAVEPOINT.
    const named = (at: number): string | null =>
      words[at] === undefined ? null : words[at].replace(/^"/, "");
    if (words[0] === "savepoint") effect.savepoint ??= named(1);
    if (words[0] === "release") {
      effect.releases = true;
      const name = named(words[1] === "savepoint" && words.length > 2 ? 2 : 1);
      if (name !== null) effect.released.push(name);
    }
    i = j;
  }
  return effect;
}

/** Statements that control the transaction: see {@link controlsOnly}. */
const TX_CONTROL = new Set(["begin", "commit", "end", "rollback", "savepoint", "release"]);

/**
 * True when `sql` holds statements, and each is transaction control
 * (BEGIN, COMMIT, END, ROLLBACK, ROLLBACK TO, SAVEPOINT, RELEASE).
 *
 * @example
 * ```ts
 * import { controlsOnly } from "./_sql_scan.ts";
 * if (!controlsOnly("COMMIT") || !controlsOnly("ROLLBACK TO sp; RELEASE sp")) throw new Error("tx");
 * if (controlsOnly("INSERT INTO t VALUES (1); COMMIT") || controlsOnly(" ")) throw new Error("write");
 * ```
 */
export function controlsOnly(sql: string): boolean {
  let statements = 0;
  let atStart = true;
  let only = true;
  scan(sql, (t) => {
    if (t.kind === "semicolon") {
      atStart = true;
      return true;
    }
    if (atStart) {
      atStart = false;
      statements++;
      only = t.kind === "word" && TX_CONTROL.has(t.text);
    }
    return only;
  });
  return only && statements > 0;
}

/**
 * True when a statement of `sql` is a write with a RETURNING clause: the
 * bare word RETURNING (outside literals, quoted names and comments) after
 * INSERT, REPLACE, UPDATE or DELETE in the same statement. Elsewhere (`SELECT
 * 7 AS returning`, a column named so) SQLite itself refuses the word with a
 * syntax error, which is then the error the caller gets.
 *
 * @example
 * ```ts
 * import { writesRows } from "./_sql_scan.ts";
 * if (!writesRows("INSERT INTO t VALUES (1) RETURNING id")) throw new Error("missed");
 * if (writesRows("SELECT 'returning'") || writesRows("SELECT 7 AS returning")) throw new Error("read");
 * ```
 */
export function writesRows(sql: string): boolean {
  let writes = false;
  let found = false;
  scan(sql, (t) => {
    if (t.kind === "semicolon") writes = false;
    else if (t.kind === "word") {
      if (WRITE_VERBS.has(t.text)) writes = true;
      else found = writes && t.text === "returning";
    }
    return !found;
  });
  return found;
}

/** The statements that may carry RETURNING (see {@link writesRows}). */
const WRITE_VERBS = new Set(["insert", "replace", "update", "delete"]);

/**
 * Turns arguments into the positional list dqlite binds (it binds by index
 * only), numbering the parameters of the first statement of `sql` the way
 * SQLite does: `?` takes the next index, `?NNN` index NNN, and a name (`:a`,
 * `@a`, `$a`) the next index at its first appearance. Named values follow
 * the rules both bindings share (`NamedParams`): a key with its prefix names
 * that parameter, a bare key every parameter of that name; a named
 * parameter without a value is refused, as is a key naming none. A
 * positional list must give every parameter a value.
 *
 * @throws {SqliteError} `INVALID_PARAM` for a missing value, an unknown
 *   key, an object for a statement with an anonymous `?`, or more positional
 *   values than parameters.
 *
 * @example
 * ```ts
 * import { positionalArgs } from "./_sql_scan.ts";
 * const args = positionalArgs("SELECT :a, $b, @b, :a, ?5", { a: 1, b: 2, "?5": 3 });
 * if (JSON.stringify(args) !== "[1,2,2,null,3]") throw new Error(JSON.stringify(args));
 * ```
 */
export function positionalArgs(
  sql: string,
  args: readonly unknown[] | Readonly<Record<string, unknown>>,
): unknown[] {
  // dqlite binds the arguments to the first statement only.
  const names = parameterNames(sql);
  if (Array.isArray(args)) {
    if (args.length > names.length) throw tooManyValues(args.length, names.length);
    if (args.length < names.length) throw missingValues(args.length, names.length);
    return args;
  }
  const out: unknown[] = new Array(names.length).fill(null);
  new NamedParams(names, sql).bind(args as Record<string, SqlValue>, (i, v) => out[i - 1] = v);
  return out;
}
