/**
 * A cancel naming a request that already wrote inside the open transaction
 * ends that transaction, on both engines, however the race between the
 * write and the cancel went: the client was told `ABORTED`, so nothing of
 * the transaction may commit. A cancel of a read, of a request outside a
 * transaction, of an unknown id, or after the transaction ended changes
 * nothing.
 */

import assert from "node:assert/strict";
import { AbortError, type Client, connect, SqliteError } from "../mod.ts";
import { Op, Status } from "../protocol/messages.ts";
import { delay, startServer, statsUntil } from "./_helpers.ts";
import { Wire } from "./_wire.ts";

const ENGINES = ["ffi", "node"] as const;

/** One kind of request that writes inside the transaction: sends it, returns its id once answered OK. */
type Writer = (wire: Wire) => Promise<number>;

/** Awaits the reply to `id`, which must be a success. */
async function answered(wire: Wire, id: number): Promise<number> {
  const [got, status, body] = await wire.reply();
  assert.equal(got, id);
  assert.equal(status & Status.Error, 0, JSON.stringify(body));
  assert.equal(status & Status.InTransaction, Status.InTransaction);
  return id;
}

const WRITERS: [string, Writer][] = [
  ["run", async (w) => answered(w, await w.send(Op.Run, "INSERT INTO t VALUES (2)", null, null))],
  [
    "query (INSERT ... RETURNING)",
    async (w) => answered(w, await w.send(Op.Query, "INSERT INTO t VALUES (2) RETURNING x", null)),
  ],
  [
    "exec (a script)",
    async (w) => answered(w, await w.send(Op.Exec, "SELECT 1; INSERT INTO t VALUES (2); SELECT 2")),
  ],
  [
    "batch (a savepoint of the transaction)",
    async (w) =>
      answered(w, await w.send(Op.Batch, [["SELECT 1", null], ["INSERT INTO t VALUES (2)", null]])),
  ],
  ["a prepared handle's run", async (w) => {
    const { body } = await w.call(Op.Prepare, "INSERT INTO t VALUES (?)");
    const handle = (body as [number])[0];
    return answered(w, await w.send(Op.Run, handle, [2], null));
  }],
  ["a cursor's next (INSERT ... RETURNING)", async (w) => {
    const { status, body } = await w.call(
      Op.Iterate,
      "INSERT INTO t SELECT value FROM json_each('[2,3]') RETURNING x",
      null,
    );
    assert.equal(status & Status.Error, 0, JSON.stringify(body));
    return answered(w, await w.send(Op.Next, (body as [number])[0]));
  }],
];

for (const engine of ENGINES) {
  for (const [kind, write] of WRITERS) {
    Deno.test(`a cancel after ${kind} wrote inside the transaction rolls it back (${engine})`, async () => {
      await using srv = await startServer({ engine });
      await using wire = await Wire.open(srv.connectOptions.path!);
      await wire.ok("CREATE TABLE t (x)");
      await wire.ok("BEGIN");
      await wire.ok("INSERT INTO t VALUES (1)");
      const id = await write(wire);
      assert.ok(await wire.count() >= 2, "the write ran, inside the transaction");
      await wire.cancel(id);
      const message = await wire.fails("INSERT INTO t VALUES (3)", "TX_ABORTED");
      assert.match(message, new RegExp(`ABORTED: Request ${id} was cancelled after it wrote`));
      await wire.fails("COMMIT", "TX_ABORTED");
      // After COMMIT was refused, the ROLLBACK clients send is a no-op, and ends it.
      const status = await wire.ok("ROLLBACK");
      assert.equal(status & Status.InTransaction, 0);
      assert.equal(await wire.count(), 0, "nothing of the transaction stayed");
    });
  }

  Deno.test(`ROLLBACK after a cancel ended the transaction is a no-op, and the connection goes on (${engine})`, async () => {
    await using srv = await startServer({ engine });
    await using wire = await Wire.open(srv.connectOptions.path!);
    await wire.ok("CREATE TABLE t (x)");
    await wire.ok("BEGIN");
    const id = await answered(
      wire,
      await wire.send(Op.Run, "INSERT INTO t VALUES (1)", null, null),
    );
    await wire.cancel(id);
    await wire.cancel(id); // a second cancel changes nothing more
    assert.equal((await wire.ok("ROLLBACK")) & Status.InTransaction, 0);
    await wire.ok("INSERT INTO t VALUES (2)");
    assert.equal(await wire.count(), 1);
  });

  Deno.test(`a cancel of a read, of BEGIN, or of an unknown request leaves the transaction open (${engine})`, async () => {
    await using srv = await startServer({ engine });
    await using wire = await Wire.open(srv.connectOptions.path!);
    await wire.ok("CREATE TABLE t (x)");
    const begin = await wire.send(Op.Run, "BEGIN", null, null);
    await answered(wire, begin);
    await wire.ok("INSERT INTO t VALUES (1)");
    const read = await answered(wire, await wire.send(Op.Query, "SELECT * FROM t", null, null));
    const readInScript = await answered(wire, await wire.send(Op.Exec, "SELECT 1; SELECT 2"));
    const { body } = await wire.call(Op.Iterate, "SELECT x FROM t", null);
    const next = await answered(wire, await wire.send(Op.Next, (body as [number])[0]));
    const explain = await answered(
      wire,
      await wire.send(Op.Query, "EXPLAIN INSERT INTO t VALUES (3)", null),
    );
    for (const id of [begin, read, readInScript, next, explain, 999]) await wire.cancel(id);
    await wire.ok("INSERT INTO t VALUES (2)");
    await wire.ok("COMMIT");
    assert.equal(await wire.count(), 2);
  });

  Deno.test(`a cancel after a write in autocommit, or after its transaction ended, changes nothing (${engine})`, async () => {
    await using srv = await startServer({ engine });
    await using wire = await Wire.open(srv.connectOptions.path!);
    await wire.ok("CREATE TABLE t (x)");
    const auto = await wire.send(Op.Run, "INSERT INTO t VALUES (1)", null, null);
    const [got, status] = await wire.reply();
    assert.deepEqual([got, status], [auto, Status.Ok]);
    await wire.cancel(auto);
    assert.equal(await wire.count(), 1, "the autocommit write stays");
    await wire.ok("BEGIN");
    const committed = await answered(
      wire,
      await wire.send(Op.Run, "INSERT INTO t VALUES (2)", null, null),
    );
    await wire.ok("COMMIT");
    await wire.ok("BEGIN");
    await wire.ok("INSERT INTO t VALUES (3)");
    await wire.cancel(committed); // its transaction is over: the new one is not its
    // A script that wrote and then ended its transaction, leaving a new one open.
    const script = await answered(
      wire,
      await wire.send(Op.Exec, "INSERT INTO t VALUES (4); COMMIT; BEGIN; SELECT 1"),
    );
    await wire.cancel(script);
    await wire.ok("INSERT INTO t VALUES (5)");
    await wire.ok("COMMIT");
    assert.equal(await wire.count(), 5);
  });

  Deno.test(`a script cancelled while it runs inside a transaction, having written, rolls it back (${engine})`, async () => {
    await using srv = await startServer({ engine });
    await using wire = await Wire.open(srv.connectOptions.path!);
    await wire.ok("CREATE TABLE t (x)");
    await wire.ok("BEGIN");
    // Long enough to run from the event loop, a slice at a time (#inTurns).
    const insert =
      "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000) " +
      "INSERT INTO t SELECT x FROM c;";
    const before = (await statsUntil(srv.connectOptions, () => true, "stats")).bytes.in;
    const sql = insert.repeat(2000);
    const script = await wire.send(Op.Exec, sql);
    // Cancelled once the server has read all of it (it then runs): a fixed
    // pause could end first on a loaded machine. (The stats polls add far
    // fewer bytes than the script's 230 KB.)
    await statsUntil(srv.connectOptions, (s) => s.bytes.in >= before + sql.length, "it was read");
    await wire.cancel(script);
    const [got, status, body] = await wire.reply();
    assert.equal(got, script);
    assert.equal(status & Status.Error, Status.Error, "stopped before its end");
    assert.equal((body as { code: string }).code, "ABORTED");
    assert.match((body as { message: string }).message, /rolled back the transaction/);
    await wire.fails("SELECT 1", "TX_ABORTED");
    await wire.ok("ROLLBACK");
    assert.equal(await wire.count(), 0);
  });

  Deno.test(`a batch cancelled while it runs inside a transaction, having written, rolls it back (${engine})`, async () => {
    await using srv = await startServer({ engine });
    await using wire = await Wire.open(srv.connectOptions.path!);
    await wire.ok("CREATE TABLE t (x)");
    await wire.ok("BEGIN");
    await wire.ok("INSERT INTO t VALUES (1)");
    // A write, then a read slow enough for the cancel to stop it (on the FFI
    // engine, where it runs in the background): the batch's savepoint is
    // undone, and the cancel ends the transaction as for exec().
    const slow =
      "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1500000) " +
      "SELECT count(*) FROM c";
    const batch = await wire.send(Op.Batch, [["INSERT INTO t VALUES (2)", null], [slow, null]]);
    await delay(50);
    await wire.cancel(batch);
    const [got, status, body] = await wire.reply();
    assert.equal(got, batch);
    if (engine === "ffi") {
      assert.equal(status & Status.Error, Status.Error, "stopped before its end");
    }
    // (node:sqlite runs it to its end before it reads the cancel.)
    if (status & Status.Error) {
      assert.equal((body as { code: string }).code, "ABORTED");
      assert.match((body as { message: string }).message, /rolled back the transaction/);
    }
    await wire.fails("INSERT INTO t VALUES (3)", "TX_ABORTED");
    await wire.fails("COMMIT", "TX_ABORTED");
    assert.equal((await wire.ok("ROLLBACK")) & Status.InTransaction, 0);
    assert.equal(await wire.count(), 0, "nothing of the transaction stayed");
  });

  // A batch that fails on its own inside a transaction undoes its savepoint
  // alone: the transaction stays open, and its earlier writes commit.
  Deno.test(`a batch failing on a constraint inside a transaction leaves it open (${engine})`, async () => {
    await using srv = await startServer({ engine });
    await using wire = await Wire.open(srv.connectOptions.path!);
    await wire.ok("CREATE TABLE t (x UNIQUE)");
    await wire.ok("BEGIN");
    await wire.ok("INSERT INTO t VALUES (1)");
    const { status, body } = await wire.call(Op.Batch, [
      ["INSERT INTO t VALUES (2)", null],
      ["INSERT INTO t VALUES (1)", null],
    ]);
    assert.equal(status & Status.Error, Status.Error);
    assert.match((body as { code: string }).code, /^SQLITE_CONSTRAINT/);
    await wire.ok("INSERT INTO t VALUES (3)");
    await wire.ok("COMMIT");
    assert.equal(await wire.count(), 2);
  });

  // Through the client, as the review found it: `{ signal }` rejects the call
  // at once and sends cancel; on node:sqlite the write has always finished by
  // the time the server reads the cancel (it runs on the main thread).
  Deno.test(`a write aborted by its signal inside a transaction never commits (${engine})`, async () => {
    await using srv = await startServer({ engine });
    await using db = await srv.client();
    await db.exec("CREATE TABLE t (x); CREATE TABLE big (x)");
    const slow =
      "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000) " +
      "INSERT INTO big SELECT x FROM c";
    let seen = false; // the write ran before the cancel came (or was stopped) at least once
    for (let attempt = 0; attempt < 10 && !seen; attempt++) {
      await db.exec("BEGIN");
      await db.run("INSERT INTO t VALUES (1)");
      const ac = new AbortController();
      const call = db.run(slow, [], { signal: ac.signal });
      const timer = setTimeout(() => ac.abort(), 5);
      const outcome = await call.then(() => "resolved", (e: unknown) => e);
      clearTimeout(timer);
      if (outcome === "resolved") { // the reply won the race: the abort came too late
        await db.exec("ROLLBACK");
        continue;
      }
      assert.ok(outcome instanceof AbortError, String(outcome));
      const next = await db.values("SELECT count(*) FROM big").then((v) => v, (e: unknown) => e);
      if (Array.isArray(next)) {
        // The cancel came before the write began: it never ran.
        assert.deepEqual(
          next,
          [[0]],
          "a write the client was told ABORTED stays in the transaction",
        );
        await db.exec("ROLLBACK");
        continue;
      }
      assert.ok(next instanceof SqliteError, String(next));
      assert.equal(next.code, "TX_ABORTED");
      await assert.rejects(db.exec("COMMIT"), { code: "TX_ABORTED" });
      await db.exec("ROLLBACK");
      seen = true;
    }
    assert.ok(seen, "in 10 attempts the write never ran before its abort");
    assert.equal(db.inTransaction, false);
    assert.deepEqual(
      await db.values("SELECT (SELECT count(*) FROM t), (SELECT count(*) FROM big)"),
      [[
        0,
        0,
      ]],
    );
  });

  Deno.test(`a read aborted by its signal inside a transaction leaves it usable (${engine})`, async () => {
    await using srv = await startServer({ engine });
    await using db = await srv.client();
    await db.exec("CREATE TABLE t (x)");
    await db.exec("BEGIN");
    await db.run("INSERT INTO t VALUES (1)");
    const ac = new AbortController();
    const slow =
      "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000) " +
      "SELECT count(*) FROM c";
    const call = db.values(slow, [], { signal: ac.signal });
    const timer = setTimeout(() => ac.abort(), 5);
    await call.catch((e: unknown) => assert.ok(e instanceof AbortError, String(e)));
    clearTimeout(timer);
    await db.run("INSERT INTO t VALUES (2)");
    await db.exec("COMMIT");
    assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[2]]);
  });

  Deno.test(`an autocommit write aborted by its signal after it ran stays (${engine})`, async () => {
    await using srv = await startServer({ engine });
    await using db: Client = await srv.client();
    await db.exec("CREATE TABLE big (x)");
    const ac = new AbortController();
    const slow =
      "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000) " +
      "INSERT INTO big SELECT x FROM c";
    const call = db.run(slow, [], { signal: ac.signal });
    const timer = setTimeout(() => ac.abort(), 5);
    const outcome = await call.then(() => "resolved", (e: unknown) => e);
    clearTimeout(timer);
    assert.ok(outcome === "resolved" || outcome instanceof AbortError, String(outcome));
    // Its outcome is unknown to the client; the connection is usable, and
    // the write either ran whole (and stays) or not at all.
    const [[n]] = await db.values<[number]>("SELECT count(*) FROM big");
    assert.ok(n === 0 || n === 200_000, `${n} rows`);
    assert.equal(db.inTransaction, false);
  });
}

/** A query slow enough (tens of ms) to have requests queue behind it. */
const SLOW_READ =
  "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000) " +
  "SELECT count(*) FROM c";

/** Requests that write inside the transaction, sent unrun (queued, then cancelled). */
const QUEUED_WRITES: [string, unknown[]][] = [
  ["a run", [Op.Run, "INSERT INTO t VALUES (2)", null, null]],
  ["a query (INSERT ... RETURNING)", [Op.Query, "INSERT INTO t VALUES (2) RETURNING x", null]],
  ["an exec (a script whose second statement writes)", [
    Op.Exec,
    "SELECT 1; INSERT INTO t VALUES (2)",
  ]],
  ["a batch", [Op.Batch, [["SELECT 1", null], ["INSERT INTO t VALUES (2)", null]]]],
];

/** Requests that only read, sent unrun (queued, then cancelled). */
const QUEUED_READS: [string, unknown[]][] = [
  ["query", [Op.Query, "SELECT * FROM t", null]],
  ["exec (a script of reads)", [Op.Exec, "SELECT 1; SELECT 2"]],
  ["run of COMMIT", [Op.Run, "COMMIT", null, null]],
  // SQLite calls `EXPLAIN <write>` no read-only statement; it runs nothing.
  ["query of EXPLAIN INSERT", [Op.Query, "EXPLAIN INSERT INTO t VALUES (2)", null]],
  ["query of EXPLAIN QUERY PLAN UPDATE", [Op.Query, "EXPLAIN QUERY PLAN UPDATE t SET x = 3", null]],
  ["exec of EXPLAIN DELETE", [Op.Exec, "/* plan */ explain DELETE FROM t"]],
];

for (const engine of ENGINES) {
  for (const [kind, request] of QUEUED_WRITES) {
    Deno.test(`${kind} that writes, cancelled while queued inside the transaction, ends it (${engine})`, async () => {
      await using srv = await startServer({ engine });
      await using wire = await Wire.open(srv.connectOptions.path!);
      await wire.ok("CREATE TABLE t (x)");
      await wire.ok("BEGIN");
      await wire.ok("INSERT INTO t VALUES (1)");
      // The write queues behind a slow read; the cancel comes in the same read.
      const target = wire.nextId + 1;
      const [read, write] = await wire.sendAll(
        [Op.Query, SLOW_READ, null],
        request,
        [Op.Cancel, target],
      );
      assert.equal(write, target);
      const replies = [await wire.reply(), await wire.reply()];
      const byId = new Map(replies.map(([id, status, body]) => [id, { status, body }]));
      assert.equal(byId.get(read)!.status & Status.Error, 0, "the read ahead ran");
      const cancelled = byId.get(write)!;
      assert.equal(cancelled.status & Status.Error, Status.Error);
      assert.equal((cancelled.body as { code: string }).code, "ABORTED");
      assert.match((cancelled.body as { message: string }).message, /cancelled before it ran/);
      const message = await wire.fails("INSERT INTO t VALUES (3)", "TX_ABORTED");
      assert.match(
        message,
        new RegExp(`Request ${write} was cancelled before it ran, and would have written`),
      );
      await wire.fails("COMMIT", "TX_ABORTED");
      assert.equal((await wire.ok("ROLLBACK")) & Status.InTransaction, 0);
      assert.equal(await wire.count(), 0, "nothing of the transaction stayed");
    });
  }

  Deno.test(`reads, and COMMIT, cancelled while queued leave the transaction usable (${engine})`, async () => {
    await using srv = await startServer({ engine });
    await using wire = await Wire.open(srv.connectOptions.path!);
    await wire.ok("CREATE TABLE t (x)");
    await wire.ok("BEGIN");
    await wire.ok("INSERT INTO t VALUES (1)");
    for (const [, request] of QUEUED_READS) {
      const target = wire.nextId + 1;
      await wire.sendAll([Op.Query, SLOW_READ, null], request, [Op.Cancel, target]);
      await wire.reply();
      await wire.reply();
    }
    await wire.ok("INSERT INTO t VALUES (2)");
    await wire.ok("COMMIT");
    assert.equal(await wire.count(), 2);
  });

  Deno.test(`a cancel carrying a write never sent ends the transaction; a read's does not (${engine})`, async () => {
    await using srv = await startServer({ engine });
    await using wire = await Wire.open(srv.connectOptions.path!);
    await wire.ok("CREATE TABLE t (x)");
    await wire.ok("BEGIN");
    await wire.ok("INSERT INTO t VALUES (1)");
    // A read never sent: nothing changes, no reply comes for it.
    await wire.send(Op.Cancel, 9000, [Op.Query, "SELECT * FROM t", null]);
    // Nor does EXPLAIN of a write, which runs nothing.
    await wire.send(Op.Cancel, 8999, [Op.Query, "EXPLAIN INSERT INTO t VALUES (3)", null]);
    await wire.send(Op.Cancel, 8998, [Op.Exec, "EXPLAIN QUERY PLAN DELETE FROM t"]);
    await wire.ok("INSERT INTO t VALUES (2)");
    // A write never sent: the request after it finds the transaction ended.
    await wire.send(Op.Cancel, 9001, [Op.Run, "INSERT INTO t VALUES (3)", null, null]);
    const message = await wire.fails("INSERT INTO t VALUES (4)", "TX_ABORTED");
    assert.match(message, /Request 9001 was cancelled before it ran, and would have written/);
    await wire.fails("COMMIT", "TX_ABORTED");
    await wire.ok("ROLLBACK");
    // Outside a transaction it changes nothing.
    await wire.send(Op.Cancel, 9002, [Op.Run, "INSERT INTO t VALUES (5)", null, null]);
    await wire.ok("INSERT INTO t VALUES (6)");
    assert.equal(await wire.count(), 1);
  });

  Deno.test(`a write whose signal aborted before the call, inside transaction(), keeps the transaction from committing (${engine})`, async () => {
    await using srv = await startServer({ engine });
    await using db = await connect({ ...srv.connectOptions, max: 2 });
    await db.exec("CREATE TABLE t (x)");
    let swallowed: unknown = null;
    await assert.rejects(
      db.transaction(async (tx) => {
        await tx.run("INSERT INTO t VALUES (1)");
        try {
          await tx.run("INSERT INTO t VALUES (2)", [], { signal: AbortSignal.abort() });
        } catch (err) {
          swallowed = err; // and carries on, as if nothing happened
        }
      }),
      { code: "TX_ABORTED" },
    );
    assert.ok(swallowed instanceof AbortError, String(swallowed));
    // A read aborted so leaves the transaction usable.
    await db.transaction(async (tx) => {
      await tx.run("INSERT INTO t VALUES (3)");
      await tx.values("SELECT 1", [], { signal: AbortSignal.abort() }).catch(() => {});
    });
    assert.deepEqual(await db.values("SELECT x FROM t"), [[3]]);
  });

  Deno.test(`a write whose signal aborted before the call ends a reserved connection's BEGIN and a max 1 client's (${engine})`, async () => {
    await using srv = await startServer({ engine });
    {
      await using db = await connect({ ...srv.connectOptions, max: 2 });
      await db.exec("CREATE TABLE t (x)");
      await using r = await db.reserve();
      await r.exec("BEGIN");
      await r.run("INSERT INTO t VALUES (1)");
      await assert.rejects(
        r.run("INSERT INTO t VALUES (2)", [], { signal: AbortSignal.abort() }),
        AbortError,
      );
      await assert.rejects(r.exec("COMMIT"), { code: "TX_ABORTED" });
      await r.exec("ROLLBACK");
    }
    await using one = await connect({ ...srv.connectOptions, max: 1 });
    await one.exec("BEGIN");
    await one.run("INSERT INTO t VALUES (3)");
    await assert.rejects(
      one.exec("INSERT INTO t VALUES (4)", { signal: AbortSignal.abort() }),
      AbortError,
    );
    await assert.rejects(one.exec("COMMIT"), { code: "TX_ABORTED" });
    await one.exec("ROLLBACK");
    assert.deepEqual(await one.values("SELECT count(*) FROM t"), [[0]]);
  });

  Deno.test(`a write stopped at its timeout inside a transaction ends it (${engine})`, async () => {
    await using srv = await startServer({ engine });
    await using db = await srv.client();
    await db.exec("CREATE TABLE t (x); CREATE TABLE acc (bal); INSERT INTO acc VALUES (1)");
    // Recursive: node:sqlite checks its deadline when it ends, and undoes it.
    const slow = "UPDATE acc SET bal = bal + 1 WHERE (WITH RECURSIVE c(x) AS " +
      "(SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) SELECT count(*) FROM c) > 0";
    let swallowed: unknown = null;
    await assert.rejects(
      db.transaction(async (tx) => {
        await tx.run("INSERT INTO t VALUES (1)");
        try {
          await tx.run(slow, [], { timeout: 20 });
        } catch (err) {
          swallowed = err;
        }
      }),
      (err: SqliteError) => {
        assert.equal(err.code, "TX_ABORTED");
        assert.match(err.message, /STATEMENT_TIMEOUT/);
        return true;
      },
    );
    assert.ok(swallowed instanceof SqliteError, String(swallowed));
    assert.equal(swallowed.code, "STATEMENT_TIMEOUT");
    assert.match(swallowed.message, /rolled back the transaction/);
    assert.deepEqual(await db.values("SELECT (SELECT count(*) FROM t), (SELECT bal FROM acc)"), [[
      0,
      1,
    ]]);
  });
}

for (const engine of ENGINES) {
  Deno.test(`an aborted call larger than the server's maxFrameSize never closes the connection, and still ends the transaction it would have written in (${engine})`, async () => {
    await using srv = await startServer({ engine, maxFrameSize: 64 * 1024 });
    await using db = await srv.client();
    await db.exec("CREATE TABLE t (x); CREATE TEMP TABLE mark (x)"); // TEMP: lost with its connection
    const blob = new Uint8Array(100 * 1024);
    // Another caller's request pending on the one connection, outside a transaction.
    const other = db.values(
      "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000) " +
        "SELECT count(*) FROM c",
    );
    await assert.rejects(
      db.run("INSERT INTO t VALUES (?)", [blob], { signal: AbortSignal.abort() }),
      AbortError,
    );
    assert.deepEqual(await other, [[200000]]);
    // Inside a transaction: the parameters are left out, the SQL judged (a write ends it) ...
    await db.exec("BEGIN");
    await db.run("INSERT INTO t VALUES (1)");
    await assert.rejects(
      db.run("INSERT INTO t VALUES (?)", [blob], { signal: AbortSignal.abort() }),
      AbortError,
    );
    await assert.rejects(db.exec("COMMIT"), (err: SqliteError) => {
      assert.equal(err.code, "TX_ABORTED");
      assert.match(err.message, /would have written inside the open transaction/);
      return true;
    });
    await db.exec("ROLLBACK");
    // ... a read does not.
    await db.exec("BEGIN");
    await db.run("INSERT INTO t VALUES (2)");
    await assert.rejects(
      db.values("SELECT length(?)", [blob], { signal: AbortSignal.abort() }),
      AbortError,
    );
    await db.exec("COMMIT");
    // SQL too large to carry at all: counted as a write.
    const script = `SELECT 1;${" ".repeat(100 * 1024)}`;
    await db.exec("BEGIN");
    await db.run("INSERT INTO t VALUES (3)");
    await assert.rejects(db.exec(script, { signal: AbortSignal.abort() }), AbortError);
    await assert.rejects(db.exec("COMMIT"), (err: SqliteError) => {
      assert.equal(err.code, "TX_ABORTED");
      assert.match(err.message, /may have written inside the open transaction/);
      return true;
    });
    await db.exec("ROLLBACK");
    assert.deepEqual(await db.values("SELECT x FROM t"), [[2]]);
    assert.deepEqual(await db.values("SELECT count(*) FROM temp.mark"), [[0]]); // same connection
  });
}
