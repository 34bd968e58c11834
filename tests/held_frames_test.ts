/**
 * Frames a session appends behind replies it holds for a group commit (a
 * change feed's `LAGGED` end) are not lost when that group commit fails.
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { startServer, statsUntil, within } from "./_helpers.ts";
import { ENGINE } from "./_logged_server.ts";
import { canMount, fill, mountedDisk } from "./_tmpfs.ts";
import { Wire } from "./_wire.ts";
import { EventKind, Op, Status } from "../protocol/messages.ts";

Deno.test({
  name: "A feed that lags while its connection's replies wait for a group commit, which then " +
    "fails (full device), still gets its LAGGED end [ffi]",
  ignore: !canMount || ENGINE !== "ffi",
  async fn() {
    let failedAfterCommit = 0;
    for (let free = 1; free <= 4 && failedAfterCommit === 0; free++) {
      await using disk = await mountedDisk("16m");
      const database = `${disk.disk}/a.db`;
      const made = new DatabaseSync(database);
      made.exec(
        "PRAGMA journal_mode = WAL; CREATE TABLE t (id INTEGER PRIMARY KEY); " +
          "CREATE TABLE u (id INTEGER PRIMARY KEY, v)",
      );
      made.close();
      // One change queued on a connection: a second feed of it lags at once.
      await using srv = await startServer({
        database,
        synchronous: "normal",
        maxQueuedChangesPerConnection: 1,
      });
      const path = (srv.connectOptions as { path: string }).path;
      await using holder = await Wire.open(path);
      await using x = await Wire.open(path);
      await using s = await Wire.open(path);
      // X's write runs alone (it mentions rollback), S's is grouped; both
      // known fast, so that they run inline.
      const alone = "INSERT INTO t VALUES (?) -- rollback";
      const grouped = "INSERT INTO u VALUES (?, randomblob(40000))";
      for (let i = 0; i < 3; i++) {
        await x.call(Op.Run, alone, [100 + i], null);
        await s.call(Op.Run, grouped, [100 + i], null);
      }
      await x.call(Op.Run, "DELETE FROM t", null, null);
      await s.call(Op.Run, "DELETE FROM u", null, null);
      const feeds: number[] = [];
      for (let i = 0; i < 2; i++) {
        const { status, body } = await s.call(Op.Subscribe, { tables: ["t"] });
        assert.equal(status & Status.Error, 0, JSON.stringify(body));
        feeds.push((body as [number, number])[0]);
      }
      // X's write, then S's, wait in the writer's line behind the holder's
      // transaction. (Its end is a COMMIT: a ROLLBACK, which may undo schema
      // changes, drops the writer's cached statements, and S's write, no
      // longer known fast, would not be grouped.)
      await holder.call(Op.Run, "BEGIN IMMEDIATE", null, null);
      await x.send(Op.Run, alone, [1], null);
      // (Waits counted by the server, not a fixed delay: under load X's write
      // may reach the writer's line after S's would have.)
      await statsUntil(srv.connectOptions, (r) => r.writer.waiting === 1, "X's write waits");
      const write = await s.send(Op.Run, grouped, [2], null);
      await statsUntil(srv.connectOptions, (r) => r.writer.waiting === 2, "S's write waits");
      // Room for X's commit (a page), not for the group's after it (ten).
      await fill(disk.disk, free);
      const filler = `${disk.disk}/filler`;
      // The holder commits: X's write, woken first, runs inline and commits
      // (the second feed lags at once: the first holds the connection's one
      // change; its LAGGED end goes out from a microtask) and, in the same
      // turn, S's write, woken next, opens a group, so that its reply is
      // held when that LAGGED end is appended. The group's COMMIT (inline,
      // a microtask after) finds the device full.
      await holder.call(Op.Run, "COMMIT", null, null);
      const xReply = await x.reply();
      const events: [number, number, unknown][] = [];
      let writeStatus = -1;
      let writeError = "";
      const take = ([id, status, body]: [number, number, unknown]) => {
        if ((status & Status.Event) !== 0) events.push(body as [number, number, unknown]);
        else if (id === write) {
          writeStatus = status;
          writeError = JSON.stringify(body);
        }
      };
      while (writeStatus === -1) take(await s.reply());
      for (;;) {
        const r = await within(s.reply(), 500);
        if (r === "timeout") break;
        take(r);
      }
      await Deno.remove(filler);
      if (
        (xReply[1] & Status.Error) !== 0 || (writeStatus & Status.Error) === 0 ||
        !writeError.includes("the group commit holding this write")
      ) {
        // Not the case sought (X's commit failed too, or the group's did not).
        continue;
      }
      failedAfterCommit++;
      const ended = events.filter(([, kind]) => kind === EventKind.Lagged).map(([id]) => id);
      const changed = events.filter(([, kind]) => kind === EventKind.Changes).map(([id]) => id);
      assert.deepEqual(changed, [feeds[0]], JSON.stringify(events));
      assert.deepEqual(ended, [feeds[1]], `free ${free}: events ${JSON.stringify(events)}`);
    }
    assert.ok(failedAfterCommit > 0, "no round had X's write commit and S's group fail");
  },
});

Deno.test({
  name: "A subscribe pipelined behind a grouped write of its connection waits for that write's " +
    "group commit: when the commit fails (full device), the subscribe is not answered with its " +
    "error while its feed lives on [ffi]",
  ignore: !canMount || ENGINE !== "ffi",
  async fn() {
    let failed = 0;
    for (let free = 1; free <= 4 && failed === 0; free++) {
      await using disk = await mountedDisk("16m");
      const database = `${disk.disk}/a.db`;
      const made = new DatabaseSync(database);
      made.exec(
        "PRAGMA journal_mode = WAL; CREATE TABLE t (id INTEGER PRIMARY KEY); " +
          "CREATE TABLE u (id INTEGER PRIMARY KEY, v)",
      );
      made.close();
      await using srv = await startServer({ database, synchronous: "normal" });
      const path = (srv.connectOptions as { path: string }).path;
      await using s = await Wire.open(path);
      await using w = await Wire.open(path);
      const grouped = "INSERT INTO u VALUES (?, randomblob(40000))";
      for (let i = 0; i < 3; i++) await s.call(Op.Run, grouped, [100 + i], null);
      await s.call(Op.Run, "DELETE FROM u", null, null);
      // Room for no group commit of ten pages.
      await fill(disk.disk, free);
      const filler = `${disk.disk}/filler`;
      const [write, subscribe] = await s.sendAll(
        [Op.Run, grouped, [1], null],
        [Op.Subscribe, { tables: ["t"] }],
      );
      const replies = new Map<number, [number, unknown]>();
      const events: number[] = [];
      const take = ([id, status, body]: [number, number, unknown]) => {
        if ((status & Status.Event) !== 0) events.push((body as [number])[0]);
        else replies.set(id, [status, body]);
      };
      while (replies.size < 2) take(await s.reply());
      await Deno.remove(filler);
      const [writeStatus, writeBody] = replies.get(write)!;
      if (
        (writeStatus & Status.Error) === 0 ||
        !JSON.stringify(writeBody).includes("the group commit holding this write")
      ) {
        continue; // (not the case sought: the group's COMMIT did not fail)
      }
      failed++;
      // A change after it reaches the feed.
      await w.call(Op.Run, "INSERT INTO t VALUES (1)", null, null);
      while (events.length === 0) {
        const r = await within(s.reply(), 2000);
        if (r === "timeout") break;
        take(r);
      }
      const [status, body] = replies.get(subscribe)!;
      assert.equal(
        status & Status.Error,
        0,
        `free ${free}: subscribe answered ${JSON.stringify(body)}, events came for feeds ${events}`,
      );
      assert.deepEqual(events, [(body as [number, number])[0]], "the feed's events name it");
    }
    assert.ok(failed > 0, "no round had the group's COMMIT fail");
  },
});

Deno.test({
  name: "stats and integrity pipelined behind a grouped write of their connection " +
    "wait for its group commit: when the commit fails (full device), their answers are their own " +
    "[ffi]",
  ignore: !canMount || ENGINE !== "ffi",
  async fn() {
    let failed = 0;
    for (let free = 1; free <= 4 && failed === 0; free++) {
      await using disk = await mountedDisk("16m");
      const database = `${disk.disk}/a.db`;
      const made = new DatabaseSync(database);
      made.exec("PRAGMA journal_mode = WAL; CREATE TABLE u (id INTEGER PRIMARY KEY, v)");
      made.close();
      await using srv = await startServer({ database, synchronous: "normal" });
      const path = (srv.connectOptions as { path: string }).path;
      await using s = await Wire.open(path);
      const grouped = "INSERT INTO u VALUES (?, randomblob(40000))";
      for (let i = 0; i < 3; i++) await s.call(Op.Run, grouped, [100 + i], null);
      await s.call(Op.Run, "DELETE FROM u", null, null);
      await fill(disk.disk, free);
      const filler = `${disk.disk}/filler`;
      const [write, stats, integrity] = await s.sendAll(
        [Op.Run, grouped, [1], null],
        [Op.Stats],
        [Op.Integrity],
      );
      const replies = new Map<number, [number, unknown]>();
      while (replies.size < 3) {
        const [id, status, body] = await s.reply();
        if ((status & Status.Event) === 0) replies.set(id, [status, body]);
      }
      await Deno.remove(filler);
      const [writeStatus, writeBody] = replies.get(write)!;
      if (
        (writeStatus & Status.Error) === 0 ||
        !JSON.stringify(writeBody).includes("the group commit holding this write")
      ) {
        continue; // (not the case sought: the group's COMMIT did not fail)
      }
      failed++;
      for (const [name, id] of [["stats", stats], ["integrity", integrity]] as const) {
        const [status, body] = replies.get(id)!;
        assert.equal(status & Status.Error, 0, `free ${free}: ${name} ${JSON.stringify(body)}`);
      }
    }
    assert.ok(failed > 0, "no round had the group's COMMIT fail");
  },
});
