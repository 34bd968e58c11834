/**
 * Writes while a change feed is subscribed (FFI engine): a bulk
 * `INSERT ... SELECT` of `--rows` rows in autocommit and a write that
 * computes long (a join of 3,000 × 3,000 rows) and changes one row (for
 * each, its time and the slowest of another client's point reads issued
 * every 2 ms meanwhile), and single-row inserts one at a time (their rate). A subscriber reads every
 * change. Run against this checkout's server and, with `--server`, another
 * checkout's; rounds alternate between them, so load from elsewhere hits
 * both alike; medians are printed.
 *
 * Usage: `deno run -A bench/feed_writes.ts [--rows 20000] [--rounds 5]
 * [--singles 2000] [--server OTHER/server.ts]`
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type Client, connect, type Subscription } from "../client.ts";
import { type BenchServer, startServer } from "./_server.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    rows: { type: "string", default: "20000" },
    rounds: { type: "string", default: "5" },
    singles: { type: "string", default: "2000" },
    server: { type: "string" },
  },
});
const rows = Number(values.rows);
const rounds = Number(values.rounds);
const singles = Number(values.singles);

interface Side {
  name: string;
  server: BenchServer;
  writer: Client;
  reader: Client;
  feed: Subscription;
  seen: number;
  draining: Promise<void>;
}

async function side(name: string, serverTs?: string): Promise<Side> {
  const server = await startServer({ fixtureRows: 0, serverArgs: ["--engine", "ffi"], serverTs });
  const writer = await connect({ ...server.connectOptions, max: 1 });
  const reader = await connect({ ...server.connectOptions, max: 1 });
  await writer.exec(
    "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); CREATE TABLE n (x INTEGER);" +
      "INSERT INTO n WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 3000) " +
      "SELECT x FROM s",
  );
  const feed = await reader.subscribe({ tables: ["t"], buffer: 100_000 });
  const s: Side = { name, server, writer, reader, feed, seen: 0, draining: Promise.resolve() };
  s.draining = (async () => {
    for await (const _ of feed) s.seen++;
  })();
  return s;
}

const BULK =
  "INSERT INTO t (v) WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < ?) " +
  "SELECT 'v' || x FROM s";
const COMPUTE = "INSERT INTO t (v) SELECT count(*) FROM n a, n b WHERE a.x + b.x = ?";

/** A write (`sql`, `params`): ms it took, and the slowest point read meanwhile (ms). */
async function timed(s: Side, sql: string, params: number[]): Promise<[number, number]> {
  let running = true;
  let slowest = 0;
  const probe = (async () => {
    while (running) {
      const t = performance.now();
      await s.reader.get("SELECT 1");
      slowest = Math.max(slowest, performance.now() - t);
      await new Promise((r) => setTimeout(r, 2));
    }
  })();
  const start = performance.now();
  await s.writer.run(sql, params);
  const ms = performance.now() - start;
  running = false;
  await probe;
  return [ms, slowest];
}

/** Single-row inserts one at a time: per second. */
async function single(s: Side): Promise<number> {
  const start = performance.now();
  for (let i = 0; i < singles; i++) await s.writer.run("INSERT INTO t (v) VALUES (?)", [`s${i}`]);
  return singles / ((performance.now() - start) / 1000);
}

const sides = [await side("this checkout")];
if (values.server !== undefined) sides.push(await side("other", values.server));
const results = sides.map(() => ({
  bulk: [] as number[],
  slowest: [] as number[],
  compute: [] as number[],
  computeSlowest: [] as number[],
  single: [] as number[],
}));
for (let r = 0; r < rounds; r++) {
  for (let i = 0; i < sides.length; i++) {
    const [ms, slowest] = await timed(sides[i], BULK, [rows]);
    results[i].bulk.push(ms);
    results[i].slowest.push(slowest);
    const [cms, cslowest] = await timed(sides[i], COMPUTE, [-1]);
    results[i].compute.push(cms);
    results[i].computeSlowest.push(cslowest);
    results[i].single.push(await single(sides[i]));
  }
}
for (const s of sides) {
  await s.feed.close();
  await s.draining;
  await s.writer.close();
  await s.reader.close();
  await s.server.stop();
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(
  `feed subscribed; bulk INSERT ... SELECT of ${rows} rows, a long-computing one-row write, ` +
    `${singles} single inserts, ${rounds} rounds (medians)`,
);
for (let i = 0; i < sides.length; i++) {
  const r = results[i];
  console.log(
    `${sides[i].name.padEnd(14)} bulk ${median(r.bulk).toFixed(0).padStart(6)} ms` +
      `  slowest read during it ${median(r.slowest).toFixed(1).padStart(7)} ms` +
      `  compute ${median(r.compute).toFixed(0).padStart(6)} ms` +
      `  slowest read during it ${median(r.computeSlowest).toFixed(1).padStart(7)} ms` +
      `  single inserts ${median(r.single).toFixed(0).padStart(6)}/s  (changes seen ${
        sides[i].seen
      })`,
  );
}
