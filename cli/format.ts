/**
 * Output modes of the shell: `table` (aligned, boxed, for people), `csv`
 * (RFC 4180), `json` (an array of objects per statement) and `line` (one
 * `column = value` line per column, as the sqlite3 shell's `.mode line`).
 *
 * Value rules:
 * - `table` and `line` show NULL as `NULL`, and a blob as
 *   `x'89504e47' (4 bytes)` (hex cut after {@link BLOB_PREVIEW_BYTES} bytes
 *   with `...`; the length is always the whole length).
 * - `csv` writes NULL as an empty field and the empty string as `""`, so
 *   the two stay distinct; a blob as its full lowercase hex; fields holding
 *   `,`, `"`, CR or LF, or starting/ending with a space, are quoted, with
 *   `"` doubled; lines end with CRLF.
 * - `json`: NULL is `null`, text a string, a blob its full lowercase hex as a
 *   string, a float a number (`Infinity`/`-Infinity` as strings, JSON has no
 *   such numbers), and an integer a number when it is a safe integer
 *   (|n| <= 2^53 - 1) or else a string of its decimal digits, so no digit is
 *   ever lost to a JSON parser's double.
 * - A float of magnitude 2^53 or more (an integer that large arrives as a
 *   bigint, so such a number is a REAL) is written in exponent form with a
 *   decimal point, so it does not read as an exact integer: `table` and
 *   `line` as the sqlite3 shell (`%!.15g`: `1.0e+18`,
 *   `1.84467440737096e+19`), `csv` and `json` with every digit needed to
 *   read back the same double (`1.8446744073709552e+19`).
 *
 * @module
 */

/** The output modes, as named by `.mode` and `--mode`. */
export const MODES = ["table", "csv", "json", "line"] as const;

/** One of {@link MODES}. */
export type Mode = typeof MODES[number];

/** Blob bytes shown in `table` and `line` modes before `...`. */
export const BLOB_PREVIEW_BYTES = 32;

/** A statement's result: column names and rows of values. */
export interface ResultSet {
  /** Column names, in order (names may repeat). */
  columns: readonly string[];
  /** Rows, each with one value per column. */
  rows: readonly (readonly unknown[])[];
}

/** How to render. */
export interface FormatOptions {
  /** Write a header row (`table` and `csv`). @default {true} */
  headers?: boolean;
}

/**
 * Renders one statement's result in `mode`.
 *
 * @example
 * ```ts
 * import { formatResult } from "./format.ts";
 * const csv = formatResult("csv", { columns: ["a", "b"], rows: [[null, ""]] });
 * if (csv !== 'a,b\r\n,""\r\n') throw new Error("NULL and '' must differ");
 * ```
 *
 * @param mode Output mode.
 * @param result Columns and rows.
 * @param options Header choice.
 * @returns the text to print, ending with a newline; empty when there is
 *   nothing to show (`table` and `line` with no rows).
 */
export function formatResult(mode: Mode, result: ResultSet, options: FormatOptions = {}): string {
  const headers = options.headers ?? true;
  switch (mode) {
    case "table":
      return formatTable(result, headers);
    default: {
      const f = new RowFormatter(mode, result.columns, options);
      let out = f.start();
      for (const row of result.rows) out += f.row(row);
      return out + f.end();
    }
  }
}

/** The modes that can be written a row at a time (all but `table`, which needs every width). */
export type StreamMode = Exclude<Mode, "table">;

/**
 * Renders a result a row at a time in `csv`, `json` or `line` mode, for
 * results streamed from a cursor: `start()`, then `row()` per row, then
 * `end()` make the same text as {@link formatResult}.
 */
export class RowFormatter {
  readonly #mode: StreamMode;
  readonly #columns: readonly string[];
  readonly #headers: boolean;
  /** json: `"name":` per column; line: the padded names. */
  readonly #keys: string[];
  #rows = 0;

  /**
   * @param mode `csv`, `json` or `line`.
   * @param columns Column names.
   * @param options Header choice (`csv`).
   */
  constructor(mode: StreamMode, columns: readonly string[], options: FormatOptions = {}) {
    this.#mode = mode;
    this.#columns = columns;
    this.#headers = options.headers ?? true;
    if (mode === "json") this.#keys = columns.map((name) => JSON.stringify(name) + ":");
    else {
      const width = Math.max(0, ...columns.map(displayWidth));
      this.#keys = columns.map((name) => pad(name, width, true));
    }
  }

  /** Rows rendered so far. */
  get rows(): number {
    return this.#rows;
  }

  /** @returns the text before the first row (the `csv` header row). */
  start(): string {
    return this.#mode === "csv" && this.#headers
      ? this.#columns.map(csvField).join(",") + "\r\n"
      : "";
  }

  /** @returns one row's text. */
  row(values: readonly unknown[]): string {
    const n = this.#rows++;
    switch (this.#mode) {
      case "csv":
        return this.#columns.map((_, c) => csvField(values[c])).join(",") + "\r\n";
      case "json":
        return (n === 0 ? "[{" : ",\n{") +
          this.#keys.map((k, c) => k + jsonValue(values[c])).join(",") + "}";
      case "line":
        return (n === 0 ? "" : "\n") +
          this.#keys.map((k, c) => `${k} = ${displayValue(values[c])}\n`).join("");
    }
  }

  /** @returns the text after the last row. */
  end(): string {
    if (this.#mode !== "json") return "";
    return this.#rows === 0 ? "[]\n" : "]\n";
  }

  /**
   * @returns the text that ends the output of a result that failed part way: a line break when a
   *   line is open (`json`), so what follows starts on a line of its own.
   */
  abandon(): string {
    return this.#mode === "json" && this.#rows > 0 ? "\n" : "";
  }
}

/** Lowercase hex of `bytes`. */
export function hex(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += bytes[i].toString(16).padStart(2, "0");
  return s;
}

/**
 * A value as the `table` and `line` modes show it.
 *
 * @param value A value from SQLite.
 * @returns `NULL`, the number's digits, the text, or `x'..' (N bytes)`.
 */
export function displayValue(value: unknown): string {
  if (value === null || value === undefined) return "NULL";
  if (Object.is(value, -0)) return "-0";
  if (typeof value === "number" && isBigReal(value)) return realText(value, false);
  if (value instanceof Uint8Array) {
    const n = value.length;
    const cut = n > BLOB_PREVIEW_BYTES;
    const shown = hex(cut ? value.subarray(0, BLOB_PREVIEW_BYTES) : value);
    return `x'${shown}${cut ? "..." : ""}' (${n} ${n === 1 ? "byte" : "bytes"})`;
  }
  return String(value);
}

/** 2^53: a number this large or larger came from a REAL (such integers arrive as bigint). */
const TWO_53 = 2 ** 53;

function isBigReal(x: number): boolean {
  return Number.isFinite(x) && Math.abs(x) >= TWO_53;
}

/**
 * A float in exponent form that reads as a float: the mantissa always has a
 * decimal point, the exponent a sign and at least two digits.
 *
 * @example
 * ```ts
 * import { realText } from "./format.ts";
 * if (realText(1e18, false) !== "1.0e+18") throw new Error("sqlite3 prints 1.0e+18");
 * if (realText(18446744073709551615, false) !== "1.84467440737096e+19") throw new Error();
 * if (realText(18446744073709551615, true) !== "1.8446744073709552e+19") throw new Error();
 * ```
 *
 * @param x A finite number.
 * @param exact `false`: 15 significant digits (the sqlite3 shell's `%!.15g`);
 *   `true`: the fewest digits that read back as the same double.
 * @returns the text.
 */
export function realText(x: number, exact: boolean): string {
  const [digits, exponent] = (exact ? x.toExponential() : x.toExponential(14)).split("e");
  const mantissa = digits.includes(".")
    ? digits.replace(/0+$/, "").replace(/\.$/, ".0")
    : `${digits}.0`;
  const e = Number(exponent);
  return `${mantissa}e${e < 0 ? "-" : "+"}${String(Math.abs(e)).padStart(2, "0")}`;
}

function isNumeric(value: unknown): boolean {
  return typeof value === "number" || typeof value === "bigint";
}

// ---- table ------------------------------------------------------------------

/** Terminal columns a string takes: wide East Asian characters count 2, combining marks 0. */
export function displayWidth(text: string): number {
  let w = 0;
  for (const ch of text) {
    const c = ch.codePointAt(0)!;
    if (c < 0x20 || (c >= 0x7f && c < 0xa0)) continue;
    if (
      (c >= 0x300 && c <= 0x36f) || (c >= 0x200b && c <= 0x200f) || (c >= 0xfe00 && c <= 0xfe0f)
    ) {
      continue;
    }
    w += isWide(c) ? 2 : 1;
  }
  return w;
}

function isWide(c: number): boolean {
  return (c >= 0x1100 && c <= 0x115f) || (c >= 0x2e80 && c <= 0xa4cf && c !== 0x303f) ||
    (c >= 0xac00 && c <= 0xd7a3) || (c >= 0xf900 && c <= 0xfaff) || (c >= 0xfe30 && c <= 0xfe4f) ||
    (c >= 0xff00 && c <= 0xff60) || (c >= 0xffe0 && c <= 0xffe6) ||
    (c >= 0x1f300 && c <= 0x1faff) ||
    (c >= 0x20000 && c <= 0x3fffd);
}

/** Control characters other than tab, LF and CR. */
// deno-lint-ignore no-control-regex
const CONTROL = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/g;

/** A cell's lines: text split at line breaks, tabs as spaces, other control characters as `\xNN`. */
function cellLines(text: string): string[] {
  const shown = text.replace(/\t/g, "    ").replace(
    CONTROL,
    (ch) => `\\x${ch.charCodeAt(0).toString(16).padStart(2, "0")}`,
  );
  return shown.split(/\r?\n|\r/);
}

function pad(text: string, width: number, right: boolean): string {
  const fill = " ".repeat(Math.max(0, width - displayWidth(text)));
  return right ? fill + text : text + fill;
}

function formatTable(result: ResultSet, headers: boolean): string {
  const { columns, rows } = result;
  if (rows.length === 0) return "";
  const cells = rows.map((row) => columns.map((_, c) => cellLines(displayValue(row[c]))));
  const heads = columns.map((name) => cellLines(name));
  const widths = columns.map((_, c) => {
    let w = headers ? Math.max(...heads[c].map(displayWidth)) : 0;
    for (const row of cells) for (const line of row[c]) w = Math.max(w, displayWidth(line));
    return w;
  });
  const rule = "+" + widths.map((w) => "-".repeat(w + 2)).join("+") + "+\n";
  const renderRow = (lines: string[][], numeric: boolean[]): string => {
    const height = Math.max(1, ...lines.map((l) => l.length));
    let out = "";
    for (let h = 0; h < height; h++) {
      out += "|" +
        lines.map((l, c) => ` ${pad(l[h] ?? "", widths[c], numeric[c] && l.length === 1)} `).join(
          "|",
        ) + "|\n";
    }
    return out;
  };
  let out = rule;
  if (headers) out += renderRow(heads, columns.map(() => false)) + rule;
  for (let r = 0; r < rows.length; r++) {
    out += renderRow(cells[r], columns.map((_, c) => isNumeric(rows[r][c])));
  }
  return out + rule;
}

// ---- line -------------------------------------------------------------------

// ---- csv --------------------------------------------------------------------

/**
 * One CSV field (RFC 4180): NULL empty, empty text `""`, blobs as hex.
 *
 * @param value A value from SQLite, or a column name.
 * @returns the field text, quoted when needed.
 */
export function csvField(value: unknown): string {
  if (value === null || value === undefined) return "";
  const text = value instanceof Uint8Array
    ? hex(value)
    : typeof value === "number" && isBigReal(value)
    ? realText(value, true)
    : displayValue(value);
  if (text === "" || /[",\r\n]/.test(text) || /^\s|\s$/.test(text)) {
    return `"${text.replaceAll('"', '""')}"`;
  }
  return text;
}

// ---- json -------------------------------------------------------------------

/**
 * One value as JSON text, by the rules in this module's documentation.
 *
 * @example
 * ```ts
 * import { jsonValue } from "./format.ts";
 * if (jsonValue(2n ** 53n + 1n) !== '"9007199254740993"') throw new Error("digits lost");
 * if (jsonValue(42n) !== "42") throw new Error("a safe integer is a number");
 * ```
 *
 * @param value A value from SQLite.
 * @returns JSON text.
 */
export function jsonValue(value: unknown): string {
  if (value === null || value === undefined) return "null";
  if (typeof value === "bigint") {
    const safe = value >= BigInt(Number.MIN_SAFE_INTEGER) &&
      value <= BigInt(Number.MAX_SAFE_INTEGER);
    return safe ? String(value) : `"${value}"`;
  }
  if (typeof value === "number") {
    // Integers beyond 2^53 arrive as bigint, so a number here is exact as JSON.
    if (Object.is(value, -0)) return "-0";
    if (isBigReal(value)) return realText(value, true);
    return Number.isFinite(value) ? JSON.stringify(value) : `"${value}"`;
  }
  if (value instanceof Uint8Array) return `"${hex(value)}"`;
  return JSON.stringify(String(value));
}
