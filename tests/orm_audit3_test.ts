/**
 * The ORM adapters used as applications use them (third review): migrations
 * run by several instances at once, and what the earlier reviews did not
 * cover. Real servers on temp sockets, the real `drizzle-orm` and `kysely`.
 */

import assert from "node:assert/strict";
import { Kysely, sql } from "npm:kysely@^0.28";
import { drizzle, migrate } from "../adapters/drizzle.ts";
import { NetsqliteDialect } from "../adapters/kysely.ts";
import { connect, ErrorCode, SqliteError } from "../client.ts";
import { delay, startServer } from "./_helpers.ts";
import { writeMigrations } from "./_drizzle_migrations.ts";

const NODE_ENGINE = Deno.env.get("NETSQLITE_ENGINE") === "node";

/** A statement that keeps SQLite busy for about a second (3 million rows counted). */
const SLOW = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) " +
  "SELECT count(*) FROM c";

Deno.test("drizzle: migrate() started while another instance's longer migration holds the writer returns once it is applied", async () => {
  // The writer is waited for 100 ms at most; the migration takes about a second.
  await using srv = await startServer({ busyTimeout: 100 });
  const folder = await writeMigrations(srv.dir, [
    [
      "0000_backfill",
      `CREATE TABLE done (n INTEGER);--> statement-breakpoint\nINSERT INTO done ${SLOW};`,
    ],
  ]);
  await using a = await connect(srv.connectOptions);
  await using b = await connect(srv.connectOptions);
  await using probe = await connect(srv.connectOptions);
  let settled = false;
  const first = migrate(drizzle(a), { migrationsFolder: folder }).finally(() => settled = true);
  // The second instance starts once the first one's batch holds the writer (a write waits for it).
  for (;;) {
    const busy = await probe.run("CREATE TABLE IF NOT EXISTS probe (x)").then(
      () => false,
      (err) => err instanceof SqliteError && err.code === ErrorCode.BusyTimeout,
    );
    if (busy) break;
    // The node engine runs a statement on the server's main thread: every request waits for it.
    if (settled && NODE_ENGINE) break;
    assert.ok(!settled, "the first migration ended before the probe saw it hold the writer");
    await delay(5);
  }
  const second = migrate(drizzle(b), { migrationsFolder: folder });
  const results = await Promise.allSettled([first, second]);
  assert.deepEqual(
    results.map((r) => r.status),
    ["fulfilled", "fulfilled"],
    String(results.map((r) => (r as PromiseRejectedResult).reason)),
  );
  assert.deepEqual(await a.values("SELECT count(*) FROM done"), [[1]]);
  assert.deepEqual(await a.values("SELECT count(*) FROM __drizzle_migrations"), [[1]]);
});

Deno.test("drizzle: migrate() waiting for a writer held past its deadline fails with BUSY_TIMEOUT naming the run", async () => {
  await using srv = await startServer({ busyTimeout: 100 });
  const folder = await writeMigrations(srv.dir, [["0000_t", "CREATE TABLE t (n INTEGER);"]]);
  await using holder = await connect(srv.connectOptions);
  await using client = await connect(srv.connectOptions);
  // Created before the writer is taken: only the run's batch waits for it.
  await client.run(
    'CREATE TABLE "__drizzle_migrations" (id SERIAL PRIMARY KEY, hash text NOT NULL, created_at numeric)',
  );
  const conn = await holder.reserve();
  try {
    await conn.exec("BEGIN");
    await conn.run("CREATE TABLE other (x)");
    const started = performance.now();
    await assert.rejects(
      migrate(drizzle(client), { migrationsFolder: folder, timeout: 400 }),
      (err: Error) => {
        assert.ok(err instanceof SqliteError, String(err));
        assert.equal(err.code, ErrorCode.BusyTimeout);
        assert.match(
          err.message,
          /^Applying migrations "0000_t" failed, no migration of this run was applied/,
        );
        return true;
      },
    );
    const took = performance.now() - started;
    // It tried again until its deadline (400 ms), then gave up (generous bound for a loaded machine).
    assert.ok(took >= 400 && took < 5_000, `took ${took} ms`);
  } finally {
    await conn.exec("ROLLBACK");
    conn.release();
  }
  assert.deepEqual(await client.values("SELECT count(*) FROM __drizzle_migrations"), [[0]]);
});

Deno.test("kysely: the adapter says it has many connections, so Kysely 0.29 does not run one query at a time", async () => {
  // Kysely 0.29's driver wraps every connection of an adapter whose
  // supportsMultipleConnections is false (its SqliteAdapter's) in one mutex: a
  // query through db would wait for an open controlled transaction (for ever,
  // when the caller commits after it) and for every open stream. The server
  // runs many connections; Kysely 0.28 reads no such property.
  const dialect = new NetsqliteDialect({ client: () => Promise.reject(new Error("unused")) });
  assert.equal(
    (dialect.createAdapter() as { supportsMultipleConnections?: boolean })
      .supportsMultipleConnections,
    true,
  );
  // With 0.28, a query through db runs while a controlled transaction is open.
  await using srv = await startServer();
  await using client = await connect(srv.connectOptions);
  const db = new Kysely<any>({ dialect: new NetsqliteDialect({ client }) });
  await sql`CREATE TABLE t (x INTEGER)`.execute(db);
  const trx = await db.startTransaction().execute();
  await trx.insertInto("t").values({ x: 1 }).execute();
  assert.deepEqual(await db.selectFrom("t").selectAll().execute(), []);
  await trx.commit().execute();
  assert.deepEqual(await db.selectFrom("t").selectAll().execute(), [{ x: 1 }]);
  await db.destroy();
});

Deno.test("kysely: a reserved connection given as the dialect's client is refused at once, not at the first transaction", async () => {
  await using srv = await startServer();
  await using client = await connect(srv.connectOptions);
  const conn = await client.reserve();
  try {
    // Plain queries would run on it; its first transaction failed with
    // "this[#client].reserve is not a function".
    assert.throws(
      () => new NetsqliteDialect({ client: conn as unknown as typeof client }),
      /^TypeError: Invalid option "client": expected a netsqlite Client from connect\(\)/,
    );
    // A function's client is checked when Kysely's first query calls it.
    const db = new Kysely<any>({
      dialect: new NetsqliteDialect({
        client: () => Promise.resolve(conn as unknown as typeof client),
      }),
    });
    await assert.rejects(
      sql`SELECT 1`.execute(db),
      /^TypeError: Invalid option "client": expected a netsqlite Client from connect\(\)/,
    );
    await db.destroy();
  } finally {
    conn.release();
  }
});
