/**
 * Sets a running process's file size limit (`RLIMIT_FSIZE`, what `ulimit -f`
 * sets) with `prlimit --pid`, for the tests of a server whose files reach it.
 *
 * The limit is set once the server runs, not inherited from `ulimit -f`
 * before `deno run`: Deno writes its own caches (`DENO_DIR`, megabytes)
 * before any of the server's code runs, and a write of those past the limit
 * would kill the process (`SIGXFSZ`) before the server listens for that
 * signal (`server/file_size_limit.ts`).
 */

import assert from "node:assert/strict";

/** The `prlimit` program, or `undefined` where there is none (tests that need it are skipped). */
export const PRLIMIT: string | undefined = ["/usr/bin/prlimit", "/bin/prlimit"].find((p) => {
  try {
    return Deno.statSync(p).isFile;
  } catch {
    return false;
  }
});

/** Limits the files process `pid` writes to `bytes` (soft and hard limit). */
export async function limitFileSize(pid: number, bytes: number): Promise<void> {
  assert.ok(PRLIMIT !== undefined, "no prlimit");
  const out = await new Deno.Command(PRLIMIT, {
    args: ["--pid", String(pid), `--fsize=${bytes}:${bytes}`],
    stdin: "null",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
}
