/**
 * The handle `transaction(fn)` gives `fn` refuses statements that would
 * begin or end its transaction (`BEGIN`, `COMMIT`, `END`, `ROLLBACK`
 * without `TO`, a savepoint of `transaction()`'s own): sent, a `COMMIT`
 * would end the transaction while `fn` goes on, and its later statements
 * would run in autocommit, kept whatever `transaction()` reports.
 * Savepoints of other names stay allowed; a reserved connection and a
 * `max: 1` client keep running raw `BEGIN`/`COMMIT`.
 */

import assert from "node:assert/strict";
import { type Client, connect, type Queryable, SqliteError } from "../mod.ts";
import { findTxEnd } from "../client/_tx_control.ts";
import { startServer } from "./_helpers.ts";

const ENGINES = ["ffi", "node"] as const;

/** Each way a statement reaches the server through a query object. */
const SENDERS: [string, (q: Queryable, sql: string) => Promise<unknown>][] = [
  ["exec", (q, sql) => q.exec(sql)],
  ["run", (q, sql) => q.run(sql)],
  ["query", (q, sql) => q.query(sql)],
  ["get", (q, sql) => q.get(sql)],
  ["values", (q, sql) => q.values(sql)],
  ["prepare", (q, sql) => q.prepare(sql)],
  ["iterate", async (q, sql) => {
    for await (const _ of q.iterate(sql)) { /* drain */ }
  }],
];

/** Statements that end (or begin) the transaction, in spellings SQLite accepts. */
const ENDING = [
  "COMMIT",
  "commit transaction",
  "END",
  "end transaction;",
  "ROLLBACK",
  "/* why */ Rollback -- now\n TRANSACTION",
  "ROLLBACK TRANSACTION t1",
  "BEGIN",
  "begin immediate transaction",
];

function isTxControl(err: unknown): boolean {
  assert.ok(err instanceof SqliteError, `expected SqliteError, got ${err}`);
  assert.equal(err.code, "TX_CONTROL");
  assert.match(err.message, /^Cannot run "[A-Z]+" inside transaction\(\): transaction\(\) ends/);
  assert.match(err.message, /savepoints .* nested tx\.transaction\(\)$/);
  return true;
}

/** A `TX_UNDO_FAILED` `SqliteError` whose message matches `message`. */
function isUndoFailed(err: unknown, message?: RegExp): boolean {
  assert.ok(err instanceof SqliteError, `expected SqliteError, got ${err}`);
  assert.equal(err.code, "TX_UNDO_FAILED", err.message);
  if (message !== undefined) assert.match(err.message, message);
  return true;
}

async function rows(db: Queryable): Promise<string[]> {
  return (await db.values<[string]>("SELECT v FROM q ORDER BY id")).map(([v]) => v);
}

for (const engine of ENGINES) {
  Deno.test(`${engine}: tx refuses COMMIT/ROLLBACK/END/BEGIN; fn's throw undoes every write`, async () => {
    await using srv = await startServer({ engine });
    await using db = await connect({ ...srv.connectOptions, max: 3 });
    await db.exec("CREATE TABLE q (id INTEGER PRIMARY KEY, v TEXT)");
    for (const sql of ENDING) {
      for (const [how, send] of SENDERS) {
        const failure = db.transaction(async (tx) => {
          await tx.run("INSERT INTO q (v) VALUES ('a')");
          await assert.rejects(send(tx, sql), isTxControl, `${how}(${JSON.stringify(sql)})`);
          assert.ok(tx.inTransaction, `${how}(${JSON.stringify(sql)}) left the transaction open`);
          await tx.run("INSERT INTO q (v) VALUES ('b')");
          throw new Error("undo");
        });
        await assert.rejects(failure, /^Error: undo$/);
        assert.deepEqual(await rows(db), [], `${how}(${JSON.stringify(sql)}): nothing kept`);
      }
    }
  });

  Deno.test(`${engine}: tx refuses an exec script that ends the transaction, before sending any of it`, async () => {
    await using srv = await startServer({ engine });
    await using db = await connect({ ...srv.connectOptions, max: 3 });
    await db.exec("CREATE TABLE q (id INTEGER PRIMARY KEY, v TEXT)");
    const value = await db.transaction(async (tx) => {
      await tx.run("INSERT INTO q (v) VALUES ('a')");
      for (
        const script of [
          "INSERT INTO q (v) VALUES ('x'); COMMIT; INSERT INTO q (v) VALUES ('y')",
          "INSERT INTO q (v) VALUES ('x');\n-- done\nROLLBACK",
          "SAVEPOINT s; INSERT INTO q (v) VALUES ('x'); END",
        ]
      ) {
        await assert.rejects(tx.exec(script), isTxControl, script);
      }
      // Trigger bodies, strings and comments are not statements of their own.
      await tx.exec(
        "CREATE TRIGGER q_t AFTER INSERT ON q WHEN new.v = 'never' BEGIN SELECT 1; END; " +
          "SELECT 'COMMIT' /* ROLLBACK */",
      );
      await tx.run("INSERT INTO q (v) VALUES ('b')");
      return "done";
    });
    assert.equal(value, "done");
    assert.deepEqual(await rows(db), ["a", "b"], "no statement of a refused script ran");
  });

  Deno.test(`${engine}: tx refuses raw COMMIT on the success path; transaction() commits once`, async () => {
    await using srv = await startServer({ engine });
    await using db = await connect({ ...srv.connectOptions, max: 3 });
    await db.exec("CREATE TABLE q (id INTEGER PRIMARY KEY, v TEXT)");
    const value = await db.transaction(async (tx) => {
      await tx.run("INSERT INTO q (v) VALUES ('a')");
      await assert.rejects(tx.exec("COMMIT"), isTxControl);
      // Not yet committed: another connection does not see 'a'.
      assert.deepEqual(await rows(db), []);
      await tx.run("INSERT INTO q (v) VALUES ('b')");
      return 7;
    });
    assert.equal(value, 7);
    assert.deepEqual(await rows(db), ["a", "b"]);
  });

  Deno.test(`${engine}: tx keeps SAVEPOINT, RELEASE and ROLLBACK TO of its own savepoints`, async () => {
    await using srv = await startServer({ engine });
    await using db = await connect({ ...srv.connectOptions, max: 3 });
    await db.exec("CREATE TABLE q (id INTEGER PRIMARY KEY, v TEXT)");
    await db.transaction(async (tx) => {
      await tx.run("INSERT INTO q (v) VALUES ('a')");
      await tx.exec("SAVEPOINT s1");
      await tx.run("INSERT INTO q (v) VALUES ('gone')");
      await tx.run("ROLLBACK TO s1");
      await tx.exec("ROLLBACK TRANSACTION TO SAVEPOINT s1; RELEASE SAVEPOINT s1");
      await tx.exec("SAVEPOINT s2; INSERT INTO q (v) VALUES ('b'); RELEASE s2");
      const stmt = await tx.prepare("SAVEPOINT s3");
      await stmt.run();
      await stmt.finalize();
      await tx.run("INSERT INTO q (v) VALUES ('gone too')");
      await tx.run("rollback to s3");
      await tx.run("release s3");
      assert.ok(tx.inTransaction);
    });
    assert.deepEqual(await rows(db), ["a", "b"]);
  });

  Deno.test(`${engine}: nested tx refuses RELEASE/ROLLBACK TO of transaction()'s savepoints`, async () => {
    await using srv = await startServer({ engine });
    await using db = await connect({ ...srv.connectOptions, max: 3 });
    await db.exec("CREATE TABLE q (id INTEGER PRIMARY KEY, v TEXT)");
    const reserved = (err: unknown): boolean => {
      assert.ok(err instanceof SqliteError);
      assert.equal(err.code, "TX_CONTROL");
      assert.match(err.message, /^Cannot run "(RELEASE|ROLLBACK TO|SAVEPOINT) netsqlite_sp1"/i);
      assert.match(err.message, /are transaction\(\)'s own/);
      return true;
    };
    await db.transaction(async (tx) => {
      await tx.run("INSERT INTO q (v) VALUES ('a')");
      await assert.rejects(
        tx.transaction(async (inner) => {
          await inner.run("INSERT INTO q (v) VALUES ('inner 1')");
          // Sent, the RELEASE would end the nested level: 'inner 2' would
          // escape its rollback and be committed with the outer transaction.
          await assert.rejects(inner.exec("RELEASE netsqlite_sp1"), reserved);
          await assert.rejects(inner.run('release savepoint "NETSQLITE_SP1"'), reserved);
          await assert.rejects(inner.run("ROLLBACK TO [netsqlite_sp1]"), reserved);
          await assert.rejects(inner.exec("SAVEPOINT netsqlite_sp1"), reserved);
          await assert.rejects(inner.exec("COMMIT"), isTxControl);
          await inner.run("INSERT INTO q (v) VALUES ('inner 2')");
          throw new Error("undo inner");
        }),
        /undo inner/,
      );
      await tx.run("INSERT INTO q (v) VALUES ('b')");
    });
    assert.deepEqual(await rows(db), ["a", "b"]);
  });

  Deno.test(`${engine}: a nested transaction whose RELEASE/ROLLBACK TO of an enclosing savepoint ended its own savepoint rejects with TX_UNDO_FAILED, and the enclosing one cannot commit`, async () => {
    await using srv = await startServer({ engine });
    await using db = await connect({ ...srv.connectOptions, max: 3 });
    await db.exec("CREATE TABLE q (id INTEGER PRIMARY KEY, v TEXT)");
    for (const stmt of ["RELEASE mine", "ROLLBACK TO mine", "ROLLBACK TO mine; RELEASE mine"]) {
      for (const end of ["throws", "returns"] as const) {
        const what = `${JSON.stringify(stmt)}, fn2 ${end}`;
        const thrown = new Error("inner fails: its writes must be undone");
        let inner: unknown = null;
        const outer = db.transaction(async (tx) => {
          await tx.run("INSERT INTO q (v) VALUES ('outer before')");
          await tx.exec("SAVEPOINT mine");
          await tx.run("INSERT INTO q (v) VALUES ('outer in mine')");
          await tx.transaction(async (t2) => {
            await t2.run("INSERT INTO q (v) VALUES ('inner 1')");
            // Allowed (a savepoint of another name), and SQLite ends netsqlite_sp1 with it.
            await t2.exec(stmt);
            await t2.run("INSERT INTO q (v) VALUES ('inner 2')");
            if (end === "throws") throw thrown;
          }).catch((err) => inner = err);
          // The outer level still holds the inner writes it could not undo: it cannot go on.
          await assert.rejects(
            tx.run("INSERT INTO q (v) VALUES ('outer after')"),
            (err: unknown) => isUndoFailed(err, /^Transaction cannot go on: a transaction nested/),
            what,
          );
          assert.ok(tx.inTransaction, what);
          return "committed";
        });
        await assert.rejects(
          outer,
          (err: unknown) => isUndoFailed(err, /^Transaction rolled back instead of committed: /),
          what,
        );
        assert.ok(isUndoFailed(inner, /^Nested transaction's work could not be undone: /), what);
        const message = (inner as Error).message;
        assert.match(message, /lost its savepoint netsqlite_sp1 \(SQLite: no such savepoint/, what);
        assert.ok(message.includes(`("${stmt.split("; ")[0]}"`), `${what}: ${message}`);
        if (end === "throws") assert.equal((inner as Error).cause, thrown, what);
        else assert.match(String((inner as Error).cause), /no such savepoint: netsqlite_sp1/, what);
        assert.deepEqual(await rows(db), [], `${what}: nothing of the transaction was kept`);
      }
    }
  });

  Deno.test(`${engine}: a poisoned nested level is undone as a whole when its own savepoint survives; the outermost commits its own work`, async () => {
    await using srv = await startServer({ engine });
    await using db = await connect({ ...srv.connectOptions, max: 3 });
    await db.exec("CREATE TABLE q (id INTEGER PRIMARY KEY, v TEXT)");
    let inner: unknown = null;
    let sibling: unknown = null;
    let siblingRan = false;
    let middle: unknown = null;
    const value = await db.transaction(async (tx) => {
      await tx.run("INSERT INTO q (v) VALUES ('outer 1')");
      await tx.transaction(async (m) => {
        await m.run("INSERT INTO q (v) VALUES ('middle 1')");
        await m.exec("SAVEPOINT mine"); // opened after netsqlite_sp1, which survives
        await m.transaction(async (i) => {
          await i.run("INSERT INTO q (v) VALUES ('inner 1')");
          await i.exec("RELEASE mine");
          await i.run("INSERT INTO q (v) VALUES ('inner 2')");
          throw new Error("inner");
        }).catch((err) => inner = err);
        // Poisoned: nothing more runs at this level, not even a nested transaction.
        await assert.rejects(m.run("INSERT INTO q (v) VALUES ('middle 2')"), isUndoFailed);
        await m.transaction(async (n) => {
          siblingRan = true;
          await n.run("INSERT INTO q (v) VALUES ('never')");
        }).catch((err) => sibling = err);
        return "middle done";
      }).catch((err) => middle = err);
      await tx.run("INSERT INTO q (v) VALUES ('outer 2')");
      return "committed";
    });
    assert.equal(value, "committed");
    assert.ok(isUndoFailed(inner, /lost its savepoint netsqlite_sp2 .*\("RELEASE mine"\)/));
    assert.ok(isUndoFailed(sibling, /^Transaction cannot go on: /));
    assert.equal(siblingRan, false, "its fn never ran");
    assert.ok(isUndoFailed(middle, /^Transaction rolled back instead of committed: /));
    assert.deepEqual(await rows(db), ["outer 1", "outer 2"]);
  });

  Deno.test(`${engine}: a lost savepoint poisons every level whose savepoint went with it, up to the outermost`, async () => {
    await using srv = await startServer({ engine });
    await using db = await connect({ ...srv.connectOptions, max: 3 });
    await db.exec("CREATE TABLE q (id INTEGER PRIMARY KEY, v TEXT)");
    let inner: unknown = null;
    let middle: unknown = null;
    const outer = db.transaction(async (tx) => {
      await tx.run("INSERT INTO q (v) VALUES ('outer 1')");
      await tx.exec("SAVEPOINT mine"); // opened before netsqlite_sp1 and netsqlite_sp2
      await tx.transaction(async (m) => {
        await m.run("INSERT INTO q (v) VALUES ('middle 1')");
        await m.transaction(async (i) => {
          await i.run("INSERT INTO q (v) VALUES ('inner 1')");
          await i.run("ROLLBACK TO mine");
          await i.run("INSERT INTO q (v) VALUES ('inner 2')");
          throw new Error("inner");
        }).catch((err) => inner = err);
        return "middle done";
      }).catch((err) => middle = err);
      await assert.rejects(tx.run("INSERT INTO q (v) VALUES ('outer 2')"), isUndoFailed);
      return "committed";
    });
    await assert.rejects(outer, isUndoFailed);
    assert.ok(isUndoFailed(inner, /lost its savepoint netsqlite_sp2/));
    // The middle level's savepoint went too: its own undo failed, naming what ended it.
    assert.ok(isUndoFailed(middle, /lost its savepoint netsqlite_sp1 .*\("ROLLBACK TO mine"\)/));
    assert.deepEqual(await rows(db), []);
  });

  Deno.test(`${engine}: transaction() nested in a raw BEGIN whose savepoint is lost rolls the raw transaction back`, async () => {
    await using srv = await startServer({ engine });
    await using db = await connect({ ...srv.connectOptions, max: 3 });
    await db.exec("CREATE TABLE q (id INTEGER PRIMARY KEY, v TEXT)");
    {
      await using conn = await db.reserve();
      await conn.exec("BEGIN; INSERT INTO q (v) VALUES ('raw'); SAVEPOINT mine");
      await assert.rejects(
        conn.transaction(async (tx) => {
          await tx.run("INSERT INTO q (v) VALUES ('inner 1')");
          await tx.exec("RELEASE mine");
          await tx.run("INSERT INTO q (v) VALUES ('inner 2')");
          throw new Error("inner");
        }),
        (err: unknown) =>
          isUndoFailed(err, /netsqlite_sp0 .*the whole transaction was rolled back now/),
      );
      assert.equal(conn.inTransaction, false);
      await assert.rejects(
        conn.exec("COMMIT"),
        (err: unknown) =>
          err instanceof SqliteError && /no transaction is active/.test(err.message),
      );
    }
    assert.deepEqual(await rows(db), []);
  });

  Deno.test(`${engine}: transaction() in a raw transaction begun by SAVEPOINT, which a RELEASE inside it commits: TX_UNDO_FAILED, and its later calls are not sent`, async () => {
    await using srv = await startServer({ engine });
    await using db = await connect({ ...srv.connectOptions, max: 3 });
    await db.exec("CREATE TABLE q (id INTEGER PRIMARY KEY, v TEXT)");
    for (const end of ["throws", "returns"] as const) {
      await db.exec("DELETE FROM q");
      await using conn = await db.reserve();
      await conn.exec("SAVEPOINT mine; INSERT INTO q (v) VALUES ('raw')");
      await assert.rejects(
        conn.transaction(async (tx) => {
          await tx.run("INSERT INTO q (v) VALUES ('inner 1')");
          await tx.exec("RELEASE mine"); // SQLite commits the transaction
          // Sent, it would run in autocommit, kept whatever transaction() reports.
          await assert.rejects(
            tx.run("INSERT INTO q (v) VALUES ('inner 2')"),
            (err: unknown) => isUndoFailed(err, /has ended while transaction\(\) was running/),
          );
          if (end === "throws") throw new Error("inner");
        }),
        (err: unknown) =>
          isUndoFailed(err, /saw the transaction it is nested in end inside it .*"RELEASE mine"/),
        end,
      );
      assert.equal(conn.inTransaction, false, end);
      // What the RELEASE committed stays; nothing ran after it.
      assert.deepEqual(await rows(db), ["raw", "inner 1"], end);
    }
  });

  Deno.test(`${engine}: a level whose fn settles while a nested one's undo is in flight waits for it: never committed when that undo fails`, async () => {
    await using srv = await startServer({ engine });
    await using db = await connect({ ...srv.connectOptions, max: 3 });
    await db.exec("CREATE TABLE q (id INTEGER PRIMARY KEY, v TEXT)");
    for (const end of ["returns", "throws"] as const) {
      await db.exec("DELETE FROM q");
      const thrown = new Error("outer fails");
      let inner: unknown = null;
      const outer = db.transaction(async (tx) => {
        await tx.run("INSERT INTO q (v) VALUES ('outer')");
        await tx.exec("SAVEPOINT mine");
        let gate!: () => void;
        const reached = new Promise<void>((resolve) => gate = resolve);
        // Not awaited: fn settles while the nested level sends its ROLLBACK TO, which fails.
        tx.transaction(async (t2) => {
          await t2.run("INSERT INTO q (v) VALUES ('inner')");
          await t2.exec("RELEASE mine");
          gate();
          throw new Error("inner");
        }).catch((err) => inner = err);
        await reached;
        if (end === "throws") throw thrown;
        return "committed";
      });
      // A transaction queued right behind on the pool, which a stray ROLLBACK must not reach.
      const next = outer.catch(() => {}).then(() =>
        db.transaction(async (tx) => {
          await tx.run("INSERT INTO q (v) VALUES ('next 1')");
          await new Promise((resolve) => setTimeout(resolve, 20));
          await tx.run("INSERT INTO q (v) VALUES ('next 2')");
          return "next";
        })
      );
      const [settled, after] = await Promise.allSettled([outer, next]);
      assert.equal(settled.status, "rejected", `${end}: the outer transaction was not committed`);
      if (end === "throws") assert.equal(settled.reason, thrown);
      else {
        assert.ok(
          isUndoFailed(settled.reason, /^Transaction rolled back instead of committed: /),
          end,
        );
      }
      assert.deepEqual(after, { status: "fulfilled", value: "next" }, end);
      assert.ok(
        isUndoFailed(
          inner,
          /lost its savepoint netsqlite_sp1 .*the transaction it is nested in cannot commit/,
        ),
        end,
      );
      assert.deepEqual(await rows(db), ["next 1", "next 2"], end);
    }
  });

  Deno.test(`${engine}: max: 1, plain calls made inside a level that cannot go on are refused with TX_UNDO_FAILED, not sent`, async () => {
    await using srv = await startServer({ engine });
    await using db = await connect({ ...srv.connectOptions, max: 1 });
    await db.exec("CREATE TABLE q (id INTEGER PRIMARY KEY, v TEXT)");
    const notSent = (err: unknown) => isUndoFailed(err, /^Transaction cannot go on: .*not sent/);
    // A level poisoned by a nested one that lost its savepoint.
    let inner: unknown = null;
    await assert.rejects(
      db.transaction(async (tx) => {
        await tx.run("INSERT INTO q (v) VALUES ('outer')");
        await tx.exec("SAVEPOINT mine");
        await tx.transaction(async (t2) => {
          await t2.run("INSERT INTO q (v) VALUES ('inner')");
          await t2.exec("RELEASE mine");
          throw new Error("inner");
        }).catch((err) => inner = err);
        for (const [name, send] of SENDERS) {
          await assert.rejects(send(db, "INSERT INTO q (v) VALUES ('plain')"), notSent, name);
        }
        return "committed";
      }),
      (err: unknown) => isUndoFailed(err, /^Transaction rolled back instead of committed: /),
    );
    assert.ok(isUndoFailed(inner, /lost its savepoint netsqlite_sp1/));
    assert.deepEqual(await rows(db), []);
    // A level whose raw transaction (begun by SAVEPOINT) a RELEASE inside it committed: a plain
    // call from it would run in autocommit.
    await db.exec("SAVEPOINT mine; INSERT INTO q (v) VALUES ('raw')");
    await assert.rejects(
      db.transaction(async (tx) => {
        await tx.run("INSERT INTO q (v) VALUES ('inner 1')");
        await tx.exec("RELEASE mine");
        for (const [name, send] of SENDERS) {
          await assert.rejects(
            send(db, "INSERT INTO q (v) VALUES ('plain')"),
            (err: unknown) => isUndoFailed(err, /has ended while transaction\(\) was running/),
            name,
          );
        }
        return "fn";
      }),
      (err: unknown) => isUndoFailed(err, /saw the transaction it is nested in end inside it/),
    );
    assert.equal(db.inTransaction, false);
    assert.deepEqual(await rows(db), ["raw", "inner 1"]);
  });

  Deno.test(`${engine}: a reserved connection's calls made inside its poisoned transaction() level are refused, not sent`, async () => {
    await using srv = await startServer({ engine });
    await using db = await connect({ ...srv.connectOptions, max: 3 });
    await db.exec("CREATE TABLE q (id INTEGER PRIMARY KEY, v TEXT)");
    {
      await using conn = await db.reserve();
      await conn.exec("BEGIN; INSERT INTO q (v) VALUES ('raw')");
      await assert.rejects(
        conn.transaction(async (tx) => {
          await tx.exec("SAVEPOINT mine");
          await tx.transaction(async (t2) => {
            await t2.run("INSERT INTO q (v) VALUES ('inner')");
            await t2.exec("RELEASE mine");
            throw new Error("inner");
          }).catch(() => {});
          await assert.rejects(
            conn.run("INSERT INTO q (v) VALUES ('plain')"),
            (err: unknown) => isUndoFailed(err, /^Transaction cannot go on: .*not sent/),
          );
          return "fn";
        }),
        (err: unknown) => isUndoFailed(err, /^Transaction rolled back instead of committed: /),
      );
      // Its level was undone as a whole; the raw transaction goes on, and commits its own.
      assert.equal(conn.inTransaction, true);
      await conn.exec("COMMIT");
    }
    assert.deepEqual(await rows(db), ["raw"]);
  });

  Deno.test(`${engine}: savepoints a nested level opens itself, of any name, and the outermost level's savepoints in any order, keep their meaning`, async () => {
    await using srv = await startServer({ engine });
    await using db = await connect({ ...srv.connectOptions, max: 3 });
    await db.exec("CREATE TABLE q (id INTEGER PRIMARY KEY, v TEXT)");
    const value = await db.transaction(async (tx) => {
      await tx.exec("SAVEPOINT mine");
      await tx.run("INSERT INTO q (v) VALUES ('a')");
      await tx.transaction(async (t2) => {
        // Same name as the outer one: SQLite takes the innermost, opened here.
        await t2.exec("SAVEPOINT mine; INSERT INTO q (v) VALUES ('gone')");
        await t2.run("ROLLBACK TO mine");
        await t2.exec("RELEASE mine; SAVEPOINT s2; INSERT INTO q (v) VALUES ('b')");
        await t2.exec("SAVEPOINT s3"); // left open: the level's RELEASE ends it too
      });
      // At the outermost level no RELEASE or ROLLBACK TO can end transaction()'s own.
      await tx.exec("SAVEPOINT x; SAVEPOINT y; INSERT INTO q (v) VALUES ('c')");
      await tx.exec("RELEASE x"); // ends y too
      await assert.rejects(tx.run("ROLLBACK TO y"), /no such savepoint: y/);
      await tx.exec("SAVEPOINT z; INSERT INTO q (v) VALUES ('gone too'); ROLLBACK TO mine");
      await tx.exec("RELEASE mine");
      await tx.run("INSERT INTO q (v) VALUES ('d')");
      assert.ok(tx.inTransaction);
      return 5;
    });
    assert.equal(value, 5);
    assert.deepEqual(await rows(db), ["d"]);
    // A nested level that keeps to its own savepoints commits as before.
    await db.transaction(async (tx) => {
      await tx.transaction(async (t2) => {
        await t2.exec("SAVEPOINT mine; INSERT INTO q (v) VALUES ('e'); RELEASE mine");
        await t2.run("INSERT INTO q (v) VALUES ('f')");
      });
    });
    assert.deepEqual(await rows(db), ["d", "e", "f"]);
  });

  Deno.test(`${engine}: reserve() and max: 1 keep raw BEGIN/COMMIT; their transaction() handles refuse it`, async () => {
    await using srv = await startServer({ engine });
    await using db = await connect({ ...srv.connectOptions, max: 3 });
    await db.exec("CREATE TABLE q (id INTEGER PRIMARY KEY, v TEXT)");
    {
      await using conn = await db.reserve();
      await conn.exec("BEGIN");
      await conn.run("INSERT INTO q (v) VALUES ('r')");
      // Nested in the raw BEGIN as a savepoint; its handle still refuses COMMIT.
      await conn.transaction(async (tx) => {
        await assert.rejects(tx.exec("COMMIT"), isTxControl);
        await tx.run("INSERT INTO q (v) VALUES ('r tx')");
      });
      assert.ok(conn.inTransaction);
      await conn.exec("COMMIT");
      await assert.rejects(
        conn.transaction(async (tx) => {
          await assert.rejects(tx.run("END"), isTxControl);
          throw new Error("undo");
        }),
        /undo/,
      );
    }
    const one: Client = await srv.client(); // max: 1
    try {
      await one.exec("BEGIN; INSERT INTO q (v) VALUES ('one'); COMMIT");
      await one.transaction(async (tx) => {
        await assert.rejects(tx.exec("ROLLBACK"), isTxControl);
        await tx.run("INSERT INTO q (v) VALUES ('one tx')");
      });
    } finally {
      await one.close();
    }
    assert.deepEqual(await rows(db), ["r", "r tx", "one", "one tx"]);
  });
}

Deno.test("findTxEnd: what begins or ends a transaction() handle's transaction", () => {
  const refused = (sql: string, script = true): string | undefined =>
    findTxEnd(sql, script)?.statement;
  assert.equal(refused("begin deferred"), "BEGIN");
  assert.equal(refused("/* c */ -- d\n  Commit Transaction"), "COMMIT");
  assert.equal(refused("SELECT 1; end"), "END");
  assert.equal(refused("SELECT 1; end", false), undefined, "only the first statement");
  assert.equal(refused("rollback"), "ROLLBACK");
  assert.equal(refused("rollback;"), "ROLLBACK");
  assert.equal(refused("ROLLBACK TRANSACTION"), "ROLLBACK");
  assert.equal(refused("ROLLBACK TRANSACTION t1"), "ROLLBACK");
  assert.equal(refused("ROLLBACK TO s"), undefined);
  assert.equal(refused("ROLLBACK TRANSACTION TO SAVEPOINT s"), undefined);
  assert.equal(refused("ROLLBACK TRANSACTION t1 TO s"), undefined);
  assert.equal(refused("ROLLBACK TO s; ROLLBACK"), "ROLLBACK");
  assert.equal(refused("SAVEPOINT a; RELEASE a; RELEASE SAVEPOINT savepoint"), undefined);
  assert.equal(refused("RELEASE savepoint"), undefined, "a savepoint named savepoint");
  assert.equal(refused("SELECT 'commit'; SELECT \"rollback\" FROM t"), undefined);
  assert.equal(
    refused(
      "CREATE TRIGGER t AFTER INSERT ON x BEGIN SELECT CASE WHEN 1 THEN 2 END; END; SELECT 1",
    ),
    undefined,
  );
  assert.equal(refused("release netsqlite_sp2"), "RELEASE netsqlite_sp2");
  assert.equal(refused("RELEASE SAVEPOINT 'NetSQLite_sp0'"), "RELEASE NetSQLite_sp0");
  assert.equal(refused("ROLLBACK TO `netsqlite_sp1`"), "ROLLBACK TO netsqlite_sp1");
  assert.equal(refused("SAVEPOINT netsqlite_x"), "SAVEPOINT netsqlite_x");
  assert.equal(findTxEnd("SAVEPOINT netsqlite_x")?.reserved, true);
  assert.equal(findTxEnd("COMMIT")?.reserved, false);
  const ends: string[] = [];
  assert.equal(
    findTxEnd(
      'SAVEPOINT a; release Savepoint "a b"; ROLLBACK TRANSACTION TO s; RELEASE c',
      true,
      ends,
    ),
    null,
  );
  assert.deepEqual(ends, ["RELEASE a b", "ROLLBACK TO s", "RELEASE c"]);
  ends.length = 0;
  assert.equal(findTxEnd("RELEASE a; COMMIT; RELEASE b", true, ends)?.statement, "COMMIT");
  assert.deepEqual(ends, ["RELEASE a"], "the ones before the refused statement");
});

Deno.test("a failing statement in a transaction undoes only itself; fn's throw undoes the rest", async () => {
  await using srv = await startServer();
  await using db = await connect({ ...srv.connectOptions, max: 3 });
  await db.exec("CREATE TABLE q (id INTEGER PRIMARY KEY, v TEXT UNIQUE)");
  await db.transaction(async (tx) => {
    await tx.run("INSERT INTO q (v) VALUES ('a')");
    await assert.rejects(
      tx.run("INSERT INTO q (v) VALUES ('b'), ('a')"),
      (err: unknown) => err instanceof SqliteError && err.code === "SQLITE_CONSTRAINT_UNIQUE",
    );
    assert.ok(tx.inTransaction, "the transaction stays open");
    await tx.run("INSERT INTO q (v) VALUES ('c')");
  });
  assert.deepEqual(await rows(db), ["a", "c"], "only the failing statement was undone");
  await assert.rejects(
    db.transaction(async (tx) => {
      await tx.run("INSERT INTO q (v) VALUES ('d')");
      await tx.run("INSERT INTO q (v) VALUES ('a')");
    }),
    (err: unknown) => err instanceof SqliteError && err.code === "SQLITE_CONSTRAINT_UNIQUE",
  );
  assert.deepEqual(await rows(db), ["a", "c"], "the propagated error rolled back 'd'");
});
