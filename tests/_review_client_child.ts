/**
 * Child of review_client_test.ts (run with `--expose-gc`): calls given up by
 * their signal while they wait for a connection of the pool (its one
 * connection reserved; no acquireTimeout) each with a parameter of 1 MiB,
 * by SQL and through a prepared statement. Prints, as JSON, how much
 * `ArrayBuffer` memory (`Deno.memoryUsage().external`, in MiB) stayed held
 * while they still waited, and after the connection was released.
 *
 * Run: deno run -A --v8-flags=--expose-gc tests/_review_client_child.ts
 */

import { connect } from "../client.ts";
import { serve } from "../server.ts";

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error("run with --v8-flags=--expose-gc");

async function external(): Promise<number> {
  for (let i = 0; i < 3; i++) {
    gc!();
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return Deno.memoryUsage().external / 2 ** 20;
}

const dir = await Deno.makeTempDir();
const server = await serve({ database: `${dir}/a.db`, path: `${dir}/a.sock` });
const db = await connect({ path: `${dir}/a.sock`, max: 1 });
const stmt = await db.prepare("SELECT length(?)");
const reserved = await db.reserve();
const base = await external();
for (let i = 0; i < 100; i++) {
  const controller = new AbortController();
  const { signal } = controller;
  const blob = new Uint8Array(1 << 20);
  const calls = [
    db.query("SELECT length(?)", [blob], { signal }),
    stmt.all([blob], { signal }),
  ].map((p) => p.catch(() => {}));
  controller.abort();
  await Promise.all(calls);
}
const waiting = await external() - base;
reserved.release();
await db.values("SELECT 1");
const released = await external() - base;
await stmt.finalize();
await db.close();
await server.shutdown();
await Deno.remove(dir, { recursive: true });
console.log(JSON.stringify({ waiting: Math.round(waiting), released: Math.round(released) }));
