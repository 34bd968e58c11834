/**
 * Binding a named-parameter object to one statement, alike in both
 * bindings: which parameters each key names, and which it leaves unbound.
 *
 * - A key with its prefix (`":a"`, `"@a"`, `"$a"`, `"?3"`) names that
 *   parameter; a bare key (`"a"`) names every parameter called `a` with any
 *   prefix (as better-sqlite3 binds `{ a }` to `$a`, `@a` and `:a` alike).
 * - A key naming no parameter is refused (`INVALID_PARAM`), and so is a
 *   named parameter no key names: SQLite would bind it NULL silently, and
 *   one that two keys name (`{ a: 1, $a: 2 }`): one would win silently.
 *
 * @module
 */

import type { SqlValue } from "./binding.ts";
import { ErrorCode, SqliteError } from "../../protocol/errors.ts";
import { missingName, unknownName } from "./_errors.ts";

/** The error for two keys of one parameters object naming the same parameter. */
function twoKeys(name: string, first: string, second: string): SqliteError {
  return new SqliteError(
    ErrorCode.InvalidParam,
    `Cannot bind parameter "${name}": both "${first}" and "${second}" name it; give one`,
  );
}

/** The named parameters of one statement and the keys that bind them. */
export class NamedParams {
  /** Key → parameter indexes (1-based) it binds. */
  readonly #slots = new Map<string, number[]>();
  /** Indexes of the parameters that must be bound (those with a name). */
  readonly #named: number[] = [];
  readonly #names: readonly (string | null)[];
  /** Per parameter index, the bind call that last bound it. */
  readonly #boundIn: Uint32Array;
  /** Per parameter index, the key that last bound it (for the error when two keys name it). */
  readonly #boundBy: string[] = [];
  #call = 0;

  /**
   * @param names Parameter names by index from 1 (at `[0]`): `":a"`,
   *   `"?3"`, or `null` for `?` (which a named object cannot bind).
   */
  constructor(names: readonly (string | null)[]) {
    this.#names = names;
    this.#boundIn = new Uint32Array(names.length + 1);
    const add = (key: string, index: number) => {
      const slots = this.#slots.get(key);
      if (slots === undefined) this.#slots.set(key, [index]);
      else if (!slots.includes(index)) slots.push(index);
    };
    for (let i = 0; i < names.length; i++) {
      const name = names[i];
      if (name === null) continue;
      add(name, i + 1);
      if (name[0] !== "?") {
        add(name.slice(1), i + 1);
        this.#named.push(i + 1);
      }
    }
  }

  /**
   * Calls `bind(index, value)` for each parameter a key of `values` names.
   *
   * @throws {SqliteError} `INVALID_PARAM` for a key that names no parameter,
   *   two keys naming one parameter (`a` and `$a`), or a named parameter
   *   left without a value.
   */
  bind(
    values: Readonly<Record<string, SqlValue>>,
    bind: (index: number, value: SqlValue) => void,
  ): void {
    const call = this.#call = this.#call === 0xffffffff ? 1 : this.#call + 1;
    const boundIn = this.#boundIn;
    for (const key in values) {
      const slots = this.#slots.get(key) ?? this.#numbered(key);
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

  /** `?NNN` given as a key, where the names do not list it (node:sqlite's scan). */
  #numbered(key: string): number[] | undefined {
    if (key[0] !== "?") return undefined;
    const n = Number(key.slice(1));
    return Number.isInteger(n) && n >= 1 && n <= this.#names.length ? [n] : undefined;
  }
}
