/**
 * Findings of the adapters' fresh-eyes review (2026-12-07), each against a
 * real server: Drizzle's `migrate()`.
 */

import assert from "node:assert/strict";
import { drizzle, migrate } from "../adapters/drizzle.ts";
import { connect } from "../client.ts";
import { startServer } from "./_helpers.ts";
import { writeMigrations } from "./_drizzle_migrations.ts";

const INIT: [string, string] = [
  "0000_init",
  "CREATE TABLE `accounts` (`id` integer PRIMARY KEY NOT NULL, `name` text NOT NULL);\n" +
  "--> statement-breakpoint\nCREATE TABLE `entries` (`id` integer PRIMARY KEY NOT NULL, " +
  "`account_id` integer REFERENCES `accounts`(`id`) ON DELETE CASCADE, " +
  "`owner_id` integer REFERENCES `accounts`(`id`) ON DELETE SET NULL);\n" +
  "--> statement-breakpoint\n" +
  "INSERT INTO `accounts` VALUES (1, 'ada'), (2, 'bob');--> statement-breakpoint\n" +
  "INSERT INTO `entries` VALUES (1, 1, 1), (2, 2, 2), (3, 1, 2);",
];
// drizzle-kit's table rebuild: foreign keys off around it.
const REBUILD: [string, string] = [
  "0001_rebuild",
  "PRAGMA foreign_keys=OFF;--> statement-breakpoint\n" +
  "CREATE TABLE `__new_accounts` (`id` integer PRIMARY KEY NOT NULL, `name` text NOT NULL, " +
  "`email` text);--> statement-breakpoint\n" +
  'INSERT INTO `__new_accounts`("id", "name") SELECT "id", "name" FROM `accounts`;' +
  "--> statement-breakpoint\nDROP TABLE `accounts`;--> statement-breakpoint\n" +
  "ALTER TABLE `__new_accounts` RENAME TO `accounts`;--> statement-breakpoint\n" +
  "PRAGMA foreign_keys=ON;",
];
// A later data migration that relies on the foreign keys' actions.
const CLEANUP: [string, string] = [
  "0002_cleanup",
  "DELETE FROM `accounts` WHERE `name` = 'bob';",
];

async function entries(folder: string, oneByOne: boolean): Promise<unknown> {
  await using srv = await startServer();
  await using client = await connect(srv.connectOptions);
  const db = drizzle(client);
  const all = [INIT, REBUILD, CLEANUP];
  const steps = oneByOne ? all.map((_, i) => all.slice(0, i + 1)) : [all];
  for (const step of steps) {
    await migrate(db, { migrationsFolder: await writeMigrations(srv.dir, step, folder) });
  }
  return {
    entries: await client.values("SELECT id, account_id, owner_id FROM entries ORDER BY id"),
    applied: (await client.values("SELECT count(*) FROM __drizzle_migrations"))[0][0],
    foreignKeys: (await client.values("PRAGMA foreign_keys"))[0][0],
  };
}

Deno.test("drizzle: migrate() of a rebuild and a later migration together keeps the foreign keys' actions of the later one, as when applied one by one", async () => {
  const expected = {
    // bob's entry cascaded away; ada's entry owned by bob has its owner set to NULL.
    entries: [[1, 1, 1], [3, 1, null]],
    applied: 3,
    foreignKeys: 1,
  };
  assert.deepEqual(await entries("steps", true), expected);
  // A fresh database (every migration pending at once) ends the same way.
  assert.deepEqual(await entries("fresh", false), expected);
});

Deno.test("drizzle: migrate() whose migration after a rebuild fails keeps the batches before it and names them", async () => {
  await using srv = await startServer();
  await using client = await connect(srv.connectOptions);
  const bad: [string, string] = ["0002_bad", "CREATE TABLE `accounts` (`x` integer);"];
  const folder = await writeMigrations(srv.dir, [INIT, REBUILD, bad]);
  const err = await migrate(drizzle(client), { migrationsFolder: folder }).then(
    () => null,
    (e: unknown) => e,
  );
  assert.ok(err instanceof Error, String(err));
  assert.match(
    err.message,
    /^Migration "0002_bad" failed, no migration of its batch was applied \(pending: "0002_bad"; applied before it by this call, in batches of their own as they differ in foreign keys: "0000_init", "0001_rebuild"\): table `accounts` already exists/,
  );
  assert.deepEqual(await client.values("SELECT count(*) FROM __drizzle_migrations"), [[2]]);
  assert.deepEqual(
    await client.values("SELECT group_concat(name) FROM pragma_table_info('accounts')"),
    [["id,name,email"]],
  );
  assert.deepEqual(await client.values("SELECT count(*) FROM entries"), [[3]]);
});
