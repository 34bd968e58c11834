/**
 * Cluster mode: a write outside a transaction that the server stops while
 * it runs, for a `client.close()` or a server shutdown, may still commit
 * (dqlite 1.11 cannot stop a running statement: closing the node connection
 * leaves the node to run it to its end, and commit it). Its caller must not
 * be told that it did not run: the rejection says its outcome is unknown
 * (`mayHaveRun` true), and a script says how many of its statements ran
 * before (`ran`). Before, `close()` rejected with `the call was cancelled
 * and did not run` (`mayHaveRun` false) and a shutdown with `ABORTED`, `ran`
 * 0 ("nothing applied"), while the row was then in the table (the messages
 * are what is checked: on a loaded machine a stopped write may not have
 * reached the node yet, and is then absent). Skipped (with the reason
 * printed) when `dqlite-demo` is not installed.
 */

import assert from "node:assert/strict";
import { connect } from "../client.ts";
import { serve } from "../server.ts";
import { AbortError, ConnectionError } from "../protocol/errors.ts";
import { DemoCluster, skipWithoutDqlite } from "./_dqlite_nodes.ts";

const ignore = skipWithoutDqlite("dqlite_abort_outcome_test.ts");

/** A read that counts to `n` (the node computes it for a time proportional to `n`). */
function counting(n: number): string {
  return `SELECT count(*) FROM (WITH RECURSIVE c(i) AS ` +
    `(SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ${Math.round(n)}) SELECT i FROM c)`;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * `rows` holds every value of `must` and, of `maybe`, any: a write whose
 * outcome is unknown may have reached the node (then it ran to its end) or
 * not (a loaded machine sent it late, and the close came first).
 */
function assertRows(rows: number[], must: number[], maybe: number[]): void {
  const extra = rows.filter((v) => !must.includes(v));
  assert.deepEqual(rows.filter((v) => must.includes(v)), must, `rows ${rows}`);
  assert.ok(extra.every((v) => maybe.includes(v)), `rows ${rows}: only ${maybe} may be extra`);
}

Deno.test({
  name: "cluster mode: a write stopped by close() or a shutdown while it runs is reported as " +
    "maybe applied, not as not run",
  ignore,
  async fn() {
    await using nodes = await DemoCluster.start(1);
    const dir = await Deno.makeTempDir({ prefix: "netsqlite-dqlite-abort-" });
    const path = `${dir}/s.sock`;
    const dqlite = { nodes: nodes.addresses, database: "abort", leaderTimeout: 30_000 };
    try {
      let server = await serve({ path, dqlite });
      {
        await using db = await connect({ path, max: 1 });
        await db.exec("CREATE TABLE t (v INTEGER)");
      }
      // How far the node counts per ms, on this machine now: the slow writes below take about
      // 3 s (stopped by close() 0.4 s in) and 7 s (stopped by a shutdown 2.4 s in).
      const perMs = await (async () => {
        await using db = await connect({ path, max: 1 });
        const started = performance.now();
        await db.values(counting(2_000_000));
        return 2_000_000 / Math.max(1, performance.now() - started);
      })();
      /** An INSERT of one row, `v`, that the node computes for about `ms` first. */
      const slowInsert = (v: number, ms: number): string =>
        `INSERT INTO t SELECT ${v} FROM (${counting(perMs * ms)})`;
      /** The table, read once the node ran what it was running (it runs one statement at a time). */
      const rows = async (): Promise<number[]> => {
        await using db = await connect({ path, max: 1 });
        return (await db.values<[number]>("SELECT v FROM t ORDER BY v", [], { timeout: 60_000 }))
          .map(([v]) => v);
      };

      // close() while a single INSERT runs on the node.
      {
        const db = await connect({ path, max: 1 });
        const call = db.run(slowInsert(1, 3_000), [], { timeout: 60_000 }).then(
          () => null,
          (e) => e,
        );
        await sleep(400); // sent, and running on the node
        await db.close();
        const err = await call;
        assert.ok(err instanceof ConnectionError, String(err));
        assert.equal(err.mayHaveRun, true, err.message);
        assert.match(err.message, /outcome unknown/);
        assertRows(await rows(), [], [1]);
      }

      // close() while the second statement of a script runs: the first stays applied.
      {
        const db = await connect({ path, max: 1 });
        const call = db.exec(
          `INSERT INTO t VALUES (2); ${slowInsert(3, 3_000)}; ` +
            "INSERT INTO t VALUES (4)",
        ).then(() => null, (e) => e);
        await sleep(400);
        await db.close();
        const err = await call;
        assert.ok(err instanceof ConnectionError, String(err));
        assert.equal(err.mayHaveRun, true, err.message);
        assert.match(err.message, /\(statement 2 of the script; the 1 before it ran\)/);
        assert.match(err.message, /outcome unknown/);
        assertRows(await rows(), [2], [1, 3]);
      }

      // A shutdown that stops a single INSERT (past its 2 s for a running statement).
      {
        const db = await connect({ path, max: 1 });
        const call = db.run(slowInsert(5, 7_000), [], { timeout: 60_000 }).then(
          () => null,
          (e) => e,
        );
        await sleep(400);
        await server.shutdown();
        const err = await call;
        await db.close();
        assert.ok(err instanceof AbortError, String(err));
        assert.equal(err.mayHaveRun, true, err.message);
        assert.equal(err.ran, 0);
        assert.match(err.message, /^Server is shutting down: request \d+ was stopped while it ran/);
        assert.match(err.message, /outcome unknown: the write may have been applied/);
        server = await serve({ path, dqlite });
        assertRows(await rows(), [2], [1, 3, 5]);
      }

      // A shutdown that stops a script's second statement.
      {
        const db = await connect({ path, max: 1 });
        const call = db.exec(`INSERT INTO t VALUES (6); ${slowInsert(7, 7_000)}`).then(
          () => null,
          (e) => e,
        );
        await sleep(400);
        await server.shutdown();
        const err = await call;
        await db.close();
        assert.ok(err instanceof AbortError, String(err));
        assert.equal(err.mayHaveRun, true, err.message);
        assert.equal(err.ran, 1);
        assert.match(err.message, /outcome unknown/);
        server = await serve({ path, dqlite });
        assertRows(await rows(), [2, 6], [1, 3, 5, 7]);
      }
      await server.shutdown();
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
