/**
 * A server whose Unix socket file is deleted while it runs (by hand, or by a
 * cleaner of `/tmp`) makes it again within about a second, so that new
 * clients can connect; another file put in its place is left alone.
 */

import assert from "node:assert/strict";
import { connect } from "../client.ts";
import { serve } from "../server.ts";
import { delay, tempDir } from "./_helpers.ts";

/** Connects to `path` within `ms`, trying every 50 ms; returns how long it took. */
async function connectWithin(path: string, ms: number): Promise<number> {
  const start = performance.now();
  for (;;) {
    try {
      await using db = await connect({ path, max: 1 });
      assert.deepEqual(await db.values("SELECT 1"), [[1]]);
      return performance.now() - start;
    } catch (err) {
      if (performance.now() - start > ms) throw err;
      await delay(50);
    }
  }
}

Deno.test({
  name: "serve() makes its Unix socket again when the file is deleted while it runs",
  ignore: Deno.build.os === "windows",
  async fn() {
    await using dir = await tempDir();
    const sock = `${dir.path}/s.sock`;
    await using _server = await serve({ database: `${dir.path}/a.db`, path: sock });
    await using before = await connect({ path: sock, max: 1 });
    await before.exec("CREATE TABLE t (x)");
    const first = Deno.lstatSync(sock).ino;
    Deno.removeSync(sock);
    // Within a check (1 s) and a generous margin for a loaded machine.
    const took = await connectWithin(sock, 10_000);
    assert.ok(took < 10_000, `took ${took} ms`);
    const again = Deno.lstatSync(sock);
    assert.ok(again.isSocket);
    assert.notEqual(again.ino, first);
    assert.equal((again.mode ?? 0) & 0o777, 0o600);
    // The connection made before goes on, and a new one sees its writes.
    await before.run("INSERT INTO t VALUES (1)");
    await using after = await connect({ path: sock, max: 1 });
    assert.deepEqual(await after.values("SELECT x FROM t"), [[1]]);
    // Deleted twice: made again twice.
    Deno.removeSync(sock);
    await connectWithin(sock, 10_000);
    assert.deepEqual(
      [...Deno.readDirSync(dir.path)].map((e) => e.name).filter((n) => n.endsWith(".tmp")).length,
      1,
      "one private directory",
    );
  },
});

Deno.test({
  name: "serve() leaves another file put in place of its deleted Unix socket",
  ignore: Deno.build.os === "windows",
  async fn() {
    await using dir = await tempDir();
    const sock = `${dir.path}/s.sock`;
    const server = await serve({ database: `${dir.path}/a.db`, path: sock });
    Deno.removeSync(sock);
    Deno.writeTextFileSync(sock, "not a socket");
    await delay(2500); // two checks at least
    assert.equal(Deno.readTextFileSync(sock), "not a socket");
    await server.shutdown();
    assert.equal(Deno.readTextFileSync(sock), "not a socket", "the shutdown removed it");
  },
});
