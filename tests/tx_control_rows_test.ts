/**
 * Transaction control run by a call that wants rows (`query`, `values`,
 * `get`, a prepared statement's `all`, `get`, `values`), as ORMs and shells
 * send every statement: COMMIT, END, ROLLBACK, RELEASE, SAVEPOINT and
 * ROLLBACK TO do what they say, with no error, on both engines. (A write
 * that wants rows runs in a savepoint of the server's own inside a
 * transaction; transaction control must not: COMMIT would end that
 * savepoint with the transaction, and the commit that happened was then
 * reported as a rollback.)
 */

import assert from "node:assert/strict";
import type { Client, Queryable } from "../mod.ts";
import { startServer } from "./_helpers.ts";

const ENGINES = ["ffi", "node"] as const;

/** One way to run a statement that wants rows; resolves to what it returned. */
type Way = (db: Queryable, sql: string) => Promise<unknown>;

const WAYS: [string, Way][] = [
  ["query()", (db, sql) => db.query(sql)],
  ["values()", (db, sql) => db.values(sql)],
  ["get()", (db, sql) => db.get(sql)],
  ["prepare().all()", async (db, sql) => await (await db.prepare(sql)).all()],
  ["prepare().get()", async (db, sql) => await (await db.prepare(sql)).get()],
  ["prepare().values()", async (db, sql) => await (await db.prepare(sql)).values()],
];

/** What `way` returns for a statement without rows. */
function noRows(way: string): unknown {
  return way.endsWith("get()") ? undefined : [];
}

/** The rows of `t` another client sees (committed ones). */
async function committed(other: Client): Promise<number[]> {
  return (await other.values<[number]>("SELECT x FROM t ORDER BY x")).map(([x]) => x);
}

for (const engine of ENGINES) {
  for (const [way, run] of WAYS) {
    Deno.test(`${way} of COMMIT, END, ROLLBACK, RELEASE inside a transaction ends it as it says (${engine})`, async () => {
      await using srv = await startServer({ engine });
      await using db = await srv.client();
      await using other = await srv.client();
      await db.exec("CREATE TABLE t (x)");
      const ends: [string, string, boolean][] = [
        ["BEGIN", "COMMIT", true],
        ["BEGIN", "END", true],
        ["BEGIN", "ROLLBACK", false],
        ["SAVEPOINT s", "RELEASE s", true],
        ["SAVEPOINT s", "ROLLBACK", false],
      ];
      let n = 0;
      let expected: number[] = [];
      for (const [begin, end, commits] of ends) {
        n++;
        await db.exec(begin);
        await db.run(`INSERT INTO t VALUES (${n})`);
        assert.equal(db.inTransaction, true);
        assert.deepEqual(await run(db, end), noRows(way), `${begin} ... ${end}`);
        assert.equal(db.inTransaction, false, `${end} ended the transaction`);
        if (commits) expected = [...expected, n];
        assert.deepEqual(await committed(other), expected, `after ${begin} ... ${end}`);
        // The server holds no transaction: another client writes at once.
        await other.run("INSERT INTO t VALUES (-1)");
        await other.run("DELETE FROM t WHERE x = -1");
      }
    });

    Deno.test(`${way} of SAVEPOINT, ROLLBACK TO, RELEASE inside a transaction keeps it as it says (${engine})`, async () => {
      await using srv = await startServer({ engine });
      await using db = await srv.client();
      await using other = await srv.client();
      await db.exec("CREATE TABLE t (x)");
      await db.exec("BEGIN");
      await db.run("INSERT INTO t VALUES (1)");
      assert.deepEqual(await run(db, "SAVEPOINT s"), noRows(way));
      await db.run("INSERT INTO t VALUES (2)");
      assert.deepEqual(await run(db, "SAVEPOINT inner"), noRows(way));
      await db.run("INSERT INTO t VALUES (3)");
      assert.deepEqual(await run(db, "RELEASE inner"), noRows(way));
      // `s` is still there, with 2 and 3 after it.
      assert.deepEqual(await run(db, "ROLLBACK TO s"), noRows(way));
      assert.equal(db.inTransaction, true);
      assert.deepEqual(await db.values("SELECT x FROM t ORDER BY x"), [[1]]);
      await db.run("INSERT INTO t VALUES (4)");
      assert.deepEqual(await run(db, "RELEASE s"), noRows(way));
      assert.equal(db.inTransaction, true);
      assert.deepEqual(await committed(other), [], "nothing committed yet");
      assert.deepEqual(await run(db, "COMMIT"), noRows(way));
      assert.equal(db.inTransaction, false);
      assert.deepEqual(await committed(other), [1, 4]);
    });
  }
}
