/**
 * A server whose file size limit (`RLIMIT_FSIZE`, `ulimit -f`) its database
 * reaches: the write past it fails (the server listens for `SIGXFSZ`, whose
 * default action would kill it), the client is told, and the server serves on.
 *
 * The limit is set on the running server (`prlimit --pid`), not inherited
 * from `ulimit -f` before `deno run`: Deno writes its own caches (`DENO_DIR`,
 * megabytes) before any of the server's code runs, and a write of those
 * past the limit would kill the process before it could listen for the signal.
 */
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import { readStdoutUntil, tempDir } from "./_helpers.ts";
import { ENGINE } from "./_logged_server.ts";
import { limitFileSize, PRLIMIT } from "./_file_size.ts";

const SERVER_TS = fileURLToPath(new URL("../server.ts", import.meta.url));

/** The file size limit the server is given, in bytes (2000 blocks of 512 bytes, as `sh`'s `ulimit -f 2000`). */
const LIMIT = 2000 * 512;

Deno.test({
  name: "serve() under a file size limit (ulimit -f): a write past it fails with a disk error, " +
    "the server stays up and earlier rows are intact",
  ignore: Deno.build.os !== "linux" || PRLIMIT === undefined,
  async fn() {
    await using dir = await tempDir();
    const socket = `${dir.path}/s.sock`;
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        SERVER_TS,
        "--db",
        `${dir.path}/a.db`,
        "--socket",
        socket,
        "--engine",
        ENGINE,
      ],
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
    }).spawn();
    let log = "";
    const logged = (async () => {
      for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) log += chunk;
    })();
    let exited = false;
    child.status.then(() => exited = true);
    const { drained } = await readStdoutUntil(child, "serving");
    try {
      await limitFileSize(child.pid, LIMIT);
      await using db = await connect({ path: socket, max: 1 });
      await db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)");
      let acknowledged = 0;
      let failure: (Error & { code?: string }) | null = null;
      // 10 KB a row: the WAL reaches 1 MB within about 100 rows.
      for (let i = 0; i < 1000 && failure === null; i++) {
        try {
          await db.run("INSERT INTO t (v) VALUES (randomblob(10000))");
          acknowledged++;
        } catch (err) {
          failure = err as Error & { code?: string };
        }
      }
      assert.notEqual(failure, null, "no write failed");
      assert.match(failure!.code ?? "", /^SQLITE_(IOERR|FULL)/, failure!.message);
      assert.ok(acknowledged > 10, `only ${acknowledged} rows before the limit`);
      // The server is up, reads (on this connection and a new one) and has every row it acknowledged.
      assert.equal(exited, false, "the server process ended");
      assert.deepEqual(await db.values("SELECT count(*) FROM t"), [[acknowledged]]);
      await using other = await connect({ path: socket, max: 1 });
      assert.deepEqual(await other.values("SELECT count(*) FROM t"), [[acknowledged]]);
      assert.equal(exited, false, "the server process ended");
    } finally {
      child.kill("SIGTERM");
      await child.status;
      await drained;
      await logged;
    }
    assert.match(
      log,
      /warn {2}netsqlite: a write went past the file size limit of 1024000 bytes \(ulimit -f\): it failed \(EFBIG\) instead of stopping the server/,
    );
  },
});
