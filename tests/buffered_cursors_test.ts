/**
 * Cursors whose rows the server buffers (no reader to stream from: TEMP
 * objects exist, `:memory:`) hold at most 4 × `maxResultBytes` together,
 * server-wide: past it a cursor is refused with `BAD_REQUEST` saying why,
 * and closing cursors gives the room back; so do all cursors in cluster
 * mode, which buffer every result. (Without the bound, 40
 * connections × 16 cursors × `maxResultBytes` each grew a server to 7 GB.)
 */

import assert from "node:assert/strict";
import { type Client, connect, type ConnectOptions, SqliteError } from "../client.ts";
import { serve } from "../server.ts";
import { DemoCluster, DQLITE_DEMO } from "./_dqlite_nodes.ts";
import { startServer } from "./_helpers.ts";

const MAX_RESULT = 100_000;
/** Rows of 35 bytes as the engine counts them: 91 KB a cursor, over two chunks. */
const ROWS = 2_600;

type Open = AsyncIterator<Record<string, unknown>>;

/** Opens a cursor over the whole table (its first chunk read). */
async function open(db: Client): Promise<Open> {
  const it = db.iterate("SELECT id, pad FROM t ORDER BY id")[Symbol.asyncIterator]();
  const first = await it.next();
  assert.equal(first.done, false);
  return it;
}

/**
 * Four cursors of four connections hold 364 KB of the 400 KB; a fifth is
 * refused saying why, and the connection goes on; reading one to its end
 * and closing another make room for two.
 */
async function fillAndFree(options: ConnectOptions, setup: Client, rows = ROWS): Promise<void> {
  const clients: Client[] = [];
  const client = async () => {
    const db = await connect({ ...options, max: 1 });
    clients.push(db);
    return db;
  };
  try {
    await setup.exec(
      "CREATE TABLE t (id INTEGER PRIMARY KEY, pad TEXT); " +
        `WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ${rows}) ` +
        "INSERT INTO t SELECT i, printf('%020d', i) FROM s",
    );
    const open4: Open[] = [];
    for (let i = 0; i < 4; i++) open4.push(await open(await client()));
    const late = await client();
    const err = await open(late).then(() => null, (e) => e);
    assert.ok(err instanceof SqliteError, String(err));
    assert.equal(err.code, "BAD_REQUEST");
    assert.match(
      err.message,
      /^Too many rows buffered for cursors on the server: this cursor's rows exceed the \d+ bytes left of the 400000 cursors the server cannot stream may hold \(open cursors hold \d+\); /,
    );
    // The connection goes on; plain queries are not counted.
    assert.deepEqual(await late.values("SELECT count(*) FROM t"), [[rows]]);
    for (let r = await open4[0].next(); !r.done; r = await open4[0].next()) {
      assert.equal(typeof r.value.id, "number");
    }
    await open4[1].return?.();
    const again = [await open(late), await open(await client())];
    let n = 0;
    for (let r = await again[1].next(); !r.done; r = await again[1].next()) n++;
    assert.ok(n > 0 && n < rows, `the rest of the rows after the first chunk: ${n}`);
    for (const it of [...open4.slice(2), again[0]]) await it.return?.();
  } finally {
    for (const c of clients) await c.close();
  }
}

for (const kind of ["temp", "memory"] as const) {
  Deno.test(`buffered cursors (${kind}) share 4 × maxResultBytes server-wide; closing gives the room back`, async () => {
    await using srv = await startServer({
      maxResultBytes: MAX_RESULT,
      ...(kind === "memory" ? { database: ":memory:" } : {}),
    });
    const setup = await srv.client();
    try {
      if (kind === "temp") await setup.exec("CREATE TEMP TABLE keep (x)");
      await fillAndFree(srv.connectOptions, setup);
      // The error says what streams them on a single file.
      const db = await srv.client();
      const its = [];
      try {
        for (let i = 0; i < 4; i++) its.push(await open(db));
        const err = await open(setup).then(() => null, (e) => e);
        assert.match(String(err?.message), /open the cursor inside a transaction/);
      } finally {
        for (const it of its) await it.return?.();
        await db.close();
      }
    } finally {
      await setup.close();
    }
  });
}

Deno.test({
  name: "cluster mode: cursors (all buffered) share 4 × maxResultBytes server-wide",
  ignore: DQLITE_DEMO === null,
  async fn() {
    await using nodes = await DemoCluster.start(1);
    const dir = await Deno.makeTempDir({ prefix: "netsqlite-buffered-cursors-" });
    const server = await serve({
      path: `${dir}/c.sock`,
      maxResultBytes: MAX_RESULT,
      dqlite: { nodes: nodes.addresses, database: "buffered" },
    });
    const setup = await connect({ path: `${dir}/c.sock`, max: 1 });
    try {
      // A result's bytes are counted as received from the node there (≈ 40 a row).
      await fillAndFree({ path: `${dir}/c.sock` }, setup, 2_400);
    } finally {
      await setup.close();
      await server.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("a cursor's buffered rows are given back when its connection closes", async () => {
  await using srv = await startServer({ maxResultBytes: MAX_RESULT, database: ":memory:" });
  const setup = await srv.client();
  try {
    await setup.exec(
      "CREATE TABLE t (id INTEGER PRIMARY KEY, pad TEXT); " +
        `WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ${ROWS}) ` +
        "INSERT INTO t SELECT i, printf('%020d', i) FROM s",
    );
    // Ten rounds of four cursors left open by connections that close: were
    // their bytes kept, the second round would be refused.
    for (let round = 0; round < 10; round++) {
      const dbs = await Promise.all(
        Array.from({ length: 4 }, () => connect({ ...srv.connectOptions, max: 1 })),
      );
      for (const db of dbs) await open(db);
      for (const db of dbs) await db.close();
    }
  } finally {
    await setup.close();
  }
});
