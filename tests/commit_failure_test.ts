/**
 * A COMMIT that fails and makes SQLite roll the transaction back (a full
 * disk, an I/O error), met through a server process whose file size is
 * limited (`ulimit -f`, set with `prlimit`: see `_file_size.ts`): the write of the transaction's pages at COMMIT
 * fails with SQLITE_IOERR_WRITE.
 */
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import { readStdoutUntil, tempDir } from "./_helpers.ts";
import { limitFileSize, PRLIMIT } from "./_file_size.ts";

const SERVER_TS = fileURLToPath(new URL("../server.ts", import.meta.url));

Deno.test({
  name:
    "A COMMIT failed by a write error ends the transaction: the client is told, and its connection goes on",
  ignore: Deno.build.os !== "linux" || PRLIMIT === undefined,
  async fn() {
    await using dir = await tempDir();
    const socket = `${dir.path}/s.sock`;
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", SERVER_TS, "--db", `${dir.path}/a.db`, "--socket", socket],
      stdout: "piped",
      stderr: "null",
      stdin: "null",
    }).spawn();
    const { drained } = await readStdoutUntil(child, "serving");
    try {
      // 100 KiB: the server takes SIGXFSZ, so a write past it fails (EFBIG).
      await limitFileSize(child.pid, 100 * 1024);
      await using db = await connect({ path: socket, max: 1 });
      await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)");
      await db.run("INSERT INTO t VALUES (1, 'small')");
      // 200 KB of pages, written to the WAL at COMMIT: past the 100 KiB limit.
      await assert.rejects(
        db.transaction(async (tx) => {
          await tx.run("INSERT INTO t VALUES (2, randomblob(200000))");
        }),
        (err: Error & { code?: string }) => {
          assert.equal(err.code, "SQLITE_IOERR_WRITE");
          assert.match(
            err.message,
            /; the transaction was rolled back at COMMIT, nothing of it was written: retry the whole transaction$/,
          );
          return true;
        },
      );
      assert.equal(db.inTransaction, false);
      // The same connection reads and writes on.
      assert.deepEqual(await db.values("SELECT id FROM t"), [[1]]);
      await db.run("INSERT INTO t VALUES (3, 'small')");
      assert.deepEqual(await db.values("SELECT id FROM t"), [[1], [3]]);
      // A raw COMMIT failing the same way: the ROLLBACK sent after it is a no-op.
      await db.exec("BEGIN");
      await db.run("INSERT INTO t VALUES (4, randomblob(200000))");
      await assert.rejects(db.exec("COMMIT"), { code: "SQLITE_IOERR_WRITE" });
      assert.equal(db.inTransaction, false);
      await db.exec("ROLLBACK");
      assert.deepEqual(await db.values("SELECT id FROM t"), [[1], [3]]);
    } finally {
      child.kill("SIGKILL");
      await child.status;
      await drained;
    }
  },
});
