/**
 * Child of memory_test.ts: a 30 MB block allocated, written and freed on a
 * worker thread (a nonblocking FFI call, as a background SQLite step
 * allocates), twice, then `malloc_trim(0)` as a release runs it. Prints the
 * growth of RSS over the second round, in KiB, as JSON. `tuned` makes a
 * MemoryReleaser first (which fixes glibc's thresholds); `plain` does not.
 *
 * Run: deno run -A tests/_arena_child.ts tuned|plain (reading /proc/self needs -A)
 */

import { MemoryReleaser } from "../server/memory.ts";

const SIZE = 30_000_000;
const releaser = new MemoryReleaser({ enabled: Deno.args[0] === "tuned" });
const libc = Deno.dlopen("libc.so.6", {
  malloc: { parameters: ["usize"], result: "pointer", nonblocking: true },
  memset: { parameters: ["pointer", "i32", "usize"], result: "pointer", nonblocking: true },
  free: { parameters: ["pointer"], result: "void", nonblocking: true },
  malloc_trim: { parameters: ["usize"], result: "i32" },
});

function rssKiB(): number {
  return Number(/VmRSS:\s+(\d+)/.exec(Deno.readTextFileSync("/proc/self/status"))![1]);
}

async function round(): Promise<void> {
  const p = await libc.symbols.malloc(BigInt(SIZE));
  if (p === null) throw new Error("malloc failed");
  await libc.symbols.memset(p, 1, BigInt(SIZE)); // resident
  await libc.symbols.free(p);
}

// The first block is mapped on its own (above glibc's starting threshold);
// freeing it raises glibc's moving threshold, so the next one comes from
// the worker thread's arena, unless the thresholds were fixed.
await round();
libc.symbols.malloc_trim(0n);
const before = rssKiB();
await round();
libc.symbols.malloc_trim(0n);
const growth = rssKiB() - before;
console.log(
  JSON.stringify({ growthKiB: growth, mmapThreshold: releaser.snapshot().mmapThreshold }),
);
await releaser.close();
libc.close();
