/**
 * Seeded interleaving stress: several clients pipeline random bursts of
 * autocommit writes, transactions that commit or roll back, batches and
 * reads, without awaiting inside a burst, so requests of different clients
 * interleave on the server in many orders (group commit, writer queue,
 * snapshot reads). Every client writes only its own rows and checks its own
 * count after each burst, so any statement run inside another client's
 * transaction, or any lost or duplicated write, shows up as a wrong count.
 */
import assert from "node:assert/strict";
import { type Client, connect } from "../mod.ts";
import { prng } from "./_bytes.ts";
import { startServer } from "./_helpers.ts";
import { seedNote, testSeed } from "./_seed.ts";

/** Fixed; NETSQLITE_SEED (or NETSQLITE_INTERLEAVE_SEED) runs other seeds (tests/_seed.ts). */
const SEED = testSeed(20261123, "NETSQLITE_INTERLEAVE_SEED");

async function burst(db: Client, c: number, rand: () => number, expected: { n: number }) {
  const sent: Promise<unknown>[] = [];
  const steps = 1 + Math.floor(rand() * 4);
  for (let k = 0; k < steps; k++) {
    const kind = Math.floor(rand() * 5);
    if (kind === 0) {
      sent.push(db.run("INSERT INTO t (client) VALUES (?)", [c]));
      expected.n += 1;
    } else if (kind === 1 || kind === 2) {
      const commit = kind === 1;
      const rows = 1 + Math.floor(rand() * 3);
      sent.push(db.exec(rand() < 0.5 ? "BEGIN" : "BEGIN IMMEDIATE"));
      for (let r = 0; r < rows; r++) sent.push(db.run("INSERT INTO t (client) VALUES (?)", [c]));
      sent.push(db.values("SELECT count(*) FROM t WHERE client = ?", [c]));
      sent.push(db.exec(commit ? "COMMIT" : "ROLLBACK"));
      if (commit) expected.n += rows;
    } else if (kind === 3) {
      sent.push(db.batch([
        { sql: "INSERT INTO t (client) VALUES (?)", params: [c] },
        { sql: "INSERT INTO t (client) VALUES (?)", params: [c] },
      ]));
      expected.n += 2;
    } else {
      sent.push(db.values("SELECT count(*) FROM t"));
    }
  }
  await Promise.all(sent);
  assert.equal(db.inTransaction, false);
  assert.deepEqual(await db.values("SELECT count(*) FROM t WHERE client = ?", [c]), [[expected.n]]);
}

for (const synchronous of ["full", "normal"] as const) {
  Deno.test(`Engine keeps every client's writes and transactions intact under seeded interleavings (synchronous=${synchronous})`, async () => {
    await using srv = await startServer({ synchronous });
    const clients = await Promise.all(
      Array.from({ length: 6 }, () => connect({ ...srv.connectOptions, max: 1 })),
    );
    try {
      await clients[0].exec("CREATE TABLE t (id INTEGER PRIMARY KEY, client INTEGER NOT NULL)");
      const expected = clients.map(() => ({ n: 0 }));
      await Promise.all(clients.map(async (db, c) => {
        const rand = prng(SEED + c);
        for (let i = 0; i < 40; i++) await burst(db, c, rand, expected[c]);
      }));
      const total = expected.reduce((sum, e) => sum + e.n, 0);
      assert.deepEqual(await clients[0].values("SELECT count(*) FROM t"), [[total]]);
      assert.deepEqual(await clients[0].values("PRAGMA integrity_check"), [["ok"]]);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n  ${seedNote(SEED)}`, { cause: err });
    } finally {
      for (const c of clients) await c.close();
    }
  });
}
