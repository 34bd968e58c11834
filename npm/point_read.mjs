// Point-read loop for comparing runtimes: `get` of one row by key, 3 rounds of
// 20 000 calls, one client. Usage (a server on SOCKET, e.g. `deno task serve`):
//   deno run -A npm/point_read.mjs SOCKET ../client.ts
//   node npm/point_read.mjs SOCKET            (uses npm/dist/netsqlite.mjs)
//   bun npm/point_read.mjs SOCKET
const [socket, module = "./dist/netsqlite.mjs"] = globalThis.Deno?.args ?? process.argv.slice(2);
const { connect } = await import(new URL(module, import.meta.url).href);
const db = await connect({ path: socket });
await db.exec("CREATE TABLE IF NOT EXISTS point_read (id INTEGER PRIMARY KEY, v TEXT)");
await db.batch(Array.from({ length: 1000 }, (_, i) => ({
  sql: "INSERT OR REPLACE INTO point_read VALUES (?, ?)",
  params: [i, "v" + i],
})));
const N = 20000;
for (let r = 0; r < 3; r++) {
  const t0 = performance.now();
  for (let i = 0; i < N; i++) await db.get("SELECT v FROM point_read WHERE id = ?", [i % 1000]);
  console.log(`round ${r}: ${((performance.now() - t0) * 1000 / N).toFixed(1)} us/call`);
}
await db.close();
