/**
 * Test child for tests/churn_audit_test.ts: a client process that takes a
 * share of everything a server keeps per client, prints "ready", and then
 * keeps working until it is SIGKILLed.
 * argv: connect options (JSON), tag (a number), feeds ("1": also a change feed).
 * Holds: a reserved connection inside a transaction that wrote `log (tag)`;
 * prepared statements never finalized; a cursor over `t` read part way; a
 * key-value list read part way; a change feed on `log` (with feeds "1");
 * then loops reads, and writes that wait behind its own transaction.
 */
import { connect, type ConnectOptions } from "../client.ts";

const [options, tag, feeds] = Deno.args;
const db = await connect({ ...JSON.parse(options) as ConnectOptions, max: 3 });
const r = await db.reserve();
await r.exec("BEGIN IMMEDIATE");
await r.run("INSERT INTO log (x) VALUES (?)", [Number(tag)]);
const kept: unknown[] = [];
for (let i = 0; i < 5; i++) {
  const s = await db.prepare(`SELECT v FROM t WHERE id = ? + ${i}`);
  await s.get([1]);
  kept.push(s);
}
const rows = db.iterate("SELECT * FROM t")[Symbol.asyncIterator]();
await rows.next();
const keys = db.kv("c").list({ prefix: ["k"] })[Symbol.asyncIterator]();
await keys.next();
kept.push(rows, keys);
if (feeds === "1") kept.push(await db.subscribe({ tables: ["log"] }));
console.log("ready");
for (;;) {
  await Promise.all([
    db.get("SELECT count(*) FROM t"),
    // Waits for the writer, which this process's own transaction holds.
    db.run("INSERT INTO log (x) VALUES (?)", [-Number(tag)]).catch(() => {}),
  ]);
}
