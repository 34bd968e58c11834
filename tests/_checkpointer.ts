/**
 * Another program checkpointing the database: runs `PRAGMA
 * wal_checkpoint(FULL)` through node:sqlite, in a process of its own, with a
 * busy timeout of 5 s. A reader on an older snapshot keeps it waiting, and
 * it holds SQLite's checkpoint lock while it waits.
 *
 * Usage: `deno run -A tests/_checkpointer.ts DATABASE`; prints `checkpointing`
 * as it starts, then its result (`busy log checkpointed`) when done.
 *
 * @module
 */

import { DatabaseSync } from "node:sqlite";

const db = new DatabaseSync(Deno.args[0]);
db.exec("PRAGMA busy_timeout = 5000");
console.log("checkpointing");
const row = db.prepare("PRAGMA wal_checkpoint(FULL)").get() as Record<string, number>;
console.log(`${row.busy} ${row.log} ${row.checkpointed}`);
db.close();
