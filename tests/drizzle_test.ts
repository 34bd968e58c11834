/**
 * The Drizzle adapter against a real server, through the real
 * `drizzle-orm` package: CRUD with `returning`, relational queries,
 * `db.batch`, transactions on one reserved connection, bigint columns.
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { asc, count, eq, relations, sql } from "npm:drizzle-orm@^0.45";
import {
  blob,
  customType,
  integer,
  type SQLiteColumn,
  sqliteTable,
  text,
} from "npm:drizzle-orm@^0.45/sqlite-core";
import type { SqliteRemoteDatabase } from "npm:drizzle-orm@^0.45/sqlite-proxy";
import { migrate as proxyMigrate } from "npm:drizzle-orm@^0.45/sqlite-proxy/migrator";
import {
  drizzle,
  migrate,
  type NetsqliteDatabase,
  type NetsqliteRunResult,
} from "../adapters/drizzle.ts";
import { connect, ErrorCode, SqliteError } from "../client.ts";
import { delay, startServer } from "./_helpers.ts";
import { writeMigrations } from "./_drizzle_migrations.ts";

const int64 = customType<{ data: bigint; driverData: number | bigint }>({
  dataType: () => "integer",
  toDriver: (value) => value,
  fromDriver: (value) => BigInt(value),
});

const users = sqliteTable("users", {
  id: integer("id").primaryKey({ autoIncrement: true }),
  name: text("name").notNull().unique(),
  balance: int64("balance").notNull(),
  tag: blob("tag", { mode: "bigint" }),
});
const posts = sqliteTable("posts", {
  id: integer("id").primaryKey({ autoIncrement: true }),
  authorId: integer("author_id").notNull().references((): SQLiteColumn => users.id),
  title: text("title").notNull(),
});
const usersRelations = relations(users, ({ many }) => ({ posts: many(posts) }));
const postsRelations = relations(posts, ({ one }) => ({
  author: one(users, { fields: [posts.authorId], references: [users.id] }),
}));
const schema = { users, posts, usersRelations, postsRelations };

const DDL = [
  "CREATE TABLE users (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE, " +
  "balance INTEGER NOT NULL, tag BLOB)",
  "CREATE TABLE posts (id INTEGER PRIMARY KEY AUTOINCREMENT, " +
  "author_id INTEGER NOT NULL REFERENCES users(id), title TEXT NOT NULL)",
];

async function setup(
  options: { txIdleTimeout?: number; maxResultBytes?: number; busyTimeout?: number } = {},
) {
  const srv = await startServer(options);
  const client = await connect(srv.connectOptions); // a pool (max 4), as users get it
  const db = drizzle(client, { schema });
  for (const ddl of DDL) await db.run(sql.raw(ddl));
  return {
    srv,
    client,
    db,
    async [Symbol.asyncDispose]() {
      await client.close();
      await srv[Symbol.asyncDispose]();
    },
  };
}

Deno.test("drizzle: insert, select, update, delete with returning", async () => {
  await using t = await setup();
  const { db } = t;
  const inserted = await db.insert(users).values([
    { name: "ada", balance: 10n },
    { name: "bob", balance: 20n },
  ]).returning();
  assert.deepEqual(inserted, [
    { id: 1, name: "ada", balance: 10n, tag: null },
    { id: 2, name: "bob", balance: 20n, tag: null },
  ]);
  assert.deepEqual(await db.select({ name: users.name }).from(users).orderBy(asc(users.id)), [
    { name: "ada" },
    { name: "bob" },
  ]);
  const one = await db.select().from(users).where(eq(users.name, "bob")).get();
  assert.deepEqual(one, { id: 2, name: "bob", balance: 20n, tag: null });
  assert.equal(await db.select().from(users).where(eq(users.name, "zed")).get(), undefined);

  const updated = await db.update(users).set({ balance: 25n }).where(eq(users.id, 2))
    .returning({ id: users.id, balance: users.balance });
  assert.deepEqual(updated, [{ id: 2, balance: 25n }]);
  const deleted = await db.delete(users).where(eq(users.id, 1)).returning({ name: users.name });
  assert.deepEqual(deleted, [{ name: "ada" }]);

  const run = await db.run(sql`UPDATE users SET balance = balance + 1`);
  assert.equal(run.changes, 1);
  assert.deepEqual(await db.values(sql`SELECT id, name FROM users`), [[2, "bob"]]);
  assert.deepEqual(await db.all(sql`SELECT balance FROM users`), [[26]]);
  assert.deepEqual(await db.select({ n: count() }).from(users), [{ n: 1 }]);
  // A failing statement surfaces the server's typed error.
  await assert.rejects(
    db.insert(users).values({ name: "bob", balance: 1n }),
    (err: Error) => /UNIQUE constraint failed/.test(err.message + String(err.cause)),
  );
});

/** Asserts at compile time that `A` and `B` are the same type. */
type Same<A, B> = (<X>() => X extends A ? 1 : 2) extends (<X>() => X extends B ? 1 : 2) ? true
  : false;
function same<A, B>(_proof: Same<A, B>): void {}

Deno.test("drizzle: run results are typed with changes and lastInsertRowid", async () => {
  // deno check (deno task check, or deno test) compiles what follows: `run`
  // results of db, tx, a query's .run() and a batch item carry `changes` and
  // `lastInsertRowid`, without a cast.
  await using t = await setup();
  const { db, client } = t;
  same<typeof db, NetsqliteDatabase<typeof schema>>(true);
  // Code typed against Drizzle's own proxy database still takes it.
  const legacy: SqliteRemoteDatabase<typeof schema> = db;
  await db.insert(users).values({ name: "ada", balance: 1n });
  const updated = await db.update(users).set({ balance: 2n }).run();
  same<typeof updated, NetsqliteRunResult>(true);
  const changes: number = updated.changes;
  assert.equal(changes, 1);
  const inserted = await db.run(sql`INSERT INTO users (name, balance) VALUES ('bob', 3)`);
  const rowid: number | bigint = inserted.lastInsertRowid;
  assert.deepEqual([inserted.changes, rowid], [1, 2]);
  const [deleted, all] = await db.batch([
    db.delete(users).where(eq(users.name, "bob")),
    db.select({ name: users.name }).from(users),
  ]);
  same<typeof deleted, NetsqliteRunResult>(true);
  assert.equal(deleted.changes, 1);
  assert.deepEqual(all, [{ name: "ada" }]);
  const inTx = await db.transaction(async (tx) => {
    const r = await tx.run(sql`DELETE FROM users`);
    same<typeof r, NetsqliteRunResult>(true);
    return r.changes;
  });
  assert.equal(inTx, 1);
  // migrate() takes either type.
  const folder = await writeMigrations(t.srv.dir, [["0000_x", "CREATE TABLE x (a);"]]);
  await migrate(legacy, { migrationsFolder: folder });
  assert.deepEqual(await client.values("SELECT count(*) FROM x"), [[0]]);
});

Deno.test("drizzle: relational query with nested relations", async () => {
  await using t = await setup();
  const { db } = t;
  const [ada] = await db.insert(users).values({ name: "ada", balance: 1n }).returning();
  await db.insert(posts).values([
    { authorId: ada.id, title: "notes" },
    { authorId: ada.id, title: "engine" },
  ]);
  const found = await db.query.users.findMany({
    with: { posts: { columns: { title: true }, orderBy: (p, { asc }) => [asc(p.id)] } },
  });
  assert.deepEqual(found, [{
    id: ada.id,
    name: "ada",
    balance: 1n,
    tag: null,
    posts: [{ title: "notes" }, { title: "engine" }],
  }]);
  const post = await db.query.posts.findFirst({
    where: eq(posts.title, "engine"),
    with: { author: { columns: { name: true } } },
  });
  assert.deepEqual(post, { id: 2, authorId: ada.id, title: "engine", author: { name: "ada" } });
});

Deno.test("drizzle: db.batch runs atomically and returns each result's shape", async () => {
  await using t = await setup();
  const { db } = t;
  const [inserted, all, first, run] = await db.batch([
    db.insert(users).values({ name: "ada", balance: 5n }).returning({ id: users.id }),
    db.select({ name: users.name }).from(users),
    db.query.users.findFirst({ where: eq(users.name, "ada"), columns: { balance: true } }),
    db.update(users).set({ balance: 6n }),
  ]);
  assert.deepEqual(inserted, [{ id: 1 }]);
  assert.deepEqual(all, [{ name: "ada" }]);
  assert.deepEqual(first, { balance: 5n });
  assert.deepEqual(run, { rows: [], changes: 1, lastInsertRowid: 0 });
  assert.deepEqual(await db.select({ b: users.balance }).from(users), [{ b: 6n }]);
  // A failing statement undoes the whole batch.
  await assert.rejects(db.batch([
    db.insert(users).values({ name: "bob", balance: 1n }),
    db.insert(users).values({ name: "ada", balance: 1n }),
  ]));
  assert.deepEqual(await db.select({ name: users.name }).from(users), [{ name: "ada" }]);
});

Deno.test("drizzle: a transaction that throws rolls back; a nested one uses a savepoint", async () => {
  await using t = await setup();
  const { db, client } = t;
  await assert.rejects(
    db.transaction(async (tx) => {
      await tx.insert(users).values({ name: "ada", balance: 1n });
      assert.equal((await tx.select().from(users)).length, 1);
      throw new Error("boom");
    }),
    /boom/,
  );
  assert.deepEqual(await db.select().from(users), []);

  await db.transaction(async (tx) => {
    await tx.insert(users).values({ name: "outer", balance: 1n });
    await assert.rejects(tx.transaction(async (inner) => {
      await inner.insert(users).values({ name: "inner", balance: 2n });
      inner.rollback();
    }));
    await tx.insert(users).values({ name: "after", balance: 3n });
  });
  assert.deepEqual(await db.select({ name: users.name }).from(users).orderBy(asc(users.id)), [
    { name: "outer" },
    { name: "after" },
  ]);
  await assert.rejects(
    db.transaction(async (tx) => {
      await tx.delete(users);
      tx.rollback();
    }),
  );
  assert.equal((await db.select().from(users)).length, 2);
  // The reserved connection went back to the pool; the shared pool is clean.
  assert.equal(client.inTransaction, false);
});

Deno.test("drizzle: concurrent transactions stay isolated and never mix with other calls", async () => {
  await using t = await setup();
  const { db } = t;
  await using other = await connect(t.srv.connectOptions);
  const db2 = drizzle(other, { schema });

  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  let inserted!: () => void;
  const insertedYet = new Promise<void>((r) => inserted = r);
  const a = db.transaction(async (tx) => {
    await tx.insert(users).values({ name: "a", balance: 1n });
    inserted();
    await gate;
    return (await tx.select().from(users)).length;
  });
  await insertedYet;
  // Calls outside the transaction, from this client and another, do not see its write
  // and do not run inside it.
  assert.deepEqual(await db.select().from(users), []);
  assert.deepEqual(await db2.select().from(users), []);
  const b = db2.transaction(async (tx) => {
    const seen = (await tx.select().from(users)).length;
    await tx.insert(users).values({ name: "b", balance: 2n });
    return seen;
  });
  release();
  assert.equal(await a, 1);
  assert.equal(await b, 1); // b's transaction began after a committed (the writer is one)
  assert.deepEqual(
    (await db.select({ name: users.name }).from(users).orderBy(asc(users.id))).map((r) => r.name),
    ["a", "b"],
  );
});

Deno.test("drizzle: bigint columns keep every bit", async () => {
  await using t = await setup();
  const { db } = t;
  const max = 2n ** 63n - 1n;
  const min = -(2n ** 63n);
  await db.insert(users).values([
    { name: "max", balance: max, tag: max },
    { name: "min", balance: min, tag: min },
    { name: "odd", balance: 2n ** 53n + 1n, tag: 12345678901234567890n },
  ]);
  const rows = await db.select({ balance: users.balance, tag: users.tag }).from(users)
    .orderBy(asc(users.id));
  assert.deepEqual(rows, [
    { balance: max, tag: max },
    { balance: min, tag: min },
    { balance: 2n ** 53n + 1n, tag: 12345678901234567890n },
  ]);
  assert.deepEqual(await db.values(sql`SELECT typeof(balance) FROM users`), [
    ["integer"],
    ["integer"],
    ["integer"],
  ]);
});

/** README's 64-bit column for relational queries: stored as TEXT, so nested `with` keeps it whole. */
const bigintText = customType<{ data: bigint; driverData: string }>({
  dataType: () => "text",
  toDriver: (value) => String(value),
  fromDriver: (value) => BigInt(value),
});

Deno.test("drizzle: a TEXT-stored bigint column round-trips exactly in nested with; INTEGER and BLOB ones do not", async () => {
  await using t = await setup();
  const { db, client } = t;
  const owners = sqliteTable("owners", {
    id: integer("id").primaryKey(),
    credit: bigintText("credit").notNull(),
  });
  const accounts = sqliteTable("accounts", {
    id: integer("id").primaryKey(),
    ownerId: integer("owner_id").notNull(),
    balance: bigintText("balance").notNull(),
  });
  const ownersRelations = relations(owners, ({ many }) => ({ accounts: many(accounts) }));
  const accountsRelations = relations(accounts, ({ one }) => ({
    owner: one(owners, { fields: [accounts.ownerId], references: [owners.id] }),
  }));
  const rdb = drizzle(client, { schema: { owners, accounts, ownersRelations, accountsRelations } });
  await client.exec(
    "CREATE TABLE owners (id INTEGER PRIMARY KEY, credit TEXT NOT NULL);" +
      "CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner_id INTEGER NOT NULL, " +
      "balance TEXT NOT NULL)",
  );
  const values = [2n ** 62n + 7n, 2n ** 63n - 1n, -(2n ** 63n), 2n ** 53n + 1n, 0n];
  await rdb.insert(owners).values({ id: 1, credit: 2n ** 63n - 3n });
  await rdb.insert(accounts).values(
    values.map((balance, i) => ({ id: i + 1, ownerId: 1, balance })),
  );
  const owner = await rdb.query.owners.findFirst({
    with: { accounts: { orderBy: (a, { asc }) => [asc(a.id)] } },
  });
  assert.deepEqual(owner?.accounts.map((a) => a.balance), values);
  assert.equal(owner?.credit, 2n ** 63n - 3n);
  const account = await rdb.query.accounts.findFirst({
    where: eq(accounts.id, 1),
    with: { owner: true },
  });
  assert.deepEqual(account, {
    id: 1,
    ownerId: 1,
    balance: 2n ** 62n + 7n,
    owner: { id: 1, credit: 2n ** 63n - 3n },
  });
  // Nested in a transaction too (the same JSON path, on the reserved connection).
  assert.deepEqual(
    await rdb.transaction(async (tx) =>
      (await tx.query.owners.findFirst({ with: { accounts: true } }))?.accounts[1].balance
    ),
    2n ** 63n - 1n,
  );

  // What README warns of: an INTEGER column (`int64`: fromDriver BigInt) comes
  // back rounded from nested `with` (JSON.parse reads a number), and a BLOB
  // one (`blob({ mode: "bigint" })`) fails the query.
  await db.insert(users).values({ name: "big", balance: 2n ** 62n + 7n, tag: 2n ** 62n + 7n });
  await db.insert(posts).values({ authorId: 1, title: "p" });
  assert.equal((await db.query.users.findFirst())?.balance, 2n ** 62n + 7n); // top level: exact
  const post = await db.query.posts.findFirst({
    with: { author: { columns: { balance: true } } },
  });
  assert.equal(post?.author.balance, 2n ** 62n); // rounded: 4611686018427387904n
  await assert.rejects(
    db.query.posts.findFirst({ with: { author: { columns: { tag: true } } } }),
    (err: Error) => {
      assert.match(String((err.cause as Error)?.message), /JSON cannot hold BLOB values/);
      return true;
    },
  );
});

Deno.test("drizzle: db.batch inside a transaction runs in it and rolls back with it", async () => {
  await using t = await setup();
  const { db } = t;
  await assert.rejects(
    db.transaction(async (tx) => {
      await tx.insert(users).values({ name: "a", balance: 1n });
      const [, seen] = await db.batch([
        db.insert(users).values({ name: "b", balance: 2n }),
        db.select({ name: users.name }).from(users).orderBy(asc(users.id)),
      ]);
      assert.deepEqual(seen, [{ name: "a" }, { name: "b" }]);
      throw new Error("undo both");
    }),
    /undo both/,
  );
  assert.deepEqual(await db.select().from(users), []);
});

Deno.test("drizzle: work started inside a transaction that runs after it ended uses the client", async () => {
  await using t = await setup();
  const { db } = t;
  let later!: Promise<unknown>;
  let nested!: Promise<unknown>;
  const started = new Promise<void>((resolve) => {
    void db.transaction(async (tx) => {
      await tx.insert(users).values({ name: "in tx", balance: 1n });
      // A logger or job queue that writes later, outside the transaction.
      later = new Promise((done, fail) =>
        setTimeout(() => {
          db.insert(users).values({ name: "after tx", balance: 2n }).then(done, fail);
        }, 30)
      );
      nested = new Promise((done, fail) =>
        setTimeout(() => {
          db.transaction(async (tx2) => {
            await tx2.insert(users).values({ name: "own tx", balance: 3n });
            return (await tx2.select().from(users)).length;
          }).then(done, fail);
        }, 60)
      );
      resolve();
    });
  });
  await started;
  const [l, n] = await Promise.allSettled([later, nested]);
  // The insert ran in autocommit, not on the released connection; the
  // transaction ran on a connection of its own.
  assert.equal(l.status, "fulfilled", String((l as PromiseRejectedResult).reason));
  assert.deepEqual(n, { status: "fulfilled", value: 3 });
  assert.deepEqual(
    (await db.select({ name: users.name }).from(users).orderBy(asc(users.id))).map((r) => r.name),
    ["in tx", "after tx", "own tx"],
  );
  // While the transaction is open, the same kind of call still runs inside it.
  await assert.rejects(
    db.transaction(async () => {
      await new Promise<void>((done, fail) =>
        setTimeout(
          () => db.insert(users).values({ name: "inside", balance: 4n }).then(() => done(), fail),
          0,
        )
      );
      throw new Error("undo");
    }),
    /undo/,
  );
  assert.equal((await db.select().from(users).where(eq(users.name, "inside"))).length, 0);
});

Deno.test("drizzle: a COMMIT refused after the lease expired surfaces TX_TIMEOUT, not the rollback's error", async () => {
  await using t = await setup({ txIdleTimeout: 100 });
  const { db, client } = t;
  const failure = await db.transaction(async (tx) => {
    await tx.insert(users).values({ name: "late", balance: 1n });
    await delay(300);
  }).then(() => null, (e: unknown) => e);
  assert.ok(failure instanceof Error);
  const cause = (failure as Error & { cause?: { code?: string } }).cause;
  assert.equal(
    cause?.code ?? (failure as { code?: string }).code,
    ErrorCode.TxTimeout,
    String(failure),
  );
  assert.deepEqual(await db.select().from(users), []);
  assert.equal(client.inTransaction, false);
  // A transaction after it works as usual.
  await db.transaction((tx) => tx.insert(users).values({ name: "next", balance: 2n }));
  assert.equal((await db.select().from(users)).length, 1);
});

/** The `code` of a refusal: Drizzle wraps query errors, the client's error as `cause`. */
function codeOf(err: unknown): string | undefined {
  const e = err as { code?: string; cause?: { code?: string } };
  return e.cause?.code ?? e.code;
}

Deno.test("drizzle: raw BEGIN/COMMIT/END/ROLLBACK inside db.transaction() are refused before they are sent", async () => {
  await using t = await setup();
  const { db, client } = t;
  const refused = async (p: Promise<unknown>, statement: string): Promise<void> => {
    const err = await p.then(() => null, (e: unknown) => e);
    assert.equal(codeOf(err), ErrorCode.TxControl, String(err));
    const cause = (err as { cause?: unknown }).cause ?? err;
    assert.ok(cause instanceof SqliteError);
    assert.match(
      cause.message,
      new RegExp(`^Cannot run "${statement}" inside db\\.transaction\\(\\)`),
    );
  };
  // A helper's COMMIT would have kept row 1 (and row 2, in autocommit) though fn threw.
  await assert.rejects(
    db.transaction(async (tx) => {
      await tx.insert(users).values({ name: "one", balance: 1n });
      await refused(tx.run(sql`COMMIT`), "COMMIT");
      await refused(tx.run(sql`/* done */ end transaction`), "END");
      await refused(tx.all(sql.raw("ROLLBACK")), "ROLLBACK");
      await refused(db.run(sql`BEGIN IMMEDIATE`), "BEGIN");
      await refused(db.batch([db.run(sql`SELECT 1`), db.run(sql`COMMIT`)]), "COMMIT");
      await tx.insert(users).values({ name: "two", balance: 2n });
      await tx.transaction(async (inner) => {
        await refused(inner.run(sql`ROLLBACK TRANSACTION`), "ROLLBACK");
        // Savepoints of the user's own stay allowed.
        await inner.run(sql`SAVEPOINT mine`);
        await inner.insert(users).values({ name: "three", balance: 3n });
        await inner.run(sql`ROLLBACK TO mine`);
        await inner.run(sql`RELEASE mine`);
      });
      assert.equal((await tx.select().from(users)).length, 2);
      throw new Error("business rule failed");
    }),
    /business rule failed/,
  );
  assert.deepEqual(await db.select().from(users), []);
  // A refusal caught inside fn leaves the transaction whole: it commits as usual.
  await db.transaction(async (tx) => {
    await tx.insert(users).values({ name: "kept", balance: 1n });
    await refused(tx.run(sql`COMMIT`), "COMMIT");
    await tx.insert(users).values({ name: "also", balance: 2n });
  });
  assert.deepEqual(await db.select({ name: users.name }).from(users).orderBy(asc(users.id)), [
    { name: "kept" },
    { name: "also" },
  ]);
  assert.equal(client.inTransaction, false);
});

Deno.test("drizzle: .get() has the server step one row, keeping every column of a join", async () => {
  await using t = await setup({ maxResultBytes: 20_000 });
  const { db, client } = t;
  await client.exec(
    "INSERT INTO users (name, balance) WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL " +
      "SELECT x + 1 FROM s LIMIT 3000) SELECT printf('user %05d', x), x FROM s",
  );
  await assert.rejects(db.select().from(users), (err: Error) => {
    assert.equal((err.cause as { code?: string }).code, "RESULT_TOO_LARGE"); // DrizzleQueryError
    return true;
  });
  const first = await db.select().from(users).orderBy(users.id).get();
  assert.deepEqual(first, { id: 1, name: "user 00001", balance: 1n, tag: null });
  await db.insert(posts).values({ authorId: 2, title: "hello" });
  // Both tables have an id column: the row comes back as arrays, every column kept.
  const joined = await db.select({ userId: users.id, postId: posts.id, title: posts.title })
    .from(posts).innerJoin(users, eq(posts.authorId, users.id)).get();
  assert.deepEqual(joined, { userId: 2, postId: 1, title: "hello" });
  assert.equal(await db.select().from(users).where(eq(users.name, "zed")).get(), undefined);
});

Deno.test("drizzle: db.transaction() inside a transaction nests with a savepoint", async () => {
  await using t = await setup();
  const { db, client } = t;
  const names = async () =>
    (await db.select({ name: users.name }).from(users).orderBy(asc(users.id))).map((r) => r.name);
  // A helper that wraps its own work in a transaction, called from code already in one.
  const addUser = (name: string, fail = false) =>
    db.transaction(async (tx) => {
      await tx.insert(users).values({ name, balance: 1n });
      if (fail) throw new Error(`undo ${name}`);
    });

  await db.transaction(async (tx) => {
    await tx.insert(users).values({ name: "outer", balance: 1n });
    await addUser("kept"); // inner commit: kept with the outer one
    await assert.rejects(addUser("undone", true), /undo undone/); // rolls back the inner part only
    assert.deepEqual((await tx.select({ name: users.name }).from(users)).length, 2);
    // Two levels deep, through db each time.
    await db.transaction(async () => {
      await addUser("deep");
      await assert.rejects(addUser("deep undone", true), /undo deep undone/);
    });
  });
  assert.deepEqual(await names(), ["outer", "kept", "deep"]);

  // An outer throw rolls back everything, inner commits included.
  await assert.rejects(
    db.transaction(async (tx) => {
      await tx.insert(users).values({ name: "outer 2", balance: 1n });
      await addUser("inner 2");
      throw new Error("undo all");
    }),
    /undo all/,
  );
  assert.deepEqual(await names(), ["outer", "kept", "deep"]);
  assert.equal(client.inTransaction, false);
});

Deno.test("drizzle: nested transactions started side by side run one after another", async () => {
  await using t = await setup();
  const { db, client } = t;
  const names = async () =>
    (await db.select({ name: users.name }).from(users).orderBy(asc(users.name))).map((r) => r.name);
  // A helper that wraps its own work in a transaction (Drizzle names every
  // savepoint of one level `sp0`: open side by side, one's ROLLBACK TO would
  // undo the other's acknowledged work).
  const addUser = (name: string, fail = false) =>
    db.transaction(async (tx) => {
      await tx.insert(users).values({ name, balance: 1n });
      await delay(5); // the other helper's statements come in between
      await tx.insert(users).values({ name: `${name} 2`, balance: 1n });
      if (fail) throw new Error(`undo ${name}`);
    });

  await db.transaction(async () => {
    const settled = await Promise.allSettled([addUser("a", true), addUser("b")]);
    assert.deepEqual(settled.map((s) => s.status), ["rejected", "fulfilled"]);
  });
  assert.deepEqual(await names(), ["b", "b 2"]);

  await db.transaction(async () => {
    await Promise.all([addUser("c"), addUser("d"), addUser("e")]);
  });
  assert.deepEqual(await names(), ["b", "b 2", "c", "c 2", "d", "d 2", "e", "e 2"]);

  // The same through Drizzle's own tx.transaction(), and both kinds mixed.
  await db.transaction(async (tx) => {
    const inner = (name: string, fail = false) =>
      tx.transaction(async (tx2) => {
        await tx2.insert(users).values({ name, balance: 1n });
        await delay(5);
        if (fail) throw new Error(`undo ${name}`);
      });
    const settled = await Promise.allSettled([
      inner("f"),
      inner("g", true),
      addUser("h", true),
      addUser("i"),
    ]);
    assert.deepEqual(settled.map((s) => s.status), [
      "fulfilled",
      "rejected",
      "rejected",
      "fulfilled",
    ]);
    // An outer tx used from inside a nested function nests there at once (no deadlock).
    await tx.transaction(async () => {
      await inner("j");
    });
  });
  assert.deepEqual(await names(), [
    "b",
    "b 2",
    "c",
    "c 2",
    "d",
    "d 2",
    "e",
    "e 2",
    "f",
    "i",
    "i 2",
    "j",
  ]);
  assert.equal(client.inTransaction, false);
});

Deno.test("drizzle: transactions opened through an outer tx inside a nested one run one after another", async () => {
  await using t = await setup();
  const { db, client } = t;
  const names = async () =>
    (await db.select({ name: users.name }).from(users).orderBy(asc(users.name))).map((r) => r.name);
  type Tx = Parameters<Parameters<typeof db.transaction>[0]>[0];
  /** Inserts `name` through `tx`'s nested transaction; a failing one inserts late, then throws. */
  const add = (tx: Tx, name: string, fail = false) =>
    tx.transaction(async (tx2) => {
      if (fail) await delay(5); // inside the other's savepoint, when both are open
      await tx2.insert(users).values({ name, balance: 1n });
      await delay(fail ? 5 : 20);
      if (fail) throw new Error(`undo ${name}`);
    });
  const statuses = (settled: PromiseSettledResult<unknown>[]) =>
    settled.map((s) => s.status === "fulfilled" ? "fulfilled" : (s.reason as Error).message);

  // The outer tx twice side by side inside t1: both would open `sp0`, and the
  // failing one's `ROLLBACK TO sp0` would undo the other's acknowledged insert.
  await db.transaction(async (tx) => {
    await tx.transaction(async () => {
      assert.deepEqual(
        statuses(await Promise.allSettled([add(tx, "a"), add(tx, "b", true)])),
        ["fulfilled", "undo b"],
      );
    });
  });
  assert.deepEqual(await names(), ["a"]);

  // t1 and the outer tx side by side inside t1 (`sp1` and `sp0` interleaved).
  await db.transaction(async (tx) => {
    await tx.transaction(async (t1) => {
      assert.deepEqual(
        statuses(await Promise.allSettled([add(t1, "c"), add(tx, "d", true)])),
        ["fulfilled", "undo d"],
      );
      assert.deepEqual(
        statuses(await Promise.allSettled([add(tx, "e"), add(t1, "f", true)])),
        ["fulfilled", "undo f"],
      );
      // One level deeper: inside a transaction opened through the outer tx,
      // both outer ones side by side again (it never waits for itself).
      await tx.transaction(async () => {
        assert.deepEqual(
          statuses(
            await Promise.allSettled([add(tx, "g"), add(t1, "h", true), add(t1, "i")]),
          ),
          ["fulfilled", "undo h", "fulfilled"],
        );
      });
    });
  });
  assert.deepEqual(await names(), ["a", "c", "e", "g", "i"]);
  assert.equal(client.inTransaction, false);
});

Deno.test("drizzle: a statement sent beside an open nested transaction waits for it, so its rollback keeps it", async () => {
  await using t = await setup();
  const { db, client } = t;
  const names = async () =>
    (await db.select({ name: users.name }).from(users).orderBy(asc(users.name))).map((r) => r.name);
  const events: string[] = [];
  /** A nested transaction that inserts, lets the other branch run, then fails. */
  const failing = (open: (fn: (tx2: any) => Promise<void>) => Promise<unknown>, name: string) =>
    open(async (tx2) => {
      await tx2.insert(users).values({ name, balance: 1n });
      events.push(`${name} inserted`);
      await delay(30);
      events.push(`${name} throws`);
      throw new Error(`undo ${name}`);
    });

  await db.transaction(async (tx) => {
    const settled = await Promise.allSettled([
      failing((fn) => tx.transaction(fn), "nested"),
      (async () => {
        await delay(5); // the nested transaction's savepoint is open by now
        // Through tx, through db from inside fn, and a batch: each waits for the nested one.
        const [a] = await tx.insert(users).values({ name: "tx", balance: 1n }).returning();
        events.push(`tx acknowledged ${a.name}`);
        await db.insert(users).values({ name: "db", balance: 1n });
        await db.batch([db.insert(users).values({ name: "batch", balance: 1n })]);
      })(),
      failing((fn) => db.transaction(fn), "helper"), // a helper's own db.transaction()
    ]);
    assert.deepEqual(settled.map((s) => s.status), ["rejected", "fulfilled", "rejected"]);
  });
  // Acknowledged writes stay: none ran inside a savepoint that was then rolled back.
  assert.deepEqual(await names(), ["batch", "db", "tx"]);
  assert.deepEqual(events.slice(0, 2), ["nested inserted", "nested throws"]);
  assert.ok(events.indexOf("tx acknowledged tx") > 1, events.join(", "));

  // From inside the nested function, the outer tx runs at once, as part of it.
  await db.transaction(async (tx) => {
    await assert.rejects(
      tx.transaction(async () => {
        await tx.insert(users).values({ name: "inside", balance: 1n });
        throw new Error("undo inside");
      }),
      /undo inside/,
    );
    await tx.insert(users).values({ name: "after", balance: 1n });
  });
  assert.deepEqual(await names(), ["after", "batch", "db", "tx"]);
  assert.equal(client.inTransaction, false);
});

Deno.test("drizzle: every drizzle() over one client joins the transaction of any of them", async () => {
  // Before: another instance's insert waited --busy-timeout for the writer
  // the first one's transaction held, then failed with BUSY_TIMEOUT.
  await using t = await setup({ busyTimeout: 1000 });
  const { db, client } = t;
  const notes = sqliteTable("notes", { id: integer("id").primaryKey(), body: text("body") });
  const other = drizzle(client, { schema: { notes } }); // another module's instance
  await other.run(sql`CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)`);
  const names = async () =>
    (await db.select({ name: users.name }).from(users).orderBy(asc(users.name))).map((r) => r.name);

  const started = performance.now();
  await assert.rejects(
    db.transaction(async (tx) => {
      await tx.insert(users).values({ name: "a", balance: 1n });
      // Sees the transaction's row and writes in it, at once.
      assert.equal((await other.select().from(users)).length, 1);
      await other.insert(users).values({ name: "b", balance: 1n });
      assert.equal((await tx.select().from(users)).length, 2);
      throw new Error("undo both");
    }),
    /undo both/,
  );
  assert.ok(performance.now() - started < 900, `took ${performance.now() - started} ms`);
  assert.deepEqual(await names(), []);

  // Its db.transaction() nests as a savepoint, with its own tx (its schema's db.query).
  await db.transaction(async (tx) => {
    await tx.insert(users).values({ name: "outer", balance: 1n });
    const body = await other.transaction(async (otx) => {
      await otx.insert(notes).values({ id: 1, body: "kept" });
      await otx.insert(users).values({ name: "kept", balance: 1n });
      return (await otx.query.notes.findFirst())?.body;
    });
    assert.equal(body, "kept");
    await assert.rejects(
      other.transaction(async (otx) => {
        await otx.insert(notes).values({ id: 2, body: "undone" });
        await otx.insert(users).values({ name: "undone", balance: 1n });
        throw new Error("undo inner");
      }),
      /undo inner/,
    );
    // Side by side with this instance's nested transactions: one after another.
    const settled = await Promise.allSettled([
      other.transaction(async (otx) => {
        await otx.insert(users).values({ name: "o1", balance: 1n });
        await delay(10);
        throw new Error("undo o1");
      }),
      tx.transaction(async (t2) => {
        await t2.insert(users).values({ name: "t1", balance: 1n });
        await delay(10);
      }),
      other.transaction(async (otx) => {
        await otx.transaction(async (deep) => {
          await deep.insert(users).values({ name: "o2", balance: 1n });
        });
      }),
    ]);
    assert.deepEqual(settled.map((s) => s.status), ["rejected", "fulfilled", "fulfilled"]);
  });
  assert.deepEqual(await names(), ["kept", "o2", "outer", "t1"]);
  assert.deepEqual(await client.values("SELECT id, body FROM notes"), [[1, "kept"]]);

  // An outer throw undoes the other instance's nested commit too.
  await assert.rejects(
    db.transaction(async () => {
      await other.transaction((otx) => otx.insert(notes).values({ id: 3, body: "gone" }));
      throw new Error("undo all");
    }),
    /undo all/,
  );
  assert.deepEqual(await client.values("SELECT count(*) FROM notes"), [[1]]);
  assert.equal(client.inTransaction, false);
});

Deno.test("drizzle: migrate() inside db.transaction() is refused at once with TX_CONTROL", async () => {
  // Before: it waited --busy-timeout for the writer the transaction held, then failed.
  await using t = await setup({ busyTimeout: 1000 });
  const { db, client } = t;
  const folder = await writeMigrations(t.srv.dir, [["0000_x", "CREATE TABLE x (a);"]]);
  for (const by of [db, drizzle(client)]) {
    const started = performance.now();
    await assert.rejects(
      db.transaction(async () => {
        await migrate(by, { migrationsFolder: folder });
      }),
      (err: Error) => {
        assert.ok(err instanceof SqliteError, String(err));
        assert.equal(err.code, ErrorCode.TxControl);
        assert.match(
          err.message,
          /^Cannot run migrate\(\) inside db\.transaction\(\): .*call migrate\(\) outside the transaction/,
        );
        return true;
      },
    );
    assert.ok(performance.now() - started < 500, `took ${performance.now() - started} ms`);
  }
  // Outside, it applies; work the transaction left behind (a timer) may migrate too.
  await migrate(db, { migrationsFolder: folder });
  assert.deepEqual(await client.values("SELECT count(*) FROM __drizzle_migrations"), [[1]]);
});

/** Moves one chunk from `reader` to `ctl` (a stream over a reader already in use). */
async function pump(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  ctl: ReadableStreamDefaultController<Uint8Array>,
): Promise<void> {
  const { value, done } = await reader.read();
  if (done) ctl.close();
  else ctl.enqueue(value);
}

const INIT: [string, string] = [
  "0000_init",
  "CREATE TABLE `accounts` (\n\t`id` integer PRIMARY KEY NOT NULL,\n\t`name` text NOT NULL\n);\n" +
  "--> statement-breakpoint\nCREATE TABLE `entries` (\n\t`id` integer PRIMARY KEY NOT NULL,\n" +
  "\t`account_id` integer NOT NULL REFERENCES `accounts`(`id`) ON DELETE CASCADE\n);\n" +
  "--> statement-breakpoint\nCREATE TABLE `audit` (`n` integer);",
];
// Seed rows: applied twice, it would not fail, it would duplicate them.
const SEED: [string, string] = [
  "0001_seed",
  "INSERT INTO `accounts` (`name`) VALUES ('ada'), ('bob');--> statement-breakpoint\n" +
  "INSERT INTO `entries` (`account_id`) SELECT `id` FROM `accounts`;--> statement-breakpoint\n" +
  "INSERT INTO `audit` VALUES (1);",
];
// drizzle-kit's table rebuild: with foreign keys on, DROP TABLE would cascade to `entries`.
const REBUILD: [string, string] = [
  "0002_rebuild",
  "PRAGMA foreign_keys=OFF;--> statement-breakpoint\n" +
  "CREATE TABLE `__new_accounts` (`id` integer PRIMARY KEY NOT NULL, `name` text NOT NULL, " +
  "`email` text);--> statement-breakpoint\n" +
  'INSERT INTO `__new_accounts`("id", "name") SELECT "id", "name" FROM `accounts`;' +
  "--> statement-breakpoint\nDROP TABLE `accounts`;--> statement-breakpoint\n" +
  "ALTER TABLE `__new_accounts` RENAME TO `accounts`;--> statement-breakpoint\n" +
  "PRAGMA foreign_keys=ON;",
];

async function migrationState(client: Awaited<ReturnType<typeof connect>>) {
  const count = async (table: string) =>
    await client.values(`SELECT count(*) FROM ${table}`).then((r) => r[0][0], () => "missing");
  return {
    applied: await client.values("SELECT hash, created_at FROM __drizzle_migrations ORDER BY 2"),
    accounts: await count("accounts"),
    entries: await count("entries"),
    audit: await count("audit"),
  };
}

Deno.test("drizzle: migrate() run by several clients at once applies each migration once", async () => {
  await using srv = await startServer();
  const folder = await writeMigrations(srv.dir, [INIT]);
  await using first = await connect(srv.connectOptions);
  await migrate(drizzle(first), { migrationsFolder: folder });
  // The app's next version brings two migrations; six instances start at once.
  await writeMigrations(srv.dir, [INIT, SEED, REBUILD]);
  const clients = await Promise.all(
    Array.from({ length: 6 }, () => connect({ ...srv.connectOptions, max: 2 })),
  );
  try {
    const results = await Promise.allSettled(
      clients.map((c) => migrate(drizzle(c), { migrationsFolder: folder })),
    );
    assert.deepEqual(
      results.map((r) => r.status),
      Array(6).fill("fulfilled"),
      String(
        results.map((r) => (r as PromiseRejectedResult).reason),
      ),
    );
  } finally {
    for (const c of clients) await c.close();
  }
  const state = await migrationState(first);
  assert.deepEqual(state.applied.map((r) => r[1]), [
    1_700_000_000_000,
    1_700_000_001_000,
    1_700_000_002_000,
  ]);
  assert.deepEqual([state.accounts, state.entries, state.audit], [2, 2, 1]);
  // The rebuild ran with foreign keys off: no entry was deleted by the cascade, the column is there.
  assert.deepEqual(
    await first.values("SELECT group_concat(name) FROM pragma_table_info('accounts')"),
    [["id,name,email"]],
  );
  // Running again is a no-op.
  await migrate(drizzle(first), { migrationsFolder: folder });
  assert.deepEqual(await migrationState(first), state);
  assert.equal(first.inTransaction, false);
});

Deno.test("drizzle: migrate() from several processes at once applies each migration once", async () => {
  await using srv = await startServer();
  await using client = await connect(srv.connectOptions);
  const folder = await writeMigrations(srv.dir, [INIT]);
  await migrate(drizzle(client), { migrationsFolder: folder });
  await writeMigrations(srv.dir, [INIT, SEED, REBUILD]);
  const adapter = new URL("../adapters/drizzle.ts", import.meta.url).href;
  const clientModule = new URL("../client.ts", import.meta.url).href;
  // Each child connects, says "ready", and migrates when the test says "go" (all at once).
  const code = `import { drizzle, migrate } from ${JSON.stringify(adapter)};
    import { connect } from ${JSON.stringify(clientModule)};
    await using client = await connect(${JSON.stringify(srv.connectOptions)});
    const db = drizzle(client);
    console.log("ready");
    for await (const _ of Deno.stdin.readable) break;
    await migrate(db, { migrationsFolder: ${JSON.stringify(folder)} });
    console.log("migrated");`;
  const children = Array.from({ length: 3 }, () =>
    new Deno.Command(Deno.execPath(), {
      args: ["eval", "--quiet", code],
      cwd: fileURLToPath(new URL("..", import.meta.url)),
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn());
  const dec = new TextDecoder();
  const readers = children.map((c) => c.stdout.getReader());
  for (const r of readers) {
    const { value } = await r.read();
    assert.equal(dec.decode(value).trim(), "ready");
  }
  const go = new TextEncoder().encode("go\n");
  await Promise.all(children.map(async (c) => {
    const w = c.stdin.getWriter();
    await w.write(go);
    await w.close();
  }));
  for (const [i, c] of children.entries()) {
    const [out, err, status] = await Promise.all([
      new Response(new ReadableStream({ pull: (ctl) => pump(readers[i], ctl) })).text(),
      new Response(c.stderr).text(),
      c.status,
    ]);
    assert.equal(out.trim(), "migrated", err);
    assert.equal(status.code, 0);
  }
  const state = await migrationState(client);
  assert.equal(state.applied.length, 3);
  assert.deepEqual([state.accounts, state.entries, state.audit], [2, 2, 1]);
});

Deno.test("drizzle: a failing migration applies nothing of its run and names the migration", async () => {
  await using srv = await startServer();
  const folder = await writeMigrations(srv.dir, [INIT]);
  await using client = await connect(srv.connectOptions);
  const db = drizzle(client);
  await migrate(db, { migrationsFolder: folder });
  await writeMigrations(srv.dir, [
    INIT,
    SEED,
    [
      "0002_bad",
      "CREATE TABLE `more` (`x` integer);\n--> statement-breakpoint\nCREATE TABLE `audit` (`n` integer);",
    ],
    ["0003_later", "CREATE TABLE `later` (`x` integer);"],
  ]);
  const before = await migrationState(client);
  const err = await migrate(db, { migrationsFolder: folder }).then(() => null, (e: unknown) => e);
  assert.ok(err instanceof SqliteError, String(err));
  assert.equal(err.code, "SQLITE_ERROR");
  assert.match(err.message, /^Migration "0002_bad" failed, no migration of this run was applied/);
  assert.match(err.message, /table `audit` already exists/);
  // Nothing of 0001 (before it) or 0002, and 0003 (after it) was not run.
  assert.deepEqual(await migrationState(client), before);
  assert.deepEqual(
    await client.values("SELECT name FROM sqlite_schema WHERE name IN ('more', 'later')"),
    [],
  );
  assert.deepEqual(before.applied.length, 1);
});

Deno.test("drizzle: migrate() takes over from drizzle's sqlite-proxy migrator and back", async () => {
  await using srv = await startServer();
  await using client = await connect(srv.connectOptions);
  const db = drizzle(client);
  const folder = await writeMigrations(srv.dir, [INIT]);
  const viaProxy = () =>
    proxyMigrate(db, async (queries) => {
      await client.batch(queries.map((q) => ({ sql: q })));
    }, { migrationsFolder: folder });
  await viaProxy();
  await writeMigrations(srv.dir, [INIT, SEED]);
  await migrate(db, { migrationsFolder: folder, migrationsSchema: "ignored" });
  await viaProxy(); // finds both applied
  const state = await migrationState(client);
  assert.deepEqual(state.applied.length, 2);
  assert.deepEqual([state.accounts, state.entries, state.audit], [2, 2, 1]);
  // Another table name, and bad arguments.
  const other = await writeMigrations(srv.dir, [["0000_other", "CREATE TABLE other (x);"]], "o");
  await migrate(db, { migrationsFolder: other, migrationsTable: "my migrations" });
  await migrate(db, { migrationsFolder: other, migrationsTable: "my migrations" });
  assert.deepEqual(await client.values('SELECT count(*) FROM "my migrations"'), [[1]]);
  assert.deepEqual(await client.values("SELECT count(*) FROM __drizzle_migrations"), [[2]]);
  await assert.rejects(migrate({} as typeof db, { migrationsFolder: folder }), TypeError);
  await assert.rejects(migrate(db, { migrationsFolder: `${srv.dir}/none` }), /_journal\.json/);
});

Deno.test("drizzle: migrate() skips parts holding only comments and splits files without breakpoints", async () => {
  await using srv = await startServer();
  await using client = await connect(srv.connectOptions);
  const db = drizzle(client);
  const folder = await writeMigrations(srv.dir, [
    // drizzle-kit generate --custom, left as generated
    ["0000_custom", "-- Custom SQL migration file, put your code below! --\n"],
    ["0001_note", "CREATE TABLE `a` (`x` integer);\n--> statement-breakpoint\n-- just a note\n"],
    ["0002_block", "/* a\n block */\n--> statement-breakpoint\nCREATE TABLE `b` (`x` integer);"],
    ["0003_trailing", "CREATE TABLE `c` (`x` integer);\n--> statement-breakpoint\n"],
  ]);
  await migrate(db, { migrationsFolder: folder });
  assert.equal((await migrationState(client)).applied.length, 4);

  // A journal with breakpoints: false: one file of several statements, a
  // trigger's body (its own `;`) and a `;` in a string among them.
  const script = [
    "CREATE TABLE `log` (`n` integer, `note` text);",
    "-- the trigger's body holds statements of its own",
    "CREATE TRIGGER `log_a` AFTER INSERT ON `a` BEGIN",
    "  INSERT INTO `log` VALUES (NEW.x, 'a; b');",
    "  INSERT INTO `log` VALUES (NEW.x * 10, 'END; not yet');",
    "END;",
    "/* seed */ INSERT INTO `a` VALUES (7);",
    "PRAGMA foreign_keys=OFF;",
    "CREATE TABLE `d` (`x` integer);",
  ].join("\n");
  const nobp = await writeMigrations(srv.dir, [["0000_script", script]], "nobp", false);
  await migrate(db, { migrationsFolder: nobp, migrationsTable: "nobp" });
  assert.deepEqual(await client.values("SELECT n, note FROM log ORDER BY n"), [
    [7, "a; b"],
    [70, "END; not yet"],
  ]);
  assert.deepEqual(await client.values("SELECT count(*) FROM nobp"), [[1]]);
  assert.deepEqual(await client.values("SELECT count(*) FROM d"), [[0]]);
  assert.deepEqual(await client.values("PRAGMA foreign_keys"), [[1]]);
});

Deno.test("drizzle: migrate()'s timeout is the run's deadline, instead of the server's statement timeout", async () => {
  await using srv = await startServer({ statementTimeout: 20, logLevel: "error" });
  await using client = await connect(srv.connectOptions);
  const db = drizzle(client);
  // A recursive query SQLite steps for far longer than 20 ms.
  const slow =
    "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 3000000) " +
    "SELECT count(*) FROM c";
  const folder = await writeMigrations(srv.dir, [
    ["0000_init", "CREATE TABLE `t` (`x` integer);"],
    ["0001_slow", `${slow};\n--> statement-breakpoint\nINSERT INTO \`t\` VALUES (1);`],
  ]);
  const err = await migrate(db, { migrationsFolder: folder }).then(() => null, (e: unknown) => e);
  assert.ok(err instanceof SqliteError, String(err));
  assert.equal(err.code, ErrorCode.StatementTimeout);
  assert.match(
    err.message,
    // node:sqlite runs the statement to its end and says how long it ran.
    /^Migration "0001_slow" failed, .*: Statement (stopped after 20 ms|exceeded its 20 ms deadline) for the whole run \(the server's --statement-timeout, or migrate\(\)'s timeout option\)(: it ended \d+ ms past it, as node:sqlite cannot stop a running statement)?$/,
  );
  assert.deepEqual(await client.values("SELECT name FROM sqlite_schema WHERE name = 't'"), []);
  await migrate(db, { migrationsFolder: folder, timeout: 120_000 });
  assert.deepEqual(await client.values("SELECT x FROM t"), [[1]]);
  assert.deepEqual(await client.values("SELECT count(*) FROM __drizzle_migrations"), [[2]]);
  // The client's batch takes the option too; bad values are refused before anything runs.
  const [r] = await client.batch([{ sql: slow }], { timeout: 120_000, arrays: true });
  assert.deepEqual(r.rows, [[3000000]]);
  await assert.rejects(
    migrate(db, { migrationsFolder: folder, timeout: 0 }),
    /Invalid option "timeout": expected a positive number of ms, got 0/,
  );
});

Deno.test("drizzle: the client's own calls inside db.transaction() act as inside its transaction()", async () => {
  // A helper written for the client, called from Drizzle's transaction: with
  // max 1 a plain call joins the transaction (it waited for the connection
  // the transaction holds), a client.transaction() nests in it as a
  // savepoint (it waited for that connection, or for the writer the
  // transaction holds), and reserve() is refused instead of waiting for itself.
  await using srv = await startServer({ busyTimeout: 1500 });
  for (const max of [1, 2, 4]) {
    const client = await connect({ ...srv.connectOptions, max, acquireTimeout: 1500 });
    try {
      const db = drizzle(client);
      await db.run(sql.raw("CREATE TABLE IF NOT EXISTS mix (x INTEGER)"));
      await db.run(sql.raw("DELETE FROM mix"));
      const seen = await db.transaction(async (tx) => {
        await tx.run(sql`INSERT INTO mix VALUES (1)`);
        const inside = await client.transaction(async (ctx) => {
          await ctx.run("INSERT INTO mix VALUES (2)");
          return await ctx.values("SELECT count(*) FROM mix");
        });
        const joined = max === 1 ? await client.values("SELECT count(*) FROM mix") : null;
        const reserved = await client.reserve().then(
          (r) => {
            r.release();
            return "reserved";
          },
          (err) => codeOf(err),
        );
        return { inside: inside[0][0], joined: joined?.[0][0] ?? null, reserved };
      });
      assert.deepEqual(seen, {
        inside: 2, // the savepoint sees the transaction's own row
        joined: max === 1 ? 2 : null,
        reserved: max === 4 ? "reserved" : ErrorCode.TxControl,
      }, `max ${max}`);
      assert.deepEqual(await client.values("SELECT x FROM mix ORDER BY x"), [[1], [2]]);
      // Rolled back with Drizzle's transaction: the nested one was a savepoint of it.
      await assert.rejects(
        db.transaction(async () => {
          await client.transaction((ctx) => ctx.run("INSERT INTO mix VALUES (3)"));
          throw new Error("undo");
        }),
        /undo/,
      );
      assert.deepEqual(await client.values("SELECT count(*) FROM mix"), [[2]], `max ${max}`);
    } finally {
      await client.close();
    }
  }
});

Deno.test("drizzle: the client's own calls made beside an open nested transaction wait for it, and Drizzle's beside the client's", async () => {
  await using srv = await startServer();
  for (const max of [1, 4]) {
    const client = await connect({ ...srv.connectOptions, max });
    try {
      const db = drizzle(client);
      await client.exec("DROP TABLE IF EXISTS mix; CREATE TABLE mix (v TEXT)");
      const rows = async () => (await client.values("SELECT v FROM mix ORDER BY v")).flat();
      const events: string[] = [];
      /** Sends `call` from another branch of fn while the nested transaction is open. */
      const beside = async (name: string, call: () => Promise<unknown>) => {
        await delay(10);
        await call();
        events.push(`${name} acknowledged`);
      };
      const statuses = (settled: PromiseSettledResult<unknown>[]) =>
        settled.map((s) => s.status === "fulfilled" ? "ok" : (s.reason as Error).message);

      // The client's calls made from Drizzle's fn while a nested Drizzle transaction is open.
      await db.transaction(async (tx) => {
        const settled = await Promise.allSettled([
          tx.transaction(async (tx2) => {
            await tx2.run(sql`INSERT INTO mix VALUES ('drizzle nested')`);
            await delay(40);
            events.push("drizzle nested throws");
            throw new Error("undo drizzle nested");
          }),
          beside(
            "client tx",
            () => client.transaction((c) => c.run("INSERT INTO mix VALUES ('client tx')")),
          ),
          // With max: 1 a plain call joins the transaction, at the level of its caller.
          ...(max === 1
            ? [beside("client run", () => client.run("INSERT INTO mix VALUES ('client run')"))]
            : []),
        ]);
        assert.deepEqual(statuses(settled), [
          "undo drizzle nested",
          "ok",
          ...(max === 1 ? ["ok"] : []),
        ]);
      });
      assert.deepEqual(await rows(), max === 1 ? ["client run", "client tx"] : ["client tx"]);
      assert.equal(events[0], "drizzle nested throws", `max ${max}: ${events.join(", ")}`);

      // Drizzle's statements made from its fn while a client.transaction() another branch
      // started there is open.
      events.length = 0;
      await db.transaction(async (tx) => {
        const settled = await Promise.allSettled([
          client.transaction(async (c) => {
            await c.run("INSERT INTO mix VALUES ('client nested')");
            await delay(40);
            events.push("client nested throws");
            throw new Error("undo client nested");
          }),
          beside("tx", () => tx.run(sql`INSERT INTO mix VALUES ('tx')`)),
          beside("db batch", () => db.batch([db.run(sql`INSERT INTO mix VALUES ('db batch')`)])),
          beside(
            "tx nested",
            () => tx.transaction((t2) => t2.run(sql`INSERT INTO mix VALUES ('tx nested')`)),
          ),
        ]);
        assert.deepEqual(statuses(settled), ["undo client nested", "ok", "ok", "ok"]);
      });
      assert.deepEqual(await rows(), [
        ...(max === 1 ? ["client run"] : []),
        "client tx",
        "db batch",
        "tx",
        "tx nested",
      ]);
      assert.equal(events[0], "client nested throws", `max ${max}: ${events.join(", ")}`);

      // Made from inside the nested one's function, each side's calls are part of it: they run
      // at once (no wait for itself) and are undone with it.
      await client.exec("DELETE FROM mix");
      await db.transaction(async (tx) => {
        await assert.rejects(
          tx.transaction(async () => {
            await client.transaction((c) => c.run("INSERT INTO mix VALUES ('undone 1')"));
            if (max === 1) await client.run("INSERT INTO mix VALUES ('undone 2')");
            throw new Error("undo");
          }),
          /undo/,
        );
        await assert.rejects(
          client.transaction(async () => {
            await tx.run(sql`INSERT INTO mix VALUES ('undone 3')`);
            await tx.transaction((t2) => t2.run(sql`INSERT INTO mix VALUES ('undone 4')`));
            throw new Error("undo");
          }),
          /undo/,
        );
        // A Drizzle nested transaction queued behind a client.transaction() that itself uses
        // Drizzle's tx: that one's statements and nested transaction are its own, not queued.
        const settled = await Promise.allSettled([
          client.transaction(async (c) => {
            await delay(20); // the Drizzle nested transaction waits for this one by now
            await tx.run(sql`INSERT INTO mix VALUES ('c1')`);
            await tx.transaction((t2) => t2.run(sql`INSERT INTO mix VALUES ('c2')`));
            await c.run("INSERT INTO mix VALUES ('c3')");
          }),
          beside("n1", () => tx.transaction((t2) => t2.run(sql`INSERT INTO mix VALUES ('n1')`))),
        ]);
        assert.deepEqual(statuses(settled), ["ok", "ok"]);
      });
      assert.deepEqual(await rows(), ["c1", "c2", "c3", "n1"]);
      assert.equal(client.inTransaction, false);
    } finally {
      await client.close();
    }
  }
});

/** Settles `p` into a value to assert on, so that its rejection is never unhandled. */
function outcome<T>(p: Promise<T>): Promise<{ value?: T; error?: unknown }> {
  return p.then((value) => ({ value }), (error) => ({ error }));
}

Deno.test("drizzle: a transaction whose callback settles while a nested one still runs rolls both back with TX_NESTED_RUNNING", async () => {
  await using srv = await startServer();
  for (const max of [1, 4]) {
    const client = await connect({ ...srv.connectOptions, max });
    try {
      const db = drizzle(client);
      await client.exec("DROP TABLE IF EXISTS mix; CREATE TABLE mix (v TEXT)");
      const rows = async () => (await client.values("SELECT v FROM mix ORDER BY rowid")).flat();

      // A tx.transaction() without await that already wrote when fn returned.
      const wrote = Promise.withResolvers<void>();
      const goOn = Promise.withResolvers<void>();
      const late: (string | undefined)[] = [];
      let nested!: Promise<{ value?: unknown; error?: unknown }>;
      const outer = await outcome(db.transaction(async (tx) => {
        await tx.run(sql`INSERT INTO mix VALUES ('outer')`);
        nested = outcome(tx.transaction(async (inner) => {
          await inner.run(sql`INSERT INTO mix VALUES ('inner 1')`);
          wrote.resolve();
          await goOn.promise;
          // Sends nothing more: not in autocommit, not in another transaction.
          late.push(
            codeOf((await outcome(inner.run(sql`INSERT INTO mix VALUES ('inner 2')`))).error),
          );
          late.push(codeOf((await outcome(db.run(sql`INSERT INTO mix VALUES ('inner 3')`))).error));
          late.push(codeOf((await outcome(inner.transaction(() => Promise.resolve()))).error));
          return "nested done";
        }));
        await wrote.promise;
        return "outer done";
      }));
      assert.equal(codeOf(outer.error), ErrorCode.TxNestedRunning, `max ${max}`);
      assert.match(
        (outer.error as Error).message,
        /^Transaction rolled back: its callback settled while a transaction nested in it was still running/,
      );
      assert.equal(client.inTransaction, false);
      // Another transaction holds the connection while the nested fn goes on.
      await db.transaction(async (tx) => {
        await tx.run(sql`INSERT INTO mix VALUES ('next')`);
        goOn.resolve();
        assert.equal(codeOf((await nested).error), ErrorCode.TxEnded, `max ${max}`);
      });
      assert.deepEqual(late, [ErrorCode.TxEnded, ErrorCode.TxEnded, ErrorCode.TxEnded]);
      assert.deepEqual(await rows(), ["next"], `max ${max}: only the later transaction's row`);

      // A helper's db.transaction() still waiting for its turn counts too: it never runs.
      await client.exec("DELETE FROM mix");
      const ran: string[] = [];
      let queued!: Promise<{ value?: unknown; error?: unknown }>;
      const first = Promise.withResolvers<void>();
      const outer2 = await outcome(db.transaction(async () => {
        void outcome(db.transaction(async (a) => {
          ran.push("a");
          await a.run(sql`INSERT INTO mix VALUES ('a')`);
          first.resolve();
          await delay(20);
        }));
        queued = outcome(db.transaction(async (b) => {
          ran.push("b");
          await b.run(sql`INSERT INTO mix VALUES ('b')`);
        }));
        await first.promise;
      }));
      assert.equal(codeOf(outer2.error), ErrorCode.TxNestedRunning);
      assert.equal(codeOf((await queued).error), ErrorCode.TxEnded);
      assert.deepEqual(ran, ["a"]);
      assert.deepEqual(await rows(), []);

      // A client.transaction() left un-awaited in Drizzle's fn: the same.
      const clientWrote = Promise.withResolvers<void>();
      let clientNested!: Promise<{ value?: unknown; error?: unknown }>;
      const outer3 = await outcome(db.transaction(async (tx) => {
        await tx.run(sql`INSERT INTO mix VALUES ('outer')`);
        clientNested = outcome(client.transaction(async (c) => {
          await c.run("INSERT INTO mix VALUES ('client nested')");
          clientWrote.resolve();
          await delay(20);
          await c.run("INSERT INTO mix VALUES ('client late')");
        }));
        await clientWrote.promise;
      }));
      assert.equal(codeOf(outer3.error), ErrorCode.TxNestedRunning);
      assert.equal(codeOf((await clientNested).error), ErrorCode.TxEnded);
      assert.deepEqual(await rows(), []);

      // A nested level that returns while its own nested one runs: only its savepoint is
      // undone, and the outer callback may catch that and commit its own work.
      const deepWrote = Promise.withResolvers<void>();
      const result = await db.transaction(async (tx) => {
        await tx.run(sql`INSERT INTO mix VALUES ('outer')`);
        const middle = await outcome(tx.transaction(async (mid) => {
          await mid.run(sql`INSERT INTO mix VALUES ('middle')`);
          void outcome(mid.transaction(async (deep) => {
            await deep.run(sql`INSERT INTO mix VALUES ('deepest')`);
            deepWrote.resolve();
            await delay(20);
            await deep.run(sql`INSERT INTO mix VALUES ('deepest late')`);
          }));
          await deepWrote.promise;
        }));
        assert.equal(codeOf(middle.error), ErrorCode.TxNestedRunning);
        await tx.run(sql`INSERT INTO mix VALUES ('outer 2')`);
        return "outer done";
      });
      assert.equal(result, "outer done");
      await delay(40); // the deepest fn's late insert was refused meanwhile
      assert.deepEqual(await rows(), ["outer", "outer 2"], `max ${max}`);
      assert.equal(client.inTransaction, false);

      // A tx kept past its transaction opens no savepoint anywhere.
      let kept!: Parameters<Parameters<typeof db.transaction>[0]>[0];
      await db.transaction((tx) => Promise.resolve(void (kept = tx)));
      const after = await outcome(
        kept.transaction((t2) => t2.run(sql`INSERT INTO mix VALUES ('x')`)),
      );
      assert.equal(codeOf(after.error), ErrorCode.TxEnded);
      assert.match(
        (after.error as Error).message,
        /called after the db\.transaction\(\) of that tx settled/,
      );
      assert.equal(client.inTransaction, false);
      assert.deepEqual(await rows(), ["outer", "outer 2"]);
    } finally {
      await client.close();
    }
  }
});

for (const max of [1, 3]) {
  Deno.test(`Drizzle (max: ${max}): statements that waited beside a nested transaction are refused with TX_ENDED when their transaction fails meanwhile, and write nothing`, async () => {
    await using srv = await startServer();
    await using client = await connect({ ...srv.connectOptions, max });
    const t = sqliteTable("t", { x: integer("x") });
    const db = drizzle(client);
    await client.exec("CREATE TABLE t (x)");
    const outcome: Record<string, string> = {};
    const waited: Promise<void>[] = [];
    /** Sends `call` from another branch while the nested transaction is open. */
    const beside = (name: string, call: () => Promise<unknown>) => {
      const p = delay(5).then(call).then(
        () => void (outcome[name] = "acknowledged"),
        // Drizzle wraps a failed query (DrizzleQueryError): its cause carries the code.
        (err) => void (outcome[name] = err.code ?? err.cause?.code ?? String(err)),
      );
      waited.push(p);
      return p;
    };
    await assert.rejects(
      db.transaction(async (tx) => {
        await tx.insert(t).values({ x: 1 });
        await Promise.all([
          tx.transaction(() => delay(60)),
          beside("tx.insert", () => tx.insert(t).values({ x: 2 })),
          beside("db.batch", () => db.batch([db.insert(t).values({ x: 3 })])),
          delay(20).then(() => Promise.reject(new Error("a branch failed"))),
        ]);
      }),
      /a branch failed/,
    );
    await Promise.all(waited);
    assert.deepEqual(outcome, { "tx.insert": "TX_ENDED", "db.batch": "TX_ENDED" });
    assert.deepEqual(await client.values("SELECT x FROM t"), [], "nothing committed");
  });
}

Deno.test("drizzle: a transaction waits for a client.transaction() nested in it whose undo is in flight: never committed when that undo fails", async () => {
  await using srv = await startServer();
  for (const max of [1, 4]) {
    const client = await connect({ ...srv.connectOptions, max });
    try {
      const db = drizzle(client);
      await client.exec("DROP TABLE IF EXISTS mix; CREATE TABLE mix (v TEXT)");
      const rows = async () => (await client.values("SELECT v FROM mix ORDER BY rowid")).flat();
      for (const end of ["returns", "throws"] as const) {
        const at = `max ${max}, fn ${end}`;
        await client.exec("DELETE FROM mix");
        const thrown = new Error("outer fails");
        let inner!: Promise<{ value?: unknown; error?: unknown }>;
        const outer = outcome(db.transaction(async (tx) => {
          await tx.run(sql`INSERT INTO mix VALUES ('outer')`);
          await tx.run(sql`SAVEPOINT mine`);
          const reached = Promise.withResolvers<void>();
          // Not awaited: fn settles while the nested level sends its ROLLBACK TO, which fails
          // (RELEASE mine ended its savepoint too), and then rolls the whole transaction back.
          inner = outcome(client.transaction(async (c) => {
            await c.run("INSERT INTO mix VALUES ('inner')");
            await c.exec("RELEASE mine");
            reached.resolve();
            throw new Error("inner");
          }));
          await reached.promise;
          if (end === "throws") throw thrown;
          return "committed";
        }));
        // A transaction right behind it, which a stray ROLLBACK must not reach.
        const next = outer.then(() =>
          db.transaction(async (tx) => {
            await tx.run(sql`INSERT INTO mix VALUES ('next 1')`);
            await delay(20);
            await tx.run(sql`INSERT INTO mix VALUES ('next 2')`);
            return "next";
          })
        );
        const [settled, after] = await Promise.all([outer, outcome(next)]);
        assert.equal("value" in settled, false, `${at}: the transaction was not committed`);
        if (end === "throws") assert.equal(settled.error, thrown, at);
        else {
          // Its COMMIT found the transaction rolled back (Drizzle wraps the failed query).
          assert.match(
            String((settled.error as { cause?: Error }).cause?.message),
            /cannot commit - no transaction is active/,
            at,
          );
        }
        const { error } = await inner;
        assert.equal(codeOf(error), ErrorCode.TxUndoFailed, at);
        assert.match(
          (error as Error).message,
          /lost its savepoint netsqlite_sp0 .*the whole transaction was rolled back now/,
          at,
        );
        assert.deepEqual(after, { value: "next" }, at);
        assert.deepEqual(await rows(), ["next 1", "next 2"], at);
        assert.equal(client.inTransaction, false, at);
      }
    } finally {
      await client.close();
    }
  }
});

Deno.test("drizzle: a level whose callback settles waits for a nested Drizzle transaction's release or rollback in flight, a client.transaction() around it too", async () => {
  // A tx.transaction() left un-awaited whose callback has settled (it no longer runs) while its
  // `release savepoint` or `rollback to savepoint` is still to be sent: the level it is nested
  // in waits for that, as the client's transaction() waits for a nested level of its own, and
  // then commits. Sent first, a client level's RELEASE would have ended Drizzle's savepoint
  // with its own (its work kept, Drizzle's rollback failing with "no such savepoint"); a
  // Drizzle level took it for a transaction still running (TX_NESTED_RUNNING).
  await using srv = await startServer();
  for (const max of [1, 4]) {
    const client = await connect({ ...srv.connectOptions, max });
    try {
      const db = drizzle(client);
      await client.exec("DROP TABLE IF EXISTS mix; CREATE TABLE mix (v TEXT)");
      const rows = async () => (await client.values("SELECT v FROM mix ORDER BY rowid")).flat();
      for (const end of ["throws", "returns"] as const) {
        /** Starts a Drizzle nested transaction on `tx` and resolves once its callback settled. */
        const settledNested = async (tx: { transaction: typeof db.transaction }) => {
          const settled = Promise.withResolvers<void>();
          const nested = outcome(tx.transaction(async (inner) => {
            await inner.run(sql`INSERT INTO mix VALUES ('nested')`);
            settled.resolve();
            if (end === "throws") throw new Error("undo nested");
            return "nested done";
          }));
          await settled.promise;
          return { nested }; // not awaited: the level's callback settles right away
        };
        const expectNested = (got: { value?: unknown; error?: unknown }, at: string) => {
          if (end === "returns") assert.deepEqual(got, { value: "nested done" }, at);
          else assert.equal((got.error as Error)?.message, "undo nested", at);
        };
        const kept = end === "returns" ? ["nested"] : [];

        // A client.transaction() around it (Drizzle's nested transaction is called from there).
        let at = `max ${max}, nested ${end}, in a client transaction()`;
        await client.exec("DELETE FROM mix");
        let nested!: Promise<{ value?: unknown; error?: unknown }>;
        const result = await db.transaction(async (tx) => {
          await tx.run(sql`INSERT INTO mix VALUES ('outer')`);
          const mid = await outcome(client.transaction(async (c) => {
            await c.run("INSERT INTO mix VALUES ('client')");
            ({ nested } = await settledNested(tx));
            return "client done";
          }));
          assert.deepEqual(mid, { value: "client done" }, at);
          expectNested(await nested, at);
          return "outer done";
        });
        assert.equal(result, "outer done", at);
        assert.deepEqual(await rows(), ["outer", "client", ...kept], at);

        // A Drizzle level around it: not taken for a transaction still running.
        at = `max ${max}, nested ${end}, in a Drizzle level`;
        await client.exec("DELETE FROM mix");
        const outer = await outcome(db.transaction(async (tx) => {
          await tx.run(sql`INSERT INTO mix VALUES ('outer')`);
          ({ nested } = await settledNested(tx));
          return "outer done";
        }));
        assert.deepEqual(outer, { value: "outer done" }, at);
        expectNested(await nested, at);
        assert.deepEqual(await rows(), ["outer", ...kept], at);
        assert.equal(client.inTransaction, false, at);
      }
    } finally {
      await client.close();
    }
  }
});

Deno.test("drizzle: levels mix with the client's transaction()s; a db.transaction() begun inside a client transaction() of its own does not nest", async () => {
  await using srv = await startServer({ busyTimeout: 300 });
  for (const max of [1, 4]) {
    const client = await connect({ ...srv.connectOptions, max });
    try {
      const db = drizzle(client);
      await client.exec("DROP TABLE IF EXISTS mix; CREATE TABLE mix (v TEXT)");
      const rows = async () => (await client.values("SELECT v FROM mix ORDER BY rowid")).flat();
      // Drizzle > client > Drizzle > client: one stack of savepoints; a throw undoes its own part.
      const result = await db.transaction(async (tx) => {
        await tx.run(sql`INSERT INTO mix VALUES ('drizzle')`);
        return await client.transaction(async (c) => {
          await c.run("INSERT INTO mix VALUES ('client')");
          await db.transaction(async (t2) => {
            await t2.run(sql`INSERT INTO mix VALUES ('drizzle 2')`);
            await client.transaction((c3) => c3.run("INSERT INTO mix VALUES ('client 3')"));
            if (max === 1) await client.run("INSERT INTO mix VALUES ('joined')");
          });
          const undone = await outcome(db.transaction(async (t2) => {
            await t2.run(sql`INSERT INTO mix VALUES ('undone 2')`);
            await client.transaction((c3) => c3.run("INSERT INTO mix VALUES ('undone 3')"));
            throw new Error("undo");
          }));
          assert.equal((undone.error as Error)?.message, "undo", `max ${max}`);
          return "done";
        });
      });
      assert.equal(result, "done");
      assert.deepEqual(await rows(), [
        "drizzle",
        "client",
        "drizzle 2",
        "client 3",
        ...(max === 1 ? ["joined"] : []),
      ], `max ${max}`);

      // Begun inside a client transaction() that no Drizzle transaction encloses, it is a
      // transaction of its own: its connection's reserve() is refused (max: 1), or its begin
      // waits for the writer that transaction holds (--busy-timeout).
      await client.exec("DELETE FROM mix");
      const inside = await outcome(client.transaction(async (c) => {
        await c.run("INSERT INTO mix VALUES ('client')");
        return await db.transaction((t2) => t2.run(sql`INSERT INTO mix VALUES ('drizzle')`));
      }));
      assert.equal(
        codeOf(inside.error),
        max === 1 ? ErrorCode.TxControl : ErrorCode.BusyTimeout,
        `max ${max}`,
      );
      assert.deepEqual(await rows(), [], `max ${max}`);
      assert.equal(client.inTransaction, false);
    } finally {
      await client.close();
    }
  }
});

/** Asserts that a nested Drizzle level's rejection is `TX_UNDO_FAILED`, Drizzle's error its cause. */
function assertUndoFailed(got: { value?: unknown; error?: unknown }, at: string): void {
  assert.equal("value" in got, false, `${at}: the nested level rejects`);
  const error = got.error as SqliteError;
  assert.ok(error instanceof SqliteError, `${at}: ${error}`);
  assert.equal(error.code, ErrorCode.TxUndoFailed, at);
  assert.match(error.message, /lost its savepoint sp\d/, at);
  // Drizzle's own error (its failed rollback to savepoint, or, for another database's
  // transaction nested as a savepoint, its rollback sent as that), which wraps SQLite's.
  const cause = error.cause as Error & { cause?: Error };
  assert.match(String(cause?.message), /Failed query: rollback( to savepoint sp\d)?\n/, at);
  assert.match(String(cause?.cause?.message), /no such savepoint/, at);
}

Deno.test("drizzle: a nested Drizzle level whose savepoint a RELEASE inside it ended rejects with TX_UNDO_FAILED, and the Drizzle levels around it cannot commit", async () => {
  await using srv = await startServer();
  for (const max of [1, 4]) {
    const client = await connect({ ...srv.connectOptions, max });
    try {
      const db = drizzle(client);
      await client.exec("DROP TABLE IF EXISTS mix; CREATE TABLE mix (v TEXT)");
      const rows = async () => (await client.values("SELECT v FROM mix ORDER BY rowid")).flat();
      for (const end of ["throws", "returns"] as const) {
        const at = `max ${max}, nested ${end}`;
        await client.exec("DELETE FROM mix");
        let nested!: { value?: unknown; error?: unknown };
        let after!: { value?: unknown; error?: unknown };
        let joined: { value?: unknown; error?: unknown } | undefined;
        let deeper!: { value?: unknown; error?: unknown };
        const outer = await outcome(db.transaction(async (tx) => {
          await tx.run(sql`INSERT INTO mix VALUES ('outer')`);
          await tx.run(sql`SAVEPOINT mine`);
          nested = await outcome(tx.transaction(async (t2) => {
            await t2.run(sql`INSERT INTO mix VALUES ('nested')`);
            await t2.run(sql`RELEASE mine`); // ends Drizzle's savepoint sp0 too
            if (end === "throws") throw new Error("nested fails");
            return "nested done";
          }));
          // The level cannot go on: nothing is sent (the user caught the error).
          after = await outcome(tx.run(sql`INSERT INTO mix VALUES ('after')`));
          if (max === 1) joined = await outcome(client.run("INSERT INTO mix VALUES ('joined')"));
          deeper = await outcome(tx.transaction((t2) => t2.run(sql`INSERT INTO mix VALUES ('x')`)));
          return "outer done";
        }));
        assertUndoFailed(nested, at);
        assert.equal(codeOf(after.error), ErrorCode.TxUndoFailed, at);
        if (joined !== undefined) assert.equal(codeOf(joined.error), ErrorCode.TxUndoFailed, at);
        assert.equal(codeOf(deeper.error), ErrorCode.TxUndoFailed, at);
        assert.equal("value" in outer, false, `${at}: the outer level does not commit`);
        assert.equal(codeOf(outer.error), ErrorCode.TxUndoFailed, at);
        assert.deepEqual(await rows(), [], at);
        assert.equal(client.inTransaction, false, at);

        // Three Drizzle levels, `mine` opened outside the middle one: its rollback to savepoint
        // fails too, and the outermost is poisoned in turn.
        await client.exec("DELETE FROM mix");
        let middle!: { value?: unknown; error?: unknown };
        const top = await outcome(db.transaction(async (tx) => {
          await tx.run(sql`INSERT INTO mix VALUES ('outer')`);
          await tx.run(sql`SAVEPOINT mine`);
          middle = await outcome(tx.transaction(async (t1) => {
            await t1.run(sql`INSERT INTO mix VALUES ('middle')`);
            nested = await outcome(t1.transaction(async (t2) => {
              await t2.run(sql`INSERT INTO mix VALUES ('nested')`);
              await t2.run(sql`RELEASE mine`);
              if (end === "throws") throw new Error("nested fails");
            }));
            return "middle done";
          }));
          return "top done";
        }));
        assertUndoFailed(nested, `${at}, innermost of three`);
        assertUndoFailed(middle, `${at}, middle of three`);
        assert.equal(codeOf(top.error), ErrorCode.TxUndoFailed, `${at}, top of three`);
        assert.deepEqual(await rows(), [], `${at}, three levels`);
        assert.equal(client.inTransaction, false, at);

        // Another database's db.transaction() nested as a savepoint: the same.
        await client.exec("DELETE FROM mix");
        const other = drizzle(client);
        const around = await outcome(db.transaction(async (tx) => {
          await tx.run(sql`INSERT INTO mix VALUES ('outer')`);
          await tx.run(sql`SAVEPOINT mine`);
          nested = await outcome(other.transaction(async (t2) => {
            await t2.run(sql`INSERT INTO mix VALUES ('nested')`);
            await t2.run(sql`RELEASE mine`);
            if (end === "throws") throw new Error("nested fails");
          }));
          return "outer done";
        }));
        assertUndoFailed(nested, `${at}, another database's`);
        assert.equal(codeOf(around.error), ErrorCode.TxUndoFailed, `${at}, another database's`);
        assert.deepEqual(await rows(), [], `${at}, another database's`);
      }
    } finally {
      await client.close();
    }
  }
});

Deno.test("drizzle: a nested Drizzle level whose savepoint is gone poisons the client.transaction() it is nested in, which never commits its leftovers", async () => {
  await using srv = await startServer();
  for (const max of [1, 4]) {
    const client = await connect({ ...srv.connectOptions, max });
    try {
      const db = drizzle(client);
      await client.exec("DROP TABLE IF EXISTS mix; CREATE TABLE mix (v TEXT)");
      const rows = async () => (await client.values("SELECT v FROM mix ORDER BY rowid")).flat();
      for (const end of ["throws", "returns"] as const) {
        // `mine` opened inside the client level: its own savepoint stays, so it is undone as a
        // whole and the Drizzle transaction around it goes on and commits its own work.
        let at = `max ${max}, nested ${end}, mine in the client level`;
        await client.exec("DELETE FROM mix");
        let nested!: { value?: unknown; error?: unknown };
        let after!: { value?: unknown; error?: unknown };
        let mid!: { value?: unknown; error?: unknown };
        const result = await db.transaction(async (tx) => {
          await tx.run(sql`INSERT INTO mix VALUES ('outer')`);
          mid = await outcome(client.transaction(async (c) => {
            await c.run("INSERT INTO mix VALUES ('client')");
            await c.exec("SAVEPOINT mine");
            nested = await outcome(db.transaction(async (t2) => {
              await t2.run(sql`INSERT INTO mix VALUES ('nested')`);
              await t2.run(sql`RELEASE mine`);
              if (end === "throws") throw new Error("nested fails");
              return "nested done";
            }));
            after = await outcome(c.run("INSERT INTO mix VALUES ('after')"));
            return "client done";
          }));
          await tx.run(sql`INSERT INTO mix VALUES ('outer 2')`);
          return "outer done";
        });
        assertUndoFailed(nested, at);
        assert.equal(codeOf(after.error), ErrorCode.TxUndoFailed, at);
        assert.equal("value" in mid, false, `${at}: the client level does not commit`);
        assert.equal(codeOf(mid.error), ErrorCode.TxUndoFailed, at);
        assert.equal(result, "outer done", at);
        assert.deepEqual(await rows(), ["outer", "outer 2"], at);
        assert.equal(client.inTransaction, false, at);

        // `mine` opened in the Drizzle level around the client level: the client level's own
        // savepoint went too, so the whole transaction is rolled back.
        at = `max ${max}, nested ${end}, mine in the Drizzle level`;
        await client.exec("DELETE FROM mix");
        const outer = await outcome(db.transaction(async (tx) => {
          await tx.run(sql`INSERT INTO mix VALUES ('outer')`);
          await tx.run(sql`SAVEPOINT mine`);
          mid = await outcome(client.transaction(async (c) => {
            await c.run("INSERT INTO mix VALUES ('client')");
            nested = await outcome(tx.transaction(async (t2) => {
              await t2.run(sql`INSERT INTO mix VALUES ('nested')`);
              await t2.run(sql`RELEASE mine`);
              if (end === "throws") throw new Error("nested fails");
              return "nested done";
            }));
            return "client done";
          }));
          return "outer done";
        }));
        assertUndoFailed(nested, at);
        assert.equal(codeOf(mid.error), ErrorCode.TxUndoFailed, at);
        assert.equal("value" in outer, false, `${at}: the Drizzle transaction does not commit`);
        assert.deepEqual(await rows(), [], at);
        assert.equal(client.inTransaction, false, at);
      }
    } finally {
      await client.close();
    }
  }
});
