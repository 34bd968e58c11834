/**
 * Run by tests/fault_limits_test.ts under a small `ulimit -n`: takes every
 * free descriptor, then opens the database at `Deno.args[0]` with the
 * engine of `NETSQLITE_ENGINE` and prints what the open threw, as JSON.
 */

import { loadSqlite } from "../engine/binding/load.ts";

const path = Deno.args[0];
const sqlite = loadSqlite();
const held: Deno.FsFile[] = [];
try {
  for (;;) held.push(Deno.openSync(path));
} catch {
  // out of descriptors
}
let answer: unknown = { opened: true };
try {
  sqlite.open(path, { readOnly: true, busyTimeout: 100 }).close();
} catch (err) {
  const e = err as Error & { code?: string };
  answer = { code: e.code, message: e.message };
}
for (const f of held) f.close();
console.log(JSON.stringify({ engine: sqlite.engine, held: held.length, ...answer as object }));
