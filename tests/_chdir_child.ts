/**
 * A test that changes the working directory, run only in a child process by
 * `inEnv()` (tests/_helpers.ts): the working directory is the whole process's,
 * shared by every test file `deno test --parallel` runs. Never import this
 * file from a test file.
 */

import { connect, serve } from "../mod.ts";

/**
 * Serves `app.db` of `dir` by a relative path, then changes the process's directory and reads
 * through the server.
 */
export async function servedAfterChdir(dir: string): Promise<unknown[]> {
  Deno.chdir(dir);
  const server = await serve({ database: "app.db", path: `${dir}/s.sock` });
  Deno.chdir("/");
  try {
    await using db = await connect({ path: `${dir}/s.sock` });
    await db.exec("CREATE TABLE t (x)");
    await db.run("INSERT INTO t VALUES (1)");
    // Reads on connections opened now, in the background (several at once).
    const slow =
      "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 300000) " +
      "SELECT count(*) + (SELECT x FROM t) FROM c";
    return await Promise.all(
      Array.from({ length: 4 }, async () => {
        await using c = await connect({ path: `${dir}/s.sock` });
        return await c.values(slow);
      }),
    );
  } finally {
    await server[Symbol.asyncDispose]();
  }
}
