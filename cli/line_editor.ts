/**
 * A small line editor for the interactive shell on a terminal: raw mode,
 * left/right, Home/End, Backspace/Delete, Ctrl-A/E/K/U/W/L, and up/down (or
 * Ctrl-P/N) through {@link History}. Ctrl-C abandons the input, Ctrl-D on an
 * empty line ends it. Long lines scroll sideways within the terminal width.
 *
 * @module
 */

import { displayWidth } from "./format.ts";
import type { History } from "./history.ts";

/** What {@link LineEditor.readLine} read: a line, end of input, or Ctrl-C. */
export type ReadResult = { line: string } | "eof" | "interrupt";

const encoder = new TextEncoder();

/**
 * How long an Esc waits for the rest of an escape sequence (an arrow key's `Esc [ D` comes in one
 * write) before it is taken as Esc pressed alone, which does nothing: 500 ms, as readline's
 * `keyseq-timeout`. Before, a lone Esc waited for the next key, which was then dropped as an
 * Alt-key.
 */
export const ESC_WAIT_MS = 500;

/** Reads lines from a terminal with editing and history. */
export class LineEditor {
  readonly #history: History;
  readonly #input: typeof Deno.stdin;
  readonly #output: typeof Deno.stdout;
  readonly #decoder = new TextDecoder();
  readonly #buf = new Uint8Array(4096);
  /** Decoded input not yet consumed (pasted text may hold several lines). */
  #pending = "";
  /** A read of the input still under way (a lone Esc stopped waiting for it), or null. */
  #reading: Promise<number | null> | null = null;

  /**
   * @param history Lines for up/down.
   * @param input A terminal (default standard input).
   * @param output Where to echo (default standard output).
   */
  constructor(
    history: History,
    input: typeof Deno.stdin = Deno.stdin,
    output: typeof Deno.stdout = Deno.stdout,
  ) {
    this.#history = history;
    this.#input = input;
    this.#output = output;
  }

  /**
   * Shows `prompt` and reads one edited line.
   *
   * @param prompt The prompt.
   * @returns the line (without its end), `"eof"` or `"interrupt"`.
   */
  async readLine(prompt: string): Promise<ReadResult> {
    const entries = this.#history.entries;
    let chars: string[] = [];
    let cursor = 0;
    let index = entries.length;
    let draft: string[] = [];
    // Keys already read wait their turn (pasted text): the line is drawn once they are taken, not
    // for each key, which costs the line's length per key, minutes for a long pasted line.
    let stale = false;
    const redraw = (): void => {
      stale = this.#pending !== "";
      if (!stale) this.#render(prompt, chars, cursor);
    };
    this.#input.setRaw(true);
    try {
      this.#write(prompt);
      while (true) {
        const key = this.#takeKey();
        if (key === null) {
          if (stale) {
            this.#render(prompt, chars, cursor); // before waiting for more input
            stale = false;
          }
          this.#reading ??= this.#input.read(this.#buf);
          if (this.#pending === "\x1b" && !await this.#arrivesSoon(this.#reading)) {
            this.#pending = ""; // Esc alone
            continue;
          }
          const n = await this.#reading;
          this.#reading = null;
          if (n === null) {
            if (chars.length > 0) return { line: chars.join("") };
            return "eof";
          }
          this.#pending += this.#decoder.decode(this.#buf.subarray(0, n), { stream: true });
          continue;
        }
        switch (key) {
          case "\r":
          case "\n":
            if (stale || cursor !== chars.length || !this.#fits(prompt, chars)) {
              cursor = chars.length;
              this.#render(prompt, chars, cursor);
            }
            this.#write("\r\n");
            return { line: chars.join("") };
          case "\x03": // Ctrl-C
            this.#write("^C\r\n");
            return "interrupt";
          case "\x04": // Ctrl-D
            if (chars.length === 0) {
              this.#write("\r\n");
              return "eof";
            }
            if (cursor < chars.length) chars.splice(cursor, 1);
            break;
          case "\x7f":
          case "\x08":
            if (cursor > 0) chars.splice(--cursor, 1);
            break;
          case "\x1b[3~":
            if (cursor < chars.length) chars.splice(cursor, 1);
            break;
          case "\x01":
          case "\x1b[H":
          case "\x1bOH":
          case "\x1b[1~":
          case "\x1b[7~":
            cursor = 0;
            break;
          case "\x05":
          case "\x1b[F":
          case "\x1bOF":
          case "\x1b[4~":
          case "\x1b[8~":
            cursor = chars.length;
            break;
          case "\x02":
          case "\x1b[D":
          case "\x1bOD":
            if (cursor > 0) cursor--;
            break;
          case "\x06":
          case "\x1b[C":
          case "\x1bOC":
            if (cursor < chars.length) cursor++;
            break;
          case "\x0b": // Ctrl-K
            chars = chars.slice(0, cursor);
            break;
          case "\x15": // Ctrl-U
            chars = chars.slice(cursor);
            cursor = 0;
            break;
          case "\x17": { // Ctrl-W
            let i = cursor;
            while (i > 0 && chars[i - 1] === " ") i--;
            while (i > 0 && chars[i - 1] !== " ") i--;
            chars.splice(i, cursor - i);
            cursor = i;
            break;
          }
          case "\x0c": // Ctrl-L
            this.#write("\x1b[H\x1b[2J");
            break;
          case "\x10":
          case "\x1b[A":
          case "\x1bOA":
            if (index > 0) {
              if (index === entries.length) draft = chars;
              chars = [...entries[--index]];
              cursor = chars.length;
            }
            break;
          case "\x0e":
          case "\x1b[B":
          case "\x1bOB":
            if (index < entries.length) {
              index++;
              chars = index === entries.length ? draft : [...entries[index]];
              cursor = chars.length;
            }
            break;
          default:
            if ((key.codePointAt(0)! >= 0x20 && key[0] !== "\x1b") || key === "\t") {
              chars.splice(cursor++, 0, key);
              if (
                !stale && this.#pending === "" && cursor === chars.length &&
                this.#fits(prompt, chars)
              ) {
                this.#write(key === "\t" ? " " : key); // typed at the end: echo, no redraw
                continue;
              }
            }
        }
        redraw();
      }
    } finally {
      this.#input.setRaw(false);
    }
  }

  /** Whether `reading` settles within {@link ESC_WAIT_MS}. */
  async #arrivesSoon(reading: Promise<unknown>): Promise<boolean> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), ESC_WAIT_MS);
    });
    try {
      // A failed read is thrown where it is awaited, after this.
      return await Promise.race([reading.then(() => true, () => true), late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Takes one key (a character or an escape sequence) from the pending input. */
  #takeKey(): string | null {
    const p = this.#pending;
    if (p === "") return null;
    if (p[0] === "\r" && p[1] === "\n") {
      this.#pending = p.slice(2);
      return "\r";
    }
    if (p[0] !== "\x1b") {
      const ch = String.fromCodePoint(p.codePointAt(0)!);
      this.#pending = p.slice(ch.length);
      return ch;
    }
    if (p.length < 2) return null; // wait for the rest of the sequence
    let end: number;
    if (p[1] === "[") {
      end = 2;
      while (end < p.length && !(p.charCodeAt(end) >= 0x40 && p.charCodeAt(end) <= 0x7e)) end++;
      if (end >= p.length) return null;
      end++;
    } else if (p[1] === "O") {
      if (p.length < 3) return null;
      end = 3;
    } else {
      end = 2; // Alt-key: ignored
    }
    this.#pending = p.slice(end);
    return p.slice(0, end);
  }

  /** Terminal columns left after the prompt (80 columns when the size is unknown). */
  #room(prompt: string): number {
    let columns = 0;
    try {
      columns = Deno.consoleSize().columns;
    } catch {
      // Not a terminal.
    }
    return Math.max(10, (columns > 0 ? columns : 80) - displayWidth(prompt) - 1);
  }

  #fits(prompt: string, chars: string[]): boolean {
    return displayWidth(chars.join("").replaceAll("\t", " ")) <= this.#room(prompt);
  }

  /** Redraws the prompt and line, scrolled so the cursor stays visible. */
  #render(prompt: string, chars: string[], cursor: number): void {
    const shown = chars.map((c) => c === "\t" ? " " : c);
    const room = this.#room(prompt);
    let start = 0;
    let before = displayWidth(shown.slice(0, cursor).join(""));
    while (before > room) before -= displayWidth(shown[start++]);
    let end = start;
    let width = 0;
    while (end < shown.length && width + displayWidth(shown[end]) <= room) {
      width += displayWidth(shown[end++]);
    }
    const col = displayWidth(prompt) + before;
    this.#write(
      `\r${prompt}${shown.slice(start, end).join("")}\x1b[K\r${col > 0 ? `\x1b[${col}C` : ""}`,
    );
  }

  #write(text: string): void {
    const bytes = encoder.encode(text);
    let off = 0;
    while (off < bytes.length) off += this.#output.writeSync(bytes.subarray(off));
  }
}
