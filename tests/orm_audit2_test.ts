/**
 * Findings of the second ORM adapters' audit, each against a real server
 * through the real `drizzle-orm` / `kysely` packages.
 */

import assert from "node:assert/strict";
import { eq, sql, TransactionRollbackError } from "npm:drizzle-orm@^0.45";
import { integer, sqliteTable, text } from "npm:drizzle-orm@^0.45/sqlite-core";
import { drizzle } from "../adapters/drizzle.ts";
import { connect, ErrorCode, SqliteError } from "../client.ts";
import { delay, startServer, within } from "./_helpers.ts";

const items = sqliteTable("items", {
  id: integer("id").primaryKey(),
  name: text("name").notNull().unique(),
});

async function setup(max: number) {
  // A short busy timeout: a write that waits for the transaction's writer fails soon.
  const srv = await startServer({ busyTimeout: 1000 });
  const client = await connect({ ...srv.connectOptions, max });
  const db = drizzle(client, { schema: { items } });
  await db.run(sql`CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)`);
  return {
    db,
    async [Symbol.asyncDispose]() {
      await client.close();
      await srv[Symbol.asyncDispose]();
    },
  };
}

/** The code of a Drizzle query's error (its `cause`'s) or of a `SqliteError`. */
function codeOf(err: unknown): string | undefined {
  const e = err as { cause?: { code?: string }; code?: string };
  return e.cause?.code ?? e.code;
}

for (const max of [1, 4]) {
  Deno.test(`drizzle (max: ${max}): a statement made through tx after its transaction ended is refused with TX_ENDED, not run in autocommit`, async () => {
    await using t = await setup(max);
    const { db } = t;
    await db.insert(items).values({ name: "taken" });
    let late!: Promise<unknown>;
    // Promise.all rejects at the first failure: the transaction rolls back while the other
    // branch goes on, and makes its next statement through tx afterwards.
    await assert.rejects(
      db.transaction(async (tx) => {
        await tx.insert(items).values({ name: "first" });
        late = (async () => {
          await delay(50);
          await tx.insert(items).values({ name: "late" });
        })();
        await Promise.all([tx.insert(items).values({ name: "taken" }), late]);
      }),
      (err) => codeOf(err) === "SQLITE_CONSTRAINT_UNIQUE",
    );
    await assert.rejects(late, (err) => {
      assert.equal(codeOf(err), ErrorCode.TxEnded);
      assert.ok((err as Error).cause instanceof SqliteError);
      assert.match(String((err as Error).cause), /made through the tx of a db\.transaction\(\)/);
      return true;
    });
    // Nothing of the transaction stays, the late statement neither.
    assert.deepEqual((await db.select().from(items)).map((r) => r.name), ["taken"]);

    // After a commit too, whatever the statement: a builder, raw SQL, a relational query, a
    // query prepared through tx; db from the same place still runs (in autocommit).
    let saved!: Parameters<Parameters<typeof db.transaction>[0]>[0];
    const prepared = await db.transaction(async (tx) => {
      saved = tx;
      await tx.insert(items).values({ name: "kept" });
      return tx.select().from(items).where(eq(items.name, sql.placeholder("n"))).prepare();
    });
    for (
      const after of [
        () => saved.insert(items).values({ name: "after" }),
        () => saved.run(sql`INSERT INTO items (name) VALUES ('after raw')`),
        () => saved.query.items.findMany(),
        () => saved.select().from(items),
        () => prepared.all({ n: "kept" }),
      ]
    ) {
      await assert.rejects(after(), (err) => codeOf(err) === ErrorCode.TxEnded);
    }
    await db.insert(items).values({ name: "through db" });
    assert.deepEqual(
      (await db.select().from(items)).map((r) => r.name).sort(),
      ["kept", "taken", "through db"],
    );
  });

  Deno.test(`drizzle (max: ${max}): tx used by code outside the transaction's callback (a queue's worker) runs in the transaction`, async () => {
    await using t = await setup(max);
    const { db } = t;
    // A worker started before the transaction: its async context is not the callback's.
    const jobs: (() => Promise<void>)[] = [];
    let wake: (() => void) | undefined;
    let stopped = false;
    const worker = (async () => {
      while (!stopped) {
        const job = jobs.shift();
        if (job === undefined) await new Promise<void>((resolve) => wake = resolve);
        else await job();
      }
    })();
    const onWorker = <T>(work: () => Promise<T>): Promise<T> =>
      new Promise<T>((resolve, reject) => {
        jobs.push(() => work().then(resolve, reject));
        wake?.();
      });
    try {
      // Rolled back: the worker's write goes with it; the worker reads the transaction's writes.
      let seen: string[] = [];
      const rolledBack = await within(
        db.transaction(async (tx) => {
          await tx.insert(items).values({ name: "in callback" });
          await onWorker(() => tx.insert(items).values({ name: "by worker" }));
          seen = await onWorker(async () => (await tx.query.items.findMany()).map((r) => r.name));
          tx.rollback();
        }).catch((err) => err),
        10_000,
      );
      assert.ok(rolledBack instanceof TransactionRollbackError, String(rolledBack));
      assert.deepEqual(seen, ["in callback", "by worker"]);
      assert.deepEqual(await db.select().from(items), []);
      // Committed: with it.
      const names = await within(
        db.transaction(async (tx) => {
          await onWorker(() => tx.insert(items).values({ name: "by worker" }));
          return (await tx.select().from(items)).map((r) => r.name);
        }),
        10_000,
      );
      assert.deepEqual(names, ["by worker"]);
      assert.deepEqual((await db.select().from(items)).map((r) => r.name), ["by worker"]);
      // A nested transaction's tx: its savepoint's work, undone with it alone.
      await within(
        db.transaction(async (tx) => {
          await onWorker(() => tx.insert(items).values({ name: "outer" }));
          await assert.rejects(
            tx.transaction(async (inner) => {
              await onWorker(() => inner.insert(items).values({ name: "inner" }));
              assert.equal((await inner.select().from(items)).length, 3);
              throw new Error("undo inner");
            }),
            /undo inner/,
          );
        }),
        10_000,
      );
      assert.deepEqual(
        (await db.select().from(items)).map((r) => r.name).sort(),
        ["by worker", "outer"],
      );
    } finally {
      stopped = true;
      wake?.();
      await worker;
    }
  });
}
