/**
 * Deno.listen or node:net for the server's sockets? Runs the same echo server
 * on each (separate processes) and measures, from one Deno client, round
 * trips of a 40-byte frame one at a time and with 64 in flight.
 *
 * Run: `deno run -A bench/listen_compare.ts [--seconds 3]`
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const { values } = parseArgs({ args: Deno.args, options: { seconds: { type: "string" } } });
const SECONDS = Number(values.seconds ?? 3);

async function spawnEcho(script: string, path: string): Promise<Deno.ChildProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", fileURLToPath(new URL(script, import.meta.url)), path],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!out.includes("listening")) out += (await reader.read()).value ?? "";
  reader.releaseLock();
  return child;
}

async function measure(path: string, inflight: number): Promise<{ rps: number; p50: number }> {
  const conn = await Deno.connect({ transport: "unix", path });
  const frame = new Uint8Array(44);
  new DataView(frame.buffer).setUint32(0, 40);
  const buf = new Uint8Array(64 * 1024);
  const lat: number[] = [];
  const end = performance.now() + SECONDS * 1000;
  let done = 0;
  const sent: number[] = [];
  for (let i = 0; i < inflight; i++) {
    sent.push(performance.now());
    await conn.write(frame);
  }
  let pending = 0;
  while (performance.now() < end) {
    const n = await conn.read(buf);
    if (n === null) break;
    pending += n;
    while (pending >= 44) {
      pending -= 44;
      done++;
      lat.push(performance.now() - sent.shift()!);
      sent.push(performance.now());
      await conn.write(frame);
    }
  }
  // Drain what is still in flight.
  let left = sent.length * 44 - pending;
  while (left > 0) {
    const n = await conn.read(buf);
    if (n === null) break;
    left -= n;
  }
  conn.close();
  lat.sort((a, b) => a - b);
  return { rps: done / SECONDS, p50: lat[Math.floor(lat.length / 2)] * 1000 };
}

const dir = await Deno.makeTempDir();
const results: string[] = [];
for (
  const [name, script] of [["Deno.listen", "./_echo_server.ts"], [
    "node:net",
    "./_net_echo_server.ts",
  ]]
) {
  const path = `${dir}/${name.replace(/\W/g, "")}.sock`;
  const child = await spawnEcho(script, path);
  await measure(path, 1); // warm-up
  const one = await measure(path, 1);
  const many = await measure(path, 64);
  results.push(
    `| ${name} | ${Math.round(one.rps).toLocaleString("en")} | ${one.p50.toFixed(1)} | ${
      Math.round(many.rps).toLocaleString("en")
    } |`,
  );
  await child.stdin.close();
  await child.status;
  await child.stdout.cancel().catch(() => {});
}
await Deno.remove(dir, { recursive: true });
console.log(
  `echo server, ${SECONDS} s each, Deno ${Deno.version.deno}, ${navigator.hardwareConcurrency} cores`,
);
console.log(
  "| server socket layer | 1 in flight: round trips/s | p50 µs | 64 in flight: round trips/s |",
);
console.log("| --- | ---: | ---: | ---: |");
for (const r of results) console.log(r);
