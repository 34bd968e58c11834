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
