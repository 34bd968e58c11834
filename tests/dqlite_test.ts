/**
 * The dqlite client against a real three-node cluster of `dqlite-demo`
 * processes on loopback. Skipped (with the reason printed) when
 * `dqlite-demo` is not installed: `apt-get install go-dqlite libdqlite0`.
 */

import assert from "node:assert/strict";
import { ErrorCode, SqliteError } from "../protocol/errors.ts";
import { DqliteCluster, type DqliteDatabase } from "../engine/dqlite/cluster.ts";
import { LeaderError } from "../engine/dqlite/errors.ts";
import { DemoCluster, skipWithoutDqlite } from "./_dqlite_nodes.ts";

const ignore = skipWithoutDqlite("dqlite_test.ts");

async function rejects(
  p: Promise<unknown>,
  code: string,
  sqliteCode?: number,
): Promise<SqliteError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof SqliteError, `expected a SqliteError, got ${err}`);
    assert.equal(err.code, code, err.message);
    if (sqliteCode !== undefined) assert.equal(err.sqliteCode, sqliteCode);
    return err;
  }
  assert.fail(`expected a rejection with ${code}`);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

Deno.test({
  name: "DqliteCluster against three dqlite-demo nodes",
  ignore,
  async fn(t) {
    await using nodes = await DemoCluster.start(3);
    const cluster = new DqliteCluster(nodes.addresses, { leaderTimeout: 15_000 });
    try {
      await t.step(
        "DqliteCluster.members() lists three voters, leader() names one of them",
        async () => {
          const members = await cluster.members();
          assert.deepEqual(members.map((m) => m.address).sort(), [...nodes.addresses].sort());
          assert.deepEqual(members.map((m) => m.role), [0, 0, 0]);
          assert.ok(nodes.addresses.includes(await cluster.leader()));
        },
      );

      await t.step(
        "DqliteCluster.open() through a follower's address alone reaches the leader",
        async () => {
          const leader = await cluster.leader();
          const follower = nodes.addresses.find((a) => a !== leader)!;
          const viaFollower = new DqliteCluster([follower]);
          await using db = await viaFollower.open("redirect");
          assert.equal(db.address, leader);
          const { rows } = await db.query("SELECT 1 + 1");
          assert.deepEqual(rows, [[2]]);
        },
      );

      await t.step("DqliteDatabase round-trips every value type exactly", async () => {
        await using db = await cluster.open("values");
        await db.exec("CREATE TABLE v(id INTEGER PRIMARY KEY, x)");
        const values = [
          0,
          1,
          -1,
          2 ** 53 - 1,
          -(2 ** 53 - 1),
          2n ** 53n,
          -(2n ** 53n),
          9223372036854775807n,
          -9223372036854775808n,
          0.1,
          -2.5,
          1e308,
          5e-324,
          Infinity,
          -Infinity,
          "",
          "plain",
          "héllo wörld ✓ 😀 \u{10FFFF}",
          "x".repeat(100_000),
          new Uint8Array(),
          new Uint8Array([0, 1, 2, 255, 0]),
          new Uint8Array(300_000).map((_, i) => (i * 7) & 255),
          null,
        ];
        for (let i = 0; i < values.length; i++) {
          const r = await db.exec("INSERT INTO v(id, x) VALUES (?, ?)", [i + 1, values[i]]);
          assert.equal(r.lastInsertId, i + 1);
          assert.equal(r.rowsAffected, 1);
        }
        const { columns, rows } = await db.query("SELECT x, typeof(x) FROM v ORDER BY id");
        assert.deepEqual(columns, ["x", "typeof(x)"]);
        assert.equal(rows.length, values.length);
        for (let i = 0; i < values.length; i++) {
          const expected = typeof values[i] === "bigint" && Number.isSafeInteger(Number(values[i]))
            ? Number(values[i])
            : values[i];
          assert.deepEqual(rows[i][0], expected, `value ${i}`);
        }
        assert.equal(typeof rows[7][0], "bigint");
        assert.equal(rows[0][1], "integer");
        assert.equal(rows[9][1], "real");
        assert.equal(rows[19][1], "blob");
        // Integers beyond 2^53 stay exact through the parameter path too.
        const r = await db.query("SELECT ? + 0, ? - 1", [
          9223372036854775806n,
          -9223372036854775807n,
        ]);
        assert.deepEqual(r.rows, [[9223372036854775806n, -9223372036854775808n]]);
        // Booleans bind as 1 and 0; positional parameters fill ?NNN and :name in order.
        const b = await db.query("SELECT ?, ?, ?2, :a", [true, false, 7]);
        assert.deepEqual(b.rows, [[1, 0, 0, 7]]);
        // Named arguments are numbered from the SQL text (dqlite binds by index only).
        const named = await db.query("SELECT :a, @b, $c, :a, ?5", {
          c: 3,
          a: 1,
          "@b": 2n ** 62n,
          "?5": 5,
        });
        assert.deepEqual(named.rows, [[1, 2n ** 62n, 3, 1, 5]]);
        // An object cannot name a `?`: refused rather than bound NULL.
        await rejects(db.query("SELECT :a, ?", { a: 1 }), ErrorCode.InvalidParam);
        await rejects(db.query("SELECT :a", { a: 1, zz: 1 }), ErrorCode.InvalidParam);
        await rejects(db.query("SELECT :a, :b", { a: 1 }), ErrorCode.InvalidParam);
        await rejects(db.query("SELECT ?", [1, 2]), ErrorCode.InvalidParam);
        // Negative rowids come back signed.
        const neg = await db.exec("INSERT INTO v(id, x) VALUES (-5, 'n')");
        assert.equal(neg.lastInsertId, -5);
      });

      await t.step(
        "DqliteDatabase returns dqlite's time and boolean types as stored integers and text",
        async () => {
          await using db = await cluster.open("special");
          await db.exec("CREATE TABLE s(d DATETIME, b BOOLEAN, t TIMESTAMP)");
          await db.exec("INSERT INTO s VALUES (?, ?, ?)", [1700000000, 5, "2024-01-02 03:04:05"]);
          await db.exec("INSERT INTO s VALUES (?, ?, ?)", ["2024-02-03T04:05:06Z", 0, null]);
          await db.exec("INSERT INTO s VALUES (?, ?, ?)", [null, null, ""]);
          const { rows } = await db.query("SELECT d, b, t FROM s ORDER BY rowid");
          assert.deepEqual(rows, [
            [1700000000, 5, "2024-01-02 03:04:05"],
            ["2024-02-03T04:05:06Z", 0, null],
            // dqlite sends NULL in a BOOLEAN column as 0 and in a DATETIME column as ''.
            [null, 0, null],
          ]);
        },
      );

      await t.step(
        "DqliteDatabase errors carry SQLite's extended codes and leave the session usable",
        async () => {
          await using db = await cluster.open("errors");
          await db.exec("CREATE TABLE k(id INTEGER PRIMARY KEY, v TEXT UNIQUE NOT NULL)");
          await db.exec("INSERT INTO k VALUES (1, 'a')");
          const unique = await rejects(
            db.exec("INSERT INTO k VALUES (2, 'a')"),
            "SQLITE_CONSTRAINT_UNIQUE",
            2067,
          );
          assert.match(unique.message, /UNIQUE constraint failed: k\.v/);
          await rejects(
            db.exec("INSERT INTO k VALUES (1, 'b')"),
            "SQLITE_CONSTRAINT_PRIMARYKEY",
            1555,
          );
          await rejects(
            db.exec("INSERT INTO k VALUES (3, NULL)"),
            "SQLITE_CONSTRAINT_NOTNULL",
            1299,
          );
          const syntax = await rejects(db.exec("SELEC 1"), "SQLITE_ERROR", 1);
          assert.match(syntax.message, /syntax error/);
          await rejects(db.query("SELECT * FROM missing"), "SQLITE_ERROR", 1);
          await rejects(db.query("SELECT ?", [1, 2]), ErrorCode.InvalidParam);
          // Refused before anything is sent.
          await rejects(
            db.exec("INSERT INTO k VALUES (?, ?)", [4, "a\0b"]),
            ErrorCode.InvalidParam,
          );
          await rejects(db.exec("INSERT INTO k VALUES (?, ?)", [4, NaN]), ErrorCode.InvalidParam);
          const many = `SELECT ${new Array(256).fill("?").join(", ")}`;
          await rejects(db.query(many, new Array(256).fill(1)), ErrorCode.InvalidParam);
          await rejects(
            db.exec("INSERT INTO k VALUES (4, 'r') RETURNING id"),
            ErrorCode.BadRequest,
          );
          await rejects(db.exec("SELECT 1"), ErrorCode.BadRequest);
          await rejects(db.query("INSERT INTO k VALUES (5, 'q')"), ErrorCode.BadRequest);
          await rejects(db.query("  -- nothing\n"), ErrorCode.BadRequest);
          // TEXT that is not UTF-8 is refused, not altered, also inside a multi-part result.
          await rejects(db.query("SELECT CAST(x'fffe' AS TEXT)"), "INVALID_UTF8");
          await rejects(
            db.query(
              "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000) " +
                "SELECT i, CASE i WHEN 10 THEN CAST(x'c3' AS TEXT) ELSE 'ok' END FROM n",
            ),
            "INVALID_UTF8",
          );
          const { rows } = await db.query("SELECT id, v FROM k ORDER BY id");
          assert.deepEqual(rows, [[1, "a"]]);
        },
      );

      await t.step(
        "DqliteDatabase.query() reads a 10,000-row result sent in many parts",
        async () => {
          await using db = await cluster.open("large");
          await db.exec("CREATE TABLE big(id INTEGER PRIMARY KEY, label TEXT)");
          await db.exec("BEGIN");
          const stmt = await db.prepare("INSERT INTO big VALUES (?, ?)");
          for (let i = 1; i <= 10_000; i++) await stmt.exec([i, `row ${i}`]);
          await stmt.finalize();
          await db.exec("COMMIT");
          const { rows } = await db.query("SELECT id, label FROM big ORDER BY id");
          assert.equal(rows.length, 10_000);
          for (let i = 0; i < rows.length; i++) assert.deepEqual(rows[i], [i + 1, `row ${i + 1}`]);
          await rejects(
            db.query("SELECT id, label FROM big", [], { maxBytes: 50_000 }),
            ErrorCode.ResultTooLarge,
          );
          // The session is in step again after the discarded rest.
          assert.deepEqual((await db.query("SELECT count(*) FROM big")).rows, [[10_000]]);
          const pending = db.query("SELECT a.id FROM big a, big b WHERE b.id <= 20");
          db.interrupt();
          await rejects(pending, "SQLITE_INTERRUPT", 9);
          assert.deepEqual((await db.query("SELECT max(id) FROM big")).rows, [[10_000]]);
        },
      );

      await t.step(
        "DqliteDatabase.interrupt() ends a query whose rows never end within its drain bound",
        async () => {
          await using db = await cluster.open("endless");
          const endless =
            "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c) SELECT i FROM c";
          const generation = db.generation;
          const pending = db.query(endless);
          await sleep(200);
          const started = performance.now();
          db.interrupt();
          await rejects(pending, "SQLITE_INTERRUPT", 9);
          const took = performance.now() - started;
          assert.ok(took < 2000, `ended ${Math.round(took)} ms after interrupt()`);
          // The node connection was closed (the node finalizes the statement); the next query
          // runs on a new one.
          assert.deepEqual((await db.query("SELECT 7")).rows, [[7]]);
          assert.equal(db.generation, generation + 1);
          // interrupt() before the first message arrives stops the query as well.
          const early = db.query(endless);
          db.interrupt();
          await rejects(early, "SQLITE_INTERRUPT", 9);
          assert.deepEqual((await db.query("SELECT 8")).rows, [[8]]);
        },
      );

      await t.step(
        "DqliteDatabase transactions: BEGIN/COMMIT and ROLLBACK on one connection",
        async () => {
          await using a = await cluster.open("tx");
          await using b = await cluster.open("tx");
          await a.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v)");
          await a.exec("BEGIN");
          assert.equal(a.inTransaction, true);
          await a.exec("INSERT INTO t VALUES (1, 'one')");
          await a.exec("INSERT INTO t VALUES (2, 'two')");
          assert.deepEqual((await a.query("SELECT count(*) FROM t")).rows, [[2]]);
          assert.deepEqual((await b.query("SELECT count(*) FROM t")).rows, [[0]]);
          await a.exec("ROLLBACK");
          assert.equal(a.inTransaction, false);
          assert.deepEqual((await a.query("SELECT count(*) FROM t")).rows, [[0]]);
          await a.exec("BEGIN IMMEDIATE");
          await a.exec("INSERT INTO t VALUES (3, 'three')");
          await a.exec("COMMIT");
          assert.deepEqual((await b.query("SELECT id, v FROM t")).rows, [[3, "three"]]);
          await rejects(a.exec("COMMIT"), "SQLITE_ERROR", 1);
        },
      );

      await t.step(
        "DqliteDatabase: concurrent autocommit writes from 8 sessions wait out SQLITE_BUSY",
        async () => {
          const sessions = await Promise.all(
            Array.from({ length: 8 }, () => cluster.open("busy")),
          );
          try {
            await sessions[0].exec("CREATE TABLE c(id INTEGER PRIMARY KEY, s INTEGER)");
            await Promise.all(sessions.map(async (db, s) => {
              for (let i = 0; i < 25; i++) await db.exec("INSERT INTO c(s) VALUES (?)", [s]);
            }));
            const { rows } = await sessions[0].query(
              "SELECT s, count(*) FROM c GROUP BY s ORDER BY s",
            );
            assert.deepEqual(rows, Array.from({ length: 8 }, (_, s) => [s, 25]));
          } finally {
            for (const db of sessions) db.close();
          }
        },
      );

      await t.step("DqliteStatement prepares once, runs with parameters, finalizes", async () => {
        await using db = await cluster.open("stmts");
        await db.exec("CREATE TABLE p(id INTEGER PRIMARY KEY, v)");
        const ins = await db.prepare("INSERT INTO p(v) VALUES (?)");
        assert.equal(ins.paramCount, 1);
        assert.deepEqual(await ins.exec(["a"]), {
          lastInsertId: 1,
          rowsAffected: 1,
          lastInsertIdBefore: 0,
        });
        assert.deepEqual(await ins.exec([2n ** 60n]), {
          lastInsertId: 2,
          rowsAffected: 1,
          lastInsertIdBefore: 1,
        });
        const sel = await db.prepare("SELECT v FROM p WHERE id >= ? ORDER BY id");
        assert.deepEqual((await sel.query([1])).rows, [["a"], [2n ** 60n]]);
        assert.deepEqual((await sel.query([2])).rows, [[2n ** 60n]]);
        const byName = await db.prepare("SELECT v FROM p WHERE id = :id");
        assert.deepEqual((await byName.query({ id: 1 })).rows, [["a"]]);
        await byName.finalize();
        await ins.finalize();
        await ins.finalize();
        await rejects(ins.exec(["b"]), ErrorCode.UnknownStatement);
        await sel.finalize();
        await rejects(db.prepare("SELEC"), "SQLITE_ERROR", 1);
      });

      await t.step(
        "failover: leader killed under write load loses no acknowledged write",
        async () => {
          const setup = await cluster.open("failover");
          await setup.exec("CREATE TABLE w(id INTEGER PRIMARY KEY, at REAL)");
          setup.close();
          const acked = new Set<number>();
          const attempted = new Set<number>();
          const failures: string[] = [];
          const unexpected: unknown[] = [];
          let killedAt = 0;
          let resumedAt = 0;
          let next = 1;
          let stop = false;
          const writer = async (db: DqliteDatabase): Promise<void> => {
            while (!stop) {
              const id = next++;
              attempted.add(id);
              const sentAt = performance.now();
              try {
                await db.exec("INSERT INTO w(id, at) VALUES (?, ?)", [id, Date.now()]);
                acked.add(id);
                // Service resumed: a write sent after the leader's death was acknowledged.
                if (killedAt !== 0 && sentAt > killedAt && resumedAt === 0) {
                  resumedAt = performance.now();
                }
              } catch (err) {
                if (!(err instanceof LeaderError)) unexpected.push(err);
                else failures.push(err.code);
                await sleep(10);
              }
            }
          };
          const writers = await Promise.all([1, 2, 3, 4].map(() => cluster.open("failover")));
          const running = writers.map(writer);
          while (acked.size < 200) await sleep(10);
          const oldLeader = await cluster.leader();
          const killed = nodes.indexOf(oldLeader);
          await nodes.kill(killed);
          killedAt = performance.now();
          const ackedBeforeKill = acked.size;
          while (resumedAt === 0 && performance.now() - killedAt < 30_000) await sleep(10);
          const resumeMs = resumedAt - killedAt;
          const target = acked.size + 200;
          while (acked.size < target && performance.now() - killedAt < 40_000) await sleep(10);
          stop = true;
          await Promise.all(running);
          for (const db of writers) db.close();
          assert.deepEqual(unexpected, []);
          assert.ok(resumedAt > 0, "writes did not resume within 30 s");
          console.log(
            `failover: leader ${oldLeader} killed after ${ackedBeforeKill} acknowledged writes; ` +
              `writes resumed after ${resumeMs.toFixed(0)} ms; ` +
              `${failures.length} requests failed (${[...new Set(failures)].join(", ")}); ` +
              `${acked.size} acknowledged of ${attempted.size} attempted`,
          );
          assert.ok(resumeMs < 15_000, `service resumed only after ${resumeMs} ms`);

          await using check = await cluster.open("failover");
          assert.notEqual(check.address, oldLeader);
          const ids = new Set(
            (await check.query("SELECT id FROM w")).rows.map((r) => r[0] as number),
          );
          const unknown = [...attempted].filter((id) => !acked.has(id));
          console.log(
            `failover: of the ${unknown.length} writes with unknown outcome, ` +
              `${unknown.filter((id) => ids.has(id)).length} were committed`,
          );
          for (const id of acked) assert.ok(ids.has(id), `acknowledged write ${id} is missing`);
          for (const id of ids) assert.ok(attempted.has(id), `write ${id} was never attempted`);

          // The killed node rejoins: once it is back, killing another node leaves a quorum.
          nodes.restart(killed);
          const probe = async (): Promise<number> => {
            for (;;) {
              try {
                const r = await check.exec("INSERT INTO w(id, at) VALUES (?, ?)", [next++, 0]);
                return r.rowsAffected;
              } catch (err) {
                assert.ok(err instanceof LeaderError, `unexpected ${err}`);
                await sleep(100);
              }
            }
          };
          await nodes.waitVoters(3);
          // Give the restarted node time to catch up with the log before it is needed for quorum.
          const caughtUp = performance.now();
          const count = (await check.query("SELECT count(*) FROM w")).rows[0][0] as number;
          await sleep(1_000);
          const other = nodes.indexOf(check.address!) === killed
            ? (killed + 1) % 3
            : nodes.indexOf(check.address!);
          await nodes.kill(other);
          const t0 = performance.now();
          assert.equal(await probe(), 1);
          console.log(
            `rejoin: node ${killed + 1} back in the quorum; after killing node ${other + 1} ` +
              `writes resumed in ${(performance.now() - t0).toFixed(0)} ms ` +
              `(${(t0 - caughtUp).toFixed(0)} ms after the restart was seen)`,
          );
          const after = (await check.query("SELECT count(*) FROM w")).rows[0][0] as number;
          assert.ok(after >= count + 1);
          const ids2 = new Set(
            (await check.query("SELECT id FROM w")).rows.map((r) => r[0] as number),
          );
          for (const id of acked) {
            assert.ok(ids2.has(id), `acknowledged write ${id} lost after rejoin`);
          }
          nodes.restart(other);
          await nodes.waitVoters(3);
        },
      );

      await t.step(
        "DqliteDatabase: a transaction lost with the leader fails until ROLLBACK",
        async () => {
          await using db = await cluster.open("lost");
          await db.exec("CREATE TABLE IF NOT EXISTS l(id INTEGER PRIMARY KEY)");
          await db.exec("BEGIN");
          await db.exec("INSERT INTO l VALUES (1)");
          await nodes.kill(nodes.indexOf(db.address!));
          const err = await rejects(db.exec("INSERT INTO l VALUES (2)"), "LEADER_LOST");
          assert.ok(err instanceof LeaderError);
          assert.equal(db.inTransaction, false);
          // Not silently autocommitted on the new leader:
          await rejects(db.exec("INSERT INTO l VALUES (3)"), "LEADER_LOST");
          await rejects(db.exec("COMMIT"), "LEADER_LOST");
          await db.exec("INSERT INTO l VALUES (4)");
          assert.deepEqual((await db.query("SELECT id FROM l ORDER BY id")).rows, [[4]]);
        },
      );
    } finally {
      cluster.close();
    }
  },
});

/** `p`, or a rejection after `ms` (a hang fails the test instead of stalling the run). */
async function within<T>(p: Promise<T>, ms = 10_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hung = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`still pending after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, hung]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test({
  name: "DqliteDatabase closed while it connects closes the new connection and rejects (one node)",
  ignore,
  async fn() {
    await using nodes = await DemoCluster.start(1);
    const cluster = new DqliteCluster(nodes.addresses, { leaderTimeout: 15_000 });
    /** Closes a database that `p` resolved with anyway, so that the failure does not leak it. */
    const refused = async (p: Promise<unknown>): Promise<SqliteError> => {
      p.then((db) => (db as DqliteDatabase | undefined)?.close?.(), () => {});
      const err = await rejects(within(p), ErrorCode.ConnectionClosed);
      assert.match(err.message, /^Database "closing" was closed while connecting/);
      return err;
    };
    try {
      // cluster.close() while cluster.open() connects (a server shutting down).
      const opening = cluster.open("closing");
      cluster.close();
      await refused(opening);

      // db.close() while its reconnect is in flight (a session discarded while
      // its request waits for a new leader).
      const db = await cluster.open("closing");
      await db.exec("CREATE TABLE IF NOT EXISTS c(x)");
      const reconnect = db.connect();
      db.close();
      await refused(reconnect);
      await rejects(db.query("SELECT 1"), ErrorCode.ConnectionClosed);

      // The database itself is fine: a new open reaches it. (Sanitizers check
      // that no connection was left open.)
      await using again = await within(cluster.open("closing"));
      assert.deepEqual((await again.query("SELECT count(*) FROM c")).rows, [[0]]);
    } finally {
      cluster.close();
    }
  },
});
