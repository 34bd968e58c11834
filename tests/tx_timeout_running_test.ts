/**
 * `--tx-timeout` bounds a transaction's age while one long request of it runs
 * (a batch, a multi-statement `exec` script, a script that began the
 * transaction itself), on both engines: the request fails with `TX_TIMEOUT`
 * soon after the deadline, nothing of the transaction stays, another
 * client's write waiting for the writer goes through, and the connection is
 * usable after its ROLLBACK. `--tx-idle-timeout` does not fire while such a
 * request runs (it is not idle). A single long statement is stopped with the
 * FFI engine (tests/nonblocking_test.ts); node:sqlite cannot interrupt one.
 */

import assert from "node:assert/strict";
import { type Client, SqliteError } from "../mod.ts";
import { delay, startServer, type TestServer } from "./_helpers.ts";

const TX_TIMEOUT_MS = 300;
/** How late after the deadline the request may fail, on a loaded machine. */
const SLACK_MS = 2500;

/** A write of one row taking some milliseconds (a join over 400,000 row pairs of `t`). */
const SLOW_INSERT = "INSERT INTO log SELECT count(*) FROM t x, (SELECT v FROM t LIMIT 40) y " +
  "WHERE x.v + y.v = 999";
/** Enough slow writes for several seconds: far past the deadline. */
const MANY = 200;

/** A server whose clients are `db` (one connection) and `other`, with table `t` filled. */
async function setUp(
  options: { txTimeout?: number; txIdleTimeout?: number },
): Promise<{ srv: TestServer; db: Client; other: Client } & AsyncDisposable> {
  const srv = await startServer({ synchronous: "normal", busyTimeout: 30_000, ...options });
  const db = await srv.client();
  const other = await srv.client();
  await db.exec(
    "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER); CREATE TABLE log (who TEXT); " +
      "INSERT INTO t (v) WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s LIMIT 10000) " +
      "SELECT x FROM s",
  );
  return {
    srv,
    db,
    other,
    async [Symbol.asyncDispose]() {
      await db.close();
      await other.close();
      await srv[Symbol.asyncDispose]();
    },
  };
}

/**
 * Runs `request` (which holds the writer in a transaction begun at about
 * `began`) while `other` waits to write; asserts that the request fails with
 * TX_TIMEOUT within the slack after the deadline, that `other`'s write then
 * goes through, that nothing of the transaction stays, and that `db` works
 * again after its ROLLBACK.
 */
async function expectStopped(
  db: Client,
  other: Client,
  began: number,
  request: Promise<unknown>,
): Promise<void> {
  const settled = request.then(
    () => null,
    (err: unknown) => err,
  );
  // The writer is held: this write waits for it.
  await delay(50);
  const otherWrite = other.run("INSERT INTO log VALUES ('other')");
  otherWrite.catch(() => {}); // (awaited below, unless an assertion fails first)
  const err = await settled;
  const lasted = performance.now() - began;
  assert.ok(err instanceof SqliteError, `the request ended after ${lasted} ms with ${err}`);
  assert.equal(err.code, "TX_TIMEOUT", err.message);
  assert.match(err.message, /after lasting 300 ms \(--tx-timeout\)/);
  assert.ok(
    lasted >= TX_TIMEOUT_MS - 50 && lasted < TX_TIMEOUT_MS + SLACK_MS,
    `stopped ${lasted} ms after BEGIN`,
  );
  // Rolled back at once: the waiting write goes through before any ROLLBACK.
  await otherWrite;
  const waitedFor = performance.now() - began;
  assert.ok(waitedFor < TX_TIMEOUT_MS + SLACK_MS, `other's write done ${waitedFor} ms after BEGIN`);
  // Like any TX_TIMEOUT: refused until the client ends the transaction.
  await assert.rejects(db.run("INSERT INTO log VALUES ('after')"), { code: "TX_TIMEOUT" });
  await db.exec("ROLLBACK");
  assert.equal(db.inTransaction, false);
  assert.deepEqual(await db.values("SELECT who FROM log"), [["other"]]);
  await db.run("INSERT INTO log VALUES ('again')");
  assert.deepEqual(await other.values("SELECT who FROM log ORDER BY rowid"), [
    ["other"],
    ["again"],
  ]);
}

Deno.test("--tx-timeout stops a long batch() inside a transaction with TX_TIMEOUT and rolls back at once", async () => {
  await using s = await setUp({ txTimeout: TX_TIMEOUT_MS });
  await s.db.exec("BEGIN");
  const began = performance.now();
  await s.db.run("INSERT INTO log VALUES ('before')");
  const items = Array.from({ length: MANY }, () => ({ sql: SLOW_INSERT }));
  await expectStopped(s.db, s.other, began, s.db.batch(items));
});

Deno.test("--tx-timeout stops a long batch() of many quick statements inside a transaction", async () => {
  await using s = await setUp({ txTimeout: TX_TIMEOUT_MS });
  await s.db.exec("BEGIN");
  const began = performance.now();
  // Each a scan of `t` well under a millisecond: they run inline, a slice at a time.
  const items = Array.from({ length: 20_000 }, (_, i) => ({
    sql: "INSERT INTO log SELECT count(*) FROM t WHERE v < ?",
    params: [i],
  }));
  await expectStopped(s.db, s.other, began, s.db.batch(items));
});

Deno.test("--tx-timeout stops a long exec() script inside a transaction with TX_TIMEOUT", async () => {
  await using s = await setUp({ txTimeout: TX_TIMEOUT_MS });
  await s.db.exec("BEGIN");
  const began = performance.now();
  const script = Array(MANY).fill(SLOW_INSERT).join("; ");
  await expectStopped(s.db, s.other, began, s.db.exec(script));
});

Deno.test("--tx-timeout stops a batch whose statements each outlast --tx-idle-timeout", async () => {
  // The idle deadline comes first; by the time a statement ends (node:sqlite cannot stop it)
  // both have passed: the age limit is the one that ends the transaction.
  await using s = await setUp({ txTimeout: TX_TIMEOUT_MS, txIdleTimeout: 100 });
  await s.db.exec("BEGIN");
  const began = performance.now();
  const slow = "INSERT INTO log SELECT count(*) FROM (WITH RECURSIVE r(i) AS (SELECT 1 " +
    "UNION ALL SELECT i + 1 FROM r WHERE i < 1500000) SELECT i FROM r)";
  await expectStopped(
    s.db,
    s.other,
    began,
    s.db.batch([{ sql: slow }, { sql: slow }, { sql: slow }]),
  );
});

Deno.test("--tx-timeout stops a long exec() script that began the transaction itself", async () => {
  await using s = await setUp({ txTimeout: TX_TIMEOUT_MS });
  const began = performance.now();
  const script = "BEGIN; " + Array(MANY).fill(SLOW_INSERT).join("; ");
  await expectStopped(s.db, s.other, began, s.db.exec(script));
});

for (const before of [false, true]) {
  const which = before ? "a transaction begun before it" : "the transaction it began";
  Deno.test(`--tx-timeout does not stop a script's autocommit statements after it ended ${which}`, async () => {
    await using s = await setUp({ txTimeout: TX_TIMEOUT_MS });
    const started = performance.now();
    if (before) await s.db.exec("BEGIN");
    // The transaction ends at once; the script goes on past the deadline.
    const tail = Array(40).fill(SLOW_INSERT).join("; ");
    await s.db.exec(`${before ? "" : "BEGIN; "}INSERT INTO log VALUES ('tx'); COMMIT; ${tail}`);
    const lasted = performance.now() - started;
    assert.ok(lasted > TX_TIMEOUT_MS, `the script took ${lasted} ms: not past the deadline`);
    assert.deepEqual(await s.db.values("SELECT count(*) FROM log"), [[41]]);
    // And the next transaction gets its whole time.
    await s.db.exec("BEGIN");
    await s.db.run("INSERT INTO log VALUES ('next')");
    await s.db.exec("COMMIT");
    assert.deepEqual(await s.other.values("SELECT count(*) FROM log"), [[42]]);
  });
}

for (const kind of ["batch", "script", "script that began it"] as const) {
  Deno.test(`--tx-idle-timeout does not end a transaction while its ${kind} runs`, async () => {
    await using s = await setUp({ txIdleTimeout: 100 });
    // Some 20 statements of 10-30 ms: several times the idle lease.
    const n = 20;
    const started = performance.now();
    if (kind === "script that began it") {
      await s.db.exec("BEGIN; " + Array(n).fill(SLOW_INSERT).join("; "));
    } else {
      await s.db.exec("BEGIN");
      if (kind === "batch") {
        await s.db.batch(Array.from({ length: n }, () => ({ sql: SLOW_INSERT })));
      } else await s.db.exec(Array(n).fill(SLOW_INSERT).join("; "));
    }
    const lasted = performance.now() - started;
    await s.db.exec("COMMIT");
    assert.ok(lasted > 100, `ran ${lasted} ms: within the idle lease, the test proves nothing`);
    assert.deepEqual(await s.other.values("SELECT count(*) FROM log"), [[n]]);
  });
}
