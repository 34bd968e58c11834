/**
 * Key-value throughput: `deno run -A bench/kv_bench.ts [--synchronous full|normal] [--seconds 2]`.
 *
 * One client (the default pool) against a server in its own process on a
 * Unix socket, one request at a time and 64 in flight, for `put`, `get` and
 * a `list` of 100 entries; each next to the same work written as plain SQL
 * on a table of its own (`kvsql(k TEXT PRIMARY KEY, v BLOB)`), so the cost
 * of the key-value layer (tuple keys, MessagePack, versions) shows. The
 * seeds' claim to compare with: PluresDB, 50k puts/s and 70k gets/s from one
 * client.
 *
 * @module
 */

import { connect } from "../client.ts";
import { startServer } from "./_server.ts";

const args = Deno.args;
const opt = (name: string, dflt: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const synchronous = opt("synchronous", "full") as "full" | "normal";
const seconds = Number(opt("seconds", "2"));
const KEYS = 10_000;

await using server = await startServer({ synchronous, fixtureRows: 0 });
await using db = await connect(server.connectOptions);
await db.exec("CREATE TABLE kvsql (k TEXT PRIMARY KEY, v BLOB)");
const kv = db.kv("bench");
const value = { name: "item-000123-abcdefgh", value: 1.25, n: 123, tags: ["a", "b"] };
const blob = new Uint8Array(48).fill(7);

// Fill both stores so gets and lists find data.
await db.transaction(async (tx) => {
  const t = tx.kv("bench");
  for (let i = 0; i < KEYS; i++) {
    await t.put(["item", i], value);
    await tx.run("INSERT INTO kvsql (k, v) VALUES (?, ?)", [`item/${pad(i)}`, blob]);
  }
});

function pad(i: number): string {
  return i.toString().padStart(6, "0");
}

function rnd(): number {
  return Math.floor(Math.random() * KEYS);
}

type Op = () => Promise<unknown>;

const ops: [string, Op][] = [
  ["kv put", () => kv.put(["item", rnd()], value)],
  [
    "sql upsert",
    () =>
      db.run(
        "INSERT INTO kvsql (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
        [
          `item/${pad(rnd())}`,
          blob,
        ],
      ),
  ],
  ["kv get", () => kv.get(["item", rnd()])],
  ["sql get", () => db.get("SELECT v FROM kvsql WHERE k = ?", [`item/${pad(rnd())}`])],
  ["kv list 100", async () => {
    let n = 0;
    for await (const _ of kv.list({ start: ["item", rnd() % (KEYS - 100)], limit: 100 })) n++;
    return n;
  }],
  [
    "sql list 100",
    () =>
      db.values("SELECT k, v FROM kvsql WHERE k >= ? ORDER BY k LIMIT 100", [
        `item/${pad(rnd() % (KEYS - 100))}`,
      ]),
  ],
];

async function measure(op: Op, inFlight: number): Promise<number> {
  const end = performance.now() + seconds * 1000;
  let done = 0;
  const worker = async () => {
    while (performance.now() < end) {
      await op();
      done++;
    }
  };
  const start = performance.now();
  await Promise.all(Array.from({ length: inFlight }, worker));
  return done / ((performance.now() - start) / 1000);
}

async function run(): Promise<void> {
  console.log(
    `kv_bench: synchronous=${synchronous}, ${seconds} s per figure, ${KEYS} keys, ` +
      `${Deno.build.os}/${Deno.build.arch}, ${navigator.hardwareConcurrency} cores`,
  );
  console.log("| operation | 1 at a time (ops/s) | 64 in flight (ops/s) |");
  console.log("|---|---:|---:|");
  for (const [name, op] of ops) {
    await op(); // warm the statement
    const one = await measure(op, 1);
    const many = await measure(op, 64);
    console.log(`| ${name} | ${Math.round(one)} | ${Math.round(many)} |`);
  }
}

await run();
