/**
 * Crash durability in CI: a few SIGKILL-and-restart rounds of
 * tests/crash/crash_durability.ts (`deno task test:crash` runs more).
 */

import assert from "node:assert/strict";
import { formatReport, prng, runCrashTrials } from "./crash/crash_durability.ts";
import { testSeed, withSeed } from "./_seed.ts";

Deno.test("prng: the same seed gives the same sequence, in [0, 1)", () => {
  const a = prng(7), b = prng(7), c = prng(8);
  const xs = Array.from({ length: 100 }, a);
  assert.deepEqual(xs, Array.from({ length: 100 }, b));
  assert.notDeepEqual(xs, Array.from({ length: 100 }, c));
  assert.ok(xs.every((x) => x >= 0 && x < 1));
});

Deno.test(
  "runCrashTrials: SIGKILLed servers (synchronous=full) lose no acknowledged write, show no partial transaction, keep integrity",
  () =>
    withSeed(testSeed(1), async () => {
      const seed = testSeed(1);
      const report = await runCrashTrials({ trials: 3, seed, writers: 4, synchronous: "full" });
      console.log(formatReport(report));
      assert.equal(report.perTrial.length, 3);
      assert.ok(
        report.ackedRows > 0 && report.ackedTransactions > 0,
        "the writers got no acknowledged write before the kills: the trial tested nothing",
      );
      for (const t of report.perTrial) {
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
    }),
);
