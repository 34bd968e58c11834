/**
 * Child of review_a_test.ts (run with `--v8-flags=--expose-gc`): a change
 * feed that ends before `subscribe()` returns it (a replay from `since`
 * that lags at once) must not stay held by its client. Prints JSON: how
 * many of such feeds were still alive after collections.
 *
 * Run: deno run -A --v8-flags=--expose-gc tests/_review_a_child.ts
 */

import { startServer } from "./_helpers.ts";

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error("run with --v8-flags=--expose-gc");
await using srv = await startServer();
await using db = await srv.client();
await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, x)");
await using first = await db.subscribe({ tables: ["t"] });
const since = first.startSeq;
for (let i = 0; i < 50; i++) await db.run("INSERT INTO t (x) VALUES (?)", [i]);
const refs: WeakRef<object>[] = [];
const kinds: string[] = [];
for (let i = 0; i < 10; i++) {
  const feed = await db.subscribe({ tables: ["t"], since, buffer: 1 });
  const events = [];
  for await (const e of feed) events.push(e.type);
  kinds.push(events.join(","));
  refs.push(new WeakRef(feed));
}
let alive = refs.length;
for (let i = 0; i < 20 && alive > 0; i++) {
  gc();
  await new Promise((r) => setTimeout(r, 20));
  alive = refs.filter((r) => r.deref() !== undefined).length;
}
console.log(JSON.stringify({ alive, kinds: [...new Set(kinds)] }));
