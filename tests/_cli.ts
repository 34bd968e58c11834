/** Running `cli.ts` as a child process, for the tests of the `netsqlite` command. */

import { fileURLToPath } from "node:url";
import type { AdminIO } from "../cli/admin.ts";

/** The path of `cli.ts`. */
export const CLI: string = fileURLToPath(new URL("../cli.ts", import.meta.url));

/** What a run of the command did. */
export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `deno run -A cli.ts ...args` with `stdin` piped in (or none). */
export async function cli(
  args: string[],
  stdin?: string | Uint8Array,
  env: Record<string, string> = {},
): Promise<Run> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, ...args],
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    env: { NETSQLITE_HISTORY: "", NO_COLOR: "1", ...env },
  }).spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(typeof stdin === "string" ? new TextEncoder().encode(stdin) : stdin);
    await w.close();
  }
  const out = await child.output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** An `AdminIO` for `runAdmin()` in process that keeps what it is given. */
export interface CapturedIO {
  io: AdminIO;
  /** Lines of results. */
  out: string[];
  /** Lines of diagnostics. */
  errors: string[];
  /** Progress lines drawn, `""` for a cleared one. */
  drawn: string[];
}

/**
 * Captures a `runAdmin()` run's output, as on a terminal (`outIsTerminal`,
 * a progress line); `onDraw` sees each progress line as it is drawn.
 */
export function capturedIO(onDraw?: (text: string) => void): CapturedIO {
  const out: string[] = [];
  const errors: string[] = [];
  const drawn: string[] = [];
  const io: AdminIO = {
    out: (line) => out.push(line),
    err: (line) => errors.push(line),
    progress: (text) => {
      drawn.push(text);
      onDraw?.(text);
    },
    outIsTerminal: true,
  };
  return { io, out, errors, drawn };
}
