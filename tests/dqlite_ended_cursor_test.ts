/**
 * Cluster mode keeps the rule of `ended_cursor_test.ts`: cursors that ended
 * (read to their end, ended with their transaction: COMMIT, ROLLBACK, its
 * lease, its loss with the leader, see `dqlite_failover_test.ts`; and, in
 * cluster mode, one whose rows before its error were all handed out) no
 * longer count as open (toward `maxCursors` per connection, nor in
 * `stats`), though never read again nor closed, while a later `next` on one
 * still fails as it did, once (the newest 256 remembered); and the idle
 * timeout does not relabel one ended already. Protocol level, against a
 * 3-node `dqlite-demo` cluster; skipped (with the reason printed) when
 * `dqlite-demo` is not installed: `apt-get install go-dqlite libdqlite0`.
 */

import assert from "node:assert/strict";
import { ErrorCode, SqliteError } from "../client.ts";
import { openLink } from "../client/connection.ts";
import type { Link } from "../client/link.ts";
import { resolveConnectOptions } from "../client/options.ts";
import { Op } from "../protocol/messages.ts";
import { serve, type ServeOptions } from "../server.ts";
import { DemoCluster, skipWithoutDqlite } from "./_dqlite_nodes.ts";
import { delay, serverStats } from "./_helpers.ts";

const ignore = skipWithoutDqlite("dqlite_ended_cursor_test.ts");

let dbSeq = 0;

/** A server in cluster mode on a fresh database of `nodes`, on a temp socket. */
async function clusterServer(
  nodes: string[],
  options: ServeOptions = {},
): Promise<{ path: string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-dqended-" });
  const path = `${dir}/s.sock`;
  const server = await serve({
    ...options,
    path,
    dqlite: { nodes, database: `ended${++dbSeq}_${Date.now()}` },
  });
  return {
    path,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/** A protocol connection to the server on socket `path`. */
async function link(path: string): Promise<Link & AsyncDisposable> {
  const [l] = await openLink(await resolveConnectOptions({ path }));
  return Object.assign(l, {
    async [Symbol.asyncDispose]() {
      l.fail(new Error("test done"));
      await l.ended;
    },
  });
}

/** The count of cursors open on the server at `path`, over all its sessions. */
async function openCursors(path: string): Promise<number> {
  return (await serverStats({ path })).cursors;
}

/** Asserts that `p` rejects with `code`, its message matching `message`. */
async function rejectsWith(p: Promise<unknown>, code: string, message: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof SqliteError, String(err));
    assert.equal(err.code, code, err.message);
    assert.match(err.message, message);
    return true;
  });
}

const TX_ENDED = /^Cursor \d+ was closed when its transaction ended/;
const MAX = 4;
const ROWS = "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 2000) " +
  "INSERT INTO t SELECT i FROM c";
/** Rows 1 and 2, then an integer overflow. */
const FAILING = "SELECT abs(x) FROM f ORDER BY rowid";

Deno.test({
  name: "cluster mode: ended cursors do not count as open; their next still says why",
  ignore,
  async fn(t) {
    await using nodes = await DemoCluster.start(3);

    await t.step(
      "cursors read to their end, failed or ended with their transaction, never read nor " +
        "closed, do not count toward maxCursors nor in stats",
      async () => {
        // No idle timeout: nothing else would ever close them.
        await using srv = await clusterServer(nodes.addresses, {
          maxCursors: MAX,
          cursorIdleTimeout: 0,
        });
        await using a = await link(srv.path);
        await a.request(Op.Exec, [`CREATE TABLE t(x); ${ROWS}`]);
        await a.request(Op.Exec, [
          "CREATE TABLE f(x INTEGER); INSERT INTO f VALUES (1), (2), (-9223372036854775807 - 1)",
        ]);
        const whole = await a.request(Op.Query, [FAILING, null, null]).then(
          () => null,
          (e: unknown) => e,
        );
        assert.ok(whole instanceof SqliteError, String(whole));
        assert.match(whole.message, /integer overflow/);
        // More than MAX cursors one after another, each read to its end.
        for (let i = 0; i < 3 * MAX; i++) {
          const [id] = await a.request(Op.Iterate, ["SELECT x FROM t", null, null]);
          let n = 0;
          for (;;) {
            const [rows, done] = await a.request(Op.Next, [id]);
            n += rows.length;
            if (done) break;
          }
          assert.equal(n, 2000);
        }
        // More than MAX ended by their transaction's end, never read, or read in part.
        const ended: number[] = [];
        for (let i = 0; i < MAX + 2; i++) {
          await a.request(Op.Exec, ["BEGIN"]);
          const [id] = await a.request(Op.Iterate, ["SELECT x FROM t", null, null]);
          if (i === 1) assert.equal((await a.request(Op.Next, [id]))[0].length, 1024);
          ended.push(id);
          await a.request(Op.Exec, [i % 2 ? "COMMIT" : "ROLLBACK"]);
        }
        // More than MAX that failed after their rows, their error not pulled yet.
        const failed: number[] = [];
        for (let i = 0; i < MAX + 2; i++) {
          const [id] = await a.request(Op.Iterate, [FAILING, null, null]);
          assert.deepEqual(await a.request(Op.Next, [id]), [[[1], [2]], false]);
          failed.push(id);
        }
        assert.equal(await openCursors(srv.path), 0);
        // The connection opens its MAX cursors, outside a transaction and in one.
        const open: number[] = [];
        for (let i = 0; i < MAX / 2; i++) {
          open.push((await a.request(Op.Iterate, ["SELECT x FROM t", null, null]))[0]);
        }
        await a.request(Op.Exec, ["BEGIN"]);
        for (let i = 0; i < MAX / 2; i++) {
          open.push((await a.request(Op.Iterate, ["SELECT x FROM t", null, null]))[0]);
        }
        assert.equal(await openCursors(srv.path), MAX);
        await rejectsWith(
          a.request(Op.Iterate, ["SELECT 1", null, null]),
          ErrorCode.BadRequest,
          new RegExp(`^Too many open cursors: ${MAX} per connection`),
        );
        await a.request(Op.Exec, ["COMMIT"]);
        assert.equal(await openCursors(srv.path), MAX / 2);
        // The ended ones still say why, once, with the error they had before.
        await rejectsWith(a.request(Op.Next, [ended[0]]), ErrorCode.CursorClosed, TX_ENDED);
        await rejectsWith(
          a.request(Op.Next, [ended[0]]),
          ErrorCode.UnknownStatement,
          /^Unknown cursor/,
        );
        await rejectsWith(a.request(Op.Next, [ended[1]]), ErrorCode.CursorClosed, TX_ENDED);
        await rejectsWith(a.request(Op.Next, [ended.at(-1)!]), ErrorCode.CursorClosed, TX_ENDED);
        await rejectsWith(a.request(Op.Next, [open.at(-1)!]), ErrorCode.CursorClosed, TX_ENDED);
        for (const id of [failed[0], failed.at(-1)!]) {
          await rejectsWith(a.request(Op.Next, [id]), whole.code, /integer overflow/);
          await rejectsWith(a.request(Op.Next, [id]), ErrorCode.UnknownStatement, /^Unknown/);
        }
        // Closing an ended one is no error; it is forgotten then.
        assert.equal(await a.request(Op.CloseCursor, [ended[2]]), null);
        assert.equal(await a.request(Op.CloseCursor, [failed[1]]), null);
        await rejectsWith(
          a.request(Op.Next, [ended[2]]),
          ErrorCode.UnknownStatement,
          /^Unknown cursor/,
        );
        // Those opened outside read on.
        const [rows, done] = await a.request(Op.Next, [open[0]]);
        assert.deepEqual(rows[0], [1]);
        assert.equal(done, false);
        for (const id of open.slice(0, MAX / 2)) {
          assert.equal(await a.request(Op.CloseCursor, [id]), null);
        }
        assert.equal(await openCursors(srv.path), 0);
      },
    );

    await t.step(
      "the ended cursors a connection remembers are bounded: the newest 256",
      async () => {
        await using srv = await clusterServer(nodes.addresses, {
          maxCursors: MAX,
          cursorIdleTimeout: 0,
        });
        await using a = await link(srv.path);
        await a.request(Op.Exec, ["CREATE TABLE t(x); INSERT INTO t VALUES (1), (2)"]);
        // 300 transactions, each ending a cursor never read: the newest 256 say why.
        const ended: number[] = [];
        for (let i = 0; i < 300; i++) {
          await a.request(Op.Exec, ["BEGIN"]);
          ended.push((await a.request(Op.Iterate, ["SELECT x FROM t", null, null]))[0]);
          await a.request(Op.Exec, ["ROLLBACK"]);
        }
        assert.equal(await openCursors(srv.path), 0);
        await rejectsWith(
          a.request(Op.Next, [ended[43]]),
          ErrorCode.UnknownStatement,
          /^Unknown cursor/,
        );
        await rejectsWith(a.request(Op.Next, [ended[44]]), ErrorCode.CursorClosed, TX_ENDED);
        await rejectsWith(a.request(Op.Next, [ended[299]]), ErrorCode.CursorClosed, TX_ENDED);
      },
    );

    await t.step(
      "a cursor whose transaction ended at its idle lease no longer counts, and says so " +
        "after --cursor-idle-timeout too",
      async () => {
        await using srv = await clusterServer(nodes.addresses, {
          txIdleTimeout: 150,
          cursorIdleTimeout: 400,
          logLevel: "error",
        });
        await using a = await link(srv.path);
        await a.request(Op.Exec, ["CREATE TABLE t(x); INSERT INTO t VALUES (1), (2)"]);
        await a.request(Op.Exec, ["BEGIN"]);
        await a.request(Op.Run, ["INSERT INTO t VALUES (3)", null, null]);
        const [id] = await a.request(Op.Iterate, ["SELECT x FROM t", null, null]);
        // Well past the lease (150 ms) and the idle timeout (400 ms), on a loaded machine too.
        await delay(1500);
        assert.equal(await openCursors(srv.path), 0);
        await rejectsWith(a.request(Op.Next, [id]), ErrorCode.CursorClosed, TX_ENDED);
        await rejectsWith(a.request(Op.Next, [id]), ErrorCode.UnknownStatement, /^Unknown cursor/);
        await a.request(Op.Exec, ["ROLLBACK"]).catch(() => {});
      },
    );
  },
});
