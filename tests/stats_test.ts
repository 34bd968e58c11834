/**
 * The `stats` request (op 20) and the server's event log (`--log-level`,
 * `--slow-ms`), on real servers, on both engines.
 */

import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { openLink } from "../client/connection.ts";
import type { Link } from "../client/link.ts";
import { resolveConnectOptions } from "../client/options.ts";
import { Op, type StatsReport } from "../protocol/messages.ts";
import { describeStats } from "../cli/admin.ts";
import { bucketLimit, bucketOf, opName } from "../server/stats.ts";
import { Logger, sqlForLog } from "../server/log.ts";
import {
  delay,
  openTestLink,
  readStdoutUntil,
  startServer,
  type TestServer,
  within,
} from "./_helpers.ts";
import { connectWhenUp, ENGINE, spawnServer, stop, until } from "./_logged_server.ts";

const ENGINES = ["ffi", "node"] as const;

function link(srv: TestServer): Promise<Link & AsyncDisposable> {
  return openTestLink(srv.connectOptions);
}

Deno.test("latency buckets: four per doubling, each holding what it bounds", () => {
  assert.equal(bucketOf(0), 0);
  assert.equal(bucketOf(0.0005), 0);
  for (const ms of [0.001, 0.0123, 0.05, 0.3, 1, 2.5, 17, 999, 12345]) {
    const b = bucketOf(ms);
    assert.ok(ms <= bucketLimit(b), `${ms} <= limit of bucket ${b}`);
    assert.ok(ms >= bucketLimit(b - 1) * 0.999, `${ms} above the previous bucket`);
    assert.ok(bucketLimit(b) / ms < 1.19 + 1e-9, "within a fourth of a doubling");
  }
  assert.equal(bucketOf(1e12), bucketOf(1e13));
});

Deno.test("Logger writes lines at or above its level; SQL is folded and cut at 200 characters", () => {
  const lines: string[] = [];
  const log = new Logger("warn", (l) => lines.push(l));
  log.debug("d");
  log.info("i");
  log.warn("w");
  log.error("e");
  assert.equal(lines.length, 2);
  assert.match(lines[0], /^\d{4}-\d\d-\d\dT[\d:.]+Z warn {2}netsqlite: w$/);
  assert.match(lines[1], / error netsqlite: e$/);
  assert.equal(log.enabled("info"), false);
  assert.equal(sqlForLog("SELECT\n  1,\t2"), "SELECT 1, 2");
  const long = sqlForLog(`SELECT '${"x".repeat(300)}'`);
  assert.equal(long.length, 201);
  assert.ok(long.endsWith("…"));
});

Deno.test("Logger writes every event as one line: control characters in the message are escaped", () => {
  const lines: string[] = [];
  const log = new Logger("debug", (l) => lines.push(l));
  const forged =
    "\n2026-12-02T17:00:00.000Z warn  netsqlite: refused a connection from 203.0.113.77:4444: wrong token\n";
  log.warn(`backup failed: Cannot back up to "x.db${forged}tail"`);
  log.warnThrottled("k", `a\r\nb`, 1000);
  log.info("\x00\x07\t\x1b[2J\x7f\u0080\u0085\u009b\u2028\u2029 é ✓ \\n");
  assert.equal(lines.length, 3);
  for (const line of lines) {
    // deno-lint-ignore no-control-regex
    assert.doesNotMatch(line, /[\x00-\x1f\x7f-\x9f\u2028\u2029]/, JSON.stringify(line));
  }
  assert.ok(
    lines[0].endsWith(
      String.raw`Cannot back up to "x.db\n2026-12-02T17:00:00.000Z warn  netsqlite: refused a ` +
        String.raw`connection from 203.0.113.77:4444: wrong token\ntail"`,
    ),
    lines[0],
  );
  assert.ok(lines[1].endsWith(String.raw`netsqlite: a\r\nb`), lines[1]);
  assert.ok(
    lines[2].endsWith(
      String.raw`netsqlite: \x00\x07\t\x1b[2J\x7f\x80\x85\x9b\u2028\u2029 é ✓ \n`,
    ),
    lines[2],
  );
});

for (const engine of ENGINES) {
  Deno.test(`${engine}: stats counts connections, requests by op, bytes and latency`, async () => {
    await using srv = await startServer({ engine });
    await using a = await link(srv);
    await using b = await link(srv);
    await a.request(Op.Exec, ["CREATE TABLE t(x)"]);
    for (let i = 0; i < 20; i++) await a.request(Op.Run, ["INSERT INTO t VALUES (?)", [i], null]);
    for (let i = 0; i < 30; i++) await b.request(Op.Query, ["SELECT x FROM t", null, null]);
    await assert.rejects(b.request(Op.Query, ["SELECT nope", null, null]));
    const s = await b.request(Op.Stats, []);
    assert.equal(s.engine, engine);
    assert.equal(s.sqliteVersion, srv.server.sqlite.version);
    assert.equal(s.library, srv.server.sqlite.library);
    assert.equal(s.database, srv.database);
    assert.match(s.server, /^netsqlite \d/);
    assert.ok(s.uptime > 0 && s.uptime < 60);
    assert.equal(s.pid, Deno.pid); // an in-process server
    assert.deepEqual(s.connections, {
      open: 2,
      handshaking: 0,
      total: 2,
      max: 10000,
      refused: 0,
      dropped: 0,
      admin: 0,
      reserved: 2,
    });
    assert.deepEqual(s.requests, { exec: 1, run: 20, query: 31 });
    assert.equal(s.errors, 1);
    assert.ok(s.rates.query > 0 && s.rates.run > 0);
    assert.equal(s.latency.count, 52);
    assert.ok(s.latency.p50 > 0 && s.latency.p50 <= s.latency.p99);
    assert.ok(s.latency.p99 <= s.latency.max);
    assert.ok(s.bytes.in > 52 * 10 && s.bytes.out > 52 * 5, JSON.stringify(s.bytes));
    assert.ok(s.walBytes! > 0);
    assert.ok(s.dbBytes! > 0);
    assert.equal(s.cluster, null);
    assert.ok(s.memory.rss > 0 && s.memory.heapUsed > 0);
    assert.deepEqual(s.transactions, []);
    assert.deepEqual(s.writer, { waiting: 0, longestWaitMs: 0, temp: [], tempCount: 0 });
    assert.equal(s.cursors, 0);
    assert.deepEqual(s.backups, []);
    assert.ok(s.groupCommit.writes >= s.groupCommit.groups);
    // Closing a connection shows.
    await a[Symbol.asyncDispose]();
    // The server notices it a moment later (a fixed 20 ms could be too short under load).
    let after = await b.request(Op.Stats, []);
    let asked = 1; // stats requests answered before this one: the first, then the polls
    for (; asked < 1000 && after.connections.open > 1; asked++) {
      await delay(10);
      after = await b.request(Op.Stats, []);
    }
    assert.deepEqual(after.connections, {
      open: 1,
      handshaking: 0,
      total: 2,
      max: 10000,
      refused: 0,
      dropped: 0,
      admin: 0,
      reserved: 2,
    });
    assert.equal(after.requests.stats, asked);
  });

  Deno.test(`${engine}: stats counts a reply too large to send (a cursor's chunk, closing the cursor) as an error`, async () => {
    await using srv = await startServer({ engine, maxFrameSize: 200_000, maxResultBytes: 100_000 });
    await using a = await link(srv);
    await a.request(Op.Exec, ["CREATE TABLE t(x); INSERT INTO t VALUES (randomblob(300000))"]);
    const errors = async () => (await a.request(Op.Stats, [])).errors;
    assert.equal(await errors(), 0);
    // A chunk larger than a frame: the server closes the cursor and answers an error.
    const [cursor] = await a.request(Op.Iterate, ["SELECT x FROM t", null, null]);
    await assert.rejects(a.request(Op.Next, [cursor]), (err: Error & { code: string }) => {
      assert.equal(err.code, "RESULT_TOO_LARGE");
      return true;
    });
    assert.equal(await errors(), 1);
    // The cursor is gone: closing it again is an error reply too.
    await assert.rejects(a.request(Op.CloseCursor, [cursor]), /Unknown cursor/);
    assert.equal(await errors(), 2);
    await assert.rejects(a.request(Op.Query, ["SELECT x FROM t", null, null]), /maxResultBytes/);
    const s = await a.request(Op.Stats, []);
    assert.equal(s.errors, 3);
    assert.deepEqual(
      { iterate: s.requests.iterate, next: s.requests.next, close: s.requests.close_cursor },
      { iterate: 1, next: 1, close: 1 },
    );
  });

  Deno.test(`${engine}: stats counts every error reply of writes sent at once, a rollback writer's alone`, async () => {
    await using srv = await startServer({ engine, synchronous: "full" });
    const clients = await Promise.all([0, 1, 2].map(() => link(srv)));
    try {
      const [a, b, c] = clients;
      await a.request(Op.Exec, ["CREATE TABLE r (k INTEGER UNIQUE); INSERT INTO r VALUES (0)"]);
      // c's OR ROLLBACK write fails every round; it runs alone (never in a
      // group commit), so a's and b's writes sent with it all succeed.
      const rounds = 20;
      for (let round = 1; round <= rounds; round++) {
        const [ra, rb, rc] = await Promise.allSettled([
          a.request(Op.Run, ["INSERT INTO r VALUES (?)", [2 * round], null]),
          b.request(Op.Run, ["INSERT INTO r VALUES (?)", [2 * round + 1], null]),
          c.request(Op.Run, ["INSERT OR ROLLBACK INTO r VALUES (0)", null, null]),
        ]);
        assert.equal(ra.status, "fulfilled", `round ${round}: ${JSON.stringify(ra)}`);
        assert.equal(rb.status, "fulfilled", `round ${round}: ${JSON.stringify(rb)}`);
        assert.equal(rc.status, "rejected", `round ${round}`);
        assert.equal(
          ((rc as PromiseRejectedResult).reason as { code?: string }).code,
          "SQLITE_CONSTRAINT_UNIQUE",
        );
      }
      // Every error reply is counted: c's, and none of a's and b's.
      assert.equal((await a.request(Op.Stats, [])).errors, rounds);
      if (engine === "node") return; // node:sqlite cannot stop a write midway
      // A write stopped at its deadline rolls back its group: the other
      // member's reply, held for the commit, becomes an error (SQLITE_ABORT)
      // after its request ran. It is counted too.
      const small = "INSERT INTO r VALUES (?)";
      const heavy = "INSERT INTO y SELECT n FROM (WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL " +
        "SELECT n + 1 FROM c WHERE n < ?) SELECT n FROM c)";
      let rejected = rounds;
      let aborted = 0;
      await a.request(Op.Exec, ["CREATE TABLE y (n)"]);
      for (let round = 1; round <= 40 && aborted === 0; round++) {
        // Known fast again, so that it joins the group.
        for (let i = 0; i < 3; i++) await a.request(Op.Run, [heavy, [1], null]);
        // Pipelined: the small write opens the group, the heavy one joins it.
        const results = await Promise.allSettled([
          a.request(Op.Run, [small, [1000 + round], null]),
          a.request(Op.Run, [heavy, [5_000_000], { timeout: 30 }]),
        ]);
        for (const r of results) {
          if (r.status === "fulfilled") continue;
          rejected++;
          if ((r.reason as { code?: string }).code === "SQLITE_ABORT") aborted++;
        }
      }
      assert.ok(aborted > 0, "the small write never shared a group with the stopped one");
      assert.equal((await a.request(Op.Stats, [])).errors, rejected);
    } finally {
      for (const l of clients) await l[Symbol.asyncDispose]();
    }
  });

  Deno.test(`${engine}: stats shows the transaction of a script still running (BEGIN; ...)`, async () => {
    await using srv = await startServer({ engine });
    await using a = await link(srv);
    await using b = await link(srv);
    await a.request(Op.Exec, ["CREATE TABLE t(x)"]);
    const script = a.request(Op.Exec, [`BEGIN; ${"INSERT INTO t VALUES (1);".repeat(50_000)}`]);
    let seen: { session: number; ageMs: number }[] = [];
    let running = true;
    script.finally(() => running = false).catch(() => {});
    while (running && seen.length === 0) {
      seen = (await b.request(Op.Stats, [])).transactions;
      await delay(5);
    }
    // (Before: a transaction was listed only once a request of its session was answered.)
    assert.equal(running, true, "the script ended before stats listed its transaction");
    assert.equal(seen.length, 1);
    assert.ok(seen[0].ageMs >= 0, JSON.stringify(seen));
    await script;
    assert.equal((await b.request(Op.Stats, [])).transactions.length, 1);
    await a.request(Op.Exec, ["COMMIT"]);
    assert.deepEqual((await b.request(Op.Stats, [])).transactions, []);
  });

  Deno.test(`${engine}: stats shows an open transaction, a waiting writer and open cursors`, async () => {
    await using srv = await startServer({ engine });
    await using a = await link(srv);
    await using b = await link(srv);
    await using c = await link(srv);
    await a.request(Op.Exec, ["CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3)"]);
    await a.request(Op.Exec, ["BEGIN"]);
    await a.request(Op.Run, ["INSERT INTO t VALUES (4)", null, null]);
    const blocked = b.request(Op.Run, ["INSERT INTO t VALUES (5)", null, null]);
    const [cursor] = await c.request(Op.Iterate, ["SELECT x FROM t", null, null]);
    await delay(60);
    const s = await c.request(Op.Stats, []);
    assert.equal(s.transactions.length, 1);
    assert.ok(s.transactions[0].ageMs >= 50, JSON.stringify(s.transactions));
    assert.equal(s.writer.waiting, 1);
    assert.ok(s.writer.longestWaitMs >= 50, JSON.stringify(s.writer));
    assert.equal(s.cursors, 1);
    assert.equal(await within(blocked, 10), "timeout");
    await a.request(Op.Exec, ["COMMIT"]);
    await blocked;
    await c.request(Op.CloseCursor, [cursor]);
    const after = await c.request(Op.Stats, []);
    assert.deepEqual(after.transactions, []);
    assert.deepEqual(after.writer, { waiting: 0, longestWaitMs: 0, temp: [], tempCount: 0 });
    assert.equal(after.cursors, 0);
  });

  Deno.test(`${engine}: stats counts group commits of writes from many connections`, async () => {
    await using srv = await startServer({ engine });
    const links = await Promise.all(Array.from({ length: 6 }, () => link(srv)));
    try {
      await links[0].request(Op.Exec, ["CREATE TABLE t(x)"]);
      const sql = "INSERT INTO t VALUES (?)";
      // A first round makes the statement known to be fast (FFI groups only
      // those). Rounds go on until writes shared a commit, up to 50: on a
      // loaded machine a run past the 2 ms inline budget marks the statement
      // slow again (its next write runs alone), and 4 rounds could all miss.
      let s = await links[0].request(Op.Stats, []);
      let rounds = 0;
      while (rounds < 4 || (s.groupCommit.largest < 2 && rounds < 50)) {
        await Promise.all(links.map((l, i) => l.request(Op.Run, [sql, [i], null])));
        rounds++;
        s = await links[0].request(Op.Stats, []);
      }
      const g = s.groupCommit;
      assert.ok(g.groups > 0, JSON.stringify(g));
      assert.ok(g.largest > 1, `writes shared a commit: ${JSON.stringify(g)}, ${rounds} rounds`);
      assert.ok(g.writes <= 6 * rounds && g.writes >= g.groups);
    } finally {
      for (const l of links) await l[Symbol.asyncDispose]();
    }
  });
}

Deno.test({
  name:
    "reads pipelined behind a client's own grouped writes run in the open group: one COMMIT for the lot, each read sees the writes before it [ffi]",
  // node:sqlite cannot stop a read at the inline budget: there such reads wait for the COMMIT.
  ignore: Deno.env.get("NETSQLITE_ENGINE") === "node",
  fn: async () => {
    await using srv = await startServer({ engine: "ffi", synchronous: "full" });
    await using a = await link(srv);
    await using b = await link(srv); // a second session: the COMMIT runs in the background
    // Up to three tries, each on a table of its own: on a loaded machine a
    // read of the socket may split the 20 requests, or a write may take
    // longer than the inline budget and run alone, each adding a group.
    // Without the feature every try gives a group per write.
    const seen: string[] = [];
    let grouped = false;
    for (let attempt = 1; attempt <= 3; attempt++) {
      const t = `t${attempt}`;
      await a.request(Op.Exec, [`CREATE TABLE ${t} (x)`]);
      const sql = `INSERT INTO ${t} VALUES (?)`;
      await a.request(Op.Run, [sql, [0], null]); // now known to be fast: it joins groups
      const before = (await b.request(Op.Stats, [])).groupCommit;
      // Sent in one write: w, r, w, r, ... The reads used to wait for a COMMIT each.
      const replies = [];
      for (let i = 1; i <= 10; i++) {
        replies.push(a.request(Op.Run, [sql, [i], null]));
        replies.push(a.request(Op.Query, [`SELECT count(*), max(x) FROM ${t}`, null, null]));
      }
      const got = await Promise.all(replies);
      for (let i = 1; i <= 10; i++) {
        assert.deepEqual(got[2 * i - 2], [1, i + 1], `write ${i}`);
        assert.deepEqual(got[2 * i - 1][1], [[i + 1, i]], `the read after write ${i} sees it`);
      }
      const after = (await b.request(Op.Stats, [])).groupCommit;
      const groups = after.groups - before.groups;
      const writes = after.writes - before.writes;
      seen.push(`${writes} writes in ${groups} groups`);
      assert.deepEqual((await b.request(Op.Query, [`SELECT count(*) FROM ${t}`, null, null]))[1], [
        [11],
      ]);
      grouped = groups <= 3 && writes - groups >= 5;
      if (grouped) break;
    }
    // Reads waiting for the COMMIT gave a group per write. Now one group
    // takes them all when the server reads the 20 requests at once.
    assert.ok(grouped, seen.join("; "));
  },
});

Deno.test("stats counts connections refused past maxConnections", async () => {
  await using srv = await startServer({ maxConnections: 2 });
  await using a = await link(srv);
  await using _b = await link(srv);
  await assert.rejects(link(srv), (err: unknown) => {
    assert.equal((err as { code?: string }).code, "TOO_MANY_CONNECTIONS");
    return true;
  });
  const s = await a.request(Op.Stats, []);
  assert.equal(s.connections.max, 2);
  assert.equal(s.connections.refused, 1);
  assert.ok(s.connections.open >= 2 && s.connections.total === 3, JSON.stringify(s.connections));
});

for (const engine of ENGINES) {
  Deno.test(`${engine}: stats names TEMP objects left on the writer; a read that waits for it says why`, async () => {
    await using srv = await startServer({ engine, busyTimeout: 100 });
    {
      await using gone = await link(srv);
      await gone.request(Op.Exec, [
        "CREATE TEMP TABLE scratch(x UNIQUE); CREATE TEMP VIEW v AS SELECT 1",
      ]);
    } // its session ends; the TEMP objects stay on the shared writer
    await using a = await link(srv);
    await using b = await link(srv);
    const report: StatsReport = await a.request(Op.Stats, []);
    assert.deepEqual(report.writer.temp, ["table scratch", "view v"]);
    assert.match(
      describeStats(report),
      /\nwriter {8}0 waiting, .*\nTEMP objects {2}2 on the writer \(table scratch, view v\): every statement, reads too, goes through the writer until they are dropped\n/,
    );
    await a.request(Op.Exec, ["BEGIN; CREATE TABLE t(x)"]);
    await assert.rejects(
      b.request(Op.Query, ["SELECT 1", null, null]),
      (err: Error & { code: string }) => {
        assert.equal(err.code, "BUSY_TIMEOUT");
        assert.match(
          err.message,
          /^Statement waited 100 ms for the writer \(TEMP tables exist, so every statement goes through it; DROP them when done\), held by session \d+: /,
        );
        return true;
      },
    );
    await a.request(Op.Exec, ["ROLLBACK; DROP TABLE temp.scratch; DROP VIEW temp.v"]);
    const after: StatsReport = await b.request(Op.Stats, []);
    assert.deepEqual(after.writer.temp, []);
    assert.ok(!describeStats(after).includes("TEMP"));
    assert.deepEqual((await b.request(Op.Query, ["SELECT 1", null, null]))[1], [[1]]);
  });
}

Deno.test("server log: connect, disconnect, auth failure, lease expiry, timeout, slow statements without parameters", async () => {
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-test-" });
  const sock = `${dir}/s.sock`;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      fileURLToPath(new URL("../server.ts", import.meta.url)),
      "--db",
      `${dir}/s.db`,
      "--socket",
      sock,
      "--token",
      "sesame",
      "--log-level",
      "info",
      "--slow-ms",
      "5",
      "--tx-idle-timeout",
      "100",
      "--busy-timeout",
      "50",
    ],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const stderr = child.stderr.pipeThrough(new TextDecoderStream());
  const chunks: string[] = [];
  const reading = (async () => {
    for await (const c of stderr) chunks.push(c);
  })();
  const { drained } = await readStdoutUntil(child, /serving/);
  try {
    const options = { path: sock, token: "sesame" };
    const [a] = await openLink(await resolveConnectOptions(options));
    const [b] = await openLink(await resolveConnectOptions(options));
    await assert.rejects(openLink(await resolveConnectOptions({ path: sock, token: "wrong" })));
    // Three connections announcing a frame over the pre-hello limit: one log line.
    for (let i = 0; i < 3; i++) {
      const raw = await Deno.connect({ transport: "unix", path: sock });
      await raw.write(new Uint8Array([0x7f, 0xff, 0xff, 0xff]));
      await raw.read(new Uint8Array(256)).catch(() => null); // the error frame
      raw.close();
    }
    await a.request(Op.Exec, ["CREATE TABLE t(x)"]);
    // Slow lines are at most 10 a second: a CREATE TABLE slow under load
    // must not hold back the line looked for below.
    await delay(150);
    const slow =
      "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 300000) " +
      "SELECT count(*) FROM c WHERE i != ?";
    await a.request(Op.Query, [slow, ["secret-parameter-value"], null]);
    await delay(150);
    // A slow `next` is logged with its cursor's SQL, not a prepared handle's of the same number.
    // The first row comes at once, the second after 500,000 steps: however the rows are split
    // into chunks (by time too, on a loaded machine), a `next` has the long part to wait for.
    await a.request(Op.Prepare, ["SELECT 'unrelated handle' AS z"]);
    const [cursor] = await a.request(Op.Iterate, [
      "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 500000) " +
      "SELECT i AS cursor_sql FROM c WHERE i = 1 OR i = 500000",
      null,
      null,
    ]);
    // Read on until done: under load a chunk may end after the first row.
    while (!(await a.request(Op.Next, [cursor]))[1]) { /* next chunk */ }
    await delay(150);
    await a.request(Op.Exec, ["BEGIN"]);
    await a.request(Op.Run, ["INSERT INTO t VALUES (1)", null, null]);
    await assert.rejects(b.request(Op.Run, ["INSERT INTO t VALUES (2)", null, null]), /busy/);
    // a's lease (100 ms) runs out: the server rolls its transaction back (a
    // fixed 250 ms could end first, the server's process being slow under load).
    for (let i = 0; i < 1000; i++) {
      if ((await b.request(Op.Stats, [])).transactions.length === 0) break;
      await delay(10);
    }
    for (const l of [a, b]) {
      l.fail(new Error("done"));
      await l.ended;
    }
    // The server logs b's disconnect once it noticed it (before the SIGTERM below).
    for (let i = 0; i < 1000 && !/disconnect: session 2 /.test(chunks.join("")); i++) {
      await delay(10);
    }
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await drained;
    await reading;
    await Deno.remove(dir, { recursive: true });
  }
  const log = chunks.join("");
  assert.match(log, / info {2}netsqlite: connect: session 1 \(a local process/);
  assert.match(log, / warn {2}netsqlite: refused a connection from .*: wrong token/);
  // Three in a row, throttled to one line a second: the first, then the last
  // counting the one between, when the second ends.
  const closed = [
    ...log.matchAll(
      / warn {2}netsqlite: closed the connection of a local process .*: FRAME_TOO_LARGE: .*/g,
    ),
  ].map(([l]) => l);
  assert.equal(closed.length, 2, log);
  assert.match(closed[1], /\(and 1 more like it since the last such line\)$/);
  assert.match(
    log,
    / warn {2}netsqlite: slow statement: session 1, query, \d+\.\d ms, 1 row: WITH RECURSIVE c\(i\) AS/,
  );
  assert.match(
    log,
    / warn {2}netsqlite: slow statement: session 1, next, \d+\.\d ms: WITH RECURSIVE .* SELECT i AS cursor_sql/,
  );
  assert.doesNotMatch(log, /slow statement: session 1, next, [^\n]*unrelated handle/);
  assert.ok(!log.includes("secret-parameter-value"), "parameters are never logged");
  assert.match(
    log,
    / warn {2}netsqlite: timeout: session 2, run after \d+\.\d ms: BUSY_TIMEOUT: Write waited 50 ms for the writer/,
  );
  assert.match(log, / warn {2}netsqlite: lease expired: session 1 left its transaction idle/);
  assert.match(
    log,
    / info {2}netsqlite: disconnect: session 2 \(.*\), (?:1 request|\d+ requests) answered\n/,
  );
  for (const line of log.trim().split("\n")) {
    assert.match(line, /^\d{4}-\d\d-\d\dT[\d:.]+Z (error|warn |info |debug) netsqlite: /);
  }
});

Deno.test("server log: one client's flood of timeouts writes one line a second, counting the rest; no slow line for them", async () => {
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-test-" });
  const sock = `${dir}/s.sock`;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      fileURLToPath(new URL("../server.ts", import.meta.url)),
      "--db",
      `${dir}/s.db`,
      "--socket",
      sock,
      "--slow-ms",
      "1",
      "--backup-dir",
      dir,
    ],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const stderr = child.stderr.pipeThrough(new TextDecoderStream());
  const chunks: string[] = [];
  const reading = (async () => {
    for await (const c of stderr) chunks.push(c);
  })();
  const { drained } = await readStdoutUntil(child, /serving/);
  // Rows, not an aggregate: the node:sqlite engine checks deadlines between rows only.
  const slow = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 1e9) " +
    "SELECT n FROM r";
  const N = 40;
  try {
    const [a] = await openLink(await resolveConnectOptions({ path: sock }));
    const timeOut = () =>
      assert.rejects(a.request(Op.Query, [slow, null, { timeout: 1 }]), {
        code: "STATEMENT_TIMEOUT",
      });
    for (let i = 0; i < N; i++) await timeOut();
    await delay(1100); // past the interval: the next line counts those held back
    await timeOut();
    await assert.rejects(a.request(Op.Backup, ["s.db"]), { code: "FORBIDDEN" });
    a.fail(new Error("done"));
    await a.ended;
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await drained;
    await reading;
    await Deno.remove(dir, { recursive: true });
  }
  const lines = chunks.join("").trim().split("\n");
  const timeouts = lines.filter((l) =>
    / warn {2}netsqlite: timeout: session 1, query after /.test(l)
  );
  assert.ok(timeouts.length >= 2 && timeouts.length <= 4, lines.join("\n"));
  const counted = timeouts.reduce(
    (n, l) =>
      n + 1 + Number(/\(and (\d+) more like it since the last such line\)$/.exec(l)?.[1] ?? 0),
    0,
  );
  assert.equal(counted, N + 1, lines.join("\n"));
  assert.ok(!lines.some((l) => l.includes("slow statement")), lines.join("\n"));
  // A failed maintenance request is logged as its success is.
  assert.ok(
    lines.some((l) =>
      / warn {2}netsqlite: backup failed: session 1: FORBIDDEN: Cannot back up to ".*s\.db": it is the database itself/
        .test(l)
    ),
    lines.join("\n"),
  );
});

Deno.test(`${ENGINE}: server log: a client cannot forge log lines or send control sequences through its file names and SQL`, async () => {
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-test-" });
  const sock = `${dir}/s.sock`;
  const srv = spawnServer(`${dir}/s.db`, sock, ["--slow-ms", "1"]);
  const forged = "\n2026-12-02T17:00:00.000Z warn  netsqlite: refused a connection from " +
    "203.0.113.77:4444: wrong token\r\n";
  try {
    (await connectWhenUp(sock, srv.child)).close();
    const [a] = await openLink(await resolveConnectOptions({ path: sock }));
    await assert.rejects(a.request(Op.Backup, [`nodir/x.db${forged}tail`]), { code: "FORBIDDEN" });
    await assert.rejects(a.request(Op.Vacuum, [`nodir/y.db${forged}`]), { code: "FORBIDDEN" });
    await delay(150); // past the slow-line interval
    await a.request(Op.Query, [
      "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 300000) " +
      "SELECT count(*) /*\x1b[2J\x1b[31m\u0085fake-line\u2028*/ FROM c",
      null,
      null,
    ]);
    a.fail(new Error("done"));
    await a.ended;
    await until(() => srv.log().includes("slow statement"));
  } finally {
    await stop(srv);
    await Deno.remove(dir, { recursive: true });
  }
  const log = srv.log();
  const lines = log.trim().split("\n");
  for (const line of lines) {
    assert.match(line, /^(\d{4}-\d\d-\d\dT[\d:.]+Z (error|warn |info |debug) )?netsqlite: /);
    // deno-lint-ignore no-control-regex
    assert.doesNotMatch(line, /[\x00-\x1f\x7f-\x9f\u2028\u2029]/, JSON.stringify(line));
  }
  assert.ok(!lines.some((l) => /^2026-12-02T17:00:00/.test(l)), log);
  const escaped = String.raw`\n2026-12-02T17:00:00.000Z warn  netsqlite: refused a connection ` +
    String.raw`from 203.0.113.77:4444: wrong token\r\n`;
  assert.ok(
    lines.some((l) =>
      l.includes(
        `netsqlite: backup failed: session 2: FORBIDDEN: Cannot back up to ` +
          `"nodir/x.db${escaped}tail": this server writes no files`,
      )
    ),
    log,
  );
  assert.ok(
    lines.some((l) =>
      l.includes(
        `netsqlite: vacuum failed: session 2: FORBIDDEN: Cannot vacuum into "nodir/y.db${escaped}": `,
      )
    ),
    log,
  );
  assert.ok(
    lines.some((l) =>
      / warn {2}netsqlite: slow statement: session 2, query, .*SELECT count\(\*\) \/\*\\x1b\[2J\\x1b\[31m\\x85fake-line \*\/ FROM c$/
        .test(l)
    ),
    log,
  );
});

/** `session K` of each disconnect line, with the requests it answered. */
function answeredBySession(log: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const [, id, n] of log.matchAll(/disconnect: session (\d+) .*, (\d+) requests? answered/g)) {
    m.set(id, Number(n));
  }
  return m;
}

/** Throttled lines matching `re`, each with those it counts as held back. */
function countedLines(log: string, re: RegExp): number {
  return [...log.matchAll(re)].reduce(
    (n, [l]) =>
      n + 1 + Number(/\(and (\d+) more like it since the last such line\)$/.exec(l)?.[1] ?? 0),
    0,
  );
}

Deno.test(`${ENGINE}: server log: at debug every request has its line, a slow one as well as its slow line`, async () => {
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-test-" });
  const sock = `${dir}/s.sock`;
  const srv = spawnServer(`${dir}/s.db`, sock, ["--slow-ms", "1", "--log-level", "debug"]);
  const slow = "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 300000) " +
    "SELECT count(*) AS n FROM c";
  try {
    const c = await connectWhenUp(sock, srv.child);
    for (let i = 0; i < 3; i++) assert.equal((await c.get<{ n: number }>(slow))?.n, 300000);
    c.close();
    assert.ok(await until(() => answeredBySession(srv.log()).size > 0), srv.log());
  } finally {
    await stop(srv);
    await Deno.remove(dir, { recursive: true });
  }
  const log = srv.log();
  const answered = answeredBySession(log);
  assert.equal(answered.size, 1, log);
  for (const [id, n] of answered) {
    const lines = log.match(new RegExp(` debug netsqlite: request: session ${id}, `, "g"));
    assert.equal(lines?.length, n, log);
  }
  // connectWhenUp's SELECT 1 and the three slow queries: a debug line each;
  // and each that took 1 ms or more is a slow statement, on a line of its
  // own or counted on the next (at most one line every 100 ms).
  const ms = [...log.matchAll(/ debug netsqlite: request: session \d+, query, ([\d.]+) ms/g)]
    .map(([, t]) => Number(t));
  assert.equal(ms.length, 4, log);
  const slowCounted = countedLines(log, / warn {2}netsqlite: slow statement: .*/g);
  // (A duration shown as 1.000 ms may have been just under.)
  assert.ok(slowCounted >= ms.filter((t) => t > 1).length, log);
  assert.ok(slowCounted <= ms.filter((t) => t >= 1).length, log);
});

Deno.test(`${ENGINE}: server log: a slow line held back is written when its interval ends, with no other slow line to count it`, async () => {
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-test-" });
  const sock = `${dir}/s.sock`;
  const srv = spawnServer(`${dir}/s.db`, sock, ["--slow-ms", "1"]);
  // A few ms each (over --slow-ms 1): back to back, most fall within one 100 ms interval.
  const slow = (tag: string) =>
    "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 20000) " +
    `SELECT count(*) /* ${tag} */ FROM c`;
  try {
    (await connectWhenUp(sock, srv.child)).close();
    const [a] = await openLink(await resolveConnectOptions({ path: sock }));
    for (let i = 0; i < 8; i++) {
      await a.request(Op.Query, [slow(i === 7 ? "the-last-one" : `q${i}`), null, null]);
    }
    // Written by the timer at the interval's end, before any shutdown.
    assert.ok(await until(() => srv.log().includes("the-last-one"), 10_000), srv.log());
    a.fail(new Error("done"));
    await a.ended;
  } finally {
    await stop(srv);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test(`${ENGINE}: server log: throttled lines still held back are written when the server stops`, async () => {
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-test-" });
  const sock = `${dir}/s.sock`;
  const srv = spawnServer(`${dir}/s.db`, sock);
  // Rows, not an aggregate: the node:sqlite engine checks deadlines between rows only.
  const slow = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 1e9) " +
    "SELECT n FROM r";
  const N = 3;
  try {
    (await connectWhenUp(sock, srv.child)).close();
    const [a] = await openLink(await resolveConnectOptions({ path: sock }));
    for (let i = 0; i < N; i++) {
      await assert.rejects(a.request(Op.Query, [slow, null, { timeout: 1 }]), {
        code: "STATEMENT_TIMEOUT",
      });
    }
    a.fail(new Error("done"));
    await a.ended;
  } finally {
    await stop(srv); // well within the one-second interval of timeout lines
    await Deno.remove(dir, { recursive: true });
  }
  const counted = countedLines(
    srv.log(),
    / warn {2}netsqlite: timeout: session \d+, query after .*/g,
  );
  assert.equal(counted, N, srv.log());
});

Deno.test("Logger.warnThrottled writes one line per kind per interval and counts those held back", async () => {
  const lines: string[] = [];
  const shown = (from = 0) => lines.slice(from).map((l) => l.replace(/^\S+ /, ""));
  const log = new Logger("warn", (l) => lines.push(l));
  try {
    for (let i = 0; i < 5; i++) log.warnThrottled("a", `a ${i}`, 50);
    log.warnThrottled("b", "b 0", 50);
    assert.deepEqual(shown(), ["warn  netsqlite: a 0", "warn  netsqlite: b 0"]);
    // No other "a" line comes: the last one held back is written when the interval ends.
    assert.ok(await until(() => lines.length === 3, 5000), lines.join("\n"));
    assert.deepEqual(shown(2), [
      "warn  netsqlite: a 4 (and 3 more like it since the last such line)",
    ]);
    // The next line, with none held back, is written at once after that interval.
    await delay(60);
    log.warnThrottled("a", "a 5", 50);
    assert.deepEqual(shown(3), ["warn  netsqlite: a 5"]);
  } finally {
    log.close();
  }
  const quiet = new Logger("error", (l) => lines.push(l));
  const before = lines.length;
  quiet.warnThrottled("a", "never", 50);
  assert.equal(lines.length, before);
  // logThrottled: the same at any level; kinds of different levels are apart.
  quiet.logThrottled("error", "a", "e 0", 50);
  quiet.logThrottled("error", "a", "e 1", 50);
  quiet.logThrottled("error", "a", "e 2", 50);
  quiet.close(); // writes the line held back at once
  assert.deepEqual(shown(before), [
    "error netsqlite: e 0",
    "error netsqlite: e 2 (and 1 more like it since the last such line)",
  ]);
  // After close(), nothing is held back.
  quiet.logThrottled("error", "a", "e 3", 50);
  assert.deepEqual(shown(before + 2), ["error netsqlite: e 3"]);
});

Deno.test("Logger.warnThrottled: the line written at the interval's end counts the others' peers, not its own", () => {
  const lines: string[] = [];
  const log = new Logger("warn", (l) => lines.push(l));
  log.warnThrottled("auth", "from 10.0.0.1", 60_000, "10.0.0.1");
  log.warnThrottled("auth", "from 10.0.0.1", 60_000, "10.0.0.1");
  log.warnThrottled("auth", "from 10.0.0.2", 60_000, "10.0.0.2");
  log.warnThrottled("auth", "from 10.0.0.3", 60_000, "10.0.0.3");
  log.close();
  assert.deepEqual(lines.map((l) => l.replace(/^\S+ /, "")), [
    "warn  netsqlite: from 10.0.0.1",
    "warn  netsqlite: from 10.0.0.3 (and 2 more like it since the last such line, " +
    "from 2 addresses: 10.0.0.1 ×1, 10.0.0.2 ×1)",
  ]);
});

Deno.test("opName() names ops as stats and the debug log show them", () => {
  assert.equal(opName(Op.Query), "query");
  assert.equal(opName(Op.CloseCursor), "close_cursor");
  assert.equal(opName(99), "op 99");
  assert.equal(opName("x"), "op x");
});
