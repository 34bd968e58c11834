/**
 * While change feeds capture (after the first `subscribe`), writes still
 * step in the background on the FFI engine: a long write holds no other
 * client, and its cancel stops it; the rows it changes are captured as
 * when it runs on the main thread (update hook and preupdate hook called
 * from the background thread). FFI only: node:sqlite has no change feeds.
 */

import assert from "node:assert/strict";
import type { ChangeEvent } from "../client.ts";
import { startServer, startServerProcess, takeEvents, within } from "./_helpers.ts";

const ffi = Deno.env.get("NETSQLITE_ENGINE") !== "node";

Deno.test({
  name: "with a feed subscribed, a long write holds no other client, and its cancel stops it",
  ignore: !ffi,
  async fn() {
    // In its own process, so that this test's timers run whatever the server does.
    await using srv = await startServerProcess();
    await using a = await srv.client();
    await using b = await srv.client();
    await a.exec(
      "CREATE TABLE n (x INTEGER); CREATE TABLE t (x INTEGER);" +
        "INSERT INTO n WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 20000) " +
        "SELECT x FROM s",
    );
    await using feed = await b.subscribe({ tables: ["t"] });
    const stop = new AbortController();
    // 4e8 pairs: tens of seconds; its deadline ends it should the cancel not.
    const write = a.run(
      "INSERT INTO t SELECT count(*) FROM n x, n y WHERE x.x + y.x = -1",
      [],
      { signal: stop.signal, timeout: 15_000 },
    );
    const settled = write.then(() => "ran", (e) => e.code as string);
    await new Promise((r) => setTimeout(r, 200));
    for (let i = 0; i < 5; i++) {
      assert.deepEqual(await within(b.values("SELECT ?", [i]), 3_000), [[i]], `read ${i}`);
    }
    assert.equal(await within(settled, 0), "timeout", "the write still runs");
    stop.abort();
    assert.equal(await settled, "ABORTED");
    // The server stopped it: it answers at once, and nothing was written.
    assert.deepEqual(await within(b.values("SELECT count(*) FROM t"), 3_000), [[0]]);
    await a.run("INSERT INTO t VALUES (7)");
    const [e] = await takeEvents(feed, 1);
    assert.equal(e.type === "table" && `${e.op} ${e.table} ${e.rowid}`, "insert t 1");
  },
});

Deno.test({
  name: "with a feed subscribed, rows a background write changes are all reported, moves too",
  ignore: !ffi,
  async fn() {
    await using srv = await startServer();
    await using db = await srv.client();
    await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)");
    await using feed = await db.subscribe({ tables: ["t"], values: true });
    const line = (e: ChangeEvent) =>
      e.type === "table" ? `${e.op} ${e.rowid} ${JSON.stringify(e.value ?? null)}` : e.type;
    // A text never run before steps in the background (its speed is not known yet).
    await db.run(
      "INSERT INTO t (v) WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 300) " +
        "SELECT 'r' || x FROM s",
    );
    const inserted = await takeEvents(feed, 300);
    assert.deepEqual(
      inserted.map(line),
      Array.from(
        { length: 300 },
        (_, i) => `insert ${i + 1} ${JSON.stringify({ id: i + 1, v: `r${i + 1}` })}`,
      ),
    );
    // Rolled back: nothing reported.
    await db.transaction(async (tx) => {
      await tx.run("UPDATE t SET v = 'gone' WHERE id <= 10");
      await tx.run("ROLLBACK");
    }).catch(() => {});
    // Moves (the preupdate hook) and deletes, in one transaction.
    await db.transaction(async (tx) => {
      await tx.run("UPDATE t SET id = id + 1000 WHERE id BETWEEN 1 AND 2");
      await tx.run("DELETE FROM t WHERE id BETWEEN 3 AND 4");
    });
    const moved = await takeEvents(feed, 6);
    assert.deepEqual(moved.map(line).sort(), [
      "delete 1 null",
      "delete 2 null",
      "delete 3 null",
      "delete 4 null",
      `update 1001 ${JSON.stringify({ id: 1001, v: "r1" })}`,
      `update 1002 ${JSON.stringify({ id: 1002, v: "r2" })}`,
    ]);
    assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[298]]);
  },
});
