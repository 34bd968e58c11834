/**
 * Child process of the autostart tests: connects to a channel (or, when the
 * first argument starts with "/" or ".", a socket path), starting its server
 * if none answers, records one row and prints "ok". TIMEOUT is
 * `autostart.timeout` (default 60000 ms); the arguments after it are
 * `autostart.args` (more server flags).
 *
 * Usage: deno run -A tests/_autostart_child.ts CHANNEL|SOCKET DATABASE [TIMEOUT [FLAG...]]
 */

import { connect } from "../client.ts";

const [where, database, timeout = "60000", ...args] = Deno.args;
const place = /^[/.]/.test(where) ? { path: where } : { channel: where };
await using db = await connect({
  ...place,
  autostart: { database, timeout: Number(timeout), args },
});
await db.exec("CREATE TABLE IF NOT EXISTS hits (pid INTEGER)");
await db.run("INSERT INTO hits VALUES (?)", [Deno.pid]);
console.log("ok");
