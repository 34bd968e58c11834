/**
 * Change feeds, after a review: a replaying feed that waits for room on
 * the server's queue goes on when another connection frees it (no commit
 * needed). The feeds need the FFI engine; checks made before that are
 * tested on both engines.
 */

import assert from "node:assert/strict";
import { openLink } from "../client/connection.ts";
import type { Link } from "../client/link.ts";
import { resolveConnectOptions } from "../client/options.ts";
import { EventKind, Op } from "../protocol/messages.ts";
import { delay, startServer, statsUntil, within } from "./_helpers.ts";
import { frame, Raw } from "./_raw.ts";

const ffi = Deno.env.get("NETSQLITE_ENGINE") !== "node";
const MB = 1024 * 1024;

/** The rowids of the changes `link` receives, by subscription. */
function rowidsOf(link: Link): Map<number, number[]> {
  const seen = new Map<number, number[]>();
  link.onEvent = (payload) => {
    const [sub, kind, data] = payload as [number, number, unknown];
    if (kind !== EventKind.Changes) return;
    const list = seen.get(sub) ?? [];
    for (const c of data as unknown[][]) list.push(Number(c[4]));
    seen.set(sub, list);
  };
  return seen;
}

async function until(what: string, ok: () => boolean, ms = 10_000): Promise<void> {
  const r = await within(
    (async () => {
      while (!ok()) await delay(5);
    })(),
    ms,
  );
  if (r === "timeout") throw new Error(`Timed out waiting for ${what}`);
}

Deno.test({
  name:
    "subscribe({ since }): a replay waiting for the server's queue goes on when another connection frees it, without a commit",
  ignore: !ffi,
  async fn() {
    // Room for 5 queued changes on the whole server.
    await using srv = await startServer({ maxQueuedChanges: 5 });
    const config = await resolveConnectOptions(srv.connectOptions);
    const [w] = await openLink(config);
    const [b] = await openLink(config);
    const raw = await Raw.open((srv.connectOptions as { path: string }).path);
    try {
      await w.request(Op.Exec, ["CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)"]);
      // A subscriber that reads nothing after its reply: its output fills
      // (rows of 1 MiB), then its feed holds the server's 5 queued changes.
      await raw.write(frame([Op.Subscribe, 2, { tables: ["t"], values: true }]));
      const reply = await raw.read(10_000) as [number, number, [number, number]];
      assert.equal(reply[1], 0, JSON.stringify(reply));
      const start = reply[2][1];
      for (let i = 0; i < 16; i++) {
        await w.request(Op.Run, ["INSERT INTO t (b) VALUES (zeroblob(?))", [MB], null]);
      }
      await statsUntil(
        srv.connectOptions,
        (r) => r.feeds?.queuedChanges === 5,
        "the server's queue is full",
      );
      // A feed resumed from before the rows: no room to replay into.
      const seen = rowidsOf(b);
      const [sub] = await b.request(Op.Subscribe, [{ tables: ["t"], since: start }]);
      await delay(300);
      assert.deepEqual(seen.get(sub) ?? [], [], "nothing replayed while the queue is full");
      // The other subscriber goes away, its queue with it: the replay goes on
      // at once, though nothing more is committed.
      await raw[Symbol.asyncDispose]();
      await until("the replay", () => (seen.get(sub)?.length ?? 0) === 16, 5_000);
      assert.deepEqual(seen.get(sub), Array.from({ length: 16 }, (_, i) => i + 1));
    } finally {
      await raw[Symbol.asyncDispose]();
      for (const link of [w, b]) {
        link.fail(new Error("test done"));
        await link.ended;
      }
    }
  },
});
