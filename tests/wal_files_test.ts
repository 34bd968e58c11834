/**
 * The `-wal` and `-shm` files under the server's feet: removed while it
 * serves, writes are refused with DATABASE_MOVED (never acknowledged into a
 * WAL nobody else sees), the commits of a removed WAL are checkpointed into
 * the database at once (they survive `kill -9`), another program's commits
 * beside a removed `-shm` are kept (no checkpoint at shutdown by the server's
 * stale index), and reads are refused once another program opened the
 * database. And no false alarm through everything that legitimately
 * truncates, resets or recreates those files. Real servers as child
 * processes (their log is checked), on the engine of `NETSQLITE_ENGINE`.
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { openLink } from "../client/connection.ts";
import { resolveConnectOptions } from "../client/options.ts";
import { Op } from "../protocol/messages.ts";
import { WalWatch } from "../engine/wal_watch.ts";
import { delay, startServer, tempDir } from "./_helpers.ts";
import { connectWhenUp, rejects, spawnServer, stop, until } from "./_logged_server.ts";

/** Rows of `sql` read directly from the file, after the server is gone; with integrity_check. */
function direct(db: string, sql: string): { rows: unknown[][]; integrity: string } {
  const d = new DatabaseSync(db);
  try {
    const rows = d.prepare(sql).all().map((r) => Object.values(r as Record<string, unknown>));
    const integrity = String(Object.values(d.prepare("PRAGMA integrity_check").get()!)[0]);
    return { rows, integrity };
  } finally {
    d.close();
  }
}

/** Error lines (and warnings) of a server log. */
function complaints(log: string): string[] {
  return log.split("\n").filter((l) => / (error|warn) /.test(l));
}

Deno.test("A -wal file removed while served: writes answer DATABASE_MOVED, the WAL's commits are checkpointed at once and survive kill -9", async () => {
  await using dir = await tempDir();
  const db = `${dir.path}/a.db`, sock = `${dir.path}/a.sock`;
  const srv = spawnServer(db, sock);
  const c = await connectWhenUp(sock, srv.child);
  try {
    await c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, tag TEXT)");
    for (let i = 0; i < 20; i++) await c.run("INSERT INTO t (tag) VALUES (?)", [`pre${i}`]);
    assert.ok(Deno.statSync(`${db}-wal`).size > 0, "the rows are in the WAL only");
    Deno.removeSync(`${db}-wal`);
    const err = await rejects(c.run("INSERT INTO t (tag) VALUES ('after')"));
    assert.equal(err.code, "DATABASE_MOVED");
    assert.equal(
      err.message,
      `WAL file "${db}-wal" of "${db}" was removed or renamed while the server was serving it ` +
        "(nothing was written); the server refuses writes from now on (reads go on): stop it " +
        "with SIGTERM (its shutdown checkpoints the WAL it still holds into the database; kill " +
        "-9 would lose what is not checkpointed yet) and restart it",
    );
    assert.equal((await rejects(c.exec("BEGIN"))).code, "DATABASE_MOVED");
    assert.deepEqual(await c.get("SELECT count(*) AS n FROM t"), { n: 20 }, "reads go on");
    assert.ok(
      await until(() => /checkpointed the \d+ frames of the removed WAL/.test(srv.log())),
      srv.log(),
    );
  } finally {
    await c.close();
  }
  assert.equal(await stop(srv, "SIGKILL"), 137);
  const lines = complaints(srv.log());
  assert.match(
    lines[0],
    new RegExp(
      ` error .*WAL file "${db}-wal" was removed or renamed while the server was serving it: ` +
        "writes are refused from now on",
    ),
  );
  assert.match(lines[1], / warn .*every write acknowledged before is in the database file/);
  assert.equal(lines.length, 2, srv.log());
  const after = direct(db, "SELECT tag FROM t ORDER BY id");
  assert.equal(after.integrity, "ok");
  assert.deepEqual(after.rows, Array.from({ length: 20 }, (_, i) => [`pre${i}`]));
});

Deno.test("A -wal file removed inside a transaction: its COMMIT is answered DATABASE_MOVED, and the shutdown keeps its row", async () => {
  await using dir = await tempDir();
  const db = `${dir.path}/a.db`, sock = `${dir.path}/a.sock`;
  const srv = spawnServer(db, sock);
  const c = await connectWhenUp(sock, srv.child);
  try {
    await c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)");
    await c.exec("BEGIN");
    await c.run("INSERT INTO t VALUES (1)");
    Deno.removeSync(`${db}-wal`);
    const err = await rejects(c.exec("COMMIT"));
    assert.equal(err.code, "DATABASE_MOVED");
    assert.match(err.message, /noticed after this request ran: its commit went into that WAL/);
  } finally {
    await c.close();
  }
  assert.equal(await stop(srv), 0);
  assert.deepEqual(direct(db, "SELECT id FROM t"), { rows: [[1]], integrity: "ok" });
});

Deno.test("A -wal file removed, then another program writes into a new one: the server refuses reads too, and every committed row is kept", async () => {
  await using dir = await tempDir();
  const db = `${dir.path}/a.db`, sock = `${dir.path}/a.sock`;
  const srv = spawnServer(db, sock);
  const c = await connectWhenUp(sock, srv.child);
  try {
    await c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, tag TEXT)");
    for (let i = 0; i < 20; i++) await c.run("INSERT INTO t (tag) VALUES (?)", [`s${i}`]);
    Deno.removeSync(`${db}-wal`);
    assert.equal((await rejects(c.run("INSERT INTO t (tag) VALUES ('x')"))).code, "DATABASE_MOVED");
    assert.ok(await until(() => /checkpointed the \d+ frames/.test(srv.log())), srv.log());
    const other = new DatabaseSync(db, { timeout: 5000 });
    other.prepare("INSERT INTO t (tag) VALUES ('p0')").run();
    other.close();
    // The server's connections would read pages by the shared index from the WAL they hold.
    const read = await rejects(c.get("SELECT count(*) AS n FROM t"));
    assert.equal(read.code, "DATABASE_MOVED");
    assert.match(read.message, /a new WAL file is at its path .*refuses reads too/);
  } finally {
    await c.close();
  }
  assert.equal(await stop(srv, "SIGKILL"), 137);
  const after = direct(db, "SELECT tag FROM t ORDER BY id");
  assert.equal(after.integrity, "ok");
  assert.deepEqual(after.rows.map((r) => r[0]), [
    ...Array.from({ length: 20 }, (_, i) => `s${i}`),
    "p0",
  ]);
});

for (const signal of ["SIGTERM", "SIGKILL"] as const) {
  Deno.test(`A -shm file removed while served, then another program writes (${signal}): the server refuses writes and then reads, and every committed row of both is kept`, async () => {
    await using dir = await tempDir();
    const db = `${dir.path}/a.db`, sock = `${dir.path}/a.sock`;
    const srv = spawnServer(db, sock);
    const c = await connectWhenUp(sock, srv.child);
    try {
      await c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, tag TEXT); CREATE INDEX ti ON t (tag)");
      for (let i = 0; i < 20; i++) await c.run("INSERT INTO t (tag) VALUES (?)", [`s${i}`]);
      Deno.removeSync(`${db}-shm`);
      const err = await rejects(c.run("INSERT INTO t (tag) VALUES ('lost')"));
      assert.equal(err.code, "DATABASE_MOVED");
      assert.match(
        err.message,
        new RegExp(
          `^WAL-index file "${db}-shm" of "${db}" was removed or renamed while the server was ` +
            "serving it \\(nothing was written\\); the server refuses writes from now on",
        ),
      );
      assert.deepEqual(await c.get("SELECT count(*) AS n FROM t"), { n: 20 }, "reads go on");
      // Another program opens the database: SQLite builds a new -shm from the WAL.
      const other = new DatabaseSync(db, { timeout: 5000 });
      for (let i = 0; i < 10; i++) {
        other.prepare("INSERT INTO t (tag) VALUES (?)").run(`p${i}`);
        assert.equal(
          (await rejects(c.run("INSERT INTO t (tag) VALUES ('x')"))).code,
          "DATABASE_MOVED",
        );
      }
      other.close();
      const read = await rejects(c.get("SELECT count(*) AS n FROM t"));
      assert.equal(read.code, "DATABASE_MOVED");
      assert.match(read.message, /another program opened the database since.*refuses reads too/);
    } finally {
      await c.close();
    }
    const code = await stop(srv, signal);
    assert.equal(code, signal === "SIGTERM" ? 0 : 137);
    const log = srv.log();
    assert.match(log, / error .*WAL-index file "[^"]*-shm" was removed or renamed/);
    assert.match(log, / error .*reads are refused from now on/);
    if (signal === "SIGTERM") assert.match(log, / error .*shutdown without a checkpoint/);
    const after = direct(db, "SELECT tag FROM t ORDER BY id");
    assert.equal(after.integrity, "ok");
    assert.deepEqual(after.rows.map((r) => r[0]), [
      ...Array.from({ length: 20 }, (_, i) => `s${i}`),
      ...Array.from({ length: 10 }, (_, i) => `p${i}`),
    ]);
  });
}

Deno.test("Checkpoints (TRUNCATE too), WAL resets, VACUUM, cursors, background reads, backups, another program and a restart raise no false alarm about the -wal and -shm files", async () => {
  await using dir = await tempDir();
  const db = `${dir.path}/a.db`, sock = `${dir.path}/a.sock`;
  Deno.mkdirSync(`${dir.path}/copies`);
  const flags = ["--backup-dir", `${dir.path}/copies`];
  const logs: string[] = [];
  let expected = 0;
  for (let round = 0; round < 2; round++) {
    // The second round is a restart on the same files.
    const srv = spawnServer(db, sock, flags);
    const c = await connectWhenUp(sock, srv.child, 4);
    const [link] = await openLink(await resolveConnectOptions({ path: sock }));
    const write = async () => {
      // About 25 pages a commit: the WAL passes SQLite's 1000-frame checkpoint every 40.
      await c.run(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 80) " +
          "INSERT INTO t (b) SELECT randomblob(1000) FROM n",
      );
      expected += 80;
    };
    try {
      await c.exec("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, b BLOB)");
      for (let i = 0; i < 120; i++) await write(); // WAL resets after automatic checkpoints
      await c.exec("PRAGMA wal_checkpoint");
      await write();
      await c.exec("PRAGMA wal_checkpoint(TRUNCATE)");
      await write();
      for (const mode of ["passive", "full", "restart", "truncate"] as const) {
        await link.request(Op.Checkpoint, [mode]);
        await write();
      }
      await c.exec("DELETE FROM t WHERE id % 2 = 0");
      expected = Number((await c.get("SELECT count(*) AS n FROM t"))!.n);
      await link.request(Op.Vacuum, [null]);
      await write();
      await link.request(Op.Vacuum, [`compact${round}.db`]);
      await link.request(Op.Backup, [`backup${round}.db`]);
      assert.equal((await link.request(Op.Integrity, [])).ok, true);
      // Cursors and background reads open connections of their own, and close them.
      for (let i = 0; i < 3; i++) {
        let n = 0;
        for await (const _ of c.iterate("SELECT id FROM t")) n++;
        assert.equal(n, expected);
        await write();
      }
      const slow = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n " +
        "WHERE i < 300000) SELECT count(*) FROM n";
      await Promise.all([1, 2, 3, 4].map(() => c.values(slow)));
      await write();
      // Another program opens, reads, writes, checkpoints and closes the database.
      const other = new DatabaseSync(db, { timeout: 5000 });
      other.prepare("INSERT INTO t (b) VALUES (x'01')").run();
      other.exec("PRAGMA wal_checkpoint(TRUNCATE)");
      other.close();
      expected++;
      await write();
      // The server's own look a second apart.
      await delay(1500);
      await write();
      assert.deepEqual(await c.get("SELECT count(*) AS n FROM t"), { n: expected });
    } finally {
      link.fail(new Error("test done"));
      await link.ended;
      await c.close();
    }
    assert.equal(await stop(srv), 0);
    logs.push(srv.log());
  }
  for (const log of logs) assert.deepEqual(complaints(log), []);
  assert.deepEqual(direct(db, "SELECT count(*) FROM t"), { rows: [[expected]], integrity: "ok" });
});

Deno.test("A WAL file grown behind another program's long read is cut back to --journal-size-limit once the WAL starts over", async () => {
  await using dir = await tempDir();
  const db = `${dir.path}/a.db`, sock = `${dir.path}/a.sock`;
  const limit = 1024 * 1024;
  const srv = spawnServer(db, sock, ["--journal-size-limit", String(limit)]);
  const c = await connectWhenUp(sock, srv.child);
  const walSize = () => Deno.statSync(`${db}-wal`).size;
  const write = () =>
    c.run(
      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 20) " +
        "INSERT INTO t (b) SELECT randomblob(4000) FROM n",
    );
  try {
    assert.deepEqual(await c.get("PRAGMA journal_size_limit"), { journal_size_limit: limit });
    await c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)");
    await c.run("INSERT INTO t (b) VALUES (NULL)");
    // Another program's read transaction holds every checkpoint back: the WAL grows.
    const reader = new DatabaseSync(db);
    reader.exec("BEGIN");
    reader.prepare("SELECT count(*) FROM t").get();
    for (let i = 0; i < 80; i++) await write();
    const grown = walSize();
    assert.ok(grown > 5 * limit, `WAL of ${grown} bytes`);
    reader.exec("COMMIT");
    reader.close();
    // The next commits checkpoint it whole (SQLite's automatic checkpoint),
    // and the WAL starts over, cut back to the limit.
    let size = grown;
    for (let i = 0; i < 20 && size > limit; i++) {
      await write();
      size = walSize();
    }
    assert.ok(size <= limit, `WAL of ${size} bytes after the reader left (${grown} before)`);
  } finally {
    await c.close();
  }
  assert.equal(await stop(srv), 0);
  assert.deepEqual(complaints(srv.log()), []);
});

Deno.test("serve() sets a journal_size_limit of 64 MiB unless told otherwise", async () => {
  await using srv = await startServer();
  const c = await srv.client();
  try {
    assert.deepEqual(await c.get("PRAGMA journal_size_limit"), {
      journal_size_limit: 64 * 1024 * 1024,
    });
  } finally {
    await c.close();
  }
});

Deno.test("--db a symbolic link: the -wal and -shm files are watched beside the real file (a removed -wal answers DATABASE_MOVED), stats count the WAL, and the WAL-index header is mapped", async () => {
  await using dir = await tempDir();
  Deno.mkdirSync(`${dir.path}/real`);
  const real = `${dir.path}/real/x.db`, link = `${dir.path}/link.db`, sock = `${dir.path}/a.sock`;
  Deno.writeFileSync(real, new Uint8Array());
  Deno.symlinkSync("real/x.db", link); // relative, as `ln -s` makes it
  const srv = spawnServer(link, sock);
  const c = await connectWhenUp(sock, srv.child);
  const [admin] = await openLink(await resolveConnectOptions({ path: sock }));
  try {
    await c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, tag TEXT)");
    for (let i = 0; i < 20; i++) await c.run("INSERT INTO t (tag) VALUES (?)", [`pre${i}`]);
    // SQLite put them beside the file the link names, none beside the link.
    assert.deepEqual([...Deno.readDirSync(`${dir.path}/real`)].map((e) => e.name).sort(), [
      "x.db",
      "x.db-shm",
      "x.db-wal",
      "x.db.lock",
    ]);
    assert.ok(!(await exists(`${link}-wal`)));
    const stats = await admin.request(Op.Stats, []);
    assert.equal(stats.walBytes, Deno.statSync(`${real}-wal`).size);
    assert.ok(stats.walBytes > 0);
    // The server's watch of the WAL-index header, built from the link, as the server builds it.
    const watch = new WalWatch(link);
    try {
      const frames = watch.frames();
      if (Deno.build.os === "linux" || Deno.build.os === "darwin") assert.ok(frames! > 0);
    } finally {
      watch.close();
    }
    Deno.removeSync(`${real}-wal`);
    const err = await rejects(c.run("INSERT INTO t (tag) VALUES ('after')"));
    assert.equal(err.code, "DATABASE_MOVED");
    assert.equal(
      err.message,
      `WAL file "${real}-wal" of "${link}" was removed or renamed while the server was serving ` +
        "it (nothing was written); the server refuses writes from now on (reads go on): stop it " +
        "with SIGTERM (its shutdown checkpoints the WAL it still holds into the database; kill " +
        "-9 would lose what is not checkpointed yet) and restart it",
    );
    assert.deepEqual(await c.get("SELECT count(*) AS n FROM t"), { n: 20 }, "reads go on");
    assert.ok(
      await until(() => /checkpointed the \d+ frames of the removed WAL/.test(srv.log())),
      srv.log(),
    );
  } finally {
    admin.fail(new Error("test done"));
    await admin.ended;
    await c.close();
  }
  assert.equal(await stop(srv, "SIGKILL"), 137);
  assert.match(
    complaints(srv.log())[0],
    new RegExp(` error .*WAL file "${real}-wal" was removed or renamed while the server`),
  );
  const after = direct(real, "SELECT count(*) FROM t");
  assert.deepEqual(after, { rows: [[20]], integrity: "ok" });
});

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}
