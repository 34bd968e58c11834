/**
 * Test child for tests/misbehave_audit_test.ts: a client process that gets
 * into a given state, prints "ready", and then waits to be SIGKILLed.
 * argv: connect options (JSON), mode.
 *   - `tx-cursor`: BEGIN IMMEDIATE, inserts (1001, 'doomed'), opens a cursor
 *     over `big` inside the transaction and reads 10 rows of it.
 *   - `cursor`: opens a cursor over `big` (outside a transaction) and reads 10 rows.
 *   - `tx-pipeline`: BEGIN IMMEDIATE, inserts (1002, 'doomed'), then sends
 *     2,000 requests for 64 KiB results without waiting for them.
 *   - `pairs:<base>`: loops over `transaction()`s that each insert rows
 *     `k` and `k + 1` (`who` 'pair'), k = base, base + 2, ..., with a pause
 *     between the two; prints "ready" after the first.
 */
import { connect, type ConnectOptions } from "../client.ts";

const [options, mode] = Deno.args;
const db = await connect({ ...JSON.parse(options) as ConnectOptions, max: 1 });
if (mode.startsWith("pairs:")) {
  let k = Number(mode.slice(6));
  for (;;) {
    await db.transaction(async (tx) => {
      await tx.run("INSERT INTO t (id, who) VALUES (?, 'pair')", [k]);
      await new Promise((r) => setTimeout(r, 1));
      await tx.run("INSERT INTO t (id, who) VALUES (?, 'pair')", [k + 1]);
    });
    if (k === Number(mode.slice(6))) console.log("ready");
    k += 2;
  }
}
if (mode === "tx-cursor" || mode === "tx-pipeline") {
  await db.exec("BEGIN IMMEDIATE");
  await db.run("INSERT INTO t (id, who) VALUES (?, 'doomed')", [
    mode === "tx-cursor" ? 1001 : 1002,
  ]);
}
if (mode === "tx-cursor" || mode === "cursor") {
  const it = db.iterate<{ n: number }>("SELECT n, p FROM big ORDER BY n")[Symbol.asyncIterator]();
  for (let i = 0; i < 10; i++) await it.next();
} else if (mode === "tx-pipeline") {
  for (let i = 0; i < 2000; i++) db.values("SELECT zeroblob(65536)").catch(() => {});
}
console.log("ready");
await new Promise(() => {}); // until killed
