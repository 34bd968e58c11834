/**
 * The ORM adapters' multi-row inserts against the SQLite library's limit on
 * parameters per statement, which differs between the engines (Debian's
 * 3.40.1: 250,000; node:sqlite's 3.53.2: 32,766), as README's SQLite engines
 * section says: rows × columns up to 32,766 run on either engine; past the
 * engine's own limit a statement fails with `SQLITE_ERROR`
 * `too many SQL variables`, nothing inserted, and the client goes on;
 * chunks within the bound, in one transaction, insert them all.
 */

import assert from "node:assert/strict";
import { Kysely, Migrator, sql } from "npm:kysely@^0.28";
import { count, sql as dsql } from "npm:drizzle-orm@^0.45";
import { integer, sqliteTable, text } from "npm:drizzle-orm@^0.45/sqlite-core";
import { NetsqliteDialect } from "../adapters/kysely.ts";
import { drizzle } from "../adapters/drizzle.ts";
import { connect, SqliteError } from "../client.ts";
import { startServer } from "./_helpers.ts";

/** The portable bound: SQLite's default `SQLITE_MAX_VARIABLE_NUMBER`, node:sqlite's. */
const PORTABLE = 32_766;

const rowsTable = sqliteTable("r", {
  a: integer("a").notNull(),
  b: text("b").notNull(),
  c: integer("c").notNull(),
});

/** The server's limit, as SQLite names it for a parameter number far past any build's. */
async function parameterLimit(client: Awaited<ReturnType<typeof connect>>): Promise<number> {
  const err = await client.get("SELECT ?999999999").then(() => null, (e) => e);
  assert.ok(err instanceof SqliteError, String(err));
  const m = /between \?1 and \?(\d+)/.exec(err.message);
  assert.ok(m !== null, err.message);
  return Number(m[1]);
}

function rows(n: number, from = 0) {
  return Array.from({ length: n }, (_, i) => ({ a: from + i, b: `r${from + i}`, c: i % 7 }));
}

Deno.test("orm: multi-row inserts bind up to 32,766 parameters on either engine; past the engine's limit they fail with too many SQL variables and insert nothing", async () => {
  await using srv = await startServer();
  await using client = await connect(srv.connectOptions);
  const kdb = new Kysely<{ r: { a: number; b: string; c: number } }>({
    dialect: new NetsqliteDialect({ client }),
  });
  const ddb = drizzle(client);
  await client.run("CREATE TABLE r (a INTEGER NOT NULL, b TEXT NOT NULL, c INTEGER NOT NULL)");
  const total = async () => (await ddb.select({ n: count() }).from(rowsTable))[0].n;

  // 10,922 rows × 3 columns = 32,766 parameters: within every engine's limit.
  const fits = Math.floor(PORTABLE / 3);
  const k = await kdb.insertInto("r").values(rows(fits)).executeTakeFirstOrThrow();
  assert.equal(k.numInsertedOrUpdatedRows, BigInt(fits));
  const d = await ddb.insert(rowsTable).values(rows(fits, fits));
  assert.equal(d.changes, fits);
  assert.equal(await total(), 2 * fits);

  const limit = await parameterLimit(client);
  assert.ok(limit >= PORTABLE, `limit ${limit}`);
  // One row more than the engine takes: refused by SQLite, nothing inserted.
  const over = Math.floor(limit / 3) + 1;
  const tooMany = (e: unknown) => {
    const err = (e as { cause?: unknown }).cause ?? e;
    assert.ok(err instanceof SqliteError, String(err));
    assert.equal(err.code, "SQLITE_ERROR");
    assert.match(err.message, /too many SQL variables/);
    return true;
  };
  await assert.rejects(kdb.insertInto("r").values(rows(over)).execute(), tooMany);
  assert.equal(await total(), 2 * fits);
  // One row past the portable bound: refused where the engine takes no more (node:sqlite's
  // 32,766), inserted where it takes more. (Drizzle 0.45 itself overflows the call stack
  // building a statement of about 130,000 parameters, before anything is sent.)
  const past = ddb.insert(rowsTable).values(rows(fits + 1, 900_000)).then(() => {});
  if (limit === PORTABLE) await assert.rejects(past, tooMany);
  else {
    await past;
    await ddb.delete(rowsTable).where(dsql`a >= 900000`);
  }
  assert.equal(await total(), 2 * fits);

  // Chunks within the bound, in one transaction, insert them all (as README advises).
  await kdb.transaction().execute(async (trx) => {
    for (let i = 0; i < over; i += fits) {
      await trx.insertInto("r").values(rows(Math.min(fits, over - i), 100_000 + i)).execute();
    }
  });
  await ddb.transaction(async (tx) => {
    for (let i = 0; i < over; i += fits) {
      await tx.insert(rowsTable).values(rows(Math.min(fits, over - i), 500_000 + i));
    }
  });
  assert.equal(await total(), 2 * fits + 2 * over);
  assert.deepEqual(await ddb.all(dsql`SELECT count(DISTINCT a) FROM r`), [[2 * fits + 2 * over]]);
  await kdb.destroy();
});

Deno.test("kysely: a table rebuild in a migration runs as client.batch with foreignKeys false (disableTransactions), keeping the rows that reference the table; PRAGMA foreign_keys = OFF is refused", async () => {
  await using srv = await startServer();
  await using client = await connect(srv.connectOptions);
  const db = new Kysely<any>({ dialect: new NetsqliteDialect({ client }) });
  await client.exec(
    "CREATE TABLE p (id INTEGER PRIMARY KEY, name TEXT);" +
      "CREATE TABLE c (id INTEGER PRIMARY KEY, p INTEGER REFERENCES p(id) ON DELETE CASCADE);" +
      "INSERT INTO p VALUES (1, NULL); INSERT INTO c VALUES (1, 1);",
  );
  const refused = await new Migrator({
    db,
    provider: {
      getMigrations: () =>
        Promise.resolve({
          "000_pragma": {
            async up(k: Kysely<any>) {
              await sql`PRAGMA foreign_keys = OFF`.execute(k);
            },
          },
        }),
    },
  }).migrateToLatest();
  assert.ok(refused.error instanceof SqliteError, String(refused.error));
  assert.match(refused.error.message, /Cannot set PRAGMA foreign_keys to "OFF"/);

  // SQLite's steps for a column change: new table, copy, drop, rename.
  const rebuild = [
    "CREATE TABLE p_new (id INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT '')",
    "INSERT INTO p_new SELECT id, coalesce(name, '') FROM p",
    "DROP TABLE p",
    "ALTER TABLE p_new RENAME TO p",
  ].map((s) => ({ sql: s }));
  const done = await new Migrator({
    db,
    disableTransactions: true,
    migrationTableName: "kysely_migration_2",
    migrationLockTableName: "kysely_migration_lock_2",
    provider: {
      getMigrations: () =>
        Promise.resolve({
          "001_rebuild": {
            async up() {
              await client.batch(rebuild, { foreignKeys: false });
            },
          },
        }),
    },
  }).migrateToLatest();
  assert.equal(done.error, undefined);
  assert.deepEqual(await client.query("SELECT * FROM c"), [{ id: 1, p: 1 }]); // not cascaded away
  assert.deepEqual(await client.query("SELECT * FROM p"), [{ id: 1, name: "" }]);
  assert.deepEqual(await client.query("PRAGMA foreign_keys"), [{ foreign_keys: 1 }]);
  await db.destroy();
});
