/**
 * Counts of one in the server's messages and log: `--max-connections 1` is
 * allowed, so its refusal says "1 connection"; a session that was answered
 * one request logs "1 request answered".
 */

import assert from "node:assert/strict";
import { connect, ProtocolError } from "../client.ts";
import { openLink } from "../client/connection.ts";
import { resolveConnectOptions } from "../client/options.ts";
import { Op } from "../protocol/messages.ts";
import { tempDir } from "./_helpers.ts";
import { connectWhenUp, spawnServer, stop, until } from "./_logged_server.ts";

Deno.test("server.ts --max-connections 1 refuses a second connection with '1 connection'; a session answered once logs '1 request answered'", async () => {
  await using dir = await tempDir();
  const sock = `${dir.path}/s.sock`;
  const srv = spawnServer(`${dir.path}/a.db`, sock, [
    "--max-connections",
    "1",
    "--log-level",
    "info",
  ]);
  try {
    const first = await connectWhenUp(sock, srv.child);
    await first.close();
    // The server learns of the close when it reads the end of that connection.
    assert.ok(await until(() => /disconnect: session 1 /.test(srv.log())), srv.log());

    // One request answered on a session of its own (the hello is not one).
    const [link] = await openLink(await resolveConnectOptions({ path: sock }));
    try {
      await link.request(Op.Exec, ["SELECT 1"]);
      await assert.rejects(connect({ path: sock, max: 1 }), (err: unknown) => {
        assert.ok(err instanceof ProtocolError, String(err));
        assert.equal(err.code, "TOO_MANY_CONNECTIONS");
        assert.equal(
          err.message,
          `Cannot start session on unix:${sock}: the server already serves 1 connection ` +
            "(--max-connections); close some, or raise the limit",
        );
        return true;
      });
    } finally {
      link.fail(new Error("test done"));
      await link.ended;
    }
    assert.ok(await until(() => /disconnect: session 2 /.test(srv.log())), srv.log());
  } finally {
    await stop(srv);
  }
  const log = srv.log();
  assert.match(
    log,
    / warn {2}netsqlite: refused 1 connection: 1 connection open \(--max-connections 1\)\n/,
  );
  assert.match(log, / info {2}netsqlite: disconnect: session 2 \(.*\), 1 request answered\n/);
  assert.doesNotMatch(log, /\b1 (connections|requests)\b/);
});
