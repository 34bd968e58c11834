/**
 * Does an online backup hold up other clients? `deno run -A bench/backup_probe.ts
 * [--engines ffi,node] [--mb 100] [--runs 3] [--server OTHER/server.ts]`
 *
 * Builds a database of about `--mb` MB (rows of 1,000 random bytes), then,
 * per run, backs it up (`netsqlite backup`'s request, on an admin session)
 * while another client issues point reads one at a time, at most one per
 * millisecond: their latency (p50, p99, max) during the backup is what the
 * backup costs everybody else. The same reads for as long without a backup
 * give the baseline. Also `vacuum --into`, whose copy is written the same way.
 *
 * The server runs as a separate process (bench/_server.ts): this checkout's,
 * or with `--server` another checkout's (to compare before and after a
 * change); clients run in this process. Prints a markdown table.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { connect } from "../client.ts";
import { openLink } from "../client/connection.ts";
import { resolveConnectOptions } from "../client/options.ts";
import { Op } from "../protocol/messages.ts";
import { startServer } from "./_server.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    engines: { type: "string", default: "ffi,node" },
    mb: { type: "string", default: "100" },
    runs: { type: "string", default: "3" },
    server: { type: "string" },
  },
});
const engines = flags.engines!.split(",");
const mb = Number(flags.mb);
const runs = Number(flags.runs);

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

/** Point reads one at a time, at most one per ms, until `done` settles: their latencies. */
async function probe(
  read: (id: number) => Promise<unknown>,
  done: Promise<unknown>,
): Promise<number[]> {
  let finished = false;
  done.finally(() => finished = true).catch(() => {});
  const lat: number[] = [];
  while (!finished) {
    const t = performance.now();
    await read(1 + (lat.length % 1000));
    lat.push(performance.now() - t);
    const left = 1 - (performance.now() - t);
    if (left > 0) await new Promise((r) => setTimeout(r, left));
  }
  return lat.sort((x, y) => x - y);
}

function row(engine: string, what: string, ms: number, lat: number[]): string {
  return `| ${engine} | ${what} | ${ms.toFixed(0)} | ${lat.length} | ${
    quantile(lat, 0.5).toFixed(2)
  } | ${quantile(lat, 0.99).toFixed(2)} | ${lat[lat.length - 1].toFixed(2)} |`;
}

async function measure(engine: string): Promise<string[]> {
  const copies = await Deno.makeTempDir({ prefix: "netsqlite-bench-copies-" });
  await using srv = await startServer({
    fixtureRows: 0,
    serverArgs: ["--engine", engine, "--backup-dir", copies],
    serverTs: flags.server,
  });
  await using a = await connect({ ...srv.connectOptions, max: 1 });
  await using b = await connect({ ...srv.connectOptions, max: 1 });
  const rows = Math.round(mb * 1000);
  await a.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)");
  for (let done = 0; done < rows; done += 10_000) {
    await a.run(
      "INSERT INTO t (b) WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s " +
        `LIMIT ${Math.min(10_000, rows - done)}) SELECT randomblob(1000) FROM s`,
    );
  }
  const [admin] = await openLink(await resolveConnectOptions(srv.connectOptions), {
    admin: true,
  });
  const out: string[] = [];
  try {
    await admin.request(Op.Checkpoint, ["truncate"]);
    const read = (id: number) => b.values("SELECT id, length(b) FROM t WHERE id = ?", [id]);
    for (let i = 0; i < 500; i++) await read(i + 1);
    for (let run = 0; run < runs; run++) {
      const dest = `${copies}/b${run}.db`;
      const t = performance.now();
      const backup = admin.request(Op.Backup, [dest]);
      const lat = await probe(read, backup);
      const report = await backup;
      const ms = performance.now() - t;
      out.push(row(engine, `backup (${(report.bytes / 1e6).toFixed(0)} MB)`, ms, lat));
      await Deno.remove(dest);
      const idle = await probe(read, new Promise((r) => setTimeout(r, ms)));
      out.push(row(engine, "no backup (baseline)", ms, idle));
    }
    const dest = `${copies}/v.db`;
    const t = performance.now();
    const vacuum = admin.request(Op.Vacuum, [dest]);
    const lat = await probe(read, vacuum);
    await vacuum.catch((err) => out.push(`| ${engine} | vacuum into: ${err.message} |`));
    out.push(row(engine, "vacuum --into", performance.now() - t, lat));
    await Deno.remove(dest).catch(() => {});
  } finally {
    admin.fail(new Error("done"));
    await admin.ended;
    await Deno.remove(copies, { recursive: true });
  }
  return out;
}

console.log("| engine | during | ms | reads | p50 ms | p99 ms | max ms |");
console.log("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
for (const engine of engines) {
  for (const line of await measure(engine)) console.log(line);
}
