/**
 * Output into a pipe whose reader went away (`netsqlite stats --watch 1 | head -1`):
 * the commands end quietly with exit status 0, as the reader chose to stop,
 * instead of writing on (`console.log` ignores the failed write) or failing.
 *
 * @module
 */

/**
 * Whether `err` is a write's failure because the reader of the pipe is gone (`EPIPE`).
 *
 * @example
 * ```ts
 * import { isBrokenPipe } from "./broken_pipe.ts";
 * if (!isBrokenPipe(new Deno.errors.BrokenPipe("Broken pipe (os error 32)"))) throw new Error();
 * if (isBrokenPipe(new Error("other"))) throw new Error();
 * ```
 */
export function isBrokenPipe(err: unknown): boolean {
  return err instanceof Deno.errors.BrokenPipe || (err as { code?: unknown })?.code === "EPIPE";
}

/** Thrown by an output whose reader went away: the command stops and exits 0. */
export class OutputClosed extends Error {
  /** @param cause The write's error. */
  constructor(cause: unknown) {
    super("Standard output was closed by its reader", { cause });
    this.name = "OutputClosed";
  }
}

const encoder = new TextEncoder();

/**
 * Writes all of `text` to a synchronous output (standard output by default).
 *
 * @throws {OutputClosed} when the reader of the pipe is gone.
 */
export function writeAllSync(
  text: string,
  w: { writeSync(p: Uint8Array): number } = Deno.stdout,
): void {
  const bytes = encoder.encode(text);
  try {
    let off = 0;
    while (off < bytes.length) off += w.writeSync(bytes.subarray(off));
  } catch (err) {
    if (isBrokenPipe(err)) throw new OutputClosed(err);
    throw err;
  }
}
