/**
 * Review of the backup/vacuum naming (engine/maintenance.ts): what a copy
 * finds beside its destination must not stop the server. Real server
 * processes, on both engines.
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { Op } from "../protocol/messages.ts";
import { openTestLink, rowsOf, startServerProcess, tempDir } from "./_helpers.ts";

const ENGINES = ["ffi", "node"] as const;

for (const engine of ENGINES) {
  Deno.test({
    name:
      `${engine}: a FIFO named like a leftover partial copy beside the destination does not hang the server's backup`,
    ignore: Deno.build.os === "windows",
    async fn() {
      await using dir = await tempDir();
      const copies = `${dir.path}/copies`;
      Deno.mkdirSync(copies);
      const db = new DatabaseSync(`${dir.path}/a.db`);
      db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)");
      db.close();
      const fifo = `${copies}/b.db.0123abcd.partial`;
      const made = await new Deno.Command("mkfifo", { args: [fifo] }).output();
      assert.ok(made.success, "mkfifo failed");
      await using server = await startServerProcess({
        dir: dir.path,
        database: `${dir.path}/a.db`,
        args: ["--engine", engine, "--backup-dir", copies],
      });
      await using link = await openTestLink(server.connectOptions);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const hung = new Promise<"hung">((resolve) => {
        timer = setTimeout(() => resolve("hung"), 20_000);
      });
      try {
        const result = await Promise.race([
          link.request(Op.Backup, ["b.db"]).then(() => "done", (err: Error) => String(err)),
          hung,
        ]);
        assert.equal(result, "done");
      } finally {
        clearTimeout(timer);
      }
      assert.deepEqual(rowsOf(`${copies}/b.db`, "SELECT x FROM t"), [[1]]);
    },
  });
}

Deno.test({
  name:
    "a shutdown signal delivered twice while the server starts, 200 ms apart, is one signal (as once serving: 300 ms)",
  ignore: Deno.build.os !== "linux",
  async fn() {
    await using dir = await tempDir();
    const sockets = `${dir.path}/s`;
    Deno.mkdirSync(sockets);
    // The start waits (up to 2 s) for the socket directory's lock, held here.
    using held = await Deno.open(sockets, { read: true });
    await held.lock(true);
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("../server.ts", import.meta.url).pathname,
        "--db",
        `${dir.path}/a.db`,
        "--socket",
        `${sockets}/a.sock`,
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const output = child.output();
    try {
      const waiting = () => {
        try {
          return [...Deno.readDirSync(`/proc/${child.pid}/fd`)].some((e) => {
            try {
              return Deno.readLinkSync(`/proc/${child.pid}/fd/${e.name}`) === sockets;
            } catch {
              return false;
            }
          });
        } catch {
          return false;
        }
      };
      const until = performance.now() + 30_000;
      while (!waiting()) {
        assert.ok(performance.now() < until, "the server never waited for the directory's lock");
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      child.kill("SIGINT");
      await new Promise((resolve) => setTimeout(resolve, 200));
      child.kill("SIGINT");
      await new Promise((resolve) => setTimeout(resolve, 100));
    } finally {
      await held.unlock();
    }
    const { code, stdout, stderr } = await output;
    assert.doesNotMatch(new TextDecoder().decode(stderr), /again: exiting at once/);
    assert.match(new TextDecoder().decode(stdout), /SIGINT while starting/);
    assert.equal(code, 130);
  },
});
