/**
 * Child process of the concurrent autostart test: connects to a channel,
 * starting its server if none answers, records one row and prints "ok".
 *
 * Usage: deno run -A tests/_autostart_child.ts CHANNEL DATABASE
 */

import { connect } from "../client.ts";

const [channel, database] = Deno.args;
await using db = await connect({ channel, autostart: { database, timeout: 60000 } });
await db.exec("CREATE TABLE IF NOT EXISTS hits (pid INTEGER)");
await db.run("INSERT INTO hits VALUES (?)", [Deno.pid]);
console.log("ok");
