/**
 * The options and the argument count of the query calls (`run`, `query`,
 * `values`, `get`, `iterate`, `batch`, `exec` and a prepared statement's
 * `all`, `get`, `values`, `run`, `iterate`), checked by one checker before
 * anything is sent: an unknown key (a misspelt `timeOut` would leave the
 * call without its deadline), options that are no plain object, a value of
 * the wrong type and an argument too many are each a `TypeError` naming the
 * call; the same for `transaction()` (on a client, a reserved connection
 * and a `tx`: as a rejection), `reserve()` and `subscribe()`. Options
 * passed in the parameters' place get a hint. Also `Statement.finalize()`,
 * idempotent, and `await using` on a statement. Each case runs against a real server and checks that nothing
 * ran there.
 */

import assert from "node:assert/strict";
import { connect, ErrorCode, type Queryable, SqliteError, type Statement } from "../client.ts";
import { serverStats, startServer, takeEvents } from "./_helpers.ts";

/** An untyped call, as JavaScript (or a cast) makes it. */
// deno-lint-ignore no-explicit-any
type Untyped = (...args: any[]) => Promise<unknown>;

/**
 * Each query call of `q` with `args` after its SQL (after its statements for
 * `batch`), bypassing the types; every one would insert a row into `t`.
 */
function queryCalls(q: Queryable, ...args: unknown[]): [string, () => Promise<unknown>][] {
  // deno-lint-ignore no-explicit-any
  const any = q as any;
  const insert = "INSERT INTO t VALUES (1) RETURNING x";
  return [
    ["run()", () => any.run(insert, ...args)],
    ["query()", () => any.query(insert, ...args)],
    ["values()", () => any.values(insert, ...args)],
    ["get()", () => any.get(insert, ...args)],
    ["iterate()", () => any.iterate(insert, ...args).next()],
  ];
}

/** Each call of a statement that inserts a row into `t`, with `args`, bypassing the types. */
function statementCalls(s: Statement, ...args: unknown[]): [string, () => Promise<unknown>][] {
  // deno-lint-ignore no-explicit-any
  const any = s as any;
  return [
    ["Statement.all()", () => any.all(...args)],
    ["Statement.get()", () => any.get(...args)],
    ["Statement.values()", () => any.values(...args)],
    ["Statement.run()", () => any.run(...args)],
    ["Statement.iterate()", () => any.iterate(...args).next()],
  ];
}

/**
 * The article before a call's name in a message: "an" before a vowel's
 * sound (`not an iterate() option`), else "a" (`not a get() option`,
 * `not a Statement.iterate() option`).
 */
function an(name: string): "a" | "an" {
  return ["iterate()", "exec()", "all()"].includes(name) ? "an" : "a";
}

/** Asserts that each call rejects with a `TypeError` whose message `expected(name)` gives. */
async function assertTypeErrors(
  calls: [string, () => Promise<unknown>][],
  expected: (name: string) => string | RegExp,
): Promise<void> {
  for (const [name, call] of calls) {
    const err = await call().then(() => "resolved", (e) => e);
    assert.ok(err instanceof TypeError, `${name}: ${String(err)}`);
    const want = expected(name);
    if (typeof want === "string") assert.equal(err.message, want, name);
    else assert.match(err.message, want, name);
  }
}

Deno.test("Queryable query calls refuse an unknown option key with a TypeError naming the call and the option meant, before sending anything", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (x)");
  const sent = (await serverStats(srv.connectOptions)).requests;
  // A misspelt timeout: silently ignored, the call would run without its deadline.
  await assertTypeErrors(
    queryCalls(db, [], { timeOut: 1 }),
    (name) => `Invalid option "timeOut": not ${an(name)} ${name} option; did you mean "timeout"?`,
  );
  await assertTypeErrors(
    queryCalls(db, [], { zzz: 1, timeout: 1000 }),
    (name) =>
      `Invalid option "zzz": not ${an(name)} ${name} option (known: ${
        name === "iterate()" ? "arrays, " : ""
      }timeout, signal)`,
  );
  // arrays is iterate()'s and batch()'s alone.
  await assertTypeErrors(
    queryCalls(db, [], { arrays: true }).filter(([name]) => name !== "iterate()"),
    (name) => `Invalid option "arrays": not ${an(name)} ${name} option (known: timeout, signal)`,
  );
  // deno-lint-ignore no-explicit-any
  const any = db as any;
  await assert.rejects(any.batch([{ sql: "INSERT INTO t VALUES (1)" }], { foreignKey: false }), {
    name: "TypeError",
    message: 'Invalid option "foreignKey": not a batch() option; did you mean "foreignKeys"?',
  });
  await assert.rejects(any.exec("INSERT INTO t VALUES (1)", { timeOut: 1 }), {
    name: "TypeError",
    message: /^Invalid exec\(\) option "timeOut": exec\(\) takes no parameters/,
  });
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]], "nothing ran");
  const after = (await serverStats(srv.connectOptions)).requests;
  for (const op of ["run", "query", "iterate", "batch", "exec"]) {
    assert.equal(after[op] ?? 0, (sent[op] ?? 0) + (op === "query" ? 1 : 0), op);
  }
});

Deno.test("Queryable query calls refuse options that are no plain object and values of the wrong type, naming the call", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (x)");
  for (const [options, got] of [[5, "5"], ["x", '"x"'], [true, "true"]]) {
    await assertTypeErrors(
      queryCalls(db, [], options),
      (name) =>
        `Invalid ${name} options: expected { ${
          name === "iterate()" ? "arrays, " : ""
        }timeout, signal }, got ${got}`,
    );
  }
  // A second array: the parameters go in one.
  await assertTypeErrors(
    queryCalls(db, [1], [2]),
    (name) =>
      new RegExp(
        `^Invalid ${name.replace(/[()]/g, "\\$&")} options: expected \\{ .*\\}, got an array ` +
          "\\(pass every parameter in the one array or plain object before the options\\)$",
      ),
  );
  // The signal itself in the options' place.
  const signal = new AbortController().signal;
  await assertTypeErrors(
    queryCalls(db, [], signal),
    (name) =>
      new RegExp(
        `^Invalid ${name.replace(/[()]/g, "\\$&")} options: expected a plain object \\{ .*\\}, ` +
          "got an instance of AbortSignal \\(pass a signal as \\{ signal \\}\\)$",
      ),
  );
  await assertTypeErrors(
    queryCalls(db, [], new Map()),
    () => /, got an instance of Map$/,
  );
  for (const [timeout, got] of [[0, "0"], [-1, "-1"], [NaN, "NaN"], ["5", '"5"'], [5n, "5n"]]) {
    await assertTypeErrors(
      queryCalls(db, [], { timeout }),
      (name) => `Invalid ${name} option "timeout": expected a positive number of ms, got ${got}`,
    );
  }
  await assertTypeErrors(
    queryCalls(db, [], { signal: { aborted: false } }),
    (name) => `Invalid ${name} option "signal": expected an AbortSignal, got a plain object`,
  );
  // deno-lint-ignore no-explicit-any
  const any = db as any;
  await assert.rejects(any.iterate("SELECT 1", [], { arrays: 1 }).next(), {
    name: "TypeError",
    message: 'Invalid iterate() option "arrays": expected a boolean, got 1',
  });
  const items = [{ sql: "INSERT INTO t VALUES (1)" }];
  await assert.rejects(any.batch(items, { foreignKeys: "no" }), {
    name: "TypeError",
    message: 'Invalid batch() option "foreignKeys": expected a boolean, got "no"',
  });
  await assert.rejects(any.batch(items, { arrays: "yes" }), {
    name: "TypeError",
    message: 'Invalid batch() option "arrays": expected a boolean, got "yes"',
  });
  await assert.rejects(any.batch(items, { timeout: 0 }), {
    name: "TypeError",
    message: 'Invalid batch() option "timeout": expected a positive number of ms, got 0',
  });
  await assert.rejects(any.batch(items, [items]), {
    name: "TypeError",
    message: "Invalid batch() options: expected { arrays, foreignKeys, timeout, signal }, got " +
      "an array",
  });
  // exec() shares the checker.
  await assert.rejects(any.exec("INSERT INTO t VALUES (1)", { signal: "stop" }), {
    name: "TypeError",
    message: 'Invalid exec() option "signal": expected an AbortSignal, got a string',
  });
  await assert.rejects(any.exec("INSERT INTO t VALUES (1)", new Map()), {
    name: "TypeError",
    message:
      "Invalid exec() options: expected a plain object { timeout, signal }, got an instance of Map",
  });
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]], "nothing ran");
});

Deno.test("Queryable query calls refuse an argument beyond their options with a TypeError naming the call", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (x)");
  await assertTypeErrors(
    queryCalls(db, [], {}, { timeout: 5 }),
    (name) =>
      `Invalid ${name} call: it takes at most 3 arguments (sql, params, options), got 4: pass ` +
      "the parameters in one array (positional) or plain object (named)",
  );
  // undefined counts: it is an argument all the same.
  await assertTypeErrors(queryCalls(db, [], undefined, undefined), () => /got 4: pass/);
  // deno-lint-ignore no-explicit-any
  const any = db as any;
  await assert.rejects(any.batch([{ sql: "INSERT INTO t VALUES (1)" }], {}, 1), {
    name: "TypeError",
    message: "Invalid batch() call: it takes at most 2 arguments (statements, options), got 3",
  });
  await assert.rejects(any.exec("INSERT INTO t VALUES (1)", {}, 1), {
    name: "TypeError",
    message: "Invalid exec() call: it takes at most 2 arguments (sql, options), got 3: exec() " +
      "takes no parameters: use run() or query() for a statement with parameters, given in one " +
      "array (positional) or plain object (named)",
  });
  // prepare() takes the SQL alone: parameters go to the statement's calls.
  await assert.rejects(any.prepare("INSERT INTO t VALUES (?)", [1]), {
    name: "TypeError",
    message: "Invalid prepare() call: it takes at most 1 argument (sql), got 2: pass the " +
      "parameters to the statement's run(), all(), get(), values() or iterate()",
  });
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]], "nothing ran");
});

Deno.test("Statement calls refuse unknown options, wrong options, a second parameter array and an extra argument; spread parameters stay INVALID_PARAM", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (x, y)");
  const stmt = await db.prepare("INSERT INTO t VALUES (?, ?) RETURNING x");
  await assertTypeErrors(
    statementCalls(stmt, [1, 2], { timeOut: 1 }),
    (name) => `Invalid option "timeOut": not a ${name} option; did you mean "timeout"?`,
  );
  // The extra argument, silently dropped before.
  await assertTypeErrors(
    statementCalls(stmt, [1, 2], 5),
    (name) =>
      `Invalid ${name} options: expected { ${
        name === "Statement.iterate()" ? "arrays, " : ""
      }timeout, signal }, got 5`,
  );
  // The parameters split in two arrays.
  await assertTypeErrors(
    statementCalls(stmt, [1], [2]),
    () =>
      /, got an array \(pass every parameter in the one array or plain object, the first argument\)$/,
  );
  await assertTypeErrors(
    statementCalls(stmt, [1, 2], {}, 3),
    (name) =>
      `Invalid ${name} call: it takes at most 2 arguments (params, options), got 3: pass the ` +
      "parameters in one array (positional) or plain object (named)",
  );
  await assertTypeErrors(
    statementCalls(stmt, [1, 2], { timeout: -5 }),
    (name) => `Invalid ${name} option "timeout": expected a positive number of ms, got -5`,
  );
  // Spread parameters (better-sqlite3's stmt.run(1, 2)) are parameters of the wrong kind, as before.
  for (const [name, call] of statementCalls(stmt, 1, 2)) {
    const err = await call().then(() => "resolved", (e) => e);
    assert.ok(err instanceof SqliteError, `${name}: ${String(err)}`);
    assert.equal(err.code, ErrorCode.InvalidParam, name);
  }
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]], "nothing ran");
  await stmt.finalize();
});

Deno.test("Query calls take every valid form of options: null, undefined values, a null-prototype object, Infinity, a signal, arrays", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (x)");
  const signal = new AbortController().signal;
  const bare = Object.assign(Object.create(null), { timeout: 10_000 });
  assert.deepEqual(
    await db.run("INSERT INTO t VALUES (?)", [1], { timeout: undefined, signal: undefined }),
    { changes: 1, lastInsertRowid: 1 },
  );
  assert.deepEqual(await db.query("SELECT x FROM t", undefined, bare), [{ x: 1 }]);
  // null is no options, as null is no parameters (what a JSON round trip makes of undefined).
  // deno-lint-ignore no-explicit-any
  const untyped = db as any;
  assert.deepEqual(await untyped.query("SELECT x FROM t", null, null), [{ x: 1 }]);
  await untyped.exec("SELECT 1", null);
  assert.deepEqual(await untyped.get("SELECT x FROM t", [], { signal: null }), { x: 1 });
  const nulls = await db.prepare("SELECT x FROM t");
  // deno-lint-ignore no-explicit-any
  assert.deepEqual(await (nulls as any).values(null, null), [[1]]);
  await nulls.finalize();
  assert.deepEqual(await db.values("SELECT x FROM t", [], { timeout: Infinity }), [[1]]);
  assert.deepEqual(await db.get("SELECT x FROM t", [], { signal, timeout: 0.5e4 }), { x: 1 });
  const rows = [];
  for await (const r of db.iterate("SELECT x FROM t", [], { arrays: true, signal })) rows.push(r);
  assert.deepEqual(rows, [[1]]);
  const [r] = await db.batch([{ sql: "SELECT x FROM t" }], {
    arrays: true,
    foreignKeys: true,
    timeout: 10_000,
    signal,
  });
  assert.deepEqual(r.rows, [[1]]);
  await db.exec("SELECT 1", { signal });
  const stmt = await db.prepare("SELECT x FROM t");
  assert.deepEqual(await stmt.all(undefined, bare), [{ x: 1 }]);
  assert.deepEqual(await stmt.get([], { timeout: undefined }), { x: 1 });
  // arrays: undefined leaves raw()'s mode (it used to override it with objects).
  stmt.raw();
  const raw = [];
  for await (const row of stmt.iterate([], { arrays: undefined, signal })) raw.push(row);
  assert.deepEqual(raw, [[1]]);
  const objects = [];
  for await (const row of stmt.iterate([], { arrays: false })) objects.push(row);
  assert.deepEqual(objects, [{ x: 1 }]);
  await stmt.finalize();
});

Deno.test("Statement.finalize() is idempotent: a second call sends nothing and resolves; calls after it fail with UNKNOWN_STATEMENT", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (x)");
  const stmt = await db.prepare("INSERT INTO t VALUES (?)");
  await stmt.run([1]);
  const before = (await serverStats(srv.connectOptions)).requests.finalize ?? 0;
  const first = stmt.finalize();
  const second = stmt.finalize();
  assert.equal(second, first, "the second call returns the first's promise");
  assert.equal(await first, undefined);
  assert.equal(await stmt.finalize(), undefined);
  assert.equal((await serverStats(srv.connectOptions)).requests.finalize, before + 1);
  for (const [name, call] of statementCalls(stmt, [2])) {
    const err = await call().then(() => "resolved", (e) => e);
    assert.ok(err instanceof SqliteError, `${name}: ${String(err)}`);
    assert.equal(err.code, ErrorCode.UnknownStatement, name);
    assert.match(err.message, /^Unknown statement handle: the statement was finalized/, name);
  }
  assert.deepEqual(await db.values("SELECT x FROM t"), [[1]]);
});

Deno.test("Statement[Symbol.asyncDispose]() finalizes it at the end of an await using block", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  let kept: Statement;
  const before = (await serverStats(srv.connectOptions)).requests.finalize ?? 0;
  {
    await using stmt = await db.prepare("SELECT 1 AS one");
    assert.deepEqual(await stmt.get(), { one: 1 });
    kept = stmt;
  }
  assert.equal((await serverStats(srv.connectOptions)).requests.finalize, before + 1);
  await assert.rejects(kept.get(), { code: ErrorCode.UnknownStatement });
  // Finalized already: disposing again (or finalize()) sends nothing.
  await kept[Symbol.asyncDispose]();
  await kept.finalize();
  assert.equal((await serverStats(srv.connectOptions)).requests.finalize, before + 1);
  assert.equal(Symbol.dispose in kept, false, "no synchronous dispose: freeing takes a round trip");
});

/**
 * Calls `q.transaction()` with `args`, bypassing the types, and returns what
 * it returned; a synchronous throw fails the test (a refusal is a rejection).
 */
function transactionCall(q: Queryable, ...args: unknown[]): Promise<unknown> {
  // deno-lint-ignore no-explicit-any
  const p = (q as any).transaction(...args);
  assert.ok(p instanceof Promise, "transaction() returned no promise");
  return p;
}

Deno.test("transaction() refuses unknown options, wrong values and an extra argument with a rejected TypeError, on a client, a reserved connection and a tx, before beginning", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 2 });
  await db.exec("CREATE TABLE t (x)");
  const aborted = new AbortController();
  aborted.abort();
  let ran = 0;
  const fn = async (tx: Queryable) => {
    ran++;
    await tx.run("INSERT INTO t VALUES (1)");
  };
  const refused: [unknown[], string][] = [
    [
      [fn, { behaviour: "immediate" }],
      'Invalid option "behaviour": not a transaction() option; did you mean "behavior"?',
    ],
    [
      [fn, { timeout: 1 }],
      'Invalid option "timeout": not a transaction() option (known: behavior, signal)',
    ],
    // A misspelt signal, already aborted: the transaction would run and commit.
    [
      [fn, { signl: aborted.signal }],
      'Invalid option "signl": not a transaction() option; did you mean "signal"?',
    ],
    [
      [fn, { signal: 5 }],
      'Invalid transaction() option "signal": expected an AbortSignal, got a number',
    ],
    [
      [fn, { behavior: "IMMEDIATE" }],
      'Invalid transaction() option "behavior": expected "deferred", "immediate" or "exclusive", got "IMMEDIATE"',
    ],
    [
      [fn, { behavior: null }],
      'Invalid transaction() option "behavior": expected "deferred", "immediate" or "exclusive", got null',
    ],
    [[fn, 5], "Invalid transaction() options: expected { behavior, signal }, got 5"],
    [
      [fn, aborted.signal],
      "Invalid transaction() options: expected a plain object { behavior, signal }, got an instance of AbortSignal (pass a signal as { signal })",
    ],
    [[fn, {}, 5], "Invalid transaction() call: it takes at most 2 arguments (fn, options), got 3"],
    [
      ["INSERT INTO t VALUES (1)"],
      'Invalid transaction() call: expected a function (tx) => Promise as fn, got "INSERT INTO t VALUES (1)"',
    ],
  ];
  const check = async (q: Queryable, where: string) => {
    for (const [args, message] of refused) {
      await assert.rejects(transactionCall(q, ...args), { name: "TypeError", message }, where);
    }
  };
  await check(db, "client");
  {
    await using reserved = await db.reserve();
    await check(reserved, "reserved connection");
    assert.equal(reserved.inTransaction, false, "nothing began on the reserved connection");
  }
  await db.transaction(async (tx) => {
    await check(tx, "tx");
    // The enclosing transaction goes on.
    await tx.run("INSERT INTO t VALUES (2)");
  });
  assert.equal(ran, 0, "fn ran although its call was refused");
  assert.deepEqual(await db.values("SELECT x FROM t"), [[2]]);
  // null is no options, signal: null no signal, undefined values the defaults; each commits.
  await transactionCall(db, fn, null);
  await transactionCall(db, fn, { signal: null, behavior: undefined });
  await transactionCall(db, fn, { behavior: "immediate", signal: new AbortController().signal });
  await db.transaction((tx) => transactionCall(tx, fn, null));
  assert.equal(ran, 4);
  assert.deepEqual(await db.values("SELECT count(*) FROM t WHERE x = 1"), [[4]]);
});

Deno.test("reserve() and subscribe() refuse an unknown option and an extra argument with a TypeError: a misspelt tables would follow every table", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 2 });
  // deno-lint-ignore no-explicit-any
  const any = db as any;
  const aborted = new AbortController();
  aborted.abort();
  await assert.rejects(any.reserve({ signl: aborted.signal }), {
    name: "TypeError",
    message: 'Invalid option "signl": not a reserve() option; did you mean "signal"?',
  });
  await assert.rejects(any.reserve({ signal: "x" }), {
    name: "TypeError",
    message: 'Invalid reserve() option "signal": expected an AbortSignal, got a string',
  });
  await assert.rejects(any.reserve(undefined, 5), {
    name: "TypeError",
    message: "Invalid reserve() call: it takes at most 1 argument (options), got 2",
  });
  // A correct signal is still honoured, and null is no options.
  await assert.rejects(db.reserve({ signal: aborted.signal }), { name: "AbortError" });
  {
    await using reserved = await any.reserve(null);
    assert.deepEqual(await reserved.values("SELECT 1"), [[1]]);
  }
  await assert.rejects(any.subscribe({ tabels: ["t"] }), {
    name: "TypeError",
    message: 'Invalid option "tabels": not a subscribe() option; did you mean "tables"?',
  });
  await assert.rejects(any.subscribe({ tables: ["t"], value: true }), {
    name: "TypeError",
    message: 'Invalid option "value": not a subscribe() option; did you mean "values"?',
  });
  await assert.rejects(any.subscribe(["t"]), {
    name: "TypeError",
    message:
      "Invalid subscribe() options: expected { tables, kv, values, since, buffer, signal }, got an array",
  });
  await assert.rejects(any.subscribe({}, 5), {
    name: "TypeError",
    message: "Invalid subscribe() call: it takes at most 1 argument (options), got 2",
  });
  // null is no options: on the FFI engine a feed of every table; node:sqlite has no feeds.
  if (Deno.env.get("NETSQLITE_ENGINE") !== "node") {
    await db.exec("CREATE TABLE t (x)");
    await using feed = await any.subscribe(null);
    await db.run("INSERT INTO t VALUES (1)");
    const [e] = await takeEvents(feed, 1, 10_000);
    assert.equal(e.type === "table" && e.table, "t");
  } else {
    await assert.rejects(any.subscribe(null), { code: "FEED_UNSUPPORTED" });
  }
});

Deno.test("Options passed in the parameters' place get a hint saying where options go; a statement with such named parameters binds them", async () => {
  await using srv = await startServer();
  await using db = await srv.client();
  await db.exec("CREATE TABLE t (x)");
  const hint = (name: string, keys: string) =>
    ` (options go after the parameters: ${name}(sql, [], { ${keys} }))`;
  const refusedBy = (message: string) => (e: unknown) => {
    assert.ok(e instanceof SqliteError, String(e));
    assert.equal(e.code, ErrorCode.InvalidParam);
    assert.equal(e.message, message);
    assert.ok(e.cause instanceof SqliteError, "the server's refusal is its cause");
    return true;
  };
  const noSuch = 'Cannot bind parameter "timeout": the statement has no parameter of that name';
  for (const [name, call] of queryCalls(db, { timeout: 100 })) {
    await assert.rejects(call(), refusedBy(noSuch + hint(name.slice(0, -2), "timeout")), name);
  }
  // A signal, which no parameter takes, is refused before sending: the hint too.
  const signal = new AbortController().signal;
  await assert.rejects(
    db.query("SELECT 1", { signal, timeout: 100 } as never),
    refusedBy(
      'Cannot bind parameter "signal": an instance of AbortSignal is not a SQLite value: pass ' +
        "null, a number, " +
        "bigint, boolean, string or Uint8Array" + hint("query", "signal, timeout"),
    ),
  );
  // A statement with positional parameters, and an option left undefined, which no parameter
  // takes, get it too.
  await assert.rejects(
    db.query("SELECT ? AS a", { timeout: 100 }),
    refusedBy(
      'Cannot bind a parameters object: the statement has positional parameters "?": pass an ' +
        "array" + hint("query", "timeout"),
    ),
  );
  await assert.rejects(db.get("SELECT 1", { timeout: undefined } as never), (e: unknown) => {
    assert.ok(e instanceof SqliteError, String(e));
    assert.ok(e.message.endsWith(hint("get", "timeout")), e.message);
    return true;
  });
  // Only when every key is one of the call's options.
  await assert.rejects(db.query("SELECT 1", { timeout: 100, x: 1 }), (e: unknown) => {
    assert.ok(e instanceof SqliteError && e.message === noSuch, String(e));
    return true;
  });
  await assert.rejects(db.values("SELECT 1", { arrays: true }), (e: unknown) => {
    assert.ok(e instanceof SqliteError && e.message.endsWith("has no parameter of that name"));
    return true;
  });
  // A prepared statement's calls say it too.
  const stmt = await db.prepare("SELECT 1");
  const stmtCalls: [string, () => Promise<unknown>][] = [
    ["Statement.all", () => stmt.all({ timeout: 100 })],
    ["Statement.get", () => stmt.get({ timeout: 100 })],
    ["Statement.values", () => stmt.values({ timeout: 100 })],
    ["Statement.run", () => stmt.run({ timeout: 100 })],
  ];
  for (const [name, call] of stmtCalls) {
    await assert.rejects(
      call(),
      refusedBy(noSuch + ` (options go after the parameters: ${name}([], { timeout }))`),
      name,
    );
  }
  await stmt.finalize();
  // A statement that has such parameters binds them.
  assert.deepEqual(await db.query("SELECT :timeout AS t", { timeout: 100 }), [{ t: 100 }]);
  assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]], "nothing ran");
});
