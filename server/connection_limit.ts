/**
 * How many connections the server serves at once: `--max-connections`,
 * lowered where the process's open-file limit leaves less room. Past the
 * open-file limit the server could not even accept a connection to tell
 * its client why (the client would hang until its request timeout), and
 * SQLite could not open the files it needs.
 *
 * @module
 */

/**
 * Descriptors kept out of the connections' share: the database, its WAL
 * and shared-memory files for the writer, the shared reader and the reader
 * connections slow reads and cursors borrow, the listener, standard streams.
 */
export const FD_RESERVE = 256;

/**
 * This process's limit on open files (Linux: `/proc/self/limits`; Deno
 * raises it to the hard limit at start), or `null` where it cannot be read.
 */
export function openFileLimit(): number | null {
  try {
    const text = Deno.readTextFileSync("/proc/self/limits");
    const m = /^Max open files\s+(\d+)/m.exec(text);
    return m === null ? null : Number(m[1]);
  } catch {
    return null; // another system, or no permission to read it
  }
}

/**
 * The number of connections to serve, and why it is below `configured`
 * (`null` when it is not).
 *
 * @example
 * ```ts
 * import { connectionLimit } from "./connection_limit.ts";
 * const { max } = connectionLimit(10000, 1024);
 * if (max !== 768) throw new Error(`expected 768, got ${max}`);
 * ```
 */
export function connectionLimit(
  configured: number,
  fileLimit: number | null = openFileLimit(),
): { max: number; lowered: string | null } {
  if (fileLimit === null) return { max: configured, lowered: null };
  const room = Math.max(fileLimit - FD_RESERVE, Math.floor(fileLimit / 2));
  if (configured <= room) return { max: configured, lowered: null };
  return {
    max: room,
    lowered: `serving at most ${room} connections, not ${configured} (--max-connections): ` +
      `the open-file limit is ${fileLimit} (ulimit -n), and SQLite needs files of its own`,
  };
}
