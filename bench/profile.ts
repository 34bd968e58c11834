/**
 * Profiles point reads: runs the server under `deno run --cpu-prof` (and the
 * load worker too, for the client side), drives point reads for a few
 * seconds, stops both gracefully so V8 writes the profiles, and summarises
 * them with `profile_summary.ts`.
 *
 * Usage: `deno run -A bench/profile.ts [--seconds 5] [--inflight 1] [--connections 1]
 * [--transport unix|tcp] [--interval 100] [--workload point-read] [--sync full|normal]
 * [--out DIR]`
 *
 * Writes `profile-<workload>-<transport>-<inflight>.md` into `--out`
 * (default bench/results) and keeps the raw `.cpuprofile` files in a temp
 * directory whose path it prints.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Histogram } from "./_histogram.ts";
import { startServer } from "./_server.ts";
import { formatFiles, WorkerProcess } from "./_workers.ts";
import type { RunResult, RunSpec, Workload } from "./_load_worker.ts";
import { type CpuProfile, formatSummary, summarize } from "./profile_summary.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    seconds: { type: "string", default: "5" },
    inflight: { type: "string", default: "1" },
    connections: { type: "string", default: "1" },
    transport: { type: "string", default: "unix" },
    interval: { type: "string", default: "100" },
    workload: { type: "string", default: "point-read" },
    sync: { type: "string", default: "full" },
    top: { type: "string", default: "15" },
    out: { type: "string", default: fileURLToPath(new URL("./results", import.meta.url)) },
  },
});

const seconds = Number(values.seconds);
const inflight = Number(values.inflight);
const transport = values.transport as "unix" | "tcp";
const workload = values.workload as Workload;
const top = Number(values.top);
const profDir = await Deno.makeTempDir({ prefix: "netsqlite-prof-" });
const profFlags = (side: string) => [
  "--cpu-prof",
  `--cpu-prof-dir=${profDir}/${side}`,
  `--cpu-prof-interval=${values.interval}`,
];

const server = await startServer({
  transport,
  synchronous: values.sync as "full" | "normal",
  denoFlags: profFlags("server"),
});
const worker = new WorkerProcess(profFlags("client"));
let result: RunResult;
try {
  const spec: RunSpec = {
    kind: "netsqlite",
    workload,
    connect: server.connectOptions,
    connections: Number(values.connections),
    inflight,
    warmupMs: 0,
    durationMs: seconds * 1000,
    seq: 1_000_000,
  };
  await worker.send({ type: "run", spec });
  await worker.receive();
  await worker.send({ type: "go" });
  result = await worker.receive<RunResult>();
} finally {
  await worker.exit();
  await server.stop(10_000); // SIGTERM: the server exits normally and writes its profile
}

const files = async (side: string) => {
  const out: string[] = [];
  for await (const e of Deno.readDir(`${profDir}/${side}`)) {
    if (e.name.endsWith(".cpuprofile")) out.push(`${profDir}/${side}/${e.name}`);
  }
  return out;
};

const ops = result.opsTotal;
const hist = new Histogram();
hist.merge(result.hist);
let md = `# CPU profile: ${workload}, ${transport}, ${inflight} in flight\n\n` +
  `- ${
    new Date().toISOString()
  }, Deno ${Deno.version.deno}, ${navigator.hardwareConcurrency} cores\n` +
  `- ${seconds} s of load from one client process: ${ops} operations ` +
  `(${(result.ops / seconds).toFixed(0)} ops/s, p50 ${hist.percentile(50).toFixed(1)} µs, ` +
  `p99 ${hist.percentile(99).toFixed(1)} µs while profiling)\n` +
  `- sampling interval ${values.interval} µs; \`self\` = time in the function itself, ` +
  "`total` = time with callees; µs/op = time / operations\n" +
  `- command: \`deno run -A bench/profile.ts ${Deno.args.join(" ")}\`\n\n`;
for (const side of ["server", "client"]) {
  for (const f of await files(side)) {
    const summary = summarize(JSON.parse(await Deno.readTextFile(f)) as CpuProfile);
    md += formatSummary(summary, { top, ops, title: `${side} (${f.split("/").pop()})` }) + "\n";
  }
}
console.log(md);
await Deno.mkdir(values.out!, { recursive: true });
const outFile = `${values.out}/profile-${workload}-${transport}-${inflight}.md`;
await Deno.writeTextFile(outFile, md);
await formatFiles([outFile]);
console.log(`Wrote ${outFile}; raw profiles in ${profDir}`);
