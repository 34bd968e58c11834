/**
 * Does one client's statement hold up another's? `deno run -A bench/nonblocking.ts
 * [--engines ffi,node] [--seconds 3] [--pairs 3]`
 *
 * 1. While client A runs `SELECT count(*) FROM t x, t y WHERE x.v + y.v = 999`
 *    over 10,000 rows (seconds of work), client B issues point reads one at
 *    a time: their latency (p50, p99, max) is what a slow report costs
 *    everybody else.
 *    The same while client A runs one `exec` of `"select 1;"` × 400,000 (a
 *    long script, which takes turns with other connections).
 * 2. Mixed workload, 1 client one request at a time, 90 % point reads and
 *    10 % autocommit inserts: `--synchronous full` against `normal`, from
 *    alternating pairs of runs; with commits (and their fsync) off the main
 *    thread, `full` should cost reads nothing.
 *
 * The server runs as a separate process (bench/_server.ts); clients run in
 * this process. Prints a markdown summary.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { connect } from "../client.ts";
import { SQL, startServer } from "./_server.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    engines: { type: "string", default: "ffi,node" },
    seconds: { type: "string", default: "3" },
    pairs: { type: "string", default: "3" },
  },
});
const engines = flags.engines!.split(",");
const seconds = Number(flags.seconds);
const pairs = Number(flags.pairs);

const SLOW_JOIN = "SELECT count(*) FROM t x, t y WHERE x.v + y.v = 999";

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

/** Client A's slow work: the join, or a long script. */
type SlowWork = "join" | "script";

const LONG_SCRIPT = "select 1;".repeat(400_000);

async function whileSlow(engine: string, work: SlowWork): Promise<string> {
  await using srv = await startServer({
    synchronous: "normal",
    fixtureRows: 0,
    serverArgs: ["--engine", engine, "--statement-timeout", "600000"],
  });
  await using a = await connect({ ...srv.connectOptions, max: 1 });
  await using b = await connect({ ...srv.connectOptions, max: 1 });
  await a.exec(
    "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER); " +
      "INSERT INTO t (v) WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s " +
      "LIMIT 10000) SELECT x FROM s",
  );
  for (let i = 0; i < 200; i++) await b.values("SELECT v FROM t WHERE id = ?", [i + 1]);
  const started = performance.now();
  let joinMs = 0;
  const slow = work === "join" ? a.values(SLOW_JOIN) : a.exec(LONG_SCRIPT);
  const join = slow.then(() => joinMs = performance.now() - started);
  let finished = false;
  join.finally(() => finished = true);
  const lat: number[] = [];
  while (!finished) {
    const t = performance.now();
    await b.values("SELECT v FROM t WHERE id = ?", [1 + (lat.length % 10000)]);
    lat.push(performance.now() - t);
    // One read per millisecond at most, as the probe did.
    const left = 1 - (performance.now() - t);
    if (left > 0) await new Promise((r) => setTimeout(r, left));
  }
  await join;
  lat.sort((x, y) => x - y);
  return `| ${engine} | ${joinMs.toFixed(0)} | ${lat.length} | ${quantile(lat, 0.5).toFixed(2)} | ${
    quantile(lat, 0.99).toFixed(2)
  } | ${lat[lat.length - 1].toFixed(2)} |`;
}

async function readsDuringWrites(engine: string, synchronous: "full" | "normal"): Promise<string> {
  await using srv = await startServer({ synchronous, serverArgs: ["--engine", engine] });
  await using a = await connect({ ...srv.connectOptions, max: 1 });
  await using b = await connect({ ...srv.connectOptions, max: 1 });
  const end = performance.now() + seconds * 1000;
  let writes = 0;
  const writer = (async () => {
    while (performance.now() < end) {
      await a.run(SQL.insert, [`w-${writes}`, writes * 0.5, writes % 1000]);
      writes++;
    }
  })();
  const lat: number[] = [];
  while (performance.now() < end) {
    const t = performance.now();
    await b.values(SQL.pointRead, [1 + (lat.length % 10000)]);
    lat.push(performance.now() - t);
  }
  await writer;
  lat.sort((x, y) => x - y);
  return `| ${engine} | ${synchronous} | ${(lat.length / seconds).toFixed(0)} | ${
    quantile(lat, 0.5).toFixed(3)
  } | ${quantile(lat, 0.99).toFixed(3)} | ${(writes / seconds).toFixed(0)} |`;
}

async function mixed(
  engine: string,
  synchronous: "full" | "normal",
  clients: number,
): Promise<number> {
  await using srv = await startServer({ synchronous, serverArgs: ["--engine", engine] });
  const dbs = await Promise.all(
    Array.from({ length: clients }, () => connect({ ...srv.connectOptions, max: 1 })),
  );
  try {
    await Promise.all(dbs.map((db) => loop(db, 300))); // warm-up
    const rates = await Promise.all(dbs.map((db) => loop(db, seconds * 1000)));
    return rates.reduce((a, b) => a + b, 0);
  } finally {
    await Promise.all(dbs.map((db) => db.close()));
  }
}

async function loop(db: Awaited<ReturnType<typeof connect>>, ms: number): Promise<number> {
  let n = Math.floor(Math.random() * 1e6);
  const run = async (ms: number) => {
    const end = performance.now() + ms;
    let ops = 0;
    while (performance.now() < end) {
      if (n++ % 10 === 9) {
        await db.run(SQL.insert, [`mixed-${n}`, n * 0.5, n % 1000]);
      } else {
        await db.values(SQL.pointRead, [1 + (n % 10000)]);
      }
      ops++;
    }
    return ops / (ms / 1000);
  };
  return await run(ms);
}

console.log(`# Non-blocking engine (${new Date().toISOString()}, ${Deno.build.target})\n`);
console.log("Point reads of client B while client A's slow join runs (ms):\n");
console.log(
  "| engine | join ms | reads | p50 | p99 | max |\n| --- | ---: | ---: | ---: | ---: | ---: |",
);
for (const engine of engines) console.log(await whileSlow(engine, "join"));
console.log('\nThe same while client A runs one exec of "select 1;" × 400,000 (ms):\n');
console.log(
  "| engine | script ms | reads | p50 | p99 | max |\n| --- | ---: | ---: | ---: | ---: | ---: |",
);
for (const engine of engines) console.log(await whileSlow(engine, "script"));

console.log(
  `\nClient B's point reads (one at a time) while client A writes one row at a time, ${seconds} s:\n`,
);
console.log("| engine | sync | B reads/s | B p50 ms | B p99 ms | A writes/s |");
console.log("| --- | --- | ---: | ---: | ---: | ---: |");
for (const engine of engines) {
  for (const synchronous of ["normal", "full"] as const) {
    console.log(await readsDuringWrites(engine, synchronous));
  }
}

console.log(
  `\nMixed 90 % reads / 10 % writes, each client one request at a time, ${seconds} s runs, ` +
    `${pairs} alternating pairs:\n`,
);
console.log("| engine | clients | normal ops/s | full ops/s | full / normal (median of pairs) |");
console.log("| --- | ---: | ---: | ---: | ---: |");
for (const engine of engines) {
  for (const clients of [1, 4]) {
    const ratios: number[] = [];
    const fulls: number[] = [];
    const normals: number[] = [];
    for (let i = 0; i < pairs; i++) {
      const order: ("full" | "normal")[] = i % 2 === 0 ? ["normal", "full"] : ["full", "normal"];
      const r: Record<string, number> = {};
      for (const s of order) r[s] = await mixed(engine, s, clients);
      normals.push(r.normal);
      fulls.push(r.full);
      ratios.push(r.full / r.normal);
    }
    ratios.sort((x, y) => x - y);
    const med = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
    console.log(
      `| ${engine} | ${clients} | ${med(normals).toFixed(0)} | ${med(fulls).toFixed(0)} | ${
        ratios[Math.floor(ratios.length / 2)].toFixed(2)
      }× (${ratios.map((x) => x.toFixed(2)).join(", ")}) |`,
    );
  }
}
