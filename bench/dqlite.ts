/**
 * Latency of the dqlite client against a three-node `dqlite-demo` cluster on
 * loopback: point read, durable write (autocommit, one Raft commit each),
 * range-100, and leader failover (time to a new leader and to the first
 * acknowledged write after SIGKILL of the leader). Then the same three
 * operations through netsqlite: cluster mode (`serve({ dqlite })`), the
 * single-file engine (`serve({ database })`, synchronous FULL), both
 * in-process on a Unix socket with one client, and the `dqlite` shell's own
 * figures (statements piped to one `dqlite` process: the time of 1001
 * statements minus that of 1, per statement; its printing included).
 *
 * Run: `deno run -A bench/dqlite.ts [--failovers N]` (needs `dqlite-demo`:
 * `apt-get install go-dqlite libdqlite0`).
 *
 * @module
 */

import { DqliteCluster } from "../engine/dqlite/cluster.ts";
import { type Client, connect } from "../client.ts";
import { serve } from "../server.ts";
import { DemoCluster, DQLITE_DEMO } from "../tests/_dqlite_nodes.ts";

if (DQLITE_DEMO === null) {
  console.log("dqlite-demo not found on PATH: apt-get install go-dqlite libdqlite0");
  Deno.exit(0);
}

const failovers = Number(Deno.args[Deno.args.indexOf("--failovers") + 1] ?? 3) || 3;
const ROWS = 10_000;

function stats(name: string, samples: number[]): void {
  samples.sort((a, b) => a - b);
  const at = (q: number): number =>
    samples[Math.min(samples.length - 1, Math.floor(q * samples.length))];
  const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
  console.log(
    `${name.padEnd(34)} n=${String(samples.length).padStart(5)}  mean ${fmt(mean)}  p50 ${
      fmt(at(0.5))
    }  p99 ${fmt(at(0.99))}  ${(1000 / mean).toFixed(0).padStart(6)} ops/s`,
  );
}

function fmt(ms: number): string {
  return ms < 1 ? `${(ms * 1000).toFixed(0).padStart(5)} µs` : `${ms.toFixed(2).padStart(6)} ms`;
}

async function time(n: number, fn: (i: number) => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await fn(i);
    out.push(performance.now() - t0);
  }
  return out;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

await using nodes = await DemoCluster.start(3);
const cluster = new DqliteCluster(nodes.addresses, { leaderTimeout: 20_000 });
try {
  const db = await cluster.open("bench");
  await db.exec("CREATE TABLE kv(id INTEGER PRIMARY KEY, v TEXT NOT NULL)");
  await db.exec("BEGIN");
  const fill = await db.prepare("INSERT INTO kv VALUES (?, ?)");
  for (let i = 1; i <= ROWS; i++) await fill.exec([i, `value ${i} ${"x".repeat(40)}`]);
  await fill.finalize();
  await db.exec("COMMIT");
  const rnd = (): number => 1 + Math.floor(Math.random() * ROWS);

  console.log(`dqlite ${nodes.addresses.join(", ")} — ${ROWS} rows, leader ${db.address}`);
  await time(200, () => db.query("SELECT v FROM kv WHERE id = ?", [rnd()])); // warm-up
  stats(
    "point read (query, SQL text)",
    await time(3000, () => db.query("SELECT v FROM kv WHERE id = ?", [rnd()])),
  );
  const point = await db.prepare("SELECT v FROM kv WHERE id = ?");
  stats("point read (prepared)", await time(3000, () => point.query([rnd()])));
  const range = await db.prepare("SELECT id, v FROM kv WHERE id >= ? ORDER BY id LIMIT 100");
  stats(
    "range-100 (prepared)",
    await time(1000, () => range.query([1 + Math.floor(Math.random() * (ROWS - 100))])),
  );
  const upd = await db.prepare("UPDATE kv SET v = ? WHERE id = ?");
  stats("durable write (UPDATE, autocommit)", await time(1000, (i) => upd.exec([`w${i}`, rnd()])));
  stats(
    "durable write (INSERT, autocommit)",
    await time(1000, (i) => db.exec("INSERT INTO kv(id, v) VALUES (?, ?)", [ROWS + 1 + i, "n"])),
  );
  stats(
    "100 UPDATEs in one transaction",
    await time(50, async (j) => {
      await db.exec("BEGIN");
      for (let i = 0; i < 100; i++) await upd.exec([`t${j}.${i}`, rnd()]);
      await db.exec("COMMIT");
    }),
  );
  db.close();

  console.log("\nthrough netsqlite (one client, Unix socket, server in-process):");
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-bench-" });
  try {
    {
      await using server = await serve({
        path: `${dir}/c.sock`,
        dqlite: { nodes: nodes.addresses, database: "bench" },
      });
      await using client = await connect({ path: `${dir}/c.sock`, max: 1 });
      await netsqliteOps("cluster mode", client, rnd);
      await server.shutdown();
    }
    {
      await using server = await serve({ path: `${dir}/f.sock`, database: `${dir}/bench.db` });
      await using client = await connect({ path: `${dir}/f.sock`, max: 1 });
      await client.exec("CREATE TABLE kv(id INTEGER PRIMARY KEY, v TEXT NOT NULL)");
      await client.transaction(async (tx) => {
        for (let i = 1; i <= ROWS; i++) {
          await tx.run("INSERT INTO kv VALUES (?, ?)", [i, `value ${i} ${"x".repeat(40)}`]);
        }
      });
      await netsqliteOps("single file", client, rnd);
      await server.shutdown();
    }
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  console.log("\nthe dqlite shell (statements piped to one process):");
  await shellOps(nodes.addresses, rnd);

  const elected: number[] = [];
  const resumed: number[] = [];
  for (let k = 0; k < failovers; k++) {
    const writer = await cluster.open("bench");
    const leader = writer.address!;
    const idx = nodes.indexOf(leader);
    await nodes.kill(idx);
    const t0 = performance.now();
    const survivors = new DqliteCluster(nodes.addresses.filter((a) => a !== leader), {
      leaderTimeout: 100,
      connectTimeout: 200,
    });
    const election = (async () => {
      for (;;) {
        try {
          await survivors.leader();
          return performance.now() - t0;
        } catch {
          await sleep(20);
        }
      }
    })();
    let n = 0;
    for (;;) {
      try {
        await writer.exec("UPDATE kv SET v = ? WHERE id = ?", [`f${k}.${n++}`, rnd()]);
        break;
      } catch {
        await sleep(20);
      }
    }
    resumed.push(performance.now() - t0);
    elected.push(await election);
    writer.close();
    nodes.restart(idx);
    await nodes.waitVoters(3);
    await sleep(2000);
  }
  console.log(
    `failover (SIGKILL of the leader, ${failovers}x): new leader after ${
      elected.map((x) => x.toFixed(0)).join(", ")
    } ms; first acknowledged write after ${resumed.map((x) => x.toFixed(0)).join(", ")} ms`,
  );
} finally {
  cluster.close();
}

/** Point read, range-100 and durable write through a netsqlite client. */
async function netsqliteOps(label: string, client: Client, rnd: () => number): Promise<void> {
  const point = await client.prepare("SELECT v FROM kv WHERE id = ?");
  const range = await client.prepare("SELECT id, v FROM kv WHERE id >= ? ORDER BY id LIMIT 100");
  const upd = await client.prepare("UPDATE kv SET v = ? WHERE id = ?");
  await time(200, () => point.get([rnd()])); // warm-up
  stats(`${label}: point read`, await time(3000, () => point.get([rnd()])));
  stats(
    `${label}: range-100`,
    await time(1000, () => range.all([1 + Math.floor(Math.random() * (ROWS - 100))])),
  );
  stats(`${label}: durable write (UPDATE)`, await time(1000, (i) => upd.run([`n${i}`, rnd()])));
}

/** Per-statement time of the `dqlite` shell: 1001 statements piped in, minus 1. */
async function shellOps(addresses: string[], rnd: () => number): Promise<void> {
  const run = async (lines: string[]): Promise<number> => {
    const t0 = performance.now();
    const child = new Deno.Command("dqlite", {
      args: ["-s", addresses.join(","), "bench"],
      stdin: "piped",
      stdout: "null",
      stderr: "null",
    }).spawn();
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(lines.join("\n") + "\n"));
    await w.close();
    await child.status;
    return performance.now() - t0;
  };
  const ops: [string, (i: number) => string][] = [
    ["point read", () => `SELECT v FROM kv WHERE id = ${rnd()};`],
    [
      "range-100",
      () =>
        `SELECT id, v FROM kv WHERE id >= ${1 + Math.floor(Math.random() * (ROWS - 100))} ` +
        "ORDER BY id LIMIT 100;",
    ],
    ["durable write (UPDATE)", (i) => `UPDATE kv SET v = 's${i}' WHERE id = ${rnd()};`],
  ];
  for (const [name, line] of ops) {
    const one = Math.min(await run([line(0)]), await run([line(0)]));
    const many = await run(Array.from({ length: 1001 }, (_, i) => line(i)));
    const per = (many - one) / 1000;
    console.log(
      `${`dqlite shell: ${name}`.padEnd(34)} mean ${fmt(per)}  ${(1000 / per).toFixed(0)} ops/s`,
    );
  }
}
