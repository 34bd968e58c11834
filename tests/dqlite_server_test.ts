/**
 * The server's cluster mode, `serve({ dqlite })`, through `connect()`: the
 * shared cases of `_dqlite_suite.ts` against three `dqlite-demo` nodes (and,
 * as the reference, against the single-file engine), plus what only cluster
 * mode does: the SQL guard for dqlite 1.11's hazards, options, banner.
 * Skipped (with the reason printed) when `dqlite-demo` is not installed:
 * `apt-get install go-dqlite libdqlite0`.
 */

import assert from "node:assert/strict";
import { connect } from "../client.ts";
import { parseServeArgs, serve, type ServeOptions, type Server } from "../server.ts";
import { SqliteError } from "../protocol/errors.ts";
import {
  checkClusterSql,
  immediateBegins,
  statementTexts,
  verbOf,
  withoutRows,
} from "../engine/dqlite/_sql_shape.ts";
import { DatabaseSync } from "node:sqlite";
import { DemoCluster, skipWithoutDqlite } from "./_dqlite_nodes.ts";
import { SUITE, type SuiteTarget } from "./_dqlite_suite.ts";
import { drain, serverStats, startServer } from "./_helpers.ts";

const ignore = skipWithoutDqlite("dqlite_server_test.ts", "cluster cases");

let dbSeq = 0;

/** The count of cursors open on the server listening at `path`, over all its sessions. */
async function openCursors(path: string): Promise<number> {
  return (await serverStats({ path })).cursors;
}

/** A server in cluster mode on a fresh dqlite database, listening on a temp socket. */
async function clusterServer(
  nodes: string[],
  options: ServeOptions = {},
): Promise<SuiteTarget & AsyncDisposable & { server: Server; path: string }> {
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-dqlite-srv-" });
  const path = `${dir}/s.sock`;
  const server = await serve({
    ...options,
    path,
    dqlite: { ...options.dqlite, nodes, database: `suite${++dbSeq}_${Date.now()}` },
  });
  return {
    server,
    path,
    client: () => connect({ path, max: 1 }),
    async [Symbol.asyncDispose]() {
      await server.shutdown();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

for (const c of SUITE) {
  Deno.test(`single-file engine: ${c.name}`, async () => {
    await using s = await startServer();
    await c.fn({ client: () => s.client() });
  });
}

Deno.test({
  name: "serve({ dqlite }) runs the shared core, transaction and value cases on a 3-node cluster",
  ignore,
  async fn(t) {
    await using nodes = await DemoCluster.start(3);
    for (const c of SUITE) {
      await t.step(`cluster mode: ${c.name}`, async () => {
        await using s = await clusterServer(nodes.addresses);
        await c.fn(s);
      });
    }

    await t.step(
      "cluster mode reports engine dqlite, the nodes and the leader's SQLite",
      async () => {
        await using s = await clusterServer(nodes.addresses);
        assert.equal(s.server.sqlite.engine, "dqlite");
        assert.match(s.server.sqlite.library, new RegExp(nodes.addresses[0].replace(/\./g, "\\.")));
        assert.match(s.server.sqlite.version, /^3\.\d+\.\d+$/);
        await using db = await s.client();
        assert.equal(db.serverInfo.sqliteVersion, s.server.sqlite.version);
        assert.match(db.serverInfo.database ?? "", /^dqlite:suite\d+_\d+$/);
      },
    );

    await t.step(
      "cluster mode refuses what would crash a node or escape replication, and keeps serving",
      async () => {
        await using s = await clusterServer(nodes.addresses);
        await using db = await s.client();
        const refused: [string, string, RegExp][] = [
          ["CREATE TABLE f (id INTEGER, flag BOOLEAN)", "FORBIDDEN", /column "flag" as BOOLEAN/],
          ['CREATE TABLE f ("at" DATETIME NOT NULL)', "FORBIDDEN", /"at" as DATETIME/],
          ["CREATE TABLE f (d date, t timestamp)", "FORBIDDEN", /as DATE/],
          ["CREATE TABLE g (x); ALTER TABLE g ADD COLUMN t TIMESTAMP", "FORBIDDEN", /TIMESTAMP/],
          ["CREATE TABLE f (d 'DATETIME')", "FORBIDDEN", /column "d" as DATETIME/],
          ['CREATE TABLE f (d "Date" "Time")', "FORBIDDEN", /column "d" as DATE in/],
          ["CREATE TABLE g (x); ALTER TABLE g ADD d 'BOOLEAN'", "FORBIDDEN", /as BOOLEAN/],
          ["CREATE TEMP TABLE tt (x)", "FORBIDDEN", /TEMP/],
          ["ATTACH DATABASE '/tmp/x.db' AS x", "FORBIDDEN", /ATTACH/],
          ["PRAGMA foreign_keys = OFF", "FORBIDDEN", /foreign_keys/],
          ["PRAGMA synchronous = 0", "FORBIDDEN", /synchronous/],
        ];
        for (const [sql, code, message] of refused) {
          const err = await db.exec(sql).then(() => null, (e) => e);
          assert.ok(err instanceof SqliteError, `${sql}: expected a refusal`);
          assert.equal(err.code, code, `${sql}: ${err.message}`);
          assert.match(err.message, message);
        }
        // Nothing of a refused script ran (the check precedes it).
        assert.deepEqual(await db.values("SELECT count(*) FROM sqlite_schema"), [[0]]);
        await db.exec('CREATE TABLE ok (flag INTEGER, at TEXT, d DATE(10), "boolean" TEXT)');
        await db.run("INSERT INTO ok VALUES (?, ?, ?, ?)", [true, "2024-01-01", "x", "y"]);
        assert.deepEqual(await db.values("SELECT * FROM ok"), [[1, "2024-01-01", "x", "y"]]);
        const r = await db.run("INSERT INTO ok (flag) VALUES (2) RETURNING flag").catch((e) => e);
        assert.equal(r.code, "BAD_REQUEST");
        assert.match(r.message, /RETURNING/);
        assert.deepEqual(await db.values("PRAGMA foreign_keys"), [[1]]);
        // Text that is not UTF-8: the single-file FFI engine's code and message, naming the column.
        const bad = await db.values("SELECT 1 AS ok, CAST(x'fffe' AS TEXT) AS body").catch((e) =>
          e
        );
        assert.equal(bad.code, "INVALID_UTF8", bad.message);
        assert.equal(
          bad.message,
          'Cannot read column "body": its TEXT value is not valid UTF-8 and would come back ' +
            'changed; read its bytes with CAST("body" AS BLOB) (or hex())',
        );
        // Change feeds: refused with advice that holds in cluster mode.
        const feed = await db.subscribe().catch((e) => e);
        assert.equal(feed.code, "FEED_UNSUPPORTED");
        assert.match(feed.message, /not available in cluster mode/);
        assert.doesNotMatch(feed.message, /--engine/);
      },
    );

    await t.step(
      "cluster mode refuses VACUUM in every form, before anything of the request runs",
      async () => {
        // (A VACUUM that reached the leader of a database of ~500 pages or more killed the node;
        // this one is small, so that without the refusal the assertions fail, not the node.)
        await using s = await clusterServer(nodes.addresses);
        await using db = await s.client();
        await db.exec("CREATE TABLE v (x)");
        const message =
          /Cannot run VACUUM in cluster mode: it makes a dqlite 1\.11 leader crash .*`netsqlite vacuum` is not available in cluster mode either/;
        const forms = [
          "VACUUM",
          "vacuum main",
          'VACUUM "main";',
          "/* compact */ VACUUM -- now",
        ];
        const script = "INSERT INTO v VALUES (1); VACUUM";
        const refusals: [string, () => Promise<unknown>][] = [[script, () => db.exec(script)]];
        for (const sql of forms) {
          refusals.push(
            [`exec ${sql}`, () => db.exec(sql)],
            [`run ${sql}`, () => db.run(sql)],
            [`prepare ${sql}`, () => db.prepare(sql)],
          );
        }
        refusals.push(
          ["batch", () => db.batch([{ sql: "INSERT INTO v VALUES (2)" }, { sql: "VACUUM" }])],
          ["in a transaction", () => db.transaction((tx) => tx.exec("VACUUM"))],
        );
        for (const [what, call] of refusals) {
          const err = await call().then(() => null, (e) => e);
          assert.ok(err instanceof SqliteError, `${what}: expected a refusal`);
          assert.equal(err.code, "FORBIDDEN", `${what}: ${err.message}`);
          assert.match(err.message, message, what);
        }
        // Nothing of a refused script or batch ran; the leader writes on.
        await db.run("INSERT INTO v VALUES (3)");
        assert.deepEqual(await db.values("SELECT x FROM v"), [[3]]);
        // Only the statement is refused, not the word: EXPLAIN VACUUM shows its program.
        assert.ok((await db.query("EXPLAIN VACUUM")).length > 0);
      },
    );

    await t.step(
      "cluster mode refuses PRAGMAs that touch dqlite's WAL in every form; the leader keeps writing",
      async () => {
        await using s = await clusterServer(nodes.addresses);
        await using db = await s.client();
        await db.exec("CREATE TABLE w (x)");
        await db.run("INSERT INTO w VALUES (1)");
        const refused: [string, RegExp][] = [
          ["PRAGMA wal_checkpoint", /^Cannot run PRAGMA wal_checkpoint in cluster mode: dqlite/],
          ["PRAGMA main.wal_checkpoint(TRUNCATE)", /PRAGMA wal_checkpoint with a value/],
          ["pragma 'WAL_CHECKPOINT' = full", /wal_checkpoint/],
          ["PRAGMA journal_mode = DELETE", /PRAGMA journal_mode with a value/],
          ["PRAGMA wal_autocheckpoint = 10", /wal_autocheckpoint/],
          ["PRAGMA incremental_vacuum", /^Cannot run PRAGMA incremental_vacuum in cluster mode: /],
          ["PRAGMA no_such_pragma", /not among the PRAGMAs known to be safe/],
        ];
        for (const [sql, message] of refused) {
          for (const call of [() => db.query(sql), () => db.exec(sql), () => db.run(sql)]) {
            const err = await call().then(() => null, (e) => e);
            assert.ok(err instanceof SqliteError, `${sql}: expected a refusal`);
            assert.equal(err.code, "FORBIDDEN", `${sql}: ${err.message}`);
            assert.match(err.message, message);
          }
          // The leader is alive: a write right after is acknowledged.
          await db.run("INSERT INTO w VALUES (2)");
        }
        // Reading settings, introspection, and PRAGMAs that write through a replicated
        // transaction work.
        assert.deepEqual(await db.values("PRAGMA journal_mode"), [["wal"]]);
        assert.deepEqual(await db.values("PRAGMA integrity_check"), [["ok"]]);
        await db.exec("PRAGMA user_version = 7");
        assert.deepEqual(await db.values("PRAGMA user_version"), [[7]]);
        await db.exec("PRAGMA optimize");
        await db.run("INSERT INTO w VALUES (3)");
        assert.deepEqual(await db.values("SELECT count(*), sum(x) FROM w"), [[9, 18]]);
      },
    );

    await t.step(
      "cluster mode: 8 clients writing at once, pipelined, lose nothing",
      async () => {
        await using s = await clusterServer(nodes.addresses);
        const clients = await Promise.all(Array.from({ length: 8 }, () => s.client()));
        try {
          await clients[0].exec("CREATE TABLE c (id INTEGER PRIMARY KEY, who INTEGER)");
          await Promise.all(
            clients.map((c, w) =>
              Promise.all(
                Array.from({ length: 25 }, (_, i) =>
                  c.run("INSERT INTO c VALUES (?, ?)", [w * 100 + i, w])),
              )
            ),
          );
          assert.deepEqual(await clients[1].values("SELECT count(*), count(DISTINCT who) FROM c"), [
            [200, 8],
          ]);
        } finally {
          for (const c of clients) await c.close();
        }
      },
    );

    await t.step(
      "cluster mode rolls back a transaction idle past txIdleTimeout: TX_TIMEOUT until ROLLBACK",
      async () => {
        await using s = await clusterServer(nodes.addresses, { txIdleTimeout: 200 });
        await using a = await s.client();
        await using b = await s.client();
        await a.exec("CREATE TABLE t (x)");
        await a.exec("BEGIN");
        await a.run("INSERT INTO t VALUES (1)");
        await new Promise((r) => setTimeout(r, 400));
        // The writer's lock is free again: b writes without waiting.
        await b.run("INSERT INTO t VALUES (2)");
        const err = await a.run("INSERT INTO t VALUES (3)").catch((e) => e);
        assert.equal(err.code, "TX_TIMEOUT", err.message);
        await a.exec("ROLLBACK");
        assert.equal(a.inTransaction, false);
        assert.deepEqual(await a.values("SELECT x FROM t"), [[2]]);
      },
    );

    await t.step(
      "cluster mode rolls back a transaction open past txTimeout however busy: TX_TIMEOUT until ROLLBACK",
      async () => {
        await using s = await clusterServer(nodes.addresses, {
          txTimeout: 300,
          txIdleTimeout: 200,
        });
        await using a = await s.client();
        await a.exec("CREATE TABLE t2 (x)");
        await a.exec("BEGIN");
        await a.run("INSERT INTO t2 VALUES (1)");
        const started = performance.now();
        let err: { code?: string; message?: string } | null = null;
        while (err === null && performance.now() - started < 3000) {
          await new Promise((r) => setTimeout(r, 50)); // never idle for 200 ms
          err = await a.values("SELECT count(*) FROM t2").then(() => null, (e) => e);
        }
        assert.equal(err?.code, "TX_TIMEOUT", String(err?.message));
        assert.match(String(err?.message), /after lasting 300 ms \(--tx-timeout\)/);
        await a.exec("ROLLBACK");
        assert.deepEqual(await a.values("SELECT count(*) FROM t2"), [[0]]);
      },
    );

    await t.step("cluster mode: a write that waits past busyTimeout is BUSY_TIMEOUT", async () => {
      await using s = await clusterServer(nodes.addresses, { busyTimeout: 150 });
      await using a = await s.client();
      await using b = await s.client();
      await a.exec("CREATE TABLE t (x)");
      await a.exec("BEGIN IMMEDIATE");
      await a.run("INSERT INTO t VALUES (1)");
      const err = await b.run("INSERT INTO t VALUES (2)").then(() => null, (e) => e);
      assert.ok(err instanceof SqliteError, String(err));
      assert.equal(err.code, "BUSY_TIMEOUT");
      assert.match(
        err.message,
        /^Write waited 150 ms for the writer, held by another connection: /,
      );
      await a.exec("COMMIT");
      await b.run("INSERT INTO t VALUES (3)");
      assert.deepEqual(await b.values("SELECT x FROM t ORDER BY x"), [[1], [3]]);
    });

    await t.step(
      "cluster mode: temp.x objects are refused like CREATE TEMP; a temp trigger never spies",
      async () => {
        await using s = await clusterServer(nodes.addresses);
        await using a = await s.client();
        await a.exec("CREATE TABLE tgt (x INT); CREATE TABLE audit (n INT)");
        for (
          const sql of [
            "CREATE TRIGGER temp.spy AFTER INSERT ON main.tgt BEGIN " +
            "INSERT INTO audit VALUES (new.x); END",
            "CREATE TABLE temp.tt2(x)",
            'CREATE VIEW "temp".v AS SELECT 1',
          ]
        ) {
          const err = await a.exec(sql).then(() => null, (e) => e);
          assert.ok(err instanceof SqliteError, `${sql}: expected a refusal`);
          assert.equal(err.code, "FORBIDDEN", err.message);
          assert.match(err.message, /^Cannot create TEMP objects in cluster mode: /);
        }
        await using b = await s.client();
        await b.run("INSERT INTO tgt VALUES (1)");
        assert.deepEqual(await b.values("SELECT count(*) FROM audit"), [[0]]);
        assert.deepEqual(await a.values("SELECT count(*) FROM temp.sqlite_schema"), [[0]]);
      },
    );

    await t.step(
      "cluster mode refuses fts3_tokenizer() and sqlite_stmt as the single-file engine does",
      async () => {
        await using s = await clusterServer(nodes.addresses);
        await using db = await s.client();
        const refused: [string, RegExp][] = [
          [
            "SELECT hex(fts3_tokenizer('simple'))",
            /^Cannot call fts3_tokenizer\(\): it reads and sets code addresses in the server process$/,
          ],
          [
            "SELECT sql FROM sqlite_stmt",
            /^Cannot read sqlite_stmt: it shows the SQL of other clients' statements on the server's shared connections$/,
          ],
        ];
        for (const [sql, message] of refused) {
          const err = await db.query(sql).then(() => null, (e) => e);
          assert.ok(err instanceof SqliteError, `${sql}: expected a refusal`);
          assert.equal(err.code, "FORBIDDEN", err.message);
          assert.match(err.message, message);
        }
        assert.deepEqual(await db.values("SELECT 'sqlite_stmt', 'fts3_tokenizer(1)'"), [[
          "sqlite_stmt",
          "fts3_tokenizer(1)",
        ]]);
      },
    );

    await t.step(
      "cluster mode: a result past --max-result-bytes is RESULT_TOO_LARGE, naming the option",
      async () => {
        await using s = await clusterServer(nodes.addresses, { maxResultBytes: 10_000 });
        await using db = await s.client();
        const big =
          "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 5000) " +
          "SELECT i, 'some text to fill the rows' FROM c";
        for (const call of [() => db.values(big), () => db.iterate(big).next()]) {
          const err = await call().then(() => null, (e) => e);
          assert.ok(err instanceof SqliteError, String(err));
          assert.equal(err.code, "RESULT_TOO_LARGE", err.message);
          assert.match(
            err.message,
            /^Result exceeds maxResultBytes 10000 \(--max-result-bytes\): .*in cluster mode iterate\(\) buffers/,
          );
        }
        assert.deepEqual(await db.values("SELECT 1"), [[1]]);
      },
    );

    await t.step(
      "cluster mode: a statement timeout stops a query whose rows never end, and frees its connection",
      async () => {
        await using s = await clusterServer(nodes.addresses, {
          dqlite: { nodes: [], database: "", poolSize: 1 },
        });
        await using db = await s.client();
        const endless =
          "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c) SELECT i FROM c";
        for (let round = 0; round < 2; round++) {
          const started = performance.now();
          const err = await db.query(endless, [], { timeout: 300 }).then(() => null, (e) => e);
          const took = performance.now() - started;
          assert.ok(err instanceof SqliteError, String(err));
          assert.equal(err.code, "STATEMENT_TIMEOUT", err.message);
          // 300 ms plus the cluster's round trips; the margin is for a loaded CI machine.
          assert.ok(took < 6000, `settled after ${Math.round(took)} ms`);
          // The only pooled connection serves the next request at once.
          const next = performance.now();
          assert.deepEqual(await db.values("SELECT 41 + 1"), [[42]]);
          assert.ok(performance.now() - next < 1000);
        }
        // A row set stopped by the deadline inside a transaction: the transaction is lost.
        await db.exec("CREATE TABLE t (x)");
        await db.exec("BEGIN");
        await db.run("INSERT INTO t VALUES (1)");
        const err = await db.query(endless, [], { timeout: 200 }).then(() => null, (e) => e);
        assert.equal(err?.code, "STATEMENT_TIMEOUT", String(err));
        await db.exec("ROLLBACK");
        assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]]);
      },
    );

    await t.step(
      "cluster mode: iterate() over a read that fails part way yields the rows before the error, then rejects with query()'s error",
      async () => {
        await using s = await clusterServer(nodes.addresses);
        await using db = await s.client();
        await db.exec(
          "CREATE TABLE t (x INTEGER); " +
            "INSERT INTO t VALUES (1), (2), (-9223372036854775807 - 1), (4)",
        );
        const failing = "SELECT abs(x) AS x FROM t ORDER BY rowid";
        const whole = await db.query(failing).then(() => null, (e: unknown) => e);
        assert.ok(whole instanceof SqliteError, String(whole));
        assert.match(whole.message, /integer overflow/);
        for (const inTx of [false, true]) {
          if (inTx) await db.exec("BEGIN");
          // More failures than cursors a connection may hold (maxCursors, 16).
          for (let i = 0; i < 20; i++) {
            const { rows, error } = await drain(db.iterate<{ x: number }>(failing));
            assert.deepEqual(rows, [{ x: 1 }, { x: 2 }], `inTx ${inTx}, attempt ${i}`);
            assert.ok(error instanceof SqliteError, String(error));
            assert.equal(error.code, whole.code);
            assert.equal(error.message, whole.message);
          }
          // Stopped after the rows before the error (its error never pulled).
          for (let i = 0; i < 20; i++) {
            const it = db.iterate<{ x: number }>(failing, [], { arrays: true });
            assert.deepEqual((await it.next()).value, [1]);
            assert.deepEqual((await it.next()).value, [2]);
            await it.return(undefined);
          }
          assert.equal(await openCursors(s.path), 0);
          if (inTx) {
            // A read's error leaves the transaction open.
            assert.equal(db.inTransaction, true);
            await db.run("INSERT INTO t VALUES (5)");
            await db.exec("COMMIT");
          }
        }
        assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[5]]);
        // Failing past the node's first message of rows: every row before the error.
        const many = await drain(
          db.iterate<[number]>(
            "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 5000) " +
              "SELECT CASE WHEN i = 3000 THEN abs(-9223372036854775807 - 1 + (i - 3000)) ELSE i END " +
              "FROM c",
            [],
            { arrays: true },
          ),
        );
        assert.equal(many.rows.length, 2999);
        assert.deepEqual(many.rows.at(-1), [2999]);
        assert.match(String(many.error), /integer overflow/);
        // Text that is not UTF-8 in row 2: row 1, then INVALID_UTF8.
        const bad = await drain(
          db.iterate<[unknown]>(
            "SELECT CASE WHEN x = 2 THEN CAST(x'fffe' AS TEXT) ELSE x END FROM t ORDER BY rowid",
            [],
            { arrays: true },
          ),
        );
        assert.deepEqual(bad.rows, [[1]]);
        assert.equal((bad.error as SqliteError).code, "INVALID_UTF8");
        // A write that fails part way yields no rows, and had no effect.
        await db.exec("CREATE TABLE u (x INTEGER)");
        const write = await drain(db.iterate("INSERT INTO u SELECT abs(x) FROM t ORDER BY rowid"));
        assert.deepEqual(write.rows, []);
        assert.match(String(write.error), /integer overflow/);
        assert.deepEqual(await db.values("SELECT count(*) FROM u"), [[0]]);
        assert.equal(await openCursors(s.path), 0);
      },
    );

    await t.step(
      "cluster mode: Statement.columns gives SQLite's names, duplicates kept, as a single file does",
      async () => {
        await using s = await clusterServer(nodes.addresses);
        await using single = await startServer();
        const statements = [
          "SELECT 1 AS x, 2 AS x",
          'SELECT 1 AS x, 2 AS "x:1", 3 AS x',
          "SELECT a AS x, b AS x FROM t WHERE a > ? ORDER BY a LIMIT ? OFFSET ?",
          "SELECT a AS x, b AS x FROM t LIMIT 1, ?; -- the offset first",
          "SELECT a, a, (SELECT b FROM t LIMIT 1) AS a FROM t LIMIT (SELECT count(*) FROM t)",
          "WITH c AS (SELECT a FROM t LIMIT 2) SELECT a, a FROM c",
          "VALUES (1, 2)",
          "SELECT a AS x FROM t UNION ALL SELECT b AS y FROM t ORDER BY 1",
        ];
        for (const target of [s, single]) {
          await using db = await target.client();
          await db.exec("CREATE TABLE t (a INTEGER, b INTEGER); INSERT INTO t VALUES (1, 2)");
          for (const sql of statements) {
            const stmt = await db.prepare(sql);
            const expected = sql.startsWith("VALUES")
              ? ["column1", "column2"]
              : sql.includes('"x:1"')
              ? ["x", "x:1", "x"]
              : sql.includes("SELECT a, a,")
              ? ["a", "a", "a"]
              : sql.startsWith("WITH")
              ? ["a", "a"]
              : sql.includes("UNION")
              ? ["x"]
              : ["x", "x"];
            assert.deepEqual(
              stmt.columns,
              expected,
              `${sql} (${target === s ? "cluster" : "single"})`,
            );
            await stmt.finalize();
          }
          // The statement prepared still runs, its LIMIT intact.
          const limited = await db.prepare("SELECT a AS x, b AS x FROM t LIMIT ?");
          assert.deepEqual(await limited.values([5]), [[1, 2]]);
          await limited.finalize();
          // Preparing a write writes nothing (no columns either).
          const insert = await db.prepare("INSERT INTO t VALUES (3, 4)");
          assert.deepEqual(insert.columns, []);
          assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[1]]);
          await insert.finalize();
        }
      },
    );

    await t.step(
      "cluster mode refuses SQL containing NUL with BAD_REQUEST, as a single file does, before any of it runs",
      async () => {
        await using s = await clusterServer(nodes.addresses);
        await using single = await startServer();
        const message = "Cannot prepare statement: SQL text contains a NUL character";
        for (const target of [s, single]) {
          const where = target === s ? "cluster" : "single";
          await using db = await target.client();
          await db.exec("CREATE TABLE t (x)");
          const calls: [string, () => Promise<unknown>, string][] = [
            ["query", () => db.query("SELECT 1\0"), message],
            ["run", () => db.run("INSERT INTO t VALUES (1)\0"), message],
            ["exec", () => db.exec("INSERT INTO t VALUES (1); SELECT '\0'"), message],
            ["prepare", () => db.prepare("SELECT 1 -- \0"), message],
            ["iterate", () => db.iterate("SELECT '\0'").next(), message],
            [
              "batch",
              () => db.batch([{ sql: "INSERT INTO t VALUES (1)" }, { sql: "SELECT '\0'" }]),
              `Batch statement 2 of 2 failed, nothing was applied: ${message}`,
            ],
          ];
          for (const [name, call, expected] of calls) {
            const err = await call().then(() => null, (e: unknown) => e);
            assert.ok(err instanceof SqliteError, `${where} ${name}: ${String(err)}`);
            assert.equal(err.code, "BAD_REQUEST", `${where} ${name}: ${err.message}`);
            assert.equal(err.message, expected, `${where} ${name}`);
          }
          assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]], where);
        }
      },
    );

    await t.step("cluster mode: a transaction held by a closed client is rolled back", async () => {
      await using s = await clusterServer(nodes.addresses);
      await using b = await s.client();
      await b.exec("CREATE TABLE t (x)");
      const a = await s.client();
      await a.exec("BEGIN");
      await a.run("INSERT INTO t VALUES (1)");
      await a.close();
      // b's write waits (SQLITE_BUSY, retried) until the leader rolled a's transaction back.
      await b.run("INSERT INTO t VALUES (2)");
      assert.deepEqual(await b.values("SELECT x FROM t"), [[2]]);
    });
  },
});

Deno.test("checkClusterSql() finds hazardous column types only where they are declared types", () => {
  const policy = { allowUnsafePragmas: false };
  const ok = [
    "CREATE TABLE t (date TEXT, boolean INTEGER)",
    "CREATE TABLE t (a DATE(10))",
    "CREATE TABLE t (a DATE TIME, b date time(6), c DATETIME(6), d ' DATE', e 'DATE ')",
    "CREATE TABLE t (a TEXT 'DATE')",
    "CREATE TABLE t (a TEXT DEFAULT 'DATE', b CHECK (b <> 'BOOLEAN'))",
    "ALTER TABLE t ADD d TEXT DEFAULT 'TIMESTAMP'",
    "CREATE TABLE t AS SELECT 1 AS boolean",
    "SELECT CAST(1 AS BOOLEAN)",
    "INSERT INTO t VALUES ('BOOLEAN')",
    "PRAGMA foreign_keys",
    "PRAGMA table_info(t)",
  ];
  for (const sql of ok) checkClusterSql(sql, policy);
  const bad = [
    "CREATE TABLE t (a BOOLEAN)",
    "create table if not exists main.t (a integer primary key, b boolean default 0)",
    "CREATE TABLE t ([b] Timestamp)",
    "ALTER TABLE t ADD d DATE",
    "CREATE TABLE t (d 'DATETIME')",
    "CREATE TABLE t (d 'datetime' NOT NULL, e INTEGER)",
    "ALTER TABLE t ADD d 'BOOLEAN'",
    "ALTER TABLE t ADD COLUMN d `Timestamp`",
    'CREATE TABLE t (d "DATE" "TIME")',
    "CREATE TABLE t (x INT, d [DATE](10))",
    "CREATE TABLE t (d 'DATE' (10, 2))",
    'CREATE TABLE t (d "boolean" xyz DEFAULT 0)',
    "CREATE TABLE t ('d' 'BOOLEAN', PRIMARY KEY (d))",
    "PRAGMA main.journal_mode = DELETE",
    "VACUUM INTO '/tmp/x'",
    "DETACH x",
    "VACUUM",
    "Vacuum main",
    "VACUUM 'main'",
    "-- x\nVACUUM /* y */;",
    "SELECT 1; VACUUM",
  ];
  for (const sql of bad) {
    assert.throws(() => checkClusterSql(sql, policy), { code: "FORBIDDEN" }, sql);
  }
  checkClusterSql("PRAGMA foreign_keys = OFF", { allowUnsafePragmas: true });
});

Deno.test("checkClusterSql() allows known-safe PRAGMAs and refuses WAL ones even when unsafe is allowed", () => {
  const strict = { allowUnsafePragmas: false };
  const unsafe = { allowUnsafePragmas: true };
  const ok = [
    "PRAGMA table_info(t)",
    "PRAGMA main.index_list('t')",
    "PRAGMA user_version = 3",
    "PRAGMA optimize",
    "PRAGMA integrity_check",
    "PRAGMA journal_mode",
    "PRAGMA wal_autocheckpoint",
    "PRAGMA foreign_keys",
  ];
  for (const sql of ok) checkClusterSql(sql, strict);
  const always = [
    "PRAGMA wal_checkpoint",
    "PRAGMA wal_checkpoint(PASSIVE)",
    'PRAGMA "main".[Wal_Checkpoint] = RESTART',
    "SELECT 1; PRAGMA wal_checkpoint",
    "PRAGMA journal_mode = delete",
    "PRAGMA journal_mode('memory')",
    "PRAGMA wal_autocheckpoint = 1",
    "PRAGMA locking_mode = EXCLUSIVE",
  ];
  for (const sql of always) {
    assert.throws(() => checkClusterSql(sql, strict), { code: "FORBIDDEN" }, sql);
    assert.throws(() => checkClusterSql(sql, unsafe), { code: "FORBIDDEN" }, sql);
  }
  const unlessUnsafe = ["PRAGMA incremental_vacuum(10)", "PRAGMA parser_trace = 1", "PRAGMA xyz"];
  for (const sql of unlessUnsafe) {
    assert.throws(() => checkClusterSql(sql, strict), { code: "FORBIDDEN" }, sql);
    checkClusterSql(sql, unsafe);
  }
});

Deno.test("checkClusterSql() refuses temp.x objects, fts3_tokenizer() and sqlite_stmt, not their text", () => {
  const policy = { allowUnsafePragmas: false };
  const ok = [
    "CREATE TABLE tempx (x)",
    "CREATE TABLE main.t (temp TEXT)",
    "CREATE INDEX i ON t (temp)",
    "SELECT 'fts3_tokenizer(1)', 'sqlite_stmt' -- fts3_tokenizer('x') sqlite_stmt",
    "SELECT /* sqlite_stmt */ 1 AS fts3_tokenizer",
    "CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 'temp.x'; END",
    "CREATE TABLE notes (body TEXT DEFAULT 'sqlite_stmt')",
    "CREATE VIRTUAL TABLE docs USING fts5(body, content='notes')",
  ];
  for (const sql of ok) checkClusterSql(sql, policy);
  const bad: [string, RegExp][] = [
    ["CREATE TABLE temp.tt2(x)", /Cannot create TEMP objects/],
    ['CREATE TABLE IF NOT EXISTS "TEMP".t (x)', /Cannot create TEMP objects/],
    ["CREATE VIEW [temp].v AS SELECT 1", /Cannot create TEMP objects/],
    ["create unique index if not exists `temp`.i on t (x)", /Cannot create TEMP objects/],
    ["CREATE VIRTUAL TABLE Temp . v USING fts5(x)", /Cannot create TEMP objects/],
    [
      "CREATE TRIGGER temp.spy AFTER INSERT ON main.t BEGIN INSERT INTO a VALUES (new.x); END",
      /Cannot create TEMP objects/,
    ],
    ["SELECT hex(fts3_tokenizer('simple'))", /^Cannot call fts3_tokenizer\(\): it reads/],
    ['SELECT "FTS3_TOKENIZER" (?)', /fts3_tokenizer/],
    ["SELECT sql FROM sqlite_stmt", /^Cannot read sqlite_stmt: it shows the SQL of other/],
    ["SELECT 1; SELECT * FROM main.[SQLITE_STMT]", /sqlite_stmt/],
    [
      "CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO a SELECT sql FROM sqlite_stmt; END",
      /sqlite_stmt/,
    ],
    ["CREATE VIRTUAL TABLE p USING fts5(sql, content='sqlite_stmt')", /sqlite_stmt/],
    ["CREATE VIRTUAL TABLE p USING fts4(sql, content=' Main.SQLITE_STMT ')", /sqlite_stmt/],
  ];
  for (const [sql, message] of bad) {
    assert.throws(() => checkClusterSql(sql, policy), { code: "FORBIDDEN", message }, sql);
  }
});

Deno.test("statementTexts() splits a script at its semicolons, not those in literals or triggers", () => {
  const script = "CREATE TABLE t (x); -- note\nINSERT INTO t VALUES ('a;b');\n" +
    "CREATE TRIGGER g AFTER INSERT ON t BEGIN DELETE FROM t WHERE x = 1; END; SELECT 1";
  assert.deepEqual(statementTexts(script), [
    "CREATE TABLE t (x);",
    "INSERT INTO t VALUES ('a;b');",
    "CREATE TRIGGER g AFTER INSERT ON t BEGIN DELETE FROM t WHERE x = 1; END;",
    "SELECT 1",
  ]);
  assert.deepEqual(statementTexts("  ; -- nothing\n"), []);
});

Deno.test("immediateBegins() makes every deferred BEGIN immediate, nothing else", () => {
  assert.equal(immediateBegins("BEGIN"), "BEGIN IMMEDIATE");
  assert.equal(immediateBegins("begin deferred transaction"), "begin IMMEDIATE transaction");
  assert.equal(
    immediateBegins("/* x */ BEGIN TRANSACTION;"),
    "/* x */ BEGIN IMMEDIATE TRANSACTION;",
  );
  assert.equal(
    immediateBegins("INSERT INTO t VALUES ('begin'); BEGIN; UPDATE t SET x = 1; COMMIT"),
    "INSERT INTO t VALUES ('begin'); BEGIN IMMEDIATE; UPDATE t SET x = 1; COMMIT",
  );
  for (
    const same of [
      "BEGIN IMMEDIATE",
      "begin exclusive",
      "SAVEPOINT a",
      "SELECT 'BEGIN'",
      "CREATE TRIGGER g AFTER INSERT ON t BEGIN DELETE FROM t; END",
    ]
  ) assert.equal(immediateBegins(same), same);
});

Deno.test("verbOf() classifies statements by their leading keyword, after WITH", () => {
  assert.equal(verbOf("INSERT INTO t VALUES (1)"), "insert");
  assert.equal(verbOf("replace into t values (1)"), "insert");
  assert.equal(verbOf("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x"), "insert");
  assert.equal(verbOf("WITH RECURSIVE c(n) AS (SELECT 1) SELECT n FROM c"), "read");
  assert.equal(verbOf("/* c */ UPDATE t SET a = 1"), "update");
  assert.equal(verbOf("DELETE FROM t"), "delete");
  assert.equal(verbOf("CREATE TABLE t (x)"), "other");
  assert.equal(verbOf("PRAGMA user_version"), "read");
});

Deno.test("withoutRows() makes a read return no rows, with its own column names and parameters", () => {
  using db = new DatabaseSync(":memory:");
  db.exec("CREATE TABLE t (a INTEGER, b INTEGER); INSERT INTO t VALUES (1, 2), (3, 4)");
  const names = (sql: string): string[] =>
    (db.prepare(sql) as unknown as { columns(): { name: string }[] }).columns().map((c) => c.name);
  const cases: [string, (number | null)[]][] = [
    ["SELECT 1 AS x, 2 AS x", []],
    ["SELECT a AS x, b AS x FROM t ORDER BY a -- note", []],
    ["SELECT a, a FROM t WHERE a > ? ORDER BY a LIMIT ? OFFSET ?", [0, 5, 0]],
    ["SELECT a, a FROM t LIMIT 0, ?", [5]],
    ["SELECT a, (SELECT b FROM t LIMIT 1) AS a FROM t LIMIT (SELECT count(*) FROM t);", []],
    ["WITH c AS (SELECT a FROM t LIMIT 1) SELECT a, a FROM c", []],
    ["SELECT a AS x FROM t UNION ALL SELECT b AS y FROM t ORDER BY 1 LIMIT ?2 OFFSET ?1", [0, 9]],
    ["VALUES (1, 2), (3, 4)", []],
    ["SELECT a, sum(b) OVER w AS a FROM t WINDOW w AS (ORDER BY a) LIMIT 1 + 1", []],
  ];
  for (const [sql, args] of cases) {
    const rewritten = withoutRows(sql);
    assert.ok(db.prepare(sql).all(...args).length > 0, `${sql}: has rows`);
    assert.deepEqual(names(rewritten), names(sql), rewritten);
    assert.deepEqual(db.prepare(rewritten).all(...args), [], rewritten);
    // Bound NULLs (as Statement.columns binds them) leave it without rows too.
    assert.deepEqual(db.prepare(rewritten).all(...args.map(() => null)), [], rewritten);
  }
  assert.equal(withoutRows("SELECT 1;"), "SELECT 1\nLIMIT 0");
  assert.equal(withoutRows("SELECT a FROM t LIMIT 2, ?"), "SELECT a FROM t LIMIT 2, 0 AND (?)");
});

Deno.test("parseServeArgs() reads --dqlite and --dqlite-db, and wants both", () => {
  const options = parseServeArgs([
    "--dqlite",
    "127.0.0.1:9001, 127.0.0.1:9002,127.0.0.1:9003",
    "--dqlite-db",
    "app",
  ]);
  assert.notEqual(options, "help");
  assert.deepEqual((options as { dqlite: unknown }).dqlite, {
    nodes: ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"],
    database: "app",
  });
  assert.throws(() => parseServeArgs(["--dqlite", "127.0.0.1:9001"]), /go together/);
});

Deno.test("serve({ dqlite }) refuses bad node lists, names and read-only", async () => {
  await assert.rejects(serve({ dqlite: { nodes: [], database: "a" } }), TypeError);
  await assert.rejects(serve({ dqlite: { nodes: ["nohost"], database: "a" } }), /host:port/);
  await assert.rejects(serve({ dqlite: { nodes: ["127.0.0.1:1"], database: "a/b" } }), TypeError);
  await assert.rejects(
    serve({ readonly: true, dqlite: { nodes: ["127.0.0.1:1"], database: "a" } }),
    /readonly/,
  );
});
