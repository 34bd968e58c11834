/**
 * Child process of the autostart tests: connects to a channel (or, when the
 * first argument starts with "/", a socket path), starting its server if none
 * answers, records one row and prints "ok". TIMEOUT is `autostart.timeout`
 * (default 60000 ms).
 *
 * Usage: deno run -A tests/_autostart_child.ts CHANNEL|SOCKET DATABASE [TIMEOUT]
 */

import { connect } from "../client.ts";

const [where, database, timeout = "60000"] = Deno.args;
const place = where.startsWith("/") ? { path: where } : { channel: where };
await using db = await connect({ ...place, autostart: { database, timeout: Number(timeout) } });
await db.exec("CREATE TABLE IF NOT EXISTS hits (pid INTEGER)");
await db.run("INSERT INTO hits VALUES (?)", [Deno.pid]);
console.log("ok");
