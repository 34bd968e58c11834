/**
 * Large values against two servers, alternated: the server of another
 * checkout (`--old`, e.g. `/work/main/server.ts`) and this checkout's, each
 * started afresh, in pairs of rounds whose order alternates (old, new; new,
 * old; ...), so that a machine shared with other work loads both alike.
 * A round times, one at a time, the round trip of each query in `QUERIES`
 * (median of `--repeat`), then `--clients` connections each running one
 * `--concurrent` query at once (from another process) while another client
 * times `select 1` over and over. Prints each pair's new/old ratios and their medians.
 *
 *     deno run -A bench/big_values.ts --old /work/main/server.ts --pairs 3
 *
 * `NETSQLITE_ENGINE=node` in the environment runs both servers on node:sqlite.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { connect } from "../client.ts";
import { startServer } from "./_server.ts";

const { values: args } = parseArgs({
  args: Deno.args,
  options: {
    old: { type: "string", default: "/work/main/server.ts" },
    pairs: { type: "string", default: "3" },
    repeat: { type: "string", default: "3" },
    clients: { type: "string", default: "10" },
    concurrent: { type: "string", default: "select zeroblob(10000000)" },
    child: { type: "string" },
  },
});

if (args.child !== undefined) {
  // The concurrent clients, in a process of their own: decoding their
  // results does not delay the probe's replies.
  const clients = await Promise.all(
    Array.from({ length: Number(args.clients) }, () => connect({ path: args.child })),
  );
  await Promise.all(clients.map((c) => c.query("select 1")));
  console.log("ready");
  await Deno.stdin.read(new Uint8Array(1));
  const t = performance.now();
  await Promise.all(clients.map((c) => c.query(args.concurrent!)));
  console.log(performance.now() - t);
  for (const c of clients) await c.close();
  Deno.exit(0);
}

const QUERIES = [
  "select zeroblob(10000000)",
  "select randomblob(30000000)",
  "select printf('%.*c', 10000000, 'x')",
];
const NEW_SERVER = fileURLToPath(new URL("../server.ts", import.meta.url));

interface Round {
  /** Median round trip per query, ms. */
  single: number[];
  /** The concurrent clients' wall time, ms. */
  wall: number;
  /** Slowest and median `select 1` during it, ms. */
  probeMax: number;
  probeMedian: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function round(serverTs: string): Promise<Round> {
  await using srv = await startServer({ fixtureRows: 0, serverTs });
  await using db = await connect(srv.connectOptions);
  const single: number[] = [];
  for (const sql of QUERIES) {
    await db.query(sql); // warm up
    const times: number[] = [];
    for (let i = 0; i < Number(args.repeat); i++) {
      const t = performance.now();
      await db.query(sql);
      times.push(performance.now() - t);
    }
    single.push(median(times));
  }
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      fileURLToPath(new URL(import.meta.url)),
      "--child",
      srv.connectOptions.path!,
      "--clients",
      args.clients!,
      "--concurrent",
      args.concurrent!,
    ],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!out.includes("ready\n")) out += (await lines.read()).value ?? "";
  const probes: number[] = [];
  let done = false;
  const probe = (async () => {
    while (!done) {
      const t = performance.now();
      await db.query("select 1");
      probes.push(performance.now() - t);
    }
  })();
  await new Promise((r) => setTimeout(r, 20));
  const writer = child.stdin.getWriter();
  await writer.write(new Uint8Array([10]));
  out = "";
  for (let r; !(r = await lines.read()).done;) out += r.value;
  done = true;
  await probe;
  await writer.close();
  await child.status;
  return {
    single,
    wall: Number(out.trim()),
    probeMax: Math.max(...probes),
    probeMedian: median(probes),
  };
}

const fmt = (x: number) => (x < 10 ? x.toFixed(1) : x.toFixed(0)).padStart(6);
const names = ["zeroblob 10M", "randomblob 30M", "text 10M", "wall", "probe max", "probe p50"];
const ratios: number[][] = names.map(() => []);
console.log(`engine ${Deno.env.get("NETSQLITE_ENGINE") ?? "ffi"}; ms: ${names.join(" | ")}`);
for (let pair = 0; pair < Number(args.pairs); pair++) {
  const order = pair % 2 === 0 ? ["old", "new"] : ["new", "old"];
  const got: Record<string, Round> = {};
  for (const which of order) {
    got[which] = await round(which === "old" ? args.old : NEW_SERVER);
    const r = got[which];
    console.log(
      `pair ${pair} ${which}: ${
        [...r.single, r.wall, r.probeMax, r.probeMedian].map(fmt).join(" ")
      }`,
    );
  }
  const flat = (r: Round) => [...r.single, r.wall, r.probeMax, r.probeMedian];
  const o = flat(got.old), n = flat(got.new);
  n.forEach((x, i) => ratios[i].push(x / o[i]));
}
console.log("new/old, median of pairs (each pair's ratios in brackets):");
names.forEach((name, i) => {
  console.log(
    `  ${name.padEnd(15)} ${median(ratios[i]).toFixed(2)}  [${
      ratios[i].map((r) => r.toFixed(2)).join(" ")
    }]`,
  );
});
