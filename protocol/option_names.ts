/**
 * Refusing option names a function does not know (`connect()`, `serve()`),
 * naming the one most likely meant: a misspelt limit silently ignored would
 * leave its default in force.
 *
 * @module
 */

/**
 * Refuses a key of `given` that is not in `known`, naming it and the known
 * name it most likely meant (`otherNames`: names used elsewhere, as command
 * line flags, mapped to what to say instead), or else every known name.
 *
 * @example
 * ```ts
 * import { refuseUnknownOptions } from "./option_names.ts";
 * try {
 *   refuseUnknownOptions({ maxCursor: 1 }, ["maxCursors"], "serve()");
 * } catch (err) {
 *   if (!(err instanceof TypeError) || !err.message.endsWith('did you mean "maxCursors"?')) throw err;
 * }
 * ```
 *
 * @throws {TypeError} `Invalid option "<prefix><key>": not a <what> option ...`
 *   (`an` before a vowel: `not an iterate() option`).
 */
export function refuseUnknownOptions(
  given: object,
  known: readonly string[],
  what: string,
  prefix = "",
  otherNames: Readonly<Record<string, string>> = {},
): void {
  for (const key of Object.keys(given)) {
    if (known.includes(key)) continue;
    const closest = closestName(key, known);
    const near = Object.hasOwn(otherNames, key)
      ? otherNames[key]
      : closest === null
      ? null
      : `"${prefix}${closest}"`;
    throw new TypeError(
      `Invalid option "${prefix}${key}": not ${article(what)} ${what} option` +
        (near !== null ? `; did you mean ${near}?` : ` (known: ${known.join(", ")})`),
    );
  }
}

/**
 * The article before `what` in a message: `an` before a vowel (`an
 * iterate()`, `an exec()`, `an all()`), else `a` (`a get()`, `a serve()`,
 * `a dqlite`). The names this is given (calls, `dqlite`) are read as written,
 * so the first letter gives the sound.
 */
function article(what: string): "a" | "an" {
  return /^[aeiou]/i.test(what) ? "an" : "a";
}

/**
 * The name of `names` nearest `name`, ignoring case, `-` and `_` (a flag's
 * spelling, `max-cursors`, finds `maxCursors`) and a few letters added,
 * dropped or changed; `null` when none is near enough to suggest.
 */
function closestName(name: string, names: readonly string[]): string | null {
  const plain = (n: string) => n.toLowerCase().replace(/[-_]/g, "");
  const a = plain(name);
  let best: string | null = null;
  let bestDistance = Math.max(1, Math.min(3, Math.floor(a.length / 3)));
  for (const candidate of names) {
    const d = editDistance(a, plain(candidate));
    if (d <= bestDistance && (best === null || d < bestDistance)) {
      best = candidate;
      bestDistance = d;
    }
  }
  return best;
}

/** Levenshtein distance: insertions, deletions and substitutions of one character. */
function editDistance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) {
      next[j] = Math.min(
        row[j] + 1,
        next[j - 1] + 1,
        row[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    }
    row = next;
  }
  return row[b.length];
}

/**
 * An option's value as its error shows it: a string quoted (an empty one as
 * `""`), a bigint with its `n`, anything else as `String()` gives it.
 */
export function shownOption(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  return typeof value === "bigint" ? `${value}n` : String(value);
}
