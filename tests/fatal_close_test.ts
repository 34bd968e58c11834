/**
 * A connection closed for a bad frame while a request it sent before that
 * frame waits for the writer (a fuzz finding: a stream ending in a bad frame,
 * one byte of the next frame's length and EOF sat until `--frame-timeout`
 * closed it):
 *
 * - the engine wakes a waiting session once, synchronously, and skips it
 *   when it does not take the writer then; the session answering a bad
 *   frame took it only after an asynchronous check, so it lost its place
 *   to the next in line and queued again, at the back, its busy timeout
 *   started afresh;
 * - the incomplete frame after the bad one, never to be read, still armed
 *   the frame timer, which closed the connection with `FRAME_TIMEOUT`
 *   before the waiting write ran.
 */

import assert from "node:assert/strict";
import { connect } from "../client.ts";
import { Op, Status } from "../protocol/messages.ts";
import { concat } from "./_bytes.ts";
import { delay, serverStats, startServer, type TestServer } from "./_helpers.ts";
import { frame, Raw } from "./_raw.ts";

type Reply = [number, number, { code?: string } | unknown];

/**
 * Y's stream: hello, a write (waits for the writer), a frame with id 0 (bad),
 * one byte of a next frame's length; then its sending side closes.
 */
async function sendWaitingThenBad(srv: TestServer): Promise<Raw> {
  const y = new Raw(await Deno.connect({ transport: "unix", path: srv.connectOptions.path! }));
  await y.write(concat([
    frame([Op.Hello, 1, { version: 1 }]),
    frame([Op.Run, 2, "INSERT INTO t VALUES ('y')"]),
    frame([Op.Query, 0, "SELECT 1"]),
    new Uint8Array([0]),
  ]));
  await y.conn.closeWrite();
  const hello = await y.read(10_000) as Reply;
  assert.deepEqual([hello[0], hello[1]], [1, Status.Ok], JSON.stringify(hello));
  return y;
}

/** Waits until `n` sessions wait for the writer. */
async function untilWaiting(srv: TestServer, n: number): Promise<void> {
  for (let i = 0; (await serverStats(srv.connectOptions)).writer.waiting !== n; i++) {
    assert.ok(i < 500, `${n} sessions never waited for the writer`);
    await delay(20);
  }
}

/** Y's replies after its hello: the write's, then BAD_REQUEST, then EOF. */
async function assertWriteThenBadRequest(y: Raw): Promise<void> {
  const write = await y.read(10_000) as Reply;
  assert.deepEqual([write[0], write[1] & Status.Error], [2, 0], JSON.stringify(write));
  const last = await y.read(10_000) as Reply;
  assert.deepEqual(
    [last[0], (last[2] as { code: string }).code],
    [0, "BAD_REQUEST"],
    JSON.stringify(last),
  );
  assert.equal(await y.read(10_000), "EOF");
}

Deno.test("Session answering a bad frame takes the writer in its turn for a write sent before it", async () => {
  await using srv = await startServer();
  await using holder = await connect({ ...srv.connectOptions, max: 1 });
  await using next = await connect({ ...srv.connectOptions, max: 1 });
  await holder.exec("CREATE TABLE t (a)");
  await holder.exec("BEGIN IMMEDIATE");
  await using y = await sendWaitingThenBad(srv);
  await untilWaiting(srv, 1);
  const began = next.exec("BEGIN IMMEDIATE"); // in line behind y
  await untilWaiting(srv, 2);
  await holder.exec("COMMIT");
  await began;
  // Y was first in line: its write ran before next's transaction began.
  const seen = await next.values("SELECT a FROM t");
  await next.exec("COMMIT");
  await assertWriteThenBadRequest(y);
  assert.deepEqual(seen, [["y"]]);
});

Deno.test("Session answering a bad frame ignores the incomplete frame after it: no FRAME_TIMEOUT while a write waits", async () => {
  await using srv = await startServer({
    frameTimeout: 100,
    helloTimeout: 30_000,
    busyTimeout: 30_000,
  });
  await using holder = await connect({ ...srv.connectOptions, max: 1 });
  await holder.exec("CREATE TABLE t (a)");
  await holder.exec("BEGIN IMMEDIATE");
  await using y = await sendWaitingThenBad(srv);
  await untilWaiting(srv, 1);
  await delay(1000); // ten frame timeouts
  await holder.exec("COMMIT");
  await assertWriteThenBadRequest(y);
  assert.deepEqual(await holder.values("SELECT a FROM t"), [["y"]]);
});
