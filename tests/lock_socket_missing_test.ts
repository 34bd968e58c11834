/**
 * The message of a second server when the database's owner's Unix socket
 * file is missing (deleted while the owner runs): it says so, and that the
 * owner makes it again.
 */

import assert from "node:assert/strict";
import { DatabaseLockedError, serve } from "../server.ts";
import { tempDir } from "./_helpers.ts";

Deno.test({
  name: "serve() refused by the lock of a server whose socket file is missing says so",
  ignore: Deno.build.os === "windows",
  async fn() {
    await using dir = await tempDir();
    const database = `${dir.path}/a.db`;
    const gone = `${dir.path}/gone.sock`;
    // The owner: a lock file held (flock) and recording a socket that is not there.
    Deno.writeTextFileSync(
      `${database}.lock`,
      JSON.stringify({ pid: 4242, socket: `unix:${gone}` }),
    );
    using holder = Deno.openSync(`${database}.lock`, { read: true, write: true });
    holder.lockSync(true);
    const err = await serve({ database, path: `${dir.path}/b.sock` }).then(
      () => assert.fail("expected DatabaseLockedError"),
      (e) => e,
    );
    assert.ok(err instanceof DatabaseLockedError, String(err));
    assert.equal(
      err.message,
      `another server owns ${database} (pid 4242, socket unix:${gone}); its socket file is not ` +
        "there: that server is starting, or the file was deleted while it runs (it makes it " +
        "again within a second; a server of an older version needs a restart)",
    );
    // With the socket there, the message is as before.
    const l = Deno.listen({ transport: "unix", path: gone });
    try {
      await assert.rejects(serve({ database, path: `${dir.path}/b.sock` }), {
        message: `another server owns ${database} (pid 4242, socket unix:${gone})`,
      });
    } finally {
      l.close();
    }
    holder.unlockSync();
  },
});
