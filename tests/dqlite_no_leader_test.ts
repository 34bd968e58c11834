/**
 * Cluster mode: a server that finds no dqlite leader at start-up fails with
 * `NO_LEADER` saying, per node, why it did not lead (the connection
 * refused, no answer in time), and naming the `dqlite.leaderTimeout`
 * option. No dqlite node is needed: one address refuses connections, the
 * other accepts them and never answers.
 */

import assert from "node:assert/strict";
import { serve } from "../server.ts";
import { SqliteError } from "../protocol/errors.ts";
import { freePorts } from "./_dqlite_nodes.ts";

Deno.test("serve({ dqlite }) with no leader fails with NO_LEADER naming each node's cause and dqlite.leaderTimeout", async () => {
  const dir = await Deno.makeTempDir({ prefix: "netsqlite-noleader-start-" });
  const [refusing] = freePorts(1);
  const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const silentPort = (silent.addr as Deno.NetAddr).port;
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of silent) held.push(conn);
  })();
  try {
    const err = await serve({
      path: `${dir}/s.sock`,
      dqlite: {
        nodes: [`127.0.0.1:${refusing}`, `127.0.0.1:${silentPort}`],
        database: "none",
        leaderTimeout: 600,
      },
    }).then((s) => s.shutdown().then(() => null), (e) => e);
    assert.ok(err instanceof SqliteError, String(err));
    assert.equal(err.code, "NO_LEADER");
    // The silent node's own timer (bounded by the same deadline) and the
    // search's may end first: either wording says it did not answer.
    const prefix =
      `No dqlite leader found among "127.0.0.1:${refusing}", "127.0.0.1:${silentPort}" within ` +
      `leaderTimeout 600 ms (dqlite.leaderTimeout): "127.0.0.1:${refusing}" refused the ` +
      `connection; "127.0.0.1:${silentPort}" `;
    assert.ok(err.message.startsWith(prefix), err.message);
    assert.match(
      err.message.slice(prefix.length),
      /^(had not answered when leaderTimeout ran out|did not answer within \d+ ms)$/,
    );
  } finally {
    silent.close();
    await accepting;
    for (const conn of held) conn.close();
    await Deno.remove(dir, { recursive: true });
  }
});
