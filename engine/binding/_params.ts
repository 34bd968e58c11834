/**
 * Binding a named-parameter object to one statement, alike in both
 * bindings: which parameters each key names, and which it leaves unbound.
 *
 * - A key with its prefix (`":a"`, `"@a"`, `"$a"`, `"?3"`) names that
 *   parameter; a bare key (`"a"`) names every parameter called `a` with any
 *   prefix (as better-sqlite3 binds `{ a }` to `$a`, `@a` and `:a` alike,
 *   and `{ 3: v }` to `?3`).
 * - A key naming no parameter is refused (`INVALID_PARAM`), and so is a
 *   parameter no key names (`:a` or `?3` that appears in the SQL): SQLite
 *   would bind it NULL silently, and one that two keys name
 *   (`{ a: 1, $a: 2 }`): one would win silently.
 * - An object for a statement with an anonymous `?` is refused: no key can
 *   name that parameter, so it would be bound NULL silently.
 * - An index no parameter takes (`?2` in `SELECT ?1, ?3`) stays NULL, as in
 *   SQLite: there is nothing to bind.
 *
 * @module
 */

import type { SqlValue } from "./binding.ts";
import { ErrorCode, SqliteError } from "../../protocol/errors.ts";
import { scan } from "../../protocol/sql_lexer.ts";
import { missingName, unknownName } from "./_errors.ts";

/** The error for two keys of one parameters object naming the same parameter. */
function twoKeys(name: string, first: string, second: string): SqliteError {
  return new SqliteError(
    ErrorCode.InvalidParam,
    `Cannot bind parameter "${name}": both "${first}" and "${second}" name it; give one`,
  );
}

/** The error for a parameters object given to a statement with an anonymous `?`. */
function anonymousParam(): SqliteError {
  return new SqliteError(
    ErrorCode.InvalidParam,
    `Cannot bind a parameters object: the statement has positional parameters "?": pass an array`,
  );
}

/** The name of an anonymous `?` in the names {@link NamedParams} takes. */
export const ANONYMOUS = "?";

/**
 * Highest `?NNN` accepted: SQLITE_MAX_VARIABLE_NUMBER of Debian's and most
 * distributions' builds (SQLite's own default is 32,766, which SQLite then
 * enforces itself).
 */
export const MAX_PARAM_INDEX = 250_000;

/**
 * The parameters of the first statement of `sql` by index (from 1 at `[0]`),
 * numbered the way SQLite numbers them: `?` takes the next index (named
 * {@link ANONYMOUS}), `?NNN` index NNN, and a name (`:a`, `@a`, `$a`, `#a`,
 * read as SQLite's tokenizer reads it: `:a$b`, `@a::b`, `$a(x)`) the next
 * index at its first appearance; `null` for an index no parameter takes.
 * Names keep their prefix.
 */
export function parameterNames(sql: string): (string | null)[] {
  const names: (string | null)[] = [];
  const named = new Set<string>();
  for (const text of firstStatementParams(sql)) {
    if (text === "?") {
      names.push(ANONYMOUS);
    } else if (text[0] === "?") {
      const n = Number(text.slice(1));
      // SQLite refuses these when it prepares; cluster mode numbers the
      // parameters before the statement reaches SQLite, where `?99999999`
      // would otherwise build an array that long.
      if (!(n >= 1 && n <= MAX_PARAM_INDEX)) {
        throw new SqliteError(
          "SQLITE_ERROR",
          `variable number must be between ?1 and ?${MAX_PARAM_INDEX}`,
          1,
        );
      }
      while (names.length < n) names.push(null);
      // (SQLite names the index at its first `?NNN`, even one a `?` took.)
      if (names[n - 1] === null || names[n - 1] === ANONYMOUS) names[n - 1] = text;
    } else if (!named.has(text)) {
      named.add(text);
      names.push(text);
    }
  }
  return names;
}

/** The parameters of the first statement of `sql` in order, as spelled. */
function firstStatementParams(sql: string): string[] {
  const found: string[] = [];
  let started = false;
  scan(sql, (t) => {
    if (t.kind === "semicolon") return !started;
    started = true;
    if (t.kind === "param") found.push(t.text);
    return true;
  });
  return found;
}

/**
 * Marks the anonymous `?` parameters in `names` (SQLite's names by index
 * from 1 at `[0]`, `null` for `?` and for indexes no parameter takes) with
 * {@link ANONYMOUS}, reading `sql` as {@link parameterNames} does. Returns
 * `names`.
 */
export function markAnonymous(names: (string | null)[], sql: string): (string | null)[] {
  if (!names.includes(null)) return names;
  parameterNames(sql).forEach((name, i) => {
    if (name === ANONYMOUS && names[i] === null) names[i] = ANONYMOUS;
  });
  return names;
}

/** The named parameters of one statement and the keys that bind them. */
export class NamedParams {
  /** Key → parameter indexes (1-based) it binds. */
  readonly #slots = new Map<string, number[]>();
  /** Indexes of the parameters that must be bound (those with a name, `?NNN` included). */
  readonly #named: number[] = [];
  readonly #names: readonly (string | null)[];
  /** True when the statement has an anonymous `?` (an object cannot bind it). */
  readonly #anonymous: boolean;
  /** Per parameter index, the bind call that last bound it. */
  readonly #boundIn: Uint32Array;
  /** Per parameter index, the key that last bound it (for the error when two keys name it). */
  readonly #boundBy: string[] = [];
  #call = 0;

  /**
   * @param names Parameter names by index from 1 (at `[0]`): `":a"`,
   *   `"?3"`, {@link ANONYMOUS} for `?` (which a named object cannot bind),
   *   `null` for an index no parameter takes. A `null` past the last `?NNN`
   *   is taken by a `?`, and counts as one.
   * @param sql The statement, when a `?NNN` in it may share its index with a
   *   name (`SELECT $b, ?1`: SQLite names index 1 `$b`): the key `"?1"` then
   *   binds that index too, as the SQL spells it.
   */
  constructor(names: readonly (string | null)[], sql?: string) {
    this.#names = names;
    this.#boundIn = new Uint32Array(names.length + 1);
    const add = (key: string, index: number) => {
      const slots = this.#slots.get(key);
      if (slots === undefined) this.#slots.set(key, [index]);
      else if (!slots.includes(index)) slots.push(index);
    };
    let lastNumbered = 0;
    for (let i = 0; i < names.length; i++) {
      const name = names[i];
      if (name !== null && name !== ANONYMOUS && name[0] === "?") lastNumbered = i + 1;
    }
    let anonymous = false;
    for (let i = 0; i < names.length; i++) {
      const name = names[i];
      if (name === ANONYMOUS || (name === null && i + 1 > lastNumbered)) anonymous = true;
      if (name === null || name === ANONYMOUS) continue;
      add(name, i + 1);
      add(name.slice(1), i + 1);
      this.#named.push(i + 1);
    }
    this.#anonymous = anonymous;
    if (sql !== undefined && sql.includes("?")) {
      for (const spelled of firstStatementParams(sql)) {
        if (spelled.length < 2 || spelled[0] !== "?") continue;
        const n = Number(spelled.slice(1));
        const name = names[n - 1];
        if (name === undefined || name === null || name === ANONYMOUS) continue;
        add(`?${n}`, n);
        add(`${n}`, n);
        if (spelled !== `?${n}`) add(spelled, n); // `?01` as written, too
      }
    }
  }

  /**
   * Calls `bind(index, value)` for each parameter a key of `values` names.
   *
   * @throws {SqliteError} `INVALID_PARAM` for a statement with an anonymous
   *   `?`, a key that names no parameter, two keys naming one parameter
   *   (`a` and `$a`), or a named parameter left without a value.
   */
  bind(
    values: Readonly<Record<string, SqlValue>>,
    bind: (index: number, value: SqlValue) => void,
  ): void {
    if (this.#anonymous) throw anonymousParam();
    const call = this.#call = this.#call === 0xffffffff ? 1 : this.#call + 1;
    const boundIn = this.#boundIn;
    for (const key in values) {
      const slots = this.#slots.get(key);
      if (slots === undefined) throw unknownName(key);
      for (const index of slots) {
        if (boundIn[index] === call) {
          throw twoKeys(this.#names[index - 1]!, this.#boundBy[index], key);
        }
        boundIn[index] = call;
        this.#boundBy[index] = key;
        bind(index, values[key]);
      }
    }
    for (const index of this.#named) {
      if (boundIn[index] !== call) throw missingName(this.#names[index - 1]!);
    }
  }
}
