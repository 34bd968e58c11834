/**
 * Cluster mode: the leader lost under a `RELEASE`. A `RELEASE` of the
 * savepoint that began the transaction (opened by `SAVEPOINT`) commits it,
 * as a `COMMIT` does: lost under it, its outcome is unknown and the
 * transaction has ended. Any other `RELEASE` (of an inner savepoint, or
 * inside a transaction `BEGIN` opened) commits nothing: the transaction is
 * lost with the leader. Skipped (with the reason printed) when
 * `dqlite-demo` is not installed: `apt-get install go-dqlite libdqlite0`,
 * and off Linux (the node's stop and the request's arrival are read from
 * `/proc`).
 */

import assert from "node:assert/strict";
import { connect } from "../client.ts";
import { serve } from "../server.ts";
import { SqliteError } from "../protocol/errors.ts";
import { txEffect } from "../engine/dqlite/_sql_scan.ts";
import { encodeExecSql } from "../engine/dqlite/wire.ts";
import { DemoCluster, DQLITE_DEMO } from "./_dqlite_nodes.ts";

const ignore = DQLITE_DEMO === null || Deno.build.os !== "linux";
if (ignore) {
  console.log(
    "dqlite_release_test.ts skipped: " +
      (DQLITE_DEMO === null
        ? "dqlite-demo not found on PATH (apt-get install go-dqlite libdqlite0)"
        : "it reads the node's state from /proc (Linux only)"),
  );
}

const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `ready` until it returns true; fails naming `what` (and `state()`) after `ms`. */
async function until(
  ready: () => boolean,
  what: string,
  state: () => string,
  ms = 10_000,
): Promise<void> {
  const deadline = performance.now() + ms;
  while (!ready()) {
    if (performance.now() > deadline) {
      throw new Error(`Timed out after ${ms} ms waiting until ${what}: ${state()}`);
    }
    await delay(1);
  }
}

/**
 * The bytes waiting unread in each established TCP connection the node at
 * `address` (`127.0.0.1:port`) accepted: its receive queues, from
 * `/proc/net/tcp`.
 */
function unreadAt(address: string): number[] {
  const port = Number(address.slice(address.lastIndexOf(":") + 1));
  const local = `0100007F:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  const queues: number[] = [];
  for (const line of Deno.readTextFileSync("/proc/net/tcp").split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    // sl, local_address, rem_address, st (01: established), tx_queue:rx_queue, ...
    if (f[1] === local && f[3] === "01") queues.push(parseInt(f[4].split(":")[1], 16));
  }
  return queues;
}

Deno.test("txEffect() names the savepoints a script opens and releases, as SQLite compares them", () => {
  const e = txEffect(
    'SAVEPOINT "Outer"; SAVEPOINT inner; RELEASE SAVEPOINT INNER; RELEASE [outer]',
  );
  assert.equal(e.savepoint, "outer");
  assert.deepEqual(e.released, ["inner", "outer"]);
  assert.equal(txEffect("RELEASE savepoint").released[0], "savepoint");
  assert.deepEqual(txEffect("BEGIN; COMMIT").released, []);
  // A quoted "end" is no END of a trigger body.
  const trigger = txEffect(
    'CREATE TRIGGER g AFTER INSERT ON t BEGIN SELECT 1; "end"; END; RELEASE s',
  );
  assert.deepEqual(trigger.released, ["s"]);
});

Deno.test({
  name:
    "serve({ dqlite }): the leader lost under the RELEASE that commits a transaction SAVEPOINT " +
    "opened: outcome unknown (mayHaveRun), the transaction ended as after a lost COMMIT; under " +
    "any other RELEASE, the transaction is lost, not applied",
  // The order is observed, not timed: SIGSTOP stops a process only once each of its threads
  // is next scheduled, not when kill() returns (on a loaded machine, milliseconds later: the
  // node then ran the RELEASE and answered it, as done), so the test waits until every
  // thread of the node is stopped, sends the RELEASE, and waits until it lies unread in the
  // node's receive queue before the kill.
  ignore,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "netsqlite-release-" });
    const path = `${dir}/s.sock`;
    try {
      for (
        const [what, open, release, commits] of [
          ["outermost savepoint", ["SAVEPOINT Outer"], 'RELEASE "outer"', true],
          ["inner savepoint", ["SAVEPOINT outer", "SAVEPOINT inner"], "RELEASE inner", false],
          ["savepoint in BEGIN", ["BEGIN", "SAVEPOINT outer"], "RELEASE outer", false],
        ] as const
      ) {
        await using nodes = await DemoCluster.start(1);
        await using _server = await serve({
          path,
          dqlite: { nodes: nodes.addresses, database: "rel", leaderTimeout: 600 },
        });
        await using db = await connect({ path, max: 1 });
        await db.exec("CREATE TABLE t (x)");
        for (const sql of open) await db.exec(sql);
        await db.run("INSERT INTO t VALUES (1)");
        // The node hangs, the RELEASE is sent to it, then the node dies: the RELEASE was out.
        await nodes.pause(0); // (resolves once every thread of the node is stopped)
        let answered = false;
        const pending = db.exec(release).then(() => null, (e) => e).finally(() => answered = true);
        // Its EXEC (one message, sent in one write) is longer than anything else the server
        // sends the stopped node: a question of who leads (16 bytes), or a new connection's
        // handshake and first question (24).
        const bytes = encodeExecSql(0, release, []).length;
        await until(
          () => answered || unreadAt(nodes.addresses[0]).some((n) => n >= bytes),
          `the ${bytes} bytes of the RELEASE lie unread at the stopped node`,
          () => `receive queues ${JSON.stringify(unreadAt(nodes.addresses[0]))}`,
        );
        if (answered) assert.fail(`${what}: answered by the stopped node: ${await pending}`);
        await nodes.kill(0);
        const err = await pending;
        assert.ok(err instanceof SqliteError, `${what}: ${err}`);
        assert.equal(err.code, "LEADER_LOST", `${what}: ${err.message}`);
        if (commits) {
          assert.match(
            err.message,
            /\(outcome unknown: the write may have been applied, check before retrying\)$/,
            what,
          );
          assert.equal(err.mayHaveRun, true, what);
          // The transaction ended with it: a ROLLBACK right after has nothing to undo.
          await db.exec("ROLLBACK");
        } else {
          assert.match(err.message, /\(not applied: the transaction is gone; end it with ROLLBACK/);
          assert.equal(err.mayHaveRun, false, what);
          const commit = await db.exec("COMMIT").then(() => null, (e) => e);
          assert.ok(commit instanceof SqliteError, `${what}: ${commit}`);
          assert.equal(commit.code, "LEADER_LOST", commit.message);
          assert.match(commit.message, /nothing of it was written/, what);
          await db.exec("ROLLBACK"); // a no-op after the COMMIT that ended it
        }
        assert.equal(db.inTransaction, false, what);
      }
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
