/**
 * A start on a database file this user may not read says so, naming the
 * file, its owner and mode, and what the server needs: run as `nobody`
 * (through `setpriv`) on root's file, as root reads everything. Skipped
 * unless run as root with `setpriv` (no other user to test with).
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { asNobody, canRunAsNobody, tempDir } from "./_helpers.ts";
import { spawnServer } from "./_logged_server.ts";

/** Makes `path` an SQLite database of root's with `mode`. */
function database(path: string, mode: number): string {
  const db = new DatabaseSync(path);
  db.exec("CREATE TABLE t (x)");
  db.close();
  Deno.chmodSync(path, mode);
  return path;
}

for (const readonly of [false, true]) {
  Deno.test({
    name: `serve()${readonly ? " --readonly" : ""} on a database file this user may not read ` +
      "names it, its owner and mode, and what the server needs",
    ignore: !canRunAsNobody,
    async fn() {
      await using dir = await tempDir();
      Deno.chmodSync(dir.path, 0o777);
      const db = database(`${dir.path}/app.db`, 0o600);
      const srv = spawnServer(db, `${dir.path}/s.sock`, readonly ? ["--readonly"] : [], asNobody);
      assert.equal((await srv.child.status).code, 1);
      await srv.done;
      const need = readonly
        ? "read it: make it readable"
        : "read and write it: make it readable and writable";
      assert.ok(
        srv.log().includes(
          `Cannot serve "${db}": this user may not read the database file (owner uid 0, group 0, ` +
            `mode 0600): the server needs to ${need} by this user (chmod or chown), or run the ` +
            "server as its owner",
        ),
        srv.log(),
      );
      // The failed start leaves nothing of its own behind.
      assert.deepEqual([...Deno.readDirSync(dir.path)].map((e) => e.name), ["app.db"]);
    },
  });
}
