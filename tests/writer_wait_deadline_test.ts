/**
 * A statement's deadline (its call's `timeout`, else `--statement-timeout`)
 * bounds its wait for the writer too: a write queued behind another
 * client's transaction fails with `STATEMENT_TIMEOUT` at its deadline when
 * that comes before the busy timeout, and nothing of it ran. Before, only
 * `--busy-timeout` ended the wait, so `{ timeout: 200 }` took 5 s.
 */

import assert from "node:assert/strict";
import { connect, type SqliteError } from "../mod.ts";
import { delay, startServer, timedFailure } from "./_helpers.ts";

const WAITED = /^Write waited \d+ ms for the writer, held by session \d+: statement timeout/;

Deno.test("Writer wait: a call's timeout ends the wait for the writer (STATEMENT_TIMEOUT, not run)", async () => {
  await using srv = await startServer({ busyTimeout: 20_000 });
  await using holder = await srv.client();
  await using db = await connect({ ...srv.connectOptions, max: 1 });
  await db.exec("CREATE TABLE t (x)");
  await holder.exec("BEGIN IMMEDIATE; INSERT INTO t VALUES (1)");
  const calls: [string, () => Promise<unknown>][] = [
    ["run", () => db.run("INSERT INTO t VALUES (2)", [], { timeout: 200 })],
    ["get (RETURNING)", () => db.get("INSERT INTO t VALUES (3) RETURNING x", [], { timeout: 200 })],
    [
      "batch",
      () =>
        db.batch([{ sql: "INSERT INTO t VALUES (6)" }, { sql: "INSERT INTO t VALUES (7)" }], {
          timeout: 200,
        }),
    ],
    ["BEGIN IMMEDIATE", () => db.run("BEGIN IMMEDIATE", [], { timeout: 200 })],
  ];
  for (const [what, call] of calls) {
    const [err, ms] = await timedFailure(call);
    assert.equal(err.code, "STATEMENT_TIMEOUT", `${what}: ${err.message}`);
    assert.match(err.message, WAITED, what);
    assert.match(err.message, /nothing of it ran/, what);
    assert.ok(ms >= 150 && ms < 4000, `${what}: failed after ${ms.toFixed(0)} ms`);
  }
  // Reads go on meanwhile, and the connection stays usable.
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]]);
  await holder.exec("COMMIT");
  await db.run("INSERT INTO t VALUES (8)", [], { timeout: 200 });
  assert.equal(db.inTransaction, false);
  assert.deepEqual(await db.values("SELECT x FROM t ORDER BY x"), [[1], [8]]);
});

Deno.test("Writer wait: --statement-timeout shorter than --busy-timeout ends the wait; a longer one leaves BUSY_TIMEOUT", async () => {
  await using srv = await startServer({ busyTimeout: 20_000, statementTimeout: 300 });
  await using holder = await srv.client();
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (x)");
  await holder.exec("BEGIN IMMEDIATE");
  let [err, ms] = await timedFailure(() => db.run("INSERT INTO t VALUES (1)"));
  assert.equal(err.code, "STATEMENT_TIMEOUT", err.message);
  assert.match(err.message, WAITED);
  assert.ok(ms >= 250 && ms < 4000, `failed after ${ms.toFixed(0)} ms`);
  // A script, and a prepared write when it runs, wait in the same way.
  [err] = await timedFailure(() => db.exec("INSERT INTO t VALUES (4); INSERT INTO t VALUES (5)"));
  assert.equal(err.code, "STATEMENT_TIMEOUT", err.message);
  const insert = await db.prepare("INSERT INTO t VALUES (?)");
  [err] = await timedFailure(() => insert.run([2]));
  assert.equal(err.code, "STATEMENT_TIMEOUT", err.message);
  // A call's own timeout longer than the busy timeout: the busy timeout ends the wait.
  await using quick = await startServer({ busyTimeout: 200 });
  await using h2 = await quick.client();
  await using c2 = await quick.client();
  await c2.exec("CREATE TABLE t (x)");
  await h2.exec("BEGIN IMMEDIATE");
  [err, ms] = await timedFailure(() => c2.run("INSERT INTO t VALUES (1)", [], { timeout: 10_000 }));
  assert.equal(err.code, "BUSY_TIMEOUT", err.message);
  assert.ok(ms < 4000, `failed after ${ms.toFixed(0)} ms`);
  await h2.exec("ROLLBACK");
  await holder.exec("ROLLBACK");
  await insert.run([3]);
  assert.deepEqual(await db.values("SELECT x FROM t"), [[3]]);
});

Deno.test("Writer wait: a waiter past its deadline leaves the queue; the next one gets the writer in turn", async () => {
  await using srv = await startServer({ busyTimeout: 20_000 });
  await using holder = await srv.client();
  await using early = await srv.client();
  await using late = await srv.client();
  await holder.exec("CREATE TABLE t (x); BEGIN IMMEDIATE");
  const first = timedFailure(() =>
    early.run("INSERT INTO t VALUES ('early')", [], { timeout: 150 })
  );
  await delay(20);
  const second = late.run("INSERT INTO t VALUES ('late')", [], { timeout: 10_000 });
  const [err] = await first;
  assert.equal(err.code, "STATEMENT_TIMEOUT", err.message);
  await delay(50);
  await holder.exec("INSERT INTO t VALUES ('holder'); COMMIT");
  assert.equal((await second).changes, 1);
  assert.deepEqual(await holder.values("SELECT x FROM t ORDER BY rowid"), [["holder"], ["late"]]);
});

Deno.test("Writer wait: a call that timed out waiting for the client's own transaction says so", async () => {
  await using srv = await startServer({ busyTimeout: 20_000 });
  await using db = await connect({ ...srv.connectOptions, max: 2 });
  await db.exec("CREATE TABLE t (x)");
  let err: SqliteError | undefined;
  await db.transaction(async (tx) => {
    await tx.run("INSERT INTO t VALUES (1)");
    [err] = await timedFailure(() => db.run("INSERT INTO t VALUES (2)", [], { timeout: 200 }));
  });
  assert.equal(err?.code, "STATEMENT_TIMEOUT", err?.message);
  assert.match(err!.message, /held by this client's own transaction \(session \d+\)/);
  assert.deepEqual(await db.values("SELECT x FROM t"), [[1]]);
});
