/**
 * Change feeds (`db.subscribe()`): committed changes only, in commit order,
 * never rolled-back work (transactions, savepoints, failed statements,
 * failed group-commit members, failed batches), bounded buffering with
 * `LAGGED` and resumption by `since`, several writer processes with
 * several subscribers. The feed needs the FFI engine; under
 * `NETSQLITE_ENGINE=node` only the refusal is tested.
 */

import assert from "node:assert/strict";
import { type ChangeEvent, connect, type Subscription } from "../client.ts";
import type { SqliteError } from "../protocol/errors.ts";
import { spawnClientProcess } from "./_client_process.ts";
import { startServer, startServerProcess, takeEvents, within } from "./_helpers.ts";
import { openLink } from "../client/connection.ts";
import { resolveConnectOptions } from "../client/options.ts";
import { Op } from "../protocol/messages.ts";
import { loadSqlite } from "../engine/binding/load.ts";
import { MAX_FEED_BUFFER, MAX_FEEDS_PER_CONNECTION } from "../server/feeds.ts";

const ffi = Deno.env.get("NETSQLITE_ENGINE") !== "node";

/** True when the FFI engine's libsqlite3 has the preupdate hook (reports moved rows exactly). */
function hasPreupdateHook(): boolean {
  const sqlite = loadSqlite({ engine: "ffi" });
  const db = sqlite.open(":memory:", { readOnly: false, busyTimeout: 0 });
  try {
    return db.onRowidChange(null);
  } finally {
    db.close();
    sqlite.close();
  }
}

/** Asserts that no event arrives within `ms` (by writing a marker row and seeing it first). */
async function nextIsMarker(
  sub: Subscription,
  db: { run(sql: string): Promise<unknown> },
): Promise<void> {
  await db.run("INSERT INTO marker DEFAULT VALUES");
  const [e] = await takeEvents(sub, 1);
  assert.equal(
    e.type === "table" && e.table,
    "marker",
    `expected the marker, got ${JSON.stringify(e, big)}`,
  );
}

function big(_k: string, v: unknown): unknown {
  return typeof v === "bigint" ? `${v}n` : v;
}

Deno.test({
  name: "feed: refused with FEED_UNSUPPORTED on node:sqlite",
  async fn() {
    await using srv = await startServer({ engine: "node" });
    await using db = await srv.client();
    await assert.rejects(
      db.subscribe(),
      (e: SqliteError) => e.code === "FEED_UNSUPPORTED" && /update hook/.test(e.message),
    );
    // The connection is still usable.
    assert.deepEqual(await db.values("SELECT 1"), [[1]]);
  },
});

Deno.test({
  name: "feed: only committed work appears, in commit order, with values",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await connect({ ...srv.connectOptions, max: 4 });
    await db.exec(
      "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE); CREATE TABLE marker (id INTEGER PRIMARY KEY)",
    );
    await using all = await db.subscribe({ values: true });
    await using onlyT = await db.subscribe({ tables: ["T"] });
    await db.run("INSERT INTO t (id, v) VALUES (1, 'a')");
    // A rolled-back transaction.
    await assert.rejects(
      db.transaction(async (tx) => {
        await tx.run("INSERT INTO t (id, v) VALUES (2, 'rolled back')");
        throw new Error("no");
      }),
      /no/,
    );
    // A savepoint rolled back inside a committed transaction.
    await db.transaction(async (tx) => {
      await tx.run("INSERT INTO t (id, v) VALUES (3, 'kept')");
      await assert.rejects(
        tx.transaction(async (inner) => {
          await inner.run("INSERT INTO t (id, v) VALUES (4, 'inner undone')");
          throw new Error("inner");
        }),
        /inner/,
      );
      await tx.run("UPDATE t SET v = 'kept2' WHERE id = 3");
      // A multi-row statement failing half way: its first row is undone by SQLite.
      await assert.rejects(tx.run("INSERT INTO t (id, v) VALUES (5, 'x'), (6, 'a')"));
    });
    // A failed batch.
    await assert.rejects(db.batch([
      { sql: "INSERT INTO t (id, v) VALUES (7, 'batch')" },
      { sql: "INSERT INTO t (id, v) VALUES (1, 'dup')" },
    ]));
    await db.run("DELETE FROM t WHERE id = 1");
    await db.run("DELETE FROM t");
    const events = await takeEvents(all, 5);
    const seen = events.map((e) => {
      assert.equal(e.type, "table");
      return e.type === "table" ? [e.table, e.op, e.rowid, e.value ?? null] : null;
    });
    assert.deepEqual(seen, [
      ["t", "insert", 1, { id: 1, v: "a" }],
      ["t", "insert", 3, { id: 3, v: "kept2" }], // the value as committed
      ["t", "update", 3, { id: 3, v: "kept2" }],
      ["t", "delete", 1, null],
      ["t", "delete", null, null], // DELETE without WHERE: every row
    ]);
    const seqs = events.map((e) => e.type === "lagged" ? 0 : e.seq);
    for (let i = 1; i < seqs.length; i++) assert.equal(seqs[i], seqs[i - 1] + 1);
    const commits = events.map((e) => e.type === "lagged" ? 0 : e.commitSeq);
    assert.deepEqual(commits.map((c) => c - commits[0]), [0, 1, 1, 2, 3]);
    // The filtered feed saw the same changes, without values.
    const t = await takeEvents(onlyT, 5);
    assert.deepEqual(
      t.map((e) => e.type === "table" ? [e.seq, e.value] : null),
      seqs.map((s) => [s, undefined]),
    );
    await nextIsMarker(all, db);
  },
});

Deno.test({
  name:
    "feed: an UPDATE that moves a row to another rowid is a delete of the old rowid, then an update",
  ignore: !ffi || !hasPreupdateHook(),
  async fn() {
    await using srv = await startServer();
    await using db = await connect({ ...srv.connectOptions, max: 4 });
    await db.exec(
      "CREATE TABLE rc (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO rc VALUES (1, 'a'), (2, 'b')",
    );
    await using sub = await db.subscribe({ tables: ["rc"], values: true });
    await db.run("UPDATE rc SET id = 100 WHERE id = 1");
    await db.run("UPDATE rc SET id = id + 1000");
    await db.run("UPDATE rc SET v = 'c' WHERE id = 1002"); // moves nothing
    await db.run("UPDATE rc SET id = id WHERE id = 1002"); // nor does this
    const events = await takeEvents(sub, 8);
    const first = events[0].type === "table" ? events[0].commitSeq : 0;
    const seen = events.map((e) => {
      assert.equal(e.type, "table");
      return e.type === "table" ? [e.commitSeq - first, e.op, e.rowid, e.value ?? null] : null;
    });
    assert.deepEqual(seen, [
      [0, "delete", 1, null],
      [0, "update", 100, { id: 100, v: "a" }],
      [1, "delete", 2, null],
      [1, "update", 1002, { id: 1002, v: "b" }],
      [1, "delete", 100, null],
      [1, "update", 1100, { id: 1100, v: "a" }],
      [2, "update", 1002, { id: 1002, v: "c" }],
      [3, "update", 1002, { id: 1002, v: "c" }],
    ]);
  },
});

Deno.test({
  name: "feed: failed group-commit members never appear",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await connect({ ...srv.connectOptions, max: 16 });
    await db.exec(
      "CREATE TABLE u (id INTEGER PRIMARY KEY, k INTEGER UNIQUE); CREATE TABLE marker (id INTEGER PRIMARY KEY)",
    );
    await using feed = await db.subscribe({ tables: ["u", "marker"] });
    // Warm the statements so they group; then many concurrent writes, every third failing.
    await db.run("INSERT INTO u (k) VALUES (-1)");
    await assert.rejects(db.run("INSERT INTO u (k) VALUES (?), (-1)", [-2]));
    const writes: Promise<unknown>[] = [];
    for (let i = 0; i < 300; i++) {
      // A failing member inserts a row first, then fails: SQLite undoes the statement.
      const sql = i % 3 === 2
        ? "INSERT INTO u (k) VALUES (?), (-1)"
        : "INSERT INTO u (k) VALUES (?)";
      writes.push(db.run(sql, [i]).then(() => i, () => null));
    }
    const ok = (await Promise.all(writes)).filter((k) => k !== null);
    assert.equal(ok.length, 200);
    const events = await takeEvents(feed, 201);
    const ids = new Set(events.map((e) => e.type === "table" ? e.rowid : null));
    const rows = await db.values<[number]>("SELECT id FROM u");
    assert.deepEqual([...ids].sort((a, b) => Number(a) - Number(b)), rows.map((r) => r[0]));
    await nextIsMarker(feed, db);
  },
});

Deno.test({
  name: "feed: a slow subscriber gets LAGGED and resumes with since without a gap",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)");
    const slow = await db.subscribe({ buffer: 20 });
    for (let i = 1; i <= 200; i++) await db.run("INSERT INTO t (id) VALUES (?)", [i]);
    const got: number[] = [];
    let resume = -1;
    for await (const e of slow) {
      if (e.type === "lagged") {
        resume = e.resumeFrom;
        break;
      }
      got.push(e.type === "table" ? e.rowid as number : -1);
    }
    assert.ok(resume >= 0, "expected a lagged event");
    assert.ok(got.length <= 20, `buffered ${got.length} events past a buffer of 20`);
    await using again = await db.subscribe({ since: resume });
    const rest = await takeEvents(again, 200 - got.length);
    const all = [...got, ...rest.map((e) => e.type === "table" ? e.rowid as number : -1)];
    assert.deepEqual(all, Array.from({ length: 200 }, (_, i) => i + 1));
    // A sequence the server never reached is refused.
    await assert.rejects(db.subscribe({ since: 1e9 }), (e: SqliteError) => e.code === "FEED_GAP");
  },
});

Deno.test({
  name: "feed: a backlog larger than buffer is consumed completely by repeated resumes",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    await db.exec("CREATE TABLE ll (id INTEGER PRIMARY KEY, v INT)");
    const opts = { tables: ["ll"], buffer: 100 };
    let feed = await db.subscribe(opts);
    // One 300-row commit: the live feed overflows, and so does each resume's backlog.
    await db.run(
      "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 300) " +
        "INSERT INTO ll (v) SELECT i FROM c",
    );
    const seqs: number[] = [];
    const rowids: number[] = [];
    let resumes = 0;
    try {
      const reading = (async () => {
        while (rowids.length < 300 && resumes <= 10) {
          let lag: number | null = null;
          for await (const e of feed) {
            if (e.type === "lagged") {
              lag = e.resumeFrom;
              break;
            }
            seqs.push(e.seq);
            rowids.push(e.type === "table" ? e.rowid as number : -1);
            if (rowids.length === 300) break;
          }
          if (lag === null) break;
          assert.equal(lag, seqs.at(-1), "lagged names the last change yielded");
          feed.close();
          feed = await db.subscribe({ ...opts, since: lag });
          resumes++;
        }
      })();
      const r = await within(reading, 10_000);
      assert.notEqual(r, "timeout", `timed out with ${rowids.length} of 300 changes`);
    } finally {
      feed.close();
    }
    assert.deepEqual(rowids, Array.from({ length: 300 }, (_, i) => i + 1));
    for (let i = 1; i < seqs.length; i++) assert.equal(seqs[i], seqs[i - 1] + 1);
    assert.ok(resumes >= 1 && resumes <= 2, `expected one or two resumes, got ${resumes}`);
  },
});

Deno.test({
  name: "feed: key-value changes by collection and key, with values",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    await db.kv("other").put("x", 0); // creates the table before subscribing
    await using feed = await db.subscribe({ kv: ["cart"], values: true });
    const cart = db.kv("cart");
    const v1 = await cart.put(["u1", 1], { qty: 2n ** 60n });
    await db.kv("other").put("y", 1);
    await cart.atomic().set(["u1", 2], "b").delete(["u1", 1]).commit();
    await assert.rejects(cart.atomic().check(["u1", 2], null).set(["u1", 3], "no").commit());
    const events = await takeEvents(feed, 3);
    assert.deepEqual(
      events.map((e) => e.type === "kv" ? [e.collection, e.key, e.op, e.value] : null),
      [
        ["cart", ["u1", 1], "insert", { qty: 2n ** 60n }],
        ["cart", ["u1", 2], "insert", "b"],
        ["cart", ["u1", 1], "delete", undefined],
      ],
    );
    assert.equal(events[0].type === "kv" && events[0].version, v1);
    const [, e1, e2] = events;
    assert.equal(
      e1.type === "kv" && e2.type === "kv" && e1.commitSeq === e2.commitSeq,
      true,
    );
    await cart.put("done", true);
    const [last] = await takeEvents(feed, 1);
    assert.deepEqual(last.type === "kv" && last.key, ["done"]);
  },
});

Deno.test({
  name: "feed: writer processes and several subscribers see the same commits in the same order",
  ignore: !ffi,
  async fn() {
    await using sp = await startServerProcess();
    await using db = await connect(sp.connectOptions);
    await db.exec("CREATE TABLE w (id INTEGER PRIMARY KEY, who INTEGER, n INTEGER)");
    const subs = await Promise.all([1, 2, 3].map(() => db.subscribe({ tables: ["w"] })));
    const procs = await Promise.all([1, 2, 3].map(() => spawnClientProcess(sp.connectOptions)));
    try {
      const per = 40;
      await Promise.all(procs.map(async (p, who) => {
        for (let n = 0; n < per; n++) {
          if (n % 10 === 9) {
            // A rolled-back transaction now and then.
            await p.exec("BEGIN");
            await p.run("INSERT INTO w (who, n) VALUES (?, ?)", [who, -n]);
            await p.exec("ROLLBACK");
          } else {
            await p.run("INSERT INTO w (who, n) VALUES (?, ?)", [who, n]);
          }
        }
      }));
      const expected = await db.values<[number]>("SELECT id FROM w ORDER BY id");
      assert.equal(expected.length, 3 * 36);
      const lists = await Promise.all(subs.map((s) => takeEvents(s, expected.length)));
      for (const list of lists) {
        // Rowids grow with commit order here (one writer, no deletes).
        assert.deepEqual(
          list.map((e) => e.type === "table" ? e.rowid : null),
          expected.map((r) => r[0]),
        );
        for (let i = 1; i < list.length; i++) {
          const a = list[i - 1], b = list[i];
          assert.ok(
            a.type === "table" && b.type === "table" && b.seq === a.seq + 1 &&
              b.commitSeq >= a.commitSeq,
          );
        }
      }
      assert.deepEqual(lists[1], lists[0]);
      assert.deepEqual(lists[2], lists[0]);
    } finally {
      for (const s of subs) await s[Symbol.asyncDispose]();
      await Promise.all(procs.map((p) => p[Symbol.asyncDispose]()));
    }
  },
});

Deno.test({
  name:
    "feed: the first subscription waits for a write running in the background instead of failing",
  ignore: !ffi,
  fn: async () => {
    await using srv = await startServer({ synchronous: "normal" });
    await using a = await srv.client();
    await using db = await srv.client();
    await a.exec("CREATE TABLE log (who TEXT); CREATE TABLE t (v INTEGER)");
    // An unbounded recursive insert: a statement never seen before runs in the
    // background on the writer, until its deadline.
    const runaway = a.run(
      "INSERT INTO log(who) WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s) " +
        "SELECT 'x' FROM s WHERE x < 0 LIMIT 1",
      [],
      { timeout: 400 },
    ).catch((e: SqliteError) => e.code);
    await new Promise((r) => setTimeout(r, 100));
    await using feed = await db.subscribe({ tables: ["t"] });
    assert.equal(await runaway, "STATEMENT_TIMEOUT");
    await a.run("INSERT INTO t VALUES (7)");
    const [e] = await takeEvents(feed, 1);
    assert.equal(e.type, "table");
    assert.deepEqual(
      { table: (e as { table: string }).table, op: (e as { op: string }).op },
      { table: "t", op: "insert" },
    );
  },
});

Deno.test({
  name: "feed: a buffer over 100 000 is refused with INVALID_PARAM by the client and by the server",
  ignore: !ffi,
  fn: async () => {
    assert.equal(MAX_FEED_BUFFER, 100_000);
    await using srv = await startServer();
    await using db = await srv.client();
    // The client: before anything is sent (its own queue would hold that many).
    for (const buffer of [MAX_FEED_BUFFER + 1, 1e9]) {
      await assert.rejects(db.subscribe({ buffer }), (err: SqliteError) => {
        assert.equal(err.code, "INVALID_PARAM");
        assert.equal(err.message, `Invalid buffer: expected at most 100000, got ${buffer}`);
        return true;
      });
    }
    // The server: refused, not lowered to 100 000.
    const [link] = await openLink(await resolveConnectOptions(srv.connectOptions));
    try {
      await assert.rejects(
        link.request(Op.Subscribe, [{ tables: ["t"], buffer: MAX_FEED_BUFFER + 1 }]),
        (err: SqliteError) => {
          assert.equal(err.code, "INVALID_PARAM");
          assert.equal(err.message, "Invalid buffer: expected at most 100000, got 100001");
          return true;
        },
      );
      const [id] = await link.request(Op.Subscribe, [{ tables: ["t"], buffer: MAX_FEED_BUFFER }]);
      assert.equal(typeof id, "number");
    } finally {
      link.fail(new Error("test done"));
      await link.ended;
    }
    // The largest is accepted, and the feed works.
    await using sub = await db.subscribe({ tables: ["t"], buffer: MAX_FEED_BUFFER });
    await db.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1)");
    const [e] = await takeEvents(sub, 1);
    assert.ok(e.type === "table" && e.op === "insert" && e.rowid === 1, JSON.stringify(e, big));
  },
});

Deno.test({
  name: "feed: one connection holds at most 64 feeds; unsubscribing makes room",
  ignore: !ffi,
  fn: async () => {
    await using srv = await startServer();
    const [link] = await openLink(await resolveConnectOptions(srv.connectOptions));
    try {
      const ids: number[] = [];
      for (let i = 0; i < MAX_FEEDS_PER_CONNECTION; i++) {
        ids.push((await link.request(Op.Subscribe, [{ tables: ["t"] }]))[0]);
      }
      await assert.rejects(link.request(Op.Subscribe, [{ tables: ["t"] }]), (err: unknown) => {
        assert.equal((err as SqliteError).code, "BAD_REQUEST");
        assert.equal(
          (err as Error).message,
          "Too many change feeds on this connection: 64; unsubscribe one first",
        );
        return true;
      });
      await link.request(Op.Unsubscribe, [ids[0]]);
      assert.equal(typeof (await link.request(Op.Subscribe, [{ tables: ["t"] }]))[0], "number");
    } finally {
      link.fail(new Error("test done"));
      await link.ended;
    }
  },
});

Deno.test({
  name:
    "feed: a since from before a server restart fails with FEED_GAP, however far the new feed got",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    const database = srv.database;
    let last: number;
    {
      await using db = await srv.client();
      await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)");
      await using feed = await db.subscribe({ tables: ["t"] });
      for (let i = 1; i <= 5; i++) await db.run("INSERT INTO t (id) VALUES (?)", [i]);
      const events = await takeEvents(feed, 5);
      last = events.at(-1)!.type === "table" ? (events.at(-1) as { seq: number }).seq : -1;
    }
    await srv.server.shutdown();
    // The same database, a new server: its feed gets further than `last` would be.
    await using again = await startServer({ database });
    await using db = await again.client();
    await using other = await db.subscribe({ tables: ["t"] });
    for (let i = 6; i <= 40; i++) await db.run("INSERT INTO t (id) VALUES (?)", [i]);
    await takeEvents(other, 35);
    await assert.rejects(db.subscribe({ since: last }), (e: SqliteError) => {
      assert.equal(e.code, "FEED_GAP");
      assert.match(e.message, /none from before its restart/);
      return true;
    });
  },
});

Deno.test({
  name: "feed: a feed with values that lagged resumes with since and gets the committed rows",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, n TEXT)");
    const slow = await db.subscribe({ tables: ["t"], values: true, buffer: 5 });
    for (let i = 1; i <= 40; i++) await db.run("INSERT INTO t VALUES (?, ?)", [i, `row${i}`]);
    const got: ChangeEvent[] = [];
    let resume = -1;
    for await (const e of slow) {
      if (e.type === "lagged") {
        resume = e.resumeFrom;
        break;
      }
      got.push(e);
    }
    assert.ok(resume >= 0, "expected a lagged event");
    // Written while no feed with values was open.
    for (let i = 41; i <= 45; i++) await db.run("INSERT INTO t VALUES (?, ?)", [i, `row${i}`]);
    await using again = await db.subscribe({ tables: ["t"], values: true, since: resume });
    const rest = await takeEvents(again, 45 - got.length);
    const values = [...got, ...rest].map((e) => e.type === "table" ? e.value : "?");
    assert.deepEqual(
      values,
      Array.from({ length: 45 }, (_, i) => ({ id: i + 1, n: `row${i + 1}` })),
    );
  },
});

Deno.test({
  name:
    "feed: replaying changes whose rows were never read to a feed with values fails with FEED_GAP",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, n TEXT)");
    await using plain = await db.subscribe({ tables: ["t"] }); // no values
    await db.run("INSERT INTO t VALUES (1, 'a')");
    const [first] = await takeEvents(plain, 1);
    const since = (first as { seq: number }).seq - 1;
    await assert.rejects(db.subscribe({ values: true, since }), (e: SqliteError) => {
      assert.equal(e.code, "FEED_GAP");
      assert.match(e.message, /while no feed asked for values/);
      return true;
    });
    // Without values the same resume works.
    await using ok = await db.subscribe({ tables: ["t"], since });
    const [again] = await takeEvents(ok, 1);
    assert.equal(again.type === "table" ? again.rowid : -1, 1);
  },
});

Deno.test({
  name:
    "feed: a key-value value that does not decode ends the feed with KV_CORRUPT, after the changes before it",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    const users = db.kv("users");
    await users.put(["a"], { n: 1 });
    await using feed = await db.subscribe({ kv: true, values: true });
    await users.put(["b"], { n: 2 });
    await db.run(
      "UPDATE netsqlite_kv SET value = x'c1' WHERE collection = 'users' AND version = 1",
    );
    const [ok] = await takeEvents(feed, 1);
    assert.deepEqual(ok.type === "kv" ? [ok.key, ok.value] : null, [["b"], { n: 2 }]);
    await assert.rejects(feed.next(), (e: SqliteError) => {
      assert.equal(e.code, "KV_CORRUPT");
      assert.match(e.message, /in collection "users" under key \["a"\]/);
      return true;
    });
    assert.deepEqual(await feed.next(), { value: undefined, done: true });
  },
});

Deno.test({
  name:
    "change feed: writes woken when a transaction's lease ends during its batch all reach the feed",
  ignore: Deno.env.get("NETSQLITE_ENGINE") === "node",
  async fn() {
    // (300,000 items are 1.2 M MessagePack values: past the default maxRequestValues.)
    await using srv = await startServer({ txTimeout: 300, maxRequestValues: 2_000_000 });
    await using a = await connect({ ...srv.connectOptions, max: 1 });
    await a.exec(
      "CREATE TABLE t (id INTEGER PRIMARY KEY, v); CREATE TABLE u (id INTEGER PRIMARY KEY, v)",
    );
    await using s = await connect({ ...srv.connectOptions, max: 1 });
    const feed = await s.subscribe({ tables: ["u"] });
    const seen = new Set<number>();
    const reading = (async () => {
      for await (const e of feed) if (e.type === "table") seen.add(Number(e.rowid));
    })();
    const bs = await Promise.all(
      Array.from({ length: 4 }, () => connect({ ...srv.connectOptions, max: 1 })),
    );
    let stop = false;
    try {
      for (const b of bs) await b.run("INSERT INTO u (v) VALUES (0)");
      await a.exec("BEGIN");
      const writers = bs.map(async (b) => {
        while (!stop) await b.run("INSERT INTO u (v) VALUES (1)").catch(() => {});
      });
      await new Promise((r) => setTimeout(r, 20));
      // The batch pauses between slices (a feed captures): its lease ends midway.
      const items = Array.from({ length: 300_000 }, (_, i) => ({
        sql: "INSERT INTO t (v) VALUES (?)",
        params: [i],
      }));
      await assert.rejects(a.batch(items), { code: "TX_TIMEOUT" });
      await a.exec("ROLLBACK");
      await new Promise((r) => setTimeout(r, 100));
      stop = true;
      await Promise.all(writers);
      const rows = (await s.values<[number]>("SELECT id FROM u")).map(([id]) => id);
      const deadline = performance.now() + 5000;
      while (rows.some((id) => !seen.has(id)) && performance.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.deepEqual(
        rows.filter((id) => !seen.has(id)),
        [],
        "committed rows missing from the feed",
      );
      assert.deepEqual(await s.values("SELECT count(*) FROM t"), [[0]]);
    } finally {
      stop = true; // (the writers' loops end, also when an assertion failed)
      await feed.close();
      await reading;
      for (const b of bs) await b.close();
    }
  },
});

Deno.test({
  name: "feed: next() calls not awaited get changes in order, and all settle on close",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await connect({ ...srv.connectOptions, max: 2 });
    await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v)");
    const feed = await db.subscribe();
    const first = [feed.next(), feed.next()];
    await db.run("INSERT INTO t (v) VALUES (1)");
    await db.run("INSERT INTO t (v) VALUES (2)");
    const got = await within(Promise.all(first), 5000);
    assert.notEqual(got, "timeout", "a next() call stayed pending");
    if (got === "timeout") return;
    assert.deepEqual(got.map((r) => r.value?.type === "table" ? r.value.rowid : null), [1, 2]);
    // Pending calls when the feed is closed: all end.
    const pending = [feed.next(), feed.next(), feed.next()];
    await feed.close();
    assert.deepEqual(await within(Promise.all(pending), 5000), [
      { value: undefined, done: true },
      { value: undefined, done: true },
      { value: undefined, done: true },
    ]);
  },
});

Deno.test({
  name: "feed: pending next() calls when the connection is lost: the first rejects, others end",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await connect({ ...srv.connectOptions, max: 2 });
    await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v)");
    await using feed = await db.subscribe();
    const pending = [feed.next(), feed.next()];
    const settled = Promise.allSettled(pending);
    await srv.server.shutdown();
    const [a, b] = await within(settled, 5000) as PromiseSettledResult<unknown>[];
    assert.equal(a.status, "rejected");
    assert.equal((a as PromiseRejectedResult).reason.name, "ConnectionError");
    assert.deepEqual(b, { status: "fulfilled", value: { value: undefined, done: true } });
  },
});
