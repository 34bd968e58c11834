/**
 * Errors a call rejects with name the code that made the call: an error from
 * the server is built in the client's socket read loop, and the public
 * methods append the frames of their (async) callers to its `stack`, keeping
 * its class, `name`, `message` and `code` (see `client/_caller_stack.ts`).
 */

import assert from "node:assert/strict";
import { connect, ConnectionError, SqliteError } from "../client.ts";
import { CALLER_SEPARATOR, withCallerFrames } from "../client/_caller_stack.ts";
import { startServer } from "./_helpers.ts";

/** The test file's name as it appears in stack frames. */
const FILE = /caller_stack_test\.ts:\d+:\d+/;

/** Asserts that `err` is a SqliteError whose stack names `fn` of this file after the separator. */
function assertNamesCaller(err: unknown, fn: string, code: string): void {
  assert.ok(err instanceof SqliteError, String(err));
  assert.equal(err.name, "SqliteError");
  assert.equal(err.code, code);
  const stack = err.stack ?? "";
  assert.ok(stack.startsWith(`SqliteError: ${err.message}\n`), stack);
  const tail = stack.split(`\n${CALLER_SEPARATOR}\n`);
  assert.equal(tail.length, 2, `expected one separator in:\n${stack}`);
  assert.doesNotMatch(tail[0], new RegExp(`\\b${fn}\\b`), stack);
  const line = tail[1].split("\n").find((l) => l.includes(` ${fn} (`));
  assert.ok(line !== undefined, `expected a frame of ${fn} in:\n${stack}`);
  assert.match(line, /^\s+at async /, stack);
  assert.match(line, FILE, stack);
}

Deno.test("caller stack: a failed get() names the async function that called it", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  async function loadMissingTable(): Promise<unknown> {
    return await db.get("SELECT * FROM no_such");
  }
  const err = await loadMissingTable().then(() => null, (e: unknown) => e);
  assertNamesCaller(err, "loadMissingTable", "SQLITE_ERROR");
  assert.match((err as Error).message, /no such table: no_such/);
});

Deno.test("caller stack: run, query, values, exec, batch, prepare, statements, iterate, transaction", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)");
  await db.run("INSERT INTO t VALUES (1)");
  const fails = async (fn: () => Promise<unknown>): Promise<unknown> =>
    await fn().then(() => assert.fail("expected a rejection"), (e: unknown) => e);

  async function insertTwice(): Promise<unknown> {
    return await db.run("INSERT INTO t VALUES (1)");
  }
  assertNamesCaller(await fails(insertTwice), "insertTwice", "SQLITE_CONSTRAINT_PRIMARYKEY");
  async function queryMissing(): Promise<unknown> {
    return await db.query("SELECT nope FROM t");
  }
  assertNamesCaller(await fails(queryMissing), "queryMissing", "SQLITE_ERROR");
  async function valuesMissing(): Promise<unknown> {
    return await db.values("SELECT nope FROM t");
  }
  assertNamesCaller(await fails(valuesMissing), "valuesMissing", "SQLITE_ERROR");
  async function execMissing(): Promise<unknown> {
    return await db.exec("DELETE FROM no_such");
  }
  assertNamesCaller(await fails(execMissing), "execMissing", "SQLITE_ERROR");
  async function batchDuplicate(): Promise<unknown> {
    return await db.batch([{ sql: "INSERT INTO t VALUES (2)" }, {
      sql: "INSERT INTO t VALUES (2)",
    }]);
  }
  assertNamesCaller(await fails(batchDuplicate), "batchDuplicate", "SQLITE_CONSTRAINT_PRIMARYKEY");
  async function prepareMissing(): Promise<unknown> {
    return await db.prepare("SELECT * FROM no_such");
  }
  assertNamesCaller(await fails(prepareMissing), "prepareMissing", "SQLITE_ERROR");
  const insert = await db.prepare("INSERT INTO t VALUES (?)");
  async function statementRun(): Promise<unknown> {
    return await insert.run([1]);
  }
  assertNamesCaller(await fails(statementRun), "statementRun", "SQLITE_CONSTRAINT_PRIMARYKEY");
  await insert.finalize();
  async function iterateMissing(): Promise<void> {
    for await (const _ of db.iterate("SELECT * FROM t WHERE 1 / (id - 1) IS NULL AND nope")) {
      // no rows: the statement fails
    }
  }
  assertNamesCaller(await fails(iterateMissing), "iterateMissing", "SQLITE_ERROR");
  async function inTransaction(): Promise<unknown> {
    return await db.transaction(async (tx) => await tx.run("INSERT INTO t VALUES (1)"));
  }
  // The error of tx.run() gets the frames once, through transaction()'s function.
  const txErr = await fails(inTransaction);
  assert.ok(txErr instanceof SqliteError);
  assert.equal((txErr.stack ?? "").split(CALLER_SEPARATOR).length, 2, txErr.stack);
  assert.match(txErr.stack ?? "", /at async inTransaction \(/);
  // The rows survived: nothing above changed data it should not have.
  assert.deepEqual(await db.values("SELECT id FROM t"), [[1]]);
});

Deno.test("caller stack: errors thrown before anything is sent and errors of fn stay as they were", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  // Refused in the call's own run of code: its stack has the caller's frames already.
  const invalid = await db.get("SELECT ?", [new Date() as never]).catch((e: unknown) => e);
  assert.ok(invalid instanceof SqliteError);
  assert.equal(invalid.code, "INVALID_PARAM");
  assert.ok(!(invalid.stack ?? "").includes(CALLER_SEPARATOR), invalid.stack);
  assert.match(invalid.stack ?? "", FILE);
  // What transaction()'s function throws is its own.
  const mine = new Error("mine");
  const before = mine.stack;
  const thrown = await db.transaction(() => Promise.reject(mine)).catch((e: unknown) => e);
  assert.equal(thrown, mine);
  assert.equal(mine.stack, before);
  // A closed client's ConnectionError names its caller too.
  await db.close();
  async function afterClose(): Promise<unknown> {
    return await db.get("SELECT 1");
  }
  const closed = await afterClose().catch((e: unknown) => e);
  assert.ok(closed instanceof ConnectionError, String(closed));
  assert.match(closed.stack ?? "", /afterClose \(.*caller_stack_test\.ts/);
});

/** The caller frames (after the separator) of `err`'s stack. */
function callerFrames(err: unknown): string {
  assert.ok(err instanceof Error, String(err));
  const parts = (err.stack ?? "").split(`\n${CALLER_SEPARATOR}\n`);
  assert.equal(parts.length, 2, err.stack);
  return parts[1];
}

Deno.test("caller stack: calls that fail together each get an error of their own, naming their own caller", async () => {
  await using srv = await startServer();
  // Three calls pending on one connection when it is closed (request timeout).
  await using holder = await connect({ ...srv.connectOptions, max: 1 });
  await holder.exec("CREATE TABLE t (x); BEGIN IMMEDIATE; INSERT INTO t VALUES (1)");
  await using db = await connect({ ...srv.connectOptions, max: 1, requestTimeout: 150 });
  async function callerA(): Promise<unknown> {
    return await db.run("INSERT INTO t VALUES (2)"); // waits for the writer
  }
  async function callerB(): Promise<unknown> {
    return await db.get("SELECT 2");
  }
  async function callerC(): Promise<unknown> {
    return await db.run("SELECT 3");
  }
  const errs = await Promise.all(
    [callerA(), callerB(), callerC()].map((p) => p.then(() => null, (e: unknown) => e)),
  );
  assert.equal(new Set(errs).size, 3);
  for (const [i, name] of ["callerA", "callerB", "callerC"].entries()) {
    assert.ok(errs[i] instanceof ConnectionError, String(errs[i]));
    assert.equal(errs[i].code, "REQUEST_TIMEOUT");
    const frames = callerFrames(errs[i]);
    assert.match(frames, new RegExp(`at async ${name} \\(`));
    for (const other of ["callerA", "callerB", "callerC"].filter((n) => n !== name)) {
      assert.doesNotMatch(frames, new RegExp(`\\b${other}\\b`));
    }
  }
  await holder.exec("ROLLBACK");
  // Calls waiting for a connection when the client closes.
  const db2 = await connect({ ...srv.connectOptions, max: 1 });
  const reserved = await db2.reserve();
  async function waiterA(): Promise<unknown> {
    return await db2.get("SELECT 1");
  }
  async function waiterB(): Promise<unknown> {
    return await db2.get("SELECT 2");
  }
  async function waiterC(): Promise<unknown> {
    return await db2.get("SELECT 3");
  }
  // A and B in one tick (they share the wait for a connection), C in a later one.
  const settle = (p: Promise<unknown>): Promise<unknown> => p.then(() => null, (e: unknown) => e);
  const waiting = [settle(waiterA()), settle(waiterB())];
  await new Promise((resolve) => setTimeout(resolve, 0));
  waiting.push(settle(waiterC()));
  await db2.close();
  const lost = await Promise.all(waiting);
  assert.equal(new Set(lost).size, 3);
  for (const [i, name] of ["waiterA", "waiterB", "waiterC"].entries()) {
    assert.ok(lost[i] instanceof ConnectionError, String(lost[i]));
    const frames = callerFrames(lost[i]);
    assert.match(frames, new RegExp(`at async ${name} \\(`));
    for (const other of ["waiterA", "waiterB", "waiterC"].filter((n) => n !== name)) {
      assert.doesNotMatch(frames, new RegExp(`\\b${other}\\b`));
    }
  }
  reserved.release();
});

Deno.test("caller stack: a netsqlite error that leaves transaction()'s function is not changed", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  // One the caller made and threw.
  const mine = new SqliteError("TX_MINE", "mine");
  const before = mine.stack;
  async function throwsOwn(): Promise<unknown> {
    return await db.transaction(() => Promise.reject(mine));
  }
  assert.equal(await throwsOwn().catch((e: unknown) => e), mine);
  assert.equal(mine.stack, before);
  // One refused in the caller's own run of code (its stack names the caller already).
  async function commitsInside(): Promise<unknown> {
    return await db.transaction(async (tx) => await tx.exec("COMMIT"));
  }
  const refused = await commitsInside().catch((e: unknown) => e);
  assert.ok(refused instanceof SqliteError, String(refused));
  assert.equal(refused.code, "TX_CONTROL");
  assert.ok(!(refused.stack ?? "").includes(CALLER_SEPARATOR), refused.stack);
  assert.match(refused.stack ?? "", /commitsInside \(.*caller_stack_test\.ts/);
});

Deno.test("caller stack: the joined stack is built when first read, and can be set", () => {
  const err = new SqliteError("SQLITE_ERROR", "late");
  const own = Object.getOwnPropertyDescriptor(err, "stack")!;
  let reads = 0;
  Object.defineProperty(err, "stack", {
    configurable: true,
    get: () => {
      reads++;
      return own.get !== undefined ? own.get.call(err) : own.value;
    },
  });
  function publicMethod(): unknown {
    return withCallerFrames(err);
  }
  assert.equal(publicMethod(), err);
  assert.equal(reads, 0); // nothing formatted for an error nobody looks at
  const stack = err.stack ?? "";
  assert.equal(reads, 1);
  assert.ok(stack.startsWith("SqliteError: late\n"), stack);
  assert.match(stack.split(CALLER_SEPARATOR)[1] ?? "", /at publicMethod \(/);
  assert.equal(err.stack, stack);
  assert.equal(reads, 1);
  const d = Object.getOwnPropertyDescriptor(err, "stack")!;
  assert.equal(d.configurable, true);
  assert.equal(d.enumerable, false);
  err.stack = "replaced";
  assert.equal(err.stack, "replaced");
  assert.deepEqual(Object.keys(err), Object.keys(new SqliteError("SQLITE_ERROR", "x")));
});
