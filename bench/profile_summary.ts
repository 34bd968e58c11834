/**
 * Summarises a V8 `.cpuprofile` (from `deno run --cpu-prof`): self and total
 * time per function, the top entries by self time, and time per source area.
 *
 * Usage: `deno run -A bench/profile_summary.ts FILE.cpuprofile [--top 15]
 * [--ops N] [--json]`. With `--ops` (operations served while profiling),
 * times are also given per operation.
 *
 * @module
 */

import { parseArgs } from "node:util";

/** The parts of the `.cpuprofile` format used here. */
export interface CpuProfile {
  nodes: {
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
    children?: number[];
  }[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** One function's share of the profile. */
export interface FunctionTime {
  name: string;
  location: string;
  area: string;
  selfUs: number;
  totalUs: number;
}

/** What {@link summarize} returns. */
export interface ProfileSummary {
  wallUs: number;
  idleUs: number;
  busyUs: number;
  functions: FunctionTime[];
  areas: { area: string; selfUs: number }[];
}

const ROOT = new URL("..", import.meta.url).href;

function shortUrl(url: string): string {
  if (url.startsWith(ROOT)) return url.slice(ROOT.length);
  const npm = /\/npm\/registry\.npmjs\.org\/(.*)$/.exec(url);
  if (npm) return `npm:${npm[1]}`;
  return url;
}

/** Which part of the stack a function belongs to. */
function areaOf(name: string, url: string): string {
  if (name === "(idle)" || name === "(program)" || name === "(garbage collector)") return name;
  if (url === "") return "native (V8 builtins, node:sqlite C++ calls)";
  if (url.startsWith(ROOT)) {
    const rel = url.slice(ROOT.length);
    return `netsqlite ${rel.split("/").length > 1 ? rel.split("/")[0] + "/" : rel}`;
  }
  if (url.includes("@msgpack")) return "npm @msgpack/msgpack";
  if (url.startsWith("ext:") || url.startsWith("node:")) return "Deno runtime (ext:, node:)";
  return "other";
}

/** Computes self and total time per function (total counts recursion once). */
export function summarize(profile: CpuProfile): ProfileSummary {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const key = (id: number) => {
    const f = byId.get(id)!.callFrame;
    return `${f.functionName || "(anonymous)"}\u0000${f.url}\u0000${f.lineNumber}`;
  };
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  let wall = 0;
  let idle = 0;
  // timeDeltas[i] is the time before sample i; attribute it to sample i.
  for (let i = 0; i < profile.samples.length; i++) {
    const dt = Math.max(0, profile.timeDeltas[i] ?? 0);
    const id = profile.samples[i];
    wall += dt;
    const k = key(id);
    self.set(k, (self.get(k) ?? 0) + dt);
    if (byId.get(id)!.callFrame.functionName === "(idle)") idle += dt;
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const ck = key(cur);
      if (seen.has(ck)) continue;
      seen.add(ck);
      total.set(ck, (total.get(ck) ?? 0) + dt);
    }
  }
  const functions: FunctionTime[] = [];
  const areas = new Map<string, number>();
  for (const [k, s] of self) {
    const [name, url, line] = k.split("\u0000");
    const area = areaOf(name, url);
    areas.set(area, (areas.get(area) ?? 0) + s);
    functions.push({
      name,
      location: url === "" ? "" : `${shortUrl(url)}:${Number(line) + 1}`,
      area,
      selfUs: s,
      totalUs: total.get(k) ?? s,
    });
  }
  functions.sort((a, b) => b.selfUs - a.selfUs);
  return {
    wallUs: wall,
    idleUs: idle,
    busyUs: wall - idle,
    functions,
    areas: [...areas].map(([area, selfUs]) => ({ area, selfUs })).sort((a, b) =>
      b.selfUs - a.selfUs
    ),
  };
}

/** Formats the summary as markdown tables. */
export function formatSummary(
  s: ProfileSummary,
  options: { top?: number; ops?: number; title?: string } = {},
): string {
  const top = options.top ?? 15;
  const ops = options.ops;
  const pct = (v: number) => `${((100 * v) / s.busyUs).toFixed(1)}%`;
  const perOp = (v: number) => ops ? ` | ${(v / ops).toFixed(2)}` : "";
  const perOpHead = ops ? " | µs/op" : "";
  const perOpSep = ops ? " | ---:" : "";
  let out = options.title ? `### ${options.title}\n\n` : "";
  out +=
    `Sampled ${(s.wallUs / 1e6).toFixed(2)} s: busy ${(s.busyUs / 1e6).toFixed(2)} s, idle ${
      (s.idleUs / 1e6).toFixed(2)
    } s${ops ? `; ${ops} operations, ${(s.busyUs / ops).toFixed(1)} busy µs/op` : ""}.` +
    " Percentages are of busy (non-idle) time.\n\n";
  out += `| # | self ms | self %${perOpHead} | total % | function | location |\n`;
  out += `| ---: | ---: | ---: ${perOpSep} | ---: | --- | --- |\n`;
  s.functions.filter((f) => f.name !== "(idle)").slice(0, top).forEach((f, i) => {
    out += `| ${i + 1} | ${(f.selfUs / 1000).toFixed(1)} | ${pct(f.selfUs)}${perOp(f.selfUs)} | ${
      pct(f.totalUs)
    } | \`${f.name}\` | ${f.location} |\n`;
  });
  out += `\n| area | self ms | self %${perOpHead} |\n| --- | ---: | ---: ${perOpSep} |\n`;
  for (const a of s.areas) {
    if (a.area === "(idle)") continue;
    out += `| ${a.area} | ${(a.selfUs / 1000).toFixed(1)} | ${pct(a.selfUs)}${perOp(a.selfUs)} |\n`;
  }
  return out;
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: {
      top: { type: "string", default: "15" },
      ops: { type: "string" },
      json: { type: "boolean", default: false },
    },
  });
  if (positionals.length === 0) {
    console.error(
      "usage: deno run -A bench/profile_summary.ts FILE.cpuprofile [--top N] [--ops N] [--json]",
    );
    Deno.exit(2);
  }
  for (const file of positionals) {
    const summary = summarize(JSON.parse(await Deno.readTextFile(file)) as CpuProfile);
    if (values.json) {
      console.log(JSON.stringify({ file, ...summary, functions: summary.functions.slice(0, 50) }));
    } else {
      console.log(
        formatSummary(summary, {
          top: Number(values.top),
          ops: values.ops === undefined ? undefined : Number(values.ops),
          title: file,
        }),
      );
    }
  }
}
