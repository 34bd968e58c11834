/**
 * The database file under the server's feet: removed or renamed while it is
 * served (writes refused with DATABASE_MOVED, never acknowledged into a file
 * the path no longer names), not writable by the server's user (the start
 * fails), and a checkpoint at shutdown that fails for lack of space (logged,
 * the WAL kept, nothing lost). Real servers, as child processes where the
 * log is checked. Tests run as root here: the read-only file is served by a
 * child process run as `nobody` through `setpriv` (skipped where that is not
 * possible), and the full disk is a small tmpfs (skipped where mount fails).
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { serve } from "../mod.ts";
import { Engine } from "../engine/engine.ts";
import { DatabaseFile } from "../engine/database_file.ts";
import { loadSqlite } from "../engine/binding/load.ts";
import { asNobody, canRunAsNobody, delay, inEnv, startServer, tempDir } from "./_helpers.ts";
import { connectWhenUp, ENGINE, rejects, spawnServer, stop, until } from "./_logged_server.ts";
import { openLink } from "../client/connection.ts";
import { resolveConnectOptions } from "../client/options.ts";
import { Op } from "../protocol/messages.ts";
import { canMount, mountedDisk } from "./_tmpfs.ts";

/** What the server advises once its database file was truncated to 0 bytes in place. */
const TRUNCATED_ADVICE = "stop it with SIGTERM and restart it (the server checkpoints the WAL " +
  "it holds into the file as soon as it notices, and again at shutdown: what the WAL holds is " +
  "kept, what the file alone held is lost; kill -9 before that checkpoint would lose the WAL " +
  "too, as the next start would delete it), then check the database (PRAGMA integrity_check)";

Deno.test("A database file removed while served: writes answer DATABASE_MOVED and are not acknowledged, logged once, reads go on", async () => {
  await using dir = await tempDir();
  const db = `${dir.path}/a.db`, sock = `${dir.path}/a.sock`;
  const srv = spawnServer(db, sock);
  const c = await connectWhenUp(sock, srv.child);
  try {
    await c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)");
    for (let i = 0; i < 5; i++) await c.run("INSERT INTO t VALUES (?)", [i]);
    Deno.removeSync(db);
    const err = await rejects(c.run("INSERT INTO t VALUES (5)"));
    assert.equal(err.code, "DATABASE_MOVED");
    assert.equal(
      err.message,
      `Database file "${db}" was removed or renamed while the server was serving it ` +
        "(nothing was written); the server refuses writes from now on (reads go on): restart " +
        "it, after putting the file back if that is the database to serve",
    );
    // Every later write too, a transaction and a batch alike.
    assert.equal((await rejects(c.exec("BEGIN"))).code, "DATABASE_MOVED");
    assert.equal(
      (await rejects(c.batch([{ sql: "INSERT INTO t VALUES (6)" }]))).code,
      "DATABASE_MOVED",
    );
    assert.deepEqual(await c.get("SELECT count(*) AS n FROM t"), { n: 5 });
    // A cursor needs a connection of its own, which would open no file (or another).
    const cursor = await rejects((async () => {
      for await (const _ of c.iterate("SELECT id FROM t")) break;
    })());
    assert.equal(cursor.code, "DATABASE_MOVED");
    assert.match(cursor.message, /this read needs a connection of its own/);
  } finally {
    await c.close();
  }
  assert.equal(await stop(srv), 0);
  const lines = srv.log().split("\n").filter((l) => / error .*was removed or renamed/.test(l));
  assert.equal(lines.length, 1, srv.log());
  assert.match(lines[0], /writes are refused from now on \(reads go on\); restart the server/);
});

Deno.test("A database file truncated to 0 bytes in place while served: integrity and writes answer DATABASE_MOVED, the WAL is kept and checkpointed at once, and survives kill -9", async () => {
  await using dir = await tempDir();
  const db = `${dir.path}/a.db`, sock = `${dir.path}/a.sock`;
  Deno.mkdirSync(`${dir.path}/copies`);
  const srv = spawnServer(db, sock, ["--backup-dir", `${dir.path}/copies`]);
  const c = await connectWhenUp(sock, srv.child);
  const [admin] = await openLink(await resolveConnectOptions({ path: sock }));
  try {
    await c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, tag TEXT)");
    for (let i = 0; i < 20; i++) await c.run("INSERT INTO t (tag) VALUES (?)", [`pre${i}`]);
    const ino = Deno.statSync(db).ino;
    assert.ok(Deno.statSync(`${db}-wal`).size > 0, "the rows are in the WAL only");
    Deno.truncateSync(db, 0); // in place: same inode
    assert.equal(Deno.statSync(db).ino, ino);
    assert.equal(Deno.statSync(db).size, 0);
    // The integrity check would open a connection of its own, and SQLite deletes the WAL of a
    // 0-byte database as a connection opens it: refused, and the WAL is still there.
    const integrity = await rejects(admin.request(Op.Integrity, []));
    assert.equal(integrity.code, "DATABASE_MOVED");
    assert.equal(
      integrity.message,
      `Database file "${db}" was truncated to 0 bytes while the server was serving it; this ` +
        "read needs a connection of its own, and a connection that opens a 0-byte database " +
        "file deletes its WAL (with every write the WAL holds), so it is refused (reads on the " +
        `connections open before go on): ${TRUNCATED_ADVICE}`,
    );
    assert.ok(Deno.statSync(`${db}-wal`).size > 0, "the WAL is kept");
    const backup = await rejects(admin.request(Op.Backup, ["copy.db"]));
    assert.equal(backup.code, "DATABASE_MOVED");
    assert.deepEqual([...Deno.readDirSync(`${dir.path}/copies`)], []);
    const err = await rejects(c.run("INSERT INTO t (tag) VALUES ('after')"));
    assert.equal(err.code, "DATABASE_MOVED");
    assert.equal(
      err.message,
      `Database file "${db}" was truncated to 0 bytes while the server was serving it (nothing ` +
        `was written); the server refuses writes from now on (reads go on): ${TRUNCATED_ADVICE}`,
    );
    assert.equal((await rejects(admin.request(Op.Checkpoint, ["passive"]))).code, "DATABASE_MOVED");
    assert.deepEqual(await c.get("SELECT count(*) AS n FROM t"), { n: 20 }, "reads go on");
    assert.ok(
      await until(() => /checkpointed the \d+ frames of the WAL/.test(srv.log())),
      srv.log(),
    );
    assert.ok(Deno.statSync(db).size > 0, "the WAL's pages are in the file again");
    assert.ok(Deno.statSync(`${db}-wal`).size > 0, "the WAL is kept");
  } finally {
    admin.fail(new Error("test done"));
    await admin.ended;
    await c.close();
  }
  assert.equal(await stop(srv, "SIGKILL"), 137);
  // (Besides the lines of the requests refused: `integrity failed: session 2: DATABASE_MOVED`.)
  const lines = srv.log().split("\n")
    .filter((l) => / (error|warn) /.test(l) && !/ failed: session \d+: /.test(l));
  assert.match(
    lines[0],
    new RegExp(
      ` error .*database file "${db}" was truncated to 0 bytes while the server was serving ` +
        "it: writes are refused from now on",
    ),
  );
  assert.match(
    lines[1],
    new RegExp(
      ` warn .*checkpointed the \\d+ frames of the WAL "${db}-wal" into the truncated database ` +
        "file",
    ),
  );
  assert.equal(lines.length, 2, srv.log());
  // What the WAL held (here everything: no checkpoint ran before) survived the kill.
  const check = new DatabaseSync(db);
  try {
    assert.deepEqual(
      check.prepare("SELECT tag FROM t ORDER BY id").all().map((r) => r.tag),
      Array.from({ length: 20 }, (_, i) => `pre${i}`),
    );
    assert.deepEqual({ ...check.prepare("PRAGMA integrity_check").get() }, {
      integrity_check: "ok",
    });
  } finally {
    check.close();
  }
});

Deno.test("DatabaseFile.check() finds a database file truncated to 0 bytes in place, through libc and Deno.statSync alike", async () => {
  await using dir = await tempDir();
  for (const viaDeno of [false, true]) {
    const db = `${dir.path}/t${viaDeno ? 2 : 1}.db`;
    const keep = new DatabaseSync(db); // holds the -wal and -shm files open
    try {
      keep.exec("PRAGMA journal_mode = WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1)");
      const file = new DatabaseFile(db);
      if (viaDeno) file.close();
      assert.equal(file.check(), null);
      assert.equal(file.truncated, false);
      Deno.truncateSync(db, 0);
      assert.equal(file.check(true), null, "the -wal path alone: not looked at");
      assert.equal(file.check(), `database file "${db}" was truncated to 0 bytes`);
      assert.equal(file.truncated, true);
      assert.equal(file.lostKind, "database");
      file.close();
    } finally {
      keep.close();
    }
  }
});

Deno.test("A database file renamed inside a transaction: its COMMIT is answered DATABASE_MOVED, and the row is in the renamed file", async () => {
  await using srv = await startServer({ logLevel: "error" });
  const c = await srv.client();
  const moved = `${srv.database}.old`;
  try {
    await c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY)");
    // (Reads go on on connections that read the file before it went; one that
    // needs a connection of its own is refused DATABASE_MOVED, as README says.)
    assert.deepEqual(await c.get("SELECT count(*) AS n FROM t"), { n: 0 });
    await c.exec("BEGIN");
    await c.run("INSERT INTO t VALUES (1)");
    Deno.renameSync(srv.database, moved);
    const err = await rejects(c.exec("COMMIT"));
    assert.equal(err.code, "DATABASE_MOVED");
    assert.match(
      err.message,
      /noticed after this request ran: whatever it wrote went into that file/,
    );
    assert.deepEqual(await c.get("SELECT count(*) AS n FROM t"), { n: 1 }, "reads go on");
  } finally {
    await c.close();
    await srv.server.shutdown();
  }
  // The shutdown checkpointed into the renamed file: it holds everything.
  const check = new DatabaseSync(moved);
  assert.deepEqual({ ...check.prepare("SELECT count(*) AS n FROM t").get() }, { n: 1 });
  check.close();
});

Deno.test("Engine: a group commit into a database file removed meanwhile answers its members DATABASE_MOVED", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/a.db`;
  const engine = new Engine({
    path,
    synchronous: "normal",
    busyTimeout: 1000,
    txIdleTimeout: 0,
    statementCacheSize: 16,
    statementTimeout: 30_000,
    maxResultBytes: 1 << 20,
    maxCursors: 4,
    policy: { readonly: false, allowAttach: false, allowUnsafePragmas: false },
  }, loadSqlite({ engine: ENGINE }));
  const logged: string[] = [];
  engine.onLog = (level, message) => logged.push(`${level} ${message}`);
  const commits: string[] = [];
  const a = engine.openSession(() => {}, (e) => commits.push(e?.code ?? "ok"));
  try {
    await a.exec("CREATE TABLE g (v)");
    // A write runs in the group (inline, its reply held for the COMMIT, a
    // microtask away) once it is known fast; the file goes meanwhile.
    let grouped = false;
    for (const until = performance.now() + 5000; !grouped && performance.now() < until;) {
      const r = a.run("INSERT INTO g VALUES (1)", []);
      if (r instanceof Promise) {
        await r;
        continue;
      }
      grouped = a.awaitingCommit;
      if (grouped) Deno.removeSync(path);
      else await delay(0);
    }
    assert.ok(grouped, "no write joined a group commit");
    while (a.awaitingCommit) await delay(1);
    assert.equal(commits.at(-1), "DATABASE_MOVED");
    assert.ok(commits.slice(0, -1).every((c) => c === "ok"));
    assert.equal(logged.filter((l) => l.startsWith("error ")).length, 1);
  } finally {
    a.close();
    await engine.close();
  }
});

Deno.test("Engine: the check that the file is writable changes nothing in it", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/a.db`;
  const pre = new DatabaseSync(path);
  pre.exec("PRAGMA journal_mode = WAL; PRAGMA user_version = 7; CREATE TABLE t (a)");
  pre.close();
  await using srv = await startServer({ database: path });
  const c = await srv.client();
  assert.deepEqual(await c.get("PRAGMA user_version"), { user_version: 7 });
  await c.close();
});

Deno.test({
  name: "A database file its user cannot write: the start fails saying so (--readonly serves it)",
  ignore: !canRunAsNobody,
  fn: async () => {
    await using dir = await tempDir();
    const db = `${dir.path}/a.db`, sock = `${dir.path}/a.sock`;
    const pre = new DatabaseSync(db);
    pre.exec("PRAGMA journal_mode = WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1)");
    pre.close();
    Deno.chmodSync(dir.path, 0o777);
    Deno.chownSync(db, 65534, 65534);
    Deno.chmodSync(db, 0o444);
    const srv = spawnServer(db, sock, [], asNobody);
    const status = await srv.child.status;
    await srv.done;
    assert.notEqual(status.code, 0, srv.log());
    assert.match(
      srv.log(),
      new RegExp(
        `Cannot open database "${db}": attempt to write a readonly database: the file is not ` +
          "writable by this user: make it writable, or serve it read-only with --readonly",
      ),
    );
    const ro = spawnServer(db, sock, ["--readonly"], asNobody);
    const c = await connectWhenUp(sock, ro.child);
    assert.deepEqual(await c.get("SELECT count(*) AS n FROM t"), { n: 1 });
    await c.close();
    assert.equal(await stop(ro), 0);
  },
});

Deno.test({
  name: "A start that fails on a read-only database file removes the -wal and -shm it created: " +
    "made writable, the file serves",
  ignore: !canRunAsNobody,
  fn: async () => {
    await using dir = await tempDir();
    const db = `${dir.path}/a.db`, sock = `${dir.path}/a.sock`;
    const pre = new DatabaseSync(db);
    pre.exec("PRAGMA journal_mode = WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1)");
    pre.close();
    Deno.chmodSync(dir.path, 0o777);
    Deno.chownSync(db, 65534, 65534);
    Deno.chmodSync(db, 0o444);
    const srv = spawnServer(db, sock, [], asNobody);
    assert.notEqual((await srv.child.status).code, 0);
    await srv.done;
    assert.match(srv.log(), /the file is not writable by this user/);
    // SQLite made them (with the file's mode, 0444) to read the file: gone again.
    assert.deepEqual([...Deno.readDirSync(dir.path)].map((e) => e.name).sort(), ["a.db"]);
    Deno.chmodSync(db, 0o644);
    const again = spawnServer(db, sock, [], asNobody);
    const c = await connectWhenUp(sock, again.child);
    await c.run("INSERT INTO t VALUES (2)");
    assert.deepEqual(await c.get("SELECT count(*) AS n FROM t"), { n: 2 });
    await c.close();
    assert.equal(await stop(again), 0);
  },
});

Deno.test({
  name: "Left-over -wal and -shm files the server's user cannot write: the start fails naming them",
  ignore: !canRunAsNobody,
  fn: async () => {
    await using dir = await tempDir();
    const db = `${dir.path}/a.db`, sock = `${dir.path}/a.sock`;
    // Another user's program leaves them: a read-only connection that closes
    // last neither checkpoints nor deletes them.
    const w = new DatabaseSync(db);
    w.exec("PRAGMA journal_mode = WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1)");
    const r = new DatabaseSync(db, { readOnly: true });
    r.prepare("SELECT * FROM t").all();
    w.close();
    r.close();
    Deno.chmodSync(dir.path, 0o777);
    Deno.chownSync(db, 65534, 65534);
    for (const f of [`${db}-wal`, `${db}-shm`]) Deno.chmodSync(f, 0o444);
    const srv = spawnServer(db, sock, [], asNobody);
    assert.notEqual((await srv.child.status).code, 0);
    await srv.done;
    assert.match(
      srv.log(),
      new RegExp(
        `Cannot open database "${db}": .*: "${db}-wal" and "${db}-shm" beside it are not ` +
          "writable by this user, and SQLite writes the database through them: make them " +
          "writable by this user \\(chown or chmod\\) and start again",
      ),
    );
    assert.ok(Deno.statSync(`${db}-wal`).size > 0, "they were not this start's: kept");
    for (const f of [`${db}-wal`, `${db}-shm`]) Deno.chownSync(f, 65534, 65534);
    for (const f of [`${db}-wal`, `${db}-shm`]) Deno.chmodSync(f, 0o644);
    const again = spawnServer(db, sock, [], asNobody);
    const c = await connectWhenUp(sock, again.child);
    assert.deepEqual(await c.get("SELECT count(*) AS n FROM t"), { n: 1 });
    await c.close();
    assert.equal(await stop(again), 0);
  },
});

Deno.test("DatabaseFile.check() after close() (Deno.statSync instead of libc) finds the same files, and still finds one replaced", async () => {
  await using dir = await tempDir();
  const db = `${dir.path}/m.db`;
  const keep = new DatabaseSync(db); // holds the -wal and -shm files open
  try {
    keep.exec("PRAGMA journal_mode = WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1)");
    const file = new DatabaseFile(db);
    const viaLibc = file.viaLibc;
    assert.equal(file.check(), null);
    file.close();
    assert.equal(file.viaLibc, false);
    assert.equal(file.check(), null, `after close (libc before: ${viaLibc})`);
    // A file really replaced is still found.
    Deno.copyFileSync(`${db}-shm`, `${db}-shm.new`);
    Deno.renameSync(`${db}-shm.new`, `${db}-shm`);
    assert.equal(file.check(), `WAL-index file "${db}-shm" was replaced by another file`);
  } finally {
    keep.close();
  }
});

Deno.test({
  name: "A checkpoint at shutdown that fails on a full disk is logged, the WAL kept, nothing lost",
  ignore: !canMount,
  fn: async () => {
    await using dir = await mountedDisk("4m");
    const disk = dir.disk;
    const db = `${disk}/a.db`, sock = `${dir.path}/a.sock`;
    const srv = spawnServer(db, sock);
    const c = await connectWhenUp(sock, srv.child);
    await c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)");
    // About 400 pages in the WAL, which a checkpoint copies into the file.
    await c.run(
      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 400) " +
        "INSERT INTO t (b) SELECT randomblob(1000) FROM n",
    );
    const filler = Deno.openSync(`${disk}/filler`, { write: true, create: true });
    try {
      const block = new Uint8Array(64 * 1024);
      for (;;) filler.writeSync(block);
    } catch {
      // The disk is full.
    } finally {
      filler.close();
    }
    await c.close();
    assert.equal(await stop(srv), 0);
    assert.match(
      srv.log(),
      new RegExp(
        ` warn .*checkpoint at shutdown failed: .*: the WAL "${db}-wal" is kept and nothing ` +
          "is lost",
      ),
    );
    assert.ok(Deno.statSync(`${db}-wal`).size > 0, "the WAL is kept");
    Deno.removeSync(`${disk}/filler`);
    const check = new DatabaseSync(db);
    assert.deepEqual({ ...check.prepare("SELECT count(*) AS n FROM t").get() }, { n: 400 });
    check.close();
  },
});

Deno.test({
  name: "A start on a full disk warns of the lock file it could not write, fails naming the full " +
    "device (a WAL database needs room), and leaves no lock file",
  ignore: !canMount,
  fn: async () => {
    await using dir = await mountedDisk("256k");
    const disk = dir.disk;
    const db = `${disk}/a.db`, sock = `${dir.path}/a.sock`;
    const pre = new DatabaseSync(db);
    pre.exec("PRAGMA journal_mode = WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1)");
    pre.close();
    const filler = Deno.openSync(`${disk}/filler`, { write: true, create: true });
    try {
      const block = new Uint8Array(4096);
      for (;;) filler.writeSync(block);
    } catch {
      // The disk is full.
    } finally {
      filler.close();
    }
    const srv = spawnServer(db, sock);
    assert.equal((await srv.child.status).code, 1);
    await srv.done;
    assert.ok(
      srv.log().includes(
        `warn  netsqlite: cannot write the lock file "${db}.lock" (No space left on device ` +
          "(os error 28)): holding its lock without recording this server's pid and socket in it",
      ),
      srv.log(),
    );
    assert.match(
      srv.log(),
      /Cannot open database ".*": disk I\/O error: the device holding .* is full/,
    );
    assert.deepEqual([...Deno.readDirSync(disk)].map((e) => e.name).sort(), ["a.db", "filler"]);
  },
});

Deno.test({
  name: "A --readonly start on a full disk serves, holding the lock without its record",
  ignore: !canMount,
  fn: async () => {
    await using dir = await mountedDisk("256k");
    const disk = dir.disk;
    const db = `${disk}/a.db`, sock = `${dir.path}/a.sock`;
    const pre = new DatabaseSync(db); // a rollback-journal database: read without writing
    pre.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1)");
    pre.close();
    const filler = Deno.openSync(`${disk}/filler`, { write: true, create: true });
    try {
      const block = new Uint8Array(4096);
      for (;;) filler.writeSync(block);
    } catch {
      // The disk is full.
    } finally {
      filler.close();
    }
    const srv = spawnServer(db, sock, ["--readonly"]);
    try {
      const c = await connectWhenUp(sock, srv.child);
      try {
        assert.deepEqual(await c.values("SELECT x FROM t"), [[1]]);
      } finally {
        await c.close();
      }
      // The lock is held: a second server is refused.
      const second = spawnServer(db, `${dir.path}/b.sock`, ["--readonly"]);
      assert.equal((await second.child.status).code, 1);
      await second.done;
      assert.match(second.log(), /another server owns .*a\.db \(pid unknown, socket unknown\)/);
    } finally {
      assert.equal(await stop(srv), 0);
    }
    assert.match(
      srv.log(),
      /warn {2}netsqlite: cannot write the lock file ".*a\.db\.lock" \(No space left on device/,
    );
  },
});

/** Fills `disk` (a tmpfs) with a file `filler`, leaving `free` 4 KiB pages free. */
function fillLeaving(disk: string, size: number, free: number): void {
  Deno.writeFileSync(`${disk}/filler`, new Uint8Array(size - free * 4096));
}

for (const engine of ["ffi", "node"] as const) {
  Deno.test({
    name:
      `serve({ engine: "${engine}" }): a first start on a full disk says the device is full and leaves no database file behind; a file there before is kept`,
    ignore: !canMount,
    fn: async () => {
      await using dir = await mountedDisk("64k");
      const disk = dir.disk;
      const db = `${disk}/a.db`, path = `${dir.path}/a.sock`;
      const seen = new Set<number>();
      // From too little room for the lock file to enough for a start, page by page:
      // SQLITE_FULL (the database file stays empty), SQLITE_IOERR_SHMSIZE (one page written).
      for (let free = 1; free <= 12; free++) {
        fillLeaving(disk, 64 * 1024, free);
        let err: (Error & { code?: string; sqliteCode?: number }) | null = null;
        try {
          await (await serve({ database: db, path, engine, logLevel: "error" })).shutdown();
        } catch (e) {
          err = e as Error;
        }
        const left = [...Deno.readDirSync(disk)].map((e) => e.name).sort();
        for (const name of left) if (name !== "filler") Deno.removeSync(`${disk}/${name}`);
        if (err === null || /lock file/.test(err.message)) continue;
        seen.add(err.sqliteCode!);
        assert.match(
          err.message,
          new RegExp(
            `^Cannot open database "${db}": (database or disk is full|disk I/O error): the ` +
              `device holding "${disk}" is full or not writable: make room there and start ` +
              "again$",
          ),
        );
        assert.deepEqual(left, ["filler"], `${free} pages free: ${err.message}`);
      }
      assert.ok(seen.has(13), `SQLITE_FULL seen (${[...seen]})`);
      assert.ok(seen.has(10 | (19 << 8)), `SQLITE_IOERR_SHMSIZE seen (${[...seen]})`);
      // A file the start did not create is kept, even empty.
      fillLeaving(disk, 64 * 1024, 1);
      Deno.writeFileSync(db, new Uint8Array());
      const refused = await serve({ database: db, path, engine, logLevel: "error" }).then(
        async (server) => await server.shutdown(), // (so that the tmpfs can be unmounted)
        (err: Error) => err.message,
      );
      assert.match(String(refused), /: the device holding ".*" is full or not writable/);
      assert.deepEqual([...Deno.readDirSync(disk)].map((e) => e.name).sort(), [
        "a.db",
        "filler",
      ]);
    },
  });
}

Deno.test("serve({ database }) with a relative path keeps serving that file after the process changes directory", async () => {
  await using dir = await tempDir();
  const counts = await inEnv<unknown[]>(
    {},
    new URL("./_chdir_child.ts", import.meta.url).href,
    "servedAfterChdir",
    dir.path,
  );
  for (const rows of counts) assert.deepEqual(rows, [[300001]]);
  const check = new DatabaseSync(`${dir.path}/app.db`, { readOnly: true });
  assert.deepEqual({ ...check.prepare("SELECT count(*) AS n FROM t").get() }, { n: 1 });
  check.close();
});
