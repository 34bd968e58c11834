/**
 * Schema changes while other clients and programs work: statements of a
 * transaction prepared after another program changed the schema, and the
 * rows change feeds read at commit, on both engines (feeds: FFI only).
 */

import assert from "node:assert/strict";
import type { Subscription } from "../client.ts";
import { startServer, takeEvents } from "./_helpers.ts";

const ENGINES = ["ffi", "node"] as const;

/** Runs `sql` in another process (node:sqlite on the file), which commits it and exits. */
async function otherProgram(database: string, sql: string): Promise<void> {
  const code = `
import { DatabaseSync } from "node:sqlite";
const db = new DatabaseSync(${JSON.stringify(database)});
db.exec("PRAGMA busy_timeout = 5000");
db.exec(${JSON.stringify(sql)});
db.close();
`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=js", code],
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.ok(out.success, `other program: ${sql}: ${new TextDecoder().decode(out.stderr)}`);
}

for (const engine of ENGINES) {
  Deno.test(`${engine}: a transaction's write is prepared against a schema another program changed after its BEGIN`, async () => {
    await using srv = await startServer({ engine, logLevel: "error" });
    const db = await srv.client();
    await db.exec("CREATE TABLE t (a, b, c); INSERT INTO t VALUES (1, 'B1', 'C1')");
    // BEGIN ran (deferred: nothing read yet); a migration commits now; the
    // transaction's statements are written for the new schema.
    const write = (ddl: string, run: (tx: typeof db) => Promise<unknown>) =>
      db.transaction(async (tx) => {
        await otherProgram(srv.database, ddl);
        return await run(tx as unknown as typeof db);
      });
    assert.deepEqual(
      await write("ALTER TABLE t DROP COLUMN b", (tx) => tx.run("INSERT INTO t VALUES (2, 'C2')")),
      { changes: 1, lastInsertRowid: 2 },
    );
    assert.deepEqual(
      await write(
        "ALTER TABLE t ADD COLUMN d",
        (tx) => tx.query("INSERT INTO t VALUES (3, 'C3', 'D3') RETURNING *"),
      ),
      [{ a: 3, c: "C3", d: "D3" }],
    );
    assert.deepEqual(
      (await write(
        "ALTER TABLE t ADD COLUMN e",
        (tx) => tx.batch([{ sql: "INSERT INTO t VALUES (4, 'C4', 'D4', 'E4')" }]),
      ) as { changes: number }[]).map((r) => r.changes),
      [1],
    );
    await write(
      "ALTER TABLE t ADD COLUMN f",
      (tx) => tx.exec("INSERT INTO t VALUES (5, 'C5', 'D5', 'E5', 'F5')"),
    );
    // A statement that does not compile against the new schema either still fails with its error.
    await assert.rejects(
      write("ALTER TABLE t ADD COLUMN g", (tx) => tx.run("INSERT INTO t VALUES (6)")),
      /table t has 6 columns but 1 values were supplied/,
    );
    assert.deepEqual(await db.values("SELECT * FROM t ORDER BY a"), [
      [1, "C1", null, null, null, null],
      [2, "C2", null, null, null, null],
      [3, "C3", "D3", null, null, null],
      [4, "C4", "D4", "E4", null, null],
      [5, "C5", "D5", "E5", "F5", null],
    ]);
    await db.close();
  });
}

for (const engine of ENGINES) {
  Deno.test(`${engine}: a transaction's iterate() names its columns after a schema another program changed after its BEGIN`, async () => {
    await using srv = await startServer({ engine, logLevel: "error" });
    const db = await srv.client();
    await db.exec("CREATE TABLE t (a, b, c); INSERT INTO t VALUES (1, 'B1', 'C1')");
    const all = async <T>(it: AsyncIterable<T>): Promise<T[]> => {
      const rows: T[] = [];
      for await (const r of it) rows.push(r);
      return rows;
    };
    const iterate = (ddl: string, sql: string) =>
      db.transaction(async (tx) => {
        await otherProgram(srv.database, ddl);
        return await all(tx.iterate(sql));
      });
    assert.deepEqual(await db.transaction((tx) => all(tx.iterate("SELECT * FROM t"))), [
      { a: 1, b: "B1", c: "C1" },
    ]);
    // Not [{ a: 1, b: "C1" }]: c's value under the name of the column dropped.
    assert.deepEqual(await iterate("ALTER TABLE t DROP COLUMN b", "SELECT * FROM t"), [
      { a: 1, c: "C1" },
    ]);
    // Not [{ a: 1, c: "C1" }]: the column added dropped.
    assert.deepEqual(await iterate("ALTER TABLE t ADD COLUMN d DEFAULT 'D'", "SELECT * FROM t"), [
      { a: 1, c: "C1", d: "D" },
    ]);
    assert.deepEqual(
      await iterate(
        "ALTER TABLE t ADD COLUMN e DEFAULT 'E'",
        "INSERT INTO t (a) VALUES (2) RETURNING *",
      ),
      [{ a: 2, c: null, d: "D", e: "E" }],
    );
    await db.close();
  });
}

for (const engine of ENGINES) {
  Deno.test(`${engine}: Statement.columns of a transaction's prepare() after another program changed the schema`, async () => {
    await using srv = await startServer({ engine, logLevel: "error" });
    const db = await srv.client();
    await db.exec("CREATE TABLE t (a, b, c); INSERT INTO t VALUES (1, 'B1', 'C1')");
    const columns = (ddl: string) =>
      db.transaction(async (tx) => {
        await otherProgram(srv.database, ddl);
        const stmt = await tx.prepare("SELECT * FROM t");
        const before = stmt.columns; // what a UI lays out its table with before the first run
        const rows = await stmt.all();
        await stmt.finalize();
        return { before, rows };
      });
    assert.deepEqual(await columns("ALTER TABLE t DROP COLUMN b"), {
      before: ["a", "c"],
      rows: [{ a: 1, c: "C1" }],
    });
    assert.deepEqual(await columns("ALTER TABLE t ADD COLUMN d DEFAULT 'D'"), {
      before: ["a", "c", "d"],
      rows: [{ a: 1, c: "C1", d: "D" }],
    });
    await db.close();
  });
}

for (const engine of ENGINES) {
  Deno.test(`${engine}: DDL run through a transaction's iterate() counts as DDL run any other way`, async () => {
    await using srv = await startServer({ engine, logLevel: "error" });
    const db = await srv.client();
    const other = await srv.client();
    await db.exec("CREATE TABLE t (a, b, c); INSERT INTO t VALUES (1, 'B1', 'C1')");
    const drain = async (it: AsyncIterable<unknown>): Promise<unknown[]> => {
      const rows: unknown[] = [];
      for await (const r of it) rows.push(r);
      return rows;
    };
    const seen = await db.transaction(async (tx) => {
      const before = await tx.query("SELECT * FROM t"); // (cached on the writer)
      assert.deepEqual(await drain(tx.iterate("ALTER TABLE t DROP COLUMN b")), []);
      const dropped = await tx.query("SELECT * FROM t");
      await drain(tx.iterate("ALTER TABLE t ADD COLUMN d DEFAULT 'D'"));
      const added = await tx.query("SELECT * FROM t");
      await drain(tx.iterate("CREATE TEMP TABLE tt (y)"));
      await tx.run("INSERT INTO tt VALUES (1)");
      return { before, dropped, added };
    });
    // node:sqlite read the statement cached before with the old row width:
    // { a: 1, b: "C1", c: null }, then { a: 1, b: "C1" }.
    assert.deepEqual(seen, {
      before: [{ a: 1, b: "B1", c: "C1" }],
      dropped: [{ a: 1, c: "C1" }],
      added: [{ a: 1, c: "C1", d: "D" }],
    });
    // A TEMP table lives on the shared writer: every client sees it, as when
    // exec() makes it (it was "no such table: tt").
    assert.deepEqual(await other.query("SELECT * FROM tt"), [{ y: 1 }]);
    await other.exec("DROP TABLE temp.tt");
    await other.close();
    await db.close();
  });
}

/**
 * Another program that takes the write lock, runs `ddl`, says so on stdout
 * and commits `holdMs` later (a migration tool's transaction).
 */
function migrationHoldingLock(database: string, ddl: string, holdMs: number): Deno.ChildProcess {
  const code = `
import { DatabaseSync } from "node:sqlite";
const db = new DatabaseSync(${JSON.stringify(database)});
db.exec("PRAGMA busy_timeout = 5000");
db.exec("BEGIN IMMEDIATE");
db.exec(${JSON.stringify(ddl)});
Deno.stdout.writeSync(new TextEncoder().encode("locked\\n"));
const until = Date.now() + ${holdMs};
while (Date.now() < until); // (holds the lock without giving the event loop a turn)
db.exec("COMMIT");
db.close();
`;
  return new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=js", code],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
}

for (const engine of ENGINES) {
  Deno.test(`${engine}: a batch that waited for a migration's lock reads the schema it committed`, async () => {
    await using srv = await startServer({ engine, logLevel: "error" });
    const db = await srv.client();
    await db.exec("CREATE TABLE t (a, b, c); INSERT INTO t VALUES (1, 'B1', 'C1')");
    const batch = async () =>
      (await db.batch([
        { sql: "SELECT * FROM t" },
        { sql: "INSERT INTO t (a) VALUES (?) RETURNING *", params: [2] },
        { sql: "DELETE FROM t WHERE a = 2" },
      ])).map((r) => r.rows);
    assert.deepEqual(await batch(), [
      [{ a: 1, b: "B1", c: "C1" }],
      [{ a: 2, b: null, c: null }],
      [],
    ]);
    const child = migrationHoldingLock(srv.database, "ALTER TABLE t DROP COLUMN b", 300);
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    assert.equal((await reader.read()).value, "locked\n");
    // (node: it waits for the lock in the batch's BEGIN IMMEDIATE, its statements prepared before.)
    assert.deepEqual(await batch(), [[{ a: 1, c: "C1" }], [{ a: 2, c: null }], []]);
    while (!(await reader.read()).done);
    assert.ok((await child.status).success);
    await db.close();
  });

  Deno.test(`${engine}: a write's RETURNING rows after it waited for a migration's lock`, async () => {
    await using srv = await startServer({ engine, logLevel: "error" });
    const db = await srv.client();
    await db.exec("CREATE TABLE t (a, b, c); INSERT INTO t VALUES (1, 'B1', 'C1')");
    const insert = "INSERT INTO t (a, c) VALUES (?, 'C') RETURNING *";
    assert.deepEqual(await db.query(insert, [2]), [{ a: 2, b: null, c: "C" }]);
    assert.deepEqual(await db.query(insert, [3]), [{ a: 3, b: null, c: "C" }]);
    for (
      const [ddl, a, row] of [
        ["ALTER TABLE t DROP COLUMN b", 4, { a: 4, c: "C" }],
        ["ALTER TABLE t RENAME COLUMN c TO cc", 5, null],
        ["ALTER TABLE t ADD COLUMN d DEFAULT 'D'", 6, null],
      ] as const
    ) {
      const child = migrationHoldingLock(srv.database, ddl, 300);
      const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      assert.equal((await reader.read()).value, "locked\n");
      if (row !== null) {
        // node: { a: 4, b: "C", c: null }, c's value under the dropped column's name.
        assert.deepEqual(await db.query(insert, [a]), [row]);
      } else {
        // The statement no longer compiles: SQLite's error, nothing written.
        await assert.rejects(db.query(insert, [a]), /no column named c/);
        assert.deepEqual(
          await db.query("INSERT INTO t (a) VALUES (?) RETURNING *", [a]),
          [a === 5 ? { a, cc: null } : { a, cc: null, d: "D" }],
        );
      }
      while (!(await reader.read()).done);
      assert.ok((await child.status).success);
    }
    await db.close();
  });
}

/** The values of the feed's next table change. */
async function values(feed: Subscription): Promise<unknown[]> {
  return (await takeEvents(feed, 1)).map((e) => e.type === "table" ? e.value : e);
}

Deno.test("ffi: a change feed's row values follow a column another program dropped during the transaction", async () => {
  await using srv = await startServer({ engine: "ffi", logLevel: "error" });
  const db = await srv.client();
  const other = await srv.client();
  await db.exec("CREATE TABLE t (a, b, c)");
  await using feed = await other.subscribe({ tables: ["t"], values: true });
  await db.run("INSERT INTO t VALUES (1, 'B1', 'C1')");
  assert.deepEqual(await values(feed), [{ a: 1, b: "B1", c: "C1" }]);
  await db.transaction(async (tx) => {
    await otherProgram(srv.database, "ALTER TABLE t DROP COLUMN b");
    await tx.run("INSERT INTO t (a, c) VALUES (2, 'C2')");
  });
  // Not { a: 2, b: "C2" }: the value of c under the name of the column dropped.
  assert.deepEqual(await values(feed), [{ a: 2, c: "C2" }]);
  await db.transaction(async (tx) => {
    await otherProgram(srv.database, "ALTER TABLE t ADD COLUMN d DEFAULT 'D'");
    await tx.run("INSERT INTO t (a, c) VALUES (3, 'C3')");
  });
  assert.deepEqual(await values(feed), [{ a: 3, c: "C3", d: "D" }]);
  await feed.close();
  await other.close();
  await db.close();
});
