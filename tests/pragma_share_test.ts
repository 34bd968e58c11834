/**
 * With `allowUnsafePragmas`, a connection setting a client sets
 * (`case_sensitive_like`) applies to every client's reads, on whichever
 * connection they run: the shared reader (a fast read), a background
 * reader (a slow read, FFI), a cursor's reader (`iterate()`), and after it
 * was set inside a transaction. Real servers, on the engine
 * `NETSQLITE_ENGINE` names.
 */

import assert from "node:assert/strict";
import type { Client } from "../mod.ts";
import { startServer } from "./_helpers.ts";

/** Counts to 300,000 first (past the inline budget: a background read on FFI). */
const SLOW = "(WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000) " +
  "SELECT count(*) FROM c)";

/** `'a' LIKE 'A'` read every way a client can: [fast, slow, iterate]. */
async function likeEveryWay(b: Client): Promise<number[]> {
  const fast = await b.get<{ x: number }>("SELECT 'a' LIKE 'A' AS x");
  const slow = await b.get<{ n: number; x: number }>(`SELECT ${SLOW} AS n, 'a' LIKE 'A' AS x`);
  const counted = await b.get<{ c: number }>(
    `SELECT ${SLOW} AS n, (SELECT count(*) FROM t WHERE s LIKE 'a') AS c`,
  );
  const rows: unknown[] = [];
  for await (const r of b.iterate("SELECT s FROM t WHERE s LIKE 'a'")) rows.push(r);
  return [fast!.x, slow!.x, counted!.c, rows.length];
}

for (const where of ["outside", "inside"] as const) {
  Deno.test(`PRAGMA case_sensitive_like set ${where} a transaction applies to every read of every client`, async () => {
    await using srv = await startServer({ allowUnsafePragmas: true });
    await using a = await srv.client();
    await using b = await srv.client();
    await a.exec("CREATE TABLE t (s TEXT); INSERT INTO t VALUES ('a'), ('A'), ('b')");
    // Every reader connection has been used (and kept) before the setting.
    assert.deepEqual(await likeEveryWay(b), [1, 1, 2, 2]);
    if (where === "outside") await a.run("PRAGMA case_sensitive_like = 1");
    else await a.exec("BEGIN; PRAGMA case_sensitive_like = 1; COMMIT");
    assert.deepEqual(await likeEveryWay(b), [0, 0, 1, 1]);
    assert.deepEqual(await likeEveryWay(a), [0, 0, 1, 1]);
    // Writes see it too (they run on the writer).
    assert.deepEqual(await b.values("DELETE FROM t WHERE s LIKE 'a' RETURNING s"), [["a"]]);
    await a.run("PRAGMA case_sensitive_like = 0");
    assert.deepEqual(await likeEveryWay(b), [1, 1, 1, 1]);
  });
}
