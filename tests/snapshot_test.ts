import assert from "node:assert/strict";
import { startServer } from "./_helpers.ts";

Deno.test("Engine reader snapshot: every read sees the latest commit, and checkpoints keep the WAL small", async () => {
  await using srv = await startServer({ synchronous: "normal" });
  await using writer = await srv.client();
  await using reader = await srv.client();
  await writer.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, pad TEXT)");
  const pad = "x".repeat(2000);
  for (let i = 1; i <= 200; i++) {
    await writer.run("INSERT INTO t (id, pad) VALUES (?, ?)", [i, pad]);
    // A reader on the shared snapshot connection sees each commit at once.
    assert.deepEqual(await reader.values("SELECT max(id) FROM t"), [[i]]);
  }
  // Now only writes, after the reader took a snapshot: checkpoints must keep
  // working. 4000 commits of ~2 KB rows would make a ~16 MB WAL without them;
  // SQLite checkpoints every 1000 pages (4 MB).
  for (let i = 201; i <= 4200; i++) {
    await writer.run("INSERT INTO t (id, pad) VALUES (?, ?)", [i, pad]);
  }
  const wal = await Deno.stat(`${srv.database}-wal`);
  assert.ok(wal.size < 8 * 1024 * 1024, `WAL is ${wal.size} bytes`);
  assert.deepEqual(await reader.values("SELECT max(id) FROM t"), [[4200]]);
});
