/**
 * Cluster mode under a leader's death (SIGKILL, then the node restarted) and
 * a hung leader (SIGSTOP, then SIGCONT), with three client processes writing
 * groups of three rows at once: a `batch()`, an `exec()` script
 * `BEGIN; ...; COMMIT`, and one multi-row `INSERT`. After recovery each group
 * is whole or absent (never partial), every acknowledged group is there, no
 * group reported not applied is, and every group there was acknowledged or
 * reported `outcome unknown`. `tests/dqlite_failover_test.ts` checks single
 * inserts of in-process clients. Skipped (with the reason printed) when
 * `dqlite-demo` is not installed.
 */

import assert from "node:assert/strict";
import { connect } from "../client.ts";
import { serve } from "../server.ts";
import { DqliteCluster } from "../engine/dqlite/cluster.ts";
import { DemoCluster, skipWithoutDqlite } from "./_dqlite_nodes.ts";
import { type ClientProcess, spawnClientProcess } from "./_client_process.ts";

const ignore = skipWithoutDqlite("dqlite_atomic_failover_test.ts");

/** Bound on the time from a fault to the first group acknowledged after it (the election). */
const RESUME_BOUND_MS = 20_000;

/** Codes a group may fail with while the leader changes. */
const FAULT_CODES = new Set(["LEADER_LOST", "NOT_LEADER", "NO_LEADER", "STATEMENT_TIMEOUT"]);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

Deno.test({
  name: "cluster mode: groups written by client processes through a killed and a hung leader " +
    "are whole or absent, acknowledged ones kept, none reported not applied stored",
  ignore,
  async fn() {
    await using nodes = await DemoCluster.start(3);
    const dir = await Deno.makeTempDir({ prefix: "netsqlite-dqlite-atomic-" });
    const path = `${dir}/s.sock`;
    try {
      await using _server = await serve({
        path,
        txIdleTimeout: 60_000,
        dqlite: { nodes: nodes.addresses, database: "atomic", leaderTimeout: 20_000 },
      });
      await using db = await connect({ path, max: 1 });
      await db.exec("CREATE TABLE g (grp INTEGER, k INTEGER, PRIMARY KEY (grp, k))");
      const procs: ClientProcess[] = await Promise.all(
        [0, 1, 2].map(() => spawnClientProcess({ path, max: 1 })),
      );
      try {
        const acked = new Set<number>();
        const unknown = new Set<number>();
        const notApplied = new Set<number>();
        const unexpected: string[] = [];
        let next = 1;
        let stop = false;
        let faultAt = Infinity;
        let resumedAt = Infinity;
        const write = (p: ClientProcess, grp: number): Promise<unknown> => {
          const rows = [0, 1, 2].map((k) => `(${grp}, ${k})`);
          switch (grp % 3) {
            case 0:
              return p.batch(rows.map((r) => ({ sql: `INSERT INTO g VALUES ${r}` })));
            case 1:
              return p.exec(
                `BEGIN; ${rows.map((r) => `INSERT INTO g VALUES ${r}`).join("; ")}; COMMIT`,
              );
            default:
              return p.run(`INSERT INTO g VALUES ${rows.join(", ")}`);
          }
        };
        const writer = async (p: ClientProcess): Promise<void> => {
          while (!stop) {
            const grp = next++;
            const started = performance.now();
            try {
              await write(p, grp);
              acked.add(grp);
              if (started > faultAt && resumedAt === Infinity) resumedAt = performance.now();
            } catch (err) {
              const { code, message } = err as { code?: string; message: string };
              if (/outcome unknown/.test(message)) unknown.add(grp);
              else if (/not applied|nothing was applied/.test(message)) notApplied.add(grp);
              else unknown.add(grp);
              if (code === undefined || !FAULT_CODES.has(code)) {
                unexpected.push(`group ${grp}: ${code}: ${message}`);
              }
              if (await p.inTransaction()) await p.exec("ROLLBACK");
              await sleep(50);
            }
          }
        };
        const writers = procs.map(writer);
        const probe = new DqliteCluster(nodes.addresses, { leaderTimeout: 10_000 });
        /** Runs `fault` on the leader, waits until groups are acknowledged again, then `heal`. */
        const survive = async (
          what: string,
          fault: (i: number) => Promise<void>,
          heal: (i: number) => void,
        ): Promise<void> => {
          const before = acked.size;
          while (acked.size < before + 10) await sleep(20);
          const leader = nodes.indexOf(await probe.leader());
          resumedAt = Infinity;
          faultAt = performance.now();
          await fault(leader);
          while (resumedAt === Infinity && performance.now() - faultAt < RESUME_BOUND_MS) {
            await sleep(50);
          }
          heal(leader);
          const ms = resumedAt - faultAt;
          faultAt = Infinity;
          assert.ok(resumedAt !== Infinity, `${what}: no group acknowledged within the bound`);
          console.log(`${what}: writes resumed after ${Math.round(ms)} ms`);
          await nodes.waitVoters(3, 30_000);
        };
        try {
          await survive("SIGKILL", (i) => nodes.kill(i), (i) => nodes.restart(i));
          await survive("SIGSTOP", (i) => nodes.pause(i), (i) => nodes.resume(i));
          const done = acked.size;
          while (acked.size < done + 10) await sleep(20);
        } finally {
          stop = true;
          await Promise.all(writers);
          probe.close();
        }
        assert.deepEqual(unexpected, []);

        const stored = new Map(
          (await db.values<[number, number]>("SELECT grp, count(*) FROM g GROUP BY grp"))
            .map(([grp, n]) => [grp, n]),
        );
        console.log(
          `${acked.size} groups acknowledged, ${unknown.size} outcome unknown ` +
            `(${[...unknown].filter((grp) => stored.has(grp)).length} of them stored), ` +
            `${notApplied.size} not applied`,
        );
        for (const [grp, n] of stored) assert.equal(n, 3, `group ${grp} is partial`);
        for (const grp of acked) assert.ok(stored.has(grp), `acknowledged group ${grp} lost`);
        for (const grp of notApplied) {
          assert.ok(!stored.has(grp), `group ${grp} reported not applied is stored`);
        }
        for (const grp of stored.keys()) {
          assert.ok(acked.has(grp) || unknown.has(grp), `group ${grp} stored, never reported`);
        }
      } finally {
        for (const p of procs) await p[Symbol.asyncDispose]();
      }
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
