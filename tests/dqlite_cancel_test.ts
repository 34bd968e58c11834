/**
 * Cluster mode keeps the cancel rule of `cancel_in_tx_test.ts`: a cancel
 * naming a request that already wrote inside the open transaction ends that
 * transaction (rolled back on the leader; later requests fail `TX_ABORTED`;
 * ROLLBACK is a no-op), however the race between the write and the cancel
 * went. A cancel of a read, of a request outside a transaction, of an
 * unknown id, or after the transaction ended changes nothing. Against a
 * 3-node `dqlite-demo` cluster; skipped (with the reason printed) when
 * `dqlite-demo` is not installed: `apt-get install go-dqlite libdqlite0`.
 */

import assert from "node:assert/strict";
import { AbortError, type Client, connect, SqliteError } from "../mod.ts";
import { serve, type Server } from "../server.ts";
import { Op, Status } from "../protocol/messages.ts";
import { DemoCluster, skipWithoutDqlite } from "./_dqlite_nodes.ts";
import { delay } from "./_helpers.ts";
import { Wire } from "./_wire.ts";

const ignore = skipWithoutDqlite("dqlite_cancel_test.ts");

let dbSeq = 0;

/** A server in cluster mode on a fresh database of `nodes`, on a temp socket. */
async function clusterServer(
  nodes: string[],
): Promise<{ path: string; server: Server; client(): Promise<Client> } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-dqcancel-" });
  const path = `${dir}/s.sock`;
  const server = await serve({
    path,
    dqlite: { nodes, database: `cancel${++dbSeq}_${Date.now()}` },
  });
  return {
    path,
    server,
    client: () => connect({ path, max: 1 }),
    async [Symbol.asyncDispose]() {
      await server.shutdown();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/** Awaits the reply to `id`, which must be a success inside a transaction. */
async function answered(wire: Wire, id: number): Promise<number> {
  const [got, status, body] = await wire.reply();
  assert.equal(got, id);
  assert.equal(status & Status.Error, 0, JSON.stringify(body));
  assert.equal(status & Status.InTransaction, Status.InTransaction);
  return id;
}

/** One kind of request that writes inside the transaction: sends it, returns its id once answered OK. */
type Writer = (wire: Wire) => Promise<number>;

// (No `INSERT ... RETURNING`: cluster mode refuses it, a dqlite 1.11 node would abort.)
const WRITERS: [string, Writer][] = [
  ["run", async (w) => answered(w, await w.send(Op.Run, "INSERT INTO t VALUES (2)", null, null))],
  [
    "exec (a script of writes: one round trip)",
    async (w) => answered(w, await w.send(Op.Exec, "INSERT INTO t VALUES (2); UPDATE t SET x = x")),
  ],
  [
    "exec (a script with reads: statement by statement)",
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
  [
    "a cursor over a write (run whole when it opens)",
    async (w) => answered(w, await w.send(Op.Iterate, "INSERT INTO t VALUES (2)", null)),
  ],
  [
    "a PRAGMA that sets a value",
    async (w) => answered(w, await w.send(Op.Run, "PRAGMA user_version = 7", null, null)),
  ],
];

const SLOW_INSERT =
  "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000) " +
  "INSERT INTO big SELECT x FROM c";

Deno.test({
  name: "cluster mode: a cancel of a write inside the transaction ends it, as on a single file",
  ignore,
  async fn(t) {
    await using nodes = await DemoCluster.start(3);

    for (const [kind, write] of WRITERS) {
      await t.step(
        `a cancel after ${kind} wrote inside the transaction rolls it back`,
        async () => {
          await using srv = await clusterServer(nodes.addresses);
          await using wire = await Wire.open(srv.path);
          await wire.ok("CREATE TABLE t (x)");
          await wire.ok("BEGIN");
          await wire.ok("INSERT INTO t VALUES (1)");
          const id = await write(wire);
          const { body } = await wire.call(
            Op.Query,
            "SELECT (SELECT count(*) FROM t), (SELECT user_version FROM pragma_user_version)",
            null,
            null,
          );
          const [n, version] = (body as [string[], number[][]])[1]?.[0] ?? [];
          assert.ok(n >= 2 || version === 7, "the write ran, inside the transaction");
          await wire.cancel(id);
          const message = await wire.fails("INSERT INTO t VALUES (3)", "TX_ABORTED");
          assert.match(message, new RegExp(`ABORTED: Request ${id} was cancelled after it wrote`));
          await wire.fails("COMMIT", "TX_ABORTED");
          // After COMMIT was refused, the ROLLBACK clients send is a no-op, and ends it.
          const status = await wire.ok("ROLLBACK");
          assert.equal(status & Status.InTransaction, 0);
          assert.equal(await wire.count(), 0, "nothing of the transaction stayed");
          const { body: v } = await wire.call(Op.Query, "PRAGMA user_version", null, null);
          assert.deepEqual((v as [string[], unknown[][]])[1], [[0]]);
        },
      );
    }

    await t.step(
      "ROLLBACK after a cancel ended the transaction is a no-op, and the connection goes on",
      async () => {
        await using srv = await clusterServer(nodes.addresses);
        await using wire = await Wire.open(srv.path);
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
        await wire.ok("BEGIN");
        await wire.ok("INSERT INTO t VALUES (3)");
        await wire.ok("COMMIT");
        assert.equal(await wire.count(), 2);
      },
    );

    await t.step(
      "a cancel of a read, of BEGIN, or of an unknown request leaves the transaction open",
      async () => {
        await using srv = await clusterServer(nodes.addresses);
        await using wire = await Wire.open(srv.path);
        await wire.ok("CREATE TABLE t (x)");
        const begin = await answered(wire, await wire.send(Op.Run, "BEGIN", null, null));
        await wire.ok("INSERT INTO t VALUES (1)");
        const read = await answered(wire, await wire.send(Op.Query, "SELECT * FROM t", null, null));
        const readInScript = await answered(wire, await wire.send(Op.Exec, "SELECT 1; SELECT 2"));
        const pragma = await answered(
          wire,
          await wire.send(Op.Run, "PRAGMA table_info(t)", null, null),
        );
        const { body } = await wire.call(Op.Iterate, "SELECT x FROM t", null);
        const next = await answered(wire, await wire.send(Op.Next, (body as [number])[0]));
        for (const id of [begin, read, readInScript, pragma, next, 999]) await wire.cancel(id);
        await wire.ok("INSERT INTO t VALUES (2)");
        await wire.ok("COMMIT");
        assert.equal(await wire.count(), 2);
      },
    );

    await t.step(
      "a cancel after a write in autocommit, or after its transaction ended, changes nothing",
      async () => {
        await using srv = await clusterServer(nodes.addresses);
        await using wire = await Wire.open(srv.path);
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
        // Scripts that wrote and then ended their transaction, leaving a new one open.
        const script = await answered(
          wire,
          await wire.send(Op.Exec, "INSERT INTO t VALUES (4); COMMIT; BEGIN; SELECT 1"),
        );
        await wire.cancel(script);
        const oneTrip = await answered(
          wire,
          await wire.send(Op.Exec, "INSERT INTO t VALUES (5); COMMIT; BEGIN"),
        );
        await wire.cancel(oneTrip);
        await wire.ok("INSERT INTO t VALUES (6)");
        await wire.ok("COMMIT");
        assert.equal(await wire.count(), 6);
      },
    );

    await t.step("a write cancelled while it runs inside a transaction rolls it back", async () => {
      await using srv = await clusterServer(nodes.addresses);
      await using wire = await Wire.open(srv.path);
      await wire.ok("CREATE TABLE t (x)");
      await wire.ok("CREATE TABLE big (x)");
      await wire.ok("BEGIN");
      await wire.ok("INSERT INTO t VALUES (1)");
      // dqlite runs an EXEC to its end: the write finishes, then the cancel ends the transaction.
      const id = await wire.send(Op.Run, SLOW_INSERT, null, null);
      await delay(20);
      await wire.cancel(id);
      const [got, status, body] = await wire.reply();
      assert.equal(got, id);
      assert.equal(status & Status.Error, Status.Error, JSON.stringify(body));
      assert.equal((body as { code: string }).code, "ABORTED");
      assert.match((body as { message: string }).message, /rolled back the transaction/);
      await wire.fails("SELECT 1", "TX_ABORTED");
      await wire.ok("ROLLBACK");
      assert.equal(await wire.count(), 0);
    });

    await t.step(
      "a cancel that comes while a later request runs on the transaction ends it when that returns",
      async () => {
        await using srv = await clusterServer(nodes.addresses);
        await using wire = await Wire.open(srv.path);
        await wire.ok("CREATE TABLE t (x)");
        await wire.ok("CREATE TABLE big (x)");
        await wire.ok("BEGIN");
        const id = await answered(
          wire,
          await wire.send(Op.Run, "INSERT INTO t VALUES (1)", null, null),
        );
        const later = await wire.send(Op.Run, SLOW_INSERT, null, null);
        await delay(20);
        await wire.cancel(id);
        const [got, status, body] = await wire.reply();
        assert.equal(got, later);
        // It finished (dqlite runs an EXEC to its end), in the transaction now rolled back.
        if ((status & Status.Error) !== 0) {
          assert.equal((body as { code: string }).code, "TX_ABORTED", JSON.stringify(body));
        }
        assert.equal(status & Status.InTransaction, Status.InTransaction, "until ROLLBACK");
        const message = await wire.fails("INSERT INTO t VALUES (2)", "TX_ABORTED");
        assert.match(message, new RegExp(`ABORTED: Request ${id} was cancelled after it wrote`));
        assert.equal((await wire.ok("ROLLBACK")) & Status.InTransaction, 0);
        const { body: counts } = await wire.call(
          Op.Query,
          "SELECT (SELECT count(*) FROM t), (SELECT count(*) FROM big)",
          null,
          null,
        );
        assert.deepEqual((counts as [string[], unknown[][]])[1], [[0, 0]]);
      },
    );

    await t.step(
      "a cancel racing with the transaction's COMMIT: the COMMIT's reply tells which won",
      async () => {
        await using srv = await clusterServer(nodes.addresses);
        await using wire = await Wire.open(srv.path);
        await wire.ok("CREATE TABLE t (x)");
        for (let i = 0; i < 4; i++) {
          await wire.ok("BEGIN");
          const id = await answered(
            wire,
            await wire.send(Op.Run, "INSERT INTO t VALUES (1)", null, null),
          );
          const before = await wire.count();
          const commit = await wire.send(Op.Run, "COMMIT", null, null);
          if (i > 0) await delay(i); // the COMMIT may then run on the leader already
          await wire.cancel(id);
          const [got, status, body] = await wire.reply();
          assert.equal(got, commit);
          if ((status & Status.Error) === 0) {
            // The COMMIT was sent first and cannot be stopped: it committed, and says so.
            assert.equal(status & Status.InTransaction, 0);
            assert.equal(await wire.count(), before, "committed");
          } else {
            assert.equal((body as { code: string }).code, "TX_ABORTED", JSON.stringify(body));
            assert.equal((await wire.ok("ROLLBACK")) & Status.InTransaction, 0);
            assert.equal(await wire.count(), before - 1, "rolled back");
          }
        }
      },
    );

    // Through the client: `{ signal }` rejects the call at once and sends cancel.
    await t.step("a write aborted by its signal inside a transaction never commits", async () => {
      await using srv = await clusterServer(nodes.addresses);
      await using db = await srv.client();
      await db.exec("CREATE TABLE t (x); CREATE TABLE big (x)");
      let seen = false; // the write ran before the cancel came at least once
      for (let attempt = 0; attempt < 10 && !seen; attempt++) {
        await db.exec("BEGIN");
        await db.run("INSERT INTO t VALUES (1)");
        const ac = new AbortController();
        const call = db.run(SLOW_INSERT, [], { signal: ac.signal });
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
        [[0, 0]],
      );
    });

    await t.step("a read aborted by its signal inside a transaction leaves it usable", async () => {
      await using srv = await clusterServer(nodes.addresses);
      await using db = await srv.client();
      await db.exec("CREATE TABLE t (x)");
      await db.exec("BEGIN");
      await db.run("INSERT INTO t VALUES (1)");
      const ac = new AbortController();
      // One row, computed briefly: the interrupted read is drained, the connection stays.
      const slow =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50000) " +
        "SELECT count(*) FROM c";
      const call = db.values(slow, [], { signal: ac.signal });
      const timer = setTimeout(() => ac.abort(), 5);
      await call.catch((e: unknown) => assert.ok(e instanceof AbortError, String(e)));
      clearTimeout(timer);
      await db.run("INSERT INTO t VALUES (2)");
      await db.exec("COMMIT");
      assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[2]]);
    });

    await t.step("an autocommit write aborted by its signal after it ran stays", async () => {
      await using srv = await clusterServer(nodes.addresses);
      await using db = await srv.client();
      await db.exec("CREATE TABLE big (x)");
      const ac = new AbortController();
      const call = db.run(SLOW_INSERT, [], { signal: ac.signal });
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
  },
});

/**
 * A read that computes for about 0.8 s (quiet machine) to 2 s (loaded) on a
 * node before its one row (dqlite 1.11 cannot stop it): well past the 50 ms
 * cancel plus the 250 ms drain, so that it is never done within them.
 */
const SLOW_READ =
  "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5000000) " +
  "SELECT sum(x) FROM c";

/** A write that computes as long as {@link SLOW_READ} before its one row. */
const SLOW_WRITE =
  "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5000000) " +
  "INSERT INTO big SELECT sum(x) FROM c";

Deno.test({
  name: "cluster mode: a transaction's end closes its cursors; a stopped slow read says why",
  ignore,
  async fn(t) {
    await using nodes = await DemoCluster.start(3);

    await t.step(
      "a cursor opened in a transaction fails CURSOR_CLOSED after COMMIT or ROLLBACK",
      async () => {
        await using srv = await clusterServer(nodes.addresses);
        await using wire = await Wire.open(srv.path);
        await wire.ok("CREATE TABLE t (x)");
        await wire.ok(
          "INSERT INTO t WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c " +
            "WHERE x < 5000) SELECT 'committed' FROM c",
        );
        const outside =
          ((await wire.call(Op.Iterate, "SELECT x FROM t", null)).body as [number])[0];
        for (const end of ["ROLLBACK", "COMMIT"]) {
          await wire.ok("BEGIN");
          await wire.ok("UPDATE t SET x = 'in the transaction'");
          const { body } = await wire.call(Op.Iterate, "SELECT x FROM t", null);
          const id = (body as [number])[0];
          const first = await wire.call(Op.Next, id);
          assert.equal(first.status & Status.Error, 0, JSON.stringify(first.body));
          assert.equal((first.body as [unknown[][]])[0].length, 1024);
          await wire.ok(end);
          const next = await wire.call(Op.Next, id);
          assert.equal(next.status & Status.Error, Status.Error, `${end}: the cursor went on`);
          assert.equal((next.body as { code: string }).code, "CURSOR_CLOSED");
          assert.match((next.body as { message: string }).message, /closed when its transaction/);
          // It is gone: closing it now is an unknown cursor, as on a single file.
          const close = await wire.call(Op.CloseCursor, id);
          assert.equal(close.status & Status.Error, Status.Error);
        }
        // So when one exec script ends the transaction and begins another: the reply says so.
        await wire.ok("BEGIN");
        const { body: opened } = await wire.call(Op.Iterate, "SELECT x FROM t", null);
        const inFirst = (opened as [number])[0];
        assert.equal((await wire.call(Op.Next, inFirst)).status & Status.Error, 0);
        const script = await wire.call(Op.Exec, "COMMIT; BEGIN");
        assert.equal(script.status, Status.InTransaction | Status.TxEnded);
        const ended = await wire.call(Op.Next, inFirst);
        assert.equal(ended.status & Status.Error, Status.Error, "the cursor read on");
        assert.equal((ended.body as { code: string }).code, "CURSOR_CLOSED");
        assert.equal((await wire.call(Op.Exec, "SELECT 1")).status, Status.InTransaction);
        await wire.ok("ROLLBACK");
        // A cursor opened outside any transaction outlives the transactions after it.
        const rest = await wire.call(Op.Next, outside);
        assert.equal(rest.status & Status.Error, 0, JSON.stringify(rest.body));
        assert.deepEqual((rest.body as [unknown[][]])[0][0], ["committed"]);
      },
    );

    for (const how of ["cancelled", "timed out"] as const) {
      await t.step(
        `a slow read ${how} inside a transaction fails at once; the transaction is TX_ABORTED`,
        async () => {
          await using srv = await clusterServer(nodes.addresses);
          await using db = await srv.client();
          await db.exec("CREATE TABLE t (x)");
          await db.exec("BEGIN");
          await db.run("INSERT INTO t VALUES (1)");
          const started = performance.now();
          let err: unknown;
          if (how === "cancelled") {
            const ac = new AbortController();
            const timer = setTimeout(() => ac.abort(), 50);
            err = await db.values(SLOW_READ, [], { signal: ac.signal }).catch((e) => e);
            clearTimeout(timer);
            assert.ok(err instanceof AbortError, String(err));
          } else {
            err = await db.values(SLOW_READ, [], { timeout: 100 }).catch((e) => e);
            assert.ok(err instanceof SqliteError, String(err));
            assert.equal(err.code, "STATEMENT_TIMEOUT");
            // At the deadline, not after the 250 ms drain of the stopped row set.
            const ms = performance.now() - started;
            assert.ok(ms < 240, `the deadline of 100 ms failed the read after ${ms.toFixed(0)} ms`);
          }
          // dqlite cannot stop the read: its connection was closed, and the transaction with it.
          const next = await db.values("SELECT count(*) FROM t").catch((e) => e);
          assert.ok(next instanceof SqliteError, String(next));
          assert.equal(next.code, "TX_ABORTED", next.message);
          const cause = how === "cancelled"
            ? "ABORTED: Request \\d+ was cancelled"
            : "STATEMENT_TIMEOUT";
          assert.match(next.message, new RegExp(`the earlier error: ${cause}`));
          assert.match(next.message, /connection to the dqlite leader was closed/);
          assert.doesNotMatch(next.message, /LEADER_LOST|lost with the leader/);
          await assert.rejects(db.exec("COMMIT"), { code: "TX_ABORTED" });
          await db.exec("ROLLBACK");
          assert.equal(db.inTransaction, false);
          assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]]);
          await db.run("INSERT INTO t VALUES (2)");
          assert.deepEqual(await db.values("SELECT x FROM t"), [[2]]);
        },
      );
    }

    await t.step(
      "a slow write timed out fails at its deadline: in autocommit its outcome is unknown, " +
        "in a transaction the transaction is rolled back",
      async () => {
        await using srv = await clusterServer(nodes.addresses);
        await using db = await srv.client();
        await db.exec("CREATE TABLE t (x); CREATE TABLE big (x); CREATE TABLE big_tx (x)");
        // dqlite cannot stop the write, and the node answers nothing else until it is done:
        // the reply came well before the node could answer the next request.
        let started = performance.now();
        const auto = await db.run(SLOW_WRITE, [], { timeout: 100 }).catch((e) => e);
        let ms = performance.now() - started;
        assert.ok(auto instanceof SqliteError, String(auto));
        assert.equal(auto.code, "STATEMENT_TIMEOUT", auto.message);
        assert.match(
          auto.message,
          /^Statement stopped after 100 ms .*\(outcome unknown: the write may have been applied, check before retrying\)$/,
        );
        assert.doesNotMatch(auto.message, /not applied/);
        // The node may still commit it (now or later); the connection goes on either way.
        const [[n]] = await db.values<[number]>("SELECT count(*) FROM big");
        const nodeMs = performance.now() - started;
        assert.ok(n === 0 || n === 1, `${n} rows`);
        assert.ok(
          ms < nodeMs / 2,
          `the deadline of 100 ms failed the write after ${ms.toFixed(0)} ms; the node ran it ` +
            `for ${nodeMs.toFixed(0)} ms`,
        );

        await db.exec("BEGIN");
        await db.run("INSERT INTO t VALUES (1)");
        started = performance.now();
        const inTx = await db.run(SLOW_WRITE.replace("big", "big_tx"), [], { timeout: 100 })
          .catch((e) => e);
        ms = performance.now() - started;
        assert.ok(inTx instanceof SqliteError, String(inTx));
        assert.equal(inTx.code, "STATEMENT_TIMEOUT", inTx.message);
        assert.match(inTx.message, /which rolled back the transaction it was in: end it with/);
        await assert.rejects(db.values("SELECT 1"), { code: "TX_ABORTED" });
        await assert.rejects(db.exec("COMMIT"), { code: "TX_ABORTED" });
        await db.exec("ROLLBACK");
        // Nothing of the transaction was committed, the write the node ran to its end neither.
        assert.deepEqual(
          await db.values("SELECT (SELECT count(*) FROM t), count(*) FROM big_tx"),
          [[0, 0]],
        );
        const txMs = performance.now() - started;
        assert.ok(
          ms < txMs / 2,
          `the deadline of 100 ms failed the write after ${ms.toFixed(0)} ms; the node ran it ` +
            `for ${txMs.toFixed(0)} ms`,
        );
      },
    );

    await t.step(
      "a request timed out while a stopped read drains is not applied, and says so",
      async () => {
        await using srv = await clusterServer(nodes.addresses);
        await using db = await srv.client();
        await db.exec("CREATE TABLE t (x)");
        const endless =
          "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c) SELECT i FROM c";
        // Pipelined: the write starts as the read fails, and waits for its drain (250 ms).
        const read = db.values(endless, [], { timeout: 100 }).catch((e) => e);
        const write = db.run("INSERT INTO t VALUES (1)", [], { timeout: 30 }).catch((e) => e);
        assert.equal((await read).code, "STATEMENT_TIMEOUT");
        const err = await write;
        assert.ok(err instanceof SqliteError, String(err));
        assert.equal(err.code, "STATEMENT_TIMEOUT", err.message);
        assert.match(
          err.message,
          /: it waited for its node connection, still ending an earlier stopped read \(not applied: safe to retry\)$/,
        );
        assert.doesNotMatch(err.message, /leader/);
        assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]]);
      },
    );

    await t.step("a slow read timed out outside a transaction fails at once", async () => {
      await using srv = await clusterServer(nodes.addresses);
      await using db = await srv.client();
      const started = performance.now();
      await assert.rejects(db.values(SLOW_READ, [], { timeout: 100 }), {
        code: "STATEMENT_TIMEOUT",
      });
      const ms = performance.now() - started;
      assert.ok(ms < 240, `the deadline of 100 ms failed the read after ${ms.toFixed(0)} ms`);
      assert.deepEqual(await db.values("SELECT 1"), [[1]]);
    });

    await t.step(
      "an exec() script's { timeout } is one deadline for the script: it fails at once, " +
        "naming the statement; those before it stay",
      async () => {
        await using srv = await clusterServer(nodes.addresses);
        await using db = await srv.client();
        await db.exec("CREATE TABLE t (x)");
        const started = performance.now();
        const err = await db.exec(
          `INSERT INTO t VALUES (1); ${SLOW_READ}; INSERT INTO t VALUES (3)`,
          {
            timeout: 100,
          },
        ).catch((e) => e);
        const ms = performance.now() - started;
        assert.ok(err instanceof SqliteError, String(err));
        assert.equal(err.code, "STATEMENT_TIMEOUT", err.message);
        assert.match(err.message, /statement 2 of the script/);
        assert.ok(ms < 240, `the deadline of 100 ms failed the script after ${ms.toFixed(0)} ms`);
        assert.deepEqual(await db.values("SELECT x FROM t"), [[1]]);
      },
    );
  },
});
