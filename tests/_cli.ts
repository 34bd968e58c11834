/** Running `cli.ts` as a child process, for the tests of the `netsqlite` command. */

/** The path of `cli.ts`. */
export const CLI: string = new URL("../cli.ts", import.meta.url).pathname;

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
