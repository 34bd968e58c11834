/**
 * Change capture while writes step in the background (FFI engine): the
 * events of long writes (bulk INSERT ... SELECT, UPDATE and DELETE of many
 * rows, rowid moves, key-value rows by SQL), in autocommit, transactions,
 * savepoints, batches, scripts and cursors, stopped by a cancel or a
 * deadline, waiting for another process's lock, are exactly what committed:
 * a copy that applies them ends equal to the table. node:sqlite has no
 * feeds: these tests are FFI only.
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import type { ChangeEvent, Client, Subscription } from "../client.ts";
import {
  holdWriteLock,
  startServer,
  startServerProcess,
  takeEvents,
  type TestServer,
  within,
} from "./_helpers.ts";

const ffi = Deno.env.get("NETSQLITE_ENGINE") !== "node";

/** A copy of table `t` (id INTEGER PRIMARY KEY, v), kept by applying a feed's events. */
class Replica {
  rows = new Map<number, unknown>();
  commits: number[] = [];
  seqs: number[] = [];
  /** Each change as `seq commitSeq op rowid`. */
  ops: string[] = [];
  /** @param strict Asserts that deletes and inserts meet rows as the copy holds them. */
  constructor(readonly strict = true) {}
  apply(e: ChangeEvent): void {
    if (e.type !== "table") throw new Error(`unexpected event ${JSON.stringify(e)}`);
    this.ops.push(`${e.seq} ${e.commitSeq} ${e.op} ${e.rowid}`);
    this.seqs.push(e.seq);
    this.commits.push(e.commitSeq);
    if (e.rowid === null) {
      assert.equal(e.op, "delete");
      this.rows.clear();
      return;
    }
    const id = Number(e.rowid);
    if (e.op === "delete") {
      assert.ok(!this.strict || this.rows.has(id), `delete of absent rowid ${id}`);
      this.rows.delete(id);
    } else {
      if (e.op === "insert" && this.strict) {
        assert.ok(!this.rows.has(id), `insert of present rowid ${id}`);
      }
      this.rows.set(id, (e.value as { v: unknown } | null)?.v ?? null);
    }
  }
}

/** Reads the feed up to the marker row (table `marker`), applying the rest to `r`. */
async function syncTo(db: Client, feed: Subscription, r: Replica): Promise<number> {
  await db.run("INSERT INTO marker DEFAULT VALUES");
  let n = 0;
  for (;;) {
    const [e] = await takeEvents(feed, 1, 60_000);
    assert.ok(e !== undefined, "the feed ended");
    if (e.type === "table" && e.table === "marker") {
      r.seqs.push(e.seq);
      r.commits.push(e.commitSeq);
      return n;
    }
    r.apply(e);
    n++;
  }
}

async function assertSame(db: Client, r: Replica, what: string): Promise<void> {
  const rows = await db.values<[number, unknown]>("SELECT id, v FROM t ORDER BY id");
  const copy = [...r.rows.entries()].sort((a, b) => a[0] - b[0]);
  assert.deepEqual(copy, rows.map(([id, v]) => [Number(id), v]), what);
  for (let i = 1; i < r.seqs.length; i++) {
    assert.equal(r.seqs[i], r.seqs[i - 1] + 1, "seq +1 per change");
    assert.ok(r.commits[i] >= r.commits[i - 1], "commitSeq does not go back");
  }
}

const SEED = "CREATE TABLE t (id INTEGER PRIMARY KEY, v); CREATE TABLE marker (x);" +
  "CREATE TABLE n (x INTEGER); INSERT INTO n WITH RECURSIVE s(x) AS " +
  "(SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 20000) SELECT x FROM s;";

/** The feed every test replays: both tables, with values. */
const FEED = { tables: ["t", "marker"], values: true, buffer: 100_000 };

/** A server with {@link SEED} run, a client, its feed of {@link FEED}, and an empty replica. */
async function seededServer(): Promise<
  { srv: TestServer; db: Client; feed: Subscription; r: Replica } & AsyncDisposable
> {
  const srv = await startServer();
  const db = await srv.client();
  await db.exec(SEED);
  const feed = await db.subscribe(FEED);
  return {
    srv,
    db,
    feed,
    r: new Replica(),
    async [Symbol.asyncDispose]() {
      await feed.close();
      await db.close();
      await srv[Symbol.asyncDispose]();
    },
  };
}

const BULK = "INSERT INTO t (v) SELECT 'r' || x FROM n";

Deno.test({
  name: "capture audit: bulk autocommit writes in the background are reported exactly",
  ignore: !ffi,
  sanitizeResources: true,
  async fn() {
    await using seeded = await seededServer();
    const { db, feed, r } = seeded;
    await db.run(BULK);
    assert.equal(await syncTo(db, feed, r), 20_000);
    await assertSame(db, r, "after the bulk insert");
    await db.run("UPDATE t SET v = v || '!' WHERE id % 3 = 0");
    await db.run("DELETE FROM t WHERE id % 5 = 0");
    await db.run("UPDATE t SET id = id + 100000 WHERE id % 7 = 0");
    await db.run(BULK); // again: the statement is known to be slow now
    // RETURNING rows of a write tried inline first, then again in the background: once each.
    const returned = await db.values<[number]>(`${BULK} RETURNING id`);
    assert.equal(returned.length, 20_000);
    assert.equal(new Set(returned.map(([id]) => id)).size, 20_000);
    await syncTo(db, feed, r);
    await assertSame(db, r, "after updates, deletes, moves");
  },
});

Deno.test({
  name: "capture audit: long writes in transactions, savepoints, batch, scripts, cursors",
  ignore: !ffi,
  async fn() {
    await using seeded = await seededServer();
    const { db, feed, r } = seeded;
    await db.transaction(async (tx) => {
      await tx.run(BULK);
      await tx.run("SAVEPOINT a");
      await tx.run("UPDATE t SET v = 'undone' WHERE id % 2 = 0");
      await tx.run(BULK);
      await tx.run("ROLLBACK TO a");
      await tx.run("UPDATE t SET v = 'kept' WHERE id % 3 = 0");
      await tx.run("RELEASE a");
    });
    await syncTo(db, feed, r);
    await assertSame(db, r, "transaction with a savepoint rolled back to");
    await db.batch([
      { sql: BULK },
      { sql: "DELETE FROM t WHERE id % 4 = 0" },
    ]);
    await assert.rejects(db.batch([
      { sql: BULK },
      { sql: "SELECT no_such_function()" },
    ]));
    await db.exec(
      `${BULK}; UPDATE t SET id = -id WHERE id % 11 = 0; DELETE FROM t WHERE id < -1000`,
    );
    await syncTo(db, feed, r);
    await assertSame(db, r, "batch and script");
    // A cursor write with RETURNING, in autocommit and in a transaction.
    let seen = 0;
    for await (const _ of db.iterate(`${BULK} RETURNING id`)) seen++;
    assert.equal(seen, 20_000);
    await db.transaction(async (tx) => {
      let k = 0;
      for await (const _ of tx.iterate("UPDATE t SET v = 'c' WHERE id % 9 = 0 RETURNING id")) k++;
      assert.ok(k > 0);
    });
    // Rows moved to another rowid by a cursor write (the preupdate hook, in the background).
    let moved = 0;
    for await (
      const _ of db.iterate("UPDATE t SET id = id + 5000000 WHERE id % 17 = 0 RETURNING id")
    ) {
      moved++;
    }
    assert.ok(moved > 1000, `${moved}`);
    await syncTo(db, feed, r);
    await assertSame(db, r, "cursor writes");
  },
});

/** Inserts 20,000 rows slowly (each scans `n`): seconds in all, rows written one by one. */
const SLOW = "INSERT INTO t (v) SELECT (SELECT count(*) FROM n a WHERE a.x <> s.x) FROM n s";

Deno.test({
  name: "capture audit: a cancel or a deadline stopping a background write midway reports nothing",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    await db.exec(SEED);
    await db.run(BULK);
    await using feed = await db.subscribe(FEED);
    const r = new Replica();
    for (const row of await db.values<[number, unknown]>("SELECT id, v FROM t")) {
      r.rows.set(Number(row[0]), row[1]);
    }
    const stop = new AbortController();
    const cancelled = db.run(SLOW, [], { signal: stop.signal });
    await new Promise((res) => setTimeout(res, 500));
    stop.abort();
    await assert.rejects(cancelled, (e: { code?: string }) => e.code === "ABORTED");
    await assert.rejects(
      db.run(`${SLOW} WHERE 1`, [], { timeout: 500 }),
      (e: { code?: string }) => e.code === "STATEMENT_TIMEOUT",
    );
    await assert.rejects(
      db.transaction(async (tx) => {
        await tx.run("UPDATE t SET v = 'in tx' WHERE id < 100");
        await tx.run(BULK);
        await tx.run(`${SLOW} WHERE 2`, [], { timeout: 500 });
      }),
      (e: { code?: string }) => e.code === "STATEMENT_TIMEOUT",
    );
    assert.equal(await syncTo(db, feed, r), 0);
    await assertSame(db, r, "nothing written");
  },
});

Deno.test({
  name: "capture audit: a background write waiting for another process's lock is reported once",
  ignore: !ffi,
  async fn() {
    await using seeded = await seededServer();
    const { srv, db, feed, r } = seeded;
    const lock = await holdWriteLock(srv.database);
    const first = db.run(BULK);
    await new Promise((res) => setTimeout(res, 300));
    await lock.release();
    await first;
    const lock2 = await holdWriteLock(srv.database);
    const second = db.transaction(async (tx) => {
      await tx.run("UPDATE t SET v = 'x' WHERE id % 2 = 0");
    });
    await new Promise((res) => setTimeout(res, 300));
    await lock2.release();
    await second;
    // A cursor write meeting the lock, in autocommit and in a transaction.
    for (const inTx of [false, true]) {
      const lock3 = await holdWriteLock(srv.database);
      const third = (async () => {
        if (inTx) await db.run("BEGIN");
        let k = 0;
        for await (const _ of db.iterate("UPDATE t SET v = 'i' WHERE id % 4 = 0 RETURNING id")) k++;
        if (inTx) await db.run("COMMIT");
        return k;
      })();
      await new Promise((res) => setTimeout(res, 300));
      await lock3.release();
      assert.equal(await third, 5_000);
    }
    assert.equal(await syncTo(db, feed, r), 40_000);
    await assertSame(db, r, "after the lock waits");
  },
});

Deno.test({
  name: "capture audit: subscribe() while a long write runs, several writers at once",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using a = await srv.client();
    await using b = await srv.client();
    await using c = await srv.client();
    await a.exec(SEED.replace("20000", "3000"));
    const slow = a.run(SLOW);
    await new Promise((res) => setTimeout(res, 200));
    const opened = Date.now();
    await using feed = await b.subscribe({
      tables: ["t", "marker"],
      values: true,
      buffer: 100_000,
    });
    const took = Date.now() - opened;
    await slow;
    const r = new Replica();
    // What the feed saw of the write that ran while it subscribed: all or nothing.
    const n = await syncTo(b, feed, r);
    assert.ok(n === 0 || n === 3000, `${n} events (subscribe took ${took} ms)`);
    if (n === 0) {
      for (const row of await a.values<[number, unknown]>("SELECT id, v FROM t")) {
        r.rows.set(Number(row[0]), row[1]);
      }
    }
    await using second = await c.subscribe({ tables: ["t", "marker"], buffer: 100_000 });
    await Promise.all([
      a.run(BULK),
      c.run(BULK.replace("'r'", "'c'")),
      b.run("UPDATE t SET v = 'b' WHERE id % 3 = 0"),
      c.transaction(async (tx) => {
        await tx.run("DELETE FROM t WHERE id % 7 = 0");
      }),
      a.run(SLOW, [], { timeout: 300 }).catch(() => {}),
    ]);
    await syncTo(b, feed, r);
    await assertSame(b, r, "several writers");
    // Another subscriber, without values, saw the same changes.
    const r2 = new Replica(false);
    await syncTo(b, second, r2);
    assert.deepEqual(r2.ops, r.ops.slice(-r2.ops.length));
    assert.ok(r2.ops.length >= 6_000, `${r2.ops.length}`);
  },
});

Deno.test({
  name: "capture audit: key-value rows SQL changes in the background (preupdate hook) are exact",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    await db.exec(SEED);
    await db.kv("c").put("first", 1); // makes the table
    await using feed = await db.subscribe({ kv: ["c", "d"], tables: ["marker"], buffer: 100_000 });
    const live = new Map<string, number>();
    const name = (coll: string, key: unknown) => `${coll}:${JSON.stringify(key)}`;
    live.set(name("c", ["first"]), 1);
    const sync = async () => {
      await db.run("INSERT INTO marker DEFAULT VALUES");
      for (;;) {
        const [e] = await takeEvents(feed, 1, 60_000);
        assert.ok(e !== undefined, "the feed ended");
        if (e.type === "table") return;
        assert.equal(e.type, "kv");
        if (e.type !== "kv") continue;
        const k = name(e.collection, e.key);
        if (e.op === "delete") {
          assert.ok(live.has(k), `delete of absent ${k}`);
          live.delete(k);
        } else {
          if (e.op === "insert") assert.ok(!live.has(k), `insert of present ${k}`);
          live.set(k, e.version);
        }
      }
    };
    const check = async (what: string) => {
      await sync();
      const rows = await db.values<[string, Uint8Array, number]>(
        "SELECT collection, key, version FROM netsqlite_kv WHERE value IS NOT NULL",
      );
      const want = new Map<string, number>();
      for (const [coll, key] of rows) {
        const s = new TextDecoder().decode(key.subarray(1, -1));
        want.set(name(coll, [s]), 0);
      }
      assert.deepEqual([...live.keys()].sort(), [...want.keys()].sort(), what);
    };
    // Keys encoded as one-string tuples: 0x02, the UTF-8, 0x00.
    await db.run(
      "INSERT INTO netsqlite_kv (collection, key, value, version) " +
        "SELECT 'c', CAST(X'02' || 'k' || x || X'00' AS BLOB), X'01', x + 1000 FROM n",
    );
    await check("inserted");
    await db.run(
      "UPDATE netsqlite_kv SET value = X'02', version = version + 100000 WHERE rowid % 2 = 0",
    );
    await db.run("DELETE FROM netsqlite_kv WHERE rowid % 3 = 0");
    await check("updated, deleted");
    await db.transaction(async (tx) => {
      await tx.run("UPDATE netsqlite_kv SET collection = 'd' WHERE rowid % 5 = 0");
      await tx.run("SAVEPOINT s");
      await tx.run("DELETE FROM netsqlite_kv WHERE rowid % 7 = 0");
      await tx.run("ROLLBACK TO s");
      await tx.run("DELETE FROM netsqlite_kv WHERE rowid % 11 = 0");
    });
    await check("moved in a transaction");
    await db.exec(
      "UPDATE netsqlite_kv SET collection = 'd' WHERE rowid % 13 = 0;" +
        "DELETE FROM netsqlite_kv WHERE rowid % 17 = 0",
    );
    await db.batch([
      { sql: "UPDATE netsqlite_kv SET collection = 'c' WHERE rowid % 19 = 0" },
      { sql: "DELETE FROM netsqlite_kv WHERE rowid % 23 = 0" },
    ]);
    await check("moved and deleted by a script and a batch");
    const stop = new AbortController();
    const del = db.run(
      "DELETE FROM netsqlite_kv WHERE (SELECT count(*) FROM n a WHERE a.x <> netsqlite_kv.rowid) > 0",
      [],
      { signal: stop.signal },
    );
    await new Promise((res) => setTimeout(res, 400));
    stop.abort();
    await assert.rejects(del);
    await check("cancelled delete");
  },
});

Deno.test({
  name:
    "capture audit: a slow write prepared again (schema changed) in the background does not hang",
  ignore: !ffi,
  async fn() {
    await using seeded = await seededServer();
    const { db, feed, r } = seeded;
    await db.run(BULK); // known slow from now on
    await db.exec("CREATE INDEX tv ON t (v)");
    assert.notEqual(await within(db.run(BULK), 20_000), "timeout", "the second bulk insert hangs");
    await db.exec(
      "CREATE TRIGGER tt AFTER INSERT ON t WHEN new.id % 1000 = 0 BEGIN " +
        "UPDATE t SET v = 'trig' WHERE id = new.id - 1; END",
    );
    assert.notEqual(await within(db.run(BULK), 20_000), "timeout", "the third bulk insert hangs");
    assert.equal(await syncTo(db, feed, r), 60_000 + 20);
    await assertSame(db, r, "after schema changes");
  },
});

Deno.test({
  name: "capture audit: SIGTERM while a captured write runs in the background ends the server",
  ignore: !ffi,
  async fn() {
    await using srv = await startServerProcess();
    const db = await srv.client();
    const w = await srv.client();
    try {
      await db.exec(SEED);
      await db.run(BULK);
      const feed = await db.subscribe({ tables: ["t"], values: true, buffer: 100_000 });
      let events = 0;
      const reading = (async () => {
        for await (const _ of feed) events++;
      })().catch((e) => e.code);
      const write = w.run(SLOW).then(() => "ran", (e) => e.code as string);
      await new Promise((res) => setTimeout(res, 500));
      srv.child.kill("SIGTERM");
      const status = await within(srv.child.status, 30_000);
      assert.notEqual(status, "timeout", "the server did not end within 30 s of SIGTERM");
      assert.notEqual(await write, "ran");
      await reading;
      assert.equal(events, 0);
    } finally {
      await db.close();
      await w.close();
    }
    // Nothing of the stopped write was committed.
    const { DatabaseSync } = await import("node:sqlite");
    const file = new DatabaseSync(srv.database);
    try {
      assert.deepEqual({ ...file.prepare("SELECT count(*) AS n FROM t").get() }, { n: 20_000 });
    } finally {
      file.close();
    }
  },
});

const CHILD = fileURLToPath(new URL("./_feed_exit_child.ts", import.meta.url));

for (const mode of ["after", "during", "disconnect"]) {
  Deno.test({
    name: `capture audit: an embedding process exits by itself (captured write, ${mode})`,
    ignore: !ffi,
    async fn() {
      const dir = await Deno.makeTempDir({ prefix: "netsqlite-test-" });
      try {
        const child = new Deno.Command(Deno.execPath(), {
          args: ["run", "-A", CHILD, dir, mode],
          stdout: "piped",
          stderr: "piped",
        }).spawn();
        const out = child.output();
        const ended = await within(out, 60_000);
        if (ended === "timeout") {
          child.kill("SIGKILL");
          await out;
          assert.fail("the process did not exit");
        }
        const text = new TextDecoder().decode(ended.stdout);
        assert.equal(ended.code, 0, text + new TextDecoder().decode(ended.stderr));
        assert.match(text, mode === "after" ? /events: 20000 done/ : /events: 0 done/);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  });
}

Deno.test({
  name: "capture audit: cancels and deadlines at random moments of background writes",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    await using other = await srv.client();
    await db.exec(SEED.replace("20000", "2000"));
    await db.run(BULK);
    await using feed = await db.subscribe(FEED);
    const r = new Replica();
    for (const row of await db.values<[number, unknown]>("SELECT id, v FROM t")) {
      r.rows.set(Number(row[0]), row[1]);
    }
    const writes = [
      BULK,
      "UPDATE t SET v = v || 'u' WHERE id % 2 = 1",
      "UPDATE t SET id = id + 1000000 WHERE id % 5 = 1",
      "DELETE FROM t WHERE id % 13 = 0",
      "INSERT INTO t (v) SELECT (SELECT count(*) FROM n a WHERE a.x <> s.x) FROM n s WHERE s.x < 300",
    ];
    const outcomes: Record<string, number> = {};
    for (let i = 0; i < 120; i++) {
      const sql = writes[i % writes.length];
      const stop = new AbortController();
      const ms = (i * 37) % 150;
      const inTx = i % 3 === 0;
      const run = inTx
        ? db.transaction((tx) => tx.run(sql, [], { signal: stop.signal }))
        : db.run(sql, [], i % 4 === 1 ? { timeout: 1 + ms } : { signal: stop.signal });
      const other1 = other.run("INSERT INTO t (v) VALUES ('o')");
      const t = setTimeout(() => stop.abort(), ms);
      const outcome = await run.then(() => "ok", (e) => e.code ?? String(e));
      clearTimeout(t);
      await other1;
      outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
    }
    await syncTo(db, feed, r);
    await assertSame(db, r, `after ${JSON.stringify(outcomes)}`);
  },
});

Deno.test({
  name: "capture audit: a slow write prepared again after another process changed the schema",
  ignore: !ffi,
  async fn() {
    await using seeded = await seededServer();
    const { srv, db, feed, r } = seeded;
    await db.run(BULK); // known slow from now on
    // Another process (a process of its own: POSIX locks are per process).
    const other = await new Deno.Command(Deno.execPath(), {
      args: [
        "eval",
        `import { DatabaseSync } from "node:sqlite";
        const db = new DatabaseSync(${JSON.stringify(srv.database)});
        db.exec("PRAGMA busy_timeout = 5000; CREATE INDEX tv2 ON t (v)");
        db.close();`,
      ],
      stderr: "inherit",
    }).output();
    assert.equal(other.code, 0);
    assert.notEqual(await within(db.run(BULK), 20_000), "timeout", "the bulk insert hangs");
    assert.equal(await syncTo(db, feed, r), 40_000);
    await assertSame(db, r, "after another process's schema change");
  },
});

Deno.test({
  name: "capture audit: a cursor write left early, cancelled or past its deadline",
  ignore: !ffi,
  async fn() {
    await using seeded = await seededServer();
    const { db, feed, r } = seeded;
    for await (const _ of db.iterate(`${BULK} RETURNING id`)) break;
    await syncTo(db, feed, r);
    await assertSame(db, r, "autocommit cursor left early");
    await db.transaction(async (tx) => {
      for await (const _ of tx.iterate(`${BULK} RETURNING id`)) break;
      await tx.run("UPDATE t SET v = 'after' WHERE id % 100 = 0");
    });
    await syncTo(db, feed, r);
    await assertSame(db, r, "cursor in a transaction left early");
    const stop = new AbortController();
    const timer = setTimeout(() => stop.abort(), 300);
    await assert.rejects((async () => {
      for await (const _ of db.iterate(`${SLOW} RETURNING id`, [], { signal: stop.signal })) {
        // nothing
      }
    })());
    clearTimeout(timer);
    await assert.rejects((async () => {
      for await (const _ of db.iterate(`${SLOW} WHERE 1 RETURNING id`, [], { timeout: 300 })) {
        // nothing
      }
    })());
    await syncTo(db, feed, r);
    await assertSame(db, r, "cursors stopped");
  },
});

Deno.test({
  name:
    "capture audit: the first subscribe() answers once a write running in the background ended; that write is not reported",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using a = await srv.client();
    await using b = await srv.client();
    await a.exec(SEED.replace("20000", "12000")); // the slow write: seconds
    let settled = false;
    const write = a.run(SLOW, [], { timeout: 600_000 }).finally(() => settled = true);
    await new Promise((res) => setTimeout(res, 200));
    // Reads are not held by the write meanwhile.
    assert.deepEqual(await within(b.values("SELECT 1"), 3_000), [[1]]);
    assert.equal(settled, false, "the write ran too fast for this test");
    await using feed = await b.subscribe({ tables: ["t", "marker"] });
    // The reply came once the write's step returned (its reply, on another
    // socket, may arrive just after).
    assert.notEqual(await within(write, 2_000), "timeout", "subscribe() answered during the write");
    const r = new Replica(false);
    assert.equal(await syncTo(b, feed, r), 0, "the write that ran before capture started");
  },
});

Deno.test({
  name: "capture audit: a long write failing half way under RAISE(FAIL) or OR FAIL keeps its rows",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    await db.exec(
      SEED +
        "CREATE TRIGGER stop BEFORE INSERT ON t WHEN new.v = 'r15000' BEGIN " +
        "SELECT RAISE(FAIL, 'stop here'); END",
    );
    await using feed = await db.subscribe(FEED);
    const r = new Replica();
    await assert.rejects(db.run(BULK), /stop here/);
    assert.equal(await syncTo(db, feed, r), 14_999);
    await assertSame(db, r, "autocommit RAISE(FAIL)");
    await assert.rejects(
      db.transaction(async (tx) => {
        await tx.run("DELETE FROM t WHERE id % 2 = 0");
        await tx.run(BULK).catch((e) => {
          assert.match(String(e), /stop here/);
        });
        await tx.run("INSERT OR FAIL INTO t (id, v) SELECT x + 100000, 'f' FROM n WHERE x < 5000");
        await tx.run("INSERT OR FAIL INTO t (id, v) SELECT x + 103000, 'g' FROM n WHERE x < 5000");
      }),
      /UNIQUE|PRIMARY KEY|constraint/i,
    );
    // transaction() rolled back after the error: nothing of it.
    assert.equal(await syncTo(db, feed, r), 0);
    await db.transaction(async (tx) => {
      await tx.run("DELETE FROM t WHERE id % 2 = 0");
      await tx.run(BULK).catch(() => {});
      await tx.run("INSERT OR FAIL INTO t (id, v) SELECT x + 100000, 'f' FROM n WHERE x < 5000");
      await tx.run("INSERT OR FAIL INTO t (id, v) SELECT x + 103000, 'g' FROM n WHERE x < 5000")
        .catch(() => {});
    });
    await syncTo(db, feed, r);
    await assertSame(db, r, "kept rows in a transaction");
  },
});

Deno.test({
  name: "capture audit: a client closing during its background write, in a transaction or not",
  ignore: !ffi,
  async fn() {
    await using seeded = await seededServer();
    const { srv, db, feed, r } = seeded;
    for (const inTx of [false, true]) {
      const a = await srv.client();
      let running: Promise<unknown>;
      if (inTx) {
        await a.run("BEGIN");
        await a.run(BULK);
        running = a.run(SLOW).catch((e) => e);
      } else {
        running = a.run(SLOW).catch((e) => e);
      }
      await new Promise((res) => setTimeout(res, 400));
      await a.close();
      await running;
      assert.deepEqual(await within(db.values("SELECT count(*) FROM t"), 10_000), [[0]]);
    }
    await db.run("INSERT INTO t (v) VALUES ('after')");
    assert.equal(await syncTo(db, feed, r), 1);
    await assertSame(db, r, "nothing of the closed clients' writes");
  },
});

Deno.test({
  name: "capture audit: shutdown while the first subscribe() waits for a background write",
  ignore: !ffi,
  async fn() {
    const srv = await startServer();
    try {
      await using a = await srv.client();
      await using b = await srv.client();
      await a.exec(SEED.replace("20000", "12000"));
      const write = a.run(SLOW, [], { timeout: 600_000 }).then(() => "ran", (e) => e.code);
      await new Promise((res) => setTimeout(res, 200));
      const sub = b.subscribe({ tables: ["t"] }).then(
        async (f) => {
          await f.return();
          return "subscribed";
        },
        (e) => e.code,
      );
      await new Promise((res) => setTimeout(res, 200));
      const t0 = performance.now();
      assert.notEqual(await within(srv.server.shutdown(), 20_000), "timeout", "shutdown hangs");
      const took = performance.now() - t0;
      assert.notEqual(await within(write, 5_000), "timeout");
      assert.notEqual(await within(sub, 5_000), "timeout", "subscribe() never settled");
      assert.ok(took < 10_000, `shutdown took ${took} ms`);
    } finally {
      await srv[Symbol.asyncDispose]();
    }
  },
});
