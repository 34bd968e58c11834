/**
 * One workload against two server.ts files (e.g. this checkout and an older
 * one), alternating runs, to report their ratio from one run:
 * `deno run -A bench/compare_servers.ts OLD_SERVER_TS [--seconds 2] [--pairs 5] [--engine ffi]
 * [--inflight 1] [--workload point-read|range-100|write] [--sync full|normal]`
 * (`--inflight N`: N calls kept in flight on one connection; `write`: autocommit inserts).
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { connect } from "../client.ts";
import type { Queryable } from "../client.ts";
import { rowParams, SQL, writeFixture } from "./_server.ts";

const { values: flags, positionals } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    seconds: { type: "string", default: "2" },
    pairs: { type: "string", default: "5" },
    engine: { type: "string" },
    inflight: { type: "string", default: "1" },
    workload: { type: "string", default: "point-read" },
    sync: { type: "string", default: "full" },
  },
});
const [oldServer] = positionals;
const newServer = fileURLToPath(new URL("../server.ts", import.meta.url));
const seconds = Number(flags.seconds);
const inflight = Math.max(1, Math.floor(Number(flags.inflight)));
const WORKLOADS: Record<string, (db: Queryable, i: number) => Promise<unknown>> = {
  "point-read": (db, i) => db.values(SQL.pointRead, [1 + (i % 10000)]),
  "range-100": (db, i) => db.query(SQL.range100, [1 + (i % 9900)]),
  write: (db, i) => db.run(SQL.insert, rowParams(i)),
};
const call = WORKLOADS[flags.workload];
if (call === undefined) throw new TypeError(`--workload: one of ${Object.keys(WORKLOADS)}`);

async function run(server: string, extra: string[]): Promise<number> {
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-cmp-" });
  writeFixture(`${dir}/a.db`);
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      server,
      "--db",
      `${dir}/a.db`,
      "--socket",
      `${dir}/a.sock`,
      "--synchronous",
      flags.sync,
      ...extra,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.getReader();
  await reader.read(); // banner
  try {
    // The old client speaks the same protocol version 1.
    const db = await connect({ path: `${dir}/a.sock`, max: 1 });
    try {
      for (let i = 0; i < 2000; i++) await call(db, i);
      const end = performance.now() + seconds * 1000;
      let n = 0;
      const lane = async () => {
        while (performance.now() < end) {
          await call(db, n);
          n++;
        }
      };
      await Promise.all(Array.from({ length: inflight }, lane));
      return n / seconds;
    } finally {
      await db.close();
    }
  } finally {
    child.kill("SIGTERM");
    await child.status;
    reader.releaseLock();
    await child.stdout.cancel().catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
}

const ratios: number[] = [];
const newExtra = flags.engine ? ["--engine", flags.engine] : [];
for (let i = 0; i < Number(flags.pairs); i++) {
  const order = i % 2 === 0 ? ["old", "new"] : ["new", "old"];
  const r: Record<string, number> = {};
  for (const which of order) {
    r[which] = await run(which === "old" ? oldServer : newServer, which === "old" ? [] : newExtra);
  }
  ratios.push(r.new / r.old);
  console.log(
    `pair ${i + 1}: old ${r.old.toFixed(0)}/s, new ${r.new.toFixed(0)}/s, new/old ${
      (r.new / r.old).toFixed(2)
    }`,
  );
}
ratios.sort((a, b) => a - b);
console.log(`median new/old: ${ratios[Math.floor(ratios.length / 2)].toFixed(2)}`);
