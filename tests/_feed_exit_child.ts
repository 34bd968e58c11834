/**
 * Embeds a server, subscribes, and ends while (or after) a captured write
 * steps in the background; the process must then exit by itself.
 * Usage: `deno run -A tests/_feed_exit_child.ts DIR MODE` (MODE: `after`:
 * the write ends first; `during`: shutdown while it runs; `disconnect`: the
 * writing client closes while it runs, then shutdown).
 *
 * @module
 */

import { serve } from "../server.ts";
import { connect } from "../client.ts";

const [dir, mode] = Deno.args;
const server = await serve({ database: `${dir}/t.db`, path: `${dir}/t.sock` });
const db = await connect({ path: `${dir}/t.sock`, max: 1 });
await db.exec(
  "CREATE TABLE t (id INTEGER PRIMARY KEY, v); CREATE TABLE n (x INTEGER);" +
    "INSERT INTO n WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 20000) " +
    "SELECT x FROM s",
);
const feed = await db.subscribe({ tables: ["t"], buffer: 100_000 });
let events = 0;
const reading = (async () => {
  for await (const _ of feed) events++;
})().catch(() => {});
const writer = await connect({ path: `${dir}/t.sock`, max: 1 });
if (mode === "after") {
  await writer.run("INSERT INTO t (v) SELECT x FROM n");
} else {
  const w = writer.run(
    "INSERT INTO t (v) SELECT (SELECT count(*) FROM n a WHERE a.x <> s.x) FROM n s",
  ).catch((e) => e.code);
  await new Promise((r) => setTimeout(r, 500));
  if (mode === "disconnect") {
    await writer.close();
    console.log("write:", await w);
  } else {
    await server.shutdown();
    console.log("write:", await w);
  }
}
await writer.close();
if (mode === "after") await new Promise((r) => setTimeout(r, 300));
await db.close();
await reading;
await server.shutdown();
console.log("events:", events, "done");
