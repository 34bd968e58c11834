/**
 * An audit of README's "every statement can be stopped" (Concurrency model,
 * Limits, the `{ timeout }` / `{ signal }` call options and
 * `--statement-timeout`): each kind of statement, given a deadline far
 * shorter than it would run, or aborted by its signal, fails with
 * `STATEMENT_TIMEOUT` (or `AbortError`) well before it would end, leaves no
 * partial write, and leaves its connection usable; inside a transaction a
 * stopped write ends the transaction as README says. The FFI engine stops
 * every statement; node:sqlite only what Limits lists (recursive statements,
 * cursors, batches), and those tests run on both engines.
 */

import assert from "node:assert/strict";
import { type Client, connect, type SqliteError } from "../mod.ts";
import { drain, startServer, type TestServer } from "./_helpers.ts";

const FFI = Deno.env.get("NETSQLITE_ENGINE") !== "node";

/** Rows in table `t`: the joins below scan ROWS² = 900 million pairs, a minute or more. */
const ROWS = 30_000;
/** A read that would run for a minute or more and yields one row at its end. */
const SLOW_JOIN = "SELECT count(*) FROM t x, t y WHERE x.v + y.v = -1";
/** A read that would run for a minute or more and yields no row at all. */
const SLOW_ROWS = "SELECT x.id FROM t x, t y WHERE x.v + y.v = -1";
/** An insert of 100 million rows, one at a time: any row left would show a partial write. */
const SLOW_INSERT = "INSERT INTO log(who) SELECT 'x' FROM (WITH RECURSIVE s(x) AS " +
  "(SELECT 1 UNION ALL SELECT x + 1 FROM s LIMIT 100000000) SELECT x FROM s)";
/** An update whose correlated subquery scans `t` for each row, each row updated as it goes. */
const SLOW_UPDATE = "UPDATE t SET v = v + 1 + (SELECT count(*) FROM t y WHERE y.v = t.v + 1000000)";
/** A delete whose correlated subquery scans `t` for each row. */
const SLOW_DELETE = "DELETE FROM t WHERE (SELECT count(*) FROM t y WHERE y.v = t.v + 1000000) = 0";
/** A recursive read yielding a row now and then, without end: node:sqlite checks deadlines between its rows. */
const RECURSIVE_ROWS = "WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s) " +
  "SELECT x FROM s WHERE x % 100000 = 0";

/** A bound for a 200 ms deadline or abort to take effect on a loaded 2-core machine. */
const BOUND_MS = 2_000;

interface Setup extends AsyncDisposable {
  srv: TestServer;
  a: Client;
  b: Client;
}

async function setup(statementTimeout = 60_000): Promise<Setup> {
  const srv = await startServer({ synchronous: "normal", statementTimeout });
  const a = await srv.client();
  const b = await srv.client();
  await a.exec(
    "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER); CREATE TABLE log (who TEXT); " +
      `INSERT INTO t (v) WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s LIMIT ${ROWS}) ` +
      "SELECT x FROM s",
  );
  return {
    srv,
    a,
    b,
    async [Symbol.asyncDispose]() {
      await a.close();
      await b.close();
      await srv[Symbol.asyncDispose]();
    },
  };
}

/** What `t` and `log` hold, to show that a stopped write left nothing. */
async function state(db: Client): Promise<unknown[][]> {
  return await db.values(
    "SELECT (SELECT count(*) FROM t), (SELECT sum(v) FROM t), " +
      "(SELECT count(*) FROM log)",
  );
}
const INITIAL = [[ROWS, ROWS * (ROWS + 1) / 2, 0]];

/** Awaits `p`, which must reject with `code`; returns how long that took from `t0`. */
async function rejectsWith(
  p: Promise<unknown>,
  code: string,
  what: string,
  t0: number,
): Promise<number> {
  const err = await p.then(() => null, (e) => e);
  const took = performance.now() - t0;
  assert.ok(err instanceof Error, `${what}: resolved, expected ${code}`);
  assert.equal((err as SqliteError).code, code, `${what}: ${err.name}: ${err.message}`);
  assert.ok(took < BOUND_MS, `${what}: ${code} after ${Math.round(took)} ms`);
  return took;
}

/** Point reads of `b`, one after another, while `running` runs: the slowest, in ms. */
async function slowestReadWhile(b: Client, running: Promise<unknown>): Promise<number> {
  let done = false;
  running.finally(() => done = true).catch(() => {});
  let slowest = 0;
  let n = 0;
  while (!done) {
    const t = performance.now();
    assert.deepEqual(await b.values("SELECT v FROM t WHERE id = 7"), [[7]]);
    slowest = Math.max(slowest, performance.now() - t);
    n++;
  }
  assert.ok(n > 0);
  return slowest;
}

type Call = (db: Client, opts: { timeout?: number; signal?: AbortSignal }) => Promise<unknown>;

/**
 * Runs `call` with `{ timeout: 200 }`, or a signal aborted after 200 ms
 * (`how`), and asserts it fails so (`STATEMENT_TIMEOUT`, `ABORTED`) within
 * the bound.
 */
async function stopped(
  how: "timeout" | "signal",
  what: string,
  call: (opts: { timeout?: number; signal?: AbortSignal }) => Promise<unknown>,
): Promise<void> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), 200);
  const t0 = performance.now();
  try {
    await rejectsWith(
      call(how === "timeout" ? { timeout: 200 } : { signal: ac.signal }),
      how === "timeout" ? "STATEMENT_TIMEOUT" : "ABORTED",
      what,
      t0,
    );
  } finally {
    clearTimeout(timer);
  }
}

/** Every kind of statement call, each on a statement that would run for a minute or more. */
const CALLS: [string, Call][] = [
  ["query() of a join", (db, o) => db.query(SLOW_JOIN, [], o)],
  ["values() of a join", (db, o) => db.values(SLOW_JOIN, [], o)],
  ["get() of a join", (db, o) => db.get(SLOW_JOIN, [], o)],
  ["run() of a read", (db, o) => db.run(SLOW_JOIN, [], o)],
  ["iterate() of a join", (db, o) => drain(db.iterate(SLOW_ROWS, [], o)).then(throwIfFailed)],
  ["run() of INSERT ... SELECT", (db, o) => db.run(SLOW_INSERT, [], o)],
  ["run() of UPDATE with a slow subquery", (db, o) => db.run(SLOW_UPDATE, [], o)],
  ["run() of DELETE with a slow subquery", (db, o) => db.run(SLOW_DELETE, [], o)],
  ["query() of UPDATE ... RETURNING", (db, o) => db.query(`${SLOW_UPDATE} RETURNING id`, [], o)],
  [
    "iterate() of INSERT ... RETURNING",
    (db, o) => drain(db.iterate(`${SLOW_INSERT} RETURNING rowid`, [], o)).then(throwIfFailed),
  ],
  ["prepared all()", async (db, o) => (await db.prepare(SLOW_JOIN)).all([], o)],
  ["prepared get()", async (db, o) => (await db.prepare(SLOW_JOIN)).get([], o)],
  ["prepared values()", async (db, o) => (await db.prepare(SLOW_JOIN)).values([], o)],
  ["prepared run() of UPDATE", async (db, o) => (await db.prepare(SLOW_UPDATE)).run([], o)],
  [
    "prepared iterate()",
    async (db, o) => throwIfFailed(await drain((await db.prepare(SLOW_ROWS)).iterate([], o))),
  ],
  [
    "batch() of a write and a slow update",
    (db, o) => db.batch([{ sql: "INSERT INTO log VALUES ('batch')" }, { sql: SLOW_UPDATE }], o),
  ],
];

function throwIfFailed(r: { error: unknown }): void {
  if (r.error !== null) throw r.error;
}

for (const [what, call] of CALLS) {
  Deno.test({
    name: `${what}: stopped at a 200 ms { timeout } with STATEMENT_TIMEOUT, nothing written, ` +
      `the connection usable, other clients answered meanwhile (ffi)`,
    ignore: !FFI,
    fn: async () => {
      await using s = await setup();
      const t0 = performance.now();
      const running = call(s.a, { timeout: 200 });
      const slowest = await slowestReadWhile(s.b, running);
      await rejectsWith(running, "STATEMENT_TIMEOUT", what, t0);
      assert.ok(slowest < 1_000, `${what}: another client's read waited ${slowest} ms`);
      assert.deepEqual(await state(s.a), INITIAL, what);
      // The writer is free: another client writes at once.
      await s.b.run("INSERT INTO log VALUES ('b')");
      assert.deepEqual(await s.a.values("SELECT who FROM log"), [["b"]], what);
    },
  });

  Deno.test({
    name: `${what}: aborted by its signal after 200 ms, the server stops it, nothing written (ffi)`,
    ignore: !FFI,
    fn: async () => {
      await using s = await setup();
      const ac = new AbortController();
      const t0 = performance.now();
      const running = call(s.a, { signal: ac.signal });
      const timer = setTimeout(() => ac.abort(), 200);
      try {
        await rejectsWith(running, "ABORTED", what, t0);
      } finally {
        clearTimeout(timer);
      }
      // The server stopped it: the connection answers at once, and the writer is free.
      const t1 = performance.now();
      assert.deepEqual(await s.a.values("SELECT 42"), [[42]]);
      await s.b.run("INSERT INTO log VALUES ('b')");
      assert.ok(performance.now() - t1 < BOUND_MS, `${what}: next requests waited`);
      assert.deepEqual(await s.a.values("SELECT who FROM log"), [["b"]], what);
      assert.deepEqual((await state(s.a))[0].slice(0, 2), INITIAL[0].slice(0, 2), what);
    },
  });
}

/** Writes inside a transaction, each stopped or aborted as it runs: the transaction must end. */
const TX_WRITES: [string, Call][] = [
  ["run() of INSERT ... SELECT", (db, o) => db.run(SLOW_INSERT, [], o)],
  ["run() of UPDATE", (db, o) => db.run(SLOW_UPDATE, [], o)],
  ["run() of DELETE", (db, o) => db.run(SLOW_DELETE, [], o)],
  ["prepared run() of UPDATE", async (db, o) => (await db.prepare(SLOW_UPDATE)).run([], o)],
  [
    "iterate() of INSERT ... RETURNING",
    (db, o) => drain(db.iterate(`${SLOW_INSERT} RETURNING rowid`, [], o)).then(throwIfFailed),
  ],
  ["batch() with a slow update", (db, o) => db.batch([{ sql: SLOW_UPDATE }], o)],
];

for (const [what, call] of TX_WRITES) {
  for (const how of ["timeout", "signal"] as const) {
    Deno.test({
      name: `${what} inside BEGIN, stopped by its ${how}: the transaction ends, later ` +
        `statements and COMMIT fail with TX_ABORTED, ROLLBACK is a no-op, nothing committed (ffi)`,
      ignore: !FFI,
      fn: async () => {
        await using s = await setup();
        const db = s.a;
        await db.exec("BEGIN");
        await db.run("INSERT INTO log VALUES ('in tx')");
        await stopped(how, what, (opts) => call(db, opts));
        // The client is told the transaction is in a failed state.
        assert.equal(db.inTransaction, true, what);
        // Another client's write gets the writer within the bound: the
        // transaction no longer holds it.
        const t1 = performance.now();
        await s.b.run("INSERT INTO log VALUES ('b')");
        assert.ok(performance.now() - t1 < BOUND_MS, `${what}: b's write waited`);
        await assert.rejects(db.values("SELECT 1"), { code: "TX_ABORTED" }, what);
        await assert.rejects(db.exec("COMMIT"), { code: "TX_ABORTED" }, what);
        await db.exec("ROLLBACK");
        assert.equal(db.inTransaction, false, what);
        assert.deepEqual(await db.values("SELECT who FROM log"), [["b"]], what);
        assert.deepEqual((await state(db))[0].slice(0, 2), INITIAL[0].slice(0, 2), what);
      },
    });
  }
}

/** Reads inside a transaction, stopped or aborted as they run: the transaction goes on. */
const TX_READS: [string, Call][] = [
  ["query() of a join", (db, o) => db.query(SLOW_JOIN, [], o)],
  ["get() of a join", (db, o) => db.get(SLOW_JOIN, [], o)],
  ["iterate() of a join", (db, o) => drain(db.iterate(SLOW_ROWS, [], o)).then(throwIfFailed)],
];

for (const [what, call] of TX_READS) {
  for (const how of ["timeout", "signal"] as const) {
    Deno.test({
      name:
        `${what} inside BEGIN, stopped by its ${how}: the transaction stays open and commits (ffi)`,
      ignore: !FFI,
      fn: async () => {
        await using s = await setup();
        const db = s.a;
        await db.exec("BEGIN");
        await db.run("INSERT INTO log VALUES ('in tx')");
        await stopped(how, what, (opts) => call(db, opts));
        assert.equal(db.inTransaction, true, what);
        assert.deepEqual(await db.values("SELECT who FROM log"), [["in tx"]], what);
        await db.exec("COMMIT");
        assert.deepEqual(await s.b.values("SELECT who FROM log"), [["in tx"]], what);
      },
    });
  }
}

Deno.test({
  name: "transaction(): a write stopped at its { timeout } rejects the transaction with " +
    "STATEMENT_TIMEOUT, nothing committed, the pool goes on (ffi)",
  ignore: !FFI,
  fn: async () => {
    await using s = await setup();
    const pool = await connect({ ...s.srv.connectOptions, max: 3 });
    try {
      const t0 = performance.now();
      await rejectsWith(
        pool.transaction(async (tx) => {
          await tx.run("INSERT INTO log VALUES ('in tx')");
          await tx.run(SLOW_UPDATE, [], { timeout: 200 });
          await tx.run("INSERT INTO log VALUES ('after')");
        }),
        "STATEMENT_TIMEOUT",
        "transaction()",
        t0,
      );
      // A function that swallows the error and carries on gets TX_ABORTED.
      const ac = new AbortController();
      const timer = setTimeout(() => ac.abort(), 200);
      const t1 = performance.now();
      try {
        await rejectsWith(
          pool.transaction(async (tx) => {
            await tx.run("INSERT INTO log VALUES ('in tx 2')");
            await tx.run(SLOW_INSERT, [], { signal: ac.signal }).catch(() => {});
            await tx.run("INSERT INTO log VALUES ('after 2')");
          }),
          "TX_ABORTED",
          "transaction() swallowing",
          t1,
        );
      } finally {
        clearTimeout(timer);
      }
      assert.deepEqual(await state(pool), INITIAL);
      assert.equal(pool.inTransaction, false);
      // A reserved connection, too.
      {
        await using r = await pool.reserve();
        await r.exec("BEGIN");
        const t2 = performance.now();
        await rejectsWith(r.run(SLOW_DELETE, [], { timeout: 200 }), "STATEMENT_TIMEOUT", "r", t2);
        await assert.rejects(r.exec("COMMIT"), { code: "TX_ABORTED" });
        await r.exec("ROLLBACK");
      }
      await pool.run("INSERT INTO log VALUES ('pool')");
      assert.deepEqual(await pool.values("SELECT who FROM log"), [["pool"]]);
    } finally {
      await pool.close();
    }
  },
});

Deno.test({
  name: "exec() of a script: its slow statement stops at --statement-timeout with " +
    "STATEMENT_TIMEOUT naming it; those before it stay, those after never ran (ffi)",
  ignore: !FFI,
  fn: async () => {
    await using s = await setup(300);
    const t0 = performance.now();
    const running = s.a.exec(
      `INSERT INTO log VALUES ('one'); ${SLOW_UPDATE}; INSERT INTO log VALUES ('three')`,
    );
    const slowest = await slowestReadWhile(s.b, running);
    const err = await running.then(() => null, (e) => e);
    assert.equal(err?.code, "STATEMENT_TIMEOUT", String(err));
    assert.match(err.message, /statement 2 of the script/);
    assert.ok(performance.now() - t0 < BOUND_MS + 300);
    assert.ok(slowest < 1_000, `another client's read waited ${slowest} ms`);
    assert.deepEqual(await s.a.values("SELECT who FROM log"), [["one"]]);
    assert.deepEqual((await state(s.a))[0].slice(0, 2), INITIAL[0].slice(0, 2));
  },
});

Deno.test({
  name: "exec() of a script aborted by its signal while its slow statement runs: stopped, " +
    "the statement undone, the next never run (ffi)",
  ignore: !FFI,
  fn: async () => {
    await using s = await setup();
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), 200);
    const t0 = performance.now();
    try {
      await rejectsWith(
        s.a.exec(`INSERT INTO log VALUES ('one'); ${SLOW_UPDATE}; INSERT INTO log VALUES ('3')`, {
          signal: ac.signal,
        }),
        "ABORTED",
        "exec",
        t0,
      );
    } finally {
      clearTimeout(timer);
    }
    const t1 = performance.now();
    assert.deepEqual(await s.a.values("SELECT who FROM log"), [["one"]]);
    assert.ok(performance.now() - t1 < BOUND_MS);
    assert.deepEqual((await state(s.a))[0].slice(0, 2), INITIAL[0].slice(0, 2));
  },
});

Deno.test({
  name: "exec() of a script inside BEGIN whose write stops at --statement-timeout ends the " +
    "transaction: TX_ABORTED until ROLLBACK (ffi)",
  ignore: !FFI,
  fn: async () => {
    await using s = await setup(300);
    await s.a.exec("BEGIN");
    const err = await s.a.exec(`INSERT INTO log VALUES ('one'); ${SLOW_UPDATE}`).then(
      () => null,
      (e) => e,
    );
    assert.equal(err?.code, "STATEMENT_TIMEOUT", String(err));
    assert.equal(s.a.inTransaction, true);
    await assert.rejects(s.a.exec("COMMIT"), { code: "TX_ABORTED" });
    await s.a.exec("ROLLBACK");
    assert.deepEqual(await state(s.a), INITIAL);
  },
});

Deno.test({
  name: "iterate() inside BEGIN: other clients are answered while its slow first row is " +
    "computed, and its signal stops it at once (ffi)",
  ignore: !FFI,
  fn: async () => {
    await using s = await setup();
    await s.a.exec("BEGIN");
    await s.a.run("INSERT INTO log VALUES ('in tx')");
    // Before, a cursor on the writer stepped inline: the server answered
    // nobody until its deadline stopped it, and read no cancel meanwhile.
    const ac = new AbortController();
    const running = drain(s.a.iterate(SLOW_ROWS, [], { timeout: 1_500, signal: ac.signal })).then(
      throwIfFailed,
    );
    const timer = setTimeout(() => ac.abort(), 800);
    const t0 = performance.now();
    let slowest: number;
    try {
      slowest = await slowestReadWhile(s.b, running);
      await rejectsWith(running, "ABORTED", "iterate() in a transaction", t0);
    } finally {
      clearTimeout(timer);
    }
    assert.ok(slowest < 750, `another client's read waited ${slowest} ms`);
    // The server stopped it at the abort, not at its deadline, and the
    // transaction goes on.
    assert.deepEqual(await s.a.values("SELECT who FROM log"), [["in tx"]]);
    assert.ok(performance.now() - t0 < 1_400, `answered after ${performance.now() - t0} ms`);
    await s.a.exec("COMMIT");
    assert.deepEqual(await s.b.values("SELECT who FROM log"), [["in tx"]]);
  },
});

/** A recursive insert of 1.5 million rows: under a second on both engines, far past 200 ms. */
const RECURSIVE_INSERT = "INSERT INTO log(who) WITH RECURSIVE s(x) AS " +
  "(SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 1500000) SELECT 'x' FROM s";

/** Recursive statements: node:sqlite stops them too (README, Limits). */
const RECURSIVE_CALLS: [string, Call][] = [
  ["query() of a recursive read", (db, o) => db.query(RECURSIVE_ROWS, [], o)],
  ["values() of a recursive read", (db, o) => db.values(RECURSIVE_ROWS, [], o)],
  [
    "iterate() of a recursive read",
    (db, o) => drain(db.iterate(RECURSIVE_ROWS, [], o)).then(throwIfFailed),
  ],
  [
    "prepared all() of a recursive read",
    async (db, o) => (await db.prepare(RECURSIVE_ROWS)).all([], o),
  ],
  ["run() of a recursive insert", (db, o) => db.run(RECURSIVE_INSERT, [], o)],
  [
    "prepared run() of a recursive insert",
    async (db, o) => (await db.prepare(RECURSIVE_INSERT)).run([], o),
  ],
  [
    "batch() of a write and a recursive insert",
    (db, o) =>
      db.batch([{ sql: "INSERT INTO log VALUES ('batch')" }, { sql: RECURSIVE_INSERT }], o),
  ],
];

for (const [what, call] of RECURSIVE_CALLS) {
  Deno.test(`${what}: fails with STATEMENT_TIMEOUT at a 200 ms { timeout } on both engines, nothing written`, async () => {
    await using s = await setup();
    const t0 = performance.now();
    await rejectsWith(call(s.a, { timeout: 200 }), "STATEMENT_TIMEOUT", what, t0);
    assert.deepEqual(await state(s.a), INITIAL, what);
    // Inside a transaction: a write ends it, a read leaves it open.
    await s.a.exec("BEGIN");
    await s.a.run("INSERT INTO log VALUES ('in tx')");
    const t1 = performance.now();
    await rejectsWith(call(s.a, { timeout: 200 }), "STATEMENT_TIMEOUT", `${what} in BEGIN`, t1);
    assert.equal(s.a.inTransaction, true);
    if (what.includes("read")) {
      await s.a.exec("COMMIT");
      assert.deepEqual(await s.a.values("SELECT who FROM log"), [["in tx"]], what);
    } else if (what.startsWith("batch") && !FFI) {
      // node:sqlite: the batch, a savepoint of the client's transaction, is
      // undone alone and the transaction stays open (README, Limits). On
      // FFI SQLite's interrupt of its write ends the transaction, as below.
      await s.a.exec("COMMIT");
      assert.deepEqual(await s.a.values("SELECT who FROM log"), [["in tx"]], what);
    } else {
      await assert.rejects(s.a.exec("COMMIT"), { code: "TX_ABORTED" }, what);
      await s.a.exec("ROLLBACK");
      assert.deepEqual(await state(s.a), INITIAL, what);
    }
  });
}

Deno.test("exec() of a script whose recursive insert runs past --statement-timeout stops there on both engines: the statement before stays, the one after never runs", async () => {
  await using s = await setup(200);
  const err = await s.a.exec(
    `INSERT INTO log VALUES ('one'); ${RECURSIVE_INSERT}; INSERT INTO log VALUES ('three')`,
  ).then(() => null, (e) => e);
  assert.equal(err?.code, "STATEMENT_TIMEOUT", String(err));
  assert.match(err.message, /statement 2 of the script/);
  assert.deepEqual(await s.a.values("SELECT who FROM log"), [["one"]]);
});

Deno.test({
  name: "iterate() inside BEGIN stepping in the background: --tx-timeout stops it with " +
    "TX_TIMEOUT, --tx-idle-timeout does not end the transaction meanwhile (ffi)",
  ignore: !FFI,
  fn: async () => {
    for (const [limit, code] of [["txTimeout", "TX_TIMEOUT"], ["txIdleTimeout", null]] as const) {
      const srv = await startServer({ synchronous: "normal", [limit]: 300 });
      const a = await srv.client();
      const b = await srv.client();
      try {
        await a.exec(
          "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER); CREATE TABLE log (who TEXT); " +
            "INSERT INTO t (v) WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s " +
            `LIMIT ${ROWS}) SELECT x FROM s`,
        );
        await a.exec("BEGIN");
        await a.run("INSERT INTO log VALUES ('in tx')");
        const t0 = performance.now();
        const r = await drain(a.iterate(SLOW_ROWS, [], { timeout: 1_000 }));
        const took = performance.now() - t0;
        const err = r.error as SqliteError;
        assert.ok(took < 1_000 + BOUND_MS, `${limit}: ${took} ms`);
        if (code !== null) {
          // The transaction's time is up while the cursor steps: stopped, rolled back.
          assert.equal(err?.code, code, `${limit}: ${err}`);
          assert.ok(took < BOUND_MS, `${limit}: ${took} ms`);
          await b.run("INSERT INTO log VALUES ('b')");
          await assert.rejects(a.exec("COMMIT"), { code }, limit);
          await a.exec("ROLLBACK");
          assert.deepEqual(await a.values("SELECT who FROM log"), [["b"]], limit);
        } else {
          // A transaction whose cursor steps is not idle: its own deadline stops it.
          assert.equal(err?.code, "STATEMENT_TIMEOUT", `${limit}: ${err}`);
          await a.exec("COMMIT");
          assert.deepEqual(await b.values("SELECT who FROM log"), [["in tx"]], limit);
        }
      } finally {
        await a.close();
        await b.close();
        await srv[Symbol.asyncDispose]();
      }
    }
  },
});

Deno.test({
  name: "iterate() inside BEGIN stopped at its deadline in the background closes the " +
    "transaction's other open cursors (CURSOR_CLOSED naming why), and the transaction goes on (ffi)",
  ignore: !FFI,
  fn: async () => {
    await using s = await setup();
    await s.a.exec("BEGIN");
    await s.a.run("INSERT INTO log VALUES ('in tx')");
    // An open cursor of the transaction, one chunk read.
    const open = s.a.iterate<unknown[]>("SELECT id FROM t ORDER BY id", [], { arrays: true });
    const first = await open.next();
    assert.deepEqual(first.value, [1]);
    const t0 = performance.now();
    await rejectsWith(
      drain(s.a.iterate(SLOW_ROWS, [], { timeout: 200 })).then(throwIfFailed),
      "STATEMENT_TIMEOUT",
      "slow cursor",
      t0,
    );
    // SQLite's interrupt stopped every statement of the writer (README, Timeouts).
    const rest = await drain({ [Symbol.asyncIterator]: () => open });
    assert.equal((rest.error as SqliteError)?.code, "CURSOR_CLOSED", String(rest.error));
    assert.match(String(rest.error), /STATEMENT_TIMEOUT/);
    assert.equal(s.a.inTransaction, true);
    await s.a.exec("COMMIT");
    assert.deepEqual(await s.b.values("SELECT who FROM log"), [["in tx"]]);
  },
});

Deno.test({
  name: "once a change feed captures, a slow write (run on the main thread) still stops at its " +
    "{ timeout } with STATEMENT_TIMEOUT, nothing written (ffi)",
  ignore: !FFI,
  fn: async () => {
    await using s = await setup();
    const sub = await s.b.subscribe({ tables: ["log"] });
    try {
      for (const [what, sql] of [["UPDATE", SLOW_UPDATE], ["INSERT ... SELECT", SLOW_INSERT]]) {
        const t0 = performance.now();
        await rejectsWith(s.a.run(sql, [], { timeout: 200 }), "STATEMENT_TIMEOUT", what, t0);
        assert.deepEqual(await state(s.a), INITIAL, what);
      }
      await s.a.exec("BEGIN");
      await s.a.run("INSERT INTO log VALUES ('in tx')");
      const t1 = performance.now();
      await rejectsWith(s.a.run(SLOW_UPDATE, [], { timeout: 200 }), "STATEMENT_TIMEOUT", "tx", t1);
      await assert.rejects(s.a.exec("COMMIT"), { code: "TX_ABORTED" });
      await s.a.exec("ROLLBACK");
      assert.deepEqual(await state(s.a), INITIAL);
    } finally {
      await sub.return();
    }
  },
});
