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
} from "kysely";
import { NetsqliteDialect } from "../adapters/kysely.ts";
import { type Client, connect } from "../client.ts";
import { startServer } from "./_helpers.ts";

interface Database {
  person: { id: Generated<number>; name: string; balance: number | bigint };
  pet: { id: Generated<number>; owner_id: number; species: string };
}

async function setup() {
  const srv = await startServer();
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
