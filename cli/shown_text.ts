/**
 * Text the `netsqlite` command shows on a terminal that it did not write itself: names from the
 * database or its clients (a TEMP table's name, a copy's file name) and error messages (which name
 * them too). Any SQL client may name a table `"x\x1b[2J..."`: printed as it is, the escape
 * sequence would be a command to the terminal of whoever runs `netsqlite stats` or `.tables`, and
 * a line break would forge a line of the report. So control characters are escaped, JSON style.
 *
 * @module
 */

/**
 * Control characters: C0, DEL, C1, and the Unicode line and paragraph separators (as
 * `server/log.ts` escapes them).
 */
// deno-lint-ignore no-control-regex
const CONTROL = /[\x00-\x1f\x7f-\x9f\u2028\u2029]/;

/** {@link CONTROL}, every one (for replacing). */
// deno-lint-ignore no-control-regex
const CONTROLS = /[\x00-\x1f\x7f-\x9f\u2028\u2029]/g;

/** The short JSON escapes; the other control characters become `\uXXXX`. */
const SHORT: Readonly<Record<string, string>> = {
  "\b": "\\b",
  "\t": "\\t",
  "\n": "\\n",
  "\f": "\\f",
  "\r": "\\r",
};

/** One control character as JSON escapes it (`\n`, `\u001b`), C1 and U+2028/9 too. */
function escapeOne(c: string): string {
  return SHORT[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`;
}

/**
 * A name (a file name, a table's name) as a report shows it: as it is, or, when it holds a control
 * character (a line break, an escape sequence), quoted as a JSON string with those characters
 * escaped (`"a\nb.db"`), so that one line stays one line and nothing reaches the terminal as a
 * command. `JSON.parse` reads the quoted form back.
 *
 * @example
 * ```ts
 * import { shownText } from "./shown_text.ts";
 * if (shownText("t") !== "t") throw new Error("a plain name is shown as it is");
 * if (shownText("a\x1b[2Jb") !== '"a\\u001b[2Jb"') throw new Error("quoted and escaped");
 * ```
 */
export function shownText(text: string): string {
  if (!CONTROL.test(text)) return text;
  return JSON.stringify(text).replace(/[\x7f-\x9f\u2028\u2029]/g, escapeOne);
}

/**
 * A message (an error, a line of a report that holds names) with its control characters escaped
 * in place, JSON style (`\n`, `\u001b`), and nothing else changed: no quotes are added, so a
 * message that names something in quotes reads as before.
 *
 * @example
 * ```ts
 * import { escapedControls } from "./shown_text.ts";
 * const m = escapedControls('Cannot back up to "a\nb": the file exists');
 * if (m !== 'Cannot back up to "a\\nb": the file exists') throw new Error(m);
 * ```
 */
export function escapedControls(text: string): string {
  return CONTROL.test(text) ? text.replace(CONTROLS, escapeOne) : text;
}
