/**
 * Cluster mode: a row set stopped early (a `get()`'s rest, `maxBytes`, an
 * interrupt, a statement timeout, a cancel) is answered at once and drained
 * in the background (see `DqliteDatabase`), its connection back in the pool
 * meanwhile; the requests that follow on that connection, from any session,
 * or made while the stopped one still ran, get their own answers, exactly,
 * also when the drain runs out of time and closes the connection. Against a
 * one-node `dqlite-demo` cluster; skipped (with the reason printed) when
 * `dqlite-demo` is not installed: `apt-get install go-dqlite libdqlite0`.
 */

import assert from "node:assert/strict";
import { type Client, connect, SqliteError } from "../mod.ts";
import { serve } from "../server.ts";
import { DqliteCluster } from "../engine/dqlite/cluster.ts";
import type { QueryOptions, QueryResult } from "../engine/dqlite/database.ts";
import { DemoCluster, skipWithoutDqlite } from "./_dqlite_nodes.ts";
import { delay } from "./_helpers.ts";

const ignore = skipWithoutDqlite("dqlite_drain_test.ts");

const ROWS = 20_000;
const pad = (i: number): string => String(i).padStart(50, "0");
/** ~1.2 MB of rows: a get()'s rest takes many messages to drain. */
const FILL = "INSERT INTO big (id, pad) WITH RECURSIVE c(i) AS " +
  `(SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ${ROWS}) SELECT i, printf('%050d', i) FROM c`;
/** A read whose rows never end: its drain runs out of time, and its connection is closed. */
const ENDLESS = "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c) SELECT i FROM c";
/** 60,000 rows, in many messages: a stop may come anywhere in them. */
const SLOW = "SELECT a.id AS a, b.id AS b FROM big a, big b WHERE b.id <= 3 ORDER BY a.id, b.id";
const AT = "SELECT id, pad FROM big WHERE id >= ? ORDER BY id";
/** A `get()` outside a transaction: its first row answers, the rest is drained. */
const FIRST: QueryOptions = { keep: 1, endAfterKept: true };

/** A small deterministic generator, so that a failure can be replayed. */
function random(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const rowsOf = (p: Promise<QueryResult>): Promise<unknown> => p.then((r) => r.rows);
const settled = (p: Promise<unknown>): Promise<unknown> => p.then((r) => r, (e) => e);

Deno.test({
  name: "cluster mode: requests after a stopped row set get their own answers",
  ignore,
  async fn(t) {
    await using nodes = await DemoCluster.start(1);
    const cluster = new DqliteCluster(nodes.addresses, { leaderTimeout: 15_000 });
    try {
      await using db = await cluster.open("drain");
      await db.exec("CREATE TABLE big (id INTEGER PRIMARY KEY, pad TEXT)");
      await db.exec(FILL);
      await db.exec("CREATE TABLE one (v INTEGER)");
      await db.exec("INSERT INTO one VALUES (0)");

      await t.step(
        "DqliteDatabase: requests made while a stopped read drains wait for it, also when " +
          "its drain closes the connection",
        async () => {
          let generation = db.generation;
          // B is made while A still runs; A's rest never ends, so its drain closes the
          // connection B would have been sent on: B runs on a new one.
          const [a, b] = await Promise.all([
            rowsOf(db.query(ENDLESS, [], FIRST)),
            rowsOf(db.query("SELECT 42")),
          ]);
          assert.deepEqual([a, b], [[[1]], [[42]]]);
          assert.equal(db.generation, ++generation);
          // Three requests made during one drain: the second stops early too, and its
          // drain closes the connection again under the third.
          assert.deepEqual(await rowsOf(db.query(ENDLESS, [], FIRST)), [[1]]);
          const three = await Promise.all([
            rowsOf(db.query("SELECT v FROM one")),
            rowsOf(db.query(ENDLESS, [], FIRST)),
            rowsOf(db.query("SELECT 43")),
          ]);
          assert.deepEqual(three, [[[0]], [[1]], [[43]]]);
          assert.equal(db.generation, generation + 2);
          // A drain that ends in time: the requests made meanwhile read after the rest.
          const k = 777;
          const mixed = await Promise.all([
            rowsOf(db.query(AT, [k], FIRST)),
            rowsOf(db.query(AT, [k + 1], FIRST)),
            db.exec("UPDATE one SET v = 5").then((r) => r.rowsAffected),
            rowsOf(db.query("SELECT v FROM one")),
          ]);
          assert.deepEqual(mixed, [[[k, pad(k)]], [[k + 1, pad(k + 1)]], 1, [[5]]]);
          await db.exec("UPDATE one SET v = 0");
        },
      );

      await t.step(
        "DqliteDatabase: stops anywhere in a row set leave the connection in step",
        async () => {
          const rnd = random(1);
          let v = 0;
          for (let i = 0; i < 40; i++) {
            const k = 1 + Math.floor(rnd() * ROWS);
            assert.deepEqual(await rowsOf(db.query(AT, [k], FIRST)), [[k, pad(k)]]);
            switch (i % 4) {
              case 0:
                await db.exec("UPDATE one SET v = ?", [++v]);
                break;
              case 1: {
                const err = await settled(db.query("SELECT * FROM big", [], { maxBytes: 10_000 }));
                assert.ok(err instanceof SqliteError, String(err));
                assert.equal(err.code, "RESULT_TOO_LARGE");
                break;
              }
              case 2: {
                // Interrupted before its first message, or part way, or too late.
                const p = db.query(SLOW);
                const ms = Math.floor(rnd() * 30);
                if (ms > 0) await delay(ms);
                db.interrupt();
                const r = await settled(p);
                if (r instanceof Error) {
                  assert.ok(r instanceof SqliteError && r.sqliteCode === 9, String(r));
                } else {
                  const { rows } = r as QueryResult;
                  assert.equal(rows.length, ROWS * 3);
                  assert.deepEqual(rows.at(-1), [ROWS, 3]);
                }
                break;
              }
              case 3: {
                // Interrupted while it waits for the drain of the get() above, or after it.
                const p = db.query("SELECT v FROM one");
                db.interrupt();
                const r = await settled(p);
                if (r instanceof Error) {
                  assert.ok(r instanceof SqliteError && r.sqliteCode === 9, String(r));
                } else {
                  assert.deepEqual((r as QueryResult).rows, [[v]]);
                }
                break;
              }
            }
            assert.deepEqual(await rowsOf(db.query("SELECT v FROM one")), [[v]]);
          }
        },
      );

      await t.step(
        "server: stopped reads of many clients sharing a pool of 2 leave no rows behind",
        async () => {
          const dir = await Deno.makeTempDir({ prefix: "netsqlite-dqdrain-" });
          const path = `${dir}/s.sock`;
          const server = await serve({
            path,
            logLevel: "error",
            dqlite: { nodes: nodes.addresses, database: "drain", poolSize: 2 },
          });
          const N = 6;
          const clients: Client[] = [];
          try {
            for (let c = 0; c <= N; c++) clients.push(await connect({ path, max: 1 }));
            const setup = clients[N];
            await setup.exec("CREATE TABLE counters (c INTEGER PRIMARY KEY, n INTEGER)");
            for (let c = 0; c < N; c++) await setup.run("INSERT INTO counters VALUES (?, 0)", [c]);
            const counts = new Array(N).fill(0);
            await Promise.all(
              clients.slice(0, N).map(async (db, c) => {
                const rnd = random(100 + c);
                for (let i = 0; i < 25; i++) {
                  const k = 1 + Math.floor(rnd() * ROWS);
                  switch (Math.floor(rnd() * 8)) {
                    case 0:
                    case 1:
                      assert.deepEqual(await db.get(AT, [k]), { id: k, pad: pad(k) });
                      break;
                    case 2:
                      assert.deepEqual(
                        await db.run("UPDATE counters SET n = n + 1 WHERE c = ?", [c]),
                        { changes: 1, lastInsertRowid: 0 },
                      );
                      counts[c]++;
                      break;
                    case 3: {
                      const timeout = 1 + Math.floor(rnd() * 40);
                      const r = await settled(db.get(SLOW, [], { timeout }));
                      if (r instanceof Error) {
                        assert.equal((r as SqliteError).code, "STATEMENT_TIMEOUT", String(r));
                      } else {
                        assert.deepEqual(r, { a: 1, b: 1 });
                      }
                      break;
                    }
                    case 4: {
                      const ac = new AbortController();
                      const p = db.query("SELECT id FROM big WHERE id <= 3000 ORDER BY id", [], {
                        signal: ac.signal,
                      });
                      setTimeout(() => ac.abort(new Error("test cancel")), Math.floor(rnd() * 20));
                      const r = await settled(p);
                      if (r instanceof Error) {
                        assert.equal((r as SqliteError).code, "ABORTED", String(r));
                      } else {
                        assert.equal((r as unknown[]).length, 3000);
                        assert.deepEqual((r as unknown[])[2999], { id: 3000 });
                      }
                      break;
                    }
                    case 5:
                      for await (
                        const row of db.iterate("SELECT id FROM big ORDER BY id LIMIT 2000")
                      ) {
                        assert.deepEqual(row, { id: 1 });
                        break;
                      }
                      break;
                    case 6: {
                      const n = await db.transaction(async (tx) => {
                        assert.deepEqual(await tx.get(AT, [k]), { id: k, pad: pad(k) });
                        await tx.run("UPDATE counters SET n = n + 1 WHERE c = ?", [c]);
                        return (await tx.get("SELECT n FROM counters WHERE c = ?", [c]))!.n;
                      });
                      assert.equal(n, ++counts[c]);
                      break;
                    }
                    case 7:
                      if (i % 3 === 0) assert.deepEqual(await db.get(ENDLESS), { i: 1 });
                      break;
                  }
                  assert.deepEqual(await db.get("SELECT n FROM counters WHERE c = ?", [c]), {
                    n: counts[c],
                  });
                }
              }),
            );
            assert.deepEqual(
              await setup.query("SELECT c, n FROM counters ORDER BY c"),
              counts.map((n, c) => ({ c, n })),
            );
          } finally {
            for (const c of clients) await c.close();
            await server.shutdown();
            await Deno.remove(dir, { recursive: true }).catch(() => {});
          }
        },
      );
    } finally {
      cluster.close();
    }
  },
});
