/**
 * Point reads one at a time against two server.ts files (e.g. this checkout
 * and an older one), alternating runs, to report their ratio from one run:
 * `deno run -A bench/compare_servers.ts OLD_SERVER_TS [--seconds 2] [--pairs 5] [--engine ffi]`
 *
 * @module
 */

import { parseArgs } from "node:util";
import { connect } from "../client.ts";
import { SQL, writeFixture } from "./_server.ts";

const { values: flags, positionals } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    seconds: { type: "string", default: "2" },
    pairs: { type: "string", default: "5" },
    engine: { type: "string" },
  },
});
const [oldServer] = positionals;
const newServer = new URL("../server.ts", import.meta.url).pathname;
const seconds = Number(flags.seconds);

async function run(server: string, extra: string[]): Promise<number> {
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-cmp-" });
  writeFixture(`${dir}/a.db`);
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", server, "--db", `${dir}/a.db`, "--socket", `${dir}/a.sock`, ...extra],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.getReader();
  await reader.read(); // banner
  try {
    // The old client speaks the same protocol version 1.
    const db = await connect({ path: `${dir}/a.sock`, max: 1 });
    try {
      for (let i = 0; i < 2000; i++) await db.values(SQL.pointRead, [1 + (i % 10000)]);
      const end = performance.now() + seconds * 1000;
      let n = 0;
      while (performance.now() < end) {
        await db.values(SQL.pointRead, [1 + (n % 10000)]);
        n++;
      }
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
