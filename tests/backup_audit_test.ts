/**
 * Backups, restores and maintenance as an operator meets them while clients
 * keep working, on both engines: restoring a backup over a database whose
 * server was killed (its `-wal` left beside it).
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { connect } from "../client.ts";
import { serve } from "../server.ts";
import { startServerProcess, tempDir } from "./_helpers.ts";
import { cli } from "./_cli.ts";

const ENGINES = ["ffi", "node"] as const;

function rowsOf(path: string, sql: string): unknown[][] {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    return db.prepare(sql).all().map((r) => Object.values(r as Record<string, unknown>));
  } finally {
    db.close();
  }
}

for (const engine of ENGINES) {
  Deno.test(`${engine}: a backup restored over a database whose server was killed is not mixed with the WAL left beside it`, async () => {
    await using dir = await tempDir();
    const copies = `${dir.path}/copies`;
    await Deno.mkdir(copies);
    const database = `${dir.path}/test.db`;
    const args = ["--engine", engine, "--backup-dir", copies];
    {
      await using first = await startServerProcess({ dir: dir.path, args });
      const db = await connect({ ...first.connectOptions, max: 1 });
      try {
        await db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
        for (let i = 1; i <= 50; i++) await db.run("INSERT INTO t(v) VALUES (?)", [`old${i}`]);
        const socket = (first.connectOptions as { path: string }).path;
        const r = await cli(["backup", "--socket", socket, "snap.db"]);
        assert.equal(r.code, 0, r.stderr);
        // Written after the backup: in the WAL only, when the server is killed.
        await db.exec("DELETE FROM t WHERE id <= 25; CREATE TABLE later(x)");
        for (let i = 1; i <= 50; i++) await db.run("INSERT INTO t(v) VALUES (?)", [`new${i}`]);
      } finally {
        await db.close();
      }
      await first.kill(); // kill -9: the -wal stays, holding those writes
    }
    assert.ok(Deno.statSync(`${database}-wal`).size > 0);
    // Restored as the README says: the server stopped, the file replaced.
    await Deno.copyFile(`${copies}/snap.db`, database);
    const path = `${dir.path}/again.sock`;
    await assert.rejects(serve({ database, path, engine }), (err: Error) => {
      assert.match(err.message, /^Cannot open database ".*\/test\.db": /);
      assert.match(err.message, /a WAL file ".*\/test\.db-wal" of \d+ bytes is beside it/);
      assert.match(err.message, /remove ".*\/test\.db-wal" and ".*\/test\.db-shm"/);
      return true;
    });
    // Nothing was changed: the restored file is the copy, the WAL still there.
    assert.deepEqual(rowsOf(`${copies}/snap.db`, "SELECT count(*) FROM t"), [[50]]);
    assert.ok(Deno.statSync(`${database}-wal`).size > 0);
    // Done as the error says, the server serves exactly the copy.
    await Deno.remove(`${database}-wal`);
    await Deno.remove(`${database}-shm`);
    const server = await serve({ database, path, engine });
    try {
      await using db = await connect({ path, max: 1 });
      assert.deepEqual(await db.values("SELECT count(*), min(v), max(v) FROM t"), [[
        50,
        "old1",
        "old9",
      ]]);
      assert.deepEqual(await db.values("SELECT name FROM sqlite_schema ORDER BY name"), [["t"]]);
      assert.deepEqual(await db.values("PRAGMA integrity_check"), [["ok"]]);
    } finally {
      await server.shutdown();
    }
  });
}
