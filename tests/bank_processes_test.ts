/**
 * A bank from several client processes (tests/_client_process.ts): each
 * transfer moves an amount between two accounts and records it in a ledger,
 * in one transaction, by every kind a client has (a raw `BEGIN IMMEDIATE` ...
 * `COMMIT` sent pipelined, `BEGIN EXCLUSIVE` awaited step by step, a
 * `SAVEPOINT` as the outer transaction with a nested one rolled back,
 * `batch()`, one failing half-way); one process is killed inside an open
 * transaction, another's batch fails mid-way, and readers check the total at
 * any moment, in autocommit and twice inside one transaction. The total
 * never changes, no transfer is half-applied or lost, and every balance is
 * its opening balance plus the ledger's transfers.
 */

import assert from "node:assert/strict";
import { type ClientProcess, spawnClientProcess } from "./_client_process.ts";
import { prng } from "./_bytes.ts";
import { startServerProcess } from "./_helpers.ts";
import { seedNote, testSeed } from "./_seed.ts";

const SEED = testSeed(20261206);
const ACCOUNTS = 8;
const OPENING = 1000;
const TOTAL = ACCOUNTS * OPENING;
const ROUNDS = 10;

/** Each balance minus its opening balance and the ledger's transfers: all 0. */
const DRIFT =
  "SELECT a.id, a.bal - ? - coalesce((SELECT sum(amt) FROM ledger WHERE dst = a.id), 0) " +
  "+ coalesce((SELECT sum(amt) FROM ledger WHERE src = a.id), 0) FROM acct a";

/** One transfer by `p`, of the kind `kind`; resolves with the number of transfers committed. */
async function transfer(p: ClientProcess, kind: number, tag: string, rand: () => number) {
  const a = 1 + Math.floor(rand() * ACCOUNTS);
  const b = 1 + (a + Math.floor(rand() * (ACCOUNTS - 1))) % ACCOUNTS;
  const amt = 1 + Math.floor(rand() * 50);
  const debit = ["UPDATE acct SET bal = bal - ? WHERE id = ?", [amt, a]] as const;
  const credit = ["UPDATE acct SET bal = bal + ? WHERE id = ?", [amt, b]] as const;
  const record = ["INSERT INTO ledger (tag, src, dst, amt) VALUES (?, ?, ?, ?)", [
    tag,
    a,
    b,
    amt,
  ]] as const;
  if (kind === 0) {
    // Pipelined: sent together, run in order on the process's one connection.
    await Promise.all([
      p.exec("BEGIN IMMEDIATE"),
      p.run(debit[0], [...debit[1]]),
      p.run(credit[0], [...credit[1]]),
      p.run(record[0], [...record[1]]),
      p.exec("COMMIT"),
    ]);
    return 1;
  }
  if (kind === 1) {
    await p.exec("BEGIN EXCLUSIVE");
    const [[before]] = await p.values<[number]>("SELECT sum(bal) FROM acct");
    await p.run(debit[0], [...debit[1]]);
    // Its own write, not yet committed, is seen inside the transaction.
    assert.deepEqual(await p.values("SELECT sum(bal) FROM acct"), [[before - amt]]);
    await p.run(credit[0], [...credit[1]]);
    await p.run(record[0], [...record[1]]);
    await p.exec("COMMIT");
    assert.equal(before, TOTAL);
    return 1;
  }
  if (kind === 2) {
    // A savepoint as the outer transaction; a nested one undone.
    await p.exec("SAVEPOINT outer_sp");
    await p.run(debit[0], [...debit[1]]);
    await p.exec("SAVEPOINT inner_sp");
    await p.run("UPDATE acct SET bal = bal + 100000 WHERE id = ?", [b]);
    await p.exec("ROLLBACK TO inner_sp");
    await p.exec("RELEASE inner_sp");
    await p.run(credit[0], [...credit[1]]);
    await p.run(record[0], [...record[1]]);
    await p.exec("RELEASE outer_sp");
    return 1;
  }
  const fails = kind === 4;
  const batch = p.batch([
    { sql: debit[0], params: [...debit[1]] },
    { sql: record[0], params: [...record[1]] },
    // The same tag again: the ledger's UNIQUE fails the batch half-way.
    ...(fails ? [{ sql: record[0], params: [...record[1]] }] : []),
    { sql: credit[0], params: [...credit[1]] },
  ]);
  if (!fails) {
    await batch;
    return 1;
  }
  await assert.rejects(batch, { code: "SQLITE_CONSTRAINT_UNIQUE" });
  return 0;
}

Deno.test("client processes: bank transfers of every transaction kind keep the total, with a process killed mid-transaction", async () => {
  await using sp = await startServerProcess();
  const spawn = () => spawnClientProcess(sp.connectOptions);
  const procs = await Promise.all([spawn(), spawn(), spawn(), spawn()]);
  try {
    const [setup] = procs;
    await setup.exec(
      "CREATE TABLE acct (id INTEGER PRIMARY KEY, bal INTEGER NOT NULL); " +
        "CREATE TABLE ledger (id INTEGER PRIMARY KEY, tag TEXT UNIQUE, src INT, dst INT, amt INT); " +
        `INSERT INTO acct (id, bal) WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s ` +
        `LIMIT ${ACCOUNTS}) SELECT n, ${OPENING} FROM s`,
    );
    const [w0, w1, w2, reader] = procs;
    // Killed while its transaction is open and half done: the server rolls it back.
    await w0.exec("BEGIN IMMEDIATE");
    await w0.run("UPDATE acct SET bal = bal - 500 WHERE id = 1");
    await w0.run("INSERT INTO ledger (tag, src, dst, amt) VALUES ('killed', 1, 2, 500)");
    await w0.kill();
    let committed = 0;
    let reads = 0;
    let writing = 2;
    const writer = async (p: ClientProcess, w: number) => {
      try {
        const rand = prng(SEED + w);
        for (let i = 0; i < ROUNDS; i++) {
          const n = await transfer(p, (i + w) % 5, `${w}:${i}`, rand);
          committed += n;
        }
      } finally {
        writing--;
      }
    };
    const read = async () => {
      // While the writers run, and at least a few times.
      while (writing > 0 || reads < 6) {
        assert.deepEqual(await reader.values("SELECT sum(bal) FROM acct"), [[TOTAL]]);
        await reader.exec("BEGIN");
        const [[n0]] = await reader.values<[number]>("SELECT count(*) FROM ledger");
        assert.deepEqual(await reader.values("SELECT sum(bal) FROM acct"), [[TOTAL]]);
        // Repeatable inside the transaction (it holds the writer: nothing commits meanwhile).
        assert.deepEqual(await reader.values("SELECT count(*) FROM ledger"), [[n0]]);
        await reader.exec("COMMIT");
        reads++;
      }
    };
    await Promise.all([writer(w1, 1), writer(w2, 2), read()]);
    // Every transfer but the failing batches (kind 4) committed.
    let expected = 0;
    for (const w of [1, 2]) for (let i = 0; i < ROUNDS; i++) if ((i + w) % 5 !== 4) expected++;
    assert.equal(committed, expected);
    assert.deepEqual(await reader.values("SELECT count(*), sum(tag = 'killed') FROM ledger"), [[
      committed,
      0,
    ]]);
    assert.deepEqual(await reader.values("SELECT sum(bal) FROM acct"), [[TOTAL]]);
    const drift = await reader.values<[number, number]>(DRIFT, [OPENING]);
    assert.deepEqual(drift.filter(([, d]) => d !== 0), []);
    assert.deepEqual(await reader.values("PRAGMA integrity_check"), [["ok"]]);
  } catch (err) {
    throw new Error(`${(err as Error).message}\n  ${seedNote(SEED)}`, { cause: err });
  } finally {
    for (const p of procs) await p[Symbol.asyncDispose]();
  }
});
