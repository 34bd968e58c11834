/**
 * Another program merely opening the database while the server runs (the
 * sqlite3 shell, a backup script, a node:sqlite reader): the server keeps
 * SQLite's locks on the `-shm` file, so that program never takes itself for
 * the file's first user and rebuilds the `-shm` file under the server's
 * mappings (which crashed the server with SIGBUS). The server runs as a
 * child process, on each engine; Linux only (`/proc/locks`).
 */
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { connect } from "../mod.ts";
import { readStdoutUntil, tempDir } from "./_helpers.ts";

const SERVER = fileURLToPath(new URL("../server.ts", import.meta.url));
const linux = Deno.build.os === "linux";

/** A server process on `db`, answering on `sock`. */
async function serverProcess(
  db: string,
  sock: string,
  engine: "ffi" | "node",
): Promise<{ pid: number; stop(): Promise<Deno.CommandStatus> }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SERVER, "--db", db, "--socket", sock, "--engine", engine],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const { drained } = await readStdoutUntil(child, sock);
  return {
    pid: child.pid,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch {
        // Already gone: its status says how.
      }
      const status = await child.status;
      await drained;
      return status;
    },
  };
}

/** The byte offsets that `pid` holds `fcntl` locks on in the file `path` (from /proc/locks). */
function lockedBytes(pid: number, path: string): number[] {
  const { dev, ino } = Deno.statSync(path);
  const major = Math.floor(dev! / 256), minor = dev! % 256; // Linux's old-style encoding
  const id = `${major.toString(16).padStart(2, "0")}:${minor.toString(16).padStart(2, "0")}:${ino}`;
  const bytes: number[] = [];
  for (const line of Deno.readTextFileSync("/proc/locks").split("\n")) {
    const f = line.trim().split(/\s+/);
    // "1: POSIX  ADVISORY  READ 3242 fe:00:2654863 128 128"
    if (f[1] === "POSIX" && Number(f[4]) === pid && f[5] === id) bytes.push(Number(f[6]));
  }
  return bytes;
}

for (const engine of ["ffi", "node"] as const) {
  Deno.test({
    name: `${engine}: another process opening the database now and then leaves the server serving`,
    ignore: !linux,
    async fn() {
      await using dir = await tempDir();
      const db = `${dir.path}/d.db`, sock = `${dir.path}/s.sock`;
      const server = await serverProcess(db, sock, engine);
      let status: Deno.CommandStatus | undefined;
      try {
        const c = await connect({ path: sock, reconnect: false });
        try {
          await c.exec("CREATE TABLE t (x)");
          await c.run("INSERT INTO t VALUES (1)");
          assert.deepEqual(await c.values("SELECT count(*) FROM t"), [[1]]);
          // SQLite's "DMS" byte of the -shm file (byte 128): held while the server has it open.
          assert.ok(
            lockedBytes(server.pid, `${db}-shm`).includes(128),
            "the server holds its lock on the -shm file after a read",
          );
          // Another program opens, reads and closes the file, again and again, while the server
          // writes and reads.
          const outsider = new Deno.Command(Deno.execPath(), {
            args: [
              "eval",
              `import { DatabaseSync } from "node:sqlite";
               for (let i = 0; i < 40; i++) {
                 const d = new DatabaseSync(${JSON.stringify(db)}, { readOnly: true });
                 d.prepare("SELECT count(*) FROM t").get();
                 d.close();
                 await new Promise((r) => setTimeout(r, 5));
               }`,
            ],
            stdout: "null",
            stderr: "piped",
          }).spawn();
          let n = 1;
          let done = false;
          const outside = outsider.output().finally(() => done = true);
          while (!done) {
            await c.run("INSERT INTO t VALUES (?)", [++n]);
            assert.deepEqual(await c.values("SELECT count(*) FROM t"), [[n]]);
          }
          const out = await outside;
          assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
          assert.ok(lockedBytes(server.pid, `${db}-shm`).includes(128));
          assert.deepEqual(await c.values("PRAGMA integrity_check"), [["ok"]]);
        } finally {
          await c.close();
        }
      } finally {
        status = await server.stop();
      }
      assert.equal(status.signal, null, `the server died of ${status.signal}`);
      assert.equal(status.code, 0);
    },
  });
}
