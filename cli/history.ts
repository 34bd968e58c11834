/**
 * Input history of the interactive shell: lines in memory, kept between
 * sessions in a file (`~/.netsqlite_history` unless `NETSQLITE_HISTORY`
 * names another file, or is empty to keep none).
 *
 * @module
 */

/** Lines kept in memory and in the file. */
export const HISTORY_LIMIT = 1000;

/**
 * The history file to use: `$NETSQLITE_HISTORY` when set (empty: none),
 * else `.netsqlite_history` in the home directory, or `null` without one.
 */
export function defaultHistoryFile(): string | null {
  const chosen = Deno.env.get("NETSQLITE_HISTORY");
  if (chosen !== undefined) return chosen === "" ? null : chosen;
  const home = Deno.env.get("HOME") ?? Deno.env.get("USERPROFILE");
  return home === undefined ? null : `${home}/.netsqlite_history`;
}

/** Entered lines, oldest first, without consecutive repeats. */
export class History {
  readonly #entries: string[] = [];
  readonly #file: string | null;

  /** @param file Where the history persists, or `null` for memory only. */
  constructor(file: string | null) {
    this.#file = file;
  }

  /** The lines, oldest first. */
  get entries(): readonly string[] {
    return this.#entries;
  }

  /** Adds a line, unless it is blank or repeats the last one. */
  add(line: string): void {
    if (line.trim() === "" || this.#entries.at(-1) === line) return;
    this.#entries.push(line);
    if (this.#entries.length > HISTORY_LIMIT) this.#entries.shift();
  }

  /** Reads the file, if there is one; a missing or unreadable file is no history. */
  async load(): Promise<void> {
    if (this.#file === null) return;
    const text = await Deno.readTextFile(this.#file).catch(() => "");
    for (const line of text.split("\n")) this.add(line);
  }

  /**
   * Writes the last {@link HISTORY_LIMIT} lines to the file.
   *
   * @returns an error message when the file cannot be written, else `null`.
   */
  async save(): Promise<string | null> {
    if (this.#file === null) return null;
    try {
      await Deno.writeTextFile(this.#file, this.#entries.map((l) => l + "\n").join(""), {
        mode: 0o600,
      });
      return null;
    } catch (err) {
      return `Cannot write history file "${this.#file}": ${(err as Error).message}`;
    }
  }
}
