/**
 * Soak and idle-connection tests in CI: a short run of tests/soak/soak.ts
 * (`deno task soak --duration 60` runs a longer one) and 1000 idle
 * connections held against a server process (tests/soak/idle_connections.ts).
 */

import assert from "node:assert/strict";
import { formatSoakReport, runSoak } from "./soak/soak.ts";
import {
  ANON_SLACK_BYTES,
  describeExtraFds,
  fdCensus,
  fdTargetsOf,
  formatIdleReport,
  runIdleConnections,
  unsettledFds,
} from "./soak/idle_connections.ts";
import { withTimeLimit } from "./_limit.ts";
import { ENGINE } from "./_logged_server.ts";
import { testSeed, withSeed } from "./_seed.ts";

const MiB = 1024 * 1024;

/** Operations the workload must have run at least once, so that each check tested something. */
const OPS = [
  "pointAccount",
  "pointLedger",
  "rangeLedger",
  "sumAccounts",
  "iterateAccounts",
  "insert",
  "batch",
  "transfer",
  "duplicateInsert",
  "failedBatch",
  "notNullInsert",
  "rollbackTransfer",
  "savepointError",
  "disconnect",
  "abandonTransaction",
  "requestTimeoutReconnect",
];

Deno.test(
  "runSoak: 200 connections over 4 processes for 20 s (60 s on node:sqlite) lose no acknowledged write, keep the accounts total, see only the provoked errors and keep server memory stable",
  // A minute's workload on node:sqlite, with its start and checks.
  withTimeLimit(120_000, () =>
    withSeed(testSeed(1), async () => {
      const seed = testSeed(1);
      // 20 s (60 s on node:sqlite): in shorter runs the server's heap was at times still growing
      // toward its plateau at the end, failing the memory check without a leak. FFI: ≈ 140 MiB,
      // reached in 8-12 s. node:sqlite: ≈ 200 MiB, reached in 15-20 s (20 and 30 s runs grew
      // 32-36 MiB over their second half), then a saw-tooth of ≈ 25 MiB as V8 collects the
      // statements node:sqlite leaves to it (a 60 s run: 199, 204, 182, 206, 184 MiB at
      // 20-60 s): its second half lies on the plateau, allowed 40 MiB for the saw-tooth.
      const node = ENGINE === "node";
      const maxRssGrowthBytes = (node ? 40 : 32) * MiB;
      const report = await runSoak({
        durationMs: node ? 60_000 : 20_000,
        maxRssGrowthBytes,
        connections: 200,
        processes: 4,
        seed,
      });
      console.log(formatSoakReport(report));
      assert.deepEqual(report.failures, []);
      assert.equal(report.ok, true);
      assert.deepEqual(report.workerExitCodes, [0, 0, 0, 0]);
      assert.equal(report.connections, 200);

      // Every kind of operation ran, the deliberate errors came back with their codes.
      for (const op of OPS) assert.ok((report.ops[op] ?? 0) > 0, `no ${op} ran`);
      assert.ok(report.deliberateErrors["SQLITE_CONSTRAINT_PRIMARYKEY"] > 0);
      assert.ok(report.deliberateErrors["SQLITE_CONSTRAINT_NOTNULL"] > 0);
      assert.ok(report.deliberateErrors["REQUEST_TIMEOUT"] > 0);
      assert.deepEqual(
        Object.keys(report.deliberateErrors).sort(),
        ["REQUEST_TIMEOUT", "SQLITE_CONSTRAINT_NOTNULL", "SQLITE_CONSTRAINT_PRIMARYKEY"],
      );
      assert.equal(report.reconnects, report.ops["requestTimeoutReconnect"]);
      assert.equal(report.disconnects, report.ops["disconnect"]);
      assert.equal(report.abandonedTransactions, report.ops["abandonTransaction"]);
      assert.equal(report.unexpectedCount, 0, JSON.stringify(report.unexpected));
      assert.deepEqual(report.unexpected, []);
      assert.equal(report.busyTimeouts, 0);

      // Writes: all acknowledged ones are there, nothing else is.
      assert.ok(report.acknowledged > 1000, `only ${report.acknowledged} acknowledged writes`);
      assert.ok(report.transfersCommitted > 100);
      assert.ok(report.rolledBack > 0);
      assert.equal(report.missingCount, 0);
      assert.deepEqual(report.missing, []);
      assert.deepEqual(report.rolledBackPresent, []);
      assert.equal(report.unaccountedCount, 0);
      assert.equal(report.ledgerRows, report.acknowledged + report.unknownOutcomePresent);

      // Transfers: the total never changed, each balance matches its ledger.
      assert.equal(report.accountRows, 100);
      assert.equal(report.actualTotal, report.expectedTotal);
      assert.equal(report.expectedTotal, 100 * 1000);
      assert.deepEqual(report.mismatchedAccounts, []);
      assert.equal(report.integrity, "ok");

      // Memory: sampled each second; it grew little over the second half, or levelled off, or was
      // levelling off (a loaded machine reaches the heap's plateau later).
      const { rss } = report;
      assert.ok(rss.samples.length >= 8, `${rss.samples.length} RSS samples`);
      assert.ok(rss.startBytes > 0 && rss.peakBytes >= rss.startBytes && rss.endBytes > 0);
      assert.equal(rss.limitBytes, maxRssGrowthBytes);
      assert.ok(
        rss.secondHalfGrowthBytes <= maxRssGrowthBytes ||
          rss.lastQuarterGrowthBytes <= maxRssGrowthBytes / 4 ||
          (rss.lastQuarterGrowthBytes <= rss.thirdQuarterGrowthBytes / 2 &&
            rss.lastQuarterGrowthBytes <= maxRssGrowthBytes / 2),
        `server RSS grew ${rss.secondHalfGrowthBytes} B over the second half`,
      );
      assert.equal(rss.stable, true);
      assert.ok(rss.peakBytes < 512 * MiB, `server peak RSS ${rss.peakBytes}`);
    })),
);

Deno.test(
  "runIdleConnections: while 1000 idle connections are held a new client is served promptly and each held one answers; closing them frees their descriptors, their memory is reused, and with the serve task's flags the server's RSS is back near its start within seconds",
  async () => {
    const report = await runIdleConnections({ count: 1000, cycles: 4, promptMs: 2000 });
    console.log(formatIdleReport(report));
    assert.deepEqual(report.failures, []);
    assert.equal(report.ok, true);
    assert.equal(report.strictRss, true);
    assert.equal(report.cycles.length, 4);
    for (const c of report.cycles) {
      assert.equal(c.heldAnswered, 1000);
      assert.ok(c.newClientMs <= 2000, `new client took ${c.newClientMs} ms`);
      assert.ok(c.heldFds >= report.fds.baseline + 1000);
      // Sockets and all but the database's files are back exactly; the
      // database's may keep the engine's readers (unsettledFds).
      assert.equal(c.fdProblem, null);
      assert.ok(c.afterFdCensus.other <= report.fds.baselineCensus.other);
    }
    const { rss } = report;
    assert.ok(rss.baselineBytes > 0 && rss.heldBytes > rss.baselineBytes);
    const growth = report.cycles[3].heldBytes - report.cycles[0].heldBytes;
    assert.ok(growth <= 3 * rss.perRoundAllowanceBytes);
    assert.ok(rss.afterBytes <= rss.baselineBytes + rss.slackBytes);
    // The collection after the wave makes it quick (V8 alone takes 10-40 s).
    assert.ok(report.cycles[3].afterWaitMs < 10_000, `${report.cycles[3].afterWaitMs} ms`);
    // The heap itself (not the executable's mapped pages) is back within 4 MiB.
    assert.ok(
      rss.afterAnonBytes <= rss.baselineAnonBytes + ANON_SLACK_BYTES,
      `server heap ${rss.afterAnonBytes} B after, baseline ${rss.baselineAnonBytes} B`,
    );
  },
);

Deno.test({
  name:
    "runIdleConnections: with --allow-ffi but no exposed gc, the server's RSS is back near its start once V8 has collected (within 60 s)",
  ignore: Deno.build.os !== "linux",
  // Limit 120 s: the run itself may wait up to 60 s for V8 to collect (it took
  // 32 s in one suite run), plus starting and closing 1000 connections.
  fn: withTimeLimit(120_000, async () => {
    const report = await runIdleConnections({ count: 1000, cycles: 1, serverFlags: ["-A"] });
    console.log(formatIdleReport(report));
    assert.deepEqual(report.failures, []);
    assert.equal(report.cycles[0].fdProblem, null);
    assert.equal(report.rss.nearBaseline, true);
    assert.ok(report.rss.afterAnonBytes <= report.rss.baselineAnonBytes + 4 * 1024 * 1024);
  }),
});

Deno.test("unsettledFds: sockets and other descriptors must all close; the database's may keep the engine's idle readers and SQLite's deferred closes, no more", () => {
  const base = { total: 34, database: 2, wal: 2, shm: 2, other: 28 };
  const at = (d: Partial<typeof base>) => ({ ...base, ...d });
  assert.equal(unsettledFds(base, base, 1000), null);
  // One socket (or pipe, eventfd, file) left open fails.
  assert.match(unsettledFds(at({ other: 29 }), base, 1000)!, /^1 descriptors other than/);
  assert.match(unsettledFds(at({ shm: 3 }), base, 1000)!, /-shm/);
  // Four idle readers (database + -wal each), plus 24 deferred database closes: kept.
  assert.equal(unsettledFds(at({ database: 30, wal: 6 }), base, 1000), null);
  // A fifth live reader is one too many.
  assert.match(unsettledFds(at({ database: 30, wal: 7 }), base, 1000)!, /5 reader connections/);
  // A live reader without its database descriptor, or more than one per connection, cannot be.
  assert.match(unsettledFds(at({ database: 3, wal: 4 }), base, 1000)!, /database file/);
  assert.match(unsettledFds(at({ database: 14, wal: 6 }), base, 10)!, /between them and 11/);
});

Deno.test("fdCensus and describeExtraFds: this process's descriptors, with a socket's kind and state", async () => {
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-fds-" });
  try {
    const db = `${Deno.realPathSync(dir)}/x.db`;
    const before = fdTargetsOf(Deno.pid);
    using _file = await Deno.open(db, { create: true, write: true });
    using _wal = await Deno.open(`${db}-wal`, { create: true, write: true });
    using listener = Deno.listen({ transport: "unix", path: `${dir}/s.sock` });
    const after = fdTargetsOf(Deno.pid);
    const census = fdCensus(after, db);
    assert.equal(census.database, 1);
    assert.equal(census.wal, 1);
    assert.equal(census.total, after.size);
    assert.equal(census.other, after.size - 2);
    const text = describeExtraFds(Deno.pid, before, after);
    // Three new here; the test harness (tests/_limit.ts) and what earlier tests of this file
    // still close may come and go meanwhile: only ours are asserted.
    assert.match(text, /^\d+ new: /);
    assert.match(text, /(: |, )1 x x\.db(, | \[)/);
    assert.match(text, /(: |, )1 x x\.db-wal(, | \[)/);
    assert.match(text, /(: |, )\d+ x socket(, | \[)/);
    assert.match(text, /socket:\[\d+\] \(unix stream listening \S+s\.sock\)/);
    assert.equal(
      describeExtraFds(Deno.pid, after, after),
      "no descriptor that was not there at the baseline",
    );
    listener.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
