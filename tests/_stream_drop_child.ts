/**
 * Child of kysely_test.ts (run with `--v8-flags=--expose-gc`): Kysely
 * streams dropped unfinished (their iterators neither read to the end nor
 * closed) hold the client's cursors until they are garbage-collected; a
 * stream waiting for room must not wait for ever. Prints JSON: what the
 * waiting stream did before and after a collection, and whether a stream
 * opened afterwards reads every row.
 *
 * Run: deno run -A --v8-flags=--expose-gc tests/_stream_drop_child.ts
 */

import { Kysely, sql } from "npm:kysely@^0.28";
import { NetsqliteDialect } from "../adapters/kysely.ts";
import { connect } from "../client.ts";
import { startServer, within } from "./_helpers.ts";

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error("run with --v8-flags=--expose-gc");
await using srv = await startServer({ maxCursors: 2 });
await using client = await connect({ ...srv.connectOptions, max: 2 }); // 4 cursors
const db = new Kysely<{ person: { id: number } }>({ dialect: new NetsqliteDialect({ client }) });
await sql`CREATE TABLE person (id INTEGER PRIMARY KEY)`.execute(db);
await sql`INSERT INTO person WITH RECURSIVE n(x) AS
  (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT 5000) SELECT x FROM n`.execute(db);
let kept: unknown[] = [];
for (let i = 0; i < 4; i++) {
  const it = db.selectFrom("person").select(["id", sql`randomblob(4000)`.as("b")]).stream(10)[
    Symbol.asyncIterator
  ]();
  kept.push(it);
  await it.next(); // one chunk read, then dropped
}
const outcome = (p: Promise<unknown[]>) =>
  p.then((rows) => `rows ${rows.length}`, (e) => `error ${(e as { code?: string }).code}`);
const waiting = outcome(Array.fromAsync(db.selectFrom("person").select("id").stream(100)));
const before = await within(waiting, 500);
kept = [];
let after: unknown = "timeout";
for (let i = 0; i < 20 && after === "timeout"; i++) {
  gc();
  after = await within(waiting, 250);
}
const later = await within(
  outcome(Array.fromAsync(db.selectFrom("person").select("id").stream(100))),
  5000,
);
console.log(JSON.stringify({ before, after, later }));
await db.destroy();
