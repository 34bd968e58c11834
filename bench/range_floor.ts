/**
 * What bounds the 100-row read ratio: one run, alternating rounds, of
 * - the in-process 100-row read (node:sqlite, the ratio's denominator),
 * - a raw socket round trip whose reply is as long as a netsqlite 100-row
 *   reply (a 44-byte request, a reply of `--reply-bytes`),
 * - the same round trip with the reply sent after `--think` µs of busy
 *   work, which shows whether a peer's think time costs extra on this
 *   machine (it would if waking an idle CPU got dearer),
 * - netsqlite's 100-row read, one at a time over the Unix socket.
 *
 * `deno run -A bench/range_floor.ts [--rounds 3] [--count 3000] [--think 40]`
 *
 * The reply servers are this script run with `--serve PATH BYTES THINK_US`.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { DatabaseSync } from "node:sqlite";
import { connect } from "../client.ts";
import { MsgpackWriter } from "../protocol/msgpack.ts";
import { randomRangeStart, SQL, startServer, writeFixture } from "./_server.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    rounds: { type: "string", default: "3" },
    count: { type: "string", default: "3000" },
    think: { type: "string", default: "40" },
    serve: { type: "string" },
  },
  allowPositionals: true,
  strict: false,
});

if (typeof flags.serve === "string") {
  await serveReplies(flags.serve, Number(Deno.args.at(-2)), Number(Deno.args.at(-1)));
} else {
  await main(Number(flags.rounds), Number(flags.count), Number(flags.think));
}

/** Answers every read with `bytes` bytes, after `thinkUs` µs of busy work. */
async function serveReplies(path: string, bytes: number, thinkUs: number): Promise<void> {
  const reply = new Uint8Array(bytes).fill(0x61);
  const listener = Deno.listen({ transport: "unix", path });
  console.log("ready");
  for await (const conn of listener) {
    (async () => {
      const buf = new Uint8Array(64 * 1024);
      try {
        while ((await conn.read(buf)) !== null) {
          const until = performance.now() + thinkUs / 1000;
          while (performance.now() < until) { /* think */ }
          await conn.write(reply);
        }
      } catch { /* client gone */ }
    })();
  }
}

async function main(rounds: number, count: number, thinkUs: number): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-floor-" });
  const database = `${dir}/fixture.db`;
  writeFixture(database);
  const local = new DatabaseSync(database, { readOnly: true });
  const range = local.prepare(SQL.range100);
  const replyBytes = replySize(range.all(1) as Record<string, unknown>[]);

  const children: Deno.ChildProcess[] = [];
  const replyServer = async (name: string, think: number) => {
    const path = `${dir}/${name}.sock`;
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        import.meta.filename!,
        "--serve",
        path,
        String(replyBytes),
        String(think),
      ],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    children.push(child);
    const reader = child.stdout.getReader();
    await reader.read(); // "ready"
    reader.releaseLock();
    return path;
  };
  const plain = await replyServer("reply", 0);
  const thinking = await replyServer("think", thinkUs);
  await using server = await startServer();
  await using db = await connect(server.connectOptions);

  const inproc = () => timeEach(count, () => range.all(randomRangeStart()));
  const netsqlite = () => timeEachAsync(count, () => db.query(SQL.range100, [randomRangeStart()]));
  const rows: number[][] = [];
  try {
    for (let r = 0; r < rounds; r++) {
      rows.push([
        inproc(),
        await roundTrips(plain, count, replyBytes),
        await roundTrips(thinking, count, replyBytes),
        await netsqlite(),
      ]);
    }
  } finally {
    for (const c of children) {
      c.kill("SIGTERM");
      await c.status;
    }
    local.close();
  }
  const us = (v: number) => v.toFixed(1).padStart(7);
  console.log(
    `100-row read, ${count} per measurement, reply ${replyBytes} bytes, think ${thinkUs} µs ` +
      `(${Deno.build.os}, ${navigator.hardwareConcurrency} cores)\n`,
  );
  console.log(
    "round | in-process µs | round trip µs | + think µs | netsqlite µs | 2 × in-process − round trip µs | netsqlite / in-process",
  );
  rows.forEach(([ip, rt, th, ns], i) =>
    console.log(
      `${String(i + 1).padStart(5)} | ${us(ip)} | ${us(rt)} | ${us(th)} | ${us(ns)} | ${
        us(2 * ip - rt)
      } | ${(ip / ns).toFixed(2)}×`,
    )
  );
  await Deno.remove(dir, { recursive: true });
}

/** MessagePack bytes of the rows as arrays: about the server's reply. */
function replySize(rows: Record<string, unknown>[]): number {
  const w = new MsgpackWriter(8192);
  w.write(rows.map((row) => Object.values(row)));
  return 4 + w.pos + 16;
}

function timeEach(n: number, fn: () => unknown): number {
  for (let i = 0; i < 200; i++) fn();
  const t = performance.now();
  for (let i = 0; i < n; i++) fn();
  return (performance.now() - t) * 1000 / n;
}

async function timeEachAsync(n: number, fn: () => Promise<unknown>): Promise<number> {
  for (let i = 0; i < 200; i++) await fn();
  const t = performance.now();
  for (let i = 0; i < n; i++) await fn();
  return (performance.now() - t) * 1000 / n;
}

/** µs per round trip: a 44-byte request, then `expect` bytes of reply. */
async function roundTrips(path: string, n: number, expect: number): Promise<number> {
  const conn = await Deno.connect({ transport: "unix", path });
  const request = new Uint8Array(44);
  const buf = new Uint8Array(64 * 1024);
  const once = async () => {
    await conn.write(request);
    for (let got = 0; got < expect;) got += (await conn.read(buf)) ?? expect;
  };
  try {
    return await timeEachAsync(n, once);
  } finally {
    conn.close();
  }
}
