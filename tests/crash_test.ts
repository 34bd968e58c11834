/**
 * Crash durability in CI: a few SIGKILL-and-restart rounds of
 * tests/crash/crash_durability.ts (`deno task test:crash` runs more).
 */

import assert from "node:assert/strict";
import {
  formatReport,
  passed,
  prng,
  type Report,
  runCrashTrials,
} from "./crash/crash_durability.ts";
import { testSeed, withSeed } from "./_seed.ts";

Deno.test("prng: the same seed gives the same sequence, in [0, 1)", () => {
  const a = prng(7), b = prng(7), c = prng(8);
  const xs = Array.from({ length: 100 }, a);
  assert.deepEqual(xs, Array.from({ length: 100 }, b));
  assert.notDeepEqual(xs, Array.from({ length: 100 }, c));
  assert.ok(xs.every((x) => x >= 0 && x < 1));
});

for (const clientProcesses of [false, true]) {
  const where = clientProcesses ? "writers in their own processes" : "writers in the test process";
  Deno.test(
    `runCrashTrials: SIGKILLed servers (synchronous=full) lose no acknowledged write, apply no write rejected as not run, show no partial transaction, keep integrity (${where})`,
    () =>
      withSeed(testSeed(1), async () => {
        const seed = testSeed(1);
        // Which outcomes the pipelined writes came to depends on where each kill falls: a
        // run of 3 trials saw as few as 2 rejected as not run on a lost connection. Each run
        // is checked in full; for the outcomes that must have been seen, up to 3 runs (seeds
        // seed, seed + 1, seed + 2) add up.
        const seen: Coverage = { resolved: 0, notRun: 0, notRunLost: 0, mayHaveRun: 0 };
        for (let run = 0; run < 3; run++) {
          const report = await runCrashTrials({
            trials: 3,
            seed: seed + run,
            writers: 4,
            synchronous: "full",
            clientProcesses,
          });
          console.log(formatReport(report));
          // A failure carries the whole report: CI shows the error, not always the log above.
          try {
            checkReport(report);
          } catch (err) {
            throw new Error(`${(err as Error).message}\n${formatReport(report)}`, { cause: err });
          }
          for (const k of COVERAGE) seen[k] += report.pipelined[k];
          if (COVERAGE.every((k) => seen[k] > 0)) break;
        }
        assert.ok(seen.resolved > 0, "no pipelined write resolved");
        assert.ok(seen.notRun > 0, "no pipelined write rejected with mayHaveRun false");
        // Not only refused at connect: some were on a connection as it was lost.
        assert.ok(
          seen.notRunLost > 0,
          "no pipelined write rejected as not run on a lost connection",
        );
        assert.ok(seen.mayHaveRun > 0, "no pipelined write rejected with mayHaveRun true");
      }),
  );
}

/** Pipelined outcomes a run must have seen for its checks to have tested them. */
const COVERAGE = ["resolved", "notRun", "notRunLost", "mayHaveRun"] as const;
type Coverage = Record<(typeof COVERAGE)[number], number>;

function checkReport(report: Report): void {
  assert.equal(report.perTrial.length, 3);
  for (const t of report.perTrial) {
    // Every trial must have had something acknowledged to lose, of both kinds;
    // a trial that acknowledged nothing tests nothing.
    assert.ok(t.ackedRows > 0, `trial ${t.trial}: no autocommit row was acknowledged`);
    assert.ok(t.ackedTransactions > 0, `trial ${t.trial}: no transaction was acknowledged`);
    assert.deepEqual(t.unexpectedErrors, [], `trial ${t.trial}: unexpected writer errors`);
    assert.deepEqual(t.lostRows, [], `trial ${t.trial}: acknowledged rows lost`);
    assert.deepEqual(
      t.lostTransactions,
      [],
      `trial ${t.trial}: acknowledged transactions lost`,
    );
    assert.deepEqual(t.partial, [], `trial ${t.trial}: partly visible transactions`);
    assert.equal(t.integrity, "ok", `trial ${t.trial}: integrity_check`);
    assert.ok(t.killAfterMs >= 50 && t.killAfterMs <= 400);
    assert.ok(t.rowsAfterRestart >= t.ackedRows);
  }
  assert.equal(report.lostWrites, 0);
  assert.equal(report.partialTransactions, 0);
  assert.equal(report.integrityFailures, 0);
  assert.equal(report.unexpectedErrors, 0);
  // The reconnecting writers, pipelining through every kill and restart: each write
  // resolved is present, none rejected with mayHaveRun false is.
  const p = report.pipelined;
  assert.equal(p.writers, 2);
  assert.deepEqual(p.lostResolved, [], "resolved pipelined writes lost");
  assert.deepEqual(p.presentNotRun, [], "pipelined writes rejected as not run are present");
  assert.deepEqual(p.unexpected, [], "unexpected pipelined outcomes");
  assert.ok(passed(report));
}
