/**
 * Cursors ended by their transaction's end (COMMIT, ROLLBACK, its lease):
 * they no longer count as open (toward `maxCursors` per connection, nor in
 * `stats`), though never read again nor closed, while a later `next` on one
 * still says why it ended; and that reason stays the first one, not the
 * idle timeout's that comes after it. Real servers, protocol level, on the
 * engine `NETSQLITE_ENGINE` names.
 */

import assert from "node:assert/strict";
import { ErrorCode, SqliteError } from "../client.ts";
import type { Link } from "../client/link.ts";
import { Op } from "../protocol/messages.ts";
import {
  delay,
  openTestLink,
  serverStats,
  startServer,
  statsUntil,
  type TestServer,
} from "./_helpers.ts";

function link(srv: TestServer): Promise<Link & AsyncDisposable> {
  return openTestLink(srv.connectOptions);
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

Deno.test("Cursors ended by COMMIT or ROLLBACK, never read nor closed, do not count as open: per connection, in stats", async () => {
  // No idle timeout: nothing else would ever close them.
  await using srv = await startServer({ cursorIdleTimeout: 0 });
  await using a = await link(srv);
  await a.request(Op.Exec, [
    "CREATE TABLE t(x); WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c " +
    "WHERE i < 5000) INSERT INTO t SELECT i FROM c",
  ]);
  const ended: number[] = [];
  for (let i = 0; i < 16; i++) {
    await a.request(Op.Exec, ["BEGIN"]);
    const [id] = await a.request(Op.Iterate, ["SELECT x FROM t", null, null]);
    ended.push(id);
    await a.request(Op.Exec, [i % 2 ? "COMMIT" : "ROLLBACK"]);
  }
  const stats = await serverStats(srv.connectOptions);
  assert.equal(stats.cursors, 0);
  assert.deepEqual(stats.transactions, []);
  // The connection opens its 16 cursors, outside a transaction and in one.
  const open: number[] = [];
  for (let i = 0; i < 8; i++) {
    open.push((await a.request(Op.Iterate, ["SELECT x FROM t", null, null]))[0]);
  }
  await a.request(Op.Exec, ["BEGIN"]);
  for (let i = 0; i < 8; i++) {
    open.push((await a.request(Op.Iterate, ["SELECT x FROM t", null, null]))[0]);
  }
  assert.equal((await serverStats(srv.connectOptions)).cursors, 16);
  await rejectsWith(
    a.request(Op.Iterate, ["SELECT 1", null, null]),
    ErrorCode.BadRequest,
    /^Too many open cursors: 16 per connection/,
  );
  await a.request(Op.Exec, ["COMMIT"]);
  assert.equal((await serverStats(srv.connectOptions)).cursors, 8);
  // The ended ones still say why, once; closing one is not an error.
  await rejectsWith(a.request(Op.Next, [ended[0]]), ErrorCode.CursorClosed, TX_ENDED);
  await rejectsWith(a.request(Op.Next, [ended[0]]), ErrorCode.UnknownStatement, /^Unknown cursor/);
  await rejectsWith(a.request(Op.Next, [ended[15]]), ErrorCode.CursorClosed, TX_ENDED);
  await rejectsWith(a.request(Op.Next, [open[15]]), ErrorCode.CursorClosed, TX_ENDED);
  assert.equal(await a.request(Op.CloseCursor, [ended[1]]), null);
  await rejectsWith(a.request(Op.Next, [ended[1]]), ErrorCode.UnknownStatement, /^Unknown cursor/);
  // Those opened outside read on.
  const [rows, done] = await a.request(Op.Next, [open[0]]);
  assert.deepEqual(rows[0], [1]);
  assert.equal(done, false);
  for (const id of open.slice(0, 8)) assert.equal(await a.request(Op.CloseCursor, [id]), null);
  assert.equal((await serverStats(srv.connectOptions)).cursors, 0);
});

Deno.test("A cursor whose transaction ended at its idle lease says so after --cursor-idle-timeout too", async () => {
  await using srv = await startServer({
    txIdleTimeout: 150,
    cursorIdleTimeout: 400,
    logLevel: "error",
  });
  await using a = await link(srv);
  await a.request(Op.Exec, ["CREATE TABLE t(x); INSERT INTO t VALUES (1), (2)"]);
  await a.request(Op.Exec, ["BEGIN"]);
  await a.request(Op.Run, ["INSERT INTO t VALUES (3)", null, null]);
  const [id] = await a.request(Op.Iterate, ["SELECT x FROM t", null, null]);
  // Past the lease (150 ms) and the cursor's idle timeout (400 ms).
  await delay(800);
  assert.equal((await serverStats(srv.connectOptions)).cursors, 0);
  await rejectsWith(a.request(Op.Next, [id]), ErrorCode.CursorClosed, TX_ENDED);
  await rejectsWith(a.request(Op.Next, [id]), ErrorCode.UnknownStatement, /^Unknown cursor/);
  await a.request(Op.Exec, ["ROLLBACK"]).catch(() => {});
  // One ended by its idle timeout, its transaction still open, keeps that reason.
  // (On a server whose lease outlasts the cursor's idle timeout: a statement
  // every 100 ms to keep a 150 ms lease left gaps past it on a loaded machine.)
  await using srv2 = await startServer({
    txIdleTimeout: 30_000,
    cursorIdleTimeout: 400,
    logLevel: "error",
  });
  await using b = await link(srv2);
  await b.request(Op.Exec, ["CREATE TABLE t(x); INSERT INTO t VALUES (1), (2)"]);
  await b.request(Op.Exec, ["BEGIN"]);
  const [idle] = await b.request(Op.Iterate, ["SELECT x FROM t", null, null]);
  await statsUntil(
    srv2.connectOptions,
    (s) => s.cursors === 0,
    "the cursor's idle timeout ended it",
  );
  await b.request(Op.Exec, ["COMMIT"]);
  await rejectsWith(
    b.request(Op.Next, [idle]),
    ErrorCode.CursorClosed,
    /^Cursor \d+ was closed: it was not advanced for 400 ms \(--cursor-idle-timeout\)/,
  );
});

Deno.test("A cursor whose step failed before its transaction ended still says so; ended cursors are remembered boundedly", async () => {
  await using srv = await startServer({ cursorIdleTimeout: 0 });
  await using a = await link(srv);
  await a.request(Op.Exec, [
    "CREATE TABLE t(x); WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c " +
    "WHERE i < 2000) INSERT INTO t SELECT i FROM c",
  ]);
  // Row 3 fails: the chunk of rows 1 and 2 comes first, the error is kept
  // for the next `next` (unless a chunk ends just before row 3, which is
  // timed: then the error comes at once, and the cursor is tried again).
  let kept = false;
  for (let attempt = 0; attempt < 5 && !kept; attempt++) {
    await a.request(Op.Exec, ["BEGIN"]);
    const [failing] = await a.request(Op.Iterate, [
      "SELECT x, CASE WHEN x = 3 THEN abs(x - 9223372036854775807 - 4) END FROM t",
      null,
      null,
    ]);
    let read = 0;
    try {
      while (read < 2) {
        const [rows, done] = await a.request(Op.Next, [failing]);
        assert.equal(done, false);
        read += rows.length;
      }
    } catch (err) {
      assert.match(String(err), /integer overflow/);
      await a.request(Op.Exec, ["ROLLBACK"]);
      continue;
    }
    kept = true;
    await a.request(Op.Exec, ["COMMIT"]);
    assert.equal((await serverStats(srv.connectOptions)).cursors, 0);
    await rejectsWith(a.request(Op.Next, [failing]), "SQLITE_ERROR", /integer overflow/);
  }
  assert.ok(kept, "the error always came at once");
  // 300 transactions, each ending a cursor never read: the newest 256 say why.
  const ended: number[] = [];
  for (let i = 0; i < 300; i++) {
    await a.request(Op.Exec, ["BEGIN"]);
    ended.push((await a.request(Op.Iterate, ["SELECT x FROM t", null, null]))[0]);
    await a.request(Op.Exec, ["ROLLBACK"]);
  }
  assert.equal((await serverStats(srv.connectOptions)).cursors, 0);
  await rejectsWith(a.request(Op.Next, [ended[43]]), ErrorCode.UnknownStatement, /^Unknown cursor/);
  await rejectsWith(a.request(Op.Next, [ended[44]]), ErrorCode.CursorClosed, TX_ENDED);
  await rejectsWith(a.request(Op.Next, [ended[299]]), ErrorCode.CursorClosed, TX_ENDED);
});
