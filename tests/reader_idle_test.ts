/**
 * The shared reader keeps a read transaction between reads (engine.ts,
 * `#snapshotReader`): it must not hold back another program writing the
 * file once reads stop. Another program here is a process of its own
 * (node:sqlite on the file), as POSIX locks of one process never conflict.
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { delay, startServer } from "./_helpers.ts";
import { READER_IDLE_MS } from "../engine/engine.ts";

const ENGINES = ["ffi", "node"] as const;

/** Runs `script` (JavaScript, `db` open on `database`) in another process; returns what it printed. */
async function otherProgram(database: string, script: string): Promise<string> {
  const code = `import { DatabaseSync } from "node:sqlite";
const db = new DatabaseSync(Deno.args[0]);
const out = (v) => console.log(JSON.stringify(v));
try { ${script} } catch (err) { out({ error: err.message }); }
db.close();`;
  const run = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=js", code, database],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  assert.equal(run.code, 0, text.decode(run.stderr));
  return text.decode(run.stdout).trim();
}

for (const engine of ENGINES) {
  Deno.test(`${engine}: a --readonly server on a rollback-journal database holds no lock between reads`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "netsqlite-test-" });
    const database = `${dir}/ro.db`;
    const seed = new DatabaseSync(database);
    seed.exec("PRAGMA journal_mode = DELETE; CREATE TABLE t (a); INSERT INTO t VALUES (1)");
    seed.close();
    try {
      await using srv = await startServer({ engine, database, readonly: true, logLevel: "error" });
      await using db = await srv.client();
      assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[1]]);
      // Right after the read, with no busy timeout: the write finds no lock
      // (before the fix the reader kept its SHARED lock until its next read,
      // and every other program's commit failed with SQLITE_BUSY).
      const wrote = await otherProgram(
        database,
        `db.exec("PRAGMA busy_timeout = 0; INSERT INTO t VALUES (2)"); out("ok");`,
      );
      assert.equal(wrote, `"ok"`);
      assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[2]]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });

  Deno.test(`${engine}: on a rollback-journal database, a read that meets another program's lock waits for it`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "netsqlite-test-" });
    const database = `${dir}/ro.db`;
    const seed = new DatabaseSync(database);
    seed.exec("PRAGMA journal_mode = DELETE; CREATE TABLE t (a); INSERT INTO t VALUES (1)");
    seed.close();
    try {
      await using srv = await startServer({ engine, database, readonly: true, logLevel: "error" });
      await using db = await srv.client();
      // The other program holds the EXCLUSIVE lock (which keeps readers out
      // of a rollback-journal database) for 400 ms, then commits.
      const code = `import { DatabaseSync } from "node:sqlite";
const db = new DatabaseSync(Deno.args[0]);
db.exec("PRAGMA busy_timeout = 5000; BEGIN EXCLUSIVE; INSERT INTO t VALUES (2)");
console.log("locked");
await new Promise((resolve) => setTimeout(resolve, 400));
db.exec("COMMIT");
db.close();`;
      const child = new Deno.Command(Deno.execPath(), {
        args: ["eval", "--ext=js", code, database],
        stdin: "null",
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      try {
        assert.equal((await lines.read()).value?.trim(), "locked");
        // Before the fix (FFI) the read failed at once: SQLITE_BUSY "database is locked".
        assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[2]]);
      } finally {
        while (!(await lines.read()).done);
        assert.equal((await child.status).code, 0);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });

  Deno.test(`${engine}: the shared reader lets go of its snapshot once reads stop, so another program's checkpoint completes`, async () => {
    await using srv = await startServer({ engine, logLevel: "error" });
    await using db = await srv.client();
    await db.exec("CREATE TABLE t (a)");
    assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[0]]);
    await delay(3 * READER_IDLE_MS + 100);
    // A commit by another program, then its checkpoint: an old snapshot held
    // by the server would stop it short of the commit's frames (and the WAL
    // would grow without bound under that program's writes).
    const result = await otherProgram(
      srv.database,
      `db.exec("PRAGMA busy_timeout = 5000; INSERT INTO t VALUES (randomblob(9000))");
out(db.prepare("PRAGMA wal_checkpoint(PASSIVE)").get());`,
    );
    const { busy, log, checkpointed } = JSON.parse(result);
    assert.equal(busy, 0, result);
    assert.ok(log > 0, result);
    assert.equal(checkpointed, log, result);
    // Reads see that commit as before.
    assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[1]]);
  });
}
