/**
 * Another program writing the database file: holds its write lock
 * (`BEGIN IMMEDIATE` through node:sqlite, in a process of its own) until a
 * line arrives on stdin, then commits and exits.
 *
 * Usage: `deno run -A tests/_lock_holder.ts DATABASE [SQL]`; prints `locked`
 * once it holds the lock (SQL, when given, takes it in place of the
 * `BEGIN IMMEDIATE` and insert).
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";

const db = new DatabaseSync(Deno.args[0]);
db.exec("PRAGMA busy_timeout = 5000");
db.exec(
  Deno.args[1] ??
    "BEGIN IMMEDIATE; CREATE TABLE IF NOT EXISTS other_program (x); " +
      "INSERT INTO other_program VALUES (1)",
);
console.log("locked");
const buf = new Uint8Array(64);
await Deno.stdin.read(buf);
db.exec("COMMIT");
db.close();
