/**
 * `exec(sql, { timeout })`: one deadline for the whole script, as a batch's,
 * overriding `--statement-timeout` (which bounds each statement alone). A
 * statement running at the deadline is stopped (FFI engine), one not yet
 * begun does not run; the error says which statement and how many ran
 * before it, and those stay applied. Before, exec() refused the option.
 */

import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import { Op, Status } from "../protocol/messages.ts";
import { startServer, timedFailure } from "./_helpers.ts";
import { Wire } from "./_wire.ts";

const FFI = Deno.env.get("NETSQLITE_ENGINE") !== "node";

/** An insert of one row that takes a while: it counts `n` rows of a recursive CTE. */
function slowInsert(n: number, tag: number): string {
  return `INSERT INTO t SELECT ${tag}, count(*) FROM ` +
    `(WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ${n}) ` +
    "SELECT x FROM c)";
}

/**
 * A row count whose slow insert takes 40–200 ms here, and how long it took
 * (measured on `db`, which has table `t`; the row it adds is deleted).
 */
async function calibrate(db: { run(sql: string): Promise<unknown> }): Promise<[number, number]> {
  let n = 100_000;
  for (;;) {
    const t0 = performance.now();
    await db.run(slowInsert(n, 0));
    const ms = performance.now() - t0;
    await db.run("DELETE FROM t");
    if (ms >= 40 || n >= 1e8) return [n, ms];
    n *= Math.min(16, Math.ceil(80 / Math.max(ms, 1)));
  }
}

const STOPPED = /\(statement (\d+) of the script; the (\d+) before it ran\)$/;

Deno.test("exec({ timeout }): one deadline for the whole script; the statements before the stop stay, none after runs", async () => {
  await using srv = await startServer({ statementTimeout: 60_000 });
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (tag INTEGER, n INTEGER)");
  const [n, single] = await calibrate(db);
  const STATEMENTS = 12;
  const script = Array.from({ length: STATEMENTS }, (_, i) => slowInsert(n, i + 1)).join(";\n");
  // Each statement alone is well within the deadline; all of them are not.
  const timeout = Math.round(single * 3);
  const [err, ms] = await timedFailure(() => db.exec(script, { timeout }));
  assert.equal(err.code, "STATEMENT_TIMEOUT", err.message);
  const m = STOPPED.exec(err.message);
  assert.ok(m !== null, err.message);
  const [stoppedAt, ran] = [Number(m[1]), Number(m[2])];
  assert.equal(ran, stoppedAt - 1);
  assert.ok(stoppedAt >= 2 && stoppedAt < STATEMENTS, err.message);
  // Those before the stop committed, in order; the stopped one and those after did not.
  const tags = await db.values("SELECT tag FROM t ORDER BY rowid");
  assert.deepEqual(tags, Array.from({ length: ran }, (_, i) => [i + 1]));
  // (The FFI engine stops the statement at the deadline; node:sqlite lets it end first.)
  assert.ok(ms < timeout + single * 2 + 1_000, `failed after ${ms.toFixed(0)} ms`);
  assert.equal(db.inTransaction, false);
  // Without the call's timeout, --statement-timeout bounds each statement alone: all run.
  await db.run("DELETE FROM t");
  await db.exec(script);
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[STATEMENTS]]);
  // The connection stays usable, and a generous timeout lets the script run whole.
  await db.run("DELETE FROM t");
  await db.exec(script, { timeout: 600_000 });
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[STATEMENTS]]);
});

Deno.test("exec({ timeout }) inside a transaction: a deadline passed between statements stops the script there, the transaction stays open with those that ran", async () => {
  await using srv = await startServer({ statementTimeout: 60_000 });
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (tag INTEGER, n INTEGER)");
  // Statements too short for any check while they run: the deadline is met between two.
  const STATEMENTS = 40_000;
  const script = Array.from({ length: STATEMENTS }, (_, i) => `INSERT INTO t VALUES (${i}, 0)`)
    .join(";");
  await db.exec("BEGIN");
  const [err, ms] = await timedFailure(() => db.exec(script, { timeout: 30 }));
  assert.equal(err.code, "STATEMENT_TIMEOUT", err.message);
  assert.match(
    err.message,
    /^Script stopped after 30 ms \(the call's timeout option, one deadline /,
  );
  assert.match(err.message, /this statement did not begin/);
  const m = STOPPED.exec(err.message);
  assert.ok(m !== null, err.message);
  const ran = Number(m[2]);
  assert.ok(ran >= 1 && ran < STATEMENTS, err.message);
  assert.ok(ms < 2_000, `failed after ${ms.toFixed(0)} ms`);
  // Nothing of the stopped statement ran: the transaction goes on with those before it.
  assert.equal(db.inTransaction, true);
  await db.run("INSERT INTO t VALUES (-1, 0)");
  await db.exec("COMMIT");
  assert.deepEqual(await db.values("SELECT count(*), max(tag) FROM t WHERE tag >= 0"), [[
    ran,
    ran - 1,
  ]]);
  assert.deepEqual(await db.values("SELECT count(*) FROM t WHERE tag = -1"), [[1]]);
});

Deno.test({
  name: "exec({ timeout }) stops a runaway statement of a script at its deadline (ffi)",
  ignore: !FFI,
  fn: async () => {
    await using srv = await startServer({ statementTimeout: 60_000 });
    await using db = await srv.client();
    await using other = await srv.client();
    await db.exec("CREATE TABLE t (tag INTEGER, n INTEGER)");
    const runaway = "INSERT INTO t SELECT 2, count(*) FROM (WITH RECURSIVE c(x) AS " +
      "(SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c)";
    const [err, ms] = await timedFailure(() =>
      db.exec(`INSERT INTO t VALUES (1, 0); ${runaway}; INSERT INTO t VALUES (3, 0)`, {
        timeout: 300,
      })
    );
    assert.equal(err.code, "STATEMENT_TIMEOUT", err.message);
    assert.match(err.message, /^Statement stopped after 300 ms/);
    assert.match(err.message, /statement 2 of the script; the 1 before it ran/);
    assert.ok(ms >= 250 && ms < 2_000, `failed after ${ms.toFixed(0)} ms`);
    assert.deepEqual(await other.values("SELECT tag FROM t"), [[1]]);
  },
});

Deno.test("exec({ timeout }) bounds the script's wait for the writer: STATEMENT_TIMEOUT, nothing ran", async () => {
  await using srv = await startServer({ busyTimeout: 20_000 });
  await using holder = await srv.client();
  await using db = await connect({ ...srv.connectOptions, max: 1 });
  await db.exec("CREATE TABLE t (x)");
  await holder.exec("BEGIN IMMEDIATE; INSERT INTO t VALUES (1)");
  const [err, ms] = await timedFailure(() =>
    db.exec("INSERT INTO t VALUES (2); INSERT INTO t VALUES (3)", { timeout: 200 })
  );
  assert.equal(err.code, "STATEMENT_TIMEOUT", err.message);
  assert.match(err.message, /^Write waited \d+ ms for the writer/);
  assert.ok(ms >= 150 && ms < 4_000, `failed after ${ms.toFixed(0)} ms`);
  await holder.exec("COMMIT");
  await db.exec("INSERT INTO t VALUES (4)", { timeout: 200 });
  assert.deepEqual(await db.values("SELECT x FROM t ORDER BY x"), [[1], [4]]);
});

Deno.test("exec()'s timeout is checked: the client refuses a bad one with a TypeError, the server with BAD_REQUEST", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  // deno-lint-ignore no-explicit-any
  const any = db as any;
  for (const [timeout, shown] of [[0, "0"], [-5, "-5"], ["100", '"100"'], [NaN, "NaN"]]) {
    await assert.rejects(any.exec("CREATE TABLE t (x)", { timeout }), {
      name: "TypeError",
      message: `Invalid exec() option "timeout": expected a positive number of ms, got ${shown}`,
    });
  }
  assert.deepEqual(await db.values("SELECT count(*) FROM sqlite_schema"), [[0]], "nothing ran");
  await using wire = await Wire.open(srv.connectOptions.path!);
  const bad = await wire.call(Op.Exec, "CREATE TABLE t (x)", null, { timeout: 0 });
  assert.equal(bad.status & Status.Error, Status.Error);
  assert.equal((bad.body as { code: string }).code, "BAD_REQUEST");
  const good = await wire.call(Op.Exec, "CREATE TABLE t (x)", null, { timeout: 1_000 });
  assert.equal(good.status & Status.Error, 0, JSON.stringify(good.body));
  assert.deepEqual(await db.values("SELECT count(*) FROM sqlite_schema"), [[1]]);
});
