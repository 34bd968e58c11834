/**
 * A cursor reads from a snapshot taken when it opened (PROTOCOL.md), not at
 * its first `next`: a write or a schema change committed between the open
 * reply and the first `next` is not seen, and the rows match the columns
 * the open reply declared. Real servers, on the engine `NETSQLITE_ENGINE`
 * names.
 */

import assert from "node:assert/strict";
import { Op } from "../protocol/messages.ts";
import { frame, Raw } from "./_raw.ts";
import { startServer } from "./_helpers.ts";

type Open = [id: number, status: number, payload: [cursor: number, columns: string[]]];
type Chunk = [id: number, status: number, payload: [rows: unknown[][], done: boolean]];

const num = (v: unknown) => typeof v === "bigint" ? Number(v) : v;
const rows = (c: Chunk) => c[2][0].map((r) => r.map(num));

Deno.test("A cursor does not see a write committed between its open and its first next", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1)");
  await using raw = await Raw.open((srv.connectOptions as { path: string }).path);
  await raw.write(frame([Op.Iterate, 2, "SELECT x FROM t ORDER BY x", [], null]));
  const open = await raw.read() as Open;
  assert.equal(open[1], 0, JSON.stringify(open));
  await db.run("INSERT INTO t VALUES (2)");
  // Every chunk up to the end (a chunk is cut after 0.5 ms of stepping: under load, before it).
  const seen: unknown[][] = [];
  for (let id = 3, done = false; !done; id += 100) {
    await raw.write(frame([Op.Next, id, open[2][0]]));
    const next = await raw.read() as Chunk;
    assert.equal(next[1], 0, JSON.stringify(next));
    seen.push(...rows(next));
    done = next[2][1];
  }
  assert.deepEqual(seen, [[1]]);
  // The reader it used is back in the pool, reading the latest state.
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[2]]);
  await raw.write(frame([Op.Iterate, 4, "SELECT count(*) AS c FROM t", [], null]));
  const again = await raw.read() as Open;
  await raw.write(frame([Op.Next, 5, again[2][0]]));
  assert.deepEqual(rows(await raw.read() as Chunk), [[2]]);
});

Deno.test("A cursor's rows match the columns of its open reply after an ALTER TABLE before its first next", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1)");
  await using raw = await Raw.open((srv.connectOptions as { path: string }).path);
  await raw.write(frame([Op.Iterate, 2, "SELECT * FROM t", [], null]));
  const open = await raw.read() as Open;
  assert.deepEqual(open[2][1], ["x"]);
  await db.run("ALTER TABLE t ADD COLUMN y DEFAULT 'new'");
  await raw.write(frame([Op.Next, 3, open[2][0]]));
  const next = await raw.read() as Chunk;
  assert.equal(next[1], 0, JSON.stringify(next));
  assert.deepEqual(rows(next), [[1]]);
  // A cursor opened now has the new column.
  await raw.write(frame([Op.Iterate, 4, "SELECT * FROM t", [], null]));
  const later = await raw.read() as Open;
  assert.deepEqual(later[2][1], ["x", "y"]);
  await raw.write(frame([Op.Next, 5, later[2][0]]));
  assert.deepEqual(rows(await raw.read() as Chunk), [[1, "new"]]);
});

for (const max of [1, 4]) {
  Deno.test(`Client.iterate() (pool of ${max}) started before a write in the same burst does not see it`, async () => {
    await using srv = await startServer();
    const { connect } = await import("../mod.ts");
    await using db = await connect({ ...srv.connectOptions, max });
    await db.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1)");
    const it = db.iterate<{ x: number }>("SELECT x FROM t ORDER BY x")[Symbol.asyncIterator]();
    const first = it.next();
    const write = db.run("INSERT INTO t VALUES (2)");
    const seen = [(await first).value];
    for (;;) {
      const n = await it.next();
      if (n.done) break;
      seen.push(n.value);
    }
    await write;
    assert.deepEqual(seen, [{ x: 1 }]);
    assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[2]]);
  });
}
