/**
 * The Kysely dialect against a real server, through the real `kysely`
 * package: CRUD with `returning`, bigint results, transactions and
 * savepoints on one reserved connection, streaming, introspection and a
 * migration run by Kysely's `Migrator`.
 */

import assert from "node:assert/strict";
import {
  type Generated,
  Kysely,
  type Migration,
  type MigrationProvider,
  Migrator,
  sql,
} from "npm:kysely@^0.28";
import { NetsqliteDialect } from "../adapters/kysely.ts";
import { type Client, connect, type ConnectOptions, ErrorCode, SqliteError } from "../client.ts";
import { openLink } from "../client/connection.ts";
import { resolveConnectOptions } from "../client/options.ts";
import { Op } from "../protocol/messages.ts";
import { delay, runWithGc, startServer, within } from "./_helpers.ts";

interface Database {
  person: { id: Generated<number>; name: string; balance: number | bigint };
  pet: { id: Generated<number>; owner_id: number; species: string };
}

async function setup(options: { txIdleTimeout?: number } = {}) {
  const srv = await startServer(options);
  const client = await connect(srv.connectOptions); // a pool (max 4), as users get it
  const db = new Kysely<Database>({ dialect: new NetsqliteDialect({ client }) });
  await db.schema.createTable("person")
    .addColumn("id", "integer", (c) => c.primaryKey().autoIncrement())
    .addColumn("name", "text", (c) => c.notNull().unique())
    .addColumn("balance", "integer", (c) => c.notNull().defaultTo(0))
    .execute();
  await db.schema.createTable("pet")
    .addColumn("id", "integer", (c) => c.primaryKey().autoIncrement())
    .addColumn("owner_id", "integer", (c) => c.notNull().references("person.id"))
    .addColumn("species", "text", (c) => c.notNull())
    .execute();
  return {
    srv,
    client,
    db,
    async [Symbol.asyncDispose]() {
      await db.destroy(); // does not close a client it was given
      assert.equal(client.closed, false);
      await client.close();
      await srv[Symbol.asyncDispose]();
    },
  };
}

Deno.test("kysely: insert, select, update, delete; insertId and numAffectedRows are bigint", async () => {
  await using t = await setup();
  const { db } = t;
  const ins = await db.insertInto("person").values([
    { name: "ada", balance: 10 },
    { name: "bob", balance: 20 },
  ]).executeTakeFirstOrThrow();
  assert.equal(ins.insertId, 2n);
  assert.equal(ins.numInsertedOrUpdatedRows, 2n);

  const returned = await db.insertInto("person").values({ name: "cy", balance: 30 })
    .returning(["id", "name"]).executeTakeFirstOrThrow();
  assert.deepEqual(returned, { id: 3, name: "cy" });

  assert.deepEqual(
    await db.selectFrom("person").select(["name", "balance"]).orderBy("id").execute(),
    [{ name: "ada", balance: 10 }, { name: "bob", balance: 20 }, { name: "cy", balance: 30 }],
  );
  const upd = await db.updateTable("person").set({ balance: 0 }).where("balance", ">", 15)
    .executeTakeFirstOrThrow();
  assert.equal(upd.numUpdatedRows, 2n);
  const updRet = await db.updateTable("person").set({ balance: 1 }).where("name", "=", "ada")
    .returning("balance").execute();
  assert.deepEqual(updRet, [{ balance: 1 }]);
  const del = await db.deleteFrom("person").where("name", "=", "cy").executeTakeFirstOrThrow();
  assert.equal(del.numDeletedRows, 1n);
  const delRet = await db.deleteFrom("person").where("name", "=", "bob").returning("id")
    .execute();
  assert.deepEqual(delRet, [{ id: 2 }]);

  // Joins and raw SQL.
  await db.insertInto("pet").values({ owner_id: 1, species: "cat" }).execute();
  assert.deepEqual(
    await db.selectFrom("pet").innerJoin("person", "person.id", "pet.owner_id")
      .select(["person.name", "pet.species"]).execute(),
    [{ name: "ada", species: "cat" }],
  );
  const raw = await sql<{ n: number }>`SELECT count(*) AS n FROM person`.execute(db);
  assert.deepEqual(raw.rows, [{ n: 1 }]);
  const rawWrite = await sql`UPDATE person SET balance = balance + 1`.execute(db);
  assert.equal(rawWrite.numAffectedRows, 1n);
  assert.deepEqual(rawWrite.rows, []);
  const empty = await sql`SELECT name FROM person WHERE 0`.execute(db);
  assert.deepEqual(empty, { rows: [] }); // a reader: rows, no counts

  await assert.rejects(
    db.insertInto("person").values({ name: "ada", balance: 0 }).execute(),
    /UNIQUE constraint failed/,
  );
});

/** The server's request counters, by op name, read over a link of their own. */
async function requestCounts(options: ConnectOptions): Promise<Record<string, number>> {
  const [link] = await openLink(await resolveConnectOptions(options));
  try {
    return (await link.request(Op.Stats, [])).requests as Record<string, number>;
  } finally {
    link.fail(new Error("counted"));
    await link.ended;
  }
}

Deno.test("kysely: a raw sql query is one request when its text says whether it returns rows", async () => {
  await using t = await setup();
  const { db } = t;
  await db.insertInto("person").values([{ name: "ada", balance: 1 }, { name: "bob", balance: 2 }])
    .execute();
  type Case = [query: ReturnType<typeof sql>, expected: object, requests: Record<string, number>];
  const run = (n = 1) => ({ run: n });
  const query = { query: 1 };
  const prepared = { prepare: 1, query: 1, finalize: 1 }; // the statement's columns decide
  const preparedRun = { prepare: 1, run: 1, finalize: 1 };
  const cases: Case[] = [
    [sql`SELECT name FROM person ORDER BY id`, { rows: [{ name: "ada" }, { name: "bob" }] }, query],
    [sql`  -- a comment\n/* and another */ select 1 AS one`, { rows: [{ one: 1 }] }, query],
    [sql`VALUES (1), (2)`, { rows: [{ column1: 1 }, { column1: 2 }] }, query],
    [
      sql`WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s LIMIT 3) SELECT sum(x) AS n FROM s`,
      { rows: [{ n: 6 }] },
      query,
    ],
    [sql`SELECT 'returning' AS word`, { rows: [{ word: "returning" }] }, query],
    [sql`SELECT name FROM person WHERE 0`, { rows: [] }, query],
    [
      sql`INSERT INTO person (name, balance) VALUES (${"cy"}, 3)`,
      { numAffectedRows: 1n, insertId: 3n, rows: [] },
      run(),
    ],
    [
      sql`UPDATE person SET balance = balance + 1 WHERE id < 3`,
      { numAffectedRows: 2n, insertId: 0n, rows: [] },
      run(),
    ],
    [
      sql`WITH n(v) AS (VALUES ('dee'), ('eve')) INSERT INTO person (name) SELECT v FROM n`,
      { numAffectedRows: 2n, insertId: 5n, rows: [] },
      run(),
    ],
    [
      sql`WITH gone(v) AS (SELECT 'eve') DELETE FROM person WHERE name IN gone`,
      { numAffectedRows: 1n, insertId: 0n, rows: [] },
      run(),
    ],
    [sql`CREATE TABLE raw_t (x)`, { numAffectedRows: 0n, insertId: 0n, rows: [] }, run()],
    [sql`REPLACE INTO raw_t VALUES (1)`, { numAffectedRows: 1n, insertId: 1n, rows: [] }, run()],
    // RETURNING, PRAGMA, and what the text does not settle: the prepared statement's columns.
    [
      sql`UPDATE person SET balance = 0 WHERE name = 'ada' RETURNING name`,
      { rows: [{ name: "ada" }] },
      prepared,
    ],
    [
      sql`WITH n(v) AS (SELECT 'fay') INSERT INTO person (name) SELECT v FROM n RETURNING id`,
      { rows: [{ id: 6 }] },
      prepared,
    ],
    [
      sql`UPDATE person SET name = 'returning' WHERE name = 'fay'`,
      { numAffectedRows: 1n, insertId: 0n, rows: [] },
      preparedRun,
    ],
    [sql`PRAGMA user_version`, { rows: [{ user_version: 0 }] }, prepared],
    [sql`PRAGMA user_version = 3`, { numAffectedRows: 0n, insertId: 0n, rows: [] }, preparedRun],
    [sql`PRAGMA user_version`, { rows: [{ user_version: 3 }] }, prepared],
    [sql`WITH replace(a) AS (SELECT 7) SELECT a FROM replace`, { rows: [{ a: 7 }] }, prepared],
    [
      sql`WITH n(v) AS (SELECT 2) REPLACE INTO raw_t SELECT v FROM n`,
      { numAffectedRows: 1n, insertId: 2n, rows: [] },
      preparedRun,
    ],
  ];
  for (const [q, expected, requests] of cases) {
    const what = q.compile(db).sql;
    const before = await requestCounts(t.srv.connectOptions);
    const result = await q.execute(db);
    const after = await requestCounts(t.srv.connectOptions);
    assert.deepEqual(result, expected, what);
    const sent: Record<string, number> = {};
    for (const op of ["query", "run", "prepare", "finalize", "exec", "batch"]) {
      const n = (after[op] ?? 0) - (before[op] ?? 0);
      if (n !== 0) sent[op] = n;
    }
    assert.deepEqual(sent, requests, what);
  }
  // EXPLAIN: rows, in one request.
  const explained = await sql`EXPLAIN QUERY PLAN SELECT * FROM person WHERE id = 1`.execute(db);
  assert.ok(explained.rows.length > 0 && "detail" in (explained.rows[0] as object));
  // Inside a transaction: the same, on its connection.
  await db.transaction().execute(async (trx) => {
    const w = await sql`DELETE FROM person WHERE name = 'bob'`.execute(trx);
    assert.equal(w.numAffectedRows, 1n);
    const r = await sql<{ n: number }>`SELECT count(*) AS n FROM person`.execute(trx);
    assert.deepEqual(r.rows, [{ n: 4 }]);
  });
});

Deno.test("kysely: bigint values keep every bit", async () => {
  await using t = await setup();
  const { db } = t;
  const max = 2n ** 63n - 1n;
  const min = -(2n ** 63n);
  await db.insertInto("person").values([
    { name: "max", balance: max },
    { name: "min", balance: min },
    { name: "safe", balance: 2 ** 53 - 1 },
  ]).execute();
  const rows = await db.selectFrom("person").select("balance").orderBy("id").execute();
  assert.deepEqual(rows.map((r) => r.balance), [max, min, 2 ** 53 - 1]);
  const big = await db.selectFrom("person").select("name").where("balance", "=", max)
    .executeTakeFirst();
  assert.deepEqual(big, { name: "max" });
});

Deno.test("kysely: a transaction that throws rolls back; savepoints undo only their part", async () => {
  await using t = await setup();
  const { db, client } = t;
  await assert.rejects(
    db.transaction().execute(async (trx) => {
      await trx.insertInto("person").values({ name: "ada", balance: 1 }).execute();
      assert.equal((await trx.selectFrom("person").selectAll().execute()).length, 1);
      throw new Error("boom");
    }),
    /boom/,
  );
  assert.deepEqual(await db.selectFrom("person").selectAll().execute(), []);

  const trx = await db.startTransaction().execute();
  await trx.insertInto("person").values({ name: "outer", balance: 1 }).execute();
  const sp = await trx.savepoint("sp1").execute();
  await sp.insertInto("person").values({ name: "inner", balance: 2 }).execute();
  const back = await sp.rollbackToSavepoint("sp1").execute();
  const sp2 = await back.savepoint("sp2").execute();
  await sp2.insertInto("person").values({ name: "kept", balance: 3 }).execute();
  const released = await sp2.releaseSavepoint("sp2").execute();
  // Meanwhile, other callers do not see the uncommitted rows.
  assert.deepEqual(await db.selectFrom("person").selectAll().execute(), []);
  await released.commit().execute();
  assert.deepEqual(
    (await db.selectFrom("person").select("name").orderBy("id").execute()).map((r) => r.name),
    ["outer", "kept"],
  );
  const lost = await db.startTransaction().execute();
  await lost.deleteFrom("person").execute();
  await lost.rollback().execute();
  assert.equal((await db.selectFrom("person").selectAll().execute()).length, 2);
  assert.equal(client.inTransaction, false);
});

Deno.test("kysely: concurrent transactions from two clients stay isolated", async () => {
  await using t = await setup();
  const { db } = t;
  await using other: Client = await connect(t.srv.connectOptions);
  const db2 = new Kysely<Database>({ dialect: new NetsqliteDialect({ client: other }) });
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  let inserted!: () => void;
  const insertedYet = new Promise<void>((r) => inserted = r);
  const a = db.transaction().execute(async (trx) => {
    await trx.insertInto("person").values({ name: "a", balance: 1 }).execute();
    inserted();
    await gate;
    return (await trx.selectFrom("person").selectAll().execute()).length;
  });
  await insertedYet;
  assert.deepEqual(await db.selectFrom("person").selectAll().execute(), []);
  assert.deepEqual(await db2.selectFrom("person").selectAll().execute(), []);
  const b = db2.transaction().execute(async (trx) => {
    const seen = (await trx.selectFrom("person").selectAll().execute()).length;
    await trx.insertInto("person").values({ name: "b", balance: 2 }).execute();
    return seen;
  });
  release();
  assert.equal(await a, 1);
  assert.equal(await b, 1); // b began after a committed: the writer is one
  assert.deepEqual(
    (await db.selectFrom("person").select("name").orderBy("id").execute()).map((r) => r.name),
    ["a", "b"],
  );
  await db2.destroy();
});

Deno.test("kysely: stream() reads through the server cursor in chunks", async () => {
  await using t = await setup();
  const { db } = t;
  await sql`INSERT INTO person (name, balance)
    WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT 2500)
    SELECT 'p' || x, x FROM n`.execute(db);
  let count = 0;
  let sum = 0;
  for await (
    const row of db.selectFrom("person").select(["name", "balance"]).orderBy("id").stream(100)
  ) {
    count++;
    sum += Number(row.balance);
    if (count === 1) assert.deepEqual(row, { name: "p1", balance: 1 });
  }
  assert.equal(count, 2500);
  assert.equal(sum, 2500 * 2501 / 2);
  // Leaving early closes the cursor and gives the connection back.
  for await (const row of db.selectFrom("person").select("name").stream(10)) {
    assert.equal(row.name, "p1");
    break;
  }
  assert.equal((await db.selectFrom("person").select("id").execute()).length, 2500);
});

Deno.test("kysely: more concurrent stream() calls than the client has cursors wait, as Kysely's dialects do", async () => {
  await using t = await setup();
  const { db, client } = t;
  await sql`INSERT INTO person (name, balance)
    WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT 20)
    SELECT 'p' || x, x FROM n`.execute(db);
  // 4 connections × 16 cursors: 64 at once; the rest wait for a stream to end.
  const streamAll = async (i: number) => {
    let sum = 0;
    for await (const row of db.selectFrom("person").select("balance").stream(3)) {
      sum += Number(row.balance);
      if (i % 7 === 0) await delay(1); // some hold their cursor across ticks
    }
    return sum;
  };
  const sums = await within(
    Promise.all(Array.from({ length: 150 }, (_, i) => streamAll(i))),
    20000,
  );
  assert.deepEqual(sums, Array(150).fill(210));
  // Cursors held by other code using the client (open: more rows than a
  // reply carries): nothing of Kysely's to wait for, so a stream past them
  // fails at once with the server's refusal.
  const LONG_QUERY =
    "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT 100000) SELECT x FROM n";
  const held = await Promise.all(
    Array.from({ length: 64 }, async () => {
      const it: AsyncIterator<unknown> = client.iterate(LONG_QUERY)[
        Symbol.asyncIterator
      ]();
      assert.equal((await it.next()).done, false);
      return it;
    }),
  );
  try {
    await assert.rejects(
      within(Array.fromAsync(db.selectFrom("person").select("balance").stream(3)), 5000),
      (err: unknown) =>
        err instanceof SqliteError && err.code === ErrorCode.BadRequest &&
        err.message.startsWith("Too many open cursors"),
    );
  } finally {
    await Promise.all(held.map((it) => it.return?.()));
  }
  assert.equal((await Array.fromAsync(db.selectFrom("person").select("id").stream(5))).length, 20);
});

Deno.test("kysely: Migrator runs migrations and introspection sees them", async () => {
  await using t = await setup();
  const { db } = t;
  const migrations: Record<string, Migration> = {
    "0001_books": {
      async up(db: Kysely<any>) {
        await db.schema.createTable("book")
          .addColumn("id", "integer", (c) => c.primaryKey())
          .addColumn("title", "text", (c) => c.notNull())
          .execute();
        await db.insertInto("book").values({ id: 1, title: "SICP" }).execute();
      },
      async down(db: Kysely<any>) {
        await db.schema.dropTable("book").execute();
      },
    },
    "0002_author": {
      async up(db: Kysely<any>) {
        await db.schema.alterTable("book").addColumn("author", "text").execute();
      },
      async down(db: Kysely<any>) {
        await db.schema.alterTable("book").dropColumn("author").execute();
      },
    },
  };
  const provider: MigrationProvider = { getMigrations: () => Promise.resolve(migrations) };
  const migrator = new Migrator({ db, provider });
  const { error, results } = await migrator.migrateToLatest();
  assert.equal(error, undefined);
  assert.deepEqual(results?.map((r) => [r.migrationName, r.status]), [
    ["0001_books", "Success"],
    ["0002_author", "Success"],
  ]);
  const tables = await db.introspection.getTables();
  const book = tables.find((x) => x.name === "book");
  assert.deepEqual(book?.columns.map((c) => c.name), ["id", "title", "author"]);
  assert.deepEqual(
    await sql`SELECT title, author FROM book`.execute(db).then((r) => r.rows),
    [{ title: "SICP", author: null }],
  );
  // Running again does nothing; migrating down undoes the last one.
  assert.deepEqual((await migrator.migrateToLatest()).results, []);
  const down = await migrator.migrateDown();
  assert.deepEqual(down.results?.map((r) => [r.migrationName, r.direction, r.status]), [
    ["0002_author", "Down", "Success"],
  ]);
  const after = (await db.introspection.getTables()).find((x) => x.name === "book");
  assert.deepEqual(after?.columns.map((c) => c.name), ["id", "title"]);
});

Deno.test("kysely: plain queries run on the shared pool, not behind writes waiting for the writer", async () => {
  await using t = await setup();
  const { db, client } = t;
  assert.equal(client.max, 4);
  // Another client holds the writer: Kysely's writes wait for it.
  await using other = await connect(t.srv.connectOptions);
  const holder = await other.reserve();
  await holder.exec("BEGIN IMMEDIATE");
  let writesDone = 0;
  const writes = Array.from(
    { length: 6 },
    (_, i) =>
      db.insertInto("person").values({ name: `w${i}`, balance: i }).execute().then(() =>
        writesDone++
      ),
  );
  await delay(50);
  // Reads are not held up by the queued writes.
  const read = db.selectFrom("person").select("name").execute();
  const many = Promise.all(
    Array.from({ length: 50 }, () => db.selectFrom("person").selectAll().execute()),
  );
  let streamed = 0;
  const stream = (async () => {
    for await (const _ of db.selectFrom("person").selectAll().stream()) streamed++;
  })();
  const pending = [...writes, read, many, stream];
  try {
    assert.deepEqual(await within(read, 2000), []);
    assert.equal((await within(many, 2000) as unknown[]).length, 50);
    assert.equal(await within(stream, 2000), undefined);
    assert.equal(streamed, 0);
    assert.equal(writesDone, 0);
  } finally {
    await holder.exec("COMMIT");
    holder.release();
    await Promise.allSettled(pending);
  }
  await Promise.all(writes);
  assert.equal((await db.selectFrom("person").selectAll().execute()).length, 6);
});

Deno.test("kysely: a transaction reserves one connection from begin to commit/rollback and gives it back", async () => {
  await using t = await setup();
  const { db, client } = t;
  // More transactions than the pool has connections, one after the other and at
  // once: each gives its connection back (a leak would make the fifth wait forever).
  for (let i = 0; i < 6; i++) {
    await db.transaction().execute((trx) =>
      trx.insertInto("person").values({ name: `s${i}`, balance: i }).execute()
    );
  }
  const all = Promise.all(
    Array.from({ length: 10 }, (_, i) =>
      db.transaction().execute(async (trx) => {
        await trx.insertInto("person").values({ name: `c${i}`, balance: i }).execute();
        if (i % 2 === 1) throw new Error(`undo ${i}`);
      }).catch((e: Error) => e.message)),
  );
  const settled = await within(all, 5000);
  assert.notEqual(settled, "timeout");
  assert.deepEqual(
    (settled as unknown[]).filter((x) => x !== undefined),
    ["undo 1", "undo 3", "undo 5", "undo 7", "undo 9"],
  );
  for (let i = 0; i < 6; i++) {
    const trx = await db.startTransaction().execute();
    await trx.deleteFrom("person").where("name", "=", `s${i}`).execute();
    if (i % 2 === 0) await trx.commit().execute();
    else await trx.rollback().execute();
  }
  assert.deepEqual(
    (await db.selectFrom("person").select("name").orderBy("id").execute()).map((r) => r.name),
    ["s1", "s3", "s5", "c0", "c2", "c4", "c6", "c8"],
  );
  assert.ok(client.connections <= client.max);
  assert.equal(client.inTransaction, false);
});

Deno.test("kysely: stream() inside a transaction reads the transaction's own writes", async () => {
  await using t = await setup();
  const { db } = t;
  const seen = await db.transaction().execute(async (trx) => {
    await sql`INSERT INTO person (name, balance)
      WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT 250)
      SELECT 'p' || x, x FROM n`.execute(trx);
    // Others do not see the uncommitted rows meanwhile.
    assert.deepEqual(await db.selectFrom("person").selectAll().execute(), []);
    const names: string[] = [];
    for await (const row of trx.selectFrom("person").select("name").orderBy("id").stream(100)) {
      names.push(row.name);
    }
    return names;
  });
  assert.equal(seen.length, 250);
  assert.equal(seen[249], "p250");
  const trx = await db.startTransaction().execute();
  await trx.deleteFrom("person").where("balance", ">", 10).execute();
  let n = 0;
  for await (const _ of trx.selectFrom("person").selectAll().stream(3)) n++;
  assert.equal(n, 10);
  await trx.rollback().execute();
  assert.equal((await db.selectFrom("person").selectAll().execute()).length, 250);
});

Deno.test("kysely: raw BEGIN/COMMIT inside db.connection() runs on a connection of its own", async () => {
  await using t = await setup();
  const { db } = t;
  await db.connection().execute(async (conn) => {
    await sql`BEGIN`.execute(conn);
    await conn.insertInto("person").values({ name: "raw", balance: 1 }).execute();
    assert.deepEqual(await db.selectFrom("person").selectAll().execute(), []);
    assert.equal((await conn.selectFrom("person").selectAll().execute()).length, 1);
    await sql`COMMIT`.execute(conn);
    // Kysely's own transaction on the same connection object still works.
    await conn.transaction().execute((trx) =>
      trx.insertInto("person").values({ name: "trx", balance: 2 }).execute()
    );
  });
  assert.deepEqual(
    (await db.selectFrom("person").select("name").orderBy("id").execute()).map((r) => r.name),
    ["raw", "trx"],
  );
  // On the shared pool, outside db.connection(), raw BEGIN cannot leave a transaction open.
  await assert.rejects(sql`COMMIT`.execute(db), /no transaction is active/);
});

Deno.test("kysely: raw BEGIN/COMMIT/END/ROLLBACK inside a transaction are refused before they are sent", async () => {
  await using t = await setup();
  const { db, client } = t;
  const refused = async (p: Promise<unknown>, statement: string): Promise<void> => {
    const err = await p.then(() => null, (e: unknown) => e);
    assert.ok(err instanceof SqliteError, String(err));
    assert.equal(err.code, ErrorCode.TxControl);
    assert.match(err.message, new RegExp(`^Cannot run "${statement}" inside a Kysely transaction`));
  };
  // A raw COMMIT would have kept "one" (and "two", in autocommit) though the callback threw.
  await assert.rejects(
    db.transaction().execute(async (trx) => {
      await trx.insertInto("person").values({ name: "one", balance: 1 }).execute();
      await refused(sql`COMMIT`.execute(trx), "COMMIT");
      await refused(sql`-- done\nEND`.execute(trx), "END");
      await refused(sql`rollback transaction`.execute(trx), "ROLLBACK");
      await refused(sql`BEGIN`.execute(trx), "BEGIN");
      await refused(trx.executeQuery(sql`COMMIT`.compile(trx)), "COMMIT");
      const stream = sql<{ x: number }>`COMMIT`.compile(trx);
      await refused(Array.fromAsync(trx.getExecutor().stream(stream, 10)), "COMMIT");
      await trx.insertInto("person").values({ name: "two", balance: 2 }).execute();
      // Savepoints of the user's own stay allowed.
      await sql`SAVEPOINT mine`.execute(trx);
      await trx.insertInto("person").values({ name: "three", balance: 3 }).execute();
      await sql`ROLLBACK TO mine`.execute(trx);
      await sql`RELEASE mine`.execute(trx);
      assert.equal((await trx.selectFrom("person").selectAll().execute()).length, 2);
      throw new Error("business rule failed");
    }),
    /business rule failed/,
  );
  assert.deepEqual(await db.selectFrom("person").selectAll().execute(), []);
  // Controlled transactions too; a caught refusal leaves the transaction whole.
  const trx = await db.startTransaction().execute();
  await trx.insertInto("person").values({ name: "kept", balance: 1 }).execute();
  await refused(sql`COMMIT`.execute(trx), "COMMIT");
  const sp = await trx.savepoint("sp1").execute();
  await refused(sql`ROLLBACK`.execute(sp), "ROLLBACK");
  await sp.insertInto("person").values({ name: "undone", balance: 2 }).execute();
  const back = await sp.rollbackToSavepoint("sp1").execute();
  await back.commit().execute();
  assert.deepEqual(
    (await db.selectFrom("person").select("name").orderBy("id").execute()).map((r) => r.name),
    ["kept"],
  );
  assert.equal(client.inTransaction, false);
});

const booksThenFailure: Record<string, Migration> = {
  "0001_books": {
    async up(db: Kysely<any>) {
      await db.schema.createTable("book").addColumn("id", "integer", (c) => c.primaryKey())
        .execute();
      await db.insertInto("book").values({ id: 1 }).execute();
    },
  },
  "0002_broken": {
    async up(db: Kysely<any>) {
      await db.schema.createTable("shelf").addColumn("id", "integer").execute();
      await sql`INSERT INTO no_such_table VALUES (1)`.execute(db);
    },
  },
};

Deno.test("kysely: a failing migration leaves nothing of its run behind", async () => {
  await using t = await setup();
  const { db } = t;
  const provider: MigrationProvider = { getMigrations: () => Promise.resolve(booksThenFailure) };
  const { error, results } = await new Migrator({ db, provider }).migrateToLatest();
  assert.match(String(error), /no such table: no_such_table/);
  assert.deepEqual(results?.map((r) => [r.migrationName, r.status]), [
    ["0001_books", "Success"],
    ["0002_broken", "Error"],
  ]);
  // One transaction for the whole run: neither migration's table nor its record stayed.
  const tables = (await db.introspection.getTables()).map((x) => x.name);
  assert.deepEqual(tables.filter((n) => n === "book" || n === "shelf"), []);
  assert.deepEqual(
    await sql`SELECT name FROM kysely_migration`.execute(db).then((r) => r.rows),
    [],
  );
});

Deno.test("kysely: two migrators at once apply each migration exactly once", async () => {
  await using t = await setup();
  const { db } = t;
  await sql`CREATE TABLE seeded (who TEXT)`.execute(db);
  const migrations = (who: string): Record<string, Migration> => ({
    "001_seed": {
      async up(db: Kysely<any>) {
        await db.insertInto("seeded").values({ who }).execute();
        await delay(100); // the other migrator starts meanwhile
      },
    },
    "002_more": {
      async up(db: Kysely<any>) {
        await db.insertInto("seeded").values({ who: `${who} again` }).execute();
      },
    },
  });
  // Two clients (two connections to the server each), as two processes would be.
  await using c1 = await connect(t.srv.connectOptions);
  await using c2 = await connect(t.srv.connectOptions);
  const db1 = new Kysely<any>({ dialect: new NetsqliteDialect({ client: c1 }) });
  const db2 = new Kysely<any>({ dialect: new NetsqliteDialect({ client: c2 }) });
  const run = (k: Kysely<any>, who: string) =>
    new Migrator({
      db: k,
      provider: { getMigrations: () => Promise.resolve(migrations(who)) },
    }).migrateToLatest();
  const [r1, r2] = await Promise.all([run(db1, "one"), run(db2, "two")]);
  assert.equal(r1.error, undefined);
  assert.equal(r2.error, undefined);
  const applied = [...(r1.results ?? []), ...(r2.results ?? [])];
  assert.deepEqual(applied.map((r) => [r.migrationName, r.status]), [
    ["001_seed", "Success"],
    ["002_more", "Success"],
  ]);
  const rows = await sql<{ who: string }>`SELECT who FROM seeded ORDER BY rowid`.execute(db);
  assert.equal(rows.rows.length, 2);
  assert.equal(rows.rows[1].who, `${rows.rows[0].who} again`);
  assert.deepEqual(
    await sql`SELECT name FROM kysely_migration ORDER BY name`.execute(db).then((r) => r.rows),
    [{ name: "001_seed" }, { name: "002_more" }],
  );
  await db1.destroy();
  await db2.destroy();
});

Deno.test("kysely: a COMMIT refused after the lease expired surfaces TX_TIMEOUT, not the rollback's error", async () => {
  await using t = await setup({ txIdleTimeout: 100 });
  const { db, client } = t;
  const failure = await db.transaction().execute(async (trx) => {
    await trx.insertInto("person").values({ name: "late", balance: 1 }).execute();
    await delay(300);
  }).then(() => null, (e: unknown) => e);
  assert.ok(failure instanceof SqliteError, String(failure));
  assert.equal(failure.code, ErrorCode.TxTimeout);
  // A controlled transaction: commit fails the same way, and rollback() then succeeds.
  const trx = await db.startTransaction().execute();
  await trx.insertInto("person").values({ name: "late2", balance: 1 }).execute();
  await delay(300);
  await assert.rejects(trx.commit().execute(), (e: SqliteError) => e.code === ErrorCode.TxTimeout);
  await trx.rollback().execute();
  assert.deepEqual(await db.selectFrom("person").selectAll().execute(), []);
  assert.equal(client.inTransaction, false);
});

Deno.test("kysely: a read only transaction refuses writes; every isolation level is accepted", async () => {
  await using t = await setup();
  const { db, client } = t;
  await db.insertInto("person").values({ name: "ada", balance: 1 }).execute();
  const isReadOnly = (err: unknown) => {
    assert.ok(err instanceof SqliteError, String(err));
    assert.equal(err.code, ErrorCode.ReadOnly);
    assert.match(
      err.message,
      /^Cannot run "(insert into|delete from) .*" in a read only transaction/,
    );
    return true;
  };
  await assert.rejects(
    db.transaction().setAccessMode("read only").execute(async (trx) => {
      assert.equal((await trx.selectFrom("person").selectAll().execute()).length, 1);
      await trx.insertInto("person").values({ name: "ro", balance: 2 }).execute();
    }),
    isReadOnly,
  );
  await assert.rejects(
    db.transaction().setAccessMode("read only").execute((trx) =>
      sql`INSERT INTO person (name) VALUES ('raw')`.execute(trx)
    ),
    (err: SqliteError) => err.code === ErrorCode.ReadOnly,
  );
  // Reads, raw reads, streams and savepoints work in it.
  const read = await db.transaction().setAccessMode("read only").execute(async (trx) => {
    const names = await trx.selectFrom("person").select("name").execute();
    const [{ n }] = (await sql<{ n: number }>`SELECT count(*) AS n FROM person`.execute(trx)).rows;
    let streamed = 0;
    for await (const _ of trx.selectFrom("person").selectAll().stream(1)) streamed++;
    return { names, n, streamed };
  });
  assert.deepEqual(read, { names: [{ name: "ada" }], n: 1, streamed: 1 });
  const trx = await db.startTransaction().setAccessMode("read only").execute();
  const sp = await trx.savepoint("a").execute();
  await assert.rejects(sp.deleteFrom("person").execute(), isReadOnly);
  await (await sp.rollbackToSavepoint("a").execute()).commit().execute();
  // The connection went back with no read-only leftover: the next transaction writes.
  await db.transaction().setAccessMode("read write").execute((trx) =>
    trx.insertInto("person").values({ name: "rw", balance: 3 }).execute()
  );
  for (
    const level of [
      "read uncommitted",
      "read committed",
      "repeatable read",
      "snapshot",
      "serializable",
    ] as const
  ) {
    await db.transaction().setIsolationLevel(level).execute((trx) =>
      trx.updateTable("person").set({ balance: 4 }).where("name", "=", "rw").execute()
    );
  }
  assert.deepEqual(
    await db.selectFrom("person").select(["name", "balance"]).orderBy("id").execute(),
    [{ name: "ada", balance: 1 }, { name: "rw", balance: 4 }],
  );
  assert.equal(client.inTransaction, false);
});

Deno.test("kysely: raw BEGIN in db.connection() holds its connection alone, also with max 1", async () => {
  // With max 1 the shared pool runs raw transaction control (better-sqlite3's
  // way): another caller's insert through db joined the callback's raw
  // transaction, was acknowledged, then undone by its ROLLBACK. It waits for
  // the callback now, as with max 2 and Kysely's own SqliteDialect.
  await using srv = await startServer();
  for (const max of [1, 2]) {
    const client = await connect({ ...srv.connectOptions, max, acquireTimeout: 5000 });
    const db = new Kysely<{ kcb: { who: string } }>({ dialect: new NetsqliteDialect({ client }) });
    try {
      await sql`CREATE TABLE IF NOT EXISTS kcb (who TEXT)`.execute(db);
      await sql`DELETE FROM kcb`.execute(db);
      const events: string[] = []; // in either order: replies of two connections
      const raw = db.connection().execute(async (conn) => {
        await sql`BEGIN`.execute(conn);
        await sql`INSERT INTO kcb VALUES ('conn')`.execute(conn);
        await delay(200);
        await sql`ROLLBACK`.execute(conn);
        events.push("rolled back");
      });
      await delay(50);
      await db.insertInto("kcb").values({ who: "outsider" }).execute();
      events.push("outsider acknowledged");
      await raw;
      assert.deepEqual(events.toSorted(), ["outsider acknowledged", "rolled back"]);
      // The acknowledged insert stayed (it ran after the ROLLBACK, or beside the transaction).
      assert.deepEqual(
        await db.selectFrom("kcb").select("who").execute(),
        [{ who: "outsider" }],
        `max ${max}`,
      );
      // Through db itself a raw BEGIN leaves nothing open, whatever max.
      await sql`BEGIN`.execute(db);
      assert.equal(client.inTransaction, false);
      await assert.rejects(sql`COMMIT`.execute(db), /no transaction is active/);
    } finally {
      await db.destroy();
      await client.close();
    }
  }
});

Deno.test("kysely: the client's own calls and db inside a transaction act as inside its transaction()", async () => {
  // A helper written for the client, called from Kysely's transaction: with
  // max 1 a plain call (or a query through db) joins the transaction (it
  // waited for the connection the transaction holds), a client.transaction()
  // nests in it as a savepoint (it waited for that connection, or for the
  // writer the transaction holds), and reserve() is refused instead of
  // waiting for itself.
  await using srv = await startServer({ busyTimeout: 1500 });
  for (const max of [1, 2, 4]) {
    const client = await connect({ ...srv.connectOptions, max, acquireTimeout: 1500 });
    const db = new Kysely<{ mix: { x: number } }>({ dialect: new NetsqliteDialect({ client }) });
    try {
      await sql`CREATE TABLE IF NOT EXISTS mix (x INTEGER)`.execute(db);
      await sql`DELETE FROM mix`.execute(db);
      const count = "SELECT count(*) FROM mix";
      const seen = await db.transaction().execute(async (trx) => {
        await trx.insertInto("mix").values({ x: 1 }).execute();
        const inside = await client.transaction(async (tx) => {
          await tx.run("INSERT INTO mix VALUES (2)");
          return await tx.values(count);
        });
        const joined = max === 1 ? await client.values(count) : null;
        const throughDb = max === 1
          ? (await db.selectFrom("mix").select("x").execute()).length
          : null;
        const reserved = await client.reserve().then(
          (r) => {
            r.release();
            return "reserved";
          },
          (err) => (err as { code?: string }).code,
        );
        return { inside: inside[0][0], joined: joined?.[0][0] ?? null, throughDb, reserved };
      });
      assert.deepEqual(seen, {
        inside: 2, // the savepoint sees the transaction's own row
        joined: max === 1 ? 2 : null,
        throughDb: max === 1 ? 2 : null,
        reserved: max === 4 ? "reserved" : ErrorCode.TxControl,
      }, `max ${max}`);
      assert.deepEqual(await client.values("SELECT x FROM mix ORDER BY x"), [[1], [2]]);
      // Rolled back with Kysely's transaction: the nested one was a savepoint of it.
      await assert.rejects(
        db.transaction().execute(async () => {
          await client.transaction((tx) => tx.run("INSERT INTO mix VALUES (3)"));
          throw new Error("undo");
        }),
        /undo/,
      );
      assert.deepEqual(await client.values(count), [[2]], `max ${max}`);
      assert.equal(client.inTransaction, false);
    } finally {
      await db.destroy();
      await client.close();
    }
  }
});

Deno.test("kysely: a transaction waits for a client.transaction() nested in it whose undo is in flight: never committed when that undo fails", async () => {
  await using srv = await startServer();
  for (const max of [1, 4]) {
    const client = await connect({ ...srv.connectOptions, max });
    const db = new Kysely<{ mix: { v: string } }>({ dialect: new NetsqliteDialect({ client }) });
    try {
      await client.exec("DROP TABLE IF EXISTS mix; CREATE TABLE mix (v TEXT)");
      const rows = async () => (await client.values("SELECT v FROM mix ORDER BY rowid")).flat();
      for (const end of ["returns", "throws"] as const) {
        const at = `max ${max}, fn ${end}`;
        await client.exec("DELETE FROM mix");
        const thrown = new Error("outer fails");
        let inner!: Promise<unknown>;
        const outer = db.transaction().execute(async (trx) => {
          await trx.insertInto("mix").values({ v: "outer" }).execute();
          await sql`SAVEPOINT mine`.execute(trx);
          const reached = Promise.withResolvers<void>();
          // Not awaited: the callback settles while the nested level sends its ROLLBACK TO, which
          // fails (RELEASE mine ended its savepoint too), and then rolls the whole transaction back.
          inner = client.transaction(async (c) => {
            await c.run("INSERT INTO mix VALUES ('inner')");
            await c.exec("RELEASE mine");
            reached.resolve();
            throw new Error("inner");
          }).then(() => null, (err) => err);
          await reached.promise;
          if (end === "throws") throw thrown;
          return "committed";
        });
        // A transaction right behind it, which a stray ROLLBACK must not reach.
        const next = outer.catch(() => {}).then(() =>
          db.transaction().execute(async (trx) => {
            await trx.insertInto("mix").values({ v: "next 1" }).execute();
            await delay(20);
            await trx.insertInto("mix").values({ v: "next 2" }).execute();
            return "next";
          })
        );
        const [settled, after] = await Promise.allSettled([outer, next]);
        assert.equal(settled.status, "rejected", `${at}: the transaction was not committed`);
        if (end === "throws") assert.equal(settled.reason, thrown, at);
        else assert.match(String(settled.reason), /cannot commit - no transaction is active/, at);
        const error = await inner;
        assert.ok(error instanceof SqliteError, at);
        assert.equal(error.code, ErrorCode.TxUndoFailed, at);
        assert.match(
          error.message,
          /lost its savepoint netsqlite_sp0 .*the whole transaction was rolled back now/,
          at,
        );
        assert.deepEqual(after, { status: "fulfilled", value: "next" }, at);
        assert.deepEqual(await rows(), ["next 1", "next 2"], at);
        assert.equal(client.inTransaction, false, at);
      }
    } finally {
      await db.destroy();
      await client.close();
    }
  }
});

Deno.test("kysely: a transaction whose callback settles while a client.transaction() nested in it still runs rolls both back with TX_NESTED_RUNNING", async () => {
  // As the client's own transaction() (and Drizzle's): committing would keep work the nested
  // function could still undo by throwing, and its later statements would run after the
  // COMMIT or ROLLBACK, in autocommit.
  await using srv = await startServer();
  for (const max of [1, 4]) {
    const client = await connect({ ...srv.connectOptions, max });
    const db = new Kysely<{ mix: { v: string } }>({ dialect: new NetsqliteDialect({ client }) });
    try {
      await client.exec("DROP TABLE IF EXISTS mix; CREATE TABLE mix (v TEXT)");
      const rows = async () => (await client.values("SELECT v FROM mix ORDER BY rowid")).flat();
      const codeOf = (err: unknown) => (err as { code?: string } | undefined)?.code;
      for (const end of ["returns", "throws"] as const) {
        const at = `max ${max}, callback ${end}`;
        await client.exec("DELETE FROM mix");
        const thrown = new Error("outer fails");
        const wrote = Promise.withResolvers<void>();
        const goOn = Promise.withResolvers<void>();
        const late: (string | undefined)[] = [];
        const ran: string[] = [];
        let nested!: Promise<unknown>;
        let queued!: Promise<unknown>;
        const outer = db.transaction().execute(async (trx) => {
          await trx.insertInto("mix").values({ v: "outer" }).execute();
          // Not awaited: still running when the callback settles, and one queued behind it.
          nested = client.transaction(async (c) => {
            ran.push("nested");
            await c.run("INSERT INTO mix VALUES ('nested 1')");
            wrote.resolve();
            await goOn.promise;
            // Sends nothing more: not in autocommit, not in another transaction.
            late.push(codeOf(await c.run("INSERT INTO mix VALUES ('nested 2')").catch((e) => e)));
            late.push(codeOf(await c.transaction(() => Promise.resolve()).catch((e) => e)));
            return "nested done";
          }).catch((err) => err);
          queued = client.transaction(async (c) => {
            ran.push("queued");
            await c.run("INSERT INTO mix VALUES ('queued')");
          }).catch((err) => err);
          await wrote.promise;
          if (end === "throws") throw thrown;
          return "committed";
        });
        const settled = await outer.then(() => null, (err) => err);
        if (end === "throws") assert.equal(settled, thrown, at);
        else {
          assert.equal(codeOf(settled), ErrorCode.TxNestedRunning, at);
          assert.match(
            (settled as Error).message,
            /^Transaction rolled back: its callback settled while a transaction nested in it was still running/,
            at,
          );
        }
        // The connection goes on serving (the next transaction may get it) while the nested
        // function goes on.
        const next = await db.transaction().execute(async (trx) => {
          await trx.insertInto("mix").values({ v: "next" }).execute();
          goOn.resolve();
          return codeOf(await nested);
        });
        assert.equal(next, ErrorCode.TxEnded, at);
        assert.equal(codeOf(await queued), ErrorCode.TxEnded, at);
        assert.deepEqual(late, [ErrorCode.TxEnded, ErrorCode.TxEnded], at);
        assert.deepEqual(ran, ["nested"], at);
        assert.deepEqual(await rows(), ["next"], `${at}: only the later transaction's row`);
        assert.equal(client.inTransaction, false, at);
      }
    } finally {
      await db.destroy();
      await client.close();
    }
  }
});

Deno.test("kysely: client transaction()s nest in a Kysely transaction; a Kysely transaction begun inside a client transaction() does not nest", async () => {
  await using srv = await startServer({ busyTimeout: 300 });
  for (const max of [1, 4]) {
    const client = await connect({ ...srv.connectOptions, max });
    const db = new Kysely<{ mix: { v: string } }>({ dialect: new NetsqliteDialect({ client }) });
    try {
      await client.exec("DROP TABLE IF EXISTS mix; CREATE TABLE mix (v TEXT)");
      const rows = async () => (await client.values("SELECT v FROM mix ORDER BY rowid")).flat();
      // Kysely > client > client: savepoints of Kysely's transaction; a throw undoes its part.
      const result = await db.transaction().execute(async (trx) => {
        await trx.insertInto("mix").values({ v: "kysely" }).execute();
        return await client.transaction(async (c) => {
          await c.run("INSERT INTO mix VALUES ('client')");
          await c.transaction((c2) => c2.run("INSERT INTO mix VALUES ('client 2')"));
          if (max === 1) await client.run("INSERT INTO mix VALUES ('joined')");
          const undone = await c.transaction(async (c2) => {
            await c2.run("INSERT INTO mix VALUES ('undone')");
            throw new Error("undo");
          }).catch((err) => err);
          assert.equal(undone.message, "undo", `max ${max}`);
          return "done";
        });
      });
      assert.equal(result, "done");
      assert.deepEqual(
        await rows(),
        ["kysely", "client", "client 2", ...(max === 1 ? ["joined"] : [])],
        `max ${max}`,
      );

      // Begun inside a client transaction(), it is a transaction of its own: its connection's
      // reserve() is refused (max: 1), or its BEGIN waits for the writer that transaction holds
      // (--busy-timeout).
      await client.exec("DELETE FROM mix");
      const inside = await client.transaction(async (c) => {
        await c.run("INSERT INTO mix VALUES ('client')");
        return await db.transaction().execute((trx) =>
          trx.insertInto("mix").values({ v: "kysely" }).execute()
        );
      }).then(() => null, (err) => err);
      assert.ok(inside instanceof SqliteError, `max ${max}`);
      assert.equal(
        inside.code,
        max === 1 ? ErrorCode.TxControl : ErrorCode.BusyTimeout,
        `max ${max}`,
      );
      assert.deepEqual(await rows(), [], `max ${max}`);
      assert.equal(client.inTransaction, false);
    } finally {
      await db.destroy();
      await client.close();
    }
  }
});

Deno.test("kysely: a rollbackToSavepoint() whose savepoint a RELEASE of an earlier one ended rejects with TX_UNDO_FAILED, and the transaction cannot commit", async () => {
  // As a nested transaction() whose ROLLBACK TO fails: the savepoint's work stays in the
  // transaction, which must then not commit it.
  await using srv = await startServer();
  for (const max of [1, 4]) {
    const client = await connect({ ...srv.connectOptions, max });
    const db = new Kysely<{ mix: { v: string } }>({ dialect: new NetsqliteDialect({ client }) });
    const settle = <T>(p: Promise<T>): Promise<{ value?: T; error?: unknown }> =>
      p.then((value) => ({ value }), (error) => ({ error }));
    try {
      await client.exec("DROP TABLE IF EXISTS mix; CREATE TABLE mix (v TEXT)");
      const at = `max ${max}`;
      const trx = await db.startTransaction().execute();
      await trx.insertInto("mix").values({ v: "outer" }).execute();
      await sql`SAVEPOINT mine`.execute(trx);
      const sp = await trx.savepoint("a").execute();
      await sp.insertInto("mix").values({ v: "savepoint a" }).execute();
      await sql`RELEASE mine`.execute(sp); // ends savepoint "a" too
      const undo = await settle(sp.rollbackToSavepoint("a").execute());
      assert.equal("value" in undo, false, `${at}: the rollback to savepoint rejects`);
      const error = undo.error as SqliteError;
      assert.ok(error instanceof SqliteError, `${at}: ${error}`);
      assert.equal(error.code, ErrorCode.TxUndoFailed, at);
      assert.match(error.message, /savepoint "a" is gone/, at);
      assert.match(String((error.cause as Error)?.message), /no such savepoint/, at);
      // The transaction cannot go on: nothing more is sent, and it does not commit.
      for (
        const [what, p] of [
          ["insert", () => trx.insertInto("mix").values({ v: "after" }).execute()],
          ["raw", () => sql`SELECT 1`.execute(trx)],
          ["savepoint", () => trx.savepoint("b").execute()],
          ["commit", () => trx.commit().execute()],
        ] as const
      ) {
        const got = await settle<unknown>(p());
        assert.equal((got.error as SqliteError)?.code, ErrorCode.TxUndoFailed, `${at}, ${what}`);
      }
      await trx.rollback().execute();
      assert.deepEqual(await client.values("SELECT v FROM mix"), [], at);
      assert.equal(client.inTransaction, false, at);

      // A transaction after it commits as usual.
      await db.transaction().execute((t) => t.insertInto("mix").values({ v: "next" }).execute());
      assert.deepEqual(await client.values("SELECT v FROM mix"), [["next"]], at);
    } finally {
      await db.destroy();
      await client.close();
    }
  }
});

Deno.test("kysely: streams dropped unfinished stop counting once collected, so a stream waiting for room does not wait for ever", async () => {
  const r = JSON.parse(await runWithGc(new URL("./_stream_drop_child.ts", import.meta.url)));
  // Waiting while the dropped streams hold every cursor, as for one still being read.
  assert.equal(r.before, "timeout");
  // Once collected (the client closes their cursors then), the wait ends: it opens, or, when the
  // cursors' close is still on its way, fails with the refusal a stream gets when the cursors are
  // held by other code.
  assert.ok(r.after === "rows 5000" || r.after === "error BAD_REQUEST", JSON.stringify(r));
  assert.equal(r.later, "rows 5000");
});
