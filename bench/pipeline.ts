/**
 * One client pipelining alone: `Promise.all` of N point reads, then of N
 * inserts, on a `max: 1` client against an in-process server; three rounds,
 * operations per second. Shows what the server's turns between connections
 * (server/session.ts, TURN_MS) cost a connection that has no competition.
 *
 *     deno run -A bench/pipeline.ts [N=50000] [ROOT=..]
 *
 * ROOT is the checkout to load (`mod.ts` in it), so that two versions can be
 * run alternately.
 */

import { fileURLToPath } from "node:url";

const n = Number(Deno.args[0] ?? 50_000);
const root = Deno.args[1] ?? fileURLToPath(new URL("..", import.meta.url));
const { serve, connect } = await import(`${root.replace(/\/$/, "")}/mod.ts`);

const dir = await Deno.makeTempDir();
const server = await serve({ database: `${dir}/a.db`, path: `${dir}/s.sock`, logLevel: "error" });
const db = await connect({ path: `${dir}/s.sock`, max: 1 });
try {
  await db.exec("CREATE TABLE t (x)");
  for (let round = 1; round <= 3; round++) {
    let t = performance.now();
    await Promise.all(Array.from({ length: n }, (_, i) => db.get("SELECT ? AS v", [i])));
    const reads = n / ((performance.now() - t) / 1000);
    t = performance.now();
    await Promise.all(Array.from({ length: n }, (_, i) => db.run("INSERT INTO t VALUES (?)", [i])));
    const writes = n / ((performance.now() - t) / 1000);
    console.log(`round ${round}: reads ${reads.toFixed(0)}/s, inserts ${writes.toFixed(0)}/s`);
  }
} finally {
  await db.close();
  await server.shutdown();
  await Deno.remove(dir, { recursive: true });
}
