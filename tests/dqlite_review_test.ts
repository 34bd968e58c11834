/**
 * Cluster mode where a review found it apart from the single-file engine or
 * saying what is not so: a single-row read (`get()`, a statement's `get()`)
 * of a result larger than `--max-result-bytes` returns its row, as on a
 * single file, as do `run()` and `exec()` of such a read; `RESULT_TOO_LARGE`
 * names the call made; `stats` names the dqlite database, nodes and leader,
 * not a file; a transaction lost with the leader advises as the single-file
 * engine does inside `transaction()`; a request stopped while waiting for a
 * connection says what it waited for. The single-row cases run on the
 * single-file engine too, as the reference. Cluster cases are skipped (with
 * the reason printed) when `dqlite-demo` is not installed.
 */

import assert from "node:assert/strict";
import { type Client, connect } from "../client.ts";
import { serve, type ServeOptions, type Server } from "../server.ts";
import { SqliteError } from "../protocol/errors.ts";
import { Op } from "../protocol/messages.ts";
import { openLink } from "../client/connection.ts";
import { resolveConnectOptions } from "../client/options.ts";
import { describeStats } from "../cli/admin.ts";
import { DqliteCluster } from "../engine/dqlite/cluster.ts";
import { DemoCluster, skipWithoutDqlite } from "./_dqlite_nodes.ts";
import { serverStats, startServer, statsUntil } from "./_helpers.ts";

const ignore = skipWithoutDqlite("dqlite_review_test.ts", "cluster cases");

/** `--max-result-bytes` of the servers here: far below the 3,000-row table's ~180 KB. */
const MAX_RESULT = 20_000;

/** Rows whose values are each ~60 bytes encoded. */
const FILL = "INSERT INTO big (id, pad) WITH RECURSIVE c(i) AS " +
  "(SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 3000) SELECT i, printf('%050d', i) FROM c";

/** A read whose row 2,000 fails (integer overflow), long after its first row. */
const FAILS_LATER = "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE " +
  "i < 2000) SELECT i, CASE WHEN i = 2000 THEN abs(-9223372036854775807 - 1) ELSE 'x' END AS v " +
  "FROM c";

/** A read whose row 4,000 holds TEXT that is not UTF-8. */
const BAD_TEXT_LATER = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE " +
  "i < 5000) SELECT i, CASE i WHEN 4000 THEN CAST(x'c3' AS TEXT) ELSE 'ok' END AS v FROM n";

/** A read whose rows never end. */
const ENDLESS = "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c) SELECT i FROM c";

let dbSeq = 0;

/** A server in cluster mode on a fresh dqlite database, listening on a temp socket. */
async function clusterServer(
  nodes: string[],
  options: ServeOptions = {},
): Promise<AsyncDisposable & { server: Server; path: string; name: string }> {
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-dqlite-review-" });
  const path = `${dir}/s.sock`;
  const name = `review${++dbSeq}_${Date.now()}`;
  const server = await serve({
    ...options,
    path,
    dqlite: { ...options.dqlite, nodes, database: name },
  });
  return {
    server,
    path,
    name,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

async function rejection(p: Promise<unknown>): Promise<SqliteError> {
  const err = await p.then(() => null, (e) => e);
  assert.ok(err instanceof SqliteError, `expected a SqliteError, got ${String(err)}`);
  return err;
}

/**
 * What a single file does with reads of a result past `--max-result-bytes`
 * that return one row or none: every case the same on both engines.
 */
async function singleRowReads(db: Client): Promise<void> {
  await db.exec("CREATE TABLE big (id INTEGER PRIMARY KEY, pad TEXT)");
  await db.run(FILL);
  // The whole result is past the limit: query() is refused.
  assert.equal((await rejection(db.query("SELECT * FROM big"))).code, "RESULT_TOO_LARGE");

  assert.deepEqual(await db.get("SELECT id, pad FROM big ORDER BY id"), {
    id: 1,
    pad: "1".padStart(50, "0"),
  });
  assert.deepEqual(await db.get("SELECT id FROM big ORDER BY id DESC"), { id: 3000 });
  const stmt = await db.prepare("SELECT id FROM big WHERE id >= ? ORDER BY id");
  assert.deepEqual(await stmt.get([5]), { id: 5 });
  assert.deepEqual(await stmt.raw().get([7]), [7]);
  await stmt.finalize();
  assert.deepEqual(await db.values("SELECT id FROM big ORDER BY id LIMIT 1"), [[1]]);
  // An error after the first row is not met: the row is the answer.
  assert.deepEqual(await db.get(FAILS_LATER), { i: 1, v: "x" });
  assert.deepEqual(await db.get(BAD_TEXT_LATER), { i: 1, v: "ok" });
  // Rows never ending: the first is the answer (the server stops the rest).
  assert.deepEqual(await db.get(ENDLESS, [], { timeout: 20_000 }), { i: 1 });
  // run() and exec() return no rows: the size of the ones discarded does not matter.
  assert.deepEqual(await db.run("SELECT * FROM big"), { changes: 0, lastInsertRowid: 0 });
  assert.deepEqual(await db.run(BAD_TEXT_LATER), { changes: 0, lastInsertRowid: 0 });
  await db.exec("SELECT * FROM big; SELECT pad FROM big");
  // An error is an error, though: run() of a read that fails fails.
  assert.equal((await rejection(db.run(FAILS_LATER))).code, "SQLITE_ERROR");
  // The connection is in step after each.
  assert.deepEqual(await db.get("SELECT count(*) AS n FROM big"), { n: 3000 });

  // Inside a transaction: the same, and the transaction goes on.
  const first = await db.transaction(async (tx) => {
    const row = await tx.get("SELECT id FROM big ORDER BY id");
    assert.deepEqual(await tx.get(FAILS_LATER), { i: 1, v: "x" });
    await tx.run("INSERT INTO big (id, pad) VALUES (3001, 'x')");
    assert.deepEqual(await tx.get("SELECT id FROM big ORDER BY id DESC"), { id: 3001 });
    assert.deepEqual(await tx.run("SELECT * FROM big"), { changes: 0, lastInsertRowid: 0 });
    return row;
  });
  assert.deepEqual(first, { id: 1 });
  assert.deepEqual(await db.get("SELECT count(*) AS n FROM big"), { n: 3001 });
}

Deno.test("single-file engine: get() of a result past --max-result-bytes returns its first row", async () => {
  await using s = await startServer({ maxResultBytes: MAX_RESULT });
  await using db = await s.client();
  await singleRowReads(db);
});

Deno.test({
  name: "cluster mode: single-row reads, RESULT_TOO_LARGE wording, stats, waits and a lost leader",
  ignore,
  async fn(t) {
    await using nodes = await DemoCluster.start(1);

    await t.step(
      "get() of a result past --max-result-bytes returns its first row, as on a single file",
      async () => {
        await using s = await clusterServer(nodes.addresses, { maxResultBytes: MAX_RESULT });
        await using db = await connect({ path: s.path, max: 1 });
        await singleRowReads(db);
      },
    );

    await t.step("RESULT_TOO_LARGE names the call made", async () => {
      await using s = await clusterServer(nodes.addresses, { maxResultBytes: MAX_RESULT });
      await using db = await connect({ path: s.path, max: 1 });
      await db.exec("CREATE TABLE big (id INTEGER PRIMARY KEY, pad TEXT)");
      await db.run(FILL);
      const head = /^Result exceeds maxResultBytes 20000 \(--max-result-bytes\): /;
      const tail =
        /; narrow the query \(LIMIT, fewer or smaller columns\), or raise --max-result-bytes$/;
      const cases: [string, () => Promise<unknown>, RegExp][] = [
        [
          "values()",
          () => db.values("SELECT * FROM big"),
          /query\(\), all\(\) and values\(\) return the whole result in one reply, and in cluster mode iterate\(\) buffers it on the server too/,
        ],
        [
          "iterate()",
          () => db.iterate("SELECT * FROM big").next(),
          /: in cluster mode iterate\(\) buffers the whole result on the server;/,
        ],
        [
          "batch()",
          () => db.batch([{ sql: "SELECT * FROM big" }]),
          /batch\(\) returns its statements' rows in one reply/,
        ],
      ];
      for (const [call, run, says] of cases) {
        const err = await rejection(run());
        assert.equal(err.code, "RESULT_TOO_LARGE", `${call}: ${err.message}`);
        assert.match(err.message, says, call);
        if (call !== "batch()") {
          assert.match(err.message, head, call);
          assert.match(err.message, tail, call);
        }
        assert.doesNotMatch(err.message, /use iterate\(\) to stream/, call);
      }
      assert.deepEqual(await db.values("SELECT 1"), [[1]]);
    });

    await t.step(
      "stats names the dqlite database, nodes and leader; no file sizes, writer or group commit",
      async () => {
        await using s = await clusterServer(nodes.addresses);
        const r = await serverStats({ path: s.path });
        assert.equal(r.engine, "dqlite");
        assert.equal(r.database, `dqlite:${s.name}`);
        assert.equal(r.walBytes, null);
        assert.equal(r.dbBytes, null);
        assert.deepEqual(r.cluster, {
          database: s.name,
          nodes: nodes.addresses,
          leader: nodes.addresses[0],
          connections: 1,
          poolSize: 64,
        });
        // The fields of the single-file engine stay, at what is so in cluster mode.
        assert.deepEqual(r.writer, { waiting: 0, longestWaitMs: 0, temp: [], tempCount: 0 });
        assert.deepEqual(r.groupCommit, { groups: 0, writes: 0, largest: 0 });
        const text = describeStats(r);
        const line = text.split("\n").find((l) => l.startsWith("database "));
        assert.equal(
          line,
          `database      dqlite "${s.name}" on 1 node, leader ${
            nodes.addresses[0]
          }, 1 of 64 connections to it open`,
        );
        assert.doesNotMatch(text, /WAL|\.db\b|^writer |^group commit /m);
        assert.match(text, /^transactions {2}none$/m);

        // A connection the node closed counts no more, though the pool keeps it until lent
        // (here a get() of endless rows: the server ends them by closing that connection).
        await using db = await connect({ path: s.path, max: 1 });
        assert.deepEqual(await db.get(ENDLESS), { i: 1 });
        const after = await statsUntil(
          { path: s.path },
          (r) => r.cluster?.connections === 0,
          "no connection to the node is open",
        );
        assert.equal(
          describeStats(after).split("\n").find((l) => l.startsWith("database ")),
          `database      dqlite "${s.name}" on 1 node, last known leader ${
            nodes.addresses[0]
          }, 0 of 64 connections open`,
        );
        // The next request connects anew, and counts.
        assert.deepEqual(await db.get("SELECT 2 AS n"), { n: 2 });
        assert.equal((await serverStats({ path: s.path })).cluster?.connections, 1);
      },
    );

    await t.step(
      "maintenance requests are refused; PRAGMA integrity_check and quick_check run",
      async () => {
        await using s = await clusterServer(nodes.addresses);
        const [link] = await openLink(await resolveConnectOptions({ path: s.path }));
        try {
          for (const [op, args] of [[Op.Checkpoint, ["passive"]], [Op.Integrity, []]] as const) {
            const err = await rejection(link.request(op, [...args]));
            assert.equal(err.code, "BAD_REQUEST");
            assert.match(
              err.message,
              /^Maintenance requests \(checkpoint, vacuum, integrity, backup\) are not available in cluster mode/,
            );
          }
        } finally {
          link.fail(new Error("test done"));
          await link.ended;
        }
        await using db = await connect({ path: s.path, max: 1 });
        await db.exec("CREATE TABLE t (x)");
        assert.deepEqual(await db.values("PRAGMA integrity_check"), [["ok"]]);
        assert.deepEqual(await db.values("PRAGMA quick_check"), [["ok"]]);
      },
    );

    await t.step(
      "a deadline met waiting for a pooled connection says so, not that no leader was reached",
      async () => {
        await using s = await clusterServer(nodes.addresses, {
          dqlite: { nodes: [], database: "", poolSize: 1 },
        });
        await using holder = await connect({ path: s.path, max: 1 });
        await using other = await connect({ path: s.path, max: 1 });
        await holder.exec("BEGIN");
        const err = await rejection(other.get("SELECT 1", [], { timeout: 200 }));
        assert.equal(err.code, "STATEMENT_TIMEOUT", err.message);
        assert.match(
          err.message,
          /: it waited for a free connection to the dqlite leader \(all 1 in use: dqlite\.poolSize\), held by other requests or transactions \(not applied: safe to retry\)$/,
        );
        assert.equal(err.mayHaveRun, false);
        await holder.exec("ROLLBACK");
        assert.deepEqual(await other.get("SELECT 2 AS n"), { n: 2 });
      },
    );

    await t.step(
      "a deadline met opening a connection to a busy leader does not say no leader was reached",
      async () => {
        await using s = await clusterServer(nodes.addresses, {
          dqlite: { nodes: [], database: "", poolSize: 1 },
        });
        await using db = await connect({ path: s.path, max: 1 });
        await db.exec("CREATE TABLE w (n)");
        // A write computing for seconds on the node, sent by a client of the test's own: the
        // node, running it, answers no one meanwhile.
        const direct = new DqliteCluster(nodes.addresses);
        await using _closes = { [Symbol.asyncDispose]: () => Promise.resolve(direct.close()) };
        const other = await direct.open(s.name);
        const slow = other.exec(
          "INSERT INTO w SELECT count(*) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL " +
            "SELECT x + 1 FROM c WHERE x < 15000000) SELECT x FROM c)",
        );
        // The server's write stopped at its deadline once the node is busy: its node
        // connection is closed (the pool's one), so the next request opens another.
        let slowDone = false;
        slow.finally(() => slowDone = true).catch(() => {});
        let cut: SqliteError | null = null;
        while (cut === null) {
          assert.ok(!slowDone, "the node was never seen busy");
          cut = await db.run("INSERT INTO w VALUES (-1)", [], { timeout: 100 }).then(
            () => null,
            (e) => e,
          );
          assert.ok(cut === null || cut.code === "STATEMENT_TIMEOUT", String(cut));
        }
        // Sent, then cut off: the node may still commit it, and the error says so.
        assert.match(cut.message, /\(outcome unknown: the write may have been applied/);
        assert.equal(cut.mayHaveRun, true);
        const err = await rejection(db.get("SELECT 1", [], { timeout: 300 }));
        assert.equal(err.code, "STATEMENT_TIMEOUT", err.message);
        assert.match(
          err.message,
          /: no connection to the dqlite leader could be opened in time \(not applied: safe to retry\)$/,
        );
        assert.doesNotMatch(err.message, /no dqlite leader/);
        assert.equal(err.mayHaveRun, false);
        await slow;
        // Once the node is done, requests run again.
        assert.deepEqual(
          await db.get("SELECT count(*) AS n FROM w WHERE n > 0", [], { timeout: 60_000 }),
          { n: 1 },
        );
      },
    );

    // Last: it stops the cluster's one node.
    await t.step(
      "a transaction lost with the leader inside transaction() advises as the single-file engine",
      async () => {
        await using s = await clusterServer(nodes.addresses);
        await using db = await connect({ path: s.path, max: 1 });
        await db.exec("CREATE TABLE t (x)");
        const errors: SqliteError[] = [];
        const err = await rejection(db.transaction(async (tx) => {
          await tx.run("INSERT INTO t VALUES (1)");
          await nodes.kill(0);
          errors.push(await rejection(tx.run("INSERT INTO t VALUES (2)")));
          await tx.run("INSERT INTO t VALUES (3)");
        }));
        assert.equal(err.code, "LEADER_LOST", err.message);
        assert.equal(errors[0].message, err.message); // (what fn threw, rethrown)
        assert.match(
          err.message,
          /\(not applied: the transaction is gone; end it with ROLLBACK \(transaction\(\) does so itself\), then retry the whole transaction\)$/,
        );
        assert.doesNotMatch(err.message, /send ROLLBACK|start over/);
        assert.equal(err.mayHaveRun, false);
        // transaction() ended it: the client is out of it.
        assert.equal(db.inTransaction, false);
      },
    );
  },
});

Deno.test({
  name:
    "cluster mode: NO_LEADER of a read, of BEGIN and of a write all end in not applied: safe to retry",
  ignore,
  async fn() {
    await using nodes = await DemoCluster.start(1);
    await using s = await clusterServer(nodes.addresses, {
      dqlite: { nodes: [], database: "", leaderTimeout: 300 },
    });
    await using db = await connect({ path: s.path, max: 1 });
    await db.exec("CREATE TABLE t (x)");
    // The pooled connection, idle, sees its node die; the next requests connect anew and find
    // no leader (the cluster's one node is gone).
    await nodes.kill(0);
    await statsUntil(
      { path: s.path },
      (r) => r.cluster?.connections === 0,
      "the pooled connection is seen closed",
    );
    const calls: [string, () => Promise<unknown>][] = [
      ["get()", () => db.get("SELECT 1")],
      ["transaction()", () => db.transaction((tx) => tx.run("INSERT INTO t VALUES (1)"))],
      ['exec("BEGIN")', () => db.exec("BEGIN")],
      ['exec("SAVEPOINT a")', () => db.exec("SAVEPOINT a")],
      ["run() of a write", () => db.run("INSERT INTO t VALUES (2)")],
    ];
    for (const [what, call] of calls) {
      const err = await rejection(call());
      assert.equal(err.code, "NO_LEADER", `${what}: ${err.message}`);
      assert.match(err.message, /^No dqlite leader found .*\(not applied: safe to retry\)$/, what);
      assert.equal(err.mayHaveRun, false, what);
      assert.equal(db.inTransaction, false, what);
    }
  },
});

Deno.test({
  name:
    "cluster mode: prepare() of a read with a long run of blanks answers in linear time, its columns named",
  ignore,
  async fn() {
    await using nodes = await DemoCluster.start(1);
    await using s = await clusterServer(nodes.addresses);
    await using db = await connect({ path: s.path, max: 1 });
    // The server trims the statement's end (for its LIMIT 0 probe of the columns) on its one
    // thread: a scan quadratic in a run of blanks took 15 s for 80,000 of them, every client
    // waiting. (A time bound, not a speed target: linear is milliseconds, quadratic ~25 s.)
    const started = performance.now();
    const stmt = await db.prepare(`SELECT${" ".repeat(100_000)}1 AS one -- note`);
    const ms = performance.now() - started;
    try {
      assert.deepEqual(stmt.columns, ["one"]);
      assert.deepEqual(await stmt.values(), [[1]]);
    } finally {
      await stmt.finalize();
    }
    assert.ok(ms < 8_000, `prepare took ${Math.round(ms)} ms`);
  },
});
