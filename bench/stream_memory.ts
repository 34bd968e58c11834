/**
 * Streams 1,000,000 rows of ~100 bytes through `iterate()` from a server
 * running as a separate process, sampling the server's RSS (from
 * /proc/<pid>/status) the whole time, while a second client does point reads;
 * reports RSS growth and the point-read latency percentiles during the stream.
 *
 * Target (issue #4): RSS grows by at most 64 MiB.
 *
 * Run: `deno run -A bench/stream_memory.ts [--rows 1000000]`
 *
 * @module
 */

import { parseArgs } from "node:util";
import { connect } from "../client.ts";
import { startServer } from "./_server.ts";

const { values } = parseArgs({ args: Deno.args, options: { rows: { type: "string" } } });
const ROWS = Number(values.rows ?? 1_000_000);

function rssMiB(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
  return kb / 1024;
}

await using server = await startServer({ fixtureRows: 100 });
await using streamer = await connect(server.connectOptions);
await using reader = await connect(server.connectOptions);
// Warm up both paths, then take the baseline.
await reader.get("SELECT name FROM items WHERE id = 1");
for await (const _ of streamer.iterate("SELECT 1")) { /* warm */ }
const baseline = rssMiB(server.pid);
let peak = baseline;
const sampler = setInterval(() => peak = Math.max(peak, rssMiB(server.pid)), 50);

const sql = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < ?) " +
  "SELECT x, printf('%090d', x) AS pad FROM n";
let streamed = 0;
let bytes = 0;
const started = performance.now();
let done = false;
const stream = (async () => {
  for await (const row of streamer.iterate<{ x: number; pad: string }>(sql, [ROWS])) {
    streamed++;
    bytes += row.pad.length + 8;
  }
  done = true;
})();
const latencies: number[] = [];
while (!done) {
  const t = performance.now();
  await reader.get("SELECT name FROM items WHERE id = ?", [1 + (latencies.length % 100)]);
  latencies.push((performance.now() - t) * 1000);
}
await stream;
const seconds = (performance.now() - started) / 1000;
clearInterval(sampler);
peak = Math.max(peak, rssMiB(server.pid));

latencies.sort((a, b) => a - b);
const pct = (p: number) =>
  latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))];
const growth = peak - baseline;
console.log(
  `streamed ${streamed} rows (${(bytes / 2 ** 20).toFixed(0)} MiB of values) in ${
    seconds.toFixed(2)
  } s: ${Math.round(streamed / seconds)} rows/s`,
);
console.log(
  `server RSS: baseline ${baseline.toFixed(1)} MiB, peak ${peak.toFixed(1)} MiB, growth ${
    growth.toFixed(1)
  } MiB (target <= 64 MiB): ${growth <= 64 ? "PASS" : "FAIL"}`,
);
console.log(
  `point reads during the stream: ${latencies.length}, p50 ${pct(0.5).toFixed(0)} µs, p99 ${
    pct(0.99).toFixed(0)
  } µs, max ${latencies[latencies.length - 1].toFixed(0)} µs`,
);
if (streamed !== ROWS) throw new Error(`expected ${ROWS} rows, got ${streamed}`);
